from django.urls import path

from . import api, views

app_name = "studies"

urlpatterns = [
    path("s/<slug:slug>/", views.study_start, name="start"),
    path("j/", views.classroom_join, name="join"),
    path("j/<str:code>/", views.classroom_study, name="classroom"),
    path("p/<uuid:token>/", views.participant_page, name="participant"),
    path("p/<uuid:token>/consent", views.participant_consent, name="consent"),
    path("p/<uuid:token>/instructions", views.participant_instructions, name="instructions"),
    path("p/<uuid:token>/answer", views.participant_answer, name="answer"),
    path("p/<uuid:token>/feedback", views.participant_feedback, name="feedback"),
    path(
        "p/<uuid:token>/img/<int:position>/<slug:slot>.png",
        views.participant_stimulus,
        name="stimulus",
    ),
    path("api/p/<uuid:token>/", api.ParticipantStateApi.as_view(), name="api-state"),
]
