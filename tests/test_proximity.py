"""Training-free proximity (``recbatch.proximity``): PPR, the floor's scorers, pair features, and
BLADE's pair scorer and re-ranked top K, checked against independent brute-force references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from recbatch.blade.evaluate import score_pairs
from recbatch.blade.recommend import reranked_top_k
from recbatch.blade.rerank import RerankScorer, RerankWeights, fit_listwise, training_pairs
from recbatch.proximity.features import GRAPH_FEATURES, PairFeatures
from recbatch.proximity.graph import TrainingGraph, training_graph
from recbatch.proximity.scorers import (
    AdamicAdarScorer,
    DotScorer,
    PPRPotentialScorer,
    PPRScorer,
    by_source_block,
)
from recbatch.proximity.settings import ProximitySettings

# 0 -> 1 -> 2, 0 -> 3, 4 -> 3, 4 -> 1, 5 -> 2, 2 -> 0; node 6 has no edge
EDGES = np.array([(0, 1), (1, 2), (0, 3), (4, 3), (4, 1), (5, 2), (2, 0)])
N = 7


def small_graph() -> TrainingGraph:
    return TrainingGraph.from_edges(EDGES[:, 0], EDGES[:, 1], N)


def dense_ppr(edges: np.ndarray, n: int, source: int, alpha: float, iters: int) -> np.ndarray:
    """An independent reference: the walk on the undirected graph as a dense matrix."""
    a = np.zeros((n, n))
    for u, v in edges:
        a[u, v] = a[v, u] = 1.0
    degree = a.sum(1)
    p = np.divide(a, degree[:, None], out=np.zeros_like(a), where=degree[:, None] > 0)
    e = np.zeros(n)
    e[source] = 1.0
    x = e.copy()
    for _ in range(iters):
        x = (1 - alpha) * p.T @ x + alpha * e
    return x


def all_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    u, v = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return u.ravel(), v.ravel()


def test_ppr_scorer_equals_a_dense_power_iteration_in_any_block_size() -> None:
    u, v = all_pairs(N)
    expected = np.concatenate([dense_ppr(EDGES, N, s, 0.15, 40) for s in range(N)])
    for block_values in (N, 3 * N, 10**6):  # one source per block, three, all at once
        settings = ProximitySettings(block_values=max(block_values, 1024))
        scores = PPRScorer(small_graph(), settings)(u, v)
        np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-7)
    # an isolated node keeps only its restart mass, as the referee's walk does
    assert PPRScorer(small_graph(), ProximitySettings())(np.array([6]), np.array([6]))[0] == (
        pytest.approx(0.15)
    )


def test_ppr_potential_is_standardised_log_ppr_plus_the_degree_potential() -> None:
    graph, settings = small_graph(), ProximitySettings(potential_weight=0.5)
    row = np.log(dense_ppr(EDGES, N, 4, 0.15, 40) + 1e-12)
    z = (row - row.mean()) / (row.std() + 1e-12)
    indeg = np.bincount(EDGES[:, 1], minlength=N)
    outdeg = np.bincount(EDGES[:, 0], minlength=N)
    phi = np.log((indeg + 1) / (outdeg + 1))
    targets = np.arange(N)
    got = PPRPotentialScorer(graph, settings)(np.full(N, 4), targets)
    np.testing.assert_allclose(got, z + 0.5 * (phi - phi[4]), rtol=1e-5, atol=1e-5)


def test_adamic_adar_by_hand() -> None:
    # undirected neighbours: 0 {1,2,3}, 1 {0,2,4}, 2 {0,1,5}, 3 {0,4}, 4 {1,3}, 5 {2}
    got = AdamicAdarScorer(small_graph(), ProximitySettings())(
        np.array([0, 0, 4, 5]), np.array([4, 5, 0, 1])
    )
    # 0 ~ 4 through 1 (deg 3) and 3 (deg 2); 0 ~ 5 through 2 (deg 3); 5 ~ 1 through 2
    expected = [
        1 / np.log(3) + 1 / np.log(2),
        1 / np.log(3),
        1 / np.log(3) + 1 / np.log(2),
        1 / np.log(3),
    ]
    np.testing.assert_allclose(got, expected)


def test_pair_features_count_two_hop_paths_per_direction_by_hand() -> None:
    features = PairFeatures(small_graph(), ProximitySettings())
    names = list(features.names)
    assert tuple(names) == GRAPH_FEATURES
    pairs = {
        # (u, v): (forward u->w->v, cocited u<-w->v, coupled u->w<-v, backward u<-w<-v)
        (0, 2): (1, 0, 0, 0),  # 0 -> 1 -> 2
        (1, 3): (0, 2, 0, 0),  # 0 -> 1, 0 -> 3 and 4 -> 1, 4 -> 3
        (0, 4): (0, 0, 2, 0),  # 0 -> 1 <- 4 and 0 -> 3 <- 4
        (2, 1): (1, 0, 0, 0),  # 2 -> 0 -> 1 (1 -> 2 is direct: no two-hop path back)
        (5, 0): (1, 0, 0, 0),  # 5 -> 2 -> 0
        (6, 0): (0, 0, 0, 0),
    }
    u = np.array([p[0] for p in pairs])
    v = np.array([p[1] for p in pairs])
    got = features(u, v)
    cols = [
        names.index(n)
        for n in ("paths_forward", "paths_cocited", "paths_coupled", "paths_backward")
    ]
    np.testing.assert_allclose(got[:, cols], np.log1p(np.array(list(pairs.values()), float)))
    indeg = np.bincount(EDGES[:, 1], minlength=N)
    outdeg = np.bincount(EDGES[:, 0], minlength=N)
    np.testing.assert_allclose(got[:, names.index("target_in_log")], np.log1p(indeg[v]))
    np.testing.assert_allclose(got[:, names.index("source_out_log")], np.log1p(outdeg[u]))
    phi = np.log((indeg + 1) / (outdeg + 1))
    np.testing.assert_allclose(got[:, names.index("potential_diff")], phi[v] - phi[u])


def test_two_hop_counts_equal_matrix_products_on_a_random_graph() -> None:
    rng = np.random.default_rng(0)
    n = 40
    edges = rng.integers(0, n, size=(200, 2))
    graph = TrainingGraph.from_edges(edges[:, 0], edges[:, 1], n)
    a = np.zeros((n, n))
    a[edges[:, 0], edges[:, 1]] = 1.0
    np.fill_diagonal(a, 0.0)
    u, v = all_pairs(n)
    features = PairFeatures(graph, ProximitySettings(block_values=1024))  # many blocks
    got = features(u, v)
    names = list(features.names)
    for name, m in [
        ("paths_forward", a @ a),
        ("paths_cocited", a.T @ a),
        ("paths_coupled", a @ a.T),
        ("paths_backward", a.T @ a.T),
        ("paths_three", a @ a.T @ a),
    ]:
        np.testing.assert_allclose(got[:, names.index(name)], np.log1p(m[u, v]), err_msg=name)
    spread_in = np.diag(1.0 / np.maximum(a.sum(0), 1.0))
    spread_out = np.diag(1.0 / np.maximum(a.sum(1), 1.0))
    resource = a @ spread_in @ a.T @ spread_out @ a
    np.testing.assert_allclose(
        got[:, names.index("paths_three_ra")], np.log1p(100.0 * resource[u, v]), rtol=1e-6
    )
    floor = AdamicAdarScorer(graph, ProximitySettings())(u, v)
    np.testing.assert_allclose(got[:, names.index("adamic_adar")], floor, rtol=1e-6)


def test_by_source_block_keeps_the_callers_order() -> None:
    u = np.array([5, 1, 5, 0, 1])
    v = np.array([0, 1, 2, 3, 4])
    out = by_source_block(u, v, 6, 1, lambda s, row, t: s[row] * 10.0 + t)
    np.testing.assert_array_equal(out, u * 10.0 + v)


def _rerank_scorer(graph: TrainingGraph, seed: int = 1) -> RerankScorer:
    rng = np.random.default_rng(seed)
    dot = DotScorer(
        "blade", rng.normal(size=(graph.num_nodes, 3)), rng.normal(size=(graph.num_nodes, 3))
    )
    features = PairFeatures(graph, ProximitySettings(), dot)
    weights = RerankWeights(
        features=features.names,
        coefficients=tuple(rng.normal(size=len(features.names))),
        intercept=0.3,
        val_edges=1,
        training_pairs=1,
    )
    return RerankScorer("blade", features, weights)


def test_rerank_scorer_is_its_weights_times_the_features() -> None:
    graph = small_graph()
    scorer = _rerank_scorer(graph)
    u, v = all_pairs(N)
    expected = scorer.features(u, v) @ np.asarray(scorer.weights.coefficients) + 0.3
    np.testing.assert_allclose(scorer(u, v), expected)
    with pytest.raises(ValueError, match="features"):
        RerankScorer("blade", PairFeatures(graph, ProximitySettings()), scorer.weights)


def test_reranked_top_k_equals_brute_force_scoring_of_the_candidates() -> None:
    rng = np.random.default_rng(2)
    n = 30
    edges = rng.integers(0, n, size=(90, 2))
    graph = TrainingGraph.from_edges(edges[:, 0], edges[:, 1], n)
    scorer = _rerank_scorer(graph, seed=4)
    sources = np.array([0, 3, 7, 29])
    retrieved = [rng.choice(n, 6, replace=False) for _ in sources]
    walk = ProximitySettings()
    u, v, s = reranked_top_k(
        scorer, graph, walk, sources, retrieved, k=4, walk_candidates=5, exclude_known=True
    )
    ppr = PPRScorer(graph, walk)
    for i, src in enumerate(sources):
        row = ppr(np.full(n, src), np.arange(n))
        candidates = set(retrieved[i]) | set(np.argsort(-row, kind="stable")[:6])  # walk: top 6
        candidates -= {src} | set(
            graph.forward.indices[graph.forward.indptr[src] : graph.forward.indptr[src + 1]]
        )
        cands = np.array(sorted(candidates))
        brute = scorer(np.full(len(cands), src), cands)
        order = np.lexsort((cands, -brute))[:4]
        np.testing.assert_array_equal(v[u == src], cands[order])
        np.testing.assert_allclose(s[u == src], brute[order])


def test_spark_pair_scores_and_training_graph_equal_the_local_ones(spark: SparkSession) -> None:
    edges = spark.createDataFrame(
        pd.DataFrame(
            np.vstack([EDGES, EDGES[:2]]), columns=["src_index", "dst_index"]
        ),  # duplicates
        "src_index long, dst_index long",
    )
    graph = training_graph(edges, N)
    assert graph.forward.nnz == len(EDGES)
    u, v = all_pairs(N)
    pairs = spark.createDataFrame(
        pd.DataFrame({"src_index": u, "dst_index": v}), "src_index long, dst_index long"
    )
    scored = score_pairs(spark, pairs, PPRScorer(graph, ProximitySettings())).toPandas()
    expected = {(s, t): dense_ppr(EDGES, N, s, 0.15, 40)[t] for s, t in zip(u, v, strict=True)}
    got = {
        (int(a), int(b)): c
        for a, b, c in scored[["src_index", "dst_index", "score"]].itertuples(index=False)
    }
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7)


def test_training_pairs_label_and_weight_each_val_edge(spark: SparkSession) -> None:
    graph = small_graph()
    features = PairFeatures(graph, ProximitySettings())
    val = spark.createDataFrame(
        pd.DataFrame(
            {"edge_id": [0, 1], "src_index": [5, 1], "dst_index": [0, 3], "one_way": [True, False]}
        ),
        "edge_id long, src_index long, dst_index long, one_way boolean",
    )
    every = spark.createDataFrame(
        pd.DataFrame(np.vstack([EDGES, [(5, 0), (1, 3)]]), columns=["src_index", "dst_index"]),
        "src_index long, dst_index long",
    )
    pairs = training_pairs(
        spark, val, every, N, features, negatives=3, reverse_weight=0.5, seed=0
    ).toPandas()
    positives = pairs[pairs.label == 1]
    assert len(positives) == 2 and (positives.weight == 1).all()
    negatives = pairs[pairs.label == 0]
    # 3 drawn targets per edge weighing 1/3 each, and the one-way edge's reverse at 0.5
    assert sorted(negatives.weight.round(6)) == sorted([round(1 / 3, 6)] * 6 + [0.5])
    assert sorted(negatives.kind) == [1] * 6 + [2] and (positives.kind == 0).all()
    assert list(pairs.columns[4:]) == list(features.names)
    assert sorted(set(pairs.edge_id)) == [0, 1]


def test_listwise_fit_ranks_each_val_edge_above_its_list() -> None:
    rng = np.random.default_rng(7)
    rows = []
    for edge in range(60):
        # feature a separates the val edge from its targets; b is noise; the reverse scores
        # high on a too, and only c (a direction cue) tells it apart
        rows.append((edge, 0, rng.normal(4.0, 0.5), rng.normal(), 1.0))
        rows += [(edge, 1, rng.normal(0.0), rng.normal(), 1.0) for _ in range(20)]
        rows.append((edge, 2, rng.normal(4.0, 0.5), rng.normal(), -1.0))
    frame = pd.DataFrame(rows, columns=["edge_id", "kind", "a", "b", "c"])
    w = fit_listwise(frame, ["a", "b", "c"], reverse_candidates=20.0, regularisation=1e-4)
    assert w[0] > 0 and w[2] > 0 and abs(w[1]) < w[0] / 3
    scores = frame[["a", "b", "c"]].to_numpy() @ w
    best = frame.assign(score=scores).sort_values("score").groupby("edge_id").tail(1)
    assert (best["kind"] == 0).mean() > 0.9
    # without the reverse in the list, nothing in the list tells c apart: no weight on it
    w0 = fit_listwise(frame, ["a", "b", "c"], reverse_candidates=0.0, regularisation=1e-4)
    assert abs(w0[2]) < 1e-6 < w[2]
