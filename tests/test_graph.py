"""The graph and samples stages on small graphs with known answers: real Spark, GraphFrames, Delta
and Petastorm (the samples are read back as torch tensors)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import make_test_config
from pyspark.sql import SparkSession
from scipy.sparse.csgraph import connected_components

from recbatch.config import RecbatchConfig
from recbatch.graph import build
from recbatch.graph.budget import SOURCE, DegreeLaw, degree_law, equal_cost_law
from recbatch.graph.errors import GraphInputError
from recbatch.graph.samples import TENSOR_COLUMNS
from recbatch.graph.settings import GraphSettings, SamplingSettings
from recbatch.graph.stage import (
    _fits,
    graph_stage,
    sample_folder,
    samples_path,
    samples_stage,
)
from recbatch.graph.stats import fit_power_law
from recbatch.io.tensors import iter_torch_batches

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _write_tsv(path: Path, lines: list[str], header: str = "src\tdst") -> str:
    path.write_text("\n".join([header, *lines]) + "\n")
    return str(path)


def _table(spark: SparkSession, cfg: RecbatchConfig, name: str) -> pd.DataFrame:
    return spark.read.format("delta").load(cfg.table_path(name)).toPandas()


# --- input --------------------------------------------------------------------------------------


def test_copurchase_edges_are_directed_windowed_and_weighted(spark: SparkSession) -> None:
    t0 = datetime(2026, 1, 1)
    buys = [
        (1, 10, t0),
        (1, 11, t0 + timedelta(days=1)),  # 10 -> 11
        (1, 12, t0 + timedelta(days=40)),  # 10 -> 12, 11 -> 12 are outside 30 days
        (2, 10, t0),
        (2, 11, t0 + timedelta(days=2)),  # 10 -> 11 again: weight 2
        (3, 11, t0),
        (3, 10, t0 + timedelta(hours=1)),  # 11 -> 10, once
        (4, 13, t0),
        (4, 14, t0),  # same instant: no order, no edge
        (5, 10, t0),
        (5, 10, t0 + timedelta(days=1)),  # a repeat purchase is not a self-loop edge
    ]
    events = spark.createDataFrame(
        [(u, i, "buy", ts) for u, i, ts in buys],
        "user_id long, item_id long, event_type string, event_ts timestamp",
    )
    result = build.copurchase_edges(events, GraphSettings(min_support=2))
    edges = {(r["src"], r["dst"]): r for r in result.edges.collect()}
    assert set(edges) == {(10, 11)}
    assert edges[(10, 11)]["weight"] == 2.0
    assert edges[(10, 11)]["first_ts"] == t0 + timedelta(days=1)
    assert edges[(10, 11)]["last_ts"] == t0 + timedelta(days=2)
    quarantined = [(r["src"], r["dst"], r["reason"]) for r in result.quarantine.collect()]
    assert quarantined == [("11", "10", "below graph.min_support=2 customers (had 1)")]
    assert {r["node_id"] for r in result.nodes.collect()} == {10, 11, 12, 13, 14}


def test_lift_sets_aside_pairs_bought_together_by_chance(spark: SparkSession) -> None:
    # Four customers buy the popular 100 and then 101; two of them then buy 200 and later 201.
    # 200 -> 201: 2 customers where 2 x 2 / 4 were expected (lift 2); every pair with a popular
    # item has exactly its expected customers (lift 1).
    t0 = datetime(2026, 1, 5, 10, 0)
    buys = [(u, 100, t0) for u in (1, 2, 3, 4)] + [
        (u, 101, t0 + timedelta(hours=1)) for u in (1, 2, 3, 4)
    ]
    buys += [(u, 200, t0 + timedelta(hours=2)) for u in (1, 2)]
    buys += [(u, 201, t0 + timedelta(hours=3)) for u in (1, 2)]
    events = spark.createDataFrame(
        [(u, i, "buy", ts) for u, i, ts in buys],
        "user_id long, item_id long, event_type string, event_ts timestamp",
    )
    result = build.copurchase_edges(events, GraphSettings(min_lift=1.5))
    assert [(r["src"], r["dst"]) for r in result.edges.collect()] == [(200, 201)]
    quarantined = {
        (r["src"], r["dst"]): (r["reason"], r["raw_record"]) for r in result.quarantine.collect()
    }
    assert quarantined == {
        ("100", "101"): ("below graph.min_lift=1.5", "customers=4 lift=1.00"),
        ("100", "200"): ("below graph.min_lift=1.5", "customers=2 lift=1.00"),
        ("100", "201"): ("below graph.min_lift=1.5", "customers=2 lift=1.00"),
        ("101", "200"): ("below graph.min_lift=1.5", "customers=2 lift=1.00"),
        ("101", "201"): ("below graph.min_lift=1.5", "customers=2 lift=1.00"),
    }
    # Without the filter every pair is an edge.
    assert build.copurchase_edges(events, GraphSettings()).edges.count() == 6


def test_edge_list_quarantines_bad_rows_with_reasons(spark: SparkSession, tmp_path: Path) -> None:
    lines = ["1\t2", "2\t3", "3\t3", "1\t2", "4\tx", "5", "\t6", "1\t2\t9", "2\t7", " 3 \t 1 "]
    path = _write_tsv(tmp_path / "edges.tsv", lines)
    nodes = _write_tsv(tmp_path / "nodes.tsv", ["1", "2", "3", "4", "8"], header="id")
    result = build.read_edge_list(
        spark, path, GraphSettings(max_reject_ratio=0.5), nodes_path=nodes
    )
    assert sorted((r["src"], r["dst"]) for r in result.edges.collect()) == [(1, 2), (2, 3), (3, 1)]
    reasons = sorted(r["reason"] for r in result.quarantine.collect())
    assert reasons == sorted(
        [build.SELF_LOOP, build.DUPLICATE, build.NOT_INTEGER, build.MALFORMED, build.NULL_ID]
        + [build.MALFORMED, build.DANGLING]
    )
    assert {r["node_id"] for r in result.nodes.collect()} == {1, 2, 3, 4, 8}  # 4, 8 isolated


def test_edge_list_with_string_ids_keeps_them_as_they_arrived(
    spark: SparkSession, tmp_path: Path
) -> None:
    """``ingest.ids=string``: catalogue ids (ASINs, SKUs) are products; "007" and "7" are two,
    where integer ids make them one (and refuse the letters)."""
    lines = [
        "B000000NGH\tSKU-123-XL",
        " SKU-123-XL \tB000000NGH",  # trimmed: the reverse edge, not a new product
        "007\t7",
        "7\t007",
        "B000000NGH\tB000000NGH",
        "B000000NGH\tSKU-123-XL",
        "\tB000000NGH",
        "007\tunknown",
    ]
    path = _write_tsv(tmp_path / "edges.tsv", lines)
    nodes = _write_tsv(
        tmp_path / "nodes.tsv",
        ["B000000NGH", "SKU-123-XL", "007", "7", "B0LONELY"],
        header="id",
    )
    settings = GraphSettings(max_reject_ratio=0.9)
    result = build.read_edge_list(spark, path, settings, nodes_path=nodes, ids="string")
    assert sorted((r["src"], r["dst"]) for r in result.edges.collect()) == [
        ("007", "7"),
        ("7", "007"),
        ("B000000NGH", "SKU-123-XL"),
        ("SKU-123-XL", "B000000NGH"),
    ]
    assert sorted(r["reason"] for r in result.quarantine.collect()) == sorted(
        [build.SELF_LOOP, build.DUPLICATE, build.NULL_ID, build.DANGLING]
    )
    products = {"B000000NGH", "SKU-123-XL", "007", "7", "B0LONELY"}
    assert {r["node_id"] for r in result.nodes.collect()} == products
    indexed = build.index_nodes(result.nodes)
    assert sorted(r["node_index"] for r in indexed.collect()) == list(range(5))

    as_integers = build.read_edge_list(spark, path, settings)
    assert [(r["src"], r["dst"]) for r in as_integers.edges.collect()] == []  # 7 -> 7 is a loop
    assert sorted(r["reason"] for r in as_integers.quarantine.collect()) == sorted(
        [build.NOT_INTEGER] * 5 + [build.SELF_LOOP] * 2 + [build.NULL_ID]
    )


@pytest.mark.parametrize(
    ("header", "lines", "message"),
    [
        ("source,target", ["1,2"], "expected an edge list with the header src<TAB>dst"),
        ("src\tdst", [], "header but no edges"),
        ("src\tdst", ["a\tb", "c\td", "1\t2"], "rows are malformed"),
    ],
)
def test_edge_list_wrong_schema_empty_or_garbage_is_a_clear_error(
    spark: SparkSession, tmp_path: Path, header: str, lines: list[str], message: str
) -> None:
    path = _write_tsv(tmp_path / "edges.tsv", lines, header=header)
    with pytest.raises(GraphInputError, match=message):
        build.read_edge_list(spark, path, GraphSettings())


def test_missing_edge_list_and_empty_graph_are_clear_errors(
    spark: SparkSession, data_root: Path, tmp_path: Path
) -> None:
    with pytest.raises(GraphInputError, match="cannot read an edge list"):
        build.read_edge_list(spark, str(tmp_path / "nope.tsv"), GraphSettings())
    only_loops = _write_tsv(tmp_path / "loops.tsv", ["1\t1", "2\t2"])
    cfg = make_test_config(
        data_root / "graph_empty",
        "graph.source=edge_list",
        f"graph.edge_list_path={only_loops}",
        "graph.split=none",
    )
    with pytest.raises(GraphInputError, match="no edges from .*loops.tsv"):
        graph_stage(spark, cfg)
    reasons = _table(spark, cfg, "graph_quarantine")["reason"].tolist()
    assert reasons == [build.SELF_LOOP, build.SELF_LOOP]  # the count and the reason survive


def test_truth_agreement_counts_edges_along_and_against_planted_relations(
    spark: SparkSession,
) -> None:
    from recbatch.graph.truth import truth_agreement

    truth = spark.createDataFrame([(1, 2), (2, 3), (3, 4), (3, 4)], "src long, dst long")
    edges = spark.createDataFrame([(1, 2), (3, 2), (5, 6)], "src long, dst long")
    agreement = truth_agreement(edges, truth)
    assert (agreement.truth_relations, agreement.edges_in_truth) == (3, 1)
    assert agreement.edges_reversed_in_truth == 1  # 3 -> 2 runs against the planted 2 -> 3


def test_power_law_fit_recovers_a_known_exponent() -> None:
    rng = np.random.default_rng(0)
    degrees = np.floor(rng.pareto(1.5, 20000) + 1).astype(int)  # continuous alpha 2.5, d_min 1
    values, counts = np.unique(degrees, return_counts=True)
    fit = fit_power_law(np.stack([values, counts], 1), max_dmin=20)
    assert fit is not None and 2.3 < fit.alpha < 2.8
    assert fit_power_law(np.array([[1, 5], [2, 3]]), max_dmin=20) is None  # too small a tail


# --- the stages on one small graph ---------------------------------------------------------------


def _random_graph(seed: int) -> list[tuple[int, int]]:
    """Two weak components: a 150-node heavy-tailed one and a 20-node one, ~6% reciprocal."""
    rng = np.random.default_rng(seed)
    edges: set[tuple[int, int]] = set()
    for offset, n in ((0, 150), (1000, 20)):
        for i in range(1, n):  # a random tree keeps the component connected
            edges.add((offset + i, offset + int(rng.integers(0, i))))
        popularity = 1.0 / np.arange(1, n + 1) ** 1.2
        while len(edges) < (700 if offset == 0 else 745):
            a = int(rng.integers(0, n))
            b = int(rng.choice(n, p=popularity / popularity.sum()))
            if a != b:
                edges.add((offset + a, offset + b))
    edges |= {(b, a) for a, b in sorted(edges)[:25]}
    return sorted(edges)


@pytest.fixture(scope="module")
def small_graph(
    spark: SparkSession, data_root: Path
) -> tuple[RecbatchConfig, list[tuple[int, int]]]:
    edges = _random_graph(1)
    root = data_root / "graph_small"
    root.mkdir()
    path = _write_tsv(root / "edges.tsv", [f"{a}\t{b}" for a, b in edges])
    cfg = make_test_config(
        root,
        "graph.source=edge_list",
        f"graph.edge_list_path={path}",
        "graph.split=random",
        "graph.powerlaw_max_dmin=3",
        "sampling.k_min=2",
        "sampling.k_max=8",
        "sampling.files=2",
    )
    graph_stage(spark, cfg)
    samples_stage(spark, cfg)
    return cfg, edges


def _components(edges: np.ndarray, nodes: int) -> np.ndarray:
    adj = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(nodes, nodes))
    return connected_components(adj, directed=True, connection="weak")[1]


def test_split_keeps_training_graph_weakly_connected_in_exact_proportions(
    spark: SparkSession, small_graph
) -> None:
    cfg, edges = small_graph
    table = _table(spark, cfg, "graph_edges")
    assert len(table) == len(edges)
    counts = table["split"].value_counts().to_dict()
    assert counts["test"] == int(0.15 * len(edges)) and counts["val"] == int(0.05 * len(edges))
    n = int(_table(spark, cfg, "graph_nodes")["node_index"].max()) + 1
    full = _components(table[["src_index", "dst_index"]].to_numpy(), n)
    train = table[table["split"] == "train"][["src_index", "dst_index"]].to_numpy()
    kept = _components(train, n)
    # Same partition of the nodes into weak components, with and without the held-out edges.
    assert len(set(zip(full, kept, strict=True))) == len(set(full)) == len(set(kept)) == 2


def test_graph_tables_hold_graphframes_statistics(spark: SparkSession, small_graph) -> None:
    cfg, edges = small_graph
    nodes = _table(spark, cfg, "graph_nodes")
    table = _table(spark, cfg, "graph_edges")
    train = table[table["split"] == "train"]
    out_degree = train.groupby("src_index").size().reindex(nodes["node_index"], fill_value=0)
    assert (nodes.set_index("node_index")["out_degree"] == out_degree).all()
    assert sorted(nodes["node_id"]) == sorted({x for e in edges for x in e})
    assert sorted(nodes["node_index"]) == list(range(len(nodes)))
    stats = _table(spark, cfg, "graph_stats").iloc[0]
    pairs = set(edges)
    reciprocal = sum((b, a) in pairs for a, b in pairs)
    assert stats["reciprocated_edges"] == reciprocal
    assert stats["components"] == 2 and stats["largest_component_nodes"] == 150
    assert stats["train_edges"] + stats["val_edges"] + stats["test_edges"] == len(edges)
    assert stats["out_alpha"] > 1 and stats["in_alpha"] > 1


def test_rerun_replaces_the_run_date_instead_of_appending(spark: SparkSession, small_graph) -> None:
    cfg, edges = small_graph
    before = _table(spark, cfg, "graph_samples")
    graph_stage(spark, cfg)
    samples_stage(spark, cfg)
    assert len(_table(spark, cfg, "graph_edges")) == len(edges)
    after = _table(spark, cfg, "graph_samples")
    key = ["role", "node_index"]
    pd.testing.assert_frame_equal(
        before.sort_values(key).reset_index(drop=True),
        after.sort_values(key).reset_index(drop=True),
    )


def test_fixed_fan_out_baseline_is_kept_beside_the_degree_aware_sample(
    spark: SparkSession, small_graph
) -> None:
    cfg, _ = small_graph
    before = _table(spark, cfg, "graph_samples")
    fixed = cfg.model_copy(update={"sampling": cfg.sampling.model_copy(update={"law": "constant"})})
    samples_stage(spark, fixed)
    table = _table(spark, cfg, "graph_samples")
    assert sorted(table["law"].unique()) == ["constant", "power"]
    constant = table[table["law"] == "constant"]
    assert (constant["budget"] == cfg.sampling.k_max).all() and len(constant) == len(before)
    key = ["role", "node_index"]
    power = table[table["law"] == "power"].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(power, before.sort_values(key).reset_index(drop=True))
    assert Path(samples_path(fixed, cfg.run_date)).name == "constant"
    assert Path(samples_path(cfg, cfg.run_date, "constant")).is_dir()
    assert Path(samples_path(cfg, cfg.run_date)).is_dir()


def test_samples_follow_the_law_stay_on_training_edges_and_read_as_tensors(
    spark: SparkSession, small_graph
) -> None:
    cfg, _ = small_graph
    table = _table(spark, cfg, "graph_edges")
    train = set(map(tuple, table[table["split"] == "train"][["src_index", "dst_index"]].to_numpy()))
    held_out = set(
        map(tuple, table[table["split"] != "train"][["src_index", "dst_index"]].to_numpy())
    )
    samples = _table(spark, cfg, "graph_samples")
    samples = samples[samples["law"] == cfg.sampling.law]
    nodes = _table(spark, cfg, "graph_nodes").set_index("node_index")
    laws = {
        role: degree_law(cfg.sampling, fit)
        for role, fit in _fits(_table(spark, cfg, "graph_stats").iloc[0].to_dict()).items()
    }
    width, hops = cfg.sampling.k_max, cfg.sampling.hops
    assert len(samples) == 2 * len(nodes)
    for row in samples.itertuples():
        degree = nodes.loc[row.node_index, "out_degree" if row.role == SOURCE else "in_degree"]
        assert row.degree == degree and row.budget == laws[row.role].value(degree)
        assert row.hop_counts[0] == min(row.budget, degree)
        ids = np.asarray(row.neighbour_index).reshape(hops, width)
        for nbr in ids[0][ids[0] >= 0]:
            pair = (row.node_index, nbr) if row.role == SOURCE else (nbr, row.node_index)
            assert pair in train and pair not in held_out
        assert row.node_index not in ids
        assert (np.asarray(row.neighbour_mask) == (np.asarray(row.neighbour_index) >= 0)).all()
    # Source and target neighbourhoods differ on a directed graph.
    by_role = samples.set_index(["role", "node_index"])["neighbour_index"]
    differ = sum(list(by_role["source"][i]) != list(by_role["target"][i]) for i in nodes.index)
    assert differ > 0.9 * len(nodes)

    batches = list(
        iter_torch_batches(
            samples_path(cfg, cfg.run_date), batch_size=64, columns=list(TENSOR_COLUMNS)
        )
    )
    rows = sum(len(b["node_index"]) for b in batches)
    assert rows == len(samples)
    assert batches[0]["neighbour_index"].shape[1] == hops * width
    assert str(batches[0]["neighbour_mask"].dtype) == "torch.bool"


def test_time_split_holds_out_the_newest_edges(spark: SparkSession) -> None:
    from recbatch.graph.split import split_edges

    t0 = datetime(2026, 1, 1)
    rows = [(i, i + 1, 1.0, t0 + timedelta(hours=i)) for i in range(40)]
    edges = spark.createDataFrame(
        rows, "src_index long, dst_index long, weight double, first_ts timestamp"
    )
    split = split_edges(edges, GraphSettings(split="time", val_fraction=0.1, test_fraction=0.2))
    got = {r["src_index"]: r["split"] for r in split.collect()}
    assert [i for i in range(40) if got[i] == "test"] == list(range(32, 40))
    assert [i for i in range(40) if got[i] == "val"] == list(range(28, 32))


def test_samples_stage_without_graph_tables_is_a_clear_error(
    spark: SparkSession, data_root: Path
) -> None:
    cfg = make_test_config(data_root / "graph_missing")
    with pytest.raises(GraphInputError, match="run the graph stage"):
        samples_stage(spark, cfg)


def test_equal_cost_law_spends_the_degree_aware_laws_mean_budget(spark: SparkSession) -> None:
    power = DegreeLaw(k_min=2, k_max=10, exponent=1.0)
    degrees = [0, 1, 2, 4, 8, 100]  # budgets 10, 10, 6, 4, 3, 2 (half-up): mean 35 / 6
    frame = spark.createDataFrame(pd.DataFrame({"out_degree": degrees}), "out_degree long")
    assert sum(power.value(d) for d in degrees) == 35
    law = equal_cost_law(power, frame, "out_degree")
    assert (law.k_min, law.k_max, law.exponent) == (6, 6, 0.0)  # round(5.83)
    equal = SamplingSettings(law="constant", constant_k="mean_budget")
    assert sample_folder(equal) == "constant-mean_budget"
    assert sample_folder(SamplingSettings(law="constant", constant_k=10)) == "constant"
    with pytest.raises(Exception, match="mean_budget"):
        degree_law(equal, None)
