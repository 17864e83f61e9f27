"""The explanation pipeline: cached artifacts keyed by method parameters, jobs split into
batches, failed items retried, progress rate and ETA, signed maps rendered with their sign."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

import numpy as np
import pytest
import torch
from django.utils import timezone

from explanations import rendering
from explanations.explainers.base import Explainer
from explanations.models import (
    Explanation,
    ExplanationJob,
    ExplanationJobItem,
    JobItemStatus,
    JobStatus,
)
from explanations.services import (
    explanation_array_load,
    explanation_job_create,
    explanation_job_retry_failed,
    explanation_job_run,
    explanation_params_key,
)
from explanations.services import jobs as job_services


class ScaledInput(Explainer):
    """Test method with a parameter: the map is ``scale`` times the input's channel mean
    (signed when ``scale`` < 0), so every value is known."""

    key: ClassVar[str] = "scaled_input"
    name: ClassVar[str] = "Scaled input"
    paper: ClassVar[str] = "none (test double)"
    accepted_params: ClassVar[frozenset[str]] = frozenset({"scale"})

    def __init__(self, model, *, target_layer=None, **params):
        super().__init__(model, target_layer=target_layer, **params)
        self.params = {"scale": float(params.get("scale", 1.0))}

    def _attribute(self, inputs: torch.Tensor, targets):
        mean = inputs[0].mean(dim=0).numpy() * self.params["scale"]
        return np.stack([mean for _ in targets])


@pytest.fixture
def scaled_method(settings):
    settings.STUDYPLATFORM_EXPLAINERS = [
        *settings.STUDYPLATFORM_EXPLAINERS,
        "tests.explanations.test_job_pipeline.ScaledInput",
    ]


def run_job(model, dataset, monkeypatch, capture, **kwargs) -> ExplanationJob:
    monkeypatch.setattr(job_services, "explanation_job_enqueue", lambda *, job_id: None)
    with capture(execute=True):
        job = explanation_job_create(model=model, dataset=dataset, top_k=2, **kwargs)
    return explanation_job_run(job_id=job.pk)


def test_artifacts_are_cached_by_parameters_and_never_overwritten(
    factory_model, folder_dataset, scaled_method, monkeypatch, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    first = run_job(factory_model, folder_dataset, monkeypatch, capture, method="scaled_input")
    assert first.status == JobStatus.SUCCEEDED
    rows = list(Explanation.objects.filter(method="scaled_input").order_by("id"))
    key1 = explanation_params_key("scaled_input", {"scale": 1.0})
    assert rows and {r.params_key for r in rows} == {key1}
    before = {r.pk: explanation_array_load(r).copy() for r in rows}
    # the same parameters (explicitly, this time): nothing is recomputed
    again = run_job(
        factory_model,
        folder_dataset,
        monkeypatch,
        capture,
        method="scaled_input",
        params={"scale": 1.0},
    )
    assert again.done_items == again.total_items
    assert list(Explanation.objects.filter(method="scaled_input").order_by("id")) == rows
    # another parameter value: new artifacts beside the old ones, which are untouched
    run_job(
        factory_model,
        folder_dataset,
        monkeypatch,
        capture,
        method="scaled_input",
        params={"scale": -2.0},
    )
    key2 = explanation_params_key("scaled_input", {"scale": -2.0})
    new = Explanation.objects.filter(params_key=key2)
    assert new.count() == len(rows)
    for r in rows:
        assert np.array_equal(
            explanation_array_load(Explanation.objects.get(pk=r.pk)), before[r.pk]
        )
        twin = new.get(item=r.item, target_index=r.target_index)
        assert np.allclose(explanation_array_load(twin), -2.0 * before[r.pk], atol=1e-6)
        assert twin.min_value < 0  # signed: kept in the stored array
    assert len({r.array.name for r in Explanation.objects.all()}) == Explanation.objects.count()


def test_unknown_parameters_are_refused_at_creation(factory_model, folder_dataset, scaled_method):
    with pytest.raises(
        ValueError, match=r"scaled_input does not accept parameter\(s\) \['sigma'\]"
    ):
        explanation_job_create(
            model=factory_model, dataset=folder_dataset, method="scaled_input", params={"sigma": 1}
        )
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        explanation_job_create(model=factory_model, dataset=folder_dataset, batch_size=0)
    assert not ExplanationJob.objects.exists()


def test_a_job_is_split_into_batches_of_items(
    factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks
):
    from explanations import tasks

    sent = []
    monkeypatch.setattr(tasks.explanation_job_run_task, "delay", lambda *a: sent.append(a))
    with django_capture_on_commit_callbacks(execute=True):
        job = explanation_job_create(model=factory_model, dataset=folder_dataset, batch_size=5)
    items = list(job.job_items.order_by("id").values_list("item_id", flat=True))
    assert len(items) == 9  # 3 colour folders x 3 images
    assert sent == [(job.pk, items[0:5]), (job.pk, items[5:9])]
    # one batch runs only its own items
    explanation_job_run(job_id=job.pk, item_ids=items[5:9])
    done = set(job.job_items.filter(status=JobItemStatus.DONE).values_list("item_id", flat=True))
    assert done == set(items[5:9])
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.done_items == 4


def test_a_failed_item_is_reported_and_can_be_retried(
    factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    broken = folder_dataset.items.order_by("id").first()
    good_bytes = broken.image.read()
    broken.image.close()
    with broken.image.open("wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n truncated")
    job = run_job(factory_model, folder_dataset, monkeypatch, capture)
    assert (job.status, job.failed_items, job.done_items) == (JobStatus.SUCCEEDED, 1, 8)
    assert broken.name in job.error and "ImageDecodeError" in job.error
    with broken.image.open("wb") as fh:  # the researcher fixes the file...
        fh.write(good_bytes)
    sent = []
    monkeypatch.setattr(
        job_services, "explanation_job_enqueue", lambda *, job_id: sent.append(job_id)
    )
    with capture(execute=True):
        assert explanation_job_retry_failed(job=job) == 1  # ...and retries
    assert sent == [job.pk] and job.status == JobStatus.RUNNING and job.failed_items == 0
    job = explanation_job_run(job_id=job.pk)
    assert (job.status, job.failed_items, job.done_items, job.error) == (
        JobStatus.SUCCEEDED,
        0,
        9,
        "",
    )
    assert ExplanationJobItem.objects.filter(job=job, status=JobItemStatus.FAILED).count() == 0


def test_rate_and_eta_follow_the_items_done(db, factory_model, folder_dataset):
    job = ExplanationJob.objects.create(
        model=factory_model,
        dataset=folder_dataset,
        method="gradcam",
        total_items=100,
        done_items=18,
        failed_items=2,
        status=JobStatus.RUNNING,
        started_at=timezone.now() - timedelta(seconds=10),
    )
    assert job.rate == pytest.approx(2.0, rel=0.01)  # 20 items in 10 s
    assert job.eta_seconds == pytest.approx(40.0, rel=0.01)  # 80 left at 2/s
    job.status = JobStatus.SUCCEEDED
    assert job.eta_seconds == 0.0


def test_signed_maps_are_shown_with_a_diverging_map_centred_on_zero():
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    signed = np.array([[[-2.0, 0.0, 1.0], [2.0, -1.0, 0.0]]], dtype=np.float32)
    (shown,) = rendering.overlays(image, signed, alpha=1.0)
    bwr = rendering.matplotlib.colormaps["bwr"]
    for (r, c), v in {(0, 0): -1.0, (0, 1): 0.0, (0, 2): 0.5, (1, 0): 1.0}.items():
        expected = np.rint(np.array(bwr((v + 1) / 2)[:3]) * 255)
        assert np.array_equal(shown[r, c], expected.astype(np.uint8)), (r, c)
    assert shown[0, 0, 2] > shown[0, 0, 0] and shown[1, 0, 0] > shown[1, 0, 2]  # blue / red
    # jointly: one scale for both maps, so the weaker map stays weaker
    pair = np.stack([signed[0], signed[0] / 2])
    strong, weak = rendering.overlays(image, pair, joint=True, alpha=1.0)
    assert np.array_equal(strong[1, 0], np.rint(np.array(bwr(1.0)[:3]) * 255).astype(np.uint8))
    assert np.array_equal(weak[1, 0], np.rint(np.array(bwr(0.75)[:3]) * 255).astype(np.uint8))
    # non-negative maps keep the sequential map
    (seq,) = rendering.overlays(image, np.abs(signed), alpha=1.0)
    jet = rendering.matplotlib.colormaps["jet"]
    assert np.array_equal(seq[1, 0], np.rint(np.array(jet(1.0)[:3]) * 255).astype(np.uint8))


def test_the_job_page_lists_failures_and_retries_them(
    factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks, client
):
    from django.contrib.auth import get_user_model

    broken = folder_dataset.items.order_by("id").first()
    with broken.image.open("wb") as fh:
        fh.write(b"not an image")
    job = run_job(factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks)
    staff = get_user_model().objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    page = client.get(f"/r/jobs/{job.pk}/").content.decode()
    assert "Failed items" in page and broken.name in page and "ImageDecodeError" in page
    assert "Retry the 1 failed item" in page and "items/s" in page
    sent = []
    monkeypatch.setattr(
        job_services, "explanation_job_enqueue", lambda *, job_id: sent.append(job_id)
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/r/jobs/{job.pk}/retry/")
    assert response.status_code == 302 and sent == [job.pk]
    assert job.job_items.get(item=broken).status == JobItemStatus.PENDING
    client.logout()
    assert client.post(f"/r/jobs/{job.pk}/retry/").status_code == 302  # to the login
    assert job.job_items.get(item=broken).status == JobItemStatus.PENDING


def test_evaluate_stores_deletion_and_insertion_auc_per_map(
    factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks
):
    from explanations.evaluation import deletion_insertion_auc
    from explanations.modelio import pixels_to_input
    from explanations.services import classifier_load, item_model_view

    job = run_job(
        factory_model,
        folder_dataset,
        monkeypatch,
        django_capture_on_commit_callbacks,
        evaluate=True,
    )
    maps = Explanation.objects.filter(model=factory_model)
    assert maps.count() == 2 * job.total_items
    for e in maps:
        assert 0.0 <= e.deletion_auc <= 1.0 and 0.0 <= e.insertion_auc <= 1.0
    # the stored numbers are the metric's, recomputed here for one map
    e = maps.first()
    net = classifier_load(factory_model)
    view = item_model_view(item=e.item, model=factory_model)
    x = pixels_to_input(view, factory_model.normalization_mean, factory_model.normalization_std)
    again = deletion_insertion_auc(net, x, explanation_array_load(e), e.target_index)
    assert (e.deletion_auc, e.insertion_auc) == pytest.approx(
        (again.deletion_auc, again.insertion_auc), abs=1e-9
    )


def test_the_model_view_is_decoded_once_and_then_read_from_its_cache(
    factory_model, folder_dataset, media
):
    from explanations import imageio
    from explanations.services import item_model_view

    item = folder_dataset.items.order_by("id").first()
    first = item_model_view(item=item, model=factory_model)
    cached = list((media / "views").rglob("*.npy"))
    assert len(cached) == 1 and cached[0].name.startswith(item.sha256)
    calls = []
    original = imageio.image_decode
    try:
        from explanations.services import registry

        registry.image_decode = lambda *a, **k: calls.append(1) or original(*a, **k)
        again = item_model_view(item=item, model=factory_model)
        assert calls == [] and np.array_equal(first, again)  # the same pixels, no decoding
        factory_model.input_size = 16  # another size is another entry, decoded once
        small = item_model_view(item=item, model=factory_model)
        assert calls == [1] and small.shape == (16, 16, 3)
    finally:
        registry.image_decode = original


# -- leases and commits of blocks of items ------------------------------------------------------


def created_job(model, dataset, monkeypatch, capture, **kwargs) -> ExplanationJob:
    monkeypatch.setattr(job_services, "explanation_job_enqueue", lambda *, job_id: None)
    with capture(execute=True):
        return explanation_job_create(model=model, dataset=dataset, top_k=2, **kwargs)


def test_items_leased_by_another_runner_are_left_to_it(
    factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks
):
    job = created_job(
        factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks
    )
    held = list(job.job_items.order_by("id")[:3])
    ExplanationJobItem.objects.filter(pk__in=[h.pk for h in held]).update(
        leased_until=timezone.now() + timedelta(minutes=5), lease_token="other-runner"
    )
    job = explanation_job_run(job_id=job.pk)
    assert (job.status, job.done_items, job.failed_items) == (JobStatus.RUNNING, 6, 0)
    for h in held:
        h.refresh_from_db()
        assert (h.status, h.lease_token, h.attempts) == (JobItemStatus.PENDING, "other-runner", 0)
    assert not Explanation.objects.filter(item__in=[h.item_id for h in held]).exists()
    # Once that lease has expired, a run takes the items over and finishes the job.
    ExplanationJobItem.objects.filter(pk__in=[h.pk for h in held]).update(
        leased_until=timezone.now() - timedelta(seconds=1)
    )
    job = explanation_job_run(job_id=job.pk)
    assert (job.status, job.done_items, job.failed_items) == (JobStatus.SUCCEEDED, 9, 0)


def test_a_transient_error_commits_the_finished_items_and_releases_the_rest(
    factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks
):
    from django.db import OperationalError

    job = created_job(
        factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks
    )
    real = job_services._item_explain
    calls = []

    def third_fails(**kwargs):
        calls.append(kwargs["item"].pk)
        if len(calls) == 3:
            raise OperationalError("database is locked")
        return real(**kwargs)

    monkeypatch.setattr(job_services, "_item_explain", third_fails)
    with pytest.raises(OperationalError):
        explanation_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert (job.done_items, job.failed_items) == (2, 0)  # committed although the block was not
    rows = list(job.job_items.order_by("id"))
    assert [r.status for r in rows] == [JobItemStatus.DONE] * 2 + [JobItemStatus.PENDING] * 7
    assert all(r.leased_until is None and r.lease_token == "" for r in rows)  # free for a retry
    assert Explanation.objects.filter(item_id__in=calls[:2]).count() == 4  # top-2 of each
    monkeypatch.setattr(job_services, "_item_explain", real)
    job = explanation_job_run(job_id=job.pk)  # the task's retry continues where it stopped
    assert (job.status, job.done_items, job.failed_items) == (JobStatus.SUCCEEDED, 9, 0)
    assert Explanation.objects.filter(model=factory_model).count() == 18


def test_slow_items_commit_one_by_one_and_renew_the_lease_of_the_rest(
    factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks
):
    job = created_job(
        factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks
    )
    monkeypatch.setattr(job_services, "JOB_COMMIT_INTERVAL_S", 0.0)  # every item is "slow"
    real = job_services._item_explain
    seen = []  # (items done so far, latest lease of the items still pending) at each call

    def observe(**kwargs):
        pending = job.job_items.filter(status=JobItemStatus.PENDING)
        seen.append(
            (
                job.job_items.filter(status=JobItemStatus.DONE).count(),
                max(pending.values_list("leased_until", flat=True)),
            )
        )
        return real(**kwargs)

    monkeypatch.setattr(job_services, "_item_explain", observe)
    job = explanation_job_run(job_id=job.pk)
    assert job.status == JobStatus.SUCCEEDED
    assert [done for done, _ in seen] == list(range(9))  # committed after every item
    leases = [lease for _, lease in seen]
    assert leases == sorted(leases) and leases[-1] > leases[0]  # renewed at each commit
