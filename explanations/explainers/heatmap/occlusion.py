"""Occlusion sensitivity maps via Captum.

Zeiler and Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014
(arXiv:1311.2901), Sec. 4.2 and Fig. 7: a grey square is slid over the image and the change of
the classifier's output is recorded for every position.  ``captum.attr.Occlusion`` replaces a
window of ``window`` pixels (all channels at once) with the baseline 0, moves it by ``stride``
pixels, and attributes to every pixel the average, over the windows covering it, of

    F(x) - F(x with the window occluded)

where ``F`` is the target's logit.  Windows at the right/bottom edge are clipped, so every pixel
is covered at least once.  The paper used windows of about 1/10 of the image side (the
``window = 16 px, stride = 8 px`` at ``224 x 224`` default here scales with the input size) and
plotted the class probability; this plugin uses the logit, like the gradient methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

from explanations.explainers.base import (
    ExplainerConfigError,
    ExplainerInputError,
    ExplainerOutputError,
    ExplanationResult,
)
from explanations.explainers.heatmap.saliency import HeatmapExplainer, check_int

__all__ = ["Occlusion"]

#: Default window and stride at the reference input side of 224 pixels.
_REFERENCE_SIDE = 224
_REFERENCE_WINDOW = 16


def _pair(name: str, value: Any) -> tuple[int, int] | None:
    """``None`` (auto), an int, or a pair of ints -> ``(h, w)``."""
    if value is None or value == "auto":
        return None
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if len(value) != 2:
            raise ExplainerConfigError(
                f"parameter {name!r} must be an int or a pair (h, w), got {value!r}"
            )
        return (check_int(name, value[0], minimum=1), check_int(name, value[1], minimum=1))
    side = check_int(name, value, minimum=1)
    return (side, side)


def default_window(side: int) -> int:
    """``round(16 * side / 224)``, at least 1: 16 px at 224, 2 px at 32, 1 px at 16."""
    return max(1, round(_REFERENCE_WINDOW * side / _REFERENCE_SIDE))


class Occlusion(HeatmapExplainer):
    """Occlusion (Zeiler & Fergus, ECCV 2014): logit drop when a window is set to 0.

    Args:
        model: classifier mapping a float32 ``(N, C, H, W)`` batch to ``(N, K)`` logits.
        target_layer: ignored (accepted so that every plugin is built the same way).
        window: occluding square side in pixels, an int or ``[h, w]``; default ``"auto"``:
            ``round(16 * side / 224)`` per side (16 px for a 224 px input, 1 px for 16 px).
        stride: step between windows, an int or ``[h, w]``, at most ``window``; default
            ``"auto"``: ``max(1, window // 2)`` (8 px for a 224 px input).
        batch_size: occluded images per forward pass (Captum's ``perturbations_per_eval``),
            default 32; does not change the result.

    The occluded pixels are set to 0 in the model's input space (the dataset-mean colour for a
    mean/std-normalised model), in all channels at once.  ``params`` records ``window`` and
    ``stride`` as given (``"auto"`` or ``[h, w]``), ``batch_size``, ``"baseline": 0.0`` and
    ``"channel_reduction": "mean"``; the result's ``params`` add the ``window_px`` and
    ``stride_px`` actually used for that input.

    ``explain`` returns ``float32`` maps of shape ``(T, H, W)``: for every pixel the mean, over
    the windows covering it, of ``logit(x) - logit(x occluded)``.  The window spans all
    channels, so the per-channel maps are identical and the channel reduction (mean) changes
    nothing.  SIGNED: positive where occlusion lowers the score (evidence for the class),
    negative where it raises it; display with a diverging colour map symmetric around 0.  Not
    normalised.  All targets are computed from the same occluded forward passes.  A score that
    does not depend on the input gives an all-zero map flagged ``degenerate``.

    Raises:
        ExplainerConfigError: (constructor) unknown parameter, a window/stride that is not a
            positive int or pair, or an explicit stride larger than an explicit window.
        ExplainerInputError: see :meth:`Explainer.explain`; also a window larger than the
            input, or an explicit stride larger than the automatic window.
    """

    key: ClassVar[str] = "occlusion"
    name: ClassVar[str] = "Occlusion"
    paper: ClassVar[str] = (
        "Zeiler, M. D., & Fergus, R. Visualizing and Understanding Convolutional Networks. "
        "ECCV 2014."
    )
    accepted_params: ClassVar[frozenset[str]] = frozenset({"window", "stride", "batch_size"})

    def __init__(self, model: nn.Module, *, target_layer: str | None = None, **params: Any) -> None:
        super().__init__(model, target_layer=target_layer, **params)
        self.window = _pair("window", params.get("window"))
        self.stride = _pair("stride", params.get("stride"))
        if self.window is not None and self.stride is not None:
            if any(s > w for s, w in zip(self.stride, self.window, strict=True)):
                raise ExplainerConfigError(
                    f"parameter 'stride' {list(self.stride)} must not exceed 'window' "
                    f"{list(self.window)} (pixels between windows would never be occluded)"
                )
        self.batch_size = check_int("batch_size", params.get("batch_size", 32), minimum=1)
        self.params = {
            "window": list(self.window) if self.window else "auto",
            "stride": list(self.stride) if self.stride else "auto",
            "batch_size": self.batch_size,
            "baseline": 0.0,
            "channel_reduction": "mean",
        }

    def _geometry(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        window = self.window or (default_window(height), default_window(width))
        if window[0] > height or window[1] > width:
            raise ExplainerInputError(
                f"occlusion window {window[0]}x{window[1]} is larger than the input "
                f"{height}x{width}"
            )
        stride = self.stride or (max(1, window[0] // 2), max(1, window[1] // 2))
        if any(s > w for s, w in zip(stride, window, strict=True)):
            raise ExplainerInputError(
                f"occlusion stride {stride[0]}x{stride[1]} exceeds the window "
                f"{window[0]}x{window[1]} chosen for a {height}x{width} input"
            )
        return window, stride

    def explain(
        self, inputs: torch.Tensor, targets: Sequence[int], *, num_classes: int | None = None
    ) -> ExplanationResult:
        """See :meth:`Explainer.explain`; ``params`` also hold ``window_px``/``stride_px``."""
        result = super().explain(inputs, targets, num_classes=num_classes)
        window, stride = self._geometry(int(inputs.shape[-2]), int(inputs.shape[-1]))
        return dataclasses.replace(
            result, params={**result.params, "window_px": list(window), "stride_px": list(stride)}
        )

    def _attribute(self, inputs: torch.Tensor, targets: tuple[int, ...]) -> np.ndarray:
        channels, height, width = (int(s) for s in inputs.shape[1:])
        window, stride = self._geometry(height, width)
        columns = list(targets)
        model = self._explained_model()

        def scores(batch: torch.Tensor) -> torch.Tensor:
            return model(batch)[:, columns]  # (N, T): every target from one forward pass

        with torch.no_grad():
            attribution = CaptumOcclusion(scores).attribute(
                inputs.detach().clone(),
                sliding_window_shapes=(channels, *window),
                strides=(channels, *stride),
                baselines=0.0,
                perturbations_per_eval=self.batch_size,
            )
        expected = (len(targets), channels, height, width)
        if tuple(attribution.shape) != expected:  # pragma: no cover - Captum API change
            raise ExplainerOutputError(
                f"Captum Occlusion returned shape {tuple(attribution.shape)}, expected {expected}"
            )
        return attribution.mean(dim=1).to(device="cpu", dtype=torch.float32).numpy()
