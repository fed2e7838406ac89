"""BLADE's pair features: what one dot product per node pair cannot hold.

A source/target embedding scores u -> v as s_u . t_v: one number per node, combined. What
links two nodes on citation and co-purchase graphs is mostly *pair* evidence: how many paths of
each direction pattern join them, and how much of a walk from u ends at v (BUDDY/ELPH, NCN;
``../shared/notes/blade.md``). The features of a pair (u, v), all on the training graph:

* ``embedding``: BLADE's composite score s_u . t_v (existence and direction channels);
* ``ppr_z``: log personalised PageRank of v from u, standardised over all of u's targets;
* ``ppr_log``: the raw log PPR (its level compares pairs of different sources);
* ``ppr_forward_z``: the same for a walk that follows edges forward only (u's out-walk):
  where relations chain one way (votes, accessories of accessories) it separates what the
  undirected walk mixes;
* ``potential_diff``, ``source_potential``: phi_v - phi_u and phi_u, phi = log((in+1)/(out+1));
* ``paths_forward`` u -> w -> v, ``paths_cocited`` u <- w -> v (w links to both),
  ``paths_coupled`` u -> w <- v (both link to w), ``paths_backward`` u <- w <- v: log(1 + count)
  of two-hop paths of each direction pattern (DirGNN's four relations);
* ``paths_three``: log(1 + count) of u -> w <- x -> v (x shares a target with u and links to
  v: "those who bought what you bought also bought", item-based collaborative filtering), and
  ``paths_three_ra``, the same paths weighted 1 / (in-degree of w x out-degree of x) (resource
  allocation: a path through a hub says little);
* ``adamic_adar``: common neighbours on the undirected graph, weighted 1 / log degree;
* ``rank_gap``, ``target_rank``, ``source_rank``: (s_u - s_v - 1)^2, s_v and s_u of the
  SpringRank heights s (``TrainingGraph.spring_rank``): how well u -> v fits the graph's order;
* ``target_in_log``, ``source_out_log``, ``source_in_log``: log(1 + in-degree of v), log(1 +
  out-degree of u), log(1 + in-degree of u); and, of the source alone, their squares, product,
  squared difference and whether u has no out- or no in-edges: the shape of a source's score
  level for the direction stage (``SOURCE_FEATURES``), which moves rows, never their order.

Computed per block of distinct sources, like the floor's scorers, inside the task that needs them.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recbatch.proximity.graph import TrainingGraph
from recbatch.proximity.ppr import ppr_rows
from recbatch.proximity.scorers import DotScorer, by_source_block, standardised_log
from recbatch.proximity.settings import ProximitySettings

GRAPH_FEATURES = (
    "ppr_z",
    "ppr_log",
    "ppr_forward_z",
    "potential_diff",
    "source_potential",
    "paths_forward",
    "paths_cocited",
    "paths_coupled",
    "paths_backward",
    "paths_three",
    "paths_three_ra",
    "adamic_adar",
    "rank_gap",
    "target_rank",
    "target_in_log",
    "source_rank",
    "source_out_log",
    "source_in_log",
    "source_out_log_sq",
    "source_in_log_sq",
    "source_log_degree_product",
    "source_potential_sq",
    "source_no_out",
    "source_no_in",
)
SOURCE_FEATURES = (
    "source_potential",
    "source_rank",
    "source_out_log",
    "source_in_log",
    "source_out_log_sq",
    "source_in_log_sq",
    "source_log_degree_product",
    "source_potential_sq",
    "source_no_out",
    "source_no_in",
)
"""Features of the source alone: they move a source's whole row of scores, never its order."""
EMBEDDING_FEATURE = "embedding"


def dense_product(rows: np.ndarray, *steps: sp.csr_matrix) -> np.ndarray:
    """rows @ steps[0] @ steps[1] ... for dense ``rows`` [k, n], as sparse-times-dense products
    (M^T @ X^T)^T: path counts of a block of sources fill most of their row on graphs with
    hubs, where a sparse-times-sparse product would build a dense result entry by entry."""
    out = rows
    for step in steps:
        out = (step.T @ out.T).T
    return np.asarray(out)


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
        forward_z = standardised_log(
            ppr_rows(g.forward_walk, sources, self.settings.restart, self.settings.iterations)
        )[row, targets]
        fwd, bwd = g.forward, g.backward
        out_rows, in_rows = fwd[sources].toarray(), bwd[sources].toarray()  # [sources, n] 0/1
        counts = [
            dense_product(first, second)[row, targets]
            for first, second in ((out_rows, fwd), (in_rows, fwd), (out_rows, bwd), (in_rows, bwd))
        ]
        three = dense_product(out_rows, bwd, fwd)[row, targets]  # u -> w <- x -> v
        spread_in = sp.diags(1.0 / np.maximum(g.in_degree, 1.0))
        spread_out = sp.diags(1.0 / np.maximum(g.out_degree, 1.0))
        three_ra = dense_product(out_rows, spread_in @ bwd, spread_out @ fwd)[row, targets]
        aa_weight = sp.diags(g.adamic_adar_weight)
        adamic_adar = dense_product((g.undirected[sources] @ aa_weight).toarray(), g.undirected)[
            row, targets
        ]
        phi, rank = g.potential, g.spring_rank
        src = sources[row]
        out_log, in_log = np.log1p(g.out_degree[src]), np.log1p(g.in_degree[src])
        return np.column_stack(
            [
                z,
                raw,
                forward_z,
                phi[targets] - phi[src],
                phi[src],
                *(np.log1p(c) for c in counts),
                np.log1p(three),
                np.log1p(100.0 * three_ra),
                adamic_adar,
                (rank[src] - rank[targets] - 1.0) ** 2,
                rank[targets],
                np.log1p(g.in_degree[targets]),
                rank[src],
                out_log,
                in_log,
                out_log**2,
                in_log**2,
                out_log * in_log,
                (in_log - out_log) ** 2,
                (g.out_degree[src] == 0).astype(np.float64),
                (g.in_degree[src] == 0).astype(np.float64),
            ]
        )
