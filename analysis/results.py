"""The results of a study: accuracy per task and model correctness, against chance, and the
full report (:mod:`analysis.report`) with the automatic metrics the explanations stored."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.plots import accuracy_plot_png, distribution_plot_png
from studies.models import Study

from .datasets import study_responses_frame
from .report import StudyReport, accuracy_by_model, build_report, scored_main

SIMULATED_FILTERS = ("include", "exclude", "only")


@dataclass(frozen=True)
class StudyResults:
    """Per-task accuracy tables.

    Attributes:
        table: one row per (task, model) with n, n_correct, accuracy, Wilson 95% ci_low /
            ci_high, chance and two-sided exact binomial p_value; ``model`` is "model right",
            "model wrong" or "all".
        responses: every response in long format (the CSV): main trials, practice, attention
            checks, questionnaires, timeouts and excluded participants, each marked; the table
            uses :func:`scored_main` of it.
        n_participants / n_simulated / n_excluded: participants with at least one response,
            of whom simulated, and excluded by the spec's rules.
    """

    table: pd.DataFrame
    responses: pd.DataFrame
    n_participants: int
    n_simulated: int
    n_excluded: int = 0


def study_results(study: Study, *, simulated: str = "include") -> StudyResults:
    """Compute the results table of a study.

    Args:
        simulated: "include" (default), "exclude" or "only" simulated participants.

    Raises:
        ValueError: unknown ``simulated`` filter.
    """
    frame = _filtered_frame(study, simulated)
    participants = frame.drop_duplicates("participant")
    scored = scored_main(frame)
    if scored["condition"].nunique() > 1:  # one row per task and condition
        scored = scored.assign(task=scored["task"] + " / " + scored["condition"])
    table = accuracy_by_model(scored, ["task"])
    return StudyResults(
        table=table,
        responses=frame,  # every response (practice, checks, questionnaires, excluded too)
        n_participants=len(participants),
        n_excluded=int(participants["excluded"].astype(bool).sum()),
        n_simulated=int(participants["is_simulated"].astype(bool).sum()),
    )


def results_plot_png(results: StudyResults, *, title: str = "") -> bytes:
    """Bar chart of accuracy per task, split by model correctness, with Wilson 95% CIs."""
    table = results.table[results.table["model"] != "all"]
    # "agreement / gradcam" on two lines, so neighbouring labels do not run into each other
    table = table.assign(task=table["task"].str.replace(" / ", "\n", regex=False))
    return accuracy_plot_png(table, group_col="task", hue_col="model", title=title)


def results_text_table(results: StudyResults) -> str:
    """The results table as fixed-width text for the terminal."""
    header = (
        f"{'task':<12} {'model':<12} {'n':>4} {'correct':>7} {'accuracy':>8} "
        f"{'95% CI (Wilson)':>17} {'chance':>6} {'p (binomial)':>12}"
    )
    lines = [header, "-" * len(header)]
    for row in results.table.itertuples(index=False):
        ci = f"[{row.ci_low:.3f}, {row.ci_high:.3f}]" if row.n else "-"
        acc = f"{row.accuracy:.3f}" if row.n else "-"
        p = f"{row.p_value:.4g}" if row.n else "-"
        lines.append(
            f"{row.task:<12} {row.model:<12} {row.n:>4} {row.n_correct:>7} {acc:>8} "
            f"{ci:>17} {row.chance:>6.2f} {p:>12}"
        )
    return "\n".join(lines)


def _filtered_frame(study: Study, simulated: str) -> pd.DataFrame:
    if simulated not in SIMULATED_FILTERS:
        raise ValueError(f"simulated must be one of {SIMULATED_FILTERS}")
    frame = study_responses_frame(study)
    if simulated == "exclude":
        frame = frame[~frame["is_simulated"].astype(bool)]
    elif simulated == "only":
        frame = frame[frame["is_simulated"].astype(bool)]
    return frame


def automatic_metrics_frame(study: Study) -> pd.DataFrame:
    """Deletion and insertion AUC (Petsiuk et al. 2018) of the study model's top-1 maps per
    (method, item name), as stored by explanation jobs run with ``evaluate``; empty when none
    were computed."""
    from explanations.models import Explanation

    rows = Explanation.objects.filter(
        model=study.model,
        item__dataset=study.dataset,
        target_rank=0,
        deletion_auc__isnull=False,
    ).values_list("method", "item__name", "deletion_auc", "insertion_auc")
    return pd.DataFrame(list(rows), columns=["method", "item", "deletion_auc", "insertion_auc"])


def study_report(
    study: Study, *, simulated: str = "include", mixed: bool | str = "auto", progress=None
) -> StudyReport:
    """The full report of a study (:func:`analysis.report.build_report`) on its responses,
    with the automatic metrics of its model's maps.

    Raises:
        ValueError: unknown ``simulated`` filter.
    """
    frame = _filtered_frame(study, simulated)
    return build_report(
        frame,
        title=study.title,
        automatic=automatic_metrics_frame(study),
        mixed=mixed,
        progress=progress,
    )


def report_figures(
    frame: pd.DataFrame, *, accuracy: pd.DataFrame | None = None, names=None
) -> dict[str, bytes]:
    """Plots of the responses as PNG bytes, by name: ``accuracy`` (Wilson intervals per task /
    condition and model correctness; from ``accuracy`` when given, else computed),
    ``response_times`` and ``confidence`` (when any was collected) per task / condition.
    ``names`` limits which are drawn (default all)."""
    wanted = set(names or ("accuracy", "response_times", "confidence"))
    scored = scored_main(frame)
    label = scored["task"] + " / " + scored["condition"].astype(str)
    figures = {}
    if "accuracy" in wanted:
        table = (
            accuracy if accuracy is not None else accuracy_by_model(scored, ["task", "condition"])
        )
        table = table[table["model"] != "all"]
        table = table.assign(group=table["task"] + "\n" + table["condition"].astype(str))
        figures["accuracy"] = accuracy_plot_png(
            table, group_col="group", hue_col="model", title="Accuracy (Wilson 95% CI)"
        )
    if "response_times" in wanted:
        figures["response_times"] = distribution_plot_png(
            {k: g["rt_ms"].tolist() for k, g in scored.groupby(label, sort=True)},
            title="Response time of scored answers",
            xlabel="ms (log scale)",
            log=True,
        )
    if "confidence" in wanted:
        figures["confidence"] = distribution_plot_png(
            {k: g["confidence"].dropna().tolist() for k, g in scored.groupby(label, sort=True)}
            if "confidence" in scored.columns
            else {},
            title="Confidence ratings",
            xlabel="confidence (1 somewhat, 2 fairly)",
        )
    return figures


def study_report_html(
    study: Study, *, simulated: str = "include", mixed="auto", progress=None
) -> str:
    """A self-contained HTML report (tables and plots inline, no external files) of a study.

    Raises:
        ValueError: unknown ``simulated`` filter.
    """
    import base64

    from django.template.loader import render_to_string
    from django.utils import timezone

    from .report import report_records

    frame = _filtered_frame(study, simulated)
    report = build_report(
        frame,
        title=study.title,
        automatic=automatic_metrics_frame(study),
        mixed=mixed,
        progress=progress,
    )
    from .regions import study_shared_interest

    names = ["accuracy", "response_times"]
    if not report.confidence.empty:
        names.append("confidence")
    pngs = report_figures(frame, accuracy=report.accuracy, names=names)
    shared = study_shared_interest(study)
    if not shared.empty:
        pngs["shared_interest"] = shared_interest_plot_png(shared)
    figures = {name: base64.b64encode(png).decode("ascii") for name, png in pngs.items()}
    return render_to_string(
        "analysis/report.html",
        {
            "study": study,
            "simulated": simulated,
            "report": report_records(report),
            "figures": figures,
            "patterns": shared["pattern_name"].value_counts().to_dict() if not shared.empty else {},
            "generated": timezone.now(),
        },
    )


#: The plots of the results page, by name.
RESULT_PLOTS = ("accuracy", "response_times", "confidence", "shared_interest")


def shared_interest_plot_png(shared: pd.DataFrame, *, source: str = "dataset") -> bytes:
    """Box plots of IoU, ground-truth and saliency coverage per method (Boggust et al. 2022)
    of :func:`analysis.regions.study_shared_interest`'s rows; "no responses yet" when empty."""
    groups = {}
    if not shared.empty:
        for method, g in shared.groupby("method", sort=True):
            for score, short in (
                ("iou", "IoU"),
                ("ground_truth_coverage", "GT cov."),
                ("saliency_coverage", "sal. cov."),
            ):
                groups[f"{method}: {short}"] = g[score].dropna().tolist()
    return distribution_plot_png(
        groups, title=f"Shared Interest ({source} regions)", xlabel="score (0-1)"
    )


def study_plot_png(study: Study, name: str, *, simulated: str = "include") -> bytes:
    """One plot of the results page as PNG (see :data:`RESULT_PLOTS`), computing only what
    that plot needs.

    Raises:
        ValueError: unknown plot or ``simulated`` filter.
    """
    if name not in RESULT_PLOTS:
        raise ValueError(f"plot must be one of {RESULT_PLOTS}")
    if name == "shared_interest":
        from .regions import study_shared_interest

        return shared_interest_plot_png(study_shared_interest(study))
    return report_figures(_filtered_frame(study, simulated), names=[name])[name]
