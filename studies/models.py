"""Studies, their trials, participants and responses.

Everything a participant does is stored here as it happens, so a reload resumes at the same
trial and nothing is kept only in the browser (HIVE kept all state in page JavaScript).
Fields marked *server only* are never put in a participant's page, API payload or URL.
"""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from explanations.models import ClassifierModel, Dataset, Item


def _completion_code() -> str:
    return secrets.token_hex(4).upper()


def _simulation_key() -> str:
    return secrets.token_urlsafe(16)


class StudyStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"


class TaskType(models.TextChoices):
    AGREEMENT = "agreement", "Agreement"
    DISTINCTION = "distinction", "Distinction"


class Study(models.Model):
    """A study: a frozen design (``spec``) over one model's explanations of one dataset."""

    slug = models.SlugField(max_length=80, unique=True)
    title = models.CharField(max_length=200)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="studies"
    )
    status = models.CharField(max_length=20, choices=StudyStatus.choices, default=StudyStatus.DRAFT)
    model = models.ForeignKey(ClassifierModel, on_delete=models.PROTECT, related_name="+")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="+")
    method = models.CharField(max_length=50, default="gradcam")
    spec = models.JSONField(default=dict, help_text="The design as launched (frozen).")
    completion_code = models.CharField(max_length=32, default=_completion_code)
    max_participants = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Places; empty = unlimited. Declined consent frees a place.",
    )
    simulation_key = models.CharField(
        max_length=64,
        default=_simulation_key,
        help_text="Secret that marks simulated participants.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return self.title

    @property
    def is_open(self) -> bool:
        return self.status == StudyStatus.OPEN


class Trial(models.Model):
    """One screen of the study: a task type applied to one item.

    ``options`` is the public list of choices in display order, each
    ``{"value": str, "label": str}`` plus ``"image"`` (a stimulus slot) for distinction
    candidates. ``stimuli`` maps slot names to files under MEDIA_ROOT. The answer key
    (``correct_value``), ``true_index`` and ``model_correct`` are server only.
    """

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="trials")
    index = models.PositiveIntegerField()
    block = models.PositiveSmallIntegerField(default=0, help_text="Blocks are shown in order.")
    task_type = models.CharField(max_length=20, choices=TaskType.choices)
    item = models.ForeignKey(Item, on_delete=models.PROTECT, related_name="+")
    predicted_index = models.IntegerField()
    predicted_label = models.CharField(max_length=200)
    true_index = models.IntegerField()  # server only
    model_correct = models.BooleanField()  # server only
    options = models.JSONField()
    option_classes = models.JSONField(default=dict)  # server only: value -> class index
    correct_value = models.CharField(max_length=32, blank=True)  # server only (distinction)
    stimuli = models.JSONField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["study", "index"], name="trial_unique_index")
        ]
        ordering = ["study_id", "index"]

    def __str__(self) -> str:
        return f"{self.study.slug} #{self.index} {self.task_type} {self.item.name}"


class ParticipantStage(models.TextChoices):
    CONSENT = "consent", "Consent"
    INSTRUCTIONS = "instructions", "Instructions"
    TRIALS = "trials", "Trials"
    DEBRIEF = "debrief", "Debrief"
    DECLINED = "declined", "Declined consent"
    FULL = "full", "Study full at consent"


class Participant(models.Model):
    """One person (or bot) taking a study; ``token`` in the URL is their only credential."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="participants")
    token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    stage = models.CharField(
        max_length=20, choices=ParticipantStage.choices, default=ParticipantStage.CONSENT
    )
    task = models.CharField(
        max_length=20, choices=TaskType.choices, blank=True, help_text="Between-subjects task."
    )
    trial_order = models.JSONField(default=list, help_text="Trial ids in this participant's order.")
    # Answers stored so far = position of the current trial. Kept in the same transaction as
    # each Response insert (compare-and-set), so the hot path needs no count query.
    progress = models.PositiveIntegerField(default=0)
    prolific_pid = models.CharField(max_length=64, blank=True)
    prolific_study_id = models.CharField(max_length=64, blank=True)
    prolific_session_id = models.CharField(max_length=64, blank=True)
    is_simulated = models.BooleanField(default=False)
    bot_policy = models.CharField(max_length=50, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)
    feedback = models.TextField(blank=True, help_text="Free text from the debrief, as typed.")
    created_at = models.DateTimeField(default=timezone.now)
    consented_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["study", "prolific_pid"],
                condition=~Q(prolific_pid=""),
                name="participant_unique_prolific_pid",
            )
        ]

    def __str__(self) -> str:
        return f"{self.study.slug}/{self.token}"

    @property
    def public_id(self) -> str:
        """Short pseudonymous id for exports (never the token, which is a credential)."""
        return f"P{self.pk:05d}"


class Response(models.Model):
    """A participant's answer to one trial; at most one per participant and trial."""

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="responses")
    trial = models.ForeignKey(Trial, on_delete=models.CASCADE, related_name="responses")
    position = models.PositiveIntegerField(help_text="0-based place in the participant's order.")
    answer = models.CharField(max_length=32)
    is_correct = models.BooleanField()
    rt_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Response time, ms.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["participant", "trial"], name="response_unique")
        ]
        ordering = ["participant_id", "position"]

    def __str__(self) -> str:
        return f"{self.participant.public_id} #{self.position}: {self.answer}"
