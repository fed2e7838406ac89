"""The training graph as sparse matrices, for the tasks that score node pairs.

A pair score that reads paths (personalised PageRank, common neighbours) needs the whole
training graph in every task that scores pairs. It is small next to what it scores: two int32
arrays per edge (a 10M-edge catalogue is ~80 MB of CSR per direction), so it is built once on
the driver from the edge index columns and broadcast; the pairs themselves never leave the
cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scipy.sparse.linalg import cg

EDGE_INDEX_COLUMNS = ("src_index", "dst_index")


@dataclass(frozen=True)
class TrainingGraph:
    """The directed training graph on ``num_nodes`` dense node indices.

    ``forward`` is A (A[u, v] = 1 for a training edge u -> v), deduplicated, without self-loops."""

    num_nodes: int
    forward: sp.csr_matrix

    @classmethod
    def from_edges(cls, src: np.ndarray, dst: np.ndarray, num_nodes: int) -> TrainingGraph:
        src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
        if len(src) and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= num_nodes):
            raise ValueError(f"edge endpoints must lie in 0..{num_nodes - 1}")
        keep = src != dst
        a = sp.coo_matrix(
            (np.ones(int(keep.sum()), np.float32), (src[keep], dst[keep])),
            shape=(num_nodes, num_nodes),
        ).tocsr()
        a.data[:] = 1.0  # duplicates summed by tocsr: one edge each
        return cls(num_nodes, a)

    @cached_property
    def backward(self) -> sp.csr_matrix:
        """A^T: row v lists v's in-neighbours."""
        return self.forward.T.tocsr()

    @cached_property
    def undirected(self) -> sp.csr_matrix:
        """A + A^T, binary: the graph the walk and Adamic-Adar read (direction ignored)."""
        u = ((self.forward + self.backward) > 0).astype(np.float32)
        return u.tocsr()

    @cached_property
    def walk(self) -> sp.csr_matrix:
        """P^T, P = D^-1 (A + A^T): one step of the undirected walk applied to a column of mass
        (column-stochastic where a node has edges; an isolated node's mass leaks, as the
        referee's)."""
        a = self.undirected
        degree = np.asarray(a.sum(1)).ravel()
        inverse = np.where(degree > 0, 1.0 / np.maximum(degree, 1.0), 0.0)
        return (sp.diags(inverse) @ a).T.tocsr().astype(np.float64)

    @cached_property
    def adamic_adar_weight(self) -> np.ndarray:
        """1 / log(degree) on the undirected graph; 0 for degree <= 1 (as the referee's)."""
        degree = np.asarray(self.undirected.sum(1)).ravel()
        return np.where(degree > 1, 1.0 / np.log(np.maximum(degree, 2.0)), 0.0)

    @cached_property
    def forward_walk(self) -> sp.csr_matrix:
        """P_f^T, P_f = D_out^-1 A: a step along out-edges only (a node without out-edges
        leaks its mass)."""
        inverse = np.where(self.out_degree > 0, 1.0 / np.maximum(self.out_degree, 1.0), 0.0)
        return (sp.diags(inverse) @ self.forward).T.tocsr().astype(np.float64)

    @cached_property
    def spring_rank(self) -> np.ndarray:
        """SpringRank (De Bacco, Larremore & Moore, 2018): the node heights s that make every
        edge u -> v a spring of rest length 1 from s_u down to s_v, i.e. the solution of
        [D_out + D_in - (A + A^T) + I] s = d_out - d_in (unit regularisation keeps it unique
        on every component). Where a catalogue has an order (accessories below their devices,
        newer papers above the ones they cite), an edge against it is unlikely. One sparse
        conjugate-gradient solve, O(edges) per iteration."""
        a = self.forward
        laplacian = (sp.diags(self.out_degree + self.in_degree + 1.0) - (a + self.backward)).tocsr()
        heights, _ = cg(laplacian, self.out_degree - self.in_degree, rtol=1e-8, maxiter=1000)
        return heights

    @cached_property
    def out_degree(self) -> np.ndarray:
        return np.diff(self.forward.indptr).astype(np.float64)

    @cached_property
    def in_degree(self) -> np.ndarray:
        return np.diff(self.backward.indptr).astype(np.float64)

    @cached_property
    def potential(self) -> np.ndarray:
        """phi = log((in + 1) / (out + 1)): how target-like a node is (recbatch.blade.compose)."""
        return np.log1p(self.in_degree) - np.log1p(self.out_degree)

    def __getstate__(self) -> dict:
        # Ship only the edges: derived matrices are rebuilt lazily in the task that needs them.
        return {"num_nodes": self.num_nodes, "forward": self.forward}

    def __setstate__(self, state: dict) -> None:
        object.__setattr__(self, "num_nodes", state["num_nodes"])
        object.__setattr__(self, "forward", state["forward"])


def require_columns(frame: DataFrame, columns: tuple[str, ...], what: str) -> None:
    """A clear error naming what is missing, as GraphFrames checks its inputs."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} needs columns {list(columns)}; missing {missing}")


def training_graph(edges: DataFrame, num_nodes: int) -> TrainingGraph:
    """The ``TrainingGraph`` of ``edges`` (``src_index``, ``dst_index``: the training edges only).

    Only the two index columns reach the driver (Arrow), 16 bytes an edge."""
    require_columns(edges, EDGE_INDEX_COLUMNS, "training_graph")
    table = edges.select(*(F.col(c).cast("long") for c in EDGE_INDEX_COLUMNS)).distinct().toArrow()
    return TrainingGraph.from_edges(
        table.column("src_index").to_numpy(), table.column("dst_index").to_numpy(), num_nodes
    )
