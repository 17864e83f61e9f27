"""The shared cast and worlds of the test suite.

Personas (healthchecks' alice/bob/charlie): ``researcher`` owns the studies, ``co_researcher``
is staff but owns nothing, ``outsider`` is a logged-in user with no rights here.
``hive_study`` is a small but complete study built from hand-made predictions and maps (no
network, no real model), so participant tests run in milliseconds.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from PIL import Image

from explanations import rendering
from explanations.models import ClassifierModel, Dataset, Explanation, Item, Prediction
from studies.services import study_create_hive

CLASS_NAMES = ["alpaca", "bison", "camel", "dingo", "eland", "ferret"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Rate-limit counters must not leak from one test into the next."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def researcher(db):
    return get_user_model().objects.create_user(
        "researcher", password="pw-researcher", is_staff=True
    )


@pytest.fixture
def co_researcher(db):
    return get_user_model().objects.create_user("co", password="pw-co", is_staff=True)


@pytest.fixture
def outsider(db):
    return get_user_model().objects.create_user("outsider", password="pw-outsider")


def png_bytes(pixels: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _topk(order: list[int]) -> list[dict]:
    probs = [0.5, 0.2, 0.15, 0.1, 0.05]
    return [
        {"index": c, "name": CLASS_NAMES[c], "probability": p}
        for c, p in zip(order, probs, strict=False)
    ]


@pytest.fixture
def tiny_world(db):
    """A 6-class model row, 3 photos and hand-made predictions and Grad-CAM-like maps.

    * ``right``: label alpaca (0), predicted alpaca: the model is right.
    * ``wrong``: label eland (4), predicted bison (1); eland is outside the top-3.
    * ``unlabelled``: no label; must not become a trial.
    """
    model = ClassifierModel.objects.create(
        name="tiny",
        architecture="efficientnet-lite0",
        weights_path="/nonexistent",
        weights_sha256="0" * 64,
        class_names=CLASS_NAMES,
        input_size=16,
        normalization_mean=[0, 0, 0],
        normalization_std=[1, 1, 1],
        target_layer="conv",
    )
    dataset = Dataset.objects.create(name="tiny photos")
    rng = np.random.default_rng(0)
    specs = [
        ("right", 0, [0, 1, 2, 3, 5]),
        ("wrong", 4, [1, 2, 3, 0, 4]),
        ("unlabelled", None, [2, 1, 0, 3, 4]),
    ]
    for name, label, order in specs:
        pixels = rng.integers(0, 255, size=(16, 20, 3), dtype=np.uint8)
        item = Item(
            dataset=dataset,
            name=name,
            sha256=name.ljust(64, "0"),
            width=20,
            height=16,
            label_index=label,
            label_name=CLASS_NAMES[label] if label is not None else "",
        )
        item.image.save(f"{name}.png", ContentFile(png_bytes(pixels)), save=False)
        item.save()
        Prediction.objects.create(
            model=model, item=item, topk=_topk(order), predicted_index=order[0], probability=0.5
        )
        targets = order[:4] + ([label] if label is not None and label not in order[:4] else [])
        for rank, target in enumerate(targets):
            saliency = np.zeros((16, 16), dtype=np.float32)
            saliency[target : target + 4, :] = float(target + 1)
            buf = io.BytesIO()
            np.save(buf, saliency)
            e = Explanation(
                model=model,
                item=item,
                method="gradcam",
                target_index=target,
                target_rank=rank if target in order else None,
                max_value=float(saliency.max()),
            )
            e.array.save(f"{name}-{target}.npy", ContentFile(buf.getvalue()), save=False)
            e.overlay.save(
                f"{name}-{target}.png",
                ContentFile(rendering.to_png_bytes(np.zeros((16, 16, 3), dtype=np.uint8))),
                save=False,
            )
            e.save()
    return model, dataset


@pytest.fixture
def hive_study(tiny_world, researcher):
    model, dataset = tiny_world
    return study_create_hive(
        title="Tiny HIVE", owner=researcher, model=model, dataset=dataset, seed=1
    )
