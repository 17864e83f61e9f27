from django.apps import AppConfig


class LabelingConfig(AppConfig):
    """Label correction: cross-fitted ranking, the curator queue and label versions."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "labeling"
    verbose_name = "Label correction"
