"""Celery adapters for the explanations app: load by id, call one service."""

from celery import shared_task

from . import services


@shared_task(
    name="explanations.tasks.explanation_job_run_task",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 60,
)
def explanation_job_run_task(job_id: int) -> None:
    """Run :func:`explanations.services.explanation_job_run` on queue ``gpu``."""
    services.explanation_job_run(job_id=job_id)
