"""The whole analysis of a study from its tidy response table (no Django): the tables a paper
reports, computed by :mod:`analysis.stats`, for the results page, the HTML report, the
``analyze`` command and the API alike.

Input is the long-format frame of :func:`analysis.datasets.study_responses_frame` (one row per
response; columns as in the codebook). Accuracy and every test use :func:`scored_main` rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.stats import accuracy_table
from analysis.stats.comparisons import (
    ModelFit,
    analytic_power,
    compare_conditions,
    human_automatic_correlation,
    logistic_regression,
    mixed_logistic_regression,
    one_sample_t_test,
    participant_accuracy,
    required_sample_size,
)
from analysis.stats.same_items import SameItems, prototype_ratings_table, same_items_tables

#: Largest number of scored answers of one task for which ``mixed="auto"`` fits the
#: mixed-effects model in the report (variational Bayes over every participant and item
#: takes ~3 s at 10k answers and ~45 s at 46k on 2 CPU cores); above it the report says how
#: to fit it (``manage.py analyze STUDY --mixed``).
MIXED_AUTO_MAX_ROWS = 20_000

#: Tasks whose answers are points of a rating scale (agreement: the 4-point HIVE scale;
#: similarity: a slider), analysed as ordinal; the others' answers are nominal choices.
ORDINAL_TASKS = frozenset({"agreement", "similarity"})

__all__ = [
    "MIXED_AUTO_MAX_ROWS",
    "accuracy_by_model",
    "ORDINAL_TASKS",
    "StudyReport",
    "build_report",
    "report_records",
    "report_text",
    "scored_main",
]


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


def accuracy_by_model(scored: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """:func:`analysis.stats.accuracy_table` of scored answers per ``by`` and ``model``:
    "model right" / "model wrong" (where the trial has a classifier's prediction) and "all"."""
    split = scored.assign(
        model=scored["model_correct"].map({True: "model right", False: "model wrong"})
    )
    split = split[split["model"].notna()]
    return accuracy_table(
        pd.concat([split, scored.assign(model="all")], ignore_index=True), by=[*by, "model"]
    )


@dataclass
class StudyReport:
    """Every table of a study's analysis (DataFrames; empty when not applicable).

    Attributes:
        accuracy: per task x condition x model ("model right" / "model wrong" / "all"):
            n, n_correct, accuracy, Wilson 95% CI, chance, exact binomial p (HIVE).
        participant_tests: per task x condition: one-sample t-test of per-participant accuracy
            against chance (n participants, mean, t, df, p, 95% CI, Cohen's d, note).
        comparisons: per task, every pair of conditions: chi-square / Fisher, Holm-adjusted p,
            risk difference, odds ratio and Cohen's h with intervals.
        models: per task with 2+ conditions: (task, logistic fit, mixed-effects fit).
        power: per compared pair: answers per condition, observed accuracies, analytic power
            at that size and the size for 80% power.
        response_times: per task x condition: n, median, quartiles (ms), of scored answers.
        confidence: per task x condition x confidence rating: count and share (if collected).
        correlations: human accuracy per item vs automatic metrics, per method (Spearman).
        agreement: per task x condition, agreement among participants who answered the same
            items: Krippendorff's alpha (ordinal for numeric rating scales, nominal for
            choices) and Fleiss' kappa where defined, with the reason when undefined.
        detection: human-or-machine tasks (GLTR), per condition: hits, false alarms, d′ and
            criterion c (log-linear corrected; :mod:`analysis.stats.detection`).
        same_items: conditions compared on the same items (:mod:`analysis.stats.same_items`),
            per task with 2+ conditions, on only the items answered under every condition of
            the task (as HIVE, Kim et al. ECCV 2022, compares explanation types by model
            correctness): one row per task x condition with explanation_type, classifier,
            n_items (common), n_items_dropped, n_answers, n_correct, accuracy in [0, 1] with
            Wilson 95% ci_low / ci_high, n / accuracy where the model was right and wrong,
            mean_item_accuracy, and a note (fewer than 2 common items: counts only).
        same_items_tests: the paired tests of per-item accuracy on those items: per task a
            Friedman (1937) row for 3+ conditions (chi-square, df = k - 1, p) and a Wilcoxon
            (1945) signed-rank row per pair (zeros dropped; n_nonzero, statistic, p, Holm p
            over the task's pairs, mean per-item difference a - b); a note where undefined.
        prototype_ratings: HIVE's per-prototype similarity ratings (1-4) of agreement trials
            with prototypes, per task x condition x model right / wrong / all: trials,
            ratings, mean, share rated similar (3-4), and a Mann-Whitney U test of right
            against wrong (:func:`analysis.stats.same_items.prototype_ratings_table`).
        warnings: degenerate data and fallbacks, in words.
        timings: seconds spent per section (for the benchmark and the progress display).
    """

    title: str
    n_responses: int
    n_scored: int
    n_participants: int
    n_excluded: int
    n_simulated: int
    accuracy: pd.DataFrame
    participant_tests: pd.DataFrame
    comparisons: pd.DataFrame
    models: list[tuple[str, ModelFit, ModelFit | None]]
    power: pd.DataFrame
    response_times: pd.DataFrame
    confidence: pd.DataFrame
    correlations: pd.DataFrame
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)
    detection: pd.DataFrame = field(default_factory=pd.DataFrame)
    same_items: pd.DataFrame = field(default_factory=pd.DataFrame)
    same_items_tests: pd.DataFrame = field(default_factory=pd.DataFrame)
    prototype_ratings: pd.DataFrame = field(default_factory=pd.DataFrame)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


SECTIONS = (
    "accuracy",
    "participant_tests",
    "comparisons",
    "models",
    "power",
    "response_times",
    "confidence",
    "correlations",
    "agreement",
    "detection",
    "same_items",
)


def build_report(
    frame: pd.DataFrame,
    *,
    title: str = "",
    automatic: pd.DataFrame | None = None,
    mixed: bool | str = "auto",
    progress: Callable[[int, int, str], None] | None = None,
) -> StudyReport:
    """Compute every table of :class:`StudyReport` from the tidy responses.

    Args:
        frame: one row per response (:func:`analysis.datasets.study_responses_frame`).
        automatic: optional per (method, item) automatic metrics (columns method, item,
            deletion_auc, insertion_auc) to correlate with human accuracy per item.
        mixed: fit the mixed-effects logistic regression (the slowest part): True, False, or
            "auto" (default): for tasks with at most :data:`MIXED_AUTO_MAX_ROWS` scored
            answers, with a warning naming the tasks left out.
        progress: called as ``progress(done, total, section)`` after each section.

    Raises:
        ValueError: the frame lacks the tidy table's columns.
    """
    needed = {"participant", "kind", "task", "condition", "item", "is_correct", "chance"}
    missing = sorted(needed - set(frame.columns))
    if missing:
        raise ValueError(f"the responses lack column(s) {missing}")
    timings: dict[str, float] = {}
    notes: list[str] = []
    scored = scored_main(frame)
    by_task = scored.groupby("task", sort=True)
    step = [0]

    def done(section: str, started: float) -> None:
        timings[section] = time.perf_counter() - started
        step[0] += 1
        if progress:
            progress(step[0], len(SECTIONS), section)

    t = time.perf_counter()
    accuracy = accuracy_by_model(scored, ["task", "condition"])
    done("accuracy", t)

    t = time.perf_counter()
    rows = []
    for (task, condition), group in scored.groupby(["task", "condition"], sort=True):
        per = participant_accuracy(group)
        chance = float(group["chance"].mean())
        r = one_sample_t_test(per["accuracy"], chance)
        rows.append(
            {
                "task": task,
                "condition": condition,
                "participants": r.n,
                "mean_accuracy": r.mean,
                "chance": chance,
                "t": r.t,
                "df": r.df,
                "p_value": r.p_value,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "cohens_d": r.cohens_d,
                "note": r.reason,
            }
        )
    participant_tests = pd.DataFrame(rows)
    done("participant_tests", t)

    t = time.perf_counter()
    parts = []
    for task, group in by_task:
        table = compare_conditions(group, by="condition")
        if not table.empty:
            parts.append(table.assign(task=task))
    comparisons = _first(pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(), "task")
    if not comparisons.empty:
        for w in comparisons.loc[comparisons["warnings"] != "", "warnings"]:
            notes.append(w)
    done("comparisons", t)

    t = time.perf_counter()
    models = []
    for task, group in by_task:
        if group["condition"].nunique() < 2:
            continue
        plain = logistic_regression(group, "is_correct ~ C(condition)")
        fit_mixed = mixed is True or (mixed == "auto" and len(group) <= MIXED_AUTO_MAX_ROWS)
        full = None
        if fit_mixed:
            full = mixed_logistic_regression(group, "is_correct ~ C(condition)")
        elif mixed == "auto":
            notes.append(
                f"{task}: mixed-effects model not fitted for {len(group)} answers (over "
                f"{MIXED_AUTO_MAX_ROWS}); fit it with manage.py analyze STUDY --mixed"
            )
        models.append((task, plain, full))
        for fit in (plain, full):
            if fit is not None and fit.fallback:
                notes.append(f"{task}: {fit.method}: {fit.fallback}")
    done("models", t)

    t = time.perf_counter()
    rows = []
    for row in comparisons.itertuples(index=False) if not comparisons.empty else []:
        n = int(min(row.n_a, row.n_b))
        p_a, p_b = row.k_a / row.n_a, row.k_b / row.n_b
        rows.append(
            {
                "task": row.task,
                "a": row.a,
                "b": row.b,
                "n_per_condition": n,
                "accuracy_a": p_a,
                "accuracy_b": p_b,
                "power": analytic_power(p_a, p_b, n) if n >= 2 else math.nan,
                "n_for_80_percent": (
                    math.ceil(required_sample_size(p_a, p_b)) if p_a != p_b else None
                ),
            }
        )
    power = pd.DataFrame(rows)
    done("power", t)

    t = time.perf_counter()
    rt = scored[scored["rt_ms"].notna()] if "rt_ms" in scored.columns else scored.iloc[:0]
    response_times = (
        rt.groupby(["task", "condition"], sort=True)["rt_ms"]
        .describe(percentiles=[0.25, 0.5, 0.75])[["count", "25%", "50%", "75%"]]
        .rename(columns={"count": "n", "25%": "q1_ms", "50%": "median_ms", "75%": "q3_ms"})
        .astype({"n": "int64"})
        .reset_index()
        if len(rt)
        else pd.DataFrame()
    )
    done("response_times", t)

    t = time.perf_counter()
    confidence = pd.DataFrame()
    if "confidence" in scored.columns and scored["confidence"].notna().any():
        rated = scored[scored["confidence"].notna()]
        counts = (
            rated.groupby(["task", "condition", "confidence"], sort=True)
            .size()
            .rename("count")
            .reset_index()
        )
        totals = counts.groupby(["task", "condition"])["count"].transform("sum")
        confidence = counts.assign(share=counts["count"] / totals)
    prototype_ratings = prototype_ratings_table(scored)
    done("confidence", t)

    t = time.perf_counter()
    correlations = pd.DataFrame()
    if automatic is not None and not automatic.empty and "method" in scored.columns:
        human = (
            scored[scored["method"].astype(str) != ""]
            .groupby(["method", "item"])["is_correct"]
            .mean()
            .rename("accuracy")
            .reset_index()
        )
        merged = human.merge(automatic, on=["method", "item"], how="inner")
        if not merged.empty:
            correlations = human_automatic_correlation(merged)
    done("correlations", t)

    t = time.perf_counter()
    agreement = _agreement_table(scored)
    done("agreement", t)

    t = time.perf_counter()
    detection = pd.DataFrame()
    texts = scored[scored["task"] == "human_or_machine"]
    if len(texts) and "true_class" in texts.columns and "answer" in texts.columns:
        from analysis.stats.detection import detection_table

        detection = detection_table(texts)
    done("detection", t)

    t = time.perf_counter()
    same: SameItems = same_items_tables(scored)
    notes.extend(same.warnings)
    done("same_items", t)

    participants = frame.drop_duplicates("participant")
    return StudyReport(
        title=title,
        n_responses=len(frame),
        n_scored=len(scored),
        n_participants=len(participants),
        n_excluded=int(participants["excluded"].astype(bool).sum()) if "excluded" in frame else 0,
        n_simulated=int(participants["is_simulated"].astype(bool).sum())
        if "is_simulated" in frame
        else 0,
        accuracy=accuracy,
        participant_tests=participant_tests,
        comparisons=comparisons,
        models=models,
        power=power,
        response_times=response_times,
        confidence=confidence,
        correlations=correlations,
        agreement=agreement,
        detection=detection,
        same_items=same.conditions,
        same_items_tests=same.tests,
        prototype_ratings=prototype_ratings,
        warnings=list(dict.fromkeys(notes)),
        timings=timings,
    )


def _agreement_table(scored: pd.DataFrame) -> pd.DataFrame:
    """Rater agreement per task x condition: participants are the raters, items the units,
    answers the values (first answer of a participant to an item)."""
    from analysis.stats.agreement import rater_agreement

    if "answer" not in scored.columns:
        return pd.DataFrame()
    scored = scored.assign(_value=scored["answer"].astype(str))
    if "chosen_class" in scored.columns:  # choices among candidates: the class chosen, since
        chosen = scored["chosen_class"].fillna("").astype(str)  # option order is shuffled
        scored["_value"] = scored["_value"].where(chosen == "", chosen)
    rows = []
    for (task, condition), group in scored.groupby(["task", "condition"], sort=True):
        ratings = group.drop_duplicates(["participant", "item"])[["participant", "item", "_value"]]
        ratings = ratings[ratings["_value"] != ""]
        level = "ordinal" if task in ORDINAL_TASKS else "nominal"
        values = (
            pd.to_numeric(ratings["_value"], errors="coerce")
            if level == "ordinal"
            else (ratings["_value"])
        )
        if level == "ordinal" and values.isna().any():
            level, values = "nominal", ratings["_value"]
        long = pd.DataFrame(
            {"rater": ratings["participant"], "unit": ratings["item"], "value": values}
        )
        try:
            result = rater_agreement(long, level=level)
        except ValueError as exc:
            rows.append({"task": task, "condition": condition, "level": level, "note": str(exc)})
            continue
        alpha = result.alpha
        rows.append(
            {
                "task": task,
                "condition": condition,
                "level": level,
                "raters": alpha.n_raters,
                "units": alpha.n_units,
                "alpha": alpha.value,
                "kappa": result.kappa.value if result.kappa is not None else None,
                "note": alpha.reason or result.kappa_note,
            }
        )
    return pd.DataFrame(rows)


def _first(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    if frame.empty or column not in frame.columns:
        return frame
    return frame[[column, *[c for c in frame.columns if c != column]]]


def _clean(value):
    """A JSON-ready scalar: numpy scalars to Python, NaN and pandas' NA to None."""
    value = value.item() if isinstance(value, np.generic) else value
    if value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def frame_records(frame: pd.DataFrame) -> list[dict]:
    """DataFrame rows as JSON-ready dicts (see :func:`_clean`)."""
    return [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict("records")]


def report_records(report: StudyReport) -> dict:
    """The report as JSON-ready dicts (NaN → None), for the API."""
    return {
        "title": report.title,
        "n_responses": report.n_responses,
        "n_scored": report.n_scored,
        "n_participants": report.n_participants,
        "n_excluded": report.n_excluded,
        "n_simulated": report.n_simulated,
        "accuracy": frame_records(report.accuracy),
        "participant_tests": frame_records(report.participant_tests),
        "comparisons": frame_records(report.comparisons),
        "models": [
            {
                "task": task,
                "logistic": _fit_record(plain),
                "mixed": _fit_record(full) if full is not None else None,
            }
            for task, plain, full in report.models
        ],
        "power": frame_records(report.power),
        "response_times": frame_records(report.response_times),
        "confidence": frame_records(report.confidence),
        "correlations": frame_records(report.correlations),
        "agreement": frame_records(report.agreement),
        "detection": frame_records(report.detection),
        "same_items": frame_records(report.same_items),
        "same_items_tests": frame_records(report.same_items_tests),
        "prototype_ratings": frame_records(report.prototype_ratings),
        "warnings": report.warnings,
    }


def _fit_record(fit: ModelFit) -> dict:
    return {
        "method": fit.method,
        "formula": fit.formula,
        "n": fit.n,
        "coefficients": frame_records(fit.coefficients),
        "random_effects": frame_records(fit.random_effects),
        "warnings": list(fit.warnings),
        "fallback": fit.fallback,
    }


def _fmt(value, digits: int = 3) -> str:
    value = _clean(value)
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def table_text(frame: pd.DataFrame, columns: list[str] | None = None) -> str:
    """A DataFrame as fixed-width text (numbers to 3 decimals, tiny p-values in e-notation)."""
    if frame.empty:
        return "  (none)"
    columns = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    raw = list(frame[columns].itertuples(index=False))
    cells = [[_fmt(v) for v in row] for row in raw]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  " + "  ".join("-" * w for w in widths))
    for values, r in zip(raw, cells, strict=True):
        lines.append(
            "  "
            + "  ".join(
                text.ljust(w) if isinstance(v, str) else text.rjust(w)
                for v, text, w in zip(values, r, widths, strict=True)
            ).rstrip()
        )
    return "\n".join(lines)


def report_text(report: StudyReport) -> str:
    """The report as plain text for the terminal (``manage.py analyze``)."""
    out = [
        f"{report.title}: {report.n_responses} responses, {report.n_scored} scored, "
        f"{report.n_participants} participants ({report.n_excluded} excluded, "
        f"{report.n_simulated} simulated)",
        "",
        "Accuracy (Wilson 95% CI; exact binomial test against chance)",
        table_text(report.accuracy),
        "",
        "Per-participant accuracy against chance (one-sample t-test)",
        table_text(report.participant_tests),
        "",
        "Conditions compared (chi-square or Fisher exact; Holm-adjusted p)",
        table_text(
            report.comparisons,
            [
                "task",
                "a",
                "b",
                "test",
                "p_value",
                "p_holm",
                "risk_difference",
                "rd_low",
                "rd_high",
                "odds_ratio",
                "cohens_h",
            ],
        ),
    ]
    for task, plain, full in report.models:
        for fit in (plain, full):
            if fit is None:
                continue
            out += ["", f"{task}: {fit.method} ({fit.formula}, n={fit.n})"]
            if fit.fallback:
                out.append(f"  fallback: {fit.fallback}")
            out.append(table_text(fit.coefficients))
            if not fit.random_effects.empty:
                out.append(table_text(fit.random_effects))
    out += ["", "Power (two-proportion z-test, alpha 0.05)", table_text(report.power)]
    out += ["", "Response times of scored answers (ms)", table_text(report.response_times)]
    if not report.confidence.empty:
        out += ["", "Confidence ratings", table_text(report.confidence)]
    if not report.correlations.empty:
        out += ["", "Human accuracy vs automatic metrics (Spearman)"]
        out.append(table_text(report.correlations))
    out += ["", "Agreement among participants (Krippendorff's alpha; Fleiss' kappa)"]
    out.append(table_text(report.agreement))
    if not report.detection.empty:
        out += ["", "Detecting machine text (d′, criterion c; log-linear corrected)"]
        out.append(table_text(report.detection))
    if not report.prototype_ratings.empty:
        out += ["", "Prototype similarity ratings (1-4; HIVE), model right vs wrong"]
        out.append(table_text(report.prototype_ratings))
    if not report.same_items.empty:
        out += ["", "Conditions compared on the same items (items answered under every condition)"]
        out.append(
            table_text(
                report.same_items,
                [
                    "task",
                    "condition",
                    "explanation_type",
                    "classifier",
                    "n_items",
                    "n_answers",
                    "accuracy",
                    "ci_low",
                    "ci_high",
                    "accuracy_model_right",
                    "accuracy_model_wrong",
                    "note",
                ],
            )
        )
        out += ["", "  Paired tests of per-item accuracy (Friedman; Wilcoxon signed-rank, Holm)"]
        out.append(
            table_text(
                report.same_items_tests,
                [
                    "task",
                    "test",
                    "conditions",
                    "n_items",
                    "n_nonzero",
                    "statistic",
                    "df",
                    "p_value",
                    "p_holm",
                    "mean_difference",
                    "note",
                ],
            )
        )
    if report.warnings:
        out += ["", "Warnings"] + [f"  - {w}" for w in report.warnings]
    return "\n".join(out)
