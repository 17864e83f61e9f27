"""Proportions: confidence intervals, exact binomial tests and per-group accuracy tables.

These are the statistics reported by human-evaluation studies of explanations such as HIVE
(Kim et al., ECCV 2022): the share of correct answers per task / condition, its 95% confidence
interval, and whether it differs from the task's chance level.

Sources
-------
* Wilson, E. B. (1927). "Probable inference, the law of succession, and statistical inference".
  Journal of the American Statistical Association 22(158):209-212.
* Newcombe, R. G. (1998). "Two-sided confidence intervals for the single proportion: comparison
  of seven methods". Statistics in Medicine 17:857-872 -- method 3 (score interval without
  continuity correction) is the Wilson interval computed here.
* Exact binomial test (the test that inverts the Clopper & Pearson 1934 exact interval): the
  p-value sums binomial probabilities; the two-sided version sums the probabilities of all
  outcomes no more likely than the observed one (``scipy.stats.binomtest``).

This module imports no Django so it can be used from notebooks, Celery tasks and tests alike.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest as _scipy_binomtest
from statsmodels.stats.proportion import proportion_confint as _proportion_confint

__all__ = [
    "ACCURACY_TABLE_STAT_COLUMNS",
    "accuracy_table",
    "binomial_test",
    "wilson_interval",
]

#: Columns that :func:`accuracy_table` appends after the grouping columns, in order.
ACCURACY_TABLE_STAT_COLUMNS: tuple[str, ...] = (
    "n",
    "n_correct",
    "accuracy",
    "ci_low",
    "ci_high",
    "chance",
    "p_value",
)

_ALTERNATIVES = ("two-sided", "greater", "less")


def _check_count(name: str, value: object) -> int:
    """Return ``value`` as an ``int`` if it is an integer (not a bool), else raise ``TypeError``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def _check_counts(successes: object, n: object) -> tuple[int, int]:
    """Validate a (successes, n) pair: integers with ``0 <= successes <= n``."""
    k = _check_count("successes", successes)
    total = _check_count("n", n)
    if total < 0:
        raise ValueError(f"n must be >= 0, got {total}")
    if not 0 <= k <= total:
        raise ValueError(
            f"successes must satisfy 0 <= successes <= n, got successes={k}, n={total}"
        )
    return k, total


def _check_probability(name: str, value: object, *, open_interval: bool) -> float:
    """Validate a real in ``(0, 1)`` (``open_interval``) or ``[0, 1]``; return it as a float."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    x = float(value)
    if open_interval:
        if not 0.0 < x < 1.0:
            raise ValueError(f"{name} must satisfy 0 < {name} < 1, got {x!r}")
    elif not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must satisfy 0 <= {name} <= 1, got {x!r}")
    return x


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score confidence interval for a binomial proportion.

    The interval (Wilson 1927; Newcombe 1998, method 3 -- score interval *without* continuity
    correction) is the set of proportions ``p`` not rejected by the two-sided score test::

        centre    = (p_hat + z^2 / (2n)) / (1 + z^2 / n)
        halfwidth = z * sqrt(p_hat (1 - p_hat) / n + z^2 / (4 n^2)) / (1 + z^2 / n)

    with ``z`` the ``1 - (1 - confidence) / 2`` standard-normal quantile. Unlike the Wald
    interval it stays inside [0, 1] and has sensible width at 0 or ``n`` successes (e.g.
    0/20 -> (0.0000, 0.1611), Newcombe 1998, Table I). Computed with
    ``statsmodels.stats.proportion.proportion_confint(method="wilson")``.

    Args:
        successes: number of successes, an integer with ``0 <= successes <= n``.
        n: number of trials, an integer ``>= 0``.
        confidence: two-sided confidence level, ``0 < confidence < 1`` (default 0.95).

    Returns:
        ``(low, high)`` with ``0 <= low <= successes / n <= high <= 1``; ``(nan, nan)`` when
        ``n == 0`` (no information).

    Raises:
        TypeError: ``successes`` or ``n`` is not an integer (bools and floats are rejected), or
            ``confidence`` is not a real number.
        ValueError: ``n < 0``, ``successes`` outside ``[0, n]``, or ``confidence`` outside
            ``(0, 1)``.
    """
    k, total = _check_counts(successes, n)
    level = _check_probability("confidence", confidence, open_interval=True)
    if total == 0:
        return (math.nan, math.nan)
    low, high = _proportion_confint(k, total, alpha=1.0 - level, method="wilson")
    # The score interval always contains p_hat and lies in [0, 1]; its bound is exactly 0 at
    # k == 0 and exactly 1 at k == n. statsmodels' float arithmetic can miss by ~1e-17 (e.g. it
    # returns 5.6e-17 for 0/3), so clamp to [0, p_hat] and [p_hat, 1].
    p_hat = k / total
    return (min(max(float(low), 0.0), p_hat), max(min(float(high), 1.0), p_hat))


def binomial_test(successes: int, n: int, chance: float, alternative: str = "two-sided") -> float:
    """Exact binomial test p-value for ``successes`` out of ``n`` against probability ``chance``.

    Under H0 the number of successes is ``Binomial(n, chance)``. ``"greater"`` gives
    ``P(X >= successes)``, ``"less"`` gives ``P(X <= successes)`` and ``"two-sided"`` sums the
    probabilities of every outcome no more likely than the observed one (the exact test that
    inverts the Clopper-Pearson interval; ``scipy.stats.binomtest``). Example: 9 heads in 10
    fair tosses gives the two-sided p-value 22/1024 = 0.021484375.

    Args:
        successes: number of successes, an integer with ``0 <= successes <= n``.
        n: number of trials, an integer ``>= 0``.
        chance: success probability under the null hypothesis, ``0 <= chance <= 1`` (e.g. 0.5
            for a two-alternative task, 0.25 for a four-alternative one).
        alternative: ``"two-sided"`` (default), ``"greater"`` or ``"less"``.

    Returns:
        The p-value in ``[0, 1]``; ``nan`` when ``n == 0``.

    Raises:
        TypeError: ``successes`` or ``n`` is not an integer, or ``chance`` is not a real number.
        ValueError: ``n < 0``, ``successes`` outside ``[0, n]``, ``chance`` outside ``[0, 1]``,
            or an unknown ``alternative``.
    """
    k, total = _check_counts(successes, n)
    p0 = _check_probability("chance", chance, open_interval=False)
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {_ALTERNATIVES}, got {alternative!r}")
    if total == 0:
        return math.nan
    p_value = _scipy_binomtest(k, total, p0, alternative=alternative).pvalue
    return min(max(float(p_value), 0.0), 1.0)


def _empty_accuracy_table(by: list[str], df: pd.DataFrame | None = None) -> pd.DataFrame:
    """An empty accuracy table with the ``by`` columns followed by the statistic columns."""
    columns: dict[str, pd.Series] = {}
    for col in by:
        dtype = df[col].dtype if df is not None and col in df.columns else object
        columns[col] = pd.Series([], dtype=dtype)
    columns["n"] = pd.Series([], dtype="int64")
    columns["n_correct"] = pd.Series([], dtype="int64")
    for col in ("accuracy", "ci_low", "ci_high", "chance", "p_value"):
        columns[col] = pd.Series([], dtype="float64")
    return pd.DataFrame(columns)


def accuracy_table(
    df: pd.DataFrame,
    *,
    by: Sequence[str],
    correct_col: str = "is_correct",
    chance_col: str = "chance",
) -> pd.DataFrame:
    """Accuracy per group with a Wilson 95% interval and an exact binomial test against chance.

    Each row of ``df`` is one participant response. Rows are grouped by the ``by`` columns (e.g.
    ``["task", "model_correct"]``); missing values in grouping columns form their own group rather
    than being dropped. For every group the table reports:

    * ``n`` (int): number of responses;
    * ``n_correct`` (int): number of correct responses;
    * ``accuracy`` (float in [0, 1]): ``n_correct / n``;
    * ``ci_low``, ``ci_high`` (float): Wilson 95% score interval, see :func:`wilson_interval`
      (Wilson 1927; Newcombe 1998 method 3);
    * ``chance`` (float in [0, 1]): the group's chance level, e.g. 0.5 for a two-choice
      agreement task, 0.25 for a four-choice distinction task;
    * ``p_value`` (float): two-sided exact binomial test of ``n_correct`` out of ``n`` against
      ``chance``, see :func:`binomial_test`.

    Rows are sorted by the ``by`` columns.

    Args:
        df: one row per response. Must contain the ``by`` columns, ``correct_col`` and
            ``chance_col`` unless it has no rows and no columns at all (e.g. built from an empty
            query result), in which case an empty table is returned.
        by: names of the grouping columns, at least one (a single string is treated as one
            column name).
        correct_col: column holding whether the response is correct: ``bool`` or ``0``/``1``
            (numeric or object dtype); missing values are not allowed.
        chance_col: column holding the chance level of the question, a number in ``[0, 1]``,
            constant within each group; missing values are not allowed.

    Returns:
        A new DataFrame with columns ``[*by, "n", "n_correct", "accuracy", "ci_low", "ci_high",
        "chance", "p_value"]`` and a fresh ``RangeIndex``; empty (with those columns) when ``df``
        has no rows.

    Raises:
        ValueError: ``by`` is empty or repeats a column; a required column is missing (the
            message names them); ``correct_col`` has missing values or values other than
            True/False/0/1; ``chance_col`` has missing or non-numeric values, values outside
            ``[0, 1]``, or more than one distinct value within a group.
    """
    by_cols = [by] if isinstance(by, str) else list(by)
    if not by_cols:
        raise ValueError("by must name at least one grouping column")
    if len(set(by_cols)) != len(by_cols):
        raise ValueError(f"by contains duplicate column names: {by_cols!r}")

    if len(df.index) == 0 and len(df.columns) == 0:
        return _empty_accuracy_table(by_cols)

    required = [*by_cols, correct_col, chance_col]
    missing = [col for col in dict.fromkeys(required) if col not in df.columns]
    if missing:
        raise ValueError(
            f"accuracy_table: missing required column(s) {missing!r}; "
            f"available columns: {list(map(str, df.columns))!r}"
        )
    clash = sorted(set(by_cols) & set(ACCURACY_TABLE_STAT_COLUMNS))
    if clash:
        raise ValueError(f"by columns clash with output statistic columns: {clash!r}")

    if len(df.index) == 0:
        return _empty_accuracy_table(by_cols, df)

    correct = df[correct_col]
    if correct.isna().any():
        raise ValueError(f"column {correct_col!r} has missing values")
    bad_correct = ~correct.isin([0, 1])
    if bad_correct.any():
        examples = correct[bad_correct].unique()[:5].tolist()
        raise ValueError(
            f"column {correct_col!r} must hold booleans or 0/1, found e.g. {examples!r}"
        )

    try:
        chance = pd.to_numeric(df[chance_col], errors="raise").astype("float64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"column {chance_col!r} must be numeric: {exc}") from exc
    if chance.isna().any():
        raise ValueError(f"column {chance_col!r} has missing values")
    if ((chance < 0.0) | (chance > 1.0)).any():
        raise ValueError(f"column {chance_col!r} must lie in [0, 1]")

    work = df[by_cols].copy()
    work["_correct"] = correct.astype("int64").to_numpy()
    work["_chance"] = chance.to_numpy()

    grouped = work.groupby(by_cols, sort=True, dropna=False, observed=True)
    agg = grouped.agg(
        n=("_correct", "size"),
        n_correct=("_correct", "sum"),
        chance_min=("_chance", "min"),
        chance_max=("_chance", "max"),
    ).reset_index()

    inconsistent = agg[~np.isclose(agg["chance_min"], agg["chance_max"], rtol=0.0, atol=1e-12)]
    if len(inconsistent.index):
        first = inconsistent.iloc[0]
        key = {col: first[col] for col in by_cols}
        raise ValueError(
            f"column {chance_col!r} must be constant within each group; group {key!r} has "
            f"values from {first['chance_min']!r} to {first['chance_max']!r}"
        )

    n = agg["n"].astype("int64")
    n_correct = agg["n_correct"].astype("int64")
    group_chance = agg["chance_min"].astype("float64")
    intervals = [wilson_interval(int(k), int(m)) for k, m in zip(n_correct, n, strict=True)]
    p_values = [
        binomial_test(int(k), int(m), float(c))
        for k, m, c in zip(n_correct, n, group_chance, strict=True)
    ]

    out = agg[by_cols].copy()
    out["n"] = n.to_numpy()
    out["n_correct"] = n_correct.to_numpy()
    out["accuracy"] = (n_correct / n).astype("float64").to_numpy()
    out["ci_low"] = np.array([lo for lo, _ in intervals], dtype="float64")
    out["ci_high"] = np.array([hi for _, hi in intervals], dtype="float64")
    out["chance"] = group_chance.to_numpy()
    out["p_value"] = np.array(p_values, dtype="float64")
    return out.reset_index(drop=True)
