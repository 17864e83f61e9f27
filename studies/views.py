"""Participant pages (thin): parse, fetch by token, call one service, render or redirect.

Every page is rendered from :func:`studies.payloads.trial_payload`, which holds only what a
participant may see: no ground truth, no model correctness, no answer key.
"""

from __future__ import annotations

from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from . import services
from .models import Participant, ParticipantStage, Study, Trial
from .payloads import participant_state
from .ratelimit import enrol_rate_limited, participant_rate_limited
from .tasktypes import InvalidAnswer

SESSION_KEY = "participant_tokens"


def _participant_get(token) -> Participant:
    return get_object_or_404(Participant.objects.select_related("study"), token=token)


@never_cache
@require_GET
@enrol_rate_limited
def study_start(request: HttpRequest, slug: str) -> HttpResponse:
    """Public study link. Accepts Prolific's PROLIFIC_PID, STUDY_ID and SESSION_ID."""
    study = get_object_or_404(Study, slug=slug)
    if not study.is_open:
        return render(request, "studies/participant/closed.html", {"study": study}, status=410)
    known = request.session.get(SESSION_KEY, {})
    pid = request.GET.get("PROLIFIC_PID", "")
    if not pid and slug in known:
        participant = Participant.objects.filter(token=known[slug], study=study).first()
        if participant:
            return redirect("studies:participant", token=participant.token)
    try:
        participant, _ = _enroll(request, study)
    except services.StudyFull:
        return render(
            request, "studies/participant/closed.html", {"study": study, "full": True}, status=410
        )
    known[slug] = str(participant.token)
    request.session[SESSION_KEY] = known
    return redirect("studies:participant", token=participant.token)


def _enroll(request: HttpRequest, study: Study):
    pid = request.GET.get("PROLIFIC_PID", "")
    sim_key = request.GET.get("SIMULATION_KEY", "")
    is_simulated = bool(sim_key) and sim_key == study.simulation_key
    return services.participant_enroll(
        study=study,
        prolific_pid=pid,
        prolific_study_id=request.GET.get("STUDY_ID", ""),
        prolific_session_id=request.GET.get("SESSION_ID", ""),
        is_simulated=is_simulated,
        bot_policy=request.GET.get("BOT_POLICY", "") if is_simulated else "",
        user_agent=request.headers.get("User-Agent", ""),
    )


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
        },
    )


@require_POST
@participant_rate_limited
def participant_consent(request: HttpRequest, token) -> HttpResponse:
    participant = _participant_get(token)
    services.participant_consent(
        participant=participant, agree=request.POST.get("consent") == "yes"
    )
    return redirect("studies:participant", token=participant.token)


@require_POST
@participant_rate_limited
def participant_instructions(request: HttpRequest, token) -> HttpResponse:
    participant = _participant_get(token)
    services.participant_instructions_done(participant=participant)
    return redirect("studies:participant", token=participant.token)


@require_POST
@participant_rate_limited
def participant_answer(request: HttpRequest, token) -> HttpResponse:
    """Record one answer, then redirect to the current page (post/redirect/get)."""
    participant = _participant_get(token)
    try:
        position = int(request.POST.get("position", ""))
        rt_raw = request.POST.get("rt_ms", "")
        rt_ms = int(float(rt_raw)) if rt_raw else None
    except ValueError:
        request.session["participant_error"] = (
            "Something went wrong with that answer; please answer again."
        )
        return redirect("studies:participant", token=participant.token)
    try:
        services.response_submit(
            participant=participant,
            position=position,
            answer=request.POST.get("answer", ""),
            rt_ms=rt_ms,
        )
    except InvalidAnswer:
        request.session["participant_error"] = "Please choose one of the options before continuing."
    except services.TrialOutOfOrder:
        pass  # a stale form (back button): just show the current trial
    except services.StudyClosed:
        pass
    return redirect("studies:participant", token=participant.token)


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


@require_POST
@participant_rate_limited
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
