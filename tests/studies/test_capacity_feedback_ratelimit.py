"""Study capacity (also under a race), debrief feedback (stored as typed, shown escaped) and
the participant rate limits, through the real views.
"""

from __future__ import annotations

import html
import json
import re
import threading
import urllib.error
import urllib.request
import uuid

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils.html import escape

from studies import ratelimit, services
from studies.models import Participant, ParticipantStage, Response, Trial

FULL_TEXT = "All places in this study have been taken"
TOKEN_PATH = re.compile(r"^/p/([0-9a-f-]{36})/$")


@pytest.fixture(autouse=True)
def _fresh_rate_limit_counters():
    """Rate-limit counters live in the process-wide cache: start and leave it empty."""
    cache.clear()
    yield
    cache.clear()


def start(client: Client, study, **extra) -> str:
    response = client.get(f"/s/{study.slug}/", **extra)
    assert response.status_code == 302, response.status_code
    match = TOKEN_PATH.match(response["Location"])
    assert match, response["Location"]
    return match.group(1)


def first_option(token: str) -> tuple[int, str]:
    state = json.loads(Client().get(f"/api/p/{token}/").content)
    return state["trial"]["position"], state["trial"]["options"][0]["value"]


def to_debrief(client: Client, study) -> str:
    token = start(client, study)
    assert client.post(f"/p/{token}/consent", {"consent": "yes"}).status_code == 302
    assert client.post(f"/p/{token}/instructions").status_code == 302
    participant = Participant.objects.get(token=token)
    for position in range(len(participant.trial_order)):
        answer = Trial.objects.get(pk=participant.trial_order[position]).options[0]["value"]
        client.post(f"/p/{token}/answer", {"position": str(position), "answer": answer})
    assert Participant.objects.get(token=token).stage == ParticipantStage.DEBRIEF
    return token


# --- capacity -------------------------------------------------------------------------------


def consent(client: Client, token: str, agree: bool = True) -> Participant:
    client.post(f"/p/{token}/consent", {"consent": "yes" if agree else "no"})
    return Participant.objects.get(token=token)


def test_a_full_study_turns_the_next_participant_away_with_410(hive_study):
    """A place is taken at consent; once every place is taken the link answers 410."""
    hive_study.max_participants = 1
    hive_study.save()
    first = Client()
    assert consent(first, start(first, hive_study)).stage == ParticipantStage.INSTRUCTIONS
    response = Client().get(f"/s/{hive_study.slug}/")
    assert response.status_code == 410
    assert FULL_TEXT in response.content.decode()
    assert Participant.objects.count() == 1


def test_visitors_who_do_not_consent_take_no_place(hive_study):
    """Link previews and people who decline or never answer the consent form hold no place."""
    hive_study.max_participants = 1
    hive_study.save()
    lurker, decliner, taker = Client(), Client(), Client()
    start(lurker, hive_study)  # opens the link, never answers
    assert (
        consent(decliner, start(decliner, hive_study), agree=False).stage
        == ParticipantStage.DECLINED
    )
    assert consent(taker, start(taker, hive_study)).stage == ParticipantStage.INSTRUCTIONS
    assert Client().get(f"/s/{hive_study.slug}/").status_code == 410
    assert Participant.objects.filter(consented_at__isnull=False).count() == 1


def test_consenting_after_the_last_place_went_shows_the_full_page(hive_study):
    hive_study.max_participants = 1
    hive_study.save()
    slow, fast = Client(), Client()
    slow_token = start(slow, hive_study)
    consent(fast, start(fast, hive_study))
    late = consent(slow, slow_token)
    assert late.stage == ParticipantStage.FULL and late.trial_order == [] and not late.consented_at
    assert FULL_TEXT in slow.get(f"/p/{slow_token}/").content.decode()


def test_finished_participants_keep_their_place_and_returning_ones_resume(hive_study):
    hive_study.max_participants = 1
    hive_study.save()
    browser = Client()
    query = {"PROLIFIC_PID": "pid-1", "STUDY_ID": "s", "SESSION_ID": "x"}
    token = start(browser, hive_study, data=query)
    consent(browser, token)
    assert Client().get(f"/s/{hive_study.slug}/").status_code == 410
    # the same browser, and the same Prolific id in another browser, resume; no new record
    assert start(browser, hive_study) == token
    assert start(Client(), hive_study, data=query) == token
    assert Participant.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_people_racing_for_the_last_place_get_one_place(tiny_world, researcher):
    """Consent posts at the same instant from separate threads (separate database
    connections): the study row lock lets exactly one take the last place."""
    model, dataset = tiny_world
    study = services.study_create_hive(
        title="Capacity race", owner=researcher, model=model, dataset=dataset, seed=4
    )
    for places in (3, 4, 5):  # three rounds, each racing for the one last place
        study.max_participants = places
        study.save(update_fields=["max_participants"])
        while study.participants.filter(consented_at__isnull=False).count() < places - 1:
            p, _ = services.participant_enroll(study=study)
            services.participant_consent(participant=p, agree=True)
        racers = [services.participant_enroll(study=study)[0] for _ in range(2)]
        barrier = threading.Barrier(2)
        statuses: list[int] = []

        def race(token, barrier=barrier, statuses=statuses) -> None:
            client = Client()
            barrier.wait()
            statuses.append(client.post(f"/p/{token}/consent", {"consent": "yes"}).status_code)

        threads = [threading.Thread(target=race, args=(p.token,)) for p in racers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert statuses == [302, 302]  # never a 500
        stages = sorted(Participant.objects.get(pk=p.pk).stage for p in racers)
        assert stages == [ParticipantStage.FULL, ParticipantStage.INSTRUCTIONS]
        assert study.participants.filter(consented_at__isnull=False).count() == places


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _fetch(opener, request) -> tuple[int, dict, str]:
    try:
        with opener.open(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def _concurrently(n: int, make_request) -> list[tuple[int, dict, str]]:
    """Send ``n`` requests at once, each from its own cookie-less opener."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def worker(i: int) -> None:
        opener = urllib.request.build_opener(_NoRedirect())
        request = make_request()
        barrier.wait()
        results[i] = _fetch(opener, request)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None for r in results)
    return results


@pytest.mark.django_db(transaction=True)
def test_five_concurrent_api_posts_of_one_answer_store_one_response(
    live_server, tiny_world, researcher
):
    model, dataset = tiny_world
    study = services.study_create_hive(
        title="API race", owner=researcher, model=model, dataset=dataset, seed=5
    )
    participant, _ = services.participant_enroll(study=study)
    services.participant_consent(participant=participant, agree=True)
    services.participant_instructions_done(participant=participant)
    position, answer = first_option(str(participant.token))
    body = json.dumps({"position": position, "answer": answer}).encode()
    results = _concurrently(
        5,
        lambda: urllib.request.Request(
            f"{live_server.url}/api/p/{participant.token}/",
            data=body,
            headers={"Content-Type": "application/json"},
        ),
    )
    statuses = [status for status, _, _ in results]
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {200, 201, 409}, statuses
    stored = [json.loads(text)["stored"] for status, _, text in results if status in (200, 201)]
    assert stored.count(True) == 1
    assert Response.objects.filter(participant=participant).count() == 1
    assert Response.objects.get(participant=participant).answer == answer


# --- feedback -------------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script> & ünïcode  '


def test_feedback_is_stored_as_typed_and_always_shown_escaped(hive_study, researcher):
    browser = Client()
    token = to_debrief(browser, hive_study)
    response = browser.post(f"/p/{token}/feedback", {"feedback": HOSTILE})
    assert response.status_code == 302 and response["Location"] == f"/p/{token}/"
    assert Participant.objects.get(token=token).feedback == HOSTILE  # trailing spaces too

    debrief = browser.get(f"/p/{token}/").content.decode()
    assert "Thank you, your comment is saved." in debrief
    textarea = re.search(r'<textarea id="feedback"[^>]*>(.*?)</textarea>', debrief, re.S).group(1)
    assert textarea == escape(HOSTILE)
    assert html.unescape(textarea) == HOSTILE
    assert "<script>alert" not in debrief

    owner = Client()
    assert owner.login(username="researcher", password="pw-researcher")
    page = owner.get(f"/r/studies/{hive_study.slug}/").content.decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; ünïcode" in page
    assert "<script>alert" not in page


def test_feedback_before_the_debrief_is_refused(hive_study):
    browser = Client()
    token = start(browser, hive_study)
    browser.post(f"/p/{token}/feedback", {"feedback": "too early"})
    assert Participant.objects.get(token=token).feedback == ""
    browser.post(f"/p/{token}/consent", {"consent": "yes"})
    browser.post(f"/p/{token}/instructions")
    response = browser.post(f"/p/{token}/feedback", {"feedback": "still early"})
    assert response.status_code == 302
    assert Participant.objects.get(token=token).feedback == ""
    trial_page = browser.get(f"/p/{token}/").content.decode()
    assert "comments can be left at the end of the study" in trial_page


def test_feedback_over_5000_characters_is_refused_and_5000_accepted(hive_study):
    browser = Client()
    token = to_debrief(browser, hive_study)
    browser.post(f"/p/{token}/feedback", {"feedback": "first"})
    browser.post(f"/p/{token}/feedback", {"feedback": "ü" * 5001})
    assert Participant.objects.get(token=token).feedback == "first"  # the old one stands
    page = browser.get(f"/p/{token}/").content.decode()
    assert "please keep comments under 5000 characters" in page
    browser.post(f"/p/{token}/feedback", {"feedback": "ü" * 5000})
    assert Participant.objects.get(token=token).feedback == "ü" * 5000


# --- rate limits ----------------------------------------------------------------------------


class _Clock:
    """Stands in for the ``time`` module inside ``studies.ratelimit``: a fixed instant."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    """20 s into a minute window, so a window boundary never splits a test's requests."""
    frozen = _Clock(60 * 29_000_000 + 20.0)
    monkeypatch.setattr(ratelimit, "time", frozen)
    return frozen


def test_the_sixth_participant_request_in_a_minute_is_429_per_token(hive_study, settings, clock):
    settings.STUDYPLATFORM_PARTICIPANT_RATE = "5/m"
    alice, bob = Client(), Client()
    token_a, token_b = start(alice, hive_study), start(bob, hive_study)
    assert [alice.get(f"/p/{token_a}/").status_code for _ in range(5)] == [200] * 5
    limited = alice.get(f"/p/{token_a}/")
    assert limited.status_code == 429
    assert limited["Retry-After"] == "40"  # the rest of the minute
    assert "Too many requests" in limited.content.decode()
    # a limited request does nothing: consent is not recorded
    assert alice.post(f"/p/{token_a}/consent", {"consent": "yes"}).status_code == 429
    assert Participant.objects.get(token=token_a).stage == ParticipantStage.CONSENT
    assert alice.get(f"/p/{token_a}/img/0/photo.png").status_code == 429
    # another participant is unaffected
    assert bob.get(f"/p/{token_b}/").status_code == 200
    # the next minute starts afresh
    clock.now += 40
    assert alice.get(f"/p/{token_a}/").status_code == 200


def test_the_participant_api_shares_the_limit(hive_study, settings, clock):
    settings.STUDYPLATFORM_PARTICIPANT_RATE = "5/m"
    browser = Client()
    token = start(browser, hive_study)
    browser.post(f"/p/{token}/consent", {"consent": "yes"})  # 1
    browser.post(f"/p/{token}/instructions")  # 2
    assert browser.get(f"/p/{token}/").status_code == 200  # 3
    assert [browser.get(f"/api/p/{token}/").status_code for _ in range(2)] == [200, 200]  # 4, 5
    limited = browser.get(f"/api/p/{token}/")
    assert limited.status_code == 429 and limited["Retry-After"] == "40"
    post = browser.post(
        f"/api/p/{token}/", {"position": 0, "answer": "1"}, content_type="application/json"
    )
    assert post.status_code == 429
    assert Response.objects.count() == 0
    assert Client().get(f"/api/p/{uuid.uuid4()}/").status_code == 404  # own budget, unknown


def test_the_third_enrolment_from_one_address_in_a_minute_is_429(hive_study, settings, clock):
    settings.STUDYPLATFORM_ENROL_RATE = "2/m"
    start(Client(), hive_study)
    start(Client(), hive_study)
    limited = Client().get(f"/s/{hive_study.slug}/")
    assert limited.status_code == 429 and limited["Retry-After"] == "40"
    # a forged X-Forwarded-For is ignored when no trusted proxy is configured
    forged = Client().get(f"/s/{hive_study.slug}/", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert forged.status_code == 429
    assert Participant.objects.count() == 2
    # another address has its own budget
    start(Client(REMOTE_ADDR="192.0.2.10"), hive_study)
    assert Participant.objects.count() == 3


def test_behind_a_proxy_a_forged_forwarded_for_does_not_escape_the_enrol_limit(
    hive_study, settings, clock
):
    settings.STUDYPLATFORM_ENROL_RATE = "2/m"
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    statuses = []
    for forged in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
        # what nginx's $proxy_add_x_forwarded_for sends: the client's header + the real address
        response = Client(REMOTE_ADDR="10.0.0.1").get(
            f"/s/{hive_study.slug}/",
            HTTP_X_FORWARDED_FOR=f"{forged}, 203.0.113.9",
            HTTP_X_FORWARDED_PROTO="https",
        )
        statuses.append(response.status_code)
    assert statuses == [302, 302, 429]


# --- the Redis path (one pipelined INCR + EXPIRE NX per request) ------------------------------

REDIS_RL_DB = 7


@pytest.fixture
def redis_cache(settings):
    """The rate limiter's cache pointed at a real Redis (127.0.0.1:6379, db 7, emptied)."""
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_RL_DB)
    try:
        client.flushdb()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379 (.ci/run starts one)")
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:6379/{REDIS_RL_DB}",
        }
    }
    yield client
    client.flushdb()


def test_on_redis_the_count_is_exact_and_the_window_expires_once(redis_cache, clock):
    assert ratelimit._redis_client() is not None  # the pipelined path is the one under test
    waits = [ratelimit.rate_exceeded("p", "tok", "3/m") for _ in range(5)]
    assert waits == [0, 0, 0, 40, 40]
    (key,) = redis_cache.keys("*rl:p:tok:*")
    assert int(redis_cache.get(key)) == 5
    # EXPIRE ... NX: set by the first request (period + 1 s), not pushed back by later ones
    assert 59 <= redis_cache.ttl(key) <= 61
    redis_cache.expire(key, 30)
    ratelimit.rate_exceeded("p", "tok", "3/m")
    assert redis_cache.ttl(key) <= 30
    clock.now += 40  # the next window starts afresh
    assert ratelimit.rate_exceeded("p", "tok", "3/m") == 0


def test_on_redis_concurrent_requests_never_exceed_the_limit(redis_cache, clock):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        waits = list(pool.map(lambda _: ratelimit.rate_exceeded("p", "x", "50/m"), range(200)))
    assert waits.count(0) == 50 and len(waits) == 200
