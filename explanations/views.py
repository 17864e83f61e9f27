"""Researcher pages and API for explanation jobs (staff only)."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from rest_framework import serializers
from rest_framework.generics import RetrieveAPIView
from rest_framework.permissions import IsAdminUser

from .models import Explanation, ExplanationJob, Prediction


@staff_member_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Progress of a job (refreshes itself while running) and the overlays produced so far."""
    job = get_object_or_404(ExplanationJob.objects.select_related("model", "dataset"), pk=pk)
    predictions = {
        p.item_id: p for p in Prediction.objects.filter(model=job.model, item__dataset=job.dataset)
    }
    rows = []
    for job_item in job.job_items.select_related("item"):
        item = job_item.item
        explanations = list(
            Explanation.objects.filter(model=job.model, item=item, method=job.method).order_by(
                "target_rank", "target_index"
            )
        )
        rows.append(
            {
                "job_item": job_item,
                "item": item,
                "prediction": predictions.get(item.pk),
                "explanations": explanations,
            }
        )
    return render(request, "explanations/job_detail.html", {"job": job, "rows": rows})


@staff_member_required
def explanation_overlay(request: HttpRequest, pk: int) -> FileResponse:
    explanation = get_object_or_404(Explanation, pk=pk)
    if not explanation.overlay:
        raise Http404
    return FileResponse(explanation.overlay.open("rb"), content_type="image/png")


class ExplanationJobSerializer(serializers.ModelSerializer):
    progress = serializers.FloatField(read_only=True)

    class Meta:
        model = ExplanationJob
        fields = [
            "id",
            "method",
            "top_k",
            "status",
            "total_items",
            "done_items",
            "failed_items",
            "progress",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]


class ExplanationJobDetailApi(RetrieveAPIView):
    """GET /api/jobs/<id>/: status and progress of an explanation job (staff only)."""

    queryset = ExplanationJob.objects.all()
    serializer_class = ExplanationJobSerializer
    permission_classes = [IsAdminUser]
