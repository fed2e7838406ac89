"""The degree-aware sampler on small graphs with known answers, on the real Spark plan."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from scipy.stats import chisquare

from recbatch.config import load_config
from recbatch.graph.budget import SOURCE, TARGET, DegreeLaw, degree_law
from recbatch.graph.samples import sample_rows
from recbatch.graph.sampling import SamplerInput, SamplerOutput, sample_neighbourhoods
from recbatch.graph.settings import SamplingSettings
from recbatch.graph.stats import PowerLawFit


def _graph(
    spark: SparkSession, edges: list[tuple[int, int, float]], n_nodes: int
) -> tuple[DataFrame, DataFrame]:
    """(nodes with training degrees, edges) as the samples stage reads them."""
    frame = spark.createDataFrame(edges, "src_index long, dst_index long, weight double")
    out_deg = frame.groupBy(F.col("src_index").alias("node_index")).agg(
        F.count("*").alias("out_degree")
    )
    in_deg = frame.groupBy(F.col("dst_index").alias("node_index")).agg(
        F.count("*").alias("in_degree")
    )
    nodes = (
        spark.range(n_nodes)
        .withColumnRenamed("id", "node_index")
        .join(out_deg, "node_index", "left")
        .join(in_deg, "node_index", "left")
        .fillna(0, ["out_degree", "in_degree"])
    )
    return nodes, frame


def _sample(
    spark: SparkSession,
    edges: list[tuple[int, int, float]],
    n_nodes: int,
    settings: SamplingSettings,
    laws: dict[str, DegreeLaw] | None = None,
) -> SamplerOutput:
    nodes, frame = _graph(spark, edges, n_nodes)
    constant = DegreeLaw(settings.k_max, settings.k_max, 0.0)
    laws = laws or {SOURCE: constant, TARGET: constant}
    return sample_neighbourhoods(SamplerInput(nodes, frame, laws), settings)


def _picks(sample: SamplerOutput) -> list[tuple[str, int, int, int, int]]:
    """(role, node, hop, rank, nbr), sorted."""
    rows = sample.picks.select("role", "node", "hop", "rank", "nbr").collect()
    return sorted(tuple(r) for r in rows)


def test_roles_follow_edge_direction_on_an_asymmetric_chain(spark: SparkSession) -> None:
    # 0 -> 1 -> 2 -> 3: as a source, 0 reaches 1 then 2; as a target, 3 is reached from 2 then 1.
    settings = SamplingSettings(hops=3, k_min=2, k_max=2)
    picks = _picks(_sample(spark, [(0, 1, 1.0), (1, 2, 1.0), (2, 3, 1.0)], 4, settings))
    source = {(node, hop, nbr) for role, node, hop, _, nbr in picks if role == SOURCE}
    target = {(node, hop, nbr) for role, node, hop, _, nbr in picks if role == TARGET}
    assert source == {(0, 1, 1), (0, 2, 2), (0, 3, 3), (1, 1, 2), (1, 2, 3), (2, 1, 3)}
    assert target == {(3, 1, 2), (3, 2, 1), (3, 3, 0), (2, 1, 1), (2, 2, 0), (1, 1, 0)}


def test_weighted_draws_match_the_weights_on_stars(spark: SparkSession) -> None:
    """2000 stars, leaves weighted 1..5, one draw each: the first pick is leaf i with p = i / 15."""
    stars, leaves = 2000, 5
    edges = [
        (star * (leaves + 1), star * (leaves + 1) + leaf, float(leaf))
        for star in range(stars)
        for leaf in range(1, leaves + 1)
    ]
    settings = SamplingSettings(hops=2, k_min=1, k_max=1, probability="weight", law="constant")
    sample = _sample(spark, edges, stars * (leaves + 1), settings)
    first = sample.picks.where((F.col("role") == SOURCE) & (F.col("hop") == 1))
    drawn = Counter(int(r["nbr"]) % (leaves + 1) for r in first.select("nbr").collect())
    observed = np.array([drawn[leaf] for leaf in range(1, leaves + 1)])
    assert observed.sum() == stars
    weights = np.arange(1, leaves + 1) / (leaves * (leaves + 1) / 2)
    assert chisquare(observed, weights * stars).pvalue > 1e-3
    # The test has power: the same draws are far from uniform.
    assert chisquare(observed, np.full(leaves, stars / leaves)).pvalue < 1e-9


def test_budgets_follow_the_degree_law_and_fill_from_farther_hops(spark: SparkSession) -> None:
    # Hub 0 -> 1..30; leaf 31 -> 0 only. 1..30 each -> 32.., so hop 2 of 31 has 30 candidates.
    edges = [(0, i, 1.0) for i in range(1, 31)] + [(31, 0, 1.0)]
    edges += [(i, 31 + i, 1.0) for i in range(1, 31)]
    settings = SamplingSettings(hops=2, k_min=3, k_max=12, law="power", exponent=0.5)
    law = degree_law(settings, None)
    sample = _sample(spark, edges, 62, settings, {SOURCE: law, TARGET: law})
    budgets = {
        r["node"]: r["budget"] for r in sample.budgets.where(F.col("role") == SOURCE).collect()
    }
    assert budgets[0] == law.value(30) == round(3 + 9 * 30**-0.5)
    assert budgets[31] == 12 and budgets[45] == 12  # degree 1, and degree 0 (isolated as source)
    counts = Counter((node, hop) for role, node, hop, _, _ in _picks(sample) if role == SOURCE)
    assert counts[(0, 1)] == law.value(30)  # a hub samples its budget from many neighbours
    assert counts[(31, 1)] == 1  # fewer neighbours than budget: all of them
    assert counts[(31, 2)] == 12  # the unused 11 move to hop 2 (capped at k_max = width)
    assert counts[(45, 1)] == 0 and counts[(45, 2)] == 0

    no_fill = settings.model_copy(update={"fill_from_farther_hops": False})
    sample = _sample(spark, edges, 62, no_fill, {SOURCE: law, TARGET: law})
    counts = Counter((node, hop) for role, node, hop, _, _ in _picks(sample) if role == SOURCE)
    assert counts[(31, 2)] == 12  # budget 12 at every hop without carry, still capped by width
    assert counts[(1, 2)] == 0  # 1 -> 32, and 32 has no out-edges


def test_sampling_is_deterministic_and_seed_dependent(spark: SparkSession) -> None:
    rng = np.random.default_rng(3)
    edges = sorted({(int(a), int(b), 1.0) for a, b in rng.integers(0, 60, (400, 2)) if a != b})
    settings = SamplingSettings(hops=2, k_min=2, k_max=5, law="constant", probability="uniform")
    first = _picks(_sample(spark, edges, 60, settings))
    assert first == _picks(_sample(spark, edges, 60, settings))
    other = settings.model_copy(update={"seed": 1})
    assert first != _picks(_sample(spark, edges, 60, other))


def test_no_self_samples_and_every_neighbour_is_reachable_at_its_hop(spark: SparkSession) -> None:
    rng = np.random.default_rng(5)
    pairs = {(int(a), int(b)) for a, b in rng.integers(0, 40, (200, 2))}
    edges = sorted((a, b, 1.0) for a, b in pairs if a != b)
    out_nbrs: dict[int, set[int]] = {}
    for a, b, _ in edges:
        out_nbrs.setdefault(a, set()).add(b)
    in_nbrs: dict[int, set[int]] = {}
    for a, b, _ in edges:
        in_nbrs.setdefault(b, set()).add(a)
    settings = SamplingSettings(hops=3, k_min=2, k_max=4, law="constant")
    for role, node, hop, _, nbr in _picks(_sample(spark, edges, 40, settings)):
        assert nbr != node
        adjacency = out_nbrs if role == SOURCE else in_nbrs
        reach = {node}
        for _ in range(hop):
            reach = set().union(*(adjacency.get(x, set()) for x in reach))
        assert nbr in reach, (role, node, hop, nbr)


def test_inverse_degree_probability_and_fixed_shapes(spark: SparkSession) -> None:
    # 0 -> 1, 0 -> 2; 3 -> 2: node 2 has in-degree 2, node 1 in-degree 1.
    settings = SamplingSettings(hops=2, k_min=3, k_max=3, law="constant")
    sample = _sample(spark, [(0, 1, 1.0), (0, 2, 1.0), (3, 2, 1.0)], 5, settings)
    weights = {
        r["nbr"]: r["weight"]
        for r in sample.picks.where((F.col("role") == SOURCE) & (F.col("node") == 0)).collect()
    }
    assert weights == {1: 1.0, 2: 0.5}
    nodes = spark.range(5).select(
        F.col("id").alias("node_index"), (F.col("id") + 100).alias("node_id")
    )
    rows = {(r["role"], r["node_index"]): r for r in sample_rows(sample, nodes, 2, 3).collect()}
    assert len(rows) == 10  # every node, both roles, isolated node 4 included
    zero = rows[(SOURCE, 0)]
    assert zero["node_id"] == 100 and zero["hop_counts"] == [2, 0]
    assert sorted(zero["neighbour_index"][:2]) == [1, 2] and zero["neighbour_index"][2:] == [-1] * 4
    assert zero["neighbour_mask"] == [True, True, False, False, False, False]
    lonely = rows[(TARGET, 4)]
    assert lonely["hop_counts"] == [0, 0] and lonely["neighbour_mask"] == [False] * 6
    assert len(lonely["neighbour_weight"]) == 6


def test_fitted_law_needs_a_fit_and_takes_its_exponent() -> None:
    settings = load_config(None, ["sampling.k_min=2", "sampling.k_max=10"]).sampling
    law = degree_law(settings, PowerLawFit(alpha=3.0, d_min=2, tail_nodes=100, ks_distance=0.1))
    assert law.exponent == pytest.approx(0.5)
    assert [law.value(d) for d in (1, 4, 16, 64)] == [10, 6, 4, 3]
    with pytest.raises(Exception, match="too small to fit"):
        degree_law(settings, None)
    constant = degree_law(settings.model_copy(update={"law": "constant"}), None)
    assert constant.value(1) == constant.value(1000) == 10
