"""Examples and labels at a cutoff on hand-made timelines (docs/delayed_feedback.md).

Every expected value below was worked out by hand from ``EVENTS`` with W = 24 h and a feature
lookback of 2 days; times are hours after ``T0`` (UTC).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_test_config
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recbatch.config import FeedbackSettings
from recbatch.feedback.examples import (
    EXAMPLE_COLUMNS,
    FEATURE_COLUMNS,
    ExamplesInputError,
    build_examples,
    buys_without_prior_view,
    examples_stage,
    write_examples,
)
from recbatch.feedback.labels import at_cutoff, true_label

T0 = datetime(2026, 1, 10, tzinfo=UTC)
W_HOURS = 24.0
SETTINGS = FeedbackSettings(attribution_window_hours=W_HOURS, feature_lookback_days=2)
EVENTS_DDL = "user_id long, item_id long, category_id long, event_type string, event_ts timestamp"


def at(hours: float, ms: int = 0) -> datetime:
    return T0 + timedelta(hours=hours, milliseconds=ms)


# (user, item, category, type, time)
EVENTS = [
    (2, 99, 100, "view", at(-60)),  # outside the 2-day lookback of (2, 10) at 4 h
    (2, 98, 100, "view", at(-44)),  # exactly 2 days before (2, 10): inside (inclusive edge)
    (2, 10, 100, "buy", at(-1)),  # buy before any view of (2, 10): not an example
    (1, 10, 100, "view", at(0)),  # example A
    (1, 11, 100, "fav", at(1)),  # at the very time of the view: a signal (at or after)
    (1, 11, 100, "view", at(1)),  # example B
    (1, 10, 100, "view", at(2)),  # A's revisit
    (1, 10, 100, "cart", at(3)),  # A's cart
    (2, 10, 100, "view", at(4)),  # example C (its buy at -1 came first)
    (1, 10, 100, "buy", at(5)),  # A converts
    (1, 10, 100, "fav", at(6)),  # after A's buy: not a signal
    (1, 10, 100, "cart", at(7)),  # after A's buy
    (3, 12, 200, "buy", at(8)),  # a buy of an item never viewed
    (3, 12, 200, "cart", at(9)),
    (2, 13, 200, "view", at(10, ms=500)),  # example E (sub-second view time)
    (2, 13, 200, "cart", at(11)),
    (2, 13, 200, "fav", at(12)),
    (2, 13, 200, "view", at(13)),
    (3, 10, 100, "view", at(14)),  # example F
    (3, 10, 100, "view", at(15)),
    (3, 10, 100, "fav", at(16)),
    (4, 14, 200, "view", at(20)),  # example G
    (4, 15, 200, "view", at(20)),  # example H
    (1, 11, 100, "view", at(26)),  # B's second view, 25 h after it: outside W
    (1, 11, 100, "buy", at(30)),  # B's buy after W: no conversion
    (5, 10, 100, "view", at(30)),  # example I
    (4, 14, 200, "buy", at(44)),  # exactly view + W: G converts
    (4, 15, 200, "buy", at(44, ms=1)),  # 1 ms after view + W: H does not
]

# (user, item) -> view, revisit, fav, cart, conversion
OUTCOMES = {
    (2, 99): (at(-60), None, None, None, None),
    (2, 98): (at(-44), None, None, None, None),
    (1, 10): (at(0), at(2), None, at(3), at(5)),
    (1, 11): (at(1), None, at(1), None, None),
    (2, 10): (at(4), None, None, None, None),
    (2, 13): (at(10, ms=500), at(13), at(12), at(11), None),
    (3, 10): (at(14), at(15), at(16), None, None),
    (4, 14): (at(20), None, None, None, at(44)),
    (4, 15): (at(20), None, None, None, None),
    (5, 10): (at(30), None, None, None, None),
}
OUTCOME_COLUMNS = ("view_ts", "revisit_ts", "fav_ts", "cart_ts", "conversion_ts")

EXPECTED_SCHEMA = [
    ("example_id", "bigint"),
    ("user_id", "bigint"),
    ("item_id", "bigint"),
    ("category_id", "bigint"),
    ("view_ts", "timestamp"),
    ("view_date", "date"),
    ("revisit_ts", "timestamp"),
    ("fav_ts", "timestamp"),
    ("cart_ts", "timestamp"),
    ("conversion_ts", "timestamp"),
    ("f_user_views", "bigint"),
    ("f_user_buys", "bigint"),
    ("f_user_carts", "bigint"),
    ("f_user_favs", "bigint"),
    ("f_user_recent_views", "bigint"),
    ("f_user_category_views", "bigint"),
    ("f_pair_prior_events", "bigint"),
    ("f_item_views", "bigint"),
    ("f_item_buys", "bigint"),
    ("f_category_views", "bigint"),
    ("f_category_buys", "bigint"),
    ("f_item_conversion_rate", "double"),
]


def events_df(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    return spark.createDataFrame(rows, EVENTS_DDL)


def _utc(value):
    """Collected timestamps are naive local times (PySpark's rule): back to aware UTC."""
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def by_pair(rows) -> dict[tuple[int, int], dict]:
    out = {}
    for row in rows:
        values = {k: _utc(v) for k, v in row.asDict().items()}
        key = (values["user_id"], values["item_id"])
        assert key not in out, f"two examples for {key}"
        out[key] = values
    return out


@pytest.fixture(scope="module")
def built(spark: SparkSession) -> DataFrame:
    """The examples of ``EVENTS``, computed once and kept as a small local DataFrame."""
    examples = build_examples(events_df(spark, EVENTS), SETTINGS)
    return spark.createDataFrame(examples.collect(), examples.schema)


@pytest.fixture(scope="module")
def examples(built: DataFrame) -> dict[tuple[int, int], dict]:
    return by_pair(built.collect())


def test_examples_have_exactly_the_contract_columns(built):
    assert [(f.name, f.dataType.simpleString()) for f in built.schema.fields] == EXPECTED_SCHEMA
    assert tuple(built.columns) == EXAMPLE_COLUMNS
    assert [c for c in built.columns if c.startswith("f_")] == list(FEATURE_COLUMNS)


def test_first_view_is_the_example_with_signals_and_conversion_in_window(examples):
    assert set(examples) == set(OUTCOMES)
    got = {pair: tuple(row[c] for c in OUTCOME_COLUMNS) for pair, row in examples.items()}
    assert got == OUTCOMES
    assert {pair: row["category_id"] for pair, row in examples.items()} == {
        pair: 200 if pair[1] in (12, 13, 14, 15) else 100 for pair in OUTCOMES
    }


def test_view_date_is_the_utc_date_and_example_id_is_stable(spark, examples):
    dates = {pair: row["view_date"].isoformat() for pair, row in examples.items()}
    assert dates[(2, 99)] == "2026-01-07"
    assert dates[(2, 98)] == "2026-01-08"
    assert dates[(5, 10)] == "2026-01-11"
    assert {dates[p] for p in OUTCOMES if p not in {(2, 99), (2, 98), (5, 10)}} == {"2026-01-10"}
    ids = {pair: row["example_id"] for pair, row in examples.items()}
    assert len(set(ids.values())) == len(ids)
    reordered = build_examples(events_df(spark, list(reversed(EVENTS))), SETTINGS)
    assert {(r["user_id"], r["item_id"]): r["example_id"] for r in reordered.collect()} == ids


def test_buys_without_a_prior_view_are_not_examples_and_are_listed(spark, examples):
    orphans = buys_without_prior_view(events_df(spark, EVENTS)).collect()
    assert sorted((r["user_id"], r["item_id"], _utc(r["event_ts"])) for r in orphans) == [
        (2, 10, at(-1)),
        (3, 12, at(8)),
    ]
    assert (3, 12) not in examples, "a buy with no view is no example"
    assert examples[(2, 10)]["conversion_ts"] is None, "the earlier buy does not convert C"


def features(row: dict) -> dict:
    return {c.removeprefix("f_"): row[c] for c in FEATURE_COLUMNS}


def test_features_equal_hand_counts(examples):
    # C: window [-44 h, 4 h): the -44 h view is in, the -60 h view is out (also of C's category
    # by C's user); C's user bought C's item at -1 h, before the first view: a prior event.
    assert features(examples[(2, 10)]) == {
        "user_views": 1,
        "user_buys": 1,
        "user_carts": 0,
        "user_favs": 0,
        "user_recent_views": 0,
        "user_category_views": 1,
        "pair_prior_events": 1,
        "item_views": 2,
        "item_buys": 1,
        "category_views": 4,
        "category_buys": 1,
        "item_conversion_rate": 0.0,
    }
    # B: the fav and the view at B's own instant are not "strictly before"; A's view 1 h before
    # is a recent view (the hour is [t - 1 h, t)) and one of B's category.
    assert features(examples[(1, 11)]) == {
        "user_views": 1,
        "user_buys": 0,
        "user_carts": 0,
        "user_favs": 0,
        "user_recent_views": 1,
        "user_category_views": 1,
        "pair_prior_events": 0,
        "item_views": 0,
        "item_buys": 0,
        "category_views": 2,
        "category_buys": 1,
        "item_conversion_rate": 0.0,
    }
    # E: view at 10:00:00.5, so the -44 h view is 0.5 s outside its lookback.
    assert features(examples[(2, 13)]) == {
        "user_views": 1,
        "user_buys": 1,
        "user_carts": 0,
        "user_favs": 0,
        "user_recent_views": 0,
        "user_category_views": 0,
        "pair_prior_events": 0,
        "item_views": 0,
        "item_buys": 0,
        "category_views": 0,
        "category_buys": 1,
        "item_conversion_rate": 0.0,
    }
    # F: window [-34 h, 14 h).
    assert features(examples[(3, 10)]) == {
        "user_views": 0,
        "user_buys": 1,
        "user_carts": 1,
        "user_favs": 0,
        "user_recent_views": 0,
        "user_category_views": 0,
        "pair_prior_events": 0,
        "item_views": 3,
        "item_buys": 2,
        "category_views": 4,
        "category_buys": 2,
        "item_conversion_rate": 0.0,
    }
    # I: window [-18 h, 30 h); the buy at 30 h is not before it. Item i10's examples whose window
    # closed before 30 h: A (converted) and C (not); F (14 h + W = 38 h) is not final yet.
    assert features(examples[(5, 10)]) == {
        "user_views": 0,
        "user_buys": 0,
        "user_carts": 0,
        "user_favs": 0,
        "user_recent_views": 0,
        "user_category_views": 0,
        "pair_prior_events": 0,
        "item_views": 5,
        "item_buys": 2,
        "category_views": 7,
        "category_buys": 2,
        "item_conversion_rate": 0.5,
    }


def test_no_leakage_features_ignore_events_at_or_after_the_view(spark):
    split = at(15)
    past = [e for e in EVENTS if e[4] < split]
    future = [
        # at F's own view instant, then just after it, on F's user, item and category
        (3, 10, 100, "buy", at(14)),
        (3, 77, 100, "cart", at(14)),
        (9, 10, 100, "view", at(14)),
        (9, 10, 100, "buy", at(14, ms=1)),
        (1, 10, 100, "view", at(14, ms=1)),
        *[e for e in EVENTS if e[4] >= split],
        *[(u, 10, 100, kind, at(40 + u)) for u in range(1, 6) for kind in ("view", "buy")],
    ]
    earlier = {p for p, outcome in OUTCOMES.items() if outcome[0] <= at(14)}

    def f_columns(rows: list[tuple]) -> dict:
        built = by_pair(build_examples(events_df(spark, rows), SETTINGS).collect())
        return {p: (row["example_id"], features(row)) for p, row in built.items()}

    before, after = f_columns(past), f_columns(past + future)
    assert set(before) == earlier
    assert set(after) > earlier, "the future events add examples of their own"
    assert {p: after[p] for p in earlier} == before


def labels_at(examples_df: DataFrame, cutoff: datetime) -> dict:
    rows = at_cutoff(examples_df, cutoff, W_HOURS).select(
        "user_id", "item_id", "observed_label", "elapsed_s", "signal_state", "mature", true_label()
    )
    return {
        (r["user_id"], r["item_id"]): (
            r["observed_label"],
            r["elapsed_s"],
            r["signal_state"],
            r["mature"],
            r["true_label"],
        )
        for r in rows.collect()
    }


@pytest.mark.parametrize(
    ("cutoff", "expected"),
    [
        # (observed label, elapsed seconds, signal state, mature, true label) of A
        (at(2), (0, 7200.0, "revisit", False, 1)),
        (at(4), (0, 14400.0, "cart", False, 1)),
        (at(5), (1, 18000.0, "cart", False, 1)),
        (at(24, ms=-1), (1, 86399.999, "cart", False, 1)),
        (at(24), (1, 86400.0, "cart", True, 1)),
    ],
)
def test_labels_of_a_converting_example_at_cutoffs(built, cutoff, expected):
    assert labels_at(built, cutoff)[(1, 10)] == expected


def test_only_examples_viewed_by_the_cutoff_are_examples_at_it(built):
    assert set(labels_at(built, at(-0.5))) == {(2, 99), (2, 98)}
    assert set(labels_at(built, at(0))) == {(2, 99), (2, 98), (1, 10)}
    assert labels_at(built, at(0))[(1, 10)] == (0, 0.0, "none", False, 1)
    assert set(labels_at(built, at(44))) == set(OUTCOMES)


def test_delayed_positive_and_maturity_at_the_window_edge(built):
    assert labels_at(built, at(43))[(4, 14)] == (0, 82800.0, "none", False, 1)
    assert labels_at(built, at(44))[(4, 14)] == (1, 86400.0, "none", True, 1)
    edge = labels_at(built, at(44, ms=1))
    assert edge[(4, 15)] == (0, 86400.001, "none", True, 0)
    assert edge[(1, 11)][0] == 0 and edge[(1, 11)][4] == 0, "a buy after W is no label"
    assert labels_at(built, at(11))[(2, 13)][1] == 3599.5


@pytest.mark.parametrize(
    ("pair", "cutoff", "state"),
    [
        ((2, 13), at(10, ms=600), "none"),
        ((1, 11), at(1), "fav"),  # inclusive: seen at the cutoff instant
        ((1, 10), at(2), "revisit"),
        ((3, 10), at(15), "revisit"),
        ((3, 10), at(16), "fav"),  # fav beats revisit
        ((2, 13), at(11), "cart"),
        ((2, 13), at(12), "cart"),  # cart beats a later fav
        ((2, 13), at(13), "cart"),  # and a later revisit
        ((1, 10), at(6), "cart"),  # the fav after the buy is no signal
    ],
)
def test_signal_state_is_the_strongest_seen(built, pair, cutoff, state):
    assert labels_at(built, cutoff)[pair][2] == state


def test_cutoff_must_carry_a_time_zone(built):
    with pytest.raises(ValueError, match="timezone-aware"):
        at_cutoff(built, datetime(2026, 1, 11), W_HOURS)


def test_wrong_schema_and_null_times_are_clear_errors(spark):
    text_ts = spark.createDataFrame(
        [(1, 2, 3, "view", "2026-01-10T00:00:00Z")],
        "user_id long, item_id long, category_id long, event_type string, event_ts string",
    )
    with pytest.raises(ExamplesInputError, match="event_ts is string, expected timestamp"):
        build_examples(text_ts, SETTINGS)
    with pytest.raises(ExamplesInputError, match="missing column category_id"):
        build_examples(events_df(spark, EVENTS).drop("category_id"), SETTINGS)
    nulls = events_df(spark, [(1, 2, 3, "view", at(0)), (1, 2, 3, "buy", None)])
    with pytest.raises(Exception, match="events.event_ts is null"):
        build_examples(nulls, SETTINGS).collect()


def _table_rows(spark: SparkSession, path: str, version: int | None = None) -> list:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path).select(*EXAMPLE_COLUMNS).orderBy("example_id").collect()


def test_write_replaces_the_table_idempotently(spark, built, tmp_path: Path):
    path = str(tmp_path / "examples")
    write_examples(spark, built, path)
    write_examples(spark, built, path)

    expected = built.orderBy("example_id").collect()
    assert _table_rows(spark, path, 0) == expected
    assert _table_rows(spark, path) == expected
    table = DeltaTable.forPath(spark, path)
    history = table.history().orderBy("version").collect()
    assert [(h["version"], h["operation"]) for h in history] == [(0, "WRITE"), (1, "WRITE")]
    assert {h["operationParameters"]["mode"] for h in history} == {"Overwrite"}
    assert table.detail().head()["partitionColumns"] == ["view_date"]


def test_stage_reads_events_writes_examples_and_reports_counts(
    spark, data_root: Path, built, caplog
):
    cfg = make_test_config(
        data_root / "examples_stage",
        f"feedback.attribution_window_hours={W_HOURS}",
        "feedback.feature_lookback_days=2",
    )
    events = events_df(spark, EVENTS).select(
        "*", F.to_date("event_ts").alias("event_date"), F.lit("test").alias("source")
    )
    events.write.format("delta").partitionBy("event_date").save(cfg.table_path("events"))
    logger = logging.getLogger("recbatch.feedback.examples")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            counts = examples_stage(spark, cfg)
    finally:
        logger.removeHandler(caplog.handler)

    assert counts == {
        "examples": 10,
        "converted": 2,
        "with_revisit": 3,
        "with_fav": 3,
        "with_cart": 2,
        "buys_without_prior_view": 2,
        "rows_written": 10,
    }
    assert "2 buys without a prior view" in caplog.text
    assert _table_rows(spark, cfg.table_path("examples")) == built.orderBy("example_id").collect()


def test_stage_without_an_events_table_is_a_clear_error(spark, data_root: Path):
    cfg = make_test_config(data_root / "examples_no_events")
    with pytest.raises(ExamplesInputError, match="no events table .* run ingest_events"):
        examples_stage(spark, cfg)


def test_string_ids_give_the_same_examples_as_integer_ids(spark, examples):
    """``ingest.ids=string``: the ids are only keys, so text ids ("B00000007") build the same
    examples, features and labels (all but ``example_id``, a hash of the ids)."""

    def text(x: int) -> str:
        return f"B{x:08d}"

    rows = [(text(u), text(i), text(c), kind, ts) for u, i, c, kind, ts in EVENTS]
    ddl = EVENTS_DDL.replace("long", "string")
    built = by_pair(build_examples(spark.createDataFrame(rows, ddl), SETTINGS).collect())
    assert set(built) == {(text(u), text(i)) for u, i in examples}
    for (u, i), row in examples.items():
        other = built[(text(u), text(i))]
        assert other["category_id"] == text(row["category_id"])
        same = [c for c in EXAMPLE_COLUMNS if not c.endswith("_id")]
        assert {c: other[c] for c in same} == {c: row[c] for c in same}

    mixed = spark.createDataFrame(
        [(text(u), i, c, kind, ts) for u, i, c, kind, ts in EVENTS],
        "user_id string, item_id long, category_id long, event_type string, event_ts timestamp",
    )
    with pytest.raises(
        ExamplesInputError, match="user_id is string, expected bigint.*or the three ids all string"
    ):
        build_examples(mixed, SETTINGS)
