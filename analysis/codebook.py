"""The codebook of the long-format response export: one line per column, saying what it holds,
its type and units (no Django). Kept beside :data:`analysis.datasets.RESPONSE_COLUMNS`; a test
checks that every exported column is described."""

from __future__ import annotations

import pandas as pd

#: column -> (type, description)
CODEBOOK: dict[str, tuple[str, str]] = {
    "study": ("text", "Study slug."),
    "participant": ("text", "Pseudonymous participant id (P00001...); never a crowd id."),
    "is_simulated": ("bool", "A simulated participant (bot or response model), not a person."),
    "bot_policy": ("text", "Simulation policy (uniform, trusting, careless, model, preview)."),
    "crowd_source": ("text", "How the participant came: public, prolific, mturk or classroom."),
    "arm": ("text", "Assigned arm: between-subjects cell (condition/task) or Latin-square row."),
    "excluded": ("bool", "Excluded by the spec's rules (attention checks, median RT)."),
    "position": ("int", "0-based place of the trial in the participant's order."),
    "kind": ("text", "main, practice, attention (check) or survey (questionnaire)."),
    "task": ("text", "Task type (agreement, distinction, output_prediction, ...)."),
    "condition": ("text", "Explanation condition name (spec conditions[].name)."),
    "block": ("int", "Task block within the participant's order (questionnaires: 100+)."),
    "item": ("text", "Dataset item (photo) name; empty for questionnaires."),
    "predicted_class": ("text", "The model's top-1 class for the item."),
    "true_class": ("text", "The item's ground-truth class (empty when unlabelled)."),
    "model_correct": ("bool", "Whether the model's prediction was right (None: not applicable)."),
    "answer": ("text", "The stored answer: option value, text as typed, or JSON; '' = timed out."),
    "answer_label": ("text", "The label of the chosen option, when the answer is an option."),
    "answer_data": ("json", "Structured answer: sliders, demographics, region boxes/cells, mask."),
    "chosen_class": ("text", "For candidate tasks, the class of the chosen option."),
    "is_correct": ("bool", "Scored correct (None: not scored, e.g. ratings, text, timeouts)."),
    "chance": ("float", "Accuracy by guessing for this trial (0.5, 1/k); None when unscored."),
    "rt_ms": ("int", "Client-measured response time in milliseconds."),
    "timed_out": ("bool", "The trial's time limit ran out; the page moved on with no answer."),
    "tab_hidden": ("bool", "The browser tab was hidden at some point while on the trial."),
    "hidden_ms": ("int", "How long the tab was hidden, in milliseconds."),
    "shown_at": ("datetime", "Server time the trial was first served (ISO 8601, UTC)."),
    "responded_at": ("datetime", "Server time the answer was stored (ISO 8601, UTC)."),
    "method": (
        "text",
        "Explanation method shown on the trial (spec conditions[].method, e.g. gradcam); "
        "empty when none was shown: method 'none', region annotation, questionnaires.",
    ),
    "confidence": (
        "int",
        "Stated confidence, agreement task only: its 4-point scale folds direction and "
        "confidence, 2 = fairly (answers 1, 4), 1 = somewhat (2, 3); empty otherwise "
        "(other tasks collect none; attention checks; timeouts).",
    ),
    "attention_check": (
        "text",
        "Attention checks only: passed or failed (a timeout counts as failed); empty otherwise.",
    ),
    "exclusion_reason": (
        "text",
        "Why the participant is excluded (e.g. 'failed 2 attention checks (max 0)', "
        "'median response time 450 ms < 800 ms'); empty when not excluded.",
    ),
    "explanation_type": (
        "text",
        "Kind of explanation shown, from the condition's method: heatmap (gradcam, saliency, "
        "lime, ... any attribution map), prototype (method prototypes), concept (method "
        "concepts), post-hoc prototype (method posthoc_prototypes), highlights (GLTR text "
        "studies) or none (method 'none'); empty where "
        "method is empty for want of an explanation slot: region annotation, questionnaires.",
    ),
    "classifier": (
        "text",
        "Registered name of the classifier whose prediction the trial showed: the condition's "
        "spec model when given, else the spec's top-level model; empty for questionnaires and "
        "text studies (no classifier).",
    ),
}

#: Explanation method -> kind of explanation (:func:`explanation_type`); methods not listed
#: (gradcam, saliency, integrated_gradients, lime, rise, ...) are attribution maps: "heatmap".
EXPLANATION_TYPES: dict[str, str] = {
    "prototypes": "prototype",
    "concepts": "concept",
    "posthoc_prototypes": "post-hoc prototype",  # nearest training patches of any CNN
    "gltr": "highlights",  # GLTR's token-rank colours in text studies
}

#: The method of conditions that show no explanation (``studies.design.NO_EXPLANATION``).
NO_EXPLANATION_METHOD = "none"


def explanation_type(method: str | None) -> str:
    """The kind of explanation a method shows: ``"prototype"`` (ProtoPNet evidence, Chen et
    al. NeurIPS 2019), ``"concept"`` (concept-bottleneck contributions, Koh et al. ICML 2020),
    ``"highlights"`` (GLTR's token-rank colours, Gehrmann et al. ACL 2019 demo), ``"none"``
    for ``"none"`` or an empty / missing method, and ``"heatmap"`` for any other method
    (attribution maps)."""
    if not method or method == NO_EXPLANATION_METHOD:
        return "none"
    return EXPLANATION_TYPES.get(str(method), "heatmap")


def codebook_frame(columns: list[str]) -> pd.DataFrame:
    """One row per exported column: ``column``, ``type``, ``description``.

    Raises:
        KeyError: a column has no codebook entry (the export grew without documentation).
    """
    missing = [c for c in columns if c not in CODEBOOK]
    if missing:
        raise KeyError(f"columns without a codebook entry: {missing}")
    return pd.DataFrame(
        [(c, *CODEBOOK[c]) for c in columns], columns=["column", "type", "description"]
    )
