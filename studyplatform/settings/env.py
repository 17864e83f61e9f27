"""Typed readers for settings that come from the environment.

Each helper returns the default when the variable is unset and raises
``ImproperlyConfigured`` naming the variable when it is set to a value that cannot be parsed,
so a typo in production fails at start-up instead of silently falling back (the pattern of
healthchecks' ``envbool``/``envint``).
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    """Return ``$name`` as a string, or ``default`` when unset."""
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    """Return ``$name`` parsed as a boolean (1/true/yes/on, 0/false/no/off).

    Raises:
        ImproperlyConfigured: the variable is set to anything else.
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """Return ``$name`` parsed as an integer, at least ``minimum`` when given.

    Raises:
        ImproperlyConfigured: not an integer, or below ``minimum``.
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_float(name: str, default: float) -> float:
    """Return ``$name`` parsed as a float.

    Raises:
        ImproperlyConfigured: not a number.
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


def env_list(name: str, default: list[str]) -> list[str]:
    """Return ``$name`` split on commas, blanks dropped."""
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [part.strip() for part in raw.split(",") if part.strip()]
