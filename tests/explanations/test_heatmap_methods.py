"""The heatmap explanation plugins checked against values computed by hand or in closed form.

Methods: vanilla gradient ("saliency"), SmoothGrad, Integrated Gradients, Guided Backprop,
Guided Grad-CAM, Occlusion, LIME and RISE (``explanations/explainers/heatmap/``), plus the
``degenerate`` flag of :class:`ExplanationResult`.

Analytic cases use a linear model ``f_k(x) = sum(W[k] * x) + b_k``, for which
* the input gradient is ``W[k]`` everywhere (saliency = ``max_c |W[k, c]|``), also under noise
  (SmoothGrad),
* IG from a constant baseline ``x'`` is exactly ``sum_c (x - x')_c * W[k, c]``,
* occluding a window removes exactly ``sum_{window} W[k] * x`` from the logit.

The generic tests (in-place ReLU, degenerate maps, hooks/memory, batch of targets, seeds) run
every method on :class:`TinyNet`, whose first module is a ReLU applied to the input itself:
with ``inplace=True`` it makes autograd fail on the input leaf ("a leaf Variable that requires
grad is being used in an in-place operation") unless the plugin explains an in-place-free copy.
Inputs of those tests are non-negative, so that first ReLU does not change their values.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from django.conf import settings
from torch import nn

from explanations.explainers.base import (
    Explainer,
    ExplainerConfigError,
    ExplainerInputError,
    ExplainerOutputError,
    ExplanationResult,
)
from explanations.explainers.heatmap.gradcam import GradCam
from explanations.explainers.heatmap.guided_backprop import GuidedBackprop, GuidedGradCam
from explanations.explainers.heatmap.integrated_gradients import IntegratedGradients
from explanations.explainers.heatmap.lime import Lime, superpixels
from explanations.explainers.heatmap.occlusion import Occlusion
from explanations.explainers.heatmap.rise import Rise, rise_masks
from explanations.explainers.heatmap.saliency import Saliency
from explanations.explainers.heatmap.smoothgrad import SmoothGrad
from explanations.explainers.registry import build_registry

# --------------------------------------------------------------------------------------------
# fixtures and models
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded (and the CI machine has 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with a fixed seed, leaving the global RNG as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


class LinearNet(nn.Module):
    """``f_k(x) = sum(W[k] * x) + b_k`` for ``x`` of shape ``(N, C, H, W)``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())  # (K, C, H, W)
        self.bias = nn.Parameter(bias.clone() if bias is not None else torch.zeros(weight.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nchw,kchw->nk", x, self.weight) + self.bias


class TinyNet(nn.Module):
    """ReLU on the input -> conv -> BN -> ReLU -> Dropout -> conv -> ReLU -> pool -> linear."""

    def __init__(self, inplace: bool, n_classes: int = 5, channels: int = 3) -> None:
        super().__init__()
        self.clip = nn.ReLU(inplace=inplace)
        self.conv1 = nn.Conv2d(channels, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.act1 = nn.ReLU(inplace=inplace)
        self.drop = nn.Dropout(0.5, inplace=inplace)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.act2 = nn.ReLU(inplace=inplace)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, n_classes)
        with torch.no_grad():
            self.bn.running_mean.copy_(torch.randn(6) * 0.1)
            self.bn.running_var.copy_(torch.rand(6) + 0.5)
            self.bn.weight.copy_(torch.rand(6) + 0.5)
            self.bn.bias.copy_(torch.randn(6) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.clip(x)
        x = self.drop(self.act1(self.bn(self.conv1(x))))
        x = self.act2(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


def tiny_net(inplace: bool = False) -> TinyNet:
    return seeded(0, lambda: TinyNet(inplace))  # type: ignore[return-value]


class ConstantNet(nn.Module):
    """Logits ``[0, -1e4, 0, 0]`` whatever the input; the conv still runs (for Grad-CAM).

    ``connected=True``: the output is ``logits + 0 * g(x)`` (zero gradient through the graph);
    ``False``: the output has no autograd path to the input at all.  Class 1 has softmax
    probability exactly 0 (``exp(-1e4)`` underflows), which RISE needs for an all-zero map.
    """

    def __init__(self, connected: bool) -> None:
        super().__init__()
        self.connected = connected
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.act = nn.ReLU()
        self.logits = nn.Parameter(torch.tensor([0.0, -1e4, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.act(self.conv(x)).mean(dim=(1, 2, 3))
        logits = self.logits.expand(x.shape[0], -1)
        return logits + 0 * features[:, None] if self.connected else logits


#: Small, fast settings per method for the generic tests.
FACTORIES: dict[str, Callable[[nn.Module], Explainer]] = {
    "saliency": lambda m: Saliency(m),
    "smoothgrad": lambda m: SmoothGrad(m, n_samples=3, seed=3),
    "integrated_gradients": lambda m: IntegratedGradients(m, n_steps=6),
    "guided_backprop": lambda m: GuidedBackprop(m),
    "guided_gradcam": lambda m: GuidedGradCam(m, target_layer="conv2"),
    "occlusion": lambda m: Occlusion(m, window=4, stride=2),
    "lime": lambda m: Lime(m, n_samples=12, n_segments=6, seed=3),
    "rise": lambda m: Rise(m, n_masks=12, grid=3, batch_size=5, seed=3),
}
METHODS = sorted(FACTORIES)
RANDOM_METHODS = ["lime", "rise", "smoothgrad"]


def image(seed: int = 1, channels: int = 3, size: int = 8) -> torch.Tensor:
    """A non-negative ``(1, C, size, size)`` image (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, size, size, generator=generator)


def assert_maps_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-5) -> None:
    """Close relative to the largest value of ``expected`` (maps of tiny nets are tiny)."""
    scale = float(np.abs(expected).max())
    assert scale > 0, "reference map is all zero: the comparison would prove nothing"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def hook_counts(*models: nn.Module) -> list[int]:
    return [
        len(getattr(module, attr))
        for model in models
        for module in model.modules()
        for attr in HOOK_DICTS
    ]


def global_hook_counts() -> tuple[int, ...]:
    hooks = torch.nn.modules.module
    return (
        len(hooks._global_forward_hooks),
        len(hooks._global_forward_pre_hooks),
        len(hooks._global_backward_hooks),
        len(hooks._global_backward_pre_hooks),
    )


# --------------------------------------------------------------------------------------------
# analytic cases
# --------------------------------------------------------------------------------------------

# Two classes, two channels, 2x3 pixels.
LINEAR_W = torch.tensor(
    [
        [[[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], [[-4.0, 1.0, 0.25], [2.0, -3.0, 0.0]]],
        [[[0.0, 0.5, -0.5], [1.0, 1.0, 2.0]], [[0.0, -0.5, 1.5], [-1.0, 0.0, -2.5]]],
    ]
)
LINEAR_B = torch.tensor([0.75, -1.25])
LINEAR_X = torch.tensor(
    [[[[0.5, 1.0, -1.0], [2.0, 0.0, 1.5]], [[-0.5, 2.0, 4.0], [1.0, -1.0, 0.5]]]]
)
# max_c |W[k, c]| per pixel:
LINEAR_SALIENCY = np.array(
    [
        [[4.0, 2.0, 0.5], [2.0, 3.0, 1.0]],
        [[0.0, 0.5, 1.5], [1.0, 1.0, 2.5]],
    ],
    dtype=np.float32,
)
# sum_c x_c * W[k, c] per pixel.  Class 0:
#   (0.5*1 + -0.5*-4, 1*-2 + 2*1, -1*0.5 + 4*0.25) = (2.5, 0, 0.5)
#   (2*0 + 1*2, 0*3 + -1*-3, 1.5*-1 + 0.5*0)      = (2, 3, -1.5)
# Class 1:
#   (0.5*0 + -0.5*0, 1*0.5 + 2*-0.5, -1*-0.5 + 4*1.5) = (0, -0.5, 6.5)
#   (2*1 + 1*-1, 0*1 + -1*0, 1.5*2 + 0.5*-2.5)       = (1, 0, 1.75)
LINEAR_X_TIMES_W = np.array(
    [
        [[2.5, 0.0, 0.5], [2.0, 3.0, -1.5]],
        [[0.0, -0.5, 6.5], [1.0, 0.0, 1.75]],
    ],
    dtype=np.float32,
)


def test_saliency_of_a_linear_model_is_max_abs_weight_over_channels() -> None:
    result = Saliency(LinearNet(LINEAR_W, LINEAR_B)).explain(LINEAR_X, [0, 1])

    assert result.method == "saliency"
    assert result.attributions.dtype == np.float32
    np.testing.assert_array_equal(result.attributions, LINEAR_SALIENCY)
    assert result.degenerate == (False, False)


def test_smoothgrad_of_a_linear_model_equals_saliency_whatever_the_noise() -> None:
    explainer = SmoothGrad(LinearNet(LINEAR_W, LINEAR_B), n_samples=7, noise_level=0.5)

    result = explainer.explain(LINEAR_X, [0, 1])

    np.testing.assert_allclose(result.attributions, LINEAR_SALIENCY, rtol=1e-6, atol=0)
    assert result.params == {
        "n_samples": 7,
        "noise_level": 0.5,
        "seed": 0,
        "batch_size": 10,
        "channel_reduction": "max_abs",
    }


def test_integrated_gradients_of_a_linear_model_is_input_times_weight_summed_over_channels() -> (
    None
):
    result = IntegratedGradients(LinearNet(LINEAR_W, LINEAR_B)).explain(LINEAR_X, [0, 1])

    np.testing.assert_allclose(result.attributions, LINEAR_X_TIMES_W, rtol=1e-5, atol=1e-6)
    # completeness: sum = f(x) - f(0) = sum(x * W) (the bias cancels)
    np.testing.assert_allclose(result.attributions.sum(axis=(1, 2)), [6.5, 8.75], rtol=1e-5)
    assert result.params["n_steps"] == 50
    assert result.params["method"] == "gausslegendre"
    assert result.params["baseline"] == "zero"
    assert np.abs(result.params["convergence_delta"]).max() < 1e-5


def test_integrated_gradients_from_a_per_channel_constant_baseline() -> None:
    baseline = [1.0, -2.0]  # e.g. the normalised value of a black pixel, per channel
    explainer = IntegratedGradients(
        LinearNet(LINEAR_W, LINEAR_B), baseline="constant", baseline_value=baseline
    )

    result = explainer.explain(LINEAR_X, [0])

    shifted = LINEAR_X - torch.tensor(baseline).reshape(1, 2, 1, 1)
    expected = (shifted[0] * LINEAR_W[0]).sum(dim=0).numpy()
    np.testing.assert_allclose(result.attributions[0], expected, rtol=1e-5, atol=1e-5)
    assert result.params["baseline_value"] == baseline


def test_integrated_gradients_completeness_on_a_relu_net() -> None:
    """sum(IG) == f(x) - f(0) within 1e-4, with real ReLU kinks along the path (biases)."""
    net = seeded(
        2,
        lambda: nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(6, 6, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(6, 4),
        ),
    )
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(5)) * 2
    with torch.no_grad():
        difference = (net(x) - net(torch.zeros_like(x)))[0].double().numpy()

    fine = IntegratedGradients(net, n_steps=300, batch_size=150).explain(x, [0, 1, 2, 3])
    default = IntegratedGradients(net).explain(x, [0, 1, 2, 3])

    sums = fine.attributions.astype(np.float64).sum(axis=(1, 2))
    np.testing.assert_allclose(sums, difference, rtol=0, atol=1e-4)
    assert np.abs(difference).min() > 1e-2  # the check is not vacuous
    # the reported convergence delta is sum(map) - (f(x) - f(0)) for the default 50 steps too
    default_sums = default.attributions.astype(np.float64).sum(axis=(1, 2))
    np.testing.assert_allclose(
        default.params["convergence_delta"], default_sums - difference, rtol=0, atol=1e-6
    )
    assert np.abs(default.params["convergence_delta"]).max() < 1e-2


class TwoPixelNet(nn.Module):
    """x = [x1, x2] (a 1x1x1x2 image) -> Linear(2, 3) -> ReLU -> Linear(3, 2), no biases."""

    def __init__(self, act: nn.Module | None = None) -> None:
        super().__init__()
        self.hidden = nn.Linear(2, 3, bias=False)
        self.act = act if act is not None else nn.ReLU()
        self.out = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, -1.0], [-1.0, 0.0]]))
            self.out.weight.copy_(torch.tensor([[1.0, -2.0, 3.0], [-1.0, 0.5, 3.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.hidden(x.flatten(1))))


def test_guided_backprop_matches_hand_computation_on_two_pixels() -> None:
    # x = [1, 1.5]; hidden pre-activations h = W1 x = [1 + 1.5, 2 - 1.5, -1] = [2.5, 0.5, -1].
    x = torch.tensor([[[[1.0, 1.5]]]])
    net = TwoPixelNet()
    # Guided ReLU passes the gradient only where h > 0 AND the incoming gradient is > 0.
    # Class 0: dy/dh = [1, -2, 3] -> guided [1, 0, 0] -> dx = W1^T [1, 0, 0] = [1, 1]
    #          (vanilla: [1, -2, 0] -> W1^T [1, -2, 0] = [1 - 4, 1 + 2] = [-3, 3]).
    # Class 1: dy/dh = [-1, 0.5, 3] -> guided [0, 0.5, 0] -> dx = [2 * 0.5, -1 * 0.5] = [1, -0.5]
    #          (signed: the negative value is kept; vanilla: [-1 + 1, -1 - 0.5] = [0, -1.5]).
    expected = np.array([[[1.0, 1.0]], [[1.0, -0.5]]], dtype=np.float32)
    probe = x.clone().requires_grad_(True)
    (vanilla,) = torch.autograd.grad(net(probe)[0, 0], probe)

    result = GuidedBackprop(net).explain(x, [0, 1])

    assert result.attributions.shape == (2, 1, 2)
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(vanilla[0, 0].numpy(), [[-3.0, 3.0]])  # the guidance matters


def test_guided_backprop_also_guides_relu6_and_respects_its_saturation() -> None:
    # EfficientNet-Lite uses nn.ReLU6, which Captum alone leaves unguided.
    # x = [1, 1.5]: h = [2.5, 0.5, -1], all below 6 -> same maps as with nn.ReLU.
    # x = [3, 4.5]: h = [7.5, 1.5, -3]; unit 1 is saturated (gradient 0 above 6):
    #   class 0: dy/dh = [1, -2, 3] -> [0 (saturated), 0 (negative), 0 (h < 0)] -> dx = [0, 0]
    #   class 1: dy/dh = [-1, 0.5, 3] -> [0, 0.5, 0] -> dx = [1, -0.5]
    explainer = GuidedBackprop(TwoPixelNet(nn.ReLU6()))

    below = explainer.explain(torch.tensor([[[[1.0, 1.5]]]]), [0, 1])
    saturated = explainer.explain(torch.tensor([[[[3.0, 4.5]]]]), [0, 1])

    np.testing.assert_allclose(below.attributions, [[[1.0, 1.0]], [[1.0, -0.5]]], atol=1e-7)
    np.testing.assert_allclose(saturated.attributions, [[[0.0, 0.0]], [[1.0, -0.5]]], atol=1e-7)
    assert saturated.degenerate == (True, False)


def test_guided_gradcam_is_guided_backprop_times_gradcam() -> None:
    net = tiny_net()
    x = image(seed=4)

    guided_gradcam = GuidedGradCam(net, target_layer="conv2").explain(x, [0, 2, 4])
    guided = GuidedBackprop(net).explain(x, [0, 2, 4])
    cam = GradCam(net, target_layer="conv2").explain(x, [0, 2, 4])

    assert_maps_close(guided_gradcam.attributions, guided.attributions * cam.attributions)
    assert guided_gradcam.params["layer"] == "conv2"
    assert guided_gradcam.params["upsample"] == "bilinear"


def test_guided_gradcam_defaults_to_the_last_conv_layer() -> None:
    assert GuidedGradCam(tiny_net()).params["layer"] == "conv2"
    with pytest.raises(ExplainerConfigError, match=r"no layer named 'conv9'"):
        GuidedGradCam(tiny_net(), target_layer="conv9")


# 4x4 single-channel image and class-0 weights for the occlusion example.
OCCLUSION_X = torch.tensor(
    [[[[1.0, 2.0, 0.0, 1.0], [0.0, 1.0, 3.0, 0.0], [2.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 2.0]]]]
)
OCCLUSION_W = torch.tensor(
    [[[[1.0, 0.0, -1.0, 2.0], [0.0, 1.0, 1.0, 0.0], [-2.0, 1.0, 0.0, 0.0], [1.0, 0.0, 3.0, -1.0]]]]
)


def test_occlusion_of_a_linear_model_with_2x2_windows_is_each_window_contribution() -> None:
    # Window sums of x * w:
    #   top-left     1*1 + 2*0 + 0*0 + 1*1   = 2
    #   top-right    0*-1 + 1*2 + 3*1 + 0*0  = 5
    #   bottom-left  2*-2 + 0*1 + 1*1 + 1*0  = -3
    #   bottom-right 1*0 + 1*0 + 0*3 + 2*-1  = -2
    expected = np.array(
        [[2, 2, 5, 5], [2, 2, 5, 5], [-3, -3, -2, -2], [-3, -3, -2, -2]], dtype=np.float32
    )
    net = LinearNet(OCCLUSION_W, torch.tensor([10.0]))  # the bias cancels in the difference

    result = Occlusion(net, window=2, stride=2).explain(OCCLUSION_X, [0])

    np.testing.assert_allclose(result.attributions[0], expected, rtol=1e-6, atol=1e-6)
    assert result.params["window_px"] == [2, 2]
    assert result.params["stride_px"] == [2, 2]


def test_occlusion_with_overlapping_windows_averages_the_windows_covering_a_pixel() -> None:
    contribution = (OCCLUSION_X * OCCLUSION_W)[0, 0].numpy()
    total, count = np.zeros((4, 4)), np.zeros((4, 4))
    for top in range(3):  # window 2, stride 1: 3 x 3 positions
        for left in range(3):
            total[top : top + 2, left : left + 2] += contribution[
                top : top + 2, left : left + 2
            ].sum()
            count[top : top + 2, left : left + 2] += 1
    net = LinearNet(torch.cat([OCCLUSION_W, -OCCLUSION_W]))

    result = Occlusion(net, window=2, stride=1).explain(OCCLUSION_X, [0, 1])

    np.testing.assert_allclose(result.attributions[0], total / count, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(result.attributions[1], -total / count, rtol=1e-6, atol=1e-6)


def test_occlusion_default_window_scales_with_the_input_side() -> None:
    explainer = Occlusion(LinearNet(torch.ones(1, 1, 32, 32)))

    result = explainer.explain(torch.ones(1, 1, 32, 32), [0])

    assert result.params["window"] == "auto"
    assert result.params["window_px"] == [2, 2]  # round(16 * 32 / 224)
    assert result.params["stride_px"] == [1, 1]
    # every window removes 4 (four ones); each pixel averages windows -> 4 everywhere
    np.testing.assert_allclose(result.attributions[0], 4.0, rtol=1e-6)


def test_occlusion_window_larger_than_the_input_is_an_input_error() -> None:
    with pytest.raises(ExplainerInputError, match=r"window 9x9 is larger than the input 8x8"):
        Occlusion(tiny_net(), window=9).explain(image(), [0])


def quadrant_image() -> torch.Tensor:
    """3x16x16, four flat 8x8 quadrants of different colours."""
    colours = [(0.9, 0.1, 0.1), (0.1, 0.8, 0.2), (0.2, 0.2, 0.9), (0.8, 0.8, 0.1)]
    x = torch.zeros(1, 3, 16, 16)
    for index, colour in enumerate(colours):
        row, col = divmod(index, 2)
        x[0, :, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] = torch.tensor(colour)[:, None, None]
    return x


class TopLeftMean(nn.Module):
    """Class 0: mean over the top-left quadrant of the channel sum; class 1: its negative."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x[:, :, :8, :8].sum(dim=1).mean(dim=(1, 2))
        return torch.stack([mean, -mean], dim=1)


def test_lime_ranks_and_signs_superpixels_by_their_contribution_to_a_linear_model() -> None:
    x = quadrant_image()
    explainer = Lime(TopLeftMean(), n_samples=200, seed=0)
    segments = superpixels(x[0], n_segments=50, compactness=10.0)
    # exact contribution of each superpixel to the class-0 logit when it is switched on
    per_pixel = np.zeros((16, 16))
    per_pixel[:8, :8] = x[0, :, :8, :8].sum(dim=0).numpy() / 64
    contribution = np.bincount(segments.ravel(), weights=per_pixel.ravel())

    result = explainer.explain(x, [0, 1])

    maps = result.attributions
    weights = np.array([maps[0][segments == s][0] for s in range(segments.max() + 1)])
    for s in range(segments.max() + 1):  # one weight per superpixel, painted on its pixels
        np.testing.assert_array_equal(maps[0][segments == s], weights[s])
    inside = np.zeros((16, 16), dtype=bool)
    inside[:8, :8] = True
    assert maps[0][inside].min() > np.abs(maps[0][~inside]).max()
    assert maps[1][inside].max() < -np.abs(maps[1][~inside]).max()  # negative evidence
    # pairwise ranking: a clearly larger contribution gets a larger weight
    for i in range(len(weights)):
        for j in range(len(weights)):
            if contribution[i] > contribution[j] + 0.02:
                assert weights[i] > weights[j], (i, j, contribution[i], contribution[j])
    assert result.params["segmentation_space"] == "min_max"


def test_lime_segments_the_denormalised_image_when_the_normalisation_is_given() -> None:
    x = quadrant_image()
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    normalised = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]

    direct = superpixels(x[0], n_segments=20, compactness=10.0, mean=None, std=None)
    via_normalisation = superpixels(
        normalised[0], n_segments=20, compactness=10.0, mean=mean, std=std
    )

    np.testing.assert_array_equal(direct, via_normalisation)
    params = Lime(TopLeftMean(), image_mean=mean, image_std=std).params
    assert params["segmentation_space"] == "denormalised"


class SquareFraction(nn.Module):
    """P(class 0) = fraction of the input that is 'on' inside rows 4-7, cols 4-7."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x[:, 0, 4:8, 4:8].mean(dim=(1, 2)).clamp(1e-6, 1 - 1e-6)
        return torch.stack([p.log(), (1 - p).log()], dim=1)


def test_rise_map_peaks_inside_the_square_the_class_probability_depends_on() -> None:
    result = Rise(SquareFraction(), n_masks=500, grid=4, batch_size=100).explain(
        torch.ones(1, 1, 16, 16), [0]
    )

    saliency = result.attributions[0]
    inside = np.zeros((16, 16), dtype=bool)
    inside[4:8, 4:8] = True
    far = np.ones((16, 16), dtype=bool)
    far[:14, :14] = False  # the last two rows and columns: >= 6 px from the square
    row, col = np.unravel_index(saliency.argmax(), saliency.shape)
    assert 4 <= row < 8 and 4 <= col < 8
    assert saliency[inside].mean() > saliency[~inside].mean() + 0.1
    assert saliency[inside].min() > saliency[far].max()
    assert saliency.min() >= 0


def test_rise_of_a_constant_model_is_the_class_probability_everywhere() -> None:
    """E[P * M] / p1 = P * E[M] / p1 = P: checks the 1 / (N * p1) normalisation (p1 = 0.3)."""
    probability = 0.25  # four equal logits
    net = LinearNet(torch.zeros(4, 3, 16, 16))

    result = Rise(net, n_masks=1000, grid=4, p1=0.3, batch_size=250).explain(image(size=16), [2])

    saliency = result.attributions[0]
    assert abs(float(saliency.mean()) - probability) < 0.01
    assert np.abs(saliency - probability).max() < 0.06


def test_rise_masks_are_smooth_crops_in_unit_range() -> None:
    grids = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # 2x2 grid, 8x8 image: cell 4, up 12x12
    masks = rise_masks(grids, torch.tensor([[0, 0]]), 8, 8)
    shifted = rise_masks(grids, torch.tensor([[3, 2]]), 8, 8)

    assert masks.shape == (1, 8, 8)
    assert float(masks.min()) >= 0 and float(masks.max()) <= 1
    assert float(masks[0, 0, 0]) == 1.0 and float(masks[0, 0, 7]) < 0.5
    assert not torch.equal(masks, shifted)
    assert torch.all(masks[0] == masks[0].T)  # the grid is symmetric, so is the crop at (0, 0)


# --------------------------------------------------------------------------------------------
# every method
# --------------------------------------------------------------------------------------------


def test_all_methods_are_registered_in_settings_by_key() -> None:
    registry = build_registry(settings.STUDYPLATFORM_EXPLAINERS)

    assert set(METHODS) | {"gradcam"} <= set(registry)
    for key, factory in FACTORIES.items():
        explainer = factory(tiny_net())
        assert type(explainer) is registry[key]
        assert explainer.key == key


@pytest.mark.parametrize("method", METHODS)
def test_method_returns_float32_maps_with_the_documented_sign(method: str) -> None:
    result = FACTORIES[method](tiny_net()).explain(image(), [0, 3])

    maps = result.attributions
    assert result.method == method
    assert maps.shape == (2, 8, 8) and maps.dtype == np.float32
    assert np.all(np.isfinite(maps)) and np.abs(maps).max() > 0
    non_negative = method in ("saliency", "smoothgrad", "rise")
    assert type(FACTORIES[method](tiny_net())).non_negative is non_negative
    if non_negative:
        assert maps.min() >= 0


@pytest.mark.parametrize("method", METHODS)
def test_inplace_relu_model_gives_the_same_map_and_is_left_unchanged(method: str) -> None:
    x = image(seed=2)
    reference = FACTORIES[method](tiny_net(inplace=False)).explain(x.clone(), [1, 4])
    net = tiny_net(inplace=True)
    before = {name: tensor.clone() for name, tensor in net.state_dict().items()}

    result = FACTORIES[method](net).explain(x.clone(), [1, 4])

    assert_maps_close(result.attributions, reference.attributions)
    assert net.clip.inplace and net.act1.inplace and net.act2.inplace and net.drop.inplace
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_inplace_free_copy_follows_weight_updates_of_the_callers_model() -> None:
    net = tiny_net(inplace=True)
    explainer = Saliency(net)
    x = image(seed=3)
    explainer.explain(x, [2])  # builds and caches the in-place-free copy

    with torch.no_grad():
        net.conv1.weight.mul_(-2.0)  # in place: the copy shares the tensor
    in_place_update = explainer.explain(x, [2])
    net.fc.weight = nn.Parameter(net.fc.weight.detach() * 3.0)  # a new tensor: copy rebuilt
    new_parameter = explainer.explain(x, [2])

    assert_maps_close(
        in_place_update.attributions,
        Saliency(net_state(net, fc_scale=1 / 3)).explain(x, [2]).attributions,
    )
    assert_maps_close(
        new_parameter.attributions, Saliency(net_state(net)).explain(x, [2]).attributions
    )


def net_state(net: TinyNet, fc_scale: float = 1.0) -> TinyNet:
    """A fresh in-place-free TinyNet with ``net``'s weights (fc weight scaled)."""
    fresh = TinyNet(inplace=False)
    fresh.load_state_dict(net.state_dict())
    with torch.no_grad():
        fresh.fc.weight.mul_(fc_scale)
    return fresh


@pytest.mark.parametrize("connected", [True, False], ids=["zero-gradient", "disconnected"])
@pytest.mark.parametrize("method", METHODS)
def test_input_independent_model_gives_a_finite_all_zero_degenerate_map(
    method: str, connected: bool
) -> None:
    if method == "guided_gradcam":
        explainer: Explainer = GuidedGradCam(ConstantNet(connected), target_layer="conv")
    else:
        explainer = FACTORIES[method](ConstantNet(connected))

    result = explainer.explain(image(), [1, 1])

    assert result.degenerate == (True, True)
    np.testing.assert_array_equal(result.attributions, np.zeros((2, 8, 8), dtype=np.float32))
    assert not np.signbit(result.attributions).any()  # no -0.0 either


@pytest.mark.parametrize("method", METHODS)
def test_no_hooks_left_and_python_memory_flat_after_200_calls(method: str) -> None:
    net = tiny_net(inplace=True)  # in-place modules: the plugin works on a copy
    explainer = FACTORIES[method](net)
    x = image(seed=5)
    explainer.explain(x, [0, 1])  # warm-up: caches, lazy imports
    hooks_before = hook_counts(net)
    global_before = global_hook_counts()
    gc.collect()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        for call in range(200):
            explainer.explain(x, [call % 5, (call + 2) % 5])
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert hook_counts(net) == hooks_before and not any(hooks_before)
    copies = [m for m in vars(explainer).values() if isinstance(m, nn.Module)]
    assert not any(hook_counts(*copies))  # nor on the in-place-free copy
    assert global_hook_counts() == global_before
    assert end - start < 256 * 1024, f"Python memory grew by {end - start} bytes in 200 calls"


@pytest.mark.parametrize("method", METHODS)
def test_map_of_a_target_does_not_depend_on_the_other_targets_or_train_mode(method: str) -> None:
    net = tiny_net()  # BatchNorm and Dropout: eval mode matters
    explainer = FACTORIES[method](net)
    x = image(seed=6)

    net.train()
    alone = explainer.explain(x, [3])
    net.train()
    batch = explainer.explain(x, [3, 3, 1])

    assert not net.training
    assert_maps_close(batch.attributions[0], alone.attributions[0])
    assert_maps_close(batch.attributions[1], alone.attributions[0])
    assert not np.allclose(batch.attributions[2], batch.attributions[0])


@pytest.mark.parametrize("method", METHODS)
def test_fixed_seed_is_deterministic_and_leaves_the_global_rng_alone(method: str) -> None:
    x = image(seed=7)
    first = FACTORIES[method](tiny_net()).explain(x, [2, 0])
    rng_before = torch.random.get_rng_state()

    second = FACTORIES[method](tiny_net()).explain(x, [2, 0])

    assert torch.equal(torch.random.get_rng_state(), rng_before)
    np.testing.assert_array_equal(second.attributions, first.attributions)


@pytest.mark.parametrize("method", RANDOM_METHODS)
def test_another_seed_gives_another_map(method: str) -> None:
    x = image(seed=7)
    first = FACTORIES[method](tiny_net())
    other = type(first)(tiny_net(), **{**_constructor_params(method), "seed": 11})

    assert not np.allclose(first.explain(x, [2]).attributions, other.explain(x, [2]).attributions)


def _constructor_params(method: str) -> dict[str, object]:
    return {
        "smoothgrad": {"n_samples": 3},
        "lime": {"n_samples": 12, "n_segments": 6},
        "rise": {"n_masks": 12, "grid": 3, "batch_size": 5},
    }[method]


@pytest.mark.parametrize("method", METHODS)
def test_method_works_under_no_grad_and_inference_mode(method: str) -> None:
    net = tiny_net()
    x = image(seed=8)
    reference = FACTORIES[method](net).explain(x, [4])

    with torch.no_grad():
        under_no_grad = FACTORIES[method](net).explain(x, [4])
    with torch.inference_mode():
        under_inference = FACTORIES[method](net).explain(x.clone(), [4])

    assert_maps_close(under_no_grad.attributions, reference.attributions)
    assert_maps_close(under_inference.attributions, reference.attributions)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda m: SmoothGrad(m, n_samples=0), r"'n_samples' must be >= 1, got 0"),
        (lambda m: SmoothGrad(m, noise_level=-0.1), r"'noise_level' must be >= 0"),
        (lambda m: SmoothGrad(m, seed=True), r"'seed' must be an integer, got True"),
        (lambda m: IntegratedGradients(m, baseline="black"), r"needs the model's input norm"),
        (lambda m: IntegratedGradients(m, baseline="blur"), r"'zero' or 'constant'"),
        (lambda m: IntegratedGradients(m, baseline_value=1.0), r"only used with baseline="),
        (lambda m: IntegratedGradients(m, baseline="constant"), r"needs a 'baseline_value'"),
        (lambda m: IntegratedGradients(m, method="simpson"), r"'method' must be one of"),
        (lambda m: Occlusion(m, window=2, stride=3), r"'stride' \[3, 3\] must not exceed"),
        (lambda m: Occlusion(m, window=[2, 2, 2]), r"an int or a pair"),
        (lambda m: Lime(m, image_mean=[0.5, 0.5, 0.5]), r"both 'image_mean' and 'image_std'"),
        (lambda m: Lime(m, n_samples=1), r"'n_samples' must be >= 2"),
        (lambda m: Rise(m, p1=0), r"'p1' must be > 0"),
        (lambda m: Rise(m, p1=1.5), r"'p1' must be <= 1"),
        (lambda m: Saliency(m, abs=True), r"does not accept parameter\(s\) \['abs'\]"),
    ],
)
def test_bad_parameters_are_config_errors_naming_the_problem(
    build: Callable[[nn.Module], Explainer], message: str
) -> None:
    with pytest.raises(ExplainerConfigError, match=message):
        build(tiny_net())


def test_per_channel_values_must_match_the_input_channels() -> None:
    explainer = IntegratedGradients(tiny_net(), baseline="constant", baseline_value=[0.0, 1.0])

    with pytest.raises(ExplainerInputError, match=r"baseline_value has 2 values .* 3 channels"):
        explainer.explain(image(), [0])


# --------------------------------------------------------------------------------------------
# the degenerate flag and non-finite maps (Explainer.explain / ExplanationResult)
# --------------------------------------------------------------------------------------------


class FixedMaps(Explainer):
    """Returns the maps it was given; ``non_negative`` set per test."""

    key = "fixed"
    name = "Fixed"
    paper = "-"
    maps: np.ndarray

    def _attribute(self, inputs: torch.Tensor, targets: tuple[int, ...]) -> np.ndarray:
        return self.maps


class FixedNonNegativeMaps(FixedMaps):
    non_negative = True


def fixed(cls: type[FixedMaps], maps: np.ndarray) -> FixedMaps:
    explainer = cls(LinearNet(torch.zeros(3, 1, 2, 2)))
    explainer.maps = maps
    return explainer


def test_explain_flags_all_zero_maps_and_normalises_negative_zero() -> None:
    maps = np.array([[[0.0, -0.0], [0.0, 0.0]], [[0.0, 1.0], [-2.0, 0.0]]], dtype=np.float32)

    result = fixed(FixedMaps, maps).explain(torch.zeros(1, 1, 2, 2), [0, 1])

    assert result.degenerate == (True, False)
    np.testing.assert_array_equal(result.attributions, maps)
    assert not np.signbit(result.attributions[0]).any()


def test_non_negative_method_with_no_positive_value_is_degenerate_and_zeroed() -> None:
    maps = np.array([[[-1.0, 0.0], [-0.5, 0.0]], [[0.0, 1.0], [0.0, 0.0]]], dtype=np.float32)

    non_negative = fixed(FixedNonNegativeMaps, maps).explain(torch.zeros(1, 1, 2, 2), [0, 1])
    signed = fixed(FixedMaps, maps).explain(torch.zeros(1, 1, 2, 2), [0, 1])

    assert non_negative.degenerate == (True, False)
    np.testing.assert_array_equal(non_negative.attributions[0], np.zeros((2, 2)))
    assert signed.degenerate == (False, False)
    np.testing.assert_array_equal(signed.attributions, maps)


def test_non_finite_maps_from_a_plugin_are_output_errors() -> None:
    flat = np.zeros((1, 2, 2), dtype=np.float32)
    with np.errstate(invalid="ignore"):
        normalised = flat / flat.max()  # the 0/0 a plugin must not do

    with pytest.raises(ExplainerOutputError, match=r"NaN or infinite values \(.*unnormalised"):
        fixed(FixedMaps, normalised).explain(torch.zeros(1, 1, 2, 2), [0])


def test_explanation_result_degenerate_defaults_to_all_false_and_is_validated() -> None:
    maps = np.zeros((2, 2, 2), dtype=np.float32)

    assert ExplanationResult("m", (0, 1), maps, {}).degenerate == (False, False)
    assert ExplanationResult("m", (0, 1), maps, {}, degenerate=(True, False)).degenerate == (
        True,
        False,
    )
    with pytest.raises(ValueError, match=r"one bool per target"):
        ExplanationResult("m", (0, 1), maps, {}, degenerate=(True,))
    with pytest.raises(ValueError, match=r"one bool per target"):
        ExplanationResult("m", (0, 1), maps, {}, degenerate=(1, 0))  # type: ignore[arg-type]
