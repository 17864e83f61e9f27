#!/usr/bin/env python3
"""GLTR token ranks: counting against sorting the vocabulary, and model load times, same run.

    .venv/bin/python benchmarks/gltr.py [--tokens 1000] [--repeats 5] [--loads 3]
        [--threads 1] [--cache-dir DIR] [--skip-loads] [--json-out FILE]

On the bundled SmolLM2-135M-Instruct (49,152-token vocabulary) and one real text (stdlib
docstrings: difflib, argparse, json; cut at ``--tokens`` tokens), scored after the start token:

* **rank step**: given the ``(N, V)`` float32 logits of every position (one forward, done
  once), the 0-based rank of each actual token. *counting* is ours
  (``explanations.text.gltr.token_ranks_from_logits``: how many logits are strictly greater,
  O(V) per token); *sorting* is the usual approach (``torch.sort`` of each position's logits,
  descending, stable, then the actual token's position in the order, O(V log V)).
* **pipeline**: ``token_ranks(lm, text)`` end to end (tokenise, forward, ranks,
  probabilities, frac, top-10 entropy, top-5, display spans), once as shipped and once with
  the rank step swapped for the sorting one (everything else identical).
* **loads**: ``language_model_load()`` in fresh subprocesses (the per-process cache would hide
  it otherwise), ``--loads`` times from the GGUF (each into an empty cache folder: de-quantise,
  rebuild, write the safetensors checkpoint) and ``--loads`` times from that checkpoint.

The two variants alternate (counting, sorting, counting, ...) after one untimed warm-up of
each, so a slow spell of the shared machine hits both alike. Reports medians over
``--repeats``, tokens/s, the ratio sorting/counting (target >= 5x on the rank step) with the
range of the paired ratios, and asserts identical ranks in every repeat. ``--threads`` sets
torch's intra-op threads (default 1: on 2 busy cores, two OpenMP threads fighting another
process make a forward pass several times slower).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studyplatform.settings.base")

_LOAD_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[2]))
from explanations.text.lm import language_model_load
t1 = time.perf_counter()
lm = language_model_load(cache_dir=sys.argv[1])
print(json.dumps({"source": lm.source, "load_s": lm.load_seconds, "import_s": t1 - t0}))
"""


def sort_ranks(logits, targets):
    """Sorting baseline: position of each target in its row's descending stable sort."""
    import torch

    order = torch.sort(logits, dim=1, descending=True, stable=True).indices
    return (order == targets[:, None]).int().argmax(dim=1)


def long_text(tokenizer, n_tokens: int) -> str:
    import argparse as argparse_module
    import json as json_module

    text = "\n\n".join([difflib.__doc__, argparse_module.__doc__, json_module.__doc__])
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) < n_tokens:
        text = (text + "\n\n") * (n_tokens // len(enc["input_ids"]) + 1)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return text[: enc["offset_mapping"][n_tokens - 1][1]]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def alternate(a, b, repeats: int):
    """Warm up both, then time a, b, a, b, ...; returns (times_a, times_b, outs_a, outs_b)."""
    a(), b()
    ta, tb, oa, ob = [], [], [], []
    for _ in range(repeats):
        t, o = timed(a)
        ta.append(t)
        oa.append(o)
        t, o = timed(b)
        tb.append(t)
        ob.append(o)
    return ta, tb, oa, ob


def subprocess_loads(cache_dir: Path, n: int, threads: int, fresh: bool) -> list[dict]:
    rows = []
    for _ in range(n):
        target = Path(tempfile.mkdtemp(prefix="gltr-bench-lm-")) if fresh else cache_dir
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _LOAD_SCRIPT, str(target), str(threads)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["process_s"] = time.perf_counter() - t0
        rows.append(row)
        print(f"  load {row}", file=sys.stderr)
        if fresh:
            import shutil

            shutil.rmtree(target, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--skip-loads", action="store_true")
    parser.add_argument("--json-out", type=Path, default=None)
    a = parser.parse_args()

    import django

    django.setup()
    import torch
    import transformers
    from django.conf import settings

    from explanations.text import gltr
    from explanations.text.lm import language_model_load

    torch.set_num_threads(a.threads)
    cache_dir = a.cache_dir or Path(settings.VAR_DIR) / "lm-cache"
    lm = language_model_load(cache_dir=cache_dir)
    text = long_text(lm.tokenizer, a.tokens)
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    seq = torch.tensor([[lm.start_token_id, *ids]])
    targets = torch.tensor(ids)
    n = len(ids)
    print(
        f"{lm.name} ({lm.source}), vocab {lm.vocab_size}, {n} tokens, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
        f"{a.repeats} repeats, {platform.processor() or platform.machine()}",
        file=sys.stderr,
    )

    def forward():
        with torch.inference_mode():
            return lm.model(seq, use_cache=False).logits[0, :-1].float()

    forward_times = []
    for _ in range(a.repeats):
        t, logits = timed(forward)
        forward_times.append(t)

    def count():
        with torch.inference_mode():
            return gltr.token_ranks_from_logits(logits, targets)

    def sort():
        with torch.inference_mode():
            return sort_ranks(logits, targets)

    rc, rs, oc, os_ = alternate(count, sort, a.repeats)
    for x, y in zip(oc, os_, strict=True):
        assert torch.equal(x, y), "counting and sorting ranks differ"
    ties = int(((logits == logits.gather(1, targets[:, None])).sum(dim=1) > 1).sum())

    counting = gltr.token_ranks_from_logits

    def pipeline_count():
        return gltr.token_ranks(lm, text).ranks

    def pipeline_sort():
        gltr.token_ranks_from_logits = sort_ranks
        try:
            return gltr.token_ranks(lm, text).ranks
        finally:
            gltr.token_ranks_from_logits = counting

    pc, ps, opc, ops = alternate(pipeline_count, pipeline_sort, a.repeats)
    for x, y in zip(opc, ops, strict=True):
        assert x == y, "pipeline ranks differ between counting and sorting"
    assert opc[0] == oc[0].tolist(), "pipeline ranks differ from the one-forward ranks"

    def summary(name, times):
        med = statistics.median(times)
        return {"name": name, "median_s": med, "tokens_per_s": n / med, "times_s": times}

    def paired(slow, fast):
        ratios = [s / f for s, f in zip(slow, fast, strict=True)]
        return statistics.median(ratios), min(ratios), max(ratios)

    report = {
        "model": lm.name,
        "tokens": n,
        "vocab": lm.vocab_size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "ties_with_actual_token": ties,
        "forward": summary("forward pass alone", forward_times),
        "rank_count": summary("rank step, counting (ours)", rc),
        "rank_sort": summary("rank step, torch.sort", rs),
        "pipeline_count": summary("token_ranks, counting (ours)", pc),
        "pipeline_sort": summary("token_ranks, rank step by torch.sort", ps),
        "rank_ratio": paired(rs, rc),
        "pipeline_ratio": paired(ps, pc),
    }
    if not a.skip_loads:
        print("loading from the GGUF in fresh subprocesses ...", file=sys.stderr)
        gguf = subprocess_loads(cache_dir, a.loads, a.threads, fresh=True)
        print("loading from the checkpoint in fresh subprocesses ...", file=sys.stderr)
        cache = subprocess_loads(cache_dir, a.loads, a.threads, fresh=False)
        assert all(r["source"] == "gguf" for r in gguf) and all(
            r["source"] == "cache" for r in cache
        )
        report["loads"] = {"gguf": gguf, "cache": cache}

    print(f"\n| step | median s ({n} tokens) | tokens/s | sort ÷ count (paired range) |")
    print("|---|--:|--:|--:|")
    for key, ratio in (
        ("rank_count", None),
        ("rank_sort", report["rank_ratio"]),
        ("pipeline_count", None),
        ("pipeline_sort", report["pipeline_ratio"]),
        ("forward", None),
    ):
        row = report[key]
        cell = "–" if ratio is None else f"{ratio[0]:.1f}× ({ratio[1]:.1f}–{ratio[2]:.1f})"
        print(f"| {row['name']} | {row['median_s']:.4f} | {row['tokens_per_s']:,.0f} | {cell} |")
    print(f"\nranks identical in every repeat (asserted); ties with the actual token: {ties}")
    if "loads" in report:
        print("\n| load | median s (load) | median s (whole subprocess) | loads (s) |")
        print("|---|--:|--:|---|")
        for key in ("gguf", "cache"):
            rows = report["loads"][key]
            each = ", ".join(f"{r['load_s']:.1f}" for r in rows)
            print(
                f"| {key} | {statistics.median(r['load_s'] for r in rows):.2f} | "
                f"{statistics.median(r['process_s'] for r in rows):.2f} | {each} |"
            )
    if a.json_out:
        a.json_out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
