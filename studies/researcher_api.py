"""Researcher REST API of the studies app: the studies you own (owner or superuser only;
everyone else gets 404, as on the researcher pages)."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.response import Response

from explanations.api import ErrorSerializer

from . import design
from .models import Study
from .researcher_views import study_get_for_user
from .spec import SpecError


def studies_for_user(user) -> QuerySet:
    """The studies ``user`` may see (their own; all for a superuser), with participant and
    trial counts, newest first."""
    studies = Study.objects.all() if user.is_superuser else Study.objects.filter(owner_id=user.pk)
    return (
        studies.select_related("owner")
        .annotate(
            n_trials=Count("trials", distinct=True),
            n_participants=Count("participants", distinct=True),
            n_completed=Count(
                "participants",
                filter=Q(participants__completed_at__isnull=False),
                distinct=True,
            ),
        )
        .order_by("-created_at", "-id")
    )


class StudySerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    n_trials = serializers.IntegerField(read_only=True)
    n_participants = serializers.IntegerField(read_only=True)
    n_completed = serializers.IntegerField(read_only=True)
    start_url = serializers.SerializerMethodField()

    class Meta:
        model = Study
        fields = [
            "slug",
            "title",
            "status",
            "owner",
            "model",
            "dataset",
            "method",
            "max_participants",
            "completion_code",
            "n_trials",
            "n_participants",
            "n_completed",
            "start_url",
            "join_code",
            "created_at",
            "launched_at",
            "spec",
        ]
        read_only_fields = fields

    def get_start_url(self, study: Study) -> str:
        """The participant link (absolute when the request is known)."""
        path = reverse("studies:start", kwargs={"slug": study.slug})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class StudyCreateSerializer(serializers.Serializer):
    spec = serializers.JSONField(help_text="A study spec (see /api/study-spec.schema.json).")
    launch = serializers.BooleanField(default=False, help_text="Open it now (freezes the spec).")


class StudyListApi(ListAPIView):
    """``GET /api/studies/``: your studies (every study for a superuser), newest first, with
    trial, participant and completion counts (paginated). ``POST``: create one from a spec
    (a draft unless ``launch``); 400 lists every fault with its field path."""

    serializer_class = StudySerializer

    def get_queryset(self):
        return studies_for_user(self.request.user)

    @extend_schema(
        request=StudyCreateSerializer,
        responses={
            201: StudySerializer,
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="{'errors': [...]}"),
        },
    )
    def post(self, request):
        body = StudyCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        spec = body.validated_data["spec"]
        if not isinstance(spec, dict):
            return Response({"errors": ["spec: must be an object"]}, status=400)
        try:
            study = design.study_create(
                spec=spec, owner=request.user, open_now=body.validated_data["launch"]
            )
        except SpecError as exc:
            return Response({"errors": exc.errors}, status=400)
        except design.StudyDesignError as exc:
            return Response({"errors": [str(exc)]}, status=400)
        study = studies_for_user(request.user).get(pk=study.pk)
        return Response(StudySerializer(study, context={"request": request}).data, status=201)


@extend_schema(
    responses={
        200: StudySerializer,
        404: OpenApiResponse(ErrorSerializer, description="Unknown, or not yours."),
    }
)
class StudyDetailApi(RetrieveAPIView):
    """``GET /api/studies/<slug>/``: one study; 404 unless you own it or are a superuser."""

    serializer_class = StudySerializer

    def get_object(self):
        study = study_get_for_user(self.request.user, self.kwargs["slug"])
        return studies_for_user(self.request.user).get(pk=study.pk)
