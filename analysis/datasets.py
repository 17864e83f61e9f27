"""Study data as tidy DataFrames: the only module of the analysis app that reads the ORM."""

from __future__ import annotations

import json
from datetime import UTC

import numpy as np
import pandas as pd

from analysis.codebook import explanation_type
from studies.design import NO_EXPLANATION
from studies.models import Response, Study, TaskType, TrialKind
from studies.tasktypes import TASK_TYPES

#: Columns of the long-format export, one row per response, in order.
RESPONSE_COLUMNS = [
    "study",
    "participant",
    "is_simulated",
    "bot_policy",
    "crowd_source",
    "arm",
    "excluded",
    "position",
    "kind",
    "task",
    "condition",
    "block",
    "item",
    "predicted_class",
    "true_class",
    "model_correct",
    "answer",
    "answer_label",
    "answer_data",
    "chosen_class",
    "is_correct",
    "chance",
    "rt_ms",
    "timed_out",
    "tab_hidden",
    "hidden_ms",
    "shown_at",
    "responded_at",
    # appended (older exports keep their column positions):
    "method",
    "confidence",
    "attention_check",
    "exclusion_reason",
    "explanation_type",
    "classifier",
]

#: Stimulus slots that show the photo itself; every other slot of ``Trial.stimuli`` (heatmap,
#: candidate maps h0..hk, the similarity region and prototype crops) is made from the
#: condition's explanation method.
PLAIN_SLOTS = frozenset({"photo"})

#: Agreement answer -> strength of the stated belief (the HIVE 4-point scale folds the
#: direction, correct/incorrect, and the confidence together): 2 = "fairly", 1 = "somewhat".
AGREEMENT_CONFIDENCE = {"1": 2, "2": 1, "3": 1, "4": 2}


def _utc_iso(when) -> str:
    """ISO 8601 in UTC (``+00:00``) of an aware datetime; ``""`` for None."""
    return when.astimezone(UTC).isoformat() if when else ""


def trial_chance(trial) -> float | None:
    """Accuracy by guessing: the task's chance level (1/k for a k-way choice), or None for
    tasks that are not scored (ratings, annotations, questionnaires)."""
    return TASK_TYPES[trial.task_type].trial_chance(trial)


def _ms(value: float) -> str:
    """Milliseconds for a reason text: ``450``, ``450.5``."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def exclusion_reasons(study: Study) -> dict[int, str]:
    """Why each excluded participant is excluded by the spec's rules (``exclusion``):
    participant id -> reason, e.g. ``"failed 2 attention checks (max 0)"`` or ``"median
    response time 450 ms < 800 ms"`` (both, joined by ``"; "``, when both apply). Participants
    not excluded are absent.

    Rules: more failed attention checks than ``max_attention_failures`` (default 0; a
    timed-out check counts as failed), or a median main-trial response time under
    ``min_median_rt_ms``.
    """
    rules = study.spec.get("exclusion") or {}
    max_fail = rules.get("max_attention_failures", 0)
    min_rt = rules.get("min_median_rt_ms")
    failures: dict[int, int] = {}
    rts: dict[int, list[int]] = {}
    rows = Response.objects.filter(participant__study=study).values_list(
        "participant_id", "trial__kind", "is_correct", "rt_ms"
    )
    for pid, kind, ok, rt in rows:
        if kind == TrialKind.ATTENTION and not ok:
            failures[pid] = failures.get(pid, 0) + 1
        if kind == TrialKind.MAIN and rt is not None:
            rts.setdefault(pid, []).append(rt)
    reasons: dict[int, list[str]] = {}
    for pid, n in failures.items():
        if n > max_fail:
            checks = "check" if n == 1 else "checks"
            reasons.setdefault(pid, []).append(f"failed {n} attention {checks} (max {max_fail})")
    if min_rt is not None:
        for pid, values in rts.items():
            median = float(np.median(values))
            if median < min_rt:
                reasons.setdefault(pid, []).append(
                    f"median response time {_ms(median)} ms < {_ms(min_rt)} ms"
                )
    return {pid: "; ".join(texts) for pid, texts in sorted(reasons.items())}


def participants_excluded(study: Study) -> set[int]:
    """Participant ids excluded by the spec's rules (the keys of :func:`exclusion_reasons`)."""
    return set(exclusion_reasons(study))


def trial_method(trial, methods: dict[str, str]) -> str:
    """The explanation method the trial showed (``methods``: condition name -> method, from
    the spec's ``conditions``), or ``""`` when it showed none: a condition with method
    ``none``, a task that shows only the photo (region annotation) or a questionnaire."""
    method = methods.get(trial.condition, "")
    if not method or method == NO_EXPLANATION:
        return ""
    if trial.task_type == TaskType.HUMAN_OR_MACHINE:
        return method if (trial.config or {}).get("explained") else ""
    if (trial.config or {}).get("explanation") and trial.task_type != TaskType.REGION_ANNOTATION:
        return method  # prototype / concept evidence (concepts are text, not an image slot)
    if not set(trial.stimuli or {}) - PLAIN_SLOTS:
        return ""
    return method


def trial_explanation_type(trial, methods: dict[str, str]) -> str:
    """The kind of explanation the trial's condition shows (``methods``: condition name ->
    method, as for :func:`trial_method`): ``"heatmap"``, ``"prototype"``, ``"concept"`` or
    ``"none"`` (:func:`analysis.codebook.explanation_type`), or ``""`` where
    :func:`trial_method` leaves the method empty for want of an explanation slot rather than
    by design: questionnaires (no condition method), region annotation (shows only the photo,
    whatever the condition) and trials of an explaining condition that show only the photo.
    A condition with method ``none`` gives ``"none"``, also on a human-or-machine trial
    without highlights."""
    method = methods.get(trial.condition, "")
    if (
        not method
        or trial.kind == TrialKind.SURVEY
        or trial.task_type == TaskType.REGION_ANNOTATION
    ):
        return ""
    if method == NO_EXPLANATION:
        return "none"
    shown = trial_method(trial, methods)
    return explanation_type(shown) if shown else ""


def condition_classifier(spec: dict, condition: str) -> str:
    """The registered name of the classifier whose predictions a condition shows: the
    condition's own ``model`` in the spec's ``conditions`` when given (e.g. a ProtoPNet for
    ``prototypes``, a concept-bottleneck model for ``concepts``), else the spec's top-level
    ``model``; ``""`` for text studies (``modality: text``, whose ``model`` is the language
    model, not a classifier). A condition the spec does not name gets the top-level model."""
    if spec.get("modality") == "text":
        return ""
    for c in spec.get("conditions") or []:
        if c.get("name") == condition and c.get("model"):
            return str(c["model"])
    return str(spec.get("model") or "")


def _true_class(model, trial) -> str:
    """The item's true class: a class of the classifier, or for text studies (no classifier)
    the text's origin, human or machine."""
    if trial.true_index is None:
        return ""
    if model is None:
        from explanations.text import TEXT_ORIGINS

        return TEXT_ORIGINS[trial.true_index]
    return model.class_name(trial.true_index)


def response_confidence(trial, answer: str) -> int | None:
    """The confidence the participant stated, when the task asks for one: the 4-point scales
    of the agreement and human-or-machine tasks (2 = fairly, 1 = somewhat confident). None for
    other tasks, for attention checks (the answer was instructed) and for timeouts."""
    if (
        trial.task_type not in (TaskType.AGREEMENT, TaskType.HUMAN_OR_MACHINE)
        or trial.kind == TrialKind.ATTENTION
    ):
        return None
    return AGREEMENT_CONFIDENCE.get(answer)


def study_responses_frame(study: Study) -> pd.DataFrame:
    """All responses of a study in long format (columns :data:`RESPONSE_COLUMNS`).

    ``kind`` is main / practice / attention / survey; ``model_correct`` and ``is_correct`` are
    bools (None when not applicable: questionnaires, ratings, timeouts); ``chance`` is the
    trial's chance accuracy (None when unscored); ``rt_ms`` is client-measured milliseconds;
    ``shown_at`` / ``responded_at`` are ISO 8601 UTC server timestamps; ``excluded`` applies
    the spec's exclusion rules and ``exclusion_reason`` says why (:func:`exclusion_reasons`);
    ``answer_data`` is the structured answer as JSON (sliders, region boxes/cells and mask
    file); ``method`` is the explanation method shown (:func:`trial_method`); ``confidence``
    the stated confidence (nullable Int64, :func:`response_confidence`); ``attention_check``
    is passed / failed on attention checks; ``explanation_type`` is heatmap / prototype /
    concept / none (:func:`trial_explanation_type`) and ``classifier`` the classifier whose
    prediction the trial showed (:func:`condition_classifier`; empty for questionnaires).
    Researcher previews are left out.
    """
    rows = []
    model = study.model
    reasons = exclusion_reasons(study)
    methods = {c["name"]: c["method"] for c in study.spec.get("conditions") or []}
    classifiers = {name: condition_classifier(study.spec, name) for name in methods}
    default_classifier = condition_classifier(study.spec, "")
    responses = (
        Response.objects.filter(participant__study=study, participant__is_preview=False)
        .select_related("participant", "trial", "trial__item")
        .order_by("participant_id", "position")
    )
    for r in responses:
        trial, participant = r.trial, r.participant
        label = next((o["label"] for o in trial.options if o["value"] == r.answer), "")
        chosen = trial.option_classes.get(r.answer)
        rows.append(
            {
                "study": study.slug,
                "participant": participant.public_id,
                "is_simulated": participant.is_simulated,
                "bot_policy": participant.bot_policy,
                "crowd_source": participant.crowd_source or "public",
                "arm": participant.arm,
                "excluded": participant.pk in reasons,
                "position": r.position,
                "kind": trial.kind,
                "task": trial.task_type,
                "condition": trial.condition,
                "block": trial.block,
                "item": trial.item.name if trial.item_id else "",
                "predicted_class": trial.predicted_label,
                "true_class": _true_class(model, trial),
                "model_correct": trial.model_correct,
                "answer": r.answer,
                "answer_label": label,
                "answer_data": json.dumps(r.data, sort_keys=True) if r.data else "",
                "chosen_class": model.class_name(chosen)
                if chosen is not None and model is not None
                else "",
                "is_correct": r.is_correct,
                "chance": trial_chance(trial),
                "rt_ms": r.rt_ms,
                "timed_out": r.timed_out,
                "tab_hidden": r.tab_hidden,
                "hidden_ms": r.hidden_ms,
                "shown_at": _utc_iso(r.shown_at),
                "responded_at": _utc_iso(r.created_at),
                "method": trial_method(trial, methods),
                "confidence": response_confidence(trial, r.answer),
                "attention_check": (
                    ("passed" if r.is_correct else "failed")
                    if trial.kind == TrialKind.ATTENTION
                    else ""
                ),
                "exclusion_reason": reasons.get(participant.pk, ""),
                "explanation_type": trial_explanation_type(trial, methods),
                "classifier": (
                    ""
                    if trial.kind == TrialKind.SURVEY or not trial.item_id
                    else classifiers.get(trial.condition, default_classifier)
                ),
            }
        )
    frame = pd.DataFrame(rows, columns=RESPONSE_COLUMNS)
    frame["confidence"] = frame["confidence"].astype("Int64")
    return frame
