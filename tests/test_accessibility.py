"""Colour contrast of the participant pages' text (WCAG 2.1, success criterion 1.4.3: at least
4.5:1 for normal text), computed from the colours the stylesheet in ``templates/base.html``
actually uses. Labels and focus order are checked in the browser (tests/browser)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = (Path(__file__).resolve().parents[1] / "templates" / "base.html").read_text()


def luminance(hex_colour: str) -> float:
    """Relative luminance (WCAG 2.1 definition) of ``#rrggbb``."""
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def var(name: str) -> str:
    return re.search(rf"--{name}:(#[0-9a-fA-F]{{6}})", CSS).group(1)


def test_contrast_formula_matches_the_textbook_values():
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # WebAIM's example


@pytest.mark.parametrize(
    "what, text, background",
    [
        ("body text on the page", "fg", "bg"),
        ("body text on cards", "fg", "#ffffff"),
        ("muted text on the page", "muted", "bg"),
        ("muted text on cards", "muted", "#ffffff"),
        ("button label", "#ffffff", "accent"),
        ("secondary button", "accent", "#ffffff"),
        ("error message", "fg", "#fff1f0"),
        ("attention-check instruction", "fg", "#fff8e1"),
        ("badge", "fg", "#e6e9ee"),
        ("selected choice", "fg", "#eef4ff"),
    ],
)
def test_text_meets_wcag_aa_contrast(what, text, background):
    t = text if text.startswith("#") else var(text)
    b = background if background.startswith("#") else var(background)
    assert contrast(t, b) >= 4.5, what
