"""Learned flip probability z against the generator's true z, on the configured generated data.

    .venv/bin/python bench/feedback_truth.py [--config FILE] [--set key=value ...]
                                             [--cutoff ISO] [--run-pipeline]

Reads the Delta ``examples`` table (``paths.tables``) and the generator's ``views`` truth
(``paths.ground_truth``); when they are missing, run ``./spark-submit.sh pipeline`` first (or pass
``--run-pipeline`` to run it in this process). At the cutoff T (``--cutoff``, else
``feedback.cutoff``, else the last ingested event, as the flip stage does) it fits the hazard flip
model and the delay CDF exactly as ``feedback.stage`` does, scores the examples at T, computes
their true z from the truth (``recbatch.feedback.truth``) and prints:

* the table: per (signal state, elapsed bucket) the observed negatives not yet mature at T, mean
  learned z, mean true z (all views of the pair seen by T), mean true z of the first view alone,
  the realized flip rate (from the truth, which keeps buys after the log end), and
  |learned - true|; then per signal state and overall the n-weighted mean |learned - true|;
* where the pairs' conversions come from (first view's own buy / another view seen by T / a view
  after T), over the same rows and over all examples at T;
* "add-to-cart raises z": cart vs no-signal learned and true z, bucket by bucket.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from pyspark.sql import functions as F  # noqa: E402
from pyspark.storagelevel import StorageLevel  # noqa: E402

from recbatch.config import load_config  # noqa: E402
from recbatch.feedback.flip import (  # noqa: E402
    apply_hazard,
    counterfactual_training_set,
    fit_hazard,
    fit_observation,
    observe_at,
)
from recbatch.feedback.stage import snapshot_cutoff  # noqa: E402
from recbatch.feedback.truth import (  # noqa: E402
    conversion_sources,
    flip_calibration_against_truth,
    true_flip_probability,
)
from recbatch.io.delta import is_delta_table  # noqa: E402
from recbatch.log import configure_logging  # noqa: E402
from recbatch.session import build_session  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML config (default conf/local.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--cutoff", help="cutoff T, ISO-8601 with offset (default as the stage)")
    parser.add_argument(
        "--run-pipeline",
        action="store_true",
        help="generate + ingest + examples + flip stage first when the tables are missing",
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def _show(df, title: str, rows: int = 100) -> None:
    print(f"\n== {title}")
    print(df.toPandas().to_string(index=False, float_format=lambda x: f"{x:.5f}"))


def main(argv=None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level)
    cfg = load_config(args.config, args.overrides)
    if cfg.run_date is None:
        cfg = cfg.model_copy(update={"run_date": datetime.now(UTC).date()})
    spark = build_session(cfg)
    examples_path, truth_path = cfg.table_path("examples"), cfg.path("ground_truth") + "/views"
    if not (is_delta_table(spark, examples_path) and Path(truth_path).exists()):
        if not args.run_pipeline:
            sys.exit(
                f"no examples at {examples_path} or no truth at {truth_path}: run "
                "./spark-submit.sh pipeline (or pass --run-pipeline)"
            )
        from recbatch.pipeline import run_pipeline

        run_pipeline(spark, cfg, generate_input=True)

    start = time.monotonic()
    settings = cfg.feedback
    cutoff = (
        datetime.fromisoformat(args.cutoff).astimezone(UTC)
        if args.cutoff
        else snapshot_cutoff(spark, cfg)
    )
    examples = spark.read.format("delta").load(examples_path).persist(StorageLevel.MEMORY_AND_DISK)
    views = spark.read.parquet(truth_path)
    training = counterfactual_training_set(examples, cutoff, settings).persist()
    cells = fit_hazard(training, settings)
    observation = fit_observation(examples, cutoff, settings)
    at_t = observe_at(examples, cutoff, settings)
    scored = apply_hazard(at_t, cells, observation, settings)
    truth = true_flip_probability(at_t, views, settings).persist(StorageLevel.MEMORY_AND_DISK)
    table = flip_calibration_against_truth(scored, truth).persist()

    n_at_t = truth.count()
    unmatched = truth.where(~F.col("truth_matched")).count()
    print(f"cutoff T = {cutoff.isoformat()}  W = {settings.attribution_window_hours:g} h")
    print(f"examples at T: {n_at_t}; without a truth view (join key mismatch): {unmatched}")
    print(
        f"flip model: {training.count()} counterfactual negatives, "
        f"{training.agg(F.sum('true_label')).head()[0]} flips, "
        f"{settings.counterfactual_cutoffs} cutoffs"
    )
    _show(
        table.withColumn(
            "elapsed_bucket",
            F.coalesce(F.col("elapsed_bucket").cast("string"), F.lit("total")),
        ),
        "learned vs true z, observed negatives not yet mature at T "
        "(calibration_error = |learned - true|; totals: n-weighted mean of the cells')",
    )
    totals = table.where(F.col("elapsed_bucket").isNull()).collect()
    print("\ncalibration error (n-weighted mean |learned z - true z| over cells):")
    for r in totals:
        ratio = r["mean_learned_z"] / r["mean_true_z"] if r["mean_true_z"] else float("nan")
        print(
            f"  {r['signal_state']:8s} n={r['n']:6d}  error={r['calibration_error']:.5f}  "
            f"mean learned={r['mean_learned_z']:.5f}  true={r['mean_true_z']:.5f}  "
            f"realized={r['realized_flip_rate']:.5f}  learned/true={ratio:.3f}"
        )

    negatives = truth.where((F.col("observed_label") == 0) & ~F.col("mature"))
    _show(
        conversion_sources(negatives.where(F.col("realized_flip") == 1)),
        "which view's buy converted the immature negatives that flipped after T",
    )
    _show(conversion_sources(truth), "which view's buy is the conversion, all examples at T")

    cart = table.where(
        F.col("elapsed_bucket").isNotNull() & F.col("signal_state").isin("cart", "none")
    )
    wide = (
        cart.groupBy("elapsed_bucket")
        .pivot("signal_state", ["none", "cart"])
        .agg(
            F.first("n").alias("n"),
            F.first("mean_learned_z").alias("learned"),
            F.first("mean_true_z").alias("true"),
        )
        .orderBy("elapsed_bucket")
    )
    _show(wide, "add-to-cart raises z: cart vs no signal, same elapsed bucket")
    cells_wide = (
        cells.where(F.col("signal_state").isin("none", "revisit", "fav", "cart"))
        .groupBy("elapsed_bucket", "bucket_hi_hours")
        .pivot("signal_state", ["none", "revisit", "fav", "cart"])
        .agg(F.first("z"))
        .orderBy("elapsed_bucket")
    )
    _show(cells_wide, "fitted hazard cells z (what every scored row gets)")
    rows = wide.collect()
    both = [r for r in rows if r["none_n"] and r["cart_n"]]
    learned_up = sum(r["cart_learned"] > r["none_learned"] for r in both)
    true_up = sum(r["cart_true"] > r["none_true"] for r in both)
    print(
        f"\nadd-to-cart raises z in {learned_up}/{len(both)} buckets (learned) and "
        f"{true_up}/{len(both)} buckets (true), buckets with both states at T"
    )
    print(f"\n(done in {time.monotonic() - start:.1f}s on {spark.sparkContext.master})")
    for df in (table, truth, training, examples):
        df.unpersist()


if __name__ == "__main__":
    main()
