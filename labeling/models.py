"""Label versions, cross-fitted training runs, curation queues and the curators' decision log.

Following Bäuerle, Neumann & Ropinski, "Classifier-Guided Visual Correction of Noisy Labels for
Image Classification Tasks", CGF 39(3) (2020): a classifier trained on the (noisy) labels ranks
the items whose labels are most likely wrong, curators work through them, and every decision is
kept. The ranking scores follow confident learning (Northcutt et al., JAIR 70, 2021) on
out-of-sample predicted probabilities (:mod:`labeling.quality`, :mod:`labeling.training`).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from explanations.models import ClassifierModel, Dataset, Item


class LabelVersion(models.Model):
    """One complete set of labels of a dataset. Versions are never changed after creation.

    Version 1 is the labels as imported (``Item.label_index``); a curation project's
    corrections become a new version whose ``parent`` is the version the project started from.
    """

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="label_versions")
    number = models.PositiveIntegerField()
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    source = models.CharField(
        max_length=20,
        choices=[("import", "As imported"), ("curation", "Curation"), ("upload", "Uploaded file")],
    )
    note = models.TextField(blank=True)
    provenance = models.JSONField(default=dict, blank=True)
    changed = models.PositiveIntegerField(
        default=0, help_text="Items relabelled relative to the parent (removals not counted)."
    )
    removed = models.PositiveIntegerField(default=0, help_text="Items without a label here.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="label_version_unique"),
        ]
        ordering = ["dataset_id", "number"]

    def __str__(self) -> str:
        return f"{self.dataset.name} labels v{self.number}"


class ItemLabel(models.Model):
    """An item's label in one version; ``label_index`` null = removed from this version."""

    version = models.ForeignKey(LabelVersion, on_delete=models.CASCADE, related_name="labels")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="+")
    label_index = models.IntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "item"], name="item_label_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.item_id}: {self.label_index} (v{self.version_id})"


class RunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Architecture(models.TextChoices):
    CNN = "cnn", "Small CNN, cross-fitted (label correction)"
    PROTOPNET = "protopnet", "ProtoPNet (prototype explanations)"
    CBM = "cbm", "Concept-bottleneck model (concept explanations)"


class TrainingRun(models.Model):
    """A model trained on one label version.

    ``architecture`` "cnn": the small CNN cross-fitted (:func:`labeling.training.cross_fit`).
    Files (media storage): ``item_ids`` int64 ``(N,)`` (the training items, in the order of the
    arrays), ``pred_probs`` float32 ``(N, K)`` out-of-sample probabilities, ``embeddings``
    float32 ``(N, D)`` from the final model, ``weights`` the final model (safetensors).

    "protopnet" / "cbm": one model on the whole training split
    (:func:`explanations.prototypes.protopnet.train_protopnet`,
    :func:`explanations.concepts.cbm.train_cbm` with the ``attributes`` table), ``weights``
    only; registered as a classifier whose explanation methods are ``prototypes`` /
    ``concepts``.
    """

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="training_runs")
    label_version = models.ForeignKey(
        LabelVersion, on_delete=models.PROTECT, related_name="training_runs"
    )
    architecture = models.CharField(
        max_length=12, choices=Architecture.choices, default=Architecture.CNN
    )
    config = models.JSONField(default=dict, blank=True)
    attributes = models.JSONField(
        default=dict,
        blank=True,
        help_text="Concept-bottleneck runs: the class -> concept table "
        "({classes, concepts, matrix, descriptions}).",
    )
    train_split = models.CharField(max_length=30, default="train")
    test_split = models.CharField(max_length=30, default="test", blank=True)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.PENDING)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    message = models.CharField(max_length=200, blank=True)
    num_items = models.PositiveIntegerField(default=0)
    fold_accuracy = models.JSONField(default=list, blank=True)
    test_accuracy = models.FloatField(null=True, blank=True)
    test_items = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(null=True, blank=True)
    item_ids = models.FileField(upload_to="labeling/runs/", blank=True)
    pred_probs = models.FileField(upload_to="labeling/runs/", blank=True)
    embeddings = models.FileField(upload_to="labeling/runs/", blank=True)
    weights = models.FileField(upload_to="labeling/runs/", blank=True)
    weights_sha256 = models.CharField(max_length=64, blank=True)
    classifier = models.ForeignKey(
        ClassifierModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"training run {self.pk} on {self.dataset.name} v{self.label_version.number}"

    @property
    def is_finished(self) -> bool:
        return self.status in (RunStatus.SUCCEEDED, RunStatus.FAILED)

    @property
    def progress(self) -> float:
        return self.done / self.total if self.total else 0.0


class Score(models.TextChoices):
    SELF_CONFIDENCE = "self_confidence", "Self-confidence p(given label)"
    NORMALIZED_MARGIN = "normalized_margin", "Normalised margin"


class Scope(models.TextChoices):
    FLAGGED = "flagged", "Flagged items only (confident learning)"
    ALL = "all", "Every item, lowest score first"


class CurationProject(models.Model):
    """A queue of items to review, ranked by how likely each label is wrong.

    ``overlap`` curators review each entry (round-robin over ``curators`` in id order); their
    standing decisions give a consensus label and Krippendorff's alpha.
    """

    name = models.CharField(max_length=200)
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(TrainingRun, on_delete=models.PROTECT, related_name="projects")
    label_version = models.ForeignKey(LabelVersion, on_delete=models.PROTECT, related_name="+")
    score = models.CharField(max_length=30, choices=Score.choices, default=Score.SELF_CONFIDENCE)
    method = models.CharField(
        max_length=30,
        default="confident_learning",
        help_text="Filter of labeling.quality.find_label_issues that flags items.",
    )
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.FLAGGED)
    overlap = models.PositiveSmallIntegerField(default=1)
    curators = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="curation_projects")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.PENDING)
    message = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    summary = models.JSONField(default=dict, blank=True, help_text="Counts, class pairs, joint.")
    result_version = models.ForeignKey(
        LabelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_ready(self) -> bool:
        return self.status == RunStatus.SUCCEEDED


class QueueEntry(models.Model):
    """One item in a project's queue, with everything the curator is shown about it.

    ``rank`` 0 is the most likely wrong; ``score`` in [0, 1] (lower = more likely wrong);
    ``suggested_label`` −1 when the item reached no class threshold; ``top3`` is a list of
    ``{"index", "probability"}``; ``neighbours`` maps ``"given"`` / ``"suggested"`` to item ids
    nearest in the final model's embedding space; ``x``/``y`` its 2-D projection (or null).
    """

    project = models.ForeignKey(CurationProject, on_delete=models.CASCADE, related_name="entries")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="+")
    rank = models.PositiveIntegerField()
    score = models.FloatField()
    given_label = models.IntegerField()
    suggested_label = models.IntegerField(default=-1)
    predicted_label = models.IntegerField(default=-1)
    flagged = models.BooleanField(default=False)
    issue_type = models.CharField(max_length=20, blank=True)
    top3 = models.JSONField(default=list)
    neighbours = models.JSONField(default=dict)
    near_duplicates = models.JSONField(default=list, blank=True)
    x = models.FloatField(null=True, blank=True)
    y = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "item"], name="queue_entry_unique"),
        ]
        indexes = [models.Index(fields=["project", "rank"])]
        ordering = ["project_id", "rank"]

    def __str__(self) -> str:
        return f"#{self.rank} {self.item_id} in {self.project_id}"


class Assignment(models.Model):
    """An entry assigned to one curator; ``decision`` points at their standing decision."""

    entry = models.ForeignKey(QueueEntry, on_delete=models.CASCADE, related_name="assignments")
    curator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    rank = models.PositiveIntegerField(help_text="Copy of the entry's rank for the queue order.")
    decision = models.ForeignKey(
        "Decision", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["entry", "curator"], name="assignment_unique"),
        ]
        indexes = [models.Index(fields=["curator", "rank"])]
        ordering = ["rank"]

    def __str__(self) -> str:
        return f"entry {self.entry_id} for curator {self.curator_id}"


class Action(models.TextChoices):
    RELABEL = "relabel", "Relabel"
    KEEP = "keep", "Keep the given label"
    REMOVE = "remove", "Remove from the dataset"
    UNSURE = "unsure", "Unsure"
    UNDO = "undo", "Undo"


class DecisionLogError(RuntimeError):
    """Raised on an attempt to change or delete a logged decision."""


class Decision(models.Model):
    """One curator action, appended to the log and never changed or deleted.

    ``from_label`` is the given label of the entry's base version; ``to_label`` the new label
    (relabel), the given label (keep) or null (remove, unsure). An ``undo`` row points at the
    decision it withdraws (``undoes``). ``shown`` records what the curator saw: view, rank,
    score, top-3, the Grad-CAM targets and the neighbour ids.
    """

    project = models.ForeignKey(CurationProject, on_delete=models.PROTECT, related_name="decisions")
    entry = models.ForeignKey(QueueEntry, on_delete=models.PROTECT, related_name="decisions")
    curator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=10, choices=Action.choices)
    from_label = models.IntegerField(null=True, blank=True)
    to_label = models.IntegerField(null=True, blank=True)
    undoes = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="undone_by"
    )
    shown = models.JSONField(default=dict, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.curator_id} {self.action} entry {self.entry_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise DecisionLogError("a logged decision is never changed; log a new one")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise DecisionLogError("a logged decision is never deleted; log an undo")
