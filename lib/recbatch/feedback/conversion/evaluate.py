"""The harness comparing delayed-feedback methods: one model per method, one test set.

Every method trains on the examples of the protocol's training window (``protocol``) with labels
and weights *as observed at T*:

* ``vanilla``: observed labels; ``oracle``: true labels (the upper bound, it reads the future);
* ``waiting_window``: observed labels, without the examples younger than ``waiting_hours``;
* ``importance_sampling`` and ``label_correction``: the flip model (fit once at ``T`` on all
  mature history, as ``weights.training_weights_table`` does) and ``weights.training_weights``.
  Importance sampling is ES-DFM's weighting in a batch snapshot: a real-negative probability
  ``1 - z`` learnt from the elapsed time (and here the pre-conversion signals too), and ``1/s`` on
  positives; ES-DFM's duplicated positives belong to its stream, which a snapshot does not have.
* ``fnw``: fake negative weighting (Ktena et al. 2019): every example counts as a negative and
  each observed conversion once more as a positive, reweighted by the model's own detached
  prediction during training (``model.fnw_weights``).

Each method's rows are split once more, by a hash of ``example_id``, into training and a
validation slice for early stopping (``training``); the slice keeps the method's labels and
weights, so stopping never reads true labels. Metrics on the test set (``metrics``): AUC,
average precision, log loss, PCOC and ``RI-AUC = (AUC - AUC_vanilla) / (AUC_oracle - AUC_vanilla)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel

from recbatch.config import ConversionSettings, RecbatchConfig
from recbatch.feedback.comparison import relative_improvement
from recbatch.feedback.conversion.errors import ConversionInputError
from recbatch.feedback.conversion.metrics import binary_metrics_of_columns
from recbatch.feedback.conversion.protocol import (
    EvaluationWindow,
    evaluation_window,
    examples_end,
)
from recbatch.feedback.conversion.scoring import score_models
from recbatch.feedback.conversion.tensors import feature_stats, feature_vector, write_tensor_set
from recbatch.feedback.conversion.training import TrainingJob, train_jobs
from recbatch.feedback.flip import fit_flip_model, score_at_cutoff
from recbatch.feedback.weights import training_weights
from recbatch.log import get_logger, timed

log = get_logger(__name__)

METHODS = (
    "vanilla",
    "oracle",
    "waiting_window",
    "fnw",
    "importance_sampling",
    "label_correction",
)
"""Methods ``evaluate_methods`` knows, in the order of the metric table."""


@dataclass
class TrainingData:
    """The training window's examples scored by the flip model at T, with their features."""

    window: EvaluationWindow
    stats: dict[str, tuple[float, float]]
    scored: DataFrame
    """Flip-model-scored training examples (persisted until ``release``)."""
    feature_rows: DataFrame
    """``example_id``, ``features`` of the training examples."""
    rows: int

    @property
    def features(self) -> Column:
        return feature_vector(self.stats)

    def release(self) -> None:
        self.scored.unpersist()


def training_data(
    examples: DataFrame, window: EvaluationWindow, cfg: RecbatchConfig
) -> TrainingData:
    """Fit the flip model at T on all history before T, score the training window with it."""
    fb, view = cfg.feedback, F.col("view_ts")
    train_examples = examples.where(window.training(view))
    if train_examples.isEmpty():
        raise ConversionInputError(
            f"no training examples in the window: {window.describe()}. The log is too short for "
            "this cutoff (feedback.cutoff) or training window (conversion.train_days)"
        )
    history = examples.where(view < F.lit(window.cutoff))
    with timed(log, f"fitting the flip model at {window.cutoff.isoformat()}"):
        flip_model = fit_flip_model(history, window.cutoff, fb)
    scored = score_at_cutoff(train_examples, window.cutoff, flip_model, fb)
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    rows = scored.count()
    stats = feature_stats(scored)
    return TrainingData(
        window, stats, scored, scored.select("example_id", feature_vector(stats)), rows
    )


def _method_weights(
    method: str, data: TrainingData, cfg: RecbatchConfig, settings: ConversionSettings
) -> DataFrame:
    """``training_weights`` rows of ``method`` at T from the flip-model-scored examples."""
    run_date = cfg.run_date or datetime.now(UTC).date()
    scored, cutoff = data.scored, data.window.cutoff
    if method == "waiting_window":
        kept = scored.where(F.col("elapsed_s") >= F.lit(settings.waiting_hours * 3600.0))
        return training_weights(kept, "vanilla", cfg.feedback, cutoff, run_date)
    return training_weights(scored, method, cfg.feedback, cutoff, run_date)


def weighted_training_rows(
    method: str, data: TrainingData, cfg: RecbatchConfig, settings: ConversionSettings
) -> DataFrame:
    """The tensor-set rows (``TENSOR_COLUMNS``) of ``method``: its loss weights at T for the
    flip-model-scored examples, with their ``features`` and the observed label."""
    weights = _method_weights(method, data, cfg, settings)
    return weights.select(
        "example_id", "w_pos", "w_neg", F.col("observed_label").alias("label")
    ).join(data.feature_rows, "example_id")


def validation_flag(settings: ConversionSettings) -> Column:
    """True for the validation slice: ``validation_fraction`` of the rows by a seeded hash of
    ``example_id`` (the same rows for every method, whatever the partitioning)."""
    bucket = F.pmod(F.xxhash64(F.col("example_id"), F.lit(settings.seed)), F.lit(10_000))
    return bucket < F.lit(int(round(settings.validation_fraction * 10_000)))


@dataclass(frozen=True)
class TensorSets:
    train_path: str
    train_rows: int
    val_path: str | None
    val_rows: int


def write_training_sets(rows: DataFrame, path: str, settings: ConversionSettings) -> TensorSets:
    """The method's training rows at ``path``/train and its validation slice at ``path``/val
    (none when ``validation_fraction`` is 0)."""
    if settings.validation_fraction == 0:
        return TensorSets(
            f"{path}/train", write_tensor_set(rows, f"{path}/train", settings), None, 0
        )
    flagged = rows.withColumn("_val", validation_flag(settings)).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    try:
        n_train = write_tensor_set(flagged.where(~F.col("_val")), f"{path}/train", settings)
        n_val = write_tensor_set(flagged.where(F.col("_val")), f"{path}/val", settings)
    finally:
        flagged.unpersist()
    return TensorSets(f"{path}/train", n_train, f"{path}/val", n_val)


def write_method_sets(
    method: str, data: TrainingData, cfg: RecbatchConfig, settings: ConversionSettings, work: str
) -> TensorSets:
    """``method``'s training and validation tensor sets under ``work``/``method``."""
    rows = weighted_training_rows(method, data, cfg, settings)
    with timed(log, f"{method}: writing the training and validation sets under {work}"):
        return write_training_sets(rows, f"{work}/{method}", settings)


def training_job(method: str, sets: TensorSets) -> TrainingJob:
    """What the trainers need to fit ``method`` on its tensor sets (FNW changes the loss)."""
    return TrainingJob(sets.train_path, sets.val_path, sets.train_rows, method == "fnw")


def train_method(
    spark: SparkSession,
    method: str,
    data: TrainingData,
    cfg: RecbatchConfig,
    settings: ConversionSettings,
    work: str,
) -> tuple[dict[str, Any], TensorSets, float]:
    """Write ``method``'s tensor sets under ``work`` and train one model (``settings.seed``) on
    them: (result, sets, seconds)."""
    sets = write_method_sets(method, data, cfg, settings, work)
    with timed(log, f"{method}: training on {sets.train_rows} rows ({sets.val_rows} validation)"):
        ((result,),) = train_jobs(
            spark, [training_job(method, sets)], len(data.stats), settings, [settings.seed]
        )
    return result, sets, result["seconds"]


def build_test_set(
    spark: SparkSession,
    examples: DataFrame,
    data: TrainingData,
    settings: ConversionSettings,
    path: str,
) -> tuple[DataFrame, int, float]:
    """The test window's tensors at ``path`` (true labels as far as the data reach), their
    count, and the share of them whose label window the data end cuts."""
    window, view = data.window, F.col("view_ts")
    test = examples.where(window.test(view))
    row = test.agg(
        F.count(F.lit(1)).alias("n"), F.sum(window.censored(view).cast("long")).alias("censored")
    ).head()
    if not row["n"]:
        raise ConversionInputError(f"no test examples: {window.describe()}")
    censored_share = float(row["censored"] or 0) / row["n"]
    rows = test.select(
        "example_id",
        data.features,
        F.lit(1.0).alias("w_pos"),
        F.lit(1.0).alias("w_neg"),
        F.col("conversion_ts").isNotNull().cast("float").alias("label"),
    )
    with timed(log, f"writing the test set {path}"):
        n_test = write_tensor_set(rows, path, settings)
    return spark.read.parquet(path).persist(StorageLevel.MEMORY_AND_DISK), n_test, censored_share


def evaluate_methods(
    spark: SparkSession,
    examples: DataFrame,
    cfg: RecbatchConfig,
    methods: Sequence[str] = METHODS,
    settings: ConversionSettings | None = None,
    *,
    end: datetime | None = None,
) -> list[dict[str, Any]]:
    """Train ``conversion.model_seeds`` models per method and measure each on the test window
    (module doc); return the metric table as rows (``stage.METRICS_SCHEMA`` order), one per
    method and model seed. ``end`` is the last event time (default: the last time in the
    examples). RI-AUC needs ``vanilla`` and ``oracle`` (of the same seed)."""
    settings = settings or cfg.conversion
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown methods {unknown}; expected some of {METHODS}")
    window = evaluation_window(end or examples_end(examples), cfg.feedback, settings)
    run_date = cfg.run_date or datetime.now(UTC).date()
    work = f"{cfg.path('work')}/conversion/{run_date.isoformat()}"
    log.info("conversion evaluation: %s, test labels %s", window.describe(), settings.test_labels)

    data = training_data(examples, window, cfg)
    try:
        tests, n_test, censored_share = build_test_set(
            spark, examples, data, settings, f"{work}/test"
        )
        if censored_share:
            log.warning(
                "%.1f%% of the test views' label windows reach past the data end (censored labels)",
                100 * censored_share,
            )
        seeds = settings.seeds()
        sets = {m: write_method_sets(m, data, cfg, settings, work) for m in methods}
        with timed(
            log,
            f"training {len(methods)} method(s) x {len(seeds)} model seed(s) in one "
            f"distributed run",
        ):
            trained_all = train_jobs(
                spark,
                [training_job(m, sets[m]) for m in methods],
                len(data.stats),
                settings,
                seeds,
            )
        models = [
            (method, seed, result)
            for method, trained in zip(methods, trained_all, strict=True)
            for seed, result in zip(seeds, trained, strict=True)
        ]
        with timed(log, f"scoring {len(models)} model(s) on {n_test} test rows in one pass"):
            scored = score_models(tests, [m[2]["state_dict"] for m in models], settings)
            all_metrics = binary_metrics_of_columns(
                scored, [f"probability_{i}" for i in range(len(models))]
            )
        results = []
        for (method, seed, result), metrics in zip(models, all_metrics, strict=True):
            log.info(
                "%s (model seed %d): %s, best epoch %d",
                method,
                seed,
                metrics,
                result["best_epoch"],
            )
            if metrics["rows"] != n_test:
                raise RuntimeError(f"scored {metrics['rows']} of {n_test} test rows")
            results.append(
                {
                    "run_date": run_date,
                    "method": method,
                    "cutoff": window.cutoff,
                    "train_rows": sets[method].train_rows + sets[method].val_rows,
                    "test_rows": metrics["rows"],
                    "test_positives": metrics["positives"],
                    "auc": metrics["auc"],
                    "pr_auc": metrics["pr_auc"],
                    "log_loss": metrics["log_loss"],
                    "ri_auc": None,
                    "epochs": result["epochs"][-1]["epoch"],  # 0: the logistic part alone
                    "final_train_loss": float(result["epochs"][-1]["loss"]),
                    "train_rows_per_s": float(np.mean([e["rows_per_s"] for e in result["epochs"]])),
                    "train_seconds": result["seconds"],
                    "pcoc": metrics["pcoc"],
                    "censored_share": censored_share,
                    "train_start": window.train_start,
                    "model_seed": seed,
                }
            )
        tests.unpersist()
    finally:
        data.release()

    for seed in seeds:  # RI-AUC of each model against vanilla and oracle of the same seed
        same = [r for r in results if r["model_seed"] == seed]
        by_method = {r["method"]: r["auc"] for r in same}
        if "vanilla" in by_method and "oracle" in by_method:
            for r in same:
                r["ri_auc"] = relative_improvement(
                    r["auc"], by_method["vanilla"], by_method["oracle"]
                )
    return results
