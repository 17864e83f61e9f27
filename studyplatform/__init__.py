"""studyplatform: human-evaluation studies of ML explanations."""

from .celery import app as celery_app

__all__ = ["celery_app"]
