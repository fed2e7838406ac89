"""Ingestion on real engines: the real Taobao dev file and generated logs with injected faults."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import make_test_config
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from recbatch.events.generator import generate
from recbatch.events.ingest import IngestError, ingest_events

TAOBAO_WINDOW = ("2017-11-25T00:00:00+08:00", "2017-12-01T00:00:00+08:00")

# (raw CSV line, expected reason); timestamps sit inside the generator's window unless the row
# is about the window. "now" is pinned to 2026-02-15 for these tests.
FAULTS = [
    ("1,2,3,view", "malformed_row"),
    (",2,3,view,2026-01-05T10:00:00.000Z", "missing_user_id"),
    ("1,,3,view,2026-01-05T10:00:00.000Z", "missing_item_id"),
    ("1,2,3,,2026-01-05T10:00:00.000Z", "missing_event_type"),
    ("1,2,3,view,", "missing_event_ts"),
    ("1,abc,3,view,2026-01-05T10:00:00.000Z", "bad_item_id"),
    ("-4,2,3,view,2026-01-05T10:00:00.000Z", "bad_user_id"),
    ("1,2,3.5,view,2026-01-05T10:00:00.000Z", "bad_category_id"),
    ("1,2,3,view,yesterday", "bad_event_ts"),
    ("1,2,3,click,2026-01-05T10:00:00.000Z", "unknown_event_type"),
    ("1,2,3,view,2025-06-01T00:00:00.000Z", "before_window"),
    ("1,2,3,buy,2026-04-01T00:00:00.000Z", "after_window"),
    ("1,2,3,cart,2026-02-20T00:00:00.000Z", "in_future"),
    ("7,8,9,fav,2026-01-06T10:00:00.000Z", None),
    ("7,8,9,fav,2026-01-06T10:00:00.000Z", "duplicate"),
]


def _taobao_expectations(path: Path) -> tuple[int, int, int]:
    """Rows, truncated rows and out-of-window rows, counted without Spark."""
    lo, hi = (datetime.fromisoformat(t).timestamp() for t in TAOBAO_WINDOW)
    rows = malformed = outside = 0
    with path.open(newline="") as fh:
        for fields in csv.reader(fh):
            rows += 1
            if len(fields) != 5:
                malformed += 1
            elif not lo <= int(fields[4]) < hi:
                outside += 1
    return rows, malformed, outside


def _delta_count(spark, path: str) -> int:
    return spark.read.format("delta").load(path).count()


@pytest.fixture(scope="module")
def generated_raw(spark, data_root: Path) -> Path:
    """A small generated log plus one file of injected faults, in one raw folder."""
    cfg = make_test_config(
        data_root / "ingest_gen",
        "generator.n_users=200",
        "generator.n_items=150",
        "generator.n_categories=6",
        "generator.partitions=2",
    )
    raw = Path(cfg.path("raw_events"))
    generate(spark, cfg.generator, str(raw), cfg.path("ground_truth"))
    header = "user_id,item_id,category_id,event_type,event_ts"
    (raw / "faults.csv").write_text(header + "\n" + "\n".join(line for line, _ in FAULTS) + "\n")
    return raw


def _fault_config(data_root: Path, raw: Path, name: str, *overrides: str):
    return make_test_config(
        data_root / name,
        f"ingest.input_path={raw}",
        "ingest.now=2026-02-15T00:00:00+00:00",
        "ingest.window_start=2026-01-01T00:00:00+00:00",
        "ingest.window_end=2026-03-01T00:00:00+00:00",
        *overrides,
    )


def test_taobao_dev_file_quarantines_out_of_window_and_truncated_rows(
    spark, data_root, shared_data
):
    source = shared_data / "taobao_user_behavior_dev.csv"
    cfg = make_test_config(
        data_root / "taobao",
        f"ingest.input_path={source}",
        "ingest.input_format=taobao",
        f"ingest.window_start={TAOBAO_WINDOW[0]}",
        f"ingest.window_end={TAOBAO_WINDOW[1]}",
    )
    rows, malformed, outside = _taobao_expectations(source)
    assert malformed >= 1 and outside >= 1, "the dev file is known to hold such rows"

    report = ingest_events(spark, cfg)

    assert report.total_rows == rows
    assert set(report.rejected) <= {"malformed_row", "before_window", "after_window"}
    assert report.rejected["malformed_row"] == malformed
    window = report.rejected.get("before_window", 0) + report.rejected.get("after_window", 0)
    assert window == outside
    assert report.accepted_rows + report.rejected_rows == rows
    assert _delta_count(spark, report.events_table) == report.accepted_rows == report.inserted_rows
    quarantine = spark.read.format("delta").load(report.quarantine_table)
    assert quarantine.count() == report.rejected_rows
    assert quarantine.where(F.col("source").endswith(source.name)).count() == report.rejected_rows
    truncated = quarantine.where("reason = 'malformed_row'").select("raw_record").head()
    assert truncated and truncated["raw_record"].count(",") == 3
    views = spark.read.format("delta").load(report.events_table).where("event_type = 'view'")
    assert views.count() > 0, "Taobao pv must be read as view"


def test_injected_faults_each_land_in_quarantine_with_their_reason(spark, data_root, generated_raw):
    cfg = _fault_config(data_root, generated_raw, "faults")
    report = ingest_events(spark, cfg)

    quarantine = spark.read.format("delta").load(report.quarantine_table)
    from_faults = quarantine.where(F.col("source").endswith("faults.csv"))
    got = sorted(r["reason"] for r in from_faults.select("reason").collect())
    assert got == sorted(reason for _, reason in FAULTS if reason)
    generated_rejects = quarantine.where(~F.col("source").endswith("faults.csv")).count()
    assert generated_rejects == 0, "the generator's own rows are all valid"
    assert report.accepted_rows + report.rejected_rows == report.total_rows
    assert _delta_count(spark, report.events_table) == report.accepted_rows
    events = spark.read.format("delta").load(report.events_table)
    assert events.where("user_id = 7 AND item_id = 8").count() == 1, (
        "one copy of the duplicate kept"
    )


def test_rerun_of_same_input_is_idempotent(spark, data_root, generated_raw):
    cfg = _fault_config(data_root, generated_raw, "rerun")
    first = ingest_events(spark, cfg)
    events_v1 = (
        spark.read.format("delta")
        .load(first.events_table)
        .orderBy("user_id", "item_id", "event_ts", "event_type")
        .collect()
    )
    second = ingest_events(spark, cfg)

    assert second.inserted_rows == 0
    assert second.rejected == first.rejected
    events_v2 = (
        spark.read.format("delta")
        .load(second.events_table)
        .orderBy("user_id", "item_id", "event_ts", "event_type")
        .collect()
    )
    assert events_v2 == events_v1
    assert _delta_count(spark, second.quarantine_table) == first.rejected_rows


def test_reject_ratio_over_threshold_fails_cleanly_and_writes_no_events(
    spark, data_root, generated_raw
):
    cfg = _fault_config(data_root, generated_raw, "strict", "ingest.max_reject_ratio=0.0001")
    with pytest.raises(IngestError, match=r"max_reject_ratio.*nothing written to events"):
        ingest_events(spark, cfg)
    assert not DeltaTable.isDeltaTable(spark, cfg.table_path("events"))
    assert _delta_count(spark, cfg.table_path("quarantine")) == sum(1 for _, r in FAULTS if r)


def test_failed_run_keeps_what_was_already_written(spark, data_root, generated_raw):
    ok = _fault_config(data_root, generated_raw, "keep")
    before = ingest_events(spark, ok).accepted_rows
    strict = _fault_config(data_root, generated_raw, "keep", "ingest.max_reject_ratio=0.0001")
    with pytest.raises(IngestError):
        ingest_events(spark, strict)
    assert _delta_count(spark, ok.table_path("events")) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user,item,category,type,ts\n1,2,3,view,2026-01-05T10:00:00Z\n", "wrong schema"),
        ("user_id,item_id,category_id,event_type,event_ts\n", "empty input"),
    ],
)
def test_wrong_schema_and_empty_input_are_clear_errors(
    spark, data_root, tmp_path, content, message
):
    (tmp_path / "events.csv").write_text(content)
    cfg = _fault_config(data_root, tmp_path, f"bad_{message.replace(' ', '_')}")
    with pytest.raises(IngestError, match=message):
        ingest_events(spark, cfg)
    assert not DeltaTable.isDeltaTable(spark, cfg.table_path("events"))


def test_missing_input_is_a_clear_error(spark, data_root, tmp_path):
    cfg = _fault_config(data_root, tmp_path / "nowhere", "missing")
    with pytest.raises(IngestError, match="no input files"):
        ingest_events(spark, cfg)


def test_parquet_input_with_typed_columns(spark, data_root, tmp_path):
    ts = datetime(2026, 1, 3, 12, 0, tzinfo=UTC)
    rows = [(1, 10, 100, "view", ts), (1, 10, 100, "buy", ts), (2, 11, 100, "clicked", ts)]
    spark.createDataFrame(
        rows, "user_id long, item_id long, category_id long, event_type string, event_ts timestamp"
    ).write.parquet(str(tmp_path / "pq"))
    cfg = _fault_config(
        data_root,
        tmp_path / "pq",
        "parquet",
        "ingest.input_format=parquet",
        "ingest.max_reject_ratio=0.5",
    )
    report = ingest_events(spark, cfg)
    assert (report.accepted_rows, report.rejected) == (2, {"unknown_event_type": 1})
    missing = tmp_path / "pq_missing"
    spark.createDataFrame([(1, "view")], "user_id long, event_type string").write.parquet(
        str(missing)
    )
    bad = _fault_config(data_root, missing, "parquet_bad", "ingest.input_format=parquet")
    with pytest.raises(IngestError, match="missing column"):
        ingest_events(spark, bad)


def test_tables_are_queryable_in_sql_by_name(spark, data_root, generated_raw):
    from recbatch.sql import run_sql

    cfg = _fault_config(data_root, generated_raw, "sql")
    report = ingest_events(spark, cfg)
    rows = run_sql(spark, cfg, "SELECT reason, count(*) AS n FROM quarantine GROUP BY reason")
    assert {r["reason"]: r["n"] for r in rows.collect()} == report.rejected
    total = run_sql(spark, cfg, "SELECT count(*) AS n FROM recbatch.events").head()["n"]
    assert total == report.accepted_rows


# --- string ids -----------------------------------------------------------------------------------

CATALOGUE_IDS = [
    # user, item, category: Amazon ASINs, SKUs, and ids that are one integer but two strings
    "U-17,B000000NGH,Electronics,view,2026-01-05T10:00:00Z",
    "U-17,B000000NGH,Electronics,buy,2026-01-05T11:00:00Z",
    "U-17,SKU-123-XL,Apparel,view,2026-01-05T12:00:00Z",
    "U-17,007,Books,view,2026-01-06T10:00:00Z",
    "U-17, 7 ,Books,view,2026-01-06T10:00:00Z",
    "u-17,7,Books,view,2026-01-06T10:00:00Z",
    "   ,7,Books,view,2026-01-06T10:00:00Z",
]


def _catalogue_input(tmp_path: Path) -> Path:
    folder = tmp_path / "catalogue_ids"
    folder.mkdir()
    header = "user_id,item_id,category_id,event_type,event_ts"
    (folder / "events.csv").write_text(header + "\n" + "\n".join(CATALOGUE_IDS) + "\n")
    return folder


def test_string_ids_are_kept_as_they_arrived(spark, data_root, tmp_path):
    raw = _catalogue_input(tmp_path)
    cfg = _fault_config(
        data_root, raw, "string_ids", "ingest.ids=string", "ingest.max_reject_ratio=0.5"
    )
    report = ingest_events(spark, cfg)
    assert report.rejected == {"missing_user_id": 1}
    events = spark.read.format("delta").load(cfg.table_path("events"))
    assert {f.name: f.dataType.simpleString() for f in events.schema.fields if "id" in f.name} == {
        "user_id": "string",
        "item_id": "string",
        "category_id": "string",
    }
    rows = {(r.user_id, r.item_id, r.category_id, r.event_type) for r in events.collect()}
    assert rows == {
        ("U-17", "B000000NGH", "Electronics", "view"),
        ("U-17", "B000000NGH", "Electronics", "buy"),
        ("U-17", "SKU-123-XL", "Apparel", "view"),
        ("U-17", "007", "Books", "view"),  # "007" and "7" are two products ...
        ("U-17", "7", "Books", "view"),  # ... and " 7 " is "7", trimmed
        ("u-17", "7", "Books", "view"),  # case is part of the id
    }

    # the same file read as integers: the letters are bad ids, and "007" is the product 7
    as_integers = _fault_config(
        data_root, raw, "string_ids_as_integers", "ingest.max_reject_ratio=1"
    )
    report = ingest_events(spark, as_integers)
    assert report.rejected == {"bad_user_id": 6, "missing_user_id": 1}

    # a data root keeps the kind of id it started with: nothing is written on a mismatch
    before = _delta_count(spark, cfg.table_path("events"))
    mixed = _fault_config(data_root, raw, "string_ids")  # ingest.ids=integer
    with pytest.raises(IngestError, match="holds string ids but ingest.ids=integer"):
        ingest_events(spark, mixed)
    assert _delta_count(spark, cfg.table_path("events")) == before


def test_string_ids_collide_as_integers_but_not_as_strings(spark, data_root, tmp_path):
    raw = tmp_path / "collide"
    raw.mkdir()
    header = "user_id,item_id,category_id,event_type,event_ts"
    lines = ["1,007,3,view,2026-01-05T10:00:00Z", "1,7,3,view,2026-01-05T10:00:00Z"]
    (raw / "events.csv").write_text(header + "\n" + "\n".join(lines) + "\n")
    as_integers = ingest_events(
        spark, _fault_config(data_root, raw, "collide_int", "ingest.max_reject_ratio=0.5")
    )
    as_strings = ingest_events(
        spark, _fault_config(data_root, raw, "collide_str", "ingest.ids=string")
    )
    assert (as_integers.accepted_rows, as_integers.rejected) == (1, {"duplicate": 1})
    assert (as_strings.accepted_rows, as_strings.rejected) == (2, {})
