"""Degree-aware neighbourhood sampling over the whole training graph, in Spark's plan.

One sampler (``sample_neighbourhoods``); the degree law and the neighbour probability are its
parameters, and the fixed fan-out baseline is the same sampler with a constant law.

For each node and role (source: along out-edges; target: along in-edges):

* **hop 1** draws up to the node's budget k(d) of its neighbours without replacement, with
  probability proportional to the neighbour weight (Efraimidis & Spirakis: the k largest keys
  ln(u) / w, u uniform in (0, 1)). ``u`` is a seeded hash of (seed, role, hop, node, candidate),
  so a run is deterministic whatever the partitioning and its prefixes are weighted samples too.
* **hop h > 1** draws from the neighbours of the nodes sampled at hop h - 1 (the frontier), in the
  same direction: every candidate is the end of a directed path of length h from the node. Each
  frontier node offers the first ``ceil(oversample * budget / frontier size)`` of its own hop-1
  ranking (bounded work per node, however large the frontier's neighbourhoods are); candidates
  already sampled at an earlier hop, and the node itself, are removed; a candidate offered by
  several frontier nodes gets the sum of their weights. With ``fill_from_farther_hops`` the part of
  hop h - 1's budget it could not use is added to hop h's (capped at ``k_max``, the width of a hop).

The result is long (one row per sampled neighbour); ``recbatch.graph.samples`` gives it fixed
shapes for the tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recbatch.graph.budget import ROLES, SOURCE, DegreeLaw, neighbour_weight
from recbatch.graph.build import edge_key
from recbatch.graph.settings import SamplingSettings
from recbatch.log import get_logger, timed

log = get_logger(__name__)

PICK_COLUMNS = ("role", "node", "hop", "rank", "nbr", "weight")


@dataclass(frozen=True)
class SamplerInput:
    """What the sampler reads: the training graph only (held-out edges never get here)."""

    nodes: DataFrame  # node_index, out_degree, in_degree (degrees in the training graph)
    edges: DataFrame  # src_index, dst_index, weight
    laws: dict[str, DegreeLaw]  # one per role


@dataclass(frozen=True)
class SamplerOutput:
    """The sample in long form and the budget of every node and role."""

    picks: DataFrame  # PICK_COLUMNS: rank 1.. within (role, node, hop); weight = draw weight
    budgets: DataFrame  # role, node, degree, budget: every node, both roles


def _role_columns(role: str) -> tuple[str, str, str, str]:
    """(node column, neighbour column, the node's degree, the neighbour's degree) of a role."""
    if role == SOURCE:
        return "src_index", "dst_index", "out_degree", "in_degree"
    return "dst_index", "src_index", "in_degree", "out_degree"


def role_adjacency(sampler_input: SamplerInput, role: str, settings: SamplingSettings) -> DataFrame:
    """``node``, ``nbr``, ``w``: each node's neighbours in the role's direction, with weights."""
    node_col, nbr_col, _, nbr_degree = _role_columns(role)
    adjacency = sampler_input.edges.select(
        F.col(node_col).alias("node"), F.col(nbr_col).alias("nbr"), "weight"
    )
    if settings.probability == "inverse_degree":  # the only probability that needs the degree
        degree = sampler_input.nodes.select(
            F.col("node_index").alias("nbr"), F.col(nbr_degree).alias("nbr_degree")
        )
        adjacency = adjacency.join(degree, "nbr")
    else:
        adjacency = adjacency.withColumn("nbr_degree", F.lit(None).cast("long"))
    return adjacency.select(
        "node", "nbr", neighbour_weight(settings, F.col("weight"), F.col("nbr_degree")).alias("w")
    )


def role_budgets(sampler_input: SamplerInput, role: str) -> DataFrame:
    """``node``, ``degree``, ``budget`` for every node (isolated ones included)."""
    _, _, degree, _ = _role_columns(role)
    law = sampler_input.laws[role]
    return sampler_input.nodes.select(
        F.col("node_index").alias("node"),
        F.col(degree).cast("int").alias("degree"),
        law.budget(F.col(degree)).alias("budget"),
    )


def draw_key(seed: int, role: str, hop: int, node: str, candidate: str, weight: str) -> Column:
    """Efraimidis-Spirakis key ln(u) / w: the k largest are a weighted sample without replacement."""
    u = edge_key(seed, F.lit(role), F.lit(hop), F.col(node), F.col(candidate))
    return F.log(u) / F.col(weight)


def _top_by_key(frame: DataFrame, key: Column, limit: Column) -> DataFrame:
    """Rows of ``frame`` ranked by ``key`` within ``node`` (ties by ``nbr``), rank <= limit."""
    window = Window.partitionBy("node").orderBy(F.col("_key").desc(), "nbr")
    ranked = frame.withColumn("_key", key).withColumn("rank", F.row_number().over(window))
    return ranked.where(F.col("rank") <= limit).drop("_key")


def first_hop_ranking(adjacency: DataFrame, role: str, settings: SamplingSettings) -> DataFrame:
    """``node``, ``nbr``, ``w``, ``rank``: each node's first ``k_max`` neighbours in draw order."""
    key = draw_key(settings.seed, role, 1, "node", "nbr", "w")
    return _top_by_key(adjacency, key, F.lit(settings.k_max))


def sample_role(
    sampler_input: SamplerInput, role: str, settings: SamplingSettings
) -> SamplerOutput:
    """All hops of one role; hop by hop, each cut from the plan by a local checkpoint."""
    budgets = role_budgets(sampler_input, role).localCheckpoint()
    ranking = first_hop_ranking(role_adjacency(sampler_input, role, settings), role, settings)
    ranking = ranking.localCheckpoint()

    hop1 = (
        ranking.join(budgets.select("node", "budget"), "node")
        .where(F.col("rank") <= F.col("budget"))
        .select("node", F.col("rank"), "nbr", F.col("w").alias("weight"))
    )
    hops = [hop1.withColumn("hop", F.lit(1)).localCheckpoint()]
    # Budget each node still has for the next hop: its law's budget plus what went unused.
    state = budgets.select("node", "budget", F.col("budget").alias("hop_budget"))
    for hop in range(2, settings.hops + 1):
        previous = hops[-1]
        state = _next_hop_budget(state, previous, settings)
        picks = _sample_farther_hop(previous, hops, ranking, state, role, hop, settings)
        hops.append(picks.withColumn("hop", F.lit(hop)).localCheckpoint())
    picks = hops[0]
    for frame in hops[1:]:
        picks = picks.unionByName(frame)
    return SamplerOutput(
        picks.select(F.lit(role).alias("role"), "node", "hop", "rank", "nbr", "weight"),
        budgets.select(F.lit(role).alias("role"), "node", "degree", "budget"),
    )


def _next_hop_budget(
    state: DataFrame, previous: DataFrame, settings: SamplingSettings
) -> DataFrame:
    """``hop_budget`` of the next hop: the law's budget, plus the unused part when filling."""
    if not settings.fill_from_farther_hops:
        return state.select("node", "budget", F.col("budget").alias("hop_budget"))
    taken = previous.groupBy("node").agg(F.count(F.lit(1)).alias("taken"))
    unused = F.greatest(F.col("hop_budget") - F.coalesce(F.col("taken"), F.lit(0)), F.lit(0))
    carried = F.least(F.col("budget") + unused, F.lit(settings.k_max))
    return state.join(taken, "node", "left").select("node", "budget", carried.alias("hop_budget"))


def _sample_farther_hop(
    previous: DataFrame,
    hops: list[DataFrame],
    ranking: DataFrame,
    state: DataFrame,
    role: str,
    hop: int,
    settings: SamplingSettings,
) -> DataFrame:
    """One hop beyond the first: draw from what the previous hop's nodes offer."""
    frontier = previous.select("node", F.col("nbr").alias("via"))
    size = frontier.groupBy("node").agg(F.count(F.lit(1)).alias("frontier"))
    share = F.least(
        F.ceil(F.lit(settings.oversample) * F.col("hop_budget") / F.col("frontier")),
        F.lit(settings.k_max),
    )
    offers_per_via = state.join(size, "node").select("node", "hop_budget", share.alias("share"))
    offered = (
        frontier.join(offers_per_via, "node")
        .join(
            ranking.select(F.col("node").alias("via"), "nbr", "w", F.col("rank").alias("via_rank")),
            "via",
        )
        .where((F.col("via_rank") <= F.col("share")) & (F.col("nbr") != F.col("node")))
        .select("node", "nbr", "w", "hop_budget", F.lit(False).alias("_earlier"))
    )
    # Nodes of earlier hops join the candidates flagged, instead of an anti-join: after one
    # shuffle by node, the grouping below and the ranking window need no other.
    earlier = [
        frame.select(
            "node",
            "nbr",
            F.lit(0.0).alias("w"),
            F.lit(None).cast("int").alias("hop_budget"),
            F.lit(True).alias("_earlier"),
        )
        for frame in hops
    ]
    pooled = offered
    for frame in earlier:
        pooled = pooled.unionByName(frame)
    candidates = (
        pooled.repartition("node")
        .groupBy("node", "nbr")
        .agg(
            F.max("_earlier").alias("_earlier"),
            F.sum("w").alias("w"),
            F.max("hop_budget").alias("hop_budget"),
        )
        .where(~F.col("_earlier"))
    )
    key = draw_key(settings.seed, role, hop, "node", "nbr", "w")
    drawn = _top_by_key(candidates, key, F.col("hop_budget"))
    return drawn.select("node", "rank", "nbr", F.col("w").alias("weight"))


def sample_neighbourhoods(sampler_input: SamplerInput, settings: SamplingSettings) -> SamplerOutput:
    """Both roles of every node; the picks and budgets of the two roles stacked."""
    outputs = []
    for role in ROLES:
        with timed(log, f"sampling {settings.hops} hops as {role}"):
            outputs.append(sample_role(sampler_input, role, settings))
    first, second = outputs
    return SamplerOutput(
        first.picks.unionByName(second.picks), first.budgets.unionByName(second.budgets)
    )
