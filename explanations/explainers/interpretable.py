"""Explanations of interpretable-by-design models, behind the same contract as the heatmaps.

Each method returns one float32 ``(H, W)`` map per target (so overlays, Shared Interest and
the job pipeline treat it like any heatmap) and, beside it, the model's own structured
evidence in :attr:`~explanations.explainers.base.ExplanationResult.details`, which the study
tasks show:

* ``prototypes`` (:class:`PrototypeExplainer`): a :class:`~explanations.prototypes.protopnet.
  ProtoPNet`'s top prototypes for the target class, "this part looks like that prototype"
  (Chen, Li, Tao, Barnett, Rudin & Su, "This Looks Like That: Deep Learning for
  Interpretable Image Recognition", NeurIPS 2019). The map is the activation (similarity)
  map of the prototype with the largest contribution.
* ``concepts`` (:class:`ConceptExplainer`): a concept-bottleneck model's class logit as
  ``sum_c weight[c] * activation[c] + bias`` (Koh, Nguyen, Tang, Mussmann, Pierson, Kim &
  Liang, "Concept Bottleneck Models", ICML 2020). A bottleneck has no spatial evidence of its
  own; the map is Grad-CAM (Selvaraju et al., ICCV 2017) of the same logit at the backbone's
  last convolution, recorded as such in ``params["map"]``.

Pure PyTorch/NumPy; no Django.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .base import Explainer, ExplainerConfigError
from .heatmap.gradcam import GradCam

#: Prototypes listed per target class by default (HIVE showed three per class; Kim et al.,
#: ECCV 2022, Sec. 4.2).
DEFAULT_PROTOTYPES = 3


def _box(box) -> list[int] | None:
    return None if box is None else [int(v) for v in box]


def _r(value: float, digits: int = 6) -> float:
    return round(float(value), digits)


class PrototypeExplainer(Explainer):
    """The top prototypes of a ProtoPNet for each target class.

    Args:
        model: a :class:`~explanations.prototypes.protopnet.ProtoPNet` (any other network is
            refused: prototypes here are the model's own, never post-hoc).
        top_k: prototypes listed per target, 1..P (default 3).

    ``explain`` returns, per target ``t``, the ``(S, S)`` similarity map of the prototype with
    the largest ``similarity * weight[t]`` (values in ``[0, log(1e4)]``, bilinear between
    latent cells) and ``details``::

        {"kind": "prototypes", "target": t, "logit": float, "class_evidence": float,
         "latent_size": [H, W],
         "prototypes": [{"prototype": j, "prototype_class": int, "similarity": float,
                         "distance": float, "weight": float, "contribution": float,
                         "source_index": int (training index, -1 if never pushed),
                         "source_box": [x0, y0, x1, y1] | None, "test_box": [x0, y0, x1, y1],
                         "activation": H x W list of floats}, ...]}

    ``class_evidence`` is ``sum_j similarity_j * weight[t, j]`` over all prototypes, which
    equals the logit (ProtoPNet's last layer has no bias).

    Raises:
        ExplainerConfigError: not a ProtoPNet, or ``top_k`` outside 1..P.
    """

    key: ClassVar[str] = "prototypes"
    name: ClassVar[str] = "Prototypes (ProtoPNet)"
    paper: ClassVar[str] = (
        "Chen, C., Li, O., Tao, C., Barnett, A. J., Su, J., & Rudin, C. This Looks Like That: "
        "Deep Learning for Interpretable Image Recognition. NeurIPS 2019."
    )
    accepted_params: ClassVar[frozenset[str]] = frozenset({"top_k"})
    non_negative: ClassVar[bool] = True

    def __init__(self, model: nn.Module, *, target_layer: str | None = None, **params: Any) -> None:
        super().__init__(model, target_layer=target_layer, **params)
        from explanations.prototypes.protopnet import ProtoPNet

        if not isinstance(model, ProtoPNet):
            raise ExplainerConfigError(
                f"prototypes explain a ProtoPNet's own prototypes; {type(model).__name__} is not "
                "one (train one with `manage.py label_train DATASET --architecture protopnet`)"
            )
        top_k = params.get("top_k", DEFAULT_PROTOTYPES)
        if not isinstance(top_k, int) or not 1 <= top_k <= model.num_prototypes:
            raise ExplainerConfigError(
                f"top_k must be an integer in 1..{model.num_prototypes}, got {top_k!r}"
            )
        self.top_k = top_k
        self.params = {"top_k": top_k, "map": "top prototype activation", "upsample": "bilinear"}

    def _attribute(self, inputs: torch.Tensor, targets: tuple[int, ...]):
        from explanations.prototypes.protopnet import explain

        maps, details = [], []
        for target in targets:
            e = explain(self.model, inputs, class_index=target, top_k=self.top_k)
            maps.append(e.prototypes[0].activation_map)
            cells = e.prototypes[0].activation_cells
            details.append(
                {
                    "kind": "prototypes",
                    "target": int(target),
                    "logit": _r(e.logits[target]),
                    "class_evidence": _r(e.class_evidence[target]),
                    "latent_size": list(cells.shape),
                    "prototypes": [
                        {
                            "prototype": p.prototype,
                            "prototype_class": p.prototype_class,
                            "similarity": _r(p.similarity),
                            "distance": _r(p.distance),
                            "weight": _r(p.weight),
                            "contribution": _r(p.contribution),
                            "source_index": p.source_index,
                            "source_box": _box(p.source_box),
                            "test_box": _box(p.test_box),
                            "activation": np.round(p.activation_cells, 5).tolist(),
                        }
                        for p in e.prototypes
                    ],
                }
            )
        return np.stack(maps).astype(np.float32), details


class ConceptExplainer(Explainer):
    """A concept-bottleneck model's class logits as sums over concepts.

    Args:
        model: a :class:`~explanations.concepts.cbm.ConceptBottleneckModel` (others refused).
        target_layer: the layer of the accompanying Grad-CAM map (default: the backbone's
            last convolution, ``ConceptBottleneckModel.target_layer``).

    ``explain`` returns, per target, Grad-CAM of the target logit (``>= 0``, logit per
    activation unit) and ``details``::

        {"kind": "concepts", "target": t, "logit": float, "bias": float,
         "probability": float in [0, 1], "concepts": [C names],
         "activations": [C floats in [0, 1]], "weights": [C floats],
         "contributions": [C floats]}

    with ``sum(contributions) + bias == logit`` up to float32 rounding (tested). How many
    concepts a participant sees is a study option; the details keep them all.

    Raises:
        ExplainerConfigError: not a concept-bottleneck model; unknown layer.
    """

    key: ClassVar[str] = "concepts"
    name: ClassVar[str] = "Concepts (concept bottleneck)"
    paper: ClassVar[str] = (
        "Koh, P. W., Nguyen, T., Tang, Y. S., Mussmann, S., Pierson, E., Kim, B., & Liang, P. "
        "Concept Bottleneck Models. ICML 2020."
    )
    non_negative: ClassVar[bool] = True

    def __init__(self, model: nn.Module, *, target_layer: str | None = None, **params: Any) -> None:
        super().__init__(model, target_layer=target_layer, **params)
        from explanations.concepts.cbm import ConceptBottleneckModel

        if not isinstance(model, ConceptBottleneckModel):
            raise ExplainerConfigError(
                f"concepts explain a concept-bottleneck model; {type(model).__name__} is not one "
                "(train one with `manage.py label_train DATASET --architecture cbm`)"
            )
        self._gradcam = GradCam(model, target_layer=target_layer or model.target_layer)
        self.params = {"map": "gradcam", "layer": self._gradcam.target_layer}

    def _attribute(self, inputs: torch.Tensor, targets: tuple[int, ...]):
        from explanations.concepts.cbm import explain

        maps = self._gradcam._attribute(inputs, targets)
        details = []
        for target in targets:
            e = explain(self.model, inputs, target)
            details.append(
                {
                    "kind": "concepts",
                    "target": int(target),
                    "logit": _r(e.logit),
                    "bias": _r(e.bias),
                    "probability": _r(e.probability),
                    "concepts": list(e.concepts),
                    "activations": [_r(v) for v in e.activations],
                    "weights": [_r(v) for v in e.weights],
                    "contributions": [_r(v) for v in e.contributions],
                }
            )
        return np.asarray(maps, dtype=np.float32), details


class PosthocPrototypeExplainer(Explainer):
    """Post-hoc prototypes for any CNN: for each target class, the training patches of that
    class nearest (in one layer's features) to the test image's most activated patch
    (:mod:`explanations.prototypes.posthoc`). Illustrations, not evidence: the model's logits
    are not computed from them, and every result says ``"post_hoc": True``.

    Args:
        model: any CNN whose ``target_layer`` outputs ``(N, C, H', W')``.
        target_layer: the layer (default: the last ``nn.Conv2d``).
        top_k: neighbours per target (default 3).
        metric: ``"cosine"`` (default) or ``"l2"``.
        bank_split: the dataset split the training patches come from (default ``"train"``).
        bank_per_class: labelled training images per class in the bank (default 100, the
            first by id: deterministic).

    The training patches are set by :meth:`bank_set` (an explanation job builds them from the
    job's dataset before the first item). ``explain`` returns per target the ``(S, S)``
    cosine similarity (clipped at 0) of every test cell to the nearest neighbour's patch
    vector, bilinearly upsampled, and ``details``::

        {"kind": "posthoc_prototypes", "post_hoc": True, "target": t, "layer": str,
         "metric": str, "box_method": "receptive-field" | "cell", "latent_size": [H', W'],
         "prototypes": [{"source_item": item id, "source_box": [x0, y0, x1, y1],
                         "test_box": [x0, y0, x1, y1], "distance": float,
                         "similarity": 1 - distance (cosine) or -distance (l2),
                         "activation": H' x W' similarities of the test cells}, ...]}

    Raises:
        ExplainerConfigError: bad parameters; ``explain`` before :meth:`bank_set`; a target
            class without training images in the bank.
    """

    key: ClassVar[str] = "posthoc_prototypes"
    name: ClassVar[str] = "Post-hoc prototypes (nearest training patches)"
    paper: ClassVar[str] = (
        "The retrieval step of Chen et al., This Looks Like That, NeurIPS 2019, applied after "
        "the fact to a CNN's features (no prototype layer; illustrations only)."
    )
    accepted_params: ClassVar[frozenset[str]] = frozenset(
        {"top_k", "metric", "bank_split", "bank_per_class"}
    )
    non_negative: ClassVar[bool] = True
    #: An explanation job must call :meth:`bank_set` with the dataset's training patches.
    needs_training_patches: ClassVar[bool] = True

    def __init__(self, model: nn.Module, *, target_layer: str | None = None, **params: Any) -> None:
        super().__init__(model, target_layer=target_layer, **params)
        from .base import resolve_layer, suggest_target_layer

        layer = target_layer or suggest_target_layer(model)
        resolve_layer(model, layer)
        top_k = params.get("top_k", DEFAULT_PROTOTYPES)
        metric = params.get("metric", "cosine")
        per_class = params.get("bank_per_class", 100)
        if not isinstance(top_k, int) or not 1 <= top_k <= 20:
            raise ExplainerConfigError(f"top_k must be an integer in 1..20, got {top_k!r}")
        if metric not in ("cosine", "l2"):
            raise ExplainerConfigError(f"metric must be 'cosine' or 'l2', got {metric!r}")
        if not isinstance(per_class, int) or not 1 <= per_class <= 5000:
            raise ExplainerConfigError(
                f"bank_per_class must be an integer in 1..5000, got {per_class!r}"
            )
        self.layer, self.top_k, self.metric = layer, top_k, metric
        self.bank_split = str(params.get("bank_split", "train"))
        self.bank_per_class = per_class
        self.bank = None
        self.params = {
            "layer": layer,
            "top_k": top_k,
            "metric": metric,
            "bank_split": self.bank_split,
            "bank_per_class": per_class,
        }

    def bank_set(self, inputs: torch.Tensor, classes, item_ids) -> None:
        """The training patches: ``inputs`` float32 ``(N, C, H, W)`` preprocessed as the model
        expects, ``classes`` int ``(N,)`` model class indices, ``item_ids`` ``N`` ids.

        Raises:
            ExplainerConfigError: no inputs, or lengths that differ.
        """
        from explanations.prototypes.posthoc import PatchBank

        classes = np.asarray(classes, dtype=np.int64)
        if len(inputs) == 0 or len(classes) != len(inputs) or len(item_ids) != len(inputs):
            raise ExplainerConfigError(
                "post-hoc prototypes need labelled training images (one class and id each)"
            )
        self.bank_attach(
            PatchBank(self.model, self.layer, inputs, metric=self.metric), classes, item_ids
        )

    def bank_attach(self, bank, classes, item_ids) -> None:
        """Use an already built :class:`~explanations.prototypes.posthoc.PatchBank` of this
        model and layer, with the ``(N,)`` classes and ``N`` item ids of its images."""
        self.bank, self.classes, self.item_ids = bank, np.asarray(classes), list(item_ids)

    def _attribute(self, inputs: torch.Tensor, targets: tuple[int, ...]):
        from explanations.prototypes.posthoc import layer_features

        if self.bank is None:
            raise ExplainerConfigError(
                "post-hoc prototypes need the training patches first (bank_set); run them as "
                "an explanation job, which takes them from the dataset's training split"
            )
        bank = self.bank
        feats = layer_features(self.model, self.layer, inputs)[0]  # (C, H', W')
        c, fh, fw = feats.shape
        cells = feats.permute(1, 2, 0).reshape(fh * fw, c)
        unit = cells / cells.norm(dim=1, keepdim=True).clamp_min(1e-12)
        size = tuple(inputs.shape[-2:])
        maps, details = [], []
        for target in targets:
            allowed = np.flatnonzero(self.classes == target)
            if allowed.size == 0:
                raise ExplainerConfigError(
                    f"no training image of class {target} among the post-hoc prototypes' "
                    f"training patches (split {self.bank_split!r})"
                )
            e = bank.query(inputs, k=self.top_k, images=allowed)
            prototypes = []
            for n in e.neighbours:
                vector = bank.vectors[n.train_index * fh * fw + n.h * fw + n.w]
                vector = vector / vector.norm().clamp_min(1e-12)
                sims = (unit @ vector).clamp_min(0.0).reshape(fh, fw)
                prototypes.append(
                    {
                        "source_item": int(self.item_ids[n.train_index]),
                        "source_box": _box(n.box),
                        "test_box": _box(e.query_box),
                        "distance": _r(n.distance),
                        "similarity": _r(1.0 - n.distance if e.metric == "cosine" else -n.distance),
                        "activation": np.round(sims.numpy(), 5).tolist(),
                    }
                )
            first = torch.tensor(prototypes[0]["activation"], dtype=torch.float32)[None, None]
            up = torch.nn.functional.interpolate(first, size=size, mode="bilinear")
            maps.append(up[0, 0].numpy())
            details.append(
                {
                    "kind": "posthoc_prototypes",
                    "post_hoc": True,
                    "target": int(target),
                    "layer": self.layer,
                    "metric": e.metric,
                    "box_method": e.box_method,
                    "latent_size": [int(fh), int(fw)],
                    "prototypes": prototypes,
                }
            )
        return np.stack(maps).astype(np.float32), details
