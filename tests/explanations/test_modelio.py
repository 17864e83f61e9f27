"""Safe checkpoint loading (state_dict_load), strict model building and model registration.

Uploaded weights must never be unpickled: a checkpoint whose pickle would run code is refused
before anything runs. Registration validates everything first and saves nothing on failure.
Tests that build the real EfficientNet-Lite0 are marked ``slow``; registration logic is also
exercised with a tiny architecture patched into ``ARCHITECTURES`` so it runs in milliseconds.
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from explanations import modelio
from explanations.demo import DEMO_MODEL_NAME, demo_weights_path, imagenet_class_names
from explanations.modelio import (
    CheckpointError,
    file_sha256,
    model_build,
    pixels_to_input,
    state_dict_load,
)
from explanations.models import ClassifierModel
from explanations.services import ModelRegistrationError, model_register

# --- helpers -------------------------------------------------------------------------------------


class TinyNet(nn.Module):
    """conv(3 -> 4) -> global average pool -> linear(4 -> num_classes)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


@pytest.fixture
def tiny_architecture(monkeypatch):
    """Register "tiny" (TinyNet) for the duration of a test."""
    monkeypatch.setitem(modelio.ARCHITECTURES, "tiny", TinyNet)
    return "tiny"


def tiny_state_dict(num_classes: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return TinyNet(num_classes).state_dict()


def assert_same_tensors(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


class SystemPayload:
    """Unpickling this calls os.system("touch <marker>")."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class OpenPayload:
    """Unpickling this calls builtins.exec, which writes <marker> with builtins.open."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",))


# --- state_dict_load -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload_cls", "global_name"),
    [(SystemPayload, f"{os.system.__module__}.system"), (OpenPayload, "GLOBAL exec")],
    ids=["os.system", "builtins.exec+open"],
)
def test_malicious_pickle_is_refused_without_running_its_code(tmp_path, payload_cls, global_name):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"conv.weight": torch.ones(2), "payload": payload_cls(marker)}, path)

    with pytest.raises(CheckpointError) as info:
        state_dict_load(path)

    message = str(info.value)
    assert not marker.exists(), "the pickle's code ran"
    assert message.startswith("model.pt: refused to load")
    assert "could execute code" in message
    assert "weights_only=True" in message
    assert global_name in message  # says what was refused
    # ... but does not pass on torch's advice to switch the protection off
    assert "weights_only` set to `False`" not in message
    assert "add_safe_globals" not in message


def test_pickled_whole_module_is_refused(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(TinyNet(3), path)
    with pytest.raises(CheckpointError, match="could execute code"):
        state_dict_load(path)


def test_plain_state_dict_loads_exactly(tmp_path):
    expected = tiny_state_dict()
    torch.save(expected, tmp_path / "ok.pt")
    assert_same_tensors(state_dict_load(tmp_path / "ok.pt"), expected)


def test_state_dict_wrapper_is_unwrapped(tmp_path):
    expected = tiny_state_dict()
    torch.save({"state_dict": expected, "epoch": 12}, tmp_path / "lightning.ckpt")
    assert_same_tensors(state_dict_load(tmp_path / "lightning.ckpt"), expected)


def test_bare_tensor_is_not_a_state_dict(tmp_path):
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match=r"^tensor\.pt: not a state dict \(found Tensor\)"):
        state_dict_load(tmp_path / "tensor.pt")


def test_list_of_tensors_is_not_a_state_dict(tmp_path):
    torch.save([torch.ones(3)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"^list\.pt: not a state dict \(found list\)"):
        state_dict_load(tmp_path / "list.pt")


def test_dict_with_non_tensor_entries_is_not_a_state_dict(tmp_path):
    torch.save({"w": torch.ones(3), "epoch": 3}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match=r"entries that are not named tensors: \['epoch'\]"):
        state_dict_load(tmp_path / "mixed.pt")


def test_truncated_checkpoint_is_truncated_or_corrupt(tmp_path):
    torch.save(tiny_state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"^half\.pt: truncated or corrupt checkpoint"):
        state_dict_load(tmp_path / "half.pt")


def test_truncated_legacy_format_checkpoint_is_truncated_or_corrupt(tmp_path):
    torch.save(tiny_state_dict(), tmp_path / "full.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt checkpoint"):
        state_dict_load(tmp_path / "half.pt")


def test_empty_checkpoint_is_truncated_or_corrupt(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated or corrupt checkpoint"):
        state_dict_load(tmp_path / "empty.pt")


@pytest.mark.parametrize(
    "content",
    [b"hello world, this is not a checkpoint\n", b"name,value\nw,1\n", bytes(range(256)) * 4],
    ids=["text", "csv", "bytes"],
)
def test_non_checkpoint_file_is_a_checkpoint_error_not_a_crash(tmp_path, content):
    """Regression: a text file made torch's weights-only unpickler raise a bare KeyError,
    which escaped state_dict_load (and model_register) instead of becoming a CheckpointError."""
    (tmp_path / "notes.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=r"^notes\.pt: "):
        state_dict_load(tmp_path / "notes.pt")


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(CheckpointError, match=r"^nope\.pt: weights file not found$"):
        state_dict_load(tmp_path / "nope.pt")


def test_directory_is_not_a_weights_file(tmp_path):
    with pytest.raises(CheckpointError, match="weights file not found"):
        state_dict_load(tmp_path)


def test_safetensors_file_loads_exactly(tmp_path):
    expected = tiny_state_dict()
    save_file(expected, str(tmp_path / "model.safetensors"))
    assert_same_tensors(state_dict_load(tmp_path / "model.safetensors"), expected)


@pytest.mark.parametrize("cut", ["random", "truncated", "empty"])
def test_corrupt_safetensors_file_is_rejected(tmp_path, cut):
    path = tmp_path / "model.safetensors"
    if cut == "random":
        path.write_bytes(os.urandom(256))
    else:
        save_file({"w": torch.arange(1000, dtype=torch.float32)}, str(path))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if cut == "truncated" else b"")
    with pytest.raises(CheckpointError, match=r"^model\.safetensors: not a readable safetensors"):
        state_dict_load(path)


def test_file_sha256_matches_hashlib(tmp_path):
    import hashlib

    data = os.urandom(3 * (1 << 20) + 17)  # spans several 1 MiB chunks
    (tmp_path / "blob").write_bytes(data)
    assert file_sha256(tmp_path / "blob") == hashlib.sha256(data).hexdigest()


# --- model_build -------------------------------------------------------------------------------


def test_model_build_rejects_an_unknown_architecture(tmp_path):
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet-9000'"):
        model_build("resnet-9000", tmp_path / "x.pt", 10)


def test_model_build_with_another_architectures_weights_lists_missing_and_unexpected_keys(tmp_path):
    torch.save(tiny_state_dict(num_classes=1000), tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError) as info:
        model_build("efficientnet-lite0", tmp_path / "tiny.pt", 1000)
    message = str(info.value)
    assert message.startswith("tiny.pt: state dict does not match the architecture")
    n_efficientnet_keys = len(modelio.ARCHITECTURES["efficientnet-lite0"](1000).state_dict())
    assert f"missing keys ({n_efficientnet_keys}): ['_blocks.0._bn1.bias'," in message
    assert "unexpected keys (4): ['features.bias', 'features.weight', 'head.bias'," in message


def test_model_build_loads_tiny_weights_strictly_in_eval_mode(tmp_path, tiny_architecture):
    expected = tiny_state_dict(num_classes=5, seed=7)
    torch.save(expected, tmp_path / "tiny.pt")
    net = model_build(tiny_architecture, tmp_path / "tiny.pt", 5)
    assert isinstance(net, TinyNet)
    assert net.training is False
    assert_same_tensors(net.state_dict(), expected)


def test_model_build_reports_shape_mismatches(tmp_path, tiny_architecture):
    torch.save(tiny_state_dict(num_classes=5), tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError) as info:
        model_build(tiny_architecture, tmp_path / "tiny.pt", 3)
    message = str(info.value)
    assert "shape mismatches (2)" in message
    assert "head.weight: checkpoint (5, 4) vs model (3, 4)" in message
    assert "missing keys" not in message and "unexpected keys" not in message


@pytest.mark.slow
def test_model_build_with_the_real_weights_gives_an_eval_mode_efficientnet():
    net = model_build("efficientnet-lite0", demo_weights_path(), 1000)
    assert net.training is False
    assert all(not m.training for m in net.modules())
    assert "_conv_head" in dict(net.named_modules())
    with torch.no_grad():
        logits = net(torch.zeros(1, 3, 224, 224))
    assert logits.shape == (1, 1000)
    assert torch.isfinite(logits).all()


# --- pixels_to_input -----------------------------------------------------------------------------


def test_pixels_to_input_normalises_per_channel_and_puts_channels_first():
    import numpy as np

    pixels = np.array([[[127, 0, 255], [255, 127, 0]]], dtype=np.uint8)  # (1, 2, 3)
    x = pixels_to_input(pixels, [127.0, 127.0, 127.0], [128.0, 128.0, 128.0])
    assert x.shape == (1, 3, 1, 2)
    assert x.dtype == torch.float32
    expected = torch.tensor([[[[0.0, 1.0]], [[-127 / 128, 0.0]], [[1.0, -127 / 128]]]])
    torch.testing.assert_close(x, expected)


# --- model_register ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_register_tiny_model_stores_checksum_layer_and_normalisation(tmp_path, tiny_architecture):
    torch.save(tiny_state_dict(num_classes=3), tmp_path / "tiny.pt")
    model = model_register(
        name="Tiny",
        architecture=tiny_architecture,
        weights_path=tmp_path / "tiny.pt",
        class_names=["cat", "dog", "cow"],
        input_size=32,
        normalization={"mean": [1, 2, 3], "std": [4, 5, 6]},
    )
    model.refresh_from_db()
    assert ClassifierModel.objects.count() == 1
    assert model.class_names == ["cat", "dog", "cow"]
    assert model.num_classes == 3
    assert model.target_layer == "features"  # the last Conv2d, suggested
    assert model.weights_sha256 == file_sha256(tmp_path / "tiny.pt")
    # a stored copy named by its checksum, so later edits of the source file change nothing
    assert model.weights_path.endswith(f"models/{model.weights_sha256}.pt")
    assert Path(model.weights_path).read_bytes() == (tmp_path / "tiny.pt").read_bytes()
    assert model.normalization_mean == [1.0, 2.0, 3.0]
    assert model.normalization_std == [4.0, 5.0, 6.0]
    assert model.input_size == 32


@pytest.mark.django_db
def test_register_with_a_preset_stores_the_preset_values(tmp_path, tiny_architecture):
    torch.save(tiny_state_dict(num_classes=2), tmp_path / "tiny.pt")
    model = model_register(
        name="Tiny",
        architecture=tiny_architecture,
        weights_path=tmp_path / "tiny.pt",
        class_names=["a", "b"],
        normalization="efficientnet-lite",
    )
    assert model.normalization_mean == [127.0, 127.0, 127.0]
    assert model.normalization_std == [128.0, 128.0, 128.0]


@pytest.mark.django_db
@pytest.mark.parametrize("damage", ["truncated", "malicious", "text", "missing"])
def test_register_with_a_bad_checkpoint_fails_and_saves_nothing(
    tmp_path, tiny_architecture, damage
):
    path = tmp_path / "weights.pt"
    if damage == "truncated":
        torch.save(tiny_state_dict(), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "malicious":
        torch.save({"payload": SystemPayload(tmp_path / "pwned")}, path)
    elif damage == "text":
        path.write_bytes(b"not a checkpoint at all\n")
    with pytest.raises(ModelRegistrationError, match=r"^weights\.pt: "):
        model_register(
            name="Broken",
            architecture=tiny_architecture,
            weights_path=path,
            class_names=["a", "b", "c"],
        )
    assert ClassifierModel.objects.count() == 0
    assert not (tmp_path / "pwned").exists()


@pytest.mark.django_db
def test_register_with_too_few_class_names_is_a_shape_mismatch(tmp_path, tiny_architecture):
    torch.save(tiny_state_dict(num_classes=3), tmp_path / "tiny.pt")
    with pytest.raises(
        ModelRegistrationError, match=r"head\.weight: checkpoint \(3, 4\) vs model \(2, 4\)"
    ):
        model_register(
            name="Tiny",
            architecture=tiny_architecture,
            weights_path=tmp_path / "tiny.pt",
            class_names=["a", "b"],
        )
    assert ClassifierModel.objects.count() == 0


@pytest.mark.django_db
def test_register_with_an_unknown_normalisation_preset_fails(tmp_path, tiny_architecture):
    torch.save(tiny_state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(ModelRegistrationError, match="unknown normalisation preset 'imagenett'"):
        model_register(
            name="Tiny",
            architecture=tiny_architecture,
            weights_path=tmp_path / "tiny.pt",
            class_names=["a", "b", "c"],
            normalization="imagenett",
        )
    assert ClassifierModel.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "normalization",
    [{"mean": [0, 0], "std": [1, 1, 1]}, {"mean": [0, 0, 0], "std": [1, 0, 1]}, {}],
    ids=["two-means", "zero-std", "empty"],
)
def test_register_with_invalid_custom_normalisation_fails(
    tmp_path, tiny_architecture, normalization
):
    torch.save(tiny_state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(ModelRegistrationError, match="3 means and 3 positive stds"):
        model_register(
            name="Tiny",
            architecture=tiny_architecture,
            weights_path=tmp_path / "tiny.pt",
            class_names=["a", "b", "c"],
            normalization=normalization,
        )
    assert ClassifierModel.objects.count() == 0


@pytest.mark.django_db
def test_register_with_an_unknown_target_layer_fails(tmp_path, tiny_architecture):
    torch.save(tiny_state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(ModelRegistrationError, match="target layer 'conv9' does not exist"):
        model_register(
            name="Tiny",
            architecture=tiny_architecture,
            weights_path=tmp_path / "tiny.pt",
            class_names=["a", "b", "c"],
            target_layer="conv9",
        )
    assert ClassifierModel.objects.count() == 0


@pytest.mark.django_db
def test_register_with_an_unknown_architecture_fails(tmp_path):
    torch.save(tiny_state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(ModelRegistrationError, match="unknown architecture 'vgg'"):
        model_register(
            name="Tiny", architecture="vgg", weights_path=tmp_path / "tiny.pt", class_names=["a"]
        )
    assert ClassifierModel.objects.count() == 0


@pytest.mark.django_db
def test_register_with_no_class_names_fails(tmp_path, tiny_architecture):
    torch.save(tiny_state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(ModelRegistrationError, match="class_names is empty"):
        model_register(
            name="Tiny",
            architecture=tiny_architecture,
            weights_path=tmp_path / "tiny.pt",
            class_names=[],
        )
    assert ClassifierModel.objects.count() == 0


@pytest.mark.django_db
def test_register_a_second_model_with_the_same_name_fails(tmp_path, tiny_architecture):
    torch.save(tiny_state_dict(), tmp_path / "tiny.pt")
    kwargs = {
        "name": "Tiny",
        "architecture": tiny_architecture,
        "weights_path": tmp_path / "tiny.pt",
        "class_names": ["a", "b", "c"],
    }
    first = model_register(**kwargs)
    with pytest.raises(ModelRegistrationError, match="a model named 'Tiny' is already registered"):
        model_register(**kwargs)
    assert list(ClassifierModel.objects.values_list("pk", flat=True)) == [first.pk]


# --- model_register with the real EfficientNet-Lite0 --------------------------------------------


@pytest.fixture(scope="module")
def class_names_1000():
    return imagenet_class_names()


@pytest.mark.slow
@pytest.mark.django_db
def test_register_real_efficientnet_with_10_class_names_is_a_shape_mismatch_on_fc():
    with pytest.raises(ModelRegistrationError) as info:
        model_register(
            name="Lite0 x10",
            architecture="efficientnet-lite0",
            weights_path=demo_weights_path(),
            class_names=[f"class {i}" for i in range(10)],
            normalization="efficientnet-lite",
        )
    message = str(info.value)
    assert "shape mismatches (2)" in message
    assert "_fc.weight: checkpoint (1000, 1280) vs model (10, 1280)" in message
    assert ClassifierModel.objects.count() == 0


@pytest.mark.slow
@pytest.mark.django_db
def test_register_real_efficientnet_with_an_unknown_target_layer_fails(class_names_1000):
    with pytest.raises(ModelRegistrationError, match="target layer '_conv_tail' does not exist"):
        model_register(
            name="Lite0",
            architecture="efficientnet-lite0",
            weights_path=demo_weights_path(),
            class_names=class_names_1000,
            normalization="efficientnet-lite",
            target_layer="_conv_tail",
        )
    assert ClassifierModel.objects.count() == 0


@pytest.mark.slow
@pytest.mark.django_db
def test_register_real_efficientnet_suggests_conv_head_as_target_layer(class_names_1000):
    model = model_register(
        name=DEMO_MODEL_NAME,
        architecture="efficientnet-lite0",
        weights_path=demo_weights_path(),
        class_names=class_names_1000,
        normalization="efficientnet-lite",
    )
    assert model.target_layer == "_conv_head"
    assert model.num_classes == 1000
    assert model.class_name(967) == "espresso"
    assert model.weights_sha256 == file_sha256(demo_weights_path())
    assert ClassifierModel.objects.count() == 1
