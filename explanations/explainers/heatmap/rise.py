"""RISE: Randomized Input Sampling for Explanation (implemented here; Captum has no RISE).

Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
Models", BMVC 2018 (arXiv:1806.07421), Sec. 3: the saliency of pixel ``lambda`` for class
``c`` is the expected class score over random masks ``M``, conditioned on ``lambda`` being kept,
estimated by Monte Carlo (Eq. 6):

    S_c(lambda) = 1 / (N * p1) * sum_{i=1..N} P_c(I . M_i) * M_i(lambda)

Masks (Sec. 3.2): ``N`` binary grids of ``s x s`` cells, each cell 1 with probability ``p1``;
each grid is upsampled bilinearly to ``(s + 1) * ceil(H / s)`` by ``(s + 1) * ceil(W / s)``
pixels and a random ``H x W`` crop is taken (shift uniform in ``[0, cell)`` per axis), which
gives smooth masks whose cells are not aligned with the pixel grid.  The paper uses
``s = 7``, ``p1 = 0.5`` and ``N = 4000`` for ResNet50/VGG16 on 224 x 224 images.
``P_c`` is the softmax probability of class ``c``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from explanations.explainers.heatmap.saliency import HeatmapExplainer, check_float, check_int

__all__ = ["Rise", "rise_masks"]


def rise_masks(grids: torch.Tensor, shifts: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Upsample binary ``(B, s, s)`` grids and crop ``(B, H, W)`` masks at ``(B, 2)`` shifts.

    The upsampling is ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)`` to ``(s + 1) * ceil(H / s)`` by ``(s + 1) * ceil(W / s)``.
    """
    grid = int(grids.shape[-1])
    cell_h, cell_w = math.ceil(height / grid), math.ceil(width / grid)
    upsampled = F.interpolate(
        grids[:, None].float(),
        size=((grid + 1) * cell_h, (grid + 1) * cell_w),
        mode="bilinear",
        align_corners=False,
    )[:, 0]
    rows = shifts[:, 0, None] + torch.arange(height, device=grids.device)  # (B, H)
    cols = shifts[:, 1, None] + torch.arange(width, device=grids.device)  # (B, W)
    batch = torch.arange(grids.shape[0], device=grids.device)[:, None, None]
    return upsampled[batch, rows[:, :, None], cols[:, None, :]]


class Rise(HeatmapExplainer):
    """RISE (Petsiuk et al., BMVC 2018): probability-weighted average of random masks.

    Args:
        model: classifier mapping a float32 ``(N, C, H, W)`` batch to ``(N, K)`` logits; only
            its outputs are used (black box, no gradients, no hooks).
        target_layer: ignored (accepted so that every plugin is built the same way).
        n_masks: ``N``; default 2000, half the paper's 4000, because jobs run on CPU workers
            where ``N`` forward passes dominate the cost; the Monte-Carlo error shrinks as
            ``1 / sqrt(N)``, so 2000 masks give maps visually indistinguishable from 4000 at half
            the time.  Raise it on a GPU.
        grid: ``s``, cells per side of the random grid, default 7 (paper).
        p1: probability that a cell is kept, default 0.5 (paper).
        batch_size: masked images per forward pass, default 32; does not change the result.
        seed: seed of the masks (default 0); a private CPU generator is used (same masks on any
            device, global RNG untouched).  All targets use the same masks.

    Masking multiplies the model input by the mask, so hidden pixels become 0 in the model's
    input space (the dataset-mean colour for a mean/std-normalised model).  ``params`` records
    all parameters plus ``"score": "softmax"``.

    ``explain`` returns ``float32`` maps of shape ``(T, H, W)``, ``>= 0`` (probabilities times
    masks): the expected probability of the class when the pixel is visible; about ``P_c`` of
    the image everywhere for a class the masks do not change.  Non-negative: display with a
    sequential colour map.  Not normalised.  A class whose probability is 0 under every mask
    gives an all-zero map flagged ``degenerate``.

    Raises:
        ExplainerConfigError: (constructor) unknown parameter or a value out of range
            (``n_masks >= 1``, ``grid >= 1``, ``0 < p1 <= 1``, ``batch_size >= 1``,
            ``seed >= 0``).
        ExplainerInputError: see :meth:`Explainer.explain`.
    """

    key: ClassVar[str] = "rise"
    name: ClassVar[str] = "RISE"
    paper: ClassVar[str] = (
        "Petsiuk, V., Das, A., & Saenko, K. RISE: Randomized Input Sampling for Explanation of "
        "Black-box Models. BMVC 2018."
    )
    accepted_params: ClassVar[frozenset[str]] = frozenset(
        {"n_masks", "grid", "p1", "batch_size", "seed"}
    )
    non_negative: ClassVar[bool] = True

    def __init__(self, model: nn.Module, *, target_layer: str | None = None, **params: Any) -> None:
        super().__init__(model, target_layer=target_layer, **params)
        self.n_masks = check_int("n_masks", params.get("n_masks", 2000), minimum=1)
        self.grid = check_int("grid", params.get("grid", 7), minimum=1)
        self.p1 = check_float(
            "p1", params.get("p1", 0.5), minimum=0, strict_minimum=True, maximum=1
        )
        self.batch_size = check_int("batch_size", params.get("batch_size", 32), minimum=1)
        self.seed = check_int("seed", params.get("seed", 0), minimum=0)
        self.params = {
            "n_masks": self.n_masks,
            "grid": self.grid,
            "p1": self.p1,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "score": "softmax",
        }

    def _attribute(self, inputs: torch.Tensor, targets: tuple[int, ...]) -> np.ndarray:
        height, width = int(inputs.shape[-2]), int(inputs.shape[-1])
        device = inputs.device
        # All random numbers are drawn up front, so the masks do not depend on batch_size.
        generator = torch.Generator().manual_seed(self.seed)
        grids = torch.rand(self.n_masks, self.grid, self.grid, generator=generator) < self.p1
        cell_h, cell_w = math.ceil(height / self.grid), math.ceil(width / self.grid)
        shifts = torch.stack(
            [
                torch.randint(0, cell_h, (self.n_masks,), generator=generator),
                torch.randint(0, cell_w, (self.n_masks,), generator=generator),
            ],
            dim=1,
        )
        columns = torch.tensor(targets, device=device)
        total = torch.zeros(len(targets), height * width, dtype=torch.float64, device=device)
        image = inputs.detach().clone()
        model = self._explained_model()
        with torch.no_grad():
            for start in range(0, self.n_masks, self.batch_size):
                stop = min(start + self.batch_size, self.n_masks)
                masks = rise_masks(
                    grids[start:stop].to(device), shifts[start:stop].to(device), height, width
                )  # (B, H, W)
                probabilities = torch.softmax(model(image * masks[:, None]), dim=1)
                scores = probabilities[:, columns].double()  # (B, T)
                total += scores.T @ masks.reshape(stop - start, -1).double()
        saliency = total / (self.n_masks * self.p1)
        return saliency.reshape(len(targets), height, width).to("cpu", torch.float32).numpy()
