"""Readers for raw event logs, with explicit schemas.

Every reader returns the same shape: the five event fields *as strings, as they arrived*, the
timestamp parsed by the format's own rule (``parsed_ts``, null when it does not parse), the raw
line for rows the CSV parser could not split (``raw_record``), and the file it came from
(``source``). Validation then decides, row by row, what is good and why the rest is not.
"""

from __future__ import annotations

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import NumericType, StringType, StructType, TimestampType

from recbatch.events.schema import (
    CORRUPT_COLUMN,
    EVENT_COLUMNS,
    RAW_CSV_SCHEMA,
    RAW_TAOBAO_SCHEMA,
    TAOBAO_EVENT_TYPES,
)

RAW_COLUMNS = (*EVENT_COLUMNS, "parsed_ts", "raw_record", "source")


class InputSchemaError(ValueError):
    """The input does not have the layout its format promises (wrong header, missing columns)."""


class InputNotFound(FileNotFoundError):
    """The input path does not exist or holds no files."""


def parse_iso_timestamp(text: Column) -> Column:
    """ISO-8601 text (``2026-01-01T10:00:00.000Z``, ``...+08:00``) to a timestamp, else null."""
    return text.try_cast(TimestampType())


def parse_unix_seconds(text: Column) -> Column:
    """Unix seconds as text to a timestamp, null if not an integer."""
    return F.timestamp_seconds(text.try_cast("long"))


def _source() -> Column:
    return F.col("_metadata.file_path")


def load_input(reader_call, path: str) -> DataFrame:
    try:
        return reader_call(path)
    except AnalysisException as err:
        if "PATH_NOT_FOUND" in str(err) or "UNABLE_TO_INFER_SCHEMA" in str(err):
            raise InputNotFound(f"no input files at {path}") from err
        raise


def read_canonical_csv(spark: SparkSession, path: str) -> DataFrame:
    """CSV with header ``user_id,item_id,category_id,event_type,event_ts`` (ISO-8601 times)."""
    header = load_input(lambda p: spark.read.option("header", True).csv(p), path).columns
    if tuple(header) != EVENT_COLUMNS:
        raise InputSchemaError(
            f"wrong schema in {path}: expected CSV header {','.join(EVENT_COLUMNS)}, "
            f"found {','.join(header) or '<empty>'}"
        )
    raw = read_permissive_csv(spark, path, RAW_CSV_SCHEMA)
    return raw.select(
        *EVENT_COLUMNS,
        parse_iso_timestamp(F.col("event_ts")).alias("parsed_ts"),
        F.col(CORRUPT_COLUMN).alias("raw_record"),
        _source().alias("source"),
    )


def read_permissive_csv(spark: SparkSession, path: str, schema: StructType) -> DataFrame:
    """A headed CSV read as ``schema`` (all strings plus ``CORRUPT_COLUMN``): a line that does
    not split into the header's fields is kept whole in the corrupt column, not dropped."""
    return (
        spark.read.schema(schema)
        .option("header", True)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT_COLUMN)
        .csv(path)
    )


def read_taobao_csv(spark: SparkSession, path: str) -> DataFrame:
    """Taobao UserBehavior: no header, ``user,item,category,behavior,unix_seconds``; pv -> view."""
    raw = load_input(
        lambda p: spark.read.schema(RAW_TAOBAO_SCHEMA)
        .option("header", False)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT_COLUMN)
        .csv(p),
        path,
    )
    mapping = F.create_map(*[F.lit(x) for pair in TAOBAO_EVENT_TYPES.items() for x in pair])
    return raw.select(
        "user_id",
        "item_id",
        "category_id",
        F.coalesce(mapping[F.col("behavior")], F.col("behavior")).alias("event_type"),
        F.col("timestamp").alias("event_ts"),
        parse_unix_seconds(F.col("timestamp")).alias("parsed_ts"),
        F.col(CORRUPT_COLUMN).alias("raw_record"),
        _source().alias("source"),
    )


def read_parquet(spark: SparkSession, path: str) -> DataFrame:
    """Parquet with the five event columns; ids numeric or text, time as timestamp or ISO text."""
    raw = load_input(lambda p: spark.read.parquet(p), path)
    missing = [c for c in EVENT_COLUMNS if c not in raw.columns]
    if missing:
        raise InputSchemaError(
            f"wrong schema in {path}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(raw.columns)}"
        )
    ts_type = raw.schema["event_ts"].dataType
    if isinstance(ts_type, TimestampType):
        parsed = F.col("event_ts")
    elif isinstance(ts_type, NumericType):
        parsed = F.timestamp_seconds(F.col("event_ts"))
    elif isinstance(ts_type, StringType):
        parsed = parse_iso_timestamp(F.col("event_ts"))
    else:
        raise InputSchemaError(f"wrong schema in {path}: event_ts has unsupported type {ts_type}")
    return raw.select(
        *[F.col(c).cast("string").alias(c) for c in EVENT_COLUMNS],
        parsed.alias("parsed_ts"),
        F.lit(None).cast("string").alias("raw_record"),
        _source().alias("source"),
    )


READERS = {"csv": read_canonical_csv, "taobao": read_taobao_csv, "parquet": read_parquet}


def read_raw_events(spark: SparkSession, path: str, fmt: str) -> DataFrame:
    """Read a raw event log of format ``csv``, ``taobao`` or ``parquet`` into the common shape."""
    if fmt not in READERS:
        raise InputSchemaError(f"unknown input format '{fmt}'; expected one of {sorted(READERS)}")
    return READERS[fmt](spark, path).select(*RAW_COLUMNS)
