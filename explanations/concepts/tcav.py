"""TCAV: testing a trained model's sensitivity to user-defined concepts (no Django).

Kim, Wattenberg, Gilmer, Cai, Wexler, Viegas & Sayres, "Interpretability Beyond Feature
Attribution: Quantitative Testing with Concept Activation Vectors (TCAV)", ICML 2018:

1. A concept is a set of example images (striped textures, say). A linear classifier separates
   the activations ``h_l(x)`` of a layer ``l`` for the concept's examples from those of a set of
   random examples; the unit normal of its decision boundary, pointing to the concept side,
   is the concept activation vector (CAV) ``v``.
2. For an input ``x`` of class ``k`` the conceptual sensitivity is the directional derivative
   ``S(x) = grad_{h_l} logit_k(h_l(x)) . v``.
3. The TCAV score is the fraction of the class's inputs with ``S(x) > 0`` (``"sign_count"``;
   captum also reports ``"magnitude"``, the mean of ``S(x)``, here with unit-length CAVs).
4. Significance (the paper's Sec. 3.5): a CAV trained against one random set may be
   meaningless, so the CAV is trained against each of ``n_random`` random sets, giving
   ``n_random`` TCAV scores for the concept; the same is done for a random set in the
   concept's place (random-vs-random CAVs, the null distribution). A two-sided two-sample
   t-test (``scipy.stats.ttest_ind``, equal variances, as in the reference implementation's
   ``get_rnd_score`` comparison and captum's tutorial) compares the two lists. With m concepts
   tested the paper applies a Bonferroni correction: significant when ``p < alpha / m``.

Steps 1-3 run through ``captum.concept.TCAV`` with :class:`LinearCAVClassifier`, a seeded
replacement for captum's ``DefaultClassifier`` (which shuffles with Python's global
``random`` and so is not reproducible). captum caches activations and CAVs as files under a
``save_path``; :func:`tcav_scores` points it at a fresh temporary folder for every call (a
shared folder would silently reuse CAVs keyed only by concept ids), deleted afterwards.

:func:`texture_concepts` builds concept sets from scikit-image's bundled textures (brick, grass,
gravel) and random sets of noise and random photo crops, for models of small greyscale images.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from captum.concept import TCAV, Classifier, Concept
from torch import nn
from torch.utils.data import DataLoader

from labeling.training import FASHION_MNIST_MEAN, FASHION_MNIST_STD, _images_check, _to_input

__all__ = [
    "ConceptSets",
    "ConceptTCAV",
    "LinearCAVClassifier",
    "TCAVResult",
    "TEXTURES",
    "tcav_scores",
    "texture_concepts",
]

#: scikit-image's bundled texture images used by :func:`texture_concepts`.
TEXTURES = ("brick", "grass", "gravel")

#: Bundled scikit-image photographs (none of them a texture above) for random image crops.
_RANDOM_PHOTOS = (
    "camera",
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "moon",
    "coins",
    "page",
    "text",
    "cell",
    "hubble_deep_field",
    "immunohistochemistry",
)


# ----------------------------------------------------------------------------- classifier


class LinearCAVClassifier(Classifier):
    """A linear concept classifier for ``captum.concept.TCAV`` that is reproducible.

    Each ``train_and_eval`` call draws its stratified train / test split and the SGD order
    from ``np.random.SeedSequence([seed, *sorted concept ids])``, so a CAV depends only on the
    seed and its two concepts, not on how many CAVs were trained before.

    Args:
        kind: ``"sgd"``: ``sklearn.linear_model.SGDClassifier(alpha=0.01, max_iter=1000,
            tol=1e-3)`` (hinge loss), the reference TCAV implementation's default ("linear")
            and captum's; ``"logistic"``: ``LogisticRegression(max_iter=1000)`` (L2, C=1).
        seed: see above.
        test_split: fraction of the examples held out to measure the CAV's accuracy
            (at least one per concept).
    """

    def __init__(self, kind: str = "sgd", seed: int = 0, test_split: float = 0.33) -> None:
        if kind not in ("sgd", "logistic"):
            raise ValueError(f"kind must be 'sgd' or 'logistic', got {kind!r}")
        if not 0 < test_split < 1:
            raise ValueError(f"test_split must lie in (0, 1), got {test_split}")
        self.kind = kind
        self.seed = int(seed)
        self.test_split = float(test_split)
        self._weights: torch.Tensor | None = None
        self._classes: list[int] = []

    def train_and_eval(self, dataloader: DataLoader, **kwargs: Any) -> dict:
        from sklearn.linear_model import LogisticRegression, SGDClassifier
        from sklearn.model_selection import train_test_split

        xs, ys = [], []
        for x, y in dataloader:
            xs.append(x.detach().cpu().double().numpy())
            ys.append(y.detach().cpu().numpy())
        x = np.concatenate(xs).reshape(sum(len(a) for a in xs), -1)
        y = np.concatenate(ys).astype(np.int64)
        classes = sorted(int(c) for c in np.unique(y))
        if len(classes) != 2:
            raise ValueError(f"a CAV separates exactly 2 concepts, got ids {classes}")
        state = int(np.random.SeedSequence([self.seed, *classes]).generate_state(1)[0] >> 1)
        x_tr, x_te, y_tr, y_te = train_test_split(
            x, y, test_size=self.test_split, random_state=state, stratify=y
        )
        if self.kind == "sgd":
            lm = SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3, random_state=state)
        else:
            lm = LogisticRegression(max_iter=1000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning on separable toy data
            lm.fit(x_tr, y_tr)
        w = np.asarray(lm.coef_[0], np.float64)
        norm = float(np.linalg.norm(w))
        w = w / norm if norm > 0 else w
        # coef_ points to lm.classes_[1]; captum wants one row per class, in self.classes()
        self._weights = torch.from_numpy(np.stack([-w, w])).float()
        self._classes = [int(c) for c in lm.classes_]
        return {"accs": torch.tensor(float((lm.predict(x_te) == y_te).mean()))}

    def weights(self) -> torch.Tensor:
        if self._weights is None:
            raise RuntimeError("train_and_eval has not been called")
        return self._weights

    def classes(self) -> list[int]:
        return list(self._classes)


# -------------------------------------------------------------------------------- results


@dataclass
class ConceptTCAV:
    """TCAV of one concept against ``n_random`` random counterpart sets.

    Attributes:
        name: the concept.
        scores: TCAV score (fraction of inputs with positive directional derivative), one
            per random counterpart.
        magnitudes: mean directional derivative along the unit CAV, per counterpart.
        cav_accuracy: held-out accuracy of each CAV's linear classifier.
        mean, std: of ``scores`` (std with ddof=1).
        p_value: two-sided t-test of ``scores`` against the random-vs-random scores.
        significant: ``p_value < alpha``.
        significant_bonferroni: ``p_value < alpha / m`` (m concepts tested).
    """

    name: str
    scores: list[float]
    magnitudes: list[float]
    cav_accuracy: list[float]
    mean: float
    std: float
    p_value: float
    significant: bool
    significant_bonferroni: bool

    @property
    def mean_cav_accuracy(self) -> float:
        return float(np.mean(self.cav_accuracy))

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "scores": self.scores,
            "magnitudes": self.magnitudes,
            "cav_accuracy": self.cav_accuracy,
            "mean_cav_accuracy": self.mean_cav_accuracy,
            "mean": self.mean,
            "std": self.std,
            "p_value": self.p_value,
            "significant": self.significant,
            "significant_bonferroni": self.significant_bonferroni,
        }


@dataclass
class TCAVResult:
    """Output of :func:`tcav_scores`.

    Attributes:
        layer, target: where the CAVs live and which logit is differentiated.
        n_inputs: inputs the scores are fractions of (the paper uses images of class
            ``target``).
        n_random: random counterparts per concept (= t-test sample sizes).
        alpha: the significance level; ``bonferroni_m``: concepts tested;
            ``bonferroni_alpha`` = ``alpha / bonferroni_m``.
        concepts: name -> :class:`ConceptTCAV`, in the order given.
        random_scores, random_magnitudes, random_cav_accuracy: the null distribution: random
            set ``j - 1`` in a concept's place against random set ``j``, j = 1..n_random.
        classifier: ``"sgd"`` or ``"logistic"``.
        note: how significance was decided (printed with the results).
    """

    layer: str
    target: int
    n_inputs: int
    n_random: int
    alpha: float
    bonferroni_m: int
    bonferroni_alpha: float
    concepts: dict[str, ConceptTCAV]
    random_scores: list[float]
    random_magnitudes: list[float]
    random_cav_accuracy: list[float]
    classifier: str
    note: str = field(default="")

    def as_dict(self) -> dict:
        return {
            "layer": self.layer,
            "target": self.target,
            "n_inputs": self.n_inputs,
            "n_random": self.n_random,
            "alpha": self.alpha,
            "bonferroni_m": self.bonferroni_m,
            "bonferroni_alpha": self.bonferroni_alpha,
            "concepts": {k: v.as_dict() for k, v in self.concepts.items()},
            "random_scores": self.random_scores,
            "random_magnitudes": self.random_magnitudes,
            "random_cav_accuracy": self.random_cav_accuracy,
            "random_mean": float(np.mean(self.random_scores)),
            "classifier": self.classifier,
            "note": self.note,
        }

    def summary(self) -> str:
        """One line per concept: mean score, p-value and significance."""
        lines = [
            f"TCAV at {self.layer}, target {self.target}, {self.n_inputs} inputs, "
            f"{self.n_random} random counterparts; random-vs-random mean "
            f"{np.mean(self.random_scores):.2f}"
        ]
        for c in self.concepts.values():
            mark = (
                "significant"
                if c.significant_bonferroni
                else ("significant before Bonferroni only" if c.significant else "not significant")
            )
            lines.append(
                f"  {c.name}: TCAV {c.mean:.2f} +/- {c.std:.2f}, CAV accuracy "
                f"{c.mean_cav_accuracy:.2f}, p = {c.p_value:.3g} ({mark})"
            )
        lines.append(f"  {self.note}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------- TCAV


def _default_preprocess(model: nn.Module) -> Callable[[np.ndarray], torch.Tensor]:
    grey = bool(getattr(model, "grey", True))
    mean = float(getattr(model, "mean", FASHION_MNIST_MEAN))
    std = float(getattr(model, "std", FASHION_MNIST_STD))

    def preprocess(images: np.ndarray) -> torch.Tensor:
        return _to_input(_images_check(images), grey, mean, std)

    return preprocess


def _as_tensor(value, preprocess, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        x = value.detach().float()
    else:
        arr = np.asarray(value)
        if arr.dtype == np.uint8:
            x = preprocess(arr)
        elif np.issubdtype(arr.dtype, np.floating):
            x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        else:
            raise ValueError(f"{what}: expected uint8 images or a float tensor, got {arr.dtype}")
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"{what}: expected a batch of examples, got shape {tuple(x.shape)}")
    return x


def _ttest(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import ttest_ind

    with warnings.catch_warnings():
        # "precision loss" when one sample is constant (e.g. all 1.0): the pooled-variance
        # test is still defined
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_ind(a, b).pvalue)
    if math.isnan(p):  # both samples constant: the difference is certain (or none)
        p = 1.0 if np.isclose(np.mean(a), np.mean(b)) else 0.0
    return p


def tcav_scores(
    model: nn.Module,
    layer: str,
    target: int,
    concept_sets: Mapping[str, Any],
    random_sets: Sequence[Any],
    inputs: Any,
    *,
    n_random: int | None = None,
    preprocess: Callable[[np.ndarray], torch.Tensor] | None = None,
    classifier: str = "sgd",
    test_split: float = 0.33,
    alpha: float = 0.05,
    seed: int = 0,
    attribute_to_layer_input: bool = False,
) -> TCAVResult:
    """TCAV scores of concepts for one class, with the paper's significance test.

    Args:
        model: the trained model, returning logits (the paper differentiates the class
            logit, not a probability); put in eval mode for the call, then restored.
        layer: dotted module name whose output holds the CAVs (e.g.
            ``"features.conv2"`` of a SmallCNN, ``"concept_net.features.conv2"`` of a CBM).
        target: class index whose logit is differentiated.
        concept_sets: concept name -> examples (>= 4 each).
        random_sets: >= ``n_random + 1`` sets of random examples; sets ``1..n_random`` are
            the counterparts of every CAV; the ``n_random`` random-vs-random null runs pair
            set ``j - 1`` (standing in for a concept) with counterpart ``j``.
        inputs: the examples to score, normally images of class ``target``.
        n_random: counterparts per concept (>= 2; default ``len(random_sets) - 1``). The paper
            used up to 500 runs; few runs make the t-test weak.
        preprocess: turns uint8 images ``(N, S, S[, 3])`` into model input; default
            :mod:`labeling.training`'s normalisation with the model's ``grey`` / ``mean`` /
            ``std`` attributes (Fashion-MNIST's if absent). Examples given as float arrays or
            tensors are used as they are.
        classifier: ``"sgd"`` or ``"logistic"`` (:class:`LinearCAVClassifier`).
        test_split: held-out fraction for the CAV accuracies.
        alpha: significance level; Bonferroni uses ``alpha / len(concept_sets)``.
        seed: seeds the CAV classifiers (everything else is deterministic).
        attribute_to_layer_input: CAVs in the layer's input instead of its output.

    Returns:
        :class:`TCAVResult`.

    Raises:
        ValueError: no concepts, too few random sets or examples, malformed examples.
    """
    if not concept_sets:
        raise ValueError("no concept sets")
    n_random = len(random_sets) - 1 if n_random is None else int(n_random)
    if n_random < 2:
        raise ValueError(f"n_random must be >= 2 for a t-test, got {n_random}")
    if len(random_sets) < n_random + 1:
        raise ValueError(
            f"n_random={n_random} needs {n_random + 1} random sets (one for the null runs), "
            f"got {len(random_sets)}"
        )
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    preprocess = preprocess or _default_preprocess(model)
    names = [str(k) for k in concept_sets]
    concept_x = [_as_tensor(concept_sets[k], preprocess, f"concept {k!r}") for k in concept_sets]
    random_x = [
        _as_tensor(r, preprocess, f"random set {j}")
        for j, r in enumerate(random_sets[: n_random + 1])
    ]
    for what, xs in (("concept", concept_x), ("random set", random_x)):
        small = [len(x) for x in xs if len(x) < 4]
        if small:
            raise ValueError(f"every {what} needs >= 4 examples, got {small}")
    x_in = _as_tensor(inputs, preprocess, "inputs")

    # captum names cache folders after Concept.name: use plain internal names
    concepts = [
        Concept(i, f"concept{i}", DataLoader(x, batch_size=len(x))) for i, x in enumerate(concept_x)
    ]
    base = len(concepts)
    randoms = [
        Concept(base + j, f"random{j}", DataLoader(x, batch_size=len(x)))
        for j, x in enumerate(random_x)
    ]
    sets = [[c, r] for c in concepts for r in randoms[1:]]
    # the null runs: random set j-1 stands in for a concept against counterpart j, so each
    # null run has its own stand-in sample (a single shared stand-in tilts every null run the
    # same way and breaks the t-test's independence)
    null_sets = [[randoms[j - 1], randoms[j]] for j in range(1, len(randoms))]
    sets += null_sets

    was_training = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory(prefix="tcav-") as tmp:
            tcav = TCAV(
                model,
                layers=[layer],
                model_id="model",
                classifier=LinearCAVClassifier(classifier, seed, test_split),
                attribute_to_layer_input=attribute_to_layer_input,
                save_path=tmp,
            )
            raw = tcav.interpret(x_in, experimental_sets=sets, target=int(target))
            accs = {
                key: float(tcav.cavs[key][layer].stats["accs"])
                for key in (f"{a.id}-{b.id}" for a, b in sets)
            }
    finally:
        model.train(was_training)

    def runs(pairs) -> tuple[list[float], list[float], list[float]]:
        keys = [f"{a.id}-{b.id}" for a, b in pairs]
        score = [float(raw[k][layer]["sign_count"][0]) for k in keys]
        magnitude = [float(raw[k][layer]["magnitude"][0]) for k in keys]
        return score, magnitude, [accs[k] for k in keys]

    null_scores, null_mag, null_acc = runs(null_sets)
    m = len(concepts)
    results: dict[str, ConceptTCAV] = {}
    for name, concept in zip(names, concepts, strict=True):
        score, magnitude, acc = runs([(concept, r) for r in randoms[1:]])
        p = _ttest(score, null_scores)
        results[name] = ConceptTCAV(
            name=name,
            scores=score,
            magnitudes=magnitude,
            cav_accuracy=acc,
            mean=float(np.mean(score)),
            std=float(np.std(score, ddof=1)),
            p_value=p,
            significant=p < alpha,
            significant_bonferroni=p < alpha / m,
        )
    note = (
        f"two-sided two-sample t-test (equal variances) of each concept's {n_random} TCAV "
        f"scores against {n_random} random-vs-random scores; significant at alpha={alpha}; "
        f"Bonferroni for {m} concept(s): p < {alpha / m:.3g}"
    )
    return TCAVResult(
        layer=layer,
        target=int(target),
        n_inputs=int(len(x_in)),
        n_random=n_random,
        alpha=alpha,
        bonferroni_m=m,
        bonferroni_alpha=alpha / m,
        concepts=results,
        random_scores=null_scores,
        random_magnitudes=null_mag,
        random_cav_accuracy=null_acc,
        classifier=classifier,
        note=note,
    )


# ------------------------------------------------------------------------- concept images


@dataclass
class ConceptSets:
    """Example images for :func:`tcav_scores`: ``concepts`` name -> uint8 ``(n, S, S)`` and
    ``random``, a list of uint8 ``(n, S, S)`` random sets."""

    concepts: dict[str, np.ndarray]
    random: list[np.ndarray]


def _grey(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 3:
        img = img[..., :3].astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])
    return np.clip(img, 0, 255).astype(np.uint8)


def _crop(image: np.ndarray, size: int, rng: np.random.Generator, scale: tuple[float, float]):
    from skimage.transform import resize

    h, w = image.shape
    side = int(round(size * rng.uniform(*scale)))
    side = max(size, min(side, h, w))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    patch = image[top : top + side, left : left + side].astype(np.float64)
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    out = resize(patch, (size, size), anti_aliasing=side > size, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def texture_concepts(
    size: int = 28,
    *,
    n_per_set: int = 50,
    n_random: int = 10,
    seed: int = 0,
    textures: Sequence[str] = TEXTURES,
    random_kind: str = "mixed",
    scale: tuple[float, float] = (2.0, 6.0),
) -> ConceptSets:
    """Concept and random image sets from scikit-image's bundled images, seeded.

    Concepts: for each texture (``skimage.data.brick()``, ``grass()``, ``gravel()``, 512 x
    512 grey) ``n_per_set`` square crops with a side of ``scale`` x ``size`` pixels (at random
    positions, half of them mirrored), resized to ``size`` x ``size``.

    Random sets (``n_random + 1`` of them, what :func:`tcav_scores` needs for ``n_random``
    counterparts), by ``random_kind``:

    * ``"noise"``: uniform noise images, each blurred with a random Gaussian (sigma 0-2) so
      sets span several spatial frequencies;
    * ``"images"``: crops, as above, of random bundled photographs that are not textures
      (camera, astronaut, coffee, moon, coins, text, ...);
    * ``"mixed"`` (default): each image is either, at random.

    The paper's random sets are random ImageNet images; these are a stand-in that needs no
    download. All images are greyscale uint8 ``(n, size, size)``.
    """
    from skimage import data
    from skimage.filters import gaussian

    if size < 4 or n_per_set < 4 or n_random < 0:
        raise ValueError("size and n_per_set must be >= 4, n_random >= 0")
    if random_kind not in ("mixed", "noise", "images"):
        raise ValueError(f"random_kind must be 'mixed', 'noise' or 'images', got {random_kind!r}")
    unknown = [t for t in textures if t not in TEXTURES]
    if unknown:
        raise ValueError(f"unknown textures {unknown}; available: {list(TEXTURES)}")
    rng = np.random.default_rng(seed)
    concepts = {}
    for name in textures:
        img = _grey(getattr(data, name)())
        concepts[name] = np.stack([_crop(img, size, rng, scale) for _ in range(n_per_set)])
    photos = [_grey(getattr(data, name)()) for name in _RANDOM_PHOTOS]

    def noise() -> np.ndarray:
        img = rng.uniform(0, 1, (size, size))
        sigma = rng.uniform(0, 2)
        if sigma > 0.3:
            img = gaussian(img, sigma=sigma)
            lo, hi = img.min(), img.max()
            img = (img - lo) / (hi - lo) if hi > lo else img
        return np.rint(img * 255).astype(np.uint8)

    def photo() -> np.ndarray:
        return _crop(photos[int(rng.integers(len(photos)))], size, rng, scale)

    random_sets = []
    for _ in range(n_random + 1):
        images = []
        for _ in range(n_per_set):
            kind = random_kind if random_kind != "mixed" else ("noise", "images")[rng.integers(2)]
            images.append(noise() if kind == "noise" else photo())
        random_sets.append(np.stack(images))
    return ConceptSets(concepts=concepts, random=random_sets)
