from django.apps import AppConfig


class StudyplatformConfig(AppConfig):
    """The wiring app: holds cross-app commands such as ``demo``; no models."""

    name = "studyplatform"
