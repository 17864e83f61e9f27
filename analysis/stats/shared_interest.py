"""Shared Interest: how human-marked regions and saliency agree (Boggust, Hoover, Satyanarayan
and Strobelt, "Shared Interest: Measuring Human-AI Alignment to Identify Recurring Patterns in
Model Behavior", CHI 2022, Sec. 3).

For a binary ground-truth region G (what a person marked) and a binary saliency region S (the
explanation, binarised), per image:

* IoU coverage ``|G ∩ S| / |G ∪ S|`` (how exactly they agree),
* ground-truth coverage ``|G ∩ S| / |G|`` (how much of the human region the model relied on),
* saliency coverage ``|G ∩ S| / |S|`` (how much of what the model relied on is human-marked).

Everything is vectorised over a batch of ``(N, H, W)`` masks. Zero denominators follow one rule
instead of silently producing NaN: a score whose denominator is empty is *undefined* for that
image (``nan`` in the per-image array, with the reason in ``undefined``), and every aggregate
(:func:`shared_interest_summary`) leaves undefined images out and says how many and why. IoU is
undefined only when both regions are empty (one empty, the other not: IoU 0).

Saliency is binarised by one of :func:`binarize_std` (mean + k·std, the paper's choice),
:func:`binarize_percentile` or :func:`binarize_top_area`; the choice travels with the scores
(:class:`Binarization`). No Django imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Binarization",
    "SharedInterestScores",
    "binarize_percentile",
    "binarize_std",
    "binarize_top_area",
    "shared_interest",
    "shared_interest_summary",
]

UNDEFINED_REASONS = {
    "iou_coverage": "both regions empty",
    "ground_truth_coverage": "empty ground-truth region",
    "saliency_coverage": "empty saliency region",
}


@dataclass(frozen=True)
class Binarization:
    """How continuous saliency became a region: ``method`` in {"given", "std", "percentile",
    "top_area"} and its parameter (k, the percentile in [0, 100], or the area fraction)."""

    method: str
    parameter: float | None = None


def _maps(saliency: np.ndarray) -> np.ndarray:
    array = np.asarray(saliency, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"saliency must have shape (N, H, W) or (H, W), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("saliency contains NaN or infinite values")
    return array


def binarize_std(saliency: np.ndarray, k: float = 1.0) -> tuple[np.ndarray, Binarization]:
    """Pixels above ``mean + k * std`` of their own map (Boggust et al. 2022, Sec. 4.1 use
    k = 1). Returns ``(masks (N, H, W) bool, Binarization("std", k))``. A constant map gives an
    empty region."""
    maps = _maps(saliency)
    threshold = maps.mean(axis=(1, 2), keepdims=True) + k * maps.std(axis=(1, 2), keepdims=True)
    return maps > threshold, Binarization("std", float(k))


def binarize_percentile(saliency: np.ndarray, q: float) -> tuple[np.ndarray, Binarization]:
    """Pixels strictly above the ``q``-th percentile (0..100) of their own map.

    Raises:
        ValueError: ``q`` outside [0, 100].
    """
    if not 0 <= q <= 100:
        raise ValueError(f"q must lie in [0, 100], got {q}")
    maps = _maps(saliency)
    threshold = np.percentile(maps, q, axis=(1, 2), keepdims=True)
    return maps > threshold, Binarization("percentile", float(q))


def binarize_top_area(saliency: np.ndarray, fraction: float) -> tuple[np.ndarray, Binarization]:
    """The ``round(fraction * H * W)`` most salient pixels of each map (ties broken by
    position, so the area is exact).

    Raises:
        ValueError: ``fraction`` outside [0, 1].
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    maps = _maps(saliency)
    n, h, w = maps.shape
    count = int(round(fraction * h * w))
    masks = np.zeros((n, h * w), dtype=bool)
    if count:
        order = np.argsort(-maps.reshape(n, -1), axis=1, kind="stable")[:, :count]
        np.put_along_axis(masks, order, True, axis=1)
    return masks.reshape(n, h, w), Binarization("top_area", float(fraction))


@dataclass(frozen=True)
class SharedInterestScores:
    """Per-image scores; ``nan`` where undefined, with the reason per score in ``undefined``.

    Attributes:
        iou_coverage, ground_truth_coverage, saliency_coverage: float64 ``(N,)`` in [0, 1] or
            nan.
        ground_truth_area, saliency_area, intersection_area: int64 ``(N,)`` pixel counts.
        binarization: how the saliency regions were made.
    """

    iou_coverage: np.ndarray
    ground_truth_coverage: np.ndarray
    saliency_coverage: np.ndarray
    ground_truth_area: np.ndarray
    saliency_area: np.ndarray
    intersection_area: np.ndarray
    binarization: Binarization = field(default_factory=lambda: Binarization("given"))

    def undefined(self, score: str) -> np.ndarray:
        """Boolean ``(N,)``: images where ``score`` is undefined."""
        return np.isnan(getattr(self, score))


def _binary(masks: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(masks)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (H, W), got {array.shape}")
    if array.dtype != bool:
        values = np.unique(array)
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f"{name} must be binary (0/1 or bool), got values {values[:5]}")
        array = array.astype(bool)
    return array


def shared_interest(
    ground_truth: np.ndarray,
    saliency_region: np.ndarray,
    *,
    binarization: Binarization | None = None,
) -> SharedInterestScores:
    """IoU, ground-truth and saliency coverage for a batch of region pairs.

    Args:
        ground_truth: binary ``(N, H, W)`` (or ``(H, W)``) human regions.
        saliency_region: binary masks of the same shape (binarise continuous saliency first).
        binarization: recorded with the scores (default ``Binarization("given")``).

    Returns:
        :class:`SharedInterestScores`; undefined scores are ``nan`` (see the module rule).

    Raises:
        ValueError: shapes differ, or a mask is not binary.
    """
    gt = _binary(ground_truth, "ground_truth")
    sal = _binary(saliency_region, "saliency_region")
    if gt.shape != sal.shape:
        raise ValueError(f"shapes differ: ground truth {gt.shape}, saliency {sal.shape}")
    inter = np.logical_and(gt, sal).sum(axis=(1, 2), dtype=np.int64)
    gt_area = gt.sum(axis=(1, 2), dtype=np.int64)
    sal_area = sal.sum(axis=(1, 2), dtype=np.int64)
    union = gt_area + sal_area - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
        gtc = np.where(gt_area > 0, inter / np.maximum(gt_area, 1), np.nan)
        sc = np.where(sal_area > 0, inter / np.maximum(sal_area, 1), np.nan)
    return SharedInterestScores(
        iou_coverage=iou.astype(np.float64),
        ground_truth_coverage=gtc.astype(np.float64),
        saliency_coverage=sc.astype(np.float64),
        ground_truth_area=gt_area,
        saliency_area=sal_area,
        intersection_area=inter,
        binarization=binarization or Binarization("given"),
    )


def shared_interest_summary(scores: SharedInterestScores) -> dict[str, dict]:
    """Mean and median of each score over the images where it is defined, with the number of
    images used and the number left out and why (never a mean poisoned by NaN).

    Returns:
        ``{score: {"mean", "median", "n", "excluded", "reason"}}``; mean/median are None
        when no image has the score defined.
    """
    out = {}
    for score, reason in UNDEFINED_REASONS.items():
        values = getattr(scores, score)
        defined = values[~np.isnan(values)]
        out[score] = {
            "mean": float(defined.mean()) if defined.size else None,
            "median": float(np.median(defined)) if defined.size else None,
            "n": int(defined.size),
            "excluded": int(values.size - defined.size),
            "reason": reason,
        }
    return out
