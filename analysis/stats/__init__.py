"""Statistics for human-evaluation studies (no Django imports).

Public API:

* :func:`wilson_interval` -- Wilson (1927) score interval, Newcombe (1998) method 3.
* :func:`binomial_test` -- exact binomial test p-value.
* :func:`accuracy_table` -- per-group accuracy, Wilson 95% interval and test against chance.
"""

from analysis.stats.proportions import (
    ACCURACY_TABLE_STAT_COLUMNS,
    accuracy_table,
    binomial_test,
    wilson_interval,
)

__all__ = [
    "ACCURACY_TABLE_STAT_COLUMNS",
    "accuracy_table",
    "binomial_test",
    "wilson_interval",
]
