"""Tests and models for human-evaluation results: participants against chance, conditions
against each other, and (mixed-effects) logistic regression of correctness.

Every function takes plain numbers or DataFrames (no Django) and returns a small result that
says when a statistic is undefined and why, instead of raising or returning a silent NaN: a
fit that fails or is degenerate (perfect separation, a condition at 0% or 100%, random
effects of zero variance) comes back with ``warnings`` and a documented ``fallback``.

Sources
-------
* One-sample t-test of per-participant accuracy against chance: the analysis of HIVE (Kim,
  Meister, Ramaswamy, Fong & Russakovsky, "HIVE: Evaluating the Human Interpretability of
  Visual Explanations", ECCV 2022), ``scipy.stats.ttest_1samp``.
* Pearson's chi-square test of independence without continuity correction (Pearson 1900;
  Agresti, *Categorical Data Analysis*, 3rd ed., Sec. 3.2) and Fisher's exact test (Fisher
  1935; Agresti Sec. 3.5) when an expected count is under 5 (Cochran 1954's rule).
* Effect sizes: risk difference with the Newcombe (1998) hybrid score interval ("method 10"),
  odds ratio with the Woolf logit interval (Haldane-Anscombe +0.5 when a cell is 0), Cohen's
  h (Cohen 1988, Sec. 6.2).
* Holm (1979) step-down correction across comparisons
  (``statsmodels.stats.multitest.multipletests``).
* Logistic regression by maximum likelihood (``statsmodels`` GLM, binomial family, logit link).
* Mixed-effects logistic regression with crossed random intercepts for participants and items
  (Baayen, Davidson & Bates 2008), fitted by variational Bayes
  (``statsmodels.genmod.bayes_mixed_glm.BinomialBayesMixedGLM``, Rue, Martino & Chopin 2009
  style approximate inference); fixed effects are posterior means with posterior SDs.
* Power of the two-proportion comparison from Cohen's h (``statsmodels`` ``NormalIndPower``).
* Spearman rank correlation (Spearman 1904) between human accuracy and automatic metrics.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as _stats

__all__ = [
    "ComparisonResult",
    "ModelFit",
    "TTestResult",
    "analytic_power",
    "cohens_h",
    "compare_conditions",
    "compare_proportions",
    "holm_adjust",
    "human_automatic_correlation",
    "logistic_regression",
    "mixed_logistic_regression",
    "one_sample_t_test",
    "participant_accuracy",
    "required_sample_size",
]


# -- participants against chance ---------------------------------------------------------------


@dataclass(frozen=True)
class TTestResult:
    """A one-sample t-test.

    Attributes:
        n: number of values (participants).
        mean: their mean (accuracy in [0, 1] for per-participant accuracies).
        popmean: the value tested against (chance).
        t / df / p_value: statistic, degrees of freedom (n - 1), two-sided p in [0, 1];
            None when ``defined`` is False.
        ci_low / ci_high: 95% t interval of the mean (None when undefined).
        cohens_d: (mean - popmean) / SD (None when undefined).
        defined: False when the test has no meaning (fewer than 2 values, or no variance).
        reason: why it is undefined ('' when defined).
    """

    n: int
    mean: float | None
    popmean: float
    t: float | None = None
    df: int | None = None
    p_value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    cohens_d: float | None = None
    defined: bool = True
    reason: str = ""


def participant_accuracy(
    frame: pd.DataFrame, *, participant: str = "participant", correct: str = "is_correct"
) -> pd.DataFrame:
    """Accuracy of each participant: columns participant, n, n_correct, accuracy (float in
    [0, 1]), chance (mean chance of their trials, when a ``chance`` column exists).

    Raises:
        ValueError: a named column is missing.
    """
    missing = [c for c in (participant, correct) if c not in frame.columns]
    if missing:
        raise ValueError(f"participant_accuracy: missing column(s) {missing}")
    work = frame[[participant]].copy()
    work["_c"] = frame[correct].astype(float)
    agg = {"n": ("_c", "size"), "n_correct": ("_c", "sum"), "accuracy": ("_c", "mean")}
    if "chance" in frame.columns:
        work["_chance"] = pd.to_numeric(frame["chance"], errors="coerce")
        agg["chance"] = ("_chance", "mean")
    out = work.groupby(participant, sort=True).agg(**agg).reset_index()
    out["n_correct"] = out["n_correct"].astype("int64")
    return out


def one_sample_t_test(values, popmean: float, *, confidence: float = 0.95) -> TTestResult:
    """Two-sided one-sample t-test of ``values`` against ``popmean`` (HIVE's test of
    per-participant accuracy against chance).

    Args:
        values: 1-D numbers (e.g. per-participant accuracies in [0, 1]); NaN is dropped.
        popmean: the reference value (e.g. chance 0.5).

    Returns:
        :class:`TTestResult`; undefined (with the reason) for fewer than 2 values or zero
        variance (every participant equally accurate: t would be +-inf or 0/0).

    Raises:
        ValueError: ``values`` is not 1-D numeric, or ``confidence`` outside (0, 1).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {x.shape}")
    x = x[~np.isnan(x)]
    n = int(x.size)
    mean = float(x.mean()) if n else None
    if n < 2:
        return TTestResult(n, mean, popmean, defined=False, reason=f"{n} value(s); need >= 2")
    sd = float(x.std(ddof=1))
    if np.ptp(x) == 0:  # (x.std() of equal floats can be 1e-17, not 0)
        return TTestResult(
            n,
            mean,
            popmean,
            defined=False,
            reason="no variance: every value is the same, so the t statistic is undefined",
        )
    res = _stats.ttest_1samp(x, popmean)
    half = _stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return TTestResult(
        n=n,
        mean=mean,
        popmean=popmean,
        t=float(res.statistic),
        df=n - 1,
        p_value=float(res.pvalue),
        ci_low=mean - half,
        ci_high=mean + half,
        cohens_d=(mean - popmean) / sd,
    )


# -- two conditions --------------------------------------------------------------------------


@dataclass(frozen=True)
class ComparisonResult:
    """Accuracy of condition ``a`` against condition ``b``.

    Attributes:
        a, b: labels; k_a/n_a, k_b/n_b: correct and total counts.
        test: "chi-square" (Pearson, no continuity correction) or "fisher" (exact, two-sided;
            used when an expected count is under 5).
        statistic: chi-square statistic (None for Fisher); p_value in [0, 1];
            p_holm: Holm-adjusted p across the comparisons it was reported with (None alone).
        risk_difference: accuracy_a - accuracy_b in [-1, 1], with its Newcombe hybrid score
            95% interval rd_low / rd_high.
        odds_ratio (> 0) with Woolf 95% interval or_low / or_high; +0.5 is added to every cell
            when one is 0 (Haldane-Anscombe), noted in ``warnings``.
        cohens_h: 2 asin(sqrt(p_a)) - 2 asin(sqrt(p_b)).
        warnings: what was adjusted or is degenerate.
    """

    a: str
    b: str
    k_a: int
    n_a: int
    k_b: int
    n_b: int
    test: str
    statistic: float | None
    p_value: float
    risk_difference: float
    rd_low: float
    rd_high: float
    odds_ratio: float
    or_low: float
    or_high: float
    cohens_h: float
    p_holm: float | None = None
    warnings: tuple[str, ...] = ()


def cohens_h(p_a: float, p_b: float) -> float:
    """Cohen's h between two proportions in [0, 1] (Cohen 1988, eq. 6.2.1):
    ``2 asin(sqrt(p_a)) - 2 asin(sqrt(p_b))``; 0.2 / 0.5 / 0.8 are small / medium / large.

    Raises:
        ValueError: a proportion outside [0, 1].
    """
    for p in (p_a, p_b):
        if not 0 <= p <= 1:
            raise ValueError(f"proportions must be in [0, 1], got {p}")
    return 2 * math.asin(math.sqrt(p_a)) - 2 * math.asin(math.sqrt(p_b))


def compare_proportions(
    k_a: int, n_a: int, k_b: int, n_b: int, *, a: str = "a", b: str = "b"
) -> ComparisonResult:
    """Compare two proportions (k correct of n) with a chi-square or Fisher exact test and
    effect sizes (see :class:`ComparisonResult`).

    Raises:
        ValueError: negative counts, k > n, or n == 0 on either side.
    """
    for k, n, name in ((k_a, n_a, a), (k_b, n_b, b)):
        if n <= 0 or k < 0 or k > n:
            raise ValueError(f"condition {name!r}: need 0 <= k <= n and n > 0, got {k}/{n}")
    from statsmodels.stats.proportion import confint_proportions_2indep

    table = np.array([[k_a, n_a - k_a], [k_b, n_b - k_b]], dtype=float)
    notes: list[str] = []
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    if (table.sum(0) == 0).any():
        # Everyone right (or wrong) in both conditions: no test can tell them apart.
        test, statistic, p = "fisher", None, 1.0
        notes.append("every answer has the same outcome in both conditions: p = 1")
    elif (expected < 5).any():
        test, statistic = "fisher", None
        p = float(_stats.fisher_exact(table.astype(int))[1])
    else:
        test = "chi-square"
        chi2, p, _, _ = _stats.chi2_contingency(table, correction=False)
        statistic, p = float(chi2), float(p)
    p_a, p_b = k_a / n_a, k_b / n_b
    rd_low, rd_high = confint_proportions_2indep(k_a, n_a, k_b, n_b, method="newcomb")
    cells = table
    if (table == 0).any():
        cells = table + 0.5
        notes.append("a cell is 0: odds ratio with +0.5 in every cell (Haldane-Anscombe)")
    log_or = math.log(cells[0, 0] * cells[1, 1] / (cells[0, 1] * cells[1, 0]))
    se = math.sqrt((1 / cells).sum())
    for name, k, n in ((a, k_a, n_a), (b, k_b, n_b)):
        if k in (0, n):
            notes.append(f"{name!r} is at {100 * k / n:.0f}%: a logistic fit would separate")
    return ComparisonResult(
        a=a,
        b=b,
        k_a=k_a,
        n_a=n_a,
        k_b=k_b,
        n_b=n_b,
        test=test,
        statistic=statistic,
        p_value=p,
        risk_difference=p_a - p_b,
        rd_low=float(rd_low),
        rd_high=float(rd_high),
        odds_ratio=math.exp(log_or),
        or_low=math.exp(log_or - 1.959963984540054 * se),
        or_high=math.exp(log_or + 1.959963984540054 * se),
        cohens_h=cohens_h(p_a, p_b),
        warnings=tuple(notes),
    )


def holm_adjust(p_values) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, same order as given, each in [0, 1]."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return p
    from statsmodels.stats.multitest import multipletests

    return multipletests(p, method="holm")[1]


def compare_conditions(
    frame: pd.DataFrame, *, by: str = "condition", correct: str = "is_correct"
) -> pd.DataFrame:
    """Every pair of levels of ``by`` compared on accuracy (:func:`compare_proportions`),
    with Holm-adjusted p-values across the pairs.

    Returns:
        One row per pair (in the levels' sorted order): a, b, k_a, n_a, k_b, n_b, test,
        statistic, p_value, p_holm, risk_difference, rd_low, rd_high, odds_ratio, or_low,
        or_high, cohens_h, warnings (joined text). Empty with those columns for < 2 levels.

    Raises:
        ValueError: a named column is missing.
    """
    missing = [c for c in (by, correct) if c not in frame.columns]
    if missing:
        raise ValueError(f"compare_conditions: missing column(s) {missing}")
    counts = (
        frame.assign(_c=frame[correct].astype(int))
        .groupby(by, sort=True)["_c"]
        .agg(["sum", "size"])
    )
    results = [
        compare_proportions(
            int(counts.at[x, "sum"]),
            int(counts.at[x, "size"]),
            int(counts.at[y, "sum"]),
            int(counts.at[y, "size"]),
            a=str(x),
            b=str(y),
        )
        for x, y in itertools.combinations(counts.index, 2)
    ]
    columns = [f for f in ComparisonResult.__dataclass_fields__]
    if not results:
        return pd.DataFrame(columns=columns)
    out = pd.DataFrame([r.__dict__ for r in results], columns=columns)
    out["p_holm"] = holm_adjust(out["p_value"])
    out["warnings"] = out["warnings"].map("; ".join)
    return out


# -- regression models -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFit:
    """A fitted model of correctness.

    Attributes:
        method: what was fitted ("logistic", "mixed logistic (VB)"), or the fallback used.
        formula: the fixed-effects formula.
        coefficients: one row per term: term, estimate (log-odds), se, z, p_value,
            odds_ratio, ci_low, ci_high (odds-ratio 95% interval). Empty when nothing could
            be fitted.
        random_effects: mixed models: one row per grouping factor: group, sd (posterior mean
            of the random-intercept SD on the log-odds scale), n_levels.
        n: observations used.
        warnings: degenerate data or fit problems, in words.
        fallback: '' when the requested model was fitted; otherwise what was reported
            instead and why (see the functions).
    """

    method: str
    formula: str
    coefficients: pd.DataFrame
    n: int
    random_effects: pd.DataFrame = field(default_factory=pd.DataFrame)
    warnings: tuple[str, ...] = ()
    fallback: str = ""


_COEF_COLUMNS = ["term", "estimate", "se", "z", "p_value", "odds_ratio", "ci_low", "ci_high"]


def _coefficients(names, estimate, se) -> pd.DataFrame:
    estimate, se = np.asarray(estimate, float), np.asarray(se, float)
    z = estimate / se
    return pd.DataFrame(
        {
            "term": list(names),
            "estimate": estimate,
            "se": se,
            "z": z,
            "p_value": 2 * _stats.norm.sf(np.abs(z)),
            "odds_ratio": np.exp(estimate),
            "ci_low": np.exp(estimate - 1.959963984540054 * se),
            "ci_high": np.exp(estimate + 1.959963984540054 * se),
        },
        columns=_COEF_COLUMNS,
    )


def _separation(frame: pd.DataFrame, outcome: str, factors: list[str]) -> list[str]:
    """Levels of categorical predictors where every outcome is the same (0% or 100%): the
    maximum-likelihood estimate of their coefficient is infinite."""
    notes = []
    for f in factors:
        if f not in frame.columns:
            continue
        rate = frame.groupby(f)[outcome].mean()
        for level, value in rate.items():
            if value in (0.0, 1.0):
                notes.append(f"{f}={level} is at {100 * value:.0f}% correct (perfect separation)")
    return notes


def _prepare(frame: pd.DataFrame, outcome: str, needed: list[str]) -> pd.DataFrame:
    missing = [c for c in [outcome, *needed] if c not in frame.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}")
    data = frame[[outcome, *needed]].dropna().copy()
    data[outcome] = data[outcome].astype(float)
    if not data[outcome].isin([0.0, 1.0]).all():
        raise ValueError(f"{outcome!r} must be 0/1 or bool")
    return data


def _formula_parts(formula: str) -> tuple[str, list[str]]:
    """The outcome column and the predictor columns (``C(x)`` unwrapped) of a formula."""
    from patsy import ModelDesc

    desc = ModelDesc.from_formula(formula)
    outcome = desc.lhs_termlist[0].factors[0].code
    factors = sorted(
        {f.code.removeprefix("C(").removesuffix(")") for t in desc.rhs_termlist for f in t.factors}
    )
    return outcome, factors


def _not_fitted(method: str, formula: str, n: int, notes, fallback: str) -> ModelFit:
    return ModelFit(
        method,
        formula,
        pd.DataFrame(columns=_COEF_COLUMNS),
        n,
        warnings=tuple(notes),
        fallback=fallback,
    )


def _plain_instead(
    data: pd.DataFrame, formula: str, notes, fallback: str, random_effects=None
) -> ModelFit:
    """The plain logistic fit, reported in place of a mixed model that could not be."""
    plain = logistic_regression(data, formula)
    return ModelFit(
        plain.method,
        formula,
        plain.coefficients,
        plain.n,
        random_effects=pd.DataFrame() if random_effects is None else random_effects,
        warnings=(*notes, *plain.warnings),
        fallback=fallback,
    )


_SEPARATED = "not fitted (infinite estimates); use the exact pairwise comparisons"


def logistic_regression(
    frame: pd.DataFrame, formula: str = "is_correct ~ C(condition)"
) -> ModelFit:
    """Logistic regression of correctness by maximum likelihood (statsmodels GLM, binomial).

    Fallback: when a categorical predictor has a level at 0% or 100% (perfect separation) or
    the fit does not converge, the coefficients would be infinite: the fit is not reported
    (``coefficients`` empty), ``warnings`` name the levels and ``fallback`` says to use the
    exact pairwise comparisons (:func:`compare_conditions`), which stay valid.

    Raises:
        ValueError: missing columns or a non-binary outcome.
    """
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    outcome, factors = _formula_parts(formula)
    data = _prepare(frame, outcome, factors)
    notes = _separation(data, outcome, factors)
    if data[outcome].nunique() < 2:
        notes.append("every answer has the same outcome")
    if notes:
        return _not_fitted("logistic", formula, len(data), notes, _SEPARATED)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = smf.glm(formula, data, family=sm.families.Binomial()).fit()
        except (np.linalg.LinAlgError, ValueError) as exc:
            return _not_fitted(
                "logistic",
                formula,
                len(data),
                [f"fit failed: {exc}"],
                "not fitted; use the exact pairwise comparisons",
            )
    notes = [str(w.message) for w in caught if "converge" in str(w.message).lower()]
    coefficients = _coefficients(fit.params.index, fit.params.values, fit.bse.values)
    return ModelFit("logistic", formula, coefficients, int(fit.nobs), warnings=tuple(notes))


def mixed_logistic_regression(
    frame: pd.DataFrame,
    formula: str = "is_correct ~ C(condition)",
    *,
    groups: tuple[str, ...] = ("participant", "item"),
    singular_sd: float = 0.2,
) -> ModelFit:
    """Mixed-effects logistic regression with a random intercept per level of each of
    ``groups`` (crossed participants and items), by variational Bayes (statsmodels
    ``BinomialBayesMixedGLM.fit_vb`` with its default priors: fixed effects N(0, 2^2), log
    random-effect SDs N(0, 1)).

    Fallbacks, each with a warning: a level at 0% / 100% (separation) → the pairwise exact
    comparisons (no coefficients); a grouping factor with fewer than 2 levels is left out; all
    random-effect SDs under ``singular_sd`` (default 0.2 on the log-odds scale, where it moves a
    50% accuracy by about 5 points; with no participant or item variation the variational
    posterior shrinks toward 0 but not to it) → the plain :func:`logistic_regression` is
    reported, which it then equals; a failed fit → plain logistic regression.

    Returns:
        :class:`ModelFit` with posterior means as ``estimate`` and posterior SDs as ``se``
        (``z`` and ``p_value`` are the normal approximation), and ``random_effects``.

    Raises:
        ValueError: missing columns or a non-binary outcome.
    """
    outcome, factors = _formula_parts(formula)
    data = _prepare(frame, outcome, [*factors, *groups])
    notes = _separation(data, outcome, factors)
    if notes or data[outcome].nunique() < 2:
        notes = notes or ["every answer has the same outcome"]
        return _not_fitted("mixed logistic (VB)", formula, len(data), notes, _SEPARATED)
    used = [g for g in groups if data[g].nunique() >= 2]
    notes = [
        f"{g} has fewer than 2 levels: no random effect for it" for g in groups if g not in used
    ]
    if not used:
        return _plain_instead(
            data, formula, notes, "no grouping factor with 2+ levels: plain logistic regression"
        )
    try:
        model = _mixed_model(data, formula, outcome, used)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # L-BFGS-B: the same optimum as the default BFGS (to 4 decimals on our tests)
            # without a dense Hessian over every random effect, 5x faster at 10k answers.
            fit = model.fit_vb(fit_method="L-BFGS-B")
    except (np.linalg.LinAlgError, ValueError) as exc:
        return _plain_instead(
            data,
            formula,
            [*notes, f"mixed fit failed: {exc}"],
            "mixed fit failed: plain logistic regression",
        )
    sd = np.exp(fit.vcp_mean)  # posterior mean of log SD -> SD
    random = pd.DataFrame(
        {"group": list(model.vcp_names), "sd": sd, "n_levels": [data[g].nunique() for g in used]}
    )
    if (sd < singular_sd).all():
        return _plain_instead(
            data,
            formula,
            [*notes, f"singular fit: every random-effect SD < {singular_sd}"],
            "singular random effects: plain logistic regression (equal to it)",
            random_effects=random,
        )
    coefficients = _coefficients(model.fep_names, fit.fe_mean, fit.fe_sd)
    return ModelFit(
        "mixed logistic (VB)",
        formula,
        coefficients,
        len(data),
        random_effects=random,
        warnings=tuple(notes),
    )


def _mixed_model(data: pd.DataFrame, formula: str, outcome: str, groups: list[str]):
    """The statsmodels model with one random-intercept block per grouping factor, its
    indicator matrix built sparse directly from the factor codes (patsy's dense dummies of
    2,000 participants take 20 s and gigabytes at 50k answers)."""
    import patsy
    import scipy.sparse as sp
    from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

    rhs = formula.split("~", 1)[1]
    exog = patsy.dmatrix(rhs, data, return_type="dataframe")
    blocks, ident = [], []
    for index, group in enumerate(groups):
        codes, levels = pd.factorize(data[group], sort=True)
        rows = np.arange(len(codes))
        shape = (len(codes), len(levels))
        blocks.append(sp.csr_matrix((np.ones(len(codes)), (rows, codes)), shape=shape))
        ident += [index] * len(levels)
    return BinomialBayesMixedGLM(
        data[outcome].to_numpy(dtype=float),
        exog.to_numpy(),
        sp.hstack(blocks).tocsr(),
        np.array(ident),
        fep_names=list(exog.columns),
        vcp_names=list(groups),
    )


# -- power -------------------------------------------------------------------------------------


def analytic_power(p_a: float, p_b: float, n_per_group: int, *, alpha: float = 0.05) -> float:
    """Power in [0, 1] of the two-sided two-proportion z-test with ``n_per_group`` answers per
    condition to detect accuracies ``p_a`` vs ``p_b`` (normal approximation on Cohen's h;
    Cohen 1988, ch. 6).

    Raises:
        ValueError: proportions outside [0, 1] or n_per_group < 2.
    """
    from statsmodels.stats.power import NormalIndPower

    if n_per_group < 2:
        raise ValueError("n_per_group must be >= 2")
    h = abs(cohens_h(p_a, p_b))
    if h == 0:
        return alpha
    return float(NormalIndPower().power(h, nobs1=n_per_group, alpha=alpha, ratio=1.0))


def required_sample_size(
    p_a: float, p_b: float, *, power: float = 0.8, alpha: float = 0.05
) -> float:
    """Answers per condition (not rounded) for the two-sided two-proportion z-test to reach
    ``power`` (Cohen 1988, Table 6.4.1 is this rounded up).

    Raises:
        ValueError: equal proportions (no difference to detect) or values out of range.
    """
    from statsmodels.stats.power import NormalIndPower

    h = abs(cohens_h(p_a, p_b))
    if h == 0:
        raise ValueError("p_a == p_b: no difference to detect")
    return float(NormalIndPower().solve_power(h, power=power, alpha=alpha, ratio=1.0))


# -- human vs automatic ------------------------------------------------------------------------


def human_automatic_correlation(
    frame: pd.DataFrame,
    *,
    human: str = "accuracy",
    metrics: tuple[str, ...] = ("deletion_auc", "insertion_auc"),
    by: str = "method",
) -> pd.DataFrame:
    """Spearman correlation, per ``by`` group (e.g. method), between human accuracy per item
    and each automatic metric per item (Spearman 1904; ``scipy.stats.spearmanr``).

    Args:
        frame: one row per (method, item): ``human`` (float) and the ``metrics`` columns;
            NaN rows are left out pairwise.

    Returns:
        Columns by, metric, n, rho (in [-1, 1]), p_value, note; rho and p are NaN with a note
        when undefined (fewer than 3 pairs, or a constant column).
    """
    rows = []
    for level, group in frame.groupby(by, sort=True):
        for metric in metrics:
            if metric not in group.columns:
                continue
            pair = group[[human, metric]].dropna()
            n = len(pair)
            if n < 3:
                rows.append((level, metric, n, np.nan, np.nan, f"{n} item(s); need >= 3"))
            elif pair[human].nunique() < 2 or pair[metric].nunique() < 2:
                rows.append((level, metric, n, np.nan, np.nan, "a constant column"))
            else:
                rho, p = _stats.spearmanr(pair[human], pair[metric])
                rows.append((level, metric, n, float(rho), float(p), ""))
    return pd.DataFrame(rows, columns=[by, "metric", "n", "rho", "p_value", "note"])
