"""Explanation jobs: predictions and saliency maps for a dataset, leased and idempotent."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import torch
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from torch import nn

from .. import rendering
from ..explainers.base import Explainer, ExplainerConfigError
from ..explainers.registry import build_registry
from ..modelio import (
    CheckpointError,
    pixels_to_input,
)
from ..models import (
    OWN_EVIDENCE_KINDS,
    ClassifierModel,
    Dataset,
    Explanation,
    ExplanationJob,
    ExplanationJobItem,
    Item,
    JobItemStatus,
    JobStatus,
    ModelKind,
    Prediction,
)
from .registry import classifier_load, item_model_view

logger = logging.getLogger(__name__)

PREDICTION_TOP_K = 5


def explainer_classes() -> dict[str, type[Explainer]]:
    """The enabled explainers, keyed by method key (from ``STUDYPLATFORM_EXPLAINERS``)."""
    return build_registry(settings.STUDYPLATFORM_EXPLAINERS)


def explanation_params_key(method: str, params: dict) -> str:
    """The cache key of a method with its resolved parameters: SHA-256 (64 hex chars) of
    canonical JSON. With the model and item rows (immutable, identified by checksum) and the
    target class it names one artifact: asking again costs nothing, another parameter value
    makes a new artifact and never overwrites."""
    blob = json.dumps({"method": method, "params": params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def explanation_job_create(
    *,
    model: ClassifierModel,
    dataset: Dataset,
    method: str = "gradcam",
    top_k: int = 4,
    params: dict | None = None,
    batch_size: int = 16,
    evaluate: bool = False,
    split: str | None = None,
    limit: int | None = None,
) -> ExplanationJob:
    """Create a job over every item of ``dataset`` and enqueue it once the transaction commits.

    Args:
        params: the method's parameters (names from the explainer's ``accepted_params``);
            empty = the paper defaults the explainer documents.
        batch_size: items per worker task (the job is split into batches on the ``gpu``
            queue), >= 1.
        evaluate: also compute deletion/insertion AUC (Petsiuk et al. 2018) for every map.
        split: only the items of this split (``Item.split``).
        limit: only the first ``limit`` items (by id, after ``split``): the same items for
            every model of the dataset, so study conditions can share them.

    Raises:
        ValueError: unknown method or parameter, top_k outside 1..num_classes, batch_size < 1,
            or an empty dataset.
    """
    classes = explainer_classes()
    if method not in classes:
        raise ValueError(f"unknown explanation method {method!r}; enabled: {sorted(classes)}")
    params = dict(params or {})
    unknown = sorted(set(params) - set(classes[method].accepted_params))
    if unknown:
        raise ValueError(
            f"{method} does not accept parameter(s) {unknown}; "
            f"accepted: {sorted(classes[method].accepted_params)}"
        )
    try:
        json.dumps(params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"params must be JSON: {exc}") from None
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    needs = OWN_EVIDENCE_KINDS.get(method)
    if needs is not None and model.kind != needs:
        raise ValueError(
            f"{method} explain a {needs} model's own evidence and {model.name!r} is not one; "
            f"train one with `manage.py label_train DATASET --architecture {needs}`"
            + (" (or use posthoc_prototypes on this model)" if method == "prototypes" else "")
        )
    if not 1 <= top_k <= model.num_classes:
        raise ValueError(f"top_k must be in 1..{model.num_classes}, got {top_k}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    selected = dataset.items.all().order_by("id")
    if split:
        selected = selected.filter(split=split)
    items = list(selected[:limit] if limit else selected)
    if not items:
        where = f" in split {split!r}" if split else ""
        raise ValueError(f"dataset {dataset.name!r} has no items{where}")
    if dataset.class_names and not set(dataset.class_names) & set(model.class_names):
        raise ValueError(
            f"the classes of dataset {dataset.name!r} share no name with those of model "
            f"{model.name!r}, so no item's label can be checked against a prediction"
        )
    with transaction.atomic():
        job = ExplanationJob.objects.create(
            model=model,
            dataset=dataset,
            method=method,
            params=params,
            top_k=top_k,
            batch_size=batch_size,
            evaluate=evaluate,
            total_items=len(items),
        )
        ExplanationJobItem.objects.bulk_create(ExplanationJobItem(job=job, item=i) for i in items)
        transaction.on_commit(lambda: explanation_job_enqueue(job_id=job.pk))
    return job


def explanation_job_enqueue(*, job_id: int) -> int:
    """Send the job's pending items to the ``gpu`` queue in batches of ``job.batch_size``
    (one task each, so several GPU workers share a job); call after commit. Counts the
    sending. A job with nothing pending gets one task, which finalises it.

    Returns:
        The number of tasks sent.
    """
    from ..tasks import explanation_job_run_task

    job = ExplanationJob.objects.get(pk=job_id)
    pending = list(
        job.job_items.filter(status=JobItemStatus.PENDING)
        .order_by("id")
        .values_list("item_id", flat=True)
    )
    batches = [pending[i : i + job.batch_size] for i in range(0, len(pending), job.batch_size)]
    ExplanationJob.objects.filter(pk=job_id).update(enqueue_count=F("enqueue_count") + 1)
    for batch in batches or [None]:
        explanation_job_run_task.delay(job_id, batch)
    return len(batches or [None])


def explanation_job_retry_failed(*, job: ExplanationJob) -> int:
    """Put a job's failed items back to pending and enqueue them (after commit).

    Returns:
        How many items were retried (0: nothing failed).
    """
    with transaction.atomic():
        n = job.job_items.filter(status=JobItemStatus.FAILED).update(
            status=JobItemStatus.PENDING, error="", leased_until=None
        )
        if not n:
            return 0
        ExplanationJob.objects.filter(pk=job.pk).update(
            failed_items=F("failed_items") - n,
            status=JobStatus.RUNNING,
            finished_at=None,
            error="",
            heartbeat_at=timezone.now(),
        )
        transaction.on_commit(lambda: explanation_job_enqueue(job_id=job.pk))
    job.refresh_from_db()
    return n


#: Errors after which the same work may succeed if tried again later: the task retries with
#: backoff and the item's lease is released (never marked failed for these).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (DatabaseError, ConnectionError, TimeoutError)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return oom is not None and isinstance(exc, oom)


def torch_device() -> torch.device:
    """The device explanation work runs on (``STUDYPLATFORM_DEVICE``: auto, cpu, cuda[:n])."""
    wanted = settings.STUDYPLATFORM_DEVICE
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(wanted)


#: A runner commits its finished items at least this often (seconds), in one transaction:
#: a killed worker loses at most about this much work, and a method that takes milliseconds
#: per image pays one claim and one commit per block instead of three commits per image.
#: Slower methods (more than this per image) commit after every image.
JOB_COMMIT_INTERVAL_S = 1.0
#: Most items one claim leases together; the leases of the block's unfinished items are
#: renewed at every commit.
JOB_CLAIM_MAX = 64


def explanation_job_run(*, job_id: int, item_ids: list[int] | None = None) -> ExplanationJob:
    """Process the pending items of a job (all, or the batch ``item_ids``); safe to run again,
    and twice at once.

    Items are claimed in chunks with a lease (``STUDYPLATFORM_JOB_LEASE_S``) and a random
    token before work starts; a chunk holds as many items as the runner finishes in about
    :data:`JOB_COMMIT_INTERVAL_S` (one at first, then sized from the measured time per item).
    Its results (predictions, maps, item states, progress counters) are committed together as
    soon as the chunk finishes, so a re-run continues where a killed worker stopped; a second
    runner skips leased items; artifact writes are idempotent (one per model, item, method,
    parameters and target). An item that fails for a permanent reason (undecodable image,
    explainer error) is marked failed with its reason and the others continue. A transient
    error (database or broker connection, CUDA out of memory) commits what the chunk finished,
    releases the rest and is re-raised so the Celery task retries with backoff.

    Returns:
        The job. Finished (succeeded when at least one item succeeded or there were none,
        failed otherwise) once no item is pending; still running when another runner holds
        a leased item.
    """
    job = ExplanationJob.objects.select_related("model", "dataset").get(pk=job_id)
    if job.is_finished:
        return job
    now = timezone.now()
    ExplanationJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, heartbeat_at=now, started_at=Coalesce("started_at", Value(now))
    )
    try:
        device = torch_device()
        net = classifier_load(job.model, device=device)
        explainer_cls = explainer_classes()[job.method]
        explainer = _explainer_build(explainer_cls, net, job.model, job.params)
        if getattr(explainer, "needs_training_patches", False):
            _training_patches_set(explainer, job, device)
    except (CheckpointError, ExplainerConfigError, KeyError) as exc:
        ExplanationJob.objects.filter(pk=job.pk).update(
            status=JobStatus.FAILED, error=f"cannot start: {exc}", finished_at=timezone.now()
        )
        job.refresh_from_db()
        return job
    key = explanation_params_key(job.method, explainer.params)
    if job.params_key != key:
        job.params_key = key
        ExplanationJob.objects.filter(pk=job.pk).update(params_key=key)

    todo = job.job_items.filter(status=JobItemStatus.PENDING)
    if item_ids is not None:
        todo = todo.filter(item_id__in=item_ids)
    todo_ids = list(todo.order_by("id").values_list("pk", flat=True))
    for start in range(0, len(todo_ids), JOB_CLAIM_MAX):
        _block_run(
            job,
            todo_ids[start : start + JOB_CLAIM_MAX],
            net=net,
            explainer=explainer,
            device=device,
        )
    return explanation_job_finalize(job=job)


@dataclass
class _ItemOutcome:
    """What one item of a chunk produced, committed with the chunk."""

    job_item: ExplanationJobItem
    status: str = JobItemStatus.DONE
    error: str = ""
    duration_ms: int | None = None
    prediction: Prediction | None = None  # unsaved: a new prediction to store
    explanations: list[Explanation] = field(default_factory=list)  # unsaved maps to store


def _block_run(job, job_item_ids, *, net, explainer, device) -> None:
    """Claim a block of job items, compute them, and commit the results at least every
    :data:`JOB_COMMIT_INTERVAL_S` seconds and at the end.

    Raises:
        The transient errors of :data:`TRANSIENT_ERRORS` and ``SoftTimeLimitExceeded``, after
        committing the finished items and releasing the rest of the block.
    """
    token = uuid.uuid4().hex
    claimed = _lease_claim(job_item_ids, token)
    if not claimed:
        return
    item_pks = [c.item_id for c in claimed]
    predictions = {}
    for p in Prediction.objects.filter(model=job.model, item_id__in=item_pks):
        p.model = job.model
        predictions[p.item_id] = p
    stored: dict[tuple[int, int], Explanation] = {
        (e.item_id, e.target_index): e
        for e in Explanation.objects.filter(
            model=job.model, item_id__in=item_pks, method=job.method, params_key=job.params_key
        )
    }
    outcomes: list[_ItemOutcome] = []  # finished, not yet committed
    last_commit = time.perf_counter()
    try:
        for job_item in claimed:
            job_item.item.dataset = job.dataset
            started = time.perf_counter()
            outcome = _ItemOutcome(job_item)
            try:
                outcome.prediction, outcome.explanations = _item_explain(
                    job=job,
                    item=job_item.item,
                    net=net,
                    explainer=explainer,
                    device=device,
                    params_key=job.params_key,
                    prediction=predictions.get(job_item.item_id),
                    stored=stored,
                )
            except Exception as exc:
                if _is_transient(exc) or isinstance(exc, SoftTimeLimitExceeded):
                    raise
                logger.exception("job %s item %s failed", job.pk, job_item.item_id)
                outcome.status, outcome.error = JobItemStatus.FAILED, f"{type(exc).__name__}: {exc}"
            else:
                outcome.duration_ms = int((time.perf_counter() - started) * 1000)
            outcomes.append(outcome)
            if time.perf_counter() - last_commit >= JOB_COMMIT_INTERVAL_S:
                _chunk_commit(job, outcomes, renew_token=token)
                outcomes, last_commit = [], time.perf_counter()
    except BaseException:
        try:
            _chunk_commit(job, outcomes)
        finally:
            _lease_release(token)
        raise
    _chunk_commit(job, outcomes)


def _lease_claim(job_item_ids: list[int], token: str) -> list[ExplanationJobItem]:
    """Lease the pending, unleased items among ``job_item_ids`` to the runner holding
    ``token``; returns the ones it got, with their items, in id order."""
    now = timezone.now()
    lease = timedelta(seconds=settings.STUDYPLATFORM_JOB_LEASE_S)
    ExplanationJobItem.objects.filter(pk__in=job_item_ids, status=JobItemStatus.PENDING).filter(
        Q(leased_until__isnull=True) | Q(leased_until__lt=now)
    ).update(leased_until=now + lease, lease_token=token, attempts=F("attempts") + 1)
    return list(
        ExplanationJobItem.objects.filter(pk__in=job_item_ids, lease_token=token)
        .select_related("item")
        .order_by("id")
    )


def _chunk_commit(
    job: ExplanationJob, outcomes: list[_ItemOutcome], *, renew_token: str = ""
) -> None:
    """Store finished items' predictions and maps and finish the items, in one transaction;
    with ``renew_token``, extend the lease of the block's items still to do.

    Items already finished by another runner (lease expired meanwhile) are not counted
    twice; a map another runner stored first is kept (same deterministic file name)."""
    if not outcomes:
        return
    with transaction.atomic():
        if renew_token:
            lease = timedelta(seconds=settings.STUDYPLATFORM_JOB_LEASE_S)
            ExplanationJobItem.objects.filter(
                lease_token=renew_token, status=JobItemStatus.PENDING
            ).update(leased_until=timezone.now() + lease)
        new_predictions = [o.prediction for o in outcomes if o.prediction is not None]
        if new_predictions:
            Prediction.objects.bulk_create(
                new_predictions,
                update_conflicts=True,
                unique_fields=["model", "item"],
                update_fields=["topk", "predicted_index", "probability"],
            )
        new_maps = [e for o in outcomes for e in o.explanations]
        if new_maps:
            Explanation.objects.bulk_create(new_maps, ignore_conflicts=True)
        done = [o for o in outcomes if o.status == JobItemStatus.DONE]
        finished = {JobItemStatus.DONE: 0, JobItemStatus.FAILED: 0}
        if done:
            finished[JobItemStatus.DONE] = ExplanationJobItem.objects.filter(
                pk__in=[o.job_item.pk for o in done], status=JobItemStatus.PENDING
            ).update(status=JobItemStatus.DONE, error="", leased_until=None, lease_token="")
            with connection.cursor() as cursor:  # one statement, many rows (no CASE to build)
                table = connection.ops.quote_name(ExplanationJobItem._meta.db_table)
                cursor.executemany(
                    f"UPDATE {table} SET duration_ms = %s WHERE id = %s",
                    [(o.duration_ms, o.job_item.pk) for o in done],
                )
        for o in outcomes:
            if o.status == JobItemStatus.FAILED:
                finished[JobItemStatus.FAILED] += ExplanationJobItem.objects.filter(
                    pk=o.job_item.pk, status=JobItemStatus.PENDING
                ).update(status=o.status, error=o.error, leased_until=None, lease_token="")
        ExplanationJob.objects.filter(pk=job.pk).update(
            done_items=F("done_items") + finished[JobItemStatus.DONE],
            failed_items=F("failed_items") + finished[JobItemStatus.FAILED],
            heartbeat_at=timezone.now(),
        )


def _explainer_build(
    explainer_cls: type[Explainer], net: nn.Module, model: ClassifierModel, params: dict | None
):
    """The job's explainer; a layer method on a TorchScript model fails with the real reason.

    TorchScript models are registered without a target layer, and ScriptModules refuse
    forward hooks; without this, Grad-CAM reported "no layer named ''" and listed layer names
    that cannot be hooked either.

    Raises:
        ExplainerConfigError: the explainer cannot be built for this model.
    """
    try:
        return explainer_cls(net, target_layer=model.target_layer or None, **(params or {}))
    except ExplainerConfigError:
        if model.kind != ModelKind.TORCHSCRIPT:
            raise
        raise ExplainerConfigError(
            f"{explainer_cls.name} hooks an nn.Conv2d layer of the model, and TorchScript "
            f"models do not support layer hooks; register {model.name!r} as a factory + "
            f"state dict to explain it with {explainer_cls.name}"
        ) from None


#: The training patches of the last post-hoc prototype job this process ran, by job (id and
#: creation time, as ids can be reused after a database reset), weights and device: a job runs
#: as many batch tasks, and each would otherwise decode the training images and run the
#: network over them again.
_PATCH_BANKS: dict[tuple, tuple] = {}
_PATCH_BANKS_LOCK = threading.Lock()


def _training_patches_set(explainer, job: ExplanationJob, device) -> None:
    """Give a post-hoc prototype explainer its training patches: the first
    ``explainer.bank_per_class`` labelled items of each class in split
    ``explainer.bank_split`` of the job's dataset, as the model sees them; built once per job
    and process (:data:`_PATCH_BANKS`).

    Raises:
        ExplainerConfigError: no labelled item in that split.
    """
    key = (job.pk, job.created_at.isoformat(), job.model.weights_sha256, str(device))
    with _PATCH_BANKS_LOCK:
        cached = _PATCH_BANKS.get(key)
        if cached is None:
            _training_patches_build(explainer, job, device)
            _PATCH_BANKS.clear()
            _PATCH_BANKS[key] = (explainer.bank, explainer.classes, explainer.item_ids)
        else:
            explainer.bank_attach(*cached)


def _training_patches_build(explainer, job: ExplanationJob, device) -> None:
    per_class = explainer.bank_per_class
    counts: dict[int, int] = {}
    chosen = []
    for item in (
        job.dataset.items.filter(split=explainer.bank_split, label_index__isnull=False)
        .select_related("dataset")
        .order_by("id")
    ):
        label = item.label_for(job.model)
        if label is None or counts.get(label, 0) >= per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        chosen.append((item, label))
    if not chosen:
        raise ExplainerConfigError(
            f"post-hoc prototypes need labelled training images: dataset {job.dataset.name!r} "
            f"has none in split {explainer.bank_split!r} (set the parameter bank_split)"
        )
    model = job.model
    inputs = torch.cat(
        [
            pixels_to_input(
                item_model_view(item=item, model=model),
                model.normalization_mean,
                model.normalization_std,
            )
            for item, _ in chosen
        ]
    ).to(device)
    explainer.bank_set(inputs, [label for _, label in chosen], [item.pk for item, _ in chosen])


def _lease_release(token: str) -> None:
    """Give back the unfinished items leased under ``token``."""
    try:
        ExplanationJobItem.objects.filter(lease_token=token, status=JobItemStatus.PENDING).update(
            leased_until=None, lease_token=""
        )
    except DatabaseError:
        pass  # the leases expire by themselves


def explanation_job_finalize(*, job: ExplanationJob) -> ExplanationJob:
    """Mark the job finished when no item is pending; otherwise leave it running."""
    if job.job_items.filter(status=JobItemStatus.PENDING).exists():
        job.refresh_from_db()
        return job
    job.refresh_from_db()
    failed = []
    if job.failed_items:
        failed = job.job_items.filter(status=JobItemStatus.FAILED).values_list(
            "item__name", "error"
        )
    status = JobStatus.SUCCEEDED if job.done_items or not job.total_items else JobStatus.FAILED
    error = "\n".join(f"{name}: {err}" for name, err in failed)
    ExplanationJob.objects.filter(pk=job.pk, finished_at__isnull=True).update(
        status=status, error=error, finished_at=timezone.now()
    )
    job.refresh_from_db()
    return job


def explanation_jobs_sweep(*, now: datetime | None = None) -> list[int]:
    """Re-enqueue unfinished jobs that no worker has touched for a lease period.

    Covers what the broker alone does not: a worker killed with SIGKILL (the filesystem and
    SQL transports lose its in-flight message; Redis returns it only after its visibility
    timeout), a message lost before it reached a worker, or a crash between the last item and
    the job's final status. Run by Celery beat every minute and when a worker starts; safe to
    run at any time, since runs are idempotent and items are leased.

    Returns:
        Ids of the jobs re-enqueued.
    """
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.STUDYPLATFORM_JOB_LEASE_S)
    stale = ExplanationJob.objects.filter(status__in=[JobStatus.PENDING, JobStatus.RUNNING]).filter(
        Q(heartbeat_at__lt=stale_before) | Q(heartbeat_at__isnull=True, created_at__lt=stale_before)
    )
    ids = []
    for job in stale:
        # Claim the job for this sweep, so two sweeps at once enqueue it once.
        if ExplanationJob.objects.filter(pk=job.pk, heartbeat_at=job.heartbeat_at).update(
            heartbeat_at=now
        ):
            explanation_job_enqueue(job_id=job.pk)
            ids.append(job.pk)
    return ids


def explanation_targets(*, prediction: Prediction, item: Item, top_k: int) -> list[int]:
    """Classes to explain: the top-k predicted, plus the true class when it is not among them."""
    targets = prediction.topk_indices()[:top_k]
    truth = item.label_for(prediction.model)
    if truth is not None and truth not in targets:
        targets.append(truth)
    return targets


def _item_explain(
    *,
    job: ExplanationJob,
    item: Item,
    net: nn.Module,
    explainer: Explainer,
    device: torch.device,
    params_key: str,
    prediction: Prediction | None,
    stored: dict[tuple[int, int], Explanation],
) -> tuple[Prediction | None, list[Explanation]]:
    """Predict (unless ``prediction`` is stored) and explain one item; write the raw maps.

    Model and item rows are immutable (weights and image by checksum), so a stored prediction
    is still right and is reused; targets already in ``stored`` (keyed by item id and target)
    are not redone, and when every target is stored nothing is decoded.

    Returns:
        The new prediction to store (None when one was stored) and the new maps as unsaved
        rows whose ``.npy`` files are written, for :func:`_chunk_commit`.

    Raises:
        ImageDecodeError: the stored image cannot be decoded.
        ExplainerInputError: the explainer rejected the input.
    """
    model = job.model
    if prediction is not None:
        targets = explanation_targets(prediction=prediction, item=item, top_k=job.top_k)
        if all((item.pk, t) in stored for t in targets):
            return None, []
    view = item_model_view(item=item, model=model)
    inputs = pixels_to_input(view, model.normalization_mean, model.normalization_std).to(device)
    new_prediction = None
    if prediction is None:
        with torch.no_grad():
            probabilities = torch.softmax(net(inputs), dim=1)[0]
        top_p, top_i = probabilities.topk(min(PREDICTION_TOP_K, model.num_classes))
        topk = [
            {"index": int(i), "name": model.class_name(int(i)), "probability": round(float(p), 6)}
            for p, i in zip(top_p, top_i, strict=True)
        ]
        prediction = new_prediction = Prediction(
            model=model,
            item=item,
            topk=topk,
            predicted_index=topk[0]["index"],
            probability=topk[0]["probability"],
        )
        targets = explanation_targets(prediction=prediction, item=item, top_k=job.top_k)
    todo = [t for t in targets if (item.pk, t) not in stored]
    if not todo:
        return new_prediction, []
    started = time.perf_counter()
    result = explainer.explain(inputs, todo, num_classes=model.num_classes)
    per_map_ms = int((time.perf_counter() - started) * 1000 / len(todo))
    ranks = prediction.topk_indices()
    flags = getattr(result, "degenerate", None) or (False,) * len(result.targets)
    details = getattr(result, "details", None) or ({},) * len(result.targets)
    maps = []
    for target, saliency, degenerate, detail in zip(
        result.targets, result.attributions, flags, details, strict=True
    ):
        metrics = {}
        if job.evaluate:
            metrics = _deletion_insertion(net, inputs, saliency, target)
        maps.append(
            _explanation_build(
                model=model,
                item=item,
                method=job.method,
                target=target,
                rank=ranks.index(target) if target in ranks else None,
                saliency=saliency,
                params=result.params,
                params_key=params_key,
                degenerate=bool(degenerate),
                duration_ms=per_map_ms,
                details=detail,
                **metrics,
            )
        )
    return new_prediction, maps


def _deletion_insertion(net, inputs, saliency, target) -> dict:
    """Deletion / insertion AUC of one map (Petsiuk et al., BMVC 2018)."""
    from ..evaluation import deletion_insertion_auc

    scores = deletion_insertion_auc(net, inputs, np.asarray(saliency), int(target))
    return {"deletion_auc": scores.deletion_auc, "insertion_auc": scores.insertion_auc}


def _explanation_build(
    *,
    model: ClassifierModel,
    item: Item,
    method: str,
    target: int,
    rank: int | None,
    saliency: np.ndarray,
    params: dict,
    duration_ms: int,
    params_key: str = "",
    degenerate: bool = False,
    deletion_auc: float | None = None,
    insertion_auc: float | None = None,
    details: dict | None = None,
) -> Explanation:
    """An unsaved map row with its ``.npy`` written under the artifact's fixed name (a run
    that dies before the row is committed leaves a file that the re-run replaces)."""
    saliency = np.asarray(saliency, dtype=np.float32)
    npy = io.BytesIO()
    np.save(npy, saliency, allow_pickle=False)
    # Rendering is separate from computing: the overlay PNG is drawn when first asked for
    # (:func:`explanation_overlay_ensure`), not on the GPU worker's time.
    explanation = Explanation(
        model=model,
        item=item,
        method=method,
        target_index=target,
        target_rank=rank,
        params=params,
        params_key=params_key,
        max_value=float(saliency.max()),
        min_value=float(saliency.min()),
        degenerate=degenerate,
        deletion_auc=deletion_auc,
        insertion_auc=insertion_auc,
        duration_ms=duration_ms,
        details=details or {},
    )
    _deterministic_save(explanation.array, explanation, _stem(explanation), "npy", npy.getvalue())
    return explanation


def _stem(e: Explanation) -> str:
    return f"{e.model_id}-{e.item_id}-{e.method}-{e.params_key[:12] or 'p'}-{e.target_index}"


def _deterministic_save(field_file, instance, stem: str, suffix: str, content: bytes) -> None:
    """Save under a name fixed by the artifact's identity: a file left by a run killed before
    its row was saved is replaced, not duplicated under a new name (the item's lease excludes
    other runners). On a local filesystem the file is written beside its final name and
    renamed over it, so a reader never sees it missing or half written."""
    name = field_file.field.generate_filename(instance, f"{stem}.{suffix}")
    storage = field_file.storage
    try:
        final = Path(storage.path(name))
    except NotImplementedError:  # remote storage: replace through the storage API
        if storage.exists(name):
            storage.delete(name)
        field_file.save(f"{stem}.{suffix}", ContentFile(content), save=False)
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    # A fixed partial name too: a worker killed between write and rename leaves a file
    # that the re-run of the item overwrites, not a stray one.
    partial = final.with_name(f".{final.name}.partial")
    try:
        partial.write_bytes(content)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    field_file.name = name


def explanation_overlay_ensure(explanation: Explanation) -> Explanation:
    """Draw and store the overlay PNG of a stored map if it has none yet (researcher pages
    ask for it; studies render their own stimuli). Non-negative maps: sequential colours,
    each map to its own maximum; signed maps: blue-white-red around 0.

    Raises:
        ImageDecodeError: the item's photo cannot be decoded.
    """
    if explanation.overlay:
        return explanation
    view = item_model_view(item=explanation.item, model=explanation.model)
    picture = rendering.overlays(view, explanation_array_load(explanation)[None])[0]
    _deterministic_save(
        explanation.overlay,
        explanation,
        _stem(explanation),
        "png",
        rendering.to_png_bytes(picture, compress_level=1),
    )
    Explanation.objects.filter(pk=explanation.pk).update(overlay=explanation.overlay.name)
    return explanation


def explanation_array_load(explanation: Explanation) -> np.ndarray:
    """Load the raw saliency map: (H, W) float32 >= 0 (never unpickles)."""
    with explanation.array.open("rb") as fh:
        return np.load(io.BytesIO(fh.read()), allow_pickle=False)
