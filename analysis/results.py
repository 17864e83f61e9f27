"""The results of a study: accuracy per task and model correctness, against chance."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.plots import accuracy_plot_png
from analysis.stats import accuracy_table
from studies.models import Study

from .datasets import study_responses_frame

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


def scored_main(frame: pd.DataFrame) -> pd.DataFrame:
    """The responses accuracy is computed on: main trials of scored tasks, answered in time,
    from participants not excluded by the spec's rules (practice trials, attention checks,
    questionnaires and timeouts are reported separately)."""
    keep = (
        (frame["kind"] == "main")
        & frame["is_correct"].notna()
        & ~frame["timed_out"].astype(bool)
        & ~frame["excluded"].astype(bool)
    )
    out = frame[keep].copy()
    out["is_correct"] = out["is_correct"].astype(bool)
    out["chance"] = out["chance"].astype(float)
    return out


def study_results(study: Study, *, simulated: str = "include") -> StudyResults:
    """Compute the results table of a study.

    Args:
        simulated: "include" (default), "exclude" or "only" simulated participants.

    Raises:
        ValueError: unknown ``simulated`` filter.
    """
    if simulated not in SIMULATED_FILTERS:
        raise ValueError(f"simulated must be one of {SIMULATED_FILTERS}")
    frame = study_responses_frame(study)
    if simulated == "exclude":
        frame = frame[~frame["is_simulated"].astype(bool)]
    elif simulated == "only":
        frame = frame[frame["is_simulated"].astype(bool)]
    participants = frame.drop_duplicates("participant")
    scored = scored_main(frame)
    if scored["condition"].nunique() > 1:  # one row per task and condition
        scored = scored.assign(task=scored["task"] + " / " + scored["condition"])
    split = scored.assign(
        model=scored["model_correct"].map({True: "model right", False: "model wrong"})
    )
    overall = scored.assign(model="all")
    table = accuracy_table(pd.concat([split, overall], ignore_index=True), by=["task", "model"])
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
