"""Labels of the ``examples`` table at a cutoff (docs/delayed_feedback.md, "Labels at a cutoff").

Every helper is a column expression over the ``examples`` columns, so the same table answers any
cutoff ``T`` (the real one and the counterfactual ``T'`` of the flip model). ``cutoff`` is an
aware ``datetime``: a naive one would be read in the machine's time zone, so it is refused.

Types: labels are int 0/1 (they are averaged and used as MLlib labels), ``elapsed_s`` is double
seconds (exact to the microsecond), ``signal_state`` a string, ``mature`` a boolean.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recbatch.feedback.examples import MICROS_PER_SECOND, window_micros

SIGNAL_STATES = ("none", "revisit", "fav", "cart")
"""Signal states from weakest to strongest; an example's state is the strongest seen by ``T``."""

LABEL_COLUMNS = ("observed_label", "elapsed_s", "signal_state", "mature")
"""The columns ``at_cutoff`` adds to the examples."""


def _cutoff(cutoff: datetime) -> Column:
    if not isinstance(cutoff, datetime) or cutoff.tzinfo is None or cutoff.utcoffset() is None:
        raise ValueError(f"cutoff must be a timezone-aware datetime, got {cutoff!r}")
    return F.lit(cutoff)


def _seen_by(column: str, cutoff: datetime) -> Column:
    """True when the time in ``column`` is at or before the cutoff; false when null."""
    return F.coalesce(F.col(column) <= _cutoff(cutoff), F.lit(False))


def _as_label(condition: Column) -> Column:
    return F.when(condition, F.lit(1)).otherwise(F.lit(0))


def true_label() -> Column:
    """``y``: 1 when the example converted within the attribution window, else 0."""
    return _as_label(F.col("conversion_ts").isNotNull()).alias("true_label")


def observed_label(cutoff: datetime) -> Column:
    """``y_T``: 1 when the conversion happened at or before the cutoff, else 0."""
    return _as_label(_seen_by("conversion_ts", cutoff)).alias("observed_label")


def elapsed_seconds(cutoff: datetime) -> Column:
    """``e = T - view_ts`` in seconds (double); negative for a view after the cutoff."""
    micros = F.unix_micros(_cutoff(cutoff)) - F.unix_micros(F.col("view_ts"))
    return (micros / F.lit(MICROS_PER_SECOND)).cast("double").alias("elapsed_s")


def signal_state(cutoff: datetime) -> Column:
    """The strongest signal seen by the cutoff: ``cart`` > ``fav`` > ``revisit`` > ``none``."""
    state = F.lit("none")
    for name in SIGNAL_STATES[1:]:  # weakest first, so the strongest condition ends outermost
        state = F.when(_seen_by(f"{name}_ts", cutoff), F.lit(name)).otherwise(state)
    return state.alias("signal_state")


def is_mature(cutoff: datetime, window_hours: float) -> Column:
    """``view_ts + W <= T``: the attribution window closed, so the observed label is final."""
    if window_hours <= 0:
        raise ValueError(f"window_hours must be positive, got {window_hours}")
    closes = F.unix_micros(F.col("view_ts")) + F.lit(window_micros(window_hours))
    return (closes <= F.unix_micros(_cutoff(cutoff))).alias("mature")


def at_cutoff(examples: DataFrame, cutoff: datetime, window_hours: float) -> DataFrame:
    """The examples viewed at or before the cutoff, with ``LABEL_COLUMNS`` added."""
    return examples.where(F.col("view_ts") <= _cutoff(cutoff)).select(
        "*",
        observed_label(cutoff),
        elapsed_seconds(cutoff),
        signal_state(cutoff),
        is_mature(cutoff, window_hours),
    )
