"""Time and inputs at a cutoff: elapsed-time buckets, the examples as observed at ``T``.

Every learner sees an example through the same columns: its elapsed time since the view (and
that time's bucket), its signal state and its ``f_*`` features, all as known at the cutoff.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recbatch.config import FeedbackSettings
from recbatch.feedback import labels

FEATURE_PREFIX = "f_"


def require_utc(cutoff: datetime) -> datetime:
    """A naive cutoff would silently mean the machine's time zone (same rule as config)."""
    if not isinstance(cutoff, datetime) or cutoff.utcoffset() is None:
        raise ValueError(f"cutoff {cutoff!r} needs a UTC offset")
    return cutoff


def window_seconds(settings: FeedbackSettings) -> float:
    return settings.attribution_window_hours * 3600.0


def viewed_in(examples: DataFrame, start: datetime, end: datetime) -> Column:
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


def feature_columns(df: DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith(FEATURE_PREFIX)]


def observe_at(examples: DataFrame, cutoff: datetime, settings: FeedbackSettings) -> DataFrame:
    """The examples at ``T`` (``view_ts <= T``) with ``feedback.labels.LABEL_COLUMNS``
    (``observed_label``, ``elapsed_s``, ``signal_state``, ``mature``) and ``elapsed_bucket``.
    All example columns are kept (``conversion_ts`` too, for the oracle)."""
    at = labels.at_cutoff(examples, require_utc(cutoff), settings.attribution_window_hours)
    return at.withColumn("elapsed_bucket", elapsed_bucket(F.col("elapsed_s"), settings))
