"""Per-example loss weights for delayed feedback (docs/delayed_feedback.md, "Weights").

Every loss is ``w_pos · ℓ(x, 1) + w_neg · ℓ(x, 0)``, so one training loop serves every method:

=====================  ============================  ============================
method                 observed positive (w1, w0)    observed negative (w1, w0)
=====================  ============================  ============================
vanilla                (1, 0)                        (0, 1)
importance_sampling    (1/s, 0)                      (0, 1 - z)
label_correction       (1, 0)                        (z, 1 - z)
fnw (fake negatives)   (1, 1) x FNW factors          (0, 1) x FNW factors
oracle (true labels)   y: (1, 0), 1 - y: (0, 1)      y: (1, 0), 1 - y: (0, 1)
=====================  ============================  ============================

FNW (fake negative weighting, Ktena et al. 2019) counts every example once as a negative and each
observed conversion once more as a positive; its factors ``(1 + p)`` on ``w1`` and
``(1 - p)(1 + p)`` on ``w0`` use the model's own detached prediction ``p``, so the trainer applies
them (``conversion.fnw_weights``); the table holds the counts they multiply.

Variance control: ``1/s`` is clipped at ``max_weight`` and ``z`` at ``max_flip_probability``. A
mature example (``z = 0, s = 1``) gets the vanilla weights under every method.

Self-normalised importance weights (``feedback.importance_normalisation``, on by default): the
positives' ``1/s`` are scaled by one factor so that they add up to the flip model's expected
conversions, ``P + Σ_negatives z`` (``z`` clipped). Why: ``Σ 1/s`` and ``P + Σ z`` estimate the
same count, but the first has the variance of an inverse (a few recent positives with a small
``s`` dominate it) and sets the weighted base rate ``Σw1 / Σ(w1 + w0)``, which a model with a
free bias reproduces as its mean prediction: unnormalised, a Taobao day's importance-sampling
model over-predicted conversions by 75% (issue 31). Normalised, the base rate is
``(P + Σz) / n``, label correction's; the ranking signal of ``1/s`` between positives stays.
"""

from __future__ import annotations

from datetime import date, datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recbatch.config import FeedbackSettings
from recbatch.feedback.flip import fit_flip_model, score_at_cutoff
from recbatch.log import get_logger

log = get_logger(__name__)

METHODS = ("vanilla", "importance_sampling", "label_correction", "fnw", "oracle")

TRAINING_WEIGHTS_COLUMNS = (
    "example_id",
    "observed_label",
    "elapsed_s",
    "signal_state",
    "flip_probability",
    "observation_probability",
    "w_pos",
    "w_neg",
    "method",
    "cutoff",
    "run_date",
)
"""The Delta ``training_weights`` table, in the contract's order."""

_NEEDS = {
    "vanilla": {"observed_label"},
    "importance_sampling": {"observed_label", "flip_probability", "observation_probability"},
    "label_correction": {"observed_label", "flip_probability"},
    "fnw": {"observed_label"},
    "oracle": set(),
}


def clipped_flip_probability(settings: FeedbackSettings) -> Column:
    """``min(z, max_flip_probability)``."""
    return F.least(F.col("flip_probability"), F.lit(float(settings.max_flip_probability)))


def clipped_inverse_observation(settings: FeedbackSettings) -> Column:
    """``min(1/s, max_weight)``, written so that ``s = 0`` gives ``max_weight`` (no division by
    zero); a null ``s`` stays null."""
    s = F.col("observation_probability")
    cap = float(settings.max_weight)
    return F.when(s <= 1.0 / cap, F.lit(cap)).otherwise(F.lit(1.0) / s)


def _true_label(df: DataFrame) -> Column:
    """``y``: a ``true_label`` column if there is one, else ``conversion_ts is not null``."""
    if "true_label" in df.columns:
        return F.col("true_label").cast("int") == 1
    if "conversion_ts" in df.columns:
        return F.col("conversion_ts").isNotNull()
    raise ValueError("the oracle needs the true label: a true_label or conversion_ts column")


def loss_weights(df: DataFrame, method: str, settings: FeedbackSettings) -> DataFrame:
    """``df`` with ``w_pos`` (w1) and ``w_neg`` (w0) as doubles, per the contract's table.

    Needs ``observed_label`` (0/1 or boolean) and, by method, ``flip_probability`` (z),
    ``observation_probability`` (s), or the true label for the oracle (``true_label`` or
    ``conversion_ts``). Existing ``w_pos``/``w_neg`` columns are replaced.
    """
    if method not in METHODS:
        raise ValueError(f"unknown weighting method '{method}'; expected one of {METHODS}")
    missing = _NEEDS[method] - set(df.columns)
    if missing:
        raise ValueError(f"method {method} needs columns {sorted(missing)}")
    one, zero = F.lit(1.0), F.lit(0.0)
    if method == "oracle":
        y = _true_label(df)
        w_pos = F.when(y, one).otherwise(zero)
        w_neg = F.when(y, zero).otherwise(one)
    else:
        positive = F.col("observed_label").cast("int") == 1
        if method == "vanilla":
            pos, neg = (one, zero), (zero, one)
        elif method == "fnw":
            pos, neg = (one, one), (zero, one)
        elif method == "importance_sampling":
            z = clipped_flip_probability(settings)
            inverse = clipped_inverse_observation(settings)
            if settings.importance_normalisation == "expected_positives":
                df = with_expected_positive_share(df, positive, inverse, z)
                inverse = inverse * F.col(_POSITIVE_SCALE)
            pos, neg = (inverse, zero), (zero, one - z)
        else:  # label_correction
            z = clipped_flip_probability(settings)
            pos, neg = (one, zero), (z, one - z)
        w_pos = F.when(positive, pos[0]).otherwise(neg[0])
        w_neg = F.when(positive, pos[1]).otherwise(neg[1])
    weighted = df.withColumn("w_pos", w_pos.cast("double")).withColumn(
        "w_neg", w_neg.cast("double")
    )
    return weighted.drop(_POSITIVE_SCALE)


_POSITIVE_SCALE = "_positive_weight_scale"


def with_expected_positive_share(
    df: DataFrame, positive: Column, inverse: Column, z: Column
) -> DataFrame:
    """``df`` with ``_POSITIVE_SCALE = (P + Σ_negatives z) / Σ_positives inverse``: one factor for
    every row, from a one-row aggregate joined back (lazy; one extra pass over ``df``). No
    positive at all leaves the factor at 1."""
    totals = df.agg(
        F.sum(F.when(positive, inverse)).alias("_inverse_sum"),
        F.sum(F.when(positive, F.lit(1.0)).otherwise(z)).alias("_expected"),
    ).select(
        F.coalesce(F.col("_expected") / F.col("_inverse_sum"), F.lit(1.0)).alias(_POSITIVE_SCALE)
    )
    return df.crossJoin(F.broadcast(totals))


def training_weights(
    scored: DataFrame,
    method: str,
    settings: FeedbackSettings,
    cutoff: datetime,
    run_date: date,
) -> DataFrame:
    """Rows of the ``training_weights`` table (``TRAINING_WEIGHTS_COLUMNS``) from examples scored
    by a flip model (``FlipModel.apply``): ``flip_probability`` and ``observation_probability`` are the model's
    values before clipping; ``w_pos``/``w_neg`` are clipped as configured."""
    if cutoff.tzinfo is None:
        raise ValueError(f"cutoff {cutoff.isoformat()} needs a UTC offset")
    weighted = loss_weights(scored, method, settings)
    return weighted.select(
        "example_id",
        F.col("observed_label").cast("int").alias("observed_label"),
        F.col("elapsed_s").cast("double").alias("elapsed_s"),
        "signal_state",
        F.col("flip_probability").cast("double").alias("flip_probability"),
        F.col("observation_probability").cast("double").alias("observation_probability"),
        "w_pos",
        "w_neg",
        F.lit(method).alias("method"),
        F.lit(cutoff).alias("cutoff"),
        F.lit(run_date).alias("run_date"),
    )


def training_weights_table(
    examples: DataFrame,
    cutoff: datetime,
    settings: FeedbackSettings,
    run_date: date,
    method: str | None = None,
) -> DataFrame:
    """End to end: fit the flip model and the delay CDF on data mature at ``cutoff``, score
    the examples at ``cutoff`` (``view_ts <= cutoff``) and weight them by ``method`` (default
    ``settings.weighting``). The two fits run here (a few small actions); the result is lazy."""
    method = method or settings.weighting
    model = fit_flip_model(examples, cutoff, settings)
    scored = score_at_cutoff(examples, cutoff, model, settings)
    log.info("training weights at %s by %s", cutoff.isoformat(), method)
    return training_weights(scored, method, settings, cutoff, run_date)
