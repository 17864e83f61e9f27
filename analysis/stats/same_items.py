"""Conditions compared on the same items: accuracy per condition over only the items answered
under every condition of a task, and paired rank tests of per-item accuracy across conditions.

When each condition uses its own classifier (a plain CNN for Grad-CAM, a ProtoPNet for
prototypes, a concept-bottleneck model for concepts), the pooled accuracy of a condition mixes
the effect of the explanation with the items it happened to be shown on and with whether its
classifier was right on them. Restricting every condition to the common items and splitting
accuracy by model correctness is how HIVE compares explanation types (Kim, Meister,
Ramaswamy, Fong & Russakovsky, "HIVE: Evaluating the Human Interpretability of Visual
Explanations", ECCV 2022: Grad-CAM, BagNet, ProtoPNet and ProtoTree on the same images,
reported separately for correct and incorrect predictions). The item is the unit of pairing:
each condition's accuracy on an item is the share of correct answers it got there.

Sources
-------
* Wilson (1927) score interval of each condition's accuracy over its answers
  (:func:`analysis.stats.proportions.wilson_interval`).
* Friedman, M. (1937). "The use of ranks to avoid the assumption of normality implicit in the
  analysis of variance". JASA 32(200):675-701 -- items are blocks, conditions are treatments;
  ``scipy.stats.friedmanchisquare`` (average ranks for ties, with the tie correction).
* Wilcoxon, F. (1945). "Individual comparisons by ranking methods". Biometrics Bulletin
  1(6):80-83 -- signed-rank test of the per-item differences; ``scipy.stats.wilcoxon``.
* Holm, S. (1979). "A simple sequentially rejective multiple test procedure". Scand. J.
  Statist. 6:65-70 (``statsmodels.stats.multitest.multipletests``).

No Django imports.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as _stats

from analysis.codebook import explanation_type as _explanation_type
from analysis.stats.comparisons import holm_adjust
from analysis.stats.proportions import wilson_interval

__all__ = [
    "PROTOTYPE_RATING_COLUMNS",
    "prototype_ratings_table",
    "SAME_ITEMS_CONDITION_COLUMNS",
    "SAME_ITEMS_TEST_COLUMNS",
    "WILCOXON_ZERO_METHOD",
    "SameItems",
    "common_items",
    "compare_on_same_items",
    "item_accuracy_matrix",
    "same_items_tables",
]

#: Columns of :attr:`SameItems.conditions`, in order.
SAME_ITEMS_CONDITION_COLUMNS = [
    "task",
    "condition",
    "explanation_type",
    "classifier",
    "n_items",
    "n_items_dropped",
    "n_answers",
    "n_correct",
    "accuracy",
    "ci_low",
    "ci_high",
    "n_model_right",
    "accuracy_model_right",
    "n_model_wrong",
    "accuracy_model_wrong",
    "mean_item_accuracy",
    "note",
]

#: Columns of :attr:`SameItems.tests`, in order.
SAME_ITEMS_TEST_COLUMNS = [
    "task",
    "test",
    "conditions",
    "a",
    "b",
    "n_items",
    "n_nonzero",
    "statistic",
    "df",
    "p_value",
    "p_holm",
    "mean_difference",
    "note",
]

#: How :func:`scipy.stats.wilcoxon` treats items with the same accuracy under both conditions:
#: "wilcox" drops them before ranking, as Wilcoxon (1945) did and R's ``wilcox.test`` does.
#: Per-item accuracies are coarse (often 0 or 1), so such zeros are common; "pratt" would keep
#: them in the ranking (more conservative) and is the documented alternative. ``n_nonzero``
#: in the tests table says how many items the test used.
WILCOXON_ZERO_METHOD = "wilcox"

#: Decimals per-item accuracies (in the Friedman test) and their differences (in the Wilcoxon
#: test) are rounded to before ranking, so that equal shares and equal differences tie: 1 - 2/3
#: and 1/3 - 0 differ in the last bit. Shares of fewer than 10^9 answers differ by more.
_DIGITS = 9

#: Count columns that may be missing: nullable integers (shown as 5, not 5.000).
_COUNTS = {"n_model_right": "Int64", "n_model_wrong": "Int64"}
_TEST_COUNTS = {"n_nonzero": "Int64", "df": "Int64"}


@dataclass(frozen=True)
class SameItems:
    """Conditions compared on the items they share.

    Attributes:
        conditions: one row per task x condition (columns
            :data:`SAME_ITEMS_CONDITION_COLUMNS`): ``n_items`` common items (answered under
            every condition of the task) and ``n_items_dropped`` items this condition answered
            that some other condition did not; on the common items: ``n_answers``,
            ``n_correct``, ``accuracy`` = n_correct / n_answers in [0, 1] with its Wilson 95%
            interval ``ci_low`` / ``ci_high`` (answers pooled, not clustered); answers and
            accuracy where the condition's classifier was right (``n_model_right``,
            ``accuracy_model_right``) and wrong (``n_model_wrong``, ``accuracy_model_wrong``;
            None when no such answer); ``mean_item_accuracy``, the mean over items of the
            per-item accuracy the paired tests rank; ``explanation_type`` and ``classifier``
            of the condition's answers (distinct values joined by ", "; "" when unknown);
            ``note``: why the accuracies are missing (fewer than 2 common items), else "".
        tests: one row per test (columns :data:`SAME_ITEMS_TEST_COLUMNS`): per task with 3+
            conditions a ``friedman`` row (``conditions`` all of them, ``statistic`` the
            tie-corrected chi-square >= 0, ``df`` = k - 1, ``p_value`` in [0, 1] from the
            chi-square distribution with k - 1 degrees of freedom) followed by
            a ``wilcoxon`` row per pair; with 2 conditions the one ``wilcoxon`` row.
            Wilcoxon rows: ``a`` / ``b``, ``statistic`` the smaller signed-rank sum,
            ``n_nonzero`` items with a difference (zeros dropped, :data:`WILCOXON_ZERO_METHOD`),
            ``p_value`` two-sided, ``p_holm`` Holm-adjusted over the task's pairs (equal to
            ``p_value`` with one pair), ``mean_difference`` mean over items of accuracy(a) -
            accuracy(b) in [-1, 1]. Undefined statistics are None with the reason in ``note``.
        warnings: tasks whose conditions could not be compared on the same items, in words.
    """

    conditions: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=SAME_ITEMS_CONDITION_COLUMNS)
    )
    tests: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=SAME_ITEMS_TEST_COLUMNS)
    )
    warnings: tuple[str, ...] = ()


def common_items(scored: pd.DataFrame, *, by: str = "condition", item: str = "item") -> list:
    """The items (sorted) answered at least once under every level of ``by`` in ``scored``;
    empty items ("" or missing) never count."""
    rows = scored[scored[item].notna() & (scored[item].astype(str) != "")]
    per = rows.groupby(by, sort=True)[item].agg(set)
    if per.empty:
        return []
    return sorted(set.intersection(*per.tolist()))


def item_accuracy_matrix(
    scored: pd.DataFrame, *, by: str = "condition", item: str = "item", correct: str = "is_correct"
) -> pd.DataFrame:
    """Per-item accuracy (share of correct answers, in [0, 1]) of each level of ``by`` on the
    :func:`common_items`: items as rows (sorted), levels as columns (sorted); no missing
    cells."""
    items = common_items(scored, by=by, item=item)
    rows = scored[scored[item].isin(items)]
    matrix = (
        rows.assign(_c=rows[correct].astype(float))
        .pivot_table(index=item, columns=by, values="_c", aggfunc="mean")
        .sort_index()
    )
    matrix = matrix[sorted(matrix.columns)]
    matrix.columns.name = None
    return matrix


def _labels(values: pd.Series) -> str:
    """Distinct non-empty values as text, joined by ", " ("" when none)."""
    seen = [str(v) for v in values.dropna().unique() if str(v) != ""]
    return ", ".join(sorted(seen))


def _split(rows: pd.DataFrame, right: bool) -> tuple[int, float | None]:
    """Answers, and their accuracy (None when none), where the model was right / wrong."""
    if "model_correct" not in rows.columns:
        return 0, None
    flags = rows["model_correct"]
    part = rows[flags.notna() & (flags == right).fillna(False).astype(bool)]
    n = len(part)
    return n, (float(part["is_correct"].astype(bool).mean()) if n else None)


def _wilcoxon(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None, int, str]:
    """Two-sided Wilcoxon signed-rank test of x - y: (statistic, p, items used, note)."""
    diff = np.round(x - y, _DIGITS)
    nonzero = int(np.count_nonzero(diff))
    if nonzero == 0:
        return None, None, 0, "every common item has the same accuracy under both conditions"
    result = _stats.wilcoxon(diff, zero_method=WILCOXON_ZERO_METHOD, alternative="two-sided")
    return float(result.statistic), float(result.pvalue), nonzero, ""


def compare_on_same_items(
    scored: pd.DataFrame, *, task: str = "", by: str = "condition"
) -> SameItems:
    """Compare the levels of ``by`` (conditions) of one task on the items they share.

    Keeps only the items answered under every condition (:func:`common_items`), then per
    condition computes accuracy with its Wilson 95% interval, the split by model correctness
    and the mean per-item accuracy; and tests whether per-item accuracy differs across
    conditions with items as blocks: Friedman's (1937) rank test for 3+ conditions plus
    Wilcoxon (1945) signed-rank tests of every pair with Holm's adjustment, or the single
    Wilcoxon test for 2 conditions. HIVE (Kim et al., ECCV 2022) compares explanation types
    this way, on the same images and by model correctness.

    Args:
        scored: the task's scored main answers (:func:`analysis.report.scored_main`), one row
            per answer with ``by``, ``item`` and ``is_correct`` (bool or 0/1); optional
            ``model_correct`` (bool / None), ``explanation_type`` (else derived from
            ``method``: "" -> none) and ``classifier``.
        task: the task's name, written into both tables.
        by: the column naming the conditions.

    Returns:
        :class:`SameItems`; both tables empty when there are fewer than 2 conditions. With
        fewer than 2 common items, one row per condition with its counts and a ``note``, one
        test row (``test`` "") with the same note, and a warning.

    Raises:
        ValueError: a required column is missing.
    """
    missing = [c for c in (by, "item", "is_correct") if c not in scored.columns]
    if missing:
        raise ValueError(f"compare_on_same_items: missing column(s) {missing}")
    levels = sorted(scored[by].dropna().astype(str).unique())
    if len(levels) < 2:
        return SameItems()
    scored = scored.assign(**{by: scored[by].astype(str)})
    if "explanation_type" not in scored.columns:
        method = scored["method"] if "method" in scored.columns else pd.Series("", scored.index)
        scored = scored.assign(explanation_type=method.map(_explanation_type))
    items = common_items(scored, by=by)
    common = scored[scored["item"].isin(items)]
    answered = {
        level: set(scored.loc[scored[by] == level, "item"].astype(str)) - {""} for level in levels
    }
    note = ""
    if len(items) < 2:
        note = (
            f"only {len(items)} item{'' if len(items) == 1 else 's'} answered under every "
            f"condition ({', '.join(levels)}): not compared on the same items"
        )

    rows = []
    for level in levels:
        mine = scored[scored[by] == level]
        on_common = common[common[by] == level]
        k, n = int(on_common["is_correct"].astype(bool).sum()), len(on_common)
        row = {
            "task": task,
            "condition": level,
            "explanation_type": _labels(mine["explanation_type"]),
            "classifier": _labels(mine["classifier"]) if "classifier" in mine.columns else "",
            "n_items": len(items),
            "n_items_dropped": len(answered[level] - set(items)),
            "n_answers": n,
            "n_correct": k,
            "accuracy": None,
            "ci_low": None,
            "ci_high": None,
            "n_model_right": None,
            "accuracy_model_right": None,
            "n_model_wrong": None,
            "accuracy_model_wrong": None,
            "mean_item_accuracy": None,
            "note": note,
        }
        if not note:
            low, high = wilson_interval(k, n)
            n_right, acc_right = _split(on_common, True)
            n_wrong, acc_wrong = _split(on_common, False)
            per_item = on_common.groupby("item")["is_correct"].agg(lambda s: s.astype(float).mean())
            row.update(
                accuracy=k / n,
                ci_low=low,
                ci_high=high,
                n_model_right=n_right,
                accuracy_model_right=acc_right,
                n_model_wrong=n_wrong,
                accuracy_model_wrong=acc_wrong,
                mean_item_accuracy=float(per_item.mean()),
            )
        rows.append(row)
    conditions = pd.DataFrame(rows, columns=SAME_ITEMS_CONDITION_COLUMNS).astype(_COUNTS)

    if note:
        test = {c: None for c in SAME_ITEMS_TEST_COLUMNS}
        test.update(
            task=task,
            test="",  # none was run
            conditions=", ".join(levels),
            a="",
            b="",
            n_items=len(items),
            note=note,
        )
        tests = pd.DataFrame([test], columns=SAME_ITEMS_TEST_COLUMNS).astype(_TEST_COUNTS)
        return SameItems(conditions, tests, (f"{task}: {note}" if task else note,))

    matrix = item_accuracy_matrix(common, by=by)
    shares = matrix.round(_DIGITS)
    tests = []
    if len(levels) > 2:
        statistic, p_value, friedman_note = None, None, ""
        if (shares.to_numpy() == shares.to_numpy()[:, :1]).all():
            friedman_note = "every common item has the same accuracy under all conditions"
        else:
            result = _stats.friedmanchisquare(*(shares[c].to_numpy() for c in levels))
            statistic, p_value = float(result.statistic), float(result.pvalue)
        tests.append(
            {
                "task": task,
                "test": "friedman",
                "conditions": ", ".join(levels),
                "a": "",
                "b": "",
                "n_items": len(items),
                "n_nonzero": None,
                "statistic": statistic,
                "df": len(levels) - 1,
                "p_value": p_value,
                "p_holm": None,
                "mean_difference": None,
                "note": friedman_note,
            }
        )
    pairs = []
    for a, b in itertools.combinations(levels, 2):
        x, y = matrix[a].to_numpy(), matrix[b].to_numpy()
        statistic, p_value, used, pair_note = _wilcoxon(x, y)
        pairs.append(
            {
                "task": task,
                "test": "wilcoxon",
                "conditions": f"{a}, {b}",
                "a": a,
                "b": b,
                "n_items": len(items),
                "n_nonzero": used,
                "statistic": statistic,
                "df": None,
                "p_value": p_value,
                "p_holm": None,
                "mean_difference": float(np.mean(x - y)),
                "note": pair_note,
            }
        )
    defined = [i for i, r in enumerate(pairs) if r["p_value"] is not None]
    for i, adjusted in zip(
        defined, holm_adjust([pairs[i]["p_value"] for i in defined]), strict=True
    ):
        pairs[i]["p_holm"] = float(adjusted)
    tests += pairs
    tests = pd.DataFrame(tests, columns=SAME_ITEMS_TEST_COLUMNS).astype(_TEST_COUNTS)
    return SameItems(conditions, tests, ())


def same_items_tables(scored: pd.DataFrame, *, by: str = "condition") -> SameItems:
    """:func:`compare_on_same_items` for every task of ``scored`` (sorted) with 2+ conditions,
    concatenated; see :class:`SameItems` for the columns."""
    parts = [
        compare_on_same_items(group, task=str(task), by=by)
        for task, group in scored.groupby("task", sort=True)
    ]
    parts = [p for p in parts if not p.conditions.empty]
    if not parts:
        return SameItems()
    return SameItems(
        pd.concat([p.conditions for p in parts], ignore_index=True),
        pd.concat([p.tests for p in parts], ignore_index=True),
        tuple(w for p in parts for w in p.warnings),
    )


PROTOTYPE_RATING_COLUMNS = [
    "task",
    "condition",
    "model",
    "n_trials",
    "n_ratings",
    "mean_rating",
    "share_similar",
    "p_right_vs_wrong",
    "note",
]


def prototype_ratings_table(scored: pd.DataFrame) -> pd.DataFrame:
    """HIVE's per-prototype similarity ratings, summarised (Kim et al., ECCV 2022, Sec. 5.2:
    participants rated prototypes as similar about as often when the model was wrong).

    Args:
        scored: tidy answers (one row per response) with ``task``, ``condition``,
            ``model_correct`` (bool) and ``answer_data`` (the structured answer as a JSON
            string or dict; rated trials hold ``{"ratings": [1-4, ...]}``).

    Returns:
        One row per task x condition x model ("model right", "model wrong", "all") of trials
        with ratings: ``n_trials``, ``n_ratings``, ``mean_rating`` in [1, 4],
        ``share_similar`` (ratings 3 and 4, in [0, 1]); the "all" row holds
        ``p_right_vs_wrong``, the two-sided Mann-Whitney U (1947) test of the ratings on
        model-right against model-wrong trials (None with a note when either side has no
        rating or all ratings are equal). Empty when no trial has ratings.
    """
    if scored.empty or "answer_data" not in scored.columns:
        return pd.DataFrame(columns=PROTOTYPE_RATING_COLUMNS)

    def ratings_of(raw) -> list[int]:
        if isinstance(raw, str):
            if not raw.startswith("{"):
                return []
            try:
                raw = json.loads(raw)
            except ValueError:
                return []
        if not isinstance(raw, dict):
            return []
        return [int(v) for v in raw.get("ratings") or []]

    ratings = scored["answer_data"].map(ratings_of)
    rated = scored.assign(_ratings=ratings)[ratings.map(len) > 0]
    rows = []
    for (task, condition), group in rated.groupby(["task", "condition"], sort=True):
        split = {
            "model right": group[group["model_correct"] == True],  # noqa: E712
            "model wrong": group[group["model_correct"] == False],  # noqa: E712
            "all": group,
        }
        values = {k: [r for rs in g["_ratings"] for r in rs] for k, g in split.items()}
        for model, g in split.items():
            v = values[model]
            if not v:
                continue
            row = {
                "task": task,
                "condition": condition,
                "model": model,
                "n_trials": int(len(g)),
                "n_ratings": len(v),
                "mean_rating": float(np.mean(v)),
                "share_similar": float(np.mean([r >= 3 for r in v])),
                "p_right_vs_wrong": None,
                "note": "",
            }
            if model == "all":
                right, wrong = values["model right"], values["model wrong"]
                if not right or not wrong:
                    row["note"] = "ratings on one side only (model right or wrong): no test"
                elif len(set(right) | set(wrong)) == 1:
                    row["note"] = "all ratings equal: no test"
                else:
                    row["p_right_vs_wrong"] = float(
                        _stats.mannwhitneyu(right, wrong, alternative="two-sided").pvalue
                    )
            rows.append(row)
    return pd.DataFrame(rows, columns=PROTOTYPE_RATING_COLUMNS)
