"""Celery adapters for the labeling app (queue ``cpu``)."""

from __future__ import annotations

from celery import shared_task


@shared_task(
    name="labeling.tasks.training_run_task",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 60,
)
def training_run_task(run_id: int) -> None:
    """Run :func:`labeling.services.training_run_execute` for ``run_id``."""
    from .services import training_run_execute

    training_run_execute(run_id=run_id)


@shared_task(
    name="labeling.tasks.curation_project_build_task",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=3600,
    time_limit=3660,
)
def curation_project_build_task(project_id: int) -> None:
    """Run :func:`labeling.curation.curation_project_build` for ``project_id``."""
    from .curation import curation_project_build

    curation_project_build(project_id=project_id)
