"""Exact top-K targets of every source: blocked matrix multiplies inside ``mapInPandas``.

The score of every (source, target) pair is s_u . t_v, so the exact top K of a block of sources is
one ``[block, d] x [d, n]`` matrix multiply followed by a selection per row (torch ``topk``): no cross join, no
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
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

TOPK_SCHEMA = "node_index long, rank int, target_index long, score float"


def top_k_block(
    sources: np.ndarray,
    source_index: np.ndarray,
    targets: np.ndarray | torch.Tensor,
    k: int,
    known: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores) ``[rows, k']`` of the best targets of each source row, best first.

    ``k' = min(k, n - 1)``; the source's own index is excluded, and so are its ``known`` targets
    (there may then be fewer valid targets than k: those slots hold index -1 and score -inf).
    Ties are broken by the lower target index, so the result is deterministic.

    torch does the work: one ``mm`` and one ``topk`` (a selection, several times faster than
    numpy's ``argpartition`` on CPU), so the block costs little more than its matrix multiply.
    """
    table = torch.as_tensor(targets, dtype=torch.float32)
    n = table.shape[0]
    k_eff = min(k, n - 1)
    rows = len(sources)
    if k_eff <= 0 or rows == 0:
        return np.full((rows, 0), -1, dtype=np.int64), np.full((rows, 0), -np.inf, np.float32)
    scores = torch.as_tensor(np.ascontiguousarray(sources, dtype=np.float32)) @ table.T
    excluded_rows = [np.arange(rows)]
    excluded_cols = [np.asarray(source_index, dtype=np.int64)]
    for row, targets_known in enumerate(known or []):
        if len(targets_known):
            excluded_rows.append(np.full(len(targets_known), row))
            excluded_cols.append(np.asarray(targets_known, dtype=np.int64))
    scores[
        torch.as_tensor(np.concatenate(excluded_rows)),
        torch.as_tensor(np.concatenate(excluded_cols)),
    ] = float("-inf")
    values, picked = torch.topk(scores, k_eff, dim=1, sorted=True)
    best, best_scores = picked.numpy().copy(), values.numpy().copy()
    # topk's order among equal scores is unspecified: sort each row by (score desc, index), and
    # where the k-th score is tied with targets outside the pick, take the lowest indices.
    kth = values[:, -1:]
    boundary_ties = ((scores == kth) & torch.isfinite(kth)).sum(1) > (values == kth).sum(1)
    for row in np.flatnonzero(boundary_ties.numpy()):
        above = np.flatnonzero(scores[row].numpy() > best_scores[row, -1])
        tied = np.flatnonzero(scores[row].numpy() == best_scores[row, -1])
        best[row] = np.concatenate([above, tied])[:k_eff]  # all of `above` is in the pick
        best_scores[row] = scores[row].numpy()[best[row]]
    order = np.lexsort((best, -best_scores), axis=1)
    best = np.take_along_axis(best, order, axis=1)
    best_scores = np.take_along_axis(best_scores, order, axis=1)
    valid = np.isfinite(best_scores)
    return np.where(valid, best, -1), np.where(valid, best_scores, -np.inf).astype(np.float32)


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
        targets = torch.from_numpy(shared.value)
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
