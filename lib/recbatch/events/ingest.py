"""Ingestion: raw event files in, validated Delta ``events`` and ``quarantine`` tables out.

* Good rows are *inserted if new* into ``events`` (partitioned by ``event_date``), so re-running
  the same input adds nothing.
* Bad rows go to ``quarantine`` with their reason and source file; the rows of the sources being
  ingested are replaced in one commit, so a re-run does not duplicate them either.
* If the share of bad rows exceeds ``ingest.max_reject_ratio`` the run fails with the breakdown
  and writes nothing to ``events`` (the quarantine is still written, so the cause can be queried).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel

from recbatch.config import RecbatchConfig
from recbatch.errors import RecbatchError
from recbatch.events.readers import InputNotFound, InputSchemaError, read_raw_events
from recbatch.events.validate import EVENT_KEY, accepted_events, classify, rejected_rows
from recbatch.io.delta import (
    enable_change_data_feed,
    is_delta_table,
    merge_new_rows,
    replace_where,
    sql_literal_list,
)
from recbatch.io.ids import IdKind, id_type
from recbatch.log import get_logger, timed

log = get_logger(__name__)


class IngestError(RecbatchError):
    """The input cannot be ingested (missing, empty, wrong schema, too many bad rows)."""


@dataclass
class IngestReport:
    """What one ingestion run read, accepted, rejected (by reason) and newly inserted."""

    input_path: str
    total_rows: int
    accepted_rows: int
    rejected: dict[str, int] = field(default_factory=dict)
    inserted_rows: int = 0
    events_table: str = ""
    quarantine_table: str = ""

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejected.values())

    @property
    def reject_ratio(self) -> float:
        return self.rejected_rows / self.total_rows if self.total_rows else 0.0

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        return (
            f"{self.total_rows} rows read from {self.input_path}: {self.accepted_rows} accepted, "
            f"{self.rejected_rows} quarantined ({self.reject_ratio:.2%}; {reasons}), "
            f"{self.inserted_rows} new in events"
        )


def _count_by_reason(classified: DataFrame) -> dict[str | None, int]:
    """One aggregation over the classified rows; the result is a handful of rows."""
    return {r["reason"]: r["count"] for r in classified.groupBy("reason").count().collect()}


def _source_files(classified: DataFrame) -> list[str]:
    """Distinct input files (one row per file, not per event)."""
    return sorted(r["source"] for r in classified.select("source").distinct().collect())


def ingest_events(spark: SparkSession, cfg: RecbatchConfig) -> IngestReport:
    """Validate the configured raw input and write the ``events`` and ``quarantine`` tables."""
    settings = cfg.ingest
    input_path = cfg.ingest_input()
    check_events_id_type(spark, cfg.table_path("events"), settings.ids)
    try:
        raw = read_raw_events(spark, input_path, settings.input_format)
    except (InputNotFound, InputSchemaError) as err:
        raise IngestError(str(err)) from err

    classified = classify(raw, settings).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with timed(log, f"validating {input_path} ({settings.input_format})"):
            counts = _count_by_reason(classified)
        report = IngestReport(
            input_path=input_path,
            total_rows=sum(counts.values()),
            accepted_rows=counts.get(None, 0),
            rejected={k: v for k, v in counts.items() if k is not None},
            events_table=cfg.table_path("events"),
            quarantine_table=cfg.table_path("quarantine"),
        )
        if report.total_rows == 0:
            raise IngestError(f"empty input: no rows in {input_path}")
        _write_quarantine(spark, classified, report, str(cfg.run_date or ""))
        if report.reject_ratio > settings.max_reject_ratio:
            raise IngestError(
                f"rejected {report.rejected_rows} of {report.total_rows} rows "
                f"({report.reject_ratio:.2%} > ingest.max_reject_ratio "
                f"{settings.max_reject_ratio:.2%}); nothing written to events. Reasons: "
                + ", ".join(f"{k}={v}" for k, v in sorted(report.rejected.items()))
                + ". Inspect: ./spark-submit.sh sql 'SELECT reason, source, raw_record FROM"
                + " quarantine'"
            )
        with timed(log, f"merging {report.accepted_rows} accepted rows into events"):
            report.inserted_rows = merge_new_rows(
                spark,
                accepted_events(classified),
                report.events_table,
                key_columns=EVENT_KEY,
                partition_columns=("event_date",),
            )
        if enable_change_data_feed(spark, report.events_table):
            log.info("turned on the change data feed of events (incremental examples read it)")
    finally:
        classified.unpersist()
    log.info("ingest: %s", report.summary())
    return report


def check_events_id_type(spark: SparkSession, events_table: str, ids: IdKind) -> None:
    """Refuse, before writing anything, to read ids of one kind beside an ``events`` table of
    the other: "007" read as a string is not the product 7 already stored, and a catalogue of
    one kind would join no event of the other."""
    if not is_delta_table(spark, events_table):
        return
    stored = spark.read.format("delta").load(events_table).schema["item_id"].dataType
    if stored != id_type(ids):
        raise IngestError(
            f"the events table at {events_table} holds {stored.simpleString()} ids but "
            f"ingest.ids={ids} reads {id_type(ids).simpleString()} ones: keep ingest.ids as it "
            "was for this data root, or ingest into a new one (paths.data_root)"
        )


def _write_quarantine(
    spark: SparkSession, classified: DataFrame, report: IngestReport, run_date: str
) -> None:
    """Replace the quarantine rows of this input's files with this run's verdicts."""
    sources = _source_files(classified)
    rejected = rejected_rows(classified, run_date)
    predicate = f"source IN ({sql_literal_list(sources)})"
    with timed(log, f"writing {report.rejected_rows} quarantined rows"):
        replace_where(spark, rejected, report.quarantine_table, predicate)
    if report.rejected:
        log.warning(
            "quarantined %d rows: %s",
            report.rejected_rows,
            ", ".join(f"{k}={v}" for k, v in sorted(report.rejected.items())),
        )


def events_summary(spark: SparkSession, events_table: str) -> DataFrame:
    """Per-type counts and time range of the events table (a small result, for logs and README)."""
    return (
        spark.read.format("delta")
        .load(events_table)
        .groupBy("event_type")
        .agg(
            F.count("*").alias("events"),
            F.min("event_ts").alias("first"),
            F.max("event_ts").alias("last"),
        )
        .orderBy("event_type")
    )
