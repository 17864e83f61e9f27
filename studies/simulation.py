"""Model-based simulated participants: answers drawn from a parameterised response model.

Scripted bots (:mod:`studies.bots`) only see the page. A *model-based* simulated participant
answers from a :class:`ResponseModel`: the probability of a correct answer per condition and
per model correctness (HIVE's central split: people over-trust correct-looking explanations,
Kim et al., ECCV 2022, Sec. 5), a log-normal response time, and an attention-check pass
rate. It is used two ways:

* :func:`simulated_participant_run` takes a study through the real participant views
  (HTTP or Django's client) to pilot it, answering each trial from the response model. It is
  server-side code, so it may read the answer key of the trial it is on; nothing of that
  reaches the pages.
* :func:`simulate_responses` draws whole data sets without HTTP (milliseconds per
  participant) in the long format of :func:`analysis.datasets.study_responses_frame`, for
  simulation-based power analysis (:func:`analysis.power.power_simulation`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pandas as pd

from .models import Participant, TaskType, Trial, TrialKind
from .tasktypes import DEMOGRAPHIC_FIELDS, REGION_GRID, TASK_TYPES, TRADEOFF_SCENARIOS

SCORED_CHOICE = (
    TaskType.AGREEMENT,
    TaskType.DISTINCTION,
    TaskType.OUTPUT_PREDICTION,
    TaskType.HUMAN_OR_MACHINE,
)


@dataclass(frozen=True)
class ResponseModel:
    """How a simulated participant answers.

    Attributes:
        accuracy: P(correct) per condition name and model correctness, e.g.
            ``{"gradcam": {"right": 0.8, "wrong": 0.4}}``; conditions not listed use
            ``default_accuracy``. Values in [0, 1].
        default_accuracy: P(correct) for anything not in ``accuracy`` (None = chance).
        rt_median_ms: median response time (ms) of the log-normal distribution.
        rt_sigma: its log-scale standard deviation (dimensionless, >= 0).
        attention_pass: P(following an attention-check instruction), in [0, 1].

    Raises:
        ValueError: a probability outside [0, 1], a non-positive median or negative sigma.
    """

    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    default_accuracy: float | None = None
    rt_median_ms: float = 4000.0
    rt_sigma: float = 0.5
    attention_pass: float = 0.97

    def __post_init__(self):
        probs = [p for cond in self.accuracy.values() for p in cond.values()]
        probs += [self.attention_pass]
        if self.default_accuracy is not None:
            probs.append(self.default_accuracy)
        if any(not 0.0 <= p <= 1.0 for p in probs):
            raise ValueError("probabilities must lie in [0, 1]")
        if self.rt_median_ms <= 0 or self.rt_sigma < 0:
            raise ValueError("rt_median_ms must be > 0 and rt_sigma >= 0")

    def p_correct(self, condition: str, model_correct: bool | None, chance: float) -> float:
        by_model = self.accuracy.get(condition, {})
        key = "right" if model_correct else "wrong"
        if key in by_model:
            return by_model[key]
        return chance if self.default_accuracy is None else self.default_accuracy

    def rt_ms(self, rng: random.Random) -> int:
        return max(200, int(round(self.rt_median_ms * math.exp(rng.gauss(0.0, self.rt_sigma)))))


def simulated_answer(trial: Trial, rm: ResponseModel, rng: random.Random):
    """A raw answer to ``trial`` (as a participant would submit it) drawn from ``rm``."""
    task = trial.task_type
    values = [o["value"] for o in trial.options]
    if trial.kind == TrialKind.ATTENTION:
        if rng.random() < rm.attention_pass:
            return trial.correct_value
        return rng.choice([v for v in values if v != trial.correct_value] or values)
    if task in SCORED_CHOICE:
        chance = TASK_TYPES[task].trial_chance(trial) or 0.5
        # text studies: "right" = a machine text, "wrong" = a human one
        split = trial.true_index == 1 if task == TaskType.HUMAN_OR_MACHINE else trial.model_correct
        correct = rng.random() < rm.p_correct(trial.condition, split, chance)
        if task == TaskType.AGREEMENT:
            right_side = ("1", "2") if trial.model_correct else ("3", "4")
            wrong_side = ("3", "4") if trial.model_correct else ("1", "2")
            choice = rng.choice(right_side if correct else wrong_side)
            cfg = trial.config or {}
            if cfg.get("rate_prototypes") and cfg.get("prototypes"):  # HIVE's 1-4 ratings
                ratings = [str(rng.randint(1, 4)) for _ in cfg["prototypes"]]
                return {"answer": choice, "ratings": ratings}
            return choice
        if task == TaskType.HUMAN_OR_MACHINE:  # "right" = machine text, "wrong" = human text
            human = trial.true_index == 0
            right_side = ("1", "2") if human else ("3", "4")
            wrong_side = ("3", "4") if human else ("1", "2")
            return rng.choice(right_side if correct else wrong_side)
        wrong = [v for v in values if v != trial.correct_value]
        return trial.correct_value if correct or not wrong else rng.choice(wrong)
    if task == TaskType.REGION_ANNOTATION:
        return {"cells": rng.sample(range(REGION_GRID * REGION_GRID), rng.randint(2, 8))}
    if task == TaskType.TRADEOFF:
        return {key: rng.randint(0, 100) for key, _ in TRADEOFF_SCENARIOS}
    if task == TaskType.DEMOGRAPHICS:
        return {key: rng.choice(choices)[0] for key, choices in DEMOGRAPHIC_FIELDS.items()}
    if task == TaskType.FREE_TEXT:
        return "Simulated participant."
    return rng.choice(values)


def simulated_participant_run(
    *, client, study, rm: ResponseModel, seed: int = 0, max_pages: int = 500
) -> Participant:
    """Take ``study`` through the participant pages and JSON API with Django's test ``client``
    (the real URLconf, middleware and views), answering from ``rm``. Marked simulated with the
    study's secret and ``BOT_POLICY=model``.

    Raises:
        RuntimeError: a page did not answer as a participant would expect.
    """
    from .services import trial_current

    rng = random.Random(seed)
    start = f"/s/{study.slug}/?SIMULATION_KEY={study.simulation_key}&BOT_POLICY=model"
    response = client.get(start)
    if response.status_code != 302:
        raise RuntimeError(f"start link answered {response.status_code}")
    token = response["Location"].rstrip("/").split("/")[-1]
    client.post(f"/p/{token}/consent", {"consent": "yes"})
    client.post(f"/p/{token}/instructions")
    for _ in range(max_pages):
        participant = Participant.objects.select_related("study").get(token=token)
        current = trial_current(participant=participant)
        if current is None:
            return participant
        position, trial = current
        reply = client.post(
            f"/api/p/{token}/",
            {
                "position": position,
                "answer": simulated_answer(trial, rm, rng),
                "rt_ms": rm.rt_ms(rng),
            },
            content_type="application/json",
        )
        if reply.status_code not in (200, 201):
            raise RuntimeError(f"answer {position} refused: {reply.status_code} {reply.content!r}")
    raise RuntimeError(f"no debrief after {max_pages} answers")


def simulate_responses(
    study, rm: ResponseModel, n_participants: int, *, seed: int = 0
) -> pd.DataFrame:
    """Draw the main-trial responses of ``n_participants`` simulated participants without
    HTTP: arms assigned round-robin (as balanced assignment does), trial orders drawn as for
    real participants (:func:`studies.design.trial_order_draw`), answers from ``rm`` and
    scored by the task plugins.

    Returns:
        One row per main trial answered, with columns ``participant`` (int), ``arm``,
        ``task``, ``condition``, ``model_correct`` (bool), ``is_correct`` (bool) and
        ``chance`` (float) -- the columns :func:`analysis.stats.accuracy_table` needs.
    """
    from .design import trial_order_draw, trial_rows_load
    from .services import study_arms, study_trials
    from .tasktypes import answer_score, answer_validate

    rng = random.Random(seed)
    arms = study_arms(study)
    trials = study_trials(study)
    trial_rows = trial_rows_load(study)
    rows = []
    for p in range(n_participants):
        arm = arms[p % len(arms)]
        order = trial_order_draw(study, arm, rng.randrange(2**31), rows=trial_rows)
        for trial_id in order:
            trial = trials[trial_id]
            if trial.kind != TrialKind.MAIN or trial.task_type not in SCORED_CHOICE:
                continue
            answer = answer_validate(trial, simulated_answer(trial, rm, rng))
            rows.append(
                {
                    "participant": p,
                    "arm": arm,
                    "task": trial.task_type,
                    "condition": trial.condition,
                    "model_correct": bool(trial.model_correct),
                    "is_correct": bool(answer_score(trial, answer)),
                    "chance": TASK_TYPES[trial.task_type].trial_chance(trial),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "participant",
            "arm",
            "task",
            "condition",
            "model_correct",
            "is_correct",
            "chance",
        ],
    )
