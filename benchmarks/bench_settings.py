"""Settings for the load benchmark only: the production settings plus optional DB connection tweaks.

The app reads ``DATABASE_CONN_MAX_AGE`` (default 60 s on PostgreSQL; older builds opened a
new PostgreSQL connection for every request). This module lets the benchmark
measure the alternatives without touching the app:

* ``BENCH_CONN_MAX_AGE=<seconds>``: persistent connections (one per gunicorn thread), with
  ``CONN_HEALTH_CHECKS`` on.
* ``BENCH_DB_POOL=<max size>``: Django 5.1+ psycopg connection pool (needs ``psycopg_pool``
  importable, e.g. via PYTHONPATH), incompatible with CONN_MAX_AGE.

Use: ``DJANGO_SETTINGS_MODULE=benchmarks.bench_settings`` (run from the repository root).
"""

import os

from studyplatform.settings.base import *  # noqa: F403
from studyplatform.settings.base import DATABASES

_age = os.environ.get("BENCH_CONN_MAX_AGE")
if _age is not None:
    DATABASES["default"]["CONN_MAX_AGE"] = None if _age == "none" else int(_age)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

_pool = os.environ.get("BENCH_DB_POOL")
if _pool:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": int(_pool),
        "timeout": 30,
    }
