"""Label-quality scores and confident learning (Northcutt et al., JAIR 2021) against hand
computation and against cleanlab (AGPL; a test oracle only, never a runtime dependency)."""

from __future__ import annotations

import numpy as np
import pytest

from labeling.quality import (
    confident_joint,
    find_label_issues,
    normalized_margin,
    per_class_thresholds,
    self_confidence,
)

# 6 items, 3 classes; item 2 is labelled 0 but the model is sure it is class 1.
LABELS = np.array([0, 0, 0, 1, 1, 2])
PROBS = np.array(
    [
        [0.8, 0.1, 0.1],
        [0.7, 0.2, 0.1],
        [0.1, 0.8, 0.1],
        [0.2, 0.7, 0.1],
        [0.1, 0.6, 0.3],
        [0.1, 0.1, 0.8],
    ]
)


def test_scores_and_thresholds_by_hand():
    assert self_confidence(LABELS, PROBS).tolist() == [0.8, 0.7, 0.1, 0.7, 0.6, 0.8]
    # (0.1 - 0.8 + 1) / 2 = 0.15 for item 2; (0.8 - 0.1 + 1) / 2 = 0.85 for item 0
    assert normalized_margin(LABELS, PROBS)[[0, 2]] == pytest.approx([0.85, 0.15])
    # t_0 = mean(.8, .7, .1) = 0.5333; t_1 = mean(.7, .6) = 0.65; t_2 = 0.8
    assert per_class_thresholds(LABELS, PROBS) == pytest.approx([1.6 / 3, 0.65, 0.8])


def test_confident_joint_and_issues_by_hand():
    # item 2 (labelled 0): p_1 = 0.8 >= t_1 -> counted as class 1; item 4 (labelled 1):
    # p_1 = 0.6 < t_1 and nothing else reaches its threshold -> not counted
    assert confident_joint(LABELS, PROBS).tolist() == [[2, 1, 0], [0, 1, 0], [0, 0, 1]]
    issues = find_label_issues(LABELS, PROBS)
    assert issues.ranked.tolist() == [2] and issues.suggested[2] == 1
    assert issues.mask.tolist() == [False, False, True, False, False, False]


def _noisy(seed: int, n: int = 2000, k: int = 6, noise: float = 0.15):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), truth] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = truth.copy()
    flip = rng.random(n) < noise
    labels[flip] = rng.integers(0, k, flip.sum())
    return labels, probs, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flagged_set_and_ranking_agree_with_cleanlab(seed):
    cleanlab_filter = pytest.importorskip("cleanlab.filter")
    labels, probs, truth = _noisy(seed)
    ours = find_label_issues(labels, probs)
    theirs = cleanlab_filter.find_label_issues(
        labels, probs, filter_by="confident_learning", return_indices_ranked_by="self_confidence"
    )
    assert ours.ranked.tolist() == theirs.tolist()  # measured agreement: identical, 3 seeds
    flagged_wrong = (labels != truth)[ours.ranked].mean()
    assert flagged_wrong > 0.7  # most flagged labels really are wrong


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        self_confidence(LABELS, PROBS * 2)
    with pytest.raises(ValueError, match="lie in"):
        self_confidence(np.array([0, 0, 0, 1, 1, 3]), PROBS)
    with pytest.raises(ValueError, match="rank_by"):
        find_label_issues(LABELS, PROBS, rank_by="vibes")
