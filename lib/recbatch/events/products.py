"""The product catalogue: an optional input of products with their category and attributes.

Input: ``ingest.catalog_path`` (by default ``paths.raw_catalog`` when something is there: the
generator writes one) in ``ingest.catalog_format``: CSV with a header that names
``product_id``, ``category_id`` and then any attribute columns (``brand``, ``colour``...), or
Parquet with those columns. Ids are read as ``ingest.ids`` says, like the events' ids.

Output: the Delta ``products`` table, the catalogue as of this run: a catalogue is a snapshot,
so the table is replaced whole (Delta's history keeps the earlier ones). Columns:
``product_id``, ``category_id``, ``attributes`` (``map<string,string>``: every other column,
blank values left out) and ``source`` (the file). The graph stage joins it to the graph's nodes.

Rows that cannot be used go to ``quarantine`` (``item_id`` = the product id, ``raw_record`` =
the row as JSON), one reason each, the first that applies:

=======================  ==========================================================
``malformed_row``        the line could not be split into the header's fields
``missing_<field>``      ``product_id`` or ``category_id`` is null or blank
``bad_<field>``          not a non-negative integer (``ingest.ids=integer`` only)
``duplicate``            an exact repeat of a kept row; the first copy is kept
``conflicting_rows``     one product listed with different values: every copy is set
                         aside, as none can be chosen over the others
=======================  ==========================================================

Ids the catalogue and the events do not share are *not* errors (a new product has no events
yet, an old one may have left the catalogue), but they are counted, as are products whose
events name another category than the catalogue: the stage's result and log say how many.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType
from pyspark.storagelevel import StorageLevel

from recbatch.config import RecbatchConfig
from recbatch.events.ingest import IngestError, check_events_id_type
from recbatch.events.readers import (
    InputNotFound,
    InputSchemaError,
    load_input,
    read_permissive_csv,
)
from recbatch.events.schema import CORRUPT_COLUMN
from recbatch.io.delta import is_delta_table, replace_where, sql_literal_list
from recbatch.io.fs import path_exists
from recbatch.io.ids import IdKind, parse_id
from recbatch.log import get_logger, timed

log = get_logger(__name__)

KEY_COLUMNS = ("product_id", "category_id")

DUPLICATE, CONFLICT = "duplicate", "conflicting_rows"


@dataclass
class CatalogueReport:
    """What one catalogue run read, kept, set aside (by reason) and shares with the events."""

    input_path: str
    total_rows: int
    products: int
    rejected: dict[str, int] = field(default_factory=dict)
    attributes: list[str] = field(default_factory=list)
    products_without_events: int | None = None  # None: no events table to compare with
    event_products_not_in_catalogue: int | None = None
    category_mismatches: int | None = None

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejected.values())

    @property
    def reject_ratio(self) -> float:
        return self.rejected_rows / self.total_rows if self.total_rows else 0.0

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        text = (
            f"{self.total_rows} catalogue rows read from {self.input_path}: {self.products} "
            f"products with {len(self.attributes)} attribute(s) {self.attributes}, "
            f"{self.rejected_rows} quarantined ({reasons})"
        )
        if self.products_without_events is not None:
            text += (
                f"; against the events: {self.products_without_events} products without events,"
                f" {self.event_products_not_in_catalogue} event products not in the catalogue,"
                f" {self.category_mismatches} with another category in the events"
            )
        return text

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "rejected_rows": self.rejected_rows}


# --- reading --------------------------------------------------------------------------------------


def read_raw_catalogue(spark: SparkSession, path: str, fmt: str) -> DataFrame:
    """Every column as text as it arrived, plus ``raw_record`` (CSV lines that did not split)
    and ``source``; raises InputSchemaError without ``product_id`` and ``category_id``."""
    if fmt == "csv":
        header = load_input(lambda p: spark.read.option("header", True).csv(p), path).columns
        _require_keys(header, path)
        schema = StructType(
            [StructField(c, StringType(), True) for c in header]
            + [StructField(CORRUPT_COLUMN, StringType(), True)]
        )
        raw = read_permissive_csv(spark, path, schema)
        corrupt = F.col(CORRUPT_COLUMN)
    elif fmt == "parquet":
        raw = load_input(lambda p: spark.read.parquet(p), path)
        header = raw.columns
        _require_keys(header, path)
        corrupt = F.lit(None).cast("string")
    else:
        raise InputSchemaError(f"unknown catalogue format '{fmt}'; expected csv or parquet")
    return raw.select(
        *[F.col(f"`{c}`").cast("string").alias(c) for c in header],
        corrupt.alias("raw_record"),
        F.col("_metadata.file_path").alias("source"),
    )


def _require_keys(columns: list[str], path: str) -> None:
    missing = [c for c in KEY_COLUMNS if c not in columns]
    if missing:
        raise InputSchemaError(
            f"wrong schema in {path}: a product catalogue needs the column(s) "
            f"{', '.join(missing)} (then any attribute columns); found {', '.join(columns)}"
        )


def attribute_columns(raw: DataFrame) -> list[str]:
    """The catalogue's attribute columns: all but the ids and the reader's own."""
    return [c for c in raw.columns if c not in (*KEY_COLUMNS, "raw_record", "source")]


# --- validation -----------------------------------------------------------------------------------


def classify_products(raw: DataFrame, ids: IdKind) -> DataFrame:
    """``raw`` with the typed ids, the ``attributes`` map and a ``reason`` (null = kept)."""
    names = attribute_columns(raw)
    pairs = [x for c in names for x in (F.lit(c), F.trim(F.col(f"`{c}`")))]
    attributes = F.map_filter(
        F.create_map(*pairs) if pairs else F.create_map().cast("map<string,string>"),
        lambda _, v: v.isNotNull() & (v != ""),
    )
    typed = raw.select(
        "*",
        parse_id(F.col("product_id"), ids).alias("_product_id"),
        parse_id(F.col("category_id"), ids).alias("_category_id"),
        attributes.alias("_attributes"),
    )
    rules: list[tuple[Column, str]] = [(F.col("raw_record").isNotNull(), "malformed_row")]
    rules += [(_blank(c), f"missing_{c}") for c in KEY_COLUMNS]
    rules += [(F.col(f"_{c}").isNull(), f"bad_{c}") for c in KEY_COLUMNS]
    reason = F.lit(None).cast("string")
    for condition, name in reversed(rules):
        reason = F.when(condition, F.lit(name)).otherwise(reason)
    checked = typed.withColumn("reason", reason)
    return _mark_repeats(checked)


def _blank(column: str) -> Column:
    return F.col(column).isNull() | (F.trim(F.col(column)) == "")


def _mark_repeats(checked: DataFrame) -> DataFrame:
    """Among valid rows: a product listed with different values is a conflict (all copies set
    aside); an exact repeat is a duplicate (the first copy, by source, kept)."""
    valid = F.col("reason").isNull()
    content = F.to_json(F.struct("_category_id", F.array_sort(F.map_entries("_attributes"))))
    per_product = Window.partitionBy(valid, "_product_id")
    per_copy = Window.partitionBy(valid, "_product_id", content).orderBy("source")
    versions = F.size(F.collect_set(content).over(per_product))
    return checked.withColumn(
        "reason",
        F.when(valid & (versions > 1), F.lit(CONFLICT))
        .when(valid & (F.row_number().over(per_copy) > 1), F.lit(DUPLICATE))
        .otherwise(F.col("reason")),
    )


def kept_products(classified: DataFrame) -> DataFrame:
    """The ``products`` table's rows."""
    return classified.where(F.col("reason").isNull()).select(
        F.col("_product_id").alias("product_id"),
        F.col("_category_id").alias("category_id"),
        F.col("_attributes").alias("attributes"),
        "source",
    )


def rejected_products(classified: DataFrame, run_date: str) -> DataFrame:
    """Set-aside rows in the ``quarantine`` layout (events/schema.py QUARANTINE_SCHEMA)."""
    row = F.struct(*[F.col(f"`{c}`") for c in ("product_id", "category_id")], "_attributes")
    return classified.where(F.col("reason").isNotNull()).select(
        F.lit(None).cast("string").alias("user_id"),
        F.col("product_id").alias("item_id"),
        F.col("category_id"),
        F.lit(None).cast("string").alias("event_type"),
        F.lit(None).cast("string").alias("event_ts"),
        F.coalesce(F.col("raw_record"), F.to_json(row)).alias("raw_record"),
        "reason",
        "source",
        F.lit(run_date).alias("run_date"),
    )


# --- the stage ------------------------------------------------------------------------------------


def catalogue_input(spark: SparkSession, cfg: RecbatchConfig) -> str | None:
    """The catalogue to read: ``ingest.catalog_path``, else ``paths.raw_catalog`` when it holds
    files, else None (no catalogue: the stage does nothing)."""
    if cfg.ingest.catalog_path:
        return cfg.project_file(cfg.ingest.catalog_path)
    default = cfg.path("raw_catalog")
    return default if path_exists(spark, default) else None


def products_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, object]:
    """Validate the product catalogue into ``products`` and ``quarantine``; compare its ids
    with the events'. Without a catalogue, says so and writes nothing."""
    path = catalogue_input(spark, cfg)
    if path is None:
        log.info(
            "products: no catalogue (ingest.catalog_path unset, nothing at %s)",
            cfg.path("raw_catalog"),
        )
        return {"input_path": None, "products": 0, "rejected_rows": 0}
    check_events_id_type(spark, cfg.table_path("events"), cfg.ingest.ids)
    try:
        raw = read_raw_catalogue(spark, path, cfg.ingest.catalog_format)
    except (InputNotFound, InputSchemaError) as err:
        raise IngestError(str(err)) from err
    classified = classify_products(raw, cfg.ingest.ids).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        report = _validate_and_write(spark, cfg, path, raw, classified)
    finally:
        classified.unpersist()
    log.info("products: %s", report.summary())
    return report.as_dict()


def _validate_and_write(
    spark: SparkSession,
    cfg: RecbatchConfig,
    path: str,
    raw: DataFrame,
    classified: DataFrame,
) -> CatalogueReport:
    with timed(log, f"validating the catalogue {path}"):
        counts = {r["reason"]: r["count"] for r in classified.groupBy("reason").count().collect()}
    report = CatalogueReport(
        input_path=path,
        total_rows=sum(counts.values()),
        products=counts.get(None, 0),
        rejected={k: v for k, v in counts.items() if k is not None},
        attributes=attribute_columns(raw),
    )
    if report.total_rows == 0:
        raise IngestError(f"empty catalogue: no rows in {path}")
    sources = sorted(r["source"] for r in classified.select("source").distinct().collect())
    replace_where(
        spark,
        rejected_products(classified, str(cfg.effective_run_date())),
        cfg.table_path("quarantine"),
        f"source IN ({sql_literal_list(sources)})",
    )
    if report.reject_ratio > cfg.ingest.max_reject_ratio:
        raise IngestError(
            f"rejected {report.rejected_rows} of {report.total_rows} catalogue rows "
            f"({report.reject_ratio:.2%} > ingest.max_reject_ratio "
            f"{cfg.ingest.max_reject_ratio:.2%}); products left as they were. Reasons: "
            + ", ".join(f"{k}={v}" for k, v in sorted(report.rejected.items()))
        )
    products = kept_products(classified)
    products.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(
        cfg.table_path("products")
    )
    events = cfg.table_path("events")
    if is_delta_table(spark, events):
        _compare_with_events(spark.read.format("delta").load(events), products, report)
    return report


def _compare_with_events(events: DataFrame, products: DataFrame, report: CatalogueReport) -> None:
    """Count the ids the two do not share, and categories they disagree on (one small job)."""
    event_items = events.groupBy(F.col("item_id").alias("product_id")).agg(
        F.min("category_id").alias("event_category"),
        F.max("category_id").alias("event_category_max"),
    )
    joined = products.select("product_id", "category_id").join(
        event_items, "product_id", "full_outer"
    )
    differs = (F.col("category_id") != F.col("event_category")) | (
        F.col("category_id") != F.col("event_category_max")
    )
    row = joined.agg(
        F.sum(F.col("event_category").isNull().cast("long")).alias("without_events"),
        F.sum(F.col("category_id").isNull().cast("long")).alias("not_in_catalogue"),
        F.sum(F.coalesce(differs, F.lit(False)).cast("long")).alias("mismatches"),
    ).head()
    report.products_without_events = int(row["without_events"] or 0)
    report.event_products_not_in_catalogue = int(row["not_in_catalogue"] or 0)
    report.category_mismatches = int(row["mismatches"] or 0)
