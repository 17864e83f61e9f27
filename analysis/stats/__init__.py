"""Statistics for human-evaluation studies (no Django imports).

Public API:

* :func:`wilson_interval` -- Wilson (1927) score interval, Newcombe (1998) method 3.
* :func:`binomial_test` -- exact binomial test p-value.
* :func:`accuracy_table` -- per-group accuracy, Wilson 95% interval and test against chance.
* :func:`krippendorff_alpha` -- Krippendorff's alpha, any raters, missing data (Krippendorff 2011).
* :func:`fleiss_kappa` -- Fleiss (1971) kappa, nominal data, equal ratings per unit.
* :func:`rater_agreement` -- both, for the results page; :func:`reliability_matrix` pivots.
"""

from analysis.stats.agreement import (
    AGREEMENT_LEVELS,
    AgreementResult,
    RaterAgreement,
    fleiss_kappa,
    krippendorff_alpha,
    rater_agreement,
    reliability_matrix,
)
from analysis.stats.proportions import (
    ACCURACY_TABLE_STAT_COLUMNS,
    accuracy_table,
    binomial_test,
    wilson_interval,
)

__all__ = [
    "ACCURACY_TABLE_STAT_COLUMNS",
    "AGREEMENT_LEVELS",
    "AgreementResult",
    "RaterAgreement",
    "accuracy_table",
    "binomial_test",
    "fleiss_kappa",
    "krippendorff_alpha",
    "rater_agreement",
    "reliability_matrix",
    "wilson_interval",
]
