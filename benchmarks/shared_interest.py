#!/usr/bin/env python3
"""Shared Interest: our vectorised implementation against naive baselines, same run.

    .venv/bin/python benchmarks/shared_interest.py [--n 10000] [--size 224] [--chunk 250]
        [--repeats 3] [--k 1.0] [--seed 0] [--only NAME,NAME] [--json-out FILE]

Workload (Boggust et al., CHI 2022): for each of ``--n`` cases, a ``size x size`` ground-truth
mask and a float32 saliency map; binarise the map by mean + k·std and compute IoU, ground-truth
and saliency coverage. Data are seeded and made chunk by chunk (``--chunk`` cases at a time,
the same chunks in every repeat), so the whole 10,000 x 224 x 224 set (2 GB as float32 maps,
0.5 GB as bool masks) is never in memory at once; every implementation gets the same chunks
and only its own work on a chunk is timed (data generation is not). Before each
implementation runs on a chunk, a 64 MiB buffer is overwritten (untimed) so that none finds
the chunk in cache; the order of the implementations also rotates from chunk to chunk.

* Ground truth: one random axis-aligned box per case (the bounding boxes of ImageNet-style
  annotations), 1 % of cases empty (undefined coverages).
* Saliency: a random 7x7 grid upsampled to the image (like Grad-CAM on a 7x7 feature map) plus
  10 % pixel noise, float32; 0.5 % of maps constant (an empty saliency region).

Implementations (each written here from the reference package's published formulas, not
copied; reference: ``mitvis/shared-interest``, ``shared_interest/scoring_functions.py`` and
``shared_interest/util.py``):

* **ours**: ``analysis.stats.shared_interest.shared_interest_std`` (one cache-blocked pass: the
  float64 mean/std of each map, the comparison against the threshold, the three areas counted
  eight pixels at a time on the masks' bytes read as uint64 words).
* **ours (two steps)**: ``binarize_std`` (materialises the bool masks) then ``shared_interest``.
* **baseline A, per-case loop**: for each case in Python: normalise the map to [0, 1]
  (``(x - min) / (max - min)``), keep pixels ``>= mean + k·std`` as uint8 (the reference's
  ``binarize_std``), then ``|G ∩ S|`` as ``sum(G * S)``, ``|G ∪ S|`` as
  ``sum(logical_or(G, S))``, ``|G|``, ``|S|`` and the three ratios; each quantity once.
* **baseline A32**: baseline A in the maps' own float32, as the reference computes on float32
  maps (see below: its values are reported, not asserted).
* **baseline B, reference call structure**: what calling the reference package does, batched
  over the chunk as it is: ``binarize_std`` on the batch (normalise, mean + k·std, uint8),
  then one ``shared_interest(..., score=...)`` call per score, each checking that both arrays
  are binary (``np.isin(a, [0, 1]).all()``), taking ``np.abs`` of the saliency and computing
  its own intersection (``sum(G * S)``) and denominator.

Baselines A and B compute in float64 (``astype(np.float64)`` of each map): the reference computes
in the input dtype, and in float32 its normalised threshold is rounded to ~1e-7, which moves
a pixel to the other side of the threshold in a few maps per thousand; in float64 the
baselines and ours select the same pixels (checked: masks compared pixel by pixel in the first
repeat) and give identical coverages (asserted: ``np.array_equal(..., equal_nan=True)`` on all
three coverages and the three areas, every chunk, every repeat; A32: the number of cases
whose values differ is printed). The reference keeps ``>=``, ours ``>``; they differ only for
a pixel exactly equal to the threshold (none here).

Prints a Markdown table: median seconds over the repeats for all ``--n`` cases, cases/s, each
implementation's time divided by ours (target: baseline A / ours >= 10), whether its values
equal ours, and the seconds of each repeat; progress per repeat goes to stderr. ``--only``
keeps "ours" plus the named rows. Single-threaded
numpy throughout (no implementation here uses threads; BLAS is not involved).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.stats.shared_interest import (  # noqa: E402
    binarize_std,
    shared_interest,
    shared_interest_std,
)

FIELDS = (
    "iou_coverage",
    "ground_truth_coverage",
    "saliency_coverage",
    "intersection_area",
    "ground_truth_area",
    "saliency_area",
)


def make_chunk(seed: int, index: int, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk ``index`` of the seeded data: ``(ground truth (n, size, size) bool, saliency
    (n, size, size) float32)``; the same arguments always give the same arrays."""
    rng = np.random.default_rng([seed, index])
    gt = np.zeros((n, size, size), dtype=bool)
    corners = rng.integers(0, size, size=(n, 2, 2))
    for i in range(n):
        (y0, y1), (x0, x1) = np.sort(corners[i], axis=1)
        gt[i, y0 : y1 + 1, x0 : x1 + 1] = True
    gt[rng.random(n) < 0.01] = False
    grid = 7
    cell = -(-size // grid)
    coarse = rng.random((n, grid, grid), dtype=np.float32)
    saliency = np.repeat(np.repeat(coarse, cell, axis=1), cell, axis=2)[:, :size, :size]
    saliency = saliency + np.float32(0.1) * rng.random((n, size, size), dtype=np.float32)
    saliency[rng.random(n) < 0.005] = np.float32(0.25)
    return gt, np.ascontiguousarray(saliency, dtype=np.float32)


def _reference_binarize(saliency: np.ndarray, k: float) -> np.ndarray:
    """The reference ``binarize_std`` formula on a batch: min-max normalise each map to [0, 1],
    keep ``>= mean + k * std`` of the normalised map, as uint8 (a constant map: 0/0 = nan,
    nothing kept)."""
    x = saliency.astype(np.float64)
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = (x - lo) / (hi - lo)
    threshold = norm.mean(axis=(1, 2), keepdims=True) + k * norm.std(axis=(1, 2), keepdims=True)
    return (norm >= threshold).astype(np.uint8)


def baseline_per_case(gt: np.ndarray, saliency: np.ndarray, k: float) -> dict[str, np.ndarray]:
    """Baseline A: one case at a time, the reference formulas, each quantity once."""
    n = gt.shape[0]
    out = {name: np.empty(n) for name in FIELDS[:3]}
    areas = {name: np.empty(n, dtype=np.int64) for name in FIELDS[3:]}
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(n):
            x = saliency[i].astype(np.float64)
            lo, hi = x.min(), x.max()
            norm = (x - lo) / (hi - lo)
            s = (norm >= norm.mean() + k * norm.std()).astype(np.uint8)
            g = gt[i]
            inter = np.sum(g * s)
            union = np.sum(np.logical_or(g, s))
            g_area = np.sum(g)
            s_area = np.sum(s)
            out["iou_coverage"][i] = inter / union
            out["ground_truth_coverage"][i] = inter / g_area
            out["saliency_coverage"][i] = inter / s_area
            areas["intersection_area"][i] = inter
            areas["ground_truth_area"][i] = g_area
            areas["saliency_area"][i] = s_area
    return {**out, **areas}


def baseline_per_case_float32(
    gt: np.ndarray, saliency: np.ndarray, k: float
) -> dict[str, np.ndarray]:
    """Baseline A in the maps' own float32, as the reference computes on float32 maps. Its
    threshold is rounded to float32 precision, so a few maps per thousand keep one pixel more
    or less than in float64: reported, not asserted."""
    n = gt.shape[0]
    out = {name: np.empty(n) for name in FIELDS[:3]}
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(n):
            x = saliency[i]
            lo, hi = x.min(), x.max()
            norm = (x - lo) / (hi - lo)
            s = (norm >= norm.mean() + k * norm.std()).astype(np.uint8)
            g = gt[i]
            inter = np.sum(g * s)
            out["iou_coverage"][i] = inter / np.sum(np.logical_or(g, s))
            out["ground_truth_coverage"][i] = inter / np.sum(g)
            out["saliency_coverage"][i] = inter / np.sum(s)
    return out


def _reference_score(gt: np.ndarray, saliency: np.ndarray, score: str) -> np.ndarray:
    """One reference ``shared_interest(gt, saliency, score)`` call: input checks, then the
    scoring function on ``abs(saliency)``."""
    if not np.isin(gt, [0, 1]).all():
        raise ValueError("ground truth must be binary")
    if gt.shape != saliency.shape:
        raise ValueError("shapes differ")
    if not np.isin(saliency, [0, 1]).all():
        raise ValueError("saliency must be binary for this score")
    s = np.abs(saliency)
    inter = np.sum(gt * s, axis=(1, 2))
    if score == "iou_coverage":
        denominator = np.sum(np.logical_or(gt, s), axis=(1, 2))
    elif score == "ground_truth_coverage":
        denominator = np.sum(gt, axis=(1, 2))
    else:
        denominator = np.sum(s, axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / denominator


def baseline_reference_calls(
    gt: np.ndarray, saliency: np.ndarray, k: float
) -> dict[str, np.ndarray]:
    """Baseline B: the reference package's call structure on the whole chunk (batched as it
    is), one call per score. Areas are not part of its output; they are taken from the same
    masks outside the three score calls only so that the comparison can check them."""
    masks = _reference_binarize(saliency, k)
    out = {score: _reference_score(gt, masks, score) for score in FIELDS[:3]}
    out["_masks"] = masks
    return out


def ours(gt: np.ndarray, saliency: np.ndarray, k: float) -> dict[str, np.ndarray]:
    scores = shared_interest_std(gt, saliency, k)
    return {name: getattr(scores, name) for name in FIELDS}


def ours_two_steps(gt: np.ndarray, saliency: np.ndarray, k: float) -> dict[str, np.ndarray]:
    masks, how = binarize_std(saliency, k)
    scores = shared_interest(gt, masks, binarization=how)
    return {name: getattr(scores, name) for name in FIELDS}


NOT_ASSERTED = {"baseline A32: per-case loop in float32"}

IMPLEMENTATIONS = {
    "ours": ours,
    "ours (two steps)": ours_two_steps,
    "baseline A: per-case loop": baseline_per_case,
    "baseline A32: per-case loop in float32": baseline_per_case_float32,
    "baseline B: reference call structure": baseline_reference_calls,
}


EVICT_BYTES = 64 << 20  # twice this machine's 32 MiB L3


def evict(scratch: np.ndarray) -> None:
    """Write over a buffer twice the size of the last-level cache, so that every
    implementation starts on a chunk that is in memory, not in cache (untimed)."""
    scratch.fill(0 if scratch[0] else 1)


def _differing(result: dict, reference: dict) -> int:
    """Cases where any coverage/area in ``result`` differs from ``reference`` (NaN = NaN)."""
    differ = np.zeros(len(reference["iou_coverage"]), dtype=bool)
    for field in FIELDS:
        if field in result:
            a = np.asarray(result[field], dtype=np.float64)
            b = np.asarray(reference[field], dtype=np.float64)
            differ |= ~((a == b) | (np.isnan(a) & np.isnan(b)))
    return int(differ.sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000, help="cases (default 10000)")
    parser.add_argument("--size", type=int, default=224, help="image side (default 224)")
    parser.add_argument("--chunk", type=int, default=250, help="cases per chunk (default 250)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    parser.add_argument("--k", type=float, default=1.0, help="std multiplier (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated implementation names")
    parser.add_argument("--json-out", type=Path, help="also write the raw timings as JSON")
    args = parser.parse_args(argv)

    names = list(IMPLEMENTATIONS)
    if args.only:
        names = [name for name in names if name in args.only.split(",") or name == "ours"]
    chunks = [
        (index, min(args.chunk, args.n - start))
        for index, start in enumerate(range(0, args.n, args.chunk))
    ]
    scratch = np.empty(EVICT_BYTES, dtype=np.uint8)
    totals = {name: [] for name in names}
    mask_pixels_differing = 0
    differing = dict.fromkeys(names, 0)
    defined = undefined = 0
    started = time.perf_counter()
    for repeat in range(args.repeats):
        elapsed = dict.fromkeys(names, 0.0)
        for index, size in chunks:
            gt, saliency = make_chunk(args.seed, index, size, args.size)
            order = names[index % len(names) :] + names[: index % len(names)]
            results = {}
            for name in order:
                evict(scratch)
                t0 = time.perf_counter()
                results[name] = IMPLEMENTATIONS[name](gt, saliency, args.k)
                elapsed[name] += time.perf_counter() - t0
            for name in names:
                if name == "ours":
                    continue
                diff = _differing(results[name], results["ours"])
                if name in NOT_ASSERTED:
                    differing[name] += diff if repeat == 0 else 0
                elif diff:
                    raise AssertionError(f"{name}: {diff} cases differ from ours (chunk {index})")
            if repeat == 0:
                masks, _ = binarize_std(saliency, args.k)
                reference_masks = results.get("baseline B: reference call structure", {}).get(
                    "_masks"
                )
                if reference_masks is None:
                    reference_masks = _reference_binarize(saliency, args.k)
                mask_pixels_differing += int(
                    np.count_nonzero(masks != reference_masks.astype(bool))
                )
                iou = results["ours"]["iou_coverage"]
                gtc = results["ours"]["ground_truth_coverage"]
                sc = results["ours"]["saliency_coverage"]
                ok = ~(np.isnan(iou) | np.isnan(gtc) | np.isnan(sc))
                defined += int(ok.sum())
                undefined += int((~ok).sum())
        for name in names:
            totals[name].append(elapsed[name])
        print(
            f"repeat {repeat + 1}/{args.repeats}: "
            + ", ".join(f"{name} {elapsed[name]:.2f} s" for name in names),
            file=sys.stderr,
            flush=True,
        )

    medians = {name: statistics.median(values) for name, values in totals.items()}
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nShared Interest, {args.n} cases of {args.size}x{args.size}, binarise by mean + "
        f"{args.k:g}·std, float32 saliency, chunks of {args.chunk}; median of {args.repeats} "
        f"repeats; numpy {np.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}.\n"
    )
    print("| implementation | median s | cases/s | time ÷ ours | values vs ours | repeats (s) |")
    print("|---|--:|--:|--:|---|---|")
    for name in names:
        runs = ", ".join(f"{value:.2f}" for value in totals[name])
        ratio = medians[name] / medians["ours"]
        if name == "ours":
            same = "–"
        elif name in NOT_ASSERTED:
            same = f"{differing[name]} of {args.n} cases differ"
        else:
            same = "identical (asserted)"
        print(
            f"| {name} | {medians[name]:.3f} | {args.n / medians[name]:,.0f} | "
            f"{ratio:.1f}× | {same} | {runs} |"
        )
    print(
        f"\nIdentical values: IoU, ground-truth and saliency coverage and the three areas "
        f"equal (NaN = NaN) for all {args.n} cases in every repeat, every asserted row "
        f"({defined} with all coverages defined, {undefined} undefined: empty region); "
        f"binarised masks differing from the reference formula's: "
        f"{mask_pixels_differing} of {args.n * args.size * args.size:,} pixels. "
        f"Peak RSS {peak_mib:,.0f} MiB; wall time {time.perf_counter() - started:.0f} s."
    )
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "args": {
                        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                    },
                    "seconds": totals,
                    "median_seconds": medians,
                    "mask_pixels_differing": mask_pixels_differing,
                    "cases_differing": differing,
                    "defined": defined,
                    "undefined": undefined,
                    "peak_rss_mib": peak_mib,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
