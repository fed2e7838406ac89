"""The delay model ``s``: the delay CDF of mature positives per elapsed bucket."""

from __future__ import annotations

from datetime import datetime, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, LongType, StructField, StructType

from recbatch.config import FeedbackSettings
from recbatch.feedback.flip.buckets import elapsed_bucket_bounds, viewed_in, window_seconds
from recbatch.feedback.flip.counterfactual import counterfactual_cutoffs
from recbatch.log import get_logger

log = get_logger(__name__)

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
    window_s = window_seconds(settings)
    cutoffs = counterfactual_cutoffs(cutoff, settings)
    span_lo = cutoffs[-1] - timedelta(hours=settings.attribution_window_hours)
    latest_mature = cutoff - timedelta(hours=settings.attribution_window_hours)
    delay = (F.unix_micros(F.col("conversion_ts")) - F.unix_micros(F.col("view_ts"))) / 1e6
    positives = (
        examples.filter(
            F.col("conversion_ts").isNotNull()
            & viewed_in(examples, span_lo, latest_mature + timedelta(microseconds=1))
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
