"""Background report runs on the cpu queue: progress per section, the finished file, failures
recorded, and only the owner sees them."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from analysis import services as report_services
from analysis.models import ReportRun, ReportRunStatus
from analysis.report import SECTIONS
from tests.studies.conftest import engine_world, make_study  # noqa: F401  (the engine world)


@pytest.fixture
def study(make_study):  # noqa: F811
    from django.test import Client

    from studies.simulation import ResponseModel, simulated_participant_run

    study = make_study(
        conditions=[{"name": "gradcam", "method": "gradcam"}, {"name": "none", "method": "none"}]
    )
    rm = ResponseModel(default_accuracy=0.7)
    for seed in range(3):
        simulated_participant_run(client=Client(), study=study, rm=rm, seed=seed)
    return study


def test_a_run_is_queued_on_cpu_after_commit_and_reports_progress(
    study, researcher, client, monkeypatch, django_capture_on_commit_callbacks
):
    from analysis import tasks

    sent = []
    monkeypatch.setattr(tasks.report_run_task, "delay", lambda pk: sent.append(pk))
    client.force_login(researcher)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/r/studies/{study.slug}/report-runs/", {"mixed": "true"})
    run = ReportRun.objects.get()
    assert sent == [run.pk] and response.status_code == 302
    assert response["Location"].endswith(f"?run={run.pk}")
    page = client.get(response["Location"]).content.decode()
    assert "Preparing the full report" in page and f"{run.pk}.json" in page
    seen = []
    real = report_services.study_report_html

    def spy(*args, progress, **kwargs):
        def record(done, total, section):
            progress(done, total, section)
            seen.append(ReportRun.objects.values_list("done", "section").get(pk=run.pk))

        return real(*args, progress=record, **kwargs)

    monkeypatch.setattr(report_services, "study_report_html", spy)
    run = report_services.report_run_execute(run_id=run.pk)
    assert run.status == ReportRunStatus.SUCCEEDED and run.done == run.total == len(SECTIONS)
    assert [done for done, _ in seen] == list(range(1, len(SECTIONS) + 1))  # stored as it goes
    assert [section for _, section in seen] == list(SECTIONS)
    status = client.get(f"/r/studies/{study.slug}/report-runs/{run.pk}.json").json()
    assert status["status"] == "succeeded" and status["download"]
    download = client.get(f"/r/studies/{study.slug}/report-runs/{run.pk}.html")
    assert download.status_code == 200
    assert b"Conditions compared" in b"".join(download.streaming_content)
    # running it again does nothing
    assert report_services.report_run_execute(run_id=run.pk).finished_at == run.finished_at


def test_a_failing_run_is_recorded_not_lost(study, monkeypatch):
    monkeypatch.setattr("analysis.tasks.report_run_task.delay", lambda pk: None)
    run = report_services.report_run_create(study=study)

    def broken(*a, **k):
        raise RuntimeError("statsmodels exploded")

    monkeypatch.setattr(report_services, "study_report_html", broken)
    run = report_services.report_run_execute(run_id=run.pk)
    assert run.status == ReportRunStatus.FAILED and "statsmodels exploded" in run.error
    with pytest.raises(ValueError, match="mixed"):
        report_services.report_run_create(study=study, mixed="sometimes")


def test_runs_are_the_owners_only(study, researcher, client, monkeypatch):
    monkeypatch.setattr("analysis.tasks.report_run_task.delay", lambda pk: None)
    run = report_services.report_run_create(study=study, user=researcher)
    other = get_user_model().objects.create_user("someone-else", password="x")
    client.force_login(other)
    assert client.get(f"/r/studies/{study.slug}/report-runs/{run.pk}.json").status_code == 404
    assert client.post(f"/r/studies/{study.slug}/report-runs/").status_code == 404
    client.force_login(researcher)
    assert client.get(f"/r/studies/{study.slug}/report-runs/{run.pk}.html").status_code == 404
    assert client.get(f"/r/studies/{study.slug}/report-runs/").status_code == 400
    bad = client.post(f"/r/studies/{study.slug}/report-runs/", {"mixed": "sometimes"})
    assert bad.status_code == 400 and ReportRun.objects.count() == 1  # nothing created


def test_the_report_task_is_routed_to_the_cpu_queue(settings):
    assert settings.CELERY_TASK_ROUTES["analysis.tasks.report_run_task"] == {"queue": "cpu"}
