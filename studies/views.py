"""Participant pages (thin): parse, fetch by token, call one service, render or redirect.

Every page is rendered from :func:`studies.payloads.trial_payload`, which holds only what a
participant may see: no ground truth, no model correctness, no answer key.
"""

from __future__ import annotations

import functools
from urllib.parse import urlparse

from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import services
from .models import CrowdSource, Participant, ParticipantStage, Study, Trial
from .payloads import participant_state
from .ratelimit import enrol_rate_limited, participant_rate_limited
from .tasktypes import TASK_TYPES, InvalidAnswer

SESSION_KEY = "participant_tokens"
MTURK_PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE"


def _participant_get(token) -> Participant:
    return get_object_or_404(Participant.objects.select_related("study"), token=token)


def participant_post(view):
    """Participant form posts: identified by the unguessable token in the URL, not by a cookie,
    so they are exempt from Django's cookie-based CSRF check (a session or CSRF cookie that
    expired during a long trial must not lose the answer). A cross-site post is still refused:
    a browser's ``Origin`` header, when sent, must name this site."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        origin = request.headers.get("Origin")
        if origin and origin != "null":
            if urlparse(origin).netloc != request.get_host():
                return HttpResponseForbidden("cross-site request refused")
        return view(request, *args, **kwargs)

    return csrf_exempt(require_POST(participant_rate_limited(wrapped)))


def _remember(request: HttpRequest, study: Study, participant: Participant) -> None:
    known = request.session.get(SESSION_KEY, {})
    known[study.slug] = str(participant.token)
    request.session[SESSION_KEY] = known


def _closed(request, study, *, full=False):
    return render(
        request, "studies/participant/closed.html", {"study": study, "full": full}, status=410
    )


@never_cache
@require_GET
@enrol_rate_limited
def study_start(request: HttpRequest, slug: str) -> HttpResponse:
    """Public study link. Prolific: ``PROLIFIC_PID``, ``STUDY_ID``, ``SESSION_ID``. MTurk
    external question: ``assignmentId``, ``workerId``, ``hitId``, ``turkSubmitTo`` (preview
    mode when the assignment id is ``ASSIGNMENT_ID_NOT_AVAILABLE``: the study is described,
    nobody is enrolled). A returning crowd id resumes; the browser's session resumes a public
    link."""
    study = get_object_or_404(Study, slug=slug)
    if request.GET.get("assignmentId") == MTURK_PREVIEW:
        return render(request, "studies/participant/mturk_preview.html", {"study": study})
    # Someone who already started resumes, also while the study is paused (nobody new):
    # a crowd id through participant_enroll, a public link through this browser's session.
    if not study.accepts_answers:
        return _closed(request, study)
    known = request.session.get(SESSION_KEY, {}).get(slug)
    if known and not (request.GET.get("PROLIFIC_PID") or request.GET.get("workerId")):
        participant = Participant.objects.filter(token=known, study=study).first()
        if participant:
            return redirect("studies:participant", token=participant.token)
    try:
        participant, _ = _enroll(request, study)
    except services.StudyFull:
        return _closed(request, study, full=True)
    except services.StudyClosed:
        return _closed(request, study)
    _remember(request, study, participant)
    return redirect("studies:participant", token=participant.token)


def _enroll(request: HttpRequest, study: Study, **extra):
    q = request.GET
    sim_key = q.get("SIMULATION_KEY", "")
    is_simulated = bool(sim_key) and sim_key == study.simulation_key
    crowd: dict = {}
    if q.get("PROLIFIC_PID"):
        crowd = {
            "crowd_source": CrowdSource.PROLIFIC,
            "crowd_id": q["PROLIFIC_PID"],
            "prolific_study_id": q.get("STUDY_ID", ""),
            "prolific_session_id": q.get("SESSION_ID", ""),
        }
    elif q.get("workerId"):
        crowd = {
            "crowd_source": CrowdSource.MTURK,
            "crowd_id": q["workerId"],
            "mturk_assignment_id": q.get("assignmentId", ""),
            "mturk_hit_id": q.get("hitId", ""),
            "mturk_submit_to": q.get("turkSubmitTo", ""),
        }
    return services.participant_enroll(
        study=study,
        is_simulated=is_simulated,
        bot_policy=q.get("BOT_POLICY", "") if is_simulated else "",
        user_agent=request.headers.get("User-Agent", ""),
        **crowd,
        **extra,
    )


@never_cache
def classroom_join(request: HttpRequest) -> HttpResponse:
    """``/j/``: enter the instructor's join code (GET shows the form, POST goes to the study)."""
    error = ""
    if request.method == "POST":
        code = "".join(request.POST.get("code", "").split()).upper()
        if Study.objects.filter(join_code=code).exists():
            return redirect("studies:classroom", code=code)
        error = "No study has that code. Please check it with your instructor."
    return render(request, "studies/participant/join.html", {"error": error})


@never_cache
@enrol_rate_limited
def classroom_study(request: HttpRequest, code: str) -> HttpResponse:
    """``/j/<code>/``: a classroom study. With a roster, students give their roster name or id
    (matched case-insensitively; stored hashed) and the same entry always resumes the same
    participant; without one, the browser's session resumes."""
    study = Study.objects.filter(join_code=code.upper()).first()
    if study is None:
        return render(
            request,
            "studies/participant/join.html",
            {"error": "No study has that code. Please check it with your instructor."},
            status=404,
        )
    if not study.accepts_answers:  # closed or draft; paused: those who started resume
        return _closed(request, study)
    roster = [r.strip() for r in study.recruitment.get("roster", []) if r.strip()]
    if not roster:
        known = request.session.get(SESSION_KEY, {})
        if study.slug in known:
            participant = Participant.objects.filter(token=known[study.slug], study=study).first()
            if participant:
                return redirect("studies:participant", token=participant.token)
        try:
            participant, _ = _enroll(request, study, crowd_source=CrowdSource.CLASSROOM)
        except services.StudyFull:
            return _closed(request, study, full=True)
        except services.StudyClosed:  # paused: nobody new
            return _closed(request, study)
        _remember(request, study, participant)
        return redirect("studies:participant", token=participant.token)
    error = ""
    if request.method == "POST":
        entered = " ".join(request.POST.get("name", "").split()).casefold()
        match = next((r for r in roster if " ".join(r.split()).casefold() == entered), None)
        if match:
            try:
                participant, _ = _enroll(
                    request,
                    study,
                    crowd_source=CrowdSource.CLASSROOM,
                    crowd_id=match.casefold(),
                    roster_name=match,
                )
            except services.StudyFull:
                return _closed(request, study, full=True)
            except services.StudyClosed:  # paused: nobody new
                return _closed(request, study)
            _remember(request, study, participant)
            return redirect("studies:participant", token=participant.token)
        error = "That name is not on the class list. Please type it as your instructor has it."
    return render(request, "studies/participant/roster.html", {"study": study, "error": error})


@never_cache
@require_GET
@participant_rate_limited
def participant_page(request: HttpRequest, token) -> HttpResponse:
    """The participant's current page, whatever stage they are in (reload-safe)."""
    participant = _participant_get(token)
    state = participant_state(participant)
    template = {
        ParticipantStage.CONSENT: "studies/participant/consent.html",
        ParticipantStage.INSTRUCTIONS: "studies/participant/instructions.html",
        ParticipantStage.TRIALS: "studies/participant/trial.html",
        ParticipantStage.DEBRIEF: "studies/participant/debrief.html",
        ParticipantStage.DECLINED: "studies/participant/declined.html",
        ParticipantStage.FULL: "studies/participant/closed.html",
    }[participant.stage]
    if participant.stage == ParticipantStage.TRIALS and state.get("trial") is None:
        raise Http404("no current trial")
    task_template = ""
    if state.get("trial"):
        task_template = TASK_TYPES[state["trial"]["task"]].template
    error = request.session.pop("participant_error", "")
    notice = request.session.pop("participant_notice", "")
    draft = request.session.pop("participant_draft", None)
    return render(
        request,
        template,
        {
            "study": participant.study,
            "full": participant.stage == ParticipantStage.FULL,
            "state": state,
            "participant": participant,
            "error": error,
            "notice": notice,
            "draft": participant.feedback if draft is None else draft,
            "task_template": task_template,
            "expected_trials": services.study_pages_per_participant(participant.study),
            **_instructions_context(participant),
        },
    )


def _instructions_context(participant: Participant) -> dict:
    if participant.stage != ParticipantStage.INSTRUCTIONS:
        return {}
    trials = services.study_trials(participant.study)
    mine = [trials[i] for i in participant.trial_order if i in trials]
    spec_trials = participant.study.spec.get("trials") or {}
    kinds = {t.config.get("explanation", "") for t in mine if t.config.get("explained")}
    return {
        "arm_tasks": sorted({t.task_type for t in mine}),
        # heatmaps, prototypes (the model's own or post-hoc) or concept sums: what this
        # participant's trials show, so the instructions describe only those
        "explained": "" in kinds,
        "shows_prototypes": bool(kinds & {"prototypes", "posthoc_prototypes"}),
        "shows_concepts": "concepts" in kinds,
        "practice": spec_trials.get("practice", 0),
        "time_limit": spec_trials.get("time_limit_s"),
    }


@participant_post
def participant_consent(request: HttpRequest, token) -> HttpResponse:
    participant = _participant_get(token)
    services.participant_consent(
        participant=participant, agree=request.POST.get("consent") == "yes"
    )
    return redirect("studies:participant", token=participant.token)


@participant_post
def participant_instructions(request: HttpRequest, token) -> HttpResponse:
    participant = _participant_get(token)
    services.participant_instructions_done(participant=participant)
    return redirect("studies:participant", token=participant.token)


@participant_post
def participant_answer(request: HttpRequest, token) -> HttpResponse:
    """Record one answer, then redirect to the current page (post/redirect/get). Works without
    JavaScript; with it the page adds the response time, tab visibility and timeouts."""
    participant = _participant_get(token)
    post = request.POST
    try:
        position = int(post.get("position", ""))
        rt_ms = _int_or_none(post.get("rt_ms", ""))
        hidden_ms = _int_or_none(post.get("hidden_ms", ""))
    except ValueError:
        request.session["participant_error"] = (
            "Something went wrong with that answer; please answer again."
        )
        return redirect("studies:participant", token=participant.token)
    current = services.trial_current(participant=participant)
    raw = post.get("answer", "")
    if current and current[0] == position:
        raw = TASK_TYPES[current[1].task_type].from_form(post)
    try:
        services.response_submit(
            participant=participant,
            position=position,
            answer=raw,
            rt_ms=rt_ms,
            tab_hidden=post.get("tab_hidden") == "1",
            hidden_ms=hidden_ms,
            timed_out=post.get("timed_out") == "1",
        )
    except InvalidAnswer as exc:
        request.session["participant_error"] = str(exc)[:1].upper() + str(exc)[1:] + "."
        if isinstance(raw, str) and current and current[1].task_type == "free_text":
            request.session["participant_draft"] = raw[:20000]
    except services.TrialOutOfOrder:
        pass  # a stale form (back button): just show the current trial
    except services.StudyClosed:
        pass
    return redirect("studies:participant", token=participant.token)


def _int_or_none(raw: str) -> int | None:
    return int(float(raw)) if raw not in ("", None) else None


@never_cache
@require_GET
@participant_rate_limited
def participant_stimulus(request: HttpRequest, token, position: int, slot: str) -> FileResponse:
    """An image of one of the participant's own trials, by position and slot."""
    participant = _participant_get(token)
    if not 0 <= position < len(participant.trial_order):
        raise Http404
    trial = get_object_or_404(Trial, pk=participant.trial_order[position], study=participant.study)
    name = trial.stimuli.get(slot)
    if not name:
        raise Http404
    from django.core.files.storage import default_storage

    response = FileResponse(default_storage.open(name, "rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@participant_post
def participant_feedback(request: HttpRequest, token) -> HttpResponse:
    """Free-text comment on the debrief page; stored as typed, always rendered escaped."""
    participant = _participant_get(token)
    try:
        services.participant_feedback(
            participant=participant, text=request.POST.get("feedback", "")
        )
        request.session["participant_notice"] = "Thank you, your comment is saved."
    except (ValueError, services.StudyClosed) as exc:
        request.session["participant_error"] = str(exc)
        request.session["participant_draft"] = request.POST.get("feedback", "")[:20000]
    return redirect("studies:participant", token=participant.token)


def participant_url(participant: Participant) -> str:
    return reverse("studies:participant", kwargs={"token": participant.token})
