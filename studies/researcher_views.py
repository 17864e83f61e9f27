"""Researcher pages of the studies app (owner or superuser; everyone else gets 404)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from explanations.models import ExplanationJob

from .models import Study

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
            "n_trials": study.trials.count(),
            "start_url": start_url,
            "prolific_url": start_url + PROLIFIC_QUERY,
        },
    )
