"""URL wiring: participant pages, researcher pages, APIs and the admin."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from studies import researcher_views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="researcher-home", permanent=False)),
    path("admin/", admin.site.urls),
    path("r/", researcher_views.researcher_home, name="researcher-home"),
    path("r/studies/<slug:slug>/", researcher_views.study_detail, name="study-detail"),
    # The researcher REST API, schema and docs; before the apps' URLs, so its /api/jobs/<id>/
    # (object permissions) is the one that answers.
    path("api/", include("studyplatform.api")),
    path("", include("studies.urls")),
    path("", include("explanations.urls")),
    path("", include("analysis.urls")),
]
