"""Load explainer classes from dotted import paths and index them by their ``key``.

The project configures the available explanation methods as a list of dotted paths (e.g.
``"explanations.explainers.heatmap.gradcam.GradCam"``); :func:`build_registry` turns that list
into ``{"gradcam": GradCam, ...}``.  Configuration mistakes fail loudly with an
:class:`~explanations.explainers.base.ExplainerConfigError` (the analogue of Django's
``ImproperlyConfigured``; this module does not import Django).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence

from explanations.explainers.base import Explainer, ExplainerConfigError

__all__ = ["build_registry", "load_explainer_class"]

_REQUIRED_CLASS_ATTRIBUTES = ("key", "name", "paper")


def load_explainer_class(dotted_path: str) -> type[Explainer]:
    """Import and return the :class:`Explainer` subclass named by ``dotted_path``.

    Args:
        dotted_path: ``"package.module.ClassName"``.

    Returns:
        The class object (not an instance).

    Raises:
        ExplainerConfigError: if the path is malformed, the module cannot be imported, the
            module has no such attribute, the attribute is not a concrete (non-abstract)
            subclass of :class:`Explainer`, or it lacks a non-empty ``key``, ``name`` or
            ``paper`` string class attribute.  The message quotes ``dotted_path``.
    """
    if not isinstance(dotted_path, str):
        raise ExplainerConfigError(
            f"explainer path must be a string, got {type(dotted_path).__name__}"
        )
    module_path, _, class_name = dotted_path.rpartition(".")
    if not module_path or not class_name:
        raise ExplainerConfigError(
            f"explainer path {dotted_path!r} is not of the form 'package.module.ClassName'"
        )
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise ExplainerConfigError(
            f"cannot import module {module_path!r} for explainer {dotted_path!r}: {exc}"
        ) from exc
    try:
        cls = getattr(module, class_name)
    except AttributeError as exc:
        raise ExplainerConfigError(
            f"module {module_path!r} has no attribute {class_name!r} (explainer {dotted_path!r})"
        ) from exc
    if not (inspect.isclass(cls) and issubclass(cls, Explainer)):
        raise ExplainerConfigError(
            f"{dotted_path!r} is not a subclass of {Explainer.__module__}.Explainer"
        )
    if inspect.isabstract(cls):
        raise ExplainerConfigError(
            f"{dotted_path!r} is abstract (it does not implement _attribute)"
        )
    for attribute in _REQUIRED_CLASS_ATTRIBUTES:
        value = getattr(cls, attribute, None)
        if not isinstance(value, str) or not value:
            raise ExplainerConfigError(
                f"{dotted_path!r} must define a non-empty string class attribute {attribute!r}"
            )
    return cls


def build_registry(paths: Sequence[str]) -> dict[str, type[Explainer]]:
    """Load every class in ``paths`` and index it by its ``key``.

    Args:
        paths: dotted class paths, see :func:`load_explainer_class`.  Order is preserved in the
            returned dict.

    Returns:
        ``{cls.key: cls}``.

    Raises:
        ExplainerConfigError: if any path fails to load, or two classes share a ``key`` (the
            message names both paths).
    """
    if isinstance(paths, str):
        raise ExplainerConfigError("paths must be a sequence of dotted paths, not a single string")
    registry: dict[str, type[Explainer]] = {}
    origin: dict[str, str] = {}
    for path in paths:
        cls = load_explainer_class(path)
        if cls.key in registry:
            raise ExplainerConfigError(
                f"duplicate explainer key {cls.key!r}: defined by both {origin[cls.key]!r} "
                f"and {path!r}"
            )
        registry[cls.key] = cls
        origin[cls.key] = path
    return registry
