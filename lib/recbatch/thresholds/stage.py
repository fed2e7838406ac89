"""Pipeline stages: ``thresholds`` (fit, certify, store) and ``decisions`` (apply as stored).

``thresholds_stage`` reads the run date's labelled conversion scores (``scores``, written by
``recbatch.uncertainty.scores``), fits the per-bucket rule and the single-threshold baseline
(``fit.fit_thresholds``, split by a hash of ``example_id``) and replaces the run's rows of the
Delta ``thresholds`` table. ``decisions_stage`` reads the stored thresholds back (never the
in-memory fit: what is applied is exactly what users can query) and writes, per scored example,
its bucket, threshold and decision to the Delta ``decisions`` table, replacing the run date.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel

from recbatch.config import RecbatchConfig
from recbatch.io.delta import is_delta_table, replace_where
from recbatch.log import get_logger
from recbatch.thresholds.apply import apply_thresholds
from recbatch.thresholds.errors import ThresholdInputError
from recbatch.thresholds.fit import METHODS, fit_thresholds
from recbatch.thresholds.settings import ThresholdSettings
from recbatch.thresholds.table import read_thresholds, thresholds_table, write_thresholds

log = get_logger(__name__)

MODEL = "conversion"

DECISION_COLUMNS = (
    "run_date",
    "model",
    "model_version",
    "example_id",
    "score",
    "uncertainty",
    "bucket",
    "threshold",
    "accepted",
)


def _run_date(cfg: RecbatchConfig) -> date:
    return cfg.run_date or datetime.now(UTC).date()


def run_scores(
    spark: SparkSession, cfg: RecbatchConfig, model: str = MODEL
) -> tuple[DataFrame, str]:
    """The run date's scores of ``model`` and their model version; a clear error without them."""
    path = cfg.table_path("scores")
    run_date = _run_date(cfg)
    stage = "score_uncertainty" if model == MODEL else "link_scores"
    hint = f"run {stage} (or the pipeline) for this run date first"
    if not is_delta_table(spark, path):
        raise ThresholdInputError(f"no scores table at {path}: {hint}")
    scores = (
        spark.read.format("delta")
        .load(path)
        .where((F.col("run_date") == F.lit(run_date)) & (F.col("model") == model))
    )
    versions = [r[0] for r in scores.select("model_version").distinct().limit(2).collect()]
    if len(versions) != 1:
        found = "none" if not versions else "several model versions"
        raise ThresholdInputError(
            f"{path} has {found} for run date {run_date.isoformat()} and model {model}: {hint}"
        )
    return scores, versions[0]


def thresholds_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, Any]:
    """Fit both methods on the run's conversion scores, write ``thresholds``."""
    return fit_and_store(spark, cfg, MODEL, cfg.thresholds)


def fit_and_store(
    spark: SparkSession, cfg: RecbatchConfig, model: str, settings: ThresholdSettings
) -> dict[str, Any]:
    """Fit both methods on the run's scores of ``model`` (``conversion`` or ``link``), replace
    the run's rows of ``thresholds``; return the overall figures."""
    run_date = _run_date(cfg)
    scores, version = run_scores(spark, cfg, model)
    scores = scores.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        fit = fit_thresholds(scores, settings, key_cols=["example_id"])
    finally:
        scores.unpersist()
    rows = thresholds_table(spark, fit, model_version=version, run_date=run_date, model=model)
    write_thresholds(
        spark, rows, cfg.table_path("thresholds"), model_version=version, run_date=run_date
    )
    summary: dict[str, Any] = {"model": model, "model_version": version}
    for method in METHODS:
        rule = fit.rule(method)
        summary[method] = {
            "buckets": len(rule.score_thresholds),
            "thresholds": [float(t) for t in rule.score_thresholds],
            "certified_precision_lb": rule.certified_lower_bound,
            **rule.overall,
        }
    log.info(
        "%s thresholds at precision >= %.3f (delta %.3f): per-bucket recall %s vs single %s on "
        "the evaluation split",
        model,
        settings.target_precision,
        settings.delta,
        summary["per_bucket"]["recall"],
        summary["single"]["recall"],
    )
    return summary


def decided_counts(spark: SparkSession, path: str, run_date: date) -> dict[str, int]:
    """``rows``, ``accepted`` and ``unbucketed`` of the run date in a decided Delta table
    (``decisions``, or ``recommendations`` after ``link_decisions``), in one aggregation."""
    written = (
        spark.read.format("delta")
        .load(path)
        .where(F.col("run_date") == F.lit(run_date))
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum(F.col("accepted").cast("int")).alias("accepted"),
            F.sum(F.col("bucket").isNull().cast("int")).alias("unbucketed"),
        )
        .head()
    )
    return {k: int(v or 0) for k, v in written.asDict().items()}


def decisions_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, int]:
    """Apply the stored per-bucket thresholds of the run to its scores; write ``decisions``."""
    run_date = _run_date(cfg)
    scores, version = run_scores(spark, cfg)
    stored = read_thresholds(
        spark, cfg.table_path("thresholds"), model_version=version, run_date=run_date
    )
    decided = apply_thresholds(scores, stored, method="per_bucket").select(*DECISION_COLUMNS)
    path = cfg.table_path("decisions")
    predicate = f"run_date = '{run_date.isoformat()}' AND model = '{MODEL}'"
    replace_where(spark, decided, path, predicate)
    counts = decided_counts(spark, path, run_date)
    log.info(
        "decisions: %d of %d scores accepted by the thresholds of %s (%d without a bucket: "
        "null or non-finite score/uncertainty, rejected) into %s",
        counts["accepted"],
        counts["rows"],
        version,
        counts["unbucketed"],
        path,
    )
    return counts
