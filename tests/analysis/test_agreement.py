"""Tests for analysis.stats.agreement against published worked examples.

Pure-Python module: run with ``pytest tests/analysis/test_agreement.py -p no:django -o addopts=""``
(or plainly; the Django plugin is not needed but does no harm).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.stats import (
    AGREEMENT_LEVELS,
    AgreementResult,
    fleiss_kappa,
    krippendorff_alpha,
    rater_agreement,
    reliability_matrix,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
nan = np.nan

# --------------------------------------------------------------------------------------------
# published data
# --------------------------------------------------------------------------------------------

# Krippendorff, K. (2011). "Computing Krippendorff's Alpha-Reliability", Annenberg School for
# Communication, Departmental Papers (ASC) 43: the worked example for nominal data with any
# number of observers and missing data, reused there for the other metrics. 4 observers (rows)
# x 12 units (columns), blanks = missing. The same matrix is the "C" data of R irr::kripp.alpha.
# Published: alpha_nominal = .743, alpha_ordinal = .815, alpha_interval = .849 (ratio .797);
# n = 40 pairable values (unit 12 has a single value and drops out).
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
)
KRIPPENDORFF_2011_ALPHA = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849}

# Wikipedia, "Krippendorff's alpha", section "A computational example": 3 coders x 15 units
# with gaps. Published: alpha_nominal = 0.691, alpha_interval = 0.811.
WIKIPEDIA_ALPHA_DATA = np.array(
    [
        [nan, nan, nan, nan, nan, 3, 4, 1, 2, 1, 1, 3, 3, nan, 3],
        [1, nan, 2, 1, 3, 3, 4, 3, nan, nan, nan, nan, nan, nan, nan],
        [nan, nan, 2, 1, 3, 4, 4, nan, 2, 1, 1, 3, 3, nan, 4],
    ]
)
WIKIPEDIA_ALPHA = {"nominal": 0.691, "interval": 0.811}

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects x 5 categories, 14 raters per subject
# (counts). Published: P_bar = 0.378, P_e = 0.213, kappa = 0.210.
WIKIPEDIA_FLEISS_COUNTS = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)

# Fleiss, J. L. (1971). "Measuring nominal scale agreement among many raters". Psychological
# Bulletin 76(5):378-382, Table 1: 30 patients x 6 psychiatrists, 5 diagnoses (depression,
# personality disorder, schizophrenia, neurosis, other), counts per patient. Published overall
# kappa = .430 (R irr::kappam.fleiss on the same data, the `diagnoses` set: 0.4302445).
FLEISS_1971_TABLE_1 = np.array(
    [
        [0, 0, 0, 6, 0],
        [0, 3, 0, 0, 3],
        [0, 1, 4, 0, 1],
        [0, 0, 0, 0, 6],
        [0, 3, 0, 3, 0],
        [2, 0, 4, 0, 0],
        [0, 0, 4, 0, 2],
        [2, 0, 3, 1, 0],
        [2, 0, 0, 4, 0],
        [0, 0, 0, 0, 6],
        [1, 0, 0, 5, 0],
        [1, 1, 0, 4, 0],
        [0, 3, 3, 0, 0],
        [1, 0, 0, 5, 0],
        [0, 2, 0, 3, 1],
        [0, 0, 5, 0, 1],
        [3, 0, 0, 1, 2],
        [5, 1, 0, 0, 0],
        [0, 2, 0, 4, 0],
        [1, 0, 2, 0, 3],
        [0, 0, 0, 0, 6],
        [0, 1, 0, 5, 0],
        [0, 2, 0, 1, 3],
        [2, 0, 0, 4, 0],
        [1, 0, 0, 4, 1],
        [0, 5, 0, 1, 0],
        [4, 0, 0, 0, 2],
        [0, 2, 0, 4, 0],
        [1, 0, 5, 0, 0],
        [0, 0, 0, 0, 6],
    ]
)
FLEISS_1971_DIAGNOSES = [
    "depression",
    "personality disorder",
    "schizophrenia",
    "neurosis",
    "other",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _long(matrix: np.ndarray, labels: dict[float, object] | None = None) -> pd.DataFrame:
    """(raters, units) matrix -> long frame, one row per cell (missing cells as NaN rows)."""
    rows = []
    for r, u in itertools.product(range(matrix.shape[0]), range(matrix.shape[1])):
        v = matrix[r, u]
        if labels is not None and not np.isnan(v):
            v = labels[v]
        rows.append({"rater": f"coder {r}", "unit": f"item {u:02d}", "value": v})
    return pd.DataFrame(rows)


def _long_from_counts(counts: np.ndarray, categories: list[str]) -> pd.DataFrame:
    """Count table -> long frame: unit i gets counts[i, j] ratings of category j."""
    rows = []
    for i, row in enumerate(counts):
        slot = 0
        for j, c in enumerate(row):
            for _ in range(int(c)):
                rows.append({"rater": f"slot {slot}", "unit": i, "value": categories[j]})
                slot += 1
    return pd.DataFrame(rows)


def _reference_alpha(matrix: np.ndarray, level: str) -> float:
    """Independent Krippendorff (2011) alpha: coincidence matrix and difference functions."""
    values = np.unique(matrix[~np.isnan(matrix)])
    index = {v: i for i, v in enumerate(values)}
    o = np.zeros((len(values), len(values)))
    for col in matrix.T:
        vals = col[~np.isnan(col)]
        m = len(vals)
        if m < 2:
            continue
        for a, b in itertools.permutations(range(m), 2):
            o[index[vals[a]], index[vals[b]]] += 1.0 / (m - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    delta = np.zeros_like(o)
    for c, k in itertools.product(range(len(values)), repeat=2):
        if level == "nominal":
            delta[c, k] = float(c != k)
        elif level == "interval":
            delta[c, k] = (values[c] - values[k]) ** 2
        else:  # ordinal
            lo, hi = min(c, k), max(c, k)
            delta[c, k] = (n_c[lo : hi + 1].sum() - (n_c[c] + n_c[k]) / 2) ** 2
    return 1.0 - (n - 1) * (o * delta).sum() / (np.outer(n_c, n_c) * delta).sum()


# --------------------------------------------------------------------------------------------
# Krippendorff's alpha: published values
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", AGREEMENT_LEVELS)
def test_alpha_matches_krippendorff_2011(level: str) -> None:
    res = krippendorff_alpha(KRIPPENDORFF_2011, level)
    assert res.defined and res.reason == ""
    assert res.statistic == "krippendorff_alpha" and res.level == level
    assert round(res.value, 3) == pytest.approx(KRIPPENDORFF_2011_ALPHA[level], abs=1e-12)
    # the paper's counts: 12 units, 4 observers, n = 40 pairable values
    assert (res.n_units, res.n_raters, res.n_pairable) == (12, 4, 40)


def test_alpha_nominal_krippendorff_2011_exact_fraction() -> None:
    # By hand, Krippendorff's (2011) nominal form alpha = 1 - (n - 1) * sum_{c != k} o_ck /
    # (n^2 - sum_c n_c^2): the disagreeing pairs are in units 2 (2,2,3,2), 6 (1,2,3,4) and
    # 8 (1,1,2,1), off-diagonal coincidences 6/3 + 12/3 + 6/3 = 8; n = 40 and the value
    # frequencies n_c = (9, 13, 10, 5, 3). alpha = 1 - 39 * 8 / 1216 = 113/152 = 0.7434...
    assert 40**2 - (9**2 + 13**2 + 10**2 + 5**2 + 3**2) == 1216
    assert krippendorff_alpha(KRIPPENDORFF_2011).value == pytest.approx(113 / 152, rel=1e-12)


@pytest.mark.parametrize("level", sorted(WIKIPEDIA_ALPHA))
def test_alpha_matches_wikipedia_example(level: str) -> None:
    res = krippendorff_alpha(WIKIPEDIA_ALPHA_DATA, level)
    assert round(res.value, 3) == pytest.approx(WIKIPEDIA_ALPHA[level], abs=1e-12)
    # units 2 and 14 are empty, unit 1 has a single value
    assert (res.n_units, res.n_raters) == (13, 3)


@pytest.mark.parametrize("level", AGREEMENT_LEVELS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alpha_agrees_with_independent_coincidence_matrix(level: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    matrix = rng.integers(1, 6, size=(5, 25)).astype(float)
    matrix[rng.random(matrix.shape) < 0.3] = nan
    expected = _reference_alpha(matrix, level)
    assert krippendorff_alpha(matrix, level).value == pytest.approx(expected, rel=1e-12)
    assert krippendorff_alpha(_long(matrix), level).value == pytest.approx(expected, rel=1e-12)


def test_perfect_agreement_gives_one() -> None:
    matrix = np.array([[1, 2, 3, 1], [1, 2, 3, 1], [1, 2, nan, 1]])
    for level in AGREEMENT_LEVELS:
        assert krippendorff_alpha(matrix, level).value == 1.0


# --------------------------------------------------------------------------------------------
# long frame vs matrix
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", AGREEMENT_LEVELS)
def test_long_frame_and_matrix_give_the_same_alpha(level: str) -> None:
    frame = _long(KRIPPENDORFF_2011).sample(frac=1.0, random_state=3)  # row order is irrelevant
    from_frame = krippendorff_alpha(frame, level)
    from_matrix = krippendorff_alpha(KRIPPENDORFF_2011, level)
    assert from_frame == from_matrix
    # the wide DataFrame reliability_matrix returns is accepted too
    assert krippendorff_alpha(reliability_matrix(frame), level) == from_matrix


@pytest.mark.parametrize("level", ["nominal", "ordinal"])
def test_labelled_ratings_with_ordered_categories(level: str) -> None:
    labels = {1.0: "very low", 2.0: "low", 3.0: "mid", 4.0: "high", 5.0: "very high"}
    frame = _long(KRIPPENDORFF_2011, labels)
    res = krippendorff_alpha(frame, level, categories=list(labels.values()))
    assert round(res.value, 3) == pytest.approx(KRIPPENDORFF_2011_ALPHA[level], abs=1e-12)
    assert res.value == pytest.approx(krippendorff_alpha(KRIPPENDORFF_2011, level).value)


def test_ordinal_alpha_follows_the_given_category_order() -> None:
    labels = {1.0: "a", 2.0: "b", 3.0: "c", 4.0: "d", 5.0: "e"}
    frame = _long(KRIPPENDORFF_2011, labels)
    reordered = krippendorff_alpha(frame, "ordinal", categories=["c", "a", "e", "b", "d"])
    assert reordered.value != pytest.approx(KRIPPENDORFF_2011_ALPHA["ordinal"], abs=1e-3)
    # numeric ratings with a numeric category list: same value as the raw numbers
    in_order = krippendorff_alpha(KRIPPENDORFF_2011, "ordinal", categories=[1, 2, 3, 4, 5])
    assert round(in_order.value, 3) == pytest.approx(KRIPPENDORFF_2011_ALPHA["ordinal"], abs=1e-12)
    # nominal alpha does not depend on the order, and labels need no category list
    assert krippendorff_alpha(frame, "nominal").value == pytest.approx(
        krippendorff_alpha(KRIPPENDORFF_2011, "nominal").value
    )


def test_reliability_matrix_pivots_long_to_raters_by_units() -> None:
    frame = pd.DataFrame(
        {
            "who": ["ann", "bob", "ann", "cat", "bob"],
            "item": ["x", "x", "y", "y", "z"],
            "score": ["agree", "neutral", "disagree", None, "agree"],
        }
    )
    got = reliability_matrix(
        frame, rater="who", unit="item", value="score", categories=["disagree", "neutral", "agree"]
    )
    expected = pd.DataFrame(
        [[2.0, 0.0, nan], [1.0, nan, 2.0]],
        index=pd.Index(["ann", "bob"], name="who"),
        columns=pd.Index(["x", "y", "z"], name="item"),
    )
    pd.testing.assert_frame_equal(got, expected)  # cat's only rating is missing: no row


def test_reliability_matrix_keeps_numeric_values() -> None:
    frame = _long(WIKIPEDIA_ALPHA_DATA)
    got = reliability_matrix(frame).to_numpy()
    present = ~np.isnan(WIKIPEDIA_ALPHA_DATA).all(axis=0)  # fully empty units have no column
    np.testing.assert_array_equal(got, WIKIPEDIA_ALPHA_DATA[:, present])


# --------------------------------------------------------------------------------------------
# Krippendorff's alpha: undefined cases and errors
# --------------------------------------------------------------------------------------------


def test_one_rater_is_undefined_not_nan() -> None:
    res = krippendorff_alpha([[1, 2, 3, 2]])
    assert res == AgreementResult(
        statistic="krippendorff_alpha",
        value=None,
        n_units=4,
        n_raters=1,
        n_pairable=0,
        defined=False,
        reason=res.reason,
        level="nominal",
    )
    assert "two or more raters" in res.reason


def test_no_unit_rated_twice_is_undefined() -> None:
    # three raters, but each unit has a single rating (e.g. a between-subjects design)
    frame = pd.DataFrame({"rater": ["a", "b", "c"], "unit": [1, 2, 3], "value": [1, 2, 1]})
    res = krippendorff_alpha(frame, "interval")
    assert not res.defined and res.value is None and res.n_pairable == 0
    assert (res.n_units, res.n_raters) == (3, 3)
    assert "pairable" in res.reason


@pytest.mark.parametrize("level", AGREEMENT_LEVELS)
def test_identical_ratings_are_undefined(level: str) -> None:
    res = krippendorff_alpha(np.full((3, 4), 2.0), level)
    assert not res.defined and res.value is None
    assert "same value" in res.reason and "0/0" in res.reason
    assert res.n_pairable == 12


def test_identical_pairable_ratings_with_a_different_lone_rating_are_undefined() -> None:
    # unit 3's lone "5" is not pairable; every pairable value is 1 -> D_e = 0
    res = krippendorff_alpha([[1, 1, 5], [1, 1, nan]], "interval")
    assert not res.defined and res.n_pairable == 4


@pytest.mark.parametrize(
    "ratings",
    [
        np.empty((0, 0)),
        np.empty((3, 0)),
        [[]],
        np.full((2, 3), nan),
        pd.DataFrame({"rater": [], "unit": [], "value": []}),
        pd.DataFrame({"rater": ["a", "b"], "unit": [1, 1], "value": [None, nan]}),
    ],
    ids=["0x0", "3x0", "empty-list", "all-missing", "empty-frame", "all-missing-frame"],
)
def test_empty_input_raises(ratings: object) -> None:
    with pytest.raises(ValueError, match="no ratings"):
        krippendorff_alpha(ratings)


@pytest.mark.parametrize("level", ["ratio", "Nominal", "", None])
def test_unknown_level_raises(level: object) -> None:
    with pytest.raises(ValueError, match="level must be one of"):
        krippendorff_alpha(KRIPPENDORFF_2011, level)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level must be one of"):
        rater_agreement(_long(KRIPPENDORFF_2011), level=level)  # type: ignore[arg-type]


def test_malformed_input_raises() -> None:
    with pytest.raises(ValueError, match="2-D"):
        krippendorff_alpha([1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        krippendorff_alpha([[1, np.inf], [1, 2]])
    labels = _long(KRIPPENDORFF_2011, {float(v): f"L{v:g}" for v in range(1, 6)})
    with pytest.raises(ValueError, match="categories"):
        krippendorff_alpha(labels, "ordinal")  # order of labels unknown
    with pytest.raises(ValueError, match="numeric"):
        krippendorff_alpha(labels, "interval")
    with pytest.raises(ValueError, match="interval"):
        krippendorff_alpha(_long(KRIPPENDORFF_2011), "interval", categories=[1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="not among categories"):
        krippendorff_alpha(_long(KRIPPENDORFF_2011), "ordinal", categories=[1, 2, 3, 4])


def test_long_frame_errors() -> None:
    ok = pd.DataFrame({"rater": ["a", "b"], "unit": [1, 1], "value": [1, 2]})
    with pytest.raises(ValueError, match="more than once"):
        reliability_matrix(pd.concat([ok, ok.head(1).assign(value=3)]))
    with pytest.raises(ValueError, match="missing required column"):
        reliability_matrix(ok.rename(columns={"unit": "item"}))
    with pytest.raises(ValueError, match="has missing values"):
        reliability_matrix(ok.assign(rater=["a", None]))
    with pytest.raises(TypeError):
        reliability_matrix(ok.to_numpy())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not repeat"):
        reliability_matrix(ok, categories=[1, 2, 2])


def test_result_is_frozen() -> None:
    res = krippendorff_alpha(KRIPPENDORFF_2011)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.value = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Fleiss' kappa
# --------------------------------------------------------------------------------------------


def test_fleiss_matches_wikipedia_example() -> None:
    res = fleiss_kappa(WIKIPEDIA_FLEISS_COUNTS)
    assert round(res.value, 3) == pytest.approx(0.210, abs=1e-12)
    assert (res.n_units, res.n_raters, res.n_pairable) == (10, 14, 140)
    assert res.statistic == "fleiss_kappa" and res.level == "nominal" and res.defined
    # the page's intermediate values: P_bar = 0.378, P_e = 0.213
    n = 14
    p_bar = ((WIKIPEDIA_FLEISS_COUNTS**2).sum(axis=1) - n).mean() / (n * (n - 1))
    p_e = ((WIKIPEDIA_FLEISS_COUNTS.sum(axis=0) / (10 * n)) ** 2).sum()
    assert (round(p_bar, 3), round(p_e, 3)) == (0.378, 0.213)
    assert res.value == pytest.approx((p_bar - p_e) / (1 - p_e), rel=1e-12)


def test_fleiss_matches_fleiss_1971_table_1() -> None:
    res = fleiss_kappa(FLEISS_1971_TABLE_1)
    assert round(res.value, 3) == pytest.approx(0.430, abs=1e-12)
    assert res.value == pytest.approx(0.4302445, abs=5e-8)  # R irr::kappam.fleiss
    assert (res.n_units, res.n_raters) == (30, 6)


def test_fleiss_long_frame_equals_count_table() -> None:
    frame = _long_from_counts(FLEISS_1971_TABLE_1, FLEISS_1971_DIAGNOSES)
    from_frame = fleiss_kappa(frame, categories=FLEISS_1971_DIAGNOSES)
    assert from_frame == fleiss_kappa(FLEISS_1971_TABLE_1)
    # the category list is optional for nominal labels (columns then in sorted-label order)
    assert fleiss_kappa(frame).value == pytest.approx(from_frame.value, rel=1e-12)
    wide = pd.DataFrame(FLEISS_1971_TABLE_1, columns=FLEISS_1971_DIAGNOSES)
    assert fleiss_kappa(wide) == from_frame  # a wide DataFrame is read as a count table


def test_fleiss_and_nominal_alpha_differ_only_by_the_small_sample_correction() -> None:
    # With m ratings on every unit and n = N*m values, nominal alpha's expected disagreement is
    # Fleiss' times n / (n - 1), so 1 - alpha = (1 - kappa) * (n - 1) / n.
    frame = _long_from_counts(FLEISS_1971_TABLE_1, FLEISS_1971_DIAGNOSES)
    both = rater_agreement(frame, level="nominal")
    n = both.alpha.n_pairable
    assert n == 180
    assert 1 - both.alpha.value == pytest.approx((1 - both.kappa.value) * (n - 1) / n)
    assert both.kappa_note == ""


def test_fleiss_unequal_raters_per_unit_is_rejected() -> None:
    table = np.array([[2, 1, 0], [3, 0, 0], [1, 1, 0]])  # 3, 3 and 2 ratings
    with pytest.raises(ValueError, match="same number of ratings") as info:
        fleiss_kappa(table)
    assert "1 unit(s) with 2" in str(info.value) and "2 unit(s) with 3" in str(info.value)
    with pytest.raises(ValueError, match="same number of ratings"):
        fleiss_kappa(_long(KRIPPENDORFF_2011))  # units with 1 to 4 ratings


def test_fleiss_ignores_units_without_any_rating() -> None:
    padded = np.vstack([WIKIPEDIA_FLEISS_COUNTS, np.zeros((2, 5), dtype=int)])
    assert fleiss_kappa(padded) == fleiss_kappa(WIKIPEDIA_FLEISS_COUNTS)


def test_fleiss_one_rating_per_unit_is_undefined() -> None:
    res = fleiss_kappa(np.eye(4, dtype=int))
    assert not res.defined and res.value is None and res.n_raters == 1 and res.n_pairable == 0
    assert "exactly one rating" in res.reason


def test_fleiss_identical_ratings_are_undefined() -> None:
    res = fleiss_kappa([[5, 0, 0], [5, 0, 0], [5, 0, 0]])
    assert not res.defined and res.value is None
    assert "same category" in res.reason and "0/0" in res.reason
    frame = pd.DataFrame({"rater": list("abab"), "unit": [1, 1, 2, 2], "value": ["yes"] * 4})
    assert not fleiss_kappa(frame).defined


def test_fleiss_perfect_agreement_gives_one() -> None:
    assert fleiss_kappa([[3, 0], [0, 3], [3, 0]]).value == 1.0


@pytest.mark.parametrize(
    ("table", "match"),
    [
        (np.empty((0, 3)), "no ratings"),
        (np.zeros((3, 2)), "no ratings"),
        ([1, 2, 3], "2-D"),
        ([[1, -1], [0, 0]], "non-negative whole"),
        ([[1.5, 0.5], [1, 1]], "non-negative whole"),
        ([[1, nan], [1, 1]], "missing or infinite"),
        ([["a", "b"], ["c", "d"]], "must hold numbers"),
    ],
)
def test_fleiss_bad_count_tables_raise(table: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fleiss_kappa(table)


# --------------------------------------------------------------------------------------------
# rater_agreement
# --------------------------------------------------------------------------------------------


def test_rater_agreement_nominal_equal_raters_gives_both() -> None:
    frame = _long_from_counts(WIKIPEDIA_FLEISS_COUNTS, list("ABCDE"))
    both = rater_agreement(frame)
    assert both.alpha == krippendorff_alpha(frame)
    assert both.kappa == fleiss_kappa(WIKIPEDIA_FLEISS_COUNTS)
    assert round(both.kappa.value, 3) == 0.210


def test_rater_agreement_with_missing_ratings_reports_why_kappa_is_absent() -> None:
    both = rater_agreement(_long(KRIPPENDORFF_2011))
    assert round(both.alpha.value, 3) == 0.743
    assert both.kappa is None and "same number of ratings" in both.kappa_note


def test_rater_agreement_ordinal_has_no_kappa() -> None:
    both = rater_agreement(_long(KRIPPENDORFF_2011), level="ordinal")
    assert round(both.alpha.value, 3) == 0.815
    assert both.kappa is None and "nominal" in both.kappa_note


def test_rater_agreement_undefined_alpha_still_returns() -> None:
    frame = pd.DataFrame({"rater": ["a", "b"], "unit": [1, 1], "value": ["yes", "yes"]})
    both = rater_agreement(frame)
    assert not both.alpha.defined and not both.kappa.defined
    assert both.alpha.value is None and both.kappa.value is None


def test_defined_values_are_finite_floats() -> None:
    for res in [
        krippendorff_alpha(KRIPPENDORFF_2011, "interval"),
        fleiss_kappa(FLEISS_1971_TABLE_1),
    ]:
        assert type(res.value) is float and math.isfinite(res.value)


# --------------------------------------------------------------------------------------------
# no Django
# --------------------------------------------------------------------------------------------


def test_agreement_module_imports_no_django() -> None:
    code = (
        "import sys, analysis.stats.agreement; "
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
