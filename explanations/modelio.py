"""Safe loading of classifier weights and construction of registered architectures.

Uploaded checkpoints are never unpickled: ``.safetensors`` files are read with safetensors,
everything else with ``torch.load(weights_only=True)``, which refuses any pickle that would
construct arbitrary objects. (The EfficientNet-Lite package's own ``from_pretrained`` calls
``torch.load`` without ``weights_only``; we build the network with ``from_name`` and load the
state dict ourselves.)
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn


class CheckpointError(ValueError):
    """A weights file cannot be used: unreadable, unsafe, not a state dict, or wrong shape."""


def _efficientnet_lite0(num_classes: int) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)


#: Architecture key -> factory(num_classes) returning an untrained nn.Module.
ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {
    "efficientnet-lite0": _efficientnet_lite0,
}

#: Normalisation presets in pixel units (0-255): input = (pixel - mean) / std.
NORMALIZATION_PRESETS: dict[str, dict[str, list[float]]] = {
    # EfficientNet-Lite (TF-Lite port): (x - 127) / 128, not the torchvision mean/std.
    "efficientnet-lite": {"mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0]},
    "imagenet": {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]},
}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_load(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from disk without executing any code it may contain.

    Args:
        path: a ``.safetensors`` file, or a ``torch.save`` file of a dict of tensors
            (optionally wrapped as ``{"state_dict": {...}}``).

    Returns:
        Parameter name -> CPU tensor.

    Raises:
        CheckpointError: missing, truncated or corrupt file; a pickle that needs arbitrary
            objects (refused by ``weights_only=True``); or content that is not a mapping of
            names to tensors (a whole pickled model, a bare tensor, a list).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path.name}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path.name}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path.name}: refused to load: the file contains Python objects other than "
            f"tensors, and loading it could execute code (weights_only=True). Save "
            f"model.state_dict() or use safetensors. Details: {_unpickling_detail(exc)}"
        ) from None
    except Exception as exc:  # garbage bytes make the unpickler raise anything (KeyError, ...)
        raise CheckpointError(
            f"{path.name}: truncated or corrupt checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path.name}: not a state dict (found {type(obj).__name__}); save "
            f"model.state_dict(), not the model or a tensor"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(
            f"{path.name}: not a state dict: entries that are not named tensors: {bad[:5]}"
        )
    return dict(obj)


def _unpickling_detail(exc: Exception) -> str:
    """The line of torch's weights-only error that names the refused global or opcode.

    torch's message starts with advice to re-run with ``weights_only=False`` and ends with advice
    to allow-list the global; neither must be shown to someone uploading an untrusted file.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            return line.removeprefix("WeightsUnpickler error:").strip().split(". ")[0].rstrip(".")
    return type(exc).__name__


def factory_resolve(dotted_path: str) -> Callable[..., nn.Module]:
    """Import a model factory named ``package.module:function`` or ``package.module.function``.

    The module is the researcher's own code on the server's Python path (as Net2Vis asks for a
    ``get_model()``); uploaded files are never imported.

    Raises:
        CheckpointError: malformed path, import failure (with the error), missing attribute,
            or not callable.
    """
    path = dotted_path.strip()
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise CheckpointError(f"factory {dotted_path!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the researcher's module may raise anything on import
        raise CheckpointError(
            f"factory {dotted_path!r}: cannot import {module_name!r} ({type(exc).__name__}: {exc})"
        ) from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise CheckpointError(f"factory {dotted_path!r}: {module_name!r} has no function {attr!r}")
    return factory


def _factory_call(
    factory: Callable[..., nn.Module], dotted_path: str, num_classes: int
) -> nn.Module:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    try:
        model = factory(num_classes=num_classes) if "num_classes" in params else factory()
    except Exception as exc:
        raise CheckpointError(
            f"factory {dotted_path!r} raised {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(model, nn.Module):
        raise CheckpointError(
            f"factory {dotted_path!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def torchscript_load(path: str | Path) -> nn.Module:
    """Load a TorchScript archive on CPU (its own format: no arbitrary Python is unpickled).

    Raises:
        CheckpointError: missing, truncated or not a TorchScript archive.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path.name}: TorchScript file not found")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path.name}: not a TorchScript archive ({first})") from None


#: Kinds whose safetensors file records its own constructor arguments: kind -> loader.
SELF_DESCRIBING = {
    "protopnet": "explanations.prototypes.protopnet:protopnet_load",
    "cbm": "explanations.concepts.cbm:cbm_load",
}


def self_describing_load(kind: str, weights_path: str | Path) -> nn.Module:
    """Rebuild a ProtoPNet or a concept-bottleneck model from its safetensors file alone
    (eval mode, CPU). Nothing is unpickled.

    Raises:
        CheckpointError: unknown kind, or the file is missing, not safetensors, or not a model
            of that kind (the loader's message says which).
    """
    if kind not in SELF_DESCRIBING:
        raise CheckpointError(
            f"unknown self-describing kind {kind!r}; use {sorted(SELF_DESCRIBING)}"
        )
    from labeling.training import WeightsError

    loader = factory_resolve(SELF_DESCRIBING[kind])
    try:
        model = loader(weights_path)
    except (WeightsError, ValueError, KeyError) as exc:
        name = Path(weights_path).name
        raise CheckpointError(f"{name}: not a {kind} model file: {exc}") from None
    model.eval()
    return model


def model_build(
    architecture: str, weights_path: str | Path, num_classes: int, *, kind: str = "builtin"
) -> nn.Module:
    """Build a model and load its weights strictly, in eval mode on CPU.

    Args:
        architecture: a key of :data:`ARCHITECTURES` (kind "builtin") or a factory's dotted
            path (kind "factory"); ignored for kind "torchscript".
        weights_path: state dict (safetensors or ``torch.save``, loaded with
            ``weights_only=True``), or the TorchScript archive.
        num_classes: passed to factories that take ``num_classes``.
        kind: "builtin", "factory", "torchscript", or a self-describing kind of
            :data:`SELF_DESCRIBING` ("protopnet", "cbm": the safetensors file carries the
            constructor arguments; ``architecture`` and ``num_classes`` are not used).

    Raises:
        CheckpointError: unknown architecture or kind, factory problems, or the state dict does
            not match (missing and unexpected keys and shape mismatches are listed).
    """
    if kind == "torchscript":
        model = torchscript_load(weights_path)
        model.eval()
        return model
    if kind in SELF_DESCRIBING:
        return self_describing_load(kind, weights_path)
    if kind == "factory":
        model = _factory_call(factory_resolve(architecture), architecture, num_classes)
    elif kind == "builtin":
        try:
            builder = ARCHITECTURES[architecture]
        except KeyError:
            raise CheckpointError(
                f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}"
            ) from None
        model = builder(num_classes)
    else:
        raise CheckpointError(
            f"unknown model kind {kind!r}; use builtin, factory, torchscript, "
            + ", ".join(SELF_DESCRIBING)
        )
    state_dict = state_dict_load(weights_path)
    _load_strict(model, state_dict, Path(weights_path).name)
    model.eval()
    return model


def _load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], name: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state_dict))
        if tuple(own[k].shape) != tuple(state_dict[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected[:5]}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {mismatched[:3]}")
        raise CheckpointError(
            f"{name}: state dict does not match the architecture: " + "; ".join(parts)
        )
    model.load_state_dict(state_dict, strict=True)


def pixels_to_input(pixels: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    """Turn an (H, W, 3) uint8 photo into a normalised (1, 3, H, W) float32 tensor.

    ``mean`` and ``std`` are per channel in pixel units (0-255): out = (pixel - mean) / std.
    """
    x = torch.from_numpy(np.array(pixels, dtype=np.float32)).permute(2, 0, 1)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((x - m) / s).unsqueeze(0).contiguous()
