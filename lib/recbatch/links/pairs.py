"""Labelled pairs: held-out edges against sampled non-edge targets of the same source.

``labelled_pairs`` is what the link thresholds are fitted, certified and evaluated on; ``fit_pairs``
is the bounded sample of *training* edges the scorer's heads are fitted on. Both draw negatives
with ``recbatch.blade.heldout.sample_negatives`` (targets w != u with (u, w) an edge in no split,
reproducible from the seed), so a negative is never a known edge of any split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recbatch.blade.heldout import sample_negatives
from recbatch.io.index import with_row_index

PAIR_COLUMNS = ("pair_id", "src_index", "dst_index", "label")


def _with_negatives(
    chosen: DataFrame, edges: DataFrame, num_nodes: int, negatives: int, seed: int
) -> DataFrame:
    """``PAIR_COLUMNS``: each chosen edge (label 1, pair ``edge_id * (1 + r)``) and its sampled
    negatives (label 0, pairs ``edge_id * (1 + r) + j``)."""
    indexed = with_row_index(chosen, ["src_index", "dst_index"], "edge_id")
    sampled = sample_negatives(indexed, edges, num_nodes, negatives, seed)
    stride = F.lit(negatives + 1)
    positives = indexed.select(
        (F.col("edge_id") * stride).alias("pair_id"),
        "src_index",
        "dst_index",
        F.lit(1).alias("label"),
    )
    drawn = (
        indexed.join(sampled, "edge_id")
        .select("edge_id", "src_index", F.posexplode("negatives").alias("j", "dst_index"))
        .select(
            (F.col("edge_id") * stride + F.col("j") + 1).alias("pair_id"),
            "src_index",
            "dst_index",
            F.lit(0).alias("label"),
        )
    )
    return positives.unionByName(drawn)


def labelled_pairs(
    edges: DataFrame, splits: list[str], num_nodes: int, negatives: int, seed: int
) -> DataFrame:
    """The held-out edges of ``splits`` in ``graph_edges`` and their negatives."""
    chosen = edges.where(F.col("split").isin(*splits)).select("src_index", "dst_index")
    return _with_negatives(chosen, edges, num_nodes, negatives, seed)


def fit_pairs(
    edges: DataFrame, max_edges: int, num_nodes: int, negatives: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_edges`` training edges (a seeded hash sample) and their negatives, on the
    driver: ``[rows, 2]`` node-index pairs and their labels."""
    train = edges.where(F.col("split") == "train").select("src_index", "dst_index")
    sample = train.orderBy(F.xxhash64(F.lit(seed), "src_index", "dst_index")).limit(max_edges)
    pairs: pd.DataFrame = _with_negatives(sample, edges, num_nodes, negatives, seed).toPandas()
    pairs = pairs.sort_values("pair_id")
    return pairs[["src_index", "dst_index"]].to_numpy(np.int64), pairs["label"].to_numpy(np.int64)
