"""Celery adapters for the explanations app: load by id, call one service.

``explanation_job_run_task`` runs on queue ``gpu``: late acknowledgement (a message is only
acked after the job ran), re-queued when its worker process dies, time-limited, retried with
exponential backoff on transient errors (database or broker connection, CUDA out of memory).
``explanation_jobs_sweep_task`` (queue ``cpu``, every minute from beat and once when a worker
starts) re-enqueues jobs whose worker vanished.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready

from . import services

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name="explanations.tasks.explanation_job_run_task",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 60,
    max_retries=8,
)
def explanation_job_run_task(self, job_id: int, item_ids: list[int] | None = None) -> None:
    """Run :func:`explanations.services.explanation_job_run` for ``job_id`` (one batch of
    items, or every pending item when ``item_ids`` is None)."""
    try:
        services.explanation_job_run(job_id=job_id, item_ids=item_ids)
    except Exception as exc:
        if not services._is_transient(exc):
            raise
        # 2, 4, 8, ... seconds, capped at 10 minutes.
        countdown = min(600, 2 ** (self.request.retries + 1))
        logger.warning("job %s: transient %s, retry in %s s", job_id, type(exc).__name__, countdown)
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task(name="explanations.tasks.explanation_jobs_sweep_task", ignore_result=True)
def explanation_jobs_sweep_task() -> list[int]:
    """Run :func:`explanations.services.explanation_jobs_sweep`."""
    return services.explanation_jobs_sweep()


@shared_task(
    name="explanations.tasks.dataset_import_job_run_task",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 60,
)
def dataset_import_job_run_task(job_id: int) -> None:
    """Run :func:`explanations.services.dataset_import_job_run` on queue ``cpu``."""
    services.dataset_import_job_run(job_id=job_id)


@worker_ready.connect
def _sweep_when_a_worker_starts(sender=None, **kwargs) -> None:
    try:
        services.explanation_jobs_sweep()
    except Exception:  # a sweep failing must never stop a worker from starting
        logger.exception("job sweep at worker start failed")
