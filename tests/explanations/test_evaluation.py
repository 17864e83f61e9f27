"""Automatic saliency-map evaluation (explanations.evaluation) on tiny hand-made networks.

* Deletion/insertion (Petsiuk et al., RISE, BMVC 2018, Sec. 4.2): curves and AUCs computed by
  hand for 2x2 images; an "oracle" map beats its reverse on a model that only looks at a square.
* Model randomisation (Adebayo et al., NeurIPS 2018, Sec. 3): maps of model-dependent methods
  decorrelate when the weights are re-initialised; a model-independent "explainer" (an edge
  detector of the input) stays perfectly correlated and fails, which is the paper's point.
* Input invariance (Kindermans et al., 2017/2019, Sec. 2): the shifted network reproduces the
  logits; plain gradients are invariant, gradient x input is not (it moves by shift x gradient).

All models run on 1x2x2 to 3x16x16 images; the whole file takes a few seconds on 2 CPU cores.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch
from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from explanations import evaluation
from explanations.evaluation import (
    DeletionInsertion,
    InputInvariance,
    RandomisationStep,
    deletion_insertion_auc,
    gaussian_blur,
    input_invariance_check,
    model_randomisation_check,
    randomisation_passed,
)
from explanations.explainers.base import Explainer
from explanations.explainers.heatmap.gradcam import GradCam


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def assert_no_hooks(model: nn.Module) -> None:
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks


# ---------------------------------------------------------------------------------------------
# hand-written explainers (the Explainer contract, nothing else)
# ---------------------------------------------------------------------------------------------


def input_gradient(model: nn.Module, inputs: torch.Tensor, target: int) -> torch.Tensor:
    """d logit_target / d x, shape (C, H, W)."""
    with torch.enable_grad():
        x = inputs.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x)[0, target], x)
    return grad[0]


class InputGradient(Explainer):
    """Simonyan et al. 2014 without the absolute value: sum over channels of d y_t / d x."""

    key = "test_input_gradient"
    name = "Input gradient"
    paper = "Simonyan, Vedaldi & Zisserman, ICLR workshop 2014"

    def _attribute(self, inputs, targets):
        return np.stack([input_gradient(self.model, inputs, t).sum(0).numpy() for t in targets])


class GradientTimesInput(Explainer):
    """Shrikumar et al. 2016: sum over channels of x * d y_t / d x."""

    key = "test_gradient_x_input"
    name = "Gradient x input"
    paper = "Shrikumar et al., arXiv:1605.01713"

    def _attribute(self, inputs, targets):
        return np.stack(
            [(inputs[0] * input_gradient(self.model, inputs, t)).sum(0).numpy() for t in targets]
        )


SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(inputs: torch.Tensor) -> np.ndarray:
    grey = inputs.mean(dim=1, keepdim=True)
    kernels = torch.stack([SOBEL_X, SOBEL_X.T]).unsqueeze(1)
    edges = F.conv2d(grey, kernels, padding=1)
    return edges.pow(2).sum(1).sqrt()[0].numpy()


class EdgeDetector(Explainer):
    """Model-INDEPENDENT "explanation": Sobel edge magnitude of the input (Adebayo et al. Fig. 1
    show edge detectors produce maps that look like saliency maps)."""

    key = "test_edges"
    name = "Edge detector"
    paper = "Adebayo et al., NeurIPS 2018"

    def _attribute(self, inputs, targets):
        return np.stack([sobel_magnitude(inputs)] * len(targets))


class ConstantMap(Explainer):
    key = "test_constant"
    name = "Constant"
    paper = "-"

    def _attribute(self, inputs, targets):
        return np.zeros((len(targets), *inputs.shape[-2:]), dtype=np.float32)


class Recording(EdgeDetector):
    """Edge maps, but remembers a snapshot of every model it was built for."""

    seen: list[dict[str, torch.Tensor]]

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        type(self).seen.append(snapshot(model))


def recording_factory():
    cls = type("RecordingCopy", (Recording,), {"seen": []})
    return cls


# ---------------------------------------------------------------------------------------------
# 1. deletion / insertion
# ---------------------------------------------------------------------------------------------


class LinearProbe(nn.Module):
    """One-channel images; logits = [w . x (raster order), 0], so P(class 0) = sigmoid(w . x)."""

    def __init__(self, weights: list[float]) -> None:
        super().__init__()
        self.register_buffer("w", torch.tensor(weights))

    def forward(self, x):
        score = x.flatten(1) @ self.w
        return torch.stack([score, torch.zeros_like(score)], dim=1)


# x = [[1, 2], [3, 4]] -> raster [x0, x1, x2, x3] = [1, 2, 3, 4]
# w = [0.5, -0.25, 0.75, 0.5]                  -> w . x = 0.5 - 0.5 + 2.25 + 2 = 4.25
PROBE_X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
PROBE_W = [0.5, -0.25, 0.75, 0.5]
# saliency [[0.1, 0.9], [0.5, 0.5]] -> ranking x1 (0.9), then the tie x2, x3 in raster order
# (stable), then x0.  steps=2 -> chunks {x1, x2} and {x3, x0}.
PROBE_SALIENCY = np.array([[0.1, 0.9], [0.5, 0.5]])


def test_two_step_zero_baseline_curves_and_aucs_by_hand():
    result = deletion_insertion_auc(
        LinearProbe(PROBE_W), PROBE_X, PROBE_SALIENCY, 0, steps=2, baseline="zero"
    )
    # deletion: x; x1, x2 -> 0 leaves 0.5*1 + 0.5*4 = 2.5 (the other tie order, x1 and x3
    # removed, would leave 0.5 + 2.25 = 2.75); all zero -> 0.
    deletion = [sigmoid(4.25), sigmoid(2.5), sigmoid(0.0)]
    # insertion from zeros: 0; x1, x2 back -> -0.5 + 2.25 = 1.75; all back -> 4.25.
    insertion = [sigmoid(0.0), sigmoid(1.75), sigmoid(4.25)]
    np.testing.assert_allclose(result.deletion_curve, deletion, rtol=1e-6)
    np.testing.assert_allclose(result.insertion_curve, insertion, rtol=1e-6)
    np.testing.assert_array_equal(result.fractions, [0.0, 0.5, 1.0])
    # trapezoid over x = 0, 0.5, 1
    expected_del = 0.5 * (deletion[0] + deletion[1]) / 2 + 0.5 * (deletion[1] + deletion[2]) / 2
    expected_ins = 0.5 * (insertion[0] + insertion[1]) / 2 + 0.5 * (insertion[1] + insertion[2]) / 2
    assert result.deletion_auc == pytest.approx(expected_del, rel=1e-6)
    assert result.insertion_auc == pytest.approx(expected_ins, rel=1e-6)
    assert (result.deletion_baseline, result.insertion_baseline) == ("zero", "zero")


def test_float_baseline_is_used_for_both_curves():
    result = deletion_insertion_auc(
        LinearProbe(PROBE_W), PROBE_X, PROBE_SALIENCY, 0, steps=2, baseline=1.0
    )
    # deletion to 1.0: x1, x2 -> 1 gives 2.5 + (-0.25 + 0.75) = 3.0; all 1 gives sum(w) = 1.5
    np.testing.assert_allclose(
        result.deletion_curve, [sigmoid(4.25), sigmoid(3.0), sigmoid(1.5)], rtol=1e-6
    )
    # insertion into 1.0: 1.5; x1, x2 back: 1.75 + (0.5 + 0.5) * 1 = 2.75; all back: 4.25
    np.testing.assert_allclose(
        result.insertion_curve, [sigmoid(1.5), sigmoid(2.75), sigmoid(4.25)], rtol=1e-6
    )


def test_uneven_chunks_use_the_pixel_fraction_axis():
    # 3x3 = 9 pixels in 4 steps: chunk ends at floor(k * 9 / 4) = 0, 2, 4, 6, 9
    model = LinearProbe([1.0] * 9)
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    saliency = np.zeros((3, 3))  # all ties -> raster order
    result = deletion_insertion_auc(model, x, saliency, 0, steps=4, baseline="zero")
    np.testing.assert_allclose(result.fractions, [0, 2 / 9, 4 / 9, 6 / 9, 1])
    # remaining sums after deleting the first 0, 2, 4, 6, 9 pixels of 1..9
    sums = [45.0, 45 - 3, 45 - 10, 45 - 21, 0.0]
    curve = np.array([sigmoid(s) for s in sums])
    np.testing.assert_allclose(result.deletion_curve, curve, rtol=1e-6)
    xs = result.fractions
    expected = sum((xs[i + 1] - xs[i]) * (curve[i] + curve[i + 1]) / 2 for i in range(4))
    assert result.deletion_auc == pytest.approx(expected, rel=1e-9)


class SquareMean(nn.Module):
    """P(class 0) = sigmoid(10 * (m - 0.3)), m = mean of all channels over rows/cols 4..7."""

    def forward(self, x):
        m = x[:, :, 4:8, 4:8].mean(dim=(1, 2, 3))
        return torch.stack([10.0 * (m - 0.3), torch.zeros_like(m)], dim=1)


def square_image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = 0.3 * torch.rand(1, 3, 16, 16, generator=g)
    x[:, :, 4:8, 4:8] = 0.6 + 0.4 * torch.rand(1, 3, 4, 4, generator=g)
    return x


def test_oracle_map_beats_reversed_map():
    x = square_image()
    oracle = np.zeros((16, 16), dtype=np.float32)
    oracle[4:8, 4:8] = 1.0
    good = deletion_insertion_auc(SquareMean(), x, oracle, 0, steps=16)
    bad = deletion_insertion_auc(SquareMean(), x, 1.0 - oracle, 0, steps=16)

    p_x = sigmoid(10 * (float(x[:, :, 4:8, 4:8].mean()) - 0.3))
    p_zero = sigmoid(-3.0)
    p_blur = sigmoid(10 * (float(gaussian_blur(x, 5.0)[:, :, 4:8, 4:8].mean()) - 0.3))
    for result in (good, bad):
        assert isinstance(result, DeletionInsertion)
        assert result.deletion_curve.shape == result.insertion_curve.shape == (17,)
        assert result.deletion_curve[0] == pytest.approx(p_x, rel=1e-6)
        assert result.deletion_curve[-1] == pytest.approx(p_zero, rel=1e-6)
        assert result.insertion_curve[0] == pytest.approx(p_blur, rel=1e-5)
        assert result.insertion_curve[-1] == pytest.approx(p_x, rel=1e-6)
        assert (result.deletion_baseline, result.insertion_baseline) == ("zero", "blur")
    # oracle: the 16 square pixels form the first chunk (256 / 16 = 16 pixels)
    assert good.deletion_curve[1] == pytest.approx(p_zero, rel=1e-6)
    assert good.insertion_curve[1] == pytest.approx(p_x, rel=1e-6)
    # reversed: the square is touched only in the last chunk
    np.testing.assert_allclose(bad.deletion_curve[:-1], p_x, rtol=1e-6)
    np.testing.assert_allclose(bad.insertion_curve[:-1], p_blur, rtol=1e-5)
    # AUCs: p_x ~ 0.993, p_zero ~ 0.047, p_blur ~ 0.336
    assert good.deletion_auc < 0.1 < 0.9 < bad.deletion_auc
    assert good.insertion_auc > 0.9 and bad.insertion_auc < 0.4
    assert good.deletion_auc == pytest.approx((p_x + p_zero) / 32 + p_zero * 15 / 16, rel=1e-5)


def test_gaussian_blur_matches_scipy_and_keeps_constants():
    impulse = torch.zeros(1, 1, 41, 41)
    impulse[0, 0, 20, 20] = 1.0
    ours = gaussian_blur(impulse, 2.0)[0, 0].numpy()
    # scipy truncates at int(3 * 2 + 0.5) = 6 = ceil(3 * sigma); the impulse is far from edges
    reference = ndimage.gaussian_filter(impulse[0, 0].numpy().astype(np.float64), 2.0, truncate=3.0)
    np.testing.assert_allclose(ours, reference, atol=1e-7)
    constant = torch.full((1, 2, 9, 7), 0.7)
    np.testing.assert_allclose(gaussian_blur(constant, 5.0).numpy(), 0.7, rtol=1e-6)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(constant, 0.0)


class CountingProbe(LinearProbe):
    def __init__(self, weights):
        super().__init__(weights)
        self.batches: list[int] = []
        self.grad_enabled: list[bool] = []

    def forward(self, x):
        self.batches.append(int(x.shape[0]))
        self.grad_enabled.append(torch.is_grad_enabled())
        return super().forward(x)


def test_batching_eval_mode_and_saliency_forms():
    model = CountingProbe([0.1 * i for i in range(16)]).train()
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    saliency = np.random.default_rng(2).normal(size=(4, 4))
    small = deletion_insertion_auc(model, x, saliency, 0, steps=10, batch_size=4)
    assert model.training is False
    assert model.batches == [4, 4, 3, 4, 4, 3]  # 11 states per curve
    assert not any(model.grad_enabled)
    big = deletion_insertion_auc(model, x, torch.from_numpy(saliency[None]), 0, steps=10)
    np.testing.assert_allclose(small.deletion_curve, big.deletion_curve, rtol=1e-12)
    np.testing.assert_allclose(small.insertion_curve, big.insertion_curve, rtol=1e-12)
    payload = json.loads(json.dumps(small.to_dict(), allow_nan=False))
    assert len(payload["deletion_curve"]) == 11
    assert payload["deletion_auc"] == pytest.approx(small.deletion_auc)


def test_with_a_gradcam_map():
    model = SmallCNN()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    saliency = GradCam(model).explain(x, [2]).attributions[0]
    result = deletion_insertion_auc(model, x, saliency, 2, steps=8)
    assert 0.0 <= result.deletion_auc <= 1.0 and 0.0 <= result.insertion_auc <= 1.0
    with torch.no_grad():
        p_x = float(torch.softmax(model(x), 1)[0, 2])
    assert result.deletion_curve[0] == pytest.approx(p_x, rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"saliency": np.zeros((2, 3))}, "spatial shape"),
        ({"saliency": np.array([[0.0, np.nan], [1.0, 2.0]])}, "NaN"),
        ({"steps": 0}, "steps"),
        ({"steps": True}, "steps"),
        ({"steps": 2.0}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"baseline": "grey"}, "baseline"),
        ({"baseline": math.inf}, "baseline"),
        ({"target": 2}, "out of range"),
        ({"target": -1}, "target"),
        ({"inputs": PROBE_X[0]}, r"\(1, C, H, W\)"),
        ({"inputs": PROBE_X.double()}, "float32"),
        ({"blur_sigma": -1.0}, "sigma"),
    ],
)
def test_deletion_insertion_rejects_bad_arguments(kwargs, message):
    arguments = {
        "inputs": PROBE_X,
        "saliency": PROBE_SALIENCY,
        "target": 0,
        "steps": 2,
    } | kwargs
    inputs, saliency, target = (arguments.pop(k) for k in ("inputs", "saliency", "target"))
    with pytest.raises(ValueError, match=message):
        deletion_insertion_auc(LinearProbe(PROBE_W), inputs, saliency, target, **arguments)


def test_model_with_wrong_output_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\(3, K\)"):
        deletion_insertion_auc(nn.Flatten(0), PROBE_X, PROBE_SALIENCY, 0, steps=2)


# ---------------------------------------------------------------------------------------------
# 2. model randomisation
# ---------------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """conv1 -> bn1 -> ReLU -> conv2 -> ReLU -> global average pool -> fc (4 classes)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)
        with torch.no_grad():  # "trained" batch-norm statistics, so a reset changes them
            self.bn1.running_mean.uniform_(-0.2, 0.2)
            self.bn1.running_var.uniform_(0.5, 2.0)
            self.bn1.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


class LocalNet(nn.Module):
    """conv -> ReLU -> fc over all positions; class 1 only looks at rows/cols 4..8 (set below)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4 * 16 * 16, 3)
        with torch.no_grad():
            weight = torch.zeros(3, 4, 16, 16)
            weight[1, :, 4:9, 4:9] = torch.randn(4, 5, 5)
            self.fc.weight.copy_(weight.flatten(1))

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def image(seed: int = 0, size: int = 16) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_gradcam_cascading_randomisation_decorrelates_and_leaves_model_alone():
    model = SmallCNN().train()
    before = snapshot(model)
    steps = model_randomisation_check(model, GradCam, image(), 1)
    # top (logits) layer first; order is the execution order reversed
    assert [s.layer for s in steps] == [None, "fc", "conv2", "bn1", "conv1"]
    assert [s.layers_randomised for s in steps] == [
        (),
        ("fc",),
        ("fc", "conv2"),
        ("fc", "conv2", "bn1"),
        ("fc", "conv2", "bn1", "conv1"),
    ]
    assert [s.index for s in steps] == [0, 1, 2, 3, 4]
    assert all(isinstance(s, RandomisationStep) and s.mode == "cascading" for s in steps)
    assert steps[0].spearman == pytest.approx(1.0)
    assert steps[0].spearman_abs == pytest.approx(1.0)
    assert steps[0].ssim == pytest.approx(1.0)
    assert steps[-1].spearman < 0.5 and steps[-1].spearman_abs < 0.5
    assert randomisation_passed(steps)
    # the caller's model: same weights, still in train mode, no hooks left behind
    assert_same_state(model, before)
    assert model.training is True
    assert_no_hooks(model)


def test_input_gradient_loses_the_learned_region_when_the_head_is_randomised():
    steps = model_randomisation_check(LocalNet(), InputGradient, image(1), 1)
    assert [s.layer for s in steps] == [None, "fc", "features.0"]
    assert steps[0].spearman == pytest.approx(1.0)
    # the reference map lives in rows/cols 3..9; a random head spreads it over the image
    assert abs(steps[1].spearman_abs) < 0.3 and abs(steps[1].spearman) < 0.3
    assert randomisation_passed(steps)


def test_model_independent_edge_detector_fails_the_check():
    steps = model_randomisation_check(SmallCNN(), EdgeDetector, image(), 1)
    assert len(steps) == 5
    for step in steps:
        assert step.spearman == pytest.approx(1.0)
        assert step.spearman_abs == pytest.approx(1.0)
        assert step.ssim == pytest.approx(1.0)
    assert not randomisation_passed(steps)


def test_independent_mode_randomises_one_layer_per_step_with_the_same_weights():
    model = SmallCNN()
    cascading = model_randomisation_check(model, InputGradient, image(), 0, seed=7)
    independent = model_randomisation_check(
        model, InputGradient, image(), 0, layers="independent", seed=7
    )
    assert [s.layer for s in independent] == [s.layer for s in cascading]
    assert [s.layers_randomised for s in independent[1:]] == [
        ("fc",),
        ("conv2",),
        ("bn1",),
        ("conv1",),
    ]
    assert all(s.mode == "independent" for s in independent)
    # step 1 randomises only "fc" in both modes, with the same seed -> the same map
    assert independent[1].spearman == cascading[1].spearman
    assert independent[4].spearman != cascading[4].spearman
    with pytest.raises(ValueError, match="cascading"):
        randomisation_passed(independent)


def test_seeds_are_reproducible_and_the_global_rng_is_untouched():
    model = SmallCNN()
    state = torch.get_rng_state()
    first = model_randomisation_check(model, InputGradient, image(), 2, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    again = model_randomisation_check(model, InputGradient, image(), 2, seed=3)
    other = model_randomisation_check(model, InputGradient, image(), 2, seed=4)
    assert [s.to_dict() for s in first] == [s.to_dict() for s in again]
    assert [s.spearman for s in first[1:]] != [s.spearman for s in other[1:]]


def test_explicit_layer_names_and_containers():
    model = LocalNet()
    recorder = recording_factory()
    steps = model_randomisation_check(model, recorder, image(), 1, layers=["fc", "features"])
    assert [s.layer for s in steps] == [None, "fc", "features"]
    assert [s.layers_randomised for s in steps] == [(), ("fc",), ("fc", "features")]
    original = snapshot(model)
    # reference, step 0, after "fc", after "features" (the container's conv)
    assert len(recorder.seen) == 4
    for seen in recorder.seen[:2]:
        assert all(torch.equal(seen[k], original[k]) for k in original)
    after_fc, after_all = recorder.seen[2], recorder.seen[3]
    assert not torch.equal(after_fc["fc.weight"], original["fc.weight"])
    assert torch.equal(after_fc["features.0.weight"], original["features.0.weight"])
    assert torch.equal(after_all["fc.weight"], after_fc["fc.weight"])  # cascading keeps it
    assert not torch.equal(after_all["features.0.weight"], original["features.0.weight"])
    assert not torch.equal(after_all["features.0.bias"], original["features.0.bias"])


def test_batchnorm_is_reset_to_its_initial_state():
    recorder = recording_factory()
    model_randomisation_check(SmallCNN(), recorder, image(), 1, layers=["bn1"])
    reset = recorder.seen[-1]
    assert torch.equal(reset["bn1.running_mean"], torch.zeros(8))
    assert torch.equal(reset["bn1.running_var"], torch.ones(8))
    assert torch.equal(reset["bn1.weight"], torch.ones(8))


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ("bogus", "cascading"),
        ([], "at least one"),
        (["nope"], "no module named"),
        (["features.1"], "no learnable"),
    ],
)
def test_randomisation_rejects_bad_layers(layers, message):
    with pytest.raises(ValueError, match=message):
        model_randomisation_check(LocalNet(), EdgeDetector, image(), 1, layers=layers)


def test_randomisation_rejects_models_without_learnable_layers_and_bad_factories():
    no_params = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="no learnable layer"):
        model_randomisation_check(no_params, EdgeDetector, image(), 0)
    with pytest.raises(ValueError, match="Explainer instance"):
        model_randomisation_check(SmallCNN(), lambda m: sobel_magnitude, image(), 0)


def test_constant_reference_map_reports_nan_and_fails():
    steps = model_randomisation_check(SmallCNN(), ConstantMap, image(), 1)
    assert all(math.isnan(s.spearman) and math.isnan(s.spearman_abs) for s in steps)
    assert all(s.constant_map for s in steps)
    assert not randomisation_passed(steps)
    payload = json.loads(json.dumps([s.to_dict() for s in steps], allow_nan=False))
    assert payload[1]["spearman"] is None and payload[1]["layer"] == "fc"


def test_map_that_turns_constant_counts_as_changed():
    model = SmallCNN()
    trained_fc = model.fc.weight.detach().clone()

    class EdgesWhileTrained(EdgeDetector):
        def _attribute(self, inputs, targets):
            maps = super()._attribute(inputs, targets)
            return maps if torch.equal(self.model.fc.weight, trained_fc) else 0 * maps

    steps = model_randomisation_check(model, EdgesWhileTrained, image(), 1)
    assert steps[0].spearman == pytest.approx(1.0) and not steps[0].constant_map
    assert math.isnan(steps[-1].spearman) and steps[-1].constant_map
    assert randomisation_passed(steps)


def make_step(index: int, spearman: float, spearman_abs: float, constant=False):
    return RandomisationStep(
        index=index,
        layer=None if index == 0 else f"layer{index}",
        layers_randomised=tuple(f"layer{i}" for i in range(1, index + 1)),
        mode="cascading",
        spearman=spearman,
        spearman_abs=spearman_abs,
        ssim=math.nan,
        constant_map=constant,
    )


def test_randomisation_passed_threshold_and_sign_flip():
    reference = make_step(0, 1.0, 1.0)
    assert randomisation_passed([reference, make_step(1, 0.4, 0.45)], threshold=0.5)
    assert not randomisation_passed([reference, make_step(1, 0.4, 0.45)], threshold=0.45)
    # only the last step counts
    assert randomisation_passed([reference, make_step(1, 0.9, 0.9), make_step(2, 0.1, 0.2)])
    # a pure sign flip is not a change
    assert not randomisation_passed([reference, make_step(1, -0.95, 0.95)])
    with pytest.raises(ValueError, match="at least one"):
        randomisation_passed([reference])
    with pytest.raises(ValueError, match="threshold"):
        randomisation_passed([reference, make_step(1, 0.0, 0.0)], threshold=math.nan)


# ---------------------------------------------------------------------------------------------
# 3. input invariance
# ---------------------------------------------------------------------------------------------


class ConvHead(nn.Module):
    """conv (first layer) -> ReLU -> flatten -> linear (3 classes), for 3x16x16 images."""

    def __init__(self, **conv_kwargs) -> None:
        super().__init__()
        torch.manual_seed(5)
        conv_kwargs = {"kernel_size": 3, "padding": 0} | conv_kwargs
        self.conv = nn.Conv2d(3, 6, **conv_kwargs)
        with torch.no_grad():
            side = self.conv(torch.zeros(1, 3, 16, 16)).shape[-1]
        self.fc = nn.Linear(6 * side * side, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


SHIFT = [1.0, -0.5, 2.0]


class RecordingInputGradient(InputGradient):
    models: list[nn.Module] = []

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        type(self).models.append(model)


def test_valid_conv_shift_gradient_passes_and_bias_absorbs_the_shift():
    model = ConvHead().train()
    before = snapshot(model)
    RecordingInputGradient.models = []
    result = input_invariance_check(model, RecordingInputGradient, image(), 2, shift=SHIFT)
    assert isinstance(result, InputInvariance)
    assert result.first_layer == "conv"
    assert result.outputs_equal and result.output_max_abs_diff < 1e-5
    assert result.passed and result.relative_diff < 1e-4
    # the shifted copy's bias: b'[o] = b[o] - sum_{c,i,j} W[o, c, i, j] * shift[c]
    original, shifted = RecordingInputGradient.models
    weight, bias = before["conv.weight"], before["conv.bias"]
    expected = bias - (weight.sum(dim=(2, 3)) * torch.tensor(SHIFT)).sum(1)
    torch.testing.assert_close(shifted.conv.bias.detach(), expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(original.conv.bias, bias)
    # check the construction independently of the module under test
    x = image()
    shifted_input = x + torch.tensor(SHIFT).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(shifted(shifted_input), model.eval()(x), rtol=0, atol=1e-5)
    model.train()
    # the caller's model is untouched
    assert_same_state(model, before)
    assert model.training is True
    assert_no_hooks(model)
    assert model.conv.padding == (0, 0)
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert payload["shift"] == SHIFT and payload["passed"] is True


def test_gradient_times_input_fails_by_shift_times_gradient():
    model, x = ConvHead(), image()
    result = input_invariance_check(model, GradientTimesInput, x, 2, shift=SHIFT)
    assert result.outputs_equal
    assert not result.passed and result.relative_diff > 0.1
    # maps: sum_c x_c g_c versus sum_c (x_c + s_c) g_c -> differ by sum_c s_c g_c
    gradient = input_gradient(model.eval(), x, 2)
    difference = (torch.tensor(SHIFT).view(3, 1, 1) * gradient).sum(0).abs().max()
    assert result.max_abs_diff == pytest.approx(float(difference), rel=1e-4)


def test_gradcam_is_input_invariant():
    result = input_invariance_check(
        ConvHead(), functools.partial(GradCam, target_layer="conv"), image(), 0, shift=0.75
    )
    assert result.outputs_equal and result.passed
    assert result.shift == [0.75, 0.75, 0.75]


def naive_bias_only_logits(model: ConvHead, x: torch.Tensor, shift: list[float]):
    """Shift absorbed in the bias but the conv still zero-pads: wrong along the border."""
    s = torch.tensor(shift).view(1, 3, 1, 1)
    conv = model.conv
    bias = conv.bias - (conv.weight.sum(dim=(2, 3)) * s.view(1, 3)).sum(1)
    hidden = F.conv2d(x + s, conv.weight, bias, padding=conv.padding)
    return model.fc(torch.relu(hidden).flatten(1))


@pytest.mark.parametrize(
    "conv_kwargs",
    [
        {"padding": 1},
        {"padding": "same", "kernel_size": 4},
        {"padding": 1, "padding_mode": "reflect"},
        {"padding": 2, "stride": 2, "dilation": 2, "groups": 3, "bias": False},
    ],
    ids=["zeros-1", "same-even-kernel", "reflect", "strided-dilated-grouped-no-bias"],
)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
def test_padded_first_convolutions_stay_exactly_equivalent(conv_kwargs):
    model = ConvHead(**conv_kwargs)
    before = snapshot(model)
    result = input_invariance_check(model, InputGradient, image(), 1, shift=SHIFT)
    assert result.outputs_equal and result.output_max_abs_diff < 1e-5
    assert result.passed
    assert_same_state(model, before)
    assert_no_hooks(model)


def test_zero_padding_with_a_bias_only_shift_would_not_be_equivalent():
    """Why the shifted conv pads with the shift value: the naive construction breaks."""
    model, x = ConvHead(padding=1).eval(), image()
    with torch.no_grad():
        naive = naive_bias_only_logits(model, x, SHIFT)
        assert (naive - model(x)).abs().max() > 1e-2


class StaticSamePaddingNet(nn.Module):
    """First layer as in EfficientNet-Lite0: Conv2dStaticSamePadding runs a ZeroPad2d child
    (here (0, 1, 0, 1): stride 2, kernel 3, 16 px) inside its forward, with padding=0."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.stem = Conv2dStaticSamePadding(3, 6, 3, stride=2, image_size=16)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.stem(x)).mean(dim=(2, 3)))


def test_zero_padding_inside_the_first_layer_is_shifted_too(monkeypatch):
    model = StaticSamePaddingNet()
    assert isinstance(model.stem.static_padding, nn.ZeroPad2d)
    assert model.stem.static_padding.padding == (0, 1, 0, 1)
    before = snapshot(model)
    result = input_invariance_check(model, InputGradient, image(), 1, shift=SHIFT)
    assert result.first_layer == "stem"
    assert result.outputs_equal and result.output_max_abs_diff < 1e-5 and result.passed
    assert_same_state(model, before)
    assert_no_hooks(model)
    # without the padding hook the border breaks the equivalence
    monkeypatch.setattr(
        evaluation, "_shift_constant_padding", lambda delta: lambda module, args, output: None
    )
    broken = input_invariance_check(model, InputGradient, image(), 1, shift=SHIFT)
    assert not broken.outputs_equal and not broken.passed


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 3)
        )

    def forward(self, x):
        return self.net(x)


def test_linear_first_layer_absorbs_a_per_pixel_shift():
    x = image(size=8)
    shift = np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32)
    good = input_invariance_check(MLP(), InputGradient, x, 1, shift=shift)
    assert good.first_layer == "net.1"
    assert good.outputs_equal and good.passed
    bad = input_invariance_check(MLP(), GradientTimesInput, x, 1, shift=shift)
    assert bad.outputs_equal and not bad.passed


class SquareFirst(ConvHead):
    def forward(self, x):
        return super().forward(x * x)


class TwiceConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.conv(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("model", "shift", "message"),
    [
        (SquareFirst(), SHIFT, "not affine"),
        (ConvHead(), np.arange(3 * 16 * 16, dtype=np.float32).reshape(3, 16, 16), "vary over"),
        (TwiceConv(), 1.0, "runs 2 times"),
        (
            nn.Sequential(
                nn.ZeroPad2d(1), nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()
            ),
            1.0,
            "vary over",
        ),
        (nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), 1.0, "no nn.Conv2d"),
        (ConvHead(), [1.0, 2.0], "shape"),
        (ConvHead(), [1.0, math.nan, 0.0], "NaN"),
        (ConvHead(), True, "bool"),
    ],
)
def test_input_invariance_rejects_unusable_models_and_shifts(model, shift, message):
    with pytest.raises(ValueError, match=message):
        input_invariance_check(model, InputGradient, image(), 0, shift=shift)
