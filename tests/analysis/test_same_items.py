"""Conditions compared on the same items (:mod:`analysis.stats.same_items`) with known values,
the report section, and the explanation_type / classifier columns of the tidy table."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from django.test import Client
from scipy import stats

from analysis.codebook import CODEBOOK, explanation_type
from analysis.datasets import (
    RESPONSE_COLUMNS,
    condition_classifier,
    study_responses_frame,
    trial_explanation_type,
)
from analysis.report import SECTIONS, build_report, report_records, report_text
from analysis.stats.same_items import (
    SAME_ITEMS_CONDITION_COLUMNS,
    SAME_ITEMS_TEST_COLUMNS,
    common_items,
    compare_on_same_items,
    item_accuracy_matrix,
)
from studies.simulation import ResponseModel, simulated_participant_run
from tests.studies.conftest import engine_world, make_study  # noqa: F401  (the engine world)
from tests.studies.test_text_study import text_dataset, text_study  # noqa: F401  (fixtures)

Z = 1.959963984540054  # standard-normal 97.5% quantile

#: condition -> (method, explanation_type, classifier)
CONDITIONS = {
    "gradcam": ("gradcam", "heatmap", "resnet"),
    "prototypes": ("prototypes", "prototype", "protopnet"),
    "concepts": ("concepts", "concept", "cbm"),
}

#: correct answers out of 3 per item under (gradcam, prototypes, concepts); i5 is not answered
#: under concepts, so it is dropped. Each item's three accuracies differ: Friedman ranks
#: without ties.
CORRECT = {
    "i0": (3, 2, 1),
    "i1": (2, 3, 0),
    "i2": (3, 1, 2),
    "i3": (2, 1, 0),
    "i4": (1, 0, 3),
    "i5": (3, 3, None),
}

#: whether the condition's classifier was right on the item (each condition its own model)
MODEL_RIGHT = {
    "gradcam": {"i0", "i1", "i2", "i5"},
    "prototypes": {"i0", "i1", "i5"},
    "concepts": {"i0", "i1", "i2", "i3"},
}


def _wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson (1927) score interval written out."""
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2)) / (1 + Z**2 / n)
    return centre - half, centre + half


def _frame() -> pd.DataFrame:
    """3 answers per item and condition (participants P<condition><0-2>), as in CORRECT, plus
    answers the analysis must leave out."""
    rows = []
    for item, counts in CORRECT.items():
        for c, (condition, (method, kind, model)) in enumerate(CONDITIONS.items()):
            k = counts[c]
            if k is None:
                continue
            for j in range(3):
                rows.append(
                    {
                        "participant": f"P{condition[:2]}{j}",
                        "is_simulated": True,
                        "excluded": False,
                        "kind": "main",
                        "task": "agreement",
                        "condition": condition,
                        "method": method,
                        "explanation_type": kind,
                        "classifier": model,
                        "item": item,
                        "model_correct": item in MODEL_RIGHT[condition],
                        "is_correct": j < k,
                        "answer": "4" if j < k else "1",
                        "chance": 0.5,
                        "rt_ms": 1500,
                        "timed_out": False,
                    }
                )
    base = rows[0]
    # i5 under concepts only timed out or from an excluded participant: still not answered
    rows.append({**base, "condition": "concepts", "item": "i5", "timed_out": True})
    rows.append({**base, "condition": "concepts", "item": "i5", "excluded": True})
    rows.append({**base, "condition": "concepts", "item": "i5", "kind": "practice"})
    return pd.DataFrame(rows)


def _scored() -> pd.DataFrame:
    from analysis.report import scored_main

    return scored_main(_frame())


def test_only_items_answered_under_every_condition_are_kept():
    scored = _scored()
    assert common_items(scored) == ["i0", "i1", "i2", "i3", "i4"]
    matrix = item_accuracy_matrix(scored)
    assert list(matrix.columns) == ["concepts", "gradcam", "prototypes"]
    expected = {c: [CORRECT[i][n] / 3 for i in matrix.index] for n, c in enumerate(CONDITIONS)}
    for condition, values in expected.items():
        assert matrix[condition].tolist() == pytest.approx(values)


def test_accuracy_wilson_and_model_split_on_the_common_items():
    result = compare_on_same_items(_scored(), task="agreement")
    table = result.conditions
    assert list(table.columns) == SAME_ITEMS_CONDITION_COLUMNS
    assert table["condition"].tolist() == ["concepts", "gradcam", "prototypes"]
    rows = table.set_index("condition")
    # correct answers on i0..i4: gradcam 3+2+3+2+1, prototypes 2+3+1+1+0, concepts 1+0+2+0+3
    for condition, k in (("gradcam", 11), ("prototypes", 7), ("concepts", 6)):
        row = rows.loc[condition]
        assert (row["n_items"], row["n_answers"], row["n_correct"]) == (5, 15, k)
        assert row["accuracy"] == pytest.approx(k / 15)
        low, high = _wilson(k, 15)
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
        assert row["note"] == ""
        method, kind, model = CONDITIONS[condition]
        assert (row["explanation_type"], row["classifier"]) == (kind, model)
    assert rows.loc["gradcam", "ci_low"] == pytest.approx(0.4805, abs=1e-4)  # 11/15
    assert rows.loc["gradcam", "ci_high"] == pytest.approx(0.8910, abs=1e-4)
    # i5 was answered under gradcam and prototypes only
    assert rows["n_items_dropped"].to_dict() == {"concepts": 0, "gradcam": 1, "prototypes": 1}
    # split by each condition's own classifier: right on
    # gradcam i0-i2 (3+2+3 of 9; wrong i3, i4: 2+1 of 6), prototypes i0, i1 (2+3 of 6; wrong
    # 1+1+0 of 9), concepts i0-i3 (1+0+2+0 of 12; wrong i4: 3 of 3)
    split = rows[["n_model_right", "accuracy_model_right", "n_model_wrong", "accuracy_model_wrong"]]
    assert split.loc["gradcam"].tolist() == pytest.approx([9, 8 / 9, 6, 3 / 6])
    assert split.loc["prototypes"].tolist() == pytest.approx([6, 5 / 6, 9, 2 / 9])
    assert split.loc["concepts"].tolist() == pytest.approx([12, 3 / 12, 3, 1.0])
    assert rows.loc["gradcam", "mean_item_accuracy"] == pytest.approx(11 / 15)


def test_friedman_matches_the_textbook_formula_and_scipy():
    tests = compare_on_same_items(_scored(), task="agreement").tests
    assert list(tests.columns) == SAME_ITEMS_TEST_COLUMNS
    friedman = tests.iloc[0]
    assert friedman["test"] == "friedman"
    assert friedman["conditions"] == "concepts, gradcam, prototypes"
    # ranks per item (gradcam, prototypes, concepts), 3 = best:
    #   i0 3 2 1 | i1 2 3 1 | i2 3 1 2 | i3 3 2 1 | i4 2 1 3  -> R = 13, 9, 8
    n, k, ranks = 5, 3, (13, 9, 8)
    chi2 = 12 / (n * k * (k + 1)) * sum(r**2 for r in ranks) - 3 * n * (k + 1)
    assert chi2 == pytest.approx(2.8)
    assert friedman["statistic"] == pytest.approx(chi2)
    assert friedman["df"] == 2
    assert friedman["p_value"] == pytest.approx(math.exp(-chi2 / 2))  # chi-square, 2 df
    assert friedman["p_value"] == pytest.approx(0.246597, abs=1e-6)
    by_hand = [[CORRECT[i][c] / 3 for i in ("i0", "i1", "i2", "i3", "i4")] for c in range(3)]
    assert friedman["p_value"] == pytest.approx(stats.friedmanchisquare(*by_hand).pvalue)


def test_pairwise_wilcoxon_with_holm():
    tests = compare_on_same_items(_scored(), task="agreement").tests
    pairs = tests[tests["test"] == "wilcoxon"].set_index(["a", "b"])
    assert list(pairs.index) == [
        ("concepts", "gradcam"),
        ("concepts", "prototypes"),
        ("gradcam", "prototypes"),
    ]
    items = ("i0", "i1", "i2", "i3", "i4")
    counts = {name: [CORRECT[i][c] for i in items] for c, name in enumerate(CONDITIONS)}
    expected = {}
    for a, b in pairs.index:
        # correct answers out of 3: the differences of counts rank as those of accuracies
        diffs = [x - y for x, y in zip(counts[a], counts[b], strict=True)]
        want = stats.wilcoxon(diffs, zero_method="wilcox")
        expected[(a, b)] = want.pvalue
        row = pairs.loc[(a, b)]
        assert row["statistic"] == pytest.approx(want.statistic)
        assert row["p_value"] == pytest.approx(want.pvalue)
        assert row["mean_difference"] == pytest.approx(sum(diffs) / 3 / 5)
        assert row["n_nonzero"] == sum(d != 0 for d in diffs)
    # gradcam - prototypes per item, in thirds: 1, -1, 2, 1, 1; |d| ranks: the four 1s tie at
    # 2.5, the 2 is 5th; negative ranks sum to 2.5, positive to 12.5: statistic min = 2.5
    assert pairs.loc[("gradcam", "prototypes"), "statistic"] == pytest.approx(2.5)
    assert pairs.loc[("gradcam", "prototypes"), "n_nonzero"] == 5
    # Holm written out: sort p ascending, multiply by 3, 2, 1, running maximum, cap at 1
    order = sorted(expected, key=expected.get)
    running, holm = 0.0, {}
    for m, key in zip((3, 2, 1), order, strict=True):
        running = max(running, min(1.0, m * expected[key]))
        holm[key] = running
    for key, value in holm.items():
        assert pairs.loc[key, "p_holm"] == pytest.approx(value)


def test_two_conditions_get_one_wilcoxon_and_ties_a_note():
    scored = _scored()
    two = scored[scored["condition"] != "concepts"]
    tests = compare_on_same_items(two, task="agreement").tests
    assert tests["test"].tolist() == ["wilcoxon"]
    row = tests.iloc[0]
    assert row["n_items"] == 6  # i5 is common to gradcam and prototypes
    assert row["p_holm"] == pytest.approx(row["p_value"])  # one pair: Holm changes nothing
    # the same accuracy under both conditions on every item: no statistic, a note
    same = two.assign(is_correct=two["item"].isin(["i0", "i1"]))
    row = compare_on_same_items(same, task="agreement").tests.iloc[0]
    assert row["statistic"] is None and row["p_value"] is None and row["n_nonzero"] == 0
    assert "same accuracy" in row["note"]


def test_fewer_than_two_common_items_give_a_note_and_a_warning():
    frame = _frame()
    frame = frame[(frame["condition"] != "concepts") | (frame["item"] == "i0")]
    report = build_report(frame, title="few", mixed=False)
    table = report.same_items.set_index("condition")
    assert table["n_items"].tolist() == [1, 1, 1]
    assert table.loc["gradcam", "n_answers"] == 3 and table.loc["gradcam", "n_items_dropped"] == 5
    assert table["accuracy"].isna().all()
    note = table.loc["gradcam", "note"]
    assert note.startswith("only 1 item answered under every condition")
    ((_, test),) = report.same_items_tests.iterrows()
    assert test["note"] == note and test["p_value"] is None and test["test"] == ""
    assert f"agreement: {note}" in report.warnings


def test_the_report_section_records_and_text():
    report = build_report(_frame(), title="same", mixed=False)
    assert "same_items" in SECTIONS and "same_items" in report.timings
    assert report.same_items["n_items"].eq(5).all()
    assert report.same_items_tests.iloc[0]["statistic"] == pytest.approx(2.8)
    records = report_records(report)
    assert {r["condition"] for r in records["same_items"]} == set(CONDITIONS)
    assert records["same_items_tests"][0]["test"] == "friedman"
    assert (
        records["same_items_tests"][0]["a"] == ""
        and records["same_items_tests"][0]["p_holm"] is None
    )
    text = report_text(report)
    assert "Conditions compared on the same items" in text and "friedman" in text
    assert not any("item" in w and "every condition" in w for w in report.warnings)
    # a frame without the new columns (older exports) derives the type from the method
    old = build_report(_frame().drop(columns=["explanation_type", "classifier"]), mixed=False)
    types = old.same_items.set_index("condition")["explanation_type"].to_dict()
    assert types == {"concepts": "concept", "gradcam": "heatmap", "prototypes": "prototype"}
    assert set(old.same_items["classifier"]) == {""}


def test_one_condition_per_task_has_no_same_items_section():
    frame = _frame()
    report = build_report(frame[frame["condition"] == "gradcam"], mixed=False)
    assert report.same_items.empty and report.same_items_tests.empty


# -- the tidy table's new columns ---------------------------------------------------------------


def test_explanation_type_of_each_method():
    for method in ("gradcam", "saliency", "integrated_gradients", "smoothgrad", "lime", "rise"):
        assert explanation_type(method) == "heatmap"
    assert explanation_type("prototypes") == "prototype"
    assert explanation_type("concepts") == "concept"
    assert explanation_type("gltr") == "highlights"
    assert explanation_type("none") == explanation_type("") == explanation_type(None) == "none"


def test_condition_classifier_from_the_spec():
    spec = {
        "model": "resnet",
        "conditions": [
            {"name": "cam", "method": "gradcam"},
            {"name": "proto", "method": "prototypes", "model": "protopnet"},
            {"name": "cbm", "method": "concepts", "model": "cub-cbm"},
        ],
    }
    assert condition_classifier(spec, "cam") == "resnet"
    assert condition_classifier(spec, "proto") == "protopnet"
    assert condition_classifier(spec, "cbm") == "cub-cbm"
    assert condition_classifier(spec, "unknown") == "resnet"
    assert condition_classifier({**spec, "modality": "text"}, "proto") == ""


def test_trial_explanation_type_follows_trial_method():
    from types import SimpleNamespace

    methods = {"cam": "gradcam", "proto": "prototypes", "cbm": "concepts", "plain": "none"}

    def trial(condition, task="agreement", kind="main", stimuli=None):
        return SimpleNamespace(
            condition=condition,
            task_type=task,
            kind=kind,
            stimuli={"photo": "p.png", "heatmap": "h.png"} if stimuli is None else stimuli,
            config={},
        )

    assert trial_explanation_type(trial("cam"), methods) == "heatmap"
    assert trial_explanation_type(trial("proto"), methods) == "prototype"
    assert trial_explanation_type(trial("cbm"), methods) == "concept"
    assert trial_explanation_type(trial("plain", stimuli={"photo": "p"}), methods) == "none"
    assert trial_explanation_type(trial("cam", "region_annotation", stimuli={}), methods) == ""
    assert trial_explanation_type(trial("plain", "region_annotation"), methods) == ""
    assert trial_explanation_type(trial("", "likert_understanding", "survey", {}), methods) == ""


def test_the_new_columns_of_a_real_study(make_study):  # noqa: F811
    study = make_study(
        conditions=[{"name": "cam", "method": "gradcam"}, {"name": "plain", "method": "none"}],
        condition_assignment="within",
        tasks=[{"type": "agreement"}, {"type": "region_annotation"}],
        task_assignment="within",
        questionnaires=[{"type": "likert_understanding"}],
    )
    rm = ResponseModel(rt_median_ms=2000, rt_sigma=0.0)
    simulated_participant_run(client=Client(), study=study, rm=rm, seed=0)
    frame = study_responses_frame(study)
    assert list(frame.columns) == RESPONSE_COLUMNS
    assert RESPONSE_COLUMNS[-2:] == ["explanation_type", "classifier"]
    assert all(len(CODEBOOK[c][1]) > 40 for c in ("explanation_type", "classifier"))
    agreement = frame[frame["task"] == "agreement"]
    assert set(agreement.loc[agreement["condition"] == "cam", "explanation_type"]) == {"heatmap"}
    assert set(agreement.loc[agreement["condition"] == "plain", "explanation_type"]) == {"none"}
    assert set(frame.loc[frame["task"] == "region_annotation", "explanation_type"]) == {""}
    survey = frame["kind"] == "survey"
    assert survey.any() and set(frame.loc[survey, "explanation_type"]) == {""}
    assert set(frame.loc[survey, "classifier"]) == {""}
    assert set(frame.loc[~survey, "classifier"]) == {study.spec["model"]}
    # the report compares the two conditions on the items both showed
    report = build_report(frame, mixed=False)
    same = report.same_items.set_index("condition")
    assert set(same.index) == {"cam", "plain"}
    assert same.loc["cam", "explanation_type"] == "heatmap"
    assert same.loc["plain", "classifier"] == study.spec["model"]


def test_a_text_study_has_no_classifier_and_gltr_counts_as_a_highlight(text_study):  # noqa: F811
    from studies.bots import DjangoClientTransport, bot_run

    for seed in range(2):
        bot_run(
            transport=DjangoClientTransport(Client()),
            start_path=f"/s/{text_study.slug}/?SIMULATION_KEY={text_study.simulation_key}"
            "&BOT_POLICY=uniform",
            policy="uniform",
            seed=seed,
        )
    frame = study_responses_frame(text_study)
    assert len(frame) and set(frame["classifier"]) == {""}  # the model is a language model
    main = frame[frame["kind"] == "main"]
    types = main.groupby("condition")["explanation_type"].agg(set).to_dict()
    assert types == {"gltr": {"highlights"}, "plain": {"none"}}
    # no model-right split where no classifier predicted: the splits stay empty
    report = build_report(frame, mixed=False)
    same = report.same_items.set_index("condition")
    assert set(same.index) == {"gltr", "plain"}
    assert (same["n_model_right"] == 0).all() and same["accuracy_model_right"].isna().all()


def test_prototype_ratings_by_model_correctness():
    import json

    from scipy.stats import mannwhitneyu

    from analysis.stats.same_items import prototype_ratings_table

    right = [[4, 4, 3], [4, 3, 3]]
    wrong = [[2, 1, 2], [3, 1, 1]]
    rows = [
        {"task": "agreement", "condition": "protos", "model_correct": ok, "answer_data": data}
        for ok, group in ((True, right), (False, wrong))
        for data in (json.dumps({"ratings": r}) for r in group)
    ]
    rows.append(  # no ratings: a heatmap trial of another condition
        {"task": "agreement", "condition": "cam", "model_correct": True, "answer_data": ""}
    )
    table = prototype_ratings_table(pd.DataFrame(rows)).set_index("model")
    assert list(table["condition"].unique()) == ["protos"]
    assert table.loc["model right", "mean_rating"] == pytest.approx(21 / 6)
    assert table.loc["model wrong", "mean_rating"] == pytest.approx(10 / 6)
    assert table.loc["model right", "share_similar"] == 1.0
    assert table.loc["model wrong", "share_similar"] == pytest.approx(1 / 6)
    assert table.loc["all", "n_trials"] == 4 and table.loc["all", "n_ratings"] == 12
    # U for "right" by hand: three 4s beat all six (18), three 3s beat five and tie one (16.5)
    flat_r, flat_w = sum(right, []), sum(wrong, [])
    test = mannwhitneyu(flat_r, flat_w, alternative="two-sided")
    assert test.statistic == 34.5
    assert table.loc["all", "p_right_vs_wrong"] == pytest.approx(test.pvalue)
    assert test.pvalue < 0.01
