from django.urls import path

from . import api, views

app_name = "explanations"

urlpatterns = [
    path("r/jobs/<int:pk>/", views.job_detail, name="job"),
    path("r/jobs/<int:pk>/retry/", views.job_retry, name="job-retry"),
    path("r/explanations/<int:pk>/overlay.png", views.explanation_overlay, name="overlay"),
    path("r/models/", views.model_list, name="models"),
    path("r/models/register/", views.model_register_page, name="model-register"),
    path("r/models/<int:pk>/", views.model_detail, name="model"),
    path("r/datasets/", views.dataset_list, name="datasets"),
    path("r/datasets/import/", views.dataset_import_page, name="dataset-import"),
    path("r/datasets/<int:pk>/", views.dataset_detail, name="dataset"),
    path("r/items/<int:pk>/image.png", views.item_image, name="item-image"),
    path("r/items/<int:pk>/thumb.png", views.item_thumbnail, name="item-thumb"),
    path(
        "api/datasets/<int:pk>/items/",
        api.DatasetItemUploadApi.as_view(),
        name="api-dataset-items",
    ),
]
