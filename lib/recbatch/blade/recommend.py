"""Exact (or approximate) top-K targets of every source: blocked matrix multiplies in ``mapInPandas``.

The score of every (source, target) pair is s_u . t_v, so the exact top K of a block of sources
against a block of targets is one ``[sources, d] x [d, targets]`` matrix multiply followed by a
selection per row (:func:`top_columns`): no cross join, no pair ever materialised as a row.

The targets are never broadcast. They are written once as blocks of
``recommendations.target_block_rows`` node indices (``recbatch.blade.target_blocks``); each
Spark task holds its sources, reads the target blocks one at a time and merges each block's top
K into a running top K (:class:`RunningTopK`), so a task's memory is one target block, one score
buffer (``score_buffer_mb``) and its sources, whatever the catalogue's size. The merge is exact:
a target in the overall top K is in its own block's top K, and every selection breaks ties by
the lower target index. With ``search = ivf`` each block is searched through its faiss IVF
index instead of the multiply (approximate; ``ivf_probes`` of its lists).

The product itself is never recommended; with ``exclude_known`` neither are its existing
training edges (they come with the source row, so the exclusion is a scatter of -inf into its
row of scores).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recbatch.blade.settings import RecommendationSettings
from recbatch.blade.target_blocks import TargetBlocks, write_target_blocks
from recbatch.proximity.graph import TrainingGraph
from recbatch.proximity.ppr import ppr_rows
from recbatch.proximity.scorers import PairScorer
from recbatch.proximity.settings import ProximitySettings

TOPK_SCHEMA = "node_index long, rank int, target_index long, score float"


class TopK:
    """The exact top ``k`` targets of blocks of sources against one fixed target matrix (the
    whole catalogue, or the block of targets ``first_index ..`` of it).

    Built once per Spark partition: it keeps the target matrix transposed and contiguous
    (``[d, n]``, the layout BLAS multiplies fastest) and one score buffer that every block
    reuses, so a block costs one ``matmul`` into memory that is already mapped, one scatter of
    ``-inf`` for the exclusions and one :func:`top_columns` (a pruned torch ``topk``; torch's
    selection is several times faster than numpy's ``argpartition`` on CPU). numpy's BLAS does the multiply: on the 2-core dev machine it
    ran ~2x faster than torch's ``mm`` on these shapes (``bench/blade_throughput.py``).
    """

    def __init__(
        self, targets: np.ndarray, k: int, block_rows: int = 2048, first_index: int = 0
    ) -> None:
        matrix = np.asarray(targets, dtype=np.float32)
        self.num_targets = matrix.shape[0]
        self.first_index = first_index
        self.k = min(k, self.num_targets)
        self._transposed = np.ascontiguousarray(matrix.T)
        self._buffer = np.empty((0, self.num_targets), dtype=np.float32)
        self._block_rows = block_rows

    def __call__(
        self,
        sources: np.ndarray,
        source_index: np.ndarray,
        known: list[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, scores) ``[rows, k']`` of the best targets of each source row, best first.

        ``k' = min(k, n)`` for n targets (the caller caps it at the catalogue's n - 1: the
        source itself never counts); the source's own index is excluded, and so are its ``known``
        targets (there may then be fewer valid targets than k: those slots hold index -1 and
        score -inf). Ties are broken by the lower target index, so the result is deterministic.
        Indices (of sources, known targets and the result) are the catalogue's, not the block's.
        """
        rows, k = len(sources), self.k
        if k <= 0 or rows == 0:
            return np.full((rows, 0), -1, dtype=np.int64), np.full((rows, 0), -np.inf, np.float32)
        scores = self._scores(np.ascontiguousarray(sources, dtype=np.float32))
        self._exclude(scores, np.asarray(source_index, dtype=np.int64), known)
        # One more than k: where the (k+1)-th score equals the k-th, the pick's last slot is
        # tied with a target outside it and the lowest index must win (topk's order among
        # equal scores is unspecified); everywhere else the pick is exact as it is.
        width = min(k + 1, self.num_targets)
        values, picked = top_columns(torch.from_numpy(scores), width)
        best_scores, best = values.numpy()[:, :k].copy(), picked.numpy()[:, :k].copy()
        if width > k:
            kth, after = values.numpy()[:, k - 1], values.numpy()[:, k]
            for row in np.flatnonzero((kth == after) & np.isfinite(kth)):
                best[row], best_scores[row] = _lowest_index_pick(scores[row], kth[row], k)
        order = np.lexsort((best, -best_scores), axis=1)
        best = np.take_along_axis(best, order, axis=1)
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        valid = np.isfinite(best_scores)
        best = np.where(valid, best + self.first_index, -1)
        return best, np.where(valid, best_scores, -np.inf).astype(np.float32)

    def _scores(self, sources: np.ndarray) -> np.ndarray:
        rows = len(sources)
        if len(self._buffer) < rows:
            self._buffer = np.empty((max(rows, self._block_rows), self.num_targets), np.float32)
        scores = self._buffer[:rows]
        np.matmul(sources, self._transposed, out=scores)
        return scores

    def _exclude(self, scores: np.ndarray, source_index: np.ndarray, known) -> None:
        rows, columns = exclusions(source_index, known)
        columns = columns - self.first_index
        inside = (columns >= 0) & (columns < self.num_targets)
        scores[rows[inside], columns[inside]] = -np.inf


def exclusions(source_index: np.ndarray, known) -> tuple[np.ndarray, np.ndarray]:
    """(row, target index) of everything a block of sources must not be recommended: each
    source itself and its ``known`` targets."""
    rows = np.arange(len(source_index))
    parts_rows, parts_columns = [rows], [np.asarray(source_index, dtype=np.int64)]
    if known:
        lengths = np.fromiter((len(x) for x in known), dtype=np.int64, count=len(known))
        if lengths.sum():
            parts_rows.append(np.repeat(rows[: len(known)], lengths))
            parts_columns.append(np.concatenate([np.asarray(x, dtype=np.int64) for x in known]))
    return np.concatenate(parts_rows), np.concatenate(parts_columns)


class RunningTopK:
    """The best ``k`` (index, score) of each of ``rows`` sources over the target blocks seen so
    far, best first, ties to the lower index; empty slots hold index -1 and score -inf."""

    def __init__(self, rows: int, k: int) -> None:
        self.indices = np.full((rows, k), -1, dtype=np.int64)
        self.scores = np.full((rows, k), -np.inf, dtype=np.float32)

    def merge(self, start: int, indices: np.ndarray, scores: np.ndarray) -> None:
        """Fold one block's picks for the sources ``start .. start + len(indices) - 1`` in."""
        end, k = start + len(indices), self.indices.shape[1]
        both_indices = np.hstack([self.indices[start:end], indices])
        both_scores = np.hstack([self.scores[start:end], scores])
        # -inf slots sort last whatever their index; among equal scores the lower index wins.
        order = np.lexsort((both_indices, -both_scores), axis=1)[:, :k]
        self.indices[start:end] = np.take_along_axis(both_indices, order, axis=1)
        self.scores[start:end] = np.take_along_axis(both_scores, order, axis=1)


def top_columns(scores: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, columns) of the ``width`` largest scores of every row, best first: the values
    ``torch.topk`` returns, found without running ``topk`` over every column.

    Why: on CPU a ``topk`` over ``[2048, 50k]`` cost more than the matrix multiply that made it
    (``bench/blade_throughput.py``). The columns are dealt into ``CHUNKS`` strided chunks
    (chunk j holds columns j, j + m, j + 2m, ...), so the chunk maxima are one element-wise max
    of ``CHUNKS`` contiguous slices. The ``width`` chunks with the largest maxima hold the
    ``width`` largest values: every other chunk's values are at most its own maximum, which is
    at most the ``width``-th largest maximum, which is at most the ``width``-th largest value.
    The same argument picks those chunks from the maxima (recursively), and one ``topk`` over
    their ``width * CHUNKS`` columns finishes. Values are exact; among tied values the columns
    may differ from ``topk``'s (whose order among ties is unspecified anyway).
    """
    columns = _top_column_set(scores, width)
    values, order = torch.sort(torch.gather(scores, 1, columns), dim=1, descending=True)
    return values, torch.gather(columns, 1, order)


CHUNKS = 16
"""Columns per strided chunk in :func:`top_columns` (16 ran fastest of 8-64 on the dev machine)."""


def _top_column_set(scores: torch.Tensor, width: int) -> torch.Tensor:
    """The columns of the ``width`` largest scores of every row, in no particular order."""
    rows, columns = scores.shape
    stride = columns // CHUNKS  # chunk j: columns j + i * stride for i < CHUNKS
    if stride < max(256, 2 * width):
        return torch.topk(scores, width, dim=1, sorted=False).indices
    body = scores.as_strided((rows, CHUNKS, stride), (scores.stride(0), stride, 1))
    chunks = _top_column_set(body.amax(dim=1), width)
    candidates = (chunks.unsqueeze(-1) + torch.arange(CHUNKS) * stride).reshape(rows, -1)
    tail = CHUNKS * stride  # the last columns % CHUNKS columns are candidates of every row
    if tail < columns:
        candidates = torch.cat([candidates, torch.arange(tail, columns).expand(rows, -1)], dim=1)
    picked = torch.topk(torch.gather(scores, 1, candidates), width, dim=1, sorted=False).indices
    return torch.gather(candidates, 1, picked)


def _lowest_index_pick(row: np.ndarray, kth: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of one score row where the k-th score is tied: all above it, then the tied
    targets by index."""
    chosen = np.concatenate([np.flatnonzero(row > kth), np.flatnonzero(row == kth)])[:k]
    return chosen, row[chosen]


def top_k_block(
    sources: np.ndarray,
    source_index: np.ndarray,
    targets: np.ndarray,
    k: int,
    known: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The whole catalogue as one block, scored by a fresh :class:`TopK` (tests, one-off calls)."""
    width = min(k, len(targets) - 1)
    return TopK(targets, width, block_rows=len(sources))(sources, source_index, known)


def blocked_top_k(
    blocks: TargetBlocks,
    settings: RecommendationSettings,
    k: int,
    sources: np.ndarray,
    source_index: np.ndarray,
    known: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores) ``[rows, min(k, n - 1)]`` of every source's best targets over all of
    ``blocks``, read one at a time: exact (:class:`TopK` per block) or through each block's IVF
    index (``settings.search``)."""
    width = min(k, blocks.num_targets - 1)
    running = RunningTopK(len(sources), max(width, 0))
    if width <= 0 or not len(sources):
        return running.indices, running.scores
    sources = np.ascontiguousarray(sources, dtype=np.float32)
    source_index = np.asarray(source_index, dtype=np.int64)
    known = known if known is not None else [np.zeros(0, np.int64)] * len(sources)
    for block in range(blocks.num_blocks):
        first = blocks.first_index(block)
        if blocks.search == "ivf":
            search = _IvfBlock(blocks.read_index(block), first, width, settings.ivf_probes)
            rows = settings.block_rows
        else:
            matrix = blocks.read(block)
            rows = rows_per_multiply(settings, len(matrix))
            search = TopK(matrix, width, rows, first_index=first)
        for start in range(0, len(sources), rows):
            end = start + rows
            picked, scores = search(sources[start:end], source_index[start:end], known[start:end])
            running.merge(start, picked, scores)
    return running.indices, running.scores


def rows_per_multiply(settings: RecommendationSettings, block_targets: int) -> int:
    """Sources scored per multiply: ``block_rows``, fewer where their score buffer
    (rows x block targets x 4 bytes) would pass ``score_buffer_mb``."""
    fits = (settings.score_buffer_mb << 20) // (4 * max(block_targets, 1))
    return int(max(1, min(settings.block_rows, fits)))


class _IvfBlock:
    """The approximate counterpart of :class:`TopK` for one block: its faiss IVF index, asked
    for enough candidates that the exclusions still leave ``k``."""

    def __init__(self, index, first_index: int, k: int, probes: int) -> None:
        import faiss

        faiss.omp_set_num_threads(1)  # one Spark task, one core
        index.nprobe = min(probes, index.nlist)
        self.index, self.first_index, self.k = index, first_index, min(k, index.ntotal)

    def __call__(
        self, sources: np.ndarray, source_index: np.ndarray, known: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        rows, columns = exclusions(source_index, known)
        columns = columns - self.first_index
        inside = (columns >= 0) & (columns < self.index.ntotal)
        rows, columns = rows[inside], columns[inside]
        most_excluded = np.bincount(rows, minlength=len(sources)).max(initial=0)
        wanted = int(min(self.index.ntotal, self.k + most_excluded))
        scores, picked = self.index.search(np.ascontiguousarray(sources), wanted)
        # An excluded target among a row's candidates is dropped (pairs coded row * n + column).
        n = self.index.ntotal
        coded = np.arange(len(sources))[:, None] * n + picked
        picked = np.where((picked >= 0) & ~np.isin(coded, rows * n + columns), picked, -1)
        scores = np.where(picked >= 0, scores, -np.inf).astype(np.float32)
        order = np.lexsort((picked, -scores), axis=1)[:, : self.k]
        picked = np.take_along_axis(picked, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        return np.where(picked >= 0, picked + self.first_index, -1), scores


def top_k_recommendations(
    spark: SparkSession,
    embeddings: DataFrame,
    known_edges: DataFrame | None,
    *,
    k: int,
    settings: RecommendationSettings,
    blocks_path: str,
) -> DataFrame:
    """``TOPK_SCHEMA`` rows: the top ``k`` targets of every node of ``embeddings``.

    ``embeddings``: ``node_index``, ``source``, ``target`` (arrays of float); ``known_edges``:
    ``src_index``, ``dst_index`` pairs to exclude (None: exclude only the node itself).
    ``blocks_path``: a work folder for the target blocks (replaced)."""
    blocks = write_target_blocks(
        embeddings,
        blocks_path,
        block_rows=settings.target_block_rows,
        search=settings.search,
        ivf_lists=settings.ivf_lists,
    )
    sources = embeddings.select("node_index", "source")
    if known_edges is not None:
        known = known_edges.groupBy(F.col("src_index").alias("node_index")).agg(
            F.collect_list("dst_index").alias("known")
        )
        sources = sources.join(known, "node_index", "left")
    else:
        sources = sources.withColumn("known", F.lit(None).cast("array<long>"))

    def score_partition(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        # A task holds all of its sources so every target block is read once per task.
        parts = list(frames)
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if frame.empty:
            return
        index = frame["node_index"].to_numpy(np.int64)
        vectors = np.stack(frame["source"].to_numpy()).astype(np.float32)
        known_lists = [np.asarray(x if x is not None else [], np.int64) for x in frame["known"]]
        best, scores = blocked_top_k(blocks, settings, k, vectors, index, known_lists)
        yield _top_k_rows(index, best, scores)

    return sources.repartition(settings.partitions, "node_index").mapInPandas(
        score_partition, TOPK_SCHEMA
    )


def _top_k_rows(index: np.ndarray, best: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    width = best.shape[1]
    valid = (best >= 0).reshape(-1)
    return pd.DataFrame(
        {
            "node_index": np.repeat(index, width)[valid],
            "rank": np.tile(np.arange(1, width + 1, dtype=np.int32), len(index))[valid],
            "target_index": best.reshape(-1)[valid],
            "score": scores.reshape(-1)[valid],
        }
    )


RERANK_SCHEMA = "node_index long, rank int, target_index long, score float"


def reranked_top_k(
    scorer: PairScorer,
    graph: TrainingGraph,
    walk: ProximitySettings,
    sources: np.ndarray,
    retrieved: list[np.ndarray],
    *,
    k: int,
    walk_candidates: int,
    exclude_known: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, target, score) rows of the top ``k`` of each source's candidates, best first.

    The candidates of source u are ``retrieved[i]`` (its top M by the dot product) and its
    ``walk_candidates`` targets of highest personalised PageRank (the walk reaches the pair
    evidence the dot product misses); u itself and, with ``exclude_known``, its training
    targets are dropped. Ties are broken by the lower target index."""
    rows = None
    if walk_candidates:
        rows = ppr_rows(graph.walk, sources, walk.restart, walk.iterations)
    out_u, out_v = [], []
    for i, u in enumerate(sources):
        pool = [np.asarray(retrieved[i], np.int64)]
        if rows is not None:
            m = min(walk_candidates, graph.num_nodes - 1)
            pool.append(np.argpartition(-rows[i], m)[: m + 1])
        candidates = np.unique(np.concatenate(pool))
        drop = [np.asarray([u], np.int64)]
        if exclude_known:
            drop.append(
                graph.forward.indices[graph.forward.indptr[u] : graph.forward.indptr[u + 1]]
            )
        candidates = candidates[~np.isin(candidates, np.concatenate(drop))]
        out_u.append(np.full(len(candidates), u, np.int64))
        out_v.append(candidates)
    u_all = np.concatenate(out_u) if out_u else np.zeros(0, np.int64)
    v_all = np.concatenate(out_v) if out_v else np.zeros(0, np.int64)
    scores = scorer(u_all, v_all) if len(u_all) else np.zeros(0)
    keep_u, keep_v, keep_s = [], [], []
    start = 0
    for part in out_v:
        end = start + len(part)
        s, v = scores[start:end], v_all[start:end]
        order = np.lexsort((v, -s))[:k]  # score descending, then lower target index
        keep_u.append(u_all[start:end][order])
        keep_v.append(v[order])
        keep_s.append(s[order])
        start = end
    if not keep_u:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(keep_u), np.concatenate(keep_v), np.concatenate(keep_s)


def rerank_recommendations(
    spark: SparkSession,
    retrieved: DataFrame,
    scorer: PairScorer,
    graph: TrainingGraph,
    walk: ProximitySettings,
    *,
    k: int,
    walk_candidates: int,
    exclude_known: bool,
    partitions: int,
) -> DataFrame:
    """``RERANK_SCHEMA`` rows: each source's top ``k`` by ``scorer`` among its retrieved targets
    (``retrieved``: ``TOPK_SCHEMA`` rows, the top M by the dot product) and its walk candidates.

    The scorer and the training graph are broadcast once; a task re-ranks its sources a block
    at a time (one PPR block, one feature call)."""
    shared = spark.sparkContext.broadcast((scorer, graph))
    grouped = retrieved.groupBy("node_index").agg(
        F.collect_list("target_index").alias("candidates")
    )
    block = max(1, walk.block_values // max(graph.num_nodes, 1))

    def rerank(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model, training = shared.value
        for frame in frames:
            for start in range(0, len(frame), block):
                part = frame.iloc[start : start + block]
                u, v, s = reranked_top_k(
                    model,
                    training,
                    walk,
                    part["node_index"].to_numpy(np.int64),
                    [np.asarray(c, np.int64) for c in part["candidates"]],
                    k=k,
                    walk_candidates=walk_candidates,
                    exclude_known=exclude_known,
                )
                ranks = _ranks_within(u)
                yield pd.DataFrame(
                    {
                        "node_index": u,
                        "rank": ranks,
                        "target_index": v,
                        "score": s.astype(np.float32),
                    }
                )

    return grouped.repartition(partitions, "node_index").mapInPandas(rerank, RERANK_SCHEMA)


def _ranks_within(sources: np.ndarray) -> np.ndarray:
    """1, 2, ... within each run of equal consecutive ``sources``."""
    if not len(sources):
        return np.zeros(0, np.int32)
    starts = np.r_[0, np.flatnonzero(sources[1:] != sources[:-1]) + 1]
    lengths = np.diff(np.r_[starts, len(sources)])
    return (np.arange(len(sources)) - np.repeat(starts, lengths) + 1).astype(np.int32)
