"""Integrated Gradients via Captum.

Sundararajan, Taly and Yan, "Axiomatic Attribution for Deep Networks", ICML 2017
(arXiv:1703.01365), Eq. 1:

    IG_i(x) = (x_i - x'_i) * integral_0^1 d F(x' + a (x - x')) / d x_i  da

for a baseline ``x'`` (the paper uses the black image for image models, Sec. 3).  The integral
is approximated by ``captum.attr.IntegratedGradients`` with ``n_steps = 50`` (the paper
suggests 20-300 steps, Sec. 4) and Captum's default Gauss-Legendre quadrature.  By the
completeness axiom ``sum_i IG_i(x) = F(x) - F(x')``; Captum's ``return_convergence_delta``
gives the quadrature error ``sum_i IG_i(x) - (F(x) - F(x'))``, which this plugin reports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from torch import nn

from explanations.explainers.base import (
    ExplainerConfigError,
    ExplainerInputError,
    ExplanationResult,
)
from explanations.explainers.heatmap.saliency import (
    HeatmapExplainer,
    check_float,
    check_int,
    gradient_is_disconnected,
    input_leaf,
    sum_over_channels,
)

__all__ = ["IntegratedGradients"]

_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


class IntegratedGradients(HeatmapExplainer):
    """Integrated Gradients (Sundararajan et al., ICML 2017), signed, one map per target.

    Args:
        model: classifier mapping a float32 ``(N, C, H, W)`` batch to ``(N, K)`` logits.
        target_layer: ignored (accepted so that every plugin is built the same way).
        baseline: ``"zero"`` (default): ``x' = 0`` in the model's input space, i.e. the
            dataset-mean colour for a mean/std-normalised model; or ``"constant"``: ``x'``
            filled with ``baseline_value``.  The paper's black image needs the normalisation,
            which the explainer does not know: pass ``baseline="constant"`` with
            ``baseline_value = [-mean_c / std_c for each channel]``.  ``"black"`` is rejected
            with that advice.
        baseline_value: a number or one number per input channel; only with ``"constant"``.
        n_steps: quadrature points, paper range 20-300, default 50.
        method: Captum's approximation method, default ``"gausslegendre"`` (also
            ``"riemann_trapezoid"``, ``"riemann_left"``, ``"riemann_right"``,
            ``"riemann_middle"``).
        batch_size: interpolation points per forward/backward pass (Captum's
            ``internal_batch_size``), default 25; does not change the result.

    ``explain`` returns ``float32`` maps of shape ``(T, H, W)``: ``sum_c IG_c`` over the input
    channels, SIGNED (positive: moving from the baseline to the image at that pixel raises the
    logit).  Display with a diverging colour map symmetric around 0.  Not normalised; the sum
    of a map is ``F(x) - F(x')`` up to the quadrature error.  The result's ``params`` add
    ``"convergence_delta"``: one float per target, ``sum(map) - (F(x) - F(x'))``; the same
    values are in :attr:`last_convergence_deltas` after each call.  A score that does not
    depend on the input gives an all-zero map flagged ``degenerate``.

    Raises:
        ExplainerConfigError: (constructor) unknown parameter, unknown ``baseline`` or
            ``method``, ``baseline_value`` without ``"constant"`` (or missing with it),
            non-finite values, ``n_steps < 1`` or ``batch_size < 1``.
        ExplainerInputError: see :meth:`Explainer.explain`; also a per-channel
            ``baseline_value`` whose length differs from the input's channel count.
    """

    key: ClassVar[str] = "integrated_gradients"
    name: ClassVar[str] = "Integrated Gradients"
    paper: ClassVar[str] = (
        "Sundararajan, M., Taly, A., & Yan, Q. Axiomatic Attribution for Deep Networks. ICML 2017."
    )
    accepted_params: ClassVar[frozenset[str]] = frozenset(
        {"baseline", "baseline_value", "n_steps", "method", "batch_size"}
    )

    def __init__(self, model: nn.Module, *, target_layer: str | None = None, **params: Any) -> None:
        super().__init__(model, target_layer=target_layer, **params)
        baseline = params.get("baseline", "zero")
        if baseline == "black":
            raise ExplainerConfigError(
                "baseline 'black' needs the model's input normalisation, which the explainer "
                "does not know; use baseline='constant' with baseline_value=[-mean_c / std_c, "
                "...] (one value per channel)"
            )
        if baseline not in ("zero", "constant"):
            raise ExplainerConfigError(
                f"parameter 'baseline' must be 'zero' or 'constant', got {baseline!r}"
            )
        value = params.get("baseline_value")
        if baseline == "zero":
            if value is not None:
                raise ExplainerConfigError(
                    "parameter 'baseline_value' is only used with baseline='constant'"
                )
            values: list[float] = [0.0]
        else:
            if value is None:
                raise ExplainerConfigError("baseline='constant' needs a 'baseline_value'")
            if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
                if len(value) == 0:
                    raise ExplainerConfigError("parameter 'baseline_value' must not be empty")
                values = [check_float("baseline_value", v) for v in value]
            else:
                values = [check_float("baseline_value", value)]
        method = params.get("method", "gausslegendre")
        if method not in _METHODS:
            raise ExplainerConfigError(
                f"parameter 'method' must be one of {list(_METHODS)}, got {method!r}"
            )
        self.baseline = baseline
        self.baseline_values = values
        self.n_steps = check_int("n_steps", params.get("n_steps", 50), minimum=1)
        self.method = method
        self.batch_size = check_int("batch_size", params.get("batch_size", 25), minimum=1)
        #: ``sum(map) - (F(x) - F(x'))`` per target of the last :meth:`explain` call.
        self.last_convergence_deltas: tuple[float, ...] = ()
        self.params = {
            "baseline": baseline,
            "baseline_value": values if len(values) > 1 else values[0],
            "n_steps": self.n_steps,
            "method": method,
            "batch_size": self.batch_size,
            "channel_reduction": "sum",
        }

    def explain(
        self, inputs: torch.Tensor, targets: Sequence[int], *, num_classes: int | None = None
    ) -> ExplanationResult:
        """See :meth:`Explainer.explain`; ``params`` also hold ``"convergence_delta"``."""
        self.last_convergence_deltas = ()
        result = super().explain(inputs, targets, num_classes=num_classes)
        return dataclasses.replace(
            result,
            params={**result.params, "convergence_delta": list(self.last_convergence_deltas)},
        )

    def _baseline(self, image: torch.Tensor) -> torch.Tensor:
        channels = int(image.shape[1])
        values = self.baseline_values
        if len(values) not in (1, channels):
            raise ExplainerInputError(
                f"baseline_value has {len(values)} values but the input has {channels} channels"
            )
        per_channel = torch.tensor(values, dtype=image.dtype, device=image.device)
        return per_channel.reshape(1, -1, 1, 1).expand_as(image).contiguous()

    def _attribute(self, inputs: torch.Tensor, targets: tuple[int, ...]) -> np.ndarray:
        model = self._explained_model()
        maps, deltas = [], []
        with torch.inference_mode(False), torch.enable_grad():
            image = inputs.detach().clone()
            baseline = self._baseline(image)
            for target in targets:
                ig = CaptumIntegratedGradients(model)
                try:
                    attribution, delta = ig.attribute(
                        input_leaf(image),
                        baselines=baseline,
                        target=target,
                        n_steps=self.n_steps,
                        method=self.method,
                        internal_batch_size=self.batch_size,
                        return_convergence_delta=True,
                    )
                except RuntimeError:
                    if not gradient_is_disconnected(model, image, target):
                        raise
                    attribution, delta = torch.zeros_like(image), torch.zeros(1)
                maps.append(sum_over_channels(attribution)[0])
                deltas.append(float(delta.reshape(-1)[0]))
        self.last_convergence_deltas = tuple(deltas)
        return np.stack(maps)
