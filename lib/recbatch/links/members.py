"""The members of the link scorer: what its uncertainty is the spread over.

* ``mc_dropout``: K Monte-Carlo dropout draws of every node's vectors. Each GNN channel of BLADE
  writes its draws when it finishes training (``TrainJob.members``); draw k of the existence
  channel and draw k of the direction channel are composed into draw k of the composite with
  the *deterministic* vectors' moments, so a draw differs from the served vectors only by its
  dropout masks. A node with few neighbours averages few inputs, so its draws spread more: that
  is the uncertainty the thresholds bucket by.
* ``heads``: the served composite vectors themselves (one member); the spread comes from the
  bootstrap heads of ``scorer``.

The member matrices are broadcast to the scoring tasks, as the top-K stage broadcasts its target
matrix: K x n x d float32 (16 draws of 100k products at d = 194: 1.2 GB; ``heads`` needs 1/K).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recbatch.blade.compose import compose_vectors, degree_potential, moments_of


@dataclass(frozen=True)
class LinkMembers:
    """``sources``, ``targets``: ``[members, nodes, dim]`` float32 (row = node index)."""

    sources: np.ndarray
    targets: np.ndarray

    @property
    def count(self) -> int:
        return self.sources.shape[0]


def _matrices(frame: DataFrame, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """(sources, targets) ``[n, d]`` of a ``node_index, source, target`` frame; every node once."""
    rows = frame.select("node_index", "source", "target").toPandas()
    index = rows["node_index"].to_numpy(np.int64)
    if len(rows) != num_nodes or len(np.unique(index)) != num_nodes or index.max() >= num_nodes:
        raise ValueError(f"expected one vector per node index 0..{num_nodes - 1}, got {len(rows)}")
    order = np.argsort(index)
    sources = np.stack(rows["source"].to_numpy()[order]).astype(np.float32)
    targets = np.stack(rows["target"].to_numpy()[order]).astype(np.float32)
    return sources, targets


def served_members(embeddings: DataFrame, num_nodes: int) -> LinkMembers:
    """One member: the served vectors of the ``embeddings`` rows (``heads``)."""
    sources, targets = _matrices(embeddings, num_nodes)
    return LinkMembers(sources[None], targets[None])


def dropout_members(
    spark: SparkSession,
    existence: str,
    direction: str,
    existence_draws: str,
    direction_draws: str,
    nodes: DataFrame,
    *,
    direction_weight: float,
    potential_weight: float,
    source_prior_weight: float = 0.0,
) -> LinkMembers:
    """The composite's MC-dropout draws from the channels' served vectors and draws (folders)."""
    num_nodes = nodes.count()
    a, b = _matrices(spark.read.parquet(existence), num_nodes)
    p, q = _matrices(spark.read.parquet(direction), num_nodes)
    moments = moments_of(b.astype(np.float64), p.astype(np.float64), q.astype(np.float64))
    degrees = nodes.select("node_index", "in_degree", "out_degree").toPandas()
    degrees = degrees.sort_values("node_index")
    phi = degree_potential(degrees["in_degree"].to_numpy(), degrees["out_degree"].to_numpy())
    existence_k = spark.read.parquet(existence_draws)
    direction_k = spark.read.parquet(direction_draws)
    members = sorted(r[0] for r in existence_k.select("member").distinct().collect())
    theirs = sorted(r[0] for r in direction_k.select("member").distinct().collect())
    if not members or members != theirs:
        raise ValueError(
            f"the channels' MC-dropout draws do not match ({members} vs {theirs}): retrain BLADE "
            "with link_uncertainty.method=mc_dropout"
        )
    sources, targets = [], []
    for k in members:
        a_k, b_k = _matrices(existence_k.where(F.col("member") == k), num_nodes)
        p_k, q_k = _matrices(direction_k.where(F.col("member") == k), num_nodes)
        s, t = compose_vectors(
            a_k,
            b_k,
            p_k,
            q_k,
            phi,
            moments,
            direction_weight=direction_weight,
            potential_weight=potential_weight,
            source_prior_weight=source_prior_weight,
        )
        sources.append(s.astype(np.float32))
        targets.append(t.astype(np.float32))
    return LinkMembers(np.stack(sources), np.stack(targets))
