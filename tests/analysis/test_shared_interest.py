"""Shared Interest (Boggust et al., CHI 2022): the reference library's five synthetic 250x250
cases, zero denominators, binarisation."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.stats.shared_interest import (
    binarize_percentile,
    binarize_std,
    binarize_top_area,
    shared_interest,
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
