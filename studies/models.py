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


def _crowd_salt() -> str:
    return secrets.token_hex(16)


class StudyStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    OPEN = "open", "Open"
    PAUSED = "paused", "Paused"
    CLOSED = "closed", "Closed"


class TaskType(models.TextChoices):
    """Every task type; the behaviour of each lives in :mod:`studies.tasktypes`."""

    AGREEMENT = "agreement", "Agreement"
    DISTINCTION = "distinction", "Distinction"
    OUTPUT_PREDICTION = "output_prediction", "Output prediction"
    SIMILARITY = "similarity", "Prototype-region similarity"
    REGION_ANNOTATION = "region_annotation", "Region annotation"
    FREE_TEXT = "free_text", "Free text"
    LIKERT_UNDERSTANDING = "likert_understanding", "Self-rated understanding"
    TRADEOFF = "tradeoff", "Interpretability-accuracy trade-off"
    DEMOGRAPHICS = "demographics", "Demographics"
    HUMAN_OR_MACHINE = "human_or_machine", "Human or machine text (GLTR)"


class TrialKind(models.TextChoices):
    MAIN = "main", "Main trial"
    PRACTICE = "practice", "Practice (with feedback)"
    ATTENTION = "attention", "Attention check"
    SURVEY = "survey", "Questionnaire"


class CrowdSource(models.TextChoices):
    PUBLIC = "", "Public link"
    PROLIFIC = "prolific", "Prolific"
    MTURK = "mturk", "MTurk"
    CLASSROOM = "classroom", "Classroom"


class Study(models.Model):
    """A study: a frozen design (``spec``) over one model's explanations of one dataset."""

    slug = models.SlugField(max_length=80, unique=True)
    title = models.CharField(max_length=200)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="studies"
    )
    status = models.CharField(max_length=20, choices=StudyStatus.choices, default=StudyStatus.DRAFT)
    model = models.ForeignKey(
        ClassifierModel,
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
        help_text="The classifier explained (image studies); empty for text studies.",
    )
    language_model = models.CharField(
        max_length=300, blank=True, help_text="Text studies: the language model of GLTR."
    )
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
    crowd_salt = models.CharField(
        max_length=64, default=_crowd_salt, help_text="Salt of the hashed crowd ids."
    )
    join_code = models.CharField(
        max_length=12, null=True, blank=True, unique=True, help_text="Classroom join code."
    )
    created_at = models.DateTimeField(default=timezone.now)
    launched_at = models.DateTimeField(null=True, blank=True, help_text="Spec frozen since.")

    class Meta:
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return self.title

    @property
    def is_open(self) -> bool:
        """Accepting new participants."""
        return self.status == StudyStatus.OPEN

    @property
    def accepts_answers(self) -> bool:
        """Participants who started may go on (open, or paused for new arrivals only)."""
        return self.status in (StudyStatus.OPEN, StudyStatus.PAUSED)

    @property
    def recruitment(self) -> dict:
        return self.spec.get("recruitment") or {}


class Trial(models.Model):
    """One screen of the study: a task type applied to one item (or a questionnaire page).

    ``arm`` is the group of participants who may get it (between-subjects cell or Latin-square
    row; blank = every arm); ``condition`` the explanation condition it shows. ``options`` is
    the public list of choices in display order, each ``{"value": str, "label": str}`` plus
    ``"image"`` (a stimulus slot) for candidates with heatmaps. ``stimuli`` maps slot names to
    files under MEDIA_ROOT; ``config`` holds public wording (title, question, help, attention
    instruction). The answer key (``correct_value``, ``option_classes``), ``true_index`` and
    ``model_correct`` are server only.
    """

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="trials")
    index = models.PositiveIntegerField()
    block = models.PositiveSmallIntegerField(default=0, help_text="Blocks are shown in order.")
    kind = models.CharField(max_length=12, choices=TrialKind.choices, default=TrialKind.MAIN)
    arm = models.CharField(max_length=80, blank=True, db_index=True)
    condition = models.CharField(max_length=50, blank=True)
    task_type = models.CharField(max_length=30, choices=TaskType.choices)
    item = models.ForeignKey(Item, on_delete=models.PROTECT, related_name="+", null=True)
    predicted_index = models.IntegerField(null=True)
    predicted_label = models.CharField(max_length=200, blank=True)
    true_index = models.IntegerField(null=True)  # server only
    model_correct = models.BooleanField(null=True)  # server only
    options = models.JSONField(default=list)
    option_classes = models.JSONField(default=dict)  # server only: value -> class index
    correct_value = models.CharField(max_length=32, blank=True)  # server only
    stimuli = models.JSONField(default=dict)
    config = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["study", "index"], name="trial_unique_index")
        ]
        ordering = ["study_id", "index"]

    def __str__(self) -> str:
        return f"{self.study.slug} #{self.index} {self.kind} {self.task_type} {self.item_id}"


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
    arm = models.CharField(
        max_length=80, blank=True, help_text="Between-subjects cell / Latin-square row."
    )
    order_seed = models.BigIntegerField(null=True, blank=True, help_text="Seed of trial_order.")
    trial_order = models.JSONField(default=list, help_text="Trial ids in this participant's order.")
    # Answers stored so far = position of the current trial. Kept in the same transaction as
    # each Response insert (compare-and-set), so the hot path needs no count query.
    progress = models.PositiveIntegerField(default=0)
    # When the current trial was first served (server time): copied onto its response.
    shown_position = models.IntegerField(null=True, blank=True)
    shown_at = models.DateTimeField(null=True, blank=True)
    crowd_source = models.CharField(
        max_length=12, choices=CrowdSource.choices, blank=True, default=CrowdSource.PUBLIC
    )
    crowd_id_hash = models.CharField(
        max_length=64, blank=True, help_text="SHA-256 of the study's salt and the crowd id."
    )
    prolific_study_id = models.CharField(max_length=64, blank=True)
    prolific_session_id = models.CharField(max_length=64, blank=True)
    mturk_assignment_id = models.CharField(max_length=64, blank=True)
    mturk_hit_id = models.CharField(max_length=64, blank=True)
    mturk_submit_to = models.CharField(max_length=100, blank=True)
    roster_name = models.CharField(max_length=100, blank=True, help_text="Classroom roster entry.")
    is_simulated = models.BooleanField(default=False)
    is_preview = models.BooleanField(default=False, help_text="A researcher's preview.")
    bot_policy = models.CharField(max_length=50, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)
    feedback = models.TextField(blank=True, help_text="Free text from the debrief, as typed.")
    created_at = models.DateTimeField(default=timezone.now)
    consented_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["study", "crowd_source", "crowd_id_hash"],
                condition=~Q(crowd_id_hash=""),
                name="participant_unique_crowd_id",
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
    answer = models.TextField(help_text="Choice value, text as typed, or JSON; '' = timed out.")
    data = models.JSONField(default=dict, help_text="Structured answer (sliders, mask file...).")
    is_correct = models.BooleanField(null=True, help_text="None: not scored (ratings, text).")
    rt_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="Client-measured response time, ms."
    )
    shown_at = models.DateTimeField(null=True, blank=True, help_text="Server time first shown.")
    tab_hidden = models.BooleanField(default=False, help_text="Tab hidden while on the trial.")
    hidden_ms = models.PositiveIntegerField(null=True, blank=True)
    timed_out = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, help_text="Server time answered.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["participant", "trial"], name="response_unique")
        ]
        ordering = ["participant_id", "position"]

    def __str__(self) -> str:
        return f"{self.participant.public_id} #{self.position}: {self.answer}"
