"""HIVE task types (Kim et al., "HIVE: Evaluating the Human Interpretability of Visual
Explanations", ECCV 2022): what each shows, asks, accepts and how it is scored.

* agreement_task: the photo, the model's predicted class and its heatmap; "How confident are
  you that the model's prediction is correct?" on HIVE's 4-point scale. Correct when the answer
  is on the correct side of the scale (1-2 = correct, 3-4 = incorrect). Chance = 0.5.
* distinction_task: the photo and four heatmaps for four candidate classes (the top-4 when the
  model is right; the top-3 plus the true class when it is wrong), normalised jointly; "Which
  class do you think is correct?". Correct when the true class is chosen. Chance = 0.25.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import TaskType, Trial


class InvalidAnswer(ValueError):
    """The submitted answer is not one of the trial's options."""


AGREEMENT_SCALE = [
    ("1", "Fairly confident it is correct"),
    ("2", "Somewhat confident it is correct"),
    ("3", "Somewhat confident it is incorrect"),
    ("4", "Fairly confident it is incorrect"),
]


@dataclass(frozen=True)
class TaskTypeSpec:
    key: str
    title: str
    question: str
    help: str
    chance: float


TASK_TYPES: dict[str, TaskTypeSpec] = {
    TaskType.AGREEMENT: TaskTypeSpec(
        key=TaskType.AGREEMENT,
        title="Do you agree with the model?",
        question="How confident are you that the model's prediction is correct?",
        help="The coloured overlay shows the regions the model relied on for its prediction "
        "(red = most important).",
        chance=0.5,
    ),
    TaskType.DISTINCTION: TaskTypeSpec(
        key=TaskType.DISTINCTION,
        title="Which class is correct?",
        question="Which class do you think is correct?",
        help="Each heatmap shows where the model would look to decide for that class. All four "
        "use the same colour scale, so stronger colours mean stronger evidence.",
        chance=0.25,
    ),
}


def answer_validate(trial: Trial, raw: str) -> str:
    """Return the answer if it is one of the trial's option values.

    Raises:
        InvalidAnswer: missing or not an option value.
    """
    value = (raw or "").strip()
    allowed = [opt["value"] for opt in trial.options]
    if value not in allowed:
        raise InvalidAnswer(f"choose one of the {len(allowed)} options")
    return value


def answer_score(trial: Trial, value: str) -> bool:
    """Whether a validated answer is correct (server only)."""
    if trial.task_type == TaskType.AGREEMENT:
        says_correct = value in ("1", "2")
        return says_correct == trial.model_correct
    return value == trial.correct_value
