"""BLADE: orientation, loss, Petastorm sharding, resume, top-K, the stages, and the referee."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import PROJECT_ROOT, make_test_config
from pyspark.sql import SparkSession

from recbatch.blade.compose import (
    channel_changes,
    channel_moments,
    compose_vectors,
    degree_potential,
    moments_of,
)
from recbatch.blade.data import EDGE_COLUMNS, edge_batches, edge_dataset, load_graph_samples
from recbatch.blade.evaluate import (
    KS,
    matrices_from_embeddings,
    score_held_out_edges,
    summarise,
    with_buckets,
)
from recbatch.blade.heldout import held_out_from_linkpred
from recbatch.blade.loss import link_loss
from recbatch.blade.model import BladeModel, GraphSamples, NodeSamples
from recbatch.blade.recommend import (
    TopK,
    blocked_top_k,
    top_columns,
    top_k_block,
    top_k_recommendations,
)
from recbatch.blade.reuse import load_trained_model, trained_model_folder
from recbatch.blade.settings import BladeSettings, RecommendationSettings
from recbatch.blade.stage import (
    blade_stage,
    evaluation_stage,
    export_path,
    node_input_candidates,
    recommendations_stage,
    settings_digest,
    variant_plan,
    with_node_inputs,
)
from recbatch.blade.target_blocks import TargetBlocks, ivf_index, write_target_blocks
from recbatch.blade.train import TrainJob, train_blade
from recbatch.config import RecbatchConfig
from recbatch.graph.stage import graph_stage, samples_stage
from recbatch.links.stage import link_decisions_stage, link_scores_stage, link_thresholds_stage

REFEREE = PROJECT_ROOT.parent / "shared" / "linkpred"


# --- tiny inputs written as Spark would, read back through Petastorm -------------------------------


def _write_samples(
    folder: Path,
    out: dict[int, list[int]],
    into: dict[int, list[int]],
    n: int,
    width: int,
    hops: int = 2,
    files: int = 2,
) -> str:
    """Sample rows (``recbatch.graph.samples`` layout) with the given hop-1 neighbours."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for role_id, nbrs in ((0, out), (1, into)):
        for node in range(n):
            slots = np.full(hops * width, -1, dtype=np.int64)
            picked = nbrs.get(node, [])[:width]
            slots[: len(picked)] = picked
            rows.append((role_id, node, len(nbrs.get(node, [])), slots, slots >= 0))
    frame = pd.DataFrame(
        rows, columns=["role_id", "node_index", "degree", "neighbour_index", "neighbour_mask"]
    )
    for part, rows in enumerate(np.array_split(np.arange(len(frame)), files)):
        chunk = frame.iloc[rows].reset_index(drop=True)
        pq.write_table(pa.Table.from_pandas(chunk), folder / f"part-{part}.parquet")
    return str(folder)


def _write_edges(folder: Path, edges: list[tuple[int, int]], files: int = 2) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    keys = set(edges)
    frame = pd.DataFrame(
        {
            "src_index": [u for u, _ in edges],
            "dst_index": [v for _, v in edges],
            "weight": np.ones(len(edges), dtype=np.float32),
            "one_way": [(v, u) not in keys for u, v in edges],
        }
    )
    for part, rows in enumerate(np.array_split(np.arange(len(frame)), files)):
        chunk = frame.iloc[rows].reset_index(drop=True)
        pq.write_table(pa.Table.from_pandas(chunk), folder / f"part-{part}.parquet")
    return str(folder)


def _one_way_graph(tmp_path: Path, pairs: int = 12) -> tuple[TrainJob, list[tuple[int, int]]]:
    """``pairs`` disjoint edges 2i -> 2i+1 and nothing else."""
    n = 2 * pairs
    edges = [(2 * i, 2 * i + 1) for i in range(pairs)]
    out = {u: [v] for u, v in edges}
    into = {v: [u] for u, v in edges}
    settings = BladeSettings(
        dim=16, epochs=60, batch_size=8, negatives=4, learning_rate=0.02, num_processes=1
    )
    settings = settings.model_copy(update=channel_changes(settings)["direction"])
    job = TrainJob(
        samples_path=_write_samples(tmp_path / "samples", out, into, n, width=3),
        edges_path=_write_edges(tmp_path / "edges", edges),
        checkpoint_dir=str(tmp_path / "checkpoints"),
        embeddings_path=str(tmp_path / "embeddings"),
        num_nodes=n,
        hops=2,
        settings=settings,
        fingerprint="test",
    )
    return job, edges


def _embeddings(job: TrainJob) -> tuple[np.ndarray, np.ndarray]:
    table = pd.read_parquet(Path(job.embeddings_path) / "embeddings.parquet")
    return np.stack(table["source"].to_numpy()), np.stack(table["target"].to_numpy())


# --- model, loss, data ----------------------------------------------------------------------------


def _ranks_of_one_way_edges(
    sources: np.ndarray, targets: np.ndarray, edges: list[tuple[int, int]]
) -> tuple[list[int], list[int], np.ndarray]:
    scores = sources @ targets.T
    np.fill_diagonal(scores, -np.inf)

    def rank(query: int, target: int) -> int:
        return int((scores[query] > scores[query, target]).sum()) + 1

    return [rank(u, v) for u, v in edges], [rank(v, u) for u, v in edges], scores


@pytest.mark.parametrize("sparse", [True, False])
def test_sparse_id_rows_move_only_the_rows_a_step_touched(sparse: bool) -> None:
    """Two steps on batches of different nodes. With sparse ID rows (lazy Adam) the rows the
    second batch does not touch keep the values the first step gave them, and the ID tables'
    gradients are sparse; with dense Adam the first step's moments keep moving them."""
    from recbatch.blade.train import RowwiseAdam

    samples = GraphSamples(
        NodeSamples(torch.full((8, 2), -1), torch.zeros(8, 2, dtype=torch.bool), 2),
        NodeSamples(torch.full((8, 2), -1), torch.zeros(8, 2, dtype=torch.bool), 2),
    )
    torch.manual_seed(0)
    model = BladeModel(8, dim=4, layers=2, hops=2, embedding="directional", sparse_ids=sparse)
    optimizer = RowwiseAdam(model, learning_rate=0.1, weight_decay=0.0)
    assert optimizer.mode == ("sparse" if sparse else "dense")
    rows = model.source_input.ids.weight

    def step(nodes: list[int]) -> None:
        optimizer.zero_grad()
        sources, targets = model(samples, torch.tensor(nodes))
        (sources * targets).sum().backward()
        assert rows.grad is not None and rows.grad.is_sparse == sparse
        optimizer.step()

    step([0, 1])
    after_first = rows.detach().clone()
    step([2, 3])
    moved = (rows.detach() != after_first).any(dim=1)
    assert moved[2:4].all()
    assert bool(moved[:2].any()) != sparse  # dense Adam's momentum moves rows 0 and 1 again
    assert not moved[4:].any()  # never touched: zero moments either way


def test_trained_model_ranks_v_for_u_and_not_u_for_v(tmp_path: Path) -> None:
    job, edges = _one_way_graph(tmp_path)
    train_blade(job)
    forward, backward, scores = _ranks_of_one_way_edges(*_embeddings(job), edges)
    for (u, v), ahead, behind in zip(edges, forward, backward, strict=True):
        assert scores[u, v] > scores[v, u] + 1.0, (u, v)
        assert ahead < behind, (u, v, ahead, behind)
    n = 2 * len(edges)
    assert np.median(forward) <= 3, forward  # v near the top of u's list
    assert np.median(backward) >= n / 4, backward  # u far down v's


def test_a_model_with_degree_inputs_embeds_a_newer_graph_without_retraining(
    tmp_path: Path,
) -> None:
    """Trained on 12 one-way pairs with node_inputs=degrees, the same weights embed a newer graph
    with a 13th pair it never saw: the new pair's vectors are those of a seen pair of the same
    shape, so it gets the learnt direction (v ahead of u in the score); a model with ids refuses
    the newer graph, naming the setting."""
    from recbatch.blade.train import NewerGraph, embed_graph

    job, edges = _one_way_graph(tmp_path)
    job = replace(job, settings=job.settings.model_copy(update={"node_inputs": "degrees"}))
    train_blade(job)
    newer_edges = [*edges, (24, 25)]
    out = {u: [v] for u, v in newer_edges}
    into = {v: [u] for u, v in newer_edges}
    newer = _write_samples(tmp_path / "newer_samples", out, into, 26, width=3)
    assert embed_graph(job, NewerGraph(newer, 26, str(tmp_path / "newer"))) == 26
    sources, targets = _embeddings(replace(job, embeddings_path=str(tmp_path / "newer")))
    seen_s, seen_t = _embeddings(job)
    assert sources.shape[0] == 26
    np.testing.assert_allclose(sources[:24], seen_s, atol=1e-6)  # seen nodes: as at training
    np.testing.assert_allclose(sources[24], seen_s[0], atol=1e-6)  # the new u is shaped like 0
    np.testing.assert_allclose(targets[25], seen_t[1], atol=1e-6)  # the new v like 1
    assert sources[24] @ targets[25] > sources[25] @ targets[24] + 1.0

    with_ids, _ = _one_way_graph(tmp_path / "ids")
    train_blade(with_ids)
    with pytest.raises(ValueError, match="node_inputs=ids"):
        embed_graph(with_ids, NewerGraph(newer, 26, str(tmp_path / "ids_newer")))


def test_a_newer_graph_that_numbers_nodes_afresh_reads_each_node_s_own_id_row(
    tmp_path: Path,
) -> None:
    """A newer run date numbers its nodes afresh: a product new since training sorts first and
    shifts every index by one. Through its model rows (node -> its row in the trained model,
    -1 for the new one) every product gets exactly the vectors it had at training; read by
    index instead, each would take its neighbour's ID row."""
    from recbatch.blade.train import NewerGraph, embed_graph

    job, edges = _one_way_graph(tmp_path)
    job = replace(job, settings=job.settings.model_copy(update={"node_inputs": "ids+degrees"}))
    train_blade(job)
    shifted = [(u + 1, v + 1) for u, v in edges]
    out = {u: [v] for u, v in shifted}
    into = {v: [u] for u, v in shifted}
    newer = _write_samples(tmp_path / "newer_samples", out, into, 25, width=3)
    rows = tmp_path / "model_rows"
    rows.mkdir()
    frame = pd.DataFrame(
        {"node_index": np.arange(25, dtype=np.int64), "model_row": np.arange(-1, 24)}
    )
    pq.write_table(pa.Table.from_pandas(frame), rows / "part-0.parquet")

    embed_graph(job, NewerGraph(newer, 25, str(tmp_path / "by_row"), model_rows_path=str(rows)))
    embed_graph(job, NewerGraph(newer, 25, str(tmp_path / "by_index")))
    seen_s, seen_t = _embeddings(job)
    by_row_s, by_row_t = _embeddings(replace(job, embeddings_path=str(tmp_path / "by_row")))
    by_index_s, _ = _embeddings(replace(job, embeddings_path=str(tmp_path / "by_index")))
    np.testing.assert_allclose(by_row_s[1:], seen_s, atol=1e-6)
    np.testing.assert_allclose(by_row_t[1:], seen_t, atol=1e-6)
    assert not np.allclose(by_index_s[1:], seen_s, atol=1e-3)


def _write_attributes(folder: Path, tokens: list[list[int]], width: int = 3) -> str:
    """Node-attribute rows (``recbatch.blade.data.ATTRIBUTE_COLUMNS``): node i has ``tokens[i]``."""
    folder.mkdir(parents=True, exist_ok=True)
    padded = [np.array((t + [-1] * width)[:width], dtype=np.int64) for t in tokens]
    frame = pd.DataFrame({"node_index": np.arange(len(tokens), dtype=np.int64), "tokens": padded})
    pq.write_table(pa.Table.from_pandas(frame), folder / "part-0.parquet")
    return str(folder)


def test_attribute_inputs_carry_a_brand_to_a_product_new_since_training(tmp_path: Path) -> None:
    """4 brands of 4 sources and 4 targets; every source links to its brand's targets. Trained
    with node_inputs=attributes (tokens: brand, role), the same weights embed a newer graph with
    a brand-2 source that has no edge at all: its best targets are brand 2's, which only its
    catalogue attributes can tell (no edge, and ids would have no row for it)."""
    from recbatch.blade.train import NewerGraph, embed_graph

    def node(brand: int, role: int, j: int) -> int:
        return brand * 8 + role * 4 + j

    edges = [(node(b, 0, i), node(b, 1, j)) for b in range(4) for i in range(4) for j in range(4)]
    tokens = [[b, 4 + role] for b in range(4) for role in range(2) for _ in range(4)]
    out: dict[int, list[int]] = {}
    into: dict[int, list[int]] = {}
    for u, v in edges:
        out.setdefault(u, []).append(v)
        into.setdefault(v, []).append(u)
    settings = BladeSettings(
        dim=16,
        epochs=40,
        batch_size=16,
        negatives=4,
        learning_rate=0.02,
        num_processes=1,
        dropout=0.0,
        node_inputs="attributes",
        attribute_buckets=8,
    )
    settings = settings.model_copy(update=channel_changes(settings)["existence"])
    job = TrainJob(
        samples_path=_write_samples(tmp_path / "samples", out, into, 32, width=4),
        edges_path=_write_edges(tmp_path / "edges", edges),
        checkpoint_dir=str(tmp_path / "checkpoints"),
        embeddings_path=str(tmp_path / "embeddings"),
        num_nodes=32,
        hops=2,
        settings=settings,
        fingerprint="test",
        attributes_path=_write_attributes(tmp_path / "attributes", tokens),
    )
    train_blade(job)
    newer = _write_samples(tmp_path / "newer_samples", out, into, 33, width=4)
    newer_attributes = _write_attributes(tmp_path / "newer_attributes", [*tokens, [2, 4]])
    written = embed_graph(
        job, NewerGraph(newer, 33, str(tmp_path / "newer"), attributes_path=newer_attributes)
    )
    assert written == 33
    sources, targets = _embeddings(replace(job, embeddings_path=str(tmp_path / "newer")))
    scores = targets @ sources[32]
    brand_targets = {b: [node(b, 1, j) for j in range(4)] for b in range(4)}
    ranked = [int(i) for i in np.argsort(-scores) if i % 8 >= 4 and i < 32]  # targets only
    assert sorted(ranked[:4]) == brand_targets[2], scores


def test_composite_ranks_v_for_u_and_not_u_for_v(tmp_path: Path) -> None:
    """BLADE as the pipeline trains it: both channels on the one-way graph, then composed."""
    job, edges = _one_way_graph(tmp_path)
    channels = {}
    for name, changes in channel_changes(job.settings).items():
        channel_job = replace(
            job,
            settings=job.settings.model_copy(update=changes),
            checkpoint_dir=str(tmp_path / name / "checkpoints"),
            embeddings_path=str(tmp_path / name / "embeddings"),
        )
        train_blade(channel_job)
        channels[name] = _embeddings(channel_job)
    (a, b), (p, q) = channels["existence"], channels["direction"]
    n = len(a)
    out_degree = np.bincount([u for u, _ in edges], minlength=n)
    in_degree = np.bincount([v for _, v in edges], minlength=n)
    sources, targets = compose_vectors(
        a,
        b,
        p,
        q,
        degree_potential(in_degree, out_degree),
        moments_of(b, p, q),
        direction_weight=0.5,
        potential_weight=1.0,
    )
    forward, backward, scores = _ranks_of_one_way_edges(sources, targets, edges)
    assert all(scores[u, v] > scores[v, u] for u, v in edges)
    assert np.median(forward) <= 3, forward  # v near the top of u's list
    # u, v's only related node, still falls behind unrelated ones in v's list: the direction
    # channel outweighs the existence channel's pull (how far: blade.direction_weight)
    assert np.median(backward) >= n / 4, backward


def test_composite_is_the_documented_score_as_one_dot_product(spark: SparkSession) -> None:
    rng = np.random.default_rng(5)
    n, de, dd = 40, 6, 4
    a, b = rng.normal(size=(n, de)), rng.normal(size=(n, de))
    p, q = rng.normal(size=(n, dd)), rng.normal(size=(n, dd))
    phi = degree_potential(rng.integers(0, 9, n), rng.integers(0, 9, n))
    moments = moments_of(b, p, q)
    lam, c = 0.7, 1.3
    sources, targets = compose_vectors(
        a, b, p, q, phi, moments, direction_weight=lam, potential_weight=c
    )
    raw = a @ b.T
    z = (raw - raw.mean(1, keepdims=True)) / raw.std(1, keepdims=True)
    pq_all = p @ q.T
    d = (pq_all - pq_all.T) / pq_all.std()
    expected = z + lam * (d + c * (phi[None, :] - phi[:, None]))
    np.testing.assert_allclose(sources @ targets.T, expected, rtol=1e-9, atol=1e-9)
    # lambda = 0: exactly the existence channel's ranking of every source's targets
    alone, targets0 = compose_vectors(
        a, b, p, q, phi, moments, direction_weight=0, potential_weight=c
    )
    np.testing.assert_array_equal(np.argsort(alone @ targets0.T, 1), np.argsort(raw, 1))
    # the source prior: - beta * phi_u, one offset per source, so no source's ranking moves
    beta = 0.8
    biased, targets_b = compose_vectors(
        a, b, p, q, phi, moments, direction_weight=lam, potential_weight=c, source_prior_weight=beta
    )
    np.testing.assert_allclose(
        biased @ targets_b.T, expected - beta * phi[:, None], rtol=1e-9, atol=1e-9
    )
    np.testing.assert_array_equal(
        np.argsort(biased @ targets_b.T, 1), np.argsort(sources @ targets.T, 1)
    )

    # the moments summed per Spark partition equal the in-memory ones
    frame = spark.createDataFrame(
        pd.DataFrame({"b": list(b), "p": list(p), "q": list(q)})
    ).repartition(3)
    summed = channel_moments(frame)
    for name in ("b_mean", "b_cov", "p_mean", "q_mean", "p_second", "q_second"):
        np.testing.assert_allclose(getattr(summed, name), getattr(moments, name), atol=1e-12)
    assert summed.direction_sd == pytest.approx(pq_all.std(), rel=1e-9)


def test_source_embedding_reads_out_neighbours_and_target_embedding_in_neighbours() -> None:
    """s_u changes with u's out-sample only; t_v with v's in-sample only (the documented
    orientation), and each aggregates the other role's input table."""
    torch.manual_seed(0)
    model = BladeModel(4, dim=8, layers=2, hops=2, embedding="directional")
    from recbatch.blade.model import GraphSamples, NodeSamples

    def samples(out_nbr: int, in_nbr: int) -> GraphSamples:
        index = torch.full((4, 4), -1)
        out_index, in_index = index.clone(), index.clone()
        out_index[0, 0], in_index[0, 0] = out_nbr, in_nbr
        return GraphSamples(
            NodeSamples(out_index, out_index >= 0, 2), NodeSamples(in_index, in_index >= 0, 2)
        )

    node = torch.tensor([0])
    s1, t1 = model(samples(1, 2), node)
    s2, t2 = model(samples(3, 2), node)  # another out-neighbour: only s moves
    s3, t3 = model(samples(1, 3), node)  # another in-neighbour: only t moves
    assert not torch.allclose(s1, s2) and torch.allclose(t1, t2)
    assert torch.allclose(s1, s3) and not torch.allclose(t1, t3)
    # s aggregates target-role inputs: perturbing a source-role input row of the neighbour does
    # not move s.
    with torch.no_grad():
        model.source_input.ids.weight[1] += 5.0
    s4, _ = model(samples(1, 2), node)
    assert torch.allclose(s1, s4)


def _chain_samples(nodes: int, degrees: list[tuple[int, int]]):
    """Node i's one out-neighbour is i + 1 and its one in-neighbour i - 1 (none at the ends),
    with the given (out, in) degrees."""
    from recbatch.blade.model import GraphSamples, NodeSamples

    out_index = torch.full((nodes, 4), -1)
    in_index = torch.full((nodes, 4), -1)
    out_index[:-1, 0] = torch.arange(1, nodes)
    in_index[1:, 0] = torch.arange(0, nodes - 1)
    out_degree = torch.tensor([d[0] for d in degrees])
    in_degree = torch.tensor([d[1] for d in degrees])
    return GraphSamples(
        NodeSamples(out_index, out_index >= 0, 2, out_degree),
        NodeSamples(in_index, in_index >= 0, 2, in_degree),
    )


@pytest.mark.parametrize("embedding", ["directional", "dual", "single"])
def test_degree_inputs_embed_a_node_unseen_in_training(embedding: str) -> None:
    """node_inputs=degrees: the model is a function of a node's sample and degrees, so the same
    weights embed a newer graph with a node they never saw (index 4 of a model of 4 nodes); its
    vectors follow from its neighbours and degrees, whatever its index. ids cannot, and says so;
    ids+degrees gives the new node its degree part."""
    from recbatch.blade.model import degree_bin

    torch.manual_seed(0)
    model = BladeModel(4, dim=8, layers=2, hops=2, embedding=embedding, node_inputs="degrees")
    model.eval()
    degrees = [(1, 1)] * 5
    newer = _chain_samples(5, degrees)
    s, t = model.embed_all(newer)
    assert s.shape[0] == t.shape[0] == 5 and torch.isfinite(s).all()
    # nodes 1 and 2 have the same degrees and neighbours of the same degrees: same vectors
    assert torch.allclose(s[1], s[2]) and torch.allclose(t[1], t[2])
    # the new node's vectors move with its own degree: it is read, not stored
    bigger = _chain_samples(5, [*degrees[:4], (0, 40)])
    s2, t2 = model.embed_all(bigger)
    assert not torch.allclose(t[4], t2[4]) and torch.allclose(s[:3], s2[:3])
    assert degree_bin(torch.tensor([0, 1, 2, 3, 40, 10**9])).tolist() == [0, 2, 3, 4, 10, 31]

    ids = BladeModel(4, dim=8, layers=2, hops=2, embedding=embedding, node_inputs="ids")
    with pytest.raises(ValueError, match="unseen in training"):
        ids.embed_all(newer)
    both = BladeModel(4, dim=8, layers=2, hops=2, embedding=embedding, node_inputs="ids+degrees")
    s3, _ = both.eval().embed_all(newer)
    assert torch.isfinite(s3).all() and s3.shape[0] == 5


def test_dual_embedding_has_a_symmetric_shared_part() -> None:
    torch.manual_seed(0)
    model = BladeModel(5, dim=8, layers=2, hops=2, embedding="dual", shared_fraction=0.5)
    from recbatch.blade.model import GraphSamples, NodeSamples

    index = torch.randint(0, 5, (5, 4))
    graph = GraphSamples(
        NodeSamples(index, index >= 0, 2), NodeSamples(index.flip(1), index >= 0, 2)
    )
    s, t = model(graph, torch.arange(5))
    shared = model.shared_dim
    assert shared == 4 and torch.allclose(s[:, :shared], t[:, :shared])
    single = BladeModel(5, dim=8, layers=2, hops=2, embedding="single")
    s, t = single(graph, torch.arange(5))
    assert torch.allclose(s, t)


def test_loss_terms_by_hand() -> None:
    def softplus(x: float) -> float:
        return math.log1p(math.exp(x))

    positive = torch.tensor([2.0, -1.0])
    weight = torch.tensor([1.0, 3.0])
    negative = torch.tensor([[0.5, -0.5], [1.0, 0.0]])
    reverse = torch.tensor([1.5, 0.2])
    one_way = torch.tensor([True, False])
    terms = link_loss(positive, weight, negative, reverse, one_way, reverse_weight=0.5)
    expected_pos = (1 * softplus(-2.0) + 3 * softplus(1.0)) / 4
    expected_neg = (softplus(0.5) + softplus(-0.5) + softplus(1.0) + softplus(0.0)) / 4
    expected_rev = softplus(1.5)  # only the one-way edge's reverse counts
    assert terms.positive.item() == pytest.approx(expected_pos)
    assert terms.negative.item() == pytest.approx(expected_neg)
    assert terms.reverse.item() == pytest.approx(expected_rev)
    assert terms.total.item() == pytest.approx(expected_pos + expected_neg + 0.5 * expected_rev)


def test_petastorm_shards_give_every_edge_exactly_once(tmp_path: Path) -> None:
    edges = [(i, (i * 7 + 3) % 101) for i in range(101)]
    path = _write_edges(tmp_path / "edges", edges, files=4)
    seen = []
    for shard in range(2):
        dataset = edge_dataset(path, batch_size=16, shard=shard, shard_count=2, seed=0)
        for epoch in range(2):
            got = [
                (int(u), int(v))
                for b in edge_batches(dataset, epoch)
                for u, v in zip(b.src, b.dst, strict=True)
            ]
            if epoch == 0:
                seen.append(got)
            else:
                assert sorted(got) == sorted(seen[shard])  # same rows, reshuffled
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(edges)
    assert set(EDGE_COLUMNS) == {"src_index", "dst_index", "weight", "one_way"}


def test_samples_with_a_missing_node_are_refused(tmp_path: Path) -> None:
    path = _write_samples(tmp_path / "s", {0: [1]}, {1: [0]}, n=3, width=2)
    with pytest.raises(ValueError, match="one row per node and role"):
        load_graph_samples(path, num_nodes=4, hops=2)


def test_killed_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    job, _ = _one_way_graph(tmp_path / "a", pairs=6)
    job = replace(job, settings=job.settings.model_copy(update={"epochs": 4}))
    full = train_blade(job)
    reference = _embeddings(job)

    resumed_job, _ = _one_way_graph(tmp_path / "b", pairs=6)
    resumed_job = replace(resumed_job, settings=job.settings)
    first = train_blade(replace(resumed_job, stop_after_epochs=2))
    assert not first["finished"] and (Path(resumed_job.checkpoint_dir) / "last.pt").exists()
    second = train_blade(resumed_job)
    assert second["resumed_from_epoch"] == 2 and second["finished"]
    assert [e["loss"] for e in second["epochs"]] == pytest.approx(
        [e["loss"] for e in full["epochs"]]
    )
    for got, want in zip(_embeddings(resumed_job), reference, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # another fingerprint never resumes these weights
    other = train_blade(replace(resumed_job, fingerprint="other"))
    assert other["resumed_from_epoch"] == 0


# --- top-K ----------------------------------------------------------------------------------------


def _brute_force_top_k(sources, targets, k, known):
    scores = sources @ targets.T
    out = []
    for u in range(len(sources)):
        allowed = [v for v in range(len(targets)) if v != u and v not in known.get(u, set())]
        ranked = sorted(allowed, key=lambda v: (-scores[u, v], v))[:k]
        out.append(ranked)
    return out


def test_top_k_block_equals_brute_force_with_ties_and_exclusions() -> None:
    rng = np.random.default_rng(0)
    sources = rng.integers(-2, 3, size=(30, 4)).astype(np.float32)  # integer scores: many ties
    targets = rng.integers(-2, 3, size=(30, 4)).astype(np.float32)
    known = {u: set(rng.choice(30, 5, replace=False).tolist()) for u in range(30)}
    best, scores = top_k_block(
        sources, np.arange(30), targets, 7, [np.array(sorted(known[u])) for u in range(30)]
    )
    assert best.tolist() == _brute_force_top_k(sources, targets, 7, known)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_top_k_block_reuses_its_buffer_and_pads_rows_with_too_few_targets() -> None:
    """One TopK scores blocks of different sizes (the buffer is reused); a source whose known
    targets leave fewer than k candidates gets index -1 / score -inf in the empty slots."""
    rng = np.random.default_rng(4)
    targets = rng.integers(-1, 2, size=(8, 3)).astype(np.float32)
    sources = rng.integers(-1, 2, size=(8, 3)).astype(np.float32)
    top_k = TopK(targets, 5, block_rows=3)
    known = {0: {1, 2, 3, 4}, 5: {0, 1, 2, 3, 4, 6, 7}}
    for first, last in ((0, 3), (3, 8)):
        lists = [np.array(sorted(known.get(u, set()))) for u in range(first, last)]
        best, scores = top_k(sources[first:last], np.arange(first, last), lists)
        expected = _brute_force_top_k(sources, targets, 5, known)[first:last]
        for row, want in enumerate(expected):
            assert best[row].tolist() == want + [-1] * (5 - len(want))
            assert np.all(np.isneginf(scores[row, len(want) :]))


def test_top_columns_gives_topk_values_through_two_pruning_levels() -> None:
    """65,541 columns: chunk maxima of chunk maxima, plus 5 tail columns outside every chunk;
    integer scores tie everywhere, one row is all -inf and one has its best value in the tail."""
    rng = np.random.default_rng(7)
    scores = rng.integers(-50, 50, size=(6, 16 * 4096 + 5)).astype(np.float32)
    scores[2] = -np.inf
    scores[3, -1] = 1000.0
    values, columns = top_columns(torch.from_numpy(scores), 51)
    want = torch.topk(torch.from_numpy(scores), 51, dim=1, sorted=True).values
    assert torch.equal(values, want)
    assert torch.equal(torch.gather(torch.from_numpy(scores), 1, columns), values)
    assert all(len(set(row)) == 51 for row in columns.tolist())
    assert columns[3, 0].item() == scores.shape[1] - 1


def test_top_k_on_wide_targets_equals_brute_force() -> None:
    """Wide enough (5,000 targets) that the pruned selection runs; ties and exclusions as above."""
    rng = np.random.default_rng(8)
    sources = rng.integers(-2, 3, size=(12, 4)).astype(np.float32)
    targets = rng.integers(-2, 3, size=(5000, 4)).astype(np.float32)
    known = {u: set(rng.choice(5000, 40, replace=False).tolist()) for u in range(12)}
    best, _ = top_k_block(
        sources, np.arange(12), targets, 20, [np.array(sorted(known[u])) for u in range(12)]
    )
    scores = sources @ targets.T
    for u in range(12):
        allowed = np.array([v for v in range(5000) if v != u and v not in known[u]])
        ranked = allowed[np.lexsort((allowed, -scores[u, allowed]))][:20]
        assert best[u].tolist() == ranked.tolist()


def _blocks_of(targets: np.ndarray, rows: int, folder: Path, search: str = "exact", **ivf):
    """``targets`` stored as blocks of ``rows`` (and their IVF indexes) under ``folder``."""
    blocks = TargetBlocks(str(folder), len(targets), targets.shape[1], rows, search)
    blocks.clear()
    for block in range(blocks.num_blocks):
        matrix = targets[block * rows : (block + 1) * rows]
        blocks.write(block, matrix)
        if search == "ivf":
            blocks.write_index(block, ivf_index(matrix, **ivf))
    return blocks


@pytest.mark.parametrize("block_targets", [1, 7, 29, 30])
def test_blocked_top_k_equals_brute_force_across_blocks(tmp_path: Path, block_targets) -> None:
    """Integer scores tie across block boundaries: the merged pick still prefers the lower
    index, and a source's exclusions hold in whichever block they fall."""
    rng = np.random.default_rng(5)
    sources = rng.integers(-2, 3, size=(30, 4)).astype(np.float32)
    targets = rng.integers(-2, 3, size=(30, 4)).astype(np.float32)
    known = {u: set(rng.choice(30, 5, replace=False).tolist()) for u in range(30)}
    blocks = _blocks_of(targets, block_targets, tmp_path)
    settings = RecommendationSettings(block_rows=4)
    best, scores = blocked_top_k(
        blocks, settings, 7, sources, np.arange(30), [np.array(sorted(known[u])) for u in range(30)]
    )
    assert best.tolist() == _brute_force_top_k(sources, targets, 7, known)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_ivf_scanning_every_list_is_exact_and_keeps_the_exclusions(tmp_path: Path) -> None:
    """IVF with every list probed scores every target: the exact top K (continuous scores, no
    ties), over two blocks, with the source and its known targets left out."""
    rng = np.random.default_rng(6)
    sources = rng.normal(size=(40, 8)).astype(np.float32)
    targets = rng.normal(size=(200, 8)).astype(np.float32)
    known = {u: set(rng.choice(200, 6, replace=False).tolist()) for u in range(40)}
    blocks = _blocks_of(targets, 120, tmp_path, "ivf", lists=2)
    settings = RecommendationSettings(block_rows=16, search="ivf", ivf_probes=2)
    best, _ = blocked_top_k(
        blocks,
        settings,
        10,
        sources,
        np.arange(40),
        [np.array(sorted(known[u])) for u in range(40)],
    )
    assert best.tolist() == _brute_force_top_k(sources, targets, 10, known)


def test_ivf_with_few_probes_finds_most_of_the_exact_top_k(tmp_path: Path) -> None:
    """Clustered targets (20 centres): probing 4 of 20 lists finds >= 90% of the exact top 10,
    and no excluded target is ever returned."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(20, 16)).astype(np.float32) * 3
    targets = (centres[rng.integers(0, 20, 2000)] + rng.normal(size=(2000, 16))).astype(np.float32)
    sources = (centres[rng.integers(0, 20, 100)] + rng.normal(size=(100, 16))).astype(np.float32)
    known = [rng.choice(2000, 5, replace=False) for _ in range(100)]
    blocks = _blocks_of(targets, 2000, tmp_path, "ivf", lists=20)
    approx, _ = blocked_top_k(
        blocks,
        RecommendationSettings(search="ivf", ivf_probes=4),
        10,
        sources,
        np.arange(100),
        known,
    )
    exact = _brute_force_top_k(sources, targets, 10, {u: set(known[u]) for u in range(100)})
    found = sum(len(set(a) & set(e)) for a, e in zip(approx.tolist(), exact, strict=True))
    assert found / 1000 >= 0.9
    for u in range(100):
        assert u not in approx[u] and not set(known[u]) & set(approx[u].tolist())


def test_spark_top_k_equals_numpy_reference(spark: SparkSession, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n, d, k = 57, 5, 6
    sources = rng.normal(size=(n, d)).astype(np.float32)
    targets = rng.normal(size=(n, d)).astype(np.float32)
    frame = spark.createDataFrame(
        pd.DataFrame(
            {"node_index": np.arange(n), "source": list(sources), "target": list(targets)}
        ),
        "node_index long, source array<float>, target array<float>",
    )
    known_pairs = [(u, int(v)) for u in range(n) for v in rng.choice(n, 3, replace=False)]
    known_frame = spark.createDataFrame(known_pairs, "src_index long, dst_index long")
    known = {}
    for u, v in known_pairs:
        known.setdefault(u, set()).add(v)
    expected = _brute_force_top_k(sources, targets, k, known)
    # One block (the whole catalogue), blocks of 10 with a short last one, and IVF over one
    # block whose single list every query scans (so exact): the same rows.
    for target_block_rows, search in ((n, "exact"), (10, "exact"), (n, "ivf")):
        settings = RecommendationSettings(
            block_rows=10, partitions=3, target_block_rows=target_block_rows, search=search
        )
        top = top_k_recommendations(
            spark,
            frame,
            known_frame,
            k=k,
            settings=settings,
            blocks_path=str(tmp_path / f"blocks-{target_block_rows}-{search}"),
        )
        got = top.orderBy("node_index", "rank").toPandas()
        for u in range(n):
            rows = got[got.node_index == u]
            assert rows["rank"].tolist() == list(range(1, k + 1))
            assert rows["target_index"].tolist() == expected[u]


def test_target_blocks_refuse_embeddings_that_are_not_one_row_per_index(
    spark: SparkSession, tmp_path: Path
) -> None:
    """A repeated index beside a missing one (0, 0, 2) has n rows and max n - 1, yet no row 1:
    the blocks are never written with a hole."""
    frame = spark.createDataFrame(
        [(0, [1.0, 0.0]), (0, [0.0, 1.0]), (2, [1.0, 1.0])], "node_index long, target array<float>"
    )
    with pytest.raises(ValueError, match="one row per node index"):
        write_target_blocks(frame, str(tmp_path / "blocks"), block_rows=2)
    gap = spark.createDataFrame(
        [(0, [1.0, 0.0]), (1, [0.0, 1.0]), (3, [1.0, 1.0])], "node_index long, target array<float>"
    )
    with pytest.raises(ValueError, match="one row per node index"):  # block 0 full, block 1 not
        write_target_blocks(gap, str(tmp_path / "gap"), block_rows=2)
    ragged = spark.createDataFrame(
        [(0, [1.0, 0.0]), (1, [0.0, 1.0, 2.0])], "node_index long, target array<float>"
    )
    with pytest.raises(ValueError, match="same length"):
        write_target_blocks(ragged, str(tmp_path / "ragged"), block_rows=2)


# --- the stages on local Spark --------------------------------------------------------------------


BLADE_RUN_SETTINGS = (
    "ingest.ids=string",
    "graph.source=edge_list",
    "graph.split=random",
    "graph.powerlaw_max_dmin=3",
    "sampling.k_min=2",
    "sampling.k_max=6",
    "sampling.files=2",
    "blade.dim=16",
    "blade.epochs=2",
    "blade.batch_size=64",
    "blade.edge_files=4",
    "recommendations.top_k=5",
    "recommendations.partitions=2",
    "evaluation.negatives=50",
    "evaluation.variants=[blade,single,popularity,ppr]",
    "link_uncertainty.members=4",
    "link_uncertainty.negatives_per_edge=5",
    "link_thresholds.min_bucket_support=40",
    "link_thresholds.score_bins=20",
    "link_thresholds.target_precision=0.3",
)
"""The slow stage tests' settings (``blade_run``): 2 torch processes, 2 epochs, tiny widths."""


@pytest.fixture(scope="module")
def blade_run(spark: SparkSession, data_root: Path):
    """A small directed graph (edge list, random split) through graph, samples, blade,
    recommendations and evaluation, with 2 torch processes and 2 epochs.

    Its products have catalogue ids (``ingest.ids=string``): ASINs, and numbers that collide as
    integers but not as strings ("7" and "07"), so every table must carry them as they came."""
    rng = np.random.default_rng(3)
    edges = set()
    for i in range(1, 120):
        edges.add((i, int(rng.integers(0, i))))  # a random tree: one weak component
    while len(edges) < 420:
        a, b = (int(x) for x in rng.integers(0, 120, 2))
        if a != b:
            edges.add((a, b))
    root = data_root / "blade"
    root.mkdir()
    path = root / "edges.tsv"
    path.write_text(
        "src\tdst\n" + "".join(f"{_product(a)}\t{_product(b)}\n" for a, b in sorted(edges))
    )
    cfg = make_test_config(root, *BLADE_RUN_SETTINGS, f"graph.edge_list_path={path}")
    graph_stage(spark, cfg)
    samples_stage(spark, cfg)
    trained = blade_stage(spark, cfg)
    recommended = recommendations_stage(spark, cfg)
    links = {
        "scores": link_scores_stage(spark, cfg),
        "thresholds": link_thresholds_stage(spark, cfg),
        "decisions": link_decisions_stage(spark, cfg),
    }
    evaluated = evaluation_stage(spark, cfg)
    named = sorted((_product(a), _product(b)) for a, b in edges)
    return cfg, named, trained, recommended, evaluated, links


def _product(node: int) -> str:
    """Node ``node``'s catalogue id: "0".."59", then "00".."039" (the same integers), ASINs."""
    if node < 60:
        return str(node)
    return f"0{node - 60}" if node < 100 else f"B{node:09d}"


def _delta(spark: SparkSession, cfg, name: str) -> pd.DataFrame:
    return spark.read.format("delta").load(cfg.table_path(name)).toPandas()


@pytest.mark.slow
def test_stages_write_well_formed_embeddings_recommendations_and_metrics(
    spark: SparkSession, blade_run
) -> None:
    cfg, edges, trained, recommended, evaluated, _ = blade_run
    nodes = _delta(spark, cfg, "graph_nodes")
    embeddings = _delta(spark, cfg, "embeddings")
    blade = embeddings[embeddings.variant == "blade"]
    assert len(blade) == len(nodes) and blade["product"].is_unique
    width = 3 * 16 + 2  # composite: existence (16), direction source and target (16 each), 2
    assert {len(v) for v in blade["source"]} == {width} == {len(v) for v in blade["target"]}
    assert blade["model_version"].nunique() == 1 and trained["epochs"] == 2
    assert set(embeddings["variant"]) == {"blade", "single"}  # single trained on demand

    recs = _delta(spark, cfg, "recommendations")
    assert recommended["rows"] == len(recs) == 5 * len(nodes)
    assert (recs["product"] != recs["recommended_product"]).all()
    products = {x for edge in edges for x in edge}  # the catalogue's ids, "7" and "07" apart
    assert set(nodes["node_id"]) == set(blade["product"]) == products and len(products) == 120
    assert set(recs["product"]) | set(recs["recommended_product"]) <= products
    train = _delta(spark, cfg, "graph_edges").query("split == 'train'")
    known = set(zip(train["src"], train["dst"], strict=True))
    assert not any(
        (p, r) in known for p, r in zip(recs["product"], recs["recommended_product"], strict=True)
    )
    ranked = recs.sort_values(["product", "rank"])
    assert ranked.groupby("product")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    # re-ranked by the pair scorer fitted on the run's val edges (graph.split=random)
    assert set(recs["model_version"]) == {f"{v}+rerank" for v in blade["model_version"]}
    assert trained["rerank"]["val_edges"] == int(0.05 * len(edges))

    metrics = _delta(spark, cfg, "eval_metrics")
    assert set(metrics["variant"]) == {"blade", "single", "popularity", "ppr"}
    assert set(metrics["bucket"]) == {"all", "low", "mid", "high"}
    overall = metrics[metrics.bucket == "all"].set_index("variant")
    assert (overall["edges"] == int(0.15 * len(edges))).all()
    assert overall.loc["single", "direction_auc"] == pytest.approx(0.5)  # symmetric by design
    for k in KS:
        assert overall[f"hits_{k}"].between(0, 1).all()

    # the referee's export: one row per product, vectors of the model's width
    exported = pd.read_parquet(export_path(cfg, cfg.run_date, "blade"))
    assert sorted(exported["node"]) == sorted(nodes["node_id"])


@pytest.mark.slow
def test_rerun_replaces_the_run_dates_rows(spark: SparkSession, blade_run) -> None:
    cfg, *_ = blade_run
    before = _delta(spark, cfg, "recommendations")
    recommendations_stage(spark, cfg)
    link_decisions_stage(spark, cfg)
    after = _delta(spark, cfg, "recommendations")
    assert len(after) == len(before)
    pd.testing.assert_frame_equal(
        before.sort_values(["product", "rank"]).reset_index(drop=True),
        after.sort_values(["product", "rank"]).reset_index(drop=True),
    )


def _newer_run(
    cfg, tmp_path: Path, day: str, edges: list[tuple[str, str]], *overrides: str
) -> RecbatchConfig:
    """``blade_run``'s settings on another run date and data root, with ``edges`` as its edge
    list and ``blade_run``'s checkpoints, where the models it trained are recorded."""
    root = tmp_path / day
    root.mkdir()
    path = root / "edges.tsv"
    path.write_text("src\tdst\n" + "".join(f"{a}\t{b}\n" for a, b in edges))
    return make_test_config(
        root,
        *BLADE_RUN_SETTINGS,
        f"graph.edge_list_path={path}",
        f"paths.checkpoints={cfg.path('checkpoints')}",
        f"run_date={day}",
        *overrides,
    )


@pytest.mark.slow
def test_a_newer_run_date_is_served_by_the_last_model_until_a_product_needs_training(
    spark: SparkSession, blade_run, tmp_path: Path
) -> None:
    """blade.model_max_age_days=3: the next day's graph (20 more edges, the same products) is
    embedded by the day before's model without training. Its vectors carry that model's
    version, its MC-dropout draws feed the link scores, and its recommendations are the
    re-ranked top 5 of every product. A product new the day after that has no input in an
    ``ids`` model, so that day trains, and records its own model."""
    cfg, edges, *_ = blade_run
    trained_version = _delta(spark, cfg, "embeddings").query("variant == 'blade'")
    trained_version = trained_version["model_version"].iloc[0]
    products = sorted({p for edge in edges for p in edge})
    rng = np.random.default_rng(5)
    more = set(edges)
    while len(more) < len(edges) + 20:
        a, b = rng.choice(len(products), 2, replace=False)
        more.add((products[a], products[b]))

    next_day = _newer_run(cfg, tmp_path, "2026-02-02", sorted(more), "blade.model_max_age_days=3")
    graph_stage(spark, next_day)
    samples_stage(spark, next_day)
    served = blade_stage(spark, next_day)
    assert served["reused_from"] == "2026-02-01" and served["epochs"] == 0
    assert served["new_products"] == 0 and served["rerank"]["val_edges"] > 0
    embeddings = _delta(spark, next_day, "embeddings")
    assert set(embeddings["model_version"]) == {trained_version}
    assert sorted(embeddings["product"]) == products
    recommended = recommendations_stage(spark, next_day)
    recs = _delta(spark, next_day, "recommendations")
    assert recommended["rows"] == len(recs) == 5 * len(products)
    assert set(recs["model_version"]) == {f"{trained_version}+rerank"}
    scored = link_scores_stage(spark, next_day)
    assert scored["rows"] > 0 and scored["members"] > 1

    with_new = sorted({*more, (products[0], "B999999999"), ("B999999999", products[1])})
    day_after = _newer_run(cfg, tmp_path, "2026-02-03", with_new, "blade.model_max_age_days=3")
    graph_stage(spark, day_after)
    samples_stage(spark, day_after)
    retrained = blade_stage(spark, day_after)
    assert "reused_from" not in retrained and retrained["epochs"] == 2
    assert retrained["model_version"] != trained_version
    recorded = load_trained_model(trained_model_folder(day_after, date(2026, 2, 3), "blade"))
    assert recorded is not None and recorded.num_nodes == len(products) + 1


def test_node_input_candidates_are_what_the_graph_can_feed() -> None:
    cfg = make_test_config(
        Path("/tmp/unused"),
        "blade.node_inputs_candidates=[ids+attributes,attributes,ids,ids+degrees+attributes]",
    )
    assert node_input_candidates(cfg, described=True) == [
        "ids+attributes",
        "attributes",
        "ids",
        "ids+degrees+attributes",
    ]
    # without a catalogue: ids+attributes and ids are one model; attributes alone reads nothing
    assert node_input_candidates(cfg, described=False) == ["ids", "ids+degrees"]


@pytest.mark.slow
def test_the_blade_stage_serves_the_node_inputs_that_rank_val_edges_best(
    spark: SparkSession, blade_run, tmp_path: Path
) -> None:
    """Two candidates are trained and ranked on the run's val edges; the better serves, and
    the embeddings are its model's."""
    cfg, edges, *_ = blade_run
    run = _newer_run(
        cfg, tmp_path, "2026-02-04", edges, "blade.node_inputs_candidates=[ids,ids+degrees]"
    )
    graph_stage(spark, run)
    samples_stage(spark, run)
    summary = blade_stage(spark, run)
    choice = summary["node_inputs_choice"]
    assert choice["by"] == "val edges" and set(choice["val"]) == {"ids", "ids+degrees"}
    best = max((v["hits_100"], v["mrr"]) for v in choice["val"].values())
    assert (
        choice["val"][choice["chosen"]]["hits_100"],
        choice["val"][choice["chosen"]]["mrr"],
    ) == best
    recorded = load_trained_model(trained_model_folder(run, date(2026, 2, 4), "blade"))
    assert recorded is not None and recorded.model_version == summary["model_version"]
    chosen = with_node_inputs(run, choice["chosen"])
    plan = variant_plan(chosen, date(2026, 2, 4), "blade", described=False)
    assert recorded.settings_digest == settings_digest(chosen, plan)
    served = _delta(spark, run, "embeddings")
    assert set(served["model_version"]) == {summary["model_version"]}


@pytest.mark.slow
def test_link_scores_are_labelled_held_out_pairs_with_an_uncertainty(
    spark: SparkSession, blade_run
) -> None:
    cfg, edges, *_, links = blade_run
    scores = _delta(spark, cfg, "scores").query("model == 'link'")
    graph = _delta(spark, cfg, "graph_edges")
    held = graph[graph.split.isin(["val", "test"])]
    assert links["scores"]["rows"] == len(scores) and scores["example_id"].is_unique
    assert scores["label"].sum() == len(held)  # every held-out edge once, as a positive
    assert len(scores) == len(held) * (1 + 5)  # and its 5 sampled non-edges
    assert scores["score"].between(0, 1).all() and (scores["uncertainty"] > 0).all()
    assert set(scores["uncertainty_method"]) == {"mc_dropout"}
    # (how well it ranks is bench/link_thresholds.py's: this graph is random, 2 epochs)
    # deterministic under its seeds: a re-run writes the same scores
    link_scores_stage(spark, cfg)
    again = _delta(spark, cfg, "scores").query("model == 'link'")
    pd.testing.assert_frame_equal(
        scores.sort_values("example_id").reset_index(drop=True),
        again.sort_values("example_id").reset_index(drop=True),
    )


@pytest.mark.slow
def test_recommendation_decisions_equal_a_range_join_against_thresholds(
    spark: SparkSession, blade_run
) -> None:
    cfg, *_, links = blade_run
    recs = _delta(spark, cfg, "recommendations")
    stored = _delta(spark, cfg, "thresholds").query(
        "model == 'link' and method == 'per_bucket' and model_version == "
        f"'{links['decisions']['model_version']}'"
    )
    assert len(stored) >= 1 and links["thresholds"]["model"] == "link"
    assert links["decisions"]["rows"] == len(recs)
    for row in recs.itertuples():
        match = stored[
            (stored.uncertainty_lo <= row.uncertainty) & (row.uncertainty < stored.uncertainty_hi)
        ]
        assert len(match) == 1, row
        assert row.bucket == int(match["bucket"].iloc[0])
        assert row.threshold == match["score_threshold"].iloc[0]
        assert row.accepted == (row.probability >= row.threshold)
    assert recs["probability"].between(0, 1).all()


# --- the project's evaluation against the referee -------------------------------------------------


def test_evaluation_equals_the_referee_on_a_split(
    spark: SparkSession, tmp_path: Path, shared_data
) -> None:
    split = tmp_path / "split"
    subprocess.run(
        [
            sys.executable,
            str(REFEREE / "split.py"),
            "--dataset",
            "cora_ml",
            "--seed",
            "0",
            "--out",
            str(split),
        ],
        check=True,
        capture_output=True,
    )
    meta = json.loads((split / "meta.json").read_text())
    n = meta["num_nodes"]
    rng = np.random.default_rng(5)
    # integer-valued embeddings make ties common, so the tie rule is checked too
    sources = rng.integers(-2, 3, size=(n, 3)).astype(np.float32)
    targets = rng.integers(-2, 3, size=(n, 3)).astype(np.float32)
    export = tmp_path / "embeddings.parquet"
    pd.DataFrame(
        {"node": np.arange(n), "source": list(sources), "target": list(targets)}
    ).to_parquet(export)
    out = tmp_path / "referee.json"
    subprocess.run(
        [
            sys.executable,
            str(REFEREE / "eval_external.py"),
            "--split",
            str(split),
            "--embeddings",
            str(export),
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    referee = json.loads(out.read_text())["metrics"]

    held = held_out_from_linkpred(spark, str(split))
    train = pd.read_csv(split / "train.tsv", sep="\t")
    degrees = spark.createDataFrame(
        train.groupby("src")
        .size()
        .rename("out_degree")
        .reset_index()
        .rename(columns={"src": "node_index"}),
        "node_index long, out_degree long",
    )
    q1, q2 = meta["bucket_cutoffs_train_outdeg"]
    bucketed = with_buckets(held, degrees, (q1, q2))
    matrices = matrices_from_embeddings(
        "random",
        pd.DataFrame(
            {"node_index": np.arange(n), "source": list(sources), "target": list(targets)}
        ),
        n,
    )
    ours = {r["bucket"]: r for r in summarise(score_held_out_edges(spark, bucketed, matrices))}
    for bucket, theirs in [("all", referee), *referee["by_bucket"].items()]:
        for k in KS:
            assert ours[bucket][f"hits_{k}"] == pytest.approx(theirs[f"hits@{k}"], abs=5e-4), bucket
        assert ours[bucket]["mrr"] == pytest.approx(theirs["mrr"], abs=5e-4), bucket
        assert ours[bucket]["direction_auc"] == pytest.approx(theirs["dir_auc"], abs=5e-4), bucket
        assert ours[bucket]["direction_pairs"] == theirs["n_dir"]

    # val edges ranked as test edges are: 1000 drawn targets, none an edge of any split
    drawn = held_out_from_linkpred(spark, str(split), "val", negatives=1000, seed=3).toPandas()
    every = set()
    for name in ("train", "val", "test"):
        frame = pd.read_csv(split / f"{name}.tsv", sep="\t")
        every |= set(zip(frame["src"], frame["dst"], strict=True))
    assert len(drawn) == meta["n_val"] and drawn["edge_id"].is_unique
    assert all(len(set(w)) == len(w) == 1000 for w in drawn["negatives"])
    assert not any(
        (u, w) in every or w == u
        for u, ws in zip(drawn["src_index"], drawn["negatives"], strict=True)
        for w in ws
    )
    assert drawn["one_way"].tolist() == [
        (v, u) not in every for u, v in zip(drawn["src_index"], drawn["dst_index"], strict=True)
    ]


def test_bucket_cutoffs_match_the_referee_rule(spark: SparkSession) -> None:
    from recbatch.blade.evaluate import bucket_cutoffs

    held = spark.createDataFrame(
        [(0, 1), (1, 2), (2, 0), (3, 0), (4, 1)], "src_index long, dst_index long"
    )
    degrees = spark.createDataFrame(
        [(0, 1), (1, 2), (2, 4), (3, 8), (4, 9)], "node_index long, out_degree long"
    )
    expected = np.quantile([1, 2, 4, 8, 9], [1 / 3, 2 / 3])
    assert bucket_cutoffs(held, degrees) == pytest.approx(tuple(expected))


def test_config_refuses_contradictory_blade_and_sampling_settings(data_root: Path) -> None:
    from recbatch.config import ConfigError

    with pytest.raises(ConfigError, match="reverse_weight=0"):
        make_test_config(data_root, "blade.embedding=single", "blade.reverse_weight=1.0")
    with pytest.raises(ConfigError, match="constant_k"):
        make_test_config(data_root, "sampling.constant_k=50", "sampling.k_max=20")
    cfg = make_test_config(data_root, "blade.embedding=single", "blade.reverse_weight=0")
    assert cfg.blade.embedding == "single"


def test_fixed_fanout_variant_samples_a_constant_law_without_carry_over(data_root: Path) -> None:
    from recbatch.blade.stage import variant_plan, variant_sampling

    cfg = make_test_config(data_root, "sampling.constant_k=10")
    fixed = variant_sampling(cfg, "fixed_fanout")
    assert (fixed.law, fixed.fill_from_farther_hops, fixed.constant_k) == ("constant", False, 10)
    assert variant_sampling(cfg, "blade") == cfg.sampling
    plan = variant_plan(cfg, cfg.run_date, "single", described=True)
    assert plan.job_settings.embedding == "single" and plan.job_settings.reverse_weight == 0
    assert plan.samples.endswith("/power") and variant_plan(
        cfg, cfg.run_date, "fixed_fanout", described=True
    ).samples.endswith("/constant")
    # attribute inputs where the graph's nodes are described, else what was there before them
    assert plan.job_settings.node_inputs == "ids+attributes"
    bare = variant_plan(cfg, cfg.run_date, "single", described=False)
    assert bare.job_settings.node_inputs == "ids"
