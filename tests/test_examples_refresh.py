"""Incremental refresh of ``examples``: after new events (in order, or late), the table equals a
full rebuild row for row, and only the days the new events can change were rewritten."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from conftest import make_test_config
from delta.tables import DeltaTable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recbatch.config import RecbatchConfig
from recbatch.feedback.examples import EXAMPLE_COLUMNS, build_examples, examples_stage
from recbatch.feedback.refresh import plan_examples_refresh
from recbatch.io.delta import enable_change_data_feed, merge_new_rows, table_version

W_HOURS, L_DAYS = 24, 3
SPLIT = datetime(2026, 1, 20, tzinfo=UTC)
EVENT_KEY = ["user_id", "item_id", "event_type", "event_ts"]


@pytest.fixture(scope="module")
def source_events(spark, small_log_cfg: RecbatchConfig) -> DataFrame:
    """The small generated log (600 users, 30 days from 2026-01-01), ingested."""
    return spark.read.format("delta").load(small_log_cfg.table_path("events"))


@pytest.fixture(scope="module")
def refresh_cfg(data_root) -> RecbatchConfig:
    return make_test_config(
        data_root / "examples_refresh",
        f"feedback.attribution_window_hours={W_HOURS}",
        f"feedback.feature_lookback_days={L_DAYS}",
    )


def insert_events(spark, cfg: RecbatchConfig, rows: DataFrame) -> int:
    path = cfg.table_path("events")
    inserted = merge_new_rows(spark, rows, path, EVENT_KEY, ("event_date",))
    enable_change_data_feed(spark, path)
    return inserted


def plan(spark, cfg: RecbatchConfig):
    return plan_examples_refresh(
        spark, cfg.table_path("events"), cfg.table_path("examples"), cfg.feedback
    )


def assert_equals_full_rebuild(spark, cfg: RecbatchConfig) -> None:
    table = spark.read.format("delta").load(cfg.table_path("examples"))
    events = spark.read.format("delta").load(cfg.table_path("events"))
    full = build_examples(events, cfg.feedback).select(*EXAMPLE_COLUMNS)
    assert table.columns == list(EXAMPLE_COLUMNS)
    assert table.count() == full.count()
    assert table.exceptAll(full).count() == 0
    assert full.exceptAll(table).count() == 0


def last_commit(spark, cfg: RecbatchConfig):
    return DeltaTable.forPath(spark, cfg.table_path("examples")).history(1).head()


def test_new_days_late_events_and_no_change(spark, refresh_cfg, source_events) -> None:
    cfg = refresh_cfg
    early = source_events.where(F.col("event_ts") < F.lit(SPLIT))
    late = source_events.where(F.col("event_ts") >= F.lit(SPLIT))
    insert_events(spark, cfg, early)
    assert plan(spark, cfg).mode == "full"  # no examples table yet
    first = examples_stage(spark, cfg)
    assert first["rows_written"] == first["examples"] > 0
    assert_equals_full_rebuild(spark, cfg)

    # The next days arrive in order: only views from SPLIT - W on (whole days) are rebuilt.
    insert_events(spark, cfg, late)
    step = plan(spark, cfg)
    assert (step.mode, step.start) == ("incremental", datetime(2026, 1, 19, tzinfo=UTC))
    second = examples_stage(spark, cfg)
    commit = last_commit(spark, cfg)
    assert commit["operationParameters"]["predicate"] == "view_date >= '2026-01-19'"
    assert 0 < second["rows_written"] < second["examples"]
    assert_equals_full_rebuild(spark, cfg)

    # A late event: a view of an existing pair one hour before its first view, and a buy
    # after it. The pair's example moves; the refreshed span starts a day before the event.
    pair = (
        spark.read.format("delta")
        .load(cfg.table_path("examples"))
        .where(F.to_date("view_ts") == "2026-01-12")
        .orderBy("example_id")
        .head()
    )
    moved_view = pair["view_ts"].replace(tzinfo=None)
    late_rows = source_events.where(
        (F.col("user_id") == pair["user_id"]) & (F.col("item_id") == pair["item_id"])
    ).limit(1)
    shifted = late_rows.select(
        "user_id",
        "item_id",
        "category_id",
        F.lit("view").alias("event_type"),
        (F.lit(moved_view).cast("timestamp") - F.expr("INTERVAL 1 HOUR")).alias("event_ts"),
        F.lit(None).cast("date").alias("event_date"),
        F.lit("late-file").alias("source"),
    ).withColumn("event_date", F.to_date("event_ts"))
    bought = shifted.withColumn("event_type", F.lit("buy")).withColumn(
        "event_ts", F.col("event_ts") + F.expr("INTERVAL 30 MINUTES")
    )
    assert (
        insert_events(spark, cfg, shifted.unionByName(bought).select(*source_events.columns)) == 2
    )
    step = plan(spark, cfg)
    assert step.mode == "incremental" and step.start.date().isoformat() <= "2026-01-11"
    examples_stage(spark, cfg)
    assert_equals_full_rebuild(spark, cfg)

    # Nothing new: nothing rewritten.
    version = table_version(spark, cfg.table_path("examples"))
    again = examples_stage(spark, cfg)
    assert again["rows_written"] == 0 and plan(spark, cfg).mode == "current"
    assert table_version(spark, cfg.table_path("examples")) == version


def test_changed_settings_or_missing_change_feed_rebuild_everything(
    spark, data_root, source_events
) -> None:
    cfg = make_test_config(
        data_root / "examples_refresh_full",
        f"feedback.attribution_window_hours={W_HOURS}",
        f"feedback.feature_lookback_days={L_DAYS}",
    )
    insert_events(spark, cfg, source_events.where(F.col("event_ts") < F.lit(SPLIT)))
    examples_stage(spark, cfg)
    longer = make_test_config(
        cfg.path("data_root"),
        f"feedback.attribution_window_hours={2 * W_HOURS}",
        f"feedback.feature_lookback_days={L_DAYS}",
    )
    step = plan(spark, longer)
    assert step.mode == "full" and "W, L or the recent-activity span changed" in step.reason

    path = cfg.table_path("events")
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES (delta.enableChangeDataFeed = false)")
    merge_new_rows(spark, source_events.where(F.col("event_ts") >= F.lit(SPLIT)), path, EVENT_KEY)
    step = plan(spark, cfg)
    assert step.mode == "full" and "no change data feed" in step.reason, step.reason
    enable_change_data_feed(spark, path)
    examples_stage(spark, cfg)
    assert_equals_full_rebuild(spark, cfg)
    assert plan(spark, cfg).mode == "current"
