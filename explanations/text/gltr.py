"""GLTR token ranks: how predictable each token of a text is under a language model.

Follows Gehrmann, Strobelt & Rush, "GLTR: Statistical Detection and Visualization of Generated
Text" (ACL 2019 demo): every token of the text is scored by the language model given the tokens
before it, and coloured by the **rank** of the actual token among the model's predictions
(top-10 green, top-100 yellow, top-1000 red, the rest purple). GLTR's three histograms are the
counts per rank bucket, ``frac(p) = p(actual) / p(top-1)`` and the entropy of the top-10
prediction.

Definitions used here (all documented on :func:`token_ranks`):

* **First token.** Like GLTR, which prepends GPT-2's ``<|endoftext|>``, the text is scored after
  the model's start token (``LanguageModel.start_token_id``: SmolLM2's document separator
  ``<|endoftext|>``; a directory model's BOS, else EOS), so every token gets a rank. Only a model
  with no such token leaves the first token unscored (``rank=None``).
* **Ties.** The rank is the number of vocabulary logits *strictly greater* than the actual
  token's logit (no sort): tokens tied with the actual one do not push it down, so a tie gives
  the best rank the tied group shares (rank 0 if it ties with the maximum).
* **Long texts.** Windows of ``window`` tokens (default: the model's context length) advance by
  ``stride`` tokens (default ``window // 2``); each token is scored once, in the first window
  that holds it with at least ``window - stride`` tokens of left context (only the tokens of the
  first window have less: everything before them). Nothing is truncated.
* **Display spans.** Byte-level BPE splits an emoji or a curly quote over several tokens that
  are not valid text on their own. Tokens whose character offsets overlap (pieces of the same
  character) are merged into one span; a span takes the **largest** rank of its tokens (the
  least predictable piece decides the colour; for a split character the first piece carries the
  choice and its continuations are near-certain). Span texts are slices of the original string
  and tile it exactly, so their concatenation is the text, byte for byte.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .lm import LanguageModel

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DisplaySpan",
    "GltrHistograms",
    "GltrInputError",
    "GltrResult",
    "TokenScore",
    "bucket_labels",
    "gltr_histograms",
    "rank_bucket",
    "token_ranks",
    "token_ranks_from_logits",
]

#: Upper rank bounds (exclusive) of GLTR's colour buckets: top-10, top-100, top-1000, rest.
DEFAULT_THRESHOLDS: tuple[int, ...] = (10, 100, 1000)
#: GLTR's entropy histogram uses the renormalised distribution over the top 10 predictions.
ENTROPY_TOP = 10
#: Bins of the frac(p) and entropy histograms.
HISTOGRAM_BINS = 10
#: Positions scored per chunk (softmax normaliser, top-k): 64 rows of a 49k vocabulary are
#: 12 MB, which keeps the passes over them in cache (2x faster on CPU than 1,024 rows).
_CHUNK = 64


class GltrInputError(ValueError):
    """The text or a parameter given to :func:`token_ranks` / :func:`gltr_histograms` is
    invalid (empty text, window longer than the model's context, non-increasing thresholds)."""


@dataclass(frozen=True)
class TokenScore:
    """One token of the text and how the model predicted it.

    Attributes:
        index: position of the token in the text's token sequence (0-based, start token
            excluded).
        token_id: vocabulary id.
        start, end: character offsets of the token in the original text. Pieces of one
            character (an emoji split over three byte tokens) share that character's offsets.
        rank: 0-based rank of the actual token among all ``vocab_size`` predictions (count of
            strictly greater logits), or ``None`` when the token had no context to be scored.
        probability: p(actual token | left context), in [0, 1].
        frac: p(actual) / p(top-1) in (0, 1]; exactly 1.0 iff ``rank == 0``.
        entropy: entropy in nats of the top-10 predictions renormalised to sum to 1, in
            [0, ln 10].
        top_k: the model's ``top_k`` most probable next tokens as (display text, probability),
            most probable first. Display texts of byte pieces that are not text on their own
            show the bytes escaped (``\\xf0\\x9f``), never U+FFFD.
        top_k_ids: the vocabulary ids of those predictions, same order.
        context_tokens: how many tokens (start token included) the model saw before this one.
    """

    index: int
    token_id: int
    start: int
    end: int
    rank: int | None
    probability: float | None
    frac: float | None
    entropy: float | None
    top_k: tuple[tuple[str, float], ...]
    top_k_ids: tuple[int, ...]
    context_tokens: int


@dataclass(frozen=True)
class DisplaySpan:
    """One displayed unit: a slice ``text[start:end]`` of the original string.

    Attributes:
        start, end: character offsets into the original text; consecutive spans tile it.
        text: the slice itself (leading spaces and newlines included).
        token_indices: the :class:`TokenScore` indices merged into this span (several when a
            character was split into byte pieces).
        rank: the largest rank among those tokens, ``None`` if none was scored.
        bucket: index into the thresholds' buckets (0 = top-10 by default), ``None`` if unscored.
    """

    start: int
    end: int
    text: str
    token_indices: tuple[int, ...]
    rank: int | None
    bucket: int | None


@dataclass(frozen=True, eq=False)
class GltrResult:
    """Every token's rank, probability and predictions for one text, plus display spans.

    Attributes:
        text: the original text.
        model_name: ``LanguageModel.name``.
        tokens: one :class:`TokenScore` per token of the text, in order.
        spans: display spans tiling ``text`` exactly (``"".join(s.text for s in spans) == text``).
        thresholds: the bucket thresholds used for ``spans[i].bucket``.
        top_k: how many predictions each token lists.
        window, stride: the sliding-window parameters used (tokens).
        n_windows: how many forward passes the text needed.
        start_token: the start token prepended as the first token's context, or ``None``.
        seconds: wall-clock seconds of the scoring (tokenise, forward passes, ranks).
    """

    text: str
    model_name: str
    tokens: tuple[TokenScore, ...]
    spans: tuple[DisplaySpan, ...]
    thresholds: tuple[int, ...]
    top_k: int
    window: int
    stride: int
    n_windows: int
    start_token: str | None
    seconds: float

    @property
    def ranks(self) -> list[int | None]:
        return [t.rank for t in self.tokens]

    @property
    def scored(self) -> list[TokenScore]:
        """The tokens that have a rank (all of them when the model has a start token)."""
        return [t for t in self.tokens if t.rank is not None]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (lists and plain numbers only)."""
        return {
            "method": "gltr",
            "text": self.text,
            "model": self.model_name,
            "thresholds": list(self.thresholds),
            "top_k": self.top_k,
            "window": self.window,
            "stride": self.stride,
            "n_windows": self.n_windows,
            "start_token": self.start_token,
            "tokens": [
                {
                    "token_id": t.token_id,
                    "start": t.start,
                    "end": t.end,
                    "rank": t.rank,
                    "probability": t.probability,
                    "frac": t.frac,
                    "entropy": t.entropy,
                    "top_k": [[s, p] for s, p in t.top_k],
                    "top_k_ids": list(t.top_k_ids),
                    "context_tokens": t.context_tokens,
                }
                for t in self.tokens
            ],
            "spans": [
                {
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "tokens": list(s.token_indices),
                    "rank": s.rank,
                    "bucket": s.bucket,
                }
                for s in self.spans
            ],
        }


@dataclass(frozen=True, eq=False)
class GltrHistograms:
    """GLTR's three histograms over the scored tokens of one text.

    Attributes:
        thresholds: the rank thresholds of the buckets.
        bucket_labels: ``("top-10", "top-100", "top-1000", "rest")`` for the default thresholds.
        bucket_counts: ``(len(thresholds) + 1,)`` int64, tokens per rank bucket.
        frac_edges: ``(11,)`` float64, equal bins on [0, 1].
        frac_counts: ``(10,)`` int64, tokens per frac(p) bin (1.0 falls in the last bin).
        entropy_edges: ``(11,)`` float64, equal bins on [0, ln 10] nats.
        entropy_counts: ``(10,)`` int64, tokens per top-10 entropy bin.
    Each ``*_counts`` sums to the number of scored tokens.
    """

    thresholds: tuple[int, ...]
    bucket_labels: tuple[str, ...]
    bucket_counts: np.ndarray
    frac_edges: np.ndarray
    frac_counts: np.ndarray
    entropy_edges: np.ndarray
    entropy_counts: np.ndarray


def token_ranks(
    lm: LanguageModel,
    text: str,
    *,
    top_k: int = 5,
    window: int | None = None,
    stride: int | None = None,
    thresholds: Sequence[int] = DEFAULT_THRESHOLDS,
) -> GltrResult:
    """Score every token of ``text`` under ``lm`` the way GLTR does.

    Args:
        lm: a loaded :class:`~explanations.text.lm.LanguageModel`.
        text: any non-empty string; special-token strings in it (``<|endoftext|>``) are taken
            literally, as text.
        top_k: how many of the model's most probable predictions each token lists (>= 1).
        window: tokens per forward pass (start token included), 2 .. ``lm.context_length``;
            default ``lm.context_length`` (8192 for SmolLM2). Smaller windows bound memory:
            the logits of one window take ``window * vocab_size * 4`` bytes.
        stride: how far each window advances, 1 .. ``window - 1``; default ``window // 2``.
            Every token after the first window is scored with at least ``window - stride``
            tokens of left context; larger strides are faster, smaller ones see more context.
        thresholds: strictly increasing positive rank bounds of the colour buckets; default
            GLTR's (10, 100, 1000): ranks 0-9, 10-99, 100-999, 1000+.

    Returns:
        A :class:`GltrResult`. See the module docstring for the first token, ties and merged
        spans. Ranks come from counting (``(logits > logit[actual]).sum()``, O(V) per token),
        never from sorting the vocabulary.

    Raises:
        GltrInputError: ``text`` is not a string, is empty or has no tokens; ``top_k``,
            ``window``, ``stride`` or ``thresholds`` are out of range.
    """
    started = time.perf_counter()
    if not isinstance(text, str):
        raise GltrInputError(f"text must be a string, got {type(text).__name__}.")
    if not text:
        raise GltrInputError("text is empty: there is nothing to score.")
    thresholds = _thresholds_check(thresholds)
    if not isinstance(top_k, int) or not 1 <= top_k <= lm.vocab_size:
        raise GltrInputError(f"top_k must be an integer in 1..{lm.vocab_size}, got {top_k!r}.")
    window = lm.context_length if window is None else window
    if not isinstance(window, int) or not 2 <= window <= lm.context_length:
        raise GltrInputError(
            f"window must be an integer in 2..{lm.context_length} (the model's context length),"
            f" got {window!r}."
        )
    stride = max(1, window // 2) if stride is None else stride
    if not isinstance(stride, int) or not 1 <= stride <= window - 1:
        raise GltrInputError(f"stride must be an integer in 1..{window - 1}, got {stride!r}.")

    tokenizer = lm.tokenizer
    ids, offsets = _tokenize(tokenizer, text)
    if not ids:
        raise GltrInputError("text has no tokens under this tokenizer: nothing to score.")
    start_id = lm.start_token_id
    prefix = [] if start_id is None else [start_id]
    sequence = prefix + ids
    shift = len(prefix)  # sequence position of text token i is i + shift

    n_text = len(ids)
    ranks: list[int | None] = [None] * n_text
    probs: list[float | None] = [None] * n_text
    fracs: list[float | None] = [None] * n_text
    entropies: list[float | None] = [None] * n_text
    tops: list[tuple[tuple[str, float], ...]] = [()] * n_text
    top_ids: list[tuple[int, ...]] = [()] * n_text
    contexts = [0] * n_text
    piece_cache: dict[int, str] = {}

    n_windows = 0
    done = 1  # sequence positions < done are scored (position 0 never is: no context)
    begin = 0
    while True:
        end = min(begin + window, len(sequence))
        if done < end:
            n_windows += 1
            # logits at position j predict j + 1: positions done-1 .. end-2 score done .. end-1
            logits = _window_logits(lm, sequence[begin:end], keep=end - done + 1)[:-1]
            targets = torch.tensor(sequence[done:end], device=logits.device)
            for lo in range(0, len(targets), _CHUNK):
                scores = _scores(logits[lo : lo + _CHUNK], targets[lo : lo + _CHUNK], top_k)
                for row, (rank, p, frac, ent, ids_k, p_k) in enumerate(zip(*scores, strict=True)):
                    pos = done + lo + row
                    i = pos - shift
                    ranks[i], probs[i], fracs[i], entropies[i] = rank, p, frac, ent
                    tops[i] = tuple(
                        (_piece_text(tokenizer, t, piece_cache), q)
                        for t, q in zip(ids_k, p_k, strict=True)
                    )
                    top_ids[i] = tuple(ids_k)
                    contexts[i] = pos - begin
            done = end
        if end == len(sequence):
            break
        begin += stride

    if offsets is not None:
        units = _units_from_offsets(offsets, len(text))
    else:
        units = _units_from_decoding(tokenizer, ids, text)
        offsets = [(0, 0)] * n_text
        for start, stop, members in units:  # no offsets: a token takes its unit's range
            for i in members:
                offsets[i] = (start, stop)
    tokens = tuple(
        TokenScore(
            index=i,
            token_id=ids[i],
            start=offsets[i][0],
            end=offsets[i][1],
            rank=ranks[i],
            probability=probs[i],
            frac=fracs[i],
            entropy=entropies[i],
            top_k=tops[i],
            top_k_ids=top_ids[i],
            context_tokens=contexts[i],
        )
        for i in range(n_text)
    )
    spans = tuple(
        _span(text, start, stop, members, ranks, thresholds) for start, stop, members in units
    )
    return GltrResult(
        text=text,
        model_name=lm.name,
        tokens=tokens,
        spans=spans,
        thresholds=thresholds,
        top_k=top_k,
        window=window,
        stride=stride,
        n_windows=n_windows,
        start_token=None if start_id is None else tokenizer.convert_ids_to_tokens(start_id),
        seconds=time.perf_counter() - started,
    )


def token_ranks_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among its row's logits, by counting (no sort).

    Args:
        logits: ``(N, V)`` float tensor, one row of next-token logits per position.
        targets: ``(N,)`` int64 tensor of the actual token ids.

    Returns:
        ``(N,)`` int64: how many of the row's logits are strictly greater than the target's.
        Ties with the target do not count, so a tied group shares its best rank.
    """
    actual = logits.gather(1, targets[:, None])
    ranks = torch.empty(len(targets), dtype=torch.int64, device=logits.device)
    # A few rows at a time (~3 MB of logits): the comparison mask stays in cache, which is
    # ~5x faster on CPU than one (N, V) mask.
    rows = max(1, (3 << 20) // (logits.element_size() * max(1, logits.shape[1])))
    for lo in range(0, len(targets), rows):
        hi = lo + rows
        torch.sum(logits[lo:hi] > actual[lo:hi], dim=1, dtype=torch.int64, out=ranks[lo:hi])
    return ranks


def rank_bucket(rank: int, thresholds: Sequence[int] = DEFAULT_THRESHOLDS) -> int:
    """Bucket index of a 0-based rank: 0 for ``rank < thresholds[0]`` (top-10), ...,
    ``len(thresholds)`` for ranks at or above the last threshold (the rest)."""
    return bisect.bisect_right(thresholds, rank)


def bucket_labels(thresholds: Sequence[int] = DEFAULT_THRESHOLDS) -> tuple[str, ...]:
    """``("top-10", "top-100", "top-1000", "rest")`` for the default thresholds."""
    return tuple(f"top-{t}" for t in thresholds) + ("rest",)


def gltr_histograms(result: GltrResult, thresholds: Sequence[int] | None = None) -> GltrHistograms:
    """GLTR's three histograms over the scored tokens of ``result``.

    Args:
        result: a :class:`GltrResult`.
        thresholds: rank bucket bounds; default the ones ``result`` was scored with.

    Returns:
        A :class:`GltrHistograms`: rank-bucket counts, frac(p) counts in 10 bins on [0, 1], and
        top-10 entropy counts in 10 bins on [0, ln 10] nats. Unscored tokens are left out.

    Raises:
        GltrInputError: ``thresholds`` not strictly increasing positive integers.
    """
    thresholds = result.thresholds if thresholds is None else _thresholds_check(thresholds)
    scored = result.scored
    buckets = np.zeros(len(thresholds) + 1, dtype=np.int64)
    for token in scored:
        buckets[rank_bucket(token.rank, thresholds)] += 1
    frac_edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    entropy_edges = np.linspace(0.0, math.log(ENTROPY_TOP), HISTOGRAM_BINS + 1)
    fracs = np.array([t.frac for t in scored], dtype=np.float64)
    entropies = np.clip(np.array([t.entropy for t in scored], dtype=np.float64), 0.0, None)
    # clip: the top-10 entropy is at most ln 10 up to rounding; keep every token in a bin
    entropies = np.minimum(entropies, entropy_edges[-1])
    frac_counts, _ = np.histogram(fracs, bins=frac_edges)
    entropy_counts, _ = np.histogram(entropies, bins=entropy_edges)
    return GltrHistograms(
        thresholds=thresholds,
        bucket_labels=bucket_labels(thresholds),
        bucket_counts=buckets,
        frac_edges=frac_edges,
        frac_counts=frac_counts.astype(np.int64),
        entropy_edges=entropy_edges,
        entropy_counts=entropy_counts.astype(np.int64),
    )


def _thresholds_check(thresholds: Sequence[int]) -> tuple[int, ...]:
    values = tuple(thresholds)
    if (
        not values
        or not all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in values)
        or any(a >= b for a, b in zip(values, values[1:], strict=False))
    ):
        raise GltrInputError(
            f"thresholds must be strictly increasing positive integers, got {thresholds!r}."
        )
    return values


def _tokenize(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]] | None]:
    """Token ids of ``text`` (no special tokens added, special-token strings split as text)
    and their character offsets when the (fast) tokenizer provides them."""
    options = {"add_special_tokens": False, "split_special_tokens": True}
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, return_offsets_mapping=True, **options)
        return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    return list(tokenizer(text, **options)["input_ids"]), None


def _window_logits(lm: LanguageModel, window_ids: list[int], keep: int) -> torch.Tensor:
    """``(keep, V)`` float32 logits of the last ``keep`` positions of one window."""
    model = lm.model
    input_ids = torch.tensor([window_ids], dtype=torch.long, device=lm.device)
    with torch.inference_mode():
        if _accepts_logits_to_keep(model):
            # only the scored positions go through the vocabulary projection
            out = model(input_ids=input_ids, use_cache=False, logits_to_keep=keep)
        else:
            out = model(input_ids=input_ids, use_cache=False)
    return out.logits[0, -keep:].float()


def _accepts_logits_to_keep(model: Any) -> bool:
    import inspect

    cached = getattr(model, "_studyplatform_logits_to_keep", None)
    if cached is None:
        cached = "logits_to_keep" in inspect.signature(model.forward).parameters
        try:
            model._studyplatform_logits_to_keep = cached
        except AttributeError:  # pragma: no cover - exotic modules
            pass
    return cached


def _scores(logits: torch.Tensor, targets: torch.Tensor, top_k: int) -> tuple[list, ...]:
    """Per-row rank, probability, frac, top-10 entropy and top-k (ids, probabilities)."""
    actual = logits.gather(1, targets[:, None])[:, 0]
    ranks = token_ranks_from_logits(logits, targets)
    log_norm = torch.logsumexp(logits, dim=1)
    n_top = min(max(top_k, ENTROPY_TOP), logits.shape[1])
    top = torch.topk(logits, n_top, dim=1)
    # float64 so that frac < 1 whenever a strictly greater logit exists (rank > 0)
    gap = actual.double() - top.values[:, 0].double()
    frac = torch.exp(gap)
    frac = torch.where(ranks > 0, torch.clamp(frac, max=math.nextafter(1.0, 0.0)), 1.0)
    prob = torch.exp(actual.double() - log_norm.double())
    q = torch.softmax(top.values[:, : min(ENTROPY_TOP, n_top)].double(), dim=1)
    entropy = -(q * torch.log(q.clamp_min(1e-300))).sum(dim=1)
    top_p = torch.exp(top.values[:, :top_k].double() - log_norm.double()[:, None])
    return (
        ranks.tolist(),
        prob.clamp(0.0, 1.0).tolist(),
        frac.tolist(),
        entropy.tolist(),
        top.indices[:, :top_k].tolist(),
        top_p.tolist(),
    )


def _piece_text(tokenizer: Any, token_id: int, cache: dict[int, str]) -> str:
    """A predicted token as display text; byte pieces that are not valid UTF-8 on their own
    are shown with escaped bytes instead of U+FFFD."""
    text = cache.get(token_id)
    if text is not None:
        return text
    text = tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
    if "\ufffd" in text:
        raw = _piece_bytes(tokenizer, token_id)
        # not byte-level BPE (e.g. SentencePiece byte fallback): its token name, "<0xF0>"
        text = (
            raw.decode("utf-8", errors="backslashreplace")
            if raw is not None
            else str(tokenizer.convert_ids_to_tokens(token_id))
        )
    cache[token_id] = text
    return text


def _piece_bytes(tokenizer: Any, token_id: int) -> bytes | None:
    """The bytes of a byte-level BPE token (GPT-2's byte-to-unicode alphabet), else None."""
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    inverse = {c: b for b, c in bytes_to_unicode().items()}
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if not isinstance(piece, str) or any(c not in inverse for c in piece):
        return None
    return bytes(inverse[c] for c in piece)


Unit = tuple[int, int, tuple[int, ...]]


def _units_from_offsets(offsets: list[tuple[int, int]], length: int) -> list[Unit]:
    """Group tokens into display units from their character offsets, tiling ``[0, length)``.

    A token whose start lies before the end of the current unit is a further piece of a
    character already begun (byte-level BPE gives every piece that character's offsets), so
    it joins the unit. Empty offsets join the neighbouring unit. Gaps (characters no token
    claims) go to the following unit, the tail to the last one.
    """
    groups: list[list[int]] = []  # [start, end, token indices...]
    pending: list[int] = []
    for i, (start, end) in enumerate(offsets):
        if end <= start:
            if groups:
                groups[-1].append(i)
            else:
                pending.append(i)
        elif groups and start < groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], end)
            groups[-1].append(i)
        else:
            groups.append([start, end, *pending, i])
            pending = []
    if not groups:
        return [(0, length, tuple(pending))]
    units: list[Unit] = []
    cursor = 0
    for k, group in enumerate(groups):
        stop = length if k == len(groups) - 1 else max(group[1], cursor)
        stop = min(stop, length)
        units.append((cursor, stop, tuple(group[2:])))
        cursor = stop
    return units


def _units_from_decoding(tokenizer: Any, ids: list[int], text: str) -> list[Unit]:
    """Display units for a tokenizer without offsets: merge consecutive tokens until they
    decode to complete characters (no U+FFFD), then find that text in the original string."""
    units: list[Unit] = []
    cursor = 0
    members: list[int] = []
    for i in range(len(ids)):
        members.append(i)
        piece = tokenizer.decode([ids[j] for j in members], clean_up_tokenization_spaces=False)
        if "\ufffd" in piece and i < len(ids) - 1:
            continue
        core = piece.strip() or piece
        found = text.find(core, cursor) if core else -1
        if found < 0:
            continue  # not located yet (e.g. a lone space the decoder dropped): merge on
        units.append((cursor, found + len(core), tuple(members)))
        cursor = found + len(core)
        members = []
    if members:
        if units:
            start, _, prev = units.pop()
            units.append((start, len(text), prev + tuple(members)))
        else:
            units.append((0, len(text), tuple(members)))
    elif units:
        start, _, prev = units.pop()
        units.append((start, len(text), prev))
    return units


def _span(
    text: str,
    start: int,
    stop: int,
    members: tuple[int, ...],
    ranks: list[int | None],
    thresholds: tuple[int, ...],
) -> DisplaySpan:
    scored = [ranks[i] for i in members if ranks[i] is not None]
    rank = max(scored) if scored else None
    return DisplaySpan(
        start=start,
        end=stop,
        text=text[start:stop],
        token_indices=members,
        rank=rank,
        bucket=None if rank is None else rank_bucket(rank, thresholds),
    )
