"""The evaluation protocol: one cutoff T, a training window before it, a test window after it.

The field's delayed-feedback setting (docs/delayed_feedback.md, "Evaluation protocol"): at a
cutoff T the model trains on the examples viewed in ``[T - train_days, T)`` with their labels
*as observed at T* (the methods differ only in how they weight those), and is tested on the
views of ``[T, T + test_days)`` with their true labels.

* **T** is ``feedback.cutoff`` when set, the same T the ``flip_weights`` stage uses, so one
  setting moves every stage; else ``data end - (test_days + W)``, the latest T whose test labels
  are all mature.
* **Training window**: ``conversion.train_days`` days before T (default: every view before T).
  The flip model always learns from all mature history before T: a one-day training window must
  not starve it.
* **Test labels**: a test view's label is final once its attribution window ``[view, view + W)``
  has closed by the data end. ``conversion.test_labels = mature`` requires that of every test view
  (a T too late for it is an error that says the latest T that works); ``censored`` evaluates
  on labels as far as the data reach, as the field also does, and ``conversion_metrics`` records
  the share of test views whose window the data end cuts (``censored_share``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recbatch.config import ConversionSettings, FeedbackSettings, RecbatchConfig
from recbatch.feedback.conversion.errors import ConversionInputError
from recbatch.io.delta import is_delta_table


@dataclass(frozen=True)
class EvaluationWindow:
    """The protocol's times; ``train_start`` None means every view before the cutoff."""

    cutoff: datetime
    train_start: datetime | None
    test_end: datetime
    data_end: datetime
    window: timedelta

    @property
    def test_labels_mature(self) -> bool:
        """Every test view's attribution window closes by the data end."""
        return self.test_end + self.window <= self.data_end

    def training(self, view: Column) -> Column:
        """Views of the training window."""
        inside = view < F.lit(self.cutoff)
        return inside if self.train_start is None else inside & (view >= F.lit(self.train_start))

    def test(self, view: Column) -> Column:
        """Views of the test window."""
        return (view >= F.lit(self.cutoff)) & (view < F.lit(self.test_end))

    def censored(self, view: Column) -> Column:
        """Test views whose attribution window the data end cuts (their label may still flip)."""
        return (view + F.make_dt_interval(secs=F.lit(self.window.total_seconds()))) > F.lit(
            self.data_end
        )

    def describe(self) -> str:
        start = "the first view" if self.train_start is None else self.train_start.isoformat()
        return (
            f"training views [{start}, T={self.cutoff.isoformat()}), test views "
            f"[T, {self.test_end.isoformat()}), data end {self.data_end.isoformat()}, "
            f"W={self.window.total_seconds() / 3600:g}h"
        )


def evaluation_window(
    end: datetime, feedback: FeedbackSettings, settings: ConversionSettings
) -> EvaluationWindow:
    """The protocol's window for data ending at ``end`` (module docstring); checks it can be run."""
    window = timedelta(hours=feedback.attribution_window_hours)
    test = timedelta(days=settings.test_days)
    latest_mature = end - test - window
    cutoff = feedback.cutoff or latest_mature
    train_start = cutoff - timedelta(days=settings.train_days) if settings.train_days else None
    result = EvaluationWindow(cutoff, train_start, cutoff + test, end, window)
    if result.test_end > end:
        raise ConversionInputError(
            f"the test window [{cutoff.isoformat()}, {result.test_end.isoformat()}) reaches past "
            f"the data end {end.isoformat()}: use feedback.cutoff <= {(end - test).isoformat()} "
            f"or fewer conversion.test_days (now {settings.test_days:g})"
        )
    if settings.test_labels == "mature" and not result.test_labels_mature:
        raise ConversionInputError(
            f"test labels are not mature at cutoff {cutoff.isoformat()}: views up to "
            f"{result.test_end.isoformat()} need W={feedback.attribution_window_hours:g}h after "
            f"them, but the data end at {end.isoformat()}. Use feedback.cutoff <= "
            f"{latest_mature.isoformat()}, or conversion.test_labels=censored to evaluate on "
            "labels as far as the data reach"
        )
    return result


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
