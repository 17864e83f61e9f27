"""URLs of the label-correction pages, under /label/."""

from django.urls import path

from . import views

urlpatterns = [
    path("label/", views.labeling_home, name="labeling-home"),
    path("label/login/", views.CuratorLoginView.as_view(), name="labeling-login"),
    path(
        "label/logout/",
        views.auth_views.LogoutView.as_view(next_page="labeling-login"),
        name="labeling-logout",
    ),
    path("label/runs/start/", views.run_start, name="labeling-run-start"),
    path("label/runs/<int:pk>/", views.run_detail, name="labeling-run"),
    path("label/projects/start/", views.project_start, name="labeling-project-start"),
    path("label/projects/<int:pk>/", views.project_overview, name="labeling-project"),
    path(
        "label/projects/<int:pk>/status.json", views.project_status, name="labeling-project-status"
    ),
    path(
        "label/projects/<int:pk>/projection.json",
        views.project_projection,
        name="labeling-projection",
    ),
    path("label/projects/<int:pk>/select/", views.project_select, name="labeling-select"),
    path("label/projects/<int:pk>/queue/", views.queue_page, name="labeling-queue"),
    path("label/projects/<int:pk>/queue/next.json", views.queue_next_json, name="labeling-next"),
    path("label/projects/<int:pk>/decide/", views.decide, name="labeling-decide"),
    path("label/projects/<int:pk>/undo/", views.undo, name="labeling-undo"),
    path(
        "label/projects/<int:pk>/items/<int:item_pk>.png",
        views.item_image,
        name="labeling-item-image",
    ),
    path(
        "label/projects/<int:pk>/entries/<int:entry_pk>/gradcam/<int:target>.png",
        views.gradcam_png,
        name="labeling-gradcam",
    ),
    path(
        "label/projects/<int:pk>/pairs/<int:given>/<int:other>/",
        views.pair_review,
        name="labeling-pair",
    ),
    path("label/projects/<int:pk>/export.<str:fmt>", views.export, name="labeling-export"),
    path("label/projects/<int:pk>/apply/", views.apply_version, name="labeling-apply"),
    path(
        "label/datasets/<int:dataset_pk>/versions/", views.versions_page, name="labeling-versions"
    ),
    path("label/versions/<int:pk>/labels.csv", views.version_download, name="labeling-version-csv"),
]
