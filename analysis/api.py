"""Researcher REST API of the analysis app: a study's results table and its responses as CSV
or Parquet (owner or superuser only, through ``study_get_for_user``; everyone else gets 404)."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from explanations.api import ErrorSerializer
from studies.researcher_views import study_get_for_user

from .export import PARQUET_MEDIA_TYPE, csv_bytes, parquet_bytes
from .report import frame_records, report_records
from .results import SIMULATED_FILTERS, study_report, study_results

_SIMULATED = OpenApiParameter(
    "simulated",
    str,
    enum=list(SIMULATED_FILTERS),
    default="include",
    description="Simulated participants (bots): include, exclude or only them.",
)
_ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Unknown simulated filter or format."),
    404: OpenApiResponse(ErrorSerializer, description="Unknown study, or not yours."),
}


class ResultRowSerializer(serializers.Serializer):
    """One row of :func:`analysis.results.study_results`' table."""

    task = serializers.CharField()
    model = serializers.CharField(help_text='"model right", "model wrong" or "all".')
    n = serializers.IntegerField()
    n_correct = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True, help_text="Wilson 95% interval.")
    ci_high = serializers.FloatField(allow_null=True)
    chance = serializers.FloatField()
    p_value = serializers.FloatField(allow_null=True, help_text="Two-sided exact binomial.")


class StudyResultsSerializer(serializers.Serializer):
    study = serializers.CharField()
    simulated = serializers.ChoiceField(choices=SIMULATED_FILTERS)
    n_participants = serializers.IntegerField()
    n_simulated = serializers.IntegerField()
    rows = ResultRowSerializer(many=True)


def _simulated(request) -> str:
    value = request.query_params.get("simulated", "include")
    if value not in SIMULATED_FILTERS:
        raise serializers.ValidationError(
            {"simulated": [f"simulated must be one of {', '.join(SIMULATED_FILTERS)}"]}
        )
    return value


class StudyResultsApi(APIView):
    """``GET /api/studies/<slug>/results/?simulated=include|exclude|only``: accuracy per task,
    split by whether the model was right, with Wilson 95% intervals and exact binomial tests
    against chance (the table of the results page, as JSON records)."""

    @extend_schema(parameters=[_SIMULATED], responses={200: StudyResultsSerializer, **_ERRORS})
    def get(self, request, slug: str):
        study = study_get_for_user(request.user, slug)
        simulated = _simulated(request)
        results = study_results(study, simulated=simulated)
        body = {
            "study": study.slug,
            "simulated": simulated,
            "n_participants": results.n_participants,
            "n_simulated": results.n_simulated,
            "rows": frame_records(results.table),
        }
        return Response(StudyResultsSerializer(body).data)


EXPORT_FORMATS = ("csv", "parquet")

_FORMAT = OpenApiParameter(
    "format",
    str,
    enum=list(EXPORT_FORMATS),
    default="csv",
    description="File format: csv (RFC 4180, formula-safe) or parquet (typed columns).",
)


class _ExportNegotiation(DefaultContentNegotiation):
    """``?format=`` picks the export's file format here, not a DRF renderer (DRF would answer
    404 for a format it has no renderer for); whatever the body, errors are JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        renderer = JSONRenderer()
        return renderer, renderer.media_type


class StudyResponsesExportApi(APIView):
    """``GET /api/studies/<slug>/responses.csv?simulated=...&format=csv|parquet``: the
    long-format data, one row per response (the columns of
    ``analysis.datasets.RESPONSE_COLUMNS``), as UTF-8 CSV (default) or typed Parquet; errors
    are JSON."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = _ExportNegotiation

    @extend_schema(
        operation_id="studies_responses_csv",
        parameters=[_SIMULATED, _FORMAT],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV export."),
            (200, PARQUET_MEDIA_TYPE): OpenApiResponse(
                OpenApiTypes.BINARY, description="Parquet export (format=parquet)."
            ),
            **_ERRORS,
        },
    )
    def get(self, request, slug: str):
        study = study_get_for_user(request.user, slug)
        simulated = _simulated(request)
        fmt = request.query_params.get("format", "csv")
        if fmt not in EXPORT_FORMATS:
            raise serializers.ValidationError(
                {"format": [f"format must be one of {', '.join(EXPORT_FORMATS)}"]}
            )
        frame = study_results(study, simulated=simulated).responses
        if fmt == "parquet":
            response = HttpResponse(parquet_bytes(frame), content_type=PARQUET_MEDIA_TYPE)
        else:
            response = HttpResponse(
                csv_bytes(frame, bom=request.GET.get("bom") == "1"),
                content_type="text/csv; charset=utf-8",
            )
        response["Content-Disposition"] = f'attachment; filename="{study.slug}-responses.{fmt}"'
        return response


class StudyReportApi(APIView):
    """``GET /api/studies/<slug>/report/?simulated=...&mixed=auto|true|false``: the full
    analysis as JSON (:func:`analysis.report.report_records`): accuracy, per-participant
    t-tests, pairwise comparisons with Holm, logistic and mixed-effects models, power,
    response times, confidence, human-vs-automatic correlations, rater agreement, detection
    (text studies), conditions compared on the same items (``same_items``,
    ``same_items_tests``) and warnings."""

    @extend_schema(
        parameters=[
            _SIMULATED,
            OpenApiParameter(
                "mixed",
                str,
                enum=["auto", "true", "false"],
                default="auto",
                description="Fit the mixed-effects model: auto (tasks up to 20,000 answers).",
            ),
        ],
        responses={200: OpenApiTypes.OBJECT, **_ERRORS},
    )
    def get(self, request, slug: str):
        study = study_get_for_user(request.user, slug)
        simulated = _simulated(request)
        mixed = {"auto": "auto", "true": True, "false": False}.get(
            request.query_params.get("mixed", "auto")
        )
        if mixed is None:
            raise serializers.ValidationError({"mixed": ["mixed must be auto, true or false"]})
        report = study_report(study, simulated=simulated, mixed=mixed)
        return Response({"study": study.slug, "simulated": simulated, **report_records(report)})


class StudySharedInterestApi(APIView):
    """``GET /api/studies/<slug>/shared-interest/?source=dataset|participants``: per method
    and item, IoU, ground-truth and saliency coverage of the human region by the model's
    top-1 map (mean + 1 SD), whether the model was right and the recurring pattern (Boggust
    et al., CHI 2022), plus the pattern counts."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "source",
                str,
                enum=["dataset", "participants"],
                default="dataset",
                description="Human regions imported with the dataset, or participants' "
                "region annotations pooled by majority.",
            )
        ],
        responses={200: OpenApiTypes.OBJECT, **_ERRORS},
    )
    def get(self, request, slug: str):
        from .regions import SOURCES, study_shared_interest

        study = study_get_for_user(request.user, slug)
        source = request.query_params.get("source", "dataset")
        if source not in SOURCES:
            raise serializers.ValidationError({"source": [f"source must be one of {SOURCES}"]})
        frame = study_shared_interest(study, source=source)
        counts = frame["pattern"].value_counts().to_dict() if not frame.empty else {}
        return Response(
            {
                "study": study.slug,
                "source": source,
                "binarization": "mean + 1 SD",
                "pattern_counts": {k: int(v) for k, v in counts.items()},
                "rows": frame_records(frame) if not frame.empty else [],
            }
        )
