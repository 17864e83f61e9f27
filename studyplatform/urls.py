"""URL wiring: participant pages, researcher pages, APIs and the admin."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from studies import researcher_views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="researcher-home", permanent=False)),
    path("admin/", admin.site.urls),
    path("r/", researcher_views.researcher_home, name="researcher-home"),
    path("r/studies/new/", researcher_views.study_new, name="study-new"),
    path("r/studies/<slug:slug>/", researcher_views.study_detail, name="study-detail"),
    path("r/studies/<slug:slug>/edit/", researcher_views.study_edit, name="study-edit"),
    path("r/studies/<slug:slug>/live/", researcher_views.study_live, name="study-live"),
    path("r/studies/<slug:slug>/preview/", researcher_views.study_preview, name="study-preview"),
    path("r/studies/<slug:slug>/pilot/", researcher_views.study_pilot, name="study-pilot"),
    re_path(
        r"^r/studies/(?P<slug>[-a-zA-Z0-9_]+)/(?P<action>launch|pause|resume|close)/$",
        researcher_views.study_action,
        name="study-action",
    ),
    # The researcher REST API, schema and docs; before the apps' URLs, so its /api/jobs/<id>/
    # (object permissions) is the one that answers.
    path("api/", include("studyplatform.api")),
    path("", include("studies.urls")),
    path("", include("explanations.urls")),
    path("", include("analysis.urls")),
    path("", include("labeling.urls")),
]
