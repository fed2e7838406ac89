"""A conversion model trained on delayed feedback, and the harness comparing weighting methods.

Everything a method changes is the pair of loss weights of each example (docs/delayed_feedback.md,
"Weights"): the model is one torch MLP trained with ``w_pos·BCE(f, 1) + w_neg·BCE(f, 0)``
(averaged over the rows), on Spark-written Parquet read through Petastorm, one shard per DDP
process (``recbatch.train.distributed.run_distributed``).

**Data.** ``prepare_features`` turns the ``f_*`` columns into one ``features`` array<float>:
``log1p`` then standardised with the mean and standard deviation of the *training* rows (one
Spark aggregation, ``feature_stats``). ``write_tensor_set`` writes Parquet with ``example_id``
(long), ``features``, ``w_pos``, ``w_neg`` and ``label`` (float: the label observed at the cutoff
for a training set, the true label for an evaluation set), repartitioned into
``num_processes * row_groups_per_trainer`` files of one row group each, so every trainer reads
several row groups.

**Evaluation** (``evaluate_methods``). With ``end`` the last event time and ``W`` the attribution
window, the training cutoff is ``T = end - (test_days + W)``. The test examples are those viewed in
``[T, T + test_days)``: their windows close by ``end``, so their true labels are known. Every
method trains on the examples viewed before ``T`` with labels and weights *as observed at T*:

* ``vanilla``: observed labels; ``oracle``: true labels (the upper bound, it reads the future);
* ``waiting_window``: observed labels, without the examples younger than ``waiting_hours``;
* ``importance_sampling`` and ``label_correction``: the flip model (fit once at ``T`` on mature
  history, as ``weights.training_weights_table`` does) and ``weights.training_weights``.
  Importance sampling is ES-DFM's weighting in a batch snapshot: a real-negative probability
  ``1 - z`` learnt from the elapsed time (and here the pre-conversion signals too), and ``1/s`` on
  positives; ES-DFM's duplicated positives belong to its stream, which a snapshot does not have.
* ``fnw``: fake negative weighting (Ktena et al. 2019): every example counts as a negative and
  each observed conversion once more as a positive, reweighted by the model's own detached
  prediction during training (``fnw_weights``).

Metrics on the test set with the true labels: AUC and PR-AUC (MLlib
``BinaryClassificationEvaluator``), log loss (a Spark aggregation) and
``RI-AUC = (AUC - AUC_vanilla) / (AUC_oracle - AUC_vanilla)``. ``conversion_stage`` writes the
table to the Delta ``conversion_metrics`` table, replacing the rows of the run date.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import torch
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
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
from pyspark.storagelevel import StorageLevel
from torch import nn

from recbatch.config import ConversionSettings, RecbatchConfig
from recbatch.errors import RecbatchError
from recbatch.feedback.examples import FEATURE_COLUMNS
from recbatch.feedback.flip import fit_flip_model, score_at_cutoff
from recbatch.feedback.weights import training_weights
from recbatch.io.delta import is_delta_table, replace_where
from recbatch.io.tensors import count_rows, iter_torch_batches
from recbatch.log import get_logger, timed
from recbatch.train.distributed import (
    all_sum,
    device_for_rank,
    gather_objects,
    join_uneven,
    rank_and_world,
    run_distributed,
    wrap_ddp,
)

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

TENSOR_COLUMNS = ("example_id", "features", "w_pos", "w_neg", "label")

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
    ]
)
"""The Delta ``conversion_metrics`` table: one row per (run date, method)."""


class ConversionInputError(RecbatchError):
    """The data cannot support the conversion model (no examples, empty training or test set)."""


# --- data -------------------------------------------------------------------------------------


def feature_stats(examples: DataFrame) -> dict[str, tuple[float, float]]:
    """``{feature: (mean, std)}`` of ``log1p(feature)`` over ``examples``, in one aggregation.
    A constant feature gets std 1 (it standardises to 0 instead of dividing by 0)."""
    aggs = []
    for name in FEATURE_COLUMNS:
        value = F.log1p(F.col(name).cast("double"))
        aggs += [F.avg(value).alias(f"m_{name}"), F.stddev_pop(value).alias(f"s_{name}")]
    row = examples.agg(*aggs).head()
    stats = {}
    for name in FEATURE_COLUMNS:
        mean, std = row[f"m_{name}"], row[f"s_{name}"]
        if mean is None:
            raise ConversionInputError("feature statistics need at least one training example")
        stats[name] = (float(mean), float(std) if std and std > 1e-12 else 1.0)
    return stats


def feature_vector(stats: dict[str, tuple[float, float]]) -> Column:
    """The standardised ``log1p`` features as one ``array<float>`` column, in ``stats`` order."""
    parts = [
        ((F.log1p(F.col(name).cast("double")) - F.lit(mean)) / F.lit(std)).cast("float")
        for name, (mean, std) in stats.items()
    ]
    return F.array(*parts).alias("features")


def write_tensor_set(rows: DataFrame, path: str, settings: ConversionSettings) -> int:
    """Write ``TENSOR_COLUMNS`` of ``rows`` as Parquet at ``path`` (replacing it) in
    ``num_processes * row_groups_per_trainer`` files; return the row count, checked so that every
    trainer has a non-empty shard."""
    files = settings.num_processes * settings.row_groups_per_trainer
    (
        rows.select(
            F.col("example_id").cast("long"),
            "features",
            F.col("w_pos").cast("float"),
            F.col("w_neg").cast("float"),
            F.col("label").cast("float"),
        )
        .repartition(files)
        .write.mode("overwrite")
        .parquet(path)
    )
    try:
        shards = [
            count_rows(path, shard=r, shard_count=settings.num_processes)
            for r in range(settings.num_processes)
        ]
    except ValueError as err:  # fewer row groups than trainers
        raise ConversionInputError(
            f"too little data for {settings.num_processes} trainers: {err}"
        ) from err
    if min(shards) == 0:
        raise ConversionInputError(
            f"{path}: a trainer would get no rows (rows per shard {shards}); "
            "use fewer processes or more data"
        )
    return sum(shards)


# --- model ------------------------------------------------------------------------------------


class ConversionMLP(nn.Module):
    """Features -> hidden ReLU layers (each followed by dropout when ``dropout > 0``) -> one logit
    per head, shape ``[rows, heads]``.

    Why heads and dropout: they are the two cheap sources of a per-prediction uncertainty
    (``recbatch.uncertainty``): heads trained on different bootstrap weights of the same rows
    disagree where data is thin; dropout kept on at scoring time samples sub-networks. With one
    head and no dropout it is a plain MLP.
    """

    def __init__(
        self, n_features: int, hidden_sizes: Sequence[int], dropout: float = 0.0, heads: int = 1
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, heads))
        self.net = nn.Sequential(*layers)
        self.heads = heads

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def build_model(n_features: int, settings: ConversionSettings) -> ConversionMLP:
    """The model ``settings`` describe (one place, so training and scoring build the same)."""
    return ConversionMLP(n_features, settings.hidden_sizes, settings.dropout, settings.heads)


def bootstrap_weights(
    rows: int, heads: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``[rows, heads]`` online-bootstrap weights: Poisson(1) per row and head (Oza & Russell),
    so each head sees its own resample of every batch; all ones for a single head."""
    if heads == 1:
        return torch.ones(rows, 1)
    return torch.poisson(torch.ones(rows, heads), generator=generator)


def weighted_bce(logits: torch.Tensor, w_pos: torch.Tensor, w_neg: torch.Tensor) -> torch.Tensor:
    """``mean(w_pos·(-log f) + w_neg·(-log(1 - f)))`` with ``f = sigmoid(logits)``, computed
    stably from the logits (``-log f = softplus(-x)``, ``-log(1 - f) = softplus(x)``). Shapes
    broadcast: ``[rows, heads]`` logits with ``[rows, heads]`` or ``[rows, 1]`` weights."""
    losses = w_pos * nn.functional.softplus(-logits) + w_neg * nn.functional.softplus(logits)
    return losses.mean()


def fnw_weights(
    logits: torch.Tensor, w_pos: torch.Tensor, w_neg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """FNW's importance weights ``(w_pos·(1 + p), w_neg·(1 - p)(1 + p))``.

    Why: with every example first counted as a negative and each conversion once more as a
    positive, the biased data has ``b(1|x) = p/(1 + p)`` and ``b(0|x) = 1/(1 + p)``; the ratios
    ``P/b`` are these factors. ``p`` is the model's prediction without gradient (the paper's
    stop-gradient), so the weights rescale the loss but are not themselves optimised.
    """
    p = torch.sigmoid(logits.detach())
    return w_pos * (1.0 + p), w_neg * (1.0 - p) * (1.0 + p)


def train_conversion_model(
    train_path: str,
    n_features: int,
    settings: ConversionSettings,
    record_ids: bool = False,
    fake_negative_weighting: bool = False,
) -> dict[str, Any]:
    """Train the MLP on this rank's shard of ``train_path`` (run it with ``run_distributed``).

    With ``fake_negative_weighting`` the stored weights are multiplied by ``fnw_weights``.

    Returns (rank 0's) ``state_dict`` (CPU tensors), ``epochs`` (per epoch: mean weighted loss
    over all rows, rows, seconds, rows/s), ``rows_per_rank`` (rows each rank read per epoch) and,
    with ``record_ids``, ``ids_per_rank``: the ``example_id`` each rank read in the first epoch.
    """
    rank, world = rank_and_world()
    device = device_for_rank()
    torch.manual_seed(settings.seed)
    model = wrap_ddp(build_model(n_features, settings), device)
    resample = torch.Generator().manual_seed(settings.seed * 7919 + rank)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    columns = ["features", "w_pos", "w_neg", *(["example_id"] if record_ids else [])]
    history, ids, own_rows = [], [], 0
    for epoch in range(settings.epochs):
        start = time.monotonic()
        loss_sum, rows = 0.0, 0
        batches = iter_torch_batches(
            train_path,
            batch_size=settings.batch_size,
            shard=rank,
            shard_count=world,
            columns=columns,
            shuffle=True,
            seed=settings.seed * 1000 + epoch + 1,
        )
        model.train()
        with join_uneven(model):
            for batch in batches:
                x = batch["features"].to(device)
                logits = model(x)
                boot = bootstrap_weights(len(x), settings.heads, resample).to(device)
                w_pos = batch["w_pos"].to(device).unsqueeze(-1) * boot
                w_neg = batch["w_neg"].to(device).unsqueeze(-1) * boot
                if fake_negative_weighting:
                    w_pos, w_neg = fnw_weights(logits, w_pos, w_neg)
                loss = weighted_bce(logits, w_pos, w_neg)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(x)
                rows += len(x)
                if record_ids and epoch == 0:
                    ids.extend(batch["example_id"].tolist())
        total_loss, total_rows = all_sum([loss_sum, float(rows)], device)
        seconds = time.monotonic() - start
        own_rows = rows
        stats = {
            "epoch": epoch + 1,
            "loss": total_loss / max(total_rows, 1.0),
            "rows": int(total_rows),
            "seconds": seconds,
            "rows_per_s": total_rows / seconds if seconds > 0 else float("nan"),
        }
        history.append(stats)
        if rank == 0:
            log.info(
                "epoch %d/%d: weighted loss %.5f, %d rows in %.1fs (%.0f rows/s, %d process(es))",
                epoch + 1,
                settings.epochs,
                stats["loss"],
                stats["rows"],
                seconds,
                stats["rows_per_s"],
                world,
            )
    rows_per_rank = gather_objects(own_rows)
    ids_per_rank = gather_objects(ids) if record_ids else None
    core = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
    return {
        "state_dict": state,
        "epochs": history,
        "rows_per_rank": rows_per_rank,
        "ids_per_rank": ids_per_rank,
    }


def train(
    spark: SparkSession,
    train_path: str,
    n_features: int,
    settings: ConversionSettings,
    fake_negative_weighting: bool = False,
) -> dict[str, Any]:
    """``train_conversion_model`` in ``settings.num_processes`` DDP processes."""
    return run_distributed(
        train_conversion_model,
        train_path,
        n_features,
        settings,
        fake_negative_weighting=fake_negative_weighting,
        num_processes=settings.num_processes,
        spark=spark,
    )


# --- scoring and metrics ----------------------------------------------------------------------


def map_model(
    rows: DataFrame,
    state_dict: dict[str, torch.Tensor],
    settings: ConversionSettings,
    predict: Callable[[nn.Module, torch.Tensor], dict[str, np.ndarray]],
    keep: Sequence[str],
    schema: str,
) -> DataFrame:
    """``keep`` columns of ``rows`` plus the columns ``predict(model, features)`` returns, computed
    in ``mapInPandas`` by the model rebuilt once per task from the broadcast weights.

    One scaffold for every scorer (plain probability here, score + uncertainty in
    ``recbatch.uncertainty.scores``): the weights travel once, each Python worker builds the
    model once, and rows go through it one Arrow batch at a time.
    """
    weights = {k: v.numpy() for k, v in state_dict.items()}
    n_features = int(weights["net.0.weight"].shape[1])
    shared = rows.sparkSession.sparkContext.broadcast(weights)
    kept = list(keep)

    def run(frames: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        torch.set_num_threads(1)
        model = build_model(n_features, settings)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in shared.value.items()})
        model.eval()
        for frame in frames:
            if not len(frame):
                continue
            x = torch.from_numpy(np.stack(frame["features"].to_numpy()).astype(np.float32))
            yield pd.DataFrame({**{c: frame[c] for c in kept}, **predict(model, x)})

    return rows.select(*kept, "features").mapInPandas(run, schema)


def _mean_probability(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        p = torch.sigmoid(model(x)).mean(-1)
    return {"probability": p.numpy().astype(np.float64)}


def score(
    rows: DataFrame, state_dict: dict[str, torch.Tensor], settings: ConversionSettings
) -> DataFrame:
    """``example_id``, ``label`` (double) and ``probability`` (mean over the heads) of ``rows``
    (with ``features``)."""
    typed = rows.select(F.col("example_id").cast("long"), F.col("label").cast("double"), "features")
    return map_model(
        typed,
        state_dict,
        settings,
        _mean_probability,
        ["example_id", "label"],
        "example_id long, label double, probability double",
    )


def binary_metrics(scored: DataFrame) -> dict[str, float]:
    """AUC and PR-AUC (MLlib), log loss (one aggregation), rows and positives of ``scored``
    (``label`` 0/1 and ``probability``). Scores once: ``scored`` is persisted meanwhile."""
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        p = F.least(F.greatest(F.col("probability"), F.lit(1e-7)), F.lit(1 - 1e-7))
        y = F.col("label")
        row = scored.agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum(y).alias("positives"),
            F.avg(-(y * F.log(p) + (1 - y) * F.log(1 - p))).alias("log_loss"),
        ).head()
        evaluator = BinaryClassificationEvaluator(rawPredictionCol="probability", labelCol="label")
        auc = evaluator.evaluate(scored, {evaluator.metricName: "areaUnderROC"})
        pr_auc = evaluator.evaluate(scored, {evaluator.metricName: "areaUnderPR"})
    finally:
        scored.unpersist()
    return {
        "rows": int(row["rows"]),
        "positives": int(row["positives"] or 0),
        "auc": float(auc),
        "pr_auc": float(pr_auc),
        "log_loss": float(row["log_loss"]),
    }


def relative_improvement(auc: float, auc_vanilla: float, auc_oracle: float) -> float | None:
    """``RI-AUC = (AUC - AUC_vanilla) / (AUC_oracle - AUC_vanilla)``; None when the oracle does
    not differ from vanilla (the ratio is undefined)."""
    gap = auc_oracle - auc_vanilla
    if abs(gap) < 1e-12:
        return None
    return (auc - auc_vanilla) / gap + 0.0  # + 0.0: vanilla's own 0 is never stored as -0.0


# --- the harness ------------------------------------------------------------------------------


def _utc(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros))


def examples_end(examples: DataFrame) -> datetime:
    """The last time seen in the examples (views, signals, conversions): the data's end."""
    times = ["view_ts", "revisit_ts", "fav_ts", "cart_ts", "conversion_ts"]
    row = examples.agg(*[F.max(F.unix_micros(F.col(c))).alias(c) for c in times]).head()
    values = [v for v in row if v is not None]
    if not values:
        raise ConversionInputError("the examples are empty")
    return _utc(max(values))


def evaluation_cutoffs(
    end: datetime, window_hours: float, test_days: float
) -> tuple[datetime, datetime]:
    """``(T, T + test_days)`` with ``T = end - (test_days + W)``."""
    cutoff = end - timedelta(days=test_days, hours=window_hours)
    return cutoff, cutoff + timedelta(days=test_days)


def _method_weights(
    method: str,
    scored: DataFrame,
    cfg: RecbatchConfig,
    settings: ConversionSettings,
    cutoff: datetime,
) -> DataFrame:
    """``training_weights`` rows of ``method`` at ``cutoff`` from the flip-model-scored examples."""
    run_date = cfg.run_date or datetime.now(UTC).date()
    if method == "waiting_window":
        kept = scored.where(F.col("elapsed_s") >= F.lit(settings.waiting_hours * 3600.0))
        return training_weights(kept, "vanilla", cfg.feedback, cutoff, run_date)
    return training_weights(scored, method, cfg.feedback, cutoff, run_date)


def weighted_training_rows(
    scored: DataFrame,
    feature_rows: DataFrame,
    method: str,
    cfg: RecbatchConfig,
    settings: ConversionSettings,
    cutoff: datetime,
) -> DataFrame:
    """The tensor-set rows (``TENSOR_COLUMNS``) of ``method``: its loss weights at ``cutoff`` for
    the flip-model-scored examples, with their ``features`` and the observed label."""
    weights = _method_weights(method, scored, cfg, settings, cutoff)
    return weights.select(
        "example_id", "w_pos", "w_neg", F.col("observed_label").alias("label")
    ).join(feature_rows, "example_id")


def evaluate_methods(
    spark: SparkSession,
    examples: DataFrame,
    cfg: RecbatchConfig,
    methods: Sequence[str] = METHODS,
    settings: ConversionSettings | None = None,
    *,
    end: datetime | None = None,
) -> list[dict[str, Any]]:
    """Train one model per method and measure it on the test split (module doc); return the
    metric table as rows (``METRICS_SCHEMA`` order). ``end`` is the last event time (default: the
    last time in the examples). RI-AUC needs ``vanilla`` and ``oracle`` among the methods."""
    settings = settings or cfg.conversion
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown methods {unknown}; expected some of {METHODS}")
    end = end or examples_end(examples)
    fb = cfg.feedback
    cutoff, test_end = evaluation_cutoffs(end, fb.attribution_window_hours, settings.test_days)
    run_date = cfg.run_date or datetime.now(UTC).date()
    work = f"{cfg.path('work')}/conversion/{run_date.isoformat()}"
    log.info(
        "conversion evaluation: data end %s, training cutoff T=%s, test views in [T, %s)",
        end.isoformat(),
        cutoff.isoformat(),
        test_end.isoformat(),
    )

    view = F.col("view_ts")
    train_examples = examples.where(view < F.lit(cutoff)).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        n_train = train_examples.count()
        if n_train == 0:
            raise ConversionInputError(
                f"no training examples viewed before the cutoff {cutoff.isoformat()} (data end "
                f"{end.isoformat()}, test_days={settings.test_days:g}, "
                f"W={fb.attribution_window_hours:g}h): the log is too short"
            )
        stats = feature_stats(train_examples)
        features = feature_vector(stats)
        test_rows = examples.where((view >= F.lit(cutoff)) & (view < F.lit(test_end))).select(
            "example_id",
            features,
            F.lit(1.0).alias("w_pos"),
            F.lit(1.0).alias("w_neg"),
            F.col("conversion_ts").isNotNull().cast("float").alias("label"),
        )
        test_path = f"{work}/test"
        with timed(log, f"writing the test set {test_path}"):
            n_test = write_tensor_set(test_rows, test_path, settings)
        test_set = spark.read.parquet(test_path).persist(StorageLevel.MEMORY_AND_DISK)

        with timed(log, f"fitting the flip model at {cutoff.isoformat()}"):
            cells, observation = fit_flip_model(train_examples, cutoff, fb)
        scored = score_at_cutoff(train_examples, cutoff, cells, observation, fb)
        scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
        feature_rows = train_examples.select("example_id", features)

        results = []
        for method in methods:
            rows = weighted_training_rows(scored, feature_rows, method, cfg, settings, cutoff)
            path = f"{work}/train_{method}"
            with timed(log, f"{method}: writing the training set {path}"):
                n_rows = write_tensor_set(rows, path, settings)
            start = time.monotonic()
            with timed(log, f"{method}: training on {n_rows} rows"):
                result = train(spark, path, len(stats), settings, method == "fnw")
            seconds = time.monotonic() - start
            metrics = binary_metrics(score(test_set, result["state_dict"], settings))
            last = result["epochs"][-1]
            log.info("%s: %s", method, metrics)
            results.append(
                {
                    "run_date": run_date,
                    "method": method,
                    "cutoff": cutoff,
                    "train_rows": n_rows,
                    "test_rows": metrics["rows"],
                    "test_positives": metrics["positives"],
                    "auc": metrics["auc"],
                    "pr_auc": metrics["pr_auc"],
                    "log_loss": metrics["log_loss"],
                    "ri_auc": None,
                    "epochs": len(result["epochs"]),
                    "final_train_loss": float(last["loss"]),
                    "train_rows_per_s": float(np.mean([e["rows_per_s"] for e in result["epochs"]])),
                    "train_seconds": seconds,
                }
            )
        if results[0]["test_rows"] != n_test:
            raise RuntimeError(f"scored {results[0]['test_rows']} of {n_test} test rows")
        scored.unpersist()
        test_set.unpersist()
    finally:
        train_examples.unpersist()

    by_method = {r["method"]: r["auc"] for r in results}
    if "vanilla" in by_method and "oracle" in by_method:
        for r in results:
            r["ri_auc"] = relative_improvement(r["auc"], by_method["vanilla"], by_method["oracle"])
    return results


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The metric table as aligned text."""
    head = f"{'method':<20} {'train':>8} {'test':>7} {'pos':>5} {'AUC':>7} {'PR-AUC':>7} "
    head += f"{'logloss':>8} {'RI-AUC':>7} {'rows/s':>9}"
    lines = [head]
    for r in rows:
        ri = "n/a" if r["ri_auc"] is None else f"{r['ri_auc'] + 0.0:.3f}"
        lines.append(
            f"{r['method']:<20} {r['train_rows']:>8} {r['test_rows']:>7} "
            f"{r['test_positives']:>5} {r['auc']:>7.4f} {r['pr_auc']:>7.4f} "
            f"{r['log_loss']:>8.5f} {ri:>7} {r['train_rows_per_s']:>9.0f}"
        )
    return "\n".join(lines)


def write_metrics(
    spark: SparkSession, rows: Sequence[dict[str, Any]], path: str, run_date: date
) -> None:
    """Replace the run date's rows of the Delta ``conversion_metrics`` table with ``rows``."""
    names = [f.name for f in METRICS_SCHEMA.fields]
    frame = spark.createDataFrame([tuple(r[n] for n in names) for r in rows], METRICS_SCHEMA)
    replace_where(spark, frame, path, f"run_date = '{run_date.isoformat()}'")


def data_end(spark: SparkSession, cfg: RecbatchConfig, examples: DataFrame) -> datetime:
    """The last event time: from the ``events`` table when there is one, else the examples."""
    events_path = cfg.table_path("events")
    if is_delta_table(spark, events_path):
        last = (
            spark.read.format("delta")
            .load(events_path)
            .agg(F.max(F.unix_micros("event_ts")))
            .head()[0]
        )
        if last is not None:
            return _utc(last)
    return examples_end(examples)


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
