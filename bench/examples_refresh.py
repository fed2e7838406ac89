"""Nightly refresh of ``examples``: the incremental path against a full rebuild, on a long log.

    .venv/bin/python bench/examples_refresh.py [--days 120] [--users-per-day 830]
        [--work-dir DIR] [--config FILE] [--set key=value ...] [--keep]

A generated log of ``--days`` days (``n_users = days x users_per_day``, so the density per day is
the default config's: 25k users over 30 days). Setup (not timed as a refresh): the observed events
are generated, all days but the last go into a Delta ``events`` table with the change data feed
on, and ``examples_stage`` builds the examples in full. Then, each timed:

1. ``incremental``: the last day is inserted into ``events`` and ``examples_stage`` refreshes the
   examples (feedback/refresh.py decides the span);
2. ``full``: the same state rebuilt with ``feedback.examples_refresh=full``.

The two results are compared row for row (they must be equal). Timings are wall clock on a shared
machine: other Spark jobs compete for the same cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from pyspark.sql import functions as F  # noqa: E402

from recbatch.config import load_config  # noqa: E402
from recbatch.events.generator import build_catalog, observed_events, simulate_views  # noqa: E402
from recbatch.events.validate import EVENT_KEY  # noqa: E402
from recbatch.feedback.examples import examples_stage  # noqa: E402
from recbatch.feedback.refresh import plan_examples_refresh  # noqa: E402
from recbatch.io.delta import enable_change_data_feed, merge_new_rows, table_version  # noqa: E402
from recbatch.log import configure_logging  # noqa: E402
from recbatch.session import build_session  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=120, help="days of generated events")
    parser.add_argument("--users-per-day", type=float, default=25_000 / 30)
    parser.add_argument("--work-dir", help="default <paths.data_root>/bench/examples_refresh")
    parser.add_argument("--config", help="YAML config (default conf/local.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--keep", action="store_true", help="keep the generated data and tables")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def timed(label: str, fn):
    start = time.monotonic()
    result = fn()
    seconds = time.monotonic() - start
    print(f"  {label}: {seconds:.1f}s", flush=True)
    return result, seconds


def main(argv=None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level)
    base = load_config(args.config, args.overrides)
    work = Path(args.work_dir or Path(base.path("data_root")) / "bench" / "examples_refresh")
    settings = [
        *args.overrides,
        f"paths.data_root={work}",
        f"generator.days={args.days}",
        f"generator.n_users={round(args.days * args.users_per_day)}",
    ]
    cfg = load_config(args.config, settings)
    full_cfg = load_config(args.config, [*settings, "feedback.examples_refresh=full"])
    shutil.rmtree(work, ignore_errors=True)  # the tables are created fresh
    spark = build_session(cfg)
    events_path, examples_path = cfg.table_path("events"), cfg.table_path("examples")
    print(
        f"examples refresh bench: {args.days} days, {cfg.generator.n_users} users, "
        f"W = {cfg.feedback.attribution_window_hours:g} h, L = {cfg.feedback.feature_lookback_days}"
        f" d, on {spark.sparkContext.master}; data under {work}",
        flush=True,
    )

    def generate() -> None:
        views = simulate_views(spark, cfg.generator, build_catalog(cfg.generator))
        events = observed_events(views, cfg.generator).select(
            F.col("user_id").cast("long"),
            F.col("item_id").cast("long"),
            F.col("category_id").cast("long"),
            F.col("event_type").cast("string"),
            F.col("event_ts").cast("timestamp"),
        )
        events = events.withColumn("event_date", F.to_date("event_ts"))
        events.withColumn("source", F.lit("bench")).write.mode("overwrite").parquet(
            str(work / "raw")
        )

    timed("setup: generate events (Parquet)", generate)
    raw = spark.read.parquet(str(work / "raw"))
    last_day = raw.agg(F.max("event_date")).head()[0]
    history, new_day = (
        raw.where(F.col("event_date") < last_day),
        raw.where(F.col("event_date") == last_day),
    )
    print(f"  {raw.count()} events; the new day {last_day}: {new_day.count()} events", flush=True)

    def load_history() -> None:
        merge_new_rows(spark, history, events_path, EVENT_KEY, ("event_date",))
        enable_change_data_feed(spark, events_path)
        examples_stage(spark, cfg)

    timed(f"setup: events before {last_day} + full examples build", load_history)
    before = spark.read.format("delta").load(examples_path).count()

    merge_new_rows(spark, new_day, events_path, EVENT_KEY, ("event_date",))
    plan = plan_examples_refresh(spark, events_path, examples_path, cfg.feedback)
    print(f"  plan: {plan.describe()}", flush=True)
    incremental, inc_s = timed("incremental refresh", lambda: examples_stage(spark, cfg))
    inc_version = table_version(spark, examples_path)
    full, full_s = timed("full rebuild", lambda: examples_stage(spark, full_cfg))

    after_inc = spark.read.format("delta").option("versionAsOf", inc_version).load(examples_path)
    after_full = spark.read.format("delta").load(examples_path)
    differing = after_inc.exceptAll(after_full).count() + after_full.exceptAll(after_inc).count()
    span = (
        f"view days from {plan.start:%Y-%m-%d}, events from "
        f"{plan.start - timedelta(days=cfg.feedback.feature_lookback_days):%Y-%m-%d}"
        if plan.start
        else "everything"
    )
    print(
        f"\n{'refresh':12s} {'seconds':>8s} {'rows written':>13s} {'examples':>9s}\n"
        f"{'incremental':12s} {inc_s:8.1f} {incremental['rows_written']:13d} "
        f"{incremental['examples']:9d}   ({span})\n"
        f"{'full':12s} {full_s:8.1f} {full['rows_written']:13d} {full['examples']:9d}\n"
        f"examples before the new day: {before}; rows differing between the two results: "
        f"{differing} (must be 0); speed-up {full_s / inc_s:.2f}x"
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
