"""Tests for analysis.stats.proportions against published and hand-computed values.

Pure-Python module: run with ``pytest tests/analysis -p no:django -o addopts=""``.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from analysis.stats import (
    ACCURACY_TABLE_STAT_COLUMNS,
    accuracy_table,
    binomial_test,
    wilson_interval,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _wilson_closed_form(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Independent closed-form Wilson (1927) score interval, no continuity correction."""
    z = norm.ppf(1 - (1 - confidence) / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


# --------------------------------------------------------------------------------------------
# wilson_interval
# --------------------------------------------------------------------------------------------

# Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (score interval without
# continuity correction), 95% intervals.
NEWCOMBE_TABLE_I_METHOD_3 = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]


@pytest.mark.parametrize(("k", "n", "low", "high"), NEWCOMBE_TABLE_I_METHOD_3)
def test_wilson_matches_newcombe_1998_table_i(k: int, n: int, low: float, high: float) -> None:
    got_low, got_high = wilson_interval(k, n)
    assert round(got_low, 4) == pytest.approx(low, abs=1e-12)
    assert round(got_high, 4) == pytest.approx(high, abs=1e-12)


@pytest.mark.parametrize(("k", "n", "low", "high"), NEWCOMBE_TABLE_I_METHOD_3)
def test_newcombe_values_agree_with_independent_closed_form(
    k: int, n: int, low: float, high: float
) -> None:
    ref_low, ref_high = _wilson_closed_form(k, n)
    assert round(ref_low, 4) == pytest.approx(low, abs=1e-12)
    assert round(ref_high, 4) == pytest.approx(high, abs=1e-12)
    got_low, got_high = wilson_interval(k, n)
    assert got_low == pytest.approx(max(ref_low, 0.0), abs=1e-12)
    assert got_high == pytest.approx(ref_high, abs=1e-12)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (1, 1), (3, 7), (50, 100), (99, 100), (1, 3)])
@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
def test_wilson_closed_form_other_levels(k: int, n: int, confidence: float) -> None:
    ref_low, ref_high = _wilson_closed_form(k, n, confidence)
    got_low, got_high = wilson_interval(k, n, confidence)
    assert got_low == pytest.approx(min(max(ref_low, 0.0), 1.0), abs=1e-12)
    assert got_high == pytest.approx(min(max(ref_high, 0.0), 1.0), abs=1e-12)
    assert 0.0 <= got_low <= k / n <= got_high <= 1.0


def test_wilson_symmetric_under_complement() -> None:
    low, high = wilson_interval(81, 263)
    c_low, c_high = wilson_interval(263 - 81, 263)
    assert c_low == pytest.approx(1 - high, abs=1e-12)
    assert c_high == pytest.approx(1 - low, abs=1e-12)


def test_wilson_all_successes_reaches_one() -> None:
    # Mirror image of Newcombe's 0/20 row.
    low, high = wilson_interval(20, 20)
    assert high == 1.0
    assert round(low, 4) == pytest.approx(1 - 0.1611, abs=1e-12)


def test_wilson_higher_confidence_is_wider() -> None:
    low95, high95 = wilson_interval(15, 148)
    low99, high99 = wilson_interval(15, 148, confidence=0.99)
    assert low99 < low95 and high99 > high95


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 29, 148, 263, 1000])
def test_wilson_bounds_exact_at_extremes(n: int) -> None:
    # The score interval's lower bound is exactly 0 at 0/n and the upper exactly 1 at n/n;
    # statsmodels alone returns e.g. 5.6e-17 for 0/3, which would exclude p_hat = 0.
    low, high = wilson_interval(0, n)
    assert low == 0.0 and 0.0 < high < 1.0
    low, high = wilson_interval(n, n)
    assert high == 1.0 and 0.0 < low < 1.0


def test_wilson_n_zero_is_nan() -> None:
    low, high = wilson_interval(0, 0)
    assert math.isnan(low) and math.isnan(high)


def test_wilson_accepts_numpy_integers() -> None:
    assert wilson_interval(np.int64(81), np.int32(263)) == wilson_interval(81, 263)


@pytest.mark.parametrize(
    ("k", "n", "confidence", "exc", "match"),
    [
        (-1, 10, 0.95, ValueError, "0 <= successes <= n"),
        (11, 10, 0.95, ValueError, "0 <= successes <= n"),
        (0, -1, 0.95, ValueError, "n must be >= 0"),
        (1, 10, 0.0, ValueError, "0 < confidence < 1"),
        (1, 10, 1.0, ValueError, "0 < confidence < 1"),
        (1, 10, 95, ValueError, "0 < confidence < 1"),
        (1.0, 10, 0.95, TypeError, "successes must be an integer"),
        (1, 10.0, 0.95, TypeError, "n must be an integer"),
        (True, 10, 0.95, TypeError, "successes must be an integer"),
        ("1", 10, 0.95, TypeError, "successes must be an integer"),
        (1, 10, "0.95", TypeError, "confidence must be a real number"),
    ],
)
def test_wilson_validation(
    k: object, n: object, confidence: object, exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        wilson_interval(k, n, confidence)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# binomial_test
# --------------------------------------------------------------------------------------------


def test_binomial_nine_of_ten_fair_coin_two_sided() -> None:
    # P(X <= 1) + P(X >= 9) = (1 + 10 + 10 + 1) / 1024 = 22 / 1024.
    assert binomial_test(9, 10, 0.5) == pytest.approx(22 / 1024, abs=1e-15)
    assert 22 / 1024 == 0.021484375


def test_binomial_seven_of_ten_fair_coin_two_sided() -> None:
    # 2 * (120 + 45 + 10 + 1) / 1024 = 352 / 1024.
    assert binomial_test(7, 10, 0.5) == pytest.approx(0.34375, abs=1e-15)


def test_binomial_seven_of_ten_fair_coin_greater() -> None:
    # P(X >= 7) = (C(10,7) + C(10,8) + C(10,9) + C(10,10)) / 1024 = 176 / 1024.
    assert binomial_test(7, 10, 0.5, alternative="greater") == pytest.approx(176 / 1024, abs=1e-15)


def test_binomial_seven_of_ten_fair_coin_less() -> None:
    # P(X <= 7) = 1 - P(X >= 8) = 1 - 56 / 1024 = 968 / 1024.
    assert binomial_test(7, 10, 0.5, alternative="less") == pytest.approx(968 / 1024, abs=1e-15)


def test_binomial_three_of_four_at_quarter_chance_greater() -> None:
    # P(X >= 3) = 4 * 0.25^3 * 0.75 + 0.25^4 = 0.046875 + 0.00390625 = 0.05078125.
    expected = 4 * 0.25**3 * 0.75 + 0.25**4
    assert expected == 0.05078125
    assert binomial_test(3, 4, 0.25, alternative="greater") == pytest.approx(expected, abs=1e-15)


def test_binomial_three_of_four_at_quarter_chance_two_sided() -> None:
    # Binomial(4, 0.25) pmf * 256: [81, 108, 54, 12, 1]. The observed X=3 has mass 12/256;
    # outcomes no more likely than that are X=3 and X=4, so p = 13/256.
    assert binomial_test(3, 4, 0.25) == pytest.approx(13 / 256, abs=1e-15)


def test_binomial_one_of_two_at_quarter_chance_two_sided() -> None:
    # Binomial(2, 0.25) pmf * 16: [9, 6, 1]; outcomes with mass <= 6/16 are X=1, X=2 -> 7/16.
    assert binomial_test(1, 2, 0.25) == pytest.approx(7 / 16, abs=1e-15)


def test_binomial_all_wrong_at_half_chance() -> None:
    # 0 of 5 at p=0.5: two-sided 2 / 32, less 1 / 32, greater 1.
    assert binomial_test(0, 5, 0.5) == pytest.approx(2 / 32, abs=1e-15)
    assert binomial_test(0, 5, 0.5, alternative="less") == pytest.approx(1 / 32, abs=1e-15)
    assert binomial_test(0, 5, 0.5, alternative="greater") == pytest.approx(1.0, abs=1e-15)


def test_binomial_n_zero_is_nan() -> None:
    assert math.isnan(binomial_test(0, 0, 0.5))


@pytest.mark.parametrize(
    ("k", "n", "chance", "alternative", "exc", "match"),
    [
        (11, 10, 0.5, "two-sided", ValueError, "0 <= successes <= n"),
        (-1, 10, 0.5, "two-sided", ValueError, "0 <= successes <= n"),
        (1, 10, -0.1, "two-sided", ValueError, "0 <= chance <= 1"),
        (1, 10, 1.5, "two-sided", ValueError, "0 <= chance <= 1"),
        (1, 10, 0.5, "bigger", ValueError, "alternative must be one of"),
        (1.5, 10, 0.5, "two-sided", TypeError, "successes must be an integer"),
        (1, None, 0.5, "two-sided", TypeError, "n must be an integer"),
        (1, 10, None, "two-sided", TypeError, "chance must be a real number"),
    ],
)
def test_binomial_validation(
    k: object, n: object, chance: object, alternative: str, exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        binomial_test(k, n, chance, alternative)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# accuracy_table
# --------------------------------------------------------------------------------------------


def _responses() -> pd.DataFrame:
    """Two tasks x model_correct, literal responses.

    agreement (chance 0.5):    model right 5 of 6 correct, model wrong 1 of 4 correct
    distinction (chance 0.25): model right 3 of 4 correct, model wrong 0 of 3 correct
    """
    rows = (
        [("agreement", True, c, 0.5) for c in (1, 1, 1, 1, 1, 0)]
        + [("agreement", False, c, 0.5) for c in (1, 0, 0, 0)]
        + [("distinction", True, c, 0.25) for c in (True, True, False, True)]
        + [("distinction", False, c, 0.25) for c in (False, False, False)]
    )
    return pd.DataFrame(rows, columns=["task", "model_correct", "is_correct", "chance"])


EXPECTED_COUNTS = [
    # task, model_correct, n, n_correct, chance  (sorted: False < True)
    ("agreement", False, 4, 1, 0.5),
    ("agreement", True, 6, 5, 0.5),
    ("distinction", False, 3, 0, 0.25),
    ("distinction", True, 4, 3, 0.25),
]


def test_accuracy_table_columns_and_counts() -> None:
    table = accuracy_table(_responses(), by=["task", "model_correct"])
    assert list(table.columns) == ["task", "model_correct", *ACCURACY_TABLE_STAT_COLUMNS]
    assert list(table.index) == [0, 1, 2, 3]
    got = list(
        zip(
            table["task"],
            table["model_correct"],
            table["n"],
            table["n_correct"],
            table["chance"],
            strict=True,
        )
    )
    assert got == EXPECTED_COUNTS
    assert table["n"].dtype == np.int64
    assert table["n_correct"].dtype == np.int64
    for col in ("accuracy", "ci_low", "ci_high", "chance", "p_value"):
        assert table[col].dtype == np.float64


def test_accuracy_table_statistics_equal_the_functions() -> None:
    table = accuracy_table(_responses(), by=["task", "model_correct"])
    for row, (_, _, n, k, chance) in zip(table.itertuples(), EXPECTED_COUNTS, strict=True):
        assert row.accuracy == pytest.approx(k / n, abs=1e-15)
        low, high = wilson_interval(k, n)
        assert row.ci_low == pytest.approx(low, abs=1e-15)
        assert row.ci_high == pytest.approx(high, abs=1e-15)
        assert row.p_value == pytest.approx(binomial_test(k, n, chance), abs=1e-15)
        assert 0.0 <= row.ci_low <= row.accuracy <= row.ci_high <= 1.0


def test_accuracy_table_hand_computed_p_values() -> None:
    table = accuracy_table(_responses(), by=["task", "model_correct"]).set_index(
        ["task", "model_correct"]
    )
    # agreement / model right: 5 of 6 at 0.5 -> 2 * (6 + 1) / 64 = 14/64.
    assert table.loc[("agreement", True), "p_value"] == pytest.approx(14 / 64, abs=1e-15)
    # agreement / model wrong: 1 of 4 at 0.5 -> 2 * (1 + 4) / 16 = 10/16.
    assert table.loc[("agreement", False), "p_value"] == pytest.approx(10 / 16, abs=1e-15)
    # distinction / model right: 3 of 4 at 0.25 -> 13/256 (see the binomial tests above).
    assert table.loc[("distinction", True), "p_value"] == pytest.approx(13 / 256, abs=1e-15)
    # distinction / model wrong: 0 of 3 at 0.25; pmf * 64 = [27, 27, 9, 1]; every outcome is no
    # more likely than X=0, so p = 1.
    assert table.loc[("distinction", False), "p_value"] == pytest.approx(1.0, abs=1e-12)


def test_accuracy_table_by_task_only_pools_conditions() -> None:
    table = accuracy_table(_responses(), by=["task"])
    assert list(table["task"]) == ["agreement", "distinction"]
    assert list(table["n"]) == [10, 7]
    assert list(table["n_correct"]) == [6, 3]
    assert table["p_value"].iloc[1] == pytest.approx(binomial_test(3, 7, 0.25), abs=1e-15)


def test_accuracy_table_single_string_by() -> None:
    pd.testing.assert_frame_equal(
        accuracy_table(_responses(), by="task"), accuracy_table(_responses(), by=["task"])
    )


def test_accuracy_table_bool_and_int_correct_agree() -> None:
    df = _responses()
    as_bool = df.assign(is_correct=df["is_correct"].astype(bool))
    as_int = df.assign(is_correct=df["is_correct"].astype(int))
    pd.testing.assert_frame_equal(
        accuracy_table(as_bool, by=["task", "model_correct"]),
        accuracy_table(as_int, by=["task", "model_correct"]),
    )


def test_accuracy_table_custom_column_names_and_extra_columns() -> None:
    df = _responses().rename(columns={"is_correct": "ok", "chance": "p0"})
    df["participant"] = range(len(df))
    table = accuracy_table(df, by=["task"], correct_col="ok", chance_col="p0")
    assert list(table.columns) == ["task", *ACCURACY_TABLE_STAT_COLUMNS]
    assert list(table["n_correct"]) == [6, 3]


def test_accuracy_table_missing_group_value_is_kept() -> None:
    df = _responses().astype({"model_correct": object})
    df.loc[0, "model_correct"] = None
    table = accuracy_table(df, by=["task", "model_correct"])
    assert table["n"].sum() == len(df)


def test_accuracy_table_does_not_modify_input() -> None:
    df = _responses()
    before = df.copy()
    accuracy_table(df, by=["task", "model_correct"])
    pd.testing.assert_frame_equal(df, before)


def test_accuracy_table_empty_rows() -> None:
    table = accuracy_table(_responses().iloc[:0], by=["task", "model_correct"])
    assert table.empty
    assert list(table.columns) == ["task", "model_correct", *ACCURACY_TABLE_STAT_COLUMNS]


def test_accuracy_table_empty_frame_without_columns() -> None:
    table = accuracy_table(pd.DataFrame(), by=["task"])
    assert table.empty
    assert list(table.columns) == ["task", *ACCURACY_TABLE_STAT_COLUMNS]
    assert table["n"].dtype == np.int64


def test_accuracy_table_missing_columns_named() -> None:
    df = _responses().drop(columns=["chance", "is_correct"])
    with pytest.raises(ValueError, match=r"missing required column.*'is_correct'.*'chance'"):
        accuracy_table(df, by=["task"])
    with pytest.raises(ValueError, match=r"missing required column.*'condition'"):
        accuracy_table(_responses(), by=["task", "condition"])


def test_accuracy_table_empty_rows_still_checks_columns() -> None:
    with pytest.raises(ValueError, match="missing required column"):
        accuracy_table(_responses().iloc[:0].drop(columns=["chance"]), by=["task"])


def test_accuracy_table_mixed_chance_within_group() -> None:
    df = _responses()
    df.loc[df.index[-1], "chance"] = 0.5  # a distinction row with the agreement chance
    with pytest.raises(ValueError, match="constant within each group"):
        accuracy_table(df, by=["task"])
    # Split finely enough and each group is constant again only if the odd row is alone; here
    # it is not, so still an error.
    with pytest.raises(ValueError, match="constant within each group"):
        accuracy_table(df, by=["task", "model_correct"])


@pytest.mark.parametrize("bad", [2, -1, 0.5, "yes", "1"])
def test_accuracy_table_bad_correct_values(bad: object) -> None:
    df = _responses().astype({"is_correct": object})
    df.loc[0, "is_correct"] = bad
    with pytest.raises(ValueError, match="booleans or 0/1"):
        accuracy_table(df, by=["task"])


def test_accuracy_table_missing_correct_values() -> None:
    df = _responses().astype({"is_correct": object})
    df.loc[0, "is_correct"] = None
    with pytest.raises(ValueError, match="missing values"):
        accuracy_table(df, by=["task"])


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (1.5, r"must lie in \[0, 1\]"),
        (-0.25, r"must lie in \[0, 1\]"),
        (None, "missing values"),
        ("half", "must be numeric"),
    ],
)
def test_accuracy_table_bad_chance_values(bad: object, match: str) -> None:
    df = _responses().astype({"chance": object})
    df.loc[0, "chance"] = bad
    with pytest.raises(ValueError, match=match):
        accuracy_table(df, by=["task"])


def test_accuracy_table_bad_by() -> None:
    with pytest.raises(ValueError, match="at least one"):
        accuracy_table(_responses(), by=[])
    with pytest.raises(ValueError, match="duplicate"):
        accuracy_table(_responses(), by=["task", "task"])


# --------------------------------------------------------------------------------------------
# no Django
# --------------------------------------------------------------------------------------------


def test_stats_and_plots_import_no_django() -> None:
    code = (
        "import sys, analysis.stats, analysis.plots; "
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.') "
        "or m == 'matplotlib.pyplot'); print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
