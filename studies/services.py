"""Services of the studies app: design a HIVE study, enrol participants, record responses."""

from __future__ import annotations

import random
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone
from django.utils.text import slugify

from explanations import rendering
from explanations.models import Explanation, Prediction
from explanations.services import explanation_array_load, item_model_view

from .models import (
    Participant,
    ParticipantStage,
    Response,
    Study,
    StudyStatus,
    TaskType,
    Trial,
)
from .tasktypes import AGREEMENT_SCALE, InvalidAnswer, answer_score, answer_validate


class StudyDesignError(ValueError):
    """The study cannot be built from the available predictions and explanations."""


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
    """Build a HIVE-style study from a finished explanation job's artifacts.

    One agreement trial and one distinction trial per labelled item that has a prediction and
    explanations for the needed classes (Kim et al., ECCV 2022, Sec. 4 and supplement).
    Stimuli are rendered now and frozen with the study: the agreement heatmap is normalised on
    its own; the four distinction heatmaps are normalised jointly so their intensities
    compare, and shown in a random order. Task blocks are shown in the order of ``tasks``
    (agreement first, so the distinction candidates cannot inform agreement answers).

    Raises:
        StudyDesignError: no usable item (no labelled item with prediction and explanations).
    """
    predictions = {
        p.item_id: p
        for p in Prediction.objects.filter(model=model, item__dataset=dataset).select_related(
            "item"
        )
    }
    explanations: dict[tuple[int, int], Explanation] = {
        (e.item_id, e.target_index): e
        for e in Explanation.objects.filter(model=model, item__dataset=dataset, method=method)
    }
    rng = random.Random(seed)
    plans = []
    for item in dataset.items.select_related("dataset").order_by("id"):
        prediction = predictions.get(item.pk)
        truth = item.label_for(model)
        if truth is None or prediction is None:
            continue
        correct = prediction.predicted_index == truth
        top = prediction.topk_indices()
        k = min(4, model.num_classes)  # HIVE shows 4; a 3-class model can only offer 3
        candidates = top[:k] if correct else [c for c in top[: k - 1] if c != truth][: k - 1]
        if not correct:
            candidates.append(truth)
            for extra in top[k - 1 :]:
                if len(candidates) >= k:
                    break
                if extra not in candidates:
                    candidates.append(extra)
        needed = set(candidates) | {prediction.predicted_index}
        if len(candidates) != k or any((item.pk, c) not in explanations for c in needed):
            continue
        plans.append((item, prediction, correct, candidates, truth))
    if not plans:
        raise StudyDesignError(
            "no labelled item has a prediction and explanations; run an explanation job first"
        )

    with transaction.atomic():
        study = Study.objects.create(
            slug=_unique_slug(title),
            title=title,
            owner=owner,
            model=model,
            dataset=dataset,
            method=method,
            status=StudyStatus.OPEN if open_now else StudyStatus.DRAFT,
            spec={
                "design": "hive",
                "tasks": list(tasks),
                "method": method,
                "seed": seed,
                "items": [plan[0].name for plan in plans],
                "agreement_scale": AGREEMENT_SCALE,
            },
        )
        index = 0
        for block, task in enumerate(tasks):
            for item, prediction, correct, candidates, truth in plans:
                view = item_model_view(item=item, model=model)
                photo = _stimulus_save(study, view)
                common = {
                    "study": study,
                    "index": index,
                    "block": block,
                    "task_type": task,
                    "item": item,
                    "predicted_index": prediction.predicted_index,
                    "predicted_label": model.class_name(prediction.predicted_index),
                    "true_index": truth,
                    "model_correct": correct,
                }
                if task == TaskType.AGREEMENT:
                    saliency = explanation_array_load(
                        explanations[(item.pk, prediction.predicted_index)]
                    )
                    heat = rendering.overlay(view, rendering.normalize_each(saliency[None])[0])
                    Trial.objects.create(
                        **common,
                        options=[{"value": v, "label": label} for v, label in AGREEMENT_SCALE],
                        stimuli={"photo": photo, "heatmap": _stimulus_save(study, heat)},
                    )
                else:
                    order = list(candidates)
                    rng.shuffle(order)
                    maps = np.stack(
                        [explanation_array_load(explanations[(item.pk, c)]) for c in order]
                    )
                    joint = rendering.normalize_jointly(maps)
                    stimuli = {"photo": photo}
                    options, option_classes = [], {}
                    for pos, (cls, saliency) in enumerate(zip(order, joint, strict=True)):
                        slot = f"h{pos}"
                        stimuli[slot] = _stimulus_save(study, rendering.overlay(view, saliency))
                        options.append(
                            {"value": str(pos), "label": model.class_name(cls), "image": slot}
                        )
                        option_classes[str(pos)] = cls
                    Trial.objects.create(
                        **common,
                        options=options,
                        option_classes=option_classes,
                        correct_value=str(order.index(truth)),
                        stimuli=stimuli,
                    )
                index += 1
    return study


def _unique_slug(title: str) -> str:
    base = slugify(title)[:60] or "study"
    slug, n = base, 1
    while Study.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def _stimulus_save(study: Study, pixels: np.ndarray) -> str:
    # Random file names: nothing about the item, class or correctness is in a path.
    name = f"stimuli/{study.pk}/{uuid.uuid4().hex}.png"
    return default_storage.save(name, ContentFile(rendering.to_png_bytes(pixels)))


def study_close(*, study: Study) -> Study:
    """Stop accepting new participants and answers."""
    study.status = StudyStatus.CLOSED
    study.save(update_fields=["status"])
    return study


# --- participants ---------------------------------------------------------------------------


def participant_enroll(
    *,
    study: Study,
    prolific_pid: str = "",
    prolific_study_id: str = "",
    prolific_session_id: str = "",
    is_simulated: bool = False,
    bot_policy: str = "",
    user_agent: str = "",
    consented: bool = False,
) -> tuple[Participant, bool]:
    """Enrol a participant, or return the existing one for the same Prolific id.

    The task and trial order are assigned at consent (:func:`participant_consent`) and stored,
    so a reload resumes exactly where the participant was.
    ``consented=True`` records consent at enrolment (the consent form was the first page).

    Returns:
        (participant, created).

    Raises:
        StudyClosed: the study is not open.
        StudyFull: every place is taken by a consented participant (see
            :func:`participant_consent`; declining or never consenting takes no place).
    """
    if not study.is_open:
        raise StudyClosed("this study is not accepting participants")
    prolific_pid = prolific_pid.strip()[:64]
    if prolific_pid:
        existing = Participant.objects.filter(study=study, prolific_pid=prolific_pid).first()
        if existing:
            return existing, False
    if _places_left(study) == 0:
        raise StudyFull("all places in this study are taken")
    try:
        with transaction.atomic():
            participant = Participant.objects.create(
                study=study,
                prolific_pid=prolific_pid,
                prolific_study_id=prolific_study_id.strip()[:64],
                prolific_session_id=prolific_session_id.strip()[:64],
                is_simulated=is_simulated,
                bot_policy=bot_policy[:50],
                user_agent=user_agent[:400],
            )
    except IntegrityError:  # the same Prolific id arrived twice at once
        return Participant.objects.get(study=study, prolific_pid=prolific_pid), False
    if consented:
        participant = participant_consent(participant=participant, agree=True)
    return participant, True


def _consented(study: Study):
    """Participants holding a place: consented and not withdrawn."""
    return study.participants.filter(consented_at__isnull=False).exclude(
        stage=ParticipantStage.DECLINED
    )


def _places_left(study: Study) -> int | None:
    """Free places (None = unlimited). A place is taken at consent, so link previews and
    people who never consent take none."""
    if study.max_participants is None:
        return None
    return max(0, study.max_participants - _consented(study).count())


def _task_assign(study: Study, active) -> str:
    """Between-subjects: the task with the fewest active participants (ties: spec order).

    Each participant does one task, as in HIVE, where agreement and distinction were separate
    studies: someone who had seen the model's prediction for a photo in the agreement task
    would know which distinction candidate the model picked.
    """
    tasks = list(study.spec.get("tasks") or [])
    if not tasks:
        tasks = sorted(set(study.trials.values_list("task_type", flat=True)))
    counts = dict.fromkeys(tasks, 0)
    for task, n in active.values_list("task").annotate(n=Count("id")):
        if task in counts:
            counts[task] = n
    return min(tasks, key=lambda t: (counts[t], tasks.index(t)))


def _trial_order(study: Study, task: str) -> list[int]:
    ids = list(study.trials.filter(task_type=task).values_list("id", flat=True))
    random.Random().shuffle(ids)
    return ids


def participant_consent(*, participant: Participant, agree: bool) -> Participant:
    """Record consent or refusal. Idempotent.

    Consent takes a place: under a lock on the study row (so two people racing for the last
    place, or for the less filled task, are counted exactly) the place is checked, the task
    assigned (:func:`_task_assign`) and the trial order drawn; the participant moves to the
    instructions. When no place is left the participant moves to stage "full". Refusal moves
    to "declined" and records nothing else.
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
        if _places_left(locked_study) == 0:
            participant.stage = ParticipantStage.FULL
            participant.save(update_fields=["stage"])
            return participant
        participant.task = _task_assign(locked_study, _consented(locked_study))
        participant.trial_order = _trial_order(locked_study, participant.task)
        participant.stage = ParticipantStage.INSTRUCTIONS
        participant.consented_at = timezone.now()
        participant.save(update_fields=["task", "trial_order", "stage", "consented_at"])
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


def study_trials(study: Study) -> dict[int, Trial]:
    """All trials of a study by id, cached per process (trials never change once a study is
    built; the key includes the study's creation time, so a reused id is a different key)."""
    key = (study.pk, study.created_at.isoformat())
    with _TRIAL_CACHE_LOCK:
        trials = _TRIAL_CACHE.get(key)
        if trials is not None:
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
    return position, study_trials(participant.study)[participant.trial_order[position]]


@dataclass(frozen=True)
class SubmitResult:
    """The stored response and whether this call stored it."""

    response: Response
    created: bool


def response_submit(
    *, participant: Participant, position: int, answer: str, rt_ms: int | None = None
) -> SubmitResult:
    """Store the answer to the trial at ``position`` exactly once.

    Answers are taken in order: ``position`` must equal the participant's ``progress``. The
    insert and a compare-and-set of ``progress`` (position -> position + 1) commit together,
    so of two concurrent posts of the same answer one stores it and the other returns the
    stored row, and a repeat (double click, back button, retry) changes nothing: the first
    answer stands. The last answer moves the participant to the debrief in the same
    transaction. ``participant`` is updated in place.

    Raises:
        StudyClosed: the study is closed or the participant is not in the trial stage.
        TrialOutOfOrder: ``position`` is ahead of the current trial, or invalid.
        InvalidAnswer: ``answer`` is not one of the trial's options.
    """
    if not participant.study.is_open:
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
    trial = study_trials(participant.study)[order[position]]
    value = answer_validate(trial, answer)
    rt = None if rt_ms is None else max(0, min(int(rt_ms), 24 * 3600 * 1000))
    completes = position + 1 == len(order)
    now = timezone.now()
    changes = {"progress": position + 1}
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
                answer=value,
                is_correct=answer_score(trial, value),
                rt_ms=rt,
                created_at=now,
            )
    except IntegrityError:
        participant.refresh_from_db(fields=["progress", "stage", "completed_at"])
        return SubmitResult(_response_stored(participant, order[position]), False)
    for field, new in changes.items():
        setattr(participant, field, new)
    return SubmitResult(response, True)


def _response_stored(participant: Participant, trial_id: int) -> Response:
    return Response.objects.get(participant_id=participant.pk, trial_id=trial_id)


__all__ = [
    "InvalidAnswer",
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
