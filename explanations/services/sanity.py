"""Per-method sanity checks on a registered model, stored beside the human results.

* Model-parameter randomisation (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS
  2018): cascading re-initialisation from the logits down; a method explains the model only
  if its map changes (Spearman rank correlation with the original falls below 0.5).
* Input invariance (Kindermans et al., "The (Un)reliability of Saliency Methods", 2017): a
  second network whose first-layer bias absorbs a constant input shift gives the same outputs;
  an input-invariant method gives it the same map.

Both run on one image (the first labelled item of the dataset with a stored prediction, or the
one given) for the top-1 class, through :mod:`explanations.evaluation`, and are stored as
:class:`~explanations.models.MethodCheck` rows.
"""

from __future__ import annotations

import torch

from ..evaluation import input_invariance_check, model_randomisation_check, randomisation_passed
from ..modelio import pixels_to_input
from ..models import ClassifierModel, Dataset, Item, MethodCheck, Prediction
from .jobs import _explainer_build, explainer_classes, explanation_params_key, torch_device
from .registry import classifier_load, item_model_view

#: The shift of the input-invariance check, in the model's input units (after normalisation):
#: a constant a tenth of the unit range, as the paper's "mean shift" of the images.
INVARIANCE_SHIFT = 0.1


MAX_RANDOMISATION_STEPS = 8


def _layer_groups(net: torch.nn.Module) -> str | list[str]:
    """What the cascade randomises step by step: every learnable layer for a small model;
    for a deep one (EfficientNet-Lite0 has ~130) at most :data:`MAX_RANDOMISATION_STEPS`
    top-level modules and blocks (a block is randomised whole), top first, so a check costs
    a handful of explanations instead of one per layer."""
    learnable = [
        n for n, m in net.named_modules() if n and any(True for _ in m.parameters(recurse=False))
    ]
    if len(learnable) <= 2 * MAX_RANDOMISATION_STEPS:
        return "cascading"
    units = []
    for name, child in net.named_children():
        grand = list(child.named_children())
        if isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential)) and grand:
            units += [f"{name}.{g}" for g, _ in grand]
        elif any(True for _ in child.parameters()):
            units.append(name)
    units.reverse()  # top (logits) first
    if len(units) <= MAX_RANDOMISATION_STEPS:
        return units
    picks = sorted(
        {
            round(i * (len(units) - 1) / (MAX_RANDOMISATION_STEPS - 1))
            for i in range(MAX_RANDOMISATION_STEPS)
        }
    )
    return [units[i] for i in picks]


def method_checks_run(
    *,
    model: ClassifierModel,
    method: str,
    dataset: Dataset | None = None,
    item: Item | None = None,
    params: dict | None = None,
) -> list[MethodCheck]:
    """Run both checks for ``method`` on ``model`` and store them.

    Args:
        dataset: where to take the image from (default: any dataset with a prediction by
            ``model``); ignored when ``item`` is given.
        params: the method's parameters (paper defaults if empty).

    Returns:
        The two new :class:`MethodCheck` rows (``model_randomisation``, ``input_invariance``);
        ``result`` holds the per-step correlations / the map differences as JSON.

    Raises:
        ValueError: unknown method, or no item to run on.
        ExplainerConfigError: the method cannot run on this model (e.g. TorchScript + layer).
    """
    classes = explainer_classes()
    if method not in classes:
        raise ValueError(f"unknown explanation method {method!r}; enabled: {sorted(classes)}")
    if item is None:
        predictions = Prediction.objects.filter(model=model).select_related("item")
        if dataset is not None:
            predictions = predictions.filter(item__dataset=dataset)
        first = predictions.order_by("item_id").first()
        if first is None:
            raise ValueError(
                f"model {model.name!r} has no predictions yet: run an explanation job first"
            )
        item = first.item
    device = torch_device()
    net = classifier_load(model, device=device)
    view = item_model_view(item=item, model=model)
    inputs = pixels_to_input(view, model.normalization_mean, model.normalization_std).to(device)
    with torch.no_grad():
        target = int(net(inputs).argmax(dim=1))

    def factory(network):
        return _explainer_build(classes[method], network, model, params)

    key = explanation_params_key(method, factory(net).params)
    steps = model_randomisation_check(net, factory, inputs, target, layers=_layer_groups(net))
    invariance = input_invariance_check(net, factory, inputs, target, shift=INVARIANCE_SHIFT)
    common = {"model": model, "method": method, "params_key": key, "item": item}
    return [
        MethodCheck.objects.create(
            **common,
            name="model_randomisation",
            passed=randomisation_passed(steps),
            result={"target": target, "steps": [s.to_dict() for s in steps]},
        ),
        MethodCheck.objects.create(
            **common,
            name="input_invariance",
            passed=invariance.passed,
            result={"target": target, **invariance.to_dict()},
        ),
    ]
