"""The full report: tables from a tidy frame (no Django), the analyze command, the HTML
report download and the report API on a real study run by simulated participants."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pandas as pd
import pytest
from django.core.management import call_command
from django.test import Client

from analysis.report import build_report, report_records, report_text
from analysis.stats.comparisons import compare_proportions, one_sample_t_test
from tests.studies.conftest import engine_world, make_study  # noqa: F401  (the engine world)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def _frame() -> pd.DataFrame:
    """Two conditions, 6 participants each, 10 agreement answers: gradcam participants get
    8/10 right, none participants 5/10 (one gets 6), so every number is known."""
    rows = []
    for p in range(12):
        condition = "gradcam" if p < 6 else "none"
        k = 8 if condition == "gradcam" else (6 if p == 11 else 5)
        for i in range(10):
            rows.append(
                {
                    "participant": f"P{p:02d}",
                    "is_simulated": True,
                    "excluded": False,
                    "kind": "main",
                    "task": "agreement",
                    "condition": condition,
                    "method": "gradcam" if condition == "gradcam" else "",
                    "item": f"img{i}",
                    "model_correct": i % 2 == 0,
                    "is_correct": i < k,
                    "answer": "4" if i < k else "1",
                    "chance": 0.5,
                    "confidence": 1 + i % 2,
                    "rt_ms": 1000 + 100 * i,
                    "timed_out": False,
                }
            )
    # rows the tables must leave out: an attention check, a timeout, an excluded participant
    rows.append({**rows[0], "kind": "attention", "is_correct": False})
    rows.append({**rows[0], "timed_out": True, "is_correct": None})
    rows += [{**r, "participant": "P99", "excluded": True, "is_correct": False} for r in rows[:10]]
    return pd.DataFrame(rows)


def test_report_tables_hold_the_known_values():
    report = build_report(_frame(), title="known", mixed=False)
    assert (report.n_scored, report.n_participants, report.n_excluded) == (120, 13, 1)
    acc = report.accuracy.set_index(["condition", "model"])
    assert acc.loc[("gradcam", "all"), "n_correct"] == 48
    assert acc.loc[("none", "all"), "n_correct"] == 31
    tests = report.participant_tests.set_index("condition")
    expected = one_sample_t_test([0.5] * 5 + [0.6], 0.5)
    assert tests.loc["none", "p_value"] == pytest.approx(expected.p_value)
    assert tests.loc["gradcam", "note"].startswith("no variance")  # all at 0.8: undefined
    row = report.comparisons.iloc[0]
    known = compare_proportions(48, 60, 31, 60, a="gradcam", b="none")
    assert (row["a"], row["b"], row["test"]) == ("gradcam", "none", known.test)
    assert row["p_value"] == pytest.approx(known.p_value)
    assert row["p_holm"] == pytest.approx(known.p_value)  # one comparison: Holm changes nothing
    ((task, logistic, mixed),) = report.models
    assert task == "agreement" and mixed is None and logistic.fallback == ""
    coef = logistic.coefficients.set_index("term")
    assert coef.loc["C(condition)[T.none]", "odds_ratio"] == pytest.approx((31 / 29) / (48 / 12))
    assert report.power.loc[0, "n_per_condition"] == 60
    rt = report.response_times.set_index("condition")
    assert rt.loc["gradcam", "median_ms"] == 1450.0
    assert set(report.confidence["confidence"]) == {1, 2}
    agreement = report.agreement.set_index("condition")
    # every gradcam participant answered every item alike: perfect agreement
    assert agreement.loc["gradcam", "alpha"] == pytest.approx(1.0)
    assert agreement.loc["gradcam", "level"] == "ordinal"
    from analysis.stats.agreement import krippendorff_alpha

    scored = _frame().query("condition == 'none' and kind == 'main' and not timed_out")
    scored = scored[~scored["excluded"]]
    expected = krippendorff_alpha(
        scored.rename(columns={"participant": "rater", "item": "unit"}).assign(
            value=pd.to_numeric(scored["answer"])
        )[["rater", "unit", "value"]],
        level="ordinal",
    )
    assert agreement.loc["none", "alpha"] == pytest.approx(expected.value)
    assert 0 < expected.value < 1
    text = report_text(report)
    assert "Conditions compared" in text and "Krippendorff" in text
    records = report_records(report)
    assert records["models"][0]["mixed"] is None and records["n_scored"] == 120


def test_report_mixed_auto_fits_small_tasks_and_says_when_it_skips_large_ones(monkeypatch):
    import analysis.report as report_module

    report = build_report(_frame(), mixed="auto")
    assert report.models[0][2] is not None  # fitted (or fell back with its reason)
    monkeypatch.setattr(report_module, "MIXED_AUTO_MAX_ROWS", 50)
    report = build_report(_frame(), mixed="auto")
    assert report.models[0][2] is None
    assert any("--mixed" in w for w in report.warnings)


def test_report_of_a_degenerate_study_warns_instead_of_crashing():
    frame = _frame()
    frame.loc[frame["condition"] == "gradcam", "is_correct"] = True  # 100% correct
    report = build_report(frame, mixed=True)
    ((_, logistic, mixed),) = report.models
    assert logistic.coefficients.empty and "pairwise" in logistic.fallback
    assert any("100%" in w for w in report.warnings)
    assert report.comparisons.loc[0, "test"] == "fisher" or report.comparisons.loc[0, "p_value"]


def test_report_requires_the_tidy_columns():
    with pytest.raises(ValueError, match="lack column"):
        build_report(pd.DataFrame({"participant": []}))


def test_the_100k_benchmark_frame_gives_a_full_report():
    from analysis_report import simulated_frame

    report = build_report(simulated_frame(3000, trials=30, items=40), mixed="auto")
    assert len(report.comparisons) == 2 * 3  # 2 tasks x 3 pairs of conditions
    assert set(report.timings) >= {"accuracy", "models", "power"}


# -- through Django: a real study with simulated participants -------------------------------


@pytest.fixture
def answered_study(make_study):  # noqa: F811
    from studies.simulation import ResponseModel, simulated_participant_run

    study = make_study(
        conditions=[{"name": "gradcam", "method": "gradcam"}, {"name": "none", "method": "none"}]
    )
    rm = ResponseModel(
        accuracy={"gradcam": {"right": 0.9, "wrong": 0.4}, "none": {"right": 0.6, "wrong": 0.5}}
    )
    for seed in range(4):
        simulated_participant_run(client=Client(), study=study, rm=rm, seed=seed)
    return study


def test_analyze_command_prints_the_tables_and_writes_the_html_report(answered_study, tmp_path):
    out = io.StringIO()
    html = tmp_path / "report.html"
    call_command("analyze", answered_study.slug, "--html", str(html), stdout=out)
    text = out.getvalue()
    assert "Accuracy (Wilson 95% CI" in text and "Power" in text
    page = html.read_text()
    assert "data:image/png;base64," in page and answered_study.title in page
    assert "<script" not in page  # self-contained and inert


def test_analyze_command_refuses_an_unknown_study(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no study"):
        call_command("analyze", "no-such-study")


def test_report_download_and_api_are_the_owners_only(answered_study, researcher, client):
    from django.contrib.auth import get_user_model

    client.force_login(researcher)
    page = client.get(f"/r/studies/{answered_study.slug}/report.html")
    assert page.status_code == 200 and b"Conditions compared" in page.content
    api = client.get(f"/api/studies/{answered_study.slug}/report/?mixed=false")
    assert api.status_code == 200
    body = api.json()
    assert body["study"] == answered_study.slug and body["n_participants"] == 4
    assert {r["condition"] for r in body["accuracy"]} <= {"gradcam", "none"}
    assert client.get(f"/api/studies/{answered_study.slug}/report/?mixed=maybe").status_code == 400
    other = get_user_model().objects.create_user("other-researcher", password="x")
    client.force_login(other)
    assert client.get(f"/r/studies/{answered_study.slug}/report.html").status_code == 404
    assert client.get(f"/api/studies/{answered_study.slug}/report/").status_code in (403, 404)


def test_distribution_plot_skips_missing_values():
    from analysis.plots import distribution_plot_png

    png = distribution_plot_png(
        {"a": [1.0, None, float("nan"), 3.0], "b": [None]}, title="t", xlabel="x"
    )
    assert png.startswith(b"\x89PNG")
    assert distribution_plot_png({"b": [None]}, title="t", xlabel="x").startswith(b"\x89PNG")
