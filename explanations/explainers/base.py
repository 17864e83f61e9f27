"""Common contract for explanation methods that map one image to one saliency map per class.

Every concrete explainer (Grad-CAM, ...) subclasses :class:`Explainer` and implements a single
hook, :meth:`Explainer._attribute`.  The public :meth:`Explainer.explain` validates the input
image and the requested target classes, puts the model in evaluation mode, calls the hook, checks
what it returned and wraps it in an immutable :class:`ExplanationResult`.

This module is pure PyTorch/NumPy; it must not import Django.
"""

from __future__ import annotations

import abc
import json
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

__all__ = [
    "ExplainerConfigError",
    "ExplainerError",
    "ExplainerInputError",
    "ExplainerOutputError",
    "ExplanationResult",
    "Explainer",
    "resolve_layer",
    "suggest_target_layer",
]

#: How many valid layer names an :class:`ExplainerConfigError` lists as suggestions.
_MAX_LAYER_SUGGESTIONS = 8


class ExplainerError(Exception):
    """Base class of every error raised by the explainers package."""


class ExplainerInputError(ExplainerError, ValueError):
    """The image tensor or the target classes passed to :meth:`Explainer.explain` are invalid."""


class ExplainerConfigError(ExplainerError, ValueError):
    """An explainer is mis-configured: unknown layer, unknown parameter, unusable model, or a
    registry entry that does not name an :class:`Explainer` subclass."""


class ExplainerOutputError(ExplainerError, RuntimeError):
    """An explainer's :meth:`Explainer._attribute` returned a malformed result (wrong shape,
    NaN/inf values).  This indicates a bug in the explainer, not in the caller's input."""


@dataclass(frozen=True, eq=False)
class ExplanationResult:
    """The saliency maps one explainer produced for one image.

    Attributes:
        method: ``Explainer.key`` of the method that produced the maps, e.g. ``"gradcam"``.
        targets: class indices, one per map, in the order they were requested.
        attributions: ``np.ndarray`` of shape ``(T, H, W)`` and dtype ``float32``, where
            ``T == len(targets)`` and ``(H, W)`` is the spatial size of the model input.
            ``attributions[i]`` is the map for ``targets[i]``.  All values are finite; the value
            range is method specific (Grad-CAM: ``>= 0``, not normalised).  The array is stored
            as a read-only view.
        params: JSON-serialisable parameters the method actually used, e.g.
            ``{"layer": "_conv_head", "relu_attributions": True, "upsample": "bilinear"}``.
        degenerate: one flag per target, ``True`` when the method found no evidence at all
            for that target: the map was zero everywhere (or, for a method whose maps are
            non-negative by construction, ``<= 0`` everywhere) and is stored as an exact
            all-zero map.  Such a map must not be normalised for display (``0 / 0``); show
            it as "no attribution" instead.  Optional for callers constructing a result by
            hand: the default (empty tuple) means "no map is degenerate".
        details: structured evidence beside the maps, one JSON-serialisable dict per target
            (the top prototypes of a ProtoPNet, the concept contributions of a
            concept-bottleneck model), or empty for methods that give maps only.

    Equality is identity (``eq=False``), because element-wise array comparison has no single
    truth value.

    Raises:
        ValueError: on construction, if the array is not a finite ``float32`` ``(T, H, W)``
            array with ``T == len(targets)``, if ``params`` is not JSON-serialisable, or if
            ``degenerate`` is neither empty nor one ``bool`` per target.
    """

    method: str
    targets: tuple[int, ...]
    attributions: np.ndarray
    params: dict[str, Any]
    degenerate: tuple[bool, ...] = field(default=())
    details: tuple[dict, ...] = field(default=())

    def __post_init__(self) -> None:
        targets = tuple(operator.index(t) for t in self.targets)
        maps = self.attributions
        if not isinstance(maps, np.ndarray) or maps.dtype != np.float32 or maps.ndim != 3:
            raise ValueError(
                "attributions must be a float32 np.ndarray of shape (T, H, W); got "
                f"{type(maps).__name__} {getattr(maps, 'dtype', '?')} "
                f"{getattr(maps, 'shape', '?')}"
            )
        if maps.shape[0] != len(targets):
            raise ValueError(
                f"attributions hold {maps.shape[0]} maps but {len(targets)} targets were given"
            )
        if not np.all(np.isfinite(maps)):
            raise ValueError("attributions contain NaN or infinite values")
        try:
            json.dumps(self.params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"params must be JSON-serialisable: {exc}") from exc
        degenerate = tuple(self.degenerate)
        if not degenerate:
            degenerate = (False,) * len(targets)
        if len(degenerate) != len(targets) or not all(
            isinstance(flag, (bool, np.bool_)) for flag in degenerate
        ):
            raise ValueError(
                f"degenerate must hold one bool per target ({len(targets)}), got {degenerate!r}"
            )
        details = tuple(self.details)
        if details:
            if len(details) != len(targets) or not all(isinstance(d, dict) for d in details):
                raise ValueError(f"details must hold one dict per target ({len(targets)})")
            try:
                json.dumps(details)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"details must be JSON-serialisable: {exc}") from exc
        object.__setattr__(self, "details", details)
        read_only = maps.view()
        read_only.flags.writeable = False
        object.__setattr__(self, "degenerate", tuple(bool(flag) for flag in degenerate))
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "attributions", read_only)
        object.__setattr__(self, "params", dict(self.params))


def resolve_layer(model: nn.Module, dotted_name: str) -> nn.Module:
    """Return the sub-module of ``model`` registered under ``dotted_name``.

    Args:
        model: any ``torch.nn.Module``.
        dotted_name: a name as listed by ``model.named_modules()``, e.g. ``"_conv_head"`` or
            ``"_blocks.15._project_conv"``.  The empty string is not accepted (it would name the
            whole model, which has no spatial output).

    Returns:
        The sub-module (the same object, not a copy).

    Raises:
        ExplainerConfigError: if no module has that name; the message names the missing layer
            and lists a few valid names (the last convolutional layers first).
    """
    modules = dict(model.named_modules())
    if dotted_name and dotted_name in modules:
        return modules[dotted_name]
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    others = [n for n in modules if n and n not in convs]
    candidates = (convs[::-1] + others[::-1])[:_MAX_LAYER_SUGGESTIONS]
    raise ExplainerConfigError(
        f"model {type(model).__name__} has no layer named {dotted_name!r}; "
        f"valid names include: {', '.join(repr(c) for c in candidates) or '(none)'}"
    )


def suggest_target_layer(model: nn.Module) -> str:
    """Return the dotted name of the last ``nn.Conv2d`` registered in ``model``.

    This is the usual Grad-CAM choice (Selvaraju et al., ICCV 2017, Sec. 3: the last
    convolutional layer balances high-level semantics and spatial detail).  "Last" means last in
    registration order (``model.named_modules()``), which for sequential CNNs such as
    EfficientNet-Lite0 (``"_conv_head"``) is also the last one executed.

    Raises:
        ExplainerConfigError: if the model contains no ``nn.Conv2d``.
    """
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and name]
    if not convs:
        raise ExplainerConfigError(
            f"model {type(model).__name__} has no nn.Conv2d layer; pass target_layer explicitly"
        )
    return convs[-1]


def eval_mode(model: nn.Module) -> nn.Module:
    """Put ``model`` and all its submodules in eval mode; returns it.

    Only calls ``model.eval()`` when some module is still in training mode: reading the flags
    costs a tenth of setting them again (about 2 ms on EfficientNet-Lite0's 200 modules, per
    image explained).
    """
    if any(module.training for module in model.modules()):
        model.eval()
    return model


class Explainer(abc.ABC):
    """Abstract explanation method producing one ``(H, W)`` saliency map per target class.

    Subclasses set the class attributes and implement :meth:`_attribute`; callers use
    :meth:`explain`.

    Class attributes:
        key: short stable identifier used in registries and stored results, e.g. ``"gradcam"``.
        name: human-readable name, e.g. ``"Grad-CAM"``.
        paper: citation of the paper the implementation follows.
        accepted_params: names of the keyword parameters ``__init__`` accepts in ``**params``.
        non_negative: ``True`` when the method's maps are ``>= 0`` by construction (display
            with a sequential colour map); ``False`` (default) for signed maps (display with a
            diverging colour map symmetric around 0).  It also decides which maps
            :meth:`explain` flags as degenerate: all zero (signed) or ``<= 0`` everywhere
            (non-negative).

    Maps are returned unnormalised: plugins must not rescale them (e.g. to ``[0, 1]``), which
    divides by zero on a flat map.  :meth:`explain` rejects NaN/inf values and flags flat maps
    in :attr:`ExplanationResult.degenerate`.

    Args:
        model: a classifier mapping a float32 ``(N, C, H, W)`` batch to ``(N, K)`` scores
            (logits); ``K`` is the number of classes.
        target_layer: dotted module name for layer-based methods (``None``: method default).
        **params: method parameters; names outside ``accepted_params`` are rejected.

    Raises:
        ExplainerConfigError: if ``model`` is not an ``nn.Module`` or a parameter is unknown.
    """

    key: ClassVar[str]
    name: ClassVar[str]
    paper: ClassVar[str]
    accepted_params: ClassVar[frozenset[str]] = frozenset()
    non_negative: ClassVar[bool] = False

    def __init__(self, model: nn.Module, *, target_layer: str | None = None, **params: Any) -> None:
        if not isinstance(model, nn.Module):
            raise ExplainerConfigError(
                f"model must be a torch.nn.Module, got {type(model).__name__}"
            )
        unknown = sorted(set(params) - self.accepted_params)
        if unknown:
            raise ExplainerConfigError(
                f"{type(self).__name__} does not accept parameter(s) {unknown}; "
                f"accepted: {sorted(self.accepted_params)}"
            )
        self.model = model
        self.target_layer = target_layer
        #: JSON-serialisable parameters actually used; copied into every ExplanationResult.
        #: Subclasses complete it (e.g. with the resolved layer name) in their ``__init__``.
        self.params: dict[str, Any] = dict(params)

    def explain(
        self, inputs: torch.Tensor, targets: Sequence[int], *, num_classes: int | None = None
    ) -> ExplanationResult:
        """Compute one saliency map per target class for a single image.

        Puts ``self.model`` in eval mode (and leaves it there), runs one gradient-free forward
        pass to check the output width, then calls :meth:`_attribute`.

        Args:
            inputs: ``torch.float32`` tensor of shape ``(1, C, H, W)``, already preprocessed as
                the model expects (e.g. ImageNet-normalised); finite values.  Not modified.
            targets: non-empty sequence (or 1-D NumPy array) of class indices ``0 <= t < K``
                (Python or NumPy integers; ``bool`` is rejected).  Duplicates are allowed.
            num_classes: the model's output width ``K`` when the caller knows it (e.g. a
                registered model); skips the gradient-free forward pass that checks it.

        Returns:
            :class:`ExplanationResult` with ``attributions`` of shape ``(len(targets), H, W)``,
            dtype ``float32``.  A map that is zero everywhere (for :attr:`non_negative`
            methods: ``<= 0`` everywhere) is returned as an exact all-zero map (no ``-0.0``)
            with ``degenerate[i] = True``.

        Raises:
            ExplainerInputError: wrong tensor type/dtype/shape, non-finite values, empty
                targets, non-integer targets, targets outside ``[0, K)``, or a model that
                rejects the input (e.g. wrong channel count).
            ExplainerConfigError: the model does not return a ``(1, K)`` tensor.
            ExplainerOutputError: :meth:`_attribute` returned a malformed array, including
                NaN or infinite values (e.g. from a ``0 / 0`` normalisation of a flat map).
        """
        self._check_inputs(inputs)
        target_tuple = self._check_target_types(targets)
        eval_mode(self.model)
        # The caller may know the output width (a registered model checked it at registration):
        # then the extra gradient-free forward pass that checks it is skipped.
        if num_classes is None:
            num_classes = self._num_classes(inputs)
        bad = [t for t in target_tuple if not 0 <= t < num_classes]
        if bad:
            raise ExplainerInputError(
                f"target class(es) {bad} out of range: the model has {num_classes} outputs, "
                f"valid targets are 0..{num_classes - 1}"
            )
        maps = self._attribute(inputs, target_tuple)
        details: tuple[dict, ...] = ()
        if isinstance(maps, tuple):  # (maps, one details dict per target)
            maps, details = maps[0], tuple(maps[1])
        maps = self._check_maps(maps, len(target_tuple), tuple(inputs.shape[-2:]))
        maps, degenerate = self._zero_degenerate_maps(maps)
        return ExplanationResult(
            method=self.key,
            targets=target_tuple,
            attributions=maps,
            params=dict(self.params),
            degenerate=degenerate,
            details=details,
        )

    @abc.abstractmethod
    def _attribute(self, inputs: torch.Tensor, targets: tuple[int, ...]) -> np.ndarray:
        """Compute the maps; called by :meth:`explain` after validation, model in eval mode.

        Args:
            inputs: validated ``float32`` tensor of shape ``(1, C, H, W)``.
            targets: validated, non-empty tuple of in-range class indices.

        Returns:
            ``np.ndarray`` of shape ``(len(targets), H, W)``, finite values; it is cast to
            ``float32`` by the caller.  Must leave no hooks registered on the model.
            Methods with structured evidence return ``(maps, details)`` instead, ``details``
            holding one JSON-serialisable dict per target (:attr:`ExplanationResult.details`).
        """

    # -- validation helpers ------------------------------------------------------------------

    @staticmethod
    def _check_inputs(inputs: torch.Tensor) -> None:
        if not isinstance(inputs, torch.Tensor):
            raise ExplainerInputError(
                f"inputs must be a torch.Tensor of shape (1, C, H, W), got {type(inputs).__name__}"
            )
        if inputs.dtype != torch.float32:
            raise ExplainerInputError(f"inputs must have dtype torch.float32, got {inputs.dtype}")
        if inputs.ndim != 4 or inputs.shape[0] != 1:
            raise ExplainerInputError(
                f"inputs must have shape (1, C, H, W) (one image), got {tuple(inputs.shape)}"
            )
        if inputs.numel() == 0:
            raise ExplainerInputError(f"inputs must not be empty, got {tuple(inputs.shape)}")
        if not bool(torch.isfinite(inputs).all()):
            raise ExplainerInputError("inputs contain NaN or infinite values")

    @staticmethod
    def _check_target_types(targets: Sequence[int]) -> tuple[int, ...]:
        if isinstance(targets, np.ndarray) and targets.ndim == 1:
            targets = list(targets)
        if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence):
            raise ExplainerInputError(
                f"targets must be a sequence of class indices, got {type(targets).__name__}"
            )
        if len(targets) == 0:
            raise ExplainerInputError("targets must contain at least one class index")
        result = []
        for t in targets:
            if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
                raise ExplainerInputError(
                    f"targets must be integers, got {t!r} ({type(t).__name__})"
                )
            result.append(int(t))
        return tuple(result)

    def _num_classes(self, inputs: torch.Tensor) -> int:
        try:
            with torch.no_grad():
                output = self.model(inputs)
        except RuntimeError as exc:
            raise ExplainerInputError(
                f"model {type(self.model).__name__} rejected inputs of shape "
                f"{tuple(inputs.shape)}: {exc}"
            ) from exc
        if not isinstance(output, torch.Tensor) or output.ndim != 2 or output.shape[0] != 1:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise ExplainerConfigError(
                f"model must return class scores of shape (1, K) for one image, got {shape}"
            )
        return int(output.shape[1])

    def _check_maps(self, maps: np.ndarray, n_targets: int, spatial: tuple[int, int]) -> np.ndarray:
        if not isinstance(maps, np.ndarray):
            raise ExplainerOutputError(
                f"{type(self).__name__}._attribute must return np.ndarray, "
                f"got {type(maps).__name__}"
            )
        expected = (n_targets, *spatial)
        if maps.shape != expected:
            raise ExplainerOutputError(
                f"{type(self).__name__}._attribute returned shape {maps.shape}, expected {expected}"
            )
        maps = maps.astype(np.float32, copy=False)
        if not np.all(np.isfinite(maps)):
            raise ExplainerOutputError(
                f"{type(self).__name__}._attribute returned NaN or infinite values "
                "(explainers must return unnormalised maps; a 0/0 normalisation of a flat map "
                "gives NaN)"
            )
        return maps

    def _zero_degenerate_maps(self, maps: np.ndarray) -> tuple[np.ndarray, tuple[bool, ...]]:
        """Flag maps without any evidence and store them as exact zeros (no ``-0.0``)."""
        flat = maps.reshape(len(maps), -1)
        if self.non_negative:
            degenerate = tuple(bool(flag) for flag in np.all(flat <= 0, axis=1))
        else:
            degenerate = tuple(bool(flag) for flag in np.all(flat == 0, axis=1))
        if any(degenerate):
            maps = maps.copy()  # may share memory with the plugin's tensors
            maps[np.array(degenerate)] = 0.0
        return maps, degenerate

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={type(self.model).__name__}, params={self.params})"
