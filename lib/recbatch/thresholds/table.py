"""The Delta ``thresholds`` table: one row per (model version, run date, method, bucket).

Each run's rows are written with ``replaceWhere`` on ``(model_version, run_date)``, one commit: a
re-run of the same model version and date replaces its rows (idempotent), other runs are kept, and
a failed run leaves the previous version readable. Both methods of a run are written together so
the per-bucket rule and its single-threshold baseline always come from the same data.
"""

from __future__ import annotations

import math
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from recbatch.io.delta import is_delta_table, replace_where, sql_literal_list
from recbatch.log import get_logger
from recbatch.thresholds.errors import ThresholdTableError
from recbatch.thresholds.fit import METHODS, RuleFit, ThresholdFit

log = get_logger(__name__)

THRESHOLDS_SCHEMA = StructType(
    [
        StructField("model_version", StringType(), False),
        StructField("run_date", DateType(), False),
        StructField("method", StringType(), False),
        StructField("bucket", IntegerType(), False),
        StructField("uncertainty_lo", DoubleType(), False),
        StructField("uncertainty_hi", DoubleType(), False),
        StructField("score_threshold", DoubleType(), False),
        StructField("rate_cutoff", DoubleType(), True),
        StructField("target_precision", DoubleType(), False),
        StructField("delta", DoubleType(), False),
        StructField("certified_precision_lb", DoubleType(), True),
        StructField("expected_precision", DoubleType(), True),
        StructField("expected_precision_lo", DoubleType(), True),
        StructField("expected_precision_hi", DoubleType(), True),
        StructField("expected_recall", DoubleType(), True),
        StructField("expected_recall_lo", DoubleType(), True),
        StructField("expected_recall_hi", DoubleType(), True),
        StructField("interval_level", DoubleType(), False),
        StructField("support", LongType(), False),
        StructField("eval_rows", LongType(), False),
        StructField("eval_positives", LongType(), False),
        StructField("eval_accepted", LongType(), False),
        StructField("eval_true_positives", LongType(), False),
        StructField("model", StringType(), True),
    ]
)
"""Bucket ``b`` covers uncertainty in ``[uncertainty_lo, uncertainty_hi)`` (the first from -inf, the
last to +inf, so every finite uncertainty has a bucket); a score is accepted when
``score >= score_threshold`` (+inf: the bucket accepts nothing). ``certified_precision_lb`` is the
whole rule's selection-split bound (same on every row of a method); ``expected_*`` are the bucket's
evaluation-split precision and recall with ``interval_level`` Clopper-Pearson intervals;
``support`` is the bucket's calibration rows; ``model`` tells the conversion model's thresholds
(``conversion``) from the link scores' (``link``)."""


def _optional(value: object) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _rule_rows(
    rule: RuleFit, fit: ThresholdFit, model_version: str, run_date: date, model: str
) -> list[tuple]:
    settings = fit.settings
    bounds = [-math.inf, *map(float, rule.uncertainty_edges), math.inf]
    rows = []
    for b, ev in enumerate(rule.evaluation.itertuples(index=False)):
        rows.append(
            (
                model_version,
                run_date,
                rule.method,
                b,
                bounds[b],
                bounds[b + 1],
                float(rule.score_thresholds[b]),
                rule.rate_cutoff,
                settings.target_precision,
                settings.delta,
                rule.certified_lower_bound,
                _optional(ev.precision),
                _optional(ev.precision_lo),
                _optional(ev.precision_hi),
                _optional(ev.recall),
                _optional(ev.recall_lo),
                _optional(ev.recall_hi),
                settings.interval_level,
                int(ev.support),
                int(ev.eval_rows),
                int(ev.eval_positives),
                int(ev.eval_accepted),
                int(ev.eval_true_positives),
                model,
            )
        )
    return rows


def thresholds_table(
    spark: SparkSession,
    fit: ThresholdFit,
    *,
    model_version: str,
    run_date: date,
    model: str = "conversion",
) -> DataFrame:
    """The table rows of one run (both methods) as a small DataFrame of ``THRESHOLDS_SCHEMA``."""
    if not model_version:
        raise ThresholdTableError("model_version must be a non-empty string")
    rows = [
        r for m in METHODS for r in _rule_rows(fit.rule(m), fit, model_version, run_date, model)
    ]
    return spark.createDataFrame(rows, THRESHOLDS_SCHEMA)


def run_predicate(model_version: str, run_date: date) -> str:
    """The SQL predicate of one run's rows (the ``replaceWhere`` of ``write_thresholds``)."""
    return (
        f"model_version = {sql_literal_list([model_version])} "
        f"AND run_date = DATE'{run_date.isoformat()}'"
    )


def write_thresholds(
    spark: SparkSession, rows: DataFrame, path: str, *, model_version: str, run_date: date
) -> None:
    """Replace the run's rows of the Delta table at ``path`` in one commit (create it if new)."""
    if rows.schema != THRESHOLDS_SCHEMA:
        raise ThresholdTableError(
            "thresholds rows do not have THRESHOLDS_SCHEMA; build them with thresholds_table"
        )
    predicate = run_predicate(model_version, run_date)
    # merge_schema: a table written before ``model`` existed gains the column (older rows: null)
    replace_where(spark, rows, path, predicate, merge_schema=True)
    log.info("wrote thresholds of %s to %s", predicate, path)


def read_thresholds(
    spark: SparkSession, path: str, *, model_version: str, run_date: date | None = None
) -> DataFrame:
    """One run's rows: ``run_date`` given, or the latest run of the model version."""
    if not is_delta_table(spark, path):
        raise ThresholdTableError(f"no thresholds Delta table at {path}")
    table = spark.read.format("delta").load(path)
    mine = table.where(F.col("model_version") == model_version)
    if run_date is None:
        latest = mine.agg(F.max("run_date")).head()[0]
        if latest is None:
            raise ThresholdTableError(
                f"no thresholds for model version {model_version!r} in {path}"
            )
        run_date = latest
    return mine.where(F.col("run_date") == F.lit(run_date))
