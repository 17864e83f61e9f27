"""Study data as tidy DataFrames: the only module of the analysis app that reads the ORM."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from studies.models import Response, Study, TrialKind
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
]


def trial_chance(trial) -> float | None:
    """Accuracy by guessing: the task's chance level (1/k for a k-way choice), or None for
    tasks that are not scored (ratings, annotations, questionnaires)."""
    return TASK_TYPES[trial.task_type].trial_chance(trial)


def participants_excluded(study: Study) -> set[int]:
    """Participant ids excluded by the spec's rules (``exclusion``): more failed attention
    checks than ``max_attention_failures`` (default 0), or a median main-trial response time
    under ``min_median_rt_ms``."""
    rules = study.spec.get("exclusion") or {}
    max_fail = rules.get("max_attention_failures", 0)
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
    out = {pid for pid, n in failures.items() if n > max_fail}
    min_rt = rules.get("min_median_rt_ms")
    if min_rt is not None:
        out |= {pid for pid, v in rts.items() if float(np.median(v)) < min_rt}
    return out


def study_responses_frame(study: Study) -> pd.DataFrame:
    """All responses of a study in long format (columns :data:`RESPONSE_COLUMNS`).

    ``kind`` is main / practice / attention / survey; ``model_correct`` and ``is_correct`` are
    bools (None when not applicable: questionnaires, ratings, timeouts); ``chance`` is the
    trial's chance accuracy (None when unscored); ``rt_ms`` is client-measured milliseconds;
    ``shown_at`` / ``responded_at`` are ISO 8601 UTC server timestamps; ``excluded`` applies
    the spec's exclusion rules (:func:`participants_excluded`); ``answer_data`` is the
    structured answer as JSON (sliders, region boxes/cells and mask file).
    Researcher previews are left out.
    """
    rows = []
    model = study.model
    excluded = participants_excluded(study)
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
                "excluded": participant.pk in excluded,
                "position": r.position,
                "kind": trial.kind,
                "task": trial.task_type,
                "condition": trial.condition,
                "block": trial.block,
                "item": trial.item.name if trial.item_id else "",
                "predicted_class": trial.predicted_label,
                "true_class": model.class_name(trial.true_index)
                if trial.true_index is not None
                else "",
                "model_correct": trial.model_correct,
                "answer": r.answer,
                "answer_label": label,
                "answer_data": json.dumps(r.data, sort_keys=True) if r.data else "",
                "chosen_class": model.class_name(chosen) if chosen is not None else "",
                "is_correct": r.is_correct,
                "chance": trial_chance(trial),
                "rt_ms": r.rt_ms,
                "timed_out": r.timed_out,
                "tab_hidden": r.tab_hidden,
                "hidden_ms": r.hidden_ms,
                "shown_at": r.shown_at.isoformat() if r.shown_at else "",
                "responded_at": r.created_at.isoformat(),
            }
        )
    return pd.DataFrame(rows, columns=RESPONSE_COLUMNS)
