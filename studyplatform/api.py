"""The researcher REST API under ``/api/``: its URL list, error format and OpenAPI wiring.

Endpoints live in their apps (``explanations/api.py``, ``studies/researcher_api.py``,
``analysis/api.py``); this module only routes them. Authentication: a session or
``Authorization: Token <key>`` (``POST /api/auth/token/`` with username and password).
The participant API (``/api/p/<token>/``, ``studies/api.py``) is routed by ``studies.urls``.
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token
from rest_framework.views import exception_handler

from analysis import api as analysis_api
from explanations import api as explanations_api
from studies import researcher_api

app_name = "api"

def spec_schema_view(request):
    """The study spec's JSON Schema (public; the same as docs/study-spec.schema.json)."""
    from django.http import HttpResponse

    from studies.spec import spec_schema_json

    return HttpResponse(spec_schema_json(), content_type="application/schema+json")


urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("study-spec.schema.json", spec_schema_view, name="study-spec-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("auth/token/", obtain_auth_token, name="token"),
    path("models/", explanations_api.ClassifierModelListRegisterApi.as_view(), name="models"),
    path("models/<int:pk>/", explanations_api.ClassifierModelDetailApi.as_view(), name="model"),
    path(
        "models/<int:pk>/predictions/",
        explanations_api.PredictionListApi.as_view(),
        name="model-predictions",
    ),
    path("datasets/", explanations_api.DatasetListApi.as_view(), name="datasets"),
    path("datasets/<int:pk>/", explanations_api.DatasetDetailApi.as_view(), name="dataset"),
    path(
        "datasets/<int:pk>/items/",
        explanations_api.DatasetItemUploadApi.as_view(),
        name="dataset-items",
    ),
    path(
        "datasets/<int:pk>/items/<int:item_id>/",
        explanations_api.DatasetItemDetailApi.as_view(),
        name="dataset-item",
    ),
    path(
        "datasets/<int:pk>/imports/",
        explanations_api.DatasetImportCreateApi.as_view(),
        name="dataset-imports",
    ),
    path("imports/<int:pk>/", explanations_api.DatasetImportDetailApi.as_view(), name="import"),
    path("jobs/", explanations_api.ExplanationJobListCreateApi.as_view(), name="jobs"),
    path("jobs/<int:pk>/", explanations_api.ExplanationJobDetailApi.as_view(), name="job"),
    path("studies/", researcher_api.StudyListApi.as_view(), name="studies"),
    path("studies/<slug:slug>/", researcher_api.StudyDetailApi.as_view(), name="study"),
    path(
        "studies/<slug:slug>/results/",
        analysis_api.StudyResultsApi.as_view(),
        name="study-results",
    ),
    path(
        "studies/<slug:slug>/shared-interest/",
        analysis_api.StudySharedInterestApi.as_view(),
        name="study-shared-interest",
    ),
    path(
        "studies/<slug:slug>/report/",
        analysis_api.StudyReportApi.as_view(),
        name="study-report",
    ),
    path(
        "studies/<slug:slug>/responses.csv",
        analysis_api.StudyResponsesExportApi.as_view(),
        name="study-responses-csv",
    ),
]


def api_exception_handler(exc, context):
    """DRF's handler, then one shape for every error body: a JSON object whose ``detail`` is
    a sentence; validation errors keep their per-field message lists beside it."""
    response = exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(data, list):
        response.data = {"detail": " ".join(str(message) for message in data)}
    elif isinstance(data, dict) and "detail" not in data:
        response.data = {"detail": _summary(data), **data}
    return response


def _summary(errors: dict) -> str:
    parts = []
    for field, messages in errors.items():
        first = messages[0] if isinstance(messages, list) and messages else messages
        if isinstance(first, dict):  # a nested serializer's errors
            first = _summary(first)
        parts.append(str(first) if field == "non_field_errors" else f"{field}: {first}")
    return "; ".join(parts) or "Invalid input."
