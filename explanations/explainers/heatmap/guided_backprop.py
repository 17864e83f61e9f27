"""Guided Backpropagation and Guided Grad-CAM via Captum.

Guided Backpropagation: Springenberg, Dosovitskiy, Brox and Riedmiller, "Striving for
Simplicity: The All Convolutional Net", ICLR Workshop 2015 (arXiv:1412.6806), Sec. 3.4 and
Fig. 1: the gradient of the class score is back-propagated as usual, except that at every ReLU
only positive gradients are passed back, and only where the ReLU's input was positive:
``R_l = (f_l > 0) * (R_{l+1} > 0) * R_{l+1}``.  ``captum.attr.GuidedBackprop`` implements this
with backward hooks on the model's ``nn.ReLU`` modules; this plugin also hooks ``nn.ReLU6``
(the rectifier of EfficientNet-Lite and MobileNet, which Captum skips and which would otherwise
give the plain gradient): the hook zeroes negative gradients after the module's own backward
(``(0 < f_l < 6) * R_{l+1}``), the same rule applied to the clipped rectifier.  Rectifiers
applied with ``torch.nn.functional`` inside ``forward`` and other activations (SiLU, GELU, ...)
keep their ordinary gradient.

Guided Grad-CAM: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017, Sec. 3.1: the element-wise product of the guided
backpropagation map and the Grad-CAM map upsampled to the input size.  ``captum.attr.
GuidedGradCam`` computes Grad-CAM with ``relu_attributions=True``; the map is upsampled
bilinearly (as in the ``gradcam`` plugin, not Captum's default nearest-neighbour).

Both are explained on an in-place-free view of the model (see
:class:`explanations.explainers.heatmap.saliency.HeatmapExplainer`): Captum's ReLU hooks fail
on ``nn.ReLU(inplace=True)``; the caller's model is not modified.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from captum._utils.common import _register_backward_hook  # private; captum is pinned
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import GuidedGradCam as CaptumGuidedGradCam
from torch import nn

from explanations.explainers.base import (
    ExplainerConfigError,
    resolve_layer,
    suggest_target_layer,
)
from explanations.explainers.heatmap.saliency import (
    HeatmapExplainer,
    input_leaf,
    sum_over_channels,
)

__all__ = ["GuidedBackprop", "GuidedGradCam"]

#: Captum warns on every call that it sets (and later removes) ReLU backward hooks.
_HOOK_WARNING = "Setting backward hooks on ReLU activations"

#: Modules whose backward pass is guided (Captum: ``nn.ReLU`` only).
RECTIFIERS = (nn.ReLU, nn.ReLU6)


class _RectifierGuidedBackprop(CaptumGuidedBackprop):
    """Captum's guided backpropagation, guided at ``nn.ReLU`` *and* ``nn.ReLU6`` modules."""

    def _register_hooks(self, module: nn.Module) -> None:
        if isinstance(module, RECTIFIERS):
            self.backward_hooks.extend(_register_backward_hook(module, self._backward_hook, self))


def _guided_gradcam(model: nn.Module, layer: nn.Module) -> CaptumGuidedGradCam:
    guided_gradcam = CaptumGuidedGradCam(model, layer)
    guided_gradcam.guided_backprop = _RectifierGuidedBackprop(model)
    return guided_gradcam


class GuidedBackprop(HeatmapExplainer):
    """Guided Backpropagation (Springenberg et al., ICLR Workshop 2015), one map per target.

    Args:
        model: classifier mapping a float32 ``(N, C, H, W)`` batch to ``(N, K)`` logits; its
            rectifiers must be ``nn.ReLU`` or ``nn.ReLU6`` modules for the guidance to apply
            (elsewhere the gradient passes unguided).
        target_layer: ignored (accepted so that every plugin is built the same way).

    No method parameters (the paper has none); ``params`` is ``{"channel_reduction": "sum"}``.

    ``explain`` returns ``float32`` maps of shape ``(T, H, W)``: the guided gradient summed over
    the input channels, SIGNED (display with a diverging colour map symmetric around 0), not
    normalised.  A score that does not depend on the input gives an all-zero map flagged
    ``degenerate``.

    Raises:
        ExplainerConfigError: (constructor) extra parameters.
        ExplainerInputError: see :meth:`Explainer.explain`.
    """

    key: ClassVar[str] = "guided_backprop"
    name: ClassVar[str] = "Guided Backpropagation"
    paper: ClassVar[str] = (
        "Springenberg, J. T., Dosovitskiy, A., Brox, T., & Riedmiller, M. Striving for "
        "Simplicity: The All Convolutional Net. ICLR Workshop 2015."
    )

    def __init__(self, model: nn.Module, *, target_layer: str | None = None, **params: Any) -> None:
        super().__init__(model, target_layer=target_layer, **params)
        self.params = {"channel_reduction": "sum"}

    def _attribute(self, inputs: torch.Tensor, targets: tuple[int, ...]) -> np.ndarray:
        model = self._explained_model()
        maps = []
        with torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_HOOK_WARNING)
            image = inputs.detach().clone()
            for target in targets:
                # A fresh Captum object per call: it keeps a list of (removed) hook handles.
                guided = _RectifierGuidedBackprop(model)
                gradient = self._or_zero_if_disconnected(
                    model,
                    image,
                    target,
                    lambda g=guided, t=target: g.attribute(input_leaf(image), target=t),
                )
                maps.append(sum_over_channels(gradient)[0])
        return np.stack(maps)


class GuidedGradCam(HeatmapExplainer):
    """Guided Grad-CAM (Selvaraju et al., ICCV 2017): guided backprop x upsampled Grad-CAM.

    Args:
        model: classifier mapping a float32 ``(N, C, H, W)`` batch to ``(N, K)`` logits.
        target_layer: dotted name of the Grad-CAM layer (4-D output); default: the last
            registered ``nn.Conv2d``, as in the ``gradcam`` plugin.

    No further parameters; ``params`` is
    ``{"layer": <name>, "relu_attributions": True, "upsample": "bilinear",
    "channel_reduction": "sum"}``.

    ``explain`` returns ``float32`` maps of shape ``(T, H, W)``:
    ``sum_c GB_c(x) * upsample(Grad-CAM)``, which equals the ``guided_backprop`` map times the
    ``gradcam`` map of the same target.  Grad-CAM is ``>= 0``, so the sign is that of guided
    backpropagation: SIGNED (display with a diverging colour map symmetric around 0).  Not
    normalised.  A score that does not depend on the input gives an all-zero map flagged
    ``degenerate``.

    Raises:
        ExplainerConfigError: (constructor) unknown ``target_layer`` or extra parameters, a
            model without ``nn.Conv2d`` and no ``target_layer``; (``explain``) the layer is not
            executed by the forward pass or its output is not ``(N, C', h, w)``.
        ExplainerInputError: see :meth:`Explainer.explain`.
    """

    key: ClassVar[str] = "guided_gradcam"
    name: ClassVar[str] = "Guided Grad-CAM"
    paper: ClassVar[str] = (
        "Selvaraju, R. R., Cogswell, M., Das, A., Vedantam, R., Parikh, D., & Batra, D. "
        "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization. "
        "ICCV 2017."
    )

    upsample_mode: ClassVar[str] = "bilinear"

    def __init__(self, model: nn.Module, *, target_layer: str | None = None, **params: Any) -> None:
        super().__init__(model, target_layer=target_layer, **params)
        layer_name = target_layer if target_layer is not None else suggest_target_layer(model)
        resolve_layer(model, layer_name)  # fail early on an unknown name
        self.target_layer = layer_name
        self.params = {
            "layer": layer_name,
            "relu_attributions": True,
            "upsample": self.upsample_mode,
            "channel_reduction": "sum",
        }

    def _attribute(self, inputs: torch.Tensor, targets: tuple[int, ...]) -> np.ndarray:
        model = self._explained_model()
        layer = resolve_layer(model, self.target_layer)  # the copy's module of that name
        maps = []
        with torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_HOOK_WARNING)
            image = inputs.detach().clone()
            for target in targets:
                guided_gradcam = _guided_gradcam(model, layer)

                def compute(g: CaptumGuidedGradCam = guided_gradcam, t: int = target) -> Any:
                    try:
                        return g.attribute(
                            input_leaf(image), target=t, interpolate_mode=self.upsample_mode
                        )
                    except AssertionError as exc:  # Captum: "Forward hook did not obtain ..."
                        raise ExplainerConfigError(
                            f"layer {self.target_layer!r} produced no output during the "
                            f"forward pass of {type(self.model).__name__}: {exc}"
                        ) from exc

                attribution = self._or_zero_if_disconnected(model, image, target, compute)
                if not isinstance(attribution, torch.Tensor) or attribution.shape != image.shape:
                    raise ExplainerConfigError(
                        f"Guided Grad-CAM needs a layer with a single (N, C, h, w) output; "
                        f"layer {self.target_layer!r} could not be upsampled to the input"
                    )
                maps.append(sum_over_channels(attribution)[0])
        return np.stack(maps)
