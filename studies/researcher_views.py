"""Researcher pages of the studies app (owner or superuser; everyone else gets 404)."""

from __future__ import annotations

import statistics
from pathlib import Path

import yaml
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from explanations.models import ExplanationJob

from . import design, services
from .models import ParticipantStage, Response, Study, TrialKind
from .spec import SpecError, spec_parse, spec_text_load

PROLIFIC_QUERY = (
    "?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
)


def study_get_for_user(user, slug: str) -> Study:
    """The study if ``user`` may see it (owner or superuser); Http404 otherwise."""
    study = Study.objects.filter(slug=slug).select_related("model", "dataset", "owner").first()
    if study is None or not (user.is_superuser or study.owner_id == user.pk):
        raise Http404("no such study")
    return study


@login_required
def researcher_home(request: HttpRequest) -> HttpResponse:
    studies = (
        Study.objects.all()
        if request.user.is_superuser
        else Study.objects.filter(owner=request.user)
    )
    studies = studies.annotate(
        n_participants=Count("participants"),
        n_completed=Count("participants", filter=Q(participants__completed_at__isnull=False)),
    ).order_by("-created_at")
    jobs = ExplanationJob.objects.select_related("model", "dataset").order_by("-created_at")[:20]
    return render(
        request,
        "studies/researcher/home.html",
        {"studies": studies, "jobs": jobs if request.user.is_staff else []},
    )


@login_required
def study_detail(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(request.user, slug)
    participants = study.participants.annotate(n_responses=Count("responses")).order_by(
        "-created_at"
    )
    start_url = request.build_absolute_uri(reverse("studies:start", kwargs={"slug": study.slug}))
    return render(
        request,
        "studies/researcher/study_detail.html",
        {
            "study": study,
            "participants": participants[:200],
            "n_trials": services.study_pages_per_participant(study),
            "conditions": ", ".join(
                f"{c['name']} ({c['method']})" for c in study.spec.get("conditions", [])
            )
            or study.method,
            "start_url": start_url,
            "prolific_url": start_url + PROLIFIC_QUERY,
            "mturk_url": start_url,
            "join_url": request.build_absolute_uri(reverse("studies:join")),
            "progress": study_progress(study),
            "spec_yaml": yaml.safe_dump(study.spec, sort_keys=False, allow_unicode=True),
        },
    )


# --- create / edit / launch / pause / close / preview / live / pilot --------------------------

EXAMPLE_SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "specs" / "hive-gradcam.yaml"
PILOT_MAX_BOTS = 20


def _spec_text_example() -> str:
    try:
        return EXAMPLE_SPEC_PATH.read_text(encoding="utf-8")
    except OSError:
        return "version: 1\ntitle: My study\nmodel: \ndataset: \nconditions: []\ntasks: []\n"


def _spec_from_request(request: HttpRequest) -> tuple[str, dict | None, list[str]]:
    """(text, parsed spec or None, errors) from a textarea or an uploaded file."""
    upload = request.FILES.get("spec_file")
    if upload is not None:
        if upload.size > 1_000_000:
            return "", None, ["spec_file: larger than 1 MB"]
        try:
            text = upload.read().decode("utf-8")
        except UnicodeDecodeError:
            return "", None, ["spec_file: not UTF-8 text"]
    else:
        text = request.POST.get("spec", "")
    try:
        return text, spec_parse(spec_text_load(text)), []
    except SpecError as exc:
        return text, None, exc.errors


@login_required
def study_new(request: HttpRequest) -> HttpResponse:
    """Create a study (a draft) from a spec pasted or uploaded; errors name the field."""
    text, errors = _spec_text_example(), []
    if request.method == "POST":
        text, spec, errors = _spec_from_request(request)
        if spec is not None:
            try:
                study = design.study_create(spec=spec, owner=request.user)
                messages.success(
                    request, "Draft created. Preview it, pilot it with bots, then launch."
                )
                return redirect("study-detail", slug=study.slug)
            except design.StudyDesignError as exc:
                errors = [str(exc)]
    return render(
        request,
        "studies/researcher/study_form.html",
        {"spec_text": text, "errors": errors, "study": None},
    )


@login_required
def study_edit(request: HttpRequest, slug: str) -> HttpResponse:
    """Edit a draft's spec; the draft's trials are rebuilt. A launched study's spec is frozen."""
    study = study_get_for_user(request.user, slug)
    if study.launched_at is not None:
        messages.error(request, "This study has been launched; its spec is frozen.")
        return redirect("study-detail", slug=study.slug)
    spec_now = {k: v for k, v in study.spec.items() if k != "resolved"}
    text, errors = yaml.safe_dump(spec_now, sort_keys=False, allow_unicode=True), []
    if request.method == "POST":
        text, spec, errors = _spec_from_request(request)
        if spec is not None:
            try:
                study = design.study_rebuild(study=study, spec=spec)
                messages.success(request, "Draft updated; its trials were rebuilt.")
                return redirect("study-detail", slug=study.slug)
            except (design.StudyDesignError, services.StudyClosed) as exc:
                errors = [str(exc)]
    return render(
        request,
        "studies/researcher/study_form.html",
        {"spec_text": text, "errors": errors, "study": study},
    )


@login_required
@require_POST
def study_action(request: HttpRequest, slug: str, action: str) -> HttpResponse:
    """launch | pause | resume | close (POST, owner only)."""
    study = study_get_for_user(request.user, slug)
    try:
        if action == "launch":
            design.study_launch(study=study)
            messages.success(request, "Launched: the spec is frozen and participants can start.")
        elif action == "pause":
            services.study_pause(study=study)
            messages.success(request, "Paused: nobody new can start; those who started may finish.")
        elif action == "resume":
            services.study_resume(study=study)
            messages.success(request, "Open again.")
        elif action == "close":
            services.study_close(study=study)
            messages.success(request, "Closed: no new participants and no more answers.")
        else:
            raise Http404("unknown action")
    except (design.StudyDesignError, services.StudyClosed) as exc:
        messages.error(request, str(exc))
    return redirect("study-detail", slug=study.slug)


@login_required
@require_POST
def study_preview(request: HttpRequest, slug: str) -> HttpResponse:
    """Take the study as a participant (drafts too); previews never count in the results."""
    study = study_get_for_user(request.user, slug)
    participant, _ = services.participant_enroll(
        study=study, is_preview=True, user_agent=request.headers.get("User-Agent", "")
    )
    return redirect("studies:participant", token=participant.token)


@login_required
@require_POST
def study_pilot(request: HttpRequest, slug: str) -> HttpResponse:
    """Run up to 20 scripted bots through the real participant views now (marked simulated)."""
    study = study_get_for_user(request.user, slug)
    try:
        n = max(1, min(PILOT_MAX_BOTS, int(request.POST.get("bots", "4"))))
    except ValueError:
        n = 4
    if not study.is_open:
        messages.error(
            request,
            "Bots take the study like participants: launch it first (or use Preview on a draft).",
        )
        return redirect("study-detail", slug=study.slug)
    report = pilot_run(study=study, n=n, host=request.get_host(), secure=request.is_secure())
    if report["errors"]:
        messages.error(
            request,
            f"{len(report['errors'])} of {n} bots failed: " + "; ".join(report["errors"][:3]),
        )
    else:
        messages.success(request, f"{n} bots finished ({report['answers']} answers).")
    return redirect("study-live", slug=study.slug)


def pilot_run(*, study: Study, n: int, host: str = "testserver", secure: bool = False) -> dict:
    """Walk ``n`` scripted bots (alternating policies) through the participant views in this
    process (Django's test client: the real URLconf, middleware, views and templates)."""
    from django.test import Client

    from .bots import BOT_POLICIES, BotError, DjangoClientTransport, bot_run

    errors, answers = [], 0
    for i in range(n):
        policy = BOT_POLICIES[i % 2]  # uniform, trusting
        client = Client(HTTP_HOST=host, **({"wsgi.url_scheme": "https"} if secure else {}))
        try:
            result = bot_run(
                transport=DjangoClientTransport(client),
                start_path=f"/s/{study.slug}/?SIMULATION_KEY={study.simulation_key}"
                f"&BOT_POLICY={policy}",
                policy=policy,
                seed=i,
            )
            answers += result.answers
        except BotError as exc:
            errors.append(str(exc))
    return {"errors": errors, "answers": answers}


def study_progress(study: Study) -> dict:
    """Live progress: participants by stage and arm, median duration of completed ones (s),
    attention-check failures; previews left out."""
    people = study.participants.filter(is_preview=False)
    by_stage = {s.label: 0 for s in ParticipantStage}
    for stage, n in people.values_list("stage").annotate(n=Count("id")):
        by_stage[ParticipantStage(stage).label] = n
    arms = {a: {"active": 0, "completed": 0} for a in services.study_arms(study)}
    for arm, done, n in (
        people.exclude(arm="")
        .values_list("arm")
        .annotate(done=Count("id", filter=Q(completed_at__isnull=False)), n=Count("id"))
        .values_list("arm", "done", "n")
    ):
        arms.setdefault(arm, {"active": 0, "completed": 0})
        arms[arm] = {"active": n - done, "completed": done}
    durations = [
        (done - start).total_seconds()
        for start, done in people.filter(
            completed_at__isnull=False, consented_at__isnull=False
        ).values_list("consented_at", "completed_at")
    ]
    failed = (
        Response.objects.filter(
            participant__in=people, trial__kind=TrialKind.ATTENTION, is_correct=False
        )
        .values("participant")
        .distinct()
        .count()
    )
    return {
        "status": study.status,
        "by_stage": by_stage,
        "by_arm": arms,
        "participants": people.count(),
        "simulated": people.filter(is_simulated=True).count(),
        "median_duration_s": round(statistics.median(durations), 1) if durations else None,
        "attention_failed_participants": failed,
    }


@login_required
def study_live(request: HttpRequest, slug: str) -> HttpResponse:
    """Live progress (polls ``?format=json`` every 5 s); the instructor's view of a class."""
    study = study_get_for_user(request.user, slug)
    progress = study_progress(study)
    if request.GET.get("format") == "json":
        people = study.participants.filter(is_preview=False).order_by("created_at")
        progress["rows"] = [
            {
                "id": p.public_id,
                "name": p.roster_name,
                "stage": p.get_stage_display(),
                "done": p.progress,
                "total": len(p.trial_order),
            }
            for p in people[:500]
        ]
        return JsonResponse(progress)
    return render(
        request,
        "studies/researcher/study_live.html",
        {"study": study, "progress": progress, "pilot_max": PILOT_MAX_BOTS},
    )
