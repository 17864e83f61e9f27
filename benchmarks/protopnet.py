#!/usr/bin/env python3
"""ProtoPNet vs the plain SmallCNN on Fashion-MNIST: test accuracy and wall time per stage.

    .venv/bin/python benchmarks/protopnet.py [--dir /usr/share/datasets/fashion-mnist]
        [--epochs 3] [--warm-epochs 0] [--last-epochs 20] [--last-lr 1e-4] [--cnn-epochs 3]
        [--train-items N] [--test-items N] [--seed 0] [--threads 1]
        [--figure docs/prototype-explanation.png] [--figure-index 0] [--json] [--out FILE.json]

Trains ``labeling.training.SmallCNN`` (``train_model``, ``--cnn-epochs``) and a ProtoPNet
(``explanations.prototypes.protopnet``) on the same training images with the same seed and
reports the test accuracy of each. The ProtoPNet is trained with the staged functions that
``train_protopnet`` composes (identical weights), so the accuracy after each stage is measured:
``--epochs`` joint epochs, the push, ``--last-epochs`` last-layer epochs. Also reported: how far
the push moved the prototypes, the largest distance of a pushed prototype to its recorded
training patch when that image is run alone (0 up to float32 rounding), the largest
``|class evidence - logit|`` over test images, and the L1 mass left on wrong-class
connections. ``--figure`` renders one test image's top-3 prototypes. ``--json`` prints the JSON
report on stdout (otherwise a short summary); ``--out`` also writes it to a file.

Times are wall seconds on a shared machine: the 1-minute load average before and after is
recorded with them, and the torch thread count (default 1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explanations.prototypes.protopnet import (  # noqa: E402
    ProtoPNetConfig,
    build_protopnet,
    explain,
    protopnet_predict,
    push_prototypes,
    train_joint,
    train_last_layer,
)
from labeling.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, idx_dataset_read  # noqa: E402
from labeling.training import TrainConfig, _to_input, predict, train_model  # noqa: E402


def accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    probs, _ = protopnet_predict(model, images)
    return float((probs.argmax(1) == labels).mean())


@torch.no_grad()
def pushed_distances(model, train_x: np.ndarray) -> np.ndarray:
    """Distance of each prototype to its recorded patch, the source image run alone."""
    out = []
    for j, (i, h, w) in enumerate(model.prototype_source.tolist()):
        x = _to_input(train_x[i : i + 1], model.grey, model.mean, model.std)
        out.append(float(model.forward_details(x)["distance_maps"][0, j, h, w]))
    return np.array(out)


def render(model, explanation, test_image, test_label, train_x, train_y, index, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    names = FASHION_MNIST_CLASSES
    items = explanation.prototypes
    fig, axes = plt.subplots(
        len(items),
        3,
        figsize=(9.0, 2.9 * len(items) + 0.9),
        gridspec_kw={"width_ratios": [1, 1, 1.25]},
    )
    axes = np.atleast_2d(axes)
    k = explanation.explained_class
    fig.suptitle(
        f"Test image #{index} (true: {names[test_label]}), predicted {names[explanation.predicted]}"
        f"\nlogit {explanation.logits[k]:.2f} = sum over all {model.num_prototypes} prototypes of "
        f"similarity x weight; top {len(items)} shown",
        fontsize=10,
    )

    def outline(ax, box, colour):
        x0, y0, x1, y1 = box
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=2, ec=colour))

    rf = explanation.receptive_field
    box_note = (
        f"receptive field of the\ncell ({rf.size[0]} x {rf.size[1]} px, clipped)"
        if rf is not None
        else "the cell scaled to\nthe image (approximate)"
    )
    for row, p in zip(axes, items, strict=True):
        src = train_x[p.source_index]
        row[0].imshow(src, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        outline(row[0], p.source_box, "yellow")
        source_name = names[train_y[p.source_index]]
        row[0].set_title(
            f"prototype {p.prototype}: training image\n#{p.source_index} ({source_name}), "
            f"cell ({p.source_h}, {p.source_w})",
            fontsize=8,
        )
        row[1].imshow(test_image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        overlay = row[1].imshow(p.activation_map, cmap="jet", alpha=0.45, interpolation="bilinear")
        outline(row[1], p.test_box, "white")
        row[1].set_title(
            f"test image: similarity map\nbest cell ({p.test_h}, {p.test_w})", fontsize=8
        )
        fig.colorbar(overlay, ax=row[1], fraction=0.046, pad=0.04)
        row[2].axis("off")
        row[2].text(
            0.0,
            0.5,
            f"this looks like that\n\n"
            f"prototype class: {names[p.prototype_class]}\n"
            f"similarity:   {p.similarity:.3f}\n"
            f"  (distance {p.distance:.4f})\n"
            f"weight:       {p.weight:.3f}\n"
            f"contribution: {p.contribution:.3f}\n\n"
            f"boxes: {box_note}",
            family="monospace",
            fontsize=8.5,
            va="center",
        )
        for ax in row[:2]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    defaults = ProtoPNetConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=FASHION_MNIST_DIR)
    parser.add_argument("--epochs", type=int, default=defaults.joint_epochs, help="joint epochs")
    parser.add_argument("--warm-epochs", type=int, default=defaults.warm_epochs)
    parser.add_argument("--last-epochs", type=int, default=defaults.last_epochs)
    parser.add_argument("--last-lr", type=float, default=defaults.last_lr)
    parser.add_argument("--cnn-epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--train-items", type=int, default=None, help="first N training images")
    parser.add_argument("--test-items", type=int, default=None, help="first N test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--figure", default=None, help="render one explanation to this PNG")
    parser.add_argument("--figure-index", type=int, default=0, help="test image to explain")
    parser.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    parser.add_argument("--out", default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    seconds: dict[str, float] = {}

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    splits = idx_dataset_read(args.dir)
    train_x, train_y = splits["train"]
    test_x, test_y = splits["test"]
    train_x, train_y = train_x[: args.train_items], train_y[: args.train_items]
    test_x, test_y = test_x[: args.test_items], test_y[: args.test_items]
    seconds["load_idx"] = time.perf_counter() - t0

    cnn_config = TrainConfig(epochs=args.cnn_epochs, seed=args.seed)
    t0 = time.perf_counter()
    cnn = train_model(train_x, train_y, 10, cnn_config)
    seconds["cnn_train"] = time.perf_counter() - t0
    probs, _ = predict(cnn, test_x)
    cnn_accuracy = float((probs.argmax(1) == test_y).mean())
    log(f"SmallCNN: {seconds['cnn_train']:.1f} s, test accuracy {cnn_accuracy:.4f}")

    config = replace(
        defaults,
        joint_epochs=args.epochs,
        warm_epochs=args.warm_epochs,
        last_epochs=args.last_epochs,
        last_lr=args.last_lr,
        seed=args.seed,
    )
    stages: dict[str, float] = {}
    model = build_protopnet(10, config)
    t0 = time.perf_counter()
    train_joint(model, train_x, train_y, config)
    seconds["protopnet_joint"] = time.perf_counter() - t0
    stages["after_joint"] = accuracy(model, test_x, test_y)
    log(f"ProtoPNet joint: {seconds['protopnet_joint']:.1f} s, {stages['after_joint']:.4f}")
    t0 = time.perf_counter()
    record = push_prototypes(model, train_x, train_y, batch_size=config.push_batch_size)
    seconds["protopnet_push"] = time.perf_counter() - t0
    stages["after_push"] = accuracy(model, test_x, test_y)
    log(f"ProtoPNet push: {seconds['protopnet_push']:.1f} s, {stages['after_push']:.4f}")
    t0 = time.perf_counter()
    train_last_layer(model, train_x, train_y, config)
    seconds["protopnet_last_layer"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stages["after_last_layer"] = accuracy(model, test_x, test_y)
    seconds["protopnet_test_predict"] = time.perf_counter() - t0
    log(
        f"ProtoPNet last layer: {seconds['protopnet_last_layer']:.1f} s, "
        f"{stages['after_last_layer']:.4f}"
    )
    seconds["protopnet_train_total"] = (
        seconds["protopnet_joint"] + seconds["protopnet_push"] + seconds["protopnet_last_layer"]
    )

    after_push = pushed_distances(model, train_x)
    n_check = min(200, len(test_x))
    t0 = time.perf_counter()
    gaps = []
    for i in range(n_check):
        e = explain(model, test_x[i], top_k=3)
        gaps.append(float(np.abs(e.class_evidence - e.logits).max()))
    seconds["explain_per_image"] = (time.perf_counter() - t0) / max(1, n_check)
    weight = model.last_layer.weight.detach()
    wrong = 1 - model.prototype_class_identity.t()

    if args.figure:
        i = args.figure_index
        e = explain(model, test_x[i], top_k=3)
        render(model, e, test_x[i], int(test_y[i]), train_x, train_y, i, Path(args.figure))
        log(f"figure: {args.figure}")

    report = {
        "benchmark": "ProtoPNet (explanations.prototypes.protopnet) vs SmallCNN on Fashion-MNIST",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "loadavg_1min_before": round(load_before, 2),
            "loadavg_1min_after": round(os.getloadavg()[0], 2),
        },
        "items": {"train": int(len(train_y)), "test": int(len(test_y))},
        "smallcnn": {"config": cnn_config.as_dict(), "test_accuracy": round(cnn_accuracy, 4)},
        "protopnet": {
            "config": config.as_dict(),
            "prototypes": model.num_prototypes,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "test_accuracy": {k: round(v, 4) for k, v in stages.items()},
            "push": {
                "distance_moved_mean": round(float(record.distance_before.mean()), 5),
                "distance_moved_max": round(float(record.distance_before.max()), 5),
                "max_distance_to_source_patch_after_push": float(after_push.max()),
                "source_class_matches": bool((record.source_label == record.prototype_class).all()),
                "distinct_source_images": int(len(set(record.train_index.tolist()))),
            },
            "max_abs_class_evidence_minus_logit": max(gaps) if gaps else None,
            "explained_test_images": n_check,
            "wrong_class_weight_l1_mean": round(
                float((weight.abs() * wrong).sum() / wrong.sum()), 4
            ),
        },
        "smallcnn_parameters": int(sum(p.numel() for p in cnn.parameters())),
        "accuracy_gap_points": round(100 * (cnn_accuracy - stages["after_last_layer"]), 2),
        "seconds": {k: round(v, 3 if k == "explain_per_image" else 2) for k, v in seconds.items()},
        "figure": args.figure,
    }
    text = json.dumps(report, indent=2)
    if args.json:
        print(text)
    else:
        print(
            f"SmallCNN  {cnn_accuracy:.4f} ({seconds['cnn_train']:.0f} s)\n"
            f"ProtoPNet {stages['after_last_layer']:.4f} ({seconds['protopnet_train_total']:.0f} s;"
            f" joint {stages['after_joint']:.4f}, push {stages['after_push']:.4f})"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
