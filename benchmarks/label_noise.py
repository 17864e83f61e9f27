#!/usr/bin/env python3
"""Label noise on Fashion-MNIST: does the ranking find the flips, and does correcting them help?

    .venv/bin/python benchmarks/label_noise.py [--dir /usr/share/datasets/fashion-mnist]
        [--noise 0.10] [--seed 0] [--curator-accuracy 0.95] [--budget B] [--folds K]
        [--epochs E] [--limit N] [--threads 2] [--json FILE]

Steps (everything seeded; the same arguments give the same numbers on the same torch build and
thread count):

1. **Noise.** Reads Fashion-MNIST (``labeling.idx.idx_dataset_read``; ``--limit N`` keeps the
   first N training items, for a dry run; the test set is always the full 10,000). Exactly
   ``round(noise * N)`` training items, drawn without replacement with
   ``np.random.default_rng(seed)``, get a label drawn uniformly from the K - 1 *other* classes
   (symmetric, class-independent noise: ``(true + U{1..K-1}) mod K``, same generator).
2. **Cross-fitting.** ``labeling.training.cross_fit`` on the noisy labels (``--folds`` folds,
   ``--epochs`` epochs per model, defaults those of ``TrainConfig``) gives out-of-sample
   ``pred_probs``; its final model, trained on all noisy labels, is model **(a)**.
3. **Rankings**, all on the same ``pred_probs`` (cast once to float64), k = number of flips:

   * ours: ``labeling.quality.find_label_issues(labels, probs, method=m)`` for both methods
     (ranked by self-confidence);
   * cleanlab 2.9.0 (AGPL, a dev-only oracle): ``cleanlab.filter.find_label_issues(labels,
     probs, return_indices_ranked_by="self_confidence", n_jobs=1)`` with the default filter
     (``prune_by_noise_rate``) and with ``filter_by="confident_learning"``;
   * baseline: all items by ascending self-confidence ``p(given label)``, no filter.

   For each: the flagged set's size, precision and recall against the true flips, and the
   top-k list = the flagged items in rank order, then (when fewer than k are flagged) the
   other items by ascending self-confidence (ours: ``labeling.quality.self_confidence``;
   cleanlab: ``cleanlab.rank.get_label_quality_scores(method="self_confidence")``; stable
   sorts, ties in index order), cut at k. Its precision and recall are equal by construction
   (the list has k items and there are k flips). Ours vs cleanlab with the same filter:
   Jaccard of the flagged sets, whether the ranked orders and the top-k lists are identical.
4. **Simulated curator.** Reviews the list of ours with the default method
   (``confident_learning``): its flagged items in rank order, extended by the same fill rule
   when ``--budget`` exceeds them; the first ``--budget`` items (default: as many as are
   flagged). For each reviewed item, with probability ``--curator-accuracy`` they set the true
   (clean) label, otherwise a label drawn uniformly from the K - 1 classes other than the true
   one (so an erring curator may also "confirm" a wrong noisy label). Their draws come from
   ``np.random.default_rng([1, seed])`` (a stream separate from the noise). Unreviewed items
   keep their noisy labels.
5. **Retraining.** ``labeling.training.train_model`` with the same ``TrainConfig`` (same seed,
   hence the same initialisation and batch order as model (a)) on all training items with
   **(b)** the corrected labels and **(c)** the clean labels. Test accuracy of (a), (b), (c)
   on the clean test set.

Prints a table to stderr and the JSON (arguments, config, all numbers, timings, versions,
date, load average) to stdout, and writes it to ``--json`` when given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labeling.idx import FASHION_MNIST_DIR, idx_dataset_read  # noqa: E402
from labeling.quality import METHODS, find_label_issues, self_confidence  # noqa: E402
from labeling.training import TrainConfig, cross_fit, predict, train_model  # noqa: E402

try:  # AGPL: only ever the benchmark's oracle, never imported by labeling/
    from cleanlab.filter import find_label_issues as cleanlab_find_label_issues
    from cleanlab.rank import get_label_quality_scores as cleanlab_quality_scores
except ImportError:  # pragma: no cover
    cleanlab_find_label_issues = cleanlab_quality_scores = None

DEFAULT_METHOD = "confident_learning"


def flip_labels(
    clean: np.ndarray, noise: float, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric noise: ``(noisy labels, sorted flipped indices)``; exactly
    ``round(noise * N)`` items, each to a uniformly drawn different class."""
    n = len(clean)
    m = int(round(noise * n))
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(n, size=m, replace=False))
    noisy = clean.copy()
    noisy[flipped] = (clean[flipped] + rng.integers(1, num_classes, size=m)) % num_classes
    return noisy, flipped


def top_k_list(ranked: np.ndarray, fill_scores: np.ndarray, k: int) -> np.ndarray:
    """``ranked`` (flagged, most likely wrong first), then the remaining items by ascending
    ``fill_scores`` (stable: ties in index order), cut at ``k`` items."""
    ranked = np.asarray(ranked, dtype=np.int64)
    if ranked.size >= k:
        return ranked[:k]
    rest = np.ones(len(fill_scores), dtype=bool)
    rest[ranked] = False
    others = np.flatnonzero(rest)
    others = others[np.argsort(fill_scores[others], kind="stable")]
    return np.concatenate([ranked, others[: k - ranked.size]])


def pr(selected: np.ndarray, is_flip: np.ndarray) -> dict:
    """Precision / recall of a set (or list) of indices against the true flips."""
    selected = np.asarray(selected, dtype=np.int64)
    hits = int(is_flip[selected].sum())
    flips = int(is_flip.sum())
    return {
        "size": int(selected.size),
        "hits": hits,
        "precision": hits / selected.size if selected.size else None,
        "recall": hits / flips if flips else None,
    }


def ranking_row(
    ranked: np.ndarray | None, fill_scores: np.ndarray, is_flip: np.ndarray, k: int
) -> tuple[dict, np.ndarray]:
    """Metrics of one ranking: its flagged set (``ranked`` None: the unfiltered baseline,
    no flagged set) and its top-k list."""
    filtered = ranked is not None
    ranked = np.asarray(ranked if filtered else [], dtype=np.int64)
    top = top_k_list(ranked, fill_scores, k)
    return {
        "flagged": pr(ranked, is_flip) if filtered else None,
        "top_k": pr(top, is_flip),
        "filled": int(max(0, k - ranked.size)),
    }, top


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = set(a.tolist()), set(b.tolist())
    union = sa | sb
    return len(sa & sb) / len(union) if union else 1.0


def simulate_curator(
    noisy: np.ndarray,
    clean: np.ndarray,
    order: np.ndarray,
    budget: int,
    accuracy: float,
    num_classes: int,
    seed: int,
) -> tuple[np.ndarray, dict]:
    """The curator reviews ``order[:budget]``; returns the corrected labels and counts."""
    reviewed = np.asarray(order[:budget], dtype=np.int64)
    rng = np.random.default_rng([1, seed])
    right = rng.random(reviewed.size) < accuracy
    wrong = (clean[reviewed] + rng.integers(1, num_classes, size=reviewed.size)) % num_classes
    corrected = noisy.copy()
    corrected[reviewed] = np.where(right, clean[reviewed], wrong)
    was_wrong = noisy[reviewed] != clean[reviewed]
    now_wrong = corrected[reviewed] != clean[reviewed]
    stats = {
        "reviewed": int(reviewed.size),
        "reviewed_noisy": int(was_wrong.sum()),
        "reviewed_clean": int((~was_wrong).sum()),
        "curator_right": int(right.sum()),
        "curator_wrong": int((~right).sum()),
        "flips_fixed": int((was_wrong & ~now_wrong).sum()),
        "flips_left_wrong_after_review": int((was_wrong & now_wrong).sum()),
        "errors_introduced": int((~was_wrong & now_wrong).sum()),
        "wrong_labels_before": int((noisy != clean).sum()),
        "wrong_labels_after": int((corrected != clean).sum()),
        "noise_rate_before": float((noisy != clean).mean()),
        "noise_rate_after": float((corrected != clean).mean()),
    }
    return corrected, stats


def test_accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    probs, _ = predict(model, images)
    return float((probs.argmax(1) == labels).mean())


def fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def print_table(report: dict) -> None:
    out = sys.stderr
    r = report["rankings"]
    k = report["data"]["flips"]
    print(f"\nRankings on the same out-of-sample pred_probs, k = {k} flips", file=out)
    print(
        f"{'ranking':<44} {'flagged':>7} {'P':>6} {'R':>6} {'top-k P=R':>9} {'filled':>6}",
        file=out,
    )
    for name, row in r.items():
        f = row["flagged"]
        flagged = "–" if f is None else str(f["size"])
        p = "–" if f is None else fmt(f["precision"])
        rc = "–" if f is None else fmt(f["recall"])
        print(
            f"{name:<44} {flagged:>7} {p:>6} {rc:>6} {fmt(row['top_k']['precision']):>9} "
            f"{row['filled']:>6}",
            file=out,
        )
    for name, a in report["agreement"].items():
        print(
            f"{name}: Jaccard {a['flagged_jaccard']:.4f}, flagged sets identical "
            f"{a['flagged_identical']}, ranked order identical {a['ranked_order_identical']}, "
            f"top-k lists identical {a['top_k_identical']}",
            file=out,
        )
    c = report["curator"]
    print(
        f"\nCurator (accuracy {report['args']['curator_accuracy']}): reviewed {c['reviewed']} "
        f"({c['reviewed_noisy']} noisy), fixed {c['flips_fixed']}, errors introduced "
        f"{c['errors_introduced']}, noise {c['noise_rate_before']:.4f} -> "
        f"{c['noise_rate_after']:.4f}",
        file=out,
    )
    acc = report["test_accuracy"]
    print(
        f"Test accuracy: (a) noisy {acc['a_noisy']:.4f}, (b) corrected "
        f"{acc['b_corrected']:.4f}, (c) clean {acc['c_clean']:.4f}",
        file=out,
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=FASHION_MNIST_DIR)
    parser.add_argument("--noise", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--curator-accuracy", type=float, default=0.95)
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help="items the curator reviews (default: as many as ours flags with the default method)",
    )
    parser.add_argument("--folds", type=int, default=TrainConfig.folds)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--limit", type=int, default=None, help="first N training items only")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if not 0 <= args.noise <= 1:
        parser.error("--noise must lie in [0, 1]")
    if not 0 <= args.curator_accuracy <= 1:
        parser.error("--curator-accuracy must lie in [0, 1]")
    if args.budget is not None and args.budget < 0:
        parser.error("--budget must be >= 0")
    if cleanlab_find_label_issues is None:
        parser.error("cleanlab is not installed (pip install cleanlab==2.9.0, dev only)")

    torch.set_num_threads(args.threads)
    config = TrainConfig(folds=args.folds, epochs=args.epochs, seed=args.seed)
    load_before = os.getloadavg()
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    last = [0.0]

    def progress(done: int, total: int, message: str) -> None:
        now = time.perf_counter()
        if now - last[0] >= 30 or done == total:
            last[0] = now
            log(f"  {done}/{total} {message}")

    # 1. data and noise
    t0 = time.perf_counter()
    splits = idx_dataset_read(args.dir)
    train_x, clean = splits["train"]
    test_x, test_y = splits["test"]
    if args.limit is not None:
        train_x, clean = train_x[: args.limit], clean[: args.limit]
    num_classes = int(max(clean.max(), test_y.max())) + 1
    noisy, flipped = flip_labels(clean, args.noise, num_classes, args.seed)
    is_flip = noisy != clean
    k = int(flipped.size)
    seconds["load_and_noise"] = time.perf_counter() - t0
    log(f"{len(clean)} training items, {k} labels flipped; cross-fitting ({config.folds} folds)")

    # 2. cross-fitting on the noisy labels; the final model is (a)
    fit = cross_fit(train_x, noisy, num_classes, config, progress=progress)
    seconds["cross_fit"] = fit.seconds
    t0 = time.perf_counter()
    acc_a = test_accuracy(fit.model, test_x, test_y)
    seconds["test_predict_a"] = time.perf_counter() - t0
    probs = fit.pred_probs.astype(np.float64)
    log(f"cross_fit done in {fit.seconds:.1f} s; (a) test accuracy {acc_a:.4f}")

    # 3. rankings
    t0 = time.perf_counter()
    ours_sc = self_confidence(noisy, probs)
    rankings: dict[str, dict] = {}
    tops: dict[str, np.ndarray] = {}
    ranked: dict[str, np.ndarray] = {}
    ours_issues = {}
    for m in METHODS:
        issues = find_label_issues(noisy, probs, method=m)
        ours_issues[m] = issues
        name = f"ours: {m}"
        ranked[name] = issues.ranked
        rankings[name], tops[name] = ranking_row(issues.ranked, ours_sc, is_flip, k)
    seconds["rank_ours"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    theirs_sc = cleanlab_quality_scores(noisy, probs, method="self_confidence")
    for m, kwargs in (
        ("prune_by_noise_rate", {}),
        ("confident_learning", {"filter_by": "confident_learning"}),
    ):
        order = np.asarray(
            cleanlab_find_label_issues(
                noisy, probs, return_indices_ranked_by="self_confidence", n_jobs=1, **kwargs
            ),
            dtype=np.int64,
        )
        name = f"cleanlab: {m}" + (" (default filter)" if not kwargs else "")
        ranked[name] = order
        rankings[name], tops[name] = ranking_row(order, theirs_sc, is_flip, k)
    seconds["rank_cleanlab"] = time.perf_counter() - t0

    baseline = "self-confidence, no filter"
    rankings[baseline], tops[baseline] = ranking_row(None, ours_sc, is_flip, k)

    agreement = {}
    for m in METHODS:
        ours_name = f"ours: {m}"
        theirs_name = next(n for n in ranked if n.startswith(f"cleanlab: {m}"))
        a, b = ranked[ours_name], ranked[theirs_name]
        agreement[f"{m}: ours vs cleanlab"] = {
            "flagged_jaccard": jaccard(a, b),
            "flagged_identical": bool(set(a.tolist()) == set(b.tolist())),
            "only_ours": len(set(a.tolist()) - set(b.tolist())),
            "only_cleanlab": len(set(b.tolist()) - set(a.tolist())),
            "ranked_order_identical": bool(np.array_equal(a, b)),
            "top_k_identical": bool(np.array_equal(tops[ours_name], tops[theirs_name])),
            "top_k_jaccard": jaccard(tops[ours_name], tops[theirs_name]),
        }
    sc_equal = bool(np.array_equal(ours_sc, theirs_sc))

    # 4. simulated curator on ours (default method)
    default = ours_issues[DEFAULT_METHOD]
    budget = int(default.ranked.size if args.budget is None else args.budget)
    review_order = top_k_list(default.ranked, ours_sc, min(budget, len(clean)))
    corrected, curator = simulate_curator(
        noisy, clean, review_order, budget, args.curator_accuracy, num_classes, args.seed
    )
    curator["budget"] = budget
    curator["method"] = DEFAULT_METHOD
    log(
        f"curator reviewed {curator['reviewed']}: fixed {curator['flips_fixed']}, introduced "
        f"{curator['errors_introduced']}; noise {curator['noise_rate_before']:.4f} -> "
        f"{curator['noise_rate_after']:.4f}"
    )

    # 5. retraining on (b) corrected and (c) clean labels
    accuracy = {"a_noisy": acc_a}
    for key, labels in (("b_corrected", corrected), ("c_clean", clean)):
        log(f"training ({key}) on {len(labels)} items")
        t0 = time.perf_counter()
        model = train_model(train_x, labels, num_classes, config, progress=progress)
        seconds[f"train_{key}"] = time.perf_counter() - t0
        accuracy[key] = test_accuracy(model, test_x, test_y)
        log(f"({key}) test accuracy {accuracy[key]:.4f} ({seconds[f'train_{key}']:.1f} s)")
        del model
    seconds["total"] = time.perf_counter() - started

    report = {
        "benchmark": "label noise: ranking precision/recall and accuracy after correction",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": vars(args),
        "config": config.as_dict(),
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cleanlab": version("cleanlab"),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "data": {
            "train_items": int(len(clean)),
            "test_items": int(len(test_y)),
            "classes": num_classes,
            "noise": "symmetric: round(noise*N) items without replacement, each to a "
            "uniformly drawn different class; np.random.default_rng(seed)",
            "flips": k,
            "noise_rate": float(is_flip.mean()),
            "flips_per_true_class": np.bincount(clean[is_flip], minlength=num_classes).tolist(),
        },
        "cross_fit": {
            "fold_accuracy_vs_noisy": fit.fold_accuracy,
            "out_of_sample_accuracy_vs_noisy": float((probs.argmax(1) == noisy).mean()),
            "out_of_sample_accuracy_vs_clean": float((probs.argmax(1) == clean).mean()),
            "phase_seconds": fit.phase_seconds,
        },
        "rankings": rankings,
        "agreement": agreement,
        "self_confidence_scores_identical_to_cleanlab": sc_equal,
        "curator": curator,
        "test_accuracy": accuracy,
        "seconds": {key: round(v, 2) for key, v in seconds.items()},
    }
    print_table(report)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
