"""Settings of the directed product graph and its neighbourhood samples (docs/graph.md).

Two config sections: ``graph:`` (where the edges come from, how they are cleaned and split) and
``sampling:`` (the degree-aware sampler). The fixed fan-out baseline is the same sampler with
``sampling.law: constant``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from recbatch.config import _Section


class GraphSettings(_Section):
    """The directed graph: U -> V when customers bought V after U (never symmetrised)."""

    source: Literal["events", "edge_list"] = Field(
        "events", description="events: co-purchases from the events table; edge_list: a TSV file"
    )
    edge_list_path: str | None = Field(
        None, description="TSV with header src<TAB>dst (integer ids); relative to the project root"
    )
    nodes_path: str | None = Field(
        None,
        description="optional TSV with header id: the node catalogue; edges to other ids are "
        "quarantined as dangling (edge_list only)",
    )
    buy_window_days: float = Field(30.0, gt=0, description="V bought at most this long after U")
    min_support: int = Field(1, ge=1, description="distinct customers an edge needs")
    min_lift: float = Field(
        0.0,
        ge=0,
        description="co-purchase lift an edge needs: its customers over those expected if U's "
        "and V's buyers were independent (customers(U) x customers(V) / all buyers); drops the "
        "pairs of popular items bought together by chance (0: no lift filter)",
    )
    max_reject_ratio: float = Field(
        0.05, ge=0, le=1, description="malformed edge-list rows tolerated before the run fails"
    )
    split: Literal["none", "random", "time"] = Field(
        "random",
        description="random: 80/5/15 keeping the training graph weakly connected "
        "(../shared/linkpred protocol); time: the latest edges (first purchase) are held out",
    )
    val_fraction: float = Field(0.05, ge=0, lt=1)
    test_fraction: float = Field(0.15, ge=0, lt=1)
    seed: int = Field(0, ge=0, description="seed of the split")
    components_algorithm: Literal["graphx", "graphframes"] = Field(
        "graphx",
        description="GraphFrames connected components: graphx (Pregel; fastest on small graphs) "
        "or graphframes (large-star/small-star with checkpoints; for large graphs)",
    )
    powerlaw_max_dmin: int = Field(
        100, ge=1, description="largest d_min the power-law fit considers (KS selection)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> GraphSettings:
        if self.source == "edge_list" and not self.edge_list_path:
            raise ValueError("graph.source=edge_list needs graph.edge_list_path")
        if self.source == "edge_list" and self.split == "time":
            raise ValueError("graph.split=time needs edge times: use it with graph.source=events")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("graph.val_fraction + graph.test_fraction must be below 1")
        return self


class SamplingSettings(_Section):
    """Degree-aware neighbourhood samples: a budget k(d) per node and role, hop by hop.

    A node samples as a *source* along its out-edges and as a *target* along its in-edges. Its
    budget ``k(d)`` decreases with its degree d in that direction (out-degree as a source,
    in-degree as a target) between ``k_min`` and ``k_max``:

    * ``power``: k(d) = k_min + (k_max - k_min) * max(d, 1)^(-exponent), rounded, where
      ``fitted`` takes 1 / (alpha - 1) (at most 1) from the power law fitted to that role's
      degrees (``budget.fitted_exponent`` says why);
    * ``constant``: k(d) = ``constant_k`` (default k_max) for every node (the fixed fan-out
      baseline, GraphSAGE style).

    Each hop samples up to k(d) neighbours without replacement, with probabilities from
    ``probability``; with ``fill_from_farther_hops`` the part of the budget a hop could not use
    (fewer neighbours than budget) moves to the next hop, so low-degree nodes reach farther.
    """

    hops: int = Field(2, ge=2, le=4, description="hops sampled per node and role")
    k_min: int = Field(4, ge=1, description="budget of the highest-degree nodes")
    k_max: int = Field(20, ge=1, description="budget of degree-1 nodes; width of each hop")
    law: Literal["power", "constant"] = "power"
    constant_k: int | Literal["mean_budget"] | None = Field(
        None,
        description="fan-out per hop of the constant law (default k_max); mean_budget: the "
        "mean budget of the power law on this graph, per role (the fixed fan-out of equal cost)",
    )
    exponent: float | Literal["fitted"] = Field(
        "fitted", description="exponent of the law; fitted: 1 / (alpha - 1) of the degree tail"
    )
    probability: Literal["weight", "inverse_degree", "uniform"] = Field(
        "inverse_degree",
        description="neighbour probability: edge weight, 1 / the neighbour's degree, or uniform",
    )
    fill_from_farther_hops: bool = True
    oversample: float = Field(
        2.0,
        ge=1,
        description="hops > 1: each frontier node offers this many times its share of the "
        "budget (duplicates and earlier hops are removed before the draw)",
    )
    seed: int = Field(0, ge=0)
    files: int = Field(
        8, ge=1, description="Parquet files of the sample output, at most (partitions merged)"
    )

    @model_validator(mode="after")
    def _budget_range(self) -> SamplingSettings:
        if self.k_min > self.k_max:
            raise ValueError("sampling.k_min must not exceed sampling.k_max")
        if isinstance(self.constant_k, int) and not 1 <= self.constant_k <= self.k_max:
            raise ValueError("sampling.constant_k must lie in 1..sampling.k_max (a hop's width)")
        if isinstance(self.exponent, float) and self.exponent < 0:
            raise ValueError("sampling.exponent must be >= 0 (budgets decrease with degree)")
        return self
