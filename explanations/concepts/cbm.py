"""Concept-bottleneck models on small greyscale images (no Django).

Koh, Nguyen, Tang, Mussmann, Pierson, Kim & Liang, "Concept Bottleneck Models", ICML 2020:
a model ``x -> c -> y`` whose class prediction sees the input only through predicted
human-specified concepts ``c``. Here:

* ``g`` (:attr:`ConceptBottleneckModel.concept_net`): a :class:`labeling.training.SmallCNN`
  whose C output units are concept logits;
* the bottleneck: ``a = sigmoid(g(x))``, one activation in [0, 1] per concept;
* ``f`` (:attr:`ConceptBottleneckModel.head`): one linear layer ``C -> K``, so the logit of
  class ``t`` is exactly ``sum_c W[t, c] * a[c] + b[t]`` (:func:`explain`).

Concept supervision comes from a researcher-supplied **attribute table** (class -> binary
concepts, :class:`AttributeTable`); each training image gets the concept vector of its class.
This is class-level supervision, as in Koh et al.'s CUB set-up after their majority-voting
clean-up (their Sec. 4: a concept is kept per class), not per-image annotation; per-image
labels can be passed instead (``concept_labels=``).

Training modes (Koh et al., Sec. 3):

* ``"joint"``: minimise ``CE(f(sigmoid(g(x))), y) + lambda * BCE(g(x), c)`` end to end. Koh
  et al. sum the per-concept losses; here the BCE is the *mean* over concepts, so
  ``concept_weight`` = lambda / C of theirs.
* ``"sequential"``: train ``g`` on the concept loss alone, then freeze it and train ``f`` on
  ``g``'s predicted concept activations.
* ``"independent"``: train ``g`` as in sequential, but ``f`` on the *true* concepts (at test
  time ``f`` still sees ``g``'s predictions).

Preprocessing, determinism and the progress callback are those of :mod:`labeling.training`
(uint8 pixels, ``(pixel / 255 - mean) / std``; ``torch.use_deterministic_algorithms``, a
forked, seeded torch RNG and batches drawn from ``np.random.default_rng(seed)``): the same data,
config, torch build and thread count give bit-identical weights.

Weights are saved as safetensors (:func:`cbm_save` / :func:`cbm_load`) with the concept and
class names and the architecture in the file's metadata; nothing is ever unpickled.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from labeling.idx import FASHION_MNIST_CLASSES
from labeling.training import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    Progress,
    SmallCNN,
    TrainConfig,
    WeightsError,
    _deterministic,
    _images_check,
    _labels_check,
    _one_cycle,
    _steps,
    _to_input,
    safetensors_write,
)

__all__ = [
    "FASHION_MNIST_ATTRIBUTES",
    "FASHION_MNIST_CONCEPT_DESCRIPTIONS",
    "MODES",
    "AttributeTable",
    "CBMConfig",
    "ConceptBottleneckModel",
    "ConceptContribution",
    "ConceptExplanation",
    "attribute_table_load",
    "attribute_table_save",
    "cbm_load",
    "cbm_save",
    "concept_accuracy",
    "evaluate",
    "explain",
    "predict_concepts",
    "train_cbm",
]

#: Training modes of Koh et al. (2020), Sec. 3.
MODES = ("joint", "sequential", "independent")

_MINUS = "\u2212"  # typographic minus sign, as in printed equations


# --------------------------------------------------------------------------- attribute table


@dataclass(frozen=True)
class AttributeTable:
    """Class -> binary concept table.

    Attributes:
        classes: K class names, index = label.
        concepts: C concept names (unique, non-empty).
        matrix: uint8 ``(K, C)`` of 0 / 1; ``matrix[k, c] == 1``: class k has concept c.
        descriptions: optional concept name -> one-line meaning (documentation only).
    """

    classes: tuple[str, ...]
    concepts: tuple[str, ...]
    matrix: np.ndarray
    descriptions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "concepts", tuple(str(c) for c in self.concepts))
        m = np.asarray(self.matrix)
        if m.shape != (len(self.classes), len(self.concepts)):
            raise ValueError(
                f"matrix must be (classes, concepts) = ({len(self.classes)}, "
                f"{len(self.concepts)}), got {m.shape}"
            )
        if m.size and not np.isin(m, (0, 1)).all():
            raise ValueError("matrix values must be 0 or 1")
        for kind, names in (("class", self.classes), ("concept", self.concepts)):
            if not names:
                raise ValueError(f"at least one {kind} is needed")
            if any(not n.strip() for n in names):
                raise ValueError(f"{kind} names must not be empty")
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"duplicate {kind} names: {dup}")
        m = m.astype(np.uint8)
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_concepts(self) -> int:
        return len(self.concepts)

    def concept_labels(self, labels) -> np.ndarray:
        """Per-image concept labels from the images' classes: float32 ``(N, C)`` of 0 / 1."""
        y = _labels_check(labels, len(np.asarray(labels)), self.num_classes)
        return self.matrix[y].astype(np.float32)

    def unique_codes(self) -> bool:
        """Whether every class has a different concept vector (else perfect concepts cannot
        tell some classes apart)."""
        return len({row.tobytes() for row in self.matrix}) == self.num_classes


#: What each concept of :data:`FASHION_MNIST_ATTRIBUTES` means.
FASHION_MNIST_CONCEPT_DESCRIPTIONS: dict[str, str] = {
    "upper_body": "covers the torso (tops, dresses, coats)",
    "lower_body": "covers the legs or hips (trousers; the skirt of a dress)",
    "has_sleeves": "has sleeves of any length",
    "long_sleeves": "sleeves reach the wrist",
    "front_opening": "opens down the front (buttons or a zip)",
    "outerwear": "worn over other clothes (coats, jackets)",
    "two_legs": "two separate trouser legs",
    "footwear": "worn on the feet",
    "open_toe": "open, strappy shoe (toes or foot visible)",
    "ankle_high": "shaft reaches or passes the ankle",
    "has_handle": "carried by a handle or strap",
}

_FM_ROWS: dict[str, tuple[str, ...]] = {
    "T-shirt/top": ("upper_body", "has_sleeves"),
    "Trouser": ("lower_body", "two_legs"),
    "Pullover": ("upper_body", "has_sleeves", "long_sleeves"),
    "Dress": ("upper_body", "lower_body"),
    "Coat": ("upper_body", "has_sleeves", "long_sleeves", "front_opening", "outerwear"),
    "Sandal": ("footwear", "open_toe"),
    "Shirt": ("upper_body", "has_sleeves", "long_sleeves", "front_opening"),
    "Sneaker": ("footwear",),
    "Bag": ("has_handle",),
    "Ankle boot": ("footwear", "ankle_high"),
}

#: A **hand-made** class -> concept table for Fashion-MNIST (11 concepts, written for this
#: module from the class names and a look at the images; not from any annotated source, not
#: validated with annotators). It is class-level: it is wrong for the many items that differ
#: from their class's typical member: "T-shirt/top" also holds sleeveless tops, many Fashion-MNIST
#: shirts have short sleeves, some dresses have sleeves (here: none), some bags have no visible
#: handle, some ankle boots have heels and laces. Every class gets a different concept vector,
#: so perfect concepts would determine the class. Concept meanings:
#: :data:`FASHION_MNIST_CONCEPT_DESCRIPTIONS`.
FASHION_MNIST_ATTRIBUTES = AttributeTable(
    classes=tuple(FASHION_MNIST_CLASSES),
    concepts=tuple(FASHION_MNIST_CONCEPT_DESCRIPTIONS),
    matrix=np.array(
        [
            [int(c in _FM_ROWS[k]) for c in FASHION_MNIST_CONCEPT_DESCRIPTIONS]
            for k in FASHION_MNIST_CLASSES
        ],
        np.uint8,
    ),
    descriptions=dict(FASHION_MNIST_CONCEPT_DESCRIPTIONS),
)


def attribute_table_load(path: str | Path, classes: Sequence[str] | None = None) -> AttributeTable:
    """Read a class -> concept table from CSV.

    Format: a header ``class,<concept 1>,<concept 2>,...`` then one row per class with 0 / 1
    per concept. Blank lines and lines starting with ``#`` are ignored; surrounding spaces
    are stripped; a UTF-8 byte-order mark is accepted.

    Args:
        path: the CSV file.
        classes: the model's class names, index = label. Given: every row must name one of
            them, every class needs a row, and the table is returned in this order.
            ``None``: the classes are the rows, in file order.

    Raises:
        ValueError: naming the file line and row: a missing or malformed header (first
            column not ``class``, no concepts, empty or duplicate concept names), a row with
            the wrong number of fields, an empty or unknown class name, a class listed twice,
            a value other than 0 or 1; classes without a row; an empty table.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ValueError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path.name}: not UTF-8 text") from None
    lines = [
        (i, row)
        for i, row in enumerate(csv.reader(text.splitlines()), start=1)
        if row and any(v.strip() for v in row) and not row[0].lstrip().startswith("#")
    ]
    if not lines:
        raise ValueError(f"{path.name}: empty attribute table")
    line_no, header = lines[0]
    header = [h.strip() for h in header]
    if header[0].lower() != "class":
        raise ValueError(
            f"{path.name}, line {line_no}: header must start with 'class', got {header[0]!r}"
        )
    concepts = header[1:]
    if not concepts:
        raise ValueError(f"{path.name}, line {line_no}: header names no concepts")
    if any(not c for c in concepts):
        raise ValueError(f"{path.name}, line {line_no}: empty concept name in the header")
    dup = sorted({c for c in concepts if concepts.count(c) > 1})
    if dup:
        raise ValueError(f"{path.name}, line {line_no}: duplicate concept names {dup}")
    known = None if classes is None else [str(c) for c in classes]
    rows: dict[str, list[int]] = {}
    for line_no, row in lines[1:]:
        row = [v.strip() for v in row]
        name = row[0]
        where = f"{path.name}, line {line_no} (class {name!r})"
        if len(row) != len(header):
            raise ValueError(f"{where}: {len(row)} fields, the header has {len(header)}")
        if not name:
            raise ValueError(f"{path.name}, line {line_no}: empty class name")
        if known is not None and name not in known:
            raise ValueError(f"{where}: unknown class; the classes are {known}")
        if name in rows:
            raise ValueError(f"{where}: duplicate row for this class")
        values = []
        for concept, v in zip(concepts, row[1:], strict=True):
            if v not in ("0", "1"):
                raise ValueError(f"{where}: concept {concept!r} must be 0 or 1, got {v!r}")
            values.append(int(v))
        rows[name] = values
    if not rows:
        raise ValueError(f"{path.name}: the table has a header but no class rows")
    order = list(rows) if known is None else known
    missing = [c for c in order if c not in rows]
    if missing:
        raise ValueError(f"{path.name}: no row for classes {missing}")
    return AttributeTable(
        classes=tuple(order),
        concepts=tuple(concepts),
        matrix=np.array([rows[c] for c in order], np.uint8),
    )


def attribute_table_save(table: AttributeTable, path: str | Path) -> Path:
    """Write ``table`` as the CSV that :func:`attribute_table_load` reads."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", *table.concepts])
        for name, row in zip(table.classes, table.matrix, strict=True):
            writer.writerow([name, *(int(v) for v in row)])
    return path


# --------------------------------------------------------------------------------- the model


class ConceptBottleneckModel(nn.Module):
    """``x -> concept logits (SmallCNN, C units) -> sigmoid -> Linear(C, K) -> class logits``.

    Args:
        concept_names: the C concepts (C >= 2), in the order of the concept units.
        class_names: the K classes (K >= 2), index = label.
        input_size, grey, width, embedding_dim, mean, std: as for
            :class:`labeling.training.SmallCNN` (the backbone).
    """

    #: The backbone's last convolution (for Grad-CAM or TCAV).
    target_layer = "concept_net.features.conv2"

    def __init__(
        self,
        concept_names: Sequence[str],
        class_names: Sequence[str],
        input_size: int = 28,
        grey: bool = True,
        width: int = 16,
        *,
        embedding_dim: int = 128,
        mean: float = FASHION_MNIST_MEAN,
        std: float = FASHION_MNIST_STD,
    ) -> None:
        super().__init__()
        self.concept_names = [str(c) for c in concept_names]
        self.class_names = [str(c) for c in class_names]
        if len(self.concept_names) < 2:
            raise ValueError(f"need >= 2 concepts, got {len(self.concept_names)}")
        if len(self.class_names) < 2:
            raise ValueError(f"need >= 2 classes, got {len(self.class_names)}")
        self.concept_net = SmallCNN(
            len(self.concept_names),
            input_size=input_size,
            grey=grey,
            width=width,
            embedding_dim=embedding_dim,
            mean=mean,
            std=std,
        )
        self.head = nn.Linear(len(self.concept_names), len(self.class_names))

    # the preprocessing of labeling.training.predict reads these from the model
    @property
    def grey(self) -> bool:
        return self.concept_net.grey

    @property
    def mean(self) -> float:
        return self.concept_net.mean

    @property
    def std(self) -> float:
        return self.concept_net.std

    @property
    def input_size(self) -> int:
        return self.concept_net.input_size

    @property
    def num_concepts(self) -> int:
        return len(self.concept_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def concept_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Concept logits, float32 ``(N, C)``; ``x`` normalised ``(N, 1 or 3, S, S)``."""
        return self.concept_net(x)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(concept logits (N, C), concept activations (N, C) in [0, 1], class logits
        (N, K))``."""
        c_logits = self.concept_net(x)
        acts = torch.sigmoid(c_logits)
        return c_logits, acts, self.head(acts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, float32 ``(N, K)``."""
        return self.head(torch.sigmoid(self.concept_net(x)))


# ------------------------------------------------------------------------------ training


@dataclass
class CBMConfig(TrainConfig):
    """:class:`labeling.training.TrainConfig` (backbone, optimiser, schedule, seed,
    normalisation; ``folds`` / ``fold_epochs`` are unused) plus:

    Attributes:
        mode: ``"joint"``, ``"sequential"`` or ``"independent"`` (:data:`MODES`).
        concept_weight: lambda of the joint loss ``CE + lambda * mean-over-concepts BCE``.
        head_epochs: epochs of the ``c -> y`` stage of sequential / independent training.
        head_lr: peak learning rate of the ``c -> y`` layer (``None``: ``lr``): of its stage in
            sequential / independent training, of its parameter group in joint training. The
            default 0.1 was chosen on Fashion-MNIST, joint mode, one epoch, 1 thread, test
            class accuracy: on 10,000 training images 52.6 % at 3e-3 (the backbone's lr: a
            linear layer on [0, 1] activations learns too slowly), 75.4 % at 0.03, 80.6 % at
            0.1, 77.7 % at 0.3; on all 60,000, 89.3 % at 0.03 and 89.0 % at 0.1, the latter
            with higher concept accuracies (two_legs 99.5 % vs 91.6 %, lower_body 97.3 % vs
            92.9 %).
    """

    mode: str = "joint"
    concept_weight: float = 1.0
    head_epochs: int = 3
    head_lr: float | None = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"CBMConfig.mode must be one of {MODES}, got {self.mode!r}")
        if not (self.concept_weight >= 0 and math.isfinite(self.concept_weight)):
            raise ValueError(f"concept_weight must be >= 0, got {self.concept_weight}")
        if self.head_epochs < 1:
            raise ValueError(f"head_epochs must be >= 1, got {self.head_epochs}")
        if self.head_lr is not None and not self.head_lr > 0:
            raise ValueError(f"head_lr must be > 0, got {self.head_lr}")


def _epochs_loop(
    n: int,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
):
    for epoch in range(epochs):
        order = torch.from_numpy(rng.permutation(n))
        for start in range(0, n, batch_size):
            yield epoch, order[start : start + batch_size], start + batch_size >= n


def _fit(
    params,
    loss_fn,
    n: int,
    epochs: int,
    lr: float,
    config: CBMConfig,
    rng: np.random.Generator,
    progress: Progress | None,
    done: int,
    total: int,
    label: str,
) -> int:
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    steps = epochs * math.ceil(n / config.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, partial(_one_cycle, total=steps))
    report_every = max(1, total // 200)
    for epoch, batch, last in _epochs_loop(n, epochs, config.batch_size, rng):
        optimiser.zero_grad(set_to_none=True)
        loss_fn(batch).backward()
        optimiser.step()
        schedule.step()
        done += 1
        if progress is not None and (done % report_every == 0 or last):
            progress(done, total, f"{label}: epoch {epoch + 1}/{epochs}")
    return done


def train_cbm(
    images: np.ndarray,
    labels: np.ndarray,
    table: AttributeTable,
    config: CBMConfig | None = None,
    *,
    concept_labels: np.ndarray | None = None,
    progress: Progress | None = None,
) -> ConceptBottleneckModel:
    """Train a concept-bottleneck model deterministically on CPU.

    Args:
        images: uint8 ``(N, S, S)`` or ``(N, S, S, 3)``, ``S == config.input_size``.
        labels: integers ``(N,)`` in ``[0, table.num_classes)``.
        table: class -> concept table; names the concepts and classes of the model and, unless
            ``concept_labels`` is given, supplies each image's concepts from its class.
        config: :class:`CBMConfig` (default: joint, lambda 1, 3 epochs).
        concept_labels: optional per-image concept labels ``(N, C)`` of 0 / 1 (or soft labels
            in [0, 1]) instead of the table's class-level ones.
        progress: ``progress(done_steps, total_steps, message)`` over all optimiser steps
            (both stages of sequential / independent training), ~200 calls in all.

    Returns:
        The model in eval mode.

    Raises:
        ValueError: malformed images, labels or concept labels; N == 0.
    """
    config = config or CBMConfig()
    arr = _images_check(images)
    if len(arr) == 0:
        raise ValueError("no items to train on (N == 0)")
    if arr.shape[1] != config.input_size:
        raise ValueError(
            f"images are {arr.shape[1]} x {arr.shape[2]} but config.input_size is "
            f"{config.input_size}"
        )
    y = _labels_check(labels, len(arr), table.num_classes)
    if concept_labels is None:
        c = table.concept_labels(y)
    else:
        c = np.asarray(concept_labels, dtype=np.float32)
        if c.shape != (len(arr), table.num_concepts):
            raise ValueError(
                f"concept_labels must be ({len(arr)}, {table.num_concepts}), got {c.shape}"
            )
        if not (np.isfinite(c).all() and c.min() >= 0 and c.max() <= 1):
            raise ValueError("concept_labels must lie in [0, 1]")
    x = _to_input(arr, config.grey, config.mean, config.std)
    targets = torch.from_numpy(y)
    concepts = torch.from_numpy(np.ascontiguousarray(c))
    n = len(y)
    total = _steps(n, config.epochs, config.batch_size)
    if config.mode != "joint":
        total += _steps(n, config.head_epochs, config.batch_size)
    ce = nn.functional.cross_entropy
    bce = nn.functional.binary_cross_entropy_with_logits

    with _deterministic(config.seed):
        model = ConceptBottleneckModel(
            table.concepts,
            table.classes,
            input_size=config.input_size,
            grey=config.grey,
            width=config.width,
            embedding_dim=config.embedding_dim,
            mean=config.mean,
            std=config.std,
        )
        rng = np.random.default_rng(config.seed)
        model.train()
        if config.mode == "joint":

            def joint_loss(batch: torch.Tensor) -> torch.Tensor:
                c_logits, _, logits = model.forward_all(x[batch])
                return ce(logits, targets[batch]) + config.concept_weight * bce(
                    c_logits, concepts[batch]
                )

            _fit(
                [
                    {"params": model.concept_net.parameters(), "lr": config.lr},
                    {"params": model.head.parameters(), "lr": config.head_lr or config.lr},
                ],
                joint_loss,
                n,
                config.epochs,
                config.lr,
                config,
                rng,
                progress,
                0,
                total,
                "joint x->c->y",
            )
        else:

            def concept_loss(batch: torch.Tensor) -> torch.Tensor:
                return bce(model.concept_net(x[batch]), concepts[batch])

            done = _fit(
                model.concept_net.parameters(),
                concept_loss,
                n,
                config.epochs,
                config.lr,
                config,
                rng,
                progress,
                0,
                total,
                "x->c",
            )
            model.concept_net.eval()
            model.concept_net.requires_grad_(False)
            if config.mode == "sequential":
                with torch.no_grad():
                    bottleneck = torch.cat(
                        [
                            torch.sigmoid(model.concept_net(x[s : s + 1024]))
                            for s in range(0, n, 1024)
                        ]
                    )
            else:
                bottleneck = concepts

            def head_loss(batch: torch.Tensor) -> torch.Tensor:
                return ce(model.head(bottleneck[batch]), targets[batch])

            _fit(
                model.head.parameters(),
                head_loss,
                n,
                config.head_epochs,
                config.head_lr or config.lr,
                config,
                rng,
                progress,
                done,
                total,
                f"c->y ({config.mode})",
            )
            model.concept_net.requires_grad_(True)
    model.eval()
    return model


# ------------------------------------------------------------------ prediction / evaluation


@torch.no_grad()
def predict_concepts(
    model: ConceptBottleneckModel, images: np.ndarray, *, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Concept activations float32 ``(N, C)`` in [0, 1] and class probabilities float32
    ``(N, K)``, in eval mode without gradients; uint8 ``(N, S, S[, 3])`` images."""
    arr = _images_check(images)
    was_training = model.training
    model.eval()
    acts, probs = [], []
    try:
        for start in range(0, len(arr), batch_size):
            x = _to_input(arr[start : start + batch_size], model.grey, model.mean, model.std)
            _, a, logits = model.forward_all(x)
            acts.append(a.numpy())
            probs.append(torch.softmax(logits, dim=1).numpy())
    finally:
        model.train(was_training)
    if not acts:
        return (
            np.zeros((0, model.num_concepts), np.float32),
            np.zeros((0, model.num_classes), np.float32),
        )
    return np.concatenate(acts), np.concatenate(probs)


def concept_accuracy(
    model: ConceptBottleneckModel,
    images: np.ndarray,
    concept_labels: np.ndarray,
    *,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Per concept, the fraction of images whose activation ``> threshold`` matches the 0 / 1
    label (``concept_labels`` ``(N, C)``, e.g. ``table.concept_labels(test_labels)``)."""
    acts, _ = predict_concepts(model, images)
    c = np.asarray(concept_labels)
    if c.shape != acts.shape:
        raise ValueError(f"concept_labels must be {acts.shape}, got {c.shape}")
    if len(c) == 0:
        raise ValueError("no images")
    hits = (acts > threshold) == (c > 0.5)
    return {name: float(hits[:, j].mean()) for j, name in enumerate(model.concept_names)}


def evaluate(
    model: ConceptBottleneckModel,
    images: np.ndarray,
    labels: np.ndarray,
    table: AttributeTable | None = None,
) -> dict:
    """Class accuracy and, given the class -> concept ``table`` the model was trained with,
    per-concept accuracy against the table's class-level concepts and its mean.

    Returns:
        ``{"n", "class_accuracy"}`` plus ``"concept_accuracy": {name: accuracy}`` and
        ``"mean_concept_accuracy"`` when ``table`` is given.
    """
    y = _labels_check(labels, len(np.asarray(images)), model.num_classes)
    acts, probs = predict_concepts(model, images)
    if len(y) == 0:
        raise ValueError("no images")
    out: dict = {"n": int(len(y)), "class_accuracy": float((probs.argmax(1) == y).mean())}
    if table is not None:
        if list(table.concepts) != model.concept_names:
            raise ValueError("the table's concepts differ from the model's")
        c = table.concept_labels(y)
        hits = (acts > 0.5) == (c > 0.5)
        per = {name: float(hits[:, j].mean()) for j, name in enumerate(model.concept_names)}
        out["concept_accuracy"] = per
        out["mean_concept_accuracy"] = float(np.mean(list(per.values())))
    return out


# ------------------------------------------------------------------------------ explanation


@dataclass(frozen=True)
class ConceptContribution:
    """One term ``weight * activation`` of a class logit."""

    concept: str
    activation: float
    weight: float
    contribution: float


@dataclass(frozen=True)
class ConceptExplanation:
    """A class logit of a concept-bottleneck model written as a sum over concepts.

    ``logit == sum(contributions) + bias`` (up to float32 rounding of the model's own
    matrix product; the terms are computed in float64 from the float32 weights).

    Attributes:
        target, target_name: the explained class.
        predicted, predicted_name: the model's top class.
        probability: softmax probability of ``target``.
        logit: the model's logit of ``target`` (float32 forward pass).
        bias: ``head.bias[target]``.
        concepts: names, model order.
        activations, weights, contributions: float64 ``(C,)``, model order;
            ``contributions = weights * activations``.
        top_positive: terms with contribution > 0, largest first.
        top_negative: terms with contribution < 0, most negative first.
        listed: the terms written out in :attr:`text`: the ``max_concepts`` largest by
            absolute contribution (all if ``None``), largest first.
        text: ``"Ankle boot = +1.20 footwear + 0.90 ankle_high − 0.70 has_sleeves
            + 0.05 (8 other concepts) − 0.31 bias"``.
        max_concepts: the limit used for :attr:`listed` / :attr:`text`.
    """

    target: int
    target_name: str
    predicted: int
    predicted_name: str
    probability: float
    logit: float
    bias: float
    concepts: tuple[str, ...]
    activations: np.ndarray
    weights: np.ndarray
    contributions: np.ndarray
    top_positive: tuple[ConceptContribution, ...]
    top_negative: tuple[ConceptContribution, ...]
    listed: tuple[ConceptContribution, ...]
    text: str
    max_concepts: int | None

    def as_dict(self) -> dict:
        def terms(ts):
            return [t.__dict__ for t in ts]

        return {
            "target": self.target,
            "target_name": self.target_name,
            "predicted": self.predicted,
            "predicted_name": self.predicted_name,
            "probability": self.probability,
            "logit": self.logit,
            "bias": self.bias,
            "concepts": list(self.concepts),
            "activations": self.activations.tolist(),
            "weights": self.weights.tolist(),
            "contributions": self.contributions.tolist(),
            "top_positive": terms(self.top_positive),
            "top_negative": terms(self.top_negative),
            "listed": terms(self.listed),
            "text": self.text,
            "max_concepts": self.max_concepts,
        }


def _signed(value: float, decimals: int, first: bool) -> str:
    magnitude = f"{abs(value):.{decimals}f}"
    negative = value < 0 and float(magnitude) != 0.0
    if first:
        return (_MINUS if negative else "+") + magnitude
    return (f" {_MINUS} " if negative else " + ") + magnitude


def _equation(
    name: str,
    listed: Sequence[ConceptContribution],
    rest: float,
    n_rest: int,
    bias: float,
    decimals: int,
    show_rest: bool,
) -> str:
    parts = []
    for t in listed:
        parts.append(_signed(t.contribution, decimals, not parts) + f" {t.concept}")
    if n_rest and show_rest:
        others = "other concept" if n_rest == 1 else "other concepts"
        parts.append(_signed(rest, decimals, not parts) + f" ({n_rest} {others})")
    elif n_rest:
        parts.append(" \u2026" if parts else "\u2026")
    parts.append(_signed(bias, decimals, not parts) + " bias")
    return f"{name} = " + "".join(parts)


def _one_input(model: ConceptBottleneckModel, image) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        x = image.detach().float()
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[0] != 1:
            raise ValueError(
                f"a tensor image must be normalised (C, S, S) or (1, C, S, S), got "
                f"{tuple(image.shape)}"
            )
        return x
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise ValueError(
            f"image must be uint8 (S, S) or (S, S, 3), or a normalised tensor; got "
            f"{arr.dtype} {arr.shape}"
        )
    return _to_input(_images_check(arr[None]), model.grey, model.mean, model.std)


@torch.no_grad()
def explain(
    model: ConceptBottleneckModel,
    image,
    target: int | None = None,
    *,
    max_concepts: int | None = None,
    decimals: int = 2,
    show_rest: bool = True,
) -> ConceptExplanation:
    """Explain one class logit as ``sum_c weight[target, c] * activation[c] + bias``.

    Args:
        model: a :class:`ConceptBottleneckModel` (evaluated in eval mode; its mode is restored).
        image: uint8 ``(S, S)`` / ``(S, S, 3)`` pixels, or an already normalised float tensor
            ``(C, S, S)`` / ``(1, C, S, S)``.
        target: class index to explain; ``None``: the predicted class.
        max_concepts: write out only the this many terms with the largest absolute
            contribution (``None``: all). Human studies put a practical limit on explanation
            size: Ramaswamy, Kim, Fong & Russakovsky, "Overlooked Factors in Concept-Based
            Explanations: Dataset Choice, Concept Learnability, and Human Capability", CVPR
            2023, found explanations much less useful beyond about 32 concepts, and fewer
            concepts better. The arithmetic stays exact: the terms not written out are
            summed into one "(n other concepts)" term.
        decimals: digits of the numbers in :attr:`ConceptExplanation.text`.
        show_rest: write the summed remaining terms; ``False``: an ellipsis ("…") instead (the
            text then no longer adds up).

    Raises:
        ValueError: malformed image, target outside ``[0, K)``, max_concepts < 1.
    """
    if max_concepts is not None and max_concepts < 1:
        raise ValueError(f"max_concepts must be >= 1 or None, got {max_concepts}")
    x = _one_input(model, image)
    was_training = model.training
    model.eval()
    try:
        _, acts, logits = model.forward_all(x)
    finally:
        model.train(was_training)
    logits = logits[0]
    predicted = int(logits.argmax())
    t = predicted if target is None else int(target)
    if not 0 <= t < model.num_classes:
        raise ValueError(f"target must lie in [0, {model.num_classes}), got {target}")
    a = acts[0].double().numpy()
    w = model.head.weight[t].detach().double().numpy()
    b = float(model.head.bias[t].detach().double())
    contrib = w * a
    names = tuple(model.concept_names)
    terms = [
        ConceptContribution(names[j], float(a[j]), float(w[j]), float(contrib[j]))
        for j in range(len(names))
    ]
    positive = tuple(
        sorted((u for u in terms if u.contribution > 0), key=lambda u: -u.contribution)
    )
    negative = tuple(sorted((u for u in terms if u.contribution < 0), key=lambda u: u.contribution))
    by_size = sorted(terms, key=lambda u: (-abs(u.contribution), names.index(u.concept)))
    k = len(terms) if max_concepts is None else min(max_concepts, len(terms))
    listed = tuple(by_size[:k])
    rest = float(sum(u.contribution for u in by_size[k:]))
    text = _equation(model.class_names[t], listed, rest, len(terms) - k, b, decimals, show_rest)
    return ConceptExplanation(
        target=t,
        target_name=model.class_names[t],
        predicted=predicted,
        predicted_name=model.class_names[predicted],
        probability=float(torch.softmax(logits.double(), 0)[t]),
        logit=float(logits[t]),
        bias=b,
        concepts=names,
        activations=a,
        weights=w,
        contributions=contrib,
        top_positive=positive,
        top_negative=negative,
        listed=listed,
        text=text,
        max_concepts=max_concepts,
    )


# --------------------------------------------------------------------------------- file I/O


def cbm_save(model: ConceptBottleneckModel, path: str | Path) -> Path:
    """Write the model's state dict to a safetensors file, atomically, with the concept and
    class names and the backbone's constructor arguments in the metadata (what
    :func:`cbm_load` needs)."""
    path = Path(path)
    net = model.concept_net
    metadata = {
        "format": "pt",
        "factory": "explanations.concepts.cbm.ConceptBottleneckModel",
        "concept_names": json.dumps(model.concept_names),
        "class_names": json.dumps(model.class_names),
        "input_size": str(net.input_size),
        "grey": json.dumps(net.grey),
        "width": str(net.width),
        "embedding_dim": str(net.embedding_dim),
        "mean": repr(net.mean),
        "std": repr(net.std),
    }
    return safetensors_write(model, path, metadata)


def cbm_load(path: str | Path) -> ConceptBottleneckModel:
    """Rebuild a :class:`ConceptBottleneckModel` from a :func:`cbm_save` file (eval mode, CPU).

    Raises:
        labeling.training.WeightsError: missing file, not safetensors (pickles are never
            loaded), metadata missing or malformed, or a state dict that does not match.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path.name}: weights file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path.name}: not a readable safetensors file ({exc}); save with cbm_save"
        ) from None
    try:
        model = ConceptBottleneckModel(
            json.loads(meta["concept_names"]),
            json.loads(meta["class_names"]),
            input_size=int(meta["input_size"]),
            grey=bool(json.loads(meta["grey"])),
            width=int(meta["width"]),
            embedding_dim=int(meta["embedding_dim"]),
            mean=float(meta["mean"]),
            std=float(meta["std"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(
            f"{path.name}: metadata of a concept-bottleneck model missing or malformed "
            f"({type(exc).__name__}: {exc}); save with cbm_save"
        ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path.name}: state dict does not match ({exc})") from None
    model.eval()
    return model
