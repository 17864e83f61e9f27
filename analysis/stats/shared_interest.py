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
(:func:`shared_interest_summary`, :func:`pattern_counts`) leaves undefined images out and says
how many and why. IoU is undefined only when both regions are empty (one empty, the other not:
IoU 0).

Saliency is binarised by one of :func:`binarize_std` (mean + k·std, the paper's choice),
:func:`binarize_percentile` or :func:`binarize_top_area`; the choice travels with the scores
(:class:`Binarization`). :func:`shared_interest_std` binarises by mean + k·std and scores in one
cache-blocked pass without materialising the masks (same numbers as
``shared_interest(gt, binarize_std(saliency, k)[0])``). :func:`shared_interest_patterns` assigns
each image one of the paper's eight recurring patterns from its scores and whether the
model was right; :func:`pattern_counts` summarises them. No Django imports.

Performance (``benchmarks/shared_interest.py``): the mean and std of each map are accumulated in
float64 over blocks of a few maps kept in cache (float32 maps are widened block by block, never
as a whole; E[x²] - mean² is used unless it would cancel, then two-pass as ``np.std``), pixels
are compared against the threshold in the map's own dtype (the float64 threshold is rounded down
to the largest float32 not above it, so ``x > t`` is decided exactly), and region areas are
counted eight pixels at a time: a bool is one 0/1 byte, so rows are read as uint64 words, the
intersection is one ``&`` per word and areas are byte sums of word sums (``np.bitwise_count``
or plain counting where H*W is not a multiple of 8 or has no suitable divisor).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "NO_PATTERN",
    "PATTERNS",
    "PATTERN_KEYS",
    "Binarization",
    "Pattern",
    "SharedInterestPatterns",
    "SharedInterestScores",
    "binarize_percentile",
    "binarize_std",
    "binarize_top_area",
    "pattern_counts",
    "shared_interest",
    "shared_interest_patterns",
    "shared_interest_std",
    "shared_interest_summary",
]

UNDEFINED_REASONS = {
    "iou_coverage": "both regions empty",
    "ground_truth_coverage": "empty ground-truth region",
    "saliency_coverage": "empty saliency region",
}

# Working-set size of one block of maps widened to float64 (a few rows of a 224x224 batch): big
# enough that numpy's per-call overhead is amortised, small enough to stay in L2/L3 cache.
_BLOCK_BYTES = 2 << 20
# Bool bytes counted per block by shared_interest (bounds the temporaries of the counting).
_COUNT_BLOCK_BYTES = 4 << 20
# var = E[x²] - mean² loses about log10(mean²/var) digits; rows past this ratio (and constant
# rows) are recomputed two-pass, as np.std does, so the threshold keeps ~15 significant digits.
_CANCELLATION_RATIO = 16.0
_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")


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


def _flat_maps(saliency: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Saliency as C-contiguous ``(N, H*W)`` float32 or float64 (no copy when it already is
    one), and its ``(N, H, W)`` shape. Other dtypes become float64 (float16: float32)."""
    array = np.asarray(saliency)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"saliency must have shape (N, H, W) or (H, W), got {array.shape}")
    if array.shape[1] * array.shape[2] == 0:
        raise ValueError(f"saliency maps must have at least one pixel, got {array.shape}")
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32 if array.dtype == np.float16 else np.float64)
    shape = (array.shape[0], array.shape[1], array.shape[2])
    return np.ascontiguousarray(array).reshape(shape[0], shape[1] * shape[2]), shape


def _float32_at_or_below(threshold: np.ndarray) -> np.ndarray:
    """The largest float32 <= each float64 threshold: for float32 ``x``, ``x > t`` exactly when
    ``x > _float32_at_or_below(t)`` (no float32 lies strictly between the two)."""
    with np.errstate(over="ignore"):
        rounded = threshold.astype(np.float32)  # beyond float32's range: +-inf, fixed below
    above = rounded.astype(np.float64) > threshold
    rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
    return rounded


def _std_blocks(flat: np.ndarray, k: float, scratch: np.ndarray | None = None):
    """Yield ``(start, stop, thresholds)`` over blocks of rows of ``flat`` (N, P): the
    thresholds ``mean + k * std`` (population std, as ``np.std``) of rows start..stop, in
    ``flat``'s dtype and rounded so that ``flat[start:stop] > thresholds[:, None]`` is the exact
    float64 comparison. A constant row gets +inf (an empty region). ``scratch``: optional
    float64 ``(rows, P)`` working buffer to reuse across calls.

    Raises:
        ValueError: a map contains NaN or infinite values.
    """
    n, p = flat.shape
    rows = max(1, _BLOCK_BYTES // (p * 8))
    if scratch is None or scratch.shape[0] < min(rows, n):
        scratch = np.empty((min(rows, n), p), dtype=np.float64)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        block = flat[start:stop]
        x = scratch[: stop - start]
        if block.dtype == np.float64:
            total = np.add.reduce(block, axis=1)
            np.square(block, out=x)
        else:
            np.copyto(x, block)  # float32 -> float64 is exact
            total = np.add.reduce(x, axis=1)
            np.square(x, out=x)
        squares = np.add.reduce(x, axis=1)
        mean = total / p
        if np.isfinite(total).all() and np.isfinite(squares).all():
            variance = squares / p - mean * mean
        else:
            if not np.isfinite(block).all():
                raise ValueError("saliency contains NaN or infinite values")
            variance = np.full(stop - start, np.nan)  # squares overflowed: all rows two-pass
        unstable = ~(mean * mean <= _CANCELLATION_RATIO * variance)  # also catches nan, <= 0
        if unstable.any():
            redo = np.flatnonzero(unstable)
            exact = block[redo].astype(np.float64)
            mean[redo] = exact.mean(axis=1)
            variance[redo] = exact.var(axis=1)
            constant = exact.max(axis=1) == exact.min(axis=1)
        with np.errstate(over="ignore", invalid="ignore"):
            thresholds = mean + k * np.sqrt(variance)
        if unstable.any():
            thresholds[redo[constant]] = np.inf
        if flat.dtype == np.float32:
            thresholds = _float32_at_or_below(thresholds)
        yield start, stop, thresholds


def binarize_std(saliency: np.ndarray, k: float = 1.0) -> tuple[np.ndarray, Binarization]:
    """Pixels strictly above ``mean + k * std`` of their own map (Boggust et al. 2022,
    Sec. 4.1 use k = 1; population std as ``np.std``; the reference package normalises each map
    to [0, 1] first and keeps ``>=``, which selects the same pixels up to exact ties).

    Args:
        saliency: ``(N, H, W)`` or ``(H, W)`` real values, any range; float32 and float64 are
            used as they are (no copy), other dtypes are converted.
        k: number of standard deviations above the mean.

    Returns:
        ``(masks (N, H, W) bool, Binarization("std", k))``. A constant map gives an empty
        region.

    Raises:
        ValueError: wrong number of dimensions, no pixels, or NaN/infinite values.
    """
    flat, shape = _flat_maps(saliency)
    masks = np.empty(flat.shape, dtype=bool)
    for start, stop, thresholds in _std_blocks(flat, k):
        np.greater(flat[start:stop], thresholds[:, None], out=masks[start:stop])
    return masks.reshape(shape), Binarization("std", float(k))


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
        bad = (array != 0) & (array != 1)
        if bad.any():
            values = np.unique(array[bad])
            raise ValueError(f"{name} must be binary (0/1 or bool), got values {values[:5]}")
        array = array != 0
    return array


def _lane_group(words: int) -> int:
    """Words per partial sum for :func:`_overlap_counts`: the largest divisor of ``words`` not
    above 255 (each byte lane of a uint64 sum of that many 0/1-byte words stays <= 255)."""
    return max(d for d in range(1, min(words, 255) + 1) if words % d == 0)


def _byte_count(words: np.ndarray, group: int) -> np.ndarray:
    """Number of nonzero bytes per row of ``words`` (uint64 ``(b, W)`` whose bytes are 0/1):
    add ``group`` words at a time (eight byte lanes counted in parallel, no carries), then add
    up the bytes of the partial sums."""
    b, w = words.shape
    partial = np.add.reduce(words.reshape(b, w // group, group), axis=2)
    return partial.view(np.uint8).reshape(b, -1).sum(axis=1, dtype=np.int64)


def _overlap_counts(
    gt: np.ndarray, sal: np.ndarray, scratch: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(|G ∩ S|, |G|, |S|)`` as int64 ``(n,)`` for C-contiguous bool ``(n, P)`` blocks.

    A numpy bool is one byte holding 0 or 1, so with P a multiple of 8 the rows are read as
    uint64 words, eight pixels each: the intersection is one ``&`` per word and the areas are
    byte sums of word sums (or popcounts). ``scratch``: optional uint64 buffer of at least
    ``n * P / 8`` words for the ``&``.
    """
    n, p = gt.shape
    if p % 8 == 0:
        words = p // 8
        group = _lane_group(words)
        g = gt.view(np.uint64)
        s = sal.view(np.uint64)
        both = np.bitwise_and(g, s, out=None if scratch is None else scratch[:n])
        if group >= 16:
            return _byte_count(both, group), _byte_count(g, group), _byte_count(s, group)
        if _HAS_BITWISE_COUNT:
            return tuple(np.bitwise_count(a).sum(axis=1, dtype=np.int64) for a in (both, g, s))
    return (
        np.count_nonzero(gt & sal, axis=1).astype(np.int64),
        np.count_nonzero(gt, axis=1).astype(np.int64),
        np.count_nonzero(sal, axis=1).astype(np.int64),
    )


def _scores(
    inter: np.ndarray,
    gt_area: np.ndarray,
    sal_area: np.ndarray,
    binarization: Binarization | None,
) -> SharedInterestScores:
    union = gt_area + sal_area - inter
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


def shared_interest(
    ground_truth: np.ndarray,
    saliency_region: np.ndarray,
    *,
    binarization: Binarization | None = None,
) -> SharedInterestScores:
    """IoU, ground-truth and saliency coverage for a batch of region pairs.

    Args:
        ground_truth: binary ``(N, H, W)`` (or ``(H, W)``) human regions (bool, or 0/1 of any
            numeric dtype).
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
    n, h, w = gt.shape
    g = np.ascontiguousarray(gt).reshape(n, h * w)
    s = np.ascontiguousarray(sal).reshape(n, h * w)
    inter = np.empty(n, dtype=np.int64)
    gt_area = np.empty(n, dtype=np.int64)
    sal_area = np.empty(n, dtype=np.int64)
    p = g.shape[1]
    rows = max(1, _COUNT_BLOCK_BYTES // max(1, p))
    scratch = np.empty((min(rows, n), p // 8), dtype=np.uint64) if p % 8 == 0 else None
    for start in range(0, n, rows):
        block = slice(start, start + rows)
        counts = _overlap_counts(g[block], s[block], scratch)
        inter[block], gt_area[block], sal_area[block] = counts
    return _scores(inter, gt_area, sal_area, binarization)


def shared_interest_std(
    ground_truth: np.ndarray, saliency: np.ndarray, k: float = 1.0
) -> SharedInterestScores:
    """Binarise continuous saliency by mean + k·std (:func:`binarize_std`) and score it
    (:func:`shared_interest`) in one pass over cache-sized blocks of maps, without keeping the
    ``(N, H, W)`` masks: the same numbers as
    ``shared_interest(ground_truth, binarize_std(saliency, k)[0])``, with a bool block of about
    4 MiB and a float64 block of about 2 MiB (at least one map each) as working memory instead
    of N masks.

    Args:
        ground_truth: binary ``(N, H, W)`` (or ``(H, W)``) human regions (bool or 0/1).
        saliency: real ``(N, H, W)`` (or ``(H, W)``) saliency maps of the same shape; float32
            and float64 are read in place.
        k: number of standard deviations above the mean (the paper uses 1).

    Returns:
        :class:`SharedInterestScores` with ``Binarization("std", k)``.

    Raises:
        ValueError: shapes differ, ground truth not binary, saliency with NaN/infinite values,
            the wrong number of dimensions, or no pixels.
    """
    gt = _binary(ground_truth, "ground_truth")
    flat, shape = _flat_maps(saliency)
    if gt.shape != shape:
        raise ValueError(f"shapes differ: ground truth {gt.shape}, saliency {shape}")
    n, p = flat.shape
    g = np.ascontiguousarray(gt).reshape(n, p)
    inter = np.empty(n, dtype=np.int64)
    gt_area = np.empty(n, dtype=np.int64)
    sal_area = np.empty(n, dtype=np.int64)
    rows = max(1, min(n, _COUNT_BLOCK_BYTES // p))
    region = np.empty((rows, p), dtype=bool)
    words = np.empty((rows, p // 8), dtype=np.uint64) if p % 8 == 0 else None
    widened = np.empty((min(rows, max(1, _BLOCK_BYTES // (p * 8))), p), dtype=np.float64)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        block = region[: stop - start]
        for a, b, thresholds in _std_blocks(flat[start:stop], k, widened):
            np.greater(flat[start + a : start + b], thresholds[:, None], out=block[a:b])
        counts = _overlap_counts(g[start:stop], block, words)
        inter[start:stop], gt_area[start:stop], sal_area[start:stop] = counts
    return _scores(inter, gt_area, sal_area, Binarization("std", float(k)))


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


# --- The paper's recurring patterns --------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """One recurring pattern: ``key`` (stable, for URLs and filters), ``name`` (as the paper
    writes it), ``correct`` (the prediction it needs; None for the two non-patterns), ``rule``
    (in terms of the thresholds ``high`` and ``low``) and a one-line ``description``."""

    key: str
    name: str
    correct: bool | None
    rule: str
    description: str


PATTERNS: dict[str, Pattern] = {
    p.key: p
    for p in (
        Pattern(
            "human_aligned",
            "Human Aligned",
            True,
            "IoU >= high",
            "Right for the right reasons: the model relied on the human-marked region.",
        ),
        Pattern(
            "sufficient_subset",
            "Sufficient Subset",
            True,
            "saliency coverage >= high and ground-truth coverage < low",
            "Right from part of the human region (e.g. a dog's face instead of the whole dog).",
        ),
        Pattern(
            "sufficient_context",
            "Sufficient Context",
            True,
            "ground-truth coverage >= high and saliency coverage < low",
            "Right using the whole human region plus much of its surroundings (cab and street).",
        ),
        Pattern(
            "context_dependent",
            "Context Dependent",
            True,
            "IoU, ground-truth and saliency coverage all < low",
            "Right while relying on context outside the human region (helmet -> snowmobile).",
        ),
        Pattern(
            "confuser",
            "Confuser",
            False,
            "IoU >= high",
            "Wrong although it relied on the human region: often an ambiguous or overlapping "
            "label (moped vs. motor scooter).",
        ),
        Pattern(
            "insufficient_subset",
            "Insufficient Subset",
            False,
            "saliency coverage >= high and ground-truth coverage < low",
            "Wrong from too small a part of the human region (black-and-white spots -> dalmatian).",
        ),
        Pattern(
            "context_confusion",
            "Context Confusion",
            False,
            "ground-truth coverage >= high and saliency coverage < low",
            "Wrong, swayed by context around the human region (keyboard and lap -> laptop).",
        ),
        Pattern(
            "distractor",
            "Distractor",
            False,
            "IoU, ground-truth and saliency coverage all < low",
            "Wrong, relying on something other than the human region: a secondary object or "
            "the background (snow -> arctic fox).",
        ),
    )
}

NO_PATTERN: dict[str, Pattern] = {
    "undefined": Pattern(
        "undefined",
        "Undefined",
        None,
        "a coverage is undefined (empty ground-truth and/or empty saliency region)",
        "No pattern: with an empty region the coverages do not exist.",
    ),
    "unmatched": Pattern(
        "unmatched",
        "No pattern",
        None,
        "coverages defined but no rule holds",
        "No pattern: a coverage lies between the thresholds, or both coverages are high "
        "while IoU is not.",
    ),
}

#: Every key :func:`shared_interest_patterns` can return, in display/sort order (``codes``).
PATTERN_KEYS: tuple[str, ...] = (*PATTERNS, *NO_PATTERN)
_KEY_DTYPE = f"<U{max(map(len, PATTERN_KEYS))}"


@dataclass(frozen=True)
class SharedInterestPatterns:
    """Per-image pattern assignment.

    Attributes:
        keys: str ``(N,)``, each one of :data:`PATTERN_KEYS` (look names and descriptions up
            in :data:`PATTERNS` / :data:`NO_PATTERN`).
        model_correct: bool ``(N,)``, as given.
        undefined_reason: str ``(N,)``: "" where the coverages are defined, else "empty
            ground-truth region", "empty saliency region" or "both regions empty".
        high, low: the thresholds used (``x >= high`` is high, ``x < low`` is low).
    """

    keys: np.ndarray
    model_correct: np.ndarray
    undefined_reason: np.ndarray
    high: float
    low: float

    def mask(self, key: str) -> np.ndarray:
        """Boolean ``(N,)``: images assigned ``key``.

        Raises:
            KeyError: ``key`` is not one of :data:`PATTERN_KEYS`.
        """
        if key not in PATTERN_KEYS:
            raise KeyError(f"unknown pattern {key!r}; known: {', '.join(PATTERN_KEYS)}")
        return self.keys == key

    @property
    def codes(self) -> np.ndarray:
        """int8 ``(N,)``: each key's index in :data:`PATTERN_KEYS` (a sort key that groups
        correct patterns, then incorrect ones, then undefined and unmatched)."""
        lookup = np.array(PATTERN_KEYS, dtype=_KEY_DTYPE)
        order = np.argsort(lookup)
        return order[np.searchsorted(lookup, self.keys, sorter=order)].astype(np.int8)

    @property
    def names(self) -> np.ndarray:
        """str ``(N,)``: the human-readable name of each image's pattern."""
        lookup = {**PATTERNS, **NO_PATTERN}
        return np.array([lookup[key].name for key in self.keys.tolist()], dtype=object)


def _correctness(model_correct: np.ndarray, n: int) -> np.ndarray:
    correct = np.asarray(model_correct)
    if correct.shape != (n,):
        raise ValueError(f"model_correct must have shape ({n},), got {correct.shape}")
    if correct.dtype == bool:
        return correct
    if not np.issubdtype(correct.dtype, np.number) or not np.isin(correct, (0, 1)).all():
        raise ValueError("model_correct must be bool or 0/1")
    return correct != 0


def shared_interest_patterns(
    scores: SharedInterestScores,
    model_correct: np.ndarray,
    *,
    high: float = 0.5,
    low: float | None = None,
) -> SharedInterestPatterns:
    """Assign each image one of the eight recurring patterns of Boggust et al. (CHI 2022),
    from its three coverages and whether the model's prediction was correct.

    Rules (a score is *high* when ``>= high`` and *low* when ``< low``; ``low`` defaults to
    ``high``, i.e. one cut-off):

    ========================  =========  ====================================================
    pattern                   correct?   rule
    ========================  =========  ====================================================
    Human Aligned             yes        IoU high
    Sufficient Subset         yes        saliency coverage high, ground-truth coverage low
    Sufficient Context        yes        ground-truth coverage high, saliency coverage low
    Context Dependent         yes        IoU, ground-truth and saliency coverage all low
    Confuser                  no         IoU high
    Insufficient Subset       no         saliency coverage high, ground-truth coverage low
    Context Confusion         no         ground-truth coverage high, saliency coverage low
    Distractor                no         IoU, ground-truth and saliency coverage all low
    ========================  =========  ====================================================

    The rules cannot overlap (IoU <= min(ground-truth, saliency coverage), so IoU high makes
    both coverages high). Images matching none of them get ``"unmatched"`` (a coverage in
    ``[low, high)``, or both coverages high with IoU below ``high``); images with an empty
    ground-truth or saliency region get ``"undefined"`` (their coverages do not exist, see the
    module rule). Neither is ever folded into a pattern; :func:`pattern_counts` counts both.

    Sources, and what they settle (checked 2026-11-30):

    * The eight cells and what each means: the authors' VISxAI 2020 article "Shared Interest:
      Human Annotations vs. AI Saliency" (same four authors; repository
      ``aboggust/shared-interest-interface``, ``client/src/index-distill.html``, Sec. 3
      "Method"), which reads each metric at its extremes for correct and incorrect predictions:
      correct + high IoU = right for exactly the right reasons; incorrect + high IoU =
      ambiguous labels (moped vs. motor scooter); correct + high saliency ("explanation")
      coverage = a subset of the object suffices (a dog's face); incorrect + high saliency
      coverage = an insufficient portion of the object (black-and-white spots -> dalmatian);
      correct + high ground-truth coverage = the object plus relevant background (cab and
      street); incorrect + high ground-truth coverage = over-reliance on context (keyboard and
      lap -> laptop); low on all three + correct = background context (snowmobile helmet,
      train tracks); low on all three + incorrect = a secondary object or background (snow ->
      arctic fox). The CHI 2022 paper's abstract confirms that it derives "eight recurring
      patterns" from these scores and correctness; the names used here, and which cell each
      names, are the paper's as recalled (they match the cells above one to one) but were
      not checked against its text. The subset/context patterns are read as "one coverage
      high *and the other low*"; an image with both coverages high is Human Aligned /
      Confuser when its IoU is high and ``"unmatched"`` otherwise.
    * Numeric cut-offs: none. The article and the parts of the paper available to us speak of
      "high" and "low" scores only, and the authors' reference package
      (``mitvis/shared-interest``: ``shared_interest/scoring_functions.py``, ``util.py``)
      computes the three scores and the mean + k·std binarisation but defines no patterns.
      So ``high`` and ``low`` are parameters; the default (one cut-off at 0.5) is this
      module's choice, not the paper's. Use ``low < high`` to leave a middle band unassigned.
    * Not verified: the body of the CHI paper (its recurring-patterns section and figure) was
      not in the sources we could read, so if it states explicit score ranges per pattern
      they are not encoded here; pass them as ``high``/``low``.

    Args:
        scores: from :func:`shared_interest` / :func:`shared_interest_std` (N images).
        model_correct: ``(N,)`` bool (or 0/1): was the model's prediction right.
        high: a score ``>= high`` is high; in (0, 1].
        low: a score ``< low`` is low; in (0, high]; default ``high``.

    Returns:
        :class:`SharedInterestPatterns` (keys from :data:`PATTERN_KEYS`).

    Raises:
        TypeError: ``scores`` is not a :class:`SharedInterestScores`.
        ValueError: ``model_correct`` of the wrong shape or not boolean; thresholds outside
            ``0 < low <= high <= 1``.
    """
    if not isinstance(scores, SharedInterestScores):
        raise TypeError(f"scores must be SharedInterestScores, got {type(scores).__name__}")
    low = high if low is None else low
    high, low = float(high), float(low)
    if not 0 < low <= high <= 1:
        raise ValueError(f"thresholds must satisfy 0 < low <= high <= 1, got {low=}, {high=}")
    iou = scores.iou_coverage
    gtc = scores.ground_truth_coverage
    sc = scores.saliency_coverage
    n = iou.shape[0]
    correct = _correctness(model_correct, n)

    gt_empty = np.isnan(gtc)
    sal_empty = np.isnan(sc)
    defined = ~(gt_empty | sal_empty)
    reason = np.full(n, "", dtype="<U26")
    reason[gt_empty] = UNDEFINED_REASONS["ground_truth_coverage"]
    reason[sal_empty] = UNDEFINED_REASONS["saliency_coverage"]
    reason[gt_empty & sal_empty] = UNDEFINED_REASONS["iou_coverage"]

    with np.errstate(invalid="ignore"):
        aligned = iou >= high
        subset = (sc >= high) & (gtc < low)
        context = (gtc >= high) & (sc < low)
        all_low = (iou < low) & (gtc < low) & (sc < low)
    wrong = ~correct
    keys = np.select(
        [
            ~defined,
            aligned & correct,
            subset & correct,
            context & correct,
            all_low & correct,
            aligned & wrong,
            subset & wrong,
            context & wrong,
            all_low & wrong,
        ],
        [
            "undefined",
            "human_aligned",
            "sufficient_subset",
            "sufficient_context",
            "context_dependent",
            "confuser",
            "insufficient_subset",
            "context_confusion",
            "distractor",
        ],
        default="unmatched",
    ).astype(_KEY_DTYPE)
    return SharedInterestPatterns(
        keys=keys, model_correct=correct, undefined_reason=reason, high=high, low=low
    )


def pattern_counts(patterns: SharedInterestPatterns) -> dict:
    """How many images fall in each pattern, with the images that got none counted and
    explained (never dropped).

    Returns:
        ``{"n": all images, "classified": images in one of the eight patterns,
        "counts": {key: int} for every key of PATTERN_KEYS (zeros included, in that order),
        "share_of_classified": {pattern key: float in [0, 1] or None when nothing is
        classified} for the eight patterns, "undefined_reasons": {reason: int} (only reasons
        that occur), "high": float, "low": float}``.
    """
    keys = patterns.keys
    counts = {key: int(np.count_nonzero(keys == key)) for key in PATTERN_KEYS}
    classified = sum(counts[key] for key in PATTERNS)
    reasons, reason_counts = np.unique(
        patterns.undefined_reason[patterns.undefined_reason != ""], return_counts=True
    )
    return {
        "n": int(keys.size),
        "classified": classified,
        "counts": counts,
        "share_of_classified": {
            key: (counts[key] / classified if classified else None) for key in PATTERNS
        },
        "undefined_reasons": {
            str(r): int(c) for r, c in zip(reasons.tolist(), reason_counts.tolist(), strict=True)
        },
        "high": patterns.high,
        "low": patterns.low,
    }
