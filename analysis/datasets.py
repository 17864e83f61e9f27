"""Study data as tidy DataFrames: the only module of the analysis app that reads the ORM."""

from __future__ import annotations

import pandas as pd

from studies.models import Response, Study
from studies.tasktypes import TASK_TYPES

#: Columns of the long-format export, one row per response, in order.
RESPONSE_COLUMNS = [
    "study",
    "participant",
    "is_simulated",
    "bot_policy",
    "prolific_pid",
    "position",
    "task",
    "block",
    "item",
    "predicted_class",
    "true_class",
    "model_correct",
    "answer",
    "answer_label",
    "chosen_class",
    "is_correct",
    "chance",
    "rt_ms",
    "responded_at",
]


def trial_chance(trial) -> float:
    """Accuracy by guessing: the task's chance level, or 1/k for a k-way choice with fewer
    than the usual 4 candidates (models with fewer classes)."""
    if trial.task_type == "distinction" and trial.options:
        return 1.0 / len(trial.options)
    return TASK_TYPES[trial.task_type].chance


def study_responses_frame(study: Study) -> pd.DataFrame:
    """All responses of a study in long format (columns :data:`RESPONSE_COLUMNS`).

    ``model_correct`` and ``is_correct`` are bools; ``chance`` is the task's chance accuracy
    (0.5 agreement, 0.25 distinction); ``rt_ms`` is milliseconds or NaN; ``responded_at`` is an
    ISO 8601 UTC timestamp.
    """
    rows = []
    model = study.model
    responses = (
        Response.objects.filter(participant__study=study)
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
                "prolific_pid": participant.prolific_pid,
                "position": r.position,
                "task": trial.task_type,
                "block": trial.block,
                "item": trial.item.name,
                "predicted_class": trial.predicted_label,
                "true_class": model.class_name(trial.true_index),
                "model_correct": trial.model_correct,
                "answer": r.answer,
                "answer_label": label,
                "chosen_class": model.class_name(chosen) if chosen is not None else "",
                "is_correct": r.is_correct,
                "chance": trial_chance(trial),
                "rt_ms": r.rt_ms,
                "responded_at": r.created_at.isoformat(),
            }
        )
    return pd.DataFrame(rows, columns=RESPONSE_COLUMNS)
