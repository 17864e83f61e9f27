"""Who may reach what: every researcher and participant endpoint against every role.

Roles: ``owner`` (staff, owns the study), ``co`` (staff, owns nothing), ``outsider`` (a plain
logged-in user), ``curator`` (a logged-in user in the Django group "curators", not staff),
``participant`` (a browser that enrolled through the start link: a session and a token, no
login) and ``anonymous`` (a fresh browser).

The rules, as the code implements them (derived from the views, stated here once):

* Study pages (``/r/studies/<slug>/``, its ``results/``, ``results.png``, ``responses.csv``):
  ``login_required`` then ``study_get_for_user``: the owner (or a superuser) gets 200; every
  other logged-in user gets 404, staff or not, so a study's existence is not revealed.
  Not logged in (participant, anonymous): 302 to ``/admin/login/?next=...``.
* ``/r/`` (researcher home): ``login_required`` only: any logged-in user gets 200 but sees
  only the studies they own, and the job list only when staff.
* Job pages (``/r/jobs/<id>/``, ``/r/explanations/<id>/overlay.png``):
  ``staff_member_required``: any staff user gets 200, ownership does not matter (jobs have
  no owner); everyone else, logged in or not, 302 to the admin login.
* DRF APIs (``/api/jobs/<id>/``, ``POST /api/datasets/<id>/items/``): not logged in is 403
  (session authentication comes first and sends no ``WWW-Authenticate`` challenge, so not
  401). A job is visible to whoever can see its dataset; the world's dataset is shared (no
  owner), so every logged-in user gets 200. Adding images to a shared dataset is for staff
  (and superusers): staff 201, other logged-in users 403. ``tests/test_api.py`` covers owned
  objects.
* ``/admin/``: staff 200 (the index, even with no model permissions); others 302 to login.
* The group "curators" grants nothing anywhere: a curator is treated as an outsider.
* Participant endpoints (``/p/<token>/...``, ``/api/p/<token>/``): the token in the URL is the
  only credential. Login, staff status and session are irrelevant: whoever holds the token
  gets the same answer; an unknown token is 404 everywhere. What keeps participants apart is
  that a token only reaches its own participant's trials and state (tested below the matrix).
"""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from explanations.models import Explanation, ExplanationJob, ExplanationJobItem, JobStatus
from studies import services
from studies.models import Participant, ParticipantStage, Response, Trial
from tests.conftest import png_bytes

ROLES = ("owner", "co", "outsider", "curator", "participant", "anonymous")

# --- the literal tables -------------------------------------------------------------------
# endpoint key -> (owner, co, outsider, curator, participant, anonymous)
# fmt: off
RESEARCHER_EXPECTED: dict[str, tuple[int, ...]] = {
    #                     owner  co   outsider curator particip. anon
    "home":              (200,  200,  200,     200,    302,      302),
    "study_detail":      (200,  404,  404,     404,    302,      302),
    "results":           (200,  404,  404,     404,    302,      302),
    "results_png":       (200,  404,  404,     404,    302,      302),
    "responses_csv":     (200,  404,  404,     404,    302,      302),
    "codebook_csv":      (200,  404,  404,     404,    302,      302),
    "spec_yaml":         (200,  404,  404,     404,    302,      302),
    "responses_parquet": (200,  404,  404,     404,    302,      302),
    "report_html":       (200,  404,  404,     404,    302,      302),
    "plot_png":          (200,  404,  404,     404,    302,      302),
    "shared_interest":   (200,  404,  404,     404,    302,      302),
    "job_detail":        (200,  200,  302,     302,    302,      302),
    "overlay_png":       (200,  200,  302,     302,    302,      302),
    "api_job":           (200,  200,  200,     200,    403,      403),
    "api_dataset_items": (201,  201,  403,     403,    403,      403),
    "admin":             (200,  200,  302,     302,    302,      302),
    # study engine pages: creating one's own study needs a login only; the rest are owner-only
    "study_new":         (200,  200,  200,     200,    302,      302),
    "study_edit":        (302,  404,  404,     404,    302,      302),  # frozen: to detail
    "study_live":        (200,  404,  404,     404,    302,      302),
    "study_live_json":   (200,  404,  404,     404,    302,      302),
    "study_preview":     (302,  404,  404,     404,    302,      302),  # owner: to the preview
    "study_pilot":       (302,  404,  404,     404,    302,      302),  # owner: to the live page
    "study_pause":       (302,  404,  404,     404,    302,      302),  # owner: to the detail page
}

# The token is the credential: the same status for every role holding it.
PARTICIPANT_EXPECTED: dict[str, tuple[int, ...]] = {
    #                 owner  co   outsider curator particip. anon
    "page":          (200,  200,  200,     200,    200,      200),
    "consent":       (302,  302,  302,     302,    302,      302),
    "instructions":  (302,  302,  302,     302,    302,      302),
    "answer":        (302,  302,  302,     302,    302,      302),
    "feedback":      (302,  302,  302,     302,    302,      302),
    "stimulus":      (200,  200,  200,     200,    200,      200),
    "api_get":       (200,  200,  200,     200,    200,      200),
    "api_post":      (201,  201,  201,     201,    201,      201),
}
# fmt: on


@pytest.fixture(autouse=True)
def _fresh_rate_limit_counters():
    """The rate limiter counts in the (process-wide) cache; start and leave it empty."""
    cache.clear()
    yield
    cache.clear()


def login(username: str, password: str) -> Client:
    client = Client()
    assert client.login(username=username, password=password)
    return client


def enrol(study) -> tuple[Client, str]:
    """A browser that followed the start link: it has a session and a token, no login."""
    client = Client()
    response = client.get(f"/s/{study.slug}/")
    assert response.status_code == 302
    token = response["Location"].strip("/").split("/")[1]
    return client, token


def advance(token: str, stage: str) -> Participant:
    """Move a participant forward through the services to ``stage``."""
    participant = Participant.objects.get(token=token)
    order = [ParticipantStage.INSTRUCTIONS, ParticipantStage.TRIALS, ParticipantStage.DEBRIEF]
    if stage in order:  # consent takes a place and assigns the task and trial order
        participant = services.participant_consent(participant=participant, agree=True)
    if stage in order[1:]:
        services.participant_instructions_done(participant=participant)
    if stage == ParticipantStage.DEBRIEF:
        for position in range(len(participant.trial_order)):
            answer_at(participant, position)
    participant.refresh_from_db()
    assert participant.stage == stage
    return participant


def first_option(participant: Participant, position: int) -> str:
    return Trial.objects.get(pk=participant.trial_order[position]).options[0]["value"]


def answer_at(participant: Participant, position: int) -> None:
    participant.refresh_from_db()
    result = services.response_submit(
        participant=participant, position=position, answer=first_option(participant, position)
    )
    assert result.created


@pytest.fixture
def world(hive_study, tiny_world, researcher, co_researcher, outsider):
    """The study, a job with an explanation, and one client per role."""
    model, dataset = tiny_world
    curator = get_user_model().objects.create_user("curator", password="pw-curator")
    curator.groups.add(Group.objects.create(name="curators"))
    assert not curator.is_staff
    job = ExplanationJob.objects.create(
        model=model,
        dataset=dataset,
        method="gradcam",
        total_items=3,
        done_items=3,
        status=JobStatus.SUCCEEDED,
    )
    for item in dataset.items.all():
        ExplanationJobItem.objects.create(job=job, item=item, status="done")
    explanation = Explanation.objects.filter(model=model, item__name="right").first()
    participant_client, token = enrol(hive_study)
    # one answer, so results, plot and CSV have something to show
    answer_at(advance(token, ParticipantStage.TRIALS), 0)
    clients = {
        "owner": login("researcher", "pw-researcher"),
        "co": login("co", "pw-co"),
        "outsider": login("outsider", "pw-outsider"),
        "curator": login("curator", "pw-curator"),
        "participant": participant_client,
        "anonymous": Client(),
    }
    return {
        "study": hive_study,
        "dataset": dataset,
        "job": job,
        "explanation": explanation,
        "clients": clients,
    }


def _upload_png(seed: int) -> SimpleUploadedFile:
    pixels = np.full((6, 7, 3), seed * 30 % 256, dtype=np.uint8)
    pixels[0, 0] = [seed, 255 - seed, 7]
    return SimpleUploadedFile(f"upload-{seed}.png", png_bytes(pixels), content_type="image/png")


def _researcher_request(endpoint: str, client: Client, w: dict, seed: int):
    slug, job, expl = w["study"].slug, w["job"], w["explanation"]
    gets = {
        "home": "/r/",
        "study_detail": f"/r/studies/{slug}/",
        "results": f"/r/studies/{slug}/results/",
        "results_png": f"/r/studies/{slug}/results.png",
        "responses_csv": f"/r/studies/{slug}/responses.csv",
        "codebook_csv": f"/r/studies/{slug}/codebook.csv",
        "spec_yaml": f"/r/studies/{slug}/spec.yaml",
        "responses_parquet": f"/r/studies/{slug}/responses.parquet",
        "report_html": f"/r/studies/{slug}/report.html",
        "plot_png": f"/r/studies/{slug}/plots/response_times.png",
        "shared_interest": f"/r/studies/{slug}/shared-interest/",
        "job_detail": f"/r/jobs/{job.pk}/",
        "overlay_png": f"/r/explanations/{expl.pk}/overlay.png",
        "api_job": f"/api/jobs/{job.pk}/",
        "admin": "/admin/",
        "study_new": "/r/studies/new/",
        "study_edit": f"/r/studies/{slug}/edit/",
        "study_live": f"/r/studies/{slug}/live/",
        "study_live_json": f"/r/studies/{slug}/live/?format=json",
    }
    posts = {
        "study_preview": (f"/r/studies/{slug}/preview/", {}),
        "study_pilot": (f"/r/studies/{slug}/pilot/", {"bots": "1"}),
        "study_pause": (f"/r/studies/{slug}/pause/", {}),
    }
    if endpoint in gets:
        return gets[endpoint], client.get(gets[endpoint])
    if endpoint in posts:
        url, data = posts[endpoint]
        return url, client.post(url, data)
    assert endpoint == "api_dataset_items"
    url = f"/api/datasets/{w['dataset'].pk}/items/"
    return url, client.post(url, {"file": _upload_png(seed)})


@pytest.mark.parametrize("endpoint", list(RESEARCHER_EXPECTED))
def test_researcher_endpoint_statuses_per_role(world, endpoint):
    expected = dict(zip(ROLES, RESEARCHER_EXPECTED[endpoint], strict=True))
    items_before = world["dataset"].items.count()
    actual, bodies = {}, {}
    for seed, role in enumerate(ROLES, start=1):
        url, response = _researcher_request(endpoint, world["clients"][role], world, seed)
        actual[role] = response.status_code
        bodies[role] = response
        if response.status_code == 302 and role != "owner":
            # every refusal of a page is a redirect to the login, never somewhere else
            assert response["Location"].startswith("/admin/login/?next="), (role, url)
    assert actual == expected

    if endpoint == "api_dataset_items":
        # only the two staff uploads were stored; the refused ones left nothing behind
        names = set(world["dataset"].items.values_list("name", flat=True))
        assert world["dataset"].items.count() == items_before + 2
        assert {"upload-1.png", "upload-2.png"} <= names
        assert not names & {f"upload-{s}.png" for s in range(3, 7)}
    if endpoint == "api_job":
        body = json.loads(bodies["co"].content)
        assert (body["id"], body["status"], body["progress"]) == (world["job"].pk, "succeeded", 1.0)
    if endpoint == "overlay_png":
        assert bodies["owner"]["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(b"".join(bodies["owner"].streaming_content))).size == (16, 16)
    if endpoint == "study_preview":
        assert bodies["owner"]["Location"].startswith("/p/")
        assert Participant.objects.filter(is_preview=True).count() == 1
    if endpoint == "study_pause":
        world["study"].refresh_from_db()
        assert world["study"].status == "paused"
    if endpoint == "study_pilot":
        assert Participant.objects.filter(is_simulated=True, stage="debrief").count() == 1
    if endpoint == "responses_csv":
        assert len(bodies["owner"].content.decode().strip().splitlines()) == 2  # header + 1


def test_researcher_home_lists_only_own_studies_and_jobs_only_for_staff(world):
    title, job_link = world["study"].title, f"/r/jobs/{world['job'].pk}/"
    pages = {
        role: world["clients"][role].get("/r/").content.decode()
        for role in ("owner", "co", "outsider", "curator")
    }
    assert title in pages["owner"] and job_link in pages["owner"]
    assert title not in pages["co"] and job_link in pages["co"]
    for role in ("outsider", "curator"):
        assert title not in pages[role] and job_link not in pages[role]


def test_a_superuser_sees_every_study(world):
    get_user_model().objects.create_superuser("root", password="pw-root")
    client = login("root", "pw-root")
    slug = world["study"].slug
    for url in (f"/r/studies/{slug}/", f"/r/studies/{slug}/responses.csv"):
        assert client.get(url).status_code == 200
    assert world["study"].title in client.get("/r/").content.decode()


def test_an_unknown_study_is_404_for_its_would_be_owner(world):
    owner = world["clients"]["owner"]
    for url in ("/r/studies/nope/", "/r/studies/nope/results/", "/r/studies/nope/responses.csv"):
        assert owner.get(url).status_code == 404


# --- participant endpoints ----------------------------------------------------------------

_PARTICIPANT_SETUP = {
    "page": ParticipantStage.CONSENT,
    "consent": ParticipantStage.CONSENT,
    "instructions": ParticipantStage.INSTRUCTIONS,
    "answer": ParticipantStage.TRIALS,
    "feedback": ParticipantStage.DEBRIEF,
    "stimulus": ParticipantStage.INSTRUCTIONS,  # images exist once consent assigned trials
    "api_get": ParticipantStage.CONSENT,
    "api_post": ParticipantStage.TRIALS,
}


def _participant_request(endpoint: str, client: Client, participant: Participant):
    t = participant.token
    if endpoint == "page":
        return client.get(f"/p/{t}/")
    if endpoint == "consent":
        return client.post(f"/p/{t}/consent", {"consent": "yes"})
    if endpoint == "instructions":
        return client.post(f"/p/{t}/instructions")
    if endpoint == "answer":
        return client.post(
            f"/p/{t}/answer", {"position": "0", "answer": first_option(participant, 0)}
        )
    if endpoint == "feedback":
        return client.post(f"/p/{t}/feedback", {"feedback": "nice study"})
    if endpoint == "stimulus":
        return client.get(f"/p/{t}/img/0/photo.png")
    if endpoint == "api_get":
        return client.get(f"/api/p/{t}/")
    assert endpoint == "api_post"
    return client.post(
        f"/api/p/{t}/",
        {"position": 0, "answer": first_option(participant, 0)},
        content_type="application/json",
    )


def _participant_effect(endpoint: str, participant: Participant, response) -> None:
    """What the request must have done (the token alone authorises it)."""
    participant.refresh_from_db()
    if response.status_code == 302:
        assert response["Location"] == f"/p/{participant.token}/"
    if endpoint == "consent":
        assert participant.stage == ParticipantStage.INSTRUCTIONS
    elif endpoint == "instructions":
        assert participant.stage == ParticipantStage.TRIALS
    elif endpoint in ("answer", "api_post"):
        assert list(participant.responses.values_list("position", flat=True)) == [0]
    elif endpoint == "feedback":
        assert participant.feedback == "nice study"
    elif endpoint == "stimulus":
        trial = Trial.objects.get(pk=participant.trial_order[0])
        with default_storage.open(trial.stimuli["photo"], "rb") as fh:
            assert b"".join(response.streaming_content) == fh.read()
    elif endpoint == "api_get":
        assert json.loads(response.content)["stage"] == "consent"
    elif endpoint == "page":
        assert "Information and consent" in response.content.decode()


@pytest.mark.parametrize("endpoint", list(PARTICIPANT_EXPECTED))
def test_participant_endpoint_statuses_per_role(world, endpoint):
    """Each role acts on a fresh participant of its own, holding that participant's token."""
    expected = dict(zip(ROLES, PARTICIPANT_EXPECTED[endpoint], strict=True))
    actual = {}
    for role in ROLES:
        enrol_client, token = enrol(world["study"])
        participant = advance(token, _PARTICIPANT_SETUP[endpoint])
        client = enrol_client if role == "participant" else world["clients"][role]
        response = _participant_request(endpoint, client, participant)
        actual[role] = response.status_code
        _participant_effect(endpoint, participant, response)
    assert actual == expected


def test_unknown_tokens_are_404_on_every_participant_endpoint(world):
    before = Participant.objects.count(), Response.objects.count()
    client = Client()
    for token in (uuid.uuid4(), "00000000-0000-0000-0000-000000000000"):
        for method, url, data in [
            ("get", f"/p/{token}/", None),
            ("post", f"/p/{token}/consent", {"consent": "yes"}),
            ("post", f"/p/{token}/instructions", {}),
            ("post", f"/p/{token}/answer", {"position": "0", "answer": "1"}),
            ("post", f"/p/{token}/feedback", {"feedback": "x"}),
            ("get", f"/p/{token}/img/0/photo.png", None),
            ("get", f"/api/p/{token}/", None),
        ]:
            response = getattr(client, method)(url, data) if data is not None else client.get(url)
            assert response.status_code == 404, url
        api_post = client.post(
            f"/api/p/{token}/", {"position": 0, "answer": "1"}, content_type="application/json"
        )
        assert api_post.status_code == 404
    assert client.get("/p/not-a-uuid/").status_code == 404
    assert (Participant.objects.count(), Response.objects.count()) == before


def test_a_token_reaches_images_only_within_its_own_trial_order(world):
    client, token = enrol(world["study"])
    participant = advance(token, ParticipantStage.INSTRUCTIONS)
    n = len(participant.trial_order)
    assert n >= 2
    for position, trial_id in enumerate(participant.trial_order):
        trial = Trial.objects.get(pk=trial_id)
        for slot, name in trial.stimuli.items():
            response = client.get(f"/p/{token}/img/{position}/{slot}.png")
            assert response.status_code == 200
            with default_storage.open(name, "rb") as fh:
                assert b"".join(response.streaming_content) == fh.read()
        absent = "h0" if "heatmap" in trial.stimuli else "heatmap"
        assert client.get(f"/p/{token}/img/{position}/{absent}.png").status_code == 404
    for position in (n, n + 1, 99, 10**6):
        assert client.get(f"/p/{token}/img/{position}/photo.png").status_code == 404
    assert client.get(f"/p/{token}/img/-1/photo.png").status_code == 404
    assert client.get(f"/p/{token}/img/0/..%2Fsecret.png").status_code == 404


def test_the_participant_api_reports_only_the_token_holders_own_progress(world):
    study = world["study"]
    _, token_a = enrol(study)
    _, token_b = enrol(study)
    a = advance(token_a, ParticipantStage.TRIALS)
    b = advance(token_b, ParticipantStage.TRIALS)
    n_a, n_b = len(a.trial_order), len(b.trial_order)
    assert n_a >= 2 and n_b >= 2
    for position in range(n_b):  # B answers everything
        answer_at(b, position)
    answer_at(a, 0)  # A answers one
    client = Client()
    state_a = json.loads(client.get(f"/api/p/{token_a}/").content)
    state_b = json.loads(client.get(f"/api/p/{token_b}/").content)
    assert state_a["stage"] == "trials"
    assert state_a["progress"] == {"done": 1, "total": n_a}
    assert state_a["trial"]["position"] == 1
    assert state_a["trial"]["photo"] == f"/p/{token_a}/img/1/photo.png"
    assert state_a["completion_code"] is None  # B's completion does not leak to A
    assert str(token_b) not in json.dumps(state_a)
    assert state_b["stage"] == "debrief"
    assert state_b["progress"] == {"done": n_b, "total": n_b}
    assert Response.objects.filter(participant=a).count() == 1
    assert Response.objects.filter(participant=b).count() == n_b
