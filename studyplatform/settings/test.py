"""Test settings: the base settings with a throw-away var dir and an in-memory broker."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("STUDYPLATFORM_VAR_DIR", tempfile.mkdtemp(prefix="studyplatform-test-"))

from .base import *  # noqa: E402,F403
from .base import DATABASES, VAR_DIR  # noqa: E402

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not :memory:, so live-server threads get their own connections and the
    # concurrency tests exercise real locking.
    DATABASES["default"]["TEST"] = {"NAME": str(Path(VAR_DIR) / "test-db.sqlite3")}

CELERY_BROKER_URL = "memory://"
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
