"""Real Celery workers against a real broker: a job survives its worker being SIGKILLed.

On the PostgreSQL pass of the suite the broker is Redis (127.0.0.1:6379); on the SQLite pass
it is the embedded filesystem broker. Either way the worker is a separate ``celery worker``
process writing to the test database, and the lease sweep (run when the replacement worker
starts) is what brings the job back: the filesystem transport loses the killed worker's
in-flight message and Redis would return it only after its visibility timeout (an hour).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from celery import Celery
from django.db import connection
from django.utils import timezone

from explanations.demo import demo_dataset_import, demo_model_register
from explanations.models import (
    Explanation,
    ExplanationJobItem,
    JobItemStatus,
    JobStatus,
    Prediction,
)
from explanations.services import explanation_job_create, explanation_targets

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 3
REDIS_DB = 14


def _database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "postgresql":
        host, port = s.get("HOST") or "127.0.0.1", s.get("PORT") or 5432
        return f"postgres://{s.get('USER') or 'postgres'}@{host}:{port}/{s['NAME']}"
    return f"sqlite:///{s['NAME']}"


def _broker(tmp_path: Path) -> tuple[str, dict]:
    if connection.vendor == "postgresql":
        import redis

        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
        return f"redis://127.0.0.1:6379/{REDIS_DB}", {}
    return "filesystem://localhost//", {}


def _worker(env: dict, log: Path, name: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "studyplatform",
        "worker",
        "-Q",
        "gpu,cpu",
        "--concurrency",
        "1",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"{name}-{uuid.uuid4().hex[:6]}@%h",
        "--loglevel",
        "INFO",
    ]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=open(log, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _wait(predicate, timeout: float, what: str, logs: list[Path]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    tails = "\n".join(p.read_text(errors="replace")[-3000:] for p in logs if p.exists())
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_sigkilled_mid_batch_job_completes_with_every_artifact_once(tmp_path, settings):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    var_dir = tmp_path / "var"
    model = demo_model_register()
    dataset, report = demo_dataset_import()
    assert len(report.imported) == 10
    job = explanation_job_create(model=model, dataset=dataset, method="gradcam", top_k=4)

    broker_url, _ = _broker(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "DATABASE_URL"))}
    env.update(
        DJANGO_SETTINGS_MODULE="studyplatform.settings.base",
        DATABASE_URL=_database_url(),
        CELERY_BROKER_URL=broker_url,
        STUDYPLATFORM_VAR_DIR=str(var_dir),
        STUDYPLATFORM_MEDIA_ROOT=str(tmp_path / "media"),
        STUDYPLATFORM_JOB_LEASE_S=str(LEASE_S),
        STUDYPLATFORM_TORCH_THREADS="1",
    )
    sender = Celery(broker=broker_url)
    if broker_url.startswith("filesystem"):
        folder = var_dir / "broker"
        for sub in ("queue", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        sender.conf.broker_transport_options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
        }
    logs = [tmp_path / "worker1.log", tmp_path / "worker2.log"]
    first = _worker(env, logs[0], "first")
    second = None
    try:
        sender.send_task("explanations.tasks.explanation_job_run_task", args=[job.pk], queue="gpu")

        def mid_batch():
            job.refresh_from_db()
            return job.done_items >= 2

        _wait(mid_batch, 180, "the first worker to finish two items", logs)
        _kill_group(first)
        job.refresh_from_db()
        done_at_kill = job.done_items
        assert 2 <= done_at_kill < job.total_items, "the job must be killed mid-batch"
        assert job.status == JobStatus.RUNNING

        # The lease must lapse before a sweep may take the job over.
        _wait(
            lambda: timezone.now() - job.heartbeat_at > timezone.timedelta(seconds=LEASE_S + 0.5),
            LEASE_S + 5,
            "the lease to lapse",
            logs,
        )
        second = _worker(env, logs[1], "second")

        def finished():
            job.refresh_from_db()
            return job.is_finished

        _wait(finished, 240, "the replacement worker to finish the job", logs)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                _kill_group(proc)

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert (job.done_items, job.failed_items, job.total_items) == (10, 0, 10)
    assert job.enqueue_count >= 2  # once at creation, again by the sweep
    assert (
        not ExplanationJobItem.objects.filter(job=job).exclude(status=JobItemStatus.DONE).exists()
    )
    assert not ExplanationJobItem.objects.filter(job=job, leased_until__isnull=False).exists()

    expected = 0
    for prediction in Prediction.objects.filter(model=model).select_related("item"):
        targets = explanation_targets(prediction=prediction, item=prediction.item, top_k=4)
        stored = sorted(
            Explanation.objects.filter(model=model, item=prediction.item).values_list(
                "target_index", flat=True
            )
        )
        assert stored == sorted(targets), prediction.item.name
        expected += len(targets)
    assert Prediction.objects.filter(model=model).count() == 10
    assert Explanation.objects.count() == expected
    media = Path(settings.MEDIA_ROOT)
    on_disk = sorted(
        p.relative_to(media).as_posix() for p in (media / "explanations").rglob("*") if p.is_file()
    )
    in_db = sorted(
        [e.array.name for e in Explanation.objects.all()]
        + [e.overlay.name for e in Explanation.objects.all() if e.overlay]  # drawn on request
    )
    assert on_disk == in_db  # every artifact once, no orphan from the killed run
