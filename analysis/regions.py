"""Shared Interest of a study (Boggust et al., CHI 2022): human regions against the study
model's saliency maps, per method and item, with the paper's recurring patterns.

Human regions come from the dataset (boxes and masks imported with the items, drawn in the
stored photo's pixels and mapped here to the model's view: the same centre crop or squash
and resize as the photo) or from participants' region-annotation answers (already in the
model's view; pooled per item by majority: a pixel is inside when at least half of the
participants who annotated the item marked it). Saliency is the stored map of the model's
top-1 class, binarised by mean + k·std (the paper's default binarisation, k = 1).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from django.core.files.storage import default_storage
from PIL import Image

from analysis.stats.shared_interest import (
    NO_PATTERN,
    PATTERNS,
    binarize_std,
    shared_interest,
    shared_interest_patterns,
)
from explanations.models import Explanation, Item, Prediction, RegionKind, ResizePolicy
from studies.models import Response, Study

SOURCES = ("dataset", "participants")

__all__ = [
    "SOURCES",
    "dataset_region_mask",
    "participant_region_masks",
    "region_outline",
    "study_shared_interest",
]


def _to_model_view(mask: np.ndarray, size: int, policy: str) -> np.ndarray:
    """A full-photo (H, W) bool mask through the photo's own crop/resize to (size, size)."""
    if policy != ResizePolicy.RESIZE:
        height, width = mask.shape
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        mask = mask[top : top + side, left : left + side]
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (size, size), Image.Resampling.NEAREST
    )
    return np.asarray(image) > 127


def dataset_region_mask(item: Item, *, size: int, policy: str) -> np.ndarray | None:
    """The union of an item's imported regions as a (size, size) bool mask in the model's
    view, or None when the item has none (or its mask files cannot be read)."""
    regions = list(item.regions.all())
    if not regions:
        return None
    full = np.zeros((item.height, item.width), dtype=bool)
    for region in regions:
        if region.kind == RegionKind.BOX:
            x0, y0 = max(0, int(region.x0)), max(0, int(region.y0))
            x1, y1 = (
                min(item.width, int(np.ceil(region.x1))),
                min(item.height, int(np.ceil(region.y1))),
            )
            full[y0:y1, x0:x1] = True
        elif region.mask:
            try:
                with region.mask.open("rb") as fh:
                    pixels = np.asarray(Image.open(io.BytesIO(fh.read())).convert("L")) > 0
            except (OSError, ValueError):
                return None
            if pixels.shape == full.shape:
                full |= pixels
    return _to_model_view(full, size, policy)


def participant_region_masks(
    study: Study, *, item_ids: list[int] | None = None
) -> dict[int, tuple[np.ndarray, int]]:
    """Per item id (all, or those in ``item_ids``): the majority mask of participants' region
    annotations (bool, the model's view) and how many participants' masks it pools. Excluded
    and preview participants' answers are left out."""
    from analysis.datasets import participants_excluded

    excluded = participants_excluded(study)
    masks: dict[int, list[np.ndarray]] = {}
    rows = Response.objects.filter(
        participant__study=study,
        participant__is_preview=False,
        trial__task_type="region_annotation",
        trial__item__isnull=False,
    )
    if item_ids is not None:
        rows = rows.filter(trial__item_id__in=item_ids)
    rows = rows.values_list("participant_id", "trial__item_id", "data")
    for participant_id, item_id, data in rows:
        name = (data or {}).get("mask")
        if participant_id in excluded or not name:
            continue
        try:
            with default_storage.open(name, "rb") as fh:
                mask = np.asarray(Image.open(io.BytesIO(fh.read())).convert("L")) > 0
        except (OSError, ValueError):
            continue
        masks.setdefault(item_id, []).append(mask)
    pooled = {}
    for item_id, stack in masks.items():
        shapes = {m.shape for m in stack}
        if len(shapes) != 1:
            continue
        votes = np.mean(np.stack(stack), axis=0)
        pooled[item_id] = (votes >= 0.5, len(stack))
    return pooled


def region_outline(mask: np.ndarray) -> np.ndarray:
    """The 1-pixel inner boundary of a bool (H, W) mask (for drawing it over a photo)."""
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, border_value=0)


def study_shared_interest(
    study: Study, *, source: str = "dataset", k: float = 1.0, high: float = 0.5
) -> pd.DataFrame:
    """Shared Interest per (method, item) of the study's dataset: the coverages of the
    human region by the top-1 map of the study's model (latest map per method and item),
    the paper's pattern, and whether the model was right.

    Args:
        source: "dataset" (imported regions) or "participants" (region-annotation answers).
        k: saliency binarised at mean + k·std of each map.
        high: the patterns' threshold (see :func:`shared_interest_patterns`).

    Returns:
        Columns method, item, item_id, explanation_id, model_correct, ground_truth_source,
        annotators, iou, ground_truth_coverage, saliency_coverage (float in [0, 1] or NaN
        when undefined), pattern (key), pattern_name, undefined_reason. Empty when no item
        has both a human region and a map.

    Raises:
        ValueError: unknown ``source``.
    """
    from explanations.services import explanation_array_load

    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    model = study.model
    size, policy = model.input_size, model.resize_policy
    items = {i.pk: i for i in study.dataset.items.prefetch_related("regions")}
    if source == "participants":
        truth = participant_region_masks(study)
    else:
        truth = {}
        for item in items.values():
            mask = dataset_region_mask(item, size=size, policy=policy)
            if mask is not None:
                truth[item.pk] = (mask, 0)
    if not truth:
        return pd.DataFrame()
    latest: dict[tuple[str, int], Explanation] = {}
    for e in Explanation.objects.filter(
        model=model, item_id__in=list(truth), target_rank=0
    ).order_by("created_at", "pk"):
        latest[(e.method, e.item_id)] = e
    predictions = {
        p.item_id: p for p in Prediction.objects.filter(model=model, item_id__in=list(truth))
    }
    rows, gts, sals = [], [], []
    for (method, item_id), explanation in sorted(latest.items()):
        saliency = explanation_array_load(explanation)
        mask, annotators = truth[item_id]
        if saliency.shape != mask.shape:
            continue
        item = items[item_id]
        prediction = predictions.get(item_id)
        label = item.label_for(model)
        correct = (
            prediction.predicted_index == label
            if prediction is not None and label is not None
            else None
        )
        rows.append(
            {
                "method": method,
                "item": item.name,
                "item_id": item_id,
                "explanation_id": explanation.pk,
                "model_correct": correct,
                "ground_truth_source": source,
                "annotators": annotators,
            }
        )
        gts.append(mask)
        sals.append(saliency)
    if not rows:
        return pd.DataFrame()
    regions, binarization = binarize_std(np.stack(sals), k=k)
    scores = shared_interest(np.stack(gts), regions, binarization=binarization)
    frame = pd.DataFrame(rows)
    frame["iou"] = scores.iou_coverage
    frame["ground_truth_coverage"] = scores.ground_truth_coverage
    frame["saliency_coverage"] = scores.saliency_coverage
    known = frame["model_correct"].notna().to_numpy()
    # patterns need the model's correctness: rows without a known label get none
    correct = frame["model_correct"].fillna(False).astype(bool).to_numpy()
    patterns = shared_interest_patterns(scores, correct, high=high)
    frame["pattern"] = np.where(known, patterns.keys, "undefined")
    frame["undefined_reason"] = np.where(
        known, patterns.undefined_reason, "the item has no label the model knows"
    )
    names = {**PATTERNS, **NO_PATTERN}
    frame["pattern_name"] = frame["pattern"].map(lambda key: names[key].name)
    return frame
