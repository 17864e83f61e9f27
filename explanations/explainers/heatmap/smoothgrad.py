"""SmoothGrad saliency maps via Captum's ``NoiseTunnel`` around ``Saliency``.

Smilkov, Thorat, Kim, Viegas and Wattenberg, "SmoothGrad: removing noise by adding noise",
ICML Workshop on Visualization for Deep Learning 2017 (arXiv:1706.03825), Eq. 3:

    M^_c(x) = 1/n * sum_{i=1..n} M_c(x + N(0, sigma^2))

with ``M_c`` the gradient of the class score, ``n = 50`` samples and a noise level
``sigma / (x_max - x_min)`` of 10-20 % (Sec. 3.1, Fig. 3); this plugin uses 15 %.  The
average is taken over the signed gradients (``captum.attr.NoiseTunnel``, ``nt_type=
"smoothgrad"``, around ``captum.attr.Saliency`` with ``abs=False``); the averaged gradient is
then reduced over channels with ``max_k |.|`` as in vanilla saliency (Simonyan et al. 2014,
Sec. 3.1), which is also how the SmoothGrad paper visualises gradients (absolute values).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from captum.attr import NoiseTunnel
from captum.attr import Saliency as CaptumSaliency
from torch import nn

from explanations.explainers.heatmap.saliency import (
    HeatmapExplainer,
    check_float,
    check_int,
    input_leaf,
    max_abs_over_channels,
    seeded_rng,
)

__all__ = ["SmoothGrad"]


class SmoothGrad(HeatmapExplainer):
    """SmoothGrad (Smilkov et al., 2017): vanilla gradients averaged over noisy copies.

    Args:
        model: classifier mapping a float32 ``(N, C, H, W)`` batch to ``(N, K)`` logits.
        target_layer: ignored (accepted so that every plugin is built the same way).
        n_samples: number of noisy samples ``n``; paper default 50.
        noise_level: ``sigma / (x_max - x_min)``, where ``x_max - x_min`` is the value range of
            the input tensor (all channels, in the model's input space); paper: 0.1-0.2,
            default 0.15.  ``0`` gives vanilla saliency.
        seed: seed of the Gaussian noise (default 0).  The global torch RNG is left as it was;
            every target uses the same ``n`` noise samples, so the map of a target does not
            depend on the other targets requested with it.  The same seed gives the same map
            on the same device type (CPU and CUDA draw different noise).
        batch_size: noisy samples per forward/backward pass (a memory bound), default 10.
            Captum draws the noise batch by batch, so another ``batch_size`` draws other
            (equally distributed) noise; record it with the seed.

    ``params`` records all of them plus ``"channel_reduction": "max_abs"``.

    ``explain`` returns ``float32`` maps of shape ``(T, H, W)``, ``>= 0`` (non-negative:
    display with a sequential colour map starting at 0), in units of "logit per input unit",
    not normalised.  A score that does not depend on the input gives an all-zero map flagged
    ``degenerate``.

    Raises:
        ExplainerConfigError: (constructor) a parameter is unknown, not a number, or out of
            range (``n_samples >= 1``, ``noise_level >= 0``, ``seed >= 0``,
            ``batch_size >= 1``).
        ExplainerInputError: see :meth:`Explainer.explain`.
    """

    key: ClassVar[str] = "smoothgrad"
    name: ClassVar[str] = "SmoothGrad"
    paper: ClassVar[str] = (
        "Smilkov, D., Thorat, N., Kim, B., Viegas, F., & Wattenberg, M. SmoothGrad: removing "
        "noise by adding noise. ICML Workshop on Visualization for Deep Learning 2017."
    )
    accepted_params: ClassVar[frozenset[str]] = frozenset(
        {"n_samples", "noise_level", "seed", "batch_size"}
    )
    non_negative: ClassVar[bool] = True

    def __init__(self, model: nn.Module, *, target_layer: str | None = None, **params: Any) -> None:
        super().__init__(model, target_layer=target_layer, **params)
        self.n_samples = check_int("n_samples", params.get("n_samples", 50), minimum=1)
        self.noise_level = check_float("noise_level", params.get("noise_level", 0.15), minimum=0)
        self.seed = check_int("seed", params.get("seed", 0), minimum=0)
        self.batch_size = check_int("batch_size", params.get("batch_size", 10), minimum=1)
        self.params = {
            "n_samples": self.n_samples,
            "noise_level": self.noise_level,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "channel_reduction": "max_abs",
        }

    def _attribute(self, inputs: torch.Tensor, targets: tuple[int, ...]) -> np.ndarray:
        model = self._explained_model()
        maps = []
        with torch.inference_mode(False), torch.enable_grad():
            image = inputs.detach().clone()
            sigma = self.noise_level * float(image.max() - image.min())
            for target in targets:
                tunnel = NoiseTunnel(CaptumSaliency(model))

                def smoothgrad(tunnel: NoiseTunnel = tunnel, target: int = target) -> torch.Tensor:
                    with seeded_rng(image.device, self.seed):
                        return tunnel.attribute(
                            input_leaf(image),
                            nt_type="smoothgrad",
                            nt_samples=self.n_samples,
                            nt_samples_batch_size=self.batch_size,
                            stdevs=sigma,
                            target=target,
                            abs=False,
                        )

                gradient = self._or_zero_if_disconnected(model, image, target, smoothgrad)
                maps.append(max_abs_over_channels(gradient)[0])
        return np.stack(maps)
