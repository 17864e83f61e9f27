"""Task types as small plugins: what each shows, what it accepts, how it is scored.

Every task type is one :class:`TaskPlugin` in :data:`TASK_TYPES`. A plugin names its template
fragment (``templates/studies/participant/tasks/<key>.html``), turns a submitted answer (a form
or a JSON body) into a stored :class:`Answer` (:meth:`TaskPlugin.validate`, which raises
:class:`InvalidAnswer` with a message the participant can act on), and scores it
(:meth:`TaskPlugin.score`: True/False, or None for ratings and questionnaires).

Item tasks (Kim et al., "HIVE: Evaluating the Human Interpretability of Visual Explanations",
ECCV 2022, Sec. 4; Colin et al., "What I Cannot Predict, I Do Not Understand", NeurIPS 2022 for
output prediction; Nguyen et al. / Chen et al., "This Looks Like That", NeurIPS 2019, for the
prototype-region similarity rating):

* ``agreement``: the photo, the predicted class and (unless the condition has no explanation)
  its heatmap; 4-point confidence that the prediction is correct. Correct when on the right
  side of the scale (1-2 = correct, 3-4 = incorrect). Chance 0.5.
* ``distinction``: k candidate classes, each with its heatmap (jointly normalised); "which class
  is correct?" Correct = the true class. Chance 1/k.
* ``output_prediction``: the same candidates; "which class does the model predict?" Correct =
  the predicted class. Chance 1/k.
* ``similarity``: a region of the photo (around the explanation's peak) beside a prototype
  region; 1-4 "how similar". Not scored.
* ``region_annotation``: the participant marks the part of the photo that matters (drawn boxes
  and/or cells of a grid, keyboard-usable); stored as a binary mask PNG. Not scored here
  (Shared Interest in the analysis module compares it with saliency).
* ``likert_understanding`` (1-7), ``tradeoff`` (HIVE's three sliders, 0-100 = accuracy ...
  interpretability, for low/medium/high-risk scenarios), ``demographics``, ``free_text``:
  questionnaires, not scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .models import TaskType


class InvalidAnswer(ValueError):
    """The submitted answer is not acceptable for the trial (the message says why)."""


AGREEMENT_SCALE = [
    ("1", "Fairly confident it is correct"),
    ("2", "Somewhat confident it is correct"),
    ("3", "Somewhat confident it is incorrect"),
    ("4", "Fairly confident it is incorrect"),
]
SIMILARITY_SCALE = [
    ("1", "Not similar"),
    ("2", "Somewhat dissimilar"),
    ("3", "Somewhat similar"),
    ("4", "Very similar"),
]
LIKERT_7 = [
    ("1", "Not at all"),
    ("2", "Very little"),
    ("3", "A little"),
    ("4", "Moderately"),
    ("5", "Fairly well"),
    ("6", "Well"),
    ("7", "Completely"),
]
TRADEOFF_SCENARIOS = [
    ("low", "Low risk (for example, recommending a song)"),
    ("medium", "Medium risk (for example, screening loan applications)"),
    ("high", "High risk (for example, diagnosing a disease)"),
]
DEMOGRAPHIC_FIELDS: dict[str, list[tuple[str, str]]] = {
    "age": [
        ("18-24", "18-24"),
        ("25-34", "25-34"),
        ("35-44", "35-44"),
        ("45-54", "45-54"),
        ("55+", "55 or older"),
        ("na", "Prefer not to say"),
    ],
    "gender": [
        ("woman", "Woman"),
        ("man", "Man"),
        ("nonbinary", "Non-binary"),
        ("self", "Prefer to self-describe"),
        ("na", "Prefer not to say"),
    ],
    "ml_experience": [
        ("none", "None"),
        ("some", "I know the basics"),
        ("practitioner", "I use ML at work or in research"),
        ("expert", "I build ML models regularly"),
    ],
}
DEMOGRAPHIC_LABELS = {
    "age": "Age",
    "gender": "Gender",
    "ml_experience": "Experience with machine learning",
}
TEXT_MAX_CHARS = 5000
REGION_GRID = 8  # cells per side of the keyboard-usable region grid
REGION_MAX_BOXES = 20


@dataclass(frozen=True)
class Answer:
    """A validated answer: ``text`` goes to ``Response.answer``, ``data`` to ``Response.data``;
    ``mask`` (bool array (H, W), region annotation only) is saved as a PNG by the service."""

    text: str
    data: dict = field(default_factory=dict)
    mask: np.ndarray | None = None


def _scalar(raw: Any) -> str:
    if isinstance(raw, (dict, list)):
        raise InvalidAnswer("expected a single value")
    return "" if raw is None else str(raw).strip()


@dataclass(frozen=True)
class TaskPlugin:
    """Base: a choice among ``trial.options`` values, not scored."""

    key: str
    title: str
    question: str
    help: str = ""
    chance: float | None = None  # accuracy by guessing, for scored choice tasks
    item_task: bool = True  # shown per item (else a questionnaire page)
    needs_heatmaps: bool = False  # cannot run in a condition without explanation

    @property
    def template(self) -> str:
        return f"studies/participant/tasks/{self.key}.html"

    def trial_chance(self, trial) -> float | None:
        return self.chance

    def wording(self, trial) -> dict:
        """Title, question and help text shown for ``trial`` (spec overrides, then defaults)."""
        cfg = trial.config or {}
        return {
            "title": cfg.get("title", self.title),
            "question": cfg.get("question", self.question),
            "help": cfg.get("help", self.help),
        }

    def from_form(self, post) -> Any:
        """The raw answer from an HTML form (a QueryDict)."""
        return post.get("answer", "")

    def validate(self, trial, raw: Any) -> Answer:
        value = _scalar(raw)
        allowed = [opt["value"] for opt in trial.options]
        if value not in allowed:
            raise InvalidAnswer("please choose one of the options before continuing")
        return Answer(value)

    def score(self, trial, answer: Answer) -> bool | None:
        """True/False for scored tasks, None otherwise. Server only."""
        if trial.correct_value:  # attention checks and practice carry their key
            return answer.text == trial.correct_value
        return None


class AgreementTask(TaskPlugin):
    def score(self, trial, answer: Answer) -> bool | None:
        if trial.correct_value:  # attention check: an instructed answer
            return answer.text == trial.correct_value
        says_correct = answer.text in ("1", "2")
        return says_correct == trial.model_correct


class CandidateTask(TaskPlugin):
    """distinction / output_prediction: one of k candidate classes; chance 1/k."""

    def trial_chance(self, trial) -> float | None:
        return 1.0 / len(trial.options) if trial.options else self.chance


class TextTask(TaskPlugin):
    def validate(self, trial, raw: Any) -> Answer:
        text = "" if raw is None else str(raw) if not isinstance(raw, (dict, list)) else None
        if text is None:
            raise InvalidAnswer("expected text")
        text = text.replace("\r\n", "\n")
        if not text.strip():
            raise InvalidAnswer("please write an answer before continuing")
        if len(text) > TEXT_MAX_CHARS:
            raise InvalidAnswer(f"please keep your answer under {TEXT_MAX_CHARS} characters")
        return Answer(text)  # stored exactly as typed; always rendered escaped


def _json_object(raw: Any) -> dict:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise InvalidAnswer("the answer could not be read; please try again") from None
    if not isinstance(raw, dict):
        raise InvalidAnswer("the answer could not be read; please try again")
    return raw


class TradeoffTask(TaskPlugin):
    def from_form(self, post) -> Any:
        return {key: post.get(key, "") for key, _ in TRADEOFF_SCENARIOS}

    def validate(self, trial, raw: Any) -> Answer:
        data = _json_object(raw)
        values = {}
        for key, _ in TRADEOFF_SCENARIOS:
            try:
                v = int(str(data.get(key, "")).strip())
            except ValueError:
                raise InvalidAnswer("please set all three sliders") from None
            if not 0 <= v <= 100:
                raise InvalidAnswer("each slider goes from 0 to 100")
            values[key] = v
        return Answer(json.dumps(values, sort_keys=True), values)


class DemographicsTask(TaskPlugin):
    def from_form(self, post) -> Any:
        return {key: post.get(key, "") for key in DEMOGRAPHIC_FIELDS}

    def validate(self, trial, raw: Any) -> Answer:
        data = _json_object(raw)
        values = {}
        for key, choices in DEMOGRAPHIC_FIELDS.items():
            v = str(data.get(key, "")).strip()
            if v not in [c for c, _ in choices]:
                raise InvalidAnswer(f"please answer: {DEMOGRAPHIC_LABELS[key]}")
            values[key] = v
        return Answer(json.dumps(values, sort_keys=True), values)


class RegionTask(TaskPlugin):
    """Boxes (normalised x0, y0, x1, y1 in [0, 1]) and/or grid cells -> a binary mask of the
    photo's size (the model's view, ``trial.config["size"]`` = [H, W])."""

    def from_form(self, post) -> Any:
        raw = post.get("answer", "")
        cells = post.getlist("cells")
        if cells and not raw:
            return {"cells": cells}
        if cells:
            data = _json_object(raw)
            data["cells"] = list(data.get("cells", [])) + cells
            return data
        return raw

    def validate(self, trial, raw: Any) -> Answer:
        data = _json_object(raw) if raw not in ("", None) else {}
        height, width = (trial.config or {}).get("size", [224, 224])
        mask = np.zeros((height, width), dtype=bool)
        boxes, cells = [], []
        for box in data.get("boxes", []) or []:
            try:
                x0, y0, x1, y1 = (float(v) for v in box)
            except (TypeError, ValueError):
                raise InvalidAnswer("a drawn box could not be read; please draw it again") from None
            if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
                raise InvalidAnswer("a drawn box lies outside the image")
            x0, x1 = sorted((x0, x1))
            y0, y1 = sorted((y0, y1))
            c0, c1 = int(round(x0 * width)), int(round(x1 * width))
            r0, r1 = int(round(y0 * height)), int(round(y1 * height))
            if c1 <= c0 or r1 <= r0:
                continue  # a click, not a box
            mask[r0:r1, c0:c1] = True
            boxes.append([round(v, 4) for v in (x0, y0, x1, y1)])
        if len(boxes) > REGION_MAX_BOXES:
            raise InvalidAnswer(f"please draw at most {REGION_MAX_BOXES} boxes")
        for cell in data.get("cells", []) or []:
            try:
                c = int(cell)
            except (TypeError, ValueError):
                raise InvalidAnswer("a selected cell could not be read") from None
            if not 0 <= c < REGION_GRID * REGION_GRID:
                raise InvalidAnswer("a selected cell lies outside the grid")
            row, col = divmod(c, REGION_GRID)
            r0, r1 = row * height // REGION_GRID, (row + 1) * height // REGION_GRID
            c0, c1 = col * width // REGION_GRID, (col + 1) * width // REGION_GRID
            mask[r0:r1, c0:c1] = True
            cells.append(c)
        if not mask.any():
            raise InvalidAnswer("please mark the part of the image that matters before continuing")
        area = float(mask.mean())
        payload = {"boxes": boxes, "cells": sorted(set(cells)), "grid": REGION_GRID}
        return Answer(
            json.dumps(payload, sort_keys=True), {**payload, "area": round(area, 6)}, mask
        )


TASK_TYPES: dict[str, TaskPlugin] = {
    TaskType.AGREEMENT: AgreementTask(
        key=TaskType.AGREEMENT,
        title="Do you agree with the model?",
        question="How confident are you that the model's prediction is correct?",
        help="The coloured overlay shows the regions the model relied on for its prediction "
        "(red = most important).",
        chance=0.5,
    ),
    TaskType.DISTINCTION: CandidateTask(
        key=TaskType.DISTINCTION,
        title="Which class is correct?",
        question="Which class do you think is correct?",
        help="Each heatmap shows where the model would look to decide for that class. All "
        "heatmaps use the same colour scale, so stronger colours mean stronger evidence.",
        chance=0.25,
    ),
    TaskType.OUTPUT_PREDICTION: CandidateTask(
        key=TaskType.OUTPUT_PREDICTION,
        title="What will the model say?",
        question="Which class do you think the model predicts for this photo?",
        help="Each heatmap shows where the model would look to decide for that class. All "
        "heatmaps use the same colour scale.",
        chance=0.25,
    ),
    TaskType.SIMILARITY: TaskPlugin(
        key=TaskType.SIMILARITY,
        title="How similar are these parts?",
        question="How similar is the highlighted part of the photo to the prototype?",
        help="Left: the part of the photo the model found most important. Right: a prototype "
        "of the class the model predicted.",
        needs_heatmaps=True,
    ),
    TaskType.REGION_ANNOTATION: RegionTask(
        key=TaskType.REGION_ANNOTATION,
        title="Which part of the photo matters?",
        question="Mark the part of the photo that shows what the object is.",
        help="Drag on the photo to draw boxes, or select grid cells with the keyboard or by "
        "tapping. Select a cell again to clear it.",
    ),
    TaskType.FREE_TEXT: TextTask(
        key=TaskType.FREE_TEXT,
        title="In your own words",
        question="How did you decide on your answers?",
        item_task=False,
    ),
    TaskType.LIKERT_UNDERSTANDING: TaskPlugin(
        key=TaskType.LIKERT_UNDERSTANDING,
        title="Your understanding",
        question="How well do you feel you understand how the model makes its decisions?",
        item_task=False,
    ),
    TaskType.TRADEOFF: TradeoffTask(
        key=TaskType.TRADEOFF,
        title="Accuracy or interpretability?",
        question="For each kind of decision, would you rather have a more accurate model or a "
        "more interpretable one?",
        help="0 = only accuracy matters, 100 = only interpretability matters.",
        item_task=False,
    ),
    TaskType.DEMOGRAPHICS: DemographicsTask(
        key=TaskType.DEMOGRAPHICS,
        title="About you",
        question="A few questions about you (used only in aggregate).",
        item_task=False,
    ),
}

#: Public options of the scale-type tasks (stored on their trials at design time).
SCALES: dict[str, list[tuple[str, str]]] = {
    TaskType.AGREEMENT: AGREEMENT_SCALE,
    TaskType.SIMILARITY: SIMILARITY_SCALE,
    TaskType.LIKERT_UNDERSTANDING: LIKERT_7,
}


def plugin(trial) -> TaskPlugin:
    """The plugin of a trial's task type."""
    return TASK_TYPES[trial.task_type]


def answer_validate(trial, raw: Any) -> Answer:
    """Validate a raw answer for ``trial``.

    Raises:
        InvalidAnswer: with a message for the participant.
    """
    return plugin(trial).validate(trial, raw)


def answer_score(trial, answer: Answer) -> bool | None:
    """Whether a validated answer is correct (server only); None for unscored tasks."""
    return plugin(trial).score(trial, answer)
