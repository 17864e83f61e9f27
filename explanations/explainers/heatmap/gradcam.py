"""Grad-CAM saliency maps via Captum.

Selvaraju, Cogswell, Das, Vedantam, Parikh and Batra, "Grad-CAM: Visual Explanations from Deep
Networks via Gradient-based Localization", ICCV 2017 (arXiv:1610.02391).

For a convolutional layer with feature maps ``A^k`` (``k`` = channel, spatial size ``h x w``)
and the class score ``y^c`` (pre-softmax logit), Grad-CAM computes

* neuron-importance weights ``alpha_k^c = 1/(h*w) * sum_ij d y^c / d A^k_ij`` (Eq. 1), and
* the map ``L^c = ReLU(sum_k alpha_k^c A^k)`` (Eq. 2), of size ``h x w``,

which is then upsampled bilinearly to the input size (Sec. 3).  The computation is delegated to
``captum.attr.LayerGradCam`` (``relu_attributions=True``) and
``captum.attr.LayerAttribution.interpolate`` (``interpolate_mode="bilinear"``, i.e.
``torch.nn.functional.interpolate`` with ``align_corners=False``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from explanations.explainers.base import (
    Explainer,
    ExplainerConfigError,
    resolve_layer,
    suggest_target_layer,
)

__all__ = ["GradCam"]


class GradCam(Explainer):
    """Grad-CAM (Selvaraju et al., ICCV 2017), one map per target class, upsampled to the input.

    Args:
        model: classifier mapping a float32 ``(N, C, H, W)`` batch to ``(N, K)`` logits.  It
            must treat batch elements independently in eval mode (true for CNNs with
            BatchNorm/Dropout), because all targets are computed in one batch.
        target_layer: dotted name of the layer whose 4-D output ``(N, C', h, w)`` is used as
            ``A``; default: the last registered ``nn.Conv2d`` (``"_conv_head"`` for
            EfficientNet-Lite0).  The layer must be executed by ``model.forward``.

    ``explain`` returns ``float32`` maps of shape ``(T, H, W)`` with values ``>= 0`` (ReLU, then
    bilinear interpolation, which is a convex combination), in units of "logit per activation";
    they are not normalised.  ``params`` is
    ``{"layer": <name>, "relu_attributions": True, "upsample": "bilinear"}``.

    Raises:
        ExplainerConfigError: (constructor) unknown ``target_layer`` or extra parameters;
            (``explain``) the layer is not executed by the forward pass or its output is not
            ``(N, C', h, w)``.
        ExplainerInputError: see :meth:`Explainer.explain`.
    """

    key: ClassVar[str] = "gradcam"
    name: ClassVar[str] = "Grad-CAM"
    paper: ClassVar[str] = (
        "Selvaraju, R. R., Cogswell, M., Das, A., Vedantam, R., Parikh, D., & Batra, D. "
        "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization. "
        "ICCV 2017."
    )

    #: Interpolation used to bring the layer-resolution map to the input resolution.
    upsample_mode: ClassVar[str] = "bilinear"

    def __init__(self, model: nn.Module, *, target_layer: str | None = None, **params: Any) -> None:
        super().__init__(model, target_layer=target_layer, **params)
        layer_name = target_layer if target_layer is not None else suggest_target_layer(model)
        self.layer: nn.Module = resolve_layer(model, layer_name)
        self.target_layer = layer_name
        self.params = {
            "layer": layer_name,
            "relu_attributions": True,
            "upsample": self.upsample_mode,
        }

    def _attribute(self, inputs: torch.Tensor, targets: tuple[int, ...]) -> np.ndarray:
        height, width = int(inputs.shape[-2]), int(inputs.shape[-1])
        # A fresh LayerGradCam per call: Captum registers its forward hook inside attribute()
        # and removes it in a ``finally`` block, so nothing stays attached to the model.
        grad_cam = LayerGradCam(self.model, self.layer)
        # inference_mode(False) + clone: works even when the caller is inside
        # torch.inference_mode() / torch.no_grad(); Captum enables gradients itself.
        with torch.inference_mode(False), torch.enable_grad():
            batch = inputs.detach().clone().repeat(len(targets), 1, 1, 1)
            try:
                layer_maps = grad_cam.attribute(batch, target=list(targets), relu_attributions=True)
            except AssertionError as exc:  # Captum's "Forward hook did not obtain any outputs"
                raise ExplainerConfigError(
                    f"layer {self.target_layer!r} produced no output during the forward pass of "
                    f"{type(self.model).__name__}: {exc}"
                ) from exc
            if not isinstance(layer_maps, torch.Tensor) or layer_maps.ndim != 4:
                shape = getattr(layer_maps, "shape", type(layer_maps).__name__)
                raise ExplainerConfigError(
                    f"Grad-CAM needs a layer with a single (N, C, h, w) output; layer "
                    f"{self.target_layer!r} gave attributions of shape {shape}"
                )
            upsampled = LayerAttribution.interpolate(
                layer_maps, (height, width), interpolate_mode=self.upsample_mode
            )
        # (T, 1, H, W) -> (T, H, W)
        return upsampled.detach()[:, 0].to(device="cpu", dtype=torch.float32).numpy()
