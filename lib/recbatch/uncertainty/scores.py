"""The ``scores`` stage: the production conversion model's score and uncertainty per example.

The model is the conversion model trained as the pipeline's weighting says
(``feedback.weighting``), on the examples of the training window before the cutoff ``T`` with
labels and weights as observed at ``T`` (``feedback.conversion.protocol`` explains ``T`` and the
windows). Its shape comes from
``uncertainty``: several bootstrap heads (``heads``) or dropout (``mc_dropout``). It scores the
examples viewed in ``[T, T + test_days)``, whose true labels are known by the data's end: those
labelled scores are what the thresholds are fitted, certified and evaluated on.

Delta ``scores`` (one partition of rows per run date and model, replaced on a re-run):
``run_date``, ``model``, ``model_version``, ``uncertainty_method``, ``example_id``, ``view_ts``,
``score`` (mean probability), ``uncertainty`` (spread across the estimator's members), ``label``
(the true label, 1/0). Scoring runs in ``mapInPandas`` with the weights broadcast once; its cost
(rows/s and seconds, per estimator) is logged and returned.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

import numpy as np
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recbatch.config import ConversionSettings, RecbatchConfig, UncertaintySettings
from recbatch.feedback.conversion import (
    ConversionInputError,
    data_end,
    evaluation_window,
    map_model,
    training_data,
)
from recbatch.feedback.conversion.evaluate import train_method
from recbatch.io.delta import is_delta_table, replace_where
from recbatch.log import get_logger
from recbatch.uncertainty.estimators import predict_with_uncertainty

log = get_logger(__name__)

MODEL = "conversion"

SCORES_COLUMNS = (
    "run_date",
    "model",
    "model_version",
    "uncertainty_method",
    "example_id",
    "view_ts",
    "score",
    "uncertainty",
    "label",
)


def scored_model_settings(
    conversion: ConversionSettings, uncertainty: UncertaintySettings
) -> ConversionSettings:
    """The conversion settings with the shape the uncertainty method needs."""
    if uncertainty.method == "heads":
        return conversion.model_copy(update={"heads": uncertainty.heads, "dropout": 0.0})
    return conversion.model_copy(update={"heads": 1, "dropout": uncertainty.dropout})


def model_version(cfg: RecbatchConfig, run_date: date) -> str:
    """``conversion-<run date>-<config fingerprint>``: the same config and date, the same name."""
    return f"{MODEL}-{run_date.isoformat()}-{cfg.fingerprint()[:8]}"


def score_with_uncertainty(
    rows: DataFrame,
    state_dict: dict[str, torch.Tensor],
    settings: ConversionSettings,
    uncertainty: UncertaintySettings,
) -> DataFrame:
    """``example_id``, ``score`` and ``uncertainty`` of ``rows`` (with ``example_id`` and
    ``features``), by the configured estimator (``conversion.map_model`` runs it)."""
    method, samples, seed = uncertainty.method, uncertainty.mc_samples, uncertainty.seed

    def predict(model: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
        score, spread = predict_with_uncertainty(model, x, method, samples, seed)
        return {"score": score, "uncertainty": spread}

    return map_model(
        rows.select(F.col("example_id").cast("long"), "features"),
        state_dict,
        settings,
        predict,
        ["example_id"],
        "example_id long, score double, uncertainty double",
    )


class BuiltScores(NamedTuple):
    scores: DataFrame
    """Lazy, ``SCORES_COLUMNS``."""
    summary: dict[str, Any]
    """Model version, cutoff, training rows and rows/s."""
    state_dict: dict[str, torch.Tensor]
    """The trained weights (benchmarks rescore with them)."""
    test_rows: DataFrame
    """The scored examples' tensors (``example_id``, ``view_ts``, ``features``, ``label``)."""


def build_scores(
    spark: SparkSession, examples: DataFrame, cfg: RecbatchConfig, end: datetime
) -> BuiltScores:
    """Train the production model and score the test-period examples."""
    unc = cfg.uncertainty
    settings = scored_model_settings(cfg.conversion, unc)
    run_date = cfg.run_date or datetime.now(UTC).date()
    window = evaluation_window(end, cfg.feedback, settings)
    work = f"{cfg.path('work')}/scores/{run_date.isoformat()}"
    data = training_data(examples, window, cfg)
    try:
        result, sets, _ = train_method(spark, cfg.feedback.weighting, data, cfg, settings, work)
    finally:
        data.release()
    cutoff, n_train = window.cutoff, sets.train_rows + sets.val_rows

    test = examples.where(window.test(F.col("view_ts")))
    test_path = f"{work}/test"
    test.select(
        "example_id",
        "view_ts",
        data.features,
        F.col("conversion_ts").isNotNull().cast("int").alias("label"),
    ).write.mode("overwrite").parquet(test_path)
    test_rows = spark.read.parquet(test_path)
    scored = score_with_uncertainty(test_rows, result["state_dict"], settings, unc)
    version = model_version(cfg, run_date)
    scores = scored.join(test_rows.select("example_id", "view_ts", "label"), "example_id").select(
        F.lit(run_date).alias("run_date"),
        F.lit(MODEL).alias("model"),
        F.lit(version).alias("model_version"),
        F.lit(unc.method).alias("uncertainty_method"),
        "example_id",
        "view_ts",
        "score",
        "uncertainty",
        "label",
    )
    summary = {
        "model_version": version,
        "cutoff": cutoff,
        "train_rows": n_train,
        "train_rows_per_s": float(np.mean([e["rows_per_s"] for e in result["epochs"]])),
    }
    return BuiltScores(scores, summary, result["state_dict"], test_rows)


def write_scores(spark: SparkSession, scores: DataFrame, path: str, run_date: date) -> None:
    """Replace the run date's rows of ``model`` in the Delta ``scores`` table (idempotent)."""
    predicate = f"run_date = '{run_date.isoformat()}' AND model = '{MODEL}'"
    replace_where(spark, scores.select(*SCORES_COLUMNS), path, predicate)


def scores_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, Any]:
    """Read ``examples``, write ``scores`` for the run date; return and log the summary with the
    scoring cost of the configured estimator."""
    path = cfg.table_path("examples")
    if not is_delta_table(spark, path):
        raise ConversionInputError(
            f"no examples table at {path}: run build_examples (or the pipeline) first"
        )
    examples = spark.read.format("delta").load(path)
    run_date = cfg.run_date or datetime.now(UTC).date()
    scores, summary, _, _ = build_scores(spark, examples, cfg, data_end(spark, cfg, examples))
    out = cfg.table_path("scores")
    start = time.monotonic()
    write_scores(spark, scores, out, run_date)
    seconds = time.monotonic() - start
    written = (
        spark.read.format("delta")
        .load(out)
        .where((F.col("run_date") == F.lit(run_date)) & (F.col("model") == MODEL))
        .agg(F.count(F.lit(1)).alias("rows"), F.sum("label").alias("positives"))
        .head()
    )
    summary.update(
        rows=int(written["rows"]),
        positives=int(written["positives"] or 0),
        scoring_seconds=seconds,
        scoring_rows_per_s=written["rows"] / seconds if seconds > 0 else float("nan"),
        uncertainty_method=cfg.uncertainty.method,
    )
    log.info(
        "scores: %d test examples (%d positive) scored with %s uncertainty in %.1fs "
        "(%.0f rows/s incl. the Delta write) into %s; model %s",
        summary["rows"],
        summary["positives"],
        cfg.uncertainty.method,
        seconds,
        summary["scoring_rows_per_s"],
        out,
        summary["model_version"],
    )
    return summary
