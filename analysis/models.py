"""Background analysis runs: a full report computed on the ``cpu`` queue with progress."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ReportRunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ReportRun(models.Model):
    """One request for a study's full HTML report, computed by a Celery worker.

    ``done`` / ``total`` count the report's sections (:data:`analysis.report.SECTIONS`);
    ``section`` names the last one finished; ``html`` holds the finished report.
    """

    study = models.ForeignKey("studies.Study", on_delete=models.CASCADE, related_name="+")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    simulated = models.CharField(max_length=10, default="include")
    mixed = models.CharField(max_length=5, default="true", help_text="auto, true or false")
    status = models.CharField(
        max_length=10, choices=ReportRunStatus.choices, default=ReportRunStatus.PENDING
    )
    done = models.PositiveSmallIntegerField(default=0)
    total = models.PositiveSmallIntegerField(default=0)
    section = models.CharField(max_length=40, blank=True)
    html = models.FileField(upload_to="reports/", blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"report of {self.study_id} ({self.status} {self.done}/{self.total})"

    @property
    def is_finished(self) -> bool:
        return self.status in (ReportRunStatus.SUCCEEDED, ReportRunStatus.FAILED)
