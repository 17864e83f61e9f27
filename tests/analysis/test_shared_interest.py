"""Shared Interest (Boggust et al., CHI 2022): the reference library's five synthetic 250x250
cases, zero denominators, binarisation, the fast paths against the plain formulas, and the
paper's eight recurring patterns on hand-built masks."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.stats import shared_interest as si
from analysis.stats.shared_interest import (
    PATTERN_KEYS,
    PATTERNS,
    binarize_percentile,
    binarize_std,
    binarize_top_area,
    pattern_counts,
    shared_interest,
    shared_interest_patterns,
    shared_interest_std,
    shared_interest_summary,
)


@pytest.fixture
def five_cases():
    """The reference test cases: overlapping, ground truth inside saliency, saliency inside
    ground truth, no overlap, identical."""
    gt = np.zeros((5, 250, 250), dtype=int)
    sal = np.zeros((5, 250, 250), dtype=int)
    gt[0, 0:100, 0:100] = 1
    sal[0, 50:150, 50:150] = 1
    gt[1, 100:250, 200:250] = 1
    sal[1, 50:250, 100:250] = 1
    gt[2, :, :] = 1
    sal[2, 50:100, 50:100] = 1
    gt[3, 0:1, 0:1] = 1
    sal[3, 100:150, 150:250] = 1
    gt[4, 50:100, 50:100] = 1
    sal[4, 50:100, 50:100] = 1
    return gt, sal


def test_golden_iou_and_coverages_of_the_reference_cases(five_cases):
    scores = shared_interest(*five_cases)
    np.testing.assert_allclose(scores.iou_coverage, [0.1429, 0.25, 0.04, 0.0, 1.0], atol=5e-5)
    # by hand: |G∩S| / |G| and |G∩S| / |S|
    np.testing.assert_allclose(scores.ground_truth_coverage, [0.25, 1.0, 0.04, 0.0, 1.0])
    np.testing.assert_allclose(scores.saliency_coverage, [0.25, 0.25, 1.0, 0.0, 1.0])
    assert list(scores.intersection_area) == [2500, 7500, 2500, 0, 2500]


def test_empty_regions_are_undefined_never_silent_nan_in_averages():
    gt = np.zeros((3, 4, 4), dtype=bool)
    sal = np.zeros((3, 4, 4), dtype=bool)
    gt[0, :2, :2] = sal[0, :2, :2] = True  # identical: all 1
    sal[1, 0, 0] = True  # empty ground truth
    # image 2: both empty
    scores = shared_interest(gt, sal)
    assert scores.iou_coverage[1] == 0.0 and np.isnan(scores.iou_coverage[2])
    assert np.isnan(scores.ground_truth_coverage[1]) and np.isnan(scores.saliency_coverage[2])
    summary = shared_interest_summary(scores)
    assert summary["iou_coverage"] == {
        "mean": 0.5,
        "median": 0.5,
        "n": 2,
        "excluded": 1,
        "reason": "both regions empty",
    }
    assert summary["ground_truth_coverage"]["excluded"] == 2
    assert summary["saliency_coverage"]["n"] == 2 and summary["saliency_coverage"]["mean"] == 0.5


def test_binarisations_and_their_record():
    saliency = np.arange(100, dtype=float).reshape(1, 10, 10)
    top, how = binarize_top_area(saliency, 0.1)
    assert top.sum() == 10 and top[0, 9].all() and how.method == "top_area"
    above, how = binarize_percentile(saliency, 90)
    assert above.sum() == 10 and how.parameter == 90.0  # strictly above the 90th percentile
    std, how = binarize_std(saliency, k=1.0)
    threshold = saliency.mean() + saliency.std()
    assert std.sum() == int((saliency > threshold).sum()) and how.method == "std"
    flat, _ = binarize_std(np.ones((2, 5, 5)))
    assert not flat.any()  # a constant map marks nothing
    with pytest.raises(ValueError, match="binary"):
        shared_interest(np.full((1, 2, 2), 2), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="shapes differ"):
        shared_interest(np.zeros((1, 2, 2)), np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binarize_top_area(saliency, 1.5)


# --- Fast paths: identical to the plain formulas ---------------------------------------------


def _plain_std_masks(saliency, k):
    maps = np.asarray(saliency, dtype=np.float64)
    return maps > maps.mean(axis=(1, 2), keepdims=True) + k * maps.std(axis=(1, 2), keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64])
def test_binarize_std_selects_exactly_the_pixels_of_the_float64_formula(dtype, monkeypatch):
    monkeypatch.setattr(si, "_BLOCK_BYTES", 3 * 37 * 29 * 8)  # 3 maps per block, last block short
    rng = np.random.default_rng(7)
    scale = rng.uniform(0.01, 100, (40, 1, 1))
    offset = rng.uniform(-1000, 1000, (40, 1, 1))
    saliency = (rng.standard_normal((40, 37, 29)) * scale + offset).astype(dtype)
    saliency[0] = 3.3  # constant: empty region
    saliency[1, :5] = 7  # mostly constant
    for k in (0.0, 1.0, 2.5, -0.5):
        masks, how = binarize_std(saliency, k)
        expected = _plain_std_masks(saliency, k)
        expected[0] = False
        assert masks.dtype == bool and masks.shape == saliency.shape
        np.testing.assert_array_equal(masks, expected)
        assert how == si.Binarization("std", float(k))


def test_binarize_std_is_stable_when_the_mean_dwarfs_the_spread():
    # E[x^2] - mean^2 would lose every digit here; such maps are redone two-pass.
    rng = np.random.default_rng(3)
    saliency = 1e6 + 1e-3 * rng.standard_normal((4, 20, 20))
    masks, _ = binarize_std(saliency)
    np.testing.assert_array_equal(masks, _plain_std_masks(saliency, 1.0))
    assert 0 < masks.sum() < masks.size


def test_float32_threshold_rounding_decides_x_greater_than_t_exactly():
    rng = np.random.default_rng(11)
    t = rng.standard_normal(2000) * 10.0 ** rng.integers(-30, 30, 2000)
    t = np.concatenate([t, [0.0, 1e300, -1e300]])  # the last two lie beyond float32's range
    rounded = si._float32_at_or_below(t)
    with np.errstate(over="ignore"):
        nearest = t.astype(np.float32)
        next_up = np.nextafter(rounded, np.float32(np.inf))
    for x in (nearest, rounded, next_up):
        np.testing.assert_array_equal(x > rounded, x.astype(np.float64) > t)
    assert np.isnan(si._float32_at_or_below(np.array([np.nan]))).all()


def test_empty_batches_give_empty_results():
    empty = np.zeros((0, 4, 4))
    assert shared_interest(empty, empty).iou_coverage.shape == (0,)
    assert shared_interest_std(empty, empty).saliency_area.shape == (0,)
    assert binarize_std(empty)[0].shape == (0, 4, 4)
    patterns = shared_interest_patterns(shared_interest(empty, empty), np.zeros(0, bool))
    assert pattern_counts(patterns)["n"] == 0


def test_binarize_std_rejects_non_finite_and_pixel_less_maps():
    saliency = np.zeros((3, 4, 4), dtype=np.float32)
    saliency[2, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        binarize_std(saliency)
    with pytest.raises(ValueError, match="NaN or infinite"):
        shared_interest_std(np.zeros((3, 4, 4), dtype=bool), np.full((3, 4, 4), np.inf))
    with pytest.raises(ValueError, match="at least one pixel"):
        binarize_std(np.zeros((2, 0, 5)))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        binarize_std(np.zeros(5))


@pytest.mark.parametrize("shape", [(10, 10), (16, 16), (4, 6), (8, 257), (3, 5)])
@pytest.mark.parametrize("bitwise_count", [True, False])
def test_area_counts_match_plain_sums_on_every_path(shape, bitwise_count, monkeypatch):
    # (16, 16): byte-lane sums; (4, 6) and (8, 257): popcount (or plain counting); odd sizes:
    # plain counting.
    monkeypatch.setattr(si, "_HAS_BITWISE_COUNT", bitwise_count and si._HAS_BITWISE_COUNT)
    monkeypatch.setattr(si, "_COUNT_BLOCK_BYTES", 2 * shape[0] * shape[1])  # several blocks
    rng = np.random.default_rng(5)
    gt = rng.random((9, *shape)) < 0.4
    sal = rng.random((9, *shape)) < 0.6
    gt[0] = False
    sal[1] = False
    scores = shared_interest(gt, sal)
    inter = (gt & sal).sum(axis=(1, 2))
    np.testing.assert_array_equal(scores.intersection_area, inter)
    np.testing.assert_array_equal(scores.ground_truth_area, gt.sum(axis=(1, 2)))
    np.testing.assert_array_equal(scores.saliency_area, sal.sum(axis=(1, 2)))
    union = (gt | sal).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_array_equal(scores.iou_coverage, np.where(union, inter / union, np.nan))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_std_scores_equal_binarise_then_score(dtype, monkeypatch):
    monkeypatch.setattr(si, "_BLOCK_BYTES", 4 * 24 * 24 * 8)
    rng = np.random.default_rng(9)
    gt = rng.random((23, 24, 24)) < 0.3
    gt[2] = False  # empty ground truth
    saliency = rng.random((23, 24, 24)).astype(dtype)
    saliency[3] = 0.5  # constant map: empty saliency region
    fused = shared_interest_std(gt.astype(np.uint8), saliency, 1.5)
    masks, how = binarize_std(saliency, 1.5)
    two_steps = shared_interest(gt, masks, binarization=how)
    for name in (
        "iou_coverage",
        "ground_truth_coverage",
        "saliency_coverage",
        "ground_truth_area",
        "saliency_area",
        "intersection_area",
    ):
        np.testing.assert_array_equal(getattr(fused, name), getattr(two_steps, name))
    assert fused.binarization == si.Binarization("std", 1.5)
    assert np.isnan(fused.ground_truth_coverage[2]) and np.isnan(fused.saliency_coverage[3])
    with pytest.raises(ValueError, match="shapes differ"):
        shared_interest_std(gt[:, :10], saliency)
    with pytest.raises(ValueError, match="binary"):
        shared_interest_std(np.full((1, 2, 2), 3), np.zeros((1, 2, 2)))


# --- The paper's eight recurring patterns -----------------------------------------------------


def _rows(*ranges, size=10):
    """A size x size mask with the given row ranges [a, b) set."""
    mask = np.zeros((size, size), dtype=bool)
    for a, b in ranges:
        mask[a:b] = True
    return mask


# (ground truth, saliency, expected pattern when correct, when incorrect); 10x10 images.
PATTERN_CASES = {
    "aligned (IoU 1)": (_rows((0, 5)), _rows((0, 5)), "human_aligned", "confuser"),
    "subset (SC 1, GTC 0.2)": (
        _rows((0, 5)),
        _rows((0, 1)),
        "sufficient_subset",
        "insufficient_subset",
    ),
    "context (GTC 1, SC 0.2)": (
        _rows((0, 1)),
        _rows((0, 5)),
        "sufficient_context",
        "context_confusion",
    ),
    "disjoint (all 0)": (_rows((0, 2)), _rows((5, 10)), "context_dependent", "distractor"),
    "both coverages high, IoU 0.4": (_rows((0, 6)), _rows((2, 10)), "unmatched", "unmatched"),
    "empty ground truth": (_rows(), _rows((0, 3)), "undefined", "undefined"),
    "empty saliency": (_rows((0, 3)), _rows(), "undefined", "undefined"),
    "both empty": (_rows(), _rows(), "undefined", "undefined"),
}


def test_each_of_the_eight_patterns_and_the_undefined_cases_from_hand_built_masks():
    gt = np.stack([case[0] for case in PATTERN_CASES.values()] * 2)
    sal = np.stack([case[1] for case in PATTERN_CASES.values()] * 2)
    correct = np.repeat([True, False], len(PATTERN_CASES))
    patterns = shared_interest_patterns(shared_interest(gt, sal), correct)
    expected = [case[2] for case in PATTERN_CASES.values()]
    expected += [case[3] for case in PATTERN_CASES.values()]
    assert patterns.keys.tolist() == expected
    assert set(PATTERNS) <= set(expected)  # all eight occur
    reasons = patterns.undefined_reason.tolist()[5:8]
    assert reasons == ["empty ground-truth region", "empty saliency region", "both regions empty"]
    assert patterns.undefined_reason[0] == "" and patterns.high == patterns.low == 0.5
    np.testing.assert_array_equal(patterns.model_correct, correct)
    # names, codes and masks for a results page
    assert patterns.names[0] == "Human Aligned" and patterns.names[4] == "No pattern"
    assert [PATTERN_KEYS[c] for c in patterns.codes] == expected
    assert patterns.codes.dtype == np.int8
    np.testing.assert_array_equal(np.flatnonzero(patterns.mask("distractor")), [11])
    with pytest.raises(KeyError, match="unknown pattern"):
        patterns.mask("human-aligned")
    assert all(PATTERNS[key].correct is True for key in expected[:4])
    assert all(PATTERNS[key].correct is False for key in expected[8:12])
    assert {p.name for p in PATTERNS.values()} == {
        "Human Aligned",
        "Sufficient Subset",
        "Sufficient Context",
        "Context Dependent",
        "Confuser",
        "Insufficient Subset",
        "Context Confusion",
        "Distractor",
    }


def test_pattern_counts_count_every_image_and_explain_the_unassigned():
    gt = np.stack([case[0] for case in PATTERN_CASES.values()] * 2)
    sal = np.stack([case[1] for case in PATTERN_CASES.values()] * 2)
    correct = np.repeat([1, 0], len(PATTERN_CASES))  # 0/1 accepted
    counts = pattern_counts(shared_interest_patterns(shared_interest(gt, sal), correct))
    assert counts["n"] == 16 and counts["classified"] == 8
    assert list(counts["counts"]) == list(PATTERN_KEYS)
    assert all(counts["counts"][key] == 1 for key in PATTERNS)
    assert counts["counts"]["undefined"] == 6 and counts["counts"]["unmatched"] == 2
    assert sum(counts["counts"].values()) == counts["n"]
    assert counts["undefined_reasons"] == {
        "both regions empty": 2,
        "empty ground-truth region": 2,
        "empty saliency region": 2,
    }
    assert counts["share_of_classified"]["confuser"] == 1 / 8
    assert (counts["high"], counts["low"]) == (0.5, 0.5)
    nothing = pattern_counts(shared_interest_patterns(shared_interest(gt[5:8], sal[5:8]), [1] * 3))
    assert nothing["classified"] == 0 and nothing["share_of_classified"]["distractor"] is None


def _synthetic(iou, gtc, sc):
    n = len(iou)
    zeros = np.zeros(n, dtype=np.int64)
    return si.SharedInterestScores(
        np.asarray(iou, float), np.asarray(gtc, float), np.asarray(sc, float), zeros, zeros, zeros
    )


def test_pattern_thresholds_high_is_inclusive_low_is_exclusive():
    below = np.nextafter
    rows = [  # (iou, gtc, sc) -> expected with high=0.6, low=0.3, correct
        ((0.6, 0.8, 0.7), "human_aligned"),  # IoU exactly high
        ((below(0.6, 0), 0.9, 0.9), "unmatched"),  # IoU just below high, coverages high
        ((0.2, below(0.3, 0), 0.6), "sufficient_subset"),  # GTC just below low, SC exactly high
        ((0.2, 0.3, 0.6), "unmatched"),  # GTC exactly low is not low
        ((0.2, 0.6, below(0.3, 0)), "sufficient_context"),
        ((0.2, below(0.6, 0), 0.1), "unmatched"),  # GTC just below high is not high
        ((0.1, below(0.3, 0), below(0.3, 0)), "context_dependent"),
        ((0.1, 0.3, 0.1), "unmatched"),  # middle band
    ]
    scores = _synthetic(*zip(*(r[0] for r in rows), strict=True))
    patterns = shared_interest_patterns(scores, np.ones(len(rows), bool), high=0.6, low=0.3)
    assert patterns.keys.tolist() == [r[1] for r in rows]
    wrong = shared_interest_patterns(scores, np.zeros(len(rows), bool), high=0.6, low=0.3)
    assert wrong.keys.tolist()[::2] == [
        "confuser",
        "insufficient_subset",
        "context_confusion",
        "distractor",
    ]
    # one cut-off at 0.5 (the default): exactly 0.5 is high, and nothing defined is in between
    # except "both coverages high, IoU not".
    gt = np.stack([_rows((0, 5)), _rows((0, 2))])
    sal = np.stack([_rows((0, 10)), _rows((1, 2), (5, 10))])  # IoU 0.5; GTC 0.5 and SC 1/6
    keys = shared_interest_patterns(shared_interest(gt, sal), [True, True]).keys.tolist()
    assert keys == ["human_aligned", "sufficient_context"]


def test_single_cut_off_leaves_only_high_coverage_low_iou_unmatched():
    rng = np.random.default_rng(2)
    gt = rng.random((400, 8, 8)) < rng.random((400, 1, 1))
    sal = rng.random((400, 8, 8)) < rng.random((400, 1, 1))
    scores = shared_interest(gt, sal)
    patterns = shared_interest_patterns(scores, rng.random(400) < 0.5, high=0.4)
    unmatched = patterns.mask("unmatched")
    assert (scores.saliency_coverage[unmatched] >= 0.4).all()
    assert (scores.ground_truth_coverage[unmatched] >= 0.4).all()
    assert (scores.iou_coverage[unmatched] < 0.4).all()
    undefined = patterns.mask("undefined")
    assert (
        undefined.tolist()
        == (np.isnan(scores.ground_truth_coverage) | np.isnan(scores.saliency_coverage)).tolist()
    )


def test_pattern_arguments_are_checked():
    scores = shared_interest(np.ones((2, 3, 3)), np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        shared_interest_patterns(scores, [True])
    with pytest.raises(ValueError, match="bool or 0/1"):
        shared_interest_patterns(scores, [1, 2])
    with pytest.raises(ValueError, match="bool or 0/1"):
        shared_interest_patterns(scores, [1.0, np.nan])
    with pytest.raises(ValueError, match="0 < low <= high <= 1"):
        shared_interest_patterns(scores, [True, False], high=0.4, low=0.5)
    with pytest.raises(ValueError, match="0 < low <= high <= 1"):
        shared_interest_patterns(scores, [True, False], high=1.5)
    with pytest.raises(ValueError, match="0 < low <= high <= 1"):
        shared_interest_patterns(scores, [True, False], low=0.0)
    with pytest.raises(TypeError, match="SharedInterestScores"):
        shared_interest_patterns({"iou_coverage": [1.0]}, [True])
