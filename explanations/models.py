"""Classifiers, datasets, predictions and explanation artifacts.

This app knows nothing about studies: studies use its models and services one way.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ModelKind(models.TextChoices):
    BUILTIN = "builtin", "Built-in architecture"
    FACTORY = "factory", "Factory function + state dict"
    TORCHSCRIPT = "torchscript", "TorchScript file"
    PROTOPNET = "protopnet", "ProtoPNet (safetensors with its own configuration)"
    CBM = "cbm", "Concept-bottleneck model (safetensors with its own configuration)"


#: Explanation methods that show a model's own evidence, and the model kind each needs
#: (Chen et al., NeurIPS 2019; Koh et al., ICML 2020).
OWN_EVIDENCE_KINDS = {"prototypes": ModelKind.PROTOPNET, "concepts": ModelKind.CBM}


class ResizePolicy(models.TextChoices):
    CENTER_CROP = "center-crop", "Central square crop, then resize"
    RESIZE = "resize", "Resize the whole image (aspect ratio not kept)"


class ClassifierModel(models.Model):
    """A registered image classifier: architecture, weights (with checksum) and preprocessing.

    Inputs are built as: central square crop of the photo, resized to ``input_size`` x
    ``input_size`` (bicubic), then ``(pixel - mean) / std`` per channel in 0-255 units.
    """

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=20, choices=ModelKind.choices, default=ModelKind.BUILTIN)
    architecture = models.CharField(
        max_length=300, blank=True, help_text="Built-in key or factory dotted path."
    )
    weights_path = models.CharField(max_length=1000)
    weights_sha256 = models.CharField(max_length=64)
    class_names = models.JSONField(help_text="List of class names, index = logit position.")
    input_size = models.PositiveIntegerField(default=224)
    resize_policy = models.CharField(
        max_length=20, choices=ResizePolicy.choices, default=ResizePolicy.CENTER_CROP
    )
    normalization_mean = models.JSONField()
    normalization_std = models.JSONField()
    target_layer = models.CharField(
        max_length=200, blank=True, help_text="Layer used by CAM methods (none for TorchScript)."
    )
    details = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the platform knows beyond the weights: the training run and test "
        "accuracy; for a ProtoPNet each prototype's source item and patch box; for a "
        "concept-bottleneck model its concept names and attribute table.",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_name(self, index: int) -> str:
        return str(self.class_names[index])


class Dataset(models.Model):
    """A named collection of labelled images."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    modality = models.CharField(
        max_length=10,
        choices=[("image", "Images"), ("text", "Texts")],
        default="image",
        help_text="Images (photos for a classifier) or texts (human or machine, GLTR).",
    )
    class_names = models.JSONField(
        default=list,
        blank=True,
        help_text="The dataset's label space; empty = labels are indices of the model's classes.",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class Item(models.Model):
    """One image of a dataset, stored as a normalised RGB PNG, with its label if known.

    ``label_index`` is the ground-truth class index in the classifier's label space (ImageNet-1k
    for the demo) or null when the photo shows no class of that space.
    """

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="items")
    name = models.CharField(max_length=200)
    image = models.FileField(upload_to="items/", blank=True)
    text = models.TextField(blank=True, help_text="The text of a text item.")
    meta = models.JSONField(
        default=dict, blank=True, help_text="Provenance (text items: source, generation)."
    )
    sha256 = models.CharField(max_length=64, help_text="Checksum of the original file bytes.")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    original_mode = models.CharField(max_length=16, blank=True)
    label_index = models.IntegerField(null=True, blank=True)
    label_name = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=300, blank=True, help_text="Where the photo came from.")
    original_name = models.CharField(max_length=300, blank=True, help_text="File name as imported.")
    split = models.CharField(max_length=30, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["dataset", "name"], name="item_unique_name"),
            models.UniqueConstraint(fields=["dataset", "sha256"], name="item_unique_content"),
        ]
        ordering = ["dataset_id", "id"]

    def __str__(self) -> str:
        return f"{self.dataset.name}/{self.name}"

    @property
    def has_label(self) -> bool:
        return self.label_index is not None

    def label_for(self, model: ClassifierModel) -> int | None:
        """The true class as an index of ``model``'s classes, or None.

        With a dataset label space (``Dataset.class_names``) the label is matched by name; a
        name the model does not know gives None. Without one, ``label_index`` already indexes
        the model's classes (the bundled ImageNet photos).
        """
        if self.label_index is None:
            return None
        names = self.dataset.class_names
        if not names:
            return self.label_index if self.label_index < model.num_classes else None
        try:
            return model.class_names.index(names[self.label_index])
        except (ValueError, IndexError):
            return None


class RegionKind(models.TextChoices):
    BOX = "box", "Bounding box"
    MASK = "mask", "Binary mask"


class Region(models.Model):
    """A ground-truth region of an item (Shared Interest, Boggust et al., CHI 2022).

    Boxes are stored in pixels of the stored image, ``(x0, y0)`` inclusive top-left and
    ``(x1, y1)`` exclusive bottom-right, 0 <= x0 < x1 <= width. Masks are PNG files of the
    item's exact size, nonzero = inside.
    """

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="regions")
    kind = models.CharField(max_length=10, choices=RegionKind.choices)
    label = models.CharField(max_length=200, blank=True)
    x0 = models.FloatField(null=True, blank=True)
    y0 = models.FloatField(null=True, blank=True)
    x1 = models.FloatField(null=True, blank=True)
    y1 = models.FloatField(null=True, blank=True)
    mask = models.FileField(upload_to="regions/", blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.kind} of {self.item}"


class Prediction(models.Model):
    """The classifier's top-k output on one item.

    ``topk`` is a list of ``{"index": int, "name": str, "probability": float in [0, 1]}``
    sorted by decreasing probability (softmax over all classes).
    """

    model = models.ForeignKey(ClassifierModel, on_delete=models.CASCADE, related_name="predictions")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="predictions")
    topk = models.JSONField()
    predicted_index = models.IntegerField()
    probability = models.FloatField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "item"], name="prediction_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.model} on {self.item}: {self.predicted_index} ({self.probability:.3f})"

    @property
    def is_correct(self) -> bool | None:
        """True/False against the item's label; None when the item has no label in the
        model's label space."""
        truth = self.item.label_for(self.model)
        if truth is None:
            return None
        return self.predicted_index == truth

    def topk_indices(self) -> list[int]:
        return [int(entry["index"]) for entry in self.topk]


class JobStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ExplanationJob(models.Model):
    """A batch: predictions plus explanations of the top-k classes for every item of a dataset.

    For items whose true class is outside the top-k, the true class is explained too (the
    HIVE distinction task shows it when the model is wrong).
    """

    model = models.ForeignKey(ClassifierModel, on_delete=models.CASCADE, related_name="jobs")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="jobs")
    method = models.CharField(max_length=50)
    params = models.JSONField(
        default=dict, blank=True, help_text="Method parameters (the explainer's defaults if empty)."
    )
    params_key = models.CharField(
        max_length=64,
        blank=True,
        help_text="Cache key of the resolved parameters (set by a worker).",
    )
    top_k = models.PositiveSmallIntegerField(default=4)
    batch_size = models.PositiveIntegerField(
        default=16, help_text="Items per worker task: a job is split into batches."
    )
    evaluate = models.BooleanField(
        default=False, help_text="Also compute deletion/insertion AUC for every map."
    )
    status = models.CharField(max_length=20, choices=JobStatus.choices, default=JobStatus.PENDING)
    total_items = models.PositiveIntegerField(default=0)
    done_items = models.PositiveIntegerField(default=0)
    failed_items = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life from a worker running this job."
    )
    enqueue_count = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.method} on {self.dataset} with {self.model} ({self.status})"

    @property
    def progress(self) -> float:
        """Fraction of items finished (done or failed), in [0, 1]."""
        if not self.total_items:
            return 0.0
        return (self.done_items + self.failed_items) / self.total_items

    @property
    def is_finished(self) -> bool:
        return self.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)

    @property
    def rate(self) -> float | None:
        """Items finished per second since the job started (None before any finished)."""
        finished = self.done_items + self.failed_items
        if not finished or self.started_at is None:
            return None
        end = self.finished_at or timezone.now()
        seconds = max((end - self.started_at).total_seconds(), 1e-3)
        return finished / seconds

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the current rate (None when unknown; 0 when finished)."""
        if self.is_finished:
            return 0.0
        rate = self.rate
        if not rate:
            return None
        return (self.total_items - self.done_items - self.failed_items) / rate


class DatasetImportJob(models.Model):
    """A background import (folder, manifest or zip) with progress and a per-file report."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="import_jobs")
    source_format = models.CharField(max_length=20)  # folder | manifest | zip
    source_path = models.CharField(max_length=1000)
    status = models.CharField(max_length=20, choices=JobStatus.choices, default=JobStatus.PENDING)
    total_files = models.PositiveIntegerField(default=0)
    processed_files = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"import {self.source_format} into {self.dataset} ({self.status})"


class JobItemStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ExplanationJobItem(models.Model):
    """One item of a job; its state lives in the database so a lost message loses no work."""

    job = models.ForeignKey(ExplanationJob, on_delete=models.CASCADE, related_name="job_items")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(
        max_length=20, choices=JobItemStatus.choices, default=JobItemStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    leased_until = models.DateTimeField(
        null=True, blank=True, help_text="A worker holds this item until then."
    )
    lease_token = models.CharField(
        max_length=32, blank=True, help_text="Which runner holds the lease (random per claim)."
    )
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "item"], name="job_item_unique"),
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"job {self.job_id} item {self.item_id} ({self.status})"


class Explanation(models.Model):
    """One saliency map for one (model, item, method, target class).

    ``array`` is a ``.npy`` file of shape (H, W) float32 >= 0 at the model's input size (the
    raw map, not normalised); ``overlay`` is a PNG of the map (normalised by its own max)
    blended over the model's view of the photo.
    """

    model = models.ForeignKey(ClassifierModel, on_delete=models.CASCADE, related_name="+")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="explanations")
    method = models.CharField(max_length=50)
    target_index = models.IntegerField()
    target_rank = models.IntegerField(
        null=True, blank=True, help_text="0-based rank of the target in the prediction."
    )
    params = models.JSONField(default=dict)
    params_key = models.CharField(
        max_length=64,
        blank=True,
        help_text="SHA-256 of the method and its resolved parameters: the cache key, with "
        "model, item and target (the model and item rows are immutable, by checksum).",
    )
    array = models.FileField(upload_to="explanations/arrays/")
    overlay = models.FileField(upload_to="explanations/overlays/")
    max_value = models.FloatField()
    min_value = models.FloatField(default=0.0)
    degenerate = models.BooleanField(
        default=False, help_text="The method gave an all-zero (or no positive) map."
    )
    deletion_auc = models.FloatField(null=True, blank=True, help_text="Petsiuk et al. 2018.")
    insertion_auc = models.FloatField(null=True, blank=True, help_text="Petsiuk et al. 2018.")
    duration_ms = models.PositiveIntegerField(default=0)
    details = models.JSONField(
        default=dict,
        blank=True,
        help_text="Structured evidence beside the map: the top prototypes (method "
        "'prototypes') or the concept contributions (method 'concepts'); empty for heatmaps.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model", "item", "method", "params_key", "target_index"],
                name="explanation_unique",
            ),
        ]
        ordering = ["item_id", "target_rank", "target_index"]

    def __str__(self) -> str:
        return f"{self.method} of {self.item} for class {self.target_index}"


class MethodCheck(models.Model):
    """A per-method, per-model sanity check stored beside the human results.

    ``name`` is ``model_randomisation`` (Adebayo et al., NeurIPS 2018) or
    ``input_invariance`` (Kindermans et al., 2017); ``result`` holds the check's numbers
    (``explanations.evaluation`` dataclasses as dicts); ``passed`` its verdict.
    """

    model = models.ForeignKey(ClassifierModel, on_delete=models.CASCADE, related_name="+")
    method = models.CharField(max_length=50)
    params_key = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=40, help_text="model_randomisation | input_invariance")
    item = models.ForeignKey(Item, on_delete=models.SET_NULL, null=True, related_name="+")
    passed = models.BooleanField(null=True)
    result = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model_id", "method", "name", "-created_at"]

    def __str__(self) -> str:
        return f"{self.name} of {self.method} on {self.model}: {self.passed}"
