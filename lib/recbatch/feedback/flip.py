"""Label-flip probabilities ``z`` and observation probabilities ``s`` (docs/delayed_feedback.md).

At a training cutoff ``T`` a recent view that looks negative may still convert. This module learns,
from mature history only, how likely that is:

* ``counterfactual_training_set`` replays the past: at ``T' = T - CD - k·step`` it takes the views
  of ``[T' - W, T')`` that looked negative at ``T'``, describes them only with what was known at
  ``T'`` (elapsed time, signal state) and labels them with their true label, known at ``T``.
* ``fit_hazard`` (the default learner) turns that set into a small table of cells
  ``(signal_state, elapsed_bucket) -> z``, Beta-smoothed toward each signal state's pooled rate.
  ``fit_logistic`` is the MLlib alternative (features + one-hot signal state and elapsed bucket).
* ``fit_observation`` estimates ``s``, the delay CDF of mature positives, per elapsed bucket.
* ``apply_flip_model`` adds ``flip_probability`` and ``observation_probability`` to the examples
  at ``T`` by a broadcast join; ``calibration`` measures the expected calibration error of ``z`` on
  a held-out counterfactual cutoff.

Everything runs on Spark's DataFrame API. The fitted models are a few dozen rows: they are collected
and rebuilt as literal DataFrames, so a model is fitted once and not recomputed by every use.

Labels at a cutoff (observed label, elapsed time, signal state, maturity) come from
``feedback.labels``, the one definition of the contract's "Labels at a cutoff": the same
expressions read the examples at ``T`` and at every counterfactual ``T'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import reduce

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import OneHotEncoder, StringIndexer, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from recbatch.config import FeedbackSettings
from recbatch.feedback import labels
from recbatch.feedback.labels import SIGNAL_STATES
from recbatch.log import get_logger

log = get_logger(__name__)

FEATURE_PREFIX = "f_"

CELLS_SCHEMA = StructType(
    [
        StructField("signal_state", StringType(), False),
        StructField("elapsed_bucket", IntegerType(), False),
        StructField("bucket_lo_hours", DoubleType(), False),
        StructField("bucket_hi_hours", DoubleType(), False),
        StructField("negatives", LongType(), False),
        StructField("flips", LongType(), False),
        StructField("prior_rate", DoubleType(), False),
        StructField("z", DoubleType(), False),
    ]
)
"""The hazard model: one row per (signal state, elapsed bucket), all combinations present.
``negatives`` observed negatives at the counterfactual cutoffs, ``flips`` of them converted,
``prior_rate`` the signal state's pooled flip rate and ``z`` the smoothed flip probability."""

OBSERVATION_SCHEMA = StructType(
    [
        StructField("elapsed_bucket", IntegerType(), False),
        StructField("bucket_lo_hours", DoubleType(), False),
        StructField("bucket_hi_hours", DoubleType(), False),
        StructField("positives", LongType(), False),
        StructField("s_upper", DoubleType(), False),
        StructField("s", DoubleType(), False),
    ]
)
"""The delay model: ``s_upper`` is the delay CDF at the bucket's upper edge (1 at ``W``), ``s`` its
mean over the bucket, the value used for weights (see ``fit_observation``)."""


def _require_utc(cutoff: datetime) -> datetime:
    """A naive cutoff would silently mean the machine's time zone (same rule as config)."""
    if not isinstance(cutoff, datetime) or cutoff.utcoffset() is None:
        raise ValueError(f"cutoff {cutoff!r} needs a UTC offset")
    return cutoff


def _window_seconds(settings: FeedbackSettings) -> float:
    return settings.attribution_window_hours * 3600.0


def _viewed_in(examples: DataFrame, start: datetime, end: datetime) -> Column:
    """``start <= view_ts < end``, plus the same bounds on the ``view_date`` partition column (when
    there is one) so that a Delta ``examples`` table is pruned to the partitions concerned."""
    cond = (F.col("view_ts") >= F.lit(start)) & (F.col("view_ts") < F.lit(end))
    if "view_date" in examples.columns:
        cond = (
            cond
            & (F.col("view_date") >= F.lit(start.astimezone(UTC).date()))
            & (F.col("view_date") <= F.lit(end.astimezone(UTC).date()))
        )
    return cond


# --- elapsed-time buckets ------------------------------------------------------------------------


def elapsed_bucket_bounds(settings: FeedbackSettings) -> list[tuple[float, float]]:
    """``(lo, hi)`` hours of each elapsed bucket: ``elapsed_buckets_hours`` are the upper edges,
    those at or past ``W`` are dropped and a last bucket runs to ``W``."""
    window = settings.attribution_window_hours
    edges = [b for b in settings.elapsed_buckets_hours if b < window] + [window]
    return list(zip([0.0, *edges[:-1]], edges, strict=True))


def elapsed_bucket(elapsed_s: Column, settings: FeedbackSettings) -> Column:
    """Index (int, from 0) of the bucket ``[lo, hi)`` holding ``elapsed_s``; an elapsed time of
    ``W`` or more falls in the last bucket (such an example is mature: its model values are not
    used)."""
    bounds = elapsed_bucket_bounds(settings)
    expr = None
    for i, (_, hi) in enumerate(bounds[:-1]):
        cond = elapsed_s < F.lit(hi * 3600.0)
        expr = F.when(cond, F.lit(i)) if expr is None else expr.when(cond, F.lit(i))
    last = F.lit(len(bounds) - 1)
    return (last if expr is None else expr.otherwise(last)).cast("int")


def _feature_columns(df: DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith(FEATURE_PREFIX)]


def observe_at(examples: DataFrame, cutoff: datetime, settings: FeedbackSettings) -> DataFrame:
    """The examples at ``T`` (``view_ts <= T``) with ``feedback.labels.LABEL_COLUMNS``
    (``observed_label``, ``elapsed_s``, ``signal_state``, ``mature``) and ``elapsed_bucket``.
    All example columns are kept (``conversion_ts`` too, for the oracle)."""
    at = labels.at_cutoff(examples, _require_utc(cutoff), settings.attribution_window_hours)
    return at.withColumn("elapsed_bucket", elapsed_bucket(F.col("elapsed_s"), settings))


# --- counterfactual training set -----------------------------------------------------------------


def counterfactual_delay_hours(settings: FeedbackSettings) -> float:
    """``CD``: by default the attribution window ``W``."""
    return settings.counterfactual_delay_hours or settings.attribution_window_hours


def counterfactual_cutoffs(cutoff: datetime, settings: FeedbackSettings) -> list[datetime]:
    """``T'_k = T - CD - k·step`` for ``k = 0 .. counterfactual_cutoffs - 1`` (latest first)."""
    _require_utc(cutoff)
    cd = counterfactual_delay_hours(settings)
    step = settings.counterfactual_step_hours
    return [cutoff - timedelta(hours=cd + k * step) for k in range(settings.counterfactual_cutoffs)]


def counterfactual_training_set(
    examples: DataFrame, cutoff: datetime, settings: FeedbackSettings
) -> DataFrame:
    """The flip model's training rows: one per (counterfactual cutoff ``T'``, example viewed in
    ``[T' - W, T')`` and observed negative at ``T'``).

    Columns: ``example_id``, ``cf_index`` (k), ``cf_cutoff`` (T'), ``view_ts``, ``elapsed_s`` (e'),
    ``elapsed_bucket``, ``signal_state`` (at ``T'``), ``observed_label`` (0: negative at ``T'``),
    ``true_label`` (the target) and the ``f_*`` features.

    No leakage: the inputs are computed from times ``<= T'`` only (the features predate the view)
    and the raw signal and conversion times are not passed on. The target is the label observed at
    ``T``, which is the true label because only examples mature at ``T`` (``view_ts + W <= T``) are
    kept. That holds for every row when ``CD >= W``; with a shorter ``CD`` the immature views are
    dropped (by view time, not by outcome, so the cells stay unbiased) and a warning is logged.
    """
    window = settings.attribution_window_hours
    cutoffs = counterfactual_cutoffs(cutoff, settings)
    if counterfactual_delay_hours(settings) < window:
        log.warning(
            "counterfactual delay %.1fh < attribution window %.1fh: views not mature at %s are "
            "left out of the flip model's training set",
            counterfactual_delay_hours(settings),
            window,
            cutoff.isoformat(),
        )
    mature_at_cutoff = labels.is_mature(cutoff, window)
    replays = []
    for k, t in enumerate(cutoffs):
        in_window = _viewed_in(examples, t - timedelta(hours=window), t)
        elapsed = labels.elapsed_seconds(t)
        replays.append(
            examples.where(in_window & mature_at_cutoff & (labels.observed_label(t) == 0)).select(
                "example_id",
                F.lit(k).alias("cf_index"),
                F.lit(t).alias("cf_cutoff"),
                "view_ts",
                elapsed.alias("elapsed_s"),
                elapsed_bucket(elapsed, settings).alias("elapsed_bucket"),
                labels.signal_state(t).alias("signal_state"),
                F.lit(0).alias("observed_label"),
                # mature at T: the label observed at T is the true label, and nothing later is read
                labels.observed_label(cutoff).alias("true_label"),
                *_feature_columns(examples),
            )
        )
    return reduce(DataFrame.unionAll, replays)


def split_holdout(
    training: DataFrame, heldout_index: int = 0, heldout_share: float = 0.2
) -> tuple[DataFrame, DataFrame]:
    """``(fit rows, held-out rows)``, disjoint in time *and* in examples.

    Held out: the rows of the latest counterfactual cutoff (``k = heldout_index``) of a seeded
    hash-share of the examples; fit: the other cutoffs' rows of the other examples. Why both:
    the held-out cutoff alone measures calibration out of time, but cutoffs ``step`` apart with a
    window ``W > step`` see the same young example several times, so a fit on the other cutoffs
    would grade the model partly on examples it has seen. Excluding *all* the held-out cutoff's
    examples from the fit instead would empty its young elapsed buckets (every young example of
    an earlier cutoff is still young at the next one), hence the hash share.
    """
    if not 0 < heldout_share < 1:
        raise ValueError(f"heldout_share must be in (0, 1), got {heldout_share}")
    k = F.col("cf_index")
    held = F.pmod(F.xxhash64("example_id", F.lit("flip-holdout")), F.lit(1000)) < F.lit(
        round(heldout_share * 1000)
    )
    return training.filter((k != heldout_index) & ~held), training.filter(
        (k == heldout_index) & held
    )


# --- the hazard learner --------------------------------------------------------------------------


def fit_hazard(training: DataFrame, settings: FeedbackSettings) -> DataFrame:
    """Cells ``(signal_state, elapsed_bucket, bucket_lo_hours, bucket_hi_hours, negatives, flips,
    prior_rate, z)``, one per signal state and elapsed bucket (``CELLS_SCHEMA``).

    ``z = (flips + m·z0) / (negatives + m)``, ``m = prior_strength``, with the prior ``z0`` of a
    cell the main-effects (independence) fit of the table: ``z0 = min(1, r_state · r_bucket / r)``
    where ``r_state`` is the signal state's flip rate over all its buckets, ``r_bucket`` the elapsed
    bucket's rate over all states and ``r`` the overall rate (each falls back to ``r`` when unseen;
    ``z0 = 0`` if nothing was seen at all). A cell with no negatives gets ``z0``.

    Why not shrink toward ``r_state`` alone: the flip rate falls steeply with elapsed time, and
    the early buckets, where it is highest, are the sparsest (few examples are minutes old at a
    cutoff). A state's pooled rate is dominated by its late buckets, so it pulled the early cells
    down (cart at 0-15 min: 0.11 against a true 0.24); the bucket's own rate across states carries
    that time profile into the prior.
    """
    spark = training.sparkSession
    counts = {
        (r["signal_state"], r["elapsed_bucket"]): (int(r["negatives"]), int(r["flips"]))
        for r in training.groupBy("signal_state", "elapsed_bucket")
        .agg(F.count(F.lit(1)).alias("negatives"), F.sum("true_label").alias("flips"))
        .collect()
    }
    bounds = elapsed_bucket_bounds(settings)
    unknown = {state for state, _ in counts} - set(SIGNAL_STATES)
    if unknown:
        raise ValueError(f"unknown signal states in the training set: {sorted(unknown)}")

    def rate(pairs: Sequence[tuple[int, int]]) -> float | None:
        negatives = sum(n for n, _ in pairs)
        return sum(f for _, f in pairs) / negatives if negatives else None

    overall = rate(list(counts.values())) or 0.0
    bucket_rates = []
    for i in range(len(bounds)):
        r = rate([counts.get((state, i), (0, 0)) for state in SIGNAL_STATES])
        bucket_rates.append(overall if r is None else r)
    m = settings.prior_strength
    rows = []
    for state in SIGNAL_STATES:
        cells = [counts.get((state, i), (0, 0)) for i in range(len(bounds))]
        state_rate = rate(cells)
        state_rate = overall if state_rate is None else state_rate
        for i, ((lo, hi), (negatives, flips)) in enumerate(zip(bounds, cells, strict=True)):
            prior = min(1.0, state_rate * bucket_rates[i] / overall) if overall > 0 else 0.0
            z = (flips + m * prior) / (negatives + m) if negatives + m > 0 else prior
            rows.append((state, i, float(lo), float(hi), negatives, flips, prior, z))
    log.info(
        "hazard flip model: %d cells from %d negatives (overall flip rate %.4f)",
        len(rows),
        sum(n for n, _ in counts.values()),
        overall,
    )
    return spark.createDataFrame(rows, CELLS_SCHEMA)


def fit_observation(examples: DataFrame, cutoff: datetime, settings: FeedbackSettings) -> DataFrame:
    """The delay CDF ``s`` per elapsed bucket, from the positives mature at ``T`` viewed in the
    span the flip model learns from (``view_ts >= T'_last - W``) (``OBSERVATION_SCHEMA``).

    ``s`` is the CDF *averaged over the bucket* (elapsed time taken uniform in the bucket, as it is
    for steady traffic): the expected number of observed positives in a bucket is then
    ``N·p·s``, so weighting each by ``1/s`` makes the bucket's weighted positive count unbiased.
    The CDF at the upper edge (``s_upper``) would over-state ``s`` and under-weight early
    positives. Both are non-decreasing over the buckets (a mean of a CDF over consecutive
    intervals is); ``s_upper`` is 1 at ``W`` and mature examples get ``s = 1``. With no mature
    positive the delay cannot be learnt: ``s = 1`` (no correction).
    """
    window_s = _window_seconds(settings)
    cutoffs = counterfactual_cutoffs(cutoff, settings)
    span_lo = cutoffs[-1] - timedelta(hours=settings.attribution_window_hours)
    latest_mature = cutoff - timedelta(hours=settings.attribution_window_hours)
    delay = (F.unix_micros(F.col("conversion_ts")) - F.unix_micros(F.col("view_ts"))) / 1e6
    positives = (
        examples.filter(
            F.col("conversion_ts").isNotNull()
            & _viewed_in(examples, span_lo, latest_mature + timedelta(microseconds=1))
        )
        .select(delay.alias("d"))
        .filter((F.col("d") > 0) & (F.col("d") <= window_s))
    )
    bounds = elapsed_bucket_bounds(settings)
    d = F.col("d")
    aggs = [F.count(F.lit(1)).alias("n")]
    for i, (lo, hi) in enumerate(bounds):
        lo_s, hi_s = lo * 3600.0, hi * 3600.0
        # share of the bucket [lo, hi) where the elapsed time has passed the delay d
        seen = F.least(F.greatest((F.lit(hi_s) - d) / (hi_s - lo_s), F.lit(0.0)), F.lit(1.0))
        aggs.append(F.avg(seen).alias(f"mean_{i}"))
        aggs.append(F.avg((d <= hi_s).cast("double")).alias(f"upper_{i}"))
    row = positives.agg(*aggs).head()
    n = int(row["n"])
    rows, s_run, upper_run = [], 0.0, 0.0
    for i, (lo, hi) in enumerate(bounds):
        # running maxima only guard against float rounding: both are monotone by construction
        s_run = max(s_run, row[f"mean_{i}"] if n else 1.0)
        upper_run = max(upper_run, row[f"upper_{i}"] if n else 1.0)
        rows.append((i, float(lo), float(hi), n, upper_run, s_run))
    log.info("observation model: %d mature positives, s per bucket %s", n, [r[-1] for r in rows])
    return examples.sparkSession.createDataFrame(rows, OBSERVATION_SCHEMA)


def _prepared(df: DataFrame, settings: FeedbackSettings) -> DataFrame:
    missing = {"elapsed_s", "signal_state", "observed_label"} - set(df.columns)
    if missing:
        raise ValueError(f"scoring needs columns {sorted(missing)}")
    df = df.drop("flip_probability", "observation_probability")
    if "elapsed_bucket" not in df.columns:
        df = df.withColumn("elapsed_bucket", elapsed_bucket(F.col("elapsed_s"), settings))
    return df


def _finish(
    scored: DataFrame,
    columns: Sequence[str],
    z: Column,
    observation: DataFrame,
    settings: FeedbackSettings,
) -> DataFrame:
    """Join ``s``, apply the mature / observed-positive rules, keep ``columns`` plus z and s."""
    s = F.broadcast(observation.select("elapsed_bucket", F.col("s").alias("_cell_s")))
    joined = scored.withColumn("_z", z).join(s, "elapsed_bucket", "left")
    mature = F.col("elapsed_s") >= F.lit(_window_seconds(settings))
    if "mature" in columns:  # from feedback.labels.at_cutoff: the same rule in whole microseconds
        mature = F.coalesce(F.col("mature"), mature)
    positive = F.col("observed_label").cast("int") == 1
    return joined.select(
        *[F.col(f"`{c}`") for c in columns],
        F.when(mature | positive, F.lit(0.0)).otherwise(F.col("_z")).alias("flip_probability"),
        F.when(mature, F.lit(1.0)).otherwise(F.col("_cell_s")).alias("observation_probability"),
    )


def apply_flip_model(
    examples_at_cutoff: DataFrame,
    cells: DataFrame,
    observation: DataFrame,
    settings: FeedbackSettings,
) -> DataFrame:
    """Add ``flip_probability`` (z) and ``observation_probability`` (s) by broadcast joins on
    ``(signal_state, elapsed_bucket)`` and ``elapsed_bucket``.

    Needs ``elapsed_s``, ``signal_state`` and ``observed_label`` (``elapsed_bucket`` is computed
    if absent). Mature examples (``mature`` if present, else ``elapsed_s >= W``) get ``z = 0`` and
    ``s = 1``; observed positives get ``z = 0`` (they cannot flip) and their bucket's ``s``. The
    values are not clipped here (the weights clip them). Works on counterfactual rows too (their
    ``elapsed_s`` is ``e'``). A signal state outside ``SIGNAL_STATES`` gets a null ``z``.
    """
    df = _prepared(examples_at_cutoff, settings)
    z = F.broadcast(cells.select("signal_state", "elapsed_bucket", F.col("z").alias("_cell_z")))
    joined = df.join(z, ["signal_state", "elapsed_bucket"], "left")
    return _finish(joined, df.columns, F.col("_cell_z"), observation, settings)


def fit_flip_model(
    examples: DataFrame,
    cutoff: datetime,
    settings: FeedbackSettings,
    training: DataFrame | None = None,
) -> tuple[DataFrame, DataFrame]:
    """``(hazard cells, delay CDF)`` learnt from the history mature at ``cutoff``.

    ``training`` is the counterfactual training set when the caller already built it (to check
    or reuse it); otherwise it is built here.
    """
    if training is None:
        training = counterfactual_training_set(examples, cutoff, settings)
    return fit_hazard(training, settings), fit_observation(examples, cutoff, settings)


def score_at_cutoff(
    examples: DataFrame,
    cutoff: datetime,
    cells: DataFrame,
    observation: DataFrame,
    settings: FeedbackSettings,
) -> DataFrame:
    """Every example viewed by ``cutoff`` as observed then, with its z and s."""
    return apply_flip_model(observe_at(examples, cutoff, settings), cells, observation, settings)


# --- the logistic learner (MLlib) ---------------------------------------------------------------


def _with_model_features(df: DataFrame) -> tuple[DataFrame, list[str]]:
    """Copies of the ``f_*`` features as doubles with nulls as 0 (the originals are kept)."""
    features = _feature_columns(df)
    copies = [F.coalesce(F.col(c).cast("double"), F.lit(0.0)).alias(f"_x_{c}") for c in features]
    return df.select("*", *copies), [f"_x_{c}" for c in features]


def fit_logistic(
    training: DataFrame,
    settings: FeedbackSettings,
    reg_param: float = 0.001,
    max_iter: int = 50,
) -> PipelineModel:
    """MLlib logistic regression of ``true_label`` on the ``f_*`` features (nulls as 0), the
    one-hot signal state and the one-hot elapsed bucket, on the counterfactual training set.

    Signal state and elapsed bucket enter additively on the logit scale (no interaction, which the
    hazard cells do not assume); the features can refine ``z`` within a cell.
    """
    rows, features = _with_model_features(training)
    stages = [
        StringIndexer(
            inputCol="signal_state",
            outputCol="_state_index",
            stringOrderType="alphabetAsc",
            handleInvalid="keep",
        ),
        OneHotEncoder(
            inputCols=["_state_index", "elapsed_bucket"],
            outputCols=["_state_onehot", "_bucket_onehot"],
            handleInvalid="keep",
        ),
        VectorAssembler(
            inputCols=[*features, "_state_onehot", "_bucket_onehot"], outputCol="_features"
        ),
        LogisticRegression(
            featuresCol="_features",
            labelCol="_label",
            probabilityCol="_probability",
            rawPredictionCol="_raw",
            predictionCol="_prediction",
            regParam=reg_param,
            maxIter=max_iter,
        ),
    ]
    rows = rows.withColumn("_label", F.col("true_label").cast("double"))
    model = Pipeline(stages=stages).fit(rows)
    log.info("logistic flip model on %d features + signal state + elapsed bucket", len(features))
    return model


def apply_logistic(
    examples_at_cutoff: DataFrame,
    model: PipelineModel,
    observation: DataFrame,
    settings: FeedbackSettings,
) -> DataFrame:
    """Like ``apply_flip_model`` with ``z`` from ``fit_logistic``'s model (same columns out)."""
    df = _prepared(examples_at_cutoff, settings)
    rows, _ = _with_model_features(df)
    scored = model.transform(rows)
    z = vector_to_array(F.col("_probability"))[1]
    return _finish(scored, df.columns, z, observation, settings)


# --- calibration ---------------------------------------------------------------------------------


def calibration(
    scored_heldout: DataFrame,
    label_col: str = "true_label",
    probability_col: str = "flip_probability",
    bins: int = 10,
) -> DataFrame:
    """Expected calibration error of ``z`` overall (``scope = 'all'``) and per signal state.

    Columns ``scope``, ``n``, ``mean_predicted``, ``observed_rate``, ``ece`` (one row per scope,
    ``all`` first), with ``ece = Σ_b |Σ z - Σ y|_b / n`` over ``bins`` equal-width probability
    bins. Meant for the observed negatives of a held-out counterfactual cutoff (``split_holdout``)
    scored by ``apply_flip_model``, whose target is ``true_label``.
    """
    if bins < 1:
        raise ValueError("bins must be >= 1")
    p = F.col(probability_col).cast("double")
    y = F.col(label_col).cast("double")
    binned = scored_heldout.select(
        F.explode(F.array(F.lit("all"), F.col("signal_state"))).alias("scope"),
        F.least(F.floor(p * bins), F.lit(bins - 1)).cast("int").alias("bin"),
        p.alias("p"),
        y.alias("y"),
    )
    per_bin = binned.groupBy("scope", "bin").agg(
        F.count(F.lit(1)).alias("n"), F.sum("p").alias("sum_p"), F.sum("y").alias("sum_y")
    )
    n = F.sum("n")
    return (
        per_bin.groupBy("scope")
        .agg(
            n.cast("long").alias("n"),
            F.try_divide(F.sum("sum_p"), n).alias("mean_predicted"),
            F.try_divide(F.sum("sum_y"), n).alias("observed_rate"),
            F.try_divide(F.sum(F.abs(F.col("sum_p") - F.col("sum_y"))), n).alias("ece"),
        )
        .orderBy(F.col("scope") != "all", "scope")
    )


def expected_calibration_errors(calibration_table: DataFrame) -> dict[str, float]:
    """``{scope: ece}`` of a ``calibration`` table (a handful of rows)."""
    return {r["scope"]: r["ece"] for r in calibration_table.collect()}
