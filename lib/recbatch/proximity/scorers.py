"""Pair scorers: ``scorer(u, v) -> scores`` for arrays of node indices, run inside a task.

Every model the evaluation ranks and the recommendations re-rank is one of these, shipped to the
tasks once (a broadcast) and called on a partition's pairs at once:

* ``DotScorer``: s_u . t_v of exported embeddings (BLADE's vectors, popularity);
* ``PPRScorer``: personalised PageRank of v from u on the undirected training graph;
* ``PPRPotentialScorer``: z(log PPR_u(v)) + c (phi_v - phi_u), the log PPR standardised over all
  of u's targets, plus the degree potential for direction;
* ``AdamicAdarScorer``: common neighbours on the undirected graph, weighted 1 / log degree.

The three training-free ones are ``../shared/linkpred/heuristics.py``'s definitions (the
floor a trained model must clear), computed per block of distinct sources
(``recbatch.proximity.ppr.source_blocks``) so that every row is computed once per call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from recbatch.proximity.graph import TrainingGraph
from recbatch.proximity.ppr import ppr_rows, source_blocks
from recbatch.proximity.settings import ProximitySettings

_TINY = 1e-12


class PairScorer(ABC):
    """Scores of pairs (u[i], v[i]); higher means more likely an edge u -> v."""

    name: str = "pairs"
    width: int = 4
    """Values gathered per pair: callers size their chunks of pairs by it."""

    @abstractmethod
    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray: ...


class DotScorer(PairScorer):
    """s_u . t_v from dense source and target matrices (row = node index)."""

    def __init__(self, name: str, sources: np.ndarray, targets: np.ndarray) -> None:
        self.name, self.sources, self.targets = name, sources, targets
        self.width = max(sources.shape[1], 1)

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", self.sources[u], self.targets[v])


def by_source_block(
    u: np.ndarray,
    v: np.ndarray,
    num_nodes: int,
    block_values: int,
    score_block: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Applies ``score_block(sources, row, targets)`` to the pairs of each block of distinct
    sources (``row``: each pair's position in ``sources``) and puts the results back in order.
    Results may be [m] or [m, features]."""
    u, v = np.asarray(u, np.int64), np.asarray(v, np.int64)
    out: np.ndarray | None = None
    for block in source_blocks(u, num_nodes, block_values):
        pick = np.flatnonzero(np.isin(u, block))
        values = score_block(block, np.searchsorted(block, u[pick]), v[pick])
        if out is None:
            out = np.zeros((len(u), *values.shape[1:]), np.float64)
        out[pick] = values
    if out is None:
        return np.zeros(0, np.float64)
    return out


def standardised_log(rows: np.ndarray) -> np.ndarray:
    """Per row: (log x - mean) / sd over all of the row's targets. A monotone map per source, so
    it ranks a source's targets as PPR does, but it makes rows of different sources comparable
    (a hub's PPR mass is spread thin; a leaf's is not)."""
    logs = np.log(rows + _TINY)
    return (logs - logs.mean(1, keepdims=True)) / (logs.std(1, keepdims=True) + _TINY)


def sparse_gather(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """matrix[rows[i], cols[i]] for every i (zeros where not stored)."""
    if not len(rows):
        return np.zeros(0, np.float64)
    return np.asarray(matrix[rows, cols], np.float64).ravel()


class _GraphScorer(PairScorer):
    def __init__(self, graph: TrainingGraph, settings: ProximitySettings) -> None:
        self.graph, self.settings = graph, settings

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return by_source_block(
            u, v, self.graph.num_nodes, self.settings.block_values, self.score_block
        )

    @abstractmethod
    def score_block(
        self, sources: np.ndarray, row: np.ndarray, targets: np.ndarray
    ) -> np.ndarray: ...

    def ppr_block(self, sources: np.ndarray) -> np.ndarray:
        return ppr_rows(self.graph.walk, sources, self.settings.restart, self.settings.iterations)


class PPRScorer(_GraphScorer):
    name = "ppr"

    def score_block(self, sources, row, targets):
        # float32 as the referee stores its rows, so that ties (unreachable targets) match
        return self.ppr_block(sources).astype(np.float32)[row, targets]


class PPRPotentialScorer(_GraphScorer):
    name = "ppr_potential"

    def score_block(self, sources, row, targets):
        z = standardised_log(self.ppr_block(sources))[row, targets]
        phi = self.graph.potential
        c = self.settings.potential_weight
        return (z + c * (phi[targets] - phi[sources[row]])).astype(np.float32)


class AdamicAdarScorer(_GraphScorer):
    name = "adamic_adar"

    def score_block(self, sources, row, targets):
        return sparse_gather(adamic_adar_rows(self.graph, sources), row, targets)


def adamic_adar_rows(graph: TrainingGraph, sources: np.ndarray) -> sp.csr_matrix:
    """Rows of sum_w [u ~ w ~ v] / log deg(w) on the undirected graph (w of degree 1 adds 0)."""
    a = graph.undirected
    return (a[sources] @ sp.diags(graph.adamic_adar_weight) @ a).tocsr()


FLOOR_SCORERS: dict[str, type[_GraphScorer]] = {
    "ppr": PPRScorer,
    "ppr_potential": PPRPotentialScorer,
    "adamic_adar": AdamicAdarScorer,
}
"""The training-free variants of the evaluation, by name."""


def floor_scorer(name: str, graph: TrainingGraph, settings: ProximitySettings) -> PairScorer:
    return FLOOR_SCORERS[name](graph, settings)
