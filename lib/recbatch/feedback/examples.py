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

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, LongType, StringType, TimestampType
from pyspark.storagelevel import StorageLevel

from recbatch.config import FeedbackSettings, RecbatchConfig
from recbatch.errors import RecbatchError
from recbatch.io.delta import is_delta_table
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
"""What ``build_examples`` reads from the ``events`` table (events/schema.py EVENTS_SCHEMA)."""

SIGNAL_COLUMNS = ("revisit_ts", "fav_ts", "cart_ts")

FEATURE_COLUMNS = (
    "f_user_views",
    "f_user_buys",
    "f_user_carts",
    "f_item_views",
    "f_item_buys",
    "f_category_views",
    "f_category_buys",
    "f_item_conversion_rate",
)
"""Counts are long, the rate is double; all are non-null (0 without history)."""

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
    """Fail with every problem listed when ``events`` lacks a column or has a wrong type."""
    fields = {f.name: f.dataType for f in events.schema.fields}
    problems = []
    for name, expected in REQUIRED_EVENT_COLUMNS.items():
        if name not in fields:
            problems.append(f"missing column {name}")
        elif fields[name] != expected:
            problems.append(
                f"{name} is {fields[name].simpleString()}, expected {expected.simpleString()}"
            )
    if problems:
        wanted = ", ".join(f"{n} {t.simpleString()}" for n, t in REQUIRED_EVENT_COLUMNS.items())
        raise ExamplesInputError(
            f"events have the wrong schema for examples: {'; '.join(problems)} (need {wanted})"
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


def _count_in_range(value: Column, key: str, order: str, start: int, end: int) -> Column:
    """Non-null ``value`` rows of the same ``key`` with ``order`` in ``[o - start, o - end]``.

    Same as ``count(value)`` over ``rangeBetween(-start, -end)``, computed as the difference of
    two running counts (module docstring: linear where the sliding frame is quadratic).
    """
    running = Window.partitionBy(key).orderBy(order)
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


def _first_views_with_counts(events: DataFrame, lookback: int) -> DataFrame:
    """The first view of each (user, item) with its as-of activity counts."""
    with_counts = events.select(
        "*",
        *_as_of_counts(events, "user_id", "user", ("view", "buy", "cart"), lookback),
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
    prepared = _prepared(events)
    first_views = _first_views_with_counts(prepared, lookback)
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
        _item_conversion_rate(lookback, window),
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


def write_examples(spark: SparkSession, examples: DataFrame, path: str) -> None:
    """Replace the whole Delta ``examples`` table at ``path`` with ``examples`` in one commit.

    Why the whole table and not a slice: examples are recomputed from all events on every run,
    and a new event can change rows on any date. A late view earlier than a pair's first view
    moves the example to another ``view_date`` (and ``example_id``); a buy or signal revises an
    example viewed up to ``W`` earlier; every event shifts the as-of features of the next ``L``
    days. Replacing only the dates of the new events (``replaceWhere``) would leave stale or
    duplicated rows elsewhere. A full overwrite is one atomic commit (readers see the old or
    the new table, never a mix), the same input gives the same rows, and time travel keeps the
    previous versions. The schema must stay the one in the table: a changed column list fails
    the write instead of silently evolving the table (drop the table to change it).
    """
    action = "replacing" if is_delta_table(spark, path) else "creating"
    log.info("%s the examples table %s", action, path)
    (
        examples.select(*EXAMPLE_COLUMNS)
        .write.format("delta")
        .mode("overwrite")
        .partitionBy(PARTITION_COLUMN)
        .save(path)
    )


def examples_summary(examples: DataFrame) -> dict[str, int]:
    """Counts of examples, conversions and each signal, in one aggregation."""
    row = examples.agg(
        F.count(F.lit(1)).alias("examples"),
        F.count("conversion_ts").alias("converted"),
        *[F.count(c).alias(f"with_{c.removesuffix('_ts')}") for c in SIGNAL_COLUMNS],
    ).head()
    return {k: int(v) for k, v in row.asDict().items()}


def examples_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, int]:
    """Read ``events``, write ``examples``, log and return the counts.

    Returns ``examples``, ``converted``, ``with_revisit``, ``with_fav``, ``with_cart`` (counted
    on the written table) and ``buys_without_prior_view``.
    """
    events_path = cfg.table_path("events")
    examples_path = cfg.table_path("examples")
    if not is_delta_table(spark, events_path):
        raise ExamplesInputError(
            f"no events table at {events_path}: run ingest_events before build_examples"
        )
    events = spark.read.format("delta").load(events_path)
    check_events_schema(events)
    events = events.select(*REQUIRED_EVENT_COLUMNS).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        orphans = buys_without_prior_view(events).count()
        if orphans:
            log.warning(
                "%d buys without a prior view of the item by the user: not examples", orphans
            )
        else:
            log.info("0 buys without a prior view")
        with timed(log, f"building examples into {examples_path}"):
            write_examples(spark, build_examples(events, cfg.feedback), examples_path)
    finally:
        events.unpersist()
    counts = examples_summary(spark.read.format("delta").load(examples_path))
    counts["buys_without_prior_view"] = orphans
    log.info(
        "examples: %d (%d converted; with revisit %d, fav %d, cart %d) in %s",
        counts["examples"],
        counts["converted"],
        counts["with_revisit"],
        counts["with_fav"],
        counts["with_cart"],
        examples_path,
    )
    return counts
