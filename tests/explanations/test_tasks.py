"""The Celery adapter loads by id and calls the service (JSON-round-tripped arguments)."""

import json

import pytest

from explanations import tasks


@pytest.mark.django_db
def test_task_calls_the_job_service_with_the_id(monkeypatch):
    seen = []
    monkeypatch.setattr(
        tasks.services,
        "explanation_job_run",
        lambda *, job_id, item_ids: seen.append((job_id, item_ids)),
    )
    tasks.explanation_job_run_task.apply(args=json.loads(json.dumps([42]))).get()
    tasks.explanation_job_run_task.apply(args=json.loads(json.dumps([42, [3, 5]]))).get()
    assert seen == [(42, None), (42, [3, 5])]  # a whole job, or one batch of its items


def test_task_is_routed_to_the_gpu_queue_and_acks_late():
    from django.conf import settings

    assert (
        settings.CELERY_TASK_ROUTES["explanations.tasks.explanation_job_run_task"]["queue"] == "gpu"
    )
    assert tasks.explanation_job_run_task.acks_late is True
    assert tasks.explanation_job_run_task.reject_on_worker_lost is True
