"""Background report runs: create, enqueue after commit, execute on a ``cpu`` worker."""

from __future__ import annotations

import logging

from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from studies.models import Study

from .models import ReportRun, ReportRunStatus
from .report import SECTIONS
from .results import SIMULATED_FILTERS, study_report_html

logger = logging.getLogger(__name__)

MIXED_CHOICES = {"auto": "auto", "true": True, "false": False}


def report_run_create(*, study: Study, user=None, simulated: str = "include", mixed: str = "true"):
    """Record a report request and send it to the ``cpu`` queue once the transaction commits.

    Raises:
        ValueError: unknown ``simulated`` or ``mixed`` value.
    """
    if simulated not in SIMULATED_FILTERS:
        raise ValueError(f"simulated must be one of {SIMULATED_FILTERS}")
    if mixed not in MIXED_CHOICES:
        raise ValueError(f"mixed must be one of {tuple(MIXED_CHOICES)}")
    from .tasks import report_run_task

    with transaction.atomic():
        run = ReportRun.objects.create(
            study=study,
            requested_by=user,
            simulated=simulated,
            mixed=mixed,
            total=len(SECTIONS),
        )
        transaction.on_commit(lambda: report_run_task.delay(run.pk))
    return run


def report_run_execute(*, run_id: int) -> ReportRun:
    """Compute the run's HTML report, recording progress per section; a finished run is not
    computed again. A failure is recorded with its reason (the run is failed, not lost)."""
    run = ReportRun.objects.select_related("study").get(pk=run_id)
    if run.is_finished:
        return run
    ReportRun.objects.filter(pk=run.pk).update(
        status=ReportRunStatus.RUNNING, started_at=timezone.now(), done=0, section=""
    )

    def progress(done: int, total: int, section: str) -> None:
        ReportRun.objects.filter(pk=run.pk).update(done=done, total=total, section=section)

    try:
        html = study_report_html(
            run.study,
            simulated=run.simulated,
            mixed=MIXED_CHOICES[run.mixed],
            progress=progress,
        )
    except Exception as exc:  # recorded for the researcher; the worker goes on
        logger.exception("report run %s failed", run.pk)
        ReportRun.objects.filter(pk=run.pk).update(
            status=ReportRunStatus.FAILED,
            error=f"{type(exc).__name__}: {exc}",
            finished_at=timezone.now(),
        )
        run.refresh_from_db()
        return run
    run.html.save(f"{run.study.slug}-{run.pk}.html", ContentFile(html.encode()), save=False)
    ReportRun.objects.filter(pk=run.pk).update(
        html=run.html.name, status=ReportRunStatus.SUCCEEDED, finished_at=timezone.now()
    )
    run.refresh_from_db()
    return run
