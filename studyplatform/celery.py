"""The Celery application: queue ``gpu`` for explanation work, ``cpu`` for the rest.

Configuration comes from Django settings prefixed ``CELERY_``. Start a worker with
``celery -A studyplatform worker -Q gpu,cpu``.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studyplatform.settings.base")

app = Celery("studyplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
