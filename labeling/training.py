"""A small CNN trained deterministically on CPU, with K-fold cross-fitting (no Django).

Confident learning needs, for every item, class probabilities from a model that did **not**
train on that item (Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 70 (2021), Sec. 4: out-of-sample predicted probabilities by K-fold
cross-validation). :func:`cross_fit` splits the items into K stratified folds, trains one
:class:`SmallCNN` per fold on the other K-1 folds and predicts the held-out fold; then it trains
a final model on all items, whose penultimate features (embeddings) and Grad-CAM maps the
curation pages show, as in the classifier-guided label correction of Bäuerle, Neumann &
Ropinski, "Classifier-Guided Visual Correction of Noisy Labels for Image Classification Tasks",
CGF 39(3) (2020) (embedding projection, near duplicates, most-likely-wrong ordering).

Images are uint8 ``(N, S, S)`` greyscale or ``(N, S, S, 3)`` RGB. Preprocessing, the same
everywhere (training, :func:`predict`, and the platform's ``ClassifierModel``, which computes
``(pixel - mean) / std`` per channel in 0-255 units)::

    x = (pixel - 255 * mean) / (255 * std)  ==  (pixel / 255 - mean) / std

with one scalar ``mean`` / ``std`` (0-1 units) for all three channels (Fashion-MNIST's training
set statistics by default), so averaging normalised RGB channels equals normalising the grey
value. Register a trained model with :attr:`TrainConfig.normalization_mean_255` /
:attr:`TrainConfig.normalization_std_255`, factory ``labeling.training.small_cnn``, target layer
:attr:`SmallCNN.target_layer`, and the safetensors file of :func:`state_dict_save`.

Determinism: every model is trained under ``torch.use_deterministic_algorithms(True)`` (the
previous setting is restored afterwards), with ``torch.manual_seed(seed)`` inside
``torch.random.fork_rng`` (the caller's global RNG state is left as it was) and batches drawn
from ``np.random.default_rng(seed)``. The same data, config, torch build and thread count give
bit-identical weights.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "CrossFitResult",
    "SmallCNN",
    "TrainConfig",
    "WeightsError",
    "cross_fit",
    "model_load",
    "predict",
    "small_cnn",
    "state_dict_save",
    "train_model",
]

#: Mean and standard deviation of the Fashion-MNIST training pixels, in 0-1 units
#: (measured: 0.28604, 0.35302; 72.94 and 90.02 in 0-255 units).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530

#: ``progress(done_steps, total_steps, message)``; done_steps counts optimiser steps.
Progress = Callable[[int, int, str], None]


class WeightsError(ValueError):
    """A weights file cannot be loaded: missing, not safetensors (e.g. a pickle), or a state
    dict that does not match the architecture."""


def input_channels(x: torch.Tensor, grey: bool) -> torch.Tensor:
    """The channels a network's first convolution sees.

    Args:
        x: float32 ``(N, 3, S, S)`` normalised RGB, or ``(N, 1, S, S)`` when ``grey``.
        grey: True: the fixed mean of the 3 channels, ``(N, 1, S, S)``; False: ``x`` as is.

    Raises:
        ValueError: not 4-D, or a channel count the setting does not accept.
    """
    if x.ndim != 4:
        raise ValueError(f"input must be (N, C, S, S), got shape {tuple(x.shape)}")
    if grey:
        if x.shape[1] == 3:
            return x.mean(dim=1, keepdim=True)
        if x.shape[1] == 1:
            return x
    elif x.shape[1] == 3:
        return x
    want = "1 or 3" if grey else "3"
    raise ValueError(f"input must have {want} channels, got {x.shape[1]}")


def conv_blocks(in_channels: int, width: int) -> list[tuple[str, nn.Module]]:
    """The two conv blocks of :class:`SmallCNN` (and the first two of ProtoPNet's backbone), as
    named layers: ``conv1`` (``in_channels`` -> ``width``, 3x3, padding 1), ``bn1``,
    ``relu1``, ``pool1`` (2x2 max), then ``conv2`` (-> ``2 * width``), ``bn2``, ``relu2``,
    ``pool2``: an ``(N, in_channels, S, S)`` input becomes ``(N, 2 * width, S // 4, S // 4)``."""
    return [
        ("conv1", nn.Conv2d(in_channels, width, 3, padding=1)),
        ("bn1", nn.BatchNorm2d(width)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(width, 2 * width, 3, padding=1)),
        ("bn2", nn.BatchNorm2d(2 * width)),
        ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
    ]


class SmallCNN(nn.Module):
    """Two conv blocks and a hidden layer; ~0.2 M parameters at width 16, 10 classes.

    Layers (names are stable, the state dict does not depend on ``input_size``)::

        [grey: mean of the 3 input channels -> 1 channel]
        features.conv1  Conv2d(C, w, 3, pad 1) -> bn1 -> relu1 -> pool1 (max 2x2)
        features.conv2  Conv2d(w, 2w, 3, pad 1) -> bn2 -> relu2 -> pool2 (max 2x2)
        pool            AdaptiveAvgPool2d(7)   (identity for 28 x 28 inputs)
        embedding.fc    Linear(2w * 49, embedding_dim) -> ReLU      = embed(x)
        classifier      Linear(embedding_dim, num_classes)          = forward(x), logits

    ``features.conv2`` is the last convolution (:attr:`target_layer`, for Grad-CAM).

    Args:
        num_classes: K >= 2.
        input_size: nominal side S of the square inputs (28 for Fashion-MNIST); recorded for
            registration, the network itself accepts any side >= 4.
        grey: the first layer sees one channel, the fixed (unlearned) mean of the 3 RGB
            channels; for greyscale data shown as RGB this loses nothing and makes conv1 3x
            cheaper. ``False``: conv1 sees the 3 channels.
        width: channels of conv1 (conv2 has twice as many).
        embedding_dim: D, size of the penultimate features.
        mean, std: the normalisation the model was trained with (0-1 units, see the module
            docstring); used by :func:`predict`, not stored in the state dict.
    """

    #: Dotted name of the last convolution, for Grad-CAM hooks.
    target_layer = "features.conv2"

    def __init__(
        self,
        num_classes: int,
        input_size: int = 28,
        grey: bool = True,
        width: int = 16,
        *,
        embedding_dim: int = 128,
        mean: float = FASHION_MNIST_MEAN,
        std: float = FASHION_MNIST_STD,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if width < 1 or embedding_dim < 1 or input_size < 4:
            raise ValueError("width and embedding_dim must be >= 1 and input_size >= 4")
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.grey = bool(grey)
        self.width = int(width)
        self.embedding_dim = int(embedding_dim)
        self.mean = float(mean)
        self.std = float(std)
        self.features = nn.Sequential(OrderedDict(conv_blocks(1 if grey else 3, width)))
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.embedding = nn.Sequential(
            OrderedDict(
                [
                    ("fc", nn.Linear(2 * width * 49, embedding_dim)),
                    ("relu", nn.ReLU()),
                ]
            )
        )
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        return input_channels(x, self.grey)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, float32 ``(N, D)`` (>= 0, after ReLU).

        Args:
            x: float32 ``(N, 3, S, S)`` normalised RGB (``(N, 1, S, S)`` grey also accepted
                when ``grey``).
        """
        h = self.features(self._channels(x))
        if h.shape[-2:] != (7, 7):  # 28 x 28 inputs skip the (identity) adaptive pooling
            h = self.pool(h)
        return self.embedding(torch.flatten(h, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, float32 ``(N, K)``; same input as :meth:`embed`."""
        return self.classifier(self.embed(x))


def small_cnn(num_classes: int, input_size: int = 28, grey: bool = True) -> SmallCNN:
    """Factory registered as ``labeling.training.small_cnn``: an untrained :class:`SmallCNN`
    with the default width and embedding size (those of :class:`TrainConfig`'s defaults)."""
    return SmallCNN(num_classes, input_size=input_size, grey=grey)


@dataclass
class TrainConfig:
    """Training hyper-parameters. The defaults were measured on Fashion-MNIST, 60,000 training
    images, 2 CPU cores, 2 torch threads (``benchmarks/label_training.py``,
    ``benchmarks/results/2026-11-30-label-training.json``): 3 folds x 3 epochs plus a final
    3-epoch model; held-out fold accuracies 91.0-91.5 %, final model 91.4 % on the 10,000 test
    images; the whole :func:`cross_fit` took 163 s on the idle machine (each fold ~35 s, final
    model 49 s, embeddings 6 s).

    Attributes:
        epochs: epochs of the final model (and of the fold models unless ``fold_epochs``).
        fold_epochs: epochs of each fold model in :func:`cross_fit`; ``None`` = ``epochs``.
        batch_size: items per optimiser step.
        lr: peak learning rate of AdamW under a one-cycle schedule (Smith & Topin 2019):
            cosine warm-up from lr / 25 over the first 25 % of the steps, then cosine
            annealing to lr / 1e4.
        weight_decay: AdamW's decoupled weight decay.
        seed: seeds torch (initialisation), the batch order and the fold split.
        folds: K of the K-fold cross-fitting (>= 2).
        width: channels of the first convolution.
        embedding_dim: size D of the embeddings.
        grey: see :class:`SmallCNN`.
        input_size: side S the images must have (square).
        mean, std: normalisation, 0-1 units, one value for all channels.
    """

    epochs: int = 3
    fold_epochs: int | None = None
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    folds: int = 3
    width: int = 16
    embedding_dim: int = 128
    grey: bool = True
    input_size: int = 28
    mean: float = FASHION_MNIST_MEAN
    std: float = FASHION_MNIST_STD

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "width", "embedding_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.fold_epochs is not None and self.fold_epochs < 1:
            raise ValueError(f"TrainConfig.fold_epochs must be >= 1, got {self.fold_epochs}")
        if self.input_size < 4:
            raise ValueError(f"TrainConfig.input_size must be >= 4, got {self.input_size}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.std > 0):
            raise ValueError("TrainConfig needs lr > 0, weight_decay >= 0 and std > 0")
        if not math.isfinite(self.mean):
            raise ValueError("TrainConfig.mean must be finite")

    @property
    def normalization_mean_255(self) -> list[float]:
        """Per-channel mean in 0-255 units, for ``ClassifierModel.normalization_mean``."""
        return [round(self.mean * 255.0, 6)] * 3

    @property
    def normalization_std_255(self) -> list[float]:
        """Per-channel std in 0-255 units, for ``ClassifierModel.normalization_std``."""
        return [round(self.std * 255.0, 6)] * 3

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Deterministic algorithms and a seeded torch RNG; restores both afterwards."""
    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous, warn_only=warn_only)


def _images_check(images, name: str = "images") -> np.ndarray:
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 pixels, got {arr.dtype}")
    if not (arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] == 3)):
        raise ValueError(f"{name} must be (N, S, S) or (N, S, S, 3), got shape {arr.shape}")
    if arr.shape[1] != arr.shape[2]:
        raise ValueError(f"{name} must be square, got {arr.shape[1]} x {arr.shape[2]}")
    return arr


def _to_input(arr: np.ndarray, grey: bool, mean: float, std: float) -> torch.Tensor:
    """uint8 ``(N, S, S[, 3])`` -> normalised float32 ``(N, C, S, S)``, C = 1 if grey else 3."""
    if grey:
        x = arr.mean(axis=-1, dtype=np.float32) if arr.ndim == 4 else arr.astype(np.float32)
        x = x[:, None]
    elif arr.ndim == 4:
        x = arr.transpose(0, 3, 1, 2).astype(np.float32)
    else:
        x = np.repeat(arr[:, None].astype(np.float32), 3, axis=1)
    x -= np.float32(mean * 255.0)
    x /= np.float32(std * 255.0)
    return torch.from_numpy(np.ascontiguousarray(x))


def _labels_check(labels, n: int, num_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"labels must have shape ({n},) to match the images, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {y.dtype}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got values {y.min()}..{y.max()}")
    return y.astype(np.int64)


def _steps(n: int, epochs: int, batch_size: int) -> int:
    return epochs * math.ceil(n / batch_size)


def _one_cycle(step: int, total: int) -> float:
    """Learning-rate factor at ``step`` of ``total``: cosine rise from 1/25 to 1 over the
    first quarter, then cosine decay to 1e-4 (the shape of Smith & Topin's one-cycle policy,
    without momentum cycling; well defined for any ``total`` >= 1)."""
    warm = max(1, round(0.25 * total))
    if step < warm:
        start, end, t = 1 / 25, 1.0, step / warm
    else:
        start, end, t = 1.0, 1e-4, min(1.0, (step - warm) / max(1, total - warm))
    return end + (start - end) * (1 + math.cos(math.pi * t)) / 2


def _train(
    arr: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    config: TrainConfig,
    epochs: int,
    progress: Progress | None,
    step_offset: int,
    total_steps: int,
    label: str,
) -> SmallCNN:
    x = _to_input(arr, config.grey, config.mean, config.std)
    targets = torch.from_numpy(y)
    n = len(y)
    steps_per_epoch = math.ceil(n / config.batch_size)
    report_every = max(1, total_steps // 200)
    with _deterministic(config.seed):
        model = SmallCNN(
            num_classes,
            input_size=config.input_size,
            grey=config.grey,
            width=config.width,
            embedding_dim=config.embedding_dim,
            mean=config.mean,
            std=config.std,
        )
        optimiser = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, partial(_one_cycle, total=epochs * steps_per_epoch)
        )
        rng = np.random.default_rng(config.seed)
        model.train()
        done = step_offset
        for epoch in range(epochs):
            order = torch.from_numpy(rng.permutation(n))
            for start in range(0, n, config.batch_size):
                batch = order[start : start + config.batch_size]
                optimiser.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model(x[batch]), targets[batch])
                loss.backward()
                optimiser.step()
                schedule.step()
                done += 1
                if progress is not None and (
                    done % report_every == 0 or start + config.batch_size >= n
                ):
                    progress(done, total_steps, f"{label}: epoch {epoch + 1}/{epochs}")
        model.eval()
    return model


def train_model(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    config: TrainConfig | None = None,
    *,
    progress: Progress | None = None,
) -> SmallCNN:
    """Train a :class:`SmallCNN` on all given items, deterministically, on CPU.

    Args:
        images: uint8 ``(N, S, S)`` grey or ``(N, S, S, 3)`` RGB, ``S == config.input_size``.
        labels: integers ``(N,)`` in ``[0, num_classes)``.
        num_classes: K >= 2.
        config: hyper-parameters (default :class:`TrainConfig()`); ``config.epochs`` epochs.
        progress: optional ``progress(done_steps, total_steps, message)``, called about 200
            times in all and at the end of each epoch.

    Returns:
        The trained model, in eval mode, with ``mean`` / ``std`` set from the config.

    Raises:
        ValueError: malformed images or labels (see :func:`cross_fit`), N == 0, K < 2.
    """
    config = config or TrainConfig()
    arr, y = _inputs_check(images, labels, num_classes, config)
    total = _steps(len(y), config.epochs, config.batch_size)
    return _train(arr, y, num_classes, config, config.epochs, progress, 0, total, "training")


def _inputs_check(
    images, labels, num_classes: int, config: TrainConfig
) -> tuple[np.ndarray, np.ndarray]:
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    arr = _images_check(images)
    if len(arr) == 0:
        raise ValueError("no items to train on (N == 0)")
    if arr.shape[1] != config.input_size:
        raise ValueError(
            f"images are {arr.shape[1]} x {arr.shape[2]} but config.input_size is "
            f"{config.input_size}"
        )
    return arr, _labels_check(labels, len(arr), num_classes)


@torch.no_grad()
def predict(
    model: SmallCNN, images: np.ndarray, *, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and embeddings, in eval mode without gradients.

    Args:
        model: a :class:`SmallCNN` (its ``grey``, ``mean`` and ``std`` decide preprocessing).
        images: uint8 ``(N, S, S)`` or ``(N, S, S, 3)``.
        batch_size: items per forward pass (memory only; results do not depend on it beyond
            float rounding).

    Returns:
        ``(probs, embeddings)``: softmax probabilities float32 ``(N, K)`` in [0, 1], rows
        summing to 1 (within float32 rounding), and embeddings float32 ``(N, D)``.

    Raises:
        ValueError: images not uint8 ``(N, S, S[, 3])``.
    """
    arr = _images_check(images)
    was_training = model.training
    model.eval()
    probs, embeddings = [], []
    try:
        for start in range(0, len(arr), batch_size):
            x = _to_input(arr[start : start + batch_size], model.grey, model.mean, model.std)
            e = model.embed(x)
            probs.append(torch.softmax(model.classifier(e), dim=1).numpy())
            embeddings.append(e.numpy())
    finally:
        model.train(was_training)
    if not probs:
        return (
            np.zeros((0, model.num_classes), np.float32),
            np.zeros((0, model.embedding_dim), np.float32),
        )
    return (
        np.concatenate(probs).astype(np.float32, copy=False),
        np.concatenate(embeddings).astype(np.float32, copy=False),
    )


@dataclass
class CrossFitResult:
    """Output of :func:`cross_fit` (N items, K classes, D embedding size).

    Attributes:
        pred_probs: float32 ``(N, K)``, row i from the fold model that did not train on i.
        fold: int64 ``(N,)`` in ``[0, folds)``, the fold that held item i out.
        fold_accuracy: per fold, the held-out accuracy of its model against the given labels.
        model: the final :class:`SmallCNN`, trained on all N items (eval mode).
        embeddings: float32 ``(N, D)`` from the final model (in-sample).
        seconds: wall time of the whole call.
        phase_seconds: wall time per phase: ``"fold 1"`` .. ``"fold K"`` (train + predict),
            ``"final"`` (train), ``"embed"`` (final model's embeddings).
    """

    pred_probs: np.ndarray
    fold: np.ndarray
    fold_accuracy: list[float]
    model: SmallCNN
    embeddings: np.ndarray
    seconds: float
    phase_seconds: dict[str, float] = field(default_factory=dict)


def cross_fit(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    config: TrainConfig | None = None,
    *,
    progress: Progress | None = None,
) -> CrossFitResult:
    """Out-of-sample predicted probabilities by K-fold cross-fitting, plus a final model.

    Northcutt et al. (JAIR 2021), Sec. 4: confident learning estimates label errors from
    probabilities that each item gets from a model not trained on it. The items are split with
    ``sklearn.model_selection.StratifiedKFold(K, shuffle=True, random_state=config.seed)``;
    for each fold a model is trained for ``config.fold_epochs`` (default ``config.epochs``)
    epochs on the other folds and predicts the held-out fold. A final model is then trained for
    ``config.epochs`` epochs on all items and embeds them (for the curation views of Bäuerle
    et al., CGF 2020). Every model uses ``config.seed``.

    Args:
        images: uint8 ``(N, S, S)`` grey or ``(N, S, S, 3)`` RGB, ``S == config.input_size``.
        labels: integers ``(N,)`` in ``[0, num_classes)`` (the given, possibly noisy labels).
        num_classes: K >= 2; classes without items are allowed (their probabilities are
            still predicted).
        config: hyper-parameters, ``config.folds`` >= 2.
        progress: optional ``progress(done_steps, total_steps, message)`` over all K + 1
            trainings.

    Returns:
        :class:`CrossFitResult`.

    Raises:
        ValueError, before any training: N == 0; images not uint8 ``(N, S, S[, 3])`` or not
            ``config.input_size`` wide; labels not integers of shape ``(N,)`` or outside
            ``[0, num_classes)``; folds < 2; a class that occurs fewer than ``folds`` times.
    """
    config = config or TrainConfig()
    if config.folds < 2:
        raise ValueError(f"config.folds must be >= 2, got {config.folds}")
    arr, y = _inputs_check(images, labels, num_classes, config)
    counts = np.bincount(y, minlength=num_classes)
    rare = [(c, int(k)) for c, k in enumerate(counts) if 0 < k < config.folds]
    if rare:
        listed = ", ".join(f"class {c}: {k}" for c, k in rare[:10])
        raise ValueError(
            f"every class needs at least folds={config.folds} items for stratified "
            f"cross-fitting; too few: {listed}"
        )
    from sklearn.model_selection import StratifiedKFold

    started = time.perf_counter()
    n = len(y)
    splitter = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    splits = list(splitter.split(np.zeros(n), y))
    fold_epochs = config.fold_epochs or config.epochs
    total = sum(_steps(len(tr), fold_epochs, config.batch_size) for tr, _ in splits)
    total += _steps(n, config.epochs, config.batch_size)

    pred_probs = np.zeros((n, num_classes), np.float32)
    fold = np.full(n, -1, np.int64)
    fold_accuracy: list[float] = []
    phase: dict[str, float] = {}
    offset = 0
    for k, (train_idx, held_idx) in enumerate(splits):
        t0 = time.perf_counter()
        label = f"fold {k + 1}/{config.folds}"
        model_k = _train(
            arr[train_idx],
            y[train_idx],
            num_classes,
            config,
            fold_epochs,
            progress,
            offset,
            total,
            label,
        )
        offset += _steps(len(train_idx), fold_epochs, config.batch_size)
        probs, _ = predict(model_k, arr[held_idx])
        pred_probs[held_idx] = probs
        fold[held_idx] = k
        fold_accuracy.append(float((probs.argmax(1) == y[held_idx]).mean()))
        phase[f"fold {k + 1}"] = time.perf_counter() - t0
        del model_k

    t0 = time.perf_counter()
    model = _train(arr, y, num_classes, config, config.epochs, progress, offset, total, "final")
    phase["final"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, embeddings = predict(model, arr)
    phase["embed"] = time.perf_counter() - t0
    return CrossFitResult(
        pred_probs=pred_probs,
        fold=fold,
        fold_accuracy=fold_accuracy,
        model=model,
        embeddings=embeddings,
        seconds=time.perf_counter() - started,
        phase_seconds=phase,
    )


def state_dict_save(model: nn.Module, path: str | Path) -> Path:
    """Write the model's state dict to a safetensors file, atomically.

    The tensors go to a temporary file in the same folder, which then replaces ``path``
    (``os.replace``), so readers never see a half-written file. For a :class:`SmallCNN` the
    safetensors metadata records its constructor arguments (informational).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    metadata = {"format": "pt"}
    if isinstance(model, SmallCNN):
        metadata.update(
            factory="labeling.training.small_cnn",
            num_classes=str(model.num_classes),
            input_size=str(model.input_size),
            grey=str(model.grey),
            width=str(model.width),
            embedding_dim=str(model.embedding_dim),
            mean=repr(model.mean),
            std=repr(model.std),
        )
    return safetensors_write(model, path, metadata)


def safetensors_write(model: nn.Module, path: str | Path, metadata: dict[str, str]) -> Path:
    """Write ``model``'s state dict (CPU, contiguous) to ``path`` as safetensors, atomically:
    a temporary file in the same folder replaces ``path`` (``os.replace``), so readers never
    see a half-written file; ``metadata`` (str -> str) goes into the header.

    Raises:
        OSError: the folder is not writable (the temporary file is removed).
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def model_load(
    path: str | Path,
    num_classes: int,
    input_size: int = 28,
    grey: bool = True,
    *,
    width: int = 16,
    embedding_dim: int = 128,
    mean: float = FASHION_MNIST_MEAN,
    std: float = FASHION_MNIST_STD,
) -> SmallCNN:
    """Build a :class:`SmallCNN` and load a safetensors state dict into it, strictly.

    Only safetensors is read (``safetensors.torch.load_file``); nothing is ever unpickled, so
    a ``torch.save`` / pickle file is refused.

    Returns:
        The model in eval mode on CPU.

    Raises:
        WeightsError: missing file; not a safetensors file (a pickle, garbage, truncated);
            missing or unexpected keys or shape mismatches (wrong ``num_classes``, ``grey``,
            ``width`` or ``embedding_dim``).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path.name}: weights file not found")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path.name}: not a readable safetensors file ({exc}); pickled checkpoints "
            f"(torch.save) are never loaded, save with state_dict_save"
        ) from None
    model = SmallCNN(
        num_classes, input_size, grey, width, embedding_dim=embedding_dim, mean=mean, std=std
    )
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if own[k].shape != state[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}")
        if mismatched:
            parts.append(f"shape mismatches {mismatched[:3]}")
        raise WeightsError(
            f"{path.name}: state dict does not match SmallCNN(num_classes={num_classes}, "
            f"grey={grey}, width={width}, embedding_dim={embedding_dim}): " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)
    model.eval()
    return model
