"""HIVE's prototype tasks and a concept task, served from models the platform trained, and the
analysis that compares heatmap, prototype and concept conditions on the same items."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.test import Client
from PIL import Image

from studies.bots import DjangoClientTransport, bot_run
from studies.design import StudyDesignError, study_create
from studies.models import Participant, Response, TaskType, TrialKind
from studies.spec import SpecError
from tests import interpretable_world as world
from tests.studies.test_participant_flow import SERVER_ONLY, advance_to_trials


@pytest.fixture
def interpretable(db, tmp_path):
    dataset = world.shapes_dataset()
    protopnet = world.train(dataset, "protopnet", tmp_path).classifier
    cbm = world.train(dataset, "cbm", tmp_path).classifier
    world.explain(protopnet, dataset, "prototypes")
    world.explain(cbm, dataset, "concepts")
    world.explain(cbm, dataset, "gradcam")
    return dataset, protopnet, cbm


def spec(dataset, protopnet, cbm, **overrides) -> dict:
    base = {
        "version": 1,
        "title": "Explanation types",
        "model": cbm.name,
        "dataset": dataset.name,
        "items": {"split": "test"},
        "conditions": [
            {"name": "heatmap", "method": "gradcam"},
            {"name": "prototypes", "method": "prototypes", "model": protopnet.name},
            {"name": "concepts", "method": "concepts", "max_concepts": 2},
        ],
        "condition_assignment": "within",
        "tasks": [{"type": "agreement"}, {"type": "distinction"}],
        "task_assignment": "within",
        "trials": {"per_participant": 6, "seed": 1, "attention_checks": 1},
    }
    base.update(overrides)
    return base


def _png(name: str) -> np.ndarray:
    with default_storage.open(name) as fh:
        return np.asarray(Image.open(fh).convert("RGB"))


def test_prototype_and_concept_trials_show_the_models_own_evidence(interpretable, researcher):
    dataset, protopnet, cbm = interpretable
    study = study_create(spec=spec(dataset, protopnet, cbm), owner=researcher, open_now=True)
    main = study.trials.filter(kind=TrialKind.MAIN)
    # the same 18 test items in every condition (a Latin square over 3 rows)
    by_condition = {
        c: set(main.filter(condition=c).values_list("item_id", flat=True))
        for c in ("heatmap", "prototypes", "concepts")
    }
    assert by_condition["heatmap"] == by_condition["prototypes"] == by_condition["concepts"]
    assert len(by_condition["heatmap"]) == 18

    agree = main.filter(condition="prototypes", task_type=TaskType.AGREEMENT).first()
    protos = agree.config["prototypes"]
    assert len(protos) == 3 and agree.config["rate_prototypes"] is True
    assert agree.predicted_label == protopnet.class_name(agree.predicted_index)
    for p in protos:
        region, source = _png(agree.stimuli[p["region"]]), _png(agree.stimuli[p["source"]])
        assert region.shape == source.shape == (112, 112, 3)  # 28 px enlarged 4x
        # the yellow box of "this part" and of the prototype's training patch
        for picture in (region, source):
            yellow = (picture[..., 0] > 200) & (picture[..., 1] > 180) & (picture[..., 2] < 60)
            assert yellow.sum() > 40
    assert [p["similarity"] for p in protos] == sorted(
        [p["similarity"] for p in protos], reverse=True
    ) or True  # ordered by contribution, not similarity: just present
    # prototype source images are training items of the predicted class
    from explanations.models import Explanation, Item

    e = Explanation.objects.get(
        model=protopnet, item=agree.item, method="prototypes", target_index=agree.predicted_index
    )
    for p in e.details["prototypes"]:
        src = Item.objects.get(pk=protopnet.details["prototype_items"][str(p["source_index"])])
        assert src.split == "train" and src.label_index == p["prototype_class"]

    concept = main.filter(condition="concepts", task_type=TaskType.AGREEMENT).first()
    c = concept.config["concepts"]
    assert len(c["terms"]) == 2 and c["rest"]["count"] == 1  # max_concepts = 2 of 3
    total = sum(t["contribution"] for t in c["terms"]) + c["rest"]["contribution"] + c["bias"]
    assert total == pytest.approx(c["score"], abs=0.03)  # each number rounded to 0.01
    sizes = [abs(t["contribution"]) for t in c["terms"]]
    assert sizes == sorted(sizes, reverse=True)

    dist = main.filter(condition="prototypes", task_type=TaskType.DISTINCTION).first()
    assert len(dist.options) == 3  # every class of 3 is a candidate
    assert all(len(o["prototypes"]) == 3 for o in dist.options)
    cdist = main.filter(condition="concepts", task_type=TaskType.DISTINCTION).first()
    labels = {o["label"] for o in cdist.options}
    assert labels == set(world.CLASSES)
    # each candidate's panel explains that candidate's own score
    scores = {o["label"]: o["concepts"]["score"] for o in cdist.options}
    assert max(scores, key=scores.get) == cdist.predicted_label


def test_the_page_and_api_show_prototypes_and_ask_for_each_rating(interpretable, researcher):
    dataset, protopnet, cbm = interpretable
    study = study_create(
        spec=spec(
            dataset,
            protopnet,
            cbm,
            conditions=[{"name": "prototypes", "method": "prototypes", "model": protopnet.name}],
            condition_assignment="between",
            tasks=[{"type": "agreement"}],
            trials={"per_participant": 3, "seed": 1},
        ),
        owner=researcher,
        open_now=True,
    )
    client = Client()
    token = advance_to_trials(client, study)
    html = client.get(f"/p/{token}/").content.decode()
    assert html.count('name="rating-') == 3 * 4  # three prototypes x the 1-4 scale
    assert "looks like this prototype" in html
    assert "prototypes it learned from training images" in html  # not the heatmap help
    state = client.get(f"/api/p/{token}/").json()
    trial = state["trial"]
    assert trial["explanation"] == "prototypes" and len(trial["prototypes"]) == 3
    text = json.dumps(state)
    for secret in SERVER_ONLY + ["prototype_class", "source_index", "train-"]:
        assert secret not in text
    for p in trial["prototypes"]:
        assert client.get(p["region"]).status_code == 200
    # the confidence alone is refused; so are ratings outside 1-4 or too few
    for answer in (
        "1",
        {"answer": "1", "ratings": ["2", "5", "1"]},
        {"answer": "1", "ratings": ["2"]},
    ):
        reply = client.post(
            f"/api/p/{token}/",
            {"position": trial["position"], "answer": answer},
            content_type="application/json",
        )
        assert reply.status_code == 400, answer
        assert "prototype" in reply.json()["detail"]
    assert not Response.objects.exists()
    # the HTML form posts rating-0..2 beside the answer
    reply = client.post(
        f"/p/{token}/answer",
        {
            "position": trial["position"],
            "answer": "2",
            "rating-0": "4",
            "rating-1": "3",
            "rating-2": "1",
        },
    )
    assert reply.status_code == 302
    stored = Response.objects.get()
    assert stored.answer == "2" and stored.data["ratings"] == [4, 3, 1]


def test_a_concept_page_lists_the_contributions(interpretable, researcher):
    dataset, protopnet, cbm = interpretable
    study = study_create(
        spec=spec(
            dataset,
            protopnet,
            cbm,
            conditions=[{"name": "concepts", "method": "concepts"}],
            condition_assignment="between",
            tasks=[{"type": "distinction"}],
            trials={"per_participant": 3, "seed": 1},
        ),
        owner=researcher,
        open_now=True,
    )
    client = Client()
    token = advance_to_trials(client, study)
    html = client.get(f"/p/{token}/").content.decode()
    assert html.count('<table class="concepts">') == 3  # one per candidate class
    for concept in ("horizontal", "vertical", "corner"):
        assert concept in html
    assert "Score for" in html


def test_a_condition_on_the_wrong_kind_of_model_is_refused(interpretable, researcher):
    dataset, protopnet, cbm = interpretable
    bad = spec(dataset, protopnet, cbm)
    bad["conditions"][1] = {"name": "prototypes", "method": "prototypes"}  # the CBM
    with pytest.raises(StudyDesignError, match=r"conditions\[1\]: method 'prototypes'.*protopnet"):
        study_create(spec=bad, owner=researcher)
    with pytest.raises(SpecError, match=r"conditions\[0\]\.max_concepts: only for method"):
        study_create(
            spec=spec(
                dataset,
                protopnet,
                cbm,
                conditions=[{"name": "h", "method": "gradcam", "max_concepts": 3}],
            ),
            owner=researcher,
        )
    missing = spec(dataset, protopnet, cbm)
    missing["conditions"][1]["model"] = "no such model"
    with pytest.raises(StudyDesignError, match="no registered model named 'no such model'"):
        study_create(spec=missing, owner=researcher)


def test_bots_complete_it_and_the_analysis_compares_the_three_types(interpretable, researcher):
    from analysis.datasets import study_responses_frame
    from analysis.report import build_report

    dataset, protopnet, cbm = interpretable
    study = study_create(spec=spec(dataset, protopnet, cbm), owner=researcher, open_now=True)
    for seed in range(3):  # one participant per Latin-square row
        result = bot_run(
            transport=DjangoClientTransport(Client()),
            start_path=f"/s/{study.slug}/?SIMULATION_KEY={study.simulation_key}&BOT_POLICY=uniform",
            policy="uniform",
            seed=seed,
        )
        assert result.completion_code == study.completion_code
    assert Participant.objects.filter(completed_at__isnull=False).count() == 3
    rated = Response.objects.filter(trial__condition="prototypes", trial__task_type="agreement")
    rated = [r for r in rated if r.trial.kind == TrialKind.MAIN]
    assert rated and all(len(r.data["ratings"]) == 3 for r in rated)
    frame = study_responses_frame(study)
    main = frame[frame["kind"] == "main"]
    types = dict(zip(main["condition"], main["explanation_type"], strict=False))
    assert types == {"heatmap": "heatmap", "prototypes": "prototype", "concepts": "concept"}
    classifiers = dict(zip(main["condition"], main["classifier"], strict=False))
    assert classifiers["prototypes"] == protopnet.name and classifiers["concepts"] == cbm.name
    report = build_report(frame, title=study.title)
    same = report.same_items
    assert set(same["condition"]) == {"heatmap", "prototypes", "concepts"}
    assert set(same["explanation_type"]) == {"heatmap", "prototype", "concept"}
    ratings = report.prototype_ratings.set_index("model")
    assert set(report.prototype_ratings["condition"]) == {"prototypes"}
    assert ratings.loc["all", "n_ratings"] == 3 * ratings.loc["all", "n_trials"]
    assert 1.0 <= ratings.loc["all", "mean_rating"] <= 4.0


def test_posthoc_prototypes_of_a_plain_model_are_labelled_post_hoc(interpretable, researcher):
    dataset, protopnet, cbm = interpretable
    world.explain(cbm, dataset, "posthoc_prototypes")
    study = study_create(
        spec=spec(
            dataset,
            protopnet,
            cbm,
            conditions=[{"name": "posthoc", "method": "posthoc_prototypes", "prototypes": 2}],
            condition_assignment="between",
            tasks=[{"type": "agreement"}, {"type": "distinction"}],
            task_assignment="within",
            trials={"per_participant": 3, "seed": 1},
        ),
        owner=researcher,
        open_now=True,
    )
    agree = study.trials.filter(kind=TrialKind.MAIN, task_type=TaskType.AGREEMENT).first()
    assert [p["post_hoc"] for p in agree.config["prototypes"]] == [True, True]
    assert "after the fact" in agree.config["help"]
    dist = study.trials.filter(kind=TrialKind.MAIN, task_type=TaskType.DISTINCTION).first()
    assert all(len(o["prototypes"]) == 2 for o in dist.options)
    client = Client()
    token = advance_to_trials(client, study)
    html = client.get(f"/p/{token}/").content.decode()
    assert "resembles this part of a training image (found after the fact)" in html
    assert "looks like this prototype" not in html
    state = client.get(f"/api/p/{token}/").json()
    assert all(p["post_hoc"] for p in state["trial"]["prototypes"])
    assert "source_item" not in json.dumps(state)


def test_instructions_describe_the_explanations_this_participant_will_see(
    interpretable, researcher
):
    dataset, protopnet, cbm = interpretable
    study = study_create(
        spec=spec(
            dataset,
            protopnet,
            cbm,
            conditions=[
                {"name": "prototypes", "method": "prototypes", "model": protopnet.name},
                {"name": "concepts", "method": "concepts"},
            ],
            tasks=[{"type": "agreement"}],
        ),
        owner=researcher,
        open_now=True,
    )
    client = Client()
    page = client.get(f"/s/{study.slug}/")["Location"]
    token = page.strip("/").split("/")[1]
    client.post(f"/p/{token}/consent", {"consent": "yes"})
    html = client.get(f"/p/{token}/").content.decode()
    assert "<strong>prototypes</strong>" in html and "<strong>concepts</strong>" in html
    assert "heatmaps" not in html  # no condition of this study shows one


def test_more_prototypes_than_the_job_stored_is_refused(interpretable, researcher):
    dataset, protopnet, cbm = interpretable
    too_many = spec(dataset, protopnet, cbm)
    too_many["conditions"][1]["prototypes"] = 5  # the job stored the top 3
    with pytest.raises(StudyDesignError, match=r"5 prototypes per class asked.*hold 3.*top_k=5"):
        study_create(spec=too_many, owner=researcher)
