"""Services of the studies app: create studies, enrol participants, record responses."""

from __future__ import annotations

import hashlib
import io
import random
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from . import design
from .design import StudyDesignError
from .models import (
    CrowdSource,
    Participant,
    ParticipantStage,
    Response,
    Study,
    StudyStatus,
    TaskType,
    Trial,
    TrialKind,
)
from .tasktypes import Answer, InvalidAnswer, answer_score, answer_validate


class StudyClosed(Exception):
    """The study is not accepting participants or answers."""


class StudyFull(StudyClosed):
    """Every place of the study is taken."""


class TrialOutOfOrder(Exception):
    """An answer was posted for a trial that is not the participant's current one."""


# --- design ---------------------------------------------------------------------------------


def study_create_hive(
    *,
    title: str,
    owner,
    model,
    dataset,
    method: str = "gradcam",
    tasks: tuple[str, ...] = (TaskType.AGREEMENT, TaskType.DISTINCTION),
    seed: int = 0,
    open_now: bool = True,
) -> Study:
    """A HIVE study (Kim et al., ECCV 2022, Sec. 4): one explanation method, the given tasks
    between subjects (each participant does one, as HIVE ran agreement and distinction as
    separate studies), every usable item once per task, random order.

    A shortcut for :func:`studies.design.study_create` with the spec it builds.

    Raises:
        StudyDesignError: no usable item (no labelled item with prediction and explanations).
    """
    spec = {
        "version": 1,
        "title": title,
        "model": model.name,
        "dataset": dataset.name,
        "conditions": [{"name": method, "method": method}],
        "tasks": [{"type": str(t)} for t in tasks],
        "task_assignment": "between",
        "trials": {"seed": seed},
    }
    return design.study_create(spec=spec, owner=owner, open_now=open_now)


def study_close(*, study: Study) -> Study:
    """Stop accepting new participants and answers."""
    study.status = StudyStatus.CLOSED
    study.save(update_fields=["status"])
    return study


def study_pause(*, study: Study) -> Study:
    """Stop new participants; those who started may finish. :func:`study_resume` reopens.

    Raises:
        StudyClosed: the study is not open.
    """
    if study.status != StudyStatus.OPEN:
        raise StudyClosed(f"only an open study can be paused (this one is {study.status})")
    study.status = StudyStatus.PAUSED
    study.save(update_fields=["status"])
    return study


def study_resume(*, study: Study) -> Study:
    """Reopen a paused study.

    Raises:
        StudyClosed: the study is not paused.
    """
    if study.status != StudyStatus.PAUSED:
        raise StudyClosed(f"only a paused study can be resumed (this one is {study.status})")
    study.status = StudyStatus.OPEN
    study.save(update_fields=["status"])
    return study


def study_pages_per_participant(study: Study) -> int:
    """Pages one participant sees (trials, practice, checks, questionnaires), from the spec:
    for the consent text before the order is drawn and for the researcher pages."""
    spec = study.spec
    trials = spec.get("trials") or {}
    per_task = (
        (trials.get("model_correct") or 0) + (trials.get("model_incorrect") or 0)
        or trials.get("per_participant")
        or len((spec.get("resolved") or {}).get("main_items", []))
    )
    tasks = 1 if spec.get("task_assignment", "between") == "between" else len(spec.get("tasks", []))
    extra = trials.get("practice", 0) + trials.get("attention_checks", 0)
    return tasks * (per_task + extra) + len(spec.get("questionnaires", []))


# --- participants ---------------------------------------------------------------------------


def crowd_id_hash(study: Study, source: str, crowd_id: str) -> str:
    """SHA-256 (hex, 64 chars) of the study's salt, the source and the crowd id: the stored
    form of Prolific / MTurk worker ids and classroom roster entries (never stored raw)."""
    return hashlib.sha256(f"{study.crowd_salt}:{source}:{crowd_id}".encode()).hexdigest()


def participant_enroll(
    *,
    study: Study,
    crowd_source: str = CrowdSource.PUBLIC,
    crowd_id: str = "",
    prolific_pid: str = "",
    prolific_study_id: str = "",
    prolific_session_id: str = "",
    mturk_assignment_id: str = "",
    mturk_hit_id: str = "",
    mturk_submit_to: str = "",
    roster_name: str = "",
    is_simulated: bool = False,
    is_preview: bool = False,
    bot_policy: str = "",
    user_agent: str = "",
    consented: bool = False,
) -> tuple[Participant, bool]:
    """Enrol a participant, or return the existing one for the same crowd id (a returning
    Prolific PID, MTurk worker or roster entry resumes and is never duplicated).

    ``prolific_pid`` is a shortcut for ``crowd_source="prolific", crowd_id=pid``. Crowd ids
    are stored hashed (:func:`crowd_id_hash`). The arm and trial order are assigned at consent
    (:func:`participant_consent`) and stored, so a reload resumes where the participant was.
    ``consented=True`` records consent at enrolment. Previews (``is_preview``) work on draft
    studies too and never take a place.

    Returns:
        (participant, created).

    Raises:
        StudyClosed: the study is not open (draft, paused or closed) and this is not a
            returning crowd id of a paused study.
        StudyFull: every place is taken by a consented participant.
    """
    if prolific_pid:
        crowd_source, crowd_id = CrowdSource.PROLIFIC, prolific_pid
    crowd_id = crowd_id.strip()[:200]
    hashed = crowd_id_hash(study, crowd_source, crowd_id) if crowd_id else ""
    if hashed and study.accepts_answers:  # a returning crowd id resumes, also while paused
        existing = Participant.objects.filter(
            study=study, crowd_source=crowd_source, crowd_id_hash=hashed
        ).first()
        if existing:
            if mturk_assignment_id and existing.mturk_assignment_id != mturk_assignment_id:
                Participant.objects.filter(pk=existing.pk).update(
                    mturk_assignment_id=mturk_assignment_id[:64],
                    mturk_hit_id=mturk_hit_id[:64],
                    mturk_submit_to=mturk_submit_to[:100],
                )
                existing.refresh_from_db()
            return existing, False
    if not is_preview and not study.is_open:
        raise StudyClosed("this study is not accepting participants")
    if not is_preview and _places_left(study) == 0:
        raise StudyFull("all places in this study are taken")
    try:
        with transaction.atomic():
            participant = Participant.objects.create(
                study=study,
                crowd_source=crowd_source,
                crowd_id_hash=hashed,
                prolific_study_id=prolific_study_id.strip()[:64],
                prolific_session_id=prolific_session_id.strip()[:64],
                mturk_assignment_id=mturk_assignment_id.strip()[:64],
                mturk_hit_id=mturk_hit_id.strip()[:64],
                mturk_submit_to=mturk_submit_to.strip()[:100],
                roster_name=roster_name.strip()[:100],
                is_simulated=is_simulated or is_preview,
                is_preview=is_preview,
                bot_policy=("preview" if is_preview else bot_policy)[:50],
                user_agent=user_agent[:400],
            )
    except IntegrityError:  # the same crowd id arrived twice at once
        return (
            Participant.objects.get(study=study, crowd_source=crowd_source, crowd_id_hash=hashed),
            False,
        )
    if consented:
        participant = participant_consent(participant=participant, agree=True)
    return participant, True


def _consented(study: Study):
    """Participants holding a place: consented, not withdrawn, not a researcher's preview."""
    return study.participants.filter(consented_at__isnull=False, is_preview=False).exclude(
        stage=ParticipantStage.DECLINED
    )


def _places_left(study: Study) -> int | None:
    """Free places (None = unlimited). A place is taken at consent, so link previews and
    people who never consent take none."""
    if study.max_participants is None:
        return None
    return max(0, study.max_participants - _consented(study).count())


def study_arms(study: Study) -> list[str]:
    """The study's arms in tie-break order."""
    arms = (study.spec.get("resolved") or {}).get("arms")
    if arms:
        return list(arms)
    return sorted(set(study.trials.exclude(arm="").values_list("arm", flat=True)))


def _arm_assign(study: Study) -> str:
    """The least filled arm (ties: spec order), counting completed participants and those
    still active (consented within ``recruitment.active_timeout_min``, default 60 minutes);
    abandoned participants stop counting, so an arm they left is refilled. Called under the
    study-row lock, so concurrent arrivals are counted exactly.

    Each participant does one arm: between-subjects conditions/tasks (someone who had seen
    the model's prediction in the agreement task would know which distinction candidate the
    model picked), or a Latin-square row of the within-subjects conditions.
    """
    arms = study_arms(study)
    timeout = (study.spec.get("recruitment") or {}).get("active_timeout_min", 60)
    cutoff = timezone.now() - timedelta(minutes=timeout)
    counts = dict.fromkeys(arms, 0)
    filled = (
        _consented(study)
        .filter(Q(completed_at__isnull=False) | Q(consented_at__gte=cutoff))
        .values_list("arm")
        .annotate(n=Count("id"))
    )
    for arm, n in filled:
        if arm in counts:
            counts[arm] = n
    return min(arms, key=lambda a: (counts[a], arms.index(a)))


def participant_consent(*, participant: Participant, agree: bool) -> Participant:
    """Record consent or refusal. Idempotent.

    Consent takes a place: under a lock on the study row (so two people racing for the last
    place, or for the less filled arm, are counted exactly) the place is checked, the arm
    assigned (:func:`_arm_assign`) and the trial order drawn with a recorded seed
    (:func:`studies.design.trial_order_draw`); the participant moves to the instructions. When
    no place is left the participant moves to stage "full". Refusal moves to "declined".
    """
    with transaction.atomic():
        locked_study = Study.objects.select_for_update().get(pk=participant.study_id)
        participant = Participant.objects.select_for_update().get(pk=participant.pk)
        if participant.stage != ParticipantStage.CONSENT:
            return participant
        if not agree:
            participant.stage = ParticipantStage.DECLINED
            participant.save(update_fields=["stage"])
            return participant
        if not participant.is_preview and _places_left(locked_study) == 0:
            participant.stage = ParticipantStage.FULL
            participant.save(update_fields=["stage"])
            return participant
        participant.arm = _arm_assign(locked_study)
        participant.order_seed = random.SystemRandom().randrange(2**31)
        participant.trial_order = design.trial_order_draw(
            locked_study, participant.arm, participant.order_seed
        )
        participant.stage = ParticipantStage.INSTRUCTIONS
        participant.consented_at = timezone.now()
        participant.save(
            update_fields=["arm", "order_seed", "trial_order", "stage", "consented_at"]
        )
    return participant


FEEDBACK_MAX_CHARS = 5000


def participant_feedback(*, participant: Participant, text: str) -> Participant:
    """Store the participant's free-text comment exactly as typed (debrief stage only).

    Raises:
        StudyClosed: the participant has not finished the trials.
        ValueError: longer than :data:`FEEDBACK_MAX_CHARS`.
    """
    if len(text.replace("\r\n", "\n")) > FEEDBACK_MAX_CHARS:  # browsers send CRLF
        raise ValueError(f"please keep comments under {FEEDBACK_MAX_CHARS} characters")
    if participant.stage != ParticipantStage.DEBRIEF:
        raise StudyClosed("comments can be left at the end of the study")
    Participant.objects.filter(pk=participant.pk).update(feedback=text)
    participant.feedback = text
    return participant


def participant_instructions_done(*, participant: Participant) -> Participant:
    """Move from instructions to the first trial. Idempotent."""
    with transaction.atomic():
        participant = Participant.objects.select_for_update().get(pk=participant.pk)
        if participant.stage == ParticipantStage.INSTRUCTIONS:
            participant.stage = ParticipantStage.TRIALS
            participant.save(update_fields=["stage"])
    return participant


_TRIAL_CACHE: OrderedDict[tuple[int, str], dict[int, Trial]] = OrderedDict()
_TRIAL_CACHE_LOCK = threading.Lock()
_TRIAL_CACHE_STUDIES = 64


def study_trials(study: Study, *, need: int | None = None) -> dict[int, Trial]:
    """All trials of a study by id, cached per process (trials never change once a study is
    launched; the key includes the study's creation time, so a reused id is a different key).
    A draft's trials are rebuilt when its spec is edited: a miss on ``need`` reloads."""
    key = (study.pk, study.created_at.isoformat())
    with _TRIAL_CACHE_LOCK:
        trials = _TRIAL_CACHE.get(key)
        if trials is not None and (need is None or need in trials):
            _TRIAL_CACHE.move_to_end(key)
            return trials
    trials = {t.pk: t for t in Trial.objects.filter(study_id=study.pk)}
    with _TRIAL_CACHE_LOCK:
        _TRIAL_CACHE[key] = trials
        while len(_TRIAL_CACHE) > _TRIAL_CACHE_STUDIES:
            _TRIAL_CACHE.popitem(last=False)
    return trials


def trial_current(*, participant: Participant) -> tuple[int, Trial] | None:
    """The participant's current (first unanswered) trial with its 0-based position."""
    if participant.stage != ParticipantStage.TRIALS:
        return None
    position = participant.progress
    if position >= len(participant.trial_order):
        return None
    trial_id = participant.trial_order[position]
    return position, study_trials(participant.study, need=trial_id)[trial_id]


def trial_shown(*, participant: Participant, position: int) -> None:
    """Record when the trial at ``position`` was first served (server time). Later views of
    the same trial (reloads) keep the first time. ``participant`` is updated in place."""
    if participant.shown_position == position:
        return
    now = timezone.now()
    Participant.objects.filter(pk=participant.pk, progress=position).update(
        shown_position=position, shown_at=now
    )
    participant.shown_position, participant.shown_at = position, now


def time_limit_s(study: Study, trial: Trial) -> float | None:
    """Seconds allowed on a trial (spec ``trials.time_limit_s``; questionnaires have none)."""
    if trial.kind == TrialKind.SURVEY:
        return None
    return (study.spec.get("trials") or {}).get("time_limit_s")


TIMEOUT_GRACE_S = 2.0


@dataclass(frozen=True)
class SubmitResult:
    """The stored response and whether this call stored it."""

    response: Response
    created: bool


def response_submit(
    *,
    participant: Participant,
    position: int,
    answer,
    rt_ms: int | None = None,
    tab_hidden: bool = False,
    hidden_ms: int | None = None,
    timed_out: bool = False,
) -> SubmitResult:
    """Store the answer to the trial at ``position`` exactly once.

    Answers are taken in order: ``position`` must equal the participant's ``progress``. The
    insert and a compare-and-set of ``progress`` (position -> position + 1) commit together,
    so of two concurrent posts of the same answer one stores it and the other returns the
    stored row, and a repeat (double click, back button, retry) changes nothing: the first
    answer stands. The last answer moves the participant to the debrief in the same
    transaction. ``participant`` is updated in place.

    ``answer`` is what the task type's plugin accepts (a choice value, text, or a dict for
    sliders, questionnaires and regions). ``timed_out`` records an empty answer when the
    trial's time limit has passed (the page auto-advances); it is refused before that.
    Response time: ``rt_ms`` as measured by the client, clamped to 0..24 h; ``shown_at`` is
    the server time the trial was first served; ``tab_hidden`` / ``hidden_ms`` whether and
    how long the tab was hidden meanwhile.

    Raises:
        StudyClosed: the study is closed or the participant is not in the trial stage.
        TrialOutOfOrder: ``position`` is ahead of the current trial, or invalid.
        InvalidAnswer: the plugin refused the answer (or a timeout came too early).
    """
    if not participant.study.accepts_answers and not participant.is_preview:
        raise StudyClosed("this study is closed")
    if participant.stage not in (ParticipantStage.TRIALS, ParticipantStage.DEBRIEF):
        raise StudyClosed("answers are not being accepted at this stage")
    order = participant.trial_order
    if not 0 <= position < len(order):
        raise TrialOutOfOrder(f"there is no trial {position + 1}")
    if position < participant.progress:
        return SubmitResult(_response_stored(participant, order[position]), False)
    if position > participant.progress or participant.stage != ParticipantStage.TRIALS:
        raise TrialOutOfOrder("please answer the current trial first")
    trial = study_trials(participant.study, need=order[position])[order[position]]
    now = timezone.now()
    shown_at = participant.shown_at if participant.shown_position == position else None
    if timed_out:
        limit = time_limit_s(participant.study, trial)
        if limit is None:
            raise InvalidAnswer("this trial has no time limit")
        if shown_at and (now - shown_at).total_seconds() < limit - TIMEOUT_GRACE_S:
            raise InvalidAnswer("there is still time left for this trial")
        value, is_correct = Answer(""), None
    else:
        value = answer_validate(trial, answer)
        is_correct = answer_score(trial, value)
    rt = None if rt_ms is None else max(0, min(int(rt_ms), 24 * 3600 * 1000))
    hidden = None if hidden_ms is None else max(0, min(int(hidden_ms), 24 * 3600 * 1000))
    data = dict(value.data)
    mask_name = None
    if value.mask is not None:
        mask_name = _mask_save(participant, position, value.mask)
        data["mask"] = mask_name
    completes = position + 1 == len(order)
    # The next trial goes out with this answer's reply (API) or its redirect (pages): it is
    # "shown" now, recorded in the same UPDATE (no extra query on the hot path).
    changes = {"progress": position + 1, "shown_position": position + 1, "shown_at": now}
    if completes:
        changes.update(stage=ParticipantStage.DEBRIEF, completed_at=now)
    try:
        with transaction.atomic():
            claimed = Participant.objects.filter(
                pk=participant.pk, progress=position, stage=ParticipantStage.TRIALS
            ).update(**changes)
            if not claimed:
                raise IntegrityError("another request stored this answer first")
            response = Response.objects.create(
                participant_id=participant.pk,
                trial=trial,
                position=position,
                answer=value.text,
                data=data,
                is_correct=is_correct,
                rt_ms=rt,
                shown_at=shown_at,
                tab_hidden=bool(tab_hidden or hidden),
                hidden_ms=hidden,
                timed_out=timed_out,
                created_at=now,
            )
    except IntegrityError:
        if mask_name:
            default_storage.delete(mask_name)
        participant.refresh_from_db(fields=["progress", "stage", "completed_at"])
        return SubmitResult(_response_stored(participant, order[position]), False)
    for field, new in changes.items():
        setattr(participant, field, new)
    return SubmitResult(response, True)


def _mask_save(participant: Participant, position: int, mask) -> str:
    """Save a region-annotation mask as a 1-bit PNG under a random name."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask).convert("1").save(buf, format="PNG")
    name = f"responses/{participant.study_id}/{uuid.uuid4().hex}.png"
    return default_storage.save(name, ContentFile(buf.getvalue()))


def _response_stored(participant: Participant, trial_id: int) -> Response:
    return Response.objects.get(participant_id=participant.pk, trial_id=trial_id)


def participant_accuracy(participant: Participant) -> dict:
    """Correct / scored main trials of one participant (for the optional end feedback)."""
    scored = Response.objects.filter(
        participant=participant, trial__kind=TrialKind.MAIN, is_correct__isnull=False
    )
    total = scored.count()
    return {"correct": scored.filter(is_correct=True).count(), "total": total}


__all__ = [
    "InvalidAnswer",
    "crowd_id_hash",
    "study_pages_per_participant",
    "study_pause",
    "study_resume",
    "trial_shown",
    "StudyClosed",
    "StudyDesignError",
    "StudyFull",
    "participant_feedback",
    "TrialOutOfOrder",
    "participant_consent",
    "participant_enroll",
    "participant_instructions_done",
    "response_submit",
    "study_close",
    "study_create_hive",
    "trial_current",
]
