"""Explanation jobs: predictions and saliency maps for a dataset, leased and idempotent."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from datetime import datetime, timedelta

import numpy as np
import torch
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, Q
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
) -> ExplanationJob:
    """Create a job over every item of ``dataset`` and enqueue it once the transaction commits.

    Args:
        params: the method's parameters (names from the explainer's ``accepted_params``);
            empty = the paper defaults the explainer documents.
        batch_size: items per worker task (the job is split into batches on the ``gpu``
            queue), >= 1.
        evaluate: also compute deletion/insertion AUC (Petsiuk et al. 2018) for every map.

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
    if not 1 <= top_k <= model.num_classes:
        raise ValueError(f"top_k must be in 1..{model.num_classes}, got {top_k}")
    items = list(dataset.items.all())
    if not items:
        raise ValueError(f"dataset {dataset.name!r} has no items")
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


def explanation_job_run(*, job_id: int, item_ids: list[int] | None = None) -> ExplanationJob:
    """Process the pending items of a job (all, or the batch ``item_ids``); safe to run again,
    and twice at once.

    Each item is claimed with a lease (``STUDYPLATFORM_JOB_LEASE_S``) before work starts and
    its state is committed as soon as it finishes, so a re-run continues where a killed worker
    stopped; a second runner skips leased items; artifact writes are idempotent (one per
    model, item, method and target). An item that fails for a permanent reason (undecodable
    image, explainer error) is marked failed with its reason and the others continue. A
    transient error (database or broker connection, CUDA out of memory) releases the item and
    is re-raised so the Celery task retries with backoff.

    Returns:
        The job. Finished (succeeded when at least one item succeeded or there were none,
        failed otherwise) once no item is pending; still running when another runner holds
        a leased item.
    """
    job = ExplanationJob.objects.select_related("model", "dataset").get(pk=job_id)
    if job.is_finished:
        return job
    now = timezone.now()
    ExplanationJob.objects.filter(pk=job.pk, started_at__isnull=True).update(started_at=now)
    ExplanationJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, heartbeat_at=now)
    try:
        device = torch_device()
        net = classifier_load(job.model, device=device)
        explainer_cls = explainer_classes()[job.method]
        explainer = _explainer_build(explainer_cls, net, job.model, job.params)
        job.params_key = explanation_params_key(job.method, explainer.params)
        ExplanationJob.objects.filter(pk=job.pk).update(params_key=job.params_key)
    except (CheckpointError, ExplainerConfigError, KeyError) as exc:
        ExplanationJob.objects.filter(pk=job.pk).update(
            status=JobStatus.FAILED, error=f"cannot start: {exc}", finished_at=timezone.now()
        )
        job.refresh_from_db()
        return job

    lease = timedelta(seconds=settings.STUDYPLATFORM_JOB_LEASE_S)
    todo = job.job_items.filter(status=JobItemStatus.PENDING).select_related("item")
    if item_ids is not None:
        todo = todo.filter(item_id__in=item_ids)
    for job_item in todo.order_by("id"):
        now = timezone.now()
        claimed = (
            ExplanationJobItem.objects.filter(pk=job_item.pk, status=JobItemStatus.PENDING)
            .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
            .update(leased_until=now + lease, attempts=F("attempts") + 1)
        )
        if not claimed:
            continue  # done meanwhile, or another runner holds it
        started = time.perf_counter()
        try:
            explanation_item_compute(
                job=job, item=job_item.item, net=net, explainer=explainer, device=device
            )
        except Exception as exc:
            if _is_transient(exc) or isinstance(exc, SoftTimeLimitExceeded):
                _lease_release(job_item.pk)
                raise
            logger.exception("job %s item %s failed", job.pk, job_item.item_id)
            _job_item_finish(job, job_item.pk, JobItemStatus.FAILED, f"{type(exc).__name__}: {exc}")
            continue
        elapsed = int((time.perf_counter() - started) * 1000)
        _job_item_finish(job, job_item.pk, JobItemStatus.DONE, "", elapsed)
    return explanation_job_finalize(job=job)


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


def _lease_release(job_item_id: int) -> None:
    try:
        ExplanationJobItem.objects.filter(pk=job_item_id).update(leased_until=None)
    except DatabaseError:
        pass  # the lease expires by itself


def _job_item_finish(
    job: ExplanationJob, job_item_id: int, status: str, error: str, duration_ms: int | None = None
) -> None:
    counter = "done_items" if status == JobItemStatus.DONE else "failed_items"
    with transaction.atomic():
        updated = ExplanationJobItem.objects.filter(
            pk=job_item_id, status=JobItemStatus.PENDING
        ).update(status=status, error=error, duration_ms=duration_ms, leased_until=None)
        if updated:  # exactly once, even if two runners finished the same item
            ExplanationJob.objects.filter(pk=job.pk).update(
                **{counter: F(counter) + 1}, heartbeat_at=timezone.now()
            )


def explanation_job_finalize(*, job: ExplanationJob) -> ExplanationJob:
    """Mark the job finished when no item is pending; otherwise leave it running."""
    if job.job_items.filter(status=JobItemStatus.PENDING).exists():
        job.refresh_from_db()
        return job
    job.refresh_from_db()
    failed = list(
        job.job_items.filter(status=JobItemStatus.FAILED).values_list("item__name", "error")
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


def explanation_item_compute(
    *,
    job: ExplanationJob,
    item: Item,
    net: nn.Module,
    explainer: Explainer,
    device: torch.device | None = None,
) -> list[Explanation]:
    """Predict and explain one item; store the prediction, raw maps and overlays.

    Returns:
        The item's explanations for the job's targets (existing ones are reused, not redone).

    Raises:
        ImageDecodeError: the stored image cannot be decoded.
        ExplainerInputError: the explainer rejected the input.
    """
    model = job.model
    key = explanation_params_key(job.method, explainer.params)

    def cached(prediction: Prediction) -> tuple[list[int], dict[int, Explanation]]:
        targets = explanation_targets(prediction=prediction, item=item, top_k=job.top_k)
        found = Explanation.objects.filter(
            model=model, item=item, method=job.method, params_key=key, target_index__in=targets
        )
        return targets, {e.target_index: e for e in found}

    # Model and item rows are immutable (weights and image by checksum), so a stored
    # prediction is still right: reuse it, and when every map is stored too, asking again
    # costs two queries and no decoding.
    prediction = Prediction.objects.filter(model=model, item=item).first()
    if prediction is not None:
        targets, existing = cached(prediction)
        if all(t in existing for t in targets):
            return [existing[t] for t in targets]
    view = item_model_view(item=item, model=model)
    inputs = pixels_to_input(view, model.normalization_mean, model.normalization_std)
    inputs = inputs.to(device or torch.device("cpu"))
    if prediction is None:
        with torch.no_grad():
            probabilities = torch.softmax(net(inputs), dim=1)[0]
        top_p, top_i = probabilities.topk(min(PREDICTION_TOP_K, model.num_classes))
        topk = [
            {"index": int(i), "name": model.class_name(int(i)), "probability": round(float(p), 6)}
            for p, i in zip(top_p, top_i, strict=True)
        ]
        prediction, _ = Prediction.objects.update_or_create(
            model=model,
            item=item,
            defaults={
                "topk": topk,
                "predicted_index": topk[0]["index"],
                "probability": topk[0]["probability"],
            },
        )
        targets, existing = cached(prediction)
    todo = [t for t in targets if t not in existing]
    if todo:
        started = time.perf_counter()
        result = explainer.explain(inputs, todo, num_classes=model.num_classes)
        per_map_ms = int((time.perf_counter() - started) * 1000 / len(todo))
        ranks = prediction.topk_indices()
        flags = getattr(result, "degenerate", None) or (False,) * len(result.targets)
        for target, saliency, degenerate in zip(
            result.targets, result.attributions, flags, strict=True
        ):
            metrics = {}
            if job.evaluate:
                metrics = _deletion_insertion(net, inputs, saliency, target)
            existing[target] = _explanation_store(
                model=model,
                item=item,
                method=job.method,
                target=target,
                rank=ranks.index(target) if target in ranks else None,
                saliency=saliency,
                view=view,
                params=result.params,
                params_key=key,
                degenerate=bool(degenerate),
                duration_ms=per_map_ms,
                **metrics,
            )
    return [existing[t] for t in targets]


def _deletion_insertion(net, inputs, saliency, target) -> dict:
    """Deletion / insertion AUC of one map (Petsiuk et al., BMVC 2018)."""
    from ..evaluation import deletion_insertion_auc

    scores = deletion_insertion_auc(net, inputs, np.asarray(saliency), int(target))
    return {"deletion_auc": scores.deletion_auc, "insertion_auc": scores.insertion_auc}


def _explanation_store(
    *,
    model: ClassifierModel,
    item: Item,
    method: str,
    target: int,
    rank: int | None,
    saliency: np.ndarray,
    view: np.ndarray,
    params: dict,
    duration_ms: int,
    params_key: str = "",
    degenerate: bool = False,
    deletion_auc: float | None = None,
    insertion_auc: float | None = None,
) -> Explanation:
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
    )
    _deterministic_save(explanation.array, explanation, _stem(explanation), "npy", npy.getvalue())
    try:
        with transaction.atomic():
            explanation.save()
    except IntegrityError:
        # Another run stored this artifact first: keep theirs, drop our file.
        explanation.array.delete(save=False)
        explanation = Explanation.objects.get(
            model=model, item=item, method=method, params_key=params_key, target_index=target
        )
    return explanation


def _stem(e: Explanation) -> str:
    return f"{e.model_id}-{e.item_id}-{e.method}-{e.params_key[:12] or 'p'}-{e.target_index}"


def _deterministic_save(field_file, instance, stem: str, suffix: str, content: bytes) -> None:
    """Save under a name fixed by the artifact's identity: a file left by a run killed before
    its row was saved is replaced, not duplicated under a new name (the item's lease excludes
    other runners)."""
    name = field_file.field.generate_filename(instance, f"{stem}.{suffix}")
    if default_storage.exists(name):
        default_storage.delete(name)
    field_file.save(f"{stem}.{suffix}", ContentFile(content), save=False)


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
