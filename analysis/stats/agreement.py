"""Inter-rater agreement: Krippendorff's alpha and Fleiss' kappa.

When several participants (raters, coders, observers) judge the same items (units) -- which of
two explanations is more helpful, which class an image shows, how convincing a map is on a 1-5
scale -- these coefficients say how far their judgements agree beyond what chance would give:
1 is perfect agreement, 0 is agreement at chance level, below 0 is systematic disagreement.

* Krippendorff's alpha (:func:`krippendorff_alpha`) allows any number of raters, missing
  ratings (not every rater rates every unit) and nominal, ordinal or interval data. It is the
  coefficient to report in general (Hayes & Krippendorff 2007).
* Fleiss' kappa (:func:`fleiss_kappa`) is for nominal data with the *same number* of ratings
  on every unit (the raters may differ from unit to unit).
* :func:`rater_agreement` gives both for the results page; :func:`reliability_matrix` turns a
  long frame (one row per rating) into the raters x units matrix that alpha is defined on.

Every result is an :class:`AgreementResult`. The coefficients are ratios of disagreements
(``alpha = 1 - D_o / D_e``), so some data leave them undefined: no unit with two ratings (no
pairs to compare), or every rating the same value (``0 / 0``). Such data give
``defined=False``, ``value=None`` and a ``reason`` -- never a crash and never a silent NaN.
Input that cannot be rated at all (no ratings, malformed arrays, unknown levels) raises
``ValueError``.

Sources
-------
* Krippendorff, K. (2011). "Computing Krippendorff's Alpha-Reliability". Departmental Papers
  (ASC) 43, Annenberg School for Communication, University of Pennsylvania -- the coincidence
  matrix form of alpha and the difference functions for nominal, ordinal and interval data.
* Hayes, A. F. & Krippendorff, K. (2007). "Answering the Call for a Standard Reliability
  Measure for Coding Data". Communication Methods and Measures 1(1):77-89.
* Fleiss, J. L. (1971). "Measuring nominal scale agreement among many raters". Psychological
  Bulletin 76(5):378-382.
* Computation: the ``krippendorff`` package (Castro, "Fast Krippendorff",
  https://github.com/pln-fing-udelar/fast-krippendorff) for alpha and
  ``statsmodels.stats.inter_rater.fleiss_kappa`` for kappa; this module only validates the
  input, decides the undefined cases and reports the counts.

This module imports no Django so it can be used from notebooks, Celery tasks and tests alike.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import krippendorff as _krippendorff
import numpy as np
import pandas as pd
from statsmodels.stats.inter_rater import fleiss_kappa as _sm_fleiss_kappa

__all__ = [
    "AGREEMENT_LEVELS",
    "AgreementResult",
    "RaterAgreement",
    "fleiss_kappa",
    "krippendorff_alpha",
    "rater_agreement",
    "reliability_matrix",
]

#: Levels of measurement accepted by :func:`krippendorff_alpha` and :func:`rater_agreement`.
AGREEMENT_LEVELS: tuple[str, ...] = ("nominal", "ordinal", "interval")

_NUMERIC_KINDS = frozenset({"integer", "floating", "mixed-integer-float", "boolean", "decimal"})

_NO_PAIRS = (
    "no unit was rated by two or more raters, so there are no pairable values to compare and "
    "the coefficient is undefined"
)
_ALPHA_ONE_VALUE = (
    "every pairable rating (on units rated two or more times) is the same value: observed "
    "agreement is perfect but chance agreement is too, so the coefficient is undefined (0/0)"
)
_KAPPA_ONE_VALUE = (
    "every rating is the same category: observed agreement is perfect but chance agreement is "
    "too, so the coefficient is undefined (0/0)"
)
_ONE_RATING_PER_UNIT = (
    "every unit has exactly one rating, so there are no pairs of ratings to compare and the "
    "coefficient is undefined"
)


@dataclass(frozen=True)
class AgreementResult:
    """One agreement coefficient together with what it was computed from.

    Attributes:
        statistic: ``"krippendorff_alpha"`` or ``"fleiss_kappa"``.
        value: the coefficient (a float ``<= 1``; 1 perfect agreement, 0 chance, negative
            systematic disagreement; the lower limit depends on the data), or ``None`` when
            ``defined`` is false. Never NaN.
        n_units: units (items) with at least one rating.
        n_raters: for alpha, raters with at least one rating; for Fleiss' kappa, the number of
            ratings per unit (Fleiss does not need the same raters on every unit).
        n_pairable: ratings that enter the coefficient -- Krippendorff's ``n``, the ratings on
            units with at least two ratings (a lone rating on a unit has nothing to be compared
            with). For Fleiss' kappa ``n_units * n_raters``, or 0 with one rating per unit.
        defined: whether the coefficient exists for these data.
        reason: why it is undefined; ``""`` when ``defined`` is true.
        level: level of measurement, ``"nominal"``, ``"ordinal"`` or ``"interval"`` (always
            ``"nominal"`` for Fleiss' kappa).
    """

    statistic: str
    value: float | None
    n_units: int
    n_raters: int
    n_pairable: int
    defined: bool
    reason: str
    level: str


@dataclass(frozen=True)
class RaterAgreement:
    """What :func:`rater_agreement` returns: alpha always, Fleiss' kappa where it applies.

    Attributes:
        alpha: Krippendorff's alpha at the requested level.
        kappa: Fleiss' kappa, or ``None`` when it does not apply (level not nominal, or units
            with different numbers of ratings); ``kappa_note`` then says why.
        kappa_note: ``""`` when ``kappa`` is present, else the reason it is absent.
    """

    alpha: AgreementResult
    kappa: AgreementResult | None
    kappa_note: str


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------


def _check_level(level: object) -> str:
    if not isinstance(level, str) or level not in AGREEMENT_LEVELS:
        raise ValueError(f"level must be one of {AGREEMENT_LEVELS}, got {level!r}")
    return level


def _is_long_frame(ratings: object, rater: Hashable, unit: Hashable, value: Hashable) -> bool:
    return isinstance(ratings, pd.DataFrame) and all(
        col in ratings.columns for col in (rater, unit, value)
    )


def _encode(
    raw: np.ndarray, categories: Sequence[Any] | None, level: str | None, where: str
) -> np.ndarray:
    """Turn a 2-D array of ratings (any dtype) into float64 with NaN for missing.

    With ``categories`` each rating becomes its position in ``categories`` (0 .. K-1). Without,
    numeric ratings stay as they are and labels (strings etc.) become their position among the
    sorted distinct labels -- only meaningful for nominal data, so ``level`` other than
    ``"nominal"`` (``None`` means "not known yet") rejects labels. ``where`` prefixes messages.
    """
    if raw.dtype.kind in "biuf":
        values = raw.astype("float64")
        if np.isinf(values).any():
            raise ValueError(f"{where}: ratings must be finite (NaN marks a missing rating)")
        present = ~np.isnan(values)
        raw = values
    else:
        present = ~pd.isna(raw)
    observed = raw[present]

    if categories is not None:
        if level == "interval":
            raise ValueError(
                f"{where}: categories map labels to ranks 0..K-1 for nominal or ordinal data; "
                "interval alpha needs the numeric scale values themselves"
            )
        index = pd.Index(list(categories))
        if len(index) == 0:
            raise ValueError(f"{where}: categories must not be empty")
        if not index.is_unique:
            raise ValueError(f"{where}: categories must not repeat, got {list(categories)!r}")
        codes = index.get_indexer(pd.Index(observed, dtype=object))
        if (codes < 0).any():
            unknown = pd.unique(pd.Series(observed[codes < 0], dtype=object))[:5].tolist()
            raise ValueError(
                f"{where}: ratings not among categories {list(index)!r}, e.g. {unknown!r}"
            )
        out = np.full(raw.shape, np.nan)
        out[present] = codes
        return out

    if raw.dtype.kind == "f":
        return raw
    kind = pd.api.types.infer_dtype(observed, skipna=True) if observed.size else "floating"
    if kind in _NUMERIC_KINDS:
        out = np.full(raw.shape, np.nan)
        out[present] = observed.astype("float64")
        if np.isinf(out).any():
            raise ValueError(f"{where}: ratings must be finite (NaN marks a missing rating)")
        return out
    if level is not None and level != "nominal":
        raise ValueError(
            f"{where}: {level} data given as labels ({kind}) need the ordered category list: "
            "pass categories=[lowest, ..., highest]"
            if level == "ordinal"
            else f"{where}: interval alpha needs numeric ratings, got labels ({kind})"
        )
    _, codes = np.unique(observed.astype(str), return_inverse=True)
    out = np.full(raw.shape, np.nan)
    out[present] = codes
    return out


def _long_to_raw(
    frame: pd.DataFrame, rater: Hashable, unit: Hashable, value: Hashable, where: str
) -> tuple[np.ndarray, pd.Index, pd.Index]:
    """Pivot a long frame to an object matrix (raters x units); None marks a missing rating."""
    missing = [col for col in (rater, unit, value) if col not in frame.columns]
    if missing:
        raise ValueError(
            f"{where}: missing required column(s) {missing!r}; "
            f"available columns: {list(map(str, frame.columns))!r}"
        )
    for col in (rater, unit):
        if frame[col].isna().any():
            raise ValueError(f"{where}: column {col!r} has missing values")
    rated = frame.loc[frame[value].notna(), [rater, unit, value]]
    if len(rated.index) == 0:
        raise ValueError(
            f"{where}: no ratings (the frame has no rows with a non-missing {value!r})"
        )
    dup = rated.duplicated(subset=[rater, unit], keep=False)
    if dup.any():
        pairs = rated.loc[dup, [rater, unit]].drop_duplicates().head(5)
        examples = list(pairs.itertuples(index=False, name=None))
        raise ValueError(
            f"{where}: a rater rated the same unit more than once, e.g. (rater, unit) "
            f"{examples!r}; keep one rating per rater and unit"
        )

    def factorize(col: Hashable) -> tuple[np.ndarray, pd.Index]:
        try:
            codes, uniques = pd.factorize(rated[col], sort=True)
        except TypeError:  # labels of mixed, unorderable types: keep first-seen order
            codes, uniques = pd.factorize(rated[col], sort=False)
        return codes, pd.Index(uniques, name=col)

    r_codes, raters = factorize(rater)
    u_codes, units = factorize(unit)
    raw = np.full((len(raters), len(units)), None, dtype=object)
    raw[r_codes, u_codes] = rated[value].to_numpy(dtype=object)
    return raw, raters, units


def _as_matrix(ratings: object, where: str) -> np.ndarray:
    """A 2-D (raters, units) array from an array-like or a wide DataFrame."""
    if ratings is None:
        raise ValueError(f"{where}: ratings must not be None")
    raw = ratings.to_numpy() if isinstance(ratings, pd.DataFrame) else np.asarray(ratings)
    if raw.ndim != 2:
        raise ValueError(
            f"{where}: ratings must be 2-D (raters, units) or a long DataFrame with the rater, "
            f"unit and value columns; got an array of shape {raw.shape}"
        )
    if raw.size == 0:
        raise ValueError(f"{where}: no ratings (empty array of shape {raw.shape})")
    return raw


def _ratings_matrix(
    ratings: object,
    level: str | None,
    rater: Hashable,
    unit: Hashable,
    value: Hashable,
    categories: Sequence[Any] | None,
    where: str,
) -> np.ndarray:
    """Float (raters, units) matrix, NaN for missing, from any accepted input form."""
    if _is_long_frame(ratings, rater, unit, value):
        raw, _, _ = _long_to_raw(ratings, rater, unit, value, where)  # type: ignore[arg-type]
    else:
        raw = _as_matrix(ratings, where)
    matrix = _encode(raw, categories, level, where)
    if not (~np.isnan(matrix)).any():
        raise ValueError(f"{where}: no ratings (every entry is missing)")
    return matrix


def reliability_matrix(
    frame: pd.DataFrame,
    *,
    rater: Hashable = "rater",
    unit: Hashable = "unit",
    value: Hashable = "value",
    categories: Sequence[Any] | None = None,
) -> pd.DataFrame:
    """Pivot ratings in long form (one row per rating) into Krippendorff's reliability matrix.

    Krippendorff's (2011) reliability data are a raters x units table; a rater who did not rate
    a unit leaves a gap (NaN).

    Args:
        frame: one row per rating with columns ``rater`` (who), ``unit`` (which item) and
            ``value`` (the rating). Rows whose value is missing are ignored (a missing rating);
            the rater and unit columns must not have missing values.
        rater, unit, value: the column names (defaults ``"rater"``, ``"unit"``, ``"value"``).
        categories: optional list of the possible ratings. For ordinal data it must be in
            order, lowest first (e.g. ``["disagree", "neutral", "agree"]``); each rating is then
            replaced by its position 0 .. K-1. Without it numeric ratings are kept as they are
            and non-numeric labels are replaced by their position among the sorted distinct
            labels, which is only meaningful for nominal data.

    Returns:
        A float64 DataFrame, index = raters (named ``rater``), columns = units (named
        ``unit``), both sorted where the labels are orderable; NaN where a rater did not rate a
        unit. Pass it (or its ``.to_numpy()``) to :func:`krippendorff_alpha`.

    Raises:
        TypeError: ``frame`` is not a DataFrame.
        ValueError: a column is missing; rater or unit values are missing; a rater rated the
            same unit twice; there are no non-missing ratings; a rating is not in
            ``categories`` (or ``categories`` is empty or repeats a value); a numeric rating is
            infinite.
    """
    where = "reliability_matrix"
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{where}: frame must be a pandas DataFrame, got {type(frame).__name__}")
    raw, raters, units = _long_to_raw(frame, rater, unit, value, where)
    matrix = _encode(raw, categories, None, where)
    return pd.DataFrame(matrix, index=raters, columns=units)


# --------------------------------------------------------------------------------------------
# Krippendorff's alpha
# --------------------------------------------------------------------------------------------


def _alpha_from_matrix(matrix: np.ndarray, level: str) -> AgreementResult:
    present = ~np.isnan(matrix)
    per_unit = present.sum(axis=0)
    pairable_units = per_unit >= 2
    counts = {
        "n_units": int((per_unit >= 1).sum()),
        "n_raters": int(present.any(axis=1).sum()),
        "n_pairable": int(per_unit[pairable_units].sum()),
    }

    def undefined(reason: str) -> AgreementResult:
        return AgreementResult(
            "krippendorff_alpha", None, **counts, defined=False, reason=reason, level=level
        )

    if counts["n_pairable"] == 0:
        return undefined(_NO_PAIRS)
    data = matrix[:, pairable_units]
    distinct = np.unique(data[~np.isnan(data)])
    if distinct.size == 1:
        return undefined(_ALPHA_ONE_VALUE)
    value = float(_krippendorff.alpha(reliability_data=data, level_of_measurement=level))
    if not math.isfinite(value):  # pragma: no cover - D_e > 0 once two values are pairable
        return undefined(f"the computation gave {value!r}")
    return AgreementResult(
        "krippendorff_alpha", value, **counts, defined=True, reason="", level=level
    )


def krippendorff_alpha(
    ratings: np.ndarray | Sequence[Sequence[Any]] | pd.DataFrame,
    level: str = "nominal",
    *,
    rater: Hashable = "rater",
    unit: Hashable = "unit",
    value: Hashable = "value",
    categories: Sequence[Any] | None = None,
) -> AgreementResult:
    """Krippendorff's alpha reliability coefficient for any number of raters and missing data.

    ``alpha = 1 - D_o / D_e``: observed disagreement among the ratings of the same unit over
    the disagreement expected by chance, both from the coincidence matrix of pairable values
    (Krippendorff 2011; Hayes & Krippendorff 2007). The difference function follows ``level``:

    * ``"nominal"``: two ratings differ (1) or not (0);
    * ``"ordinal"``: squared count of ratings between the two ranks (only the order matters);
    * ``"interval"``: squared numeric difference.

    Units rated by fewer than two raters carry no pairable value and are left out of the
    computation (they still count in ``n_units``). Computed with the ``krippendorff`` package.
    Worked example (Krippendorff 2011, 4 observers x 12 units with gaps): nominal 0.743,
    ordinal 0.815, interval 0.849.

    Args:
        ratings: either

            * a 2-D array-like of shape ``(raters, units)`` -- float with NaN for a missing
              rating (any numeric dtype), or labels with ``None``/NaN for missing -- or a wide
              DataFrame of that shape such as :func:`reliability_matrix` returns; or
            * a long DataFrame with one row per rating and the columns named by ``rater``,
              ``unit`` and ``value`` (see :func:`reliability_matrix`). A DataFrame holding all
              three columns is read as long, any other DataFrame as wide.

        level: ``"nominal"`` (default), ``"ordinal"`` or ``"interval"``.
        rater, unit, value: column names of a long frame (ignored for matrix input).
        categories: the possible ratings; required for ordinal data given as labels, in order
            lowest first; optional (validation only) for nominal data; not allowed for
            interval data, which must be numeric. See :func:`reliability_matrix`.

    Returns:
        :class:`AgreementResult` with ``statistic="krippendorff_alpha"``. ``value`` is at most
        1 (1 = perfect agreement, 0 = chance, < 0 = systematic disagreement; the lower limit
        depends on the data). ``defined`` is false (``value=None``, ``reason`` set) when no
        unit has two ratings, or when all pairable ratings are the same value (alpha = 0/0).

    Raises:
        ValueError: ``level`` is not one of the three; the input is empty, has no non-missing
            rating, is not 2-D, or has infinite values; a long frame is malformed (see
            :func:`reliability_matrix`); ordinal labels without ``categories``; interval
            ratings that are not numeric, or ``categories`` with interval data.
    """
    level = _check_level(level)
    matrix = _ratings_matrix(
        ratings, level, rater, unit, value, categories, where="krippendorff_alpha"
    )
    return _alpha_from_matrix(matrix, level)


# --------------------------------------------------------------------------------------------
# Fleiss' kappa
# --------------------------------------------------------------------------------------------


def _counts_from_matrix(matrix: np.ndarray) -> np.ndarray:
    """(units, categories) count table from a (raters, units) matrix of nominal codes."""
    present = ~np.isnan(matrix)
    distinct = np.unique(matrix[present])
    table = np.zeros((matrix.shape[1], distinct.size), dtype="int64")
    unit_idx = np.nonzero(present)[1]
    cat_idx = np.searchsorted(distinct, matrix[present])
    np.add.at(table, (unit_idx, cat_idx), 1)
    return table


def _check_count_table(table: object, where: str) -> np.ndarray:
    raw = _as_matrix(table, where)
    try:
        counts = raw.astype("float64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: a count table must hold numbers: {exc}") from exc
    if not np.isfinite(counts).all():
        raise ValueError(f"{where}: a count table must not have missing or infinite entries")
    if (counts < 0).any() or (counts != np.round(counts)).any():
        raise ValueError(f"{where}: a count table must hold non-negative whole numbers")
    return counts.astype("int64")


def _unequal_counts_message(per_unit: np.ndarray) -> str | None:
    sizes, how_many = np.unique(per_unit, return_counts=True)
    if sizes.size <= 1:
        return None
    spread = ", ".join(f"{n} unit(s) with {m}" for m, n in zip(sizes, how_many, strict=True))
    return (
        "Fleiss' kappa needs the same number of ratings on every unit, but the data have "
        f"{spread} ratings; use Krippendorff's alpha, which allows missing ratings"
    )


def _kappa_from_table(counts: np.ndarray) -> AgreementResult:
    per_unit = counts.sum(axis=1)
    counts = counts[per_unit > 0]
    per_unit = per_unit[per_unit > 0]
    if counts.shape[0] == 0:
        raise ValueError("fleiss_kappa: no ratings (every count is 0)")
    message = _unequal_counts_message(per_unit)
    if message is not None:
        raise ValueError(f"fleiss_kappa: {message}")
    m = int(per_unit[0])
    n_units = int(counts.shape[0])
    fields = {"n_units": n_units, "n_raters": m, "n_pairable": n_units * m if m >= 2 else 0}

    def undefined(reason: str) -> AgreementResult:
        return AgreementResult(
            "fleiss_kappa", None, **fields, defined=False, reason=reason, level="nominal"
        )

    if m < 2:
        return undefined(_ONE_RATING_PER_UNIT)
    if int((counts.sum(axis=0) > 0).sum()) == 1:
        return undefined(_KAPPA_ONE_VALUE)
    value = float(_sm_fleiss_kappa(counts, method="fleiss"))
    if not math.isfinite(value):  # pragma: no cover - P_e < 1 once two categories are used
        return undefined(f"the computation gave {value!r}")
    return AgreementResult(
        "fleiss_kappa", value, **fields, defined=True, reason="", level="nominal"
    )


def fleiss_kappa(
    ratings: np.ndarray | Sequence[Sequence[Any]] | pd.DataFrame,
    *,
    rater: Hashable = "rater",
    unit: Hashable = "unit",
    value: Hashable = "value",
    categories: Sequence[Any] | None = None,
) -> AgreementResult:
    """Fleiss' (1971) kappa for nominal ratings with the same number of ratings per unit.

    ``kappa = (P_bar - P_e) / (1 - P_e)``: the mean proportion of agreeing rater pairs per unit
    against the agreement expected from the overall category proportions (Fleiss 1971). The
    raters may differ from unit to unit, but every unit needs the same number ``m`` of
    ratings. Computed with ``statsmodels.stats.inter_rater.fleiss_kappa``. Worked examples:
    Fleiss (1971) Table 1, 30 patients x 6 psychiatrists x 5 diagnoses, kappa 0.430;
    Wikipedia "Fleiss' kappa", 10 subjects x 14 raters x 5 categories, kappa 0.210.

    Args:
        ratings: either

            * a count table of shape ``(units, categories)``: entry ``[i, j]`` is how many
              raters put unit ``i`` in category ``j`` (non-negative whole numbers; array-like
              or wide DataFrame). Note: this is *not* the (raters, units) matrix that
              :func:`krippendorff_alpha` takes; or
            * a long DataFrame with one row per rating and the columns named by ``rater``,
              ``unit`` and ``value`` (see :func:`reliability_matrix`; missing values are
              dropped). A DataFrame holding all three columns is read as long, any other
              DataFrame as a count table.

        rater, unit, value: column names of a long frame (ignored for a count table).
        categories: optional list of the possible categories of a long frame (validation;
            unused categories do not change kappa).

    Returns:
        :class:`AgreementResult` with ``statistic="fleiss_kappa"``, ``level="nominal"``,
        ``n_raters`` = ratings per unit ``m``. ``value`` is at most 1 (1 = perfect, 0 = chance,
        < 0 = below chance). ``defined`` is false (``value=None``, ``reason`` set) when every
        unit has one rating (``m == 1``) or every rating is the same category (kappa = 0/0).
        Units with no rating at all (a zero row) are left out.

    Raises:
        ValueError: the input is empty or has no rating; the count table is not 2-D or holds
            negative, fractional, missing or infinite entries; a long frame is malformed (see
            :func:`reliability_matrix`); units have **different numbers of ratings** -- such
            units are rejected, not dropped, and the message lists how many units have each
            count (use :func:`krippendorff_alpha` for such data).
    """
    where = "fleiss_kappa"
    if _is_long_frame(ratings, rater, unit, value):
        matrix = _ratings_matrix(ratings, "nominal", rater, unit, value, categories, where)
        counts = _counts_from_matrix(matrix)
    else:
        if categories is not None:
            raise ValueError(f"{where}: categories applies to long-frame input only")
        counts = _check_count_table(ratings, where)
    return _kappa_from_table(counts)


# --------------------------------------------------------------------------------------------
# both, for the results page
# --------------------------------------------------------------------------------------------


def rater_agreement(
    frame: pd.DataFrame,
    *,
    rater: Hashable = "rater",
    unit: Hashable = "unit",
    value: Hashable = "value",
    level: str = "nominal",
    categories: Sequence[Any] | None = None,
) -> RaterAgreement:
    """Krippendorff's alpha and, for nominal data with equal ratings per unit, Fleiss' kappa.

    Alpha is always computed (see :func:`krippendorff_alpha`). Fleiss' kappa (see
    :func:`fleiss_kappa`) is added when ``level == "nominal"`` and every rated unit has the
    same number of ratings; otherwise ``kappa`` is ``None`` and ``kappa_note`` says why.

    Args:
        frame: long DataFrame, one row per rating (see :func:`reliability_matrix`).
        rater, unit, value: its column names (defaults ``"rater"``, ``"unit"``, ``"value"``).
        level: ``"nominal"`` (default), ``"ordinal"`` or ``"interval"``.
        categories: the possible ratings, in order for ordinal labels (see
            :func:`krippendorff_alpha`).

    Returns:
        :class:`RaterAgreement` ``(alpha, kappa, kappa_note)``.

    Raises:
        TypeError: ``frame`` is not a DataFrame.
        ValueError: as :func:`krippendorff_alpha` for a long frame (unknown level, no ratings,
            malformed frame, ...).
    """
    where = "rater_agreement"
    level = _check_level(level)
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{where}: frame must be a pandas DataFrame, got {type(frame).__name__}")
    raw, _, _ = _long_to_raw(frame, rater, unit, value, where)
    matrix = _encode(raw, categories, level, where)
    alpha = _alpha_from_matrix(matrix, level)
    if level != "nominal":
        return RaterAgreement(
            alpha, None, f"Fleiss' kappa is for nominal data; these ratings are {level}"
        )
    per_unit = (~np.isnan(matrix)).sum(axis=0)
    message = _unequal_counts_message(per_unit[per_unit > 0])
    if message is not None:
        return RaterAgreement(alpha, None, message)
    return RaterAgreement(alpha, _kappa_from_table(_counts_from_matrix(matrix)), "")
