"""Study specs: a study's whole design as one YAML or JSON document, validated against a
published JSON Schema (:data:`SPEC_SCHEMA`, served at ``/api/study-spec.schema.json`` and kept
in ``docs/study-spec.schema.json``).

A spec names the model and dataset, the explanation method per condition, the task types and
their wording, trial counts (with a fixed ratio of model-correct to model-incorrect trials per
participant, as HIVE's 5 + 5; Kim et al., ECCV 2022), practice trials, attention checks,
ordering, time limits, questionnaires, recruitment and completion. ``manage.py study_create``
and the researcher pages both go through :func:`spec_parse`; :func:`studies.design.study_create`
builds the study from the result. A launched study's spec is frozen and exported with its
results.

Errors name the field: ``trials.model_correct: -1 is less than the minimum of 0``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .models import TaskType

SPEC_VERSION = 1

#: Task types shown once per item (stimulus tasks) and once per study (questionnaires).
ITEM_TASKS = [
    TaskType.AGREEMENT,
    TaskType.DISTINCTION,
    TaskType.OUTPUT_PREDICTION,
    TaskType.SIMILARITY,
    TaskType.REGION_ANNOTATION,
    TaskType.HUMAN_OR_MACHINE,
]
SURVEY_TASKS = [
    TaskType.LIKERT_UNDERSTANDING,
    TaskType.TRADEOFF,
    TaskType.DEMOGRAPHICS,
    TaskType.FREE_TEXT,
]

_WORDING = {
    "title": {"type": "string", "minLength": 1, "maxLength": 200},
    "question": {"type": "string", "minLength": 1, "maxLength": 1000},
    "help": {"type": "string", "maxLength": 2000},
}

SPEC_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://studyplatform.example/study-spec.schema.json",
    "title": "studyplatform study spec",
    "description": "A human-evaluation study of ML explanations (version 1).",
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "title", "model", "dataset", "conditions", "tasks"],
    "properties": {
        "version": {"const": SPEC_VERSION},
        "title": {"type": "string", "minLength": 1, "maxLength": 200},
        "slug": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,79}$"},
        "description": {"type": "string", "maxLength": 5000},
        "modality": {
            "enum": ["image", "text"],
            "default": "image",
            "description": "image: a classifier's explanations of photos; text: the GLTR "
            "human-or-machine task (model = the language model, 'smollm2' or a local "
            "directory; dataset = a text dataset labelled human/machine).",
        },
        "text": {
            "type": "object",
            "additionalProperties": False,
            "description": "Text studies: GLTR's rank buckets (top-k thresholds).",
            "properties": {
                "thresholds": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 1},
                    "minItems": 3,
                    "maxItems": 3,
                }
            },
        },
        "model": {"type": "string", "minLength": 1, "description": "Registered model name."},
        "dataset": {"type": "string", "minLength": 1, "description": "Dataset name."},
        "items": {
            "type": "object",
            "additionalProperties": False,
            "description": "Which labelled items may be used (default: all with predictions).",
            "properties": {
                "split": {"type": "string", "minLength": 1},
                "names": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "limit": {"type": "integer", "minimum": 1},
            },
        },
        "conditions": {
            "type": "array",
            "minItems": 1,
            "maxItems": 12,
            "description": "Explanation conditions; method 'none' shows no explanation.",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "method"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9_-]{1,40}$"},
                    "method": {"type": "string", "minLength": 1, "maxLength": 50},
                    "label": {"type": "string", "maxLength": 100},
                    "model": {
                        "type": "string",
                        "minLength": 1,
                        "description": "The registered model this condition explains "
                        "(default: the spec's model), e.g. a ProtoPNet for method "
                        "'prototypes' and a concept-bottleneck model for 'concepts', to "
                        "compare explanation types on the same items. Its classes must be "
                        "those of the spec's model.",
                    },
                    "prototypes": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 10,
                        "default": 3,
                        "description": "Methods 'prototypes' and 'posthoc_prototypes': "
                        "prototypes shown per class.",
                    },
                    "max_concepts": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 64,
                        "description": "Method 'concepts': show only this many concepts with "
                        "the largest contributions (the rest summed into one line); default "
                        "all. Accuracy falls as concepts grow (Ramaswamy et al., CVPR 2023).",
                    },
                },
            },
        },
        "condition_assignment": {"enum": ["between", "within"], "default": "between"},
        "tasks": {
            "type": "array",
            "minItems": 1,
            "description": "Item task types, in block order.",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type"],
                "properties": {"type": {"enum": [str(t) for t in ITEM_TASKS]}, **_WORDING},
            },
        },
        "task_assignment": {
            "enum": ["between", "within"],
            "default": "between",
            "description": "between: each participant does one task (as HIVE); within: all, "
            "in blocks.",
        },
        "trials": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "per_participant": {"type": "integer", "minimum": 1},
                "model_correct": {"type": "integer", "minimum": 0},
                "model_incorrect": {"type": "integer", "minimum": 0},
                "practice": {"type": "integer", "minimum": 0, "maximum": 10, "default": 0},
                "attention_checks": {"type": "integer", "minimum": 0, "maximum": 10, "default": 0},
                "order": {"enum": ["random", "fixed"], "default": "random"},
                "seed": {"type": "integer", "default": 0},
                "time_limit_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
            },
        },
        "questionnaires": {
            "type": "array",
            "description": "Pages after the trials.",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type"],
                "properties": {"type": {"enum": [str(t) for t in SURVEY_TASKS]}, **_WORDING},
            },
        },
        "exclusion": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_attention_failures": {"type": "integer", "minimum": 0, "default": 0},
                "min_median_rt_ms": {"type": "integer", "minimum": 0},
            },
        },
        "recruitment": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "mode": {"enum": ["public", "prolific", "mturk", "classroom"], "default": "public"},
                "max_participants": {"type": "integer", "minimum": 1},
                "prolific_completion_url": {
                    "type": "string",
                    "pattern": "^https://app\\.prolific\\.(co|com)/",
                },
                "roster": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "active_timeout_min": {"type": "integer", "minimum": 1, "default": 60},
            },
        },
        "consent": {"type": "string", "maxLength": 20000},
        "instructions": {"type": "string", "maxLength": 20000},
        "completion": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "show_accuracy": {"type": "boolean", "default": False},
                "code": {"type": "string", "pattern": "^[A-Za-z0-9_-]{4,32}$"},
            },
        },
    },
}


class SpecError(ValueError):
    """The spec is not valid; ``errors`` lists ``"path: message"`` strings, one per fault."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("invalid study spec:\n" + "\n".join(f"  {e}" for e in errors))


def _path(error: jsonschema.ValidationError) -> str:
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown field(s)")
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {error.validator_value}"
    if error.validator == "const":
        return f"must be {error.validator_value!r}, got {error.instance!r}"
    return error.message


def spec_text_load(text: str, *, name: str = "spec") -> dict:
    """Parse YAML or JSON text (JSON is YAML) into a dict.

    Raises:
        SpecError: not parseable, or not a mapping at the top.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", exc)
        raise SpecError([f"{name}: not valid YAML/JSON{where}: {problem}"]) from None
    if not isinstance(data, dict):
        raise SpecError([f"{name}: the top level must be a mapping of fields"])
    return data


def spec_file_load(path: str | Path) -> dict:
    """Read and validate a spec file (``.yaml``, ``.yml`` or ``.json``).

    Raises:
        SpecError: unreadable, unparseable or invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"{path}: cannot read ({exc})"]) from None
    return spec_parse(spec_text_load(text, name=str(path)))


def spec_parse(data: dict) -> dict:
    """Validate a spec and return it with defaults filled in.

    Beyond the schema: condition names unique; a task type at most once; the model-correct /
    incorrect counts sum to ``per_participant`` when both are given; the roster only with
    classroom recruitment; questionnaires at most once per type.

    Raises:
        SpecError: every fault found, each as ``"field.path: message"``.
    """
    validator = jsonschema.Draft202012Validator(SPEC_SCHEMA)
    errors = [
        f"{_path(e)}: {_message(e)}"
        for e in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path)))
    ]
    if errors:
        raise SpecError(errors)
    spec = json.loads(json.dumps(data))  # a deep copy of plain JSON types
    names = [c["name"] for c in spec["conditions"]]
    if len(set(names)) != len(names):
        errors.append(f"conditions: names must be unique, got {names}")
    for i, c in enumerate(spec["conditions"]):
        for option, methods in (
            ("prototypes", ("prototypes", "posthoc_prototypes")),
            ("max_concepts", ("concepts",)),
        ):
            if option in c and c["method"] not in methods:
                errors.append(
                    f"conditions[{i}].{option}: only for method "
                    f"{' or '.join(repr(m) for m in methods)}, not {c['method']!r}"
                )
    types = [t["type"] for t in spec["tasks"]]
    if len(set(types)) != len(types):
        errors.append(f"tasks: each task type at most once, got {types}")
    survey = [q["type"] for q in spec.get("questionnaires", [])]
    if len(set(survey)) != len(survey):
        errors.append(f"questionnaires: each type at most once, got {survey}")
    trials = spec.setdefault("trials", {})
    trials.setdefault("practice", 0)
    trials.setdefault("attention_checks", 0)
    trials.setdefault("order", "random")
    trials.setdefault("seed", 0)
    nc, ni = trials.get("model_correct"), trials.get("model_incorrect")
    if (nc is None) != (ni is None):
        errors.append("trials: give both model_correct and model_incorrect, or neither")
    elif nc is not None:
        if nc + ni == 0:
            errors.append("trials: model_correct + model_incorrect must be at least 1")
        per = trials.get("per_participant")
        if per is not None and per != nc + ni:
            errors.append(
                f"trials.per_participant: {per} != model_correct + model_incorrect ({nc + ni})"
            )
    spec.setdefault("condition_assignment", "between")
    spec.setdefault("task_assignment", "between")
    spec.setdefault("questionnaires", [])
    recruitment = spec.setdefault("recruitment", {})
    recruitment.setdefault("mode", "public")
    recruitment.setdefault("active_timeout_min", 60)
    if recruitment.get("roster") and recruitment["mode"] != "classroom":
        errors.append("recruitment.roster: a roster needs mode 'classroom'")
    spec.setdefault("completion", {}).setdefault("show_accuracy", False)
    spec.setdefault("exclusion", {}).setdefault("max_attention_failures", 0)
    if errors:
        raise SpecError(errors)
    return spec


def spec_schema_json() -> str:
    """The published JSON Schema, as stable pretty JSON (``docs/study-spec.schema.json``)."""
    return json.dumps(SPEC_SCHEMA, indent=2, ensure_ascii=False) + "\n"
