#!/usr/bin/env python3
"""Cross-fitting the label-curation CNN on Fashion-MNIST: accuracy, wall time, determinism.

    .venv/bin/python benchmarks/label_training.py [--dir /usr/share/datasets/fashion-mnist]
        [--folds 3] [--epochs 3] [--fold-epochs N] [--seed 0] [--threads 2]
        [--determinism-items 2000] [--out FILE.json]

Runs ``labeling.training.cross_fit`` on the 60,000 training images (K fold models, each trained
on the other folds and predicting its held-out fold, then a final model on all 60,000), and
reports as JSON:

* per-fold held-out accuracy against the given labels, and the accuracy of all out-of-sample
  predictions together;
* the final model's accuracy on the 10,000 test images (target >= 90 %);
* wall time of each phase (load, each fold = train + predict, final, embed, test) and of the
  whole cross_fit (target: a few minutes, <= 4 min on 2 cores);
* determinism: two ``train_model`` runs on the first ``--determinism-items`` training images
  with the same seed (bit-identical state dicts expected) and one with another seed
  (different expected), with the SHA-256 of each state dict.

The machine is shared: the 1-minute load average before and after is recorded with the times,
and so is the process CPU time of cross_fit (user + system, all threads): on an otherwise idle
machine the wall time is about that divided by the thread count. On a busy machine run it with
``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads that spin while waiting for a descheduled peer made
a 2-thread training step ~5x slower than a 1-thread one here (passive waiting: ~1.4x).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labeling.idx import FASHION_MNIST_DIR, idx_dataset_read  # noqa: E402
from labeling.training import TrainConfig, cross_fit, predict, train_model  # noqa: E402


def state_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=FASHION_MNIST_DIR)
    parser.add_argument("--folds", type=int, default=TrainConfig.folds)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--fold-epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--determinism-items", type=int, default=2000)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    config = TrainConfig(
        folds=args.folds, epochs=args.epochs, fold_epochs=args.fold_epochs, seed=args.seed
    )
    load_before = os.getloadavg()[0]

    t0 = time.perf_counter()
    splits = idx_dataset_read(args.dir)
    train_x, train_y = splits["train"]
    test_x, test_y = splits["test"]
    load_s = time.perf_counter() - t0

    last = [0.0]

    def progress(done: int, total: int, message: str) -> None:
        now = time.perf_counter()
        if now - last[0] >= 15 or done == total:
            last[0] = now
            print(f"  {done}/{total} {message}", file=sys.stderr, flush=True)

    cpu0 = time.process_time()
    result = cross_fit(train_x, train_y, 10, config, progress=progress)
    cross_fit_cpu_s = time.process_time() - cpu0

    t0 = time.perf_counter()
    test_probs, _ = predict(result.model, test_x)
    test_s = time.perf_counter() - t0
    test_accuracy = float((test_probs.argmax(1) == test_y).mean())
    oos_accuracy = float((result.pred_probs.argmax(1) == train_y).mean())
    print(f"cross_fit {result.seconds:.1f} s, test accuracy {test_accuracy:.4f}", file=sys.stderr)

    n = args.determinism_items
    det_config = replace(config, epochs=1)
    t0 = time.perf_counter()
    runs = [
        train_model(train_x[:n], train_y[:n], 10, det_config),
        train_model(train_x[:n], train_y[:n], 10, det_config),
        train_model(train_x[:n], train_y[:n], 10, replace(det_config, seed=config.seed + 1)),
    ]
    det_s = time.perf_counter() - t0
    hashes = [state_sha256(m) for m in runs]
    sa, sb = runs[0].state_dict(), runs[1].state_dict()
    identical = all(torch.equal(sa[k], sb[k]) for k in sa)

    report = {
        "benchmark": "label-training cross-fit (labeling.training.cross_fit) on Fashion-MNIST",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "loadavg_1min_before": round(load_before, 2),
            "loadavg_1min_after": round(os.getloadavg()[0], 2),
        },
        "config": config.as_dict(),
        "normalization_mean_255": config.normalization_mean_255,
        "normalization_std_255": config.normalization_std_255,
        "items": {"train": int(len(train_y)), "test": int(len(test_y))},
        "fold_accuracy": [round(a, 4) for a in result.fold_accuracy],
        "out_of_sample_accuracy": round(oos_accuracy, 4),
        "final_test_accuracy": round(test_accuracy, 4),
        "targets": {
            "final_test_accuracy_ge_0.90": test_accuracy >= 0.90,
            "cross_fit_le_240_s": result.seconds <= 240,
        },
        "seconds": {
            "load_idx": round(load_s, 2),
            **{k: round(v, 2) for k, v in result.phase_seconds.items()},
            "cross_fit_total": round(result.seconds, 2),
            "cross_fit_process_cpu": round(cross_fit_cpu_s, 2),
            "test_predict": round(test_s, 2),
        },
        "determinism": {
            "items": n,
            "epochs": det_config.epochs,
            "same_seed_bit_identical": identical and hashes[0] == hashes[1],
            "other_seed_differs": hashes[2] != hashes[0],
            "state_sha256": hashes,
            "seconds": round(det_s, 2),
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
