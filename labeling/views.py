"""Pages of the label-correction workflow: runs, projects, the curator queue and exports.

Researchers (staff) start training runs and create projects; curators (any logged-in user
listed on a project) work through their queue. Nobody sees a project they are not part of.
"""

from __future__ import annotations

import io
import json
import tempfile
import threading
from pathlib import Path

import numpy as np
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse, reverse_lazy
from django.views.decorators.http import require_POST
from PIL import Image

from explanations.models import Dataset, Item

from . import curation
from .curation import DecisionConflict, QueueFilter
from .models import (
    Architecture,
    Assignment,
    CurationProject,
    LabelVersion,
    QueueEntry,
    RunStatus,
    Scope,
    Score,
    TrainingRun,
)
from .services import LabelingError, label_version_initial, training_run_create

SELECTION_KEY = "labeling-selection-{}"
_GRADCAM_LOCK = threading.Lock()
# Curators are ordinary accounts, not staff: they sign in here, not on the admin login page.
curator_required = login_required(login_url=reverse_lazy("labeling-login"))


class CuratorLoginView(auth_views.LoginView):
    """Sign-in for curators (any active account); goes on to ``next`` or the project list."""

    template_name = "labeling/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self):
        return reverse("labeling-home")


STRIP_ITEMS = 12


def project_for(user, pk: int) -> CurationProject:
    """The project if ``user`` owns it, curates it or is a superuser; else 404 (never 403,
    so a project's existence does not leak)."""
    project = get_object_or_404(CurationProject.objects.select_related("dataset", "run"), pk=pk)
    if not (
        user.is_superuser
        or project.owner_id == user.pk
        or project.curators.filter(pk=user.pk).exists()
    ):
        raise Http404("no such project")
    return project


def _int_or_404(value) -> int:
    """A form's object id; anything but a whole number is a 404, never a 500."""
    if value is None or not str(value).strip().isdigit():
        raise Http404("no such object")
    return int(value)


def _is_owner(user, project: CurationProject) -> bool:
    return user.is_superuser or project.owner_id == user.pk


# --------------------------------------------------------------------------------------------
# Researcher pages


@curator_required
def labeling_home(request: HttpRequest) -> HttpResponse:
    """Datasets with their label versions and runs (staff), and the user's projects."""
    user = request.user
    projects = CurationProject.objects.select_related("dataset").filter(
        pk__in=CurationProject.objects.filter(curators=user).values("pk")
    ) | CurationProject.objects.filter(owner=user)
    if user.is_superuser:
        projects = CurationProject.objects.select_related("dataset").all()
    context = {"projects": projects.distinct().order_by("-created_at")}
    if user.is_staff:
        datasets = Dataset.objects.filter(modality="image").order_by("name")
        context.update(
            datasets=datasets,
            runs=TrainingRun.objects.select_related("dataset", "label_version")[:30],
            versions=LabelVersion.objects.select_related("dataset", "parent").order_by(
                "dataset__name", "number"
            ),
            users=get_user_model().objects.filter(is_active=True).order_by("username"),
            scores=Score.choices,
            scopes=Scope.choices,
            architectures=Architecture.choices,
        )
    return render(request, "labeling/home.html", context)


@staff_member_required
@require_POST
def run_start(request: HttpRequest) -> HttpResponse:
    """Start a training run on a dataset's label version (form on the home page)."""
    dataset = get_object_or_404(Dataset, pk=_int_or_404(request.POST.get("dataset")))
    version = None
    if request.POST.get("version"):
        version = get_object_or_404(
            LabelVersion, pk=_int_or_404(request.POST["version"]), dataset=dataset
        )
    architecture = request.POST.get("architecture", "cnn")
    config = {}
    for key in ("folds", "epochs"):
        value = request.POST.get(key, "").strip()
        if value:
            if not value.isdigit() or not 1 <= int(value) <= 100:
                messages.error(request, f"{key} must be a whole number from 1 to 100")
                return redirect("labeling-home")
            if key == "folds" and architecture != "cnn":
                messages.error(request, "folds apply to the cross-fitted CNN only")
                return redirect("labeling-home")
            name = "joint_epochs" if key == "epochs" and architecture == "protopnet" else key
            config[name] = int(value)
    upload = request.FILES.get("attributes")
    if upload is not None and upload.size > 1_000_000:
        messages.error(request, "the attribute table must be under 1 MB")
        return redirect("labeling-home")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            attributes = None
            if upload is not None:
                attributes = Path(tmp) / "attributes.csv"
                attributes.write_bytes(upload.read())
            run = training_run_create(
                dataset=dataset,
                version=version,
                config=config,
                train_split=request.POST.get("train_split", "train").strip(),
                test_split=request.POST.get("test_split", "test").strip(),
                user=request.user,
                architecture=architecture,
                attributes=attributes,
            )
    except LabelingError as exc:
        messages.error(request, str(exc))
        return redirect("labeling-home")
    return redirect("labeling-run", pk=run.pk)


@staff_member_required
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A run's progress (refreshing while it works), accuracies and the projects built on it."""
    run = get_object_or_404(TrainingRun.objects.select_related("dataset", "label_version"), pk=pk)
    if request.GET.get("format") == "json":
        return JsonResponse(
            {
                "status": run.status,
                "done": run.done,
                "total": run.total,
                "message": run.message,
                "progress": round(run.progress, 4),
                "fold_accuracy": run.fold_accuracy,
                "test_accuracy": run.test_accuracy,
                "error": run.error,
            }
        )
    context = {
        "run": run,
        "RunStatus": RunStatus,
        "projects": run.projects.select_related("owner").order_by("-created_at"),
        "scores": Score.choices,
        "scopes": Scope.choices,
        "methods": [
            ("confident_learning", "Confident learning: off-diagonal of the confident joint"),
            ("prune_by_noise_rate", "Prune by noise rate (cleanlab's default filter)"),
        ],
        "users": get_user_model().objects.filter(is_active=True).order_by("username"),
    }
    return render(request, "labeling/run.html", context)


@staff_member_required
@require_POST
def project_start(request: HttpRequest) -> HttpResponse:
    """Create a curation project on a finished run (form on the home page / run page)."""
    run = get_object_or_404(TrainingRun, pk=_int_or_404(request.POST.get("run")))
    users = get_user_model().objects.filter(
        pk__in=[int(v) for v in request.POST.getlist("curators") if v.strip().isdigit()]
    )
    try:
        overlap = int(request.POST.get("overlap", "1"))
        project = curation.curation_project_create(
            run=run,
            name=request.POST.get("name", ""),
            owner=request.user,
            score=request.POST.get("score", Score.SELF_CONFIDENCE),
            method=request.POST.get("method", "confident_learning"),
            scope=request.POST.get("scope", Scope.FLAGGED),
            overlap=overlap,
            curators=list(users),
        )
    except (LabelingError, ValueError) as exc:
        messages.error(request, str(exc))
        return redirect("labeling-run", pk=run.pk)
    return redirect("labeling-project", pk=project.pk)


# --------------------------------------------------------------------------------------------
# Project overview


def _class_strips(project: CurationProject) -> list[dict]:
    """Per given class: its queued entries with the lowest scores (ModelTracker, Amershi et
    al. CHI 2015; Symphony, Bäuerle et al. CHI 2022)."""
    names = project.dataset.class_names or []
    strips = []
    for k, name in enumerate(names):
        entries = list(
            QueueEntry.objects.filter(project=project, given_label=k)
            .order_by("score")
            .values("pk", "item_id", "score", "suggested_label", "rank")[:STRIP_ITEMS]
        )
        count = QueueEntry.objects.filter(project=project, given_label=k).count()
        strips.append({"index": k, "name": name, "entries": entries, "count": count})
    return strips


def _precision_recall(confusion: list[list[int]]) -> list[dict]:
    m = np.asarray(confusion, dtype=float)
    if m.size == 0:
        return []
    tp = np.diag(m)
    col, row = m.sum(0), m.sum(1)
    return [
        {
            "precision": float(tp[i] / col[i]) if col[i] else None,
            "recall": float(tp[i] / row[i]) if row[i] else None,
            "support": int(row[i]),
        }
        for i in range(len(m))
    ]


@curator_required
def project_overview(request: HttpRequest, pk: int) -> HttpResponse:
    """Where the problems are: the 2-D projection with a lasso, the confusion matrix with
    per-class precision/recall (cells filter the queue), class pairs and per-class strips."""
    project = project_for(request.user, pk)
    summary = project.summary or {}
    names = project.dataset.class_names or []
    context = {
        "project": project,
        "is_owner": _is_owner(request.user, project),
        "names": names,
        "summary": summary,
        "per_class": _precision_recall(summary.get("confusion", [])),
        "strips": _class_strips(project) if project.is_ready else [],
        "counts": curation.queue_counts(project, request.user, QueueFilter(status="all"))
        if project.is_ready
        else {},
        "agreement": curation.project_agreement(project) if project.is_ready else None,
        "throughput": curation.curator_throughput(project),
        "RunStatus": RunStatus,
    }
    return render(request, "labeling/overview.html", context)


@curator_required
def project_status(request: HttpRequest, pk: int) -> JsonResponse:
    project = project_for(request.user, pk)
    return JsonResponse(
        {"status": project.status, "message": project.message, "error": project.error}
    )


@curator_required
def project_projection(request: HttpRequest, pk: int) -> JsonResponse:
    """The projection points: ``{"item_ids", "x", "y", "label", "flagged", "queued",
    "class_names"}`` (x, y in [0, 1])."""
    project = project_for(request.user, pk)
    data = dict((project.summary or {}).get("projection", {}))
    data["class_names"] = project.dataset.class_names or []
    return JsonResponse(data)


@curator_required
@require_POST
def project_select(request: HttpRequest, pk: int) -> JsonResponse:
    """Put a lasso selection (``{"item_ids": [...]}``) into the queue and make it the
    curator's current filter; returns the queue URL to open."""
    project = project_for(request.user, pk)
    try:
        payload = json.loads(request.body or b"{}")
        item_ids = [int(i) for i in payload.get("item_ids", [])]
    except (ValueError, TypeError, AttributeError):
        return JsonResponse({"error": 'send {"item_ids": [numbers]}'}, status=400)
    if not item_ids:
        return JsonResponse({"error": "the selection is empty"}, status=400)
    if len(item_ids) > 5000:
        return JsonResponse({"error": "select at most 5,000 items"}, status=400)
    try:
        entry_ids = curation.selection_add(project=project, item_ids=item_ids)
    except LabelingError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    request.session[SELECTION_KEY.format(project.pk)] = entry_ids
    return JsonResponse(
        {
            "entries": len(entry_ids),
            "queue": reverse("labeling-queue", args=[project.pk]) + "?selection=1",
        }
    )


# --------------------------------------------------------------------------------------------
# The curator queue


def _filter_from(request: HttpRequest, project: CurationProject) -> QueueFilter:
    entries = None
    if request.GET.get("selection"):
        entries = tuple(request.session.get(SELECTION_KEY.format(project.pk), []))
    return QueueFilter.from_query(request.GET, entries)


@curator_required
def queue_page(request: HttpRequest, pk: int) -> HttpResponse:
    """The keyboard-driven queue. The page loads entries as JSON and posts decisions."""
    project = project_for(request.user, pk)
    if not project.is_ready:
        return redirect("labeling-project", pk=project.pk)
    flt = _filter_from(request, project)
    names = project.dataset.class_names or []
    keys = "1234567890"
    context = {
        "project": project,
        "classes": [
            {"index": i, "name": n, "key": keys[i] if i < len(keys) else ""}
            for i, n in enumerate(names)
        ],
        "filter": flt,
        "filter_names": _filter_names(flt, names),
        "unsure_count": curation.assignments_for(
            project, request.user, QueueFilter(status="unsure")
        ).count(),
        "filter_query": request.GET.urlencode(),
        "counts": curation.queue_counts(project, request.user, flt),
    }
    return render(request, "labeling/queue.html", context)


def _filter_names(flt: QueueFilter, names: list[str]) -> dict:
    """Class names for the filter description ("given Shirt, model says T-shirt/top")."""

    def name(k: int) -> str:
        return names[k] if 0 <= k < len(names) else f"class {k}"

    return {
        "cell": [name(k) for k in flt.cell] if flt.cell else None,
        "pair": [name(k) for k in flt.pair] if flt.pair else None,
        "given": name(flt.given) if flt.given is not None else None,
    }


def _entry_payload(project: CurationProject, assignment: Assignment) -> dict:
    entry = assignment.entry
    names = project.dataset.class_names or []
    base = f"/label/projects/{project.pk}"
    other = (
        entry.suggested_label
        if entry.suggested_label >= 0 and entry.suggested_label != entry.given_label
        else entry.predicted_label
    )

    def img(item_id: int) -> str:
        return f"{base}/items/{item_id}.png"

    standing = assignment.decision
    return {
        "entry": entry.pk,
        "rank": entry.rank,
        "score": float(f"{entry.score:.4g}"),
        "issue_type": entry.issue_type,
        "flagged": entry.flagged,
        "image": img(entry.item_id),
        "item_name": entry.item.name,
        "given": {"index": entry.given_label, "name": names[entry.given_label]},
        "other": {"index": other, "name": names[other] if 0 <= other < len(names) else ""},
        "top3": [
            {"index": t["index"], "name": names[t["index"]], "probability": t["probability"]}
            for t in entry.top3
        ],
        "gradcam": {
            "given": f"{base}/entries/{entry.pk}/gradcam/{entry.given_label}.png",
            "other": f"{base}/entries/{entry.pk}/gradcam/{other}.png" if other >= 0 else None,
        },
        "neighbours": {
            "given": [img(i) for i in entry.neighbours.get("given", [])],
            "other": [img(i) for i in entry.neighbours.get("other", [])],
        },
        "near_duplicates": [img(i) for i in entry.near_duplicates],
        "decision": None
        if standing is None
        else {"id": standing.pk, "action": standing.action, "to_label": standing.to_label},
    }


@curator_required
def queue_next_json(request: HttpRequest, pk: int) -> JsonResponse:
    """The next entry of the curator's filtered queue (``after=<rank>`` to move on, or
    ``entry=<id>`` for one entry), with the counts; ``{"entry": null}`` when done."""
    project = project_for(request.user, pk)
    flt = _filter_from(request, project)
    if request.GET.get("entry"):
        assignment = (
            Assignment.objects.select_related("entry", "entry__item", "decision")
            .filter(entry__project=project, curator=request.user, entry_id=request.GET["entry"])
            .first()
        )
    else:
        after = request.GET.get("after")
        assignment = curation.queue_next(
            project,
            request.user,
            flt,
            after_rank=int(after) if after and after.lstrip("-").isdigit() else None,
        )
    counts = curation.queue_counts(project, request.user, flt)
    if assignment is None:
        return JsonResponse({"entry": None, "counts": counts})
    return JsonResponse({**_entry_payload(project, assignment), "counts": counts})


@curator_required
@require_POST
def decide(request: HttpRequest, pk: int) -> JsonResponse:
    """Record a decision: JSON ``{"entry", "action", "to_label"?, "expected"?, "shown"?,
    "duration_ms"?}``. 409 when the entry was decided on another page meanwhile."""
    project = project_for(request.user, pk)
    try:
        payload = json.loads(request.body or b"{}")
        entry = QueueEntry.objects.get(project=project, pk=int(payload["entry"]))
    except (ValueError, TypeError, KeyError, QueueEntry.DoesNotExist):
        return JsonResponse({"error": "unknown entry"}, status=400)
    duration = payload.get("duration_ms")
    try:
        decision, created = curation.decision_record(
            project=project,
            entry=entry,
            curator=request.user,
            action=str(payload.get("action", "")),
            to_label=payload.get("to_label"),
            expected=payload.get("expected"),
            shown=payload.get("shown") if isinstance(payload.get("shown"), dict) else {},
            duration_ms=int(duration)
            if isinstance(duration, (int, float)) and duration >= 0
            else None,
        )
    except DecisionConflict as exc:
        return JsonResponse({"error": str(exc)}, status=409)
    except (LabelingError, ValueError, TypeError) as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"decision": decision.pk, "action": decision.action, "created": created})


@curator_required
@require_POST
def undo(request: HttpRequest, pk: int) -> JsonResponse:
    """Withdraw the curator's last decision; returns the entry to show again."""
    project = project_for(request.user, pk)
    row = curation.decision_undo(project=project, curator=request.user)
    if row is None:
        return JsonResponse({"error": "nothing to undo"}, status=400)
    return JsonResponse({"undone": row.undoes_id, "entry": row.entry_id})


@curator_required
def item_image(request: HttpRequest, pk: int, item_pk: int) -> FileResponse:
    """An item of the project's run (the queue's images); 404 outside the project."""
    project = project_for(request.user, pk)
    item = get_object_or_404(Item, pk=item_pk, dataset=project.dataset)
    if not item.image:
        raise Http404("no image")
    response = FileResponse(item.image.open("rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=86400"
    return response


@curator_required
def gradcam_png(request: HttpRequest, pk: int, entry_pk: int, target: int) -> HttpResponse:
    """Grad-CAM (Selvaraju et al., ICCV 2017) of the run's final model for one class over the
    item, computed on first request and cached; shown at 8x for 28-pixel images."""
    project = project_for(request.user, pk)
    entry = get_object_or_404(QueueEntry, pk=entry_pk, project=project)
    names = project.dataset.class_names or []
    if not 0 <= target < len(names):
        raise Http404("no such class")
    classifier = project.run.classifier
    if classifier is None:
        raise Http404("the run registered no model")
    name = f"labeling/gradcam/run-{project.run_id}/{entry.item_id}-{target}.png"
    if not default_storage.exists(name):
        # One render at a time per process: the network is shared (classifier_load caches it)
        # and Captum's layer hooks on it would catch another thread's forward pass
        # ("differentiated Tensor ... not used in the graph", a 500 under runserver's threads).
        with _GRADCAM_LOCK:
            if not default_storage.exists(name):
                png = _gradcam_render(classifier, entry.item, target)
                default_storage.save(name, ContentFile(png))
    response = FileResponse(default_storage.open(name, "rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=86400"
    return response


def _gradcam_render(classifier, item: Item, target: int) -> bytes:
    from explanations import rendering
    from explanations.explainers.heatmap.gradcam import GradCam
    from explanations.modelio import pixels_to_input
    from explanations.services.registry import classifier_load, item_model_view

    net = classifier_load(classifier)
    pixels = item_model_view(item=item, model=classifier)
    inputs = pixels_to_input(pixels, classifier.normalization_mean, classifier.normalization_std)
    result = GradCam(net, target_layer=classifier.target_layer).explain(
        inputs, [target], num_classes=classifier.num_classes
    )
    saliency = rendering.normalize_each(result.attributions)[0]
    scale = max(1, 224 // pixels.shape[0])
    if scale > 1:
        pixels = np.kron(pixels, np.ones((scale, scale, 1), dtype=np.uint8))
        saliency = np.kron(saliency, np.ones((scale, scale)))
    if result.degenerate and result.degenerate[0]:
        return _no_evidence_png(pixels)
    return rendering.to_png_bytes(rendering.overlay(pixels, saliency, alpha=0.45))


def _no_evidence_png(pixels: np.ndarray) -> bytes:
    """The item, dimmed, with a caption: Grad-CAM found no positive evidence for the class
    (an all-zero map after the ReLU), which a plain colour map would show as a flat colour."""
    from PIL import ImageDraw

    image = Image.fromarray((pixels.astype(np.float32) * 0.35).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    w, h = image.size
    draw.rectangle([0, h - 40, w, h], fill=(250, 250, 250))
    draw.text((8, h - 34), "No positive Grad-CAM\nevidence for this class", fill=(20, 20, 20))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Bulk review, exports, versions


@curator_required
def pair_review(request: HttpRequest, pk: int, given: int, other: int) -> HttpResponse:
    """Bulk review of one confused class pair: every queued item given ``given`` and
    suggested ``other`` (and the reverse); select items and relabel or keep them at once."""
    project = project_for(request.user, pk)
    names = project.dataset.class_names or []
    if not (0 <= given < len(names) and 0 <= other < len(names)) or given == other:
        raise Http404("no such class pair")
    if request.method == "POST":
        ids = [int(i) for i in request.POST.getlist("entry") if i.isdigit()]
        action = request.POST.get("action", "")
        to_label = request.POST.get("to_label")
        try:
            n = curation.bulk_decide(
                project=project,
                curator=request.user,
                entry_ids=ids,
                action=action,
                to_label=int(to_label) if to_label not in (None, "") else None,
            )
        except (LabelingError, ValueError) as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"{n} decision(s) recorded.")
        return redirect("labeling-pair", pk=project.pk, given=given, other=other)
    flt = QueueFilter(pair=(given, other), status="all")
    assignments = list(
        curation.assignments_for(project, request.user, flt).select_related(
            "entry", "entry__item", "decision"
        )[:400]
    )
    context = {
        "project": project,
        "given": {"index": given, "name": names[given]},
        "other": {"index": other, "name": names[other]},
        "assignments": assignments,
        "names": names,
    }
    return render(request, "labeling/pair.html", context)


@curator_required
def export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    """The corrected labels with provenance: ``fmt`` csv or json."""
    project = project_for(request.user, pk)
    if fmt == "csv":
        body, ctype = curation.export_csv(project), "text/csv; charset=utf-8"
    elif fmt == "json":
        body, ctype = curation.export_json(project), "application/json"
    else:
        raise Http404("csv or json")
    response = HttpResponse(body, content_type=ctype)
    response["Content-Disposition"] = f'attachment; filename="curation-{project.pk}.{fmt}"'
    return response


@curator_required
@require_POST
def apply_version(request: HttpRequest, pk: int) -> HttpResponse:
    """Turn the project's consensus into a new label version of the dataset (owner only)."""
    project = project_for(request.user, pk)
    if not _is_owner(request.user, project):
        raise Http404("only the project owner can apply corrections")
    try:
        version = curation.label_version_from_project(project=project, user=request.user)
    except LabelingError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"Created labels v{version.number}: {version.changed} changed, "
            f"{version.removed} removed. v{version.parent.number} is unchanged.",
        )
    return redirect("labeling-project", pk=project.pk)


@staff_member_required
def versions_page(request: HttpRequest, dataset_pk: int) -> HttpResponse:
    """A dataset's label versions, their runs' accuracies, and re-import of an export."""
    dataset = get_object_or_404(Dataset, pk=dataset_pk)
    if request.method == "POST":
        upload = request.FILES.get("file")
        base = get_object_or_404(
            LabelVersion, pk=_int_or_404(request.POST.get("version")), dataset=dataset
        )
        if upload is None:
            messages.error(request, "choose a CSV or JSON file exported from a project")
        elif upload.size > 50 * 1024 * 1024:
            messages.error(request, "the file is larger than 50 MB")
        else:
            try:
                version = curation.label_version_import(
                    version=base, data=upload.read(), filename=upload.name, user=request.user
                )
            except LabelingError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, f"Imported as labels v{version.number}.")
        return redirect("labeling-versions", dataset_pk=dataset.pk)
    label_version_initial(dataset)
    versions = dataset.label_versions.select_related("parent", "created_by").prefetch_related(
        "training_runs"
    )
    return render(request, "labeling/versions.html", {"dataset": dataset, "versions": versions})


@staff_member_required
def version_download(request: HttpRequest, pk: int) -> HttpResponse:
    """All labels of one version as CSV (item_id, item_name, split, label, label_name)."""
    import csv

    version = get_object_or_404(LabelVersion.objects.select_related("dataset"), pk=pk)
    names = version.dataset.class_names or []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(["item_id", "item_name", "split", "label", "label_name"])
    for item_id, name, split, label in version.labels.values_list(
        "item_id", "item__name", "item__split", "label_index"
    ).order_by("item_id"):
        writer.writerow(
            [
                item_id,
                name,
                split,
                "" if label is None else label,
                names[label] if label is not None and label < len(names) else "",
            ]
        )
    response = HttpResponse(buf.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="{version.dataset.name}-labels-v{version.number}.csv"'
    )
    return response
