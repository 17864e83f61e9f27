"""What a participant may see: the single source of every participant page and API payload.

Only fields listed here leave the server. Ground truth, model correctness and the answer key
(``Trial.true_index``, ``model_correct``, ``option_classes``, ``correct_value``) never do,
except as feedback on a *practice* trial after it was answered (practice items are never
main items), and, when the spec asks for it, the participant's own accuracy at the very end.
"""

from __future__ import annotations

import random
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone

from .models import CrowdSource, Participant, ParticipantStage, Response, TaskType, TrialKind
from .services import (
    participant_accuracy,
    study_trials,
    time_limit_s,
    trial_current,
    trial_shown,
)
from .tasktypes import (
    DEMOGRAPHIC_FIELDS,
    DEMOGRAPHIC_LABELS,
    REGION_GRID,
    SIMILARITY_SCALE,
    TRADEOFF_SCENARIOS,
    plugin,
)

SHUFFLED_TASKS = (TaskType.DISTINCTION, TaskType.OUTPUT_PREDICTION)
MTURK_HOSTS = ("https://www.mturk.com", "https://workersandbox.mturk.com")


def _stimulus_url(participant: Participant, position: int, slot: str) -> str:
    return reverse(
        "studies:stimulus",
        kwargs={"token": participant.token, "position": position, "slot": slot},
    )


def _options_for(participant: Participant, trial) -> list[dict]:
    """Candidates in an order drawn per participant and trial (stable on reload), so no
    position is more often the right answer for everyone; scales keep their order."""
    options = list(trial.options)
    if trial.task_type in SHUFFLED_TASKS:
        random.Random(f"{participant.token}:{trial.pk}").shuffle(options)
    return options


def _prototypes_public(participant: Participant, position: int, prototypes: list) -> list:
    """Prototype pairs as shown: "this part" and "looks like that" image URLs (random stimulus
    names) and the similarity score; never the prototype's class or source item."""
    return [
        {
            "region": _stimulus_url(participant, position, p["region"]),
            "source": _stimulus_url(participant, position, p["source"]),
            "similarity": p["similarity"],
            "post_hoc": bool(p.get("post_hoc")),
        }
        for p in prototypes
    ]


def _trial_payload(participant: Participant, position: int, trial) -> dict:
    task = plugin(trial)
    cfg = trial.config or {}
    payload = {
        "position": position,
        "task": trial.task_type,
        "kind": "practice" if trial.kind == TrialKind.PRACTICE else "trial",
        **task.wording(trial),
        "options": [],
    }
    if trial.kind == TrialKind.ATTENTION:
        payload["kind"] = "trial"  # an attention check looks like any other trial
        payload["instruction"] = cfg.get("attention", "")
    if trial.kind == TrialKind.SURVEY:
        payload["kind"] = "questionnaire"
    if "photo" in trial.stimuli:
        payload["photo"] = _stimulus_url(participant, position, "photo")
    if trial.task_type == TaskType.AGREEMENT:
        payload["predicted_label"] = trial.predicted_label
        if "heatmap" in trial.stimuli:
            payload["heatmap"] = _stimulus_url(participant, position, "heatmap")
    if cfg.get("explanation"):  # a model's own evidence: "prototypes" or "concepts"
        payload["explanation"] = cfg["explanation"]
    if cfg.get("prototypes"):
        payload["prototypes"] = _prototypes_public(participant, position, cfg["prototypes"])
        payload["rate_prototypes"] = bool(cfg.get("rate_prototypes"))
        payload["similarity_scale"] = [{"value": v, "label": lab} for v, lab in SIMILARITY_SCALE]
    if cfg.get("concepts"):
        payload["concepts"] = cfg["concepts"]
    if trial.task_type == TaskType.HUMAN_OR_MACHINE:
        # display units only: their text and GLTR bucket (never the rank values' source)
        payload["spans"] = [
            {"text": span["text"], "bucket": span.get("bucket")} for span in cfg.get("spans", [])
        ]
        payload["highlighted"] = bool(cfg.get("explained"))
    if trial.task_type == TaskType.SIMILARITY:
        payload["region"] = _stimulus_url(participant, position, "region")
        payload["prototype"] = _stimulus_url(participant, position, "prototype")
        payload["predicted_label"] = trial.predicted_label
    if trial.task_type == TaskType.REGION_ANNOTATION:
        payload["grid"] = REGION_GRID
        payload["size"] = cfg.get("size", [224, 224])
    if trial.task_type == TaskType.TRADEOFF:
        payload["sliders"] = [{"name": k, "label": label} for k, label in TRADEOFF_SCENARIOS]
    if trial.task_type == TaskType.DEMOGRAPHICS:
        payload["fields"] = [
            {
                "name": name,
                "label": DEMOGRAPHIC_LABELS[name],
                "choices": [{"value": v, "label": lab} for v, lab in choices],
            }
            for name, choices in DEMOGRAPHIC_FIELDS.items()
        ]
    for option in _options_for(participant, trial):
        public = {"value": option["value"], "label": option["label"]}
        if "image" in option:
            public["heatmap"] = _stimulus_url(participant, position, option["image"])
        if "prototypes" in option:
            public["prototypes"] = _prototypes_public(participant, position, option["prototypes"])
        if "concepts" in option:
            public["concepts"] = option["concepts"]
        payload["options"].append(public)
    trial_shown(participant=participant, position=position)
    limit = time_limit_s(participant.study, trial)
    if limit:
        elapsed = (timezone.now() - participant.shown_at).total_seconds()
        payload["time_limit_s"] = limit
        payload["remaining_s"] = max(0.0, round(limit - elapsed, 1))
    return payload


def _practice_feedback(participant: Participant, trial) -> dict | None:
    """Feedback on the last answer if it was a practice trial (its own item only)."""
    response = Response.objects.filter(participant=participant, trial=trial).first()
    if response is None or response.timed_out:
        return {"correct": False, "message": "Time ran out on that practice trial."}
    label = {o["value"]: o["label"] for o in trial.options}
    if trial.task_type == TaskType.AGREEMENT:
        verdict = "right" if trial.model_correct else "wrong"
        detail = f"The model's prediction \u201c{trial.predicted_label}\u201d was {verdict}."
    elif trial.task_type == TaskType.DISTINCTION:
        detail = f"The correct class was \u201c{label.get(trial.correct_value, '')}\u201d."
    elif trial.task_type == TaskType.OUTPUT_PREDICTION:
        detail = f"The model predicted \u201c{trial.predicted_label}\u201d."
    elif trial.task_type == TaskType.HUMAN_OR_MACHINE:  # the practice text's own origin only
        origin = "written by a person" if trial.true_index == 0 else "generated by a machine"
        detail = f"That text was {origin}."
    else:
        return {"correct": None, "message": "Thanks, that was a practice trial."}
    ok = bool(response.is_correct)
    return {"correct": ok, "message": ("Correct. " if ok else "Not quite. ") + detail}


def completion_links(participant: Participant) -> dict:
    """Where to go after the debrief: Prolific's completion URL, or MTurk's submit form."""
    study = participant.study
    out: dict = {}
    if participant.crowd_source == CrowdSource.PROLIFIC:
        base = study.recruitment.get(
            "prolific_completion_url", "https://app.prolific.com/submissions/complete"
        )
        sep = "&" if "?" in base else "?"
        out["prolific_url"] = f"{base}{sep}{urlencode({'cc': study.completion_code})}"
    if participant.crowd_source == CrowdSource.MTURK and participant.mturk_assignment_id:
        host = participant.mturk_submit_to.rstrip("/")
        if host in MTURK_HOSTS:
            out["mturk"] = {
                "action": f"{host}/mturk/externalSubmit",
                "assignmentId": participant.mturk_assignment_id,
            }
    return out


def participant_state(participant: Participant) -> dict:
    """The participant's stage and, during trials, the current trial's public payload.

    Returns a JSON-serialisable dict: ``stage``, ``study_title``, ``progress`` ({done, total}),
    ``trial`` (the current trial's public payload, or None), ``practice_feedback`` (after a
    practice trial), ``completion_code`` and ``completion`` links (debrief only: shown only
    once the server has stored the last answer), ``accuracy`` (debrief, if the spec shows it).
    """
    total = len(participant.trial_order)
    done = participant.progress
    state = {
        "stage": participant.stage,
        "study_title": participant.study.title,
        "progress": {"done": done, "total": total},
        "trial": None,
        "practice_feedback": None,
        "completion_code": None,
        "completion": {},
        "accuracy": None,
        "prolific": participant.crowd_source == CrowdSource.PROLIFIC,
    }
    if participant.stage == ParticipantStage.TRIALS:
        current = trial_current(participant=participant)
        if current:
            position, trial = current
            state["trial"] = _trial_payload(participant, position, trial)
    if participant.stage in (ParticipantStage.TRIALS, ParticipantStage.DEBRIEF) and done:
        previous_id = participant.trial_order[done - 1]
        previous = study_trials(participant.study, need=previous_id)[previous_id]
        if previous.kind == TrialKind.PRACTICE:
            state["practice_feedback"] = _practice_feedback(participant, previous)
    if participant.stage == ParticipantStage.DEBRIEF:
        state["completion_code"] = participant.study.completion_code
        state["completion"] = completion_links(participant)
        if (participant.study.spec.get("completion") or {}).get("show_accuracy"):
            state["accuracy"] = participant_accuracy(participant)
    return state
