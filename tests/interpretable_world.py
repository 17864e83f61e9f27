"""A small world of real, trained interpretable models (used by several test packages).

Three classes of 28 x 28 grey images that a tiny network separates after a few epochs:
"bar" (a bright horizontal bar), "pillar" (a bright vertical bar) and "block" (a bright
square in the lower right), on noise. 20 training and 6 test items per class. A ProtoPNet
(2 prototypes per class) and a concept-bottleneck model (3 hand-made concepts) are trained
through the platform's own training runs and registered, and explanation jobs over the test
split store predictions and explanations for both, and Grad-CAM for the ProtoPNet.
"""

from __future__ import annotations

import numpy as np
import torch
from django.core.files.base import ContentFile

from explanations.imageio import encode_png
from explanations.models import Dataset, Item
from explanations.services import explanation_job_create, explanation_job_run  # noqa: F401
from labeling.models import RunStatus
from labeling.services import training_run_create, training_run_execute

CLASSES = ["bar", "pillar", "block"]
ATTRIBUTES_CSV = "class,horizontal,vertical,corner\nbar,1,0,0\npillar,0,1,0\nblock,0,0,1\n"


def shape_image(label: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (28, 28) noise with the class's bright shape."""
    img = rng.integers(0, 60, size=(28, 28)).astype(np.uint8)
    jitter = int(rng.integers(-2, 3))
    if label == 0:
        img[12 + jitter : 16 + jitter, 4:24] = 230
    elif label == 1:
        img[4:24, 12 + jitter : 16 + jitter] = 230
    else:
        img[17 + jitter : 25 + jitter, 17:25] = 230
    return img


def shapes_dataset(name: str = "shapes", train: int = 20, test: int = 6) -> Dataset:
    dataset = Dataset.objects.create(name=name, class_names=CLASSES)
    rng = np.random.default_rng(0)
    n = 0
    for split, per_class in (("train", train), ("test", test)):
        for i in range(per_class * len(CLASSES)):
            label = i % len(CLASSES)
            pixels = np.repeat(shape_image(label, rng)[:, :, None], 3, axis=2)
            item = Item(
                dataset=dataset,
                name=f"{split}-{i:03d}",
                sha256=f"{n:064x}",
                width=28,
                height=28,
                label_index=label,
                label_name=CLASSES[label],
                split=split,
            )
            item.image.save(f"shape-{n}.png", ContentFile(encode_png(pixels)), save=False)
            item.save()
            n += 1
    return dataset


def train(dataset: Dataset, architecture: str, tmp_path, **config):
    """Train and register one interpretable model; returns the finished run."""
    torch.set_num_threads(1)
    attributes = None
    if architecture == "cbm":
        attributes = tmp_path / "attributes.csv"
        attributes.write_text(ATTRIBUTES_CSV)
        config = {"epochs": 6, "head_epochs": 2, "width": 4, "embedding_dim": 16, **config}
    else:
        config = {
            "joint_epochs": 6,
            "last_epochs": 3,
            "prototypes_per_class": 2,
            "width": 4,
            "prototype_dim": 8,
            "batch_size": 16,
            **config,
        }
    config.setdefault("batch_size", 16)
    run = training_run_create(
        dataset=dataset,
        config=config,
        enqueue=False,
        architecture=architecture,
        attributes=attributes,
    )
    run = training_run_execute(run_id=run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    return run


def explain(model, dataset, method: str, split: str = "test"):
    job = explanation_job_create(model=model, dataset=dataset, method=method, top_k=3, split=split)
    job = explanation_job_run(job_id=job.pk)
    assert job.status == "succeeded", job.error
    return job
