"""d′ and criterion against textbook values (Macmillan & Creelman 2005; Hautus 1995)."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.stats.detection import d_prime, detection_table


def test_d_prime_of_symmetric_rates_is_twice_z():
    # H = 0.8, F = 0.2: d′ = z(.8) − z(.2) = 2 × 0.8416 = 1.6832, c = 0 (no bias)
    r = d_prime(80, 100, 20, 100, correction="none")
    assert r.d_prime == pytest.approx(1.6832, abs=1e-4) and r.criterion == pytest.approx(0.0)


def test_d_prime_textbook_example_with_bias():
    # Macmillan & Creelman (2005) Table A5.1 z values: H = .69 -> z = .4959, F = .31 ->
    # z = -.4959; with H = .84, F = .31: d′ = .9945 + .4959 = 1.4904, c = -(.9945 - .4959)/2
    r = d_prime(84, 100, 31, 100, correction="none")
    assert r.d_prime == pytest.approx(1.4904, abs=2e-4)
    assert r.criterion == pytest.approx(-0.2493, abs=2e-4)


def test_loglinear_correction_keeps_perfect_rates_finite():
    # Hautus (1995): H = (10 + .5) / 11, F = (0 + .5) / 11
    r = d_prime(10, 10, 0, 10)
    assert r.hit_rate == pytest.approx(10.5 / 11) and r.false_alarm_rate == pytest.approx(0.5 / 11)
    assert r.d_prime == pytest.approx(2 * 1.6906, abs=1e-3)
    with pytest.raises(ValueError, match="infinite"):
        d_prime(10, 10, 0, 10, correction="none")
    with pytest.raises(ValueError, match="one machine and one human"):
        d_prime(0, 0, 1, 3)


def test_detection_table_from_answers():
    frame = pd.DataFrame(
        {
            "condition": ["gltr"] * 4 + ["plain"] * 4,
            "true_class": ["machine", "machine", "human", "human"] * 2,
            "answer": ["4", "3", "1", "3", "1", "4", "2", "1"],
        }
    )
    table = detection_table(frame).set_index("condition")
    assert table.loc["gltr", ["hits", "false_alarms"]].tolist() == [2, 1]
    assert table.loc["plain", ["hits", "false_alarms"]].tolist() == [1, 0]
    assert table.loc["gltr", "d_prime"] == pytest.approx(d_prime(2, 2, 1, 2).d_prime)
