"""Signal detection for human-or-machine judgements (GLTR's study, Gehrmann et al., ACL 2019
demo): machine text is the signal, "machine" the yes answer.

Sources: Macmillan & Creelman, *Detection Theory: A User's Guide* (2nd ed., 2005), ch. 1-2
(d′ = z(H) − z(F), criterion c = −(z(H) + z(F)) / 2); Hautus (1995), "Corrections for
extreme proportions and their biasing effects on estimated values of d′", Behavior Research
Methods 27:46-51 (log-linear correction: add 0.5 to every count and 1 to every total).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from scipy.stats import norm

__all__ = ["DetectionResult", "d_prime", "detection_table"]


@dataclass(frozen=True)
class DetectionResult:
    """Hit rate H (machine texts called machine), false-alarm rate F (human texts called
    machine), both as used for d′ (after the correction), d′ = z(H) − z(F) (0 = chance,
    larger = better detection; unbounded) and criterion c (> 0: a bias toward "human")."""

    hits: int
    n_signal: int
    false_alarms: int
    n_noise: int
    hit_rate: float
    false_alarm_rate: float
    d_prime: float
    criterion: float
    correction: str


def d_prime(
    hits: int, n_signal: int, false_alarms: int, n_noise: int, *, correction: str = "loglinear"
) -> DetectionResult:
    """d′ and c from counts.

    Args:
        correction: "loglinear" (Hautus 1995, default: always finite) or "none" (raw rates;
            a rate of 0 or 1 raises, since z is infinite there).

    Raises:
        ValueError: negative counts, hits > n_signal, false alarms > n_noise, an empty class,
            an unknown correction, or (correction "none") a rate of 0 or 1.
    """
    if min(hits, n_signal, false_alarms, n_noise) < 0 or hits > n_signal or false_alarms > n_noise:
        raise ValueError("need 0 <= hits <= n_signal and 0 <= false_alarms <= n_noise")
    if n_signal == 0 or n_noise == 0:
        raise ValueError("need at least one machine and one human text")
    if correction == "loglinear":
        h, f = (hits + 0.5) / (n_signal + 1), (false_alarms + 0.5) / (n_noise + 1)
    elif correction == "none":
        h, f = hits / n_signal, false_alarms / n_noise
        if h in (0.0, 1.0) or f in (0.0, 1.0):
            raise ValueError("a rate of 0 or 1 gives an infinite z; use the loglinear correction")
    else:
        raise ValueError(f"correction must be 'loglinear' or 'none', got {correction!r}")
    zh, zf = float(norm.ppf(h)), float(norm.ppf(f))
    return DetectionResult(
        hits, n_signal, false_alarms, n_noise, h, f, zh - zf, -(zh + zf) / 2, correction
    )


def detection_table(
    frame: pd.DataFrame, *, by: str = "condition", truth: str = "true_class", answer="answer"
) -> pd.DataFrame:
    """d′ and c per level of ``by`` from human-or-machine answers: ``truth`` is "human" or
    "machine", ``answer`` the 4-point scale (3-4 = "machine").

    Returns:
        Columns by, hits, n_machine, false_alarms, n_human, hit_rate, false_alarm_rate,
        d_prime, criterion (log-linear corrected); levels lacking either kind of text are left
        out.
    """
    rows = []
    for level, group in frame.groupby(by, sort=True):
        says_machine = group[answer].astype(str).isin(["3", "4"])
        machine = group[truth] == "machine"
        human = group[truth] == "human"
        if not machine.any() or not human.any():
            continue
        r = d_prime(
            int((says_machine & machine).sum()),
            int(machine.sum()),
            int((says_machine & human).sum()),
            int(human.sum()),
        )
        rows.append(
            {
                by: level,
                "hits": r.hits,
                "n_machine": r.n_signal,
                "false_alarms": r.false_alarms,
                "n_human": r.n_noise,
                "hit_rate": r.hit_rate,
                "false_alarm_rate": r.false_alarm_rate,
                "d_prime": r.d_prime,
                "criterion": r.criterion,
            }
        )
    return pd.DataFrame(rows)
