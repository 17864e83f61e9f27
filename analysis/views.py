"""Researcher results pages: table, plot, CSV and Parquet of a study."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render

from studies.researcher_views import study_get_for_user

from .export import PARQUET_MEDIA_TYPE, csv_bytes, parquet_bytes
from .results import SIMULATED_FILTERS, results_plot_png, study_report_html, study_results


def _filter(request: HttpRequest) -> str | None:
    value = request.GET.get("simulated", "include")
    return value if value in SIMULATED_FILTERS else None


@login_required
def study_results_page(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(request.user, slug)
    simulated = _filter(request)
    if simulated is None:
        return HttpResponseBadRequest(f"simulated must be one of {SIMULATED_FILTERS}")
    results = study_results(study, simulated=simulated)
    from .models import ReportRun

    run = ReportRun.objects.filter(study=study, pk=request.GET.get("run") or None).first()
    return render(
        request,
        "analysis/results.html",
        {
            "run": run,
            "study": study,
            "results": results,
            "rows": results.table.to_dict("records"),
            "simulated": simulated,
            "filters": SIMULATED_FILTERS,
        },
    )


@login_required
def study_results_plot(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(request.user, slug)
    simulated = _filter(request)
    if simulated is None:
        return HttpResponseBadRequest(f"simulated must be one of {SIMULATED_FILTERS}")
    png = results_plot_png(study_results(study, simulated=simulated), title=study.title)
    return HttpResponse(png, content_type="image/png")


@login_required
def study_results_csv(request: HttpRequest, slug: str) -> HttpResponse:
    """Long-format data, one row per response (UTF-8 CSV)."""
    study = study_get_for_user(request.user, slug)
    simulated = _filter(request)
    if simulated is None:
        return HttpResponseBadRequest(f"simulated must be one of {SIMULATED_FILTERS}")
    frame = study_results(study, simulated=simulated).responses
    response = HttpResponse(
        csv_bytes(frame, bom=request.GET.get("bom") == "1"),
        content_type="text/csv; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="{study.slug}-responses.csv"'
    return response


@login_required
def study_results_parquet(request: HttpRequest, slug: str) -> HttpResponse:
    """The same long-format data as :func:`study_results_csv` (same owner check, same
    ``simulated`` filter), as a typed Parquet file (:func:`analysis.export.parquet_bytes`)."""
    study = study_get_for_user(request.user, slug)
    simulated = _filter(request)
    if simulated is None:
        return HttpResponseBadRequest(f"simulated must be one of {SIMULATED_FILTERS}")
    frame = study_results(study, simulated=simulated).responses
    response = HttpResponse(parquet_bytes(frame), content_type=PARQUET_MEDIA_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{study.slug}-responses.parquet"'
    return response


@login_required
def study_spec_yaml(request: HttpRequest, slug: str) -> HttpResponse:
    """The study's spec as launched (frozen), with the resolved arms and items, as YAML: the
    design that goes with the exported responses."""
    import yaml

    study = study_get_for_user(request.user, slug)
    when = f"frozen at launch {study.launched_at.isoformat()}" if study.launched_at else "(draft)"
    header = f"# {study.title}: spec {when}\n"
    body = header + yaml.safe_dump(study.spec, sort_keys=False, allow_unicode=True)
    response = HttpResponse(body, content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{study.slug}-spec.yaml"'
    return response


@login_required
def study_codebook_csv(request: HttpRequest, slug: str) -> HttpResponse:
    """What every column of the responses CSV holds (type and meaning), as CSV."""
    from .codebook import codebook_frame
    from .datasets import RESPONSE_COLUMNS

    study = study_get_for_user(request.user, slug)
    response = HttpResponse(
        csv_bytes(codebook_frame(RESPONSE_COLUMNS)), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{study.slug}-codebook.csv"'
    return response


@login_required
def study_report_download(request: HttpRequest, slug: str) -> HttpResponse:
    """The self-contained HTML report (every table and plot inline) as a download."""
    study = study_get_for_user(request.user, slug)
    simulated = _filter(request)
    if simulated is None:
        return HttpResponseBadRequest(f"simulated must be one of {SIMULATED_FILTERS}")
    response = HttpResponse(
        study_report_html(study, simulated=simulated), content_type="text/html; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{study.slug}-report.html"'
    return response


def _source(request: HttpRequest) -> str | None:
    from .regions import SOURCES

    value = request.GET.get("source", "dataset")
    return value if value in SOURCES else None


#: Columns the Shared Interest table can be sorted by.
SHARED_INTEREST_SORTS = ("pattern", "iou", "ground_truth_coverage", "saliency_coverage", "item")


@login_required
def study_shared_interest_page(request: HttpRequest, slug: str) -> HttpResponse:
    """Shared Interest of the study's items (Boggust et al., CHI 2022): per method and item
    the coverages, the recurring pattern and a thumbnail (map over the photo, human region
    outlined); filter by method and pattern, sort by any score."""
    from analysis.stats.shared_interest import NO_PATTERN, PATTERN_KEYS, PATTERNS

    from .regions import SOURCES, study_shared_interest

    study = study_get_for_user(request.user, slug)
    source = _source(request)
    sort = request.GET.get("sort", "pattern")
    if source is None or sort not in SHARED_INTEREST_SORTS:
        return HttpResponseBadRequest(
            f"source must be one of {SOURCES}; sort one of {SHARED_INTEREST_SORTS}"
        )
    frame = study_shared_interest(study, source=source)
    methods = sorted(frame["method"].unique()) if not frame.empty else []
    counts = frame["pattern"].value_counts().to_dict() if not frame.empty else {}
    method, pattern = request.GET.get("method", ""), request.GET.get("pattern", "")
    shown = frame
    if method and not shown.empty:
        shown = shown[shown["method"] == method]
    if pattern and not shown.empty:
        shown = shown[shown["pattern"] == pattern]
    if not shown.empty:
        if sort == "pattern":
            order = {key: i for i, key in enumerate(PATTERN_KEYS)}
            shown = shown.assign(_o=shown["pattern"].map(order)).sort_values(["_o", "item"])
        else:
            shown = shown.sort_values(sort, ascending=request.GET.get("order") == "asc")
    names = {**PATTERNS, **NO_PATTERN}
    return render(
        request,
        "analysis/shared_interest.html",
        {
            "study": study,
            "source": source,
            "sources": SOURCES,
            "rows": shown.to_dict("records") if not shown.empty else [],
            "n_total": len(frame),
            "methods": methods,
            "method": method,
            "pattern": pattern,
            "sort": sort,
            "sorts": SHARED_INTEREST_SORTS,
            "patterns": [
                {
                    "key": k,
                    "name": names[k].name,
                    "rule": names[k].rule,
                    "description": names[k].description,
                    "count": counts.get(k, 0),
                }
                for k in PATTERN_KEYS
            ],
        },
    )


@login_required
def study_shared_interest_thumbnail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """The map (top-1 class, over the model's view of the photo) with the human region
    outlined in white, as PNG; only maps of the study's own model and dataset."""
    from django.http import Http404

    from explanations.imageio import ImageDecodeError, encode_png
    from explanations.models import Explanation
    from explanations.rendering import overlays
    from explanations.services import explanation_array_load, item_model_view

    from .regions import dataset_region_mask, participant_region_masks, region_outline

    study = study_get_for_user(request.user, slug)
    source = _source(request)
    if source is None:
        return HttpResponseBadRequest("unknown source")
    explanation = (
        Explanation.objects.filter(pk=pk, model=study.model, item__dataset=study.dataset)
        .select_related("item")
        .first()
    )
    if explanation is None:
        raise Http404("no such map in this study")
    model = study.model
    try:
        view = item_model_view(item=explanation.item, model=model)
    except ImageDecodeError:
        raise Http404("the photo cannot be decoded") from None
    picture = overlays(view, explanation_array_load(explanation)[None], alpha=0.55)[0].copy()
    if source == "participants":
        masks = participant_region_masks(study, item_ids=[explanation.item_id])
        mask = masks.get(explanation.item_id, (None, 0))[0]
    else:
        mask = dataset_region_mask(
            explanation.item, size=model.input_size, policy=model.resize_policy
        )
    if mask is not None and mask.shape == picture.shape[:2]:
        picture[region_outline(mask)] = 255
    response = HttpResponse(encode_png(picture), content_type="image/png")
    response["Cache-Control"] = "private, max-age=300"
    return response


@login_required
def study_named_plot(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    """A plot of the results page: accuracy, response times, confidence, Shared Interest."""
    from .results import RESULT_PLOTS, study_plot_png

    study = study_get_for_user(request.user, slug)
    simulated = _filter(request)
    if simulated is None or name not in RESULT_PLOTS:
        return HttpResponseBadRequest(
            f"plot must be one of {RESULT_PLOTS}; simulated one of {SIMULATED_FILTERS}"
        )
    return HttpResponse(study_plot_png(study, name, simulated=simulated), content_type="image/png")


@login_required
def study_report_run_create(request: HttpRequest, slug: str) -> HttpResponse:
    """POST: compute the full report (mixed-effects models on every task) on a worker; back
    to the results page, which shows its progress."""
    from django.shortcuts import redirect
    from django.urls import reverse

    from .services import report_run_create

    study = study_get_for_user(request.user, slug)
    if request.method != "POST":
        return HttpResponseBadRequest("POST only")
    try:
        run = report_run_create(
            study=study,
            user=request.user,
            simulated=request.POST.get("simulated", "include"),
            mixed=request.POST.get("mixed", "true"),
        )
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc))
    return redirect(f"{reverse('analysis:results', args=[study.slug])}?run={run.pk}")


@login_required
def study_report_run_status(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """JSON progress of a background report: status, done, total, section, error."""
    from django.http import JsonResponse
    from django.shortcuts import get_object_or_404

    from .models import ReportRun

    study = study_get_for_user(request.user, slug)
    run = get_object_or_404(ReportRun, pk=pk, study=study)
    return JsonResponse(
        {
            "id": run.pk,
            "status": run.status,
            "done": run.done,
            "total": run.total,
            "section": run.section,
            "error": run.error,
            "download": bool(run.html),
        }
    )


@login_required
def study_report_run_download(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """The finished background report (HTML) as a download; 404 until it is finished."""
    from django.http import FileResponse, Http404
    from django.shortcuts import get_object_or_404

    from .models import ReportRun

    study = study_get_for_user(request.user, slug)
    run = get_object_or_404(ReportRun, pk=pk, study=study)
    if not run.html:
        raise Http404("the report is not ready")
    return FileResponse(
        run.html.open("rb"),
        as_attachment=True,
        filename=f"{study.slug}-report.html",
        content_type="text/html; charset=utf-8",
    )
