"""Automatic (human-free) evaluation of saliency maps.

Three families of checks, each following one paper:

* :func:`deletion_insertion_auc` -- the causal *deletion* and *insertion* metrics of
  Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models",
  BMVC 2018, Sec. 4.2.
* :func:`model_randomisation_check` / :func:`randomisation_passed` -- the cascading (and
  independent) model-parameter randomisation test of Adebayo, Gilmer, Muelly, Goodfellow, Hardt
  & Kim, "Sanity Checks for Saliency Maps", NeurIPS 2018, Sec. 3.
* :func:`input_invariance_check` -- the constant-input-shift invariance test of Kindermans,
  Hooker, Adebayo, Alber, Schuett, Daehne, Erhan & Kim, "The (Un)reliability of Saliency
  Methods", 2017/2019 (arXiv:1711.00867), Sec. 2.

Explanation methods enter only through the :class:`~explanations.explainers.base.Explainer`
contract: the randomisation and invariance checks take an *explainer factory*, any callable
``factory(model) -> Explainer`` (an ``Explainer`` subclass itself, ``functools.partial(GradCam,
target_layer="conv2")``, a lambda, ...), because they must explain *other* models (randomised
or shifted copies) than the one they are given.

All results are small frozen dataclasses with a ``to_dict()`` returning JSON-ready values
(NaN/inf become ``None``, arrays become lists).

The caller's model is never modified by the randomisation and invariance checks (they work on
``copy.deepcopy`` copies); :func:`deletion_insertion_auc` only switches it to eval mode.

This module is pure PyTorch/NumPy/SciPy; it must not import Django.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn
from torch.nn import functional as F

from explanations.explainers.base import Explainer

__all__ = [
    "DeletionInsertion",
    "ExplainerFactory",
    "InputInvariance",
    "RandomisationStep",
    "deletion_insertion_auc",
    "gaussian_blur",
    "input_invariance_check",
    "model_randomisation_check",
    "randomisation_passed",
]

#: ``factory(model) -> Explainer``; called once per model variant that must be explained.
ExplainerFactory = Callable[[nn.Module], Explainer]

#: Standard deviation (pixels) of the Gaussian blur that gives the insertion metric its start
#: image; the RISE reference code (``evaluation.py``: ``gkern(klen=11, nsig=5)``) uses 5.
RISE_BLUR_SIGMA = 5.0

#: Module types whose parameters :func:`model_randomisation_check` re-initialises
#: (all define ``reset_parameters()``).
RANDOMISABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.Bilinear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
)


def _json_float(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------
# shared validation
# ---------------------------------------------------------------------------------------------


def _check_image(inputs: torch.Tensor) -> None:
    if not isinstance(inputs, torch.Tensor):
        raise ValueError(
            f"inputs must be a torch.Tensor of shape (1, C, H, W), got {type(inputs).__name__}"
        )
    if inputs.dtype != torch.float32:
        raise ValueError(f"inputs must have dtype torch.float32, got {inputs.dtype}")
    if inputs.ndim != 4 or inputs.shape[0] != 1 or inputs.numel() == 0:
        raise ValueError(
            f"inputs must have shape (1, C, H, W) (one image), got {tuple(inputs.shape)}"
        )
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("inputs contain NaN or infinite values")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_logits(output: Any, batch: int) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.ndim != 2 or output.shape[0] != batch:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"model must return class scores of shape ({batch}, K), got {shape}")
    return output


def _check_target(target: Any, num_classes: int) -> int:
    target = _check_int("target", target, 0)
    if target >= num_classes:
        raise ValueError(
            f"target {target} out of range: the model has {num_classes} outputs "
            f"(valid targets 0..{num_classes - 1})"
        )
    return target


def _single_map(explainer: Explainer, inputs: torch.Tensor, target: int) -> np.ndarray:
    """The ``(H, W)`` float64 map ``explainer`` gives for ``target``."""
    if not isinstance(explainer, Explainer):
        raise ValueError(
            "explainer_factory(model) must return an Explainer instance, got "
            f"{type(explainer).__name__}"
        )
    result = explainer.explain(inputs, [target])
    return np.asarray(result.attributions[0], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# 1. deletion / insertion (RISE)
# ---------------------------------------------------------------------------------------------

Baseline = str | float


@dataclass(frozen=True, eq=False)
class DeletionInsertion:
    """Result of :func:`deletion_insertion_auc` for one image, one map and one class.

    Attributes:
        deletion_auc: area under ``deletion_curve`` over the fraction axis ``[0, 1]``; in
            ``[0, 1]``.  Lower is better (the most salient pixels destroy the score fastest).
        insertion_auc: area under ``insertion_curve``; in ``[0, 1]``.  Higher is better.
        deletion_curve: float64 array of shape ``(steps + 1,)``: softmax probability of
            ``target`` after ``0, 1, ..., steps`` deletion steps; ``[0]`` is the original image.
        insertion_curve: float64 array of shape ``(steps + 1,)``: probability after
            ``0, ..., steps`` insertion steps; ``[0]`` is the substrate (blurred image),
            ``[-1]`` the original image.
        fractions: float64 array of shape ``(steps + 1,)``: fraction of the ``H*W`` pixels
            deleted/inserted at each point, from ``0.0`` to ``1.0`` (the x axis of the AUCs).
        target: the class index evaluated.
        steps: number of deletion/insertion steps.
        deletion_baseline, insertion_baseline: ``"zero"``, ``"blur"`` or a float (the
            substrate the pixels were replaced with / inserted into).
        blur_sigma: standard deviation (pixels) of the Gaussian blur used by ``"blur"``.

    The three arrays are read-only.  Equality is identity (``eq=False``).
    """

    deletion_auc: float
    insertion_auc: float
    deletion_curve: np.ndarray
    insertion_curve: np.ndarray
    fractions: np.ndarray
    target: int
    steps: int
    deletion_baseline: Baseline
    insertion_baseline: Baseline
    blur_sigma: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (arrays become lists of floats)."""
        return {
            "deletion_auc": _json_float(self.deletion_auc),
            "insertion_auc": _json_float(self.insertion_auc),
            "deletion_curve": [float(v) for v in self.deletion_curve],
            "insertion_curve": [float(v) for v in self.insertion_curve],
            "fractions": [float(v) for v in self.fractions],
            "target": self.target,
            "steps": self.steps,
            "deletion_baseline": self.deletion_baseline,
            "insertion_baseline": self.insertion_baseline,
            "blur_sigma": self.blur_sigma,
        }


def _gaussian_kernel_1d(sigma: float, radius: int, device, dtype) -> torch.Tensor:
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype)


def gaussian_blur(inputs: torch.Tensor, sigma: float = RISE_BLUR_SIGMA) -> torch.Tensor:
    """Blur every channel of an image batch with an isotropic Gaussian (torch ``conv2d``).

    Separable, depthwise convolution with a kernel truncated at ``ceil(3 * sigma)`` pixels.
    Borders use *normalised* convolution: the image is zero-padded and each output pixel is
    divided by the kernel mass that fell inside the image, so a constant image stays constant
    (the RISE reference code zero-pads without renormalising and so darkens the border; its
    kernel is also truncated at 11x11, i.e. about one sigma).

    Args:
        inputs: float tensor of shape ``(N, C, H, W)``; not modified.
        sigma: standard deviation in pixels, finite and ``> 0``.

    Returns:
        A new tensor of the same shape, dtype and device.

    Raises:
        ValueError: if ``inputs`` is not 4-D floating point or ``sigma`` is not finite ``> 0``.
    """
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or not inputs.is_floating_point():
        raise ValueError("inputs must be a floating-point tensor of shape (N, C, H, W)")
    if (
        isinstance(sigma, bool)
        or not isinstance(sigma, numbers.Real)
        or not math.isfinite(sigma)
        or sigma <= 0
    ):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    channels = int(inputs.shape[1])
    radius = max(1, math.ceil(3.0 * float(sigma)))
    kernel = _gaussian_kernel_1d(float(sigma), radius, inputs.device, inputs.dtype)
    k_h = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    k_w = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)

    def separable(x: torch.Tensor) -> torch.Tensor:
        n_channels = int(x.shape[1])
        x = F.conv2d(x, k_h[:n_channels], padding=(radius, 0), groups=n_channels)
        return F.conv2d(x, k_w[:n_channels], padding=(0, radius), groups=n_channels)

    with torch.no_grad():
        blurred = separable(inputs)
        mass = separable(torch.ones_like(inputs[:1, :1]))
    return blurred / mass


def _substrate(inputs: torch.Tensor, baseline: Baseline, sigma: float, name: str) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros_like(inputs)
        if baseline == "blur":
            return gaussian_blur(inputs, sigma)
        raise ValueError(f"{name} must be 'blur', 'zero' or a float, got {baseline!r}")
    if isinstance(baseline, bool) or not isinstance(baseline, numbers.Real):
        raise ValueError(f"{name} must be 'blur', 'zero' or a float, got {baseline!r}")
    if not math.isfinite(baseline):
        raise ValueError(f"{name} must be finite, got {baseline!r}")
    return torch.full_like(inputs, float(baseline))


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def deletion_insertion_auc(
    model: nn.Module,
    inputs: torch.Tensor,
    saliency: np.ndarray | torch.Tensor,
    target: int,
    *,
    steps: int = 50,
    baseline: Baseline | None = None,
    blur_sigma: float = RISE_BLUR_SIGMA,
    batch_size: int = 32,
) -> DeletionInsertion:
    """Deletion and insertion AUCs of one saliency map (Petsiuk et al., RISE, BMVC 2018, 4.2).

    Pixels are ranked by ``saliency``, most salient first (descending; ties keep raster order
    ``row * W + col``, i.e. a stable sort).  The ``H*W`` pixels are split into ``steps``
    consecutive chunks along that ranking; chunk ``k`` ends at pixel ``floor(k * H*W / steps)``
    (equal chunks when ``steps`` divides ``H*W``, otherwise sizes differ by at most one, and
    chunks are empty if ``steps > H*W``).  A pixel is all ``C`` channels at one position.

    * Deletion: starting from the image, the chunks are replaced one after the other by the
      deletion substrate (default ``"zero"``: zeros *in the model's input space*, e.g. the mean
      colour for ImageNet-normalised inputs).
    * Insertion: starting from the insertion substrate (default ``"blur"``: a Gaussian-blurred
      copy of the image, see :func:`gaussian_blur`), the original pixels are put back in the same
      order.

    After each of the ``steps + 1`` states (state 0 = before any change) the softmax
    probability of ``target`` is recorded.  The AUC is the trapezoidal area under that curve
    against the fraction of pixels changed (x from 0 to 1), so it lies in ``[0, 1]``.  With
    equal chunks this equals RISE's ``(sum(curve) - curve[0]/2 - curve[-1]/2) / steps``.
    Lower deletion AUC and higher insertion AUC mean a better map.

    The model is put in eval mode (and left there); forward passes run under
    ``torch.no_grad()`` in batches of at most ``batch_size`` images on ``inputs.device``.

    Args:
        model: classifier mapping float32 ``(N, C, H, W)`` to ``(N, K)`` logits; it must treat
            batch elements independently (true in eval mode for CNNs with BatchNorm/Dropout).
        inputs: float32 tensor ``(1, C, H, W)``, preprocessed as the model expects; finite.
            Not modified.
        saliency: ``(H, W)`` (or ``(1, H, W)``) NumPy array or tensor, any real dtype, finite
            values -- e.g. ``ExplanationResult.attributions[i]``.  Only the ranking matters, so
            the scale is irrelevant; signed maps are ranked by signed value.
        target: class index ``0 <= target < K``.
        steps: number of chunks, ``>= 1``; the curves have ``steps + 1`` points.
        baseline: ``None`` (the paper's protocol: zeros for deletion, blur for insertion), or
            ``"zero"``, ``"blur"`` or a float constant (input-space value) used as the substrate
            of *both* curves.
        blur_sigma: Gaussian standard deviation in pixels for ``"blur"`` (RISE code: 5).
        batch_size: images per forward pass, ``>= 1``.

    Returns:
        :class:`DeletionInsertion`.

    Raises:
        ValueError: ``inputs`` not a finite float32 ``(1, C, H, W)`` tensor; ``saliency`` of
            another spatial shape or with NaN/inf; ``steps < 1`` or ``batch_size < 1``; an
            unknown ``baseline``; ``blur_sigma`` not ``> 0``; ``target`` out of range; the model
            not returning ``(N, K)`` scores.
    """
    _check_image(inputs)
    steps = _check_int("steps", steps, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    height, width = int(inputs.shape[2]), int(inputs.shape[3])
    sal = saliency.detach().cpu().numpy() if isinstance(saliency, torch.Tensor) else saliency
    sal = np.asarray(sal)
    if sal.ndim == 3 and sal.shape[0] == 1:
        sal = sal[0]
    if sal.shape != (height, width):
        raise ValueError(
            f"saliency must have the spatial shape of inputs, ({height}, {width}); "
            f"got {np.shape(saliency)}"
        )
    if not np.issubdtype(sal.dtype, np.number) or np.iscomplexobj(sal):
        raise ValueError(f"saliency must be real-valued, got dtype {sal.dtype}")
    sal = sal.astype(np.float64)
    if not np.all(np.isfinite(sal)):
        raise ValueError("saliency contains NaN or infinite values")

    if baseline is None:
        deletion_baseline: Baseline = "zero"
        insertion_baseline: Baseline = "blur"
    else:
        deletion_baseline = insertion_baseline = baseline
    x = inputs.detach()
    deletion_substrate = _substrate(x, deletion_baseline, blur_sigma, "baseline")
    insertion_substrate = _substrate(x, insertion_baseline, blur_sigma, "baseline")

    n_pixels = height * width
    order = np.argsort(-sal.ravel(), kind="stable")
    rank = np.empty(n_pixels, dtype=np.int64)
    rank[order] = np.arange(n_pixels)
    rank_map = torch.from_numpy(rank.reshape(height, width)).to(x.device)
    boundaries = np.array([(k * n_pixels) // steps for k in range(steps + 1)], dtype=np.int64)

    model.eval()

    def probabilities(start: torch.Tensor, end: torch.Tensor) -> np.ndarray:
        """P(target) for states 0..steps; state k shows ``end`` at the first ``b_k`` pixels."""
        probs: list[np.ndarray] = []
        for lo in range(0, steps + 1, batch_size):
            b = torch.from_numpy(boundaries[lo : lo + batch_size]).to(x.device)
            changed = (rank_map.unsqueeze(0) < b.view(-1, 1, 1)).unsqueeze(1)  # (B, 1, H, W)
            batch = torch.where(changed, end, start)
            logits = _check_logits(model(batch), int(batch.shape[0]))
            _check_target(target, int(logits.shape[1]))
            probs.append(torch.softmax(logits.double(), dim=1)[:, int(target)].cpu().numpy())
        return np.concatenate(probs)

    with torch.no_grad():
        deletion_curve = probabilities(x, deletion_substrate)
        insertion_curve = probabilities(insertion_substrate, x)

    fractions = boundaries.astype(np.float64) / n_pixels
    for array in (deletion_curve, insertion_curve, fractions):
        array.flags.writeable = False
    return DeletionInsertion(
        deletion_auc=_trapezoid(deletion_curve, fractions),
        insertion_auc=_trapezoid(insertion_curve, fractions),
        deletion_curve=deletion_curve,
        insertion_curve=insertion_curve,
        fractions=fractions,
        target=int(target),
        steps=steps,
        deletion_baseline=deletion_baseline,
        insertion_baseline=insertion_baseline,
        blur_sigma=float(blur_sigma),
    )


# ---------------------------------------------------------------------------------------------
# 2. model parameter randomisation (Adebayo et al.)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomisationStep:
    """One step of :func:`model_randomisation_check`.

    Attributes:
        index: 0 for the reference step (nothing randomised), then 1, 2, ...
        layer: dotted module name randomised at this step (``None`` for step 0).
        layers_randomised: names of all modules whose parameters are random in the model
            explained at this step (cascading: this layer and every layer above it;
            independent: this layer only).
        mode: ``"cascading"`` or ``"independent"``.
        spearman: Spearman rank correlation in ``[-1, 1]`` between the reference map and this
            step's map (raw signed values); ``nan`` if either map is constant.
        spearman_abs: the same on absolute values (the paper reports both; a sign flip keeps
            ``spearman_abs`` at 1).
        ssim: structural similarity in ``[-1, 1]`` of the two absolute maps, each min-max
            normalised to ``[0, 1]`` (``skimage.metrics.structural_similarity``, window 7 or the
            largest odd size that fits; a constant map normalises to all zeros);
            ``nan`` if a side is shorter than 3 pixels.
        constant_map: this step's map has a single value everywhere.

    At step 0 the map is recomputed from an unmodified copy with a fresh explainer, so its
    correlation is 1.0 for deterministic explainers and shows the noise floor of stochastic
    ones.
    """

    index: int
    layer: str | None
    layers_randomised: tuple[str, ...]
    mode: str
    spearman: float
    spearman_abs: float
    ssim: float
    constant_map: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN correlations become ``None``."""
        return {
            "index": self.index,
            "layer": self.layer,
            "layers_randomised": list(self.layers_randomised),
            "mode": self.mode,
            "spearman": _json_float(self.spearman),
            "spearman_abs": _json_float(self.spearman_abs),
            "ssim": _json_float(self.ssim),
            "constant_map": self.constant_map,
        }


def _is_constant(a: np.ndarray) -> bool:
    return bool(a.size == 0 or np.all(a == a.flat[0]))


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if _is_constant(a) or _is_constant(b):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = stats.spearmanr(a.ravel(), b.ravel()).statistic
    return float(rho)


def _ssim_abs(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    side = min(a.shape)
    if side < 3:
        return math.nan
    win = min(7, side if side % 2 else side - 1)

    def unit(m: np.ndarray) -> np.ndarray:
        m = np.abs(m)
        span = m.max() - m.min()
        return (m - m.min()) / span if span > 0 else np.zeros_like(m)

    return float(structural_similarity(unit(a), unit(b), data_range=1.0, win_size=win))


def _learnable_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, RANDOMISABLE_TYPES)
        and (any(True for _ in m.parameters(recurse=False)) or any(m.buffers(recurse=False)))
    }


def _forward_order(model: nn.Module, modules: dict[str, nn.Module], inputs: torch.Tensor):
    """Names of ``modules`` in the order their first call happens in ``model(inputs)``."""
    order: list[str] = []
    handles = []
    for name, module in modules.items():

        def hook(_module, _args, _output, name=name):
            if name not in order:
                order.append(name)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return order


def _randomise(model: nn.Module, name: str, seed: int) -> None:
    """Re-initialise every learnable module inside ``model.<name>`` (``reset_parameters``)."""
    root = model.get_submodule(name)
    targets = [m for m in root.modules() if isinstance(m, RANDOMISABLE_TYPES)]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for module in targets:
            module.reset_parameters()


def model_randomisation_check(
    model: nn.Module,
    explainer_factory: ExplainerFactory,
    inputs: torch.Tensor,
    target: int,
    *,
    layers: str | Sequence[str] = "cascading",
    seed: int = 0,
) -> list[RandomisationStep]:
    """Model-parameter randomisation test (Adebayo et al., "Sanity Checks", NeurIPS 2018, 3).

    A map that explains the *model* must change when the model's learned weights are destroyed.
    The reference map is computed on a deep copy of ``model``; then learnable layers are
    re-initialised from the top (logits) layer downwards and the map is recomputed each time:

    * ``layers="cascading"`` (the paper's Fig. 2): one more layer is randomised at every step on
      the same copy, so the last step has every learnable layer random.
    * ``layers="independent"``: each step randomises one layer alone, on a fresh copy.
    * ``layers=[names...]``: cascading over the given dotted module names, in the given order
      (put the top first); a container name (e.g. ``"_blocks.15"``) randomises every learnable
      module inside it in one step.

    "Learnable layers" are the modules of :data:`RANDOMISABLE_TYPES` (Conv, Linear, BatchNorm,
    GroupNorm, LayerNorm, ...) that own parameters or buffers.  Top-down order is the reverse of
    the order in which they are first *executed* in ``model(inputs)`` (found with forward hooks);
    modules that are never executed are skipped.  Re-initialisation is PyTorch's own
    ``reset_parameters()`` -- Kaiming-uniform weights and uniform biases for Conv/Linear (the
    paper uses truncated normals); BatchNorm gets weight 1, bias 0, running mean 0, running
    variance 1 (its learned statistics are discarded, nothing random is drawn).  Layer ``i``
    (1-based position in top-down order) is initialised with ``torch.manual_seed(seed + i)``
    inside ``torch.random.fork_rng()``, so the caller's RNG state is untouched and cascading and
    independent runs draw identical random weights for the same layer.

    Similarity between the reference map and each step's map: Spearman rank correlation
    (``scipy.stats.spearmanr``) of the raw and of the absolute maps, and SSIM of the absolute
    maps (see :class:`RandomisationStep`).  **Constant maps**: Spearman is undefined when either
    map is constant; the step then reports ``nan`` (``constant_map`` tells which side) and
    :func:`randomisation_passed` decides how to read it.

    Args:
        model: classifier mapping float32 ``(N, C, H, W)`` to ``(N, K)`` logits.  Never
            modified (not even its train/eval flag): all work happens on ``copy.deepcopy``.
        explainer_factory: ``factory(model) -> Explainer``; called once per step with the copy
            to explain (layer names given to the factory resolve inside that copy).
        inputs: float32 ``(1, C, H, W)`` image, finite.  Not modified.
        target: class index to explain.
        layers: ``"cascading"``, ``"independent"`` or a sequence of module names (see above).
        seed: base seed of the re-initialisation.

    Returns:
        ``[step 0 (reference), step 1, ...]``, one :class:`RandomisationStep` per layer (or
        name) plus the reference.

    Raises:
        ValueError: invalid ``inputs``/``target``/``layers``; a name in ``layers`` that is not
            a module of ``model`` or contains no learnable module; a model with no executed
            learnable layer; a factory that does not return an :class:`Explainer`.
        ExplainerError: whatever the explainer raises (e.g. an out-of-range target).
    """
    _check_image(inputs)
    target = _check_int("target", target, 0)
    seed = _check_int("seed", seed, -(2**62))
    x = inputs.detach()

    reference_model = copy.deepcopy(model)
    reference_model.eval()
    learnable = _learnable_modules(reference_model)
    if isinstance(layers, str):
        if layers not in ("cascading", "independent"):
            raise ValueError(
                f"layers must be 'cascading', 'independent' or a sequence of module names, "
                f"got {layers!r}"
            )
        mode = layers
        names = _forward_order(reference_model, learnable, x)[::-1]
        if not names:
            raise ValueError(
                f"model {type(model).__name__} has no learnable layer "
                f"({', '.join(t.__name__ for t in RANDOMISABLE_TYPES[:9])}, ...) executed by "
                "its forward pass"
            )
    else:
        mode = "cascading"
        names = list(layers)
        if not names:
            raise ValueError("layers must name at least one module")
        all_modules = dict(reference_model.named_modules())
        for name in names:
            if not isinstance(name, str) or not name or name not in all_modules:
                raise ValueError(f"model {type(model).__name__} has no module named {name!r}")
            if not any(isinstance(m, RANDOMISABLE_TYPES) for m in all_modules[name].modules()):
                raise ValueError(f"module {name!r} contains no learnable layer to randomise")

    reference = _single_map(explainer_factory(reference_model), x, target)

    def step(index: int, layer: str | None, randomised: tuple[str, ...], m: nn.Module):
        current = _single_map(explainer_factory(m), x, target)
        return RandomisationStep(
            index=index,
            layer=layer,
            layers_randomised=randomised,
            mode=mode,
            spearman=_spearman(reference, current),
            spearman_abs=_spearman(np.abs(reference), np.abs(current)),
            ssim=_ssim_abs(reference, current),
            constant_map=_is_constant(current),
        )

    results = [step(0, None, (), reference_model)]
    cascade = copy.deepcopy(reference_model)
    for position, name in enumerate(names, start=1):
        if mode == "cascading":
            _randomise(cascade, name, seed + position)
            results.append(step(position, name, tuple(names[:position]), cascade))
        else:
            single = copy.deepcopy(reference_model)
            _randomise(single, name, seed + position)
            results.append(step(position, name, (name,), single))
    return results


def randomisation_passed(steps: Sequence[RandomisationStep], threshold: float = 0.5) -> bool:
    """Whether the map proved sensitive to the model in a cascading randomisation run.

    Reads the last step (every listed layer random).  Its similarity to the reference map is
    ``max(spearman, spearman_abs)`` -- the larger of the two so that a mere sign flip
    (``spearman == -1``, ``spearman_abs == 1``) does not count as a change.  The check passes
    iff that similarity is ``< threshold``.

    Constant maps (Spearman ``nan``), as decided here:

    * reference map constant (``steps[0].constant_map``): the map carries no information at
      all, so nothing can show it depends on the model -> ``False``;
    * reference map not constant but the randomised map constant: all spatial structure was
      lost when the weights were destroyed, i.e. the map changed -> counts as correlation 0 ->
      ``True`` (for any ``threshold > 0``).

    Args:
        steps: the list returned by :func:`model_randomisation_check` with cascading mode.
        threshold: finite float; the paper has no fixed cut-off, 0.5 is this project's default.

    Raises:
        ValueError: fewer than two steps, steps from an ``"independent"`` run (no step has
            every layer random), or a non-finite threshold.
    """
    steps = list(steps)
    if len(steps) < 2:
        raise ValueError("need the reference step and at least one randomisation step")
    if any(s.mode != "cascading" for s in steps):
        raise ValueError("randomisation_passed needs a cascading run (layers='cascading' or names)")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not math.isfinite(threshold)
    ):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    if steps[0].constant_map:
        return False
    last = steps[-1]
    values = [v for v in (last.spearman, last.spearman_abs) if math.isfinite(v)]
    similarity = max(values) if values else 0.0
    return similarity < threshold


# ---------------------------------------------------------------------------------------------
# 3. input invariance (Kindermans et al.)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputInvariance:
    """Result of :func:`input_invariance_check`.

    Attributes:
        max_abs_diff: ``max |m1 - m2|`` over the ``(H, W)`` maps of the original network on
            ``x`` (``m1``) and of the shifted network on ``x + shift`` (``m2``); map units.
        relative_diff: ``max_abs_diff / max(max|m1|, max|m2|)`` (0 when both maps are all
            zero); in ``[0, 2]``.
        outputs_equal: the two networks' logits agree within ``output_tolerance`` (relative to
            ``max(1, max|logits|)``).  If ``False`` the construction failed and the map
            comparison is meaningless.
        passed: ``outputs_equal and relative_diff <= tolerance``.
        output_max_abs_diff: ``max |logits1 - logits2|``.
        first_layer: dotted name of the layer whose bias absorbed the shift.
        shift: the shift as given, as a nested list (scalar, per channel or per pixel).
        tolerance: the map tolerance used for ``passed``.
    """

    max_abs_diff: float
    relative_diff: float
    outputs_equal: bool
    passed: bool
    output_max_abs_diff: float
    first_layer: str
    shift: Any
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite floats become ``None``)."""
        return {
            "max_abs_diff": _json_float(self.max_abs_diff),
            "relative_diff": _json_float(self.relative_diff),
            "outputs_equal": self.outputs_equal,
            "passed": self.passed,
            "output_max_abs_diff": _json_float(self.output_max_abs_diff),
            "first_layer": self.first_layer,
            "shift": self.shift,
            "tolerance": self.tolerance,
        }


def _shift_tensor(shift: Any, inputs: torch.Tensor) -> torch.Tensor:
    """``shift`` as a float32 tensor of shape ``(1, C, 1, 1)`` or ``(1, C, H, W)``."""
    channels, height, width = (int(n) for n in inputs.shape[1:])
    if isinstance(shift, (bool, np.bool_)):
        raise ValueError("shift must be a number or an array of numbers, got a bool")
    if isinstance(shift, torch.Tensor):
        shift = shift.detach().cpu().numpy()
    try:
        s = torch.as_tensor(np.asarray(shift, dtype=np.float32))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"shift must be a number or an array of numbers: {exc}") from exc
    if s.ndim == 0:
        s = s.expand(channels).clone()
    if s.ndim == 1 and s.shape[0] == channels:
        s = s.view(1, channels, 1, 1)
    elif tuple(s.shape) in ((channels, 1, 1), (channels, height, width)):
        s = s.unsqueeze(0)
    else:
        raise ValueError(
            f"shift must be a scalar or of shape ({channels},), ({channels}, 1, 1) or "
            f"({channels}, {height}, {width}); got {tuple(s.shape)}"
        )
    if not bool(torch.isfinite(s).all()):
        raise ValueError("shift contains NaN or infinite values")
    return s.to(inputs.device)


def _first_layer(model: nn.Module, inputs: torch.Tensor) -> tuple[str | None, int]:
    """Name of the first ``nn.Conv2d``/``nn.Linear`` executed by ``model(inputs)`` and how many
    times that module runs during the pass (``(None, 0)`` if none runs)."""
    calls: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):

            def pre_hook(_module, _args, name=name):
                calls.append(name)

            handles.append(module.register_forward_pre_hook(pre_hook))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    if not calls:
        return None, 0
    return calls[0], calls.count(calls[0])


def _layer_inputs(model: nn.Module, layer: nn.Module, images: Sequence[torch.Tensor]):
    """The tensor ``layer`` receives when ``model`` runs on each of ``images``."""
    captured: list[torch.Tensor] = []

    def pre_hook(_module, args):
        captured.append(args[0].detach().clone())

    handle = layer.register_forward_pre_hook(pre_hook)
    try:
        with torch.no_grad():
            for image in images:
                model(image)
    finally:
        handle.remove()
    return captured


def _pad_with_shift(pads: Sequence[int], delta: torch.Tensor):
    """Forward pre-hook: pad the conv input with the value ``delta`` (per channel) instead of 0."""
    pads = tuple(int(p) for p in pads)

    def pre_hook(_module, args):
        x = args[0]
        inside = F.pad(torch.ones_like(x[:, :1]), pads)
        return (F.pad(x, pads) + delta * (1.0 - inside), *args[1:])

    return pre_hook


def _shift_constant_padding(delta: torch.Tensor):
    """Forward hook for an ``nn.ConstantPad2d``: add ``delta`` (per channel) to the padding."""

    def hook(module, args, output):
        inside = F.pad(torch.ones_like(args[0][:, :1]), tuple(module.padding))
        return output + delta * (1.0 - inside)

    return hook


def input_invariance_check(
    model: nn.Module,
    explainer_factory: ExplainerFactory,
    inputs: torch.Tensor,
    target: int,
    *,
    shift: float | Sequence[float] | np.ndarray | torch.Tensor,
    tolerance: float = 1e-3,
    output_tolerance: float = 1e-5,
) -> InputInvariance:
    """Input-invariance test (Kindermans et al., "The (Un)reliability of Saliency Methods", 2).

    Builds a second network ``f2`` that is identical to ``f1 = model`` except that its first
    layer's bias absorbs a constant input shift: ``f2(x + shift) == f1(x)`` for every ``x``.  A
    saliency method is *input invariant* when it gives ``f2`` on ``x + shift`` the same map as
    ``f1`` on ``x``: the two networks are the same classifier for shifted data, so the
    explanation should not change.  (Plain gradients pass; gradient x input, integrated
    gradients with a zero reference, Deep Taylor/LRP fail -- the paper's Fig. 3.)

    Construction.  The *first layer* is the first ``nn.Conv2d`` or ``nn.Linear`` executed by
    ``model(inputs)`` (found with forward pre-hooks on a copy).  Everything before it must be
    parameter-free or fixed and *affine* (identity, flatten, fixed normalisation, BatchNorm in
    eval mode), so that the shift reaches that layer as a constant ``delta`` independent of the
    image; this is verified by comparing ``delta`` measured on ``inputs`` and on an all-zero
    image.  With the layer's weight ``W`` and bias ``b`` (taken as 0 if absent):

    * ``nn.Linear``: ``b' = b - W @ delta`` (``delta`` must be the same for every row if the
      layer sees more than 2-D input).
    * ``nn.Conv2d``: ``delta`` must be constant over space (one value per channel), and
      ``b'[o] = b[o] - sum_{c,i,j} W[o, c, i, j] * delta[c]`` (the convolution of a constant
      image; groups and dilation are honoured).  **Padding**: plain zero padding breaks exact
      equivalence -- ``f2``'s input is ``x + delta`` inside the image but 0 in the padding, so
      at every output position whose window overlaps the padding the bias correction
      subtracts a ``W * delta`` term that was never added (``f2 != f1`` along the border, and
      the error spreads inwards through later layers).  This function keeps the networks
      *exactly* equivalent instead: ``f2``'s first convolution pads with the value ``delta``
      (per channel) rather than zero, the padding value that corresponds to ``f1``'s zeros
      (implemented as a forward pre-hook on the copy plus ``padding=0``); the same is done
      for ``nn.ConstantPad2d``/``nn.ZeroPad2d`` modules that run *inside* the first layer
      (EfficientNet's ``Conv2dStaticSamePadding``).  Reflect, replicate and circular padding
      commute with a constant shift and need no change.  Padding applied *before* the first
      layer (a separate pad module or ``F.pad`` in ``forward``) makes the shift reach the
      layer non-constant and raises ``ValueError``.  Padding-free
      (``padding=0``/``"valid"``) first layers, the paper's setting, need nothing either.

    The logits ``f1(x)`` and ``f2(x + shift)`` are compared first (``outputs_equal``); both
    networks are then explained with fresh explainers from ``explainer_factory`` and the
    ``(H, W)`` maps compared.  The first layer must run exactly once per forward pass.

    Args:
        model: classifier mapping float32 ``(N, C, H, W)`` to ``(N, K)`` logits.  Never
            modified: both networks are deep copies.
        explainer_factory: ``factory(model) -> Explainer``, called once per network.
        inputs: float32 ``(1, C, H, W)`` image ``x``, finite.  Not modified.
        target: class index to explain.
        shift: constant added to the input, in input-space units: a scalar, one value per
            channel (``(C,)`` or ``(C, 1, 1)``), or a full ``(C, H, W)`` array (only usable when
            it reaches the first layer spatially constant, or when that layer is Linear).
        tolerance: largest ``relative_diff`` that still counts as invariant (float32 rounding
            in the first layer makes the maps differ by ~1e-6 relative).
        output_tolerance: largest ``max|logits1 - logits2| / max(1, max|logits1|)`` for
            ``outputs_equal``.

    Returns:
        :class:`InputInvariance`.

    Raises:
        ValueError: invalid ``inputs``/``target``/``shift``/tolerances; no Conv2d/Linear layer
            executed; the first layer runs more than once; the shift does not reach the first
            layer as an image-independent constant (spatially constant for Conv2d); the model
            does not return ``(N, K)`` scores.
        ExplainerError: whatever the explainer raises.
    """
    _check_image(inputs)
    target = _check_int("target", target, 0)
    for name, value in (("tolerance", tolerance), ("output_tolerance", output_tolerance)):
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    x = inputs.detach()
    s = _shift_tensor(shift, x)
    x_shifted = (x + s).contiguous()
    if not bool(torch.isfinite(x_shifted).all()):
        raise ValueError("inputs + shift overflow float32")
    shift_json = s.squeeze(0).cpu().tolist() if s.shape[2:] != (1, 1) else s.view(-1).tolist()

    original = copy.deepcopy(model).eval()
    shifted = copy.deepcopy(model).eval()

    first, calls = _first_layer(shifted, x)
    if first is None:
        raise ValueError(
            f"model {type(model).__name__} executes no nn.Conv2d or nn.Linear layer; "
            "there is no first-layer bias to absorb the shift"
        )
    if calls != 1:
        raise ValueError(
            f"first layer {first!r} runs {calls} times per forward pass; the bias "
            "construction needs it to run exactly once"
        )
    layer = shifted.get_submodule(first)
    zeros = torch.zeros_like(x)
    seen_x, seen_xs, seen_0, seen_0s = _layer_inputs(
        shifted, layer, [x, x_shifted, zeros, (zeros + s).contiguous()]
    )
    delta = seen_xs - seen_x
    scale = max(1.0, float(delta.abs().max()), float(seen_x.abs().max()))
    if float((delta - (seen_0s - seen_0)).abs().max()) > 1e-5 * scale:
        raise ValueError(
            f"the shift does not reach first layer {first!r} as a constant: the layers before "
            "it are not affine/parameter-free, so no bias can absorb it"
        )

    with torch.no_grad():
        weight = layer.weight
        if isinstance(layer, nn.Conv2d):
            if delta.ndim != 4:
                raise ValueError(f"first layer {first!r} got non-4-D input")
            per_channel = delta.mean(dim=(2, 3), keepdim=True)
            if float((delta - per_channel).abs().max()) > 1e-5 * scale:
                raise ValueError(
                    f"the shift reaches first layer {first!r} (Conv2d) with values that "
                    "vary over space; a convolution bias can only absorb a per-channel constant"
                )
            k_h, k_w = (int(k) for k in layer.kernel_size)
            d_h, d_w = (int(d) for d in layer.dilation)
            patch = per_channel.expand(1, -1, d_h * (k_h - 1) + 1, d_w * (k_w - 1) + 1)
            correction = F.conv2d(
                patch,
                weight,
                None,
                stride=1,
                padding=0,
                dilation=layer.dilation,
                groups=layer.groups,
            ).view(-1)
            pads = getattr(layer, "_reversed_padding_repeated_twice", None)
            if pads is None:  # pragma: no cover - attribute exists in every supported torch
                p_h, p_w = layer.padding
                pads = (p_w, p_w, p_h, p_h)
            if layer.padding_mode == "zeros" and any(int(p) for p in pads):
                layer.padding = (0, 0)
                layer.register_forward_pre_hook(_pad_with_shift(pads, per_channel))
            # Constant padding run *inside* the layer's forward by a child module, e.g.
            # EfficientNet's Conv2dStaticSamePadding (a ZeroPad2d "static_padding" child).
            for child in layer.modules():
                if isinstance(child, nn.ConstantPad2d):
                    child.register_forward_hook(_shift_constant_padding(per_channel))
        else:  # nn.Linear
            rows = delta.reshape(-1, delta.shape[-1])
            if float((rows - rows[:1]).abs().max()) > 1e-5 * scale:
                raise ValueError(
                    f"the shift reaches first layer {first!r} (Linear) differently at "
                    "different positions; a single bias cannot absorb it"
                )
            correction = weight @ rows[0]
        if layer.bias is None:
            layer.bias = nn.Parameter(-correction)
        else:
            layer.bias.sub_(correction)

        logits_1 = _check_logits(original(x), 1)
        logits_2 = _check_logits(shifted(x_shifted), 1)
    _check_target(target, int(logits_1.shape[1]))
    output_diff = float((logits_1 - logits_2).abs().max())
    outputs_equal = output_diff <= output_tolerance * max(1.0, float(logits_1.abs().max()))

    map_1 = _single_map(explainer_factory(original), x, target)
    map_2 = _single_map(explainer_factory(shifted), x_shifted, target)
    max_abs_diff = float(np.max(np.abs(map_1 - map_2)))
    magnitude = max(float(np.max(np.abs(map_1))), float(np.max(np.abs(map_2))))
    relative_diff = max_abs_diff / magnitude if magnitude > 0 else 0.0
    return InputInvariance(
        max_abs_diff=max_abs_diff,
        relative_diff=relative_diff,
        outputs_equal=bool(outputs_equal),
        passed=bool(outputs_equal and relative_diff <= tolerance),
        output_max_abs_diff=output_diff,
        first_layer=first,
        shift=shift_json,
        tolerance=float(tolerance),
    )
