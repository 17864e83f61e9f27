"""A small curation world: 3 classes, 30 items, a finished run with hand-made arrays.

Items 0-2 are labelled "ant" (0) but the out-of-sample probabilities put 0.9 on "bee" (1):
confident learning flags exactly those three. Items 10 and 20 share an embedding but carry
different labels ("bee" and "cat"): a near-duplicate pair.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile

from explanations.imageio import encode_png
from explanations.models import Dataset, Item
from labeling.models import RunStatus, TrainingRun
from labeling.services import label_version_initial

CLASSES = ["ant", "bee", "cat"]
N_ITEMS = 30


def _npy(array: np.ndarray) -> ContentFile:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return ContentFile(buf.getvalue())


@pytest.fixture
def curator(db):
    return get_user_model().objects.create_user("curator", password="pw-curator")


@pytest.fixture
def second_curator(db):
    return get_user_model().objects.create_user("curator2", password="pw-curator2")


@pytest.fixture
def small_dataset(db):
    dataset = Dataset.objects.create(name="tiny-fashion", class_names=CLASSES)
    rng = np.random.default_rng(0)
    for i in range(N_ITEMS):
        label = i // 10  # 0-9 ant, 10-19 bee, 20-29 cat
        pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        item = Item(
            dataset=dataset,
            name=f"train-{i:05d}",
            sha256=f"{i:064x}",
            width=8,
            height=8,
            label_index=label,
            label_name=CLASSES[label],
            split="train",
        )
        item.image.save(f"tiny-{i}.png", ContentFile(encode_png(pixels)), save=False)
        item.save()
    return dataset


def make_run(dataset, *, version=None) -> TrainingRun:
    """A succeeded run whose arrays are hand-made (no training)."""
    version = version or label_version_initial(dataset)
    items = list(dataset.items.order_by("pk"))
    n, k = len(items), len(CLASSES)
    labels = np.array([it.label_index for it in items])
    probs = np.full((n, k), 0.075)
    probs[np.arange(n), labels] = 0.85
    for i in range(3):  # ants that look like bees: self-confidence 0.02, 0.04, 0.06
        probs[i] = [0.02 * (i + 1), 0.9, 0.1 - 0.02 * (i + 1)]
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    emb[20] = emb[10]
    run = TrainingRun.objects.create(
        dataset=dataset,
        label_version=version,
        status=RunStatus.SUCCEEDED,
        num_items=n,
        fold_accuracy=[0.9, 0.9],
        test_accuracy=0.9,
    )
    run.item_ids.save("ids.npy", _npy(np.array([it.pk for it in items], dtype=np.int64)), False)
    run.pred_probs.save("probs.npy", _npy(probs.astype(np.float32)), False)
    run.embeddings.save("emb.npy", _npy(emb), False)
    run.save()
    return run


@pytest.fixture
def finished_run(small_dataset):
    return make_run(small_dataset)


@pytest.fixture
def project(finished_run, researcher, curator):
    from labeling.curation import curation_project_build, curation_project_create

    project = curation_project_create(
        run=finished_run, name="tiny", owner=researcher, curators=[curator], enqueue=False
    )
    return curation_project_build(project_id=project.pk)
