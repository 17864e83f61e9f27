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
    return render(
        request,
        "analysis/results.html",
        {
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
