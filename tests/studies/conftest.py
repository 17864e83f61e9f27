"""A larger world for the study engine: 8 labelled photos (5 the model gets right, 3 wrong)
with hand-made predictions and maps for two methods, plus helpers to build studies from specs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.base import ContentFile

from explanations import rendering
from explanations.models import ClassifierModel, Dataset, Explanation, Item, Prediction
from studies.design import study_create
from tests.conftest import CLASS_NAMES, png_bytes

# name, true label, predicted ranking (top-5)
ENGINE_ITEMS = [
    ("r0", 0, [0, 1, 2, 3, 4]),
    ("r1", 1, [1, 0, 2, 3, 4]),
    ("r2", 2, [2, 3, 0, 1, 4]),
    ("r3", 3, [3, 2, 1, 0, 4]),
    ("r4", 5, [5, 4, 3, 2, 1]),
    ("w0", 4, [1, 2, 3, 0, 4]),  # truth outside the top-3
    ("w1", 0, [2, 0, 1, 3, 4]),  # truth second
    ("w2", 3, [5, 4, 0, 1, 3]),
]
METHODS = ("gradcam", "saliency", "integrated_gradients")  # the last one signed
SIZE = 16


@pytest.fixture
def engine_world(db):
    model = ClassifierModel.objects.create(
        name="engine-net",
        architecture="efficientnet-lite0",
        weights_path="/nonexistent",
        weights_sha256="1" * 64,
        class_names=CLASS_NAMES,
        input_size=SIZE,
        normalization_mean=[0, 0, 0],
        normalization_std=[1, 1, 1],
        target_layer="conv",
    )
    dataset = Dataset.objects.create(name="engine photos")
    rng = np.random.default_rng(1)
    for name, label, order in ENGINE_ITEMS:
        item = Item(
            dataset=dataset,
            name=name,
            sha256=name.ljust(64, "0"),
            width=SIZE,
            height=SIZE,
            label_index=label,
            label_name=CLASS_NAMES[label],
        )
        pixels = rng.integers(0, 255, size=(SIZE, SIZE, 3), dtype=np.uint8)
        item.image.save(f"{name}.png", ContentFile(png_bytes(pixels)), save=False)
        item.save()
        probs = [0.6, 0.2, 0.1, 0.06, 0.04]
        Prediction.objects.create(
            model=model,
            item=item,
            topk=[
                {"index": c, "name": CLASS_NAMES[c], "probability": p}
                for c, p in zip(order, probs, strict=True)
            ],
            predicted_index=order[0],
            probability=0.6,
        )
        for method in METHODS:
            for target in range(len(CLASS_NAMES)):
                saliency = np.zeros((SIZE, SIZE), dtype=np.float32)
                saliency[target : target + 3, 2:9] = float(target + 1)
                if method == "integrated_gradients":  # signed: negative evidence on the right
                    saliency[target : target + 3, 10:14] = -float(target + 1)
                buf = io.BytesIO()
                np.save(buf, saliency)
                e = Explanation(
                    model=model,
                    item=item,
                    method=method,
                    target_index=target,
                    target_rank=order.index(target) if target in order else None,
                    max_value=float(saliency.max()),
                )
                e.array.save(
                    f"{name}-{method}-{target}.npy", ContentFile(buf.getvalue()), save=False
                )
                e.overlay.save(
                    f"{name}-{method}-{target}.png",
                    ContentFile(rendering.to_png_bytes(np.zeros((SIZE, SIZE, 3), np.uint8))),
                    save=False,
                )
                e.save()
    return model, dataset


def spec_for(model, dataset, **overrides) -> dict:
    spec = {
        "version": 1,
        "title": "Engine study",
        "model": model.name,
        "dataset": dataset.name,
        "conditions": [{"name": "gradcam", "method": "gradcam"}],
        "tasks": [{"type": "agreement"}],
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def make_study(engine_world, researcher):
    model, dataset = engine_world

    def make(open_now: bool = True, **overrides):
        spec = spec_for(model, dataset)
        spec.update(overrides)
        return study_create(spec=spec, owner=researcher, open_now=open_now)

    return make
