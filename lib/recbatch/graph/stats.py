"""What the graph looks like, from GraphFrames operations: degrees, weakly connected components,
reciprocity, the degree distribution and its power-law exponent.

The exponent feeds the sampler's degree law (``sampling.exponent: fitted``). It is fitted on the
degree *histogram* (one row per distinct degree, aggregated on the cluster), so the driver never
sees per-node data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from graphframes import GraphFrame
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recbatch.log import get_logger

log = get_logger(__name__)

MIN_TAIL_NODES = 20
"""A d_min whose tail holds fewer nodes than this is not considered by the power-law fit."""


@dataclass(frozen=True)
class PowerLawFit:
    """Discrete power law P(d) ~ d^-alpha for d >= d_min (Clauset, Shalizi & Newman 2009)."""

    alpha: float
    d_min: int
    tail_nodes: int
    ks_distance: float


@dataclass(frozen=True)
class GraphStats:
    nodes: int
    edges: int
    reciprocated_edges: int
    reciprocity: float
    components: int
    largest_component_nodes: int
    out_degree_fit: PowerLawFit | None
    in_degree_fit: PowerLawFit | None

    def as_row(self) -> dict[str, object]:
        row = {k: v for k, v in asdict(self).items() if not k.endswith("_fit")}
        for name in ("out", "in"):
            fit: PowerLawFit | None = getattr(self, f"{name}_degree_fit")
            row[f"{name}_alpha"] = fit.alpha if fit else None
            row[f"{name}_dmin"] = fit.d_min if fit else None
        return row


def node_degrees(graph: GraphFrame) -> DataFrame:
    """``id``, ``out_degree``, ``in_degree`` for every vertex (0 where GraphFrames has no row)."""
    return (
        graph.vertices.select("id")
        .join(graph.outDegrees, "id", "left")
        .join(graph.inDegrees, "id", "left")
        .select(
            "id",
            F.coalesce(F.col("outDegree"), F.lit(0)).alias("out_degree"),
            F.coalesce(F.col("inDegree"), F.lit(0)).alias("in_degree"),
        )
    )


def weak_components(graph: GraphFrame, algorithm: str = "graphx") -> DataFrame:
    """``id``, ``component``: weakly connected components (edge direction ignored)."""
    return graph.connectedComponents(algorithm=algorithm).select("id", "component")


def reciprocated_edges(graph: GraphFrame) -> int:
    """Edges u -> v whose reverse v -> u is an edge too, by GraphFrames' motif search."""
    return graph.find("(a)-[]->(b); (b)-[]->(a)").count()


def degree_histogram(degrees: DataFrame, column: str) -> np.ndarray:
    """``[[degree, nodes], ...]`` for degrees >= 1, sorted: one row per distinct degree."""
    rows = degrees.where(F.col(column) > 0).groupBy(column).count().orderBy(column).collect()
    return np.array([(r[column], r["count"]) for r in rows], dtype=np.int64).reshape(-1, 2)


def fit_power_law(histogram: np.ndarray, max_dmin: int) -> PowerLawFit | None:
    """Fit alpha of the degree tail, choosing d_min by the smallest Kolmogorov-Smirnov distance.

    For each candidate d_min, alpha is the discrete maximum-likelihood approximation
    1 + n / sum(ln(d / (d_min - 1/2))) over the n nodes with d >= d_min (CSN 2009, eq. 3.7), and
    the KS distance compares the tail's empirical CDF with the fitted one. None when no candidate
    has ``MIN_TAIL_NODES`` nodes (a graph too small to say anything about its tail).
    """
    if len(histogram) == 0:
        return None
    degree, count = histogram[:, 0].astype(np.float64), histogram[:, 1].astype(np.float64)
    best: PowerLawFit | None = None
    for d_min in degree[degree <= max_dmin]:
        tail = degree >= d_min
        n = count[tail].sum()
        if n < MIN_TAIL_NODES or tail.sum() < 2:
            continue
        d, c = degree[tail], count[tail]
        alpha = 1.0 + n / float(np.sum(c * np.log(d / (d_min - 0.5))))
        empirical = np.cumsum(c) / n
        # Continuous approximation of the fitted CDF at each observed degree (CSN 2009, 3.1).
        fitted = 1.0 - ((d + 0.5) / (d_min - 0.5)) ** (1.0 - alpha)
        ks = float(np.max(np.abs(empirical - fitted)))
        if best is None or ks < best.ks_distance:
            best = PowerLawFit(float(alpha), int(d_min), int(n), ks)
    return best


def graph_stats(
    graph: GraphFrame, degrees: DataFrame, components: DataFrame, max_dmin: int
) -> GraphStats:
    """The summary row of ``graph_stats`` (``degrees`` and ``components`` as computed above)."""
    nodes = graph.vertices.count()
    edges = graph.edges.count()
    reciprocated = reciprocated_edges(graph)
    sizes = components.groupBy("component").count()
    agg = sizes.agg(F.count(F.lit(1)).alias("n"), F.max("count").alias("largest")).head()
    fits = {
        name: fit_power_law(degree_histogram(degrees, f"{name}_degree"), max_dmin)
        for name in ("out", "in")
    }
    stats = GraphStats(
        nodes=nodes,
        edges=edges,
        reciprocated_edges=reciprocated,
        reciprocity=reciprocated / edges if edges else 0.0,
        components=int(agg["n"] or 0),
        largest_component_nodes=int(agg["largest"] or 0),
        out_degree_fit=fits["out"],
        in_degree_fit=fits["in"],
    )
    log.info(
        "graph: %d nodes, %d edges, reciprocity %.3f, %d weak components (largest %d nodes), "
        "power-law alpha out %s / in %s",
        stats.nodes,
        stats.edges,
        stats.reciprocity,
        stats.components,
        stats.largest_component_nodes,
        _alpha_text(stats.out_degree_fit),
        _alpha_text(stats.in_degree_fit),
    )
    return stats


def _alpha_text(fit: PowerLawFit | None) -> str:
    return f"{fit.alpha:.2f} (d >= {fit.d_min})" if fit else "n/a (tail too small)"
