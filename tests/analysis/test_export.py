"""CSV export: RFC 4180 round trip, formula-injection neutralised, numbers untouched."""

from __future__ import annotations

import csv
import io

import pandas as pd

from analysis.export import csv_bytes


def test_csv_round_trips_awkward_text_and_neutralises_formulas():
    frame = pd.DataFrame(
        {
            "answer": [
                'say "hi", then\nleave',
                '=HYPERLINK("http://x")',
                "+1",
                "-2",
                "@sum",
                "\tx",
                "ok",
            ],
            "rt_ms": [1200, -5, 0, 3, 4, 5, 6],
            "score": [0.5, -0.25, 1.0, 0.0, 0.1, 0.2, 0.3],
        }
    )
    raw = csv_bytes(frame)
    assert not raw.startswith(b"\xef\xbb\xbf") and csv_bytes(frame, bom=True).startswith(
        b"\xef\xbb\xbf"
    )
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
    assert [r["answer"] for r in rows] == [
        'say "hi", then\nleave',  # commas, quotes and a newline survive (RFC 4180 quoting)
        '\'=HYPERLINK("http://x")',
        "'+1",
        "'-2",
        "'@sum",
        "'\tx",
        "ok",
    ]
    assert [r["rt_ms"] for r in rows][:2] == ["1200", "-5"]  # numbers stay numbers
    assert rows[1]["score"] == "-0.25"
    back = pd.read_csv(io.BytesIO(raw))
    assert back["rt_ms"].dtype.kind == "i" and back["score"].tolist() == frame["score"].tolist()


def test_every_exported_column_is_in_the_codebook_and_served(researcher, hive_study, client):
    from analysis.codebook import CODEBOOK, codebook_frame
    from analysis.datasets import RESPONSE_COLUMNS

    assert list(codebook_frame(RESPONSE_COLUMNS)["column"]) == RESPONSE_COLUMNS
    assert set(CODEBOOK) == set(RESPONSE_COLUMNS)  # nothing stale either
    client.force_login(researcher)
    rows = list(
        csv.DictReader(
            io.StringIO(client.get(f"/r/studies/{hive_study.slug}/codebook.csv").content.decode())
        )
    )
    assert [r["column"] for r in rows] == RESPONSE_COLUMNS and all(r["description"] for r in rows)
