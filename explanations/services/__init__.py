"""Services of the explanations app, named ``<entity>_<action>``, keyword-only, transactional.

Views, commands, API views and Celery tasks call these and nothing else:

* :mod:`.registry`: ``model_register``, ``classifier_load``, ``item_model_view``;
* :mod:`.datasets`: ``dataset_import`` and the folder/manifest/zip importers;
* :mod:`.jobs`: ``explanation_job_create``, ``explanation_job_run``, ``explanation_jobs_sweep``.
"""

from .datasets import (
    DatasetNameTaken,
    ImageSource,
    ImportReport,
    RegionError,
    dataset_create,
    dataset_import,
    dataset_import_job_create,
    dataset_import_job_run,
    dataset_import_listing,
    dataset_listing_read,
)
from .jobs import (
    PREDICTION_TOP_K,
    TRANSIENT_ERRORS,
    _is_transient,
    explainer_classes,
    explanation_array_load,
    explanation_job_create,
    explanation_job_enqueue,
    explanation_job_finalize,
    explanation_job_retry_failed,
    explanation_job_run,
    explanation_jobs_sweep,
    explanation_overlay_ensure,
    explanation_params_key,
    explanation_targets,
    torch_device,
)
from .registry import (
    ModelInUse,
    ModelRegistrationError,
    class_names_load,
    classifier_load,
    item_model_view,
    model_delete,
    model_register,
)
from .sanity import method_checks_run

__all__ = [
    "method_checks_run",
    "PREDICTION_TOP_K",
    "TRANSIENT_ERRORS",
    "DatasetNameTaken",
    "ImageSource",
    "ModelInUse",
    "ImportReport",
    "ModelRegistrationError",
    "_is_transient",
    "class_names_load",
    "classifier_load",
    "RegionError",
    "dataset_create",
    "dataset_import",
    "dataset_import_job_create",
    "dataset_import_job_run",
    "dataset_import_listing",
    "dataset_listing_read",
    "explainer_classes",
    "explanation_array_load",
    "explanation_job_create",
    "explanation_job_enqueue",
    "explanation_job_finalize",
    "explanation_job_retry_failed",
    "explanation_job_run",
    "explanation_overlay_ensure",
    "explanation_params_key",
    "explanation_jobs_sweep",
    "explanation_targets",
    "item_model_view",
    "model_delete",
    "model_register",
    "torch_device",
]
