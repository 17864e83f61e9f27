#!/usr/bin/env python3
"""Full analysis report on a large simulated study: the target is under 10 s for 100k responses.

    .venv/bin/python benchmarks/analysis_report.py [--responses 100000] [--repeats 3] [--mixed]

Simulates a HIVE-style study in the tidy long format (one row per response): participants
answer ``trials`` main trials of two tasks under three explanation conditions, with a true
condition effect, per-participant and per-item variation on the log-odds scale (the
simulated response model of the platform), attention checks, excluded participants,
confidence ratings and response times. Then times :func:`analysis.report.build_report`
(every table: accuracy with Wilson intervals and binomial tests, per-participant t-tests,
pairwise chi-square/Fisher with Holm, logistic and mixed-effects logistic regression, power,
response times, confidence) and reports the median over ``--repeats`` with each section's
share. Pure pandas/statsmodels: no database.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def simulated_frame(responses: int, *, trials: int = 50, items: int = 200, seed: int = 0):
    """A tidy response table of about ``responses`` rows (see the module docstring)."""
    rng = np.random.default_rng(seed)
    participants = max(2, responses // trials)
    conditions = np.array(["none", "gradcam", "integrated_gradients"])
    effect = {"none": 0.0, "gradcam": 0.4, "integrated_gradients": 0.2}
    p_idx = np.repeat(np.arange(participants), trials)
    n = len(p_idx)
    condition = conditions[p_idx % 3]
    task = np.where(np.arange(n) % 2 == 0, "agreement", "distinction")
    chance = np.where(task == "agreement", 0.5, 0.25)
    item = rng.integers(0, items, n)
    model_correct = (item % 3) != 0
    u = rng.normal(0, 0.8, participants)[p_idx]
    v = rng.normal(0, 0.5, items)[item]
    eta = 0.3 + np.vectorize(effect.get)(condition) + u + v + 0.6 * model_correct
    correct = rng.random(n) < 1 / (1 + np.exp(-eta))
    kind = np.where(rng.random(n) < 0.04, "attention", "main")
    excluded = (rng.random(participants) < 0.03)[p_idx]
    return pd.DataFrame(
        {
            "participant": [f"P{i:06d}" for i in p_idx],
            "is_simulated": True,
            "excluded": excluded,
            "kind": kind,
            "task": task,
            "condition": condition,
            "method": np.where(condition == "none", "", condition),
            "item": [f"img{i:04d}" for i in item],
            "model_correct": model_correct,
            "is_correct": correct,
            "chance": chance,
            "confidence": rng.integers(1, 6, n),
            "rt_ms": rng.lognormal(8.0, 0.5, n).astype(int),
            "timed_out": rng.random(n) < 0.01,
        }
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--responses", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--mixed", action="store_true", help="also fit the mixed-effects model on every task"
    )
    a = p.parse_args(argv)
    from analysis.report import build_report

    frame = simulated_frame(a.responses)
    print(
        f"{len(frame)} responses, {frame['participant'].nunique()} participants, "
        f"{frame['item'].nunique()} items, 2 tasks x 3 conditions"
    )
    times, sections = [], []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        report = build_report(frame, title="benchmark", mixed=True if a.mixed else "auto")
        times.append(time.perf_counter() - t0)
        sections.append(report.timings)
    median = statistics.median(times)
    print(f"full report: median {median:.2f} s over {a.repeats} (target < 10 s)")
    print("| section | median s |")
    print("|---|--:|")
    for name in sections[0]:
        print(f"| {name} | {statistics.median(s[name] for s in sections):.2f} |")
    print(f"| **total** | **{median:.2f}** |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
