"""Vanilla gradient saliency maps via Captum, plus the helpers shared by the gradient plugins.

Simonyan, Vedaldi and Zisserman, "Deep Inside Convolutional Networks: Visualising Image
Classification Models and Saliency Maps", ICLR Workshop 2014 (arXiv:1312.6034), Sec. 3.1:
the class saliency map of an image ``I`` for class ``c`` is ``M_ij = max_k |w_h(i,j,k)|`` with
``w = d S_c / d I`` the gradient of the (pre-softmax) class score at ``I`` and ``k`` the colour
channel.

Shared helpers of the heatmap plugins (``smoothgrad``, ``integrated_gradients``,
``guided_backprop``, ``occlusion``, ``lime``, ``rise`` import them from here):

* :class:`HeatmapExplainer` explains an *in-place-free* view of the model: when the model has
  modules with ``inplace=True`` (``nn.ReLU(inplace=True)``, ``nn.Dropout(inplace=True)``, ...)
  it explains a deep copy that shares the caller's parameter and buffer tensors (no extra
  weight memory, weight updates are seen) with every ``inplace`` flag switched off.  An
  in-place module applied to the input itself makes autograd fail ("a leaf Variable that
  requires grad is being used in an in-place operation") or corrupts Captum's interpolated
  inputs (Integrated Gradients), and in-place activations interfere with backward hooks; the
  caller's model is never modified.  In-place *functional* calls inside ``forward``
  (``F.relu(x, inplace=True)``, ``x.relu_()``) cannot be switched off this way.
* :func:`gradient_is_disconnected` tells "the class score does not depend on the input" (the
  map is zero) apart from a real autograd error.
* :func:`seeded_rng` makes sampling methods deterministic without disturbing the global RNG.
* parameter checks (:func:`check_int`, :func:`check_float`) and channel reductions.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import numbers
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from captum.attr import Saliency as CaptumSaliency
from torch import nn

from explanations.explainers.base import Explainer, ExplainerConfigError, eval_mode

__all__ = [
    "HeatmapExplainer",
    "Saliency",
    "check_float",
    "check_int",
    "gradient_is_disconnected",
    "inplace_free_copy",
    "input_leaf",
    "max_abs_over_channels",
    "seeded_rng",
    "sum_over_channels",
]


# -- parameter validation ----------------------------------------------------------------------


def check_int(name: str, value: Any, *, minimum: int) -> int:
    """Return ``value`` as ``int`` if it is an integer ``>= minimum`` (``bool`` rejected).

    Raises:
        ExplainerConfigError: naming the parameter and the value.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ExplainerConfigError(f"parameter {name!r} must be an integer, got {value!r}")
    if value < minimum:
        raise ExplainerConfigError(f"parameter {name!r} must be >= {minimum}, got {value}")
    return int(value)


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
) -> float:
    """Return ``value`` as a finite ``float`` within the given bounds.

    Raises:
        ExplainerConfigError: naming the parameter and the value.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ExplainerConfigError(f"parameter {name!r} must be a number, got {value!r}")
    result = float(value)
    if not np.isfinite(result):
        raise ExplainerConfigError(f"parameter {name!r} must be finite, got {value!r}")
    if minimum is not None and (result <= minimum if strict_minimum else result < minimum):
        relation = ">" if strict_minimum else ">="
        raise ExplainerConfigError(f"parameter {name!r} must be {relation} {minimum}, got {value}")
    if maximum is not None and result > maximum:
        raise ExplainerConfigError(f"parameter {name!r} must be <= {maximum}, got {value}")
    return result


# -- model handling ----------------------------------------------------------------------------


def _tensor_ids(model: nn.Module) -> tuple[int, ...]:
    # Straight from each module's dicts: a third of the time of parameters() + buffers(),
    # which deduplicate (not needed for a key that only has to change with the tensors).
    return tuple(
        id(tensor)
        for module in model.modules()
        for tensors in (module._parameters, module._buffers)
        for tensor in tensors.values()
        if tensor is not None
    )


def _has_inplace_modules(model: nn.Module) -> bool:
    return any(getattr(module, "inplace", None) is True for module in model.modules())


def inplace_free_copy(model: nn.Module) -> nn.Module:
    """Return ``model`` itself if no sub-module has ``inplace=True``, else a copy without them.

    The copy is a ``copy.deepcopy`` that *shares* the parameter and buffer tensors of ``model``
    (they are pre-seeded in the deepcopy memo), so it costs no weight memory and sees in-place
    weight updates; only the module objects are new, and their ``inplace`` attributes are set
    to ``False``.  TorchScript modules are returned unchanged (their code cannot be changed;
    they do not accept module hooks either).
    """
    if isinstance(model, torch.jit.ScriptModule) or not _has_inplace_modules(model):
        return model
    memo: dict[int, Any] = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    clone = copy.deepcopy(model, memo)
    for module in clone.modules():
        if getattr(module, "inplace", None) is True:
            module.inplace = False
    return clone


def gradient_is_disconnected(model: nn.Module, inputs: torch.Tensor, target: int) -> bool:
    """``True`` if the score ``model(inputs)[:, target]`` has no autograd path to ``inputs``.

    Such a score does not depend on the input, so every gradient map of it is exactly zero;
    Captum raises a ``RuntimeError`` on it instead.
    """
    with torch.inference_mode(False), torch.enable_grad():
        probe = inputs.detach().clone().requires_grad_(True)
        score = model(probe)[:, target].sum()
        if not score.requires_grad:
            return True
        (gradient,) = torch.autograd.grad(score, probe, allow_unused=True)
    return gradient is None


def max_abs_over_channels(attributions: torch.Tensor) -> np.ndarray:
    """``(N, C, H, W)`` -> ``(N, H, W)`` float32: ``max_c |a_c|`` (Simonyan et al., Sec. 3.1)."""
    return attributions.detach().abs().amax(dim=1).to(device="cpu", dtype=torch.float32).numpy()


def sum_over_channels(attributions: torch.Tensor) -> np.ndarray:
    """``(N, C, H, W)`` -> ``(N, H, W)`` float32: ``sum_c a_c`` (keeps the sign)."""
    return attributions.detach().sum(dim=1).to(device="cpu", dtype=torch.float32).numpy()


def input_leaf(image: torch.Tensor) -> torch.Tensor:
    """A fresh copy of ``image`` that requires grad (Captum warns when it has to set it).

    Call it with gradients enabled (outside ``torch.inference_mode``).
    """
    return image.detach().clone().requires_grad_(True)


@contextlib.contextmanager
def seeded_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seed torch's RNG of ``device`` (and the CPU) inside the block, restore it afterwards.

    Only the generators used for ``device`` are touched, so other code's random streams are
    unaffected.  The same seed gives the same numbers on the same device type; CPU and CUDA
    draw different numbers.
    """
    cuda = device.type == "cuda"
    index = (
        (device.index if device.index is not None else torch.cuda.current_device()) if cuda else 0
    )
    with torch.random.fork_rng(devices=[index] if cuda else []):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


class HeatmapExplainer(Explainer):
    """Base of the heatmap plugins: they explain :func:`inplace_free_copy` of the model.

    The copy is made on first use and cached per explainer instance; it is rebuilt when the
    caller's model gets new parameter/buffer tensors (e.g. after ``model.to(device)``), and put
    in eval mode on every call.  Subclasses call :meth:`_explained_model` inside
    :meth:`_attribute`; gradient methods wrap their Captum call in
    :meth:`_or_zero_if_disconnected`.
    """

    _explained: nn.Module | None = None
    _explained_key: tuple[int, ...] = ()

    def _explained_model(self) -> nn.Module:
        key = _tensor_ids(self.model)
        if self._explained is None or key != self._explained_key:
            self._explained = inplace_free_copy(self.model)
            self._explained_key = key
        return eval_mode(self._explained)

    @staticmethod
    def _or_zero_if_disconnected(
        model: nn.Module,
        inputs: torch.Tensor,
        target: int,
        compute: Callable[[], torch.Tensor],
    ) -> torch.Tensor:
        """Run ``compute``; if autograd fails because the score ignores the input, return 0."""
        try:
            return compute()
        except RuntimeError:
            if gradient_is_disconnected(model, inputs, target):
                return torch.zeros_like(inputs)
            raise


class Saliency(HeatmapExplainer):
    """Vanilla gradient saliency (Simonyan et al., ICLR Workshop 2014), one map per target.

    For each target class ``c`` the gradient ``d y_c / d x`` of the model output (logit) with
    respect to the ``(1, C, H, W)`` input is computed with ``captum.attr.Saliency``
    (``abs=False``) and reduced over channels as in the paper (Sec. 3.1):
    ``M[i, j] = max_k |d y_c / d x[k, i, j]|``.

    Args:
        model: classifier mapping a float32 ``(N, C, H, W)`` batch to ``(N, K)`` logits.
        target_layer: ignored (accepted so that every plugin is built the same way).

    No method parameters (the paper has none); ``params`` is
    ``{"channel_reduction": "max_abs", "abs": True}``.

    ``explain`` returns ``float32`` maps of shape ``(T, H, W)``, ``>= 0`` (non-negative:
    display with a sequential colour map starting at 0), in units of "logit per input unit",
    not normalised.  Each target is computed separately, so a map depends only on the image and
    its target.  A score that does not depend on the input gives an all-zero map flagged
    ``degenerate``.

    Raises:
        ExplainerConfigError: (constructor) ``model`` is not an ``nn.Module``, or extra
            parameters are given.
        ExplainerInputError: see :meth:`Explainer.explain`.
    """

    key: ClassVar[str] = "saliency"
    name: ClassVar[str] = "Saliency (vanilla gradient)"
    paper: ClassVar[str] = (
        "Simonyan, K., Vedaldi, A., & Zisserman, A. Deep Inside Convolutional Networks: "
        "Visualising Image Classification Models and Saliency Maps. ICLR Workshop 2014."
    )
    non_negative: ClassVar[bool] = True

    def __init__(self, model: nn.Module, *, target_layer: str | None = None, **params: Any) -> None:
        super().__init__(model, target_layer=target_layer, **params)
        self.params = {"channel_reduction": "max_abs", "abs": True}

    def _attribute(self, inputs: torch.Tensor, targets: tuple[int, ...]) -> np.ndarray:
        model = self._explained_model()
        maps = []
        with torch.inference_mode(False), torch.enable_grad():
            image = inputs.detach().clone()
            for target in targets:
                saliency = CaptumSaliency(model)
                gradient = self._or_zero_if_disconnected(
                    model,
                    image,
                    target,
                    lambda s=saliency, t=target: s.attribute(
                        input_leaf(image), target=t, abs=False
                    ),
                )
                maps.append(max_abs_over_channels(gradient)[0])
        return np.stack(maps)
