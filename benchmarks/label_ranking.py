#!/usr/bin/env python3
"""Label-issue ranking: ours (``labeling.quality``) against cleanlab 2.9.0, same run.

    .venv/bin/python benchmarks/label_ranking.py [--n 60000] [--classes 10] [--repeats 7]
        [--noise 0.1] [--seed 0] [--dup-n 60000] [--dup-dim 64] [--dup-repeats 3]
        [--batch 4096] [--json FILE]

Workload: ``--n`` items, ``--classes`` classes, synthetic out-of-sample ``pred_probs``
resembling a real classifier's (seeded): true classes uniform; per item a Dirichlet draw with
concentration 4.2 on the true class, 1.0 on a confusable partner class (the next one, like
cat/dog in CIFAR-10) and 0.25 elsewhere, sharpened by the power 3 and renormalised
(top-1 accuracy ~90 %, median top probability ~0.95). ``--noise`` of the labels are flipped
(seeded): 60 % of the flips to the partner class, 40 % to a uniformly drawn other class.

Implementations (all on the same float64 arrays):

* **ours, confident_learning / prune_by_noise_rate**: ``find_label_issues(labels, probs,
  method=...)``; each call also ranks the flagged items by self-confidence and returns the
  confident assignment and the confident joint.
* **cleanlab, filter_by="confident_learning"**: ``cleanlab.filter.find_label_issues`` with
  that filter, ``n_jobs=1`` (this filter never starts processes, so ``n_jobs`` does not
  matter); once returning the mask, once ranked (``return_indices_ranked_by=
  "self_confidence"``, the like-for-like row for ours).
* **cleanlab, defaults**: ``find_label_issues(labels, probs)`` = ``filter_by=
  "prune_by_noise_rate"``; with ``n_jobs=1`` (mask, and ranked), and with the default
  ``n_jobs=None`` (= psutil's physical cores; here 2: a ``multiprocessing.Pool`` per call).

Each repeat runs every implementation once, in an order rotated from repeat to repeat, after
one untimed warm-up of each, so a slow spell of the shared machine hits all alike. Reports the
median seconds over ``--repeats``, cleanlab ÷ ours (against ours with the same filter), and
the agreement of the flagged sets with ours (Jaccard, identical or not; ranked rows: the
order identical or not), checked in every repeat.

Near-duplicates: ``near_duplicates`` on ``--dup-n`` × ``--dup-dim`` standard-normal float32
embeddings with random labels, 25 planted pairs with different labels (one row a scaled copy
of another: found) and 25 with the same label (not reported); median of ``--dup-repeats``
after one untimed run, whose numpy allocations (``tracemalloc``) give the peak memory; wall
seconds and CPU seconds (``time.process_time``, both BLAS threads summed: on a shared
machine the wall time depends on the other jobs, the CPU time much less).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labeling.quality import find_label_issues, near_duplicates  # noqa: E402

try:  # AGPL: only ever the benchmark's oracle, never imported by labeling/
    from cleanlab.filter import find_label_issues as cleanlab_find_label_issues
except ImportError:  # pragma: no cover
    cleanlab_find_label_issues = None


def make_data(seed: int, n: int, k: int, noise: float):
    """``(labels int64 (n,), pred_probs float64 (n, k), truth int64 (n,))``."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    rows = np.arange(n)
    alpha = np.full((n, k), 0.25)
    alpha[rows, truth] = 4.2
    alpha[rows, (truth + 1) % k] = 1.0
    weights = rng.gamma(alpha) ** 3
    probs = weights / weights.sum(1, keepdims=True)
    labels = truth.copy()
    flip = np.flatnonzero(rng.random(n) < noise)
    to_partner = rng.random(flip.size) < 0.6
    labels[flip] = np.where(
        to_partner, (truth[flip] + 1) % k, (truth[flip] + rng.integers(1, k, flip.size)) % k
    )
    return labels, probs, truth


def implementations(labels, probs):
    """name -> (filter, output kind, callable returning a mask or ranked indices)."""

    def ours(method):
        return lambda: find_label_issues(labels, probs, method=method)

    def theirs(**kwargs):
        return lambda: cleanlab_find_label_issues(labels, probs, **kwargs)

    cl, pbnr, ranked = "confident_learning", "prune_by_noise_rate", "self_confidence"
    rows = {
        "ours: confident_learning": (cl, "ours", ours(cl)),
        "ours: prune_by_noise_rate": (pbnr, "ours", ours(pbnr)),
    }
    if cleanlab_find_label_issues is not None:
        rows.update(
            {
                "cleanlab: confident_learning, n_jobs=1, mask": (
                    cl,
                    "mask",
                    theirs(filter_by=cl, n_jobs=1),
                ),
                "cleanlab: confident_learning, n_jobs=1, ranked": (
                    cl,
                    "ranked",
                    theirs(filter_by=cl, n_jobs=1, return_indices_ranked_by=ranked),
                ),
                "cleanlab: defaults (prune_by_noise_rate), n_jobs=1, mask": (
                    pbnr,
                    "mask",
                    theirs(n_jobs=1),
                ),
                "cleanlab: defaults (prune_by_noise_rate), n_jobs=1, ranked": (
                    pbnr,
                    "ranked",
                    theirs(n_jobs=1, return_indices_ranked_by=ranked),
                ),
                "cleanlab: defaults (prune_by_noise_rate), n_jobs=None (processes), mask": (
                    pbnr,
                    "mask",
                    theirs(),
                ),
            }
        )
    return rows


def agreement(kind: str, result, reference, n: int) -> dict:
    """Jaccard / identical of the flagged set (and of the order, for ranked output)."""
    if kind == "ranked":
        mask = np.zeros(n, dtype=bool)
        mask[result] = True
    else:
        mask = np.asarray(result, dtype=bool)
    both = int((mask & reference.mask).sum())
    either = int((mask | reference.mask).sum())
    out = {
        "flagged": int(mask.sum()),
        "jaccard": both / either if either else 1.0,
        "only_ours": int((reference.mask & ~mask).sum()),
        "only_theirs": int((mask & ~reference.mask).sum()),
        "identical": bool(np.array_equal(mask, reference.mask)),
    }
    if kind == "ranked":
        out["order_identical"] = bool(np.array_equal(np.asarray(result), reference.ranked))
    return out


def time_near_duplicates(args) -> dict:
    rng = np.random.default_rng(args.seed + 1)
    emb = rng.standard_normal((args.dup_n, args.dup_dim), dtype=np.float32)
    labels = rng.integers(0, args.classes, args.dup_n)
    rows = rng.permutation(args.dup_n)[:1000].reshape(500, 2)
    differ = rows[labels[rows[:, 0]] != labels[rows[:, 1]]][:25]
    same = rows[labels[rows[:, 0]] == labels[rows[:, 1]]][:25]
    labels[same[:, 1]] = labels[same[:, 0]]
    for a, b in np.concatenate([differ, same]).tolist():
        emb[b] = emb[a] * 1.5
    expected = {(min(a, b), max(a, b)) for a, b in differ.tolist()}
    tracemalloc.start()
    result = near_duplicates(emb, labels, batch=args.batch)
    peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    found = {tuple(pair) for pair in result.pairs.tolist()}
    if found != expected:
        raise AssertionError(f"near_duplicates found {len(found)} pairs, planted {len(expected)}")
    seconds, cpu_seconds = [], []
    for repeat in range(args.dup_repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        near_duplicates(emb, labels, batch=args.batch)
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(time.process_time() - c0)
        print(
            f"near_duplicates {repeat + 1}/{args.dup_repeats}: {seconds[-1]:.2f} s", file=sys.stderr
        )
    return {
        "n": args.dup_n,
        "dim": args.dup_dim,
        "batch": args.batch,
        "seconds": seconds,
        "median_seconds": statistics.median(seconds),
        "cpu_seconds": cpu_seconds,
        "median_cpu_seconds": statistics.median(cpu_seconds),
        "pairs_found": len(found),
        "pairs_planted_different_labels": len(expected),
        "pairs_planted_same_label": int(len(same)),
        "peak_traced_mib": peak_mib,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--n", type=int, default=60_000, help="items (default 60000)")
    parser.add_argument("--classes", type=int, default=10, help="classes (default 10)")
    parser.add_argument("--noise", type=float, default=0.1, help="share flipped (default 0.1)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats (default 7)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dup-n", type=int, default=60_000, help="embeddings (default 60000)")
    parser.add_argument("--dup-dim", type=int, default=64, help="embedding size (default 64)")
    parser.add_argument("--dup-repeats", type=int, default=3, help="(default 3; 0: skip)")
    parser.add_argument("--batch", type=int, default=4096, help="near_duplicates tile side")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    started = time.perf_counter()
    labels, probs, truth = make_data(args.seed, args.n, args.classes, args.noise)
    rows = implementations(labels, probs)
    names = list(rows)
    reference = {
        name: fn() for name, (_, who, fn) in rows.items() if who == "ours"
    }  # warm-up of ours
    ours_by_filter = {rows[name][0]: reference[name] for name in reference}
    results = {}
    for name in names:  # warm-up of every row, and the first agreement check
        if rows[name][1] != "ours":
            results[name] = agreement(
                rows[name][1], rows[name][2](), ours_by_filter[rows[name][0]], args.n
            )
    seconds = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            t0 = time.perf_counter()
            out = rows[name][2]()
            seconds[name].append(time.perf_counter() - t0)
            if rows[name][1] != "ours":
                check = agreement(rows[name][1], out, ours_by_filter[rows[name][0]], args.n)
                if check != results[name]:
                    raise AssertionError(f"{name}: result changed in repeat {repeat}")
        print(
            f"repeat {repeat + 1}/{args.repeats}: "
            + ", ".join(f"{name.split(',')[0]} {seconds[name][-1]:.3f}" for name in names),
            file=sys.stderr,
            flush=True,
        )
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    ours_median = {rows[name][0]: medians[name] for name in reference}
    dups = time_near_duplicates(args) if args.dup_repeats > 0 else None
    load_after = os.getloadavg()

    wrong = labels != truth
    quality = {}
    for method, issues in ours_by_filter.items():
        quality[method] = {
            "flagged": int(issues.mask.sum()),
            "precision": float(wrong[issues.mask].mean()),
            "recall": float(issues.mask[wrong].mean()),
        }
    accuracy = float((probs.argmax(1) == truth).mean())
    print(
        f"\nLabel-issue ranking, {args.n:,} items x {args.classes} classes (top-1 accuracy "
        f"{accuracy:.3f}, {wrong.mean():.1%} of labels wrong), float64; median of "
        f"{args.repeats} repeats; numpy {np.__version__}, cleanlab "
        f"{version('cleanlab') if cleanlab_find_label_issues else 'absent'}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{load_before[0]:.1f} before / {load_after[0]:.1f} after.\n"
    )
    print("| implementation | median s | cleanlab ÷ ours | flagged | vs ours | repeats (s) |")
    print("|---|--:|--:|--:|---|---|")
    for name in names:
        method, who, _ = rows[name]
        runs = ", ".join(f"{value:.3f}" for value in seconds[name])
        if who == "ours":
            ratio, flagged, versus = "–", quality[method]["flagged"], "–"
        else:
            ratio = f"{medians[name] / ours_median[method]:.1f}×"
            check = results[name]
            flagged = check["flagged"]
            versus = f"Jaccard {check['jaccard']:.4f}, " + (
                "identical" if check["identical"] else "differs"
            )
            if "order_identical" in check:
                versus += ", order " + ("identical" if check["order_identical"] else "differs")
        print(f"| {name} | {medians[name]:.3f} | {ratio} | {flagged:,} | {versus} | {runs} |")
    for method, q in quality.items():
        print(
            f"\nours {method}: {q['flagged']:,} flagged, precision {q['precision']:.3f}, "
            f"recall {q['recall']:.3f} (against the true classes)",
            end="",
        )
    print()
    if dups:
        print(
            f"\nnear_duplicates, {dups['n']:,} x {dups['dim']} float32, tiles of "
            f"{dups['batch']}: median {dups['median_seconds']:.2f} s wall "
            f"({', '.join(f'{s:.2f}' for s in dups['seconds'])}), "
            f"{dups['median_cpu_seconds']:.2f} CPU-s (all threads); {dups['pairs_found']} pairs "
            f"found = the {dups['pairs_planted_different_labels']} planted with different "
            f"labels ({dups['pairs_planted_same_label']} same-label copies not reported); "
            f"peak numpy memory {dups['peak_traced_mib']:.0f} MiB."
        )
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Peak RSS {peak_rss:,.0f} MiB; wall time {time.perf_counter() - started:.0f} s.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "args": {
                        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                    },
                    "environment": {
                        "numpy": np.__version__,
                        "cleanlab": version("cleanlab") if cleanlab_find_label_issues else None,
                        "python": platform.python_version(),
                        "cpus": os.cpu_count(),
                        "load_average_before": load_before,
                        "load_average_after": load_after,
                    },
                    "data": {
                        "accuracy": accuracy,
                        "labels_wrong": float(wrong.mean()),
                    },
                    "seconds": seconds,
                    "median_seconds": medians,
                    "cleanlab_over_ours": {
                        name: medians[name] / ours_median[rows[name][0]]
                        for name in names
                        if rows[name][1] != "ours"
                    },
                    "agreement_with_ours": results,
                    "ours_quality": quality,
                    "near_duplicates": dups,
                    "peak_rss_mib": peak_rss,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
