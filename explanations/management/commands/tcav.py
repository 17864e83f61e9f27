"""``python manage.py tcav``: TCAV of a registered model on researcher-uploaded concept sets.

TCAV (Kim et al., "Interpretability Beyond Feature Attribution: Quantitative Testing with
Concept Activation Vectors (TCAV)", ICML 2018) asks whether a class's logit is sensitive to a
concept defined by example images. A thin adapter over
:func:`explanations.concepts.concept_sets.concept_sets_read` (the sets) and
:func:`explanations.concepts.concept_sets.tcav_for_model` (the test); runs in this process on
the CPU, no worker needed. Every bad input ends in a ``CommandError`` before anything is written.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import CommandError

from explanations.concepts.concept_sets import (
    DEFAULT_N_RANDOM,
    ConceptSetError,
    concept_sets_read,
    concept_sources_parse,
    is_random_name,
    rgb_preprocess,
    tcav_for_model,
)
from explanations.imageio import ImageDecodeError
from explanations.modelio import CheckpointError
from explanations.models import ClassifierModel, Dataset, Item
from explanations.services.registry import classifier_load, item_model_view

from ._options import ExampleCommand

EPILOG = """\
A concept is a folder or a .zip of example images (png, jpg, webp, ...; __MACOSX and
dotfiles ignored); each image's central square is resized to the model's input size. A set
with an undecodable image, fewer than --min-images or more than --max-images images is
refused as a whole. Names: 1-40 letters, digits, '_' or '-'; names starting with "random"
are random sets.

Random sets: upload >= 3 with --random (random photos of your domain, as in the paper;
random0 stands in for a concept in the null runs), or let --randoms N generate N+1 sets of
greyscale noise and photo crops (scikit-image's bundled images). Generated sets are grey:
colour concepts may differ from them by colour alone, so upload random sets for colour models.

The inputs are the dataset's labelled items of --class (default: its most frequent class),
the first --limit by id. For each layer every concept gets one CAV per random counterpart;
its TCAV scores (fraction of inputs whose class logit rises along the CAV) are t-tested
against random-vs-random scores, with a Bonferroni correction over concepts x layers.

Examples:
  python manage.py tcav "Birds ResNet" --dataset "Birds val" --class cardinal \\
      --concept red=concepts/red --concept striped=concepts/striped.zip \\
      --random random0=rand/0 --random random1=rand/1 --random random2=rand/2 \\
      --json tcav-cardinal.json
  python manage.py tcav "Birds ResNet" --dataset "Birds val" --split test --limit 50 \\
      --concept dotted=dotted.zip --randoms 10 --layer layer3 --layer layer4
"""


class Command(ExampleCommand):
    help = (
        "TCAV (Kim et al., ICML 2018) of a registered model on concept sets given as folders\n"
        "or zip archives of images: for one class of a dataset, the TCAV score of each concept\n"
        "at each layer, with a t-test against random concepts (Bonferroni-corrected).\n"
        'Example: python manage.py tcav "Birds ResNet" --dataset "Birds val" --class cardinal '
        "--concept striped=striped.zip --randoms 10"
    )
    epilog = EPILOG

    def add_arguments(self, parser):
        parser.add_argument("model", metavar="MODEL_NAME", help="Name of a registered model.")
        parser.add_argument(
            "--concept",
            action="append",
            default=[],
            required=True,
            metavar="NAME=PATH",
            help="A concept set: a folder or a .zip of images (repeatable).",
        )
        parser.add_argument(
            "--random",
            action="append",
            default=[],
            metavar="randomN=PATH",
            help="An uploaded random set, name starting with 'random' (repeatable; >= 3).",
        )
        parser.add_argument(
            "--randoms",
            type=int,
            metavar="N",
            help=(
                f"Generate N+1 random sets, N counterparts per concept (default {DEFAULT_N_RANDOM}"
                " when no --random is given; >= 2)."
            ),
        )
        parser.add_argument("--dataset", required=True, metavar="NAME", help="Dataset name.")
        parser.add_argument(
            "--split", default="", metavar="SPLIT", help="Only items of this split (default all)."
        )
        parser.add_argument(
            "--class",
            dest="class_name",
            metavar="CLASSNAME",
            help="Target class: a model class name, or its index (default: the most frequent).",
        )
        parser.add_argument(
            "--limit", type=int, default=100, metavar="N", help="At most N inputs (default 100)."
        )
        parser.add_argument(
            "--layer",
            action="append",
            default=[],
            metavar="LAYER",
            help="Dotted module name (repeatable; default the model's target_layer).",
        )
        parser.add_argument("--json", metavar="PATH", help="Also write the results as JSON.")
        parser.add_argument(
            "--alpha", type=float, default=0.05, help="Significance level (default 0.05)."
        )
        parser.add_argument(
            "--classifier",
            choices=["sgd", "logistic"],
            default="sgd",
            help="CAV classifier (default sgd, as in the paper's code).",
        )
        parser.add_argument("--seed", type=int, default=0, help="Seeds CAVs and generated sets.")
        parser.add_argument(
            "--min-images", type=int, default=10, metavar="N", help="Per set (default 10)."
        )
        parser.add_argument(
            "--max-images", type=int, default=500, metavar="N", help="Per set (default 500)."
        )

    def handle(self, *args, **opts):
        if opts["limit"] < 1:
            raise CommandError(f"--limit must be >= 1, got {opts['limit']}")
        if not 0 < opts["alpha"] < 1:
            raise CommandError(f"--alpha must lie in (0, 1), got {opts['alpha']}")
        if not 4 <= opts["min_images"] <= opts["max_images"]:
            raise CommandError("need 4 <= --min-images <= --max-images")
        try:
            sources = concept_sources_parse([*opts["concept"], *opts["random"]])
        except ConceptSetError as exc:
            raise CommandError(str(exc)) from None
        concept_names = list(concept_sources_parse(opts["concept"]))
        random_names = [n for n in sources if n not in concept_names]
        bad = [n for n in concept_names if is_random_name(n)]
        if bad:
            raise CommandError(f"--concept {bad}: names starting with 'random' go to --random")
        bad = [n for n in random_names if not is_random_name(n)]
        if bad:
            raise CommandError(f"--random {bad}: random set names must start with 'random'")
        if random_names and opts["randoms"] is not None:
            raise CommandError("give either --random sets or --randoms N, not both")
        if random_names and len(random_names) < 3:
            raise CommandError(
                f"{len(random_names)} --random set(s); the t-test needs >= 3 (one for the null "
                f"runs, >= 2 counterparts), or use --randoms N"
            )
        n_random = None
        if not random_names:
            n_random = DEFAULT_N_RANDOM if opts["randoms"] is None else opts["randoms"]
        if n_random is not None and n_random < 2:
            raise CommandError(f"--randoms must be >= 2, got {n_random}")
        out = _json_target(opts["json"])

        model = _by_name(ClassifierModel, opts["model"], "model")
        dataset = _by_name(Dataset, opts["dataset"], "dataset")
        if dataset.modality != "image":
            raise CommandError(f"dataset {dataset.name!r} holds {dataset.modality}, not images")
        candidates = _labelled_items(dataset, model, opts["split"])
        target = _target(model, opts["class_name"], candidates)
        if opts["class_name"] is None:
            self.stdout.write(
                f"no --class: using {model.class_name(target)!r}, the most frequent class"
            )
        items = [item for item, label in candidates if label == target][: opts["limit"]]
        if not items:
            where = f" in split {opts['split']!r}" if opts["split"] else ""
            raise CommandError(
                f"dataset {dataset.name!r} has no labelled items of class "
                f"{model.class_name(target)!r}{where}"
            )
        layers = opts["layer"] or [model.target_layer]
        if not all(layers):
            raise CommandError(f"model {model.name!r} has no target_layer; pass --layer")

        try:
            net = classifier_load(model)
        except (CheckpointError, OSError) as exc:
            raise CommandError(f"model {model.name!r} cannot be loaded: {exc}") from None
        modules = dict(net.named_modules())
        unknown = [layer for layer in layers if layer not in modules]
        if unknown:
            known = [k for k in modules if k][-10:]
            raise CommandError(f"unknown layer(s) {unknown}; the model's last modules: {known}")

        try:
            sets = concept_sets_read(
                sources,
                size=model.input_size,
                min_images=opts["min_images"],
                max_images=opts["max_images"],
                max_total_bytes=settings.STUDYPLATFORM_MAX_ZIP_BYTES,
                max_pixels=settings.STUDYPLATFORM_MAX_IMAGE_PIXELS,
            )
        except ConceptSetError as exc:
            raise CommandError(str(exc)) from None
        for s in sets.values():
            skipped = f", {len(s.skipped)} non-image file(s) skipped" if s.skipped else ""
            self.stdout.write(f"{s.name}: {len(s.images)} images from {s.source}{skipped}")

        try:
            inputs = np.stack([item_model_view(item=item, model=model) for item in items])
        except (ImageDecodeError, OSError) as exc:
            raise CommandError(f"a dataset item cannot be read: {exc}") from None
        self.stdout.write(
            f"{len(items)} input(s) of class {model.class_name(target)!r} from {dataset.name!r}"
            + (f" (split {opts['split']!r})" if opts["split"] else "")
        )
        concepts = {n: sets[n].images for n in concept_names}
        randoms = [sets[n].images for n in random_names] or None
        if randoms is None:
            self.stdout.write(
                self.style.WARNING(
                    f"generating {n_random + 1} greyscale random sets (noise and photo crops); "
                    "colour concepts may differ from them by colour alone: upload random sets "
                    "with --random for a fairer test"
                )
            )
        try:
            results = tcav_for_model(
                net,
                rgb_preprocess(model.normalization_mean, model.normalization_std),
                concepts,
                randoms,
                inputs,
                target,
                layers,
                n_random=n_random,
                random_seed=opts["seed"],
                classifier=opts["classifier"],
                alpha=opts["alpha"],
                seed=opts["seed"],
            )
        except ValueError as exc:
            raise CommandError(f"TCAV failed: {exc}") from None

        self.stdout.write(_table(results))
        if out is not None:
            payload = {
                "method": "TCAV (Kim et al., ICML 2018)",
                "model": model.name,
                "dataset": dataset.name,
                "split": opts["split"],
                "class": model.class_name(target),
                "target": target,
                "items": [item.name for item in items],
                "concepts": {
                    n: {"source": s.source, "n_images": len(s.images), "skipped": s.skipped}
                    for n, s in sets.items()
                },
                "random_sets": "uploaded" if random_names else "generated",
                "alpha": opts["alpha"],
                "classifier": opts["classifier"],
                "seed": opts["seed"],
                "results": {layer: r.as_dict() for layer, r in results.items()},
            }
            _write_atomic(out, json.dumps(payload, indent=2) + "\n")
            self.stdout.write(self.style.SUCCESS(f"wrote {out}"))


def _by_name(model_cls, name: str, what: str):
    found = model_cls.objects.filter(name=name).first()
    if found is None:
        known = list(model_cls.objects.order_by("name").values_list("name", flat=True)[:20])
        raise CommandError(f"no {what} named {name!r}; known: {known}")
    return found


def _json_target(path: str | None) -> Path | None:
    if not path:
        return None
    out = Path(path)
    if out.is_dir():
        raise CommandError(f"--json {path}: is a directory")
    if not out.parent.is_dir():
        raise CommandError(f"--json {path}: folder {out.parent} does not exist")
    return out


def _labelled_items(dataset: Dataset, model: ClassifierModel, split: str) -> list[tuple]:
    """(item, class index in the model's classes) of the dataset's labelled images."""
    qs = Item.objects.filter(dataset=dataset, label_index__isnull=False).exclude(image="")
    if split:
        qs = qs.filter(split=split)
    pairs = []
    for item in qs.select_related("dataset").order_by("id"):
        label = item.label_for(model)
        if label is not None:
            pairs.append((item, label))
    return pairs


def _target(model: ClassifierModel, class_name: str | None, candidates: list[tuple]) -> int:
    names = [str(n) for n in model.class_names]
    if class_name is None:
        if not candidates:
            raise CommandError("the dataset has no labelled items of the model's classes")
        counts = Counter(label for _, label in candidates)
        return min(counts, key=lambda k: (-counts[k], k))
    if class_name in names:
        return names.index(class_name)
    if class_name.isdigit() and int(class_name) < len(names):
        return int(class_name)
    shown = names[:20] + (["..."] if len(names) > 20 else [])
    raise CommandError(f"--class {class_name!r} is not a class of {model.name!r}: {shown}")


def _table(results: dict) -> str:
    rows = [("concept", "layer", "CAV acc", "TCAV mean ± sd", "p-value", "significant")]
    first = next(iter(results.values()))
    for layer, r in results.items():
        for c in r.concepts.values():
            verdict = "yes" if c.significant_bonferroni else ("no*" if c.significant else "no")
            rows.append(
                (
                    c.name,
                    layer,
                    f"{c.mean_cav_accuracy:.2f}",
                    f"{c.mean:.2f} ± {c.std:.2f}",
                    f"{c.p_value:.3g}",
                    verdict,
                )
            )
        rows.append(
            (
                "(random)",
                layer,
                f"{np.mean(r.random_cav_accuracy):.2f}",
                f"{np.mean(r.random_scores):.2f} ± {np.std(r.random_scores, ddof=1):.2f}",
                "",
                "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(
        f"TCAV at target {first.target}, {first.n_inputs} input(s), {first.n_random} random "
        f"counterparts per concept; significant: two-sided t-test against random-vs-random "
        f"scores, Bonferroni over {first.bonferroni_m} test(s): p < {first.bonferroni_alpha:.3g}"
        f" (no* = p < {first.alpha:g} before the correction)"
    )
    return "\n".join(line.rstrip() for line in lines)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
