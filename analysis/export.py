"""Tidy exports that other tools read safely (no Django).

CSV follows RFC 4180 (pandas' ``csv`` quoting: fields with commas, quotes or newlines are
quoted, quotes doubled; CRLF-free ``\\n`` line ends; optional UTF-8 BOM for spreadsheet apps).
Text cells that a spreadsheet would run as a formula -- starting with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return (OWASP, "CSV Injection") -- get a leading apostrophe; numbers
are never touched, so ``-0.5`` stays a number.

Parquet (:func:`parquet_bytes`) is typed: each column gets the Arrow type of its codebook type
(:data:`analysis.codebook.CODEBOOK`): bools as ``bool``, ints as nullable ``int64``, floats as
``double``, datetimes as ``timestamp[us, tz=UTC]``, text and JSON as ``string``. Missing
bools, ints, floats (NaN) and times are nulls; text keeps ``""`` where the CSV has it. Text is
written exactly as stored, with *no* formula neutralisation: Parquet is not a spreadsheet
format -- no spreadsheet opens it directly, and the tools that read it (pandas, R arrow,
DuckDB, Spark) never evaluate a cell -- so a leading apostrophe would only corrupt the data
(an answer typed as ``=1+1`` must stay ``=1+1``). Whoever converts Parquet to a spreadsheet
format takes on that format's escaping.
"""

from __future__ import annotations

import io

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


#: IANA media type of Apache Parquet files (registered 2024).
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"

#: Codebook type -> pandas dtype of the typed frame (and so the Parquet/Arrow column type).
PARQUET_DTYPES = {
    "bool": "boolean",
    "int": "Int64",
    "float": "float64",
    "text": "string",
    "json": "string",
    "datetime": "datetime64[us, UTC]",
}


def typed_frame(frame: pd.DataFrame, types: dict[str, str] | None = None) -> pd.DataFrame:
    """The frame with one pandas dtype per column, as :func:`parquet_bytes` writes it.

    Args:
        frame: the columns to convert; bools may hold None, ints may be floats with NaN,
            datetimes are ISO 8601 text with an offset (``""`` or None = missing).
        types: column -> codebook type (``bool``, ``int``, ``float``, ``text``, ``json``,
            ``datetime``); defaults to :data:`analysis.codebook.CODEBOOK`. Columns with no
            type keep their dtype (Arrow infers one).

    Raises:
        ValueError: an unknown type, or values that do not fit theirs (TypeError for ``1.5``
            in an int column).
    """
    if types is None:
        from .codebook import CODEBOOK

        types = {column: kind for column, (kind, _) in CODEBOOK.items()}
    out = frame.copy()
    for column in out.columns:
        kind = types.get(column)
        if kind is None:
            continue
        if kind not in PARQUET_DTYPES:
            raise ValueError(f"{column}: unknown type {kind!r}")
        values = out[column]
        if kind == "datetime" and not pd.api.types.is_datetime64_any_dtype(values):
            values = values.astype(object).where(values.notna() & (values != ""), None)
            values = pd.to_datetime(values, utc=True, format="ISO8601")
        elif kind == "datetime":
            values = pd.to_datetime(values, utc=True)
        elif kind in ("text", "json"):
            values = values.astype(object).where(values.notna(), None)
        out[column] = values.astype(PARQUET_DTYPES[kind])
    return out


def parquet_bytes(frame: pd.DataFrame, types: dict[str, str] | None = None) -> bytes:
    """The frame as a typed Parquet file (see :func:`typed_frame`; no index column).

    Unlike :func:`csv_bytes`, text is not formula-neutralised: Parquet is not a spreadsheet
    format (see the module docstring).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(typed_frame(frame, types), preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
