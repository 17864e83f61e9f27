from django.urls import path

from . import api, views

app_name = "explanations"

urlpatterns = [
    path("r/jobs/<int:pk>/", views.job_detail, name="job"),
    path("r/explanations/<int:pk>/overlay.png", views.explanation_overlay, name="overlay"),
    path("api/jobs/<int:pk>/", views.ExplanationJobDetailApi.as_view(), name="api-job"),
    path(
        "api/datasets/<int:pk>/items/",
        api.DatasetItemUploadApi.as_view(),
        name="api-dataset-items",
    ),
]
