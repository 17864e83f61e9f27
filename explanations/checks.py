"""System check: every explainer listed in STUDYPLATFORM_EXPLAINERS imports and is valid."""

from django.conf import settings
from django.core.checks import Error, register

from .explainers.base import ExplainerConfigError
from .explainers.registry import build_registry


@register()
def explainers_check(app_configs, **kwargs):
    try:
        build_registry(settings.STUDYPLATFORM_EXPLAINERS)
    except ExplainerConfigError as exc:
        return [Error(str(exc), id="explanations.E001", obj="STUDYPLATFORM_EXPLAINERS")]
    return []
