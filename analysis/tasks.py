"""Celery adapters for the analysis app (queue ``cpu``)."""

from __future__ import annotations

from celery import shared_task


@shared_task(
    name="analysis.tasks.report_run_task",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=3600,
    time_limit=3660,
)
def report_run_task(run_id: int) -> None:
    """Run :func:`analysis.services.report_run_execute` for ``run_id``."""
    from .services import report_run_execute

    report_run_execute(run_id=run_id)
