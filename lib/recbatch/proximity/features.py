"""BLADE's pair features: what one dot product per node pair cannot hold.

A source/target embedding scores u -> v as s_u . t_v: one number per node, combined. What
links two nodes on citation and co-purchase graphs is mostly *pair* evidence: how many paths of
each direction pattern join them, and how much of a walk from u ends at v (BUDDY/ELPH, NCN;
``../shared/notes/blade.md``). The features of a pair (u, v), all on the training graph:

* ``embedding``: BLADE's composite score s_u . t_v (existence and direction channels);
* ``ppr_z``: log personalised PageRank of v from u, standardised over all of u's targets;
* ``ppr_log``: the raw log PPR (its level compares pairs of different sources);
* ``potential_diff``, ``source_potential``: phi_v - phi_u and phi_u, phi = log((in+1)/(out+1));
* ``paths_forward`` u -> w -> v, ``paths_cocited`` u <- w -> v (w links to both),
  ``paths_coupled`` u -> w <- v (both link to w), ``paths_backward`` u <- w <- v: log(1 + count)
  of two-hop paths of each direction pattern (DirGNN's four relations);
* ``adamic_adar``: common neighbours on the undirected graph, weighted 1 / log degree;
* ``target_in_log``, ``source_out_log``: log(1 + in-degree of v), log(1 + out-degree of u).

Computed per block of distinct sources, like the floor's scorers, inside the task that needs them.
"""

from __future__ import annotations

import numpy as np

from recbatch.proximity.graph import TrainingGraph
from recbatch.proximity.ppr import ppr_rows
from recbatch.proximity.scorers import (
    DotScorer,
    adamic_adar_rows,
    by_source_block,
    sparse_gather,
    standardised_log,
)
from recbatch.proximity.settings import ProximitySettings

GRAPH_FEATURES = (
    "ppr_z",
    "ppr_log",
    "potential_diff",
    "source_potential",
    "paths_forward",
    "paths_cocited",
    "paths_coupled",
    "paths_backward",
    "adamic_adar",
    "target_in_log",
    "source_out_log",
)
EMBEDDING_FEATURE = "embedding"


class PairFeatures:
    """``features(u, v) -> [pairs, len(names)]``; ``embedding`` first when embeddings are given."""

    def __init__(
        self,
        graph: TrainingGraph,
        settings: ProximitySettings,
        embedding: DotScorer | None = None,
    ) -> None:
        self.graph, self.settings, self.embedding = graph, settings, embedding

    @property
    def names(self) -> tuple[str, ...]:
        head = (EMBEDDING_FEATURE,) if self.embedding is not None else ()
        return head + GRAPH_FEATURES

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        u, v = np.asarray(u, np.int64), np.asarray(v, np.int64)
        graph = by_source_block(
            u, v, self.graph.num_nodes, self.settings.block_values, self._block
        ).reshape(len(u), len(GRAPH_FEATURES))
        if self.embedding is None:
            return graph
        return np.hstack([self.embedding(u, v)[:, None], graph])

    def _block(self, sources: np.ndarray, row: np.ndarray, targets: np.ndarray) -> np.ndarray:
        g = self.graph
        ppr = ppr_rows(g.walk, sources, self.settings.restart, self.settings.iterations)
        z = standardised_log(ppr)[row, targets]
        raw = np.log(ppr[row, targets] + 1e-12)
        fwd, bwd = g.forward, g.backward
        counts = [
            sparse_gather(first[sources] @ second, row, targets)
            for first, second in ((fwd, fwd), (bwd, fwd), (fwd, bwd), (bwd, bwd))
        ]
        phi = g.potential
        src = sources[row]
        return np.column_stack(
            [
                z,
                raw,
                phi[targets] - phi[src],
                phi[src],
                *(np.log1p(c) for c in counts),
                sparse_gather(adamic_adar_rows(g, sources), row, targets),
                np.log1p(g.in_degree[targets]),
                np.log1p(g.out_degree[src]),
            ]
        )
