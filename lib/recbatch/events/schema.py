"""The canonical event schema and the raw layouts recbatch reads.

Raw files are read with every column as a string (plus Spark's corrupt-record column for CSV),
so that validation sees exactly what arrived and can quarantine a bad value with its reason
instead of letting the reader turn it into a silent null.
"""

from __future__ import annotations

from pyspark.sql.types import (
    DateType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from recbatch.io.ids import IdKind, id_type

EVENT_TYPES = ("view", "fav", "cart", "buy")
"""Event types, in funnel order. Taobao's ``pv`` (page view) is read as ``view``."""

TAOBAO_EVENT_TYPES = {"pv": "view", "fav": "fav", "cart": "cart", "buy": "buy"}

EVENT_COLUMNS = ("user_id", "item_id", "category_id", "event_type", "event_ts")

CORRUPT_COLUMN = "_corrupt_record"

RAW_CSV_SCHEMA = StructType(
    [StructField(name, StringType(), True) for name in EVENT_COLUMNS]
    + [StructField(CORRUPT_COLUMN, StringType(), True)]
)
"""Canonical CSV (header ``user_id,item_id,category_id,event_type,event_ts``; ISO-8601 time)."""

RAW_TAOBAO_SCHEMA = StructType(
    [
        StructField("user_id", StringType(), True),
        StructField("item_id", StringType(), True),
        StructField("category_id", StringType(), True),
        StructField("behavior", StringType(), True),
        StructField("timestamp", StringType(), True),
        StructField(CORRUPT_COLUMN, StringType(), True),
    ]
)
"""Taobao UserBehavior CSV: no header, ``behavior`` in pv/fav/cart/buy, Unix seconds."""


def events_schema(ids: IdKind = "integer") -> StructType:
    """The Delta ``events`` table, partitioned by ``event_date`` (UTC); id columns by
    ``ingest.ids`` (io/ids.py)."""
    return StructType(
        [
            StructField("user_id", id_type(ids), False),
            StructField("item_id", id_type(ids), False),
            StructField("category_id", id_type(ids), False),
            StructField("event_type", StringType(), False),
            StructField("event_ts", TimestampType(), False),
            StructField("event_date", DateType(), False),
            StructField("source", StringType(), False),
        ]
    )


EVENTS_SCHEMA = events_schema("integer")
"""The ``events`` table of integer ids (the default)."""

QUARANTINE_SCHEMA = StructType(
    [
        StructField("user_id", StringType(), True),
        StructField("item_id", StringType(), True),
        StructField("category_id", StringType(), True),
        StructField("event_type", StringType(), True),
        StructField("event_ts", StringType(), True),
        StructField("raw_record", StringType(), True),
        StructField("reason", StringType(), False),
        StructField("source", StringType(), False),
        StructField("run_date", StringType(), False),
    ]
)
"""The Delta ``quarantine`` table: the row as it arrived, why it was rejected and where from."""
