"""Comparisons, regression models, power and correlations, each against a known value."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.stats.comparisons import (
    analytic_power,
    cohens_h,
    compare_conditions,
    compare_proportions,
    holm_adjust,
    human_automatic_correlation,
    logistic_regression,
    mixed_logistic_regression,
    one_sample_t_test,
    participant_accuracy,
    required_sample_size,
)


def test_one_sample_t_test_matches_the_hand_computed_value():
    # mean 0.7, SD sqrt(0.025) = 0.1581, SE 0.0707: t = 0.2 / 0.0707 = 2.8284 on 4 df,
    # two-sided p = 0.0474 (t tables), 95% CI 0.7 +- 2.7764 * 0.0707.
    r = one_sample_t_test([0.6, 0.7, 0.8, 0.9, 0.5], 0.5)
    assert r.defined and (r.n, r.df) == (5, 4)
    assert r.t == pytest.approx(2 * math.sqrt(2), rel=1e-12)
    assert r.p_value == pytest.approx(0.04742, abs=5e-5)
    assert (r.ci_low, r.ci_high) == pytest.approx((0.50368, 0.89632), abs=5e-5)
    assert r.cohens_d == pytest.approx(0.2 / math.sqrt(0.025))


@pytest.mark.parametrize(
    "values, reason",
    [([0.7], "1 value"), ([], "0 value"), ([0.8, 0.8, 0.8], "no variance")],
)
def test_one_sample_t_test_is_undefined_with_a_reason_not_nan(values, reason):
    r = one_sample_t_test(values, 0.5)
    assert not r.defined and r.t is None and r.p_value is None and reason in r.reason


def test_participant_accuracy_per_participant():
    frame = pd.DataFrame(
        {
            "participant": ["P1", "P1", "P1", "P2", "P2"],
            "is_correct": [True, False, True, True, True],
            "chance": [0.5] * 5,
        }
    )
    out = participant_accuracy(frame)
    assert out.to_dict("list") == {
        "participant": ["P1", "P2"],
        "n": [3, 2],
        "n_correct": [2, 2],
        "accuracy": [pytest.approx(2 / 3), 1.0],
        "chance": [0.5, 0.5],
    }


def test_chi_square_textbook_table():
    # 20/50 vs 30/50: expected 25 in every cell, chi2 = 4 * 25/25 = 4.0, p = P(chi2_1 > 4).
    r = compare_proportions(20, 50, 30, 50)
    assert r.test == "chi-square" and r.statistic == pytest.approx(4.0)
    assert r.p_value == pytest.approx(0.0455003, abs=1e-6)
    assert r.odds_ratio == pytest.approx((20 * 20) / (30 * 30))
    # Woolf interval: log OR +- 1.96 * sqrt(1/20 + 1/30 + 1/30 + 1/20)
    se = math.sqrt(1 / 20 + 1 / 30 + 1 / 30 + 1 / 20)
    assert r.or_low == pytest.approx(math.exp(math.log(4 / 9) - 1.959964 * se), rel=1e-6)


def test_fisher_exact_for_small_counts_is_the_lady_tasting_tea():
    # Fisher (1935): 3 of 4 cups right each way, two-sided p = 34/70 = 0.4857.
    r = compare_proportions(3, 4, 1, 4)
    assert r.test == "fisher" and r.statistic is None
    assert r.p_value == pytest.approx(34 / 70)


def test_risk_difference_interval_is_newcombe_method_10():
    # Newcombe (1998, Statistics in Medicine 17:873-890), Table II example (a): 56/70 vs
    # 48/80, difference 0.2000, hybrid score interval (method 10) 0.0524 to 0.3339.
    r = compare_proportions(56, 70, 48, 80)
    assert r.risk_difference == pytest.approx(0.2)
    assert (r.rd_low, r.rd_high) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_a_condition_at_100_percent_is_reported_with_a_corrected_odds_ratio():
    r = compare_proportions(10, 10, 5, 10)
    assert r.test == "fisher" and r.p_value == pytest.approx(0.0325077, abs=1e-6)
    assert any("Haldane" in w for w in r.warnings) and any("100%" in w for w in r.warnings)
    assert r.odds_ratio == pytest.approx((10.5 * 5.5) / (0.5 * 5.5))
    everyone_right = compare_proportions(10, 10, 8, 8)
    assert everyone_right.p_value == 1.0 and everyone_right.risk_difference == 0.0


def test_holm_correction_textbook():
    # Holm (1979): sorted p 0.01, 0.03, 0.04 times 3, 2, 1, made monotone: 0.03, 0.06, 0.06.
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_compare_conditions_reports_every_pair_with_holm():
    rows = []
    for condition, k, n in (("a", 40, 50), ("b", 25, 50), ("c", 30, 50)):
        rows += [{"condition": condition, "is_correct": i < k} for i in range(n)]
    out = compare_conditions(pd.DataFrame(rows))
    assert list(zip(out["a"], out["b"], strict=True)) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert out["p_holm"].tolist() == pytest.approx(holm_adjust(out["p_value"]).tolist())
    assert out.loc[0, "risk_difference"] == pytest.approx(0.3)
    assert compare_conditions(pd.DataFrame(rows[:50])).empty  # one level: nothing to compare


def test_logistic_regression_on_a_2x2_table_gives_the_log_odds_ratio():
    # With one binary predictor the ML coefficient is the sample log odds ratio and its SE is
    # Woolf's sqrt(1/a + 1/b + 1/c + 1/d) (Agresti 2013, Sec. 5.1).
    rows = []
    for condition, k, n in (("a", 30, 50), ("b", 20, 50)):
        rows += [{"condition": condition, "is_correct": i < k} for i in range(n)]
    fit = logistic_regression(pd.DataFrame(rows))
    coef = fit.coefficients.set_index("term")
    assert fit.fallback == "" and fit.n == 100
    assert coef.loc["Intercept", "estimate"] == pytest.approx(math.log(30 / 20))
    assert coef.loc["C(condition)[T.b]", "estimate"] == pytest.approx(math.log(400 / 900))
    assert coef.loc["C(condition)[T.b]", "se"] == pytest.approx(
        math.sqrt(2 / 30 + 2 / 20), rel=1e-6
    )


def test_logistic_regression_with_perfect_separation_falls_back_without_crashing():
    rows = [{"condition": "a", "is_correct": True}] * 20
    rows += [{"condition": "b", "is_correct": i < 10} for i in range(20)]
    fit = logistic_regression(pd.DataFrame(rows))
    assert fit.coefficients.empty and "pairwise" in fit.fallback
    assert any("condition=a is at 100%" in w for w in fit.warnings)


def _crossed(seed: int, *, participant_sd: float, item_sd: float, effect: float):
    rng = np.random.default_rng(seed)
    n_p, n_i = 40, 30
    u, v = rng.normal(0, participant_sd, n_p), rng.normal(0, item_sd, n_i)
    rows = []
    for p in range(n_p):
        condition = "b" if p % 2 else "a"
        for i in range(n_i):
            eta = -0.2 + (effect if condition == "b" else 0.0) + u[p] + v[i]
            rows.append(
                {
                    "participant": f"P{p}",
                    "item": f"I{i}",
                    "condition": condition,
                    "is_correct": bool(rng.random() < 1 / (1 + math.exp(-eta))),
                }
            )
    return pd.DataFrame(rows)


def test_mixed_logistic_regression_recovers_the_simulated_variance_components():
    frame = _crossed(0, participant_sd=1.0, item_sd=0.6, effect=1.0)
    fit = mixed_logistic_regression(frame)
    assert fit.method == "mixed logistic (VB)" and fit.fallback == ""
    sd = fit.random_effects.set_index("group")["sd"]
    assert sd["participant"] == pytest.approx(1.0, abs=0.35)
    assert sd["item"] == pytest.approx(0.6, abs=0.3)
    effect = fit.coefficients.set_index("term").loc["C(condition)[T.b]", "estimate"]
    assert effect == pytest.approx(1.0, abs=0.6)
    # Ignoring the participants' variation shrinks the effect towards 0 (non-collapsibility
    # of the odds ratio), so the plain fit is smaller:
    plain = logistic_regression(frame).coefficients.set_index("term")
    assert plain.loc["C(condition)[T.b]", "estimate"] < effect


def test_mixed_logistic_regression_without_random_variation_reports_the_plain_fit():
    frame = _crossed(1, participant_sd=0.0, item_sd=0.0, effect=0.8)
    fit = mixed_logistic_regression(frame)
    assert "singular" in fit.fallback and fit.method == "logistic"
    pd.testing.assert_frame_equal(fit.coefficients, logistic_regression(frame).coefficients)


def test_mixed_logistic_regression_degenerate_inputs_warn_instead_of_crashing():
    frame = _crossed(2, participant_sd=0.5, item_sd=0.5, effect=0.5)
    at_100 = frame.assign(is_correct=frame["is_correct"] | (frame["condition"] == "a"))
    fit = mixed_logistic_regression(at_100)
    assert fit.coefficients.empty and "pairwise" in fit.fallback
    one_item = frame.assign(item="I0")
    fit = mixed_logistic_regression(one_item)
    assert any("item has fewer than 2 levels" in w for w in fit.warnings)
    assert list(fit.random_effects["group"]) in (["participant"], [])


def test_cohens_h_and_sample_size_match_cohens_table():
    # Cohen (1988), Table 6.4.1: h = 0.30, power 0.80, two-sided alpha 0.05 -> n = 175 per
    # group (n = ((1.96 + 0.8416) / 0.30)^2 = 87.2... per arcsine unit: 174.4, rounded up).
    p_b = 0.5
    p_a = math.sin(math.asin(math.sqrt(p_b)) + 0.15) ** 2  # h = 0.30 exactly
    assert cohens_h(p_a, p_b) == pytest.approx(0.30)
    assert math.ceil(required_sample_size(p_a, p_b)) == 175
    assert analytic_power(p_a, p_b, 175) == pytest.approx(0.80, abs=0.005)
    assert analytic_power(0.5, 0.5, 50) == 0.05
    with pytest.raises(ValueError, match="no difference"):
        required_sample_size(0.5, 0.5)


def test_human_automatic_spearman_textbook_example():
    # Wikipedia "Spearman's rank correlation coefficient", IQ vs hours of TV per week:
    # rho = -29/165 = -0.1758, p = 0.6272.
    iq = [106, 100, 86, 101, 99, 103, 97, 113, 112, 110]
    tv = [7, 27, 2, 50, 28, 29, 20, 12, 6, 17]
    frame = pd.DataFrame({"method": "gradcam", "accuracy": iq, "deletion_auc": tv})
    out = human_automatic_correlation(frame, metrics=("deletion_auc",))
    assert out.loc[0, "rho"] == pytest.approx(-29 / 165)
    assert out.loc[0, "p_value"] == pytest.approx(0.6272, abs=1e-4)
    few = human_automatic_correlation(frame.head(2), metrics=("deletion_auc",))
    assert math.isnan(few.loc[0, "rho"]) and "need >= 3" in few.loc[0, "note"]
