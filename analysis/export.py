"""Tidy exports that other tools read safely (no Django).

CSV follows RFC 4180 (pandas' ``csv`` quoting: fields with commas, quotes or newlines are
quoted, quotes doubled; CRLF-free ``\\n`` line ends; optional UTF-8 BOM for spreadsheet apps).
Text cells that a spreadsheet would run as a formula -- starting with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return (OWASP, "CSV Injection") -- get a leading apostrophe; numbers
are never touched, so ``-0.5`` stays a number.
"""

from __future__ import annotations

import pandas as pd

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value):
    """``value`` with a leading ``'`` if it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_bytes(frame: pd.DataFrame, *, bom: bool = False) -> bytes:
    """The frame as RFC 4180 CSV in UTF-8 (header row included), formula-safe.

    Args:
        frame: any DataFrame; object (text) columns are neutralised cell by cell.
        bom: start with a UTF-8 byte-order mark (Excel then reads UTF-8 correctly).
    """
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object:
            safe[column] = safe[column].map(neutralise)
    text = safe.to_csv(index=False, lineterminator="\n")
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
