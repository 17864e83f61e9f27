"""Participant JSON API: the same payload as the pages, authenticated by the URL token."""

from __future__ import annotations

import json

from django.utils.decorators import method_decorator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from . import services
from .payloads import participant_state
from .ratelimit import participant_rate_limited
from .tasktypes import InvalidAnswer
from .views import _participant_get


class AnswerSerializer(serializers.Serializer):
    position = serializers.IntegerField(min_value=0)
    answer = serializers.JSONField(
        required=False,
        default="",
        help_text="A choice value (string), text, or an object: tradeoff {low, medium, high}, "
        "demographics {age, gender, ml_experience}, region_annotation {boxes: [[x0, y0, x1, "
        "y1], ...] in 0..1, cells: [int]}.",
    )
    rt_ms = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    tab_hidden = serializers.BooleanField(required=False, default=False)
    hidden_ms = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    timed_out = serializers.BooleanField(required=False, default=False)

    def validate_answer(self, value):
        if len(json.dumps(value)) > 20000:
            raise serializers.ValidationError("answer too long")
        return value


class ParticipantStateApi(APIView):
    """GET the participant's state; POST an answer to the current trial.

    POST returns 201 when stored, 200 when that trial was already answered (the first answer
    stands), 400 for an invalid answer, 409 for a trial that is not the current one, 410 when
    the study is closed. No response says whether an answer was correct.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @method_decorator(participant_rate_limited)
    def dispatch(self, request, *args, **kwargs):
        return super().dispatch(request, *args, **kwargs)

    @extend_schema(
        auth=[],
        tags=["participant"],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="The participant's state."),
            404: OpenApiResponse(OpenApiTypes.OBJECT, description="Unknown token."),
        },
    )
    def get(self, request, token):
        participant = _participant_get(token)
        response = Response(participant_state(participant))
        response["Cache-Control"] = "no-store"
        return response

    @extend_schema(
        auth=[],
        tags=["participant"],
        request=AnswerSerializer,
        responses={
            201: OpenApiResponse(OpenApiTypes.OBJECT, description="Stored; the new state."),
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="Already answered."),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid answer."),
            404: OpenApiResponse(OpenApiTypes.OBJECT, description="Unknown token."),
            409: OpenApiResponse(OpenApiTypes.OBJECT, description="Not the current trial."),
            410: OpenApiResponse(OpenApiTypes.OBJECT, description="The study is closed."),
        },
    )
    def post(self, request, token):
        participant = _participant_get(token)
        data = AnswerSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            result = services.response_submit(
                participant=participant,
                position=data.validated_data["position"],
                answer=data.validated_data["answer"],
                rt_ms=data.validated_data.get("rt_ms"),
                tab_hidden=data.validated_data["tab_hidden"],
                hidden_ms=data.validated_data.get("hidden_ms"),
                timed_out=data.validated_data["timed_out"],
            )
        except InvalidAnswer as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        except services.TrialOutOfOrder as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except services.StudyClosed as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_410_GONE)
        body = participant_state(participant)
        body["stored"] = result.created
        return Response(
            body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        )
