"""Text studies (GLTR, Gehrmann et al., ACL 2019 demo): the human-or-machine task with and
without token-rank highlights, built from a spec, completed by bots through the real pages,
scored and analysed; nothing on the page tells a text's origin."""

from __future__ import annotations

import hashlib

import pytest
from django.test import Client

from explanations.models import Dataset, Item
from studies import text_design
from studies.bots import DjangoClientTransport, bot_run
from studies.design import StudyDesignError, study_create
from studies.models import Participant, Response, Trial, TrialKind

HUMAN = [
    "The module provides a way of using operating system dependent functionality.",
    "Return a new view of the dictionary's keys, in insertion order, as a set-like object.",
    "This function is intended for internal use; callers should prefer the public wrapper.",
    "A “quoted” phrase, an émigré and 🤗 an emoji, on\ntwo lines.",
]
MACHINE = [
    "The module provides a simple way to use the system and the system is simple to use.",
    "Return a new list of the keys of the dictionary and return the list of the keys.",
    "This function is used to call the function that is used to call the other function.",
    "It is a very good and very nice and very useful thing that is very good to use.",
]


def fake_spans(lm, text, thresholds=text_design.DEFAULT_THRESHOLDS):
    """Word-level units; 'machine-like' words (the, is, and) in the top-10 bucket."""
    out, word = [], ""
    for ch in text:
        word += ch
        if ch in " \n":
            out.append(word)
            word = ""
    if word:
        out.append(word)
    return [{"text": w, "bucket": 0 if w.strip() in ("the", "is", "and") else 2} for w in out]


@pytest.fixture
def text_dataset(db):
    dataset = Dataset.objects.create(name="texts", modality="text")
    for origin, texts in (("human", HUMAN), ("machine", MACHINE)):
        for k, text in enumerate(texts):
            Item.objects.create(
                dataset=dataset,
                name=f"t{hashlib.sha256(text.encode()).hexdigest()[:10]}",
                sha256=hashlib.sha256(text.encode()).hexdigest(),
                width=0,
                height=0,
                text=text,
                label_index=0 if origin == "human" else 1,
                label_name=origin,
                meta={"source": f"test:{origin}:{k}"},
            )
    return dataset


def spec(**overrides):
    base = {
        "version": 1,
        "title": "GLTR highlights vs plain text",
        "modality": "text",
        "model": "smollm2",
        "dataset": "texts",
        "conditions": [
            {"name": "gltr", "method": "gltr", "label": "Token-rank highlights"},
            {"name": "plain", "method": "none", "label": "Plain text"},
        ],
        "tasks": [{"type": "human_or_machine"}],
        "trials": {"practice": 0, "attention_checks": 1, "per_participant": 6, "seed": 3},
        "recruitment": {"mode": "public"},
    }
    base.update(overrides)
    return base


@pytest.fixture
def text_study(text_dataset, researcher, monkeypatch):
    monkeypatch.setattr(text_design, "gltr_display_spans", fake_spans)
    monkeypatch.setattr(
        "explanations.text.lm.language_model_load", lambda *a, **k: object(), raising=False
    )
    return study_create(spec=spec(), owner=researcher, open_now=True)


def test_a_text_study_is_built_with_both_conditions_and_balanced_origins(text_study):
    main = Trial.objects.filter(study=text_study, kind=TrialKind.MAIN)
    assert {t.condition for t in main} == {"gltr", "plain"}
    for condition in ("gltr", "plain"):
        trials = [t for t in main if t.condition == condition]
        assert sorted(t.true_index for t in trials) == [0, 0, 0, 1, 1, 1]
        for t in trials:
            assert "".join(s["text"] for s in t.config["spans"]) == t.item.text
            buckets = {s.get("bucket") for s in t.config["spans"]}
            assert (buckets <= {None}) == (condition == "plain")
    assert text_study.model is None and text_study.language_model == "smollm2"


def test_bots_complete_the_text_study_in_both_conditions_and_see_no_origin(text_study):
    conditions = set()
    for seed in range(4):
        result = bot_run(
            transport=DjangoClientTransport(Client()),
            start_path=f"/s/{text_study.slug}/?SIMULATION_KEY={text_study.simulation_key}"
            "&BOT_POLICY=uniform",
            policy="uniform",
            seed=seed,
        )
        assert result.completion_code
    for p in Participant.objects.filter(study=text_study, is_simulated=True):
        conditions.add(p.arm)
        main = Response.objects.filter(participant=p, trial__kind=TrialKind.MAIN)
        assert main.count() == 6 and all(r.is_correct is not None for r in main)
    assert conditions == {"gltr/human_or_machine", "plain/human_or_machine"}


def test_the_page_shows_highlights_only_in_the_gltr_condition_and_hides_the_origin(
    text_study, client
):
    response = client.get(
        f"/s/{text_study.slug}/?SIMULATION_KEY={text_study.simulation_key}&BOT_POLICY=uniform"
    )
    token = response["Location"].rstrip("/").split("/")[-1]
    client.post(f"/p/{token}/consent", {"consent": "yes"})
    client.post(f"/p/{token}/instructions")
    participant = Participant.objects.get(token=token)
    page = client.get(f"/p/{token}/").content.decode()
    highlighted = participant.arm.startswith("gltr")
    assert ('class="b0"' in page) == highlighted
    assert "A person or a machine?" in page
    for secret in ("human", "machine-", "label_name", "true_index"):
        assert f'"{secret}"' not in page


def test_scoring_is_by_side_of_the_scale():
    from studies.tasktypes import TASK_TYPES, Answer

    task = TASK_TYPES["human_or_machine"]
    machine = Trial(task_type="human_or_machine", true_index=1, kind="main")
    human = Trial(task_type="human_or_machine", true_index=0, kind="main")
    assert task.score(machine, Answer("4")) and task.score(machine, Answer("3"))
    assert not task.score(machine, Answer("2"))
    assert task.score(human, Answer("1")) and not task.score(human, Answer("3"))


def test_text_spec_errors_name_the_problem(text_dataset, researcher, monkeypatch):
    monkeypatch.setattr(text_design, "gltr_display_spans", fake_spans)
    with pytest.raises(StudyDesignError, match="method 'gltr' or 'none'"):
        study_create(spec=spec(conditions=[{"name": "g", "method": "gradcam"}]), owner=researcher)
    with pytest.raises(StudyDesignError, match="human_or_machine"):
        study_create(spec=spec(tasks=[{"type": "agreement"}]), owner=researcher)
    with pytest.raises(StudyDesignError, match="20 human texts"):
        study_create(spec=spec(trials={"per_participant": 40, "seed": 1}), owner=researcher)
    Dataset.objects.create(name="photos")
    with pytest.raises(StudyDesignError, match="holds images"):
        study_create(spec=spec(dataset="photos"), owner=researcher)


def test_the_analysis_reports_detection_accuracy_per_condition(text_study):
    from analysis.results import study_report

    for seed in range(4):
        bot_run(
            transport=DjangoClientTransport(Client()),
            start_path=f"/s/{text_study.slug}/?SIMULATION_KEY={text_study.simulation_key}"
            "&BOT_POLICY=uniform",
            policy="uniform",
            seed=seed,
        )
    report = study_report(text_study, mixed=False)
    acc = report.accuracy
    assert set(acc["condition"]) == {"gltr", "plain"}
    assert set(acc["model"]) <= {"all"}  # no classifier: no model-right split
    assert len(report.comparisons) == 1
    detection = report.detection.set_index("condition")
    assert set(detection.index) == {"gltr", "plain"}
    assert (detection["n_machine"] > 0).all() and (detection["n_human"] > 0).all()


# -- the real pieces: a saved stimulus set (built by SmolLM2 with text_stimuli) and its import --


STIMULI = __import__("pathlib").Path(__file__).resolve().parents[1] / "data/gltr-stimuli-3.json"


def test_text_stimuli_command_imports_a_saved_set_with_neutral_names(db):
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("text_stimuli", "--name", "saved texts", "--from", str(STIMULI), stdout=out)
    assert "6 texts (3 human + 3 machine)" in out.getvalue()
    dataset = Dataset.objects.get(name="saved texts")
    items = list(dataset.items.all())
    assert dataset.modality == "text" and len(items) == 6
    assert {i.label_name for i in items} == {"human", "machine"}
    for item in items:
        assert item.name.startswith("text-") and "human" not in item.name
        assert "machine" not in item.name
        if item.label_name == "machine":
            assert item.meta["generation"]["top_k"] == 40 and item.meta["generation"]["seed"] >= 0
        else:
            assert item.meta["source"].startswith("stdlib:") and item.meta["license"]
    with pytest.raises(Exception, match="exists"):
        call_command("text_stimuli", "--name", "saved texts", "--from", str(STIMULI))


@pytest.mark.slow
def test_a_study_of_real_texts_gets_real_gltr_highlights(db, researcher, monkeypatch):
    """SmolLM2 scores the saved human and machine texts; every highlighted trial's spans tile
    its text and carry GLTR buckets; the plain condition carries none."""
    import tempfile
    from pathlib import Path

    from django.core.management import call_command

    import explanations.text.lm as lm_module

    cache = Path(tempfile.gettempdir()) / "studyplatform-test-lm-cache"  # shared with test_gltr
    real_load = lm_module.language_model_load
    monkeypatch.setattr(
        lm_module,
        "language_model_load",
        lambda source=None, **k: real_load(source, cache_dir=cache),
    )
    call_command("text_stimuli", "--name", "texts", "--from", str(STIMULI))
    study = study_create(
        spec=spec(trials={"per_participant": 4, "attention_checks": 0, "seed": 2}),
        owner=researcher,
    )
    main = Trial.objects.filter(study=study, kind=TrialKind.MAIN)
    highlighted = [t for t in main if t.condition == "gltr"]
    assert len(highlighted) == 4
    for t in highlighted:
        spans = t.config["spans"]
        assert "".join(s["text"] for s in spans) == t.item.text
        assert {s["bucket"] for s in spans} <= {0, 1, 2, 3, None}
        assert sum(s["bucket"] == 0 for s in spans) > len(spans) / 4  # most text is predictable
        assert "\ufffd" not in "".join(s["text"] for s in spans)
    for t in main:
        if t.condition == "plain":
            assert [s.get("bucket") for s in t.config["spans"]] == [None]


def test_text_stimuli_refuses_a_missing_or_broken_set_and_creates_nothing(db, tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("text_stimuli", "--name", "never", "--from", str(tmp_path / "nope.json"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "something else"}')
    with pytest.raises(CommandError):
        call_command("text_stimuli", "--name", "never", "--from", str(broken))
    assert not Dataset.objects.filter(name="never").exists()


def test_practice_texts_get_feedback_on_their_own_origin(text_dataset, researcher, monkeypatch):
    from studies.payloads import _practice_feedback
    from studies.tasktypes import Answer, answer_score

    monkeypatch.setattr(text_design, "gltr_display_spans", fake_spans)
    monkeypatch.setattr(
        "explanations.text.lm.language_model_load", lambda *a, **k: object(), raising=False
    )
    study = study_create(
        spec=spec(trials={"practice": 2, "per_participant": 4, "seed": 3}), owner=researcher
    )
    practice = list(
        Trial.objects.filter(study=study, kind=TrialKind.PRACTICE, arm__startswith="gltr")
    )
    assert sorted(t.true_index for t in practice) == [0, 1]
    main_items = set(study.spec["resolved"]["main_items"])
    assert not {t.item.name for t in practice} & main_items  # never shown again as main
    p = Participant.objects.create(study=study)
    for t in practice:
        says_human = Answer("1")
        Response.objects.create(
            participant=p,
            trial=t,
            position=0 if t.true_index == 0 else 1,
            answer="1",
            is_correct=answer_score(t, says_human),
        )
        feedback = _practice_feedback(p, t)
        origin = "written by a person" if t.true_index == 0 else "generated by a machine"
        assert feedback["correct"] == (t.true_index == 0) and origin in feedback["message"]
