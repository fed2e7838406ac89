"""Exact top-K targets of every source: blocked matrix multiplies inside ``mapInPandas``.

The score of every (source, target) pair is s_u . t_v, so the exact top K of a block of sources is
one ``[block, d] x [d, n]`` matrix multiply followed by a partial sort per row: no cross join, no
pair ever materialised as a row. The target matrix is broadcast once per executor (``n x d``
float32: 256 MB for a million products at d = 64); sources are spread over Spark tasks and
scored ``block_rows`` at a time. The product itself is never recommended; with
``exclude_known`` neither are its existing training edges (they come with the source row, so the
exclusion is a scatter of -inf into its row of scores).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

TOPK_SCHEMA = "node_index long, rank int, target_index long, score float"


def top_k_block(
    sources: np.ndarray,
    source_index: np.ndarray,
    targets: np.ndarray,
    k: int,
    known: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores) ``[rows, k']`` of the best targets of each source row, best first.

    ``k' = min(k, n - 1)``; the source's own index is excluded, and so are its ``known`` targets
    (there may then be fewer valid targets than k: those slots hold index -1 and score -inf).
    Ties are broken by the lower target index, so the result is deterministic."""
    n = targets.shape[0]
    scores = sources.astype(np.float32) @ targets.astype(np.float32).T
    rows = np.arange(len(sources))
    scores[rows, source_index] = -np.inf
    if known is not None:
        for row, excluded in enumerate(known):
            if len(excluded):
                scores[row, excluded] = -np.inf
    k_eff = min(k, n - 1)
    if k_eff <= 0:
        empty = np.empty((len(sources), 0))
        return empty.astype(np.int64), empty.astype(np.float32)
    candidates = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    picked = np.take_along_axis(scores, candidates, axis=1)
    order = np.lexsort((candidates, -picked), axis=1)
    best = np.take_along_axis(candidates, order, axis=1)
    best_scores = np.take_along_axis(picked, order, axis=1)
    # argpartition is exact for the k-th value but may pick any of several tied at the boundary;
    # recompute the boundary ties by index so the answer does not depend on numpy's choice.
    best = _resolve_boundary_ties(scores, best, best_scores)
    best_scores = np.take_along_axis(scores, np.maximum(best, 0), axis=1)
    valid = np.isfinite(best_scores)
    return np.where(valid, best, -1), np.where(valid, best_scores, -np.inf).astype(np.float32)


def _resolve_boundary_ties(
    scores: np.ndarray, best: np.ndarray, best_scores: np.ndarray
) -> np.ndarray:
    """Rows whose k-th score is tied with a target outside the pick: take the lowest indices."""
    kth = best_scores[:, -1]
    tied_outside = (scores == kth[:, None]).sum(1) > (best_scores == kth[:, None]).sum(1)
    for row in np.flatnonzero(tied_outside & np.isfinite(kth)):
        keep = best[row][best_scores[row] > kth[row]]
        ties = np.flatnonzero(scores[row] == kth[row])[: best.shape[1] - len(keep)]
        best[row] = np.concatenate([keep, ties])
    return best


def top_k_recommendations(
    spark: SparkSession,
    embeddings: DataFrame,
    known_edges: DataFrame | None,
    *,
    k: int,
    block_rows: int,
    partitions: int,
) -> DataFrame:
    """``TOPK_SCHEMA`` rows: the top ``k`` targets of every node of ``embeddings``.

    ``embeddings``: ``node_index``, ``source``, ``target`` (arrays of float); ``known_edges``:
    ``src_index``, ``dst_index`` pairs to exclude (None: exclude only the node itself)."""
    target_frame = embeddings.select("node_index", "target").toPandas()
    # The target matrix goes to the executors as one broadcast (never a join per pair).
    num_nodes = int(target_frame["node_index"].max()) + 1 if len(target_frame) else 0
    if len(target_frame) != num_nodes:
        raise ValueError("embeddings must have one row per node index 0..n-1")
    matrix = np.zeros((num_nodes, len(target_frame["target"].iloc[0])), dtype=np.float32)
    matrix[target_frame["node_index"].to_numpy()] = np.stack(target_frame["target"].to_numpy())
    shared = spark.sparkContext.broadcast(matrix)
    sources = embeddings.select("node_index", "source")
    if known_edges is not None:
        known = known_edges.groupBy(F.col("src_index").alias("node_index")).agg(
            F.collect_list("dst_index").alias("known")
        )
        sources = sources.join(known, "node_index", "left")
    else:
        sources = sources.withColumn("known", F.lit(None).cast("array<long>"))

    def score_partition(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        targets = shared.value
        for frame in frames:
            for start in range(0, len(frame), block_rows):
                block = frame.iloc[start : start + block_rows]
                yield _block_rows(block, targets, k)

    return sources.repartition(partitions, "node_index").mapInPandas(score_partition, TOPK_SCHEMA)


def _block_rows(block: pd.DataFrame, targets: np.ndarray, k: int) -> pd.DataFrame:
    index = block["node_index"].to_numpy(np.int64)
    vectors = np.stack(block["source"].to_numpy()).astype(np.float32)
    known = [np.asarray(x if x is not None else [], dtype=np.int64) for x in block["known"]]
    best, scores = top_k_block(vectors, index, targets, k, known)
    width = best.shape[1]
    valid = best >= 0
    return pd.DataFrame(
        {
            "node_index": np.repeat(index, width)[valid.reshape(-1)],
            "rank": np.tile(np.arange(1, width + 1, dtype=np.int32), len(index))[valid.reshape(-1)],
            "target_index": best.reshape(-1)[valid.reshape(-1)],
            "score": scores.reshape(-1)[valid.reshape(-1)],
        }
    )
