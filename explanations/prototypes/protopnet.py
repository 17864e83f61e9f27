"""A small ProtoPNet, trained deterministically on CPU (no Django).

Chen, Li, Tao, Barnett, Rudin & Su, "This Looks Like That: Deep Learning for Interpretable Image
Recognition", NeurIPS 2019 (the paper; its reference code is ``cfchen-duke/ProtoPNet``). The
network classifies by comparing patches of the image with learned prototypes, each of which is,
after the "push", literally the latent vector of one patch of one training image of its class::

    x (N, C, S, S)
      -> features   conv1 3x3 (w) -> bn1 -> relu1 -> pool1 (max 2x2)
                    conv2 3x3 (2w) -> bn2 -> relu2 -> pool2 (max 2x2)
                    conv3 3x3 (4w) -> bn3 -> relu3                       (N, 4w, S/4, S/4)
      -> add_on     conv1 1x1 (D) -> relu -> conv2 1x1 (D) -> sigmoid     z: (N, D, H, W)
      -> distances  d[n, j, h, w] = ||z[n, :, h, w] - p_j||^2            (N, P, H, W)
      -> min over (h, w)                                                  (N, P)
      -> similarity log((d + 1) / (d + 1e-4))                             (N, P)
      -> last_layer Linear(P, K, bias=False)                              logits (N, K)

``features`` is :class:`labeling.training.SmallCNN`'s two conv blocks (same names, same input
handling: one grey channel, the mean of RGB) plus a third 3x3 conv block without pooling, which
widens each cell's receptive field from 10 to 18 pixels (7 x 7 cells at stride 4 on 28 x 28
inputs; chosen so that a prototype covers a garment part, not compared with the 10-pixel
variant). ``add_on`` is the paper's bottleneck: two 1x1 convolutions, ReLU then sigmoid, so
latent values lie in [0, 1] (Kaiming-normal initialisation, fan-out, zero bias, as the
reference code). There are
``prototypes_per_class`` (m) prototypes per class, P = K m, of shape ``(D, 1, 1)``, initialised
uniform in [0, 1); prototype j belongs to class ``j // m`` (the one-hot class identity matrix
:attr:`ProtoPNet.prototype_class_identity`, ``(P, K)``). The squared L2 distances use the
paper's expansion ``|z|^2 - 2 z.p + |p|^2`` (a 1x1 convolution), clamped at 0. The last layer
starts at 1 for a prototype's own class and -0.5 for the others (paper, Sec. 2.2), so every
logit is the class evidence ``sum_j similarity_j * weight[k, j]``, with no bias.

Training (:func:`train_protopnet`), the paper's three stages:

1. **warm** (``warm_epochs``, default 0: the paper warms add-on layers and prototypes on an
   ImageNet-pretrained backbone; ours starts from scratch, so a frozen random backbone buys
   nothing) and **joint** epochs (``joint_epochs``): backbone, add-on layers and prototypes
   with AdamW under :mod:`labeling.training`'s one-cycle schedule, last layer fixed, loss
   ``CE + lambda_clst * Clst - lambda_sep * Sep`` (paper Sec. 2.2, lambda_clst = 0.8 and
   lambda_sep = 0.08): Clst is the batch mean of each image's smallest distance to a prototype
   of its class, Sep the mean of its smallest distance to a prototype of another class;
2. **push** (:func:`push_prototypes`, paper Sec. 2.2 "projection"): each prototype is replaced
   by the latent vector of the nearest patch of a training image *of its own class*
   (first occurrence on ties); the image index and cell ``(h, w)`` are recorded in the
   :class:`PushRecord` and in the model's ``prototype_source`` buffer. Afterwards the
   prototype's distance to that patch is 0 (up to float32 rounding of the expansion, ~1e-6);
3. **last layer** (:func:`train_last_layer`): Adam on the last layer only, loss
   ``CE + lambda_l1 * sum |w[k, j]|`` over the connections to prototypes of *other* classes
   (lambda_l1 = 1e-4, paper). Everything else is frozen and in eval mode, so the similarities
   of the training images are computed once and the epochs run on them (identical to
   re-running the frozen network, much faster).

The paper pushes every 10 epochs and alternates with last-layer optimisation; with few epochs
here there is a single push at the end. Preprocessing, determinism (torch seeded inside
``fork_rng``, deterministic algorithms, batches drawn from ``np.random.default_rng(seed)``) and
the progress callback are those of :mod:`labeling.training`. Weights are saved as safetensors
with the constructor arguments in the metadata (:func:`protopnet_save`,
:func:`protopnet_load`); pickles are never read.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explanations.prototypes.posthoc import ReceptiveField, _cell_box, receptive_field
from labeling.training import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    Progress,
    WeightsError,
    _deterministic,
    _images_check,
    _labels_check,
    _one_cycle,
    _steps,
    _to_input,
    conv_blocks,
    input_channels,
    safetensors_write,
)

__all__ = [
    "SIMILARITY_EPSILON",
    "ProtoPNet",
    "ProtoPNetConfig",
    "PrototypeContribution",
    "PrototypeExplanation",
    "PushRecord",
    "build_protopnet",
    "explain",
    "protopnet_load",
    "protopnet_predict",
    "protopnet_save",
    "push_prototypes",
    "train_joint",
    "train_last_layer",
    "train_protopnet",
]

#: The epsilon of the similarity ``log((d + 1) / (d + eps))``; at d = 0 it is log(1e4) = 9.21.
SIMILARITY_EPSILON = 1e-4

_ARCHITECTURE = "explanations.prototypes.protopnet.ProtoPNet"


def similarity(distances: torch.Tensor) -> torch.Tensor:
    """``log((d + 1) / (d + 1e-4))``, decreasing in d >= 0 (paper, Sec. 2.1)."""
    return torch.log((distances + 1.0) / (distances + SIMILARITY_EPSILON))


class ProtoPNet(nn.Module):
    """ProtoPNet on a small conv backbone (module docstring for the layers).

    Args:
        num_classes: K >= 2.
        prototypes_per_class: m >= 1 (P = K m prototypes).
        input_size: nominal side S (28); recorded, any side >= 4 is accepted.
        grey: as :class:`labeling.training.SmallCNN`: conv1 sees the mean of the RGB channels.
        width: channels of conv1 (conv2 2w, conv3 4w).
        prototype_dim: D, channels of the latent space and of each prototype.
        mean, std: the training normalisation (0-1 units), used by :func:`protopnet_predict`
            and :func:`explain`; not in the state dict.

    Buffers: ``prototype_class_identity`` float32 ``(P, K)`` one-hot; ``prototype_source``
    int64 ``(P, 3)``, ``(training index, h, w)`` of each pushed prototype, -1 before the push.
    """

    #: Dotted name of the latent layer (z), for hooks and receptive fields.
    target_layer = "add_on"

    def __init__(
        self,
        num_classes: int,
        prototypes_per_class: int = 5,
        *,
        input_size: int = 28,
        grey: bool = True,
        width: int = 16,
        prototype_dim: int = 32,
        mean: float = FASHION_MNIST_MEAN,
        std: float = FASHION_MNIST_STD,
    ) -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if int(prototypes_per_class) < 1:
            raise ValueError(f"prototypes_per_class must be >= 1, got {prototypes_per_class}")
        if int(width) < 1 or int(prototype_dim) < 1 or int(input_size) < 4:
            raise ValueError("width and prototype_dim must be >= 1 and input_size >= 4")
        if not (math.isfinite(mean) and std > 0):
            raise ValueError("mean must be finite and std > 0")
        self.num_classes = int(num_classes)
        self.prototypes_per_class = int(prototypes_per_class)
        self.input_size = int(input_size)
        self.grey = bool(grey)
        self.width = int(width)
        self.prototype_dim = int(prototype_dim)
        self.mean = float(mean)
        self.std = float(std)
        w, d = self.width, self.prototype_dim
        self.features = nn.Sequential(
            OrderedDict(
                [
                    *conv_blocks(1 if grey else 3, w),
                    ("conv3", nn.Conv2d(2 * w, 4 * w, 3, padding=1)),
                    ("bn3", nn.BatchNorm2d(4 * w)),
                    ("relu3", nn.ReLU()),
                ]
            )
        )
        self.add_on = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(4 * w, d, 1)),
                    ("relu", nn.ReLU()),
                    ("conv2", nn.Conv2d(d, d, 1)),
                    ("sigmoid", nn.Sigmoid()),
                ]
            )
        )
        for conv in (self.add_on.conv1, self.add_on.conv2):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        p = self.num_classes * self.prototypes_per_class
        self.prototype_vectors = nn.Parameter(torch.rand(p, d, 1, 1))
        identity = torch.zeros(p, self.num_classes)
        identity[torch.arange(p), torch.arange(p) // self.prototypes_per_class] = 1.0
        self.register_buffer("prototype_class_identity", identity)
        self.register_buffer("prototype_source", torch.full((p, 3), -1, dtype=torch.int64))
        self.last_layer = nn.Linear(p, self.num_classes, bias=False)
        self.last_layer_reset()

    # -- constructor arguments, for the safetensors metadata
    def init_kwargs(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "prototypes_per_class": self.prototypes_per_class,
            "input_size": self.input_size,
            "grey": self.grey,
            "width": self.width,
            "prototype_dim": self.prototype_dim,
            "mean": self.mean,
            "std": self.std,
        }

    @property
    def num_prototypes(self) -> int:
        return int(self.prototype_vectors.shape[0])

    @property
    def prototype_class(self) -> torch.Tensor:
        """int64 ``(P,)``: the class of each prototype (``j // m``)."""
        return self.prototype_class_identity.argmax(dim=1)

    @torch.no_grad()
    def last_layer_reset(self, incorrect: float = -0.5) -> None:
        """Paper initialisation: 1 for a prototype's own class, ``incorrect`` otherwise."""
        positive = self.prototype_class_identity.t()  # (K, P)
        self.last_layer.weight.copy_(positive + incorrect * (1.0 - positive))

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        return input_channels(x, self.grey)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """z = add_on(features(x)), float32 ``(N, D, H, W)`` in [0, 1]."""
        return self.add_on(self.features(self._channels(x)))

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared L2 distance of every latent cell to every prototype, ``(N, P, H, W)``."""
        p = self.prototype_vectors
        z2 = (z * z).sum(dim=1, keepdim=True)
        zp = F.conv2d(z, p)
        p2 = (p * p).sum(dim=(1, 2, 3)).view(1, -1, 1, 1)
        return F.relu(z2 - 2.0 * zp + p2)

    def forward_details(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``logits`` (N, K), ``similarities`` (N, P), ``min_distances`` (N, P) and
        ``distance_maps`` (N, P, H, W) of one forward pass."""
        maps = self.distances(self.latent(x))
        min_distances = maps.flatten(2).min(dim=2).values
        sims = similarity(min_distances)
        return {
            "logits": self.last_layer(sims),
            "similarities": sims,
            "min_distances": min_distances,
            "distance_maps": maps,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, float32 ``(N, K)``."""
        return self.forward_details(x)["logits"]


@dataclass
class ProtoPNetConfig:
    """Hyper-parameters of :func:`train_protopnet` (the loss weights are the paper's).

    Chosen on Fashion-MNIST with 1 torch thread on a shared 2-core machine: on the first 10,000
    training images, 1 joint epoch, accuracy on the first 3,000 test images after the push and 20
    last-layer epochs, D = 16 / 32 / 64 gave 71 / 68 / 62 % at lr 3e-3 and D = 32 74 % at lr 1e-2
    (D = 16 was not tried further). On all 60,000 images with D = 32 and lr 1e-2 (10,000 test
    images): 3 joint epochs 89.4 %, after the push 87.2 %, after 20 last-layer epochs 89.0 %
    (last_lr 1e-4, the paper's) or 89.4 % (last_lr 1e-3); 10 prototypes per class were no
    better than 5 after one epoch. ``benchmarks/protopnet.py`` measures the defaults.

    Attributes:
        warm_epochs: epochs with the backbone frozen (eval mode); add-on + prototypes train.
        joint_epochs: epochs training backbone, add-on and prototypes together.
        last_epochs: epochs of last-layer optimisation after the push (0 = skip).
        batch_size: items per optimiser step (all stages).
        lr: peak AdamW learning rate of the warm and joint stages (one-cycle schedule of
            :mod:`labeling.training`, per stage).
        weight_decay: AdamW weight decay of backbone and add-on (prototypes: none).
        last_lr: Adam learning rate of the last layer (paper: 1e-4).
        lambda_clst, lambda_sep, lambda_l1: loss weights (paper: 0.8, 0.08, 1e-4).
        prototypes_per_class, width, prototype_dim, grey, input_size, mean, std: see
            :class:`ProtoPNet`.
        push_batch_size: items per forward pass of the push and of the similarity cache.
        seed: torch initialisation and batch order.
    """

    warm_epochs: int = 0
    joint_epochs: int = 3
    last_epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-2
    weight_decay: float = 1e-4
    last_lr: float = 1e-4
    lambda_clst: float = 0.8
    lambda_sep: float = 0.08
    lambda_l1: float = 1e-4
    prototypes_per_class: int = 5
    width: int = 16
    prototype_dim: int = 32
    grey: bool = True
    input_size: int = 28
    mean: float = FASHION_MNIST_MEAN
    std: float = FASHION_MNIST_STD
    push_batch_size: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("warm_epochs", "joint_epochs", "last_epochs"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"ProtoPNetConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "prototypes_per_class", "width", "prototype_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ProtoPNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if int(self.push_batch_size) < 1:
            raise ValueError("ProtoPNetConfig.push_batch_size must be >= 1")
        if self.input_size < 4:
            raise ValueError(f"ProtoPNetConfig.input_size must be >= 4, got {self.input_size}")
        if not (self.lr > 0 and self.last_lr > 0 and self.weight_decay >= 0 and self.std > 0):
            raise ValueError(
                "ProtoPNetConfig needs lr > 0, last_lr > 0, weight_decay >= 0 and std > 0"
            )
        for name in ("lambda_clst", "lambda_sep", "lambda_l1", "mean"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"ProtoPNetConfig.{name} must be finite")

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class PushRecord:
    """Where each prototype was pushed to (P prototypes).

    Attributes:
        train_index: int64 ``(P,)``, index into the training images given to the push.
        h, w: int64 ``(P,)``, the latent cell of that image.
        prototype_class: int64 ``(P,)``, the prototype's class.
        source_label: int64 ``(P,)``, the label of the training image (== prototype_class).
        distance_before: float32 ``(P,)``, squared distance moved: the prototype's distance to
            the chosen patch just before the projection.
    """

    train_index: np.ndarray
    h: np.ndarray
    w: np.ndarray
    prototype_class: np.ndarray
    source_label: np.ndarray
    distance_before: np.ndarray

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name).tolist() for f in fields(self)}


def _check_model(model) -> ProtoPNet:
    if not isinstance(model, ProtoPNet):
        raise ValueError(f"model must be a ProtoPNet, got {type(model).__name__}")
    return model


def _data(images, labels, num_classes: int, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    arr = _images_check(images)
    if len(arr) == 0:
        raise ValueError("no items to train on (N == 0)")
    if arr.shape[1] != input_size:
        raise ValueError(
            f"images are {arr.shape[1]} x {arr.shape[2]} but input_size is {input_size}"
        )
    return arr, _labels_check(labels, len(arr), num_classes)


def build_protopnet(num_classes: int, config: ProtoPNetConfig | None = None) -> ProtoPNet:
    """An untrained :class:`ProtoPNet` initialised under ``config.seed`` (deterministic)."""
    config = config or ProtoPNetConfig()
    with _deterministic(config.seed):
        return ProtoPNet(
            num_classes,
            config.prototypes_per_class,
            input_size=config.input_size,
            grey=config.grey,
            width=config.width,
            prototype_dim=config.prototype_dim,
            mean=config.mean,
            std=config.std,
        )


def _costs(model: ProtoPNet, min_distances: torch.Tensor, y: torch.Tensor):
    """Cluster and separation costs (paper Eq. 1): batch means of the smallest distance to a
    prototype of the image's class / of any other class."""
    own = model.prototype_class_identity[:, y].t().bool()  # (B, P)
    inf = torch.tensor(float("inf"))
    clst = torch.where(own, min_distances, inf).min(dim=1).values.mean()
    sep = torch.where(~own, min_distances, inf).min(dim=1).values.mean()
    return clst, sep


def _stage(
    model: ProtoPNet,
    x: torch.Tensor,
    targets: torch.Tensor,
    config: ProtoPNetConfig,
    epochs: int,
    warm: bool,
    progress: Progress | None,
    offset: int,
    total: int,
) -> int:
    """One warm or joint stage; returns the step count after it."""
    if epochs == 0:
        return offset
    n = len(targets)
    label = "warm" if warm else "joint"
    model.last_layer.weight.requires_grad_(False)
    trained = [model.add_on] if warm else [model.features, model.add_on]
    for p in model.features.parameters():
        p.requires_grad_(not warm)
    params = [p for module in trained for p in module.parameters()]
    optimiser = torch.optim.AdamW(
        [
            {"params": params, "weight_decay": config.weight_decay},
            {"params": [model.prototype_vectors], "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    steps = epochs * math.ceil(n / config.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, partial(_one_cycle, total=steps))
    rng = np.random.default_rng(config.seed + (0 if warm else 1))
    report_every = max(1, total // 200)
    done = offset
    model.train()
    if warm:
        model.features.eval()
    for epoch in range(epochs):
        order = torch.from_numpy(rng.permutation(n))
        for start in range(0, n, config.batch_size):
            batch = order[start : start + config.batch_size]
            optimiser.zero_grad(set_to_none=True)
            out = model.forward_details(x[batch])
            y = targets[batch]
            clst, sep = _costs(model, out["min_distances"], y)
            loss = (
                F.cross_entropy(out["logits"], y)
                + config.lambda_clst * clst
                - config.lambda_sep * sep
            )
            loss.backward()
            optimiser.step()
            schedule.step()
            done += 1
            last_batch = start + config.batch_size >= n
            if progress is not None and (done % report_every == 0 or last_batch):
                progress(done, total, f"{label}: epoch {epoch + 1}/{epochs}")
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return done


def train_joint(
    model: ProtoPNet,
    images: np.ndarray,
    labels: np.ndarray,
    config: ProtoPNetConfig | None = None,
    *,
    progress: Progress | None = None,
) -> ProtoPNet:
    """Stage 1: ``config.warm_epochs`` warm then ``config.joint_epochs`` joint epochs, in
    place, deterministically; the last layer is not trained. Returns the model (eval mode)."""
    config = config or ProtoPNetConfig()
    _check_model(model)
    arr, y = _data(images, labels, model.num_classes, model.input_size)
    total = _steps(len(y), config.warm_epochs + config.joint_epochs, config.batch_size)
    _joint(model, arr, y, config, progress, 0, total)
    return model


def _joint(model, arr, y, config, progress, offset, total) -> int:
    x = _to_input(arr, model.grey, model.mean, model.std)
    targets = torch.from_numpy(y)
    with _deterministic(config.seed):
        done = _stage(model, x, targets, config, config.warm_epochs, True, progress, offset, total)
        done = _stage(model, x, targets, config, config.joint_epochs, False, progress, done, total)
    return done


@torch.no_grad()
def push_prototypes(
    model: ProtoPNet,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 512,
    progress: Progress | None = None,
) -> PushRecord:
    """Stage 2: project every prototype onto its nearest training patch of its own class.

    Eval mode, no gradients. The prototype becomes ``z[i, :, h, w]`` of the training image i
    (with label == the prototype's class) and cell (h, w) that minimise the distance; ties go
    to the smallest index, then row-major cell. ``model.prototype_source`` records (i, h, w).
    ``progress(done_images, total_images, "push")`` is called after each batch.

    Raises:
        ValueError: malformed images or labels; a class with prototypes but no image.
    """
    _check_model(model)
    arr, y = _data(images, labels, model.num_classes, model.input_size)
    missing = sorted(set(range(model.num_classes)) - set(np.unique(y).tolist()))
    if missing:
        raise ValueError(
            f"the push needs at least one training image of every class; none of {missing[:10]}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    cls = model.prototype_class
    p, d = model.num_prototypes, model.prototype_dim
    best = torch.full((p,), float("inf"))
    source = torch.full((p, 3), -1, dtype=torch.int64)
    vectors = torch.zeros(p, d)
    n = len(y)
    for start in range(0, n, batch_size):
        x = _to_input(arr[start : start + batch_size], model.grey, model.mean, model.std)
        yb = torch.from_numpy(y[start : start + batch_size])
        z = model.latent(x)
        maps = model.distances(z)  # (B, P, H, W)
        b, _, hh, ww = maps.shape
        own = yb[:, None] == cls[None, :]  # (B, P)
        maps = maps.masked_fill(~own[:, :, None, None], float("inf"))
        flat = maps.permute(1, 0, 2, 3).reshape(p, b * hh * ww)
        values, where = flat.min(dim=1)  # first minimum on ties
        better = values < best
        if better.any():
            j = torch.nonzero(better).flatten()
            item, cell = where[j] // (hh * ww), where[j] % (hh * ww)
            h, w = cell // ww, cell % ww
            best[j] = values[j]
            source[j, 0] = item + start
            source[j, 1] = h
            source[j, 2] = w
            vectors[j] = z[item, :, h, w]
        if progress is not None:
            progress(min(start + batch_size, n), n, "push")
    model.prototype_vectors.data.copy_(vectors.view(p, d, 1, 1))
    model.prototype_source.copy_(source)
    index = source[:, 0].numpy().copy()
    return PushRecord(
        train_index=index,
        h=source[:, 1].numpy().copy(),
        w=source[:, 2].numpy().copy(),
        prototype_class=cls.numpy().copy(),
        source_label=y[index].copy(),
        distance_before=best.numpy().astype(np.float32),
    )


@torch.no_grad()
def _similarities(model: ProtoPNet, arr: np.ndarray, batch_size: int) -> torch.Tensor:
    model.eval()
    out = [
        model.forward_details(
            _to_input(arr[s : s + batch_size], model.grey, model.mean, model.std)
        )["similarities"]
        for s in range(0, len(arr), batch_size)
    ]
    return torch.cat(out)


def train_last_layer(
    model: ProtoPNet,
    images: np.ndarray,
    labels: np.ndarray,
    config: ProtoPNetConfig | None = None,
    *,
    progress: Progress | None = None,
) -> ProtoPNet:
    """Stage 3: ``config.last_epochs`` epochs of Adam on the last layer only, in place.

    Loss: cross-entropy + ``lambda_l1`` * the L1 norm of the weights connecting prototypes to
    the classes they do not belong to. The rest of the network is frozen in eval mode, so its
    similarities are computed once. Returns the model (eval mode).
    """
    config = config or ProtoPNetConfig()
    _check_model(model)
    arr, y = _data(images, labels, model.num_classes, model.input_size)
    _last(model, arr, y, config, progress, 0, _steps(len(y), config.last_epochs, config.batch_size))
    return model


def _last(model, arr, y, config, progress, offset, total) -> int:
    if config.last_epochs == 0:
        return offset
    sims = _similarities(model, arr, config.push_batch_size)
    targets = torch.from_numpy(y)
    n = len(y)
    mask = 1.0 - model.prototype_class_identity.t()  # (K, P): wrong-class connections
    weight = model.last_layer.weight
    report_every = max(1, total // 200)
    done = offset
    with _deterministic(config.seed):
        optimiser = torch.optim.Adam([weight], lr=config.last_lr)
        rng = np.random.default_rng(config.seed + 2)
        for epoch in range(config.last_epochs):
            order = torch.from_numpy(rng.permutation(n))
            for start in range(0, n, config.batch_size):
                batch = order[start : start + config.batch_size]
                optimiser.zero_grad(set_to_none=True)
                logits = sims[batch] @ weight.t()
                loss = F.cross_entropy(logits, targets[batch])
                loss = loss + config.lambda_l1 * (weight * mask).abs().sum()
                loss.backward()
                optimiser.step()
                done += 1
                if progress is not None and (
                    done % report_every == 0 or start + config.batch_size >= n
                ):
                    progress(done, total, f"last layer: epoch {epoch + 1}/{config.last_epochs}")
    weight.grad = None
    model.eval()
    return done


def train_protopnet(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    config: ProtoPNetConfig | None = None,
    *,
    progress: Progress | None = None,
) -> tuple[ProtoPNet, PushRecord]:
    """Train a ProtoPNet: warm / joint epochs, push, last-layer epochs (module docstring).

    Deterministic: the same data, config, torch build and thread count give bit-identical
    weights. Same as ``build_protopnet`` + ``train_joint`` + ``push_prototypes`` +
    ``train_last_layer`` with the same config.

    Args:
        images: uint8 ``(N, S, S)`` or ``(N, S, S, 3)``, ``S == config.input_size``.
        labels: integers ``(N,)`` in ``[0, num_classes)``, every class present (the push).
        num_classes: K >= 2.
        config: hyper-parameters (default :class:`ProtoPNetConfig()`).
        progress: ``progress(done_steps, total_steps, message)`` over the optimiser steps of
            all stages (the push is not counted).

    Returns:
        ``(model, push_record)``; the model in eval mode.

    Raises:
        ValueError, before any training: K < 2, N == 0, malformed images / labels, images not
            ``config.input_size`` wide, a class without images.
    """
    config = config or ProtoPNetConfig()
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    arr, y = _data(images, labels, num_classes, config.input_size)
    missing = sorted(set(range(num_classes)) - set(np.unique(y).tolist()))
    if missing:
        raise ValueError(
            f"the push needs at least one training image of every class; none of {missing[:10]}"
        )
    n = len(y)
    total = _steps(n, config.warm_epochs + config.joint_epochs, config.batch_size)
    total += _steps(n, config.last_epochs, config.batch_size)
    model = build_protopnet(num_classes, config)
    done = _joint(model, arr, y, config, progress, 0, total)
    record = push_prototypes(model, arr, y, batch_size=config.push_batch_size)
    _last(model, arr, y, config, progress, done, total)
    return model, record


@torch.no_grad()
def protopnet_predict(
    model: ProtoPNet, images: np.ndarray, *, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities float32 ``(N, K)`` and similarities float32 ``(N, P)``, in eval
    mode without gradients (the model's mode is restored)."""
    _check_model(model)
    arr = _images_check(images)
    was_training = model.training
    model.eval()
    probs, sims = [], []
    try:
        for s in range(0, len(arr), batch_size):
            out = model.forward_details(
                _to_input(arr[s : s + batch_size], model.grey, model.mean, model.std)
            )
            probs.append(torch.softmax(out["logits"], dim=1).numpy())
            sims.append(out["similarities"].numpy())
    finally:
        model.train(was_training)
    if not probs:
        return (
            np.zeros((0, model.num_classes), np.float32),
            np.zeros((0, model.num_prototypes), np.float32),
        )
    return np.concatenate(probs), np.concatenate(sims)


# --------------------------------------------------------------------------- explanations


@dataclass
class PrototypeContribution:
    """One prototype's part in the evidence for the explained class.

    Attributes:
        prototype: index j.
        prototype_class: its class.
        similarity: ``log((d + 1) / (d + 1e-4))`` of its smallest distance to the test image.
        distance: that smallest squared distance.
        weight: last-layer weight ``w[class, j]``.
        contribution: ``similarity * weight``.
        source_index, source_h, source_w: the training image and latent cell it was pushed to
            (-1 if never pushed).
        source_box: ``(x0, y0, x1, y1)`` receptive field of that cell in input pixels
            (end-exclusive, clipped), or ``None`` if never pushed.
        test_h, test_w: the test image's cell most similar to the prototype.
        test_box: its receptive field box.
        activation_map: float32 ``(S, S)``: the similarity of every test cell to the prototype,
            bilinearly upsampled to the input size (the paper uses bicubic); between cell
            centres, so its maximum is below ``similarity``.
        activation_cells: float32 ``(H, W)``: the same similarities at the latent resolution
            (what the platform stores; its maximum equals ``similarity``).
    """

    prototype: int
    prototype_class: int
    similarity: float
    distance: float
    weight: float
    contribution: float
    source_index: int
    source_h: int
    source_w: int
    source_box: tuple[int, int, int, int] | None
    test_h: int
    test_w: int
    test_box: tuple[int, int, int, int]
    activation_map: np.ndarray
    activation_cells: np.ndarray | None = None


@dataclass
class PrototypeExplanation:
    """ "This looks like that" for one image.

    Attributes:
        predicted: argmax of the logits.
        explained_class: the class whose evidence is decomposed.
        logits: float32 ``(K,)``.
        class_evidence: float64 ``(K,)``, ``sum_j similarity_j * weight[k, j]`` over all P
            prototypes; equals ``logits`` (no bias) up to float32 rounding.
        prototypes: the top contributions to ``explained_class``, largest first.
        receptive_field: geometry of the latent cells (``None`` if it could not be derived).
        kind: always ``"prototype"``.
    """

    predicted: int
    explained_class: int
    logits: np.ndarray
    class_evidence: np.ndarray
    prototypes: list[PrototypeContribution] = field(default_factory=list)
    receptive_field: ReceptiveField | None = None
    kind: str = "prototype"


@torch.no_grad()
def explain(
    model: ProtoPNet, image: np.ndarray, *, class_index: int | None = None, top_k: int = 3
) -> PrototypeExplanation:
    """The prototypes with the largest ``similarity * weight`` for one image's class.

    Args:
        model: a trained :class:`ProtoPNet` (eval mode is used, and restored).
        image: uint8 ``(S, S)`` grey or ``(S, S, 3)`` RGB, one image; or that image already
            normalised as a float tensor ``(C, S, S)`` / ``(1, C, S, S)`` (what the platform's
            explanation jobs pass).
        class_index: the class to explain; default the predicted one.
        top_k: how many prototypes (all P at most).

    Raises:
        ValueError: not a ProtoPNet; not one uint8 square image; class_index outside
            ``[0, K)``; top_k < 1.
    """
    _check_model(model)
    if isinstance(image, torch.Tensor):
        x = image.detach().float()
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[-1] != x.shape[-2]:
            raise ValueError(
                "a tensor image must be one normalised square (C, S, S) or (1, C, S, S), got "
                f"{tuple(image.shape)}"
            )
    else:
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            raise ValueError(f"image must be uint8 pixels, got {arr.dtype}")
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
            raise ValueError(f"image must be one (S, S) or (S, S, 3) image, got shape {arr.shape}")
        x = _to_input(_images_check(arr[None], "image"), model.grey, model.mean, model.std)
    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    was_training = model.training
    model.eval()
    try:
        out = model.forward_details(x)
        rf = receptive_field(model, ProtoPNet.target_layer, x)
    finally:
        model.train(was_training)
    logits = out["logits"][0].numpy()
    predicted = int(np.argmax(logits))
    k = predicted if class_index is None else int(class_index)
    if not 0 <= k < model.num_classes:
        raise ValueError(f"class_index must lie in [0, {model.num_classes}), got {class_index}")
    sims = out["similarities"][0]
    weights = model.last_layer.weight.detach()
    evidence = (sims.double()[None, :] * weights.double()).sum(dim=1).numpy()
    contrib = (sims * weights[k]).numpy()
    order = np.argsort(-contrib, kind="stable")[: int(top_k)]
    maps = out["distance_maps"][0]  # (P, H, W)
    hh, ww = maps.shape[-2:]
    size = int(x.shape[-1])
    cells = similarity(maps)  # (P, H, W)
    upsampled = F.interpolate(cells[None], size=(size, size), mode="bilinear", align_corners=False)[
        0
    ]
    classes = model.prototype_class
    sources = model.prototype_source

    def box(h: int, w: int):
        return rf.box(h, w) if rf is not None else _cell_box(h, w, (hh, ww), (size, size))

    items = []
    for j in order.tolist():
        cell = int(torch.argmin(maps[j].reshape(-1)))
        th, tw = divmod(cell, ww)
        si, sh, sw = (int(v) for v in sources[j])
        items.append(
            PrototypeContribution(
                prototype=j,
                prototype_class=int(classes[j]),
                similarity=float(sims[j]),
                distance=float(out["min_distances"][0, j]),
                weight=float(weights[k, j]),
                contribution=float(contrib[j]),
                source_index=si,
                source_h=sh,
                source_w=sw,
                source_box=box(sh, sw) if si >= 0 else None,
                test_h=th,
                test_w=tw,
                test_box=box(th, tw),
                activation_map=upsampled[j].numpy().astype(np.float32),
                activation_cells=cells[j].numpy().astype(np.float32),
            )
        )
    return PrototypeExplanation(
        predicted=predicted,
        explained_class=k,
        logits=logits.astype(np.float32),
        class_evidence=evidence,
        prototypes=items,
        receptive_field=rf,
    )


# --------------------------------------------------------------------------- safetensors


def protopnet_save(model: ProtoPNet, path: str | Path) -> Path:
    """Write the state dict (incl. ``prototype_source``) to a safetensors file, atomically, with
    the constructor arguments as JSON in the metadata."""

    _check_model(model)
    path = Path(path)
    metadata = {
        "format": "pt",
        "architecture": _ARCHITECTURE,
        "init_kwargs": json.dumps(model.init_kwargs(), sort_keys=True),
    }
    return safetensors_write(model, path, metadata)


def protopnet_load(path: str | Path) -> ProtoPNet:
    """Rebuild a :class:`ProtoPNet` from a :func:`protopnet_save` file (eval mode, CPU).

    Only safetensors is read; nothing is unpickled.

    Raises:
        WeightsError: missing file; not safetensors (e.g. a ``torch.save`` pickle); metadata
            missing or not a ProtoPNet's; a state dict that does not match.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path.name}: weights file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path.name}: not a readable safetensors file ({exc}); pickled checkpoints "
            f"(torch.save) are never loaded, save with protopnet_save"
        ) from None
    if metadata.get("architecture") != _ARCHITECTURE:
        raise WeightsError(f"{path.name}: not a ProtoPNet file (metadata {sorted(metadata)})")
    try:
        kwargs = json.loads(metadata["init_kwargs"])
        num_classes = kwargs.pop("num_classes")
        model = ProtoPNet(num_classes, **kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path.name}: bad ProtoPNet metadata ({exc})") from None
    own = model.state_dict()
    problems = sorted(set(own) ^ set(state)) + [
        k for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape
    ]
    if problems:
        raise WeightsError(f"{path.name}: state dict does not match the metadata: {problems[:5]}")
    model.load_state_dict(state, strict=True)
    model.eval()
    return model
