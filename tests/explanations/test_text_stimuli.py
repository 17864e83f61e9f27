"""The GLTR-style stimulus builder (explanations/text/stimuli.py).

Passages come from the real standard library on this machine; generation uses a tiny *real*
``transformers`` GPT-2 (one layer, 16-dim) with a lossless word-piece tokenizer built from those
passages, whose output layer is set so that it samples pieces i.i.d. from a fixed distribution with
frequent sentence ends.
That keeps every test CPU-fast while exercising the real ``generate()`` path.
"""

from __future__ import annotations

import ast
import json
import math
import sysconfig
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from explanations.text import stimuli  # noqa: E402
from explanations.text.stimuli import (  # noqa: E402
    FORMAT,
    STDLIB_LICENSE,
    Generation,
    Passage,
    StimulusSet,
    StimulusShortfallError,
    human_passages,
    machine_continuation,
    prose_runs,
    sentence_ends,
    stimulus_set_build,
)

# ---------------------------------------------------------------------------------------------
# A tiny real causal LM
# ---------------------------------------------------------------------------------------------

OPENING = "The standard library provides many modules for common tasks, such as"
FILLER = " The It This A In When Then done. again. there. here. now. well. later. today."


def _split():
    """Pre-tokenizer: ``" word"`` pieces (leading space kept) and whitespace runs."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Split(Regex(r" ?\S+|\s+"), behavior="isolated")


def _pieces(corpus: str) -> list[str]:
    return [piece for piece, _ in _split().pre_tokenize_str(corpus)]


def _piece_tokenizer(corpus: str):
    """Lossless word-piece tokenizer: ``" word"`` pieces (leading space kept) and whitespace
    runs, with a vocabulary of every piece in ``corpus``; decoding concatenates the pieces."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2}
    for piece in _pieces(corpus):
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = _split()
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )


def tiny_lm(corpus: str, *, eos_weight: float = 0.0, unk_weight: float = 0.0):
    """A real GPT-2 (1 layer, 16 dims) whose next-token distribution is fixed: a unigram model
    of the space-led pieces of ``corpus``, with capitalised words favoured and a sentence end
    (a piece ending in ".") about one token in eight, so samples have many sentence ends."""
    from transformers import GPT2Config, GPT2LMHeadModel

    corpus += FILLER
    tokenizer = _piece_tokenizer(corpus)
    vocab = tokenizer.get_vocab()
    weights = torch.zeros(len(vocab))
    for piece in _pieces(corpus):
        if piece.startswith(" ") and len(piece) > 1 and not piece[1].isspace():
            weights[vocab[piece]] += 3.0 if piece[1].isupper() else 1.0
    dots = [i for piece, i in vocab.items() if piece.endswith(".") and weights[i] > 0]
    weights[dots] *= (weights.sum() - weights[dots].sum()) / 7 / weights[dots].sum()
    weights[vocab["[EOS]"]] = eos_weight * weights.sum()
    weights[vocab["[UNK]"]] = unk_weight * weights.sum()
    logits = torch.where(weights > 0, weights.log(), torch.full_like(weights, -30.0))
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=1024,
        n_embd=16,
        n_layer=1,
        n_head=2,
        tie_word_embeddings=False,
        bos_token_id=vocab["[EOS]"],
        eos_token_id=vocab["[EOS]"],
        pad_token_id=vocab["[PAD]"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # hidden state := e_0, so the logits are lm_head.weight[:, 0]
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, 0] = logits
    return SimpleNamespace(model=model, tokenizer=tokenizer, name="tiny-gpt2", context_length=1024)


@pytest.fixture(scope="module")
def stdlib_passages():
    return human_passages(sources=("stdlib",), min_words=40, max_words=120, limit=12, seed=3)


@pytest.fixture(scope="module")
def corpus(stdlib_passages):
    return "\n\n".join([OPENING] + [p.text for p in stdlib_passages])


@pytest.fixture(scope="module")
def lm(corpus):
    return tiny_lm(corpus)


def _ends_at_sentence(text: str) -> bool:
    ends = sentence_ends(text)
    return bool(ends) and ends[-1] == len(text)


# ---------------------------------------------------------------------------------------------
# Cleaning
# ---------------------------------------------------------------------------------------------

RST_DOC = """Frobnicate a value and return the result to the caller.

    Use :func:`json.loads` or :meth:`~collections.OrderedDict.popitem` to see ``literal``
    values, **bold** and *emphasis* words, and `links <https://example.org>`_ in the text.

    >>> frobnicate(2)
    4
    >>> frobnicate(
    ...     3)
    9

    This second paragraph starts a new run because the doctest above was removed from it.
    See the note [1]_ for the details of the method.

    Example::

        x = frobnicate(5)

    :param x: the value to frobnicate.
    :returns: twice the value.

    .. versionadded:: 3.2

    - a list item that is not part of the prose
    - another list item that is not part of the prose

    Parameters
    ----------
    x : int
        The value that is frobnicated by the function.

    Notes
    -----
    The notes section of a numpydoc docstring is prose and it is kept here.
    """


def test_prose_runs_strip_rst_markup_doctests_and_sections():
    assert prose_runs(RST_DOC) == [
        [
            "Frobnicate a value and return the result to the caller.",
            "Use json.loads or popitem to see literal values, bold and emphasis words, and "
            "links in the text.",
        ],
        [
            "This second paragraph starts a new run because the doctest above was removed "
            "from it. See the note for the details of the method."
        ],
        ["The notes section of a numpydoc docstring is prose and it is kept here."],
    ]


def test_prose_runs_google_style_and_markdown():
    google = """Load the configuration from the given file on the disk.

    Args:
        path: where the file is stored on the disk.

    Returns:
        The configuration as a dictionary of values.

    Raises:
        OSError: when the file cannot be read from the disk.
    """
    assert prose_runs(google) == [["Load the configuration from the given file on the disk."]]

    markdown = (
        "# Title\n\n[![badge](https://x/b.svg)](https://x)\n\n"
        "This **package** does one thing and it does [that thing](https://x.org) well.\n\n"
        "```python\nimport package\npackage.run()\n```\n\n"
        "It was written by people who like `small` tools and clear documentation.\n"
    )
    assert prose_runs(markdown, markup="markdown") == [
        ["This package does one thing and it does that thing well."],
        ["It was written by people who like small tools and clear documentation."],
    ]
    with pytest.raises(ValueError, match="markup"):
        prose_runs("x", markup="html")


def test_sentence_ends_skip_abbreviations_and_identifiers():
    text = "Use os.path.join here, e.g. for paths. Dr. Who agrees! Then stop."
    assert [text[:e] for e in sentence_ends(text)] == [
        "Use os.path.join here, e.g. for paths.",
        "Use os.path.join here, e.g. for paths. Dr. Who agrees!",
        text,
    ]


# ---------------------------------------------------------------------------------------------
# Passages
# ---------------------------------------------------------------------------------------------


def _docstring_of(path: Path, qualname: str) -> str:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    node: ast.AST = tree
    if qualname:
        for part in qualname.split("."):
            node = next(
                n
                for n in ast.walk(node)
                if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and n.name == part
            )
    return " ".join((ast.get_docstring(node) or "").split())


def test_stdlib_passages_are_real_docstrings_with_provenance():
    passages = human_passages(sources=("stdlib",), min_words=30, max_words=90, limit=25, seed=1)
    assert len(passages) == 25
    root = Path(sysconfig.get_paths()["stdlib"])
    for p in passages:
        kind, rel, *rest = p.source.partition("#")[0].split(":")
        assert kind == "stdlib"
        assert p.license == STDLIB_LICENSE
        path = root / rel
        assert path.is_file() and "test" not in path.parts
        qualname = rest[0] if rest else ""
        doc = _docstring_of(path, qualname)
        first_sentence = p.text[: sentence_ends(p.text)[0]]
        for word in first_sentence.split():  # every word of the passage is in the docstring
            assert word.strip(".,;:!?()\"'") in doc, (p.source, word)
        assert ">>>" not in p.text and ":func:" not in p.text and "``" not in p.text
    report = passages.report["stdlib"]
    assert report.available and report.n_units > 100 and report.n_passages == 25


def test_word_range_is_respected_and_passages_end_at_sentences():
    passages = human_passages(sources=("stdlib",), min_words=20, max_words=45, limit=40, seed=2)
    assert passages
    for p in passages:
        assert 20 <= p.n_words <= 45 and p.n_words == len(p.text.split())
        assert _ends_at_sentence(p.text), p.text
        assert p.text[0].isupper() or p.text[0] in "\"'(0123456789"
    keys = {stimuli._dedup_key(p.text) for p in passages}
    assert len(keys) == len(passages)


def test_same_seed_same_passages_other_seed_other_order():
    a = human_passages(sources=("stdlib",), limit=8, seed=4)
    b = human_passages(sources=("stdlib",), limit=8, seed=4)
    c = human_passages(sources=("stdlib",), limit=8, seed=5)
    assert a == b and a != c


def test_package_passages_carry_the_package_licence():
    passages = human_passages(sources=("packages",), limit=6, seed=0)
    assert len(passages) == 6
    for p in passages:
        assert p.source.startswith("packages:") and "==" in p.source
        assert "metadata" in p.license


def test_absent_fortunes_and_python_docs_are_skipped(monkeypatch, tmp_path):
    monkeypatch.setattr(stimuli, "FORTUNE_DIRS", (str(tmp_path / "no-fortunes"),))
    monkeypatch.setattr(stimuli, "PYTHON_DOC_GLOBS", (str(tmp_path / "no-docs*/html"),))
    none = human_passages(sources=("fortunes", "python-docs"))
    assert none == []
    assert not none.report["fortunes"].available and "absent" in none.report["fortunes"].detail
    assert not none.report["python-docs"].available
    mixed = human_passages(sources=("stdlib", "fortunes", "python-docs"), limit=5)
    assert len(mixed) == 5 and all(p.source.startswith("stdlib:") for p in mixed)
    assert mixed.report["stdlib"].n_passages == 5


def test_fortune_files_are_read_when_present(monkeypatch, tmp_path):
    root = tmp_path / "fortunes"
    (root / "off").mkdir(parents=True)
    sentence = "The quick study of a thing is the best way to learn about it in time."
    (root / "wisdom").write_text(
        "Too short to be a passage.\n%\n"
        + " ".join([sentence] * 4)
        + "\n\t\t-- Somebody Famous\n%\n",
        encoding="utf-8",
    )
    (root / "wisdom.dat").write_bytes(b"\x00\x01binary index")
    (root / "off" / "rude").write_text(" ".join([sentence] * 4), encoding="utf-8")
    monkeypatch.setattr(stimuli, "FORTUNE_DIRS", (str(root),))
    passages = human_passages(sources=("fortunes",), min_words=20, max_words=40)
    assert [p.source for p in passages] == ["fortunes:wisdom:2"]
    # 16 words per sentence: 2 sentences fit in 40 words, cut at the sentence end
    assert passages[0].text == " ".join([sentence] * 2) and passages[0].n_words == 32
    assert "Somebody" not in passages[0].text
    assert passages.report["fortunes"].n_units == 1


def test_python_docs_html_is_read_when_present(monkeypatch, tmp_path):
    page = tmp_path / "python3.11-doc" / "html" / "library" / "frob.html"
    page.parent.mkdir(parents=True)
    prose = "The frob module provides a small set of tools that are useful for the work."
    page.write_text(
        '<html><head><title>x</title></head><body><div class="sphinxsidebar"><p>'
        + prose.replace("frob", "side")
        + '</p></div><div class="body" role="main"><h1>frob<a class="headerlink">\u00b6</a>'
        f"</h1><p>{prose} It is <code>easy</code> to use.</p><p>{prose}</p>"
        '<div class="highlight"><pre>frob.run()</pre></div><p>After the code.</p></div>'
        "</body></html>",
        encoding="utf-8",
    )
    monkeypatch.setattr(stimuli, "PYTHON_DOC_GLOBS", (str(tmp_path / "python3.11*/html"),))
    passages = human_passages(sources=("python-docs",), min_words=10, max_words=100)
    assert [p.source for p in passages] == ["python-docs:library/frob.html"]
    assert passages[0].text == f"{prose} It is easy to use.\n\n{prose}"


def test_human_passages_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_words"):
        human_passages(min_words=50, max_words=10)
    with pytest.raises(ValueError, match="unknown"):
        human_passages(sources=("stdlib", "twitter"))
    with pytest.raises(TypeError):
        human_passages(limit=2.5)


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def test_generation_is_deterministic_for_a_seed_and_records_its_parameters(lm):
    state = torch.get_rng_state()
    a = machine_continuation(lm, OPENING, max_new_tokens=150, top_k=20, temperature=0.9, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    torch.manual_seed(12345)  # a different global state must not matter
    b = machine_continuation(lm, OPENING, max_new_tokens=150, top_k=20, temperature=0.9, seed=7)
    c = machine_continuation(lm, OPENING, max_new_tokens=150, top_k=20, temperature=0.9, seed=8)
    assert a == b and a.text != c.text
    assert (a.model_name, a.top_k, a.temperature, a.top_p, a.seed, a.max_new_tokens) == (
        "tiny-gpt2",
        20,
        0.9,
        1.0,
        7,
        150,
    )
    assert a.prompt == OPENING and a.n_prompt_tokens == len(OPENING.split())
    assert a.n_new_tokens == 150 and a.stop_reason == "max_new_tokens"
    assert a.text and _ends_at_sentence(a.text) and a.n_words == len(a.text.split())
    assert stimuli._normalise_whitespace(a.raw_text).startswith(a.text)
    assert OPENING not in a.text and a.full_text.startswith(OPENING)
    assert Generation.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_generation_ignores_the_models_own_generation_defaults(lm):
    lm.model.generation_config.top_p = 1e-6  # would make sampling greedy if it leaked in
    try:
        texts = {
            machine_continuation(lm, OPENING, max_new_tokens=120, seed=s).raw_text for s in range(3)
        }
    finally:
        lm.model.generation_config.top_p = 1.0
    assert len(texts) == 3 and all(len(set(t)) > 5 for t in texts)


def test_generation_stops_at_eos_and_drops_special_tokens(corpus):
    lm = tiny_lm(corpus, eos_weight=0.02, unk_weight=0.2)
    g = machine_continuation(lm, OPENING, max_new_tokens=900, top_k=0, seed=1)
    assert g.stop_reason == "eos" and g.n_new_tokens < 900
    assert "[EOS]" not in g.raw_text and "[UNK]" not in g.raw_text and "[PAD]" not in g.raw_text


def test_generation_rejects_bad_input(lm):
    with pytest.raises(ValueError, match="opening is empty"):
        machine_continuation(lm, "   \n", max_new_tokens=10, seed=0)
    with pytest.raises(ValueError, match="temperature"):
        machine_continuation(lm, OPENING, max_new_tokens=10, temperature=0.0, seed=0)
    with pytest.raises(ValueError, match="context length"):
        machine_continuation(lm, OPENING, max_new_tokens=1020, seed=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        machine_continuation(lm, OPENING, max_new_tokens=0, seed=0)
    with pytest.raises(TypeError, match=r"\.model"):
        machine_continuation(object(), OPENING, max_new_tokens=10, seed=0)


# ---------------------------------------------------------------------------------------------
# Stimulus sets
# ---------------------------------------------------------------------------------------------

BUILD = dict(opening_words=8, length_tolerance=0.15, min_continuation_words=10)


@pytest.fixture(scope="module")
def stimulus_set(lm, stdlib_passages):
    return stimulus_set_build(lm, n_pairs=3, seed=11, passages=stdlib_passages, **BUILD)


def test_pairs_share_the_opening_and_are_length_matched(stimulus_set):
    assert len(stimulus_set) == 3
    for pair in stimulus_set.pairs:
        words = pair.passage.text.split()
        assert pair.opening.split() == words[:8]
        assert pair.human_text.startswith(pair.opening)
        assert pair.machine_text.startswith(pair.opening)
        assert " ".join(pair.human_text.split()) == " ".join(words[: 8 + pair.human_words])
        h, m = pair.human_words, pair.machine_words
        assert h == len(pair.human_continuation.split()) >= 10
        assert m == len(pair.machine_continuation.split()) >= 10
        assert abs(h - m) <= 0.15 * max(h, m) and pair.length_difference <= 0.15
        assert _ends_at_sentence(pair.human_continuation)
        assert _ends_at_sentence(pair.machine_continuation)
        assert pair.generation.text.startswith(pair.machine_continuation)
        assert pair.generation.prompt == pair.opening and pair.generation.top_k == 40
        assert pair.passage.source.startswith("stdlib:") and pair.passage.license
    assert len({p.opening for p in stimulus_set.pairs}) == 3
    assert stimulus_set.model_name == "tiny-gpt2"
    assert stimulus_set.parameters["length_tolerance"] == 0.15
    assert stimulus_set.parameters["opening_words"] == 8
    assert stimulus_set.versions["torch"] == torch.__version__
    assert stimulus_set.sources["stdlib"]["n_passages"] == 12  # the PassageList's report
    labels = [(s["pair_id"], s["label"]) for s in stimulus_set.stimuli()]
    assert labels[:2] == [("pair-001", "human"), ("pair-001", "machine")] and len(labels) == 6


def test_build_is_deterministic_for_a_seed(lm, stdlib_passages, stimulus_set):
    again = stimulus_set_build(lm, n_pairs=3, seed=11, passages=stdlib_passages, **BUILD)
    assert again.to_json() == stimulus_set.to_json()


def test_json_round_trip(stimulus_set, tmp_path):
    text = stimulus_set.to_json()
    data = json.loads(text)
    assert data["format"] == FORMAT and len(data["pairs"]) == 3
    assert data["pairs"][0]["generation"]["seed"] == stimulus_set.pairs[0].generation.seed
    assert StimulusSet.from_json(text) == stimulus_set
    path = stimulus_set.write(tmp_path / "set.json")
    assert StimulusSet.read(path) == stimulus_set
    with pytest.raises(ValueError, match="format"):
        StimulusSet.from_json(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not valid JSON"):
        StimulusSet.from_json("{oops")
    broken = dict(data)
    del broken["pairs"]
    with pytest.raises(ValueError, match="malformed"):
        StimulusSet.from_json(json.dumps(broken))


def test_too_many_pairs_names_both_numbers(lm):
    passages = [Passage(" ".join(["Word"] * 70) + ".", f"test:{i}", "CC0", 70) for i in range(2)]
    with pytest.raises(ValueError, match=r"n_pairs=5.*\(2\)"):
        stimulus_set_build(lm, n_pairs=5, passages=passages)
    with pytest.raises(ValueError, match="empty"):
        stimulus_set_build(lm, n_pairs=1, passages=[])
    with pytest.raises(ValueError, match="length_tolerance"):
        stimulus_set_build(lm, n_pairs=1, passages=passages, length_tolerance=1.0)
    with pytest.raises(TypeError):
        stimulus_set_build(object(), n_pairs=1, passages=passages)


def test_shortfall_is_reported_with_the_partial_set(lm, stdlib_passages):
    with pytest.raises(StimulusShortfallError, match=r"only 0 of n_pairs=2") as info:
        stimulus_set_build(lm, n_pairs=2, passages=stdlib_passages[:3], min_continuation_words=500)
    partial = info.value.partial
    assert isinstance(info.value, ValueError) and len(partial) == 0
    assert [r["reason"] for r in partial.rejected] == ["too_short"] * 3


def test_budget_follows_the_human_continuation(lm, stdlib_passages, stimulus_set):
    for pair in stimulus_set.pairs:
        rest = len(pair.passage.text.split()) - 8
        assert pair.generation.max_new_tokens <= math.ceil(2 * rest * 1.15) + 16


def test_machine_text_is_held_to_the_human_cleaning_standard():
    sample = (
        "tasks like parsing. The module is small and it is easy to use for most of the work.\n\n"
        "It was written with care by people who use it every day of the week.\n\n"
        "```python\nimport json\n```\n\n"
        "More prose after the code block that would otherwise be counted as well."
    )
    assert stimuli._machine_prose_prefix(sample) == (
        "tasks like parsing. The module is small and it is easy to use for most of the work."
        "\n\nIt was written with care by people who use it every day of the week."
    )
    assert stimuli._machine_prose_prefix("uses the `json` module. It is fine.") == ""
    assert stimuli._machine_prose_prefix(" - a list item. Another one.") == ""
    listed = " and more. The list follows here.\n- first item\n- second item."
    assert stimuli._machine_prose_prefix(listed) == "and more. The list follows here."


def test_a_document_start_token_is_prepended_and_recorded(lm):
    start = lm.tokenizer.convert_tokens_to_ids("[EOS]")
    with_start = SimpleNamespace(**vars(lm), start_token_id=start)
    g = machine_continuation(with_start, OPENING, max_new_tokens=40, seed=3)
    plain = machine_continuation(lm, OPENING, max_new_tokens=40, seed=3)
    assert g.start_token_id == start and plain.start_token_id is None
    assert g.n_prompt_tokens == plain.n_prompt_tokens + 1
    assert g.prompt == OPENING and "[EOS]" not in g.raw_text
