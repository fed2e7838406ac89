"""The Delta ``examples`` table: first views, their pre-conversion signals, conversions, features.

Definitions (docs/delayed_feedback.md, "Examples"), with ``W = feedback.attribution_window_hours``
and ``L = feedback.feature_lookback_days``:

* an **example** is the first view of an item by a user (ties at the same instant: lowest
  ``category_id``); ``example_id = xxhash64(user_id, item_id, view_ts)``;
* ``conversion_ts``: the first buy of the pair in ``(view_ts, view_ts + W]``;
* ``revisit_ts``: the first later view of the pair in ``(view_ts, view_ts + W]``;
  ``fav_ts`` / ``cart_ts``: the first favourite / add-to-cart in ``[view_ts, view_ts + W]``;
  each signal is kept only if it is strictly before ``conversion_ts`` (when there is one);
* features ``f_*`` count activity in ``[view_ts - L, view_ts)``: strictly before the view, so
  nothing that happens at or after it (the example's own outcome included) can leak in.

Time comparisons use epoch **microseconds** (Spark's timestamp resolution), not seconds: the
generator writes millisecond times, and truncating to seconds would drop a view 0.4 s before
another from the "strictly before" window. Signals and conversions are one join of each example
with the events of its (user, item) pair and a conditional aggregation. No UDF, no collect.

The as-of features are window functions on that epoch column, each written as the difference of
two running counts: ``count[t - L, t) = count(< t) - count(< t - L)``. Why not one
``rangeBetween(-L, -1)`` frame: Spark evaluates a sliding range frame by re-aggregating its whole
buffer whenever the frame moves, which is quadratic in the events of a key within ``L`` (a popular
category holds hundreds of thousands); a frame that starts at ``unboundedPreceding`` only ever adds
rows, so both running counts cost one pass over the sorted partition.

A buy with no earlier view of the item by the user is not an example (there is no view to
attribute it to). ``buys_without_prior_view`` returns those buys; the stage counts and logs them.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, LongType, StringType, TimestampType
from pyspark.storagelevel import StorageLevel

from recbatch.config import FeedbackSettings, RecbatchConfig
from recbatch.errors import RecbatchError
from recbatch.feedback.refresh import ExamplesBuild, plan_examples_refresh
from recbatch.io.delta import is_delta_table, last_commit_metric, replace_where
from recbatch.log import get_logger, timed

log = get_logger(__name__)

MICROS_PER_SECOND = 1_000_000
MICROS_PER_HOUR = 3600 * MICROS_PER_SECOND
MICROS_PER_DAY = 24 * MICROS_PER_HOUR

REQUIRED_EVENT_COLUMNS: dict[str, DataType] = {
    "user_id": LongType(),
    "item_id": LongType(),
    "category_id": LongType(),
    "event_type": StringType(),
    "event_ts": TimestampType(),
}
"""What ``build_examples`` reads from the ``events`` table (events/schema.py ``events_schema``).
The three ids may instead all be strings (``ingest.ids=string``)."""

ID_COLUMNS = ("user_id", "item_id", "category_id")

SIGNAL_COLUMNS = ("revisit_ts", "fav_ts", "cart_ts")

FEATURE_COLUMNS = (
    "f_user_views",
    "f_user_buys",
    "f_user_carts",
    "f_user_favs",
    "f_user_recent_views",
    "f_user_category_views",
    "f_pair_prior_events",
    "f_item_views",
    "f_item_buys",
    "f_category_views",
    "f_category_buys",
    "f_item_conversion_rate",
)
"""Counts are long, the rate is double; all are non-null (0 without history). In ``[t - L, t)``
unless said: the user's views, buys, carts, favourites; the user's views in the last
``feedback.recent_activity_hours`` (a session's momentum); the user's views of the item's
category (intent for that kind of item); the user's favourites, carts and buys of *this* item
before its first view (carted from a list or a recommendation widget: strong intent); the item's
and the category's views and buys; the item's conversion rate over examples whose window closed."""

EXAMPLE_COLUMNS = (
    "example_id",
    "user_id",
    "item_id",
    "category_id",
    "view_ts",
    "view_date",
    *SIGNAL_COLUMNS,
    "conversion_ts",
    *FEATURE_COLUMNS,
)
"""The ``examples`` table, in column order."""

PARTITION_COLUMN = "view_date"


class ExamplesInputError(RecbatchError):
    """The events cannot be turned into examples (missing table, wrong schema)."""


def window_micros(hours: float) -> int:
    """A duration in hours as whole microseconds (the unit of every time comparison here)."""
    return round(hours * MICROS_PER_HOUR)


def check_events_schema(events: DataFrame) -> None:
    """Fail with every problem listed when ``events`` lacks a column or has a wrong type.

    The ids are all long or all string (``ingest.ids``); examples never compute with them.
    """
    fields = {f.name: f.dataType for f in events.schema.fields}
    id_types = {fields[c] for c in ID_COLUMNS if c in fields}
    ids = StringType() if id_types == {StringType()} else LongType()
    expected_types = {**REQUIRED_EVENT_COLUMNS, **dict.fromkeys(ID_COLUMNS, ids)}
    problems = []
    for name, expected in expected_types.items():
        if name not in fields:
            problems.append(f"missing column {name}")
        elif fields[name] != expected:
            problems.append(
                f"{name} is {fields[name].simpleString()}, expected {expected.simpleString()}"
            )
    if problems:
        wanted = ", ".join(f"{n} {t.simpleString()}" for n, t in REQUIRED_EVENT_COLUMNS.items())
        raise ExamplesInputError(
            f"events have the wrong schema for examples: {'; '.join(problems)} (need {wanted};"
            " or the three ids all string)"
        )


def _non_null(events: DataFrame, name: str) -> Column:
    """The column, or a query-time error naming it when a null reaches this stage.

    Ingestion rejects null ids and times, and the Delta ``events`` columns are NOT NULL, so for
    that input the guard is not even planned; a nullable input (a hand-made DataFrame) gets it.
    """
    column = F.col(name)
    if not events.schema[name].nullable:
        return column
    message = f"events.{name} is null: examples need complete events (ingest them first)"
    return F.when(column.isNull(), F.raise_error(F.lit(message))).otherwise(column).alias(name)


def _utc_date(micros: Column) -> Column:
    """The UTC calendar date of an epoch-microseconds column, whatever the session time zone."""
    days = ((micros - F.pmod(micros, F.lit(MICROS_PER_DAY))) / MICROS_PER_DAY).cast("int")
    return F.date_from_unix_date(days)


def _prepared(events: DataFrame) -> DataFrame:
    check_events_schema(events)
    checked = events.select(*[_non_null(events, c) for c in REQUIRED_EVENT_COLUMNS])
    return checked.withColumn("_t", F.unix_micros("event_ts"))


def _is(event_type: str) -> Column:
    return F.col("event_type") == event_type


def _count_in_range(
    value: Column, key: str | list[str], order: str, start: int, end: int
) -> Column:
    """Non-null ``value`` rows of the same ``key`` with ``order`` in ``[o - start, o - end]``.

    Same as ``count(value)`` over ``rangeBetween(-start, -end)``, computed as the difference of
    two running counts (module docstring: linear where the sliding frame is quadratic).
    """
    running = Window.partitionBy(*([key] if isinstance(key, str) else key)).orderBy(order)
    up_to_end = F.count(value).over(running.rangeBetween(Window.unboundedPreceding, -end))
    before_start = F.count(value).over(running.rangeBetween(Window.unboundedPreceding, -start - 1))
    return up_to_end - before_start


def _as_of_counts(
    events: DataFrame, key: str, prefix: str, types: tuple[str, ...], lookback: int
) -> list[Column]:
    """Counts of ``types`` events of the same ``key`` in ``[t - lookback, t)`` for each row."""
    return [
        _count_in_range(F.when(_is(t), True), key, "_t", lookback, 1).alias(f"f_{prefix}_{t}s")
        for t in types
    ]


def _first_views_with_counts(events: DataFrame, lookback: int, recent: int) -> DataFrame:
    """The first view of each (user, item) with its as-of activity counts (``FEATURE_COLUMNS``;
    ``recent``: the span of the user's recent views, microseconds)."""
    views, others = F.when(_is("view"), True), F.when(~_is("view"), True)
    with_counts = events.select(
        "*",
        *_as_of_counts(events, "user_id", "user", ("view", "buy", "cart", "fav"), lookback),
        _count_in_range(views, "user_id", "_t", recent, 1).alias("f_user_recent_views"),
        _count_in_range(views, ["user_id", "category_id"], "_t", lookback, 1).alias(
            "f_user_category_views"
        ),
        _count_in_range(others, ["user_id", "item_id"], "_t", lookback, 1).alias(
            "f_pair_prior_events"
        ),
        *_as_of_counts(events, "item_id", "item", ("view", "buy"), lookback),
        *_as_of_counts(events, "category_id", "category", ("view", "buy"), lookback),
    )
    first = Window.partitionBy("user_id", "item_id").orderBy("_t", "category_id")
    return (
        with_counts.where(_is("view"))
        .withColumn("_rank", F.row_number().over(first))
        .where(F.col("_rank") == 1)
        .drop("_rank", "event_type")
        .withColumnRenamed("event_ts", "view_ts")
        .withColumnRenamed("_t", "_v")
    )


def _outcomes(first_views: DataFrame, events: DataFrame, window: int) -> DataFrame:
    """Conversion and pre-conversion signals of each example, from the events of its pair."""
    pair = events.select(
        "user_id",
        "item_id",
        F.col("event_type").alias("_type"),
        F.col("event_ts").alias("_ts"),
        F.col("_t").alias("_e"),
    )
    joined = first_views.select("user_id", "item_id", "_v").join(pair, ["user_id", "item_id"])
    in_window = F.col("_e") <= F.col("_v") + F.lit(window)
    after = (F.col("_e") > F.col("_v")) & in_window
    at_or_after = (F.col("_e") >= F.col("_v")) & in_window

    def first(event_type: str, when: Column) -> Column:
        return F.min(F.when((F.col("_type") == event_type) & when, F.col("_ts")))

    raw = joined.groupBy("user_id", "item_id").agg(
        first("buy", after).alias("conversion_ts"),
        first("view", after).alias("revisit_ts"),
        first("fav", at_or_after).alias("fav_ts"),
        first("cart", at_or_after).alias("cart_ts"),
    )
    conversion = F.col("conversion_ts")

    def before_conversion(name: str) -> Column:
        signal = F.col(name)
        return F.when(conversion.isNull() | (signal < conversion), signal).alias(name)

    return raw.select(
        "user_id", "item_id", *[before_conversion(c) for c in SIGNAL_COLUMNS], "conversion_ts"
    )


def _item_conversion_rate(lookback: int, window: int) -> Column:
    """Converted share of the item's earlier examples whose outcome was final before this view.

    Those are the examples (any user) viewed in ``[view_ts - L, view_ts - W)``: their window
    closed strictly before ``view_ts``, so their conversion is known then; younger examples are
    left out, since counting their conversion would read the future. 0.0 when there are none.
    """
    if lookback <= window:
        log.warning(
            "feedback.feature_lookback_days is not longer than the attribution window: "
            "f_item_conversion_rate is 0 for every example"
        )
        return F.lit(0.0).alias("f_item_conversion_rate")
    mature = _count_in_range(F.lit(1), "item_id", "_v", lookback, window + 1)
    converted = _count_in_range(F.col("conversion_ts"), "item_id", "_v", lookback, window + 1)
    rate = F.when(mature > 0, converted / mature).otherwise(F.lit(0.0))
    return rate.cast("double").alias("f_item_conversion_rate")


def build_examples(events: DataFrame, settings: FeedbackSettings) -> DataFrame:
    """The ``examples`` rows (columns ``EXAMPLE_COLUMNS``) of an events DataFrame.

    Lazy: nothing runs until the result is used. Raises ExamplesInputError at once when the
    schema is wrong; a null id or time met while running fails the query with its column named.
    """
    window = window_micros(settings.attribution_window_hours)
    lookback = settings.feature_lookback_days * MICROS_PER_DAY
    recent = window_micros(settings.recent_activity_hours)
    rows = _example_rows(_prepared(events), lookback, window, recent=recent)
    return rows.select(*EXAMPLE_COLUMNS[:-1], _item_conversion_rate(lookback, window))


def build_examples_since(
    events: DataFrame, settled: DataFrame, settings: FeedbackSettings, start: datetime
) -> DataFrame:
    """The examples viewed at or after ``start``, for an incremental refresh (feedback/refresh.py).

    ``settled`` is the examples table as built before; its rows viewed before ``start`` are the
    ones new events cannot change. Reads only the events from ``start - L`` on (the features of a
    view at ``start`` look back ``L``), the pair keys of the settled examples (a pair first viewed
    before ``start`` has its example there already) and the settled examples of the ``L`` days
    before ``start`` (the item conversion rate counts them). Equal, row for row, to the same
    slice of ``build_examples`` on all events (tests/test_examples_refresh.py).
    """
    window = window_micros(settings.attribution_window_hours)
    lookback = settings.feature_lookback_days * MICROS_PER_DAY
    since = F.lit(start).cast("timestamp")
    recent = _prepared(events).where(F.col("_t") >= F.unix_micros(since) - lookback)
    settled_pairs = settled.where(F.col("view_ts") < since).select("user_id", "item_id")
    rows = _example_rows(
        recent,
        lookback,
        window,
        recent=window_micros(settings.recent_activity_hours),
        since=since,
        settled_pairs=settled_pairs,
    )
    earlier = settled.where(
        (F.col("view_ts") < since) & (F.unix_micros("view_ts") >= F.unix_micros(since) - lookback)
    ).select(
        "item_id",
        F.unix_micros("view_ts").alias("_v"),
        "conversion_ts",
        F.lit(True).alias("_settled"),
    )
    combined = rows.withColumn("_settled", F.lit(False)).unionByName(
        earlier, allowMissingColumns=True
    )
    return (
        combined.select(*EXAMPLE_COLUMNS[:-1], "_settled", _item_conversion_rate(lookback, window))
        .where(~F.col("_settled"))
        .drop("_settled")
    )


def _example_rows(
    prepared: DataFrame,
    lookback: int,
    window: int,
    *,
    recent: int,
    since: Column | None = None,
    settled_pairs: DataFrame | None = None,
) -> DataFrame:
    """Examples without the item conversion rate, with ``_v`` (view time in microseconds).

    With ``since``: only first views at or after it whose pair is not in ``settled_pairs``.
    """
    first_views = _first_views_with_counts(prepared, lookback, recent)
    if since is not None:
        first_views = first_views.where(F.col("view_ts") >= since)
    if settled_pairs is not None:
        first_views = first_views.join(settled_pairs, ["user_id", "item_id"], "left_anti")
    examples = first_views.join(_outcomes(first_views, prepared, window), ["user_id", "item_id"])
    return examples.select(
        F.xxhash64("user_id", "item_id", "view_ts").alias("example_id"),
        "user_id",
        "item_id",
        "category_id",
        "view_ts",
        _utc_date(F.col("_v")).alias("view_date"),
        *SIGNAL_COLUMNS,
        "conversion_ts",
        *FEATURE_COLUMNS[:-1],
        "_v",
    )


def buys_without_prior_view(events: DataFrame) -> DataFrame:
    """Buys (user_id, item_id, event_ts) with no view of the item by the user strictly before.

    They cannot be examples; a high count points at a truncated log or a broken ingestion.
    """
    prepared = _prepared(events)
    first_view = (
        prepared.where(_is("view")).groupBy("user_id", "item_id").agg(F.min("_t").alias("_v"))
    )
    return (
        prepared.where(_is("buy"))
        .join(first_view, ["user_id", "item_id"], "left")
        .where(F.col("_v").isNull() | (F.col("_v") >= F.col("_t")))
        .select("user_id", "item_id", "event_ts")
    )


def buys_without_prior_view_since(
    events: DataFrame, examples: DataFrame, start: datetime
) -> DataFrame:
    """``buys_without_prior_view`` for the buys at or after ``start``, given the complete
    ``examples`` table: a pair's example is its first view, so a buy has a view strictly before
    it exactly when its pair has an example viewed before it."""
    since = F.lit(start).cast("timestamp")
    buys = _prepared(events).where(_is("buy") & (F.col("event_ts") >= since))
    first_view = examples.select("user_id", "item_id", F.col("view_ts").alias("_first"))
    return (
        buys.join(first_view, ["user_id", "item_id"], "left")
        .where(F.col("_first").isNull() | (F.col("_first") >= F.col("event_ts")))
        .select("user_id", "item_id", "event_ts")
    )


def write_examples(
    spark: SparkSession, examples: DataFrame, path: str, user_metadata: str | None = None
) -> None:
    """Replace the whole Delta ``examples`` table at ``path`` with ``examples`` in one commit.

    The full rebuild (feedback/refresh.py decides when an incremental one is safe). Why the
    whole table and not a slice when rebuilding from all events: a new event can change rows on
    any date. A late view earlier than a pair's first view
    moves the example to another ``view_date`` (and ``example_id``); a buy or signal revises an
    example viewed up to ``W`` earlier; every event shifts the as-of features of the next ``L``
    days. Replacing only the dates of the new events (``replaceWhere``) would leave stale or
    duplicated rows elsewhere. A full overwrite is one atomic commit (readers see the old or
    the new table, never a mix), the same input gives the same rows, and time travel keeps the
    previous versions. A table with another column list (features added by a newer recbatch)
    is replaced with this one's schema, in full and with a warning, never merged.
    """
    exists = is_delta_table(spark, path)
    log.info("%s the examples table %s", "replacing" if exists else "creating", path)
    writer = examples.select(*EXAMPLE_COLUMNS).write.format("delta")
    if exists and tuple(spark.read.format("delta").load(path).columns) != EXAMPLE_COLUMNS:
        log.warning(
            "the examples table at %s has another column list (an older recbatch's features): "
            "the full rebuild replaces its schema (time travel keeps the old version)",
            path,
        )
        writer = writer.option("overwriteSchema", "true")
    if user_metadata is not None:
        writer = writer.option("userMetadata", user_metadata)
    writer.mode("overwrite").partitionBy(PARTITION_COLUMN).save(path)


def examples_summary(examples: DataFrame) -> dict[str, int]:
    """Counts of examples, conversions and each signal, in one aggregation."""
    row = examples.agg(
        F.count(F.lit(1)).alias("examples"),
        F.count("conversion_ts").alias("converted"),
        *[F.count(c).alias(f"with_{c.removesuffix('_ts')}") for c in SIGNAL_COLUMNS],
    ).head()
    return {k: int(v) for k, v in row.asDict().items()}


def examples_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, int]:
    """Read ``events``, refresh ``examples`` (all of it, the days new events can change, or
    nothing: feedback/refresh.py), log and return the counts.

    Returns ``examples``, ``converted``, ``with_revisit``, ``with_fav``, ``with_cart`` (counted
    on the written table), ``buys_without_prior_view`` (among the buys this refresh read: all of
    them in a full rebuild) and ``rows_written``.
    """
    events_path = cfg.table_path("events")
    examples_path = cfg.table_path("examples")
    if not is_delta_table(spark, events_path):
        raise ExamplesInputError(
            f"no events table at {events_path}: run ingest_events before build_examples"
        )
    plan = plan_examples_refresh(spark, events_path, examples_path, cfg.feedback)
    log.info("examples refresh: %s", plan.describe())
    if plan.mode == "current":
        counts = examples_summary(spark.read.format("delta").load(examples_path))
        return {**counts, "buys_without_prior_view": 0, "rows_written": 0}
    events = spark.read.format("delta").option("versionAsOf", plan.events_version)
    events = events.load(events_path)
    check_events_schema(events)
    record = ExamplesBuild.of(plan.events_version, cfg.feedback).to_json()
    if plan.mode == "full":
        orphans = _rebuild_all(spark, events, cfg.feedback, examples_path, record)
    else:
        orphans = _rebuild_since(spark, events, cfg.feedback, examples_path, record, plan.start)
    counts = examples_summary(spark.read.format("delta").load(examples_path))
    counts["buys_without_prior_view"] = orphans
    counts["rows_written"] = last_commit_metric(spark, examples_path, "numOutputRows")
    log.info(
        "examples: %d (%d converted; with revisit %d, fav %d, cart %d; %d rows written) in %s",
        counts["examples"],
        counts["converted"],
        counts["with_revisit"],
        counts["with_fav"],
        counts["with_cart"],
        counts["rows_written"],
        examples_path,
    )
    return counts


def _rebuild_all(
    spark: SparkSession, events: DataFrame, settings: FeedbackSettings, path: str, record: str
) -> int:
    """Replace the whole table from all events; the count of buys without a prior view."""
    events = events.select(*REQUIRED_EVENT_COLUMNS).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        orphans = buys_without_prior_view(events).count()
        _log_orphans(orphans, "")
        with timed(log, f"building examples into {path}"):
            write_examples(spark, build_examples(events, settings), path, user_metadata=record)
    finally:
        events.unpersist()
    return orphans


def _rebuild_since(
    spark: SparkSession,
    events: DataFrame,
    settings: FeedbackSettings,
    path: str,
    record: str,
    start: datetime,
) -> int:
    """Swap in the examples viewed from ``start`` on (whole view_date partitions, one commit)."""
    settled = spark.read.format("delta").load(path)
    rows = build_examples_since(events, settled, settings, start)
    with timed(log, f"rebuilding the examples viewed from {start:%Y-%m-%d} in {path}"):
        replace_where(
            spark,
            rows.select(*EXAMPLE_COLUMNS),
            path,
            f"{PARTITION_COLUMN} >= '{start:%Y-%m-%d}'",
            user_metadata=record,
        )
    examples = spark.read.format("delta").load(path)
    orphans = buys_without_prior_view_since(events, examples, start).count()
    _log_orphans(orphans, f" since {start:%Y-%m-%d}")
    return orphans


def _log_orphans(orphans: int, span: str) -> None:
    if orphans:
        log.warning(
            "%d buys%s without a prior view of the item by the user: not examples", orphans, span
        )
    else:
        log.info("0 buys%s without a prior view", span)
