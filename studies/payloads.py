"""What a participant may see: the single source of every participant page and API payload.

Only fields listed here leave the server. Ground truth, model correctness and the answer key
(``Trial.true_index``, ``model_correct``, ``option_classes``, ``correct_value``) never do.
"""

from __future__ import annotations

import random

from django.urls import reverse

from .models import Participant, ParticipantStage, TaskType
from .services import trial_current
from .tasktypes import TASK_TYPES


def _stimulus_url(participant: Participant, position: int, slot: str) -> str:
    return reverse(
        "studies:stimulus",
        kwargs={"token": participant.token, "position": position, "slot": slot},
    )


def _options_for(participant: Participant, trial) -> list[dict]:
    """Distinction candidates in an order drawn per participant and trial (stable on reload),
    so no position is more often the true class for everyone; scales keep their order."""
    options = list(trial.options)
    if trial.task_type == TaskType.DISTINCTION:
        random.Random(f"{participant.token}:{trial.pk}").shuffle(options)
    return options


def participant_state(participant: Participant) -> dict:
    """The participant's stage and, during trials, the current trial's public payload.

    Returns a JSON-serialisable dict: ``stage``, ``study_title``, ``progress`` ({done, total}),
    ``trial`` (the current trial's public payload, or None) and ``completion_code`` (debrief
    only).
    """
    total = len(participant.trial_order)
    done = participant.progress
    state = {
        "stage": participant.stage,
        "study_title": participant.study.title,
        "progress": {"done": done, "total": total},
        "trial": None,
        "completion_code": None,
        "prolific": bool(participant.prolific_pid),
    }
    if participant.stage == ParticipantStage.TRIALS:
        current = trial_current(participant=participant)
        if current:
            position, trial = current
            spec = TASK_TYPES[trial.task_type]
            payload = {
                "position": position,
                "task": trial.task_type,
                "title": spec.title,
                "question": spec.question,
                "help": spec.help,
                "photo": _stimulus_url(participant, position, "photo"),
                "options": [],
            }
            if "heatmap" in trial.stimuli:
                payload["heatmap"] = _stimulus_url(participant, position, "heatmap")
                payload["predicted_label"] = trial.predicted_label
            for option in _options_for(participant, trial):
                public = {"value": option["value"], "label": option["label"]}
                if "image" in option:
                    public["heatmap"] = _stimulus_url(participant, position, option["image"])
                payload["options"].append(public)
            state["trial"] = payload
    if participant.stage == ParticipantStage.DEBRIEF:
        state["completion_code"] = participant.study.completion_code
    return state
