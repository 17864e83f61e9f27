"""Number formatting for results pages."""

import math

from django import template

register = template.Library()


@register.filter
def p_value(value) -> str:
    """A p-value with 3 significant digits; "< 0.0001" below that; "-" when missing."""
    try:
        p = float(value)
    except (TypeError, ValueError):
        return "-"
    if math.isnan(p):
        return "-"
    if p < 1e-4:
        return "< 0.0001"
    return f"{p:.3g}"


@register.filter
def is_text(value) -> bool:
    """True for cells shown left-aligned (text), False for numbers and booleans."""
    return isinstance(value, str)


@register.filter
def cell(value) -> str:
    """A report table cell: floats to 3 decimals (tiny values in e-notation), None as "-"."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.1e}"
        return f"{value:.3f}"
    return str(value)
