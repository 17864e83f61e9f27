"""WSGI entry point (gunicorn studyplatform.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studyplatform.settings.base")
application = get_wsgi_application()

# Load the URLconf (and the analysis stack it imports) now, in each worker's start-up, so the
# first participant a fresh worker serves does not wait ~1.4 s for it.
from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns  # noqa: B018
