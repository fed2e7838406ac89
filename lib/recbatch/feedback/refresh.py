"""How much of the ``examples`` table a refresh must recompute: all, the days since some date, or
nothing.

Which rows a new event can change (``W`` attribution window, ``L`` feature lookback; see
feedback/examples.py for the definitions). Let ``e`` be the earliest event inserted since the
table was built, and ``S`` any instant at or before ``e - W``. An example viewed at ``v < S``:

* keeps its outcome: its window ``[v, v + W]`` ends before ``e``;
* keeps its as-of features: they count events before ``v < e``;
* keeps its item conversion rate: it reads examples viewed before ``v``, which by the same
  argument are unchanged, and no new example can be viewed before ``e``;
* stays its pair's first view: a new view is at or after ``e > v``.

So the rows viewed before ``S`` stay as they are, and the rows from ``S`` on are rebuilt from the
events at or after ``S - L`` (feedback.examples.build_examples_since) and swapped in with one
``replaceWhere`` commit. ``S`` is ``e - W`` rounded down to a UTC midnight, so the swapped slice is
whole ``view_date`` partitions. A late event (a re-delivered file, a backfill) only moves ``S``
back; nothing is assumed about arrival order.

``e`` comes from Delta's change data feed on ``events`` (ingest turns it on), read between the
``events`` version the examples were built from, which each build records in its commit's
``userMetadata``, and the version read now. Anything that breaks the argument falls back to a
full rebuild, with the reason logged: no record, a changed ``W`` or ``L``, a change feed that is
off or already cleaned up for that range, or any change that is not an insert.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recbatch.config import FeedbackSettings
from recbatch.io.delta import is_delta_table, table_version
from recbatch.log import get_logger

log = get_logger(__name__)

RefreshMode = Literal["full", "incremental", "current"]


@dataclass(frozen=True)
class ExamplesBuild:
    """What an examples commit was built from; stored as the commit's ``userMetadata``."""

    events_version: int
    attribution_window_hours: float
    feature_lookback_days: int
    recent_activity_hours: float | None = None
    """None in builds from before the setting existed: they differ from any build now."""

    @classmethod
    def of(cls, events_version: int, settings: FeedbackSettings) -> ExamplesBuild:
        return cls(
            events_version,
            settings.attribution_window_hours,
            settings.feature_lookback_days,
            settings.recent_activity_hours,
        )

    def to_json(self) -> str:
        return json.dumps({"recbatch_examples_build": asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> ExamplesBuild | None:
        try:
            return cls(**json.loads(text or "")["recbatch_examples_build"])
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class RefreshPlan:
    mode: RefreshMode
    events_version: int
    reason: str
    start: datetime | None = None
    """Incremental only: rebuild the examples viewed at or after this UTC midnight."""

    def describe(self) -> str:
        span = f" from {self.start:%Y-%m-%d}" if self.start else ""
        return f"{self.mode}{span} (events version {self.events_version}): {self.reason}"


def plan_examples_refresh(
    spark: SparkSession,
    events_path: str,
    examples_path: str,
    settings: FeedbackSettings,
) -> RefreshPlan:
    """Decide full / incremental / current for the events as they are now (module docstring)."""
    version = table_version(spark, events_path)

    def full(reason: str) -> RefreshPlan:
        return RefreshPlan("full", version, reason)

    if settings.examples_refresh == "full":
        return full("feedback.examples_refresh is full")
    if not is_delta_table(spark, examples_path):
        return full("there is no examples table yet")
    built = last_build(spark, examples_path)
    if built is None:
        return full(
            "the examples table's last commit does not record which events it was built from"
        )
    if built != ExamplesBuild.of(built.events_version, settings):
        return full(
            f"W, L or the recent-activity span changed since the last build "
            f"({built.attribution_window_hours} h, {built.feature_lookback_days} d, "
            f"{built.recent_activity_hours} h)"
        )
    if built.events_version == version:
        return RefreshPlan("current", version, "no events table commit since the last build")
    if built.events_version > version:
        return full(
            f"events is at version {version}, older than the build's {built.events_version}"
        )
    try:
        inserted, other, earliest = _changes(spark, events_path, built.events_version + 1, version)
    except AnalysisException as err:
        return full(
            f"no change data feed for events versions {built.events_version + 1}.."
            f"{version} ({str(err).splitlines()[0]})"
        )
    if other:
        return full(f"{other} events were updated or deleted, not only inserted")
    if not inserted:
        return RefreshPlan(
            "current", version, "the events commits since the last build inserted nothing"
        )
    start = _midnight(earliest - timedelta(hours=settings.attribution_window_hours))
    history_start = _earliest_event(spark, events_path, version)
    if start - timedelta(days=settings.feature_lookback_days) <= history_start:
        return full(f"{inserted} new events; their span reaches back to the start of history")
    return RefreshPlan(
        "incremental",
        version,
        f"{inserted} new events, the earliest at {earliest:%Y-%m-%d %H:%M:%S} UTC",
        start,
    )


def last_build(spark: SparkSession, examples_path: str) -> ExamplesBuild | None:
    """The build record of the table's latest commit (None if that commit is not a build)."""
    last = DeltaTable.forPath(spark, examples_path).history(1).select("userMetadata").head()
    return ExamplesBuild.from_json(last["userMetadata"] if last else None)


def _changes(
    spark: SparkSession, events_path: str, first: int, last: int
) -> tuple[int, int, datetime | None]:
    """(inserted rows, other changes, earliest inserted event time) between two versions."""
    feed = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", first)
        .option("endingVersion", last)
        .load(events_path)
    )
    is_insert = F.col("_change_type") == "insert"
    row = feed.agg(
        F.count(F.when(is_insert, True)).alias("inserted"),
        F.count(F.when(~is_insert, True)).alias("other"),
        F.unix_micros(F.min(F.when(is_insert, F.col("event_ts")))).alias("earliest"),
    ).head()
    return int(row["inserted"]), int(row["other"]), _from_micros(row["earliest"])


def _earliest_event(spark: SparkSession, events_path: str, version: int) -> datetime:
    events = spark.read.format("delta").option("versionAsOf", version).load(events_path)
    return _from_micros(events.agg(F.unix_micros(F.min("event_ts"))).head()[0])


def _from_micros(micros: int | None) -> datetime | None:
    """Epoch microseconds as an aware UTC datetime (collecting a timestamp would give a naive
    one in the Python process's local zone)."""
    return None if micros is None else datetime.fromtimestamp(micros / 1e6, UTC)


def _midnight(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
