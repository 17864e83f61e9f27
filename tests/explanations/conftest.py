"""Fixtures shared by the explanation tests: the tiny colour CNN registered as a factory model
and an ImageFolder of coloured squares (defined with the round-trip tests)."""

from tests.explanations.test_byo_roundtrip import (  # noqa: F401
    factory_model,
    folder_dataset,
    media,
)
