"""Model registration and loading: validate before saving, load safely, cache per process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from django.conf import settings
from torch import nn

from ..explainers.base import suggest_target_layer
from ..imageio import center_square_resize, image_decode
from ..modelio import (
    ARCHITECTURES,
    NORMALIZATION_PRESETS,
    CheckpointError,
    file_sha256,
    model_build,
)
from ..models import (
    ClassifierModel,
    Item,
)

logger = logging.getLogger(__name__)


class ModelRegistrationError(ValueError):
    """The model cannot be registered; nothing was saved."""


def model_register(
    *,
    name: str,
    architecture: str,
    weights_path: str | Path,
    class_names: Sequence[str],
    input_size: int = 224,
    normalization: str | dict[str, list[float]] = "imagenet",
    target_layer: str | None = None,
) -> ClassifierModel:
    """Validate a classifier end to end, then register it.

    Validation before anything is saved: the weights load safely and match the architecture,
    a forward pass on a dummy (1, 3, input_size, input_size) input gives one logit per class
    name, and the CAM target layer exists (suggested as the last convolution when omitted).

    Args:
        name: unique display name.
        architecture: a key of :data:`explanations.modelio.ARCHITECTURES`.
        weights_path: safetensors or ``torch.save``'d state dict (loaded with
            ``weights_only=True``).
        class_names: one name per output logit.
        input_size: square input side in pixels.
        normalization: a preset name of :data:`NORMALIZATION_PRESETS` or
            ``{"mean": [3 floats], "std": [3 floats]}`` in 0-255 pixel units.
        target_layer: dotted module name for CAM methods.

    Raises:
        ModelRegistrationError: any check failed; the message names the problem.
    """
    if ClassifierModel.objects.filter(name=name).exists():
        raise ModelRegistrationError(f"a model named {name!r} is already registered")
    if architecture not in ARCHITECTURES:
        raise ModelRegistrationError(
            f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}"
        )
    mean, std = _normalization_resolve(normalization)
    class_names = [str(c) for c in class_names]
    if not class_names:
        raise ModelRegistrationError("class_names is empty")
    try:
        net = model_build(architecture, weights_path, num_classes=len(class_names))
    except CheckpointError as exc:
        raise ModelRegistrationError(str(exc)) from None
    with torch.no_grad():
        logits = net(torch.zeros(1, 3, input_size, input_size))
    if logits.shape != (1, len(class_names)):
        raise ModelRegistrationError(
            f"a forward pass gave logits of shape {tuple(logits.shape)}, expected "
            f"(1, {len(class_names)}) for {len(class_names)} class names"
        )
    layer = target_layer or suggest_target_layer(net)
    if layer not in dict(net.named_modules()):
        raise ModelRegistrationError(f"target layer {layer!r} does not exist in the model")
    return ClassifierModel.objects.create(
        name=name,
        architecture=architecture,
        weights_path=str(Path(weights_path).resolve()),
        weights_sha256=file_sha256(weights_path),
        class_names=class_names,
        input_size=input_size,
        normalization_mean=mean,
        normalization_std=std,
        target_layer=layer,
    )


def _normalization_resolve(
    normalization: str | dict[str, list[float]],
) -> tuple[list[float], list[float]]:
    if isinstance(normalization, str):
        try:
            preset = NORMALIZATION_PRESETS[normalization]
        except KeyError:
            raise ModelRegistrationError(
                f"unknown normalisation preset {normalization!r}; "
                f"known: {sorted(NORMALIZATION_PRESETS)}"
            ) from None
        return list(preset["mean"]), list(preset["std"])
    mean, std = list(normalization.get("mean", [])), list(normalization.get("std", []))
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise ModelRegistrationError("normalisation needs 3 means and 3 positive stds")
    return [float(m) for m in mean], [float(s) for s in std]


_NET_CACHE: dict[tuple[int, str, str], nn.Module] = {}
_NET_CACHE_LOCK = threading.Lock()


def classifier_load(model: ClassifierModel, *, device: torch.device | None = None) -> nn.Module:
    """Return the eval-mode network for a registered model on ``device``, cached per process.

    Raises:
        CheckpointError: the weights changed on disk since registration (checksum differs)
            or no longer load.
    """
    device = device or torch.device("cpu")
    key = (model.pk, model.weights_sha256, str(device))
    with _NET_CACHE_LOCK:
        net = _NET_CACHE.get(key)
        if net is None:
            actual = file_sha256(model.weights_path)
            if actual != model.weights_sha256:
                raise CheckpointError(
                    f"{Path(model.weights_path).name}: checksum changed since registration "
                    f"({actual[:12]} != {model.weights_sha256[:12]})"
                )
            net = model_build(model.architecture, model.weights_path, model.num_classes).to(device)
            if settings.STUDYPLATFORM_TORCH_THREADS:
                torch.set_num_threads(settings.STUDYPLATFORM_TORCH_THREADS)
            _NET_CACHE[key] = net
    return net


def item_model_view(*, item: Item, model: ClassifierModel) -> np.ndarray:
    """The photo as the model sees it: (S, S, 3) uint8, S = ``model.input_size``.

    Raises:
        ImageDecodeError: the stored file cannot be decoded.
    """
    with item.image.open("rb") as fh:
        data = fh.read()
    decoded = image_decode(data, name=item.name, max_pixels=settings.STUDYPLATFORM_MAX_IMAGE_PIXELS)
    return center_square_resize(decoded.pixels, model.input_size)
