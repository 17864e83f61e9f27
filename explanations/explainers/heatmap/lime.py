"""LIME on SLIC superpixels via Captum.

Ribeiro, Singh and Guestrin, "'Why Should I Trust You?': Explaining the Predictions of Any
Classifier", KDD 2016 (arXiv:1602.04938), Sec. 3: the image is split into superpixels (the
interpretable features ``z' in {0, 1}^M``); ``n`` perturbed images keep a random subset of the
superpixels and replace the others by a baseline; a weighted linear model ``g(z') = w . z' + b``
is fitted to the classifier's score of the perturbed images, each weighted by the proximity
kernel ``pi(z') = exp(-D(z')^2 / (2 w_k^2))`` (Eq. 2; Captum's form of the reference
implementation's ``sqrt(exp(-D^2 / w_k^2))``).  The weight ``w_j`` of superpixel ``j`` is the
attribution painted onto its pixels.

Choices, following the reference implementation (``lime.lime_image``) where the paper leaves
them open:

* superpixels: ``skimage.segmentation.slic`` (``n_segments = 50``, ``compactness = 10``, on the
  Lab image for 3-channel input) on the de-normalised image when ``image_mean``/``image_std``
  are given, else on the input tensor min-max scaled to ``[0, 1]``;
* samples: ``z'`` drawn uniformly from ``{0, 1}^M`` with a seeded generator, the first sample is
  the unperturbed image (all ones), ``n = 500``;
* baseline of a switched-off superpixel: 0 in the model's input space (the dataset-mean
  colour for a mean/std-normalised model);
* distance ``D``: cosine distance between ``z'`` and the all-ones vector, kernel width
  ``w_k = 0.25``; interpretable model: ridge regression with ``alpha = 1`` and an intercept
  (``captum._utils.models.linear_model.SkLearnRidge``);
* score: the target's logit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import Lime as CaptumLime
from skimage.segmentation import slic
from torch import nn

from explanations.explainers.base import ExplainerConfigError, ExplainerInputError
from explanations.explainers.heatmap.saliency import HeatmapExplainer, check_float, check_int

__all__ = ["Lime", "superpixels"]

#: Ridge penalty of the interpretable model (``sklearn.linear_model.Ridge(alpha=1)`` in lime).
_RIDGE_ALPHA = 1.0


def superpixels(
    image: torch.Tensor,
    *,
    n_segments: int,
    compactness: float,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> np.ndarray:
    """SLIC superpixels of a ``(C, H, W)`` image as an ``(H, W)`` int64 array of labels ``0..M-1``.

    With ``mean`` and ``std`` (per channel, the model's normalisation) the image is first mapped
    back to ``[0, 1]`` pixel values (``x * std + mean``, clipped); otherwise it is min-max
    scaled to ``[0, 1]`` over all channels (a flat image gives one segment).
    """
    pixels = image.detach().to(device="cpu", dtype=torch.float64).numpy().transpose(1, 2, 0)
    channels = pixels.shape[-1]
    if mean is not None and std is not None:
        pixels = np.clip(pixels * np.asarray(std) + np.asarray(mean), 0.0, 1.0)
    else:
        low, high = float(pixels.min()), float(pixels.max())
        pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    labels = slic(
        pixels,
        n_segments=n_segments,
        compactness=compactness,
        start_label=0,
        channel_axis=-1,
        convert2lab=channels == 3,
    )
    _, sequential = np.unique(labels, return_inverse=True)
    return sequential.reshape(labels.shape).astype(np.int64)


class _ReplayScores:
    """Forward function that runs the model once per perturbed batch and replays the outputs.

    Every target is fitted on the same seeded samples in the same batches, so the ``i``-th
    batch of the second target equals the ``i``-th batch of the first; a fingerprint (shape
    and sum) guards the replay and the model is re-run on any mismatch.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.recorded: list[tuple[tuple[int, ...], float, torch.Tensor]] = []
        self.position = 0

    def rewind(self) -> None:
        self.position = 0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        fingerprint = (tuple(batch.shape), float(batch.sum(dtype=torch.float64)))
        index = self.position
        self.position += 1
        if index < len(self.recorded) and self.recorded[index][:2] == fingerprint:
            return self.recorded[index][2]
        output = self.model(batch)
        del self.recorded[index:]
        self.recorded.append((*fingerprint, output))
        return output

    def is_constant(self, target: int) -> bool:
        """Whether the model gave every sample of the last pass the same score for ``target``."""
        scores = torch.cat([output[:, target] for _, _, output in self.recorded[: self.position]])
        return bool((scores == scores[0]).all())


class Lime(HeatmapExplainer):
    """LIME (Ribeiro et al., KDD 2016) on SLIC superpixels, one signed map per target.

    Args:
        model: classifier mapping a float32 ``(N, C, H, W)`` batch to ``(N, K)`` logits.
        target_layer: ignored (accepted so that every plugin is built the same way).
        n_segments: SLIC's approximate number of superpixels, default 50.
        compactness: SLIC's colour/space trade-off, default 10 (for Lab images).
        n_samples: perturbed images (the first is the image itself), default 500.
        kernel_width: proximity kernel width on the cosine distance, default 0.25.
        seed: seed of the sampled superpixel subsets (default 0); a private generator is used,
            the global RNG is untouched.  All targets use the same samples.
        batch_size: perturbed images per forward pass, default 32; does not change the result.
        image_mean, image_std: optional per-channel normalisation of the model input (e.g.
            ImageNet's), used only to segment the de-normalised image.

    ``params`` records all of them (``image_mean``/``image_std`` as ``None`` when absent) plus
    ``"segmentation_space"`` (``"denormalised"`` or ``"min_max"``) and ``"baseline": 0.0``.

    ``explain`` returns ``float32`` maps of shape ``(T, H, W)``: every pixel carries the ridge
    weight of its superpixel (units: logit per superpixel switched on).  SIGNED: positive
    superpixels support the class, negative ones speak against it; display with a diverging
    colour map symmetric around 0.  Not normalised.  A score that is the same for every
    perturbed image (e.g. a model that ignores the input) gives an exact all-zero map flagged
    ``degenerate``.  The model runs ``n_samples`` forward passes per call (shared by all
    targets).

    Raises:
        ExplainerConfigError: (constructor) unknown parameter or a value out of range
            (``n_segments >= 1``, ``compactness > 0``, ``n_samples >= 2``,
            ``kernel_width > 0``, ``seed >= 0``, ``batch_size >= 1``, ``image_std > 0``, only
            one of ``image_mean``/``image_std`` given).
        ExplainerInputError: see :meth:`Explainer.explain`; also ``image_mean``/``image_std``
            whose length differs from the input's channel count.
    """

    key: ClassVar[str] = "lime"
    name: ClassVar[str] = "LIME"
    paper: ClassVar[str] = (
        'Ribeiro, M. T., Singh, S., & Guestrin, C. "Why Should I Trust You?": Explaining the '
        "Predictions of Any Classifier. KDD 2016."
    )
    accepted_params: ClassVar[frozenset[str]] = frozenset(
        {
            "n_segments",
            "compactness",
            "n_samples",
            "kernel_width",
            "seed",
            "batch_size",
            "image_mean",
            "image_std",
        }
    )

    def __init__(self, model: nn.Module, *, target_layer: str | None = None, **params: Any) -> None:
        super().__init__(model, target_layer=target_layer, **params)
        self.n_segments = check_int("n_segments", params.get("n_segments", 50), minimum=1)
        self.compactness = check_float(
            "compactness", params.get("compactness", 10.0), minimum=0, strict_minimum=True
        )
        self.n_samples = check_int("n_samples", params.get("n_samples", 500), minimum=2)
        self.kernel_width = check_float(
            "kernel_width", params.get("kernel_width", 0.25), minimum=0, strict_minimum=True
        )
        self.seed = check_int("seed", params.get("seed", 0), minimum=0)
        self.batch_size = check_int("batch_size", params.get("batch_size", 32), minimum=1)
        mean, std = params.get("image_mean"), params.get("image_std")
        if (mean is None) != (std is None):
            raise ExplainerConfigError("give both 'image_mean' and 'image_std', or neither")
        self.image_mean = None if mean is None else _floats("image_mean", mean)
        self.image_std = None if std is None else _floats("image_std", std, positive=True)
        self.params = {
            "n_segments": self.n_segments,
            "compactness": self.compactness,
            "n_samples": self.n_samples,
            "kernel_width": self.kernel_width,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "segmentation_space": "min_max" if self.image_mean is None else "denormalised",
            "baseline": 0.0,
        }

    def _attribute(self, inputs: torch.Tensor, targets: tuple[int, ...]) -> np.ndarray:
        image = inputs.detach().clone()
        channels = int(image.shape[1])
        for name, values in (("image_mean", self.image_mean), ("image_std", self.image_std)):
            if values is not None and len(values) != channels:
                raise ExplainerInputError(
                    f"{name} has {len(values)} values but the input has {channels} channels"
                )
        segments = superpixels(
            image[0],
            n_segments=self.n_segments,
            compactness=self.compactness,
            mean=self.image_mean,
            std=self.image_std,
        )
        n_features = int(segments.max()) + 1
        feature_mask = torch.from_numpy(segments).to(image.device)[None, None]  # (1, 1, H, W)
        samples = self._samples(n_features, image.device)
        kernel_width = self.kernel_width

        def perturb(original: torch.Tensor, **kwargs: Any):  # noqa: ANN202 - generator
            yield from samples

        def proximity(original: Any, perturbed: Any, sample: torch.Tensor, **kwargs: Any) -> float:
            kept = float(sample.sum())
            # cosine distance between z' and the all-ones vector (1 for the empty subset)
            distance = 1.0 - math.sqrt(kept / n_features) if kept > 0 else 1.0
            return math.exp(-(distance**2) / (2 * kernel_width**2))

        scores = _ReplayScores(self._explained_model())
        maps = []
        # fork_rng: Captum fits the ridge model through a DataLoader, whose iterator draws a
        # seed from the global CPU generator; the samples themselves use a private generator.
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            for target in targets:
                scores.rewind()
                lime = CaptumLime(
                    scores,
                    interpretable_model=SkLearnRidge(alpha=_RIDGE_ALPHA),
                    similarity_func=proximity,
                    perturb_func=perturb,
                )
                weights = lime.attribute(
                    image,
                    baselines=0.0,
                    target=target,
                    feature_mask=feature_mask,
                    n_samples=self.n_samples,
                    perturbations_per_eval=self.batch_size,
                    return_input_shape=False,
                )
                weights = weights.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
                if scores.is_constant(target):
                    # The exact fit of a constant response is w = 0; the float32 ridge solve
                    # leaves rounding noise (~1e-10) that would hide a degenerate map.
                    weights = torch.zeros_like(weights)
                maps.append(weights.numpy()[segments])
        return np.stack(maps).astype(np.float32)

    def _samples(self, n_features: int, device: torch.device) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        z = torch.bernoulli(
            torch.full((self.n_samples, n_features), 0.5), generator=generator
        ).long()
        z[0] = 1  # the unperturbed image, as in the reference implementation
        return [row[None].to(device) for row in z]


def _floats(name: str, values: Any, *, positive: bool = False) -> list[float]:
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes)) or not values:
        raise ExplainerConfigError(f"parameter {name!r} must be a list of per-channel numbers")
    return [
        check_float(name, v, minimum=0 if positive else None, strict_minimum=positive)
        for v in values
    ]
