"""Simulation-based power analysis for a study design (Arnold et al., "Simulation methods to
estimate design power", BMC Med Res Methodol 2011): draw many data sets from a response model
(:func:`studies.simulation.simulate_responses`), run the planned test on each, and report the
share that reaches significance, with a Wilson interval for that share.

Tests: with two or more conditions, Fisher's exact test of accuracy in the first two
conditions (pooled responses); with one condition, the exact binomial test of accuracy
against chance. Pooling ignores that answers of one participant are correlated; with a
participant-level random effect the power is lower, so treat the estimate as an upper bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from scipy import stats

from analysis.stats import wilson_interval
from studies.simulation import ResponseModel, simulate_responses


def design_test_p(frame: pd.DataFrame) -> float:
    """The p-value of the planned test on one data set (columns ``condition``,
    ``is_correct``, ``chance``); 1.0 for an empty one."""
    if frame.empty:
        return 1.0
    conditions = list(dict.fromkeys(frame["condition"]))
    if len(conditions) >= 2:
        a = frame[frame["condition"] == conditions[0]]["is_correct"]
        b = frame[frame["condition"] == conditions[1]]["is_correct"]
        table = [[int(a.sum()), int((~a).sum())], [int(b.sum()), int((~b).sum())]]
        return float(stats.fisher_exact(table).pvalue)
    k, n = int(frame["is_correct"].sum()), len(frame)
    return float(stats.binomtest(k, n, float(frame["chance"].iloc[0])).pvalue)


def power_simulation(
    study,
    rm: ResponseModel,
    n_participants: Sequence[int],
    *,
    task: str | None = None,
    n_sims: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Estimated power per sample size.

    Args:
        study: the study whose design (arms, trials, orders) is simulated.
        rm: the response model (the effect to detect).
        n_participants: sample sizes (participants in total, all arms), each >= 1.
        task: restrict the test to one task type (default: the study's first task).
        n_sims: simulated data sets per sample size (>= 1).
        alpha: significance level in (0, 1).

    Returns:
        One row per sample size: ``n_participants``, ``power`` (share of data sets with
        p < alpha, in [0, 1]), ``ci_low`` / ``ci_high`` (Wilson 95%), ``n_sims``.

    Raises:
        ValueError: ``n_sims`` < 1, ``alpha`` outside (0, 1) or a sample size < 1.
    """
    if n_sims < 1 or not 0 < alpha < 1 or any(n < 1 for n in n_participants):
        raise ValueError("need n_sims >= 1, 0 < alpha < 1 and sample sizes >= 1")
    task = task or study.spec["tasks"][0]["type"]
    rows = []
    for n in n_participants:
        hits = 0
        for s in range(n_sims):
            frame = simulate_responses(study, rm, n, seed=seed * 1_000_003 + n * 7919 + s)
            if design_test_p(frame[frame["task"] == task]) < alpha:
                hits += 1
        low, high = wilson_interval(hits, n_sims)
        rows.append(
            {
                "n_participants": n,
                "power": hits / n_sims,
                "ci_low": low,
                "ci_high": high,
                "n_sims": n_sims,
            }
        )
    return pd.DataFrame(rows)
