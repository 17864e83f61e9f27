"""System check: participant rate limits are well-formed."""

from django.conf import settings
from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured

from .ratelimit import rate_parse


@register()
def rate_limits_check(app_configs, **kwargs):
    errors = []
    for name in ("STUDYPLATFORM_ENROL_RATE", "STUDYPLATFORM_PARTICIPANT_RATE"):
        try:
            rate_parse(getattr(settings, name))
        except ImproperlyConfigured as exc:
            errors.append(Error(f"{name}: {exc}", id="studies.E001"))
    return errors
