"""Researcher pages and API for explanation jobs, models and datasets (staff only)."""

from __future__ import annotations

import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.text import get_valid_filename
from django.views.decorators.http import require_POST
from PIL import Image

from .forms import DatasetImportForm, ModelRegisterForm
from .imageio import ImageDecodeError, encode_png, image_decode
from .models import (
    ClassifierModel,
    Dataset,
    DatasetImportJob,
    Explanation,
    ExplanationJob,
    Item,
    JobStatus,
    Prediction,
    Region,
)
from .services import (
    ModelRegistrationError,
    dataset_import_job_create,
    explanation_job_retry_failed,
    explanation_overlay_ensure,
    model_register,
)
from .uploads import upload_write


@staff_member_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Progress of a job (refreshes itself while running) and the overlays produced so far."""
    job = get_object_or_404(ExplanationJob.objects.select_related("model", "dataset"), pk=pk)
    # this job's parameter variant (known once a worker has built the explainer)
    key_filter = {"params_key": job.params_key} if job.params_key else {}
    predictions = {
        p.item_id: p for p in Prediction.objects.filter(model=job.model, item__dataset=job.dataset)
    }
    rows = []
    for job_item in job.job_items.select_related("item"):
        item = job_item.item
        explanations = list(
            Explanation.objects.filter(
                model=job.model, item=item, method=job.method, **key_filter
            ).order_by("target_rank", "target_index")
        )
        rows.append(
            {
                "job_item": job_item,
                "item": item,
                "prediction": predictions.get(item.pk),
                "explanations": explanations,
            }
        )
    failed = [r for r in rows if r["job_item"].status == "failed"]
    return render(
        request, "explanations/job_detail.html", {"job": job, "rows": rows, "failed": failed}
    )


@staff_member_required
@require_POST
def job_retry(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue a job's failed items again (POST)."""
    job = get_object_or_404(ExplanationJob, pk=pk)
    explanation_job_retry_failed(job=job)
    return redirect("explanations:job", pk=job.pk)


@staff_member_required
def explanation_overlay(request: HttpRequest, pk: int) -> FileResponse:
    explanation = get_object_or_404(Explanation.objects.select_related("item", "model"), pk=pk)
    try:
        explanation = explanation_overlay_ensure(explanation)  # drawn on first request
    except ImageDecodeError:
        raise Http404("the photo of this map cannot be decoded") from None
    return FileResponse(explanation.overlay.open("rb"), content_type="image/png")


#: Item thumbnails per page of a dataset.
ITEMS_PER_PAGE = 48
#: Latest predictions shown on a model's page.
SAMPLE_PREDICTIONS = 12
#: Most frequent true -> predicted confusions listed.
TOP_CONFUSIONS = 10
#: Longest side of an item thumbnail, in pixels.
THUMBNAIL_SIDE = 224


@dataclass
class ConfusionSummary:
    """Predictions of one model on labelled items, against the truth in its label space.

    ``labelled`` counts predictions whose item's label is one of the model's classes;
    ``outside`` those whose label the model does not know (not scored). ``confusions`` are
    ``(true name, predicted name, count)`` for wrong predictions, most frequent first.
    """

    labelled: int = 0
    correct: int = 0
    outside: int = 0
    confusions: list[tuple[str, str, int]] = field(default_factory=list)
    n_confusion_pairs: int = 0

    @property
    def wrong(self) -> int:
        return self.labelled - self.correct

    @property
    def accuracy(self) -> float | None:
        """Fraction correct in [0, 1]; None without labelled predictions."""
        return self.correct / self.labelled if self.labelled else None


def _confusion_summary(model: ClassifierModel, predictions) -> ConfusionSummary:
    summary = ConfusionSummary()
    pairs: Counter[tuple[int, int]] = Counter()
    for prediction in predictions:
        truth = prediction.item.label_for(model)
        if truth is None:
            summary.outside += 1
            continue
        summary.labelled += 1
        if prediction.predicted_index == truth:
            summary.correct += 1
        else:
            pairs[(truth, prediction.predicted_index)] += 1
    ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
    summary.n_confusion_pairs = len(ranked)
    summary.confusions = [
        (model.class_name(t), model.class_name(p), n) for (t, p), n in ranked[:TOP_CONFUSIONS]
    ]
    return summary


@staff_member_required
def model_list(request: HttpRequest) -> HttpResponse:
    """Registered classifiers, newest first, with how much they have been used."""
    models = ClassifierModel.objects.annotate(
        n_predictions=Count("predictions", distinct=True),
        n_jobs=Count("jobs", distinct=True),
    ).order_by("-created_at", "-id")
    return render(request, "explanations/model_list.html", {"models": models})


@staff_member_required
def model_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A model's registration facts, its latest predictions and a confusion summary."""
    model = get_object_or_404(ClassifierModel.objects.select_related("owner"), pk=pk)
    predictions = Prediction.objects.filter(model=model).select_related("item__dataset")
    latest = list(predictions.order_by("-created_at", "-id")[:SAMPLE_PREDICTIONS])
    for prediction in latest:
        prediction.truth_index = prediction.item.label_for(model)
    labelled = predictions.filter(item__label_index__isnull=False).only(
        "predicted_index",
        "item__label_index",
        "item__dataset__class_names",
    )
    by_dataset = []
    for dataset in Dataset.objects.filter(items__predictions__model=model).distinct():
        by_dataset.append(
            (dataset, _confusion_summary(model, labelled.filter(item__dataset=dataset)))
        )
    context = {
        "model": model,
        "latest": latest,
        "n_predictions": predictions.count(),
        "summary": _confusion_summary(model, labelled.iterator(chunk_size=2000)),
        "by_dataset": by_dataset,
        "jobs": model.jobs.select_related("dataset").order_by("-created_at")[:20],
        "checks": _latest_checks(model),
    }
    return render(request, "explanations/model_detail.html", context)


def _latest_checks(model) -> list[dict]:
    """The newest sanity check of each (method, check) on ``model``, for the model page."""
    from .models import MethodCheck

    seen, rows = set(), []
    for check in MethodCheck.objects.filter(model=model).order_by("method", "name", "-created_at"):
        if (check.method, check.name) in seen:
            continue
        seen.add((check.method, check.name))
        steps = check.result.get("steps") or [{}]
        rows.append(
            {
                "check": check,
                "spearman_last": steps[-1].get("spearman"),
                "relative_diff": check.result.get("relative_diff"),
            }
        )
    return rows


@staff_member_required
def model_register_page(request: HttpRequest) -> HttpResponse:
    """Upload weights and class names; ``model_register`` validates, this page shows why not."""
    form = ModelRegisterForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        with tempfile.TemporaryDirectory(prefix="model-upload-") as folder:
            weights = upload_write(data["weights"], Path(folder), "weights.bin")
            classes = upload_write(data["classes"], Path(folder), "classes.txt")
            try:
                model = model_register(
                    name=data["name"],
                    kind=data["kind"],
                    architecture=data["architecture"].strip(),
                    weights_path=weights,
                    class_names=classes,
                    input_size=data["input_size"],
                    resize_policy=data["resize_policy"],
                    normalization=data["normalization_value"],
                    target_layer=data["target_layer"].strip() or None,
                    owner=request.user,
                )
            except ModelRegistrationError as exc:
                form.add_error(None, str(exc))
            else:
                return redirect("explanations:model", pk=model.pk)
    return render(request, "explanations/model_register.html", {"form": form})


@staff_member_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    """Datasets, newest first, with item counts and imports still running."""
    datasets = Dataset.objects.annotate(
        n_items=Count("items", distinct=True),
        n_labelled=Count("items", filter=Q(items__label_index__isnull=False), distinct=True),
        n_importing=Count(
            "import_jobs",
            filter=Q(import_jobs__status__in=[JobStatus.PENDING, JobStatus.RUNNING]),
            distinct=True,
        ),
    ).order_by("-created_at", "-id")
    return render(request, "explanations/dataset_list.html", {"datasets": datasets})


@staff_member_required
def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Class counts, splits, regions, import jobs (refreshing while running) and the items."""
    dataset = get_object_or_404(Dataset.objects.select_related("owner"), pk=pk)
    items = dataset.items.all()
    per_label = dict(
        items.values_list("label_index").annotate(n=Count("id")).values_list("label_index", "n")
    )
    classes = [(name, per_label.get(index, 0)) for index, name in enumerate(dataset.class_names)]
    known = set(range(len(dataset.class_names)))
    other_labels = sum(n for i, n in per_label.items() if i is not None and i not in known)
    splits = list(items.values_list("split").annotate(n=Count("id")).order_by("split"))
    regions = dict(
        Region.objects.filter(item__dataset=dataset)
        .values_list("kind")
        .annotate(n=Count("id"))
        .values_list("kind", "n")
    )
    import_jobs = list(dataset.import_jobs.order_by("-created_at", "-id"))
    page = Paginator(items.order_by("id"), ITEMS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "dataset": dataset,
        "n_items": page.paginator.count,
        "classes": classes,
        "unlabelled": per_label.get(None, 0),
        "other_labels": other_labels,
        "splits": splits,
        "regions": regions,
        "n_regions": sum(regions.values()),
        "import_jobs": import_jobs,
        "importing": any(not job_is_finished(j) for j in import_jobs),
        "page": page,
        "jobs": dataset.jobs.select_related("model").order_by("-created_at")[:20],
    }
    return render(request, "explanations/dataset_detail.html", context)


def job_is_finished(job: DatasetImportJob) -> bool:
    return job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)


@staff_member_required
def dataset_import_page(request: HttpRequest) -> HttpResponse:
    """Upload a zip: saved under MEDIA_ROOT/uploads/, imported by a background job."""
    form = DatasetImportForm(
        request.POST or None, request.FILES or None, initial={"name": request.GET.get("name", "")}
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        upload = data["archive"]
        stem = get_valid_filename(Path(upload.name).stem)[:80] or "archive"
        stored = default_storage.save(f"uploads/{uuid.uuid4().hex}-{stem}.zip", upload)
        try:
            with transaction.atomic():
                dataset, _ = Dataset.objects.get_or_create(
                    name=data["name"].strip(),
                    defaults={"description": data["description"], "owner": request.user},
                )
                dataset_import_job_create(
                    dataset=dataset, source_format="zip", source_path=default_storage.path(stored)
                )
        except ValueError as exc:
            default_storage.delete(stored)
            form.add_error(None, str(exc))
        else:
            return redirect("explanations:dataset", pk=dataset.pk)
    return render(request, "explanations/dataset_import.html", {"form": form})


def _item_get(pk: int) -> Item:
    item = get_object_or_404(Item, pk=pk)
    if not item.image:
        raise Http404("no image")
    return item


@staff_member_required
def item_image(request: HttpRequest, pk: int) -> FileResponse:
    """The stored RGB PNG of an item."""
    response = FileResponse(_item_get(pk).image.open("rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@staff_member_required
def item_thumbnail(request: HttpRequest, pk: int) -> HttpResponse:
    """The item's PNG scaled down to fit THUMBNAIL_SIDE (never up), aspect ratio kept."""
    item = _item_get(pk)
    with item.image.open("rb") as fh:
        data = fh.read()
    try:
        pixels = image_decode(
            data, name=item.name, max_pixels=settings.STUDYPLATFORM_MAX_IMAGE_PIXELS
        ).pixels
    except ImageDecodeError:
        raise Http404("the stored image cannot be decoded") from None
    image = Image.fromarray(pixels)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BICUBIC)
    response = HttpResponse(encode_png(np.asarray(image)), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response
