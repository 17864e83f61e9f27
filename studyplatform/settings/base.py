"""Settings for every environment; production differs only by environment variables.

With no variable set you get the embedded default: SQLite under ``var/`` and a Celery broker
on the local filesystem, so the README quick start needs no server. Production sets
``DATABASE_URL`` (PostgreSQL) and ``CELERY_BROKER_URL`` (Redis or RabbitMQ).
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("STUDYPLATFORM_VAR_DIR", str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "insecure-embedded-default-key-do-not-use-in-production"
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "explanations",
    "studies",
    "analysis",
    "labeling",
    "studyplatform",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "studyplatform.urls"
WSGI_APPLICATION = "studyplatform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_SQLITE_PATH = VAR_DIR / "db.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{_SQLITE_PATH}"),
        # Persistent connections on a server database: opening one per request costs more
        # than a participant's answer itself. Health-checked before reuse.
        conn_max_age=env_int(
            "DATABASE_CONN_MAX_AGE",
            60 if env_str("DATABASE_URL", "").startswith("postgres") else 0,
            minimum=0,
        ),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the Celery worker write to the same file: wait for the lock instead
    # of failing, take the write lock at BEGIN (no upgrade deadlocks), and let readers run
    # beside a writer (WAL).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Security (production = DJANGO_DEBUG=0; everything below can be overridden) -----------
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    # The proxy terminates TLS and sets X-Forwarded-Proto; only enable behind such a proxy.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if not DEBUG:
    SILENCED_SYSTEM_CHECKS = env_list("DJANGO_SILENCED_SYSTEM_CHECKS", [])

# --- Cache (rate limits); Redis in production ---------------------------------------------
_CACHE_URL = env_str("CACHE_URL", "")
if _CACHE_URL.startswith(("redis://", "rediss://")):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": _CACHE_URL,
        }
    }
elif _CACHE_URL:
    raise ImproperlyConfigured(f"CACHE_URL={_CACHE_URL!r}: only redis:// URLs are supported")
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/admin/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STUDYPLATFORM_STATIC_ROOT", str(VAR_DIR / "static"))).resolve()
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
MEDIA_ROOT = Path(env_str("STUDYPLATFORM_MEDIA_ROOT", str(VAR_DIR / "media"))).resolve()
# Media is never served by URL: researcher and participant views stream files after a
# permission check, so a participant cannot browse artifacts of other trials.
MEDIA_URL = "/media-not-served/"

# The researcher API (studyplatform/api.py): a browser session or "Authorization: Token <key>"
# (POST /api/auth/token/). Session comes first, so a request with no credentials is 403 with
# no WWW-Authenticate challenge, as the pages' APIs always answered.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "studyplatform.api.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# OpenAPI 3 at /api/schema/, Swagger UI at /api/docs/ from local static files (no CDN).
SPECTACULAR_SETTINGS = {
    "TITLE": "studyplatform researcher API",
    "DESCRIPTION": (
        "Register classifiers and datasets, run explanation jobs and read study results. "
        "Authenticate with a session or the header `Authorization: Token <key>` "
        "(POST /api/auth/token/)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/",
    "ENUM_NAME_OVERRIDES": {
        "ModelKindEnum": "explanations.models.ModelKind",
        "RegionKindEnum": "explanations.models.RegionKind",
        "JobStatusEnum": "explanations.models.JobStatus",
        "StudyStatusEnum": "studies.models.StudyStatus",
    },
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery -----------------------------------------------------------------------------
_BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://localhost//")
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _folder in ("queue", "control"):
        (_BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "control_folder": str(_BROKER_DIR / "control"),
        # Default polling is 1 s, which makes a 10-item job feel stuck.
        "polling_interval": env_float("CELERY_POLLING_INTERVAL", 0.1),
    }
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", "") or None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_ROUTES = {
    "explanations.tasks.explanation_job_run_task": {"queue": "gpu"},
    "explanations.tasks.explanation_jobs_sweep_task": {"queue": "cpu"},
    "explanations.tasks.dataset_import_job_run_task": {"queue": "cpu"},
    "analysis.tasks.report_run_task": {"queue": "cpu"},
    "labeling.tasks.training_run_task": {"queue": "cpu"},
    "labeling.tasks.curation_project_build_task": {"queue": "cpu"},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_LOST_WAIT = 2.0
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Unacked messages come back after this; our own job leases re-enqueue much sooner.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BEAT_SCHEDULE = {
    "explanation-jobs-sweep": {
        "task": "explanations.tasks.explanation_jobs_sweep_task",
        "schedule": 60.0,
        "options": {"queue": "cpu"},
    },
}

# --- Explanations -----------------------------------------------------------------------
STUDYPLATFORM_EXPLAINERS = [
    "explanations.explainers.heatmap.gradcam.GradCam",
    "explanations.explainers.heatmap.saliency.Saliency",
    "explanations.explainers.heatmap.smoothgrad.SmoothGrad",
    "explanations.explainers.heatmap.integrated_gradients.IntegratedGradients",
    "explanations.explainers.heatmap.guided_backprop.GuidedBackprop",
    "explanations.explainers.heatmap.guided_backprop.GuidedGradCam",
    "explanations.explainers.heatmap.occlusion.Occlusion",
    "explanations.explainers.heatmap.lime.Lime",
    "explanations.explainers.heatmap.rise.Rise",
    "explanations.explainers.interpretable.PrototypeExplainer",
    "explanations.explainers.interpretable.ConceptExplainer",
    "explanations.explainers.interpretable.PosthocPrototypeExplainer",
]
# "auto" = CUDA when available, else CPU; or "cpu", "cuda", "cuda:1", ...
STUDYPLATFORM_DEVICE = env_str("STUDYPLATFORM_DEVICE", "auto")
# A job not heard from for this long is re-enqueued by the sweep (worker killed, message lost).
STUDYPLATFORM_JOB_LEASE_S = env_int("STUDYPLATFORM_JOB_LEASE_S", 300, minimum=1)
# Rate limits on participant endpoints ("<count>/<s|m|h>"): enrolments per client address
# (a classroom behind one NAT enrols from one address), requests per participant token.
STUDYPLATFORM_ENROL_RATE = env_str("STUDYPLATFORM_ENROL_RATE", "120/m")
STUDYPLATFORM_PARTICIPANT_RATE = env_str("STUDYPLATFORM_PARTICIPANT_RATE", "600/m")
# Trusted proxies in front of the app that append to X-Forwarded-For (with the TLS proxy).
STUDYPLATFORM_PROXY_HOPS = env_int("STUDYPLATFORM_PROXY_HOPS", 1, minimum=1)
# Torch threads per worker process; 0 = torch's default.
STUDYPLATFORM_TORCH_THREADS = env_int("STUDYPLATFORM_TORCH_THREADS", 0, minimum=0)
# Uploads larger than this are refused with 413 before decoding.
STUDYPLATFORM_MAX_UPLOAD_BYTES = env_int(
    "STUDYPLATFORM_MAX_UPLOAD_BYTES", 50 * 1024 * 1024, minimum=1
)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# Zip archives that unpack to more than this are refused (zip bombs).
STUDYPLATFORM_MAX_ZIP_BYTES = env_int("STUDYPLATFORM_MAX_ZIP_BYTES", 2 * 1024**3, minimum=1)
# Images larger than this many pixels are refused before decoding (decompression bombs).
STUDYPLATFORM_MAX_IMAGE_PIXELS = env_int("STUDYPLATFORM_MAX_IMAGE_PIXELS", 40_000_000, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "WARNING")},
}
