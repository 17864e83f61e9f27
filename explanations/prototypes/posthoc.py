"""Post-hoc prototypes for any CNN: the nearest training patches in a hooked layer's features.

A CNN that was not built around prototypes (a :class:`labeling.training.SmallCNN`, a ResNet)
can still be "explained by example" after the fact: run the test image and a set of training
images through the network, take the feature map of one layer (a forward hook on the module
with the given dotted name, e.g. ``"features.conv2"``), treat each spatial cell ``(h, w)`` of
that ``(C, H', W')`` map as the latent vector of an image patch, and return the training patches
whose vectors are nearest to a chosen patch of the test image. This is the retrieval step of
ProtoPNet's explanations without its training, so the neighbours are *illustrations*: unlike a
ProtoPNet (:mod:`explanations.prototypes.protopnet`) the model's logits are not computed from
them, and every result is labelled ``kind="post-hoc"``.

Distance (``metric``), between the test vector ``q`` and a training vector ``v`` (C values):

* ``"cosine"`` (default): ``1 - cos(q, v)``, in [0, 2]; a vector of norm < 1e-12 (an all-zero
  cell after a ReLU) is left unnormalised and so has cosine 0, distance 1, to everything;
* ``"l2"``: the Euclidean distance ``||q - v||``, computed from the differences (not from the
  ``|q|^2 - 2 q.v + |v|^2`` expansion), so an identical vector is at distance exactly 0.

The query patch is ``query=(h, w)`` on the test feature map, or by default the cell whose vector
has the largest L2 norm (the most strongly activated one; first in row-major order on ties).
With ``per_image=True`` (default) each training image contributes its nearest cell only, so the
``k`` results are ``k`` different images; ties are broken by training index, then row-major
cell, so results are deterministic.

Pixel boxes (:attr:`PosthocPrototype.box`, ``(x0, y0, x1, y1)``, columns ``x0 .. x1 - 1`` and
rows ``y0 .. y1 - 1``, clipped to the image): when the modules that run before the layer form a
plain chain (each leaf module's input has the shape of the previous one's output, the first one
sees the input's spatial size, and every module is a ``Conv2d``, ``MaxPool2d``, ``AvgPool2d``
or a known shape-preserving element-wise layer such as ``BatchNorm2d`` / ``ReLU`` / ``Sigmoid``
/ ``Dropout``), the box is the cell's exact theoretical **receptive field**
(``box_method="receptive-field"``; e.g. 10 x 10 pixels at stride 4 for ``SmallCNN``'s
``features.pool2``), computed with the usual recurrences (Araujo, Norris & Sim, "Computing
Receptive Fields of Convolutional Neural Networks", Distill 2019) and checked against the layer's
actual output size. Anything else (branches, functional ops that change shapes, adaptive
pooling, unknown modules) falls back to an approximation, the cell scaled to the input
(``box_method="cell"``: rows ``floor(h H / H')`` .. ``ceil((h + 1) H / H')``), which
understates the true, larger receptive field.

Inputs are float tensors the model accepts, ``(N, C, H, W)`` (one test input ``(C, H, W)`` or
``(1, C, H, W)``), or uint8 images ``(N, S, S[, 3])`` (one ``(S, S[, 3])``) together with a
``preprocess`` callable, or, for models with ``grey`` / ``mean`` / ``std`` attributes
(:class:`~labeling.training.SmallCNN`, :class:`~explanations.prototypes.protopnet.ProtoPNet`),
uint8 images alone (preprocessed as in :mod:`labeling.training`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from labeling.training import _images_check, _to_input

__all__ = [
    "METRICS",
    "PatchBank",
    "PosthocExplanation",
    "PosthocPrototype",
    "ReceptiveField",
    "layer_features",
    "nearest_patches",
    "receptive_field",
]

#: Supported values of ``metric``.
METRICS = ("cosine", "l2")

Preprocess = Callable[[np.ndarray], torch.Tensor]
Box = tuple[int, int, int, int]

#: Leaf modules that keep every spatial position where it is (element-wise or per channel).
_SHAPE_PRESERVING = (
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.GroupNorm,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Softplus,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)


# --------------------------------------------------------------------------- receptive fields


@dataclass(frozen=True)
class ReceptiveField:
    """Theoretical receptive field of the cells of a feature map, per axis ``(rows, columns)``.

    Attributes:
        size: side of each cell's receptive field in input pixels (before clipping).
        jump: distance in input pixels between neighbouring cells (the total stride).
        start: centre of cell ``(0, 0)`` in pixel-index coordinates (pixel ``i`` is centred at
            ``i``; may be negative or half-integral).
        input_size: ``(H, W)`` of the input.
        feature_size: ``(H', W')`` of the feature map.
    """

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]
    input_size: tuple[int, int]
    feature_size: tuple[int, int]

    def box(self, h: int, w: int) -> Box:
        """``(x0, y0, x1, y1)`` of cell ``(h, w)``, end-exclusive, clipped to the input."""
        spans = []
        for axis, i in ((0, h), (1, w)):
            lo = round(self.start[axis] + i * self.jump[axis] - (self.size[axis] - 1) / 2)
            hi = lo + self.size[axis]
            limit = self.input_size[axis]
            spans.append((min(max(lo, 0), limit), min(max(hi, 0), limit)))
        (y0, y1), (x0, x1) = spans
        return (x0, y0, x1, y1)


def _cell_box(h: int, w: int, feature_size: tuple[int, int], input_size: tuple[int, int]) -> Box:
    """The approximation: cell ``(h, w)`` scaled to the input (``box_method="cell"``)."""
    (fh, fw), (ih, iw) = feature_size, input_size
    y0, y1 = math.floor(h * ih / fh), math.ceil((h + 1) * ih / fh)
    x0, x1 = math.floor(w * iw / fw), math.ceil((w + 1) * iw / fw)
    return (x0, y0, x1, y1)


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, tuple | list) else (int(v), int(v))


def _geometry(module: nn.Module) -> tuple[tuple[int, int], ...] | None:
    """``(kernel, stride, padding_before, dilation)`` pairs, or ``None`` if not geometric."""
    if isinstance(module, nn.Conv2d):
        k, s, d = _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation)
        if module.padding == "valid":
            p = (0, 0)
        elif module.padding == "same":
            p = (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2)
        else:
            p = _pair(module.padding)
        return (k, s, p, d)  # padding_mode (zeros / reflect / ...) does not change geometry
    if isinstance(module, nn.MaxPool2d):
        k = _pair(module.kernel_size)
        s = _pair(module.stride if module.stride is not None else module.kernel_size)
        return (k, s, _pair(module.padding), _pair(module.dilation))
    if isinstance(module, nn.AvgPool2d):
        k = _pair(module.kernel_size)
        s = _pair(module.stride if module.stride is not None else module.kernel_size)
        return (k, s, _pair(module.padding), (1, 1))
    return None


def _module(model: nn.Module, layer: str) -> nn.Module:
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"layer must be a non-empty dotted module name, got {layer!r}")
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [n for n in modules if n][:12]
        raise ValueError(
            f"layer {layer!r} not found in {type(model).__name__}; modules include {names}"
        )
    return modules[layer]


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted layer has run."""


def receptive_field(
    model: nn.Module, layer: str, example_input: torch.Tensor
) -> ReceptiveField | None:
    """Exact receptive field of ``layer``'s cells, or ``None`` where it cannot be derived.

    Runs one forward pass on zeros shaped like ``example_input`` (``(1, C, H, W)``; eval mode,
    no gradients, the model's mode restored) with hooks on every leaf module, and accepts the
    modules executed up to the layer only if they form a plain chain of known modules (module
    docstring); the recurrences' predicted output size must match the layer's actual one.

    Raises:
        ValueError: unknown layer, or its output is not a 4-D tensor.
    """
    target = _module(model, layer)
    x = torch.zeros((1, *tuple(example_input.shape[-3:])), dtype=torch.float32)
    records: list[tuple[nn.Module, tuple | None, tuple | None]] = []
    out_shape: list[tuple] = []

    def leaf_hook(module, inputs, output):
        first = inputs[0] if inputs else None
        records.append(
            (
                module,
                tuple(first.shape) if torch.is_tensor(first) else None,
                tuple(output.shape) if torch.is_tensor(output) else None,
            )
        )

    def target_hook(module, inputs, output):
        if not torch.is_tensor(output) or output.ndim != 4:
            shape = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
            raise ValueError(f"layer {layer!r} must output (N, C, H, W), got {shape}")
        out_shape.append(tuple(output.shape))
        raise _Stop

    handles = [
        m.register_forward_hook(leaf_hook)
        for m in model.modules()
        if not any(True for _ in m.children())
    ]
    handles.append(target.register_forward_hook(target_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not out_shape:
        raise ValueError(f"layer {layer!r} did not run in the model's forward pass")

    input_size = (int(x.shape[-2]), int(x.shape[-1]))
    feature_size = (int(out_shape[0][-2]), int(out_shape[0][-1]))
    if not records or records[0][1] is None or records[0][1][-2:] != input_size:
        return None
    size, jump, start = [1, 1], [1, 1], [0.0, 0.0]
    spatial = list(input_size)
    previous_out = records[0][1]
    for module, in_shape, out in records:
        if in_shape is None or out is None or len(in_shape) != 4 or len(out) != 4:
            return None
        if in_shape != previous_out:
            return None  # not a chain: a branch, or a functional op that changed the shape
        geometry = _geometry(module)
        if geometry is None:
            if not isinstance(module, _SHAPE_PRESERVING) or out[-2:] != in_shape[-2:]:
                return None
        else:
            k, s, p, d = geometry
            ceil_mode = bool(getattr(module, "ceil_mode", False))
            for a in (0, 1):
                ke = d[a] * (k[a] - 1) + 1
                total_pad = 2 * p[a]
                if isinstance(module, nn.Conv2d) and module.padding == "same":
                    total_pad = ke - 1
                n = (spatial[a] + total_pad - ke) / s[a]
                spatial[a] = (math.ceil(n) if ceil_mode else math.floor(n)) + 1
                start[a] += ((ke - 1) / 2 - p[a]) * jump[a]
                size[a] += (ke - 1) * jump[a]
                jump[a] *= s[a]
            if tuple(spatial) != tuple(out[-2:]):
                return None
        previous_out = out
    if tuple(previous_out) != out_shape[0] or tuple(spatial) != feature_size:
        return None
    return ReceptiveField(
        size=(size[0], size[1]),
        jump=(jump[0], jump[1]),
        start=(start[0], start[1]),
        input_size=input_size,
        feature_size=feature_size,
    )


# --------------------------------------------------------------------------- features


def _batch(model: nn.Module, inputs, preprocess: Preprocess | None, name: str) -> torch.Tensor:
    """Inputs -> float32 ``(N, C, H, W)`` (module docstring)."""
    if preprocess is not None:
        x = preprocess(np.asarray(inputs))
        if not torch.is_tensor(x):
            raise ValueError(f"preprocess must return a torch.Tensor, got {type(x).__name__}")
    elif torch.is_tensor(inputs) or (
        isinstance(inputs, np.ndarray) and np.issubdtype(inputs.dtype, np.floating)
    ):
        x = torch.as_tensor(inputs)
    else:
        arr = np.asarray(inputs)
        if arr.dtype != np.uint8:
            raise ValueError(
                f"{name} must be float (N, C, H, W) model inputs or uint8 images, got {arr.dtype}"
            )
        if not all(hasattr(model, a) for a in ("grey", "mean", "std")):
            raise ValueError(
                f"{name} are uint8 images but {type(model).__name__} has no grey / mean / std "
                f"attributes: pass preprocess= or float (N, C, H, W) inputs"
            )
        arr = _images_check(arr, name)
        x = _to_input(arr, model.grey, model.mean, model.std)
    x = x.detach().to(torch.float32)
    if x.ndim != 4:
        raise ValueError(f"{name} must be (N, C, H, W), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return x


def _single(inputs, name: str):
    """One test input -> a batch of one, in the same representation."""
    if torch.is_tensor(inputs) or (
        isinstance(inputs, np.ndarray) and np.issubdtype(inputs.dtype, np.floating)
    ):
        shape = tuple(inputs.shape)
        if len(shape) == 3:
            return inputs[None]
        if len(shape) == 4 and shape[0] == 1:
            return inputs
        raise ValueError(f"{name} must be one input (C, H, W) or (1, C, H, W), got {shape}")
    arr = np.asarray(inputs)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3 and arr.shape[0] == arr.shape[1]):
        return arr[None]
    raise ValueError(f"{name} must be one image (S, S) or (S, S, 3), got shape {arr.shape}")


@torch.no_grad()
def layer_features(
    model: nn.Module,
    layer: str,
    inputs,
    *,
    preprocess: Preprocess | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """The output of ``layer`` for each input, float32 ``(N, C, H', W')``.

    Eval mode, no gradients (the model's mode is restored); the forward pass stops once the
    layer has run.

    Raises:
        ValueError: unknown layer; an output that is not ``(N, C, H', W')``; malformed inputs.
    """
    target = _module(model, layer)
    x = _batch(model, inputs, preprocess, "inputs")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    captured: list[torch.Tensor] = []

    def hook(module, hook_inputs, output):
        if not torch.is_tensor(output) or output.ndim != 4:
            shape = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
            raise ValueError(f"layer {layer!r} must output (N, C, H, W), got {shape}")
        captured.append(output.detach().to(torch.float32).clone())
        raise _Stop

    handle = target.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            try:
                model(x[start : start + batch_size])
            except _Stop:
                pass
    finally:
        handle.remove()
        model.train(was_training)
    if len(captured) != math.ceil(len(x) / batch_size):
        raise ValueError(f"layer {layer!r} did not run in the model's forward pass")
    return torch.cat(captured) if captured else torch.zeros(0)


# --------------------------------------------------------------------------- retrieval


@dataclass
class PosthocPrototype:
    """One retrieved training patch.

    Attributes:
        train_index: index of the training image.
        h, w: its cell in the layer's feature map.
        distance: to the test image's query cell (module docstring).
        box: ``(x0, y0, x1, y1)`` in input pixels, end-exclusive (see ``box_method``).
        kind: always ``"post-hoc"``.
    """

    train_index: int
    h: int
    w: int
    distance: float
    box: Box
    kind: str = "post-hoc"


@dataclass
class PosthocExplanation:
    """Nearest training patches of one test image.

    Attributes:
        layer: dotted module name.
        metric: ``"cosine"`` or ``"l2"``.
        query: ``(h, w)``, the test image's cell the neighbours are nearest to.
        query_box: its box in input pixels.
        box_method: ``"receptive-field"`` (exact) or ``"cell"`` (approximation).
        feature_shape: ``(C, H', W')`` of the layer's output.
        neighbours: nearest first.
        kind: always ``"post-hoc"``.
    """

    layer: str
    metric: str
    query: tuple[int, int]
    query_box: Box
    box_method: str
    feature_shape: tuple[int, int, int]
    neighbours: list[PosthocPrototype] = field(default_factory=list)
    kind: str = "post-hoc"


class PatchBank:
    """The training images' patch vectors in one layer, built once and queried many times.

    Holds all ``N * H' * W'`` vectors of C float32 values in memory (e.g. 60,000 Fashion-MNIST
    images at ``SmallCNN``'s ``features.pool2``: 60,000 x 49 x 32 x 4 B = 376 MB); a query is
    one matrix-vector product (cosine) or one pass of differences (l2) over them.

    Args:
        model: any ``nn.Module`` whose ``layer`` outputs ``(N, C, H', W')``.
        layer: dotted module name (``dict(model.named_modules())``).
        train_inputs: the training images (module docstring), N >= 1.
        metric: ``"cosine"`` or ``"l2"``.
        preprocess: optional uint8 -> float ``(N, C, H, W)`` callable.
        batch_size: items per forward pass.

    Raises:
        ValueError: unknown metric or layer, no training inputs, malformed inputs.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        train_inputs,
        *,
        metric: str = "cosine",
        preprocess: Preprocess | None = None,
        batch_size: int = 256,
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        x = _batch(model, train_inputs, preprocess, "train_inputs")
        if len(x) == 0:
            raise ValueError("train_inputs is empty (N == 0)")
        self.model = model
        self.layer = layer
        self.metric = metric
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.input_shape = tuple(x.shape[1:])
        features = layer_features(model, layer, x, batch_size=batch_size)
        n, c, fh, fw = features.shape
        self.feature_shape = (int(c), int(fh), int(fw))
        self.num_images = int(n)
        self.vectors = self._prepare(features.permute(0, 2, 3, 1).reshape(n * fh * fw, c))
        self.receptive_field = receptive_field(model, layer, x[:1])

    def _prepare(self, vectors: torch.Tensor) -> torch.Tensor:
        if self.metric == "cosine":
            norms = vectors.norm(dim=1, keepdim=True)
            return torch.where(norms >= 1e-12, vectors / norms.clamp_min(1e-12), vectors)
        return vectors

    def box(self, h: int, w: int) -> Box:
        if self.receptive_field is not None:
            return self.receptive_field.box(h, w)
        return _cell_box(h, w, self.feature_shape[1:], self.input_shape[1:])

    @property
    def box_method(self) -> str:
        return "receptive-field" if self.receptive_field is not None else "cell"

    def query(
        self,
        test_input,
        *,
        k: int = 5,
        query: tuple[int, int] | None = None,
        per_image: bool = True,
        images: np.ndarray | None = None,
    ) -> PosthocExplanation:
        """The ``k`` nearest training patches to one cell of the test input.

        Args:
            test_input: one input, in the representation the bank was built from.
            k: number of neighbours (fewer if there are fewer images / patches).
            query: ``(h, w)`` on the test feature map; default the most activated cell.
            per_image: at most one patch per training image.
            images: only these training images (int indices, e.g. those of one class);
                default all.

        Raises:
            ValueError: k < 1, a query cell outside the map, a test input of another shape,
                ``images`` empty or out of range.
        """
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        x = _batch(self.model, _single(test_input, "test_input"), self.preprocess, "test_input")
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"test_input has shape {tuple(x.shape[1:])} but the training inputs have "
                f"{self.input_shape}"
            )
        feats = layer_features(self.model, self.layer, x)[0]  # (C, H', W')
        _, fh, fw = self.feature_shape
        if query is None:
            norms = feats.norm(dim=0).reshape(-1)
            qh, qw = divmod(int(torch.argmax(norms)), fw)
        else:
            if len(query) != 2:
                raise ValueError(f"query must be (h, w), got {query!r}")
            qh, qw = int(query[0]), int(query[1])
            if not (0 <= qh < fh and 0 <= qw < fw):
                raise ValueError(f"query {query!r} is outside the {fh} x {fw} feature map")
        q = self._prepare(feats[:, qh, qw][None])[0]
        if self.metric == "cosine":
            dist = (1.0 - self.vectors @ q).clamp_min(0.0)
        else:
            dist = ((self.vectors - q) ** 2).sum(dim=1).sqrt()
        dist = dist.to(torch.float64).numpy()
        cells = fh * fw
        allowed = np.arange(self.num_images)
        if images is not None:
            allowed = np.asarray(images, dtype=np.int64).reshape(-1)
            if allowed.size == 0 or allowed.min() < 0 or allowed.max() >= self.num_images:
                raise ValueError(f"images must be indices in [0, {self.num_images}), non-empty")
        per = dist.reshape(self.num_images, cells)[allowed]
        if per_image:
            best_cell = per.argmin(axis=1)  # first minimum: row-major
            best = per[np.arange(len(allowed)), best_cell]
            order = np.argsort(best, kind="stable")[: int(k)]
            picks = [(int(allowed[i]), int(best_cell[i]), float(best[i])) for i in order]
        else:
            flat = per.reshape(-1)
            order = np.argsort(flat, kind="stable")[: int(k)]
            picks = [(int(allowed[j // cells]), int(j) % cells, float(flat[j])) for j in order]
        neighbours = []
        for index, cell, d in picks:
            h, w = divmod(cell, fw)
            neighbours.append(PosthocPrototype(index, h, w, d, self.box(h, w)))
        return PosthocExplanation(
            layer=self.layer,
            metric=self.metric,
            query=(qh, qw),
            query_box=self.box(qh, qw),
            box_method=self.box_method,
            feature_shape=self.feature_shape,
            neighbours=neighbours,
        )


def nearest_patches(
    model: nn.Module,
    layer: str,
    train_inputs,
    test_input,
    *,
    k: int = 5,
    metric: str = "cosine",
    query: tuple[int, int] | None = None,
    per_image: bool = True,
    preprocess: Preprocess | None = None,
    batch_size: int = 256,
) -> PosthocExplanation:
    """Post-hoc prototypes: ``PatchBank(model, layer, train_inputs, ...).query(test_input)``.

    For many test images build one :class:`PatchBank` and query it repeatedly.
    """
    bank = PatchBank(
        model, layer, train_inputs, metric=metric, preprocess=preprocess, batch_size=batch_size
    )
    return bank.query(test_input, k=k, query=query, per_image=per_image)
