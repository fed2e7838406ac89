"""The ``train_conversion`` stage: the method comparison on ``examples``, into ``conversion_metrics``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.types import (
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from recbatch.config import ConversionSettings, RecbatchConfig
from recbatch.feedback.conversion.errors import ConversionInputError
from recbatch.feedback.conversion.evaluate import METHODS, evaluate_methods
from recbatch.feedback.conversion.protocol import data_end
from recbatch.io.delta import is_delta_table, replace_where
from recbatch.log import get_logger

log = get_logger(__name__)

METRICS_SCHEMA = StructType(
    [
        StructField("run_date", DateType(), False),
        StructField("method", StringType(), False),
        StructField("cutoff", TimestampType(), False),
        StructField("train_rows", LongType(), False),
        StructField("test_rows", LongType(), False),
        StructField("test_positives", LongType(), False),
        StructField("auc", DoubleType(), False),
        StructField("pr_auc", DoubleType(), False),
        StructField("log_loss", DoubleType(), False),
        StructField("ri_auc", DoubleType(), True),
        StructField("epochs", IntegerType(), False),
        StructField("final_train_loss", DoubleType(), False),
        StructField("train_rows_per_s", DoubleType(), False),
        StructField("train_seconds", DoubleType(), False),
        StructField("pcoc", DoubleType(), True),
        StructField("censored_share", DoubleType(), True),
        StructField("train_start", TimestampType(), True),
        StructField("model_seed", IntegerType(), True),
    ]
)
"""The Delta ``conversion_metrics`` table: one row per (run date, cutoff, method, model seed).
``pr_auc`` is average precision; ``pcoc`` predicted / observed conversions on the test window;
``censored_share`` the test views whose label window the data end cuts; ``train_start`` the
training window's start (null: every view before the cutoff); ``model_seed`` the model's seed
(``conversion.model_seeds`` of them per method; RI-AUC is against the same seed's vanilla and
oracle). The last four came later and are nullable, so older tables gain them on their next
write (schema merge)."""


def write_metrics(
    spark: SparkSession, rows: Sequence[dict[str, Any]], path: str, run_date: date
) -> None:
    """Replace the run date's rows of the Delta ``conversion_metrics`` table with ``rows``."""
    names = [f.name for f in METRICS_SCHEMA.fields]
    frame = spark.createDataFrame([tuple(r[n] for n in names) for r in rows], METRICS_SCHEMA)
    replace_where(spark, frame, path, f"run_date = '{run_date.isoformat()}'", merge_schema=True)


def conversion_stage(
    spark: SparkSession,
    cfg: RecbatchConfig,
    settings: ConversionSettings | None = None,
    methods: Sequence[str] = METHODS,
) -> list[dict[str, Any]]:
    """Evaluate ``methods`` on the configured ``examples`` table and write
    ``conversion_metrics`` for the run date; return the table's rows."""
    settings = settings or cfg.conversion
    path = cfg.table_path("examples")
    if not is_delta_table(spark, path):
        raise ConversionInputError(
            f"no examples table at {path}: run build_examples (or the pipeline) first"
        )
    examples = spark.read.format("delta").load(path)
    log.info("conversion settings: %s", settings.model_dump())
    rows = evaluate_methods(
        spark, examples, cfg, methods, settings, end=data_end(spark, cfg, examples)
    )
    run_date = cfg.run_date or datetime.now(UTC).date()
    write_metrics(spark, rows, cfg.table_path("conversion_metrics"), run_date)
    return rows
