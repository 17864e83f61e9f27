"""Label-quality scores from out-of-sample predicted probabilities (no Django).

Sources:

* Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels",
  JAIR 70 (2021), Sec. 3.1: per-class thresholds ``t_j`` = the mean predicted probability of
  class ``j`` over the items labelled ``j``; the confident joint ``C[i][j]`` counts the items
  labelled ``i`` whose probability of ``j`` reaches ``t_j`` (the most probable such ``j`` when
  several do); items off its diagonal are the label issues ("C_confusion"-free method
  ``confident_learning``).
* Self-confidence ``p(y = given label)`` and the normalised margin
  ``(p_given − max_{k≠given} p_k + 1) / 2`` rank the issues (lower = more likely wrong), as in
  the label-quality scores of Kuan & Mueller, "Model-agnostic label quality scoring" (2022).
* Bäuerle, Neumann & Ropinski, "Classifier-Guided Visual Correction of Noisy Labels for Image
  Classification Tasks", CGF 39(3) (2020): curators work through items ordered by such a score;
  systematic confusions show up as large off-diagonal cells of the confident joint.

Inputs: ``labels`` int ``(N,)`` in ``[0, K)``; ``pred_probs`` float ``(N, K)``, rows summing to
1, each from a model that did not train on that item (K-fold cross-fitting).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "LabelIssues",
    "confident_joint",
    "find_label_issues",
    "normalized_margin",
    "per_class_thresholds",
    "self_confidence",
]


def _check(labels, pred_probs) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    p = np.asarray(pred_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ValueError(f"pred_probs must be (N, K) with N >= 1, K >= 2, got {p.shape}")
    if y.shape != (p.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({p.shape[0]},), got {y.shape}")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must lie in [0, {p.shape[1]})")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(1), 1, atol=1e-3):
        raise ValueError("pred_probs must be finite, >= 0, and each row must sum to 1")
    return y.astype(np.int64), p


def self_confidence(labels, pred_probs) -> np.ndarray:
    """``p(given label)`` per item, float64 ``(N,)`` in [0, 1]; low = likely mislabelled.

    Raises:
        ValueError: malformed inputs (see the module docstring).
    """
    y, p = _check(labels, pred_probs)
    return p[np.arange(len(y)), y]


def normalized_margin(labels, pred_probs) -> np.ndarray:
    """``(p_given − max_{k≠given} p_k + 1) / 2`` per item, float64 ``(N,)`` in [0, 1]; below
    0.5 the model prefers another class.

    Raises:
        ValueError: malformed inputs.
    """
    y, p = _check(labels, pred_probs)
    given = p[np.arange(len(y)), y]
    others = p.copy()
    others[np.arange(len(y)), y] = -np.inf
    return (given - others.max(1) + 1) / 2


def per_class_thresholds(labels, pred_probs) -> np.ndarray:
    """``t_j`` = mean of ``p_j`` over the items labelled ``j`` (Northcutt et al. 2021, eq. 2),
    float64 ``(K,)``; a class without items gets threshold 1.

    Raises:
        ValueError: malformed inputs.
    """
    y, p = _check(labels, pred_probs)
    k = p.shape[1]
    counts = np.bincount(y, minlength=k)
    sums = np.zeros(k)
    np.add.at(sums, y, p[np.arange(len(y)), y])
    return np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)


def _confident_assignment(y: np.ndarray, p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per item: the most probable class whose probability reaches its threshold, or −1."""
    above = p >= t[None, :] - 1e-9  # tolerance for thresholds that are means of the same floats
    masked = np.where(above, p, -np.inf)
    best = masked.argmax(1)
    return np.where(above.any(1), best, -1)


def confident_joint(labels, pred_probs) -> np.ndarray:
    """The confident joint ``C`` (int64 ``(K, K)``): ``C[i][j]`` = items labelled ``i``
    confidently counted as class ``j`` (Northcutt et al. 2021, eq. 1); items reaching no
    threshold are not counted.

    Raises:
        ValueError: malformed inputs.
    """
    y, p = _check(labels, pred_probs)
    return _joint(y, _confident_assignment(y, p, per_class_thresholds(y, p)), p.shape[1])


def _joint(y: np.ndarray, assigned: np.ndarray, k: int) -> np.ndarray:
    keep = assigned >= 0
    joint = np.zeros((k, k), dtype=np.int64)
    np.add.at(joint, (y[keep], assigned[keep]), 1)
    return joint


@dataclass(frozen=True)
class LabelIssues:
    """Items flagged as likely mislabelled.

    Attributes:
        mask: bool ``(N,)``, True = flagged (off the diagonal of the confident joint).
        ranked: int64 indices of the flagged items, most likely wrong first (lowest score).
        suggested: int64 ``(N,)``: the class each item was confidently counted as (−1: none).
        score: the ranking score per item (``self_confidence`` or ``normalized_margin``).
        joint: the confident joint (K, K); thresholds: ``t`` (K,).
    """

    mask: np.ndarray
    ranked: np.ndarray
    suggested: np.ndarray
    score: np.ndarray
    joint: np.ndarray
    thresholds: np.ndarray


def find_label_issues(labels, pred_probs, *, rank_by: str = "self_confidence") -> LabelIssues:
    """Flag the items off the confident joint's diagonal and rank them by ``rank_by``.

    Raises:
        ValueError: malformed inputs or an unknown ``rank_by``.
    """
    scorers = {"self_confidence": self_confidence, "normalized_margin": normalized_margin}
    if rank_by not in scorers:
        raise ValueError(f"rank_by must be one of {sorted(scorers)}, got {rank_by!r}")
    y, p = _check(labels, pred_probs)
    t = per_class_thresholds(y, p)
    suggested = _confident_assignment(y, p, t)
    mask = (suggested >= 0) & (suggested != y)
    score = scorers[rank_by](y, p)
    flagged = np.flatnonzero(mask)
    ranked = flagged[np.argsort(score[flagged], kind="stable")]
    joint = _joint(y, suggested, p.shape[1])
    return LabelIssues(mask, ranked.astype(np.int64), suggested, score, joint, t)
