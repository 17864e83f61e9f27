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
