from django.urls import path

from . import views

app_name = "analysis"

urlpatterns = [
    path("r/studies/<slug:slug>/results/", views.study_results_page, name="results"),
    path("r/studies/<slug:slug>/results.png", views.study_results_plot, name="results-plot"),
    path("r/studies/<slug:slug>/responses.csv", views.study_results_csv, name="results-csv"),
    path(
        "r/studies/<slug:slug>/responses.parquet",
        views.study_results_parquet,
        name="results-parquet",
    ),
    path(
        "r/studies/<slug:slug>/shared-interest/",
        views.study_shared_interest_page,
        name="shared-interest",
    ),
    path(
        "r/studies/<slug:slug>/shared-interest/<int:pk>.png",
        views.study_shared_interest_thumbnail,
        name="shared-interest-thumbnail",
    ),
    path("r/studies/<slug:slug>/plots/<slug:name>.png", views.study_named_plot, name="plot"),
    path("r/studies/<slug:slug>/report-runs/", views.study_report_run_create, name="report-run"),
    path(
        "r/studies/<slug:slug>/report-runs/<int:pk>.json",
        views.study_report_run_status,
        name="report-run-status",
    ),
    path(
        "r/studies/<slug:slug>/report-runs/<int:pk>.html",
        views.study_report_run_download,
        name="report-run-download",
    ),
    path("r/studies/<slug:slug>/report.html", views.study_report_download, name="report"),
    path("r/studies/<slug:slug>/spec.yaml", views.study_spec_yaml, name="spec-yaml"),
    path("r/studies/<slug:slug>/codebook.csv", views.study_codebook_csv, name="codebook"),
]
