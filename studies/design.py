"""Build a study from a validated spec (:mod:`studies.spec`): arms, trials, stimuli.

Designs (Kim et al., HIVE, ECCV 2022, Sec. 4; Latin squares as in Williams, 1949, for
counterbalancing items across conditions):

* **Arms** are the groups a participant is assigned to. Conditions between subjects: one arm
  per condition; within subjects: one arm per Latin-square row, in which item ``i`` is shown
  under condition ``(i + row) mod C``, so across rows every item appears under every condition
  equally often. Tasks between subjects (as HIVE ran agreement and distinction) multiply the
  arms by the tasks; within subjects every participant does every task, in blocks.
* **Items**: labelled items with a prediction (and, for each condition's method, the
  explanations the task needs). The first ``practice`` items of a seeded shuffle are kept for
  practice trials (with feedback) and never used as main trials.
* **Attention checks**: main-trial stimuli with an instructed answer (``"please choose
  'X'"``); scored against it, never counted as main trials.
* Stimuli are rendered now and frozen with the study; file names are random, so nothing about
  an item, class or correctness is in a URL.

Trials carry ``arm``; :func:`studies.services.participant_consent` assigns an arm (least
filled) and draws the participant's order (:func:`trial_order_draw`) with a recorded seed.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from explanations import rendering
from explanations.models import (
    OWN_EVIDENCE_KINDS,
    ClassifierModel,
    Dataset,
    Explanation,
    Item,
    Prediction,
)
from explanations.services import explanation_array_load, item_model_view

from .models import Study, StudyStatus, TaskType, Trial, TrialKind
from .spec import spec_parse
from .tasktypes import SCALES, TASK_TYPES

NO_EXPLANATION = "none"
SIMILARITY_CROP = 128  # pixels per side of the similarity regions
PROTOTYPES = "prototypes"
CONCEPTS = "concepts"
STRUCTURED_METHODS = OWN_EVIDENCE_KINDS  # method -> the model kind it needs
POSTHOC_PROTOTYPES = "posthoc_prototypes"  # nearest training patches of any CNN (post-hoc)
PROTOTYPE_METHODS = (PROTOTYPES, POSTHOC_PROTOTYPES)
#: Methods whose evidence is shown as prototype pairs or concept sums, not as heatmaps.
EVIDENCE_METHODS = (PROTOTYPES, POSTHOC_PROTOTYPES, CONCEPTS)
DEFAULT_PROTOTYPES_SHOWN = 3
#: Help shown with a model's own evidence (unless the spec words the task itself).
STRUCTURED_HELP = {
    (PROTOTYPES, TaskType.AGREEMENT): "The model compares parts of the photo with prototypes "
    "it learned from training images. For each prototype: the boxed part of the photo (red = "
    "most similar) and the training image the prototype comes from, its part boxed. Rate how "
    "similar each pair looks, then answer the question.",
    (PROTOTYPES, "candidates"): "Under each class: the parts of the photo (boxed) that look "
    "most like the model's prototypes of that class, beside the training images those "
    "prototypes come from. A higher similarity is stronger evidence for that class.",
    (POSTHOC_PROTOTYPES, TaskType.AGREEMENT): "Each pair: the boxed part of the photo and "
    "the part of a training image that the model represents most similarly. These examples "
    "were found after the fact; the model did not compute its prediction from them. Rate how "
    "similar each pair looks, then answer the question.",
    (POSTHOC_PROTOTYPES, "candidates"): "Under each class: the part of the photo (boxed) "
    "beside the training patches of that class that the model represents most similarly "
    "(found after the fact; the model did not use them).",
    (CONCEPTS, TaskType.AGREEMENT): "The model first judges which concepts are present in the "
    "photo (0 = absent, 1 = present), then adds up each concept's contribution to the score "
    "of the class it predicts.",
    (CONCEPTS, "candidates"): "Each class's score is the sum of its concept contributions "
    "(how present a concept is, times how much it counts for that class). The model predicts "
    "the class with the highest score.",
}


class StudyDesignError(ValueError):
    """The study cannot be built from the spec and the available predictions/explanations."""


@dataclass(frozen=True)
class Arm:
    name: str
    tasks: tuple[str, ...]
    condition: str | None  # between-subjects condition
    rotation: int | None  # Latin-square row (within-subjects conditions)

    def condition_for(self, item_position: int, conditions: list[str]) -> str:
        if self.condition is not None:
            return self.condition
        return conditions[(item_position + (self.rotation or 0)) % len(conditions)]


def arms_build(spec: dict) -> list[Arm]:
    """The arms of a spec, in assignment tie-break order."""
    conditions = [c["name"] for c in spec["conditions"]]
    tasks = [t["type"] for t in spec["tasks"]]
    groups: list[tuple[str, str | None, int | None]]
    if spec["condition_assignment"] == "between":
        groups = [(c, c, None) for c in conditions]
    else:
        groups = [(f"L{g + 1}", None, g) for g in range(len(conditions))]
    arms = []
    for name, condition, rotation in groups:
        if spec["task_assignment"] == "between":
            for task in tasks:
                arms.append(Arm(f"{name}/{task}", (task,), condition, rotation))
        else:
            arms.append(Arm(name, tuple(tasks), condition, rotation))
    return arms


def _unique_slug(title: str, wanted: str = "") -> str:
    base = wanted or slugify(title)[:60] or "study"
    slug, n = base, 1
    while Study.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


class _Stimuli:
    """Renders and saves stimuli once per (item, what) and study; random file names."""

    def __init__(self, study: Study):
        self.study = study
        self.views: dict[tuple, np.ndarray] = {}
        self.saved: dict[tuple, str] = {}

    def view(self, item: Item, model: ClassifierModel) -> np.ndarray:
        key = (item.pk, model.input_size, model.resize_policy)
        if key not in self.views:
            self.views[key] = item_model_view(item=item, model=model)
        return self.views[key]

    def save(self, key: tuple, make) -> str:
        if key not in self.saved:
            name = f"stimuli/{self.study.pk}/{uuid.uuid4().hex}.png"
            self.saved[key] = default_storage.save(
                name, ContentFile(rendering.to_png_bytes(make()))
            )
        return self.saved[key]


@dataclass
class _ItemPlan:
    """One item under one model; ``by_model`` holds the item under every condition's model
    (model id -> plan), the top level is the first condition's."""

    item: Item
    prediction: Prediction
    truth: int
    correct: bool
    candidates: list[int]
    by_model: dict | None = None

    def under(self, model: ClassifierModel) -> _ItemPlan:
        return self.by_model[model.pk] if self.by_model else self


def _candidates(prediction: Prediction, truth: int, k: int) -> list[int]:
    """HIVE's candidates: the top-k when the model is right; the top-(k-1) + the true class
    when it is wrong (filled from further down the ranking if the truth was in the top k-1)."""
    top = prediction.topk_indices()
    if prediction.predicted_index == truth:
        return top[:k]
    out = [c for c in top[: k - 1] if c != truth][: k - 1] + [truth]
    for extra in top[k - 1 :]:
        if len(out) >= k:
            break
        if extra not in out:
            out.append(extra)
    return out


def _peak_crop(view: np.ndarray, saliency: np.ndarray, size: int) -> np.ndarray:
    """A square crop of ``view`` centred on the saliency peak (quarter of the side), resized to
    ``size``: the region the explanation points at."""
    from PIL import Image

    h, w = saliency.shape
    r, c = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    half = max(8, min(h, w) // 4)
    r0 = int(np.clip(r - half, 0, h - 2 * half))
    c0 = int(np.clip(c - half, 0, w - 2 * half))
    crop = view[r0 : r0 + 2 * half, c0 : c0 + 2 * half]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))


def study_create(*, spec: dict, owner, open_now: bool = False) -> Study:
    """Create a study (draft unless ``open_now``) and all its trials from a spec.

    Args:
        spec: a spec dict (validated here with :func:`studies.spec.spec_parse`).
        owner: the researcher (a User).
        open_now: launch at once (freezes the spec).

    Raises:
        SpecError: the spec is invalid.
        StudyDesignError: the model/dataset are unknown, or the items cannot fill the design
            (each message says what is missing and how many there are).
    """
    spec = spec_parse(spec)
    with transaction.atomic():
        study = Study(slug=_unique_slug(spec["title"], spec.get("slug", "")), owner=owner)
        _build(study, spec)
        if open_now:
            study_launch(study=study)
    return study


def study_rebuild(*, study: Study, spec: dict) -> Study:
    """Replace a draft's spec and rebuild its trials (researcher previews are deleted).

    Raises:
        SpecError / StudyDesignError: as :func:`study_create`; the draft is left unchanged.
        StudyDesignError: the study was launched (its spec is frozen) or has participants.
    """
    spec = spec_parse(spec)
    if study.launched_at is not None:
        raise StudyDesignError("this study has been launched; its spec is frozen")
    if study.participants.filter(is_preview=False).exists():
        raise StudyDesignError("this draft already has participants; create a new study")
    old_files = {name for t in study.trials.all() for name in t.stimuli.values()}
    with transaction.atomic():
        study.participants.all().delete()  # previews only
        study.trials.all().delete()
        _build(study, spec)
    for name in old_files:  # after the commit: a failed rebuild keeps the old files
        default_storage.delete(name)
    return study


def _build(study: Study, spec: dict) -> None:
    """Fill ``study`` (saved here) and create its trials from a validated spec."""
    if spec.get("modality") == "text":
        from .text_design import build_text_study

        build_text_study(study, spec)
        return
    model = ClassifierModel.objects.filter(name=spec["model"]).first()
    if model is None:
        raise StudyDesignError(f"model: no registered model named {spec['model']!r}")
    dataset = Dataset.objects.filter(name=spec["dataset"]).first()
    if dataset is None:
        raise StudyDesignError(f"dataset: no dataset named {spec['dataset']!r}")
    conditions = {c["name"]: c for c in spec["conditions"]}
    condition_models = _condition_models(spec, model)
    methods = {c["method"] for c in spec["conditions"]} - {NO_EXPLANATION}
    tasks = [t["type"] for t in spec["tasks"]]
    for t in tasks:
        if TASK_TYPES[t].needs_heatmaps and any(
            c["method"] == NO_EXPLANATION for c in spec["conditions"]
        ):
            raise StudyDesignError(
                f"tasks: {t} needs an explanation, but a condition has method 'none'"
            )
    plans = _item_plans(spec, condition_models, dataset)
    rng = random.Random(spec["trials"]["seed"])
    rng.shuffle(plans)
    n_practice = spec["trials"]["practice"]
    if len(plans) <= n_practice:
        raise StudyDesignError(
            f"trials.practice: {n_practice} practice items leave no main item "
            f"({len(plans)} usable items)"
        )
    practice, main = plans[:n_practice], plans[n_practice:]
    main.sort(key=lambda p: p.item.pk)  # Latin-square positions follow item order
    used_models = {m.pk: m for m in condition_models.values()}
    for used in used_models.values():
        _check_counts(spec, [p.under(used) for p in main], used, named=len(used_models) > 1)
    arms = arms_build(spec)
    explanations = {
        (e.model_id, e.item_id, e.method, e.target_index): e
        # several parameter variants of a method: the most recent artifact wins
        for e in Explanation.objects.filter(
            model__in={m.pk for m in condition_models.values()},
            item__dataset=dataset,
            method__in=methods,
        ).order_by("created_at", "id")
    }
    study.title = spec["title"]
    study.model, study.dataset = model, dataset
    study.method = spec["conditions"][0]["method"]
    study.status = StudyStatus.DRAFT
    study.max_participants = spec["recruitment"].get("max_participants")
    if spec["completion"].get("code"):
        study.completion_code = spec["completion"]["code"]
    if spec["recruitment"]["mode"] == "classroom" and not study.join_code:
        study.join_code = _join_code()
    study.spec = {
        **spec,
        "resolved": {
            "arms": [a.name for a in arms],
            "main_items": [p.item.name for p in main],
            "practice_items": [p.item.name for p in practice],
        },
    }
    study.save()
    builder = _TrialBuilder(study, condition_models, explanations, conditions, spec)
    names = list(conditions)
    for arm in arms:
        for block, task in enumerate(arm.tasks):
            for plan in practice:
                builder.add(
                    arm.name, block, TrialKind.PRACTICE, task, arm.condition_for(0, names), plan
                )
            for pos, plan in enumerate(main):
                builder.add(
                    arm.name, block, TrialKind.MAIN, task, arm.condition_for(pos, names), plan
                )
            if task != TaskType.REGION_ANNOTATION:
                for j in range(spec["trials"]["attention_checks"]):
                    pos = (j * 7 + 3) % len(main)
                    builder.add(
                        arm.name,
                        block,
                        TrialKind.ATTENTION,
                        task,
                        arm.condition_for(pos, names),
                        main[pos],
                        check=j,
                    )
    for j, q in enumerate(spec["questionnaires"]):
        builder.survey(100 + j, q)
    if len(set(condition_models.values())) > 1:
        _check_arm_counts(study, spec)


def _check_arm_counts(study: Study, spec: dict) -> None:
    """With a model per condition, whether the model is right depends on the condition: every
    arm's task block must still hold the model-correct / -incorrect trials asked for.

    Raises:
        StudyDesignError: naming the arm (the transaction then leaves nothing behind).
    """
    trials = spec["trials"]
    if trials.get("model_correct") is None:
        return
    counts: dict[tuple[str, int], list[int]] = {}
    for arm, block, right in study.trials.filter(kind=TrialKind.MAIN).values_list(
        "arm", "block", "model_correct"
    ):
        counts.setdefault((arm, block), [0, 0])[0 if right else 1] += 1
    for (arm, _), (n_right, n_wrong) in sorted(counts.items()):
        if n_right < trials["model_correct"] or n_wrong < trials["model_incorrect"]:
            raise StudyDesignError(
                f"trials: arm {arm!r} has {n_right} trials where its condition's model is "
                f"right and {n_wrong} where it is wrong, fewer than the "
                f"{trials['model_correct']} + {trials['model_incorrect']} asked; use more "
                "items or ask for fewer trials"
            )


def _join_code() -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
    while True:
        code = "".join(random.SystemRandom().choice(alphabet) for _ in range(6))
        if not Study.objects.filter(join_code=code).exists():
            return code


def _condition_models(spec: dict, model: ClassifierModel) -> dict[str, ClassifierModel]:
    """Each condition's model (its ``model`` field, else the spec's), checked: registered,
    the same classes as the spec's model, and the kind its method needs.

    Raises:
        StudyDesignError: naming the condition and what is wrong.
    """
    out: dict[str, ClassifierModel] = {}
    for i, c in enumerate(spec["conditions"]):
        name = c.get("model") or spec["model"]
        used = model if name == model.name else ClassifierModel.objects.filter(name=name).first()
        if used is None:
            known = sorted(ClassifierModel.objects.values_list("name", flat=True))[:10]
            raise StudyDesignError(
                f"conditions[{i}].model: no registered model named {name!r}; known: {known}"
            )
        if list(used.class_names) != list(model.class_names):
            raise StudyDesignError(
                f"conditions[{i}].model: {used.name!r} has other classes than the spec's model "
                f"{model.name!r}; conditions can only be compared on the same classes"
            )
        kind = STRUCTURED_METHODS.get(c["method"])
        if kind is not None and used.kind != kind:
            raise StudyDesignError(
                f"conditions[{i}]: method {c['method']!r} shows the evidence of a {kind} model, "
                f"and {used.name!r} is not one ({used.get_kind_display()}); set "
                f"conditions[{i}].model to one "
                f"(manage.py label_train DATASET --architecture {kind})"
            )
        out[c["name"]] = used
    return out


def _item_plans(spec, condition_models: dict[str, ClassifierModel], dataset) -> list[_ItemPlan]:
    """The usable items: labelled, with a prediction of every condition's model and the
    explanations each condition's method needs (for the candidates of its model)."""
    items = dataset.items.all().order_by("id")
    sel = spec.get("items") or {}
    if sel.get("split"):
        items = items.filter(split=sel["split"])
    if sel.get("names"):
        items = items.filter(name__in=sel["names"])
        missing = set(sel["names"]) - set(items.values_list("name", flat=True))
        if missing:
            raise StudyDesignError(f"items.names: not in the dataset: {sorted(missing)}")
    models = {m.pk: m for m in condition_models.values()}
    methods_of = {pk: set() for pk in models}
    for c in spec["conditions"]:
        if c["method"] != NO_EXPLANATION:
            methods_of[condition_models[c["name"]].pk].add(c["method"])
    predictions = {
        (p.model_id, p.item_id): p
        for p in Prediction.objects.filter(model__in=list(models), item__dataset=dataset)
    }
    have = set(
        Explanation.objects.filter(
            model__in=list(models),
            item__dataset=dataset,
            method__in=set().union(*methods_of.values()),
        ).values_list("model_id", "item_id", "method", "target_index")
    )
    first = condition_models[spec["conditions"][0]["name"]]
    plans, skipped = [], 0
    for item in items.select_related("dataset"):
        by_model = {}
        for pk, model in models.items():
            prediction, truth = predictions.get((pk, item.pk)), item.label_for(model)
            if prediction is None or truth is None:
                break
            k = min(4, model.num_classes)
            candidates = _candidates(prediction, truth, k)
            needed = set(candidates) | {prediction.predicted_index}
            if len(candidates) != k or any(
                (pk, item.pk, m, c) not in have for m in methods_of[pk] for c in needed
            ):
                break
            by_model[pk] = _ItemPlan(
                item, prediction, truth, prediction.predicted_index == truth, candidates
            )
        if len(by_model) != len(models):
            skipped += 1
            continue
        top = by_model[first.pk]
        plans.append(
            _ItemPlan(item, top.prediction, top.truth, top.correct, top.candidates, by_model)
        )
        if sel.get("limit") and len(plans) >= sel["limit"]:
            break
    if not plans:
        methods = set().union(*methods_of.values())
        several = " of every condition's model" if len(models) > 1 else ""
        raise StudyDesignError(
            f"no labelled item has a prediction{several} and explanations for every "
            f"condition's method ({', '.join(sorted(methods)) or 'none'}); run an explanation "
            "job first"
            + (
                " for each model on the same items (manage.py explain --split ... --limit ...)"
                if several
                else ""
            )
        )
    return plans


def _check_counts(
    spec: dict, main: list[_ItemPlan], model: ClassifierModel, named: bool = False
) -> None:
    trials = spec["trials"]
    n_right = sum(p.correct for p in main)
    n_wrong = len(main) - n_right
    if trials.get("model_correct") is not None:
        if trials["model_correct"] > n_right or trials["model_incorrect"] > n_wrong:
            raise StudyDesignError(
                f"trials: {trials['model_correct']} model-correct + "
                f"{trials['model_incorrect']} model-incorrect trials asked, but the main items "
                f"have {n_right} where the model is right and {n_wrong} where it is wrong"
                + (f" (model {model.name!r})" if named else "")
            )
    elif trials.get("per_participant") and trials["per_participant"] > len(main):
        raise StudyDesignError(
            f"trials.per_participant: {trials['per_participant']} asked, "
            f"{len(main)} main items available"
        )


class _TrialBuilder:
    def __init__(self, study, condition_models, explanations, conditions, spec):
        self.study = study
        self.condition_models = condition_models
        self.explanations, self.conditions = explanations, conditions
        self.wording = {
            t["type"]: {k: v for k, v in t.items() if k != "type"} for t in spec["tasks"]
        }
        self.stimuli = _Stimuli(study)
        self.index = 0
        self._sources: dict[int, Item] = {}

    def _explanation(self, model, plan: _ItemPlan, method: str, target: int) -> Explanation:
        return self.explanations[(model.pk, plan.item.pk, method, target)]

    def _saliency(self, model, plan: _ItemPlan, method: str, target: int) -> np.ndarray:
        return explanation_array_load(self._explanation(model, plan, method, target))

    def _next_index(self) -> int:
        self.index += 1
        return self.index - 1

    def _source_item(self, model: ClassifierModel, source_index: int) -> Item:
        """The training item a prototype was pushed to (``model.details``)."""
        item_id = (model.details or {}).get("prototype_items", {}).get(str(source_index))
        if item_id is None:
            raise StudyDesignError(
                f"model {model.name!r} does not record the training item of prototype source "
                f"{source_index}; retrain it with manage.py label_train --architecture protopnet"
            )
        if item_id not in self._sources:
            self._sources[item_id] = Item.objects.get(pk=item_id)
        return self._sources[item_id]

    def _prototype_panel(
        self, model, plan, target, view, shown: int, prefix: str, stimuli, method=PROTOTYPES
    ):
        """The top ``shown`` prototypes of class ``target``: for each, "this part" (the test
        image with the prototype's activation and its best cell boxed) and "looks like that"
        (the training image it was pushed to, its patch boxed), saved as stimuli slots
        ``{prefix}{j}r`` / ``{prefix}{j}s``; returns the public descriptions."""
        details = self._explanation(model, plan, method, target).details
        post_hoc = bool(details.get("post_hoc"))
        stored = len(details.get("prototypes", []))
        if stored < shown:
            raise StudyDesignError(
                f"conditions: {shown} prototypes per class asked, but the {method} explanations "
                f"of {model.name!r} hold {stored}; run the explanation job again with "
                f"--param top_k={shown}"
            )
        out = []
        for j, p in enumerate(details.get("prototypes", [])[:shown]):
            region, source = f"{prefix}{j}r", f"{prefix}{j}s"
            stimuli[region] = self.stimuli.save(
                (plan.item.pk, model.pk, method, "proto-region", target, j),
                lambda p=p: rendering.activation_picture(view, p["activation"], p["test_box"]),
            )
            src_item = self._prototype_source(model, p)
            src_view = self.stimuli.view(src_item, model)
            stimuli[source] = self.stimuli.save(
                (src_item.pk, model.pk, "proto-source", tuple(p["source_box"] or ())),
                lambda p=p, v=src_view: rendering.boxed_picture(v, p["source_box"]),
            )
            entry = {"region": region, "source": source, "similarity": round(p["similarity"], 2)}
            if post_hoc:
                entry["post_hoc"] = True
            out.append(entry)
        return out

    def _prototype_source(self, model, p: dict) -> Item:
        """The training item of a prototype: its own id (post-hoc) or the ProtoPNet's record."""
        if "source_item" in p:
            if p["source_item"] not in self._sources:
                self._sources[p["source_item"]] = Item.objects.get(pk=p["source_item"])
            return self._sources[p["source_item"]]
        return self._source_item(model, p["source_index"])

    def _concept_panel(self, model, plan, target, max_concepts: int | None) -> dict:
        """The concept contributions to class ``target``'s score, largest |contribution|
        first, at most ``max_concepts`` listed and the rest summed (Koh et al., ICML 2020)."""
        d = self._explanation(model, plan, CONCEPTS, target).details
        terms = [
            {"name": name.replace("_", " "), "activation": round(a, 2), "contribution": round(c, 2)}
            for name, a, c in zip(d["concepts"], d["activations"], d["contributions"], strict=True)
        ]
        order = sorted(range(len(terms)), key=lambda j: (-abs(d["contributions"][j]), j))
        k = len(terms) if max_concepts is None else min(max_concepts, len(terms))
        rest = [d["contributions"][j] for j in order[k:]]
        return {
            "terms": [terms[j] for j in order[:k]],
            "rest": {"count": len(rest), "contribution": round(sum(rest), 2)} if rest else None,
            "bias": round(d["bias"], 2),
            "score": round(d["logit"], 2),
        }

    def add(self, arm, block, kind, task, condition, plan: _ItemPlan, check: int | None = None):
        spec_condition = self.conditions[condition]
        method = spec_condition["method"]
        model = self.condition_models[condition]
        plan = plan.under(model)
        explained = method != NO_EXPLANATION
        item = plan.item
        view = self.stimuli.view(item, model)
        stimuli = {
            "photo": self.stimuli.save(
                (item.pk, model.input_size, model.resize_policy, "photo"), lambda: view
            )
        }
        options, option_classes, correct_value = [], {}, ""
        config = dict(self.wording.get(task, {}))
        config["explained"] = explained
        shown = spec_condition.get("prototypes", DEFAULT_PROTOTYPES_SHOWN)
        max_concepts = spec_condition.get("max_concepts")
        if method in EVIDENCE_METHODS:
            config["explanation"] = method
            group = (
                "candidates" if task in (TaskType.DISTINCTION, TaskType.OUTPUT_PREDICTION) else task
            )
            if "help" not in config and (method, group) in STRUCTURED_HELP:
                config["help"] = STRUCTURED_HELP[(method, group)]
        if task in SCALES:
            options = [{"value": v, "label": label} for v, label in SCALES[task]]
        pred = plan.prediction.predicted_index
        if task == TaskType.AGREEMENT and method in PROTOTYPE_METHODS:
            config["prototypes"] = self._prototype_panel(
                model, plan, pred, view, shown, "p", stimuli, method
            )
            config["rate_prototypes"] = kind != TrialKind.ATTENTION
        elif task == TaskType.AGREEMENT and method == CONCEPTS:
            config["concepts"] = self._concept_panel(model, plan, pred, max_concepts)
        elif task == TaskType.AGREEMENT and explained:
            stimuli["heatmap"] = self.stimuli.save(
                (item.pk, model.pk, method, "each", pred),
                lambda: rendering.overlays(view, self._saliency(model, plan, method, pred)[None])[
                    0
                ],
            )
        elif task in (TaskType.DISTINCTION, TaskType.OUTPUT_PREDICTION):
            order = list(plan.candidates)
            random.Random(f"{self.study.pk}:{item.pk}").shuffle(order)
            joint = None
            if explained and method not in EVIDENCE_METHODS:
                # one colour scale for the k maps shown together (signed or not)
                maps = np.stack([self._saliency(model, plan, method, c) for c in order])
                joint = rendering.overlays(view, maps, joint=True)
            for pos, cls in enumerate(order):
                option = {"value": str(pos), "label": model.class_name(cls)}
                if joint is not None:
                    slot = f"h{pos}"
                    stimuli[slot] = self.stimuli.save(
                        (item.pk, model.pk, method, "joint", tuple(order), pos),
                        lambda picture=joint[pos]: picture,
                    )
                    option["image"] = slot
                elif method in PROTOTYPE_METHODS:
                    option["prototypes"] = self._prototype_panel(
                        model, plan, cls, view, shown, f"c{pos}p", stimuli, method
                    )
                elif method == CONCEPTS:
                    option["concepts"] = self._concept_panel(model, plan, cls, max_concepts)
                options.append(option)
                option_classes[str(pos)] = cls
            key_class = plan.truth if task == TaskType.DISTINCTION else pred
            correct_value = str(order.index(key_class))
        elif task == TaskType.SIMILARITY and method in PROTOTYPE_METHODS:
            # the model's own prototype (or the nearest post-hoc patch): its best-matching
            # patch of this image beside the training patch it comes from
            top = self._explanation(model, plan, method, pred).details["prototypes"][0]
            src_item = self._prototype_source(model, top)
            src_view = self.stimuli.view(src_item, model)
            stimuli["region"] = self.stimuli.save(
                (item.pk, model.pk, method, "proto-crop", pred),
                lambda: rendering.box_crop(view, top["test_box"], SIMILARITY_CROP),
            )
            stimuli["prototype"] = self.stimuli.save(
                (src_item.pk, model.pk, "proto-source-crop", tuple(top["source_box"] or ())),
                lambda: rendering.box_crop(src_view, top["source_box"], SIMILARITY_CROP),
            )
        elif task == TaskType.SIMILARITY:
            prototype = self._prototype(model, plan, method)
            if prototype is None:
                return None  # no other item predicted as this class: nothing to compare
            stimuli["region"] = self.stimuli.save(
                (item.pk, model.pk, method, "crop", pred),
                lambda: _peak_crop(
                    view, self._saliency(model, plan, method, pred), SIMILARITY_CROP
                ),
            )
            proto_view = self.stimuli.view(prototype.item, model)
            stimuli["prototype"] = self.stimuli.save(
                (prototype.item.pk, model.pk, method, "crop", pred),
                lambda: _peak_crop(
                    proto_view, self._saliency(model, prototype, method, pred), SIMILARITY_CROP
                ),
            )
        elif task == TaskType.REGION_ANNOTATION:
            config["size"] = list(view.shape[:2])
        if kind == TrialKind.ATTENTION:
            target = options[-1] if options else None
            if target is None:
                return None
            correct_value = target["value"]
            config["attention"] = (
                f"This is an attention check. Please choose \u201c{target['label']}\u201d, "
                "whatever you see."
            )
            config["check"] = check
        if kind == TrialKind.PRACTICE and task == TaskType.AGREEMENT:
            config["feedback_key"] = "model_correct"
        return Trial.objects.create(
            study=self.study,
            index=self._next_index(),
            block=block,
            kind=kind,
            arm=arm,
            condition=condition,
            task_type=task,
            item=item,
            predicted_index=pred,
            predicted_label=model.class_name(pred),
            true_index=plan.truth,
            model_correct=plan.correct,
            options=options,
            option_classes=option_classes,
            correct_value=correct_value,
            stimuli=stimuli,
            config=config,
        )

    def _prototype(self, model, plan: _ItemPlan, method: str) -> _ItemPlan | None:
        """The most confident other item predicted as the same class (a stand-in prototype
        for models without prototypes of their own)."""
        best = None
        for (model_id, item_id, m, target), _ in self.explanations.items():
            if (
                model_id != model.pk
                or m != method
                or target != plan.prediction.predicted_index
                or item_id == plan.item.pk
            ):
                continue
            other = Prediction.objects.filter(model=model, item_id=item_id).first()
            if other is None or other.predicted_index != target:
                continue
            if best is None or other.probability > best.prediction.probability:
                best = _ItemPlan(other.item, other, -1, False, [])
        return best

    def survey(self, block: int, q: dict) -> Trial:
        return survey_trial_create(self.study, self._next_index(), block, q)


def survey_trial_create(study: Study, index: int, block: int, q: dict) -> Trial:
    """One questionnaire page (spec ``questionnaires[]`` entry ``q``) shown after the trials."""
    task = q["type"]
    return Trial.objects.create(
        study=study,
        index=index,
        block=block,
        kind=TrialKind.SURVEY,
        arm="",
        task_type=task,
        options=[{"value": v, "label": label} for v, label in SCALES.get(task, [])],
        config={k: v for k, v in q.items() if k != "type"},
    )


def study_launch(*, study: Study) -> Study:
    """Open a draft study to participants; its spec is frozen from now on.

    Raises:
        StudyDesignError: the study is closed.
    """
    if study.status == StudyStatus.CLOSED:
        raise StudyDesignError("a closed study cannot be launched again")
    study.status = StudyStatus.OPEN
    if study.launched_at is None:
        study.launched_at = timezone.now()
    study.save(update_fields=["status", "launched_at"])
    return study


def trial_rows_load(study: Study) -> list[dict]:
    """The fields of every trial that :func:`trial_order_draw` needs (one query)."""
    return list(study.trials.values("id", "arm", "block", "kind", "index", "model_correct"))


def trial_order_draw(
    study: Study, arm: str, seed: int, *, rows: list[dict] | None = None
) -> list[int]:
    """A participant's trial ids in order, drawn with ``seed`` (recorded on the participant).

    Per task block: the practice trials (fixed order), then the main trials (the
    model-correct / model-incorrect counts of the spec, or ``per_participant``, or all),
    shuffled unless the order is "fixed", with the attention checks spread evenly among them;
    then the questionnaires. Same seed, same order.
    """
    spec = study.spec
    trials_spec = spec.get("trials", {})
    rng = random.Random(seed)
    rows = [
        r for r in (rows if rows is not None else trial_rows_load(study)) if r["arm"] in (arm, "")
    ]
    order: list[int] = []
    for block in sorted({r["block"] for r in rows if r["kind"] != TrialKind.SURVEY}):
        in_block = [r for r in rows if r["block"] == block]
        by_index = sorted(in_block, key=lambda r: r["index"])
        practice = [r["id"] for r in by_index if r["kind"] == TrialKind.PRACTICE]
        main = [r for r in by_index if r["kind"] == TrialKind.MAIN]
        checks = [r["id"] for r in by_index if r["kind"] == TrialKind.ATTENTION]
        if trials_spec.get("model_correct") is not None:
            right = [r for r in main if r["model_correct"]]
            wrong = [r for r in main if not r["model_correct"]]
            main = rng.sample(right, trials_spec["model_correct"]) + rng.sample(
                wrong, trials_spec["model_incorrect"]
            )
        elif trials_spec.get("per_participant"):
            main = rng.sample(main, min(trials_spec["per_participant"], len(main)))
        ids = [r["id"] for r in main]
        if trials_spec.get("order", "random") == "random":
            rng.shuffle(ids)
        else:
            ids = [r["id"] for r in sorted(main, key=lambda r: r["index"])]
        for j, check in enumerate(checks):
            at = round((j + 1) * len(ids) / (len(checks) + 1)) + j
            ids.insert(at, check)
        order += practice + ids
    order += [
        r["id"] for r in sorted(rows, key=lambda r: r["index"]) if r["kind"] == TrialKind.SURVEY
    ]
    return order
