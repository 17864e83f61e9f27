#!/usr/bin/env python3
"""A concept-bottleneck model on Fashion-MNIST vs the plain SmallCNN; TCAV of texture concepts.

    .venv/bin/python benchmarks/concepts.py [--dir /usr/share/datasets/fashion-mnist]
        [--epochs 3] [--items 60000] [--mode joint] [--concept-weight 1.0] [--seed 0]
        [--threads 1] [--no-baseline] [--no-tcav] [--out FILE.json] [--png FILE.png]

Trains ``explanations.concepts.cbm.train_cbm`` (default: joint, lambda 1) with the hand-made
``FASHION_MNIST_ATTRIBUTES`` table (11 class-level concepts) on the training images, and
``labeling.training.train_model`` (the plain SmallCNN, same backbone, epochs, seed) for
comparison, and reports as JSON:

* test class accuracy of both models (10,000 test images);
* test concept accuracy per concept (activation > 0.5 vs the class-level table) and its mean;
* ``truncated_agreement``: the fraction of test images whose predicted class stays the same
  when every class logit keeps only its k largest concept terms (by absolute contribution)
  plus its bias, for k = 1, 2, 3, 4, 6, 8 - how much a human shown only k concepts per class
  would miss;
* one example explanation per class (the first correctly predicted test image), written
  with ``max_concepts=3``;
* optionally (default on), TCAV (``explanations.concepts.tcav``) of scikit-image textures
  (brick, grass, gravel; 50 crops each, 11 mixed noise / photo random sets) at
  ``features.conv2`` of the plain SmallCNN, for three classes, 100 test images of each;
* wall times, the 1-minute load average before and after (the machine is shared).

``--png`` renders one explanation (the first test image, an ankle boot) as a figure: the image
and a horizontal bar chart of the predicted class's largest concept contributions, the
equation as title.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explanations.concepts.cbm import (  # noqa: E402
    FASHION_MNIST_ATTRIBUTES,
    CBMConfig,
    evaluate,
    explain,
    predict_concepts,
    train_cbm,
)
from labeling.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, idx_dataset_read  # noqa: E402
from labeling.training import TrainConfig, predict, train_model  # noqa: E402

TCAV_CLASSES = ("Trouser", "Sandal", "Bag")


def truncated_agreement(model, acts: np.ndarray, ks=(1, 2, 3, 4, 6, 8)) -> dict[str, float]:
    """Share of images whose argmax survives keeping each class's k largest |terms| + bias."""
    w = model.head.weight.detach().double().numpy()  # (K, C)
    b = model.head.bias.detach().double().numpy()
    terms = acts.astype(np.float64)[:, None, :] * w[None]  # (N, K, C)
    full = (terms.sum(2) + b).argmax(1)
    order = np.argsort(-np.abs(terms), axis=2, kind="stable")
    ranked = np.take_along_axis(terms, order, axis=2)
    out = {}
    for k in ks:
        if k > ranked.shape[2]:
            continue
        out[str(k)] = float(((ranked[:, :, :k].sum(2) + b).argmax(1) == full).mean())
    return out


def render(model, image: np.ndarray, path: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = explain(model, image, max_concepts=4)
    full = explain(model, image)
    bars = list(full.listed[:6])
    rest = full.listed[6:]
    labels = [f"{t.concept}  (a = {t.activation:.2f}, w = {t.weight:+.2f})" for t in bars]
    values = [t.contribution for t in bars]
    if rest:
        labels.append(f"{len(rest)} other concepts")
        values.append(sum(t.contribution for t in rest))
    labels.append("bias")
    values.append(full.bias)
    fig, (ax_img, ax_bar) = plt.subplots(
        1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1, 2.6]}
    )
    ax_img.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax_img.set_title(f"predicted: {e.predicted_name} ({e.probability:.0%})", fontsize=10)
    ax_img.axis("off")
    y = np.arange(len(values))[::-1]
    colours = ["#2166ac" if v >= 0 else "#b2182b" for v in values]
    colours[-1] = "#999999"
    ax_bar.barh(y, values, color=colours)
    ax_bar.set_yticks(y, labels, fontsize=9)
    ax_bar.axvline(0, color="black", linewidth=0.8)
    for yi, v in zip(y, values, strict=True):
        ax_bar.text(v, yi, f" {v:+.2f} ", va="center", ha="left" if v >= 0 else "right", fontsize=8)
    lo, hi = min(0.0, *values), max(0.0, *values)
    pad = 0.25 * (hi - lo or 1.0)
    ax_bar.set_xlim(lo - pad, hi + pad)
    ax_bar.set_xlabel(f"contribution to the '{e.target_name}' logit = weight x activation")
    ax_bar.set_title(f"logit {full.logit:.2f} = sum of the bars", fontsize=9)
    fig.suptitle("\n".join(textwrap.wrap(e.text, 95)), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"path": str(path), "text": e.text, "full_text": full.text}


def run_tcav(model, test_x, test_y, seed: int) -> dict:
    from explanations.concepts.tcav import tcav_scores, texture_concepts

    t0 = time.perf_counter()
    sets = texture_concepts(28, n_per_set=50, n_random=10, seed=seed)
    out = {"classes": {}, "sets": {"n_per_set": 50, "n_random": 10, "random_kind": "mixed"}}
    for name in TCAV_CLASSES:
        k = FASHION_MNIST_CLASSES.index(name)
        inputs = test_x[test_y == k][:100]
        r = tcav_scores(model, "features.conv2", k, sets.concepts, sets.random, inputs, seed=seed)
        out["classes"][name] = r.as_dict()
        print(r.summary(), file=sys.stderr)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=FASHION_MNIST_DIR)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--items", type=int, default=60000, help="first N training images")
    parser.add_argument("--mode", default="joint", choices=["joint", "sequential", "independent"])
    parser.add_argument("--concept-weight", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-tcav", action="store_true")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--png", default=None, help="render the example explanation here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    splits = idx_dataset_read(args.dir)
    train_x, train_y = (a[: args.items] for a in splits["train"])
    test_x, test_y = splits["test"]
    times = {"load": round(time.perf_counter() - t0, 1)}

    def progress(done: int, total: int, message: str) -> None:
        if done == total or done % max(1, total // 10) == 0:
            print(f"  {message}: {done}/{total}", file=sys.stderr)

    table = FASHION_MNIST_ATTRIBUTES
    config = CBMConfig(
        epochs=args.epochs, mode=args.mode, concept_weight=args.concept_weight, seed=args.seed
    )
    t0 = time.perf_counter()
    cbm = train_cbm(train_x, train_y, table, config, progress=progress)
    times["cbm_train"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    result_cbm = evaluate(cbm, test_x, test_y, table)
    acts, probs = predict_concepts(cbm, test_x)
    times["cbm_eval"] = round(time.perf_counter() - t0, 1)

    examples = {}
    preds = probs.argmax(1)
    for k, name in enumerate(FASHION_MNIST_CLASSES):
        hits = np.flatnonzero((test_y == k) & (preds == k))
        if len(hits):
            e = explain(cbm, test_x[hits[0]], max_concepts=3)
            examples[name] = {"test_index": int(hits[0]), "text": e.text}

    report: dict = {
        "benchmark": "concept-bottleneck model (explanations.concepts.cbm) on Fashion-MNIST",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "loadavg_1min_before": round(load_before, 2),
        },
        "config": config.as_dict(),
        "attribute_table": {
            "concepts": list(table.concepts),
            "rows": {
                c: [n for n, v in zip(table.concepts, row, strict=True) if v]
                for c, row in zip(table.classes, table.matrix, strict=True)
            },
            "note": "hand-made, class-level (FASHION_MNIST_ATTRIBUTES); concept accuracy is "
            "measured against the same class-level labels, not per-image annotations",
        },
        "items": {"train": int(len(train_y)), "test": int(len(test_y))},
        "cbm": {
            "class_accuracy": result_cbm["class_accuracy"],
            "mean_concept_accuracy": result_cbm["mean_concept_accuracy"],
            "concept_accuracy": result_cbm["concept_accuracy"],
            "truncated_agreement": truncated_agreement(cbm, acts),
            "examples_max_concepts_3": examples,
        },
    }
    if not args.no_baseline:
        t0 = time.perf_counter()
        plain = train_model(
            train_x,
            train_y,
            10,
            TrainConfig(epochs=args.epochs, seed=args.seed),
            progress=progress,
        )
        times["baseline_train"] = round(time.perf_counter() - t0, 1)
        probs, _ = predict(plain, test_x)
        report["baseline_small_cnn"] = {"class_accuracy": float((probs.argmax(1) == test_y).mean())}
        report["cbm"]["class_accuracy_minus_baseline"] = round(
            result_cbm["class_accuracy"] - report["baseline_small_cnn"]["class_accuracy"], 4
        )
        if not args.no_tcav:
            report["tcav_small_cnn"] = run_tcav(plain, test_x, test_y, args.seed)
    if args.png:
        report["figure"] = render(cbm, test_x[0], Path(args.png))
    report["seconds"] = times
    report["machine"]["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
