"""The hazard learner: z per (signal state, elapsed bucket) cell, Beta-smoothed.

A few dozen cells, fitted by one aggregation; also the per-cell summary every learner's
``flip_model`` rows are reported in (``cell_summary``).
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame
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
from recbatch.feedback.flip.apply import finish, prepared
from recbatch.feedback.flip.buckets import elapsed_bucket_bounds
from recbatch.feedback.labels import SIGNAL_STATES
from recbatch.log import get_logger

log = get_logger(__name__)

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


def apply_hazard(
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
    df = prepared(examples_at_cutoff, settings)
    z = F.broadcast(cells.select("signal_state", "elapsed_bucket", F.col("z").alias("_cell_z")))
    joined = df.join(z, ["signal_state", "elapsed_bucket"], "left")
    return finish(joined, df.columns, F.col("_cell_z"), observation, settings)
