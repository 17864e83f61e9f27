"""The tidy response table's method / confidence / attention_check / exclusion_reason columns,
and its typed Parquet export (round trip, the same permissions and filters as the CSV)."""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.test import Client

from analysis.codebook import CODEBOOK
from analysis.datasets import (
    AGREEMENT_CONFIDENCE,
    RESPONSE_COLUMNS,
    exclusion_reasons,
    participants_excluded,
    study_responses_frame,
)
from analysis.export import PARQUET_MEDIA_TYPE, csv_bytes, parquet_bytes, typed_frame
from studies.models import Response
from studies.simulation import ResponseModel, simulated_participant_run
from tests.studies.conftest import engine_world, make_study  # noqa: F401  (the engine world)

ARROW_TYPES = {
    "text": pa.string(),
    "json": pa.string(),
    "bool": pa.bool_(),
    "int": pa.int64(),
    "float": pa.float64(),
    "datetime": pa.timestamp("us", tz="UTC"),
}

# --- Parquet round trip ------------------------------------------------------------------------


def _awkward_frame() -> pd.DataFrame:
    """Three rows over every exported column, built as the frame builder builds them (object
    columns of str / bool / None, ISO 8601 text timestamps, Int64 confidence)."""
    rows = []
    for i in range(3):
        row = {}
        for column in RESPONSE_COLUMNS:
            kind = CODEBOOK[column][0]
            row[column] = {
                "text": f"{column}-{i}",
                "json": '{"a": 1}',
                "bool": i % 2 == 0,
                "int": 10 * i + 1,
                "float": 0.25 * (i + 1),
                "datetime": f"2024-05-0{i + 1}T12:34:56.{i:06d}+00:00",
            }[kind]
        rows.append(row)
    awkward = rows[1]
    awkward["answer"] = 'say "hi", then\nleave, ok'  # commas, quotes, a newline
    awkward["answer_label"] = '=HYPERLINK("http://x")'  # a formula: kept as typed here
    awkward["item"] = "Zürich café ☕ 東京"
    awkward["exclusion_reason"] = "-1 looks like a number"
    awkward["answer_data"] = '{"text": "a,b\\n\\"c\\""}'
    empty = rows[2]  # missing values wherever the builder leaves them missing
    for column in ("model_correct", "is_correct", "chance", "hidden_ms", "confidence"):
        empty[column] = None
    empty["shown_at"] = ""
    empty["attention_check"] = ""
    frame = pd.DataFrame(rows, columns=RESPONSE_COLUMNS)
    frame["confidence"] = frame["confidence"].astype("Int64")
    return frame


def _plain(value):
    """A cell as a comparable Python value: pandas' NA / NaT / NaN -> None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") and not isinstance(value, datetime) else value


def test_parquet_round_trips_every_column_with_its_type_and_value():
    frame = _awkward_frame()
    raw = parquet_bytes(frame)
    assert raw[:4] == b"PAR1" and raw[-4:] == b"PAR1"

    # the Arrow schema follows the codebook: bool, int64, double, timestamp[us, UTC], string
    schema = pq.read_schema(io.BytesIO(raw))
    assert schema.names == RESPONSE_COLUMNS
    for column in RESPONSE_COLUMNS:
        assert schema.field(column).type == ARROW_TYPES[CODEBOOK[column][0]], column

    # pandas reads back exactly the typed frame: same dtypes, same values, nulls where missing
    back = pd.read_parquet(io.BytesIO(raw))
    typed = typed_frame(frame)
    pd.testing.assert_frame_equal(back, typed)
    expected_dtypes = {
        "text": "string",
        "json": "string",
        "bool": "boolean",
        "int": "Int64",
        "float": "float64",
        "datetime": "datetime64[us, UTC]",
    }
    for column in RESPONSE_COLUMNS:
        assert str(back[column].dtype) == expected_dtypes[CODEBOOK[column][0]], column

    # every value is the one that went in (text untouched, times the same instants)
    for column in RESPONSE_COLUMNS:
        kind = CODEBOOK[column][0]
        for original, read in zip(frame[column], back[column], strict=True):
            original, read = _plain(original), _plain(read)
            if kind == "datetime":
                original = pd.Timestamp(original) if original else None
                assert read is None or read.tzname() == "UTC"
            assert read == original, (column, original, read)

    # plain pyarrow (no pandas metadata involved) sees the same
    table = pq.read_table(io.BytesIO(raw))
    row = table.slice(1, 1).to_pylist()[0]
    assert row["answer"] == 'say "hi", then\nleave, ok'
    assert row["answer_label"] == '=HYPERLINK("http://x")'  # not neutralised: not a spreadsheet
    assert row["item"] == "Zürich café ☕ 東京"
    assert row["exclusion_reason"] == "-1 looks like a number"
    missing = table.slice(2, 1).to_pylist()[0]
    assert all(
        missing[c] is None
        for c in ("model_correct", "is_correct", "chance", "hidden_ms", "confidence", "shown_at")
    )
    assert missing["attention_check"] == ""  # "" stays "" (the CSV's value), only times null
    assert str(missing["responded_at"].tzinfo) == "UTC"

    # the CSV of the same frame neutralises the formula (a spreadsheet format)
    rows = list(csv.DictReader(io.StringIO(csv_bytes(frame).decode())))
    assert rows[1]["answer_label"] == '\'=HYPERLINK("http://x")'


def test_an_empty_frame_still_has_the_typed_schema():
    frame = pd.DataFrame([], columns=RESPONSE_COLUMNS)
    schema = pq.read_schema(io.BytesIO(parquet_bytes(frame)))
    assert schema.names == RESPONSE_COLUMNS
    assert schema.field("responded_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("is_correct").type == pa.bool_()


def test_typed_frame_refuses_values_that_do_not_fit_their_type():
    with pytest.raises((TypeError, ValueError)):
        typed_frame(pd.DataFrame({"rt_ms": [1.5]}))
    with pytest.raises(ValueError, match="unknown type"):
        typed_frame(pd.DataFrame({"x": [1]}), {"x": "decimal"})
    untyped = typed_frame(pd.DataFrame({"not_in_codebook": ["=1"]}))
    assert untyped["not_in_codebook"].tolist() == ["=1"]


# --- the new columns on a real study -----------------------------------------------------------

CAREFUL = ResponseModel(rt_median_ms=2000, rt_sigma=0.0, attention_pass=1.0)
CARELESS = ResponseModel(rt_median_ms=2000, rt_sigma=0.0, attention_pass=0.0)
HASTY = ResponseModel(rt_median_ms=300, rt_sigma=0.0, attention_pass=1.0)


@pytest.fixture
def run_study(make_study):  # noqa: F811
    """Two conditions within subjects (Grad-CAM and no explanation), agreement and region
    annotation, one attention check (on agreement), a questionnaire; one careful, one careless and
    one hasty simulated participant through the real views."""
    study = make_study(
        conditions=[{"name": "cam", "method": "gradcam"}, {"name": "plain", "method": "none"}],
        condition_assignment="within",
        tasks=[{"type": "agreement"}, {"type": "region_annotation"}],
        task_assignment="within",
        trials={"attention_checks": 1},
        questionnaires=[{"type": "likert_understanding"}],
        exclusion={"max_attention_failures": 0, "min_median_rt_ms": 800},
    )
    people = {}
    for seed, (name, rm) in enumerate(
        (("careful", CAREFUL), ("careless", CARELESS), ("hasty", HASTY))
    ):
        people[name] = simulated_participant_run(client=Client(), study=study, rm=rm, seed=seed)
    return study, people


def test_the_new_columns_hold_real_values(run_study):
    study, people = run_study
    frame = study_responses_frame(study)
    assert list(frame.columns) == RESPONSE_COLUMNS
    assert RESPONSE_COLUMNS[-6:] == [
        "method",
        "confidence",
        "attention_check",
        "exclusion_reason",
        "explanation_type",
        "classifier",
    ]
    ids = {name: p.public_id for name, p in people.items()}

    # method: the condition's method when an explanation was shown, else empty
    item_trials = frame[frame["kind"].isin(["main", "attention"])]
    shown = item_trials[item_trials["task"] == "agreement"]
    assert set(shown[shown["condition"] == "cam"]["method"]) == {"gradcam"}
    assert set(shown[shown["condition"] == "plain"]["method"]) == {""}
    assert set(frame[frame["task"] == "region_annotation"]["method"]) == {""}  # photo only
    assert set(frame[frame["kind"] == "survey"]["method"]) == {""}

    # confidence: agreement main trials only, folded out of the 4-point scale
    agreement_main = frame[(frame["task"] == "agreement") & (frame["kind"] == "main")]
    assert len(agreement_main) > 0
    assert agreement_main["confidence"].tolist() == [
        AGREEMENT_CONFIDENCE[a] for a in agreement_main["answer"]
    ]
    assert set(agreement_main["confidence"]) <= {1, 2}
    others = frame[(frame["task"] != "agreement") | (frame["kind"] == "attention")]
    assert others["confidence"].isna().all()
    assert str(frame["confidence"].dtype) == "Int64"

    # attention_check: passed / failed on the checks, empty elsewhere
    checks = frame[frame["kind"] == "attention"]
    assert len(checks) == 3  # one each (region annotation has no option to instruct)
    by_person = checks.groupby("participant")["attention_check"].agg(set).to_dict()
    assert by_person == {
        ids["careful"]: {"passed"},
        ids["careless"]: {"failed"},
        ids["hasty"]: {"passed"},
    }
    assert set(frame[frame["kind"] != "attention"]["attention_check"]) == {""}
    verdicts = ["passed" if ok is True else "failed" for ok in checks["is_correct"]]
    assert checks["attention_check"].tolist() == verdicts

    # exclusion_reason: why, for exactly the excluded participants
    reasons = frame.groupby("participant")["exclusion_reason"].agg(set).to_dict()
    assert reasons == {
        ids["careful"]: {""},
        ids["careless"]: {"failed 1 attention check (max 0)"},
        ids["hasty"]: {"median response time 300 ms < 800 ms"},
    }
    assert (frame["excluded"] == (frame["exclusion_reason"] != "")).all()

    # timestamps: timezone-aware UTC ISO 8601
    for column in ("shown_at", "responded_at"):
        stamps = [datetime.fromisoformat(v) for v in frame[column] if v]
        assert stamps and all(s.utcoffset().total_seconds() == 0 for s in stamps), column
        assert all(v.endswith("+00:00") for v in frame[column] if v)


def test_exclusion_reasons_and_the_set_wrapper_agree(run_study):
    study, people = run_study
    reasons = exclusion_reasons(study)
    assert reasons == {
        people["careless"].pk: "failed 1 attention check (max 0)",
        people["hasty"].pk: "median response time 300 ms < 800 ms",
    }
    assert participants_excluded(study) == {people["careless"].pk, people["hasty"].pk}
    # both rules at once: joined; a laxer rule lets everyone through
    study.spec["exclusion"] = {"max_attention_failures": 0, "min_median_rt_ms": 2500}
    reasons = exclusion_reasons(study)
    assert reasons[people["careless"].pk] == (
        "failed 1 attention check (max 0); median response time 2000 ms < 2500 ms"
    )
    assert reasons[people["careful"].pk] == "median response time 2000 ms < 2500 ms"
    study.spec["exclusion"] = {"max_attention_failures": 1}
    assert exclusion_reasons(study) == {} and participants_excluded(study) == set()


def test_the_parquet_of_a_real_study_matches_its_csv(run_study, researcher):
    study, _ = run_study
    client = Client()
    client.force_login(researcher)
    got = client.get(f"/r/studies/{study.slug}/responses.parquet")
    assert got.status_code == 200 and got["Content-Type"] == PARQUET_MEDIA_TYPE
    assert got["Content-Disposition"] == f'attachment; filename="{study.slug}-responses.parquet"'
    table = pq.read_table(io.BytesIO(got.content))
    for column in RESPONSE_COLUMNS:
        assert table.schema.field(column).type == ARROW_TYPES[CODEBOOK[column][0]], column
    back = table.to_pandas()
    rows = list(
        csv.DictReader(
            io.StringIO(client.get(f"/r/studies/{study.slug}/responses.csv").content.decode())
        )
    )
    assert len(back) == len(rows) > 0
    assert back["participant"].tolist() == [r["participant"] for r in rows]
    assert back["exclusion_reason"].tolist() == [r["exclusion_reason"] for r in rows]
    assert back["excluded"].tolist() == [r["excluded"] == "True" for r in rows]
    confidence = ["" if pd.isna(c) else str(c) for c in back["confidence"]]
    assert confidence == [r["confidence"] for r in rows]  # Int64: "2", not "2.0"
    assert back["rt_ms"].tolist() == [int(r["rt_ms"]) for r in rows]
    assert [t.isoformat() for t in back["responded_at"]] == [r["responded_at"] for r in rows]


# --- the same permissions and filters as the CSV -----------------------------------------------


def _enrolled_browser(study) -> Client:
    """A participant: followed the start link (a session and a token), no login."""
    client = Client()
    assert client.get(f"/s/{study.slug}/").status_code == 302
    return client


def test_parquet_is_served_to_exactly_whom_the_csv_is(
    hive_study, researcher, co_researcher, outsider
):
    clients = {
        "owner": Client(),
        "other_researcher": Client(),
        "outsider": Client(),
        "participant": _enrolled_browser(hive_study),
        "anonymous": Client(),
    }
    clients["owner"].force_login(researcher)
    clients["other_researcher"].force_login(co_researcher)
    clients["outsider"].force_login(outsider)
    base = f"/r/studies/{hive_study.slug}/responses"
    expected = {
        "owner": 200,
        "other_researcher": 404,
        "outsider": 404,
        "participant": 302,
        "anonymous": 302,
    }
    for role, client in clients.items():
        csv_reply, parquet_reply = client.get(f"{base}.csv"), client.get(f"{base}.parquet")
        assert csv_reply.status_code == parquet_reply.status_code == expected[role], role
        if expected[role] == 302:
            assert parquet_reply["Location"].startswith("/admin/login/?next="), role
        if expected[role] != 200:
            assert not parquet_reply.content.startswith(b"PAR1"), role
    assert Client().get("/r/studies/nope/responses.parquet").status_code == 302
    owner = clients["owner"]
    assert owner.get("/r/studies/nope/responses.parquet").status_code == 404
    # the same simulated filter as the CSV
    bad = owner.get(f"{base}.parquet", {"simulated": "sometimes"})
    assert (
        bad.status_code == 400 == owner.get(f"{base}.csv", {"simulated": "sometimes"}).status_code
    )


def test_parquet_applies_the_simulated_filter_like_the_csv(run_study, researcher):
    study, _ = run_study
    client = Client()
    client.force_login(researcher)
    base = f"/r/studies/{study.slug}/responses"
    n_all = Response.objects.filter(participant__study=study).count()  # all simulated
    for simulated, n_rows in (("include", n_all), ("exclude", 0), ("only", n_all)):
        back = pd.read_parquet(
            io.BytesIO(client.get(f"{base}.parquet", {"simulated": simulated}).content)
        )
        rows = list(
            csv.DictReader(
                io.StringIO(client.get(f"{base}.csv", {"simulated": simulated}).content.decode())
            )
        )
        assert len(back) == len(rows) == n_rows, simulated
        assert list(back.columns) == RESPONSE_COLUMNS


def test_the_results_page_links_the_parquet_download(hive_study, researcher):
    client = Client()
    client.force_login(researcher)
    page = client.get(f"/r/studies/{hive_study.slug}/results/?simulated=exclude").content.decode()
    assert f"/r/studies/{hive_study.slug}/responses.csv?simulated=exclude" in page
    assert f"/r/studies/{hive_study.slug}/responses.parquet?simulated=exclude" in page


# --- the API export ------------------------------------------------------------------------------


def test_the_api_export_serves_parquet_with_the_csv_permissions(run_study, co_researcher):
    study, _ = run_study
    owner = Client()
    owner.force_login(study.owner)
    other = Client()
    other.force_login(co_researcher)
    url = f"/api/studies/{study.slug}/responses.csv"
    parquet = owner.get(url, {"format": "parquet"})
    assert parquet.status_code == 200 and parquet["Content-Type"] == PARQUET_MEDIA_TYPE
    assert parquet["Content-Disposition"].endswith(f'"{study.slug}-responses.parquet"')
    back = pd.read_parquet(io.BytesIO(parquet.content))
    pd.testing.assert_frame_equal(back, typed_frame(study_responses_frame(study)))
    for query in ({}, {"format": "csv"}):
        plain = owner.get(url, query)
        assert plain.status_code == 200 and plain["Content-Type"].startswith("text/csv")
        assert plain.content.decode().splitlines()[0].split(",") == RESPONSE_COLUMNS
    bad = owner.get(url, {"format": "xlsx"})
    assert bad.status_code == 400 and "format" in bad.json()
    for query in ({"format": "parquet"}, {}):
        assert other.get(url, query).status_code == 404
        refused = Client().get(url, query)
        assert refused.status_code == 403 and refused["Content-Type"] == "application/json"
    simulated_only = pd.read_parquet(
        io.BytesIO(owner.get(url, {"format": "parquet", "simulated": "exclude"}).content)
    )
    assert len(simulated_only) == 0 and list(simulated_only.columns) == RESPONSE_COLUMNS


def test_the_codebook_describes_every_column_with_a_parquet_type():
    assert list(CODEBOOK) == RESPONSE_COLUMNS
    for column in ("method", "confidence", "attention_check", "exclusion_reason"):
        kind, text = CODEBOOK[column]
        assert kind in ARROW_TYPES and len(text) > 20, column
    assert CODEBOOK["confidence"][0] == "int"
