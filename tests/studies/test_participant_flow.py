"""Participants, end to end through the real views (oTree-style bots and must-fail submissions)."""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
import urllib.request

import pytest
from django.test import Client

from studies import services
from studies.bots import DjangoClientTransport, bot_run, parse_page
from studies.models import Participant, ParticipantStage, Response, StudyStatus, TaskType
from tests.conftest import CLASS_NAMES

SERVER_ONLY = [
    "model_correct",
    "true_index",
    "correct_value",
    "option_classes",
    "is_correct",
    "ground_truth",
    "ground truth",
    "true_class",
    "label_index",
]


def start(client: Client, study, query: str = "") -> str:
    response = client.get(f"/s/{study.slug}/{query}")
    assert response.status_code == 302
    return response["Location"]


def advance_to_trials(client: Client, study, query: str = "") -> str:
    page = start(client, study, query)
    token = page.strip("/").split("/")[1]
    assert client.post(f"/p/{token}/consent", {"consent": "yes"}).status_code == 302
    assert client.post(f"/p/{token}/instructions").status_code == 302
    return token


def current_form(client: Client, token: str) -> dict:
    html = client.get(f"/p/{token}/").content.decode()
    form = parse_page(html).forms[0]
    return {
        "position": form.fields["position"],
        "choices": form.choices["answer"],
        "task": form.attrs["data-task"],
        "html": html,
    }


def test_bot_completes_the_study_through_the_views(hive_study):
    key = hive_study.simulation_key
    result = bot_run(
        transport=DjangoClientTransport(Client()),
        start_path=f"/s/{hive_study.slug}/?SIMULATION_KEY={key}&BOT_POLICY=uniform",
        policy="uniform",
        seed=3,
    )
    assert result.completion_code == hive_study.completion_code
    assert result.answers == 2  # one task, two labelled photos
    participant = Participant.objects.get()
    assert participant.is_simulated and participant.bot_policy == "uniform"
    assert participant.stage == ParticipantStage.DEBRIEF and participant.completed_at
    assert Response.objects.filter(participant=participant).count() == 2


def test_each_participant_does_one_task_and_tasks_stay_balanced(hive_study):
    """Between subjects, as in HIVE: seeing the model's prediction in the agreement task would
    tell a participant which distinction candidate the model picked."""
    seen = []
    for _ in range(4):
        client = Client()
        token = advance_to_trials(client, hive_study)
        tasks = set()
        for _ in range(2):
            form = current_form(client, token)
            tasks.add(form["task"])
            client.post(
                f"/p/{token}/answer", {"position": form["position"], "answer": form["choices"][0]}
            )
        assert len(tasks) == 1
        seen.append(tasks.pop())
    assert seen == ["agreement", "distinction", "agreement", "distinction"]
    assert [p.arm.split("/")[-1] for p in Participant.objects.order_by("id")] == seen


def test_distinction_candidate_order_is_drawn_per_participant(hive_study):
    orders = set()
    for _ in range(12):
        client = Client()
        token = advance_to_trials(client, hive_study)
        participant = Participant.objects.get(token=token)
        if not participant.arm.endswith(TaskType.DISTINCTION):
            continue
        form = current_form(client, token)
        labels = tuple(re.findall(r'alt="heatmap for ([a-z]+)"', form["html"]))
        assert labels == tuple(
            re.findall(r'alt="heatmap for ([a-z]+)"', current_form(client, token)["html"])
        )
        orders.add(labels)
    assert len(orders) > 1  # 6 participants x 4! orders: the same order for all is ~1e-6


def test_wrong_simulation_key_does_not_mark_a_bot(hive_study):
    client = Client()
    start(client, hive_study, "?SIMULATION_KEY=guess&BOT_POLICY=uniform")
    participant = Participant.objects.get()
    assert not participant.is_simulated and participant.bot_policy == ""


def test_reload_mid_study_resumes_at_the_same_trial(hive_study):
    client = Client()
    token = advance_to_trials(client, hive_study)
    first = current_form(client, token)
    client.post(
        f"/p/{token}/answer", {"position": first["position"], "answer": first["choices"][0]}
    )
    second = current_form(client, token)
    again = current_form(client, token)  # reload
    assert second["position"] == again["position"] == "1"
    # re-opening the start link in the same browser resumes too, without a new participant
    assert start(client, hive_study) == f"/p/{token}/"
    assert Participant.objects.count() == 1


def test_prolific_participant_returning_resumes_the_same_record(hive_study):
    query = "?PROLIFIC_PID=abc123&STUDY_ID=s1&SESSION_ID=x9"
    token = advance_to_trials(Client(), hive_study, query)
    other_browser = start(Client(), hive_study, query)
    assert other_browser == f"/p/{token}/"
    participant = Participant.objects.get()
    assert (
        participant.crowd_source,
        participant.crowd_id_hash,
        participant.prolific_study_id,
        participant.prolific_session_id,
    ) == ("prolific", services.crowd_id_hash(hive_study, "prolific", "abc123"), "s1", "x9")


def test_same_answer_posted_twice_stores_one_response(hive_study):
    client = Client()
    token = advance_to_trials(client, hive_study)
    form = current_form(client, token)
    for answer in (form["choices"][0], form["choices"][1]):  # double click, then back+change
        client.post(f"/p/{token}/answer", {"position": form["position"], "answer": answer})
    responses = list(Response.objects.all())
    assert len(responses) == 1
    assert responses[0].answer == form["choices"][0]  # the first answer stands


def test_invalid_and_out_of_order_answers_are_refused(hive_study):
    client = Client()
    token = advance_to_trials(client, hive_study)
    client.post(f"/p/{token}/answer", {"position": "0", "answer": "not-an-option"})
    client.post(f"/p/{token}/answer", {"position": "1", "answer": "1"})  # skipping ahead
    client.post(f"/p/{token}/answer", {"position": "zero", "answer": "1"})
    assert Response.objects.count() == 0
    page = client.get(f"/p/{token}/").content.decode()
    assert "Please choose one of the options" in page or "went wrong" in page


def test_answers_before_consent_are_refused(hive_study):
    client = Client()
    token = start(client, hive_study).strip("/").split("/")[1]
    client.post(f"/p/{token}/answer", {"position": "0", "answer": "1"})
    api = client.post(
        f"/api/p/{token}/", {"position": 0, "answer": "1"}, content_type="application/json"
    )
    assert api.status_code == 410
    assert Response.objects.count() == 0


def test_declining_consent_records_no_answers(hive_study):
    client = Client()
    token = start(client, hive_study).strip("/").split("/")[1]
    client.post(f"/p/{token}/consent", {"consent": "no"})
    assert Participant.objects.get().stage == ParticipantStage.DECLINED
    assert "chose not to take part" in client.get(f"/p/{token}/").content.decode()


def test_closed_study_turns_participants_away(hive_study):
    hive_study.status = StudyStatus.CLOSED
    hive_study.save()
    assert Client().get(f"/s/{hive_study.slug}/").status_code == 410
    assert Participant.objects.count() == 0


@pytest.mark.parametrize("task", ["agreement", "distinction"])
def test_participant_cannot_see_ground_truth_or_model_correctness(hive_study, task):
    """Every page, image URL and JSON payload of a whole run is free of server-only fields,
    and the true class of the wrongly predicted photo never appears on its agreement page."""
    client = Client()
    if task == "distinction":
        advance_to_trials(Client(), hive_study)  # the first participant takes agreement
    token = advance_to_trials(client, hive_study)
    assert Participant.objects.get(token=token).arm.split("/")[-1] == task
    true_of_wrong = CLASS_NAMES[4]  # eland: only a distinction candidate may name it
    for _ in range(2):
        form = current_form(client, token)
        assert form["task"] == task
        api = client.get(f"/api/p/{token}/")
        body = json.loads(api.content)
        for text in (form["html"], api.content.decode()):
            for word in SERVER_ONLY:
                assert word not in text
        assert set(body) == {
            "stage",
            "study_title",
            "progress",
            "trial",
            "completion_code",
            "completion",
            "accuracy",
            "practice_feedback",
            "prolific",
        }
        assert body["accuracy"] is None and body["practice_feedback"] is None
        allowed = {
            "position",
            "task",
            "kind",
            "title",
            "question",
            "help",
            "photo",
            "options",
            "heatmap",
            "predicted_label",
        }
        assert set(body["trial"]) <= allowed
        if task == TaskType.AGREEMENT:
            assert true_of_wrong not in form["html"]
            assert true_of_wrong not in api.content.decode()
        else:
            assert (
                "predicted_label" not in body["trial"] and "The model predicts" not in form["html"]
            )
        for url in re.findall(r'src="([^"]+)"', form["html"]):
            assert re.fullmatch(rf"/p/{token}/img/\d+/(photo|heatmap|h[0-3])\.png", url)
        post = client.post(
            f"/api/p/{token}/",
            {"position": int(form["position"]), "answer": form["choices"][0]},
            content_type="application/json",
        )
        for word in SERVER_ONLY:
            assert word not in post.content.decode()
    debrief = client.get(f"/p/{token}/").content.decode()
    assert hive_study.completion_code in debrief
    assert "%" not in re.sub(r"<style>.*?</style>", "", debrief, flags=re.S)  # no score shown


def test_participant_sees_only_their_own_images(hive_study):
    alice, bob = Client(), Client()
    token_a = advance_to_trials(alice, hive_study)
    advance_to_trials(bob, hive_study)
    assert alice.get(f"/p/{token_a}/img/0/photo.png").status_code == 200
    assert alice.get(f"/p/{token_a}/img/0/secret.png").status_code == 404
    assert alice.get(f"/p/{token_a}/img/99/photo.png").status_code == 404
    assert Client().get("/p/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_api_answers_are_idempotent_and_say_nothing_about_correctness(hive_study):
    client = Client()
    token = advance_to_trials(client, hive_study)
    form = current_form(client, token)
    payload = {"position": int(form["position"]), "answer": form["choices"][0], "rt_ms": 1234}
    first = client.post(f"/api/p/{token}/", payload, content_type="application/json")
    second = client.post(f"/api/p/{token}/", payload, content_type="application/json")
    assert (first.status_code, second.status_code) == (201, 200)
    assert (
        json.loads(first.content)["stored"] is True
        and json.loads(second.content)["stored"] is False
    )
    assert Response.objects.get().rt_ms == 1234
    bad = client.post(
        f"/api/p/{token}/", {"position": 1, "answer": "nope"}, content_type="application/json"
    )
    assert bad.status_code == 400
    ahead = client.post(
        f"/api/p/{token}/", {"position": 3, "answer": "1"}, content_type="application/json"
    )
    assert ahead.status_code == 409


@pytest.mark.django_db(transaction=True)
def test_same_answer_posted_five_times_concurrently_stores_one_response(
    live_server, tiny_world, researcher
):
    from studies.services import study_create_hive

    model, dataset = tiny_world
    study = study_create_hive(title="Race", owner=researcher, model=model, dataset=dataset, seed=2)
    client = Client()
    token = advance_to_trials(client, study)
    form = current_form(client, token)
    cookie = "; ".join(f"{k}={v.value}" for k, v in client.cookies.items())
    # no CSRF token: participant posts are authenticated by the URL token (see views)
    body = urllib.parse.urlencode(
        {"position": form["position"], "answer": form["choices"][0]}
    ).encode()
    barrier = threading.Barrier(5)
    statuses: list[int] = []

    def post() -> None:
        request = urllib.request.Request(
            f"{live_server.url}/p/{token}/answer",
            data=body,
            headers={"Cookie": cookie, "Referer": live_server.url},
        )
        barrier.wait()
        with urllib.request.urlopen(request, timeout=30) as resp:
            statuses.append(resp.status)

    threads = [threading.Thread(target=post) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 5  # each followed the redirect to the current page
    assert Response.objects.filter(participant__token=token).count() == 1


def test_an_answer_costs_a_handful_of_queries(hive_study, django_assert_max_num_queries):
    """The persisting request is the hot path of a crowd launch: participant and study (1),
    the compare-and-set of its progress (1) and the insert (1); trials come from the
    per-process cache, so the next trial costs nothing. (The test's own transaction turns
    the service's BEGIN/COMMIT into a SAVEPOINT and its RELEASE, counted here: 5.)"""
    client = Client()
    token = advance_to_trials(client, hive_study)
    form = current_form(client, token)
    payload = {"position": int(form["position"]), "answer": form["choices"][0]}
    with django_assert_max_num_queries(5):
        response = client.post(f"/api/p/{token}/", payload, content_type="application/json")
    assert response.status_code == 201
