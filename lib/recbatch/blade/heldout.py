"""The held-out edges an evaluation ranks, each with its sampled negative targets.

Two sources, one shape (``evaluate.HELD_OUT_COLUMNS``):

* ``held_out_from_graph``: the run's own split (``graph_edges.split`` = test or val). Negatives
  are drawn on the cluster: for edge e and draw i, w = xxhash64(seed, e, i) mod n, kept when
  w != u and (u, w) is an edge in no split, first ``negatives`` distinct draws in draw order
  (uniform without replacement among admissible targets, reproducible from the seed);
* ``held_out_from_linkpred``: a split folder written by ``../shared/linkpred/split.py`` (its
  ``test.tsv``, ``test_neg.npy`` and the full edge set), so the project's evaluation can be
  checked against that referee on exactly the same edges and negatives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recbatch.io.index import with_row_index


def one_way_flags(held_out: DataFrame, all_edges: DataFrame) -> DataFrame:
    """``held_out`` with ``one_way``: its reverse is an edge in no split."""
    reverse = all_edges.select(
        F.col("dst_index").alias("src_index"),
        F.col("src_index").alias("dst_index"),
        F.lit(True).alias("_reverse_is_edge"),
    ).distinct()
    return (
        held_out.join(reverse, ["src_index", "dst_index"], "left")
        .withColumn("one_way", F.col("_reverse_is_edge").isNull())
        .drop("_reverse_is_edge")
    )


def draws_for(negatives: int, num_nodes: int) -> int:
    """Draws (with replacement, from ``num_nodes``) that give ``negatives`` distinct admissible
    targets with room to spare: ``n (1 - exp(-D / n))`` distinct values are expected from D
    draws, so D is solved for 15% + 16 more than asked (a graph with fewer nodes than that gets
    4n draws: nearly every node)."""
    wanted = negatives * 1.15 + 16
    if wanted >= num_nodes:
        return 4 * num_nodes
    return int(np.ceil(-num_nodes * np.log1p(-wanted / num_nodes)))


def sample_negatives(
    held_out: DataFrame, all_edges: DataFrame, num_nodes: int, negatives: int, seed: int
) -> DataFrame:
    """``edge_id``, ``negatives`` (array<long>): up to ``negatives`` admissible targets per edge."""
    draws = draws_for(negatives, num_nodes)
    drawn = (
        held_out.select("edge_id", "src_index")
        .withColumn("draw", F.explode(F.sequence(F.lit(0), F.lit(draws - 1))))
        .withColumn(
            "w", F.pmod(F.xxhash64(F.lit(seed), F.col("edge_id"), F.col("draw")), F.lit(num_nodes))
        )
    )
    edges = all_edges.select(F.col("src_index"), F.col("dst_index").alias("w")).distinct()
    admissible = drawn.where(F.col("w") != F.col("src_index")).join(
        edges, ["src_index", "w"], "left_anti"
    )
    first = admissible.groupBy("edge_id", "w").agg(F.min("draw").alias("draw"))
    ordered = first.groupBy("edge_id").agg(
        F.array_sort(F.collect_list(F.struct("draw", "w"))).alias("picks")
    )
    return ordered.select(
        "edge_id",
        F.transform(F.slice("picks", 1, negatives), lambda p: p["w"]).alias("negatives"),
    )


def held_out_from_graph(
    edges: DataFrame, split: str, num_nodes: int, negatives: int, seed: int
) -> DataFrame:
    """The ``split`` edges of a ``graph_edges`` frame with one-way flags and negatives."""
    chosen = edges.where(F.col("split") == split).select("src_index", "dst_index")
    indexed = with_row_index(chosen, ["src_index", "dst_index"], "edge_id")
    flagged = one_way_flags(indexed, edges)
    sampled = sample_negatives(indexed, edges, num_nodes, negatives, seed)
    return flagged.join(sampled, "edge_id", "left").withColumn(
        "negatives", F.coalesce("negatives", F.array().cast("array<long>"))
    )


def _tsv_edges(path: Path) -> np.ndarray:
    return pd.read_csv(path, sep="\t", dtype=np.int64)[["src", "dst"]].to_numpy()


def held_out_from_linkpred(
    spark: SparkSession,
    folder: str,
    which: str = "test",
    *,
    negatives: int | None = None,
    seed: int = 0,
) -> DataFrame:
    """A linkpred split's held-out edges (ids = its 0..N-1 ids), negatives and one-way flags.

    ``negatives`` None: the split's own sampled targets (``<which>_neg.npy``: 1000 per test
    edge, but only 100 per val edge); a number: that many drawn as ``held_out_from_graph`` draws
    them (against every edge of the split), so val edges can be ranked as test edges are."""
    root = Path(folder)
    held = _tsv_edges(root / f"{which}.tsv")
    all_edges = np.concatenate([_tsv_edges(root / f"{s}.tsv") for s in ("train", "val", "test")])
    n = int(all_edges.max()) + 1
    if negatives is not None:
        return _with_drawn_negatives(spark, held, all_edges, n, negatives, seed)
    negatives_drawn = np.load(root / f"{which}_neg.npy").astype(np.int64)
    keys = np.sort(all_edges[:, 0] * n + all_edges[:, 1])
    reverse = held[:, 1] * n + held[:, 0]
    hit = np.minimum(np.searchsorted(keys, reverse), len(keys) - 1)
    frame = pd.DataFrame(
        {
            "edge_id": np.arange(len(held), dtype=np.int64),
            "src_index": held[:, 0],
            "dst_index": held[:, 1],
            "one_way": keys[hit] != reverse,
            "negatives": [row[row >= 0] for row in negatives_drawn],
        }
    )
    return spark.createDataFrame(
        frame,
        "edge_id long, src_index long, dst_index long, one_way boolean, negatives array<long>",
    )


def _with_drawn_negatives(
    spark: SparkSession,
    held: np.ndarray,
    all_edges: np.ndarray,
    num_nodes: int,
    negatives: int,
    seed: int,
) -> DataFrame:
    schema = "src_index long, dst_index long"
    edges = spark.createDataFrame(
        pd.DataFrame(all_edges, columns=["src_index", "dst_index"]), schema
    )
    chosen = spark.createDataFrame(
        pd.DataFrame(held, columns=["src_index", "dst_index"]).assign(
            edge_id=np.arange(len(held), dtype=np.int64)
        ),
        schema + ", edge_id long",
    )
    sampled = sample_negatives(chosen, edges, num_nodes, negatives, seed)
    return (
        one_way_flags(chosen, edges)
        .join(sampled, "edge_id", "left")
        .withColumn("negatives", F.coalesce("negatives", F.array().cast("array<long>")))
        .select("edge_id", "src_index", "dst_index", "one_way", "negatives")
    )
