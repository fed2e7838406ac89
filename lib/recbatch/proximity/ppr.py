"""Personalised PageRank rows for a block of sources, by power iteration.

The walk runs on the *undirected* training graph: on citation and co-purchase graphs the paths
that carry a relation change direction (u -> w <- x -> v: two papers citing the same work), so
a walk that only follows edges forward misses most of them (``../shared/notes/blade.md``).

    x <- (1 - alpha) P^T x + alpha e_u,   P = D^-1 (A + A^T)

from x = e_u, a fixed number of iterations: exactly ``../shared/linkpred/heuristics.PPR``
(nodes without edges keep only their restart mass). One sparse-times-dense product per
iteration serves a whole block of sources; the block is sized so that its rows fit the task's
memory budget (``proximity.block_values``).

GraphFrames has parallel personalised PageRank too (``pageRank(sourceIds=...)``), but it keeps
a vector of every source's values on every vertex through Pregel supersteps, and the pairs we
score ask for rows of *many* sources: one sparse product per block is the cheaper shape here.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp


def ppr_rows(
    operator: sp.csr_matrix, sources: np.ndarray, restart: float, iterations: int
) -> np.ndarray:
    """``[len(sources), n]``: row i is the walk's distribution restarted at ``sources[i]``.

    ``operator``: ``TrainingGraph.walk``."""
    n = operator.shape[0]
    start = np.zeros((n, len(sources)))
    start[np.asarray(sources, np.int64), np.arange(len(sources))] = 1.0
    x = start.copy()
    for _ in range(iterations):
        x = (1.0 - restart) * (operator @ x) + restart * start
    return np.ascontiguousarray(x.T)


def source_blocks(sources: np.ndarray, num_nodes: int, block_values: int) -> Iterator[np.ndarray]:
    """Distinct ``sources`` in blocks of at most ``block_values / num_nodes`` (at least one)."""
    distinct = np.unique(np.asarray(sources, np.int64))
    size = max(1, block_values // max(num_nodes, 1))
    for start in range(0, len(distinct), size):
        yield distinct[start : start + size]
