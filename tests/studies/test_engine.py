"""The study engine: specs, designs (arms, Latin square, model-correct ratio, practice,
attention checks, questionnaires), every task type end to end, timing, recruitment modes,
researcher pages, simulated participants and power analysis."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.utils import timezone
from PIL import Image

from studies import services
from studies.bots import DjangoClientTransport, bot_run, parse_page
from studies.design import StudyDesignError, trial_order_draw
from studies.models import Participant, ParticipantStage, Response, Study, StudyStatus, Trial
from studies.spec import SPEC_SCHEMA, SpecError, spec_file_load, spec_parse, spec_schema_json
from tests.studies.conftest import spec_for

ROOT = Path(__file__).resolve().parents[2]


def token_of(location: str) -> str:
    return location.strip("/").split("/")[1]


def enter(client: Client, study, query: str = "") -> str:
    response = client.get(f"/s/{study.slug}/{query}")
    assert response.status_code == 302, response.content[:300]
    token = token_of(response["Location"])
    client.post(f"/p/{token}/consent", {"consent": "yes"})
    client.post(f"/p/{token}/instructions")
    return token


def participant(token) -> Participant:
    return Participant.objects.select_related("study").get(token=token)


# --- spec ---------------------------------------------------------------------------------------


def test_published_schema_is_valid_and_the_docs_copy_is_in_sync():
    jsonschema.Draft202012Validator.check_schema(SPEC_SCHEMA)
    assert (ROOT / "docs" / "study-spec.schema.json").read_text() == spec_schema_json()
    assert Client().get("/api/study-spec.schema.json").json() == SPEC_SCHEMA


def test_the_example_spec_parses_with_defaults():
    spec = spec_file_load(ROOT / "docs" / "specs" / "hive-gradcam.yaml")
    assert [c["name"] for c in spec["conditions"]] == ["gradcam", "none"]
    assert spec["trials"]["model_correct"] == 3 and spec["trials"]["order"] == "random"
    assert spec["recruitment"]["active_timeout_min"] == 60


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"version": 2}, "version: must be 1, got 2"),
        ({"tasks": [{"type": "telepathy"}]}, "tasks[0].type: 'telepathy' is not one of"),
        (
            {"trials": {"model_correct": -1, "model_incorrect": 2}},
            "trials.model_correct: -1 is less",
        ),
        ({"colour": "red"}, "(top level): unknown field(s) ('colour' was unexpected)"),
        ({"trials": {"model_correct": 2}}, "give both model_correct and model_incorrect"),
        (
            {"trials": {"model_correct": 2, "model_incorrect": 1, "per_participant": 4}},
            "trials.per_participant: 4 != model_correct + model_incorrect (3)",
        ),
        (
            {"conditions": [{"name": "a", "method": "gradcam"}, {"name": "a", "method": "none"}]},
            "conditions: names must be unique",
        ),
        (
            {"recruitment": {"roster": ["Ann"]}},
            "recruitment.roster: a roster needs mode 'classroom'",
        ),
        (
            {"recruitment": {"prolific_completion_url": "http://evil.example/"}},
            "recruitment.prolific_completion_url",
        ),
    ],
)
def test_spec_errors_name_the_field(change, expected):
    spec = {**spec_for(type("M", (), {"name": "m"}), type("D", (), {"name": "d"})), **change}
    with pytest.raises(SpecError) as info:
        spec_parse(spec)
    assert any(expected in e for e in info.value.errors), info.value.errors


def test_yaml_syntax_errors_give_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\ntitle: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad.yaml: not valid YAML/JSON \(line 3"):
        spec_file_load(path)


# --- designs --------------------------------------------------------------------------------------


def test_between_conditions_and_tasks_make_one_arm_each(make_study):
    study = make_study(
        conditions=[{"name": "gradcam", "method": "gradcam"}, {"name": "none", "method": "none"}],
        tasks=[{"type": "agreement"}, {"type": "distinction"}],
        trials={"practice": 1, "attention_checks": 1, "seed": 3},
    )
    arms = study.spec["resolved"]["arms"]
    assert arms == [
        "gradcam/agreement",
        "gradcam/distinction",
        "none/agreement",
        "none/distinction",
    ]
    main, practice = study.spec["resolved"]["main_items"], study.spec["resolved"]["practice_items"]
    assert len(main) == 7 and len(practice) == 1 and not set(main) & set(practice)
    for arm in arms:
        kinds = Counter(study.trials.filter(arm=arm).values_list("kind", flat=True))
        assert kinds == {"main": 7, "practice": 1, "attention": 1}
    # no explanation in the "none" condition: no heatmap stimulus
    none_agreement = study.trials.filter(arm="none/agreement", kind="main").first()
    assert set(none_agreement.stimuli) == {"photo"}
    assert all(
        "image" not in o for o in study.trials.filter(arm="none/distinction").first().options
    )
    explained = study.trials.filter(arm="gradcam/agreement", kind="main").first()
    assert set(explained.stimuli) == {"photo", "heatmap"}


def test_within_conditions_are_counterbalanced_by_latin_square(make_study):
    study = make_study(
        conditions=[
            {"name": "gradcam", "method": "gradcam"},
            {"name": "saliency", "method": "saliency"},
        ],
        condition_assignment="within",
    )
    assert study.spec["resolved"]["arms"] == ["L1/agreement", "L2/agreement"]
    by_item = {}
    for arm, item, condition in study.trials.filter(kind="main").values_list(
        "arm", "item__name", "condition"
    ):
        by_item.setdefault(item, {})[arm] = condition
    for item, conditions in by_item.items():  # every item once under each condition
        assert sorted(conditions.values()) == ["gradcam", "saliency"], item
    for arm in ("L1/agreement", "L2/agreement"):  # each row mixes conditions evenly (8 items)
        counts = Counter(
            study.trials.filter(arm=arm, kind="main").values_list("condition", flat=True)
        )
        assert counts == {"gradcam": 4, "saliency": 4}


def test_orders_keep_the_model_correct_ratio_and_a_recorded_seed(make_study):
    study = make_study(
        tasks=[{"type": "agreement"}, {"type": "output_prediction"}],
        task_assignment="within",
        trials={"model_correct": 2, "model_incorrect": 2, "practice": 1, "attention_checks": 2},
        questionnaires=[{"type": "likert_understanding"}, {"type": "free_text"}],
    )
    trials = {t.pk: t for t in study.trials.all()}
    order = trial_order_draw(study, "gradcam", seed=42)
    assert order == trial_order_draw(study, "gradcam", seed=42)  # same seed, same order
    assert order != trial_order_draw(study, "gradcam", seed=43)
    # per task block: practice first, then 4 main with the 2 checks spread among them;
    # questionnaires last
    block = ["practice", "main", "attention", "main", "main", "attention", "main"]
    assert [trials[i].kind for i in order] == block * 2 + ["survey", "survey"]
    for block in (0, 1):
        main = [trials[i] for i in order if trials[i].kind == "main" and trials[i].block == block]
        assert sorted(t.model_correct for t in main) == [False, False, True, True]
        assert [trials[i].kind for i in order if trials[i].block == block][0] == "practice"
        assert Counter(trials[i].kind for i in order if trials[i].block == block) == {
            "practice": 1,
            "main": 4,
            "attention": 2,
        }
    assert [trials[i].task_type for i in order[-2:]] == ["likert_understanding", "free_text"]


def test_a_design_the_items_cannot_fill_says_what_is_missing(make_study):
    with pytest.raises(
        StudyDesignError,
        match="1 model-correct \\+ 4 model-incorrect trials asked, but the main items have 5 "
        "where the model is right and 3 where it is wrong",
    ):
        make_study(trials={"model_correct": 1, "model_incorrect": 4})
    with pytest.raises(StudyDesignError, match="no registered model named 'nope'"):
        make_study(model="nope")
    with pytest.raises(StudyDesignError, match="similarity needs an explanation"):
        make_study(conditions=[{"name": "none", "method": "none"}], tasks=[{"type": "similarity"}])
    assert Study.objects.count() == 0  # nothing half-built


# --- assignment -------------------------------------------------------------------------------


def test_arms_fill_evenly_and_abandoned_places_are_refilled(make_study):
    study = make_study(
        conditions=[{"name": "gradcam", "method": "gradcam"}, {"name": "none", "method": "none"}],
        recruitment={"active_timeout_min": 30},
    )
    tokens = [enter(Client(), study) for _ in range(6)]
    arms = Counter(participant(t).arm for t in tokens)
    assert arms == {"gradcam/agreement": 3, "none/agreement": 3}
    # one "none" participant abandoned an hour ago: that arm is now the least filled
    gone = next(t for t in tokens if participant(t).arm == "none/agreement")
    Participant.objects.filter(token=gone).update(consented_at=timezone.now() - timedelta(hours=1))
    assert participant(enter(Client(), study)).arm == "none/agreement"
    # completed participants keep counting however old
    assert participant(enter(Client(), study)).arm == "gradcam/agreement"


# --- every task type through the pages ------------------------------------------------------------

ALL_ITEM_TASKS = [
    "agreement",
    "distinction",
    "output_prediction",
    "similarity",
    "region_annotation",
]
ALL_SURVEYS = ["likert_understanding", "tradeoff", "demographics", "free_text"]


def _answer_form(task: str, form) -> dict:
    if task in (
        "agreement",
        "distinction",
        "output_prediction",
        "similarity",
        "likert_understanding",
    ):
        return {"answer": form.choices["answer"][0]}
    if task == "region_annotation":
        return {"cells": ["0", "9"], "answer": json.dumps({"boxes": [[0.5, 0.5, 1.0, 1.0]]})}
    if task == "tradeoff":
        return {"low": "10", "medium": "50", "high": "95"}
    if task == "demographics":
        return {"age": "25-34", "gender": "na", "ml_experience": "some"}
    return {"answer": "I looked at the <b>red</b> areas.\nThen decided."}


def test_every_task_type_renders_validates_scores_and_stores(make_study):
    study = make_study(
        tasks=[{"type": t} for t in ALL_ITEM_TASKS],
        task_assignment="within",
        trials={"per_participant": 1},
        questionnaires=[{"type": t} for t in ALL_SURVEYS],
    )
    client = Client()
    token = enter(client, study)
    seen = []
    for _ in range(20):
        html = client.get(f"/p/{token}/").content.decode()
        form = parse_page(html).forms[0]
        if form.attrs.get("id") != "trial-form":
            break
        task = form.attrs["data-task"]
        seen.append(task)
        position = form.fields["position"]
        # an empty answer is refused with a message and stores nothing
        client.post(f"/p/{token}/answer", {"position": position})
        again = client.get(f"/p/{token}/").content.decode()
        assert 'role="alert"' in again and f'value="{position}"' in again, task
        client.post(f"/p/{token}/answer", {"position": position, **_answer_form(task, form)})
    assert seen == ALL_ITEM_TASKS + ALL_SURVEYS
    p = participant(token)
    assert p.stage == ParticipantStage.DEBRIEF
    got = {
        r.trial.task_type: r for r in Response.objects.filter(participant=p).select_related("trial")
    }
    assert got["agreement"].is_correct is not None and got["distinction"].is_correct is not None
    assert got["similarity"].is_correct is None and got["likert_understanding"].answer == "1"
    assert got["tradeoff"].data == {"low": 10, "medium": 50, "high": 95}
    assert got["demographics"].data == {"age": "25-34", "gender": "na", "ml_experience": "some"}
    assert got["free_text"].answer == "I looked at the <b>red</b> areas.\nThen decided."  # as typed
    region = got["region_annotation"]
    # cells 0 and 9 of the 8x8 grid on the 16x16 view = two 2x2 squares; the box = bottom-right quarter
    mask = np.array(Image.open(default_storage.open(region.data["mask"]))) > 0
    expected = np.zeros((16, 16), bool)
    expected[0:2, 0:2] = expected[2:4, 2:4] = expected[8:16, 8:16] = True
    assert (mask == expected).all()
    assert region.data["area"] == pytest.approx(expected.mean())
    assert region.data["cells"] == [0, 9] and region.data["boxes"] == [[0.5, 0.5, 1.0, 1.0]]


def test_output_prediction_is_scored_against_the_models_prediction(make_study):
    study = make_study(tasks=[{"type": "output_prediction"}])
    for trial in study.trials.filter(kind="main"):
        key = trial.option_classes[trial.correct_value]
        assert key == trial.predicted_index
    distinction = make_study(tasks=[{"type": "distinction"}], title="d")
    for trial in distinction.trials.filter(kind="main"):
        assert trial.option_classes[trial.correct_value] == trial.true_index


# --- timing, practice feedback, end accuracy ----------------------------------------------------


def test_each_response_records_shown_answered_rt_and_tab_hidden(make_study):
    study = make_study()
    client = Client()
    token = enter(client, study)
    client.get(f"/p/{token}/")
    first_shown = participant(token).shown_at
    client.get(f"/p/{token}/")  # a reload keeps the first time
    assert participant(token).shown_at == first_shown
    form = parse_page(client.get(f"/p/{token}/").content.decode()).forms[0]
    client.post(
        f"/p/{token}/answer",
        {
            "position": "0",
            "answer": form.choices["answer"][0],
            "rt_ms": "2345",
            "tab_hidden": "1",
            "hidden_ms": "800",
        },
    )
    r = Response.objects.get(participant__token=token)
    assert r.shown_at == first_shown and r.created_at >= first_shown
    assert (r.rt_ms, r.tab_hidden, r.hidden_ms, r.timed_out) == (2345, True, 800, False)


def test_time_limit_auto_advances_but_not_before_time(make_study):
    study = make_study(trials={"time_limit_s": 30})
    client = Client()
    token = enter(client, study)
    page = client.get(f"/p/{token}/").content.decode()
    assert 'id="timer"' in page and 'data-remaining="30' in page
    api = f"/api/p/{token}/"
    early = client.post(api, {"position": 0, "timed_out": True}, content_type="application/json")
    assert early.status_code == 400 and "still time left" in early.json()["detail"]
    Participant.objects.filter(token=token).update(shown_at=timezone.now() - timedelta(seconds=31))
    late = client.post(api, {"position": 0, "timed_out": True}, content_type="application/json")
    assert late.status_code == 201
    r = Response.objects.get(participant__token=token)
    assert r.timed_out and r.answer == "" and r.is_correct is None


def test_practice_gets_feedback_and_the_end_shows_accuracy(make_study):
    study = make_study(trials={"practice": 1}, completion={"show_accuracy": True})
    client = Client()
    token = enter(client, study)
    html = client.get(f"/p/{token}/").content.decode()
    assert "Practice" in html and "practice-feedback" not in html
    client.post(f"/p/{token}/answer", {"position": "0", "answer": "1"})
    html = client.get(f"/p/{token}/").content.decode()
    practice = Trial.objects.get(pk=participant(token).trial_order[0])
    verdict = "right" if practice.model_correct else "wrong"
    assert f"was {verdict}." in html and 'id="practice-feedback"' in html
    p = participant(token)
    for position in range(1, len(p.trial_order)):
        client.post(f"/p/{token}/answer", {"position": str(position), "answer": "1"})
    debrief = client.get(f"/p/{token}/").content.decode()
    main = Response.objects.filter(participant__token=token, trial__kind="main")
    n_right = main.filter(is_correct=True).count()
    assert f"<strong>{n_right} of {main.count()}</strong>" in debrief


def test_attention_checks_are_instructed_and_failing_them_excludes(make_study):
    from analysis.datasets import study_responses_frame
    from analysis.results import study_results

    study = make_study(trials={"attention_checks": 1})
    outcomes = {}
    for policy in ("uniform", "careless"):
        for seed in range(3):
            bot_run(
                transport=DjangoClientTransport(Client()),
                start_path=f"/s/{study.slug}/?SIMULATION_KEY={study.simulation_key}&BOT_POLICY={policy}",
                policy=policy,
                seed=seed,
            )
    frame = study_responses_frame(study)
    checks = frame[frame["kind"] == "attention"]
    outcomes = checks.groupby("bot_policy")["is_correct"].mean().to_dict()
    assert outcomes["uniform"] == 1.0  # read and followed
    assert outcomes["careless"] < 1.0  # 4 options: some miss it
    excluded = frame.groupby("participant")["excluded"].first()
    failed = checks.groupby("participant")["is_correct"].all()
    assert (excluded == ~failed.reindex(excluded.index)).all()
    table = study_results(study).table
    n_main_kept = int(((frame["kind"] == "main") & ~frame["excluded"]).sum())
    assert int(table[table["model"] == "all"]["n"].sum()) == n_main_kept


# --- recruitment ------------------------------------------------------------------------------------


def test_prolific_ids_are_hashed_resume_and_complete_with_the_code(make_study):
    study = make_study(
        recruitment={
            "mode": "prolific",
            "prolific_completion_url": "https://app.prolific.com/submissions/complete",
        }
    )
    query = "?PROLIFIC_PID=5f0aPID123&STUDY_ID=s1&SESSION_ID=x9"
    client = Client()
    token = enter(client, study, query)
    p = participant(token)
    assert p.crowd_source == "prolific" and p.crowd_id_hash == services.crowd_id_hash(
        study, "prolific", "5f0aPID123"
    )
    row = json.dumps(list(Participant.objects.filter(pk=p.pk).values()), default=str)
    assert "5f0aPID123" not in row  # never stored raw
    other = Client().get(f"/s/{study.slug}/{query}")  # another browser, same PID: resumes
    assert token_of(other["Location"]) == token
    assert (
        "app.prolific.com" not in client.get(f"/p/{token}/").content.decode()
    )  # not before the end
    for position in range(len(p.trial_order)):
        client.post(f"/p/{token}/answer", {"position": str(position), "answer": "2"})
    debrief = client.get(f"/p/{token}/").content.decode()
    assert f"https://app.prolific.com/submissions/complete?cc={study.completion_code}" in debrief


def test_mturk_preview_enrols_nobody_and_the_hit_is_submitted_back(make_study):
    study = make_study(recruitment={"mode": "mturk"})
    preview = Client().get(f"/s/{study.slug}/?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=H1")
    assert preview.status_code == 200 and "Accept the HIT" in preview.content.decode()
    assert Participant.objects.count() == 0
    sandbox = "https://workersandbox.mturk.com"
    client = Client()
    token = enter(client, study, f"?assignmentId=A1&workerId=W7&hitId=H1&turkSubmitTo={sandbox}")
    p = participant(token)
    assert p.crowd_source == "mturk" and p.mturk_assignment_id == "A1"
    for position in range(len(p.trial_order)):
        client.post(f"/p/{token}/answer", {"position": str(position), "answer": "2"})
    form = parse_page(client.get(f"/p/{token}/").content.decode()).forms[0]
    assert form.action == f"{sandbox}/mturk/externalSubmit"
    assert form.fields == {"assignmentId": "A1", "completion_code": study.completion_code}
    # a forged submit host gets no form
    forged = Client()
    token2 = enter(forged, study, "?assignmentId=A2&workerId=W8&turkSubmitTo=https://evil.example")
    p2 = participant(token2)
    for position in range(len(p2.trial_order)):
        forged.post(f"/p/{token2}/answer", {"position": str(position), "answer": "2"})
    assert "externalSubmit" not in forged.get(f"/p/{token2}/").content.decode()


def test_classroom_join_code_roster_and_live_view(make_study, researcher, outsider):
    study = make_study(recruitment={"mode": "classroom", "roster": ["Ada Lovelace", "Alan Turing"]})
    assert len(study.join_code) == 6
    wrong = Client().post("/j/", {"code": "NOPE00"})
    assert "No study has that code" in wrong.content.decode()
    student = Client()
    assert (
        student.post("/j/", {"code": study.join_code.lower()})["Location"]
        == f"/j/{study.join_code}/"
    )
    refused = student.post(f"/j/{study.join_code}/", {"name": "Grace Hopper"})
    assert "not on the class list" in refused.content.decode()
    joined = student.post(f"/j/{study.join_code}/", {"name": "  ada   LOVELACE "})
    token = token_of(joined["Location"])
    again = Client().post(f"/j/{study.join_code}/", {"name": "Ada Lovelace"})  # another device
    assert token_of(again["Location"]) == token
    p = participant(token)
    assert p.crowd_source == "classroom" and p.roster_name == "Ada Lovelace"
    teacher = Client()
    teacher.force_login(researcher)
    live = teacher.get(f"/r/studies/{study.slug}/live/?format=json").json()
    assert live["rows"][0]["name"] == "Ada Lovelace" and live["participants"] == 1
    nosy = Client()
    nosy.force_login(outsider)
    assert nosy.get(f"/r/studies/{study.slug}/live/?format=json").status_code == 404


def test_an_expired_session_or_csrf_cookie_does_not_lose_the_answer(make_study):
    study = make_study()
    browser = Client(enforce_csrf_checks=True)
    token = token_of(browser.get(f"/s/{study.slug}/")["Location"])
    browser.post(f"/p/{token}/consent", {"consent": "yes"})
    browser.cookies.clear()  # the session and CSRF cookies expired during a long break
    browser.post(f"/p/{token}/instructions")
    assert browser.post(f"/p/{token}/answer", {"position": "0", "answer": "3"}).status_code == 302
    assert Response.objects.get(participant__token=token).answer == "3"
    # a post from another site is still refused, and stores nothing
    forged = browser.post(
        f"/p/{token}/answer", {"position": "1", "answer": "3"}, HTTP_ORIGIN="https://evil.example"
    )
    assert forged.status_code == 403
    assert Response.objects.filter(participant__token=token).count() == 1


# --- researcher pages -----------------------------------------------------------------------------


def test_researcher_creates_edits_launches_pauses_and_closes_from_pages(engine_world, researcher):
    model, dataset = engine_world
    web = Client()
    web.force_login(researcher)
    bad = web.post("/r/studies/new/", {"spec": "version: 1\ntitle: X\nmodel: m\n"})
    body = bad.content.decode()
    assert (
        "(top level): &#x27;dataset&#x27; is a required property" in body
        and Study.objects.count() == 0
    )
    import yaml

    good = web.post("/r/studies/new/", {"spec": yaml.safe_dump(spec_for(model, dataset))})
    study = Study.objects.get()
    assert good["Location"] == f"/r/studies/{study.slug}/" and study.status == StudyStatus.DRAFT
    assert Client().get(f"/s/{study.slug}/").status_code == 410  # drafts take nobody
    preview = web.post(f"/r/studies/{study.slug}/preview/")
    assert participant(token_of(preview["Location"])).is_preview
    edited = spec_for(model, dataset, tasks=[{"type": "distinction"}])
    web.post(f"/r/studies/{study.slug}/edit/", {"spec": yaml.safe_dump(edited)})
    assert set(Study.objects.get().trials.values_list("task_type", flat=True)) == {"distinction"}
    assert not Participant.objects.exists()  # the preview went with the old trials
    web.post(f"/r/studies/{study.slug}/launch/")
    study.refresh_from_db()
    assert study.status == StudyStatus.OPEN and study.launched_at is not None
    frozen = web.get(f"/r/studies/{study.slug}/edit/", follow=True).content.decode()
    assert "spec is frozen" in frozen
    walker = Client()
    token = enter(walker, study)
    web.post(f"/r/studies/{study.slug}/pause/")
    assert Client().get(f"/s/{study.slug}/").status_code == 410  # nobody new
    assert walker.post(f"/p/{token}/answer", {"position": "0", "answer": "0"}).status_code == 302
    assert Response.objects.filter(participant__token=token).count() == 1  # started ones go on
    web.post(f"/r/studies/{study.slug}/close/")
    walker.post(f"/p/{token}/answer", {"position": "1", "answer": "0"})
    assert Response.objects.filter(participant__token=token).count() == 1


def test_pilot_with_bots_from_the_live_page(make_study, researcher):
    study = make_study(trials={"attention_checks": 1}, questionnaires=[{"type": "tradeoff"}])
    web = Client()
    web.force_login(researcher)
    page = web.post(f"/r/studies/{study.slug}/pilot/", {"bots": "3"}, follow=True).content.decode()
    assert "3 bots finished" in page
    done = Participant.objects.filter(
        study=study, is_simulated=True, stage=ParticipantStage.DEBRIEF
    )
    assert done.count() == 3


# --- model-based simulated participants and power ---------------------------------------------


def test_model_based_participants_answer_at_the_modelled_accuracy(make_study):
    from studies.simulation import ResponseModel, simulate_responses, simulated_participant_run

    study = make_study(
        conditions=[{"name": "gradcam", "method": "gradcam"}, {"name": "none", "method": "none"}]
    )
    rm = ResponseModel(
        accuracy={"gradcam": {"right": 0.9, "wrong": 0.3}, "none": {"right": 0.6, "wrong": 0.6}}
    )
    frame = simulate_responses(study, rm, 400, seed=1)
    acc = frame.groupby(["condition", "model_correct"])["is_correct"].mean()
    assert acc[("gradcam", True)] == pytest.approx(0.9, abs=0.03)
    assert acc[("gradcam", False)] == pytest.approx(0.3, abs=0.04)
    assert acc[("none", True)] == pytest.approx(0.6, abs=0.04)
    assert frame["participant"].nunique() == 400
    # through the real views too, marked simulated
    p = simulated_participant_run(client=Client(), study=study, rm=rm, seed=3)
    assert p.stage == ParticipantStage.DEBRIEF and p.is_simulated and p.bot_policy == "model"
    assert Response.objects.filter(participant=p).count() == len(p.trial_order)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ResponseModel(accuracy={"x": {"right": 1.2}})


def test_power_simulation_finds_a_large_effect_and_respects_alpha(make_study):
    from analysis.power import power_simulation
    from studies.simulation import ResponseModel

    study = make_study(
        conditions=[{"name": "gradcam", "method": "gradcam"}, {"name": "none", "method": "none"}]
    )
    big = ResponseModel(
        accuracy={"gradcam": {"right": 0.9, "wrong": 0.9}, "none": {"right": 0.5, "wrong": 0.5}}
    )
    table = power_simulation(study, big, [2, 40], n_sims=60, seed=2)
    assert list(table["n_participants"]) == [2, 40]
    assert table["power"].iloc[1] > 0.95 and table["power"].iloc[0] < table["power"].iloc[1]
    null = ResponseModel(default_accuracy=0.7)
    alpha = power_simulation(study, null, [40], n_sims=100, seed=3)["power"].iloc[0]
    assert alpha <= 0.12  # Fisher's exact test is conservative: at most ~alpha


@pytest.mark.parametrize(
    "recruitment",
    [
        {"mode": "public"},
        {"mode": "prolific"},
        {"mode": "mturk"},
        {"mode": "classroom", "roster": ["Ada Lovelace", "Alan Turing"]},
        {"mode": "classroom"},
    ],
    ids=["public", "prolific", "mturk", "classroom-roster", "classroom-open"],
)
def test_study_pilot_command_walks_bots_in_every_recruitment_mode(
    make_study, recruitment, tmp_path
):
    from django.core.management import call_command

    study = make_study(
        recruitment=recruitment,
        trials={"practice": 1, "attention_checks": 1},
        questionnaires=[{"type": "demographics"}],
    )
    record = tmp_path / "pilot.json"
    call_command("study_pilot", study.slug, "--bots", "2", "--record", str(record))
    data = json.loads(record.read_text())
    assert data["mode"] == recruitment["mode"]
    assert all(b["completion_code_ok"] for b in data["bots"]) and len(data["bots"]) == 2
    people = Participant.objects.filter(study=study)
    assert people.count() == 2 and all(p.is_simulated for p in people)
    assert {p.crowd_source for p in people} == {
        {"public": "", "prolific": "prolific", "mturk": "mturk", "classroom": "classroom"}[
            recruitment["mode"]
        ]
    }
    if recruitment.get("roster"):
        assert sorted(p.roster_name for p in people) == ["Ada Lovelace", "Alan Turing"]
        assert data["bots"][0]["pages"][0].startswith(f"/j/{study.join_code}/")


def test_the_frozen_spec_is_exported_with_the_results_and_studies_come_from_the_api(
    engine_world, researcher
):
    import yaml

    model, dataset = engine_world
    api = Client()
    api.force_login(researcher)
    bad = api.post("/api/studies/", {"spec": {"version": 1}}, content_type="application/json")
    assert (
        bad.status_code == 400
        and "(top level): 'title' is a required property" in bad.json()["errors"]
    )
    made = api.post(
        "/api/studies/",
        {"spec": spec_for(model, dataset, trials={"seed": 5}), "launch": True},
        content_type="application/json",
    )
    assert made.status_code == 201
    body = made.json()
    assert body["status"] == "open" and body["spec"]["trials"]["seed"] == 5 and body["launched_at"]
    exported = api.get(f"/r/studies/{body['slug']}/spec.yaml")
    assert exported["Content-Type"].startswith("application/yaml")
    spec = yaml.safe_load(exported.content)
    assert spec["trials"]["seed"] == 5 and spec["resolved"]["arms"] == ["gradcam/agreement"]
    assert Client().get(f"/r/studies/{body['slug']}/spec.yaml").status_code == 302  # login


def test_the_csv_has_every_response_and_the_table_only_scored_main_trials(make_study, researcher):
    import csv
    import io

    from analysis.results import study_results

    study = make_study(
        trials={"practice": 1, "attention_checks": 1}, questionnaires=[{"type": "free_text"}]
    )
    for policy, seed in (("uniform", 1), ("careless", 2), ("careless", 5)):
        bot_run(
            transport=DjangoClientTransport(Client()),
            start_path=f"/s/{study.slug}/?SIMULATION_KEY={study.simulation_key}&BOT_POLICY={policy}",
            policy=policy,
            seed=seed,
        )
    web = Client()
    web.force_login(researcher)
    rows = list(
        csv.DictReader(
            io.StringIO(web.get(f"/r/studies/{study.slug}/responses.csv").content.decode())
        )
    )
    assert Counter(r["kind"] for r in rows) == Counter(
        Response.objects.filter(participant__study=study).values_list("trial__kind", flat=True)
    )
    assert {"practice", "attention", "survey", "main"} <= {r["kind"] for r in rows}
    results = study_results(study)
    excluded = {r["participant"] for r in rows if r["excluded"] == "True"}
    assert results.n_excluded == len(excluded) >= 1
    kept_main = [r for r in rows if r["kind"] == "main" and r["excluded"] == "False"]
    assert int(results.table[results.table["model"] == "all"]["n"].sum()) == len(kept_main)


def test_a_paused_study_still_lets_those_who_started_come_back(make_study):
    study = make_study(recruitment={"mode": "prolific"})
    query = "?PROLIFIC_PID=back123"
    token = enter(Client(), study, query)
    services.study_pause(study=study)
    again = Client().get(f"/s/{study.slug}/{query}")  # another device, same PID
    assert again.status_code == 302 and token_of(again["Location"]) == token
    assert Client().get(f"/s/{study.slug}/?PROLIFIC_PID=new456").status_code == 410
    assert Participant.objects.filter(study=study).count() == 1


def test_a_signed_method_condition_is_shown_with_its_sign(make_study):
    study = make_study(
        conditions=[{"name": "ig", "method": "integrated_gradients"}],
        tasks=[{"type": "agreement"}, {"type": "distinction"}],
        task_assignment="within",
    )
    trial = study.trials.filter(task_type="agreement", kind="main").first()
    heat = np.asarray(Image.open(default_storage.open(trial.stimuli["heatmap"])).convert("RGB"))
    photo = np.asarray(
        Image.open(default_storage.open(trial.stimuli["photo"])).convert("RGB")
    ).astype(int)
    t = trial.predicted_index
    neg, pos = heat[t + 1, 12].astype(int), heat[t + 1, 5].astype(int)
    # blue-white-red around 0: the negative strip leans blue, the positive one red, against the photo
    assert neg[2] - neg[0] > photo[t + 1, 12, 2] - photo[t + 1, 12, 0]
    assert pos[0] - pos[2] > photo[t + 1, 5, 0] - photo[t + 1, 5, 2]
    assert study.trials.filter(task_type="distinction").exists()


def test_study_commands_refuse_bad_input_and_create_nothing(make_study, tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ntitle: X\ntasks: [{type: telepathy}]\n")
    with pytest.raises(CommandError, match=r"tasks\[0\]\.type: 'telepathy' is not one of"):
        call_command("study_create", str(bad), "--owner", "researcher")
    with pytest.raises(CommandError, match="--owner: no user named 'nobody'"):
        call_command("study_create", str(bad), "--owner", "nobody")
    with pytest.raises(CommandError, match="cannot read"):
        call_command("study_create", str(tmp_path / "missing.yaml"), "--owner", "researcher")
    assert not Study.objects.exists()
    draft = make_study(open_now=False)
    with pytest.raises(CommandError, match="is draft; launch it first"):
        call_command("study_pilot", draft.slug)
    with pytest.raises(CommandError, match="no study 'nope'"):
        call_command("study_pilot", "nope")
    assert not Participant.objects.exists()
