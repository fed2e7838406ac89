"""The degree-law table of a directed graph: budget and filled slots per degree bucket and role.

    .venv/bin/python bench/degree_law.py                          # wiki_vote_edges.tsv, random split
    .venv/bin/python bench/degree_law.py --graph ../shared/data/cora_ml_edges.tsv --law constant

Runs the real ``graph`` and ``samples`` stages (GraphFrames statistics, the connected 80/5/15
split, the sampler on training edges) under ``var/bench/degree_law/`` and prints, per role and
degree bucket of the training graph: nodes, the law's budget, and the mean filled slots per hop.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_test_config  # noqa: E402

from recbatch.config import PROJECT_ROOT  # noqa: E402
from recbatch.graph.stage import graph_stage, samples_stage  # noqa: E402
from recbatch.log import configure_logging  # noqa: E402
from recbatch.session import build_session  # noqa: E402

BUCKETS = [(0, 0), (1, 1), (2, 3), (4, 7), (8, 15), (16, 63), (64, 255), (256, 10**9)]


def bucket_column() -> F.Column:
    expr = None
    for lo, hi in BUCKETS:
        label = f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi < 10**9 else f"{lo}+")
        cond = (F.col("degree") >= lo) & (F.col("degree") <= hi)
        expr = F.when(cond, F.lit(label)) if expr is None else expr.when(cond, F.lit(label))
    return expr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--graph", default=str(PROJECT_ROOT.parent / "shared/data/wiki_vote_edges.tsv")
    )
    parser.add_argument("--law", default="power", choices=["power", "constant"])
    parser.add_argument("--set", action="append", default=[], help="more config overrides")
    args = parser.parse_args()
    configure_logging("INFO")
    root = PROJECT_ROOT / "var" / "bench" / "degree_law" / Path(args.graph).stem
    cfg = make_test_config(
        root,
        "spark.shuffle_partitions=8",
        "spark.driver_memory=6g",
        "graph.source=edge_list",
        f"graph.edge_list_path={args.graph}",
        "graph.split=random",
        f"sampling.law={args.law}",
        *args.set,
    )
    spark = build_session(cfg)
    start = time.monotonic()
    graph = graph_stage(spark, cfg)
    graph_s = time.monotonic() - start
    start = time.monotonic()
    samples_stage(spark, cfg)
    samples_s = time.monotonic() - start
    rows = (
        spark.read.format("delta")
        .load(cfg.table_path("graph_samples"))
        .where(F.col("run_date") == F.lit(cfg.run_date))
        .withColumn("bucket", bucket_column())
        .groupBy("role", "bucket")
        .agg(
            F.count(F.lit(1)).alias("nodes"),
            F.min("degree").alias("d_lo"),
            F.min("budget").alias("budget_min"),
            F.max("budget").alias("budget_max"),
            F.round(F.avg("budget"), 2).alias("budget_mean"),
            *[
                F.round(F.avg(F.col("hop_counts")[h]), 2).alias(f"hop{h + 1}_filled")
                for h in range(cfg.sampling.hops)
            ],
        )
        .orderBy("role", "d_lo")
        .drop("d_lo")
        .toPandas()
    )
    print(
        f"\ngraph {args.graph}: {graph['nodes']} nodes, {graph['edges']} edges, reciprocity "
        f"{graph['reciprocity']:.3f}, alpha out {graph['out_alpha']:.2f} (d>={graph['out_dmin']}) "
        f"in {graph['in_alpha']:.2f} (d>={graph['in_dmin']}); split train/val/test "
        f"{graph['train_edges']}/{graph['val_edges']}/{graph['test_edges']}"
    )
    print(
        f"law {args.law}, k_min {cfg.sampling.k_min}, k_max {cfg.sampling.k_max}, "
        f"{cfg.sampling.hops} hops; graph stage {graph_s:.1f} s, samples stage {samples_s:.1f} s"
    )
    print(rows.to_string(index=False))


if __name__ == "__main__":
    main()
