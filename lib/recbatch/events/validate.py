"""Row-level validation of raw events: each row gets at most one reason, the first that applies.

Reasons (stable strings, queried in the ``quarantine`` table):

=====================  ==============================================================
``malformed_row``      the line could not be split into the expected fields
``missing_<field>``    a required field is null or blank
``bad_<field>``        an id is not a non-negative integer (``ingest.ids=integer``; any
                       non-blank string is a good ``string`` id), a time does not parse
``unknown_event_type`` not one of view, fav, cart, buy
``before_window``      time before ``ingest.window_start``
``after_window``       time at or after ``ingest.window_end``
``in_future``          time later than now + ``ingest.max_clock_skew_minutes`` (clock skew)
``duplicate``          an exact repeat of an accepted event (same user, item, category,
                       type, time); the first copy is kept
=====================  ==============================================================
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recbatch.config import IngestSettings
from recbatch.events.schema import EVENT_COLUMNS, EVENT_TYPES
from recbatch.io.ids import parse_id

ID_COLUMNS = ("user_id", "item_id", "category_id")
EVENT_KEY = ("user_id", "item_id", "category_id", "event_type", "event_ts")


def _blank(column: str) -> Column:
    return F.col(column).isNull() | (F.trim(F.col(column)) == "")


def _parsed_id(column: str, settings: IngestSettings) -> Column:
    return parse_id(F.col(column), settings.ids)


def _reference_now(settings: IngestSettings) -> datetime:
    return settings.now or datetime.now(UTC)


def row_reason(settings: IngestSettings) -> Column:
    """The first rule a row breaks, or null for a good row (order = the table in the docstring)."""
    rules: list[tuple[Column, str]] = [(F.col("raw_record").isNotNull(), "malformed_row")]
    rules += [(_blank(c), f"missing_{c}") for c in EVENT_COLUMNS]
    rules += [(_parsed_id(c, settings).isNull(), f"bad_{c}") for c in ID_COLUMNS]
    rules.append((F.col("parsed_ts").isNull(), "bad_event_ts"))
    rules.append((~F.lower(F.trim("event_type")).isin(*EVENT_TYPES), "unknown_event_type"))
    if settings.window_start:
        rules.append((F.col("parsed_ts") < F.lit(settings.window_start), "before_window"))
    if settings.window_end:
        rules.append((F.col("parsed_ts") >= F.lit(settings.window_end), "after_window"))
    latest = _reference_now(settings) + timedelta(minutes=settings.max_clock_skew_minutes)
    rules.append((F.col("parsed_ts") > F.lit(latest), "in_future"))

    reason = F.lit(None).cast("string")
    for condition, name in reversed(rules):
        reason = F.when(condition, F.lit(name)).otherwise(reason)
    return reason


def classify(raw: DataFrame, settings: IngestSettings) -> DataFrame:
    """Add typed event columns and a ``reason`` (null = accepted) to raw rows.

    Duplicates are judged on the typed event, among rows that pass every other rule, so a row is
    called a duplicate only if an identical *valid* event was kept.
    """
    typed = raw.select(
        "*",
        *[_parsed_id(c, settings).alias(f"_{c}") for c in ID_COLUMNS],
        F.lower(F.trim("event_type")).alias("_event_type"),
        row_reason(settings).alias("reason"),
    )
    key = [F.col(f"_{c}") for c in ID_COLUMNS] + [F.col("_event_type"), F.col("parsed_ts")]
    first_copy = Window.partitionBy(F.col("reason").isNull(), *key).orderBy("source")
    return typed.withColumn(
        "reason",
        F.when(
            F.col("reason").isNull() & (F.row_number().over(first_copy) > 1), F.lit("duplicate")
        ).otherwise(F.col("reason")),
    )


def accepted_events(classified: DataFrame) -> DataFrame:
    """Good rows in the ``events`` table layout (partition column ``event_date`` in UTC)."""
    return classified.where(F.col("reason").isNull()).select(
        F.col("_user_id").alias("user_id"),
        F.col("_item_id").alias("item_id"),
        F.col("_category_id").alias("category_id"),
        F.col("_event_type").alias("event_type"),
        F.col("parsed_ts").alias("event_ts"),
        F.to_date("parsed_ts").alias("event_date"),
        F.col("source"),
    )


def rejected_rows(classified: DataFrame, run_date: str) -> DataFrame:
    """Bad rows in the ``quarantine`` table layout: as they arrived, with reason and source."""
    return classified.where(F.col("reason").isNotNull()).select(
        *EVENT_COLUMNS,
        "raw_record",
        "reason",
        "source",
        F.lit(run_date).alias("run_date"),
    )
