"""The delayed-feedback stage: flip model, its calibration and the training weights, in Delta.

Reads ``examples`` (and the snapshot time from ``events``), then for the run date writes:

* ``flip_model``: the flip model per cell (signal state x elapsed bucket -> its mean z, the
  ``learner`` that gave it) and the delay CDF (s per bucket), so a run's weights can be
  explained and compared across runs;
* ``flip_calibration``: calibration (ECE, predicted vs realised flips) and ranking (AUC) of z on
  a held-out counterfactual cutoff, overall and per signal state, for a model of the same learner
  fitted without it;
* ``training_weights``: one row per example at the cutoff with z, s and the loss weights of the
  configured method (docs/delayed_feedback.md).

Each table's rows of this run date (and method) are replaced in one commit, so re-running a
date gives the same tables and a failed run leaves the previous version readable.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel

from recbatch.config import RecbatchConfig
from recbatch.errors import RecbatchError
from recbatch.feedback.flip import (
    calibration,
    counterfactual_cutoffs,
    counterfactual_training_set,
    fit_flip_model,
    fit_learner,
    score_at_cutoff,
    split_holdout,
)
from recbatch.feedback.weights import training_weights
from recbatch.io.delta import is_delta_table, replace_where
from recbatch.log import get_logger, timed

log = get_logger(__name__)


class FeedbackInputError(RecbatchError):
    """The inputs cannot support the flip model (missing tables, too little mature history)."""


def snapshot_cutoff(spark: SparkSession, cfg: RecbatchConfig) -> datetime:
    """The training cutoff T: ``feedback.cutoff`` or the time of the last ingested event."""
    if cfg.feedback.cutoff:
        return cfg.feedback.cutoff.astimezone(UTC)
    last = spark.read.format("delta").load(cfg.table_path("events")).agg(F.max("event_ts")).head()
    if not last or last[0] is None:
        raise FeedbackInputError(f"the events table {cfg.table_path('events')} is empty")
    return last[0].replace(tzinfo=UTC) if last[0].tzinfo is None else last[0]


def _read_table(spark: SparkSession, path: str, produced_by: str) -> DataFrame:
    if not is_delta_table(spark, path):
        raise FeedbackInputError(f"no Delta table at {path}: run {produced_by} first")
    return spark.read.format("delta").load(path)


def history_start(examples: DataFrame, cfg: RecbatchConfig) -> datetime | None:
    """When the log starts: the ingest window's start (the collection start) when one is set and
    precedes the first view, else the first view. A collection that starts at midnight has its
    first view seconds later; its history still reaches back to midnight."""
    first = examples.agg(F.min("view_ts")).head()[0]
    if first is not None and first.tzinfo is None:
        first = first.replace(tzinfo=UTC)
    start = cfg.ingest.window_start
    if first is None or start is None:
        return first
    return min(first, start)


def _require_history(training: DataFrame, examples: DataFrame, cutoff: datetime, cfg) -> None:
    """Fail clearly unless the latest counterfactual window ``[T'_0 - W, T'_0)`` is covered by
    the log: otherwise the long elapsed times are missing and z would be learnt from a sliver."""
    window = timedelta(hours=cfg.feedback.attribution_window_hours)
    cutoffs = counterfactual_cutoffs(cutoff, cfg.feedback)
    first = history_start(examples, cfg)
    if first is not None and first <= max(cutoffs) - window and training.limit(1).count():
        uncovered = [t for t in cutoffs if first > t - window]
        if uncovered:
            log.warning(
                "%d of %d counterfactual cutoffs reach before the first view (%s): they add "
                "only short elapsed times",
                len(uncovered),
                len(cutoffs),
                first,
            )
        return
    raise FeedbackInputError(
        f"too little mature history for the flip model: the log starts at {first}, but the "
        f"latest counterfactual cutoff {max(cutoffs).isoformat()} needs views from "
        f"{(max(cutoffs) - window).isoformat()} (cutoff {cutoff.isoformat()}, "
        f"W={cfg.feedback.attribution_window_hours:g}h). Use a longer log, or a smaller "
        "feedback.attribution_window_hours / counterfactual_delay_hours."
    )


def _replace_run(
    spark: SparkSession, rows: DataFrame, path: str, run_date, extra: str = ""
) -> None:
    """Replace this run date's rows; tables of older releases gain the new columns (the
    ``learner`` of ``flip_model``, the ``flips`` and ``auc`` of ``flip_calibration``)."""
    predicate = f"run_date = '{run_date.isoformat()}'" + (f" AND {extra}" if extra else "")
    replace_where(spark, rows, path, predicate, merge_schema=True)


def _log_quality(learner: str, quality: dict[str, dict]) -> None:
    """One line per scope: how well z is calibrated and ranks the flips on the held-out cutoff."""
    for scope, row in quality.items():
        ratio = (
            row["mean_predicted"] / row["observed_rate"] if row["observed_rate"] else float("nan")
        )
        auc = "n/a" if row["auc"] is None else f"{row['auc']:.3f}"
        log.info(
            "flip model (%s) held out, %s: %d negatives, %d flips, predicted/realised %.2f, "
            "ECE %.4f, AUC %s",
            learner,
            scope,
            row["n"],
            row["flips"],
            ratio,
            row["ece"],
            auc,
        )


def flip_weights_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, object]:
    """Fit, check and apply the flip model for ``cfg.run_date``; return a small summary."""
    settings, run_date = cfg.feedback, cfg.run_date
    examples = _read_table(spark, cfg.table_path("examples"), "build_examples")
    examples = examples.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        cutoff = snapshot_cutoff(spark, cfg)
        log.info("flip model at cutoff %s (W=%gh)", cutoff, settings.attribution_window_hours)
        training = counterfactual_training_set(examples, cutoff, settings).persist()
        _require_history(training, examples, cutoff, cfg)

        with timed(log, f"fitting the {settings.flip_learner} flip model and the delay CDF"):
            model = fit_flip_model(examples, cutoff, settings, training)
        with timed(log, "held-out calibration"):
            fit_rows, heldout = split_holdout(training)
            check = fit_learner(fit_rows, model.observation, settings)
            table = calibration(check.apply(heldout, settings)).persist()
            quality = {r["scope"]: r.asDict() for r in table.collect()}
        _log_quality(model.learner, quality)

        stamp = [F.lit(run_date).alias("run_date"), F.lit(cutoff).alias("cutoff")]
        model_rows = (
            model.cell_table(training, settings)
            .join(
                model.observation.select("elapsed_bucket", "positives", "s_upper", "s"),
                "elapsed_bucket",
                "left",
            )
            .select("*", F.lit(model.learner).alias("learner"), *stamp)
        )
        _replace_run(spark, model_rows, cfg.table_path("flip_model"), run_date)
        _replace_run(spark, table.select("*", *stamp), cfg.table_path("flip_calibration"), run_date)
        table.unpersist()

        scored = score_at_cutoff(examples, cutoff, model, settings)
        weights = training_weights(scored, settings.weighting, settings, cutoff, run_date)
        with timed(log, f"writing training weights ({settings.weighting})"):
            _replace_run(
                spark,
                weights,
                cfg.table_path("training_weights"),
                run_date,
                f"method = '{settings.weighting}'",
            )
        training.unpersist()
    finally:
        examples.unpersist()
    summary = _weights_summary(spark, cfg)
    overall = quality.get("all", {})
    summary.update(
        cutoff=cutoff.isoformat(),
        flip_learner=model.learner,
        ece_all=overall.get("ece"),
        flip_auc=overall.get("auc"),
    )
    log.info("training weights: %s", summary)
    return summary


def _weights_summary(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, object]:
    """Rows, observed positives and the weighted positive mass of this run (one aggregation)."""
    run = (
        spark.read.format("delta")
        .load(cfg.table_path("training_weights"))
        .where(
            (F.col("run_date") == F.lit(cfg.run_date)) & (F.col("method") == cfg.feedback.weighting)
        )
    )
    row = run.agg(
        F.count(F.lit(1)).alias("examples"),
        F.sum("observed_label").alias("observed_positives"),
        F.sum("w_pos").alias("weighted_positives"),
        F.avg("flip_probability").alias("mean_flip_probability"),
    ).head()
    return {
        "examples": int(row["examples"]),
        "observed_positives": int(row["observed_positives"] or 0),
        "weighted_positives": round(float(row["weighted_positives"] or 0.0), 1),
        "mean_flip_probability": round(float(row["mean_flip_probability"] or 0.0), 5),
        "method": cfg.feedback.weighting,
    }
