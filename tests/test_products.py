"""The product catalogue on real engines: CSV and Parquet through validation into Delta, set-aside
rows in the quarantine, the comparison with the events, and the join onto the graph's nodes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import make_test_config
from pyspark.sql import SparkSession

from recbatch.events.generator import generate
from recbatch.events.ingest import IngestError, ingest_events
from recbatch.events.products import products_stage
from recbatch.graph.stage import graph_stage

HEADER = "product_id,category_id,brand,colour"
CATALOGUE = [
    ("B000000NGH,Electronics,Acme,black", None),
    ("SKU-123-XL,Apparel, ,red", None),  # a blank attribute is left out
    ("007,Books,Penguin,", None),
    ("7,Books,Penguin,", None),  # "007" and "7" are two products
    ("B0DUP,Toys,Lego,", None),
    ("B0DUP,Toys,Lego,", "duplicate"),
    ("B0CONFLICT,Toys,Lego,", "conflicting_rows"),
    ("B0CONFLICT,Games,Lego,", "conflicting_rows"),
    (",Books,Penguin,", "missing_product_id"),
    ("B0NOCAT,,Acme,", "missing_category_id"),
    ("B0SHORT,Toys", "malformed_row"),
]
EVENTS = [
    "U1,B000000NGH,Electronics,buy,2026-01-05T10:00:00Z",
    "U1,SKU-123-XL,Apparel,buy,2026-01-06T10:00:00Z",
    "U1,007,Music,buy,2026-01-07T10:00:00Z",  # the catalogue says Books
    "U2,B000000NGH,Electronics,buy,2026-01-05T10:00:00Z",
    "U2,SKU-123-XL,Apparel,buy,2026-01-06T10:00:00Z",
    "U2,B0NEW,Toys,buy,2026-01-07T10:00:00Z",  # not in the catalogue
]


def _write(folder: Path, header: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True)
    (folder / "part.csv").write_text(header + "\n" + "\n".join(lines) + "\n")
    return folder


def _config(data_root: Path, name: str, *overrides: str):
    return make_test_config(
        data_root / name,
        "ingest.ids=string",
        "ingest.now=2026-02-15T00:00:00+00:00",
        "ingest.window_start=2026-01-01T00:00:00+00:00",
        "ingest.window_end=2026-03-01T00:00:00+00:00",
        *overrides,
    )


def _table(spark: SparkSession, cfg, name: str) -> pd.DataFrame:
    return spark.read.format("delta").load(cfg.table_path(name)).toPandas()


@pytest.fixture(scope="module")
def catalogued(spark: SparkSession, data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Events, then the catalogue, then a co-purchase graph, all with string ids."""
    inputs = tmp_path_factory.mktemp("catalogue")
    events = _write(inputs / "events", "user_id,item_id,category_id,event_type,event_ts", EVENTS)
    catalogue = _write(inputs / "catalogue", HEADER, [line for line, _ in CATALOGUE])
    cfg = _config(
        data_root,
        "products",
        f"ingest.input_path={events}",
        f"ingest.catalog_path={catalogue}",
        "ingest.max_reject_ratio=0.9",
        "graph.split=none",
    )
    ingest_events(spark, cfg)
    result = products_stage(spark, cfg)
    graph = graph_stage(spark, cfg)
    return cfg, result, graph


def test_catalogue_rows_are_kept_or_quarantined_with_their_reason(spark, catalogued) -> None:
    cfg, result, _ = catalogued
    products = _table(spark, cfg, "products")
    kept = {r.product_id: (r.category_id, dict(r.attributes)) for r in products.itertuples()}
    assert kept == {
        "B000000NGH": ("Electronics", {"brand": "Acme", "colour": "black"}),
        "SKU-123-XL": ("Apparel", {"colour": "red"}),
        "007": ("Books", {"brand": "Penguin"}),
        "7": ("Books", {"brand": "Penguin"}),
        "B0DUP": ("Toys", {"brand": "Lego"}),
    }
    quarantine = _table(spark, cfg, "quarantine")
    from_catalogue = quarantine[quarantine["source"].str.contains("catalogue")]
    expected = sorted(reason for _, reason in CATALOGUE if reason)
    assert sorted(from_catalogue["reason"]) == expected
    assert result["rejected"] == pd.Series(expected).value_counts().to_dict()
    assert (result["total_rows"], result["products"]) == (len(CATALOGUE), 5)
    assert result["attributes"] == ["brand", "colour"]
    assert from_catalogue["raw_record"].notna().all()  # the row as it arrived, for a fix


def test_catalogue_ids_are_compared_with_the_events(catalogued) -> None:
    _, result, _ = catalogued
    assert result["products_without_events"] == 2  # "7" (the events have "007") and B0DUP
    assert result["event_products_not_in_catalogue"] == 1  # B0NEW
    assert result["category_mismatches"] == 1  # 007: Music in the events, Books here


def test_graph_nodes_carry_the_catalogue(spark, catalogued) -> None:
    cfg, _, graph = catalogued
    nodes = _table(spark, cfg, "graph_nodes").set_index("node_id")
    assert graph["attributes_source"] == "products" and graph["nodes_with_category"] == 3
    assert nodes.loc["B000000NGH", "category_id"] == "Electronics"
    assert dict(nodes.loc["SKU-123-XL", "attributes"]) == {"colour": "red"}
    assert nodes.loc["007", "category_id"] == "Books"  # the catalogue, not the events
    assert pd.isna(nodes.loc["B0NEW", "category_id"])  # bought, but not catalogued


def test_too_many_bad_rows_or_another_kind_of_id_leave_products_as_they_were(
    spark, catalogued, tmp_path
) -> None:
    cfg, *_ = catalogued
    before = _table(spark, cfg, "products")
    strict = cfg.model_copy(
        update={"ingest": cfg.ingest.model_copy(update={"max_reject_ratio": 0.1})}
    )
    with pytest.raises(IngestError, match="rejected 6 of 11 catalogue rows"):
        products_stage(spark, strict)
    integers = _write(tmp_path / "integers", "product_id,category_id", ["1,2", "3,4"])
    as_integers = cfg.model_copy(
        update={
            "ingest": cfg.ingest.model_copy(
                update={"ids": "integer", "catalog_path": str(integers)}
            )
        }
    )
    with pytest.raises(IngestError, match="holds string ids but ingest.ids=integer"):
        products_stage(spark, as_integers)
    pd.testing.assert_frame_equal(before, _table(spark, cfg, "products"))


def test_catalogue_without_its_key_columns_is_a_clear_error(spark, data_root, tmp_path) -> None:
    folder = _write(tmp_path / "nokeys", "sku,brand", ["B000000NGH,Acme"])
    cfg = _config(data_root, "products_nokeys", f"ingest.catalog_path={folder}")
    with pytest.raises(IngestError, match="needs the column.s. product_id, category_id"):
        products_stage(spark, cfg)


def test_parquet_catalogue_with_integer_ids(spark, data_root, tmp_path) -> None:
    frame = spark.createDataFrame(
        [(1, 10, "Acme", 9.5), (2, 10, None, 12.0)],
        "product_id long, category_id long, brand string, price double",
    )
    frame.write.parquet(str(tmp_path / "pq"))
    cfg = make_test_config(
        data_root / "products_parquet",
        f"ingest.catalog_path={tmp_path / 'pq'}",
        "ingest.catalog_format=parquet",
    )
    result = products_stage(spark, cfg)
    products = _table(spark, cfg, "products").set_index("product_id")
    assert result["products"] == 2 and str(products.index.dtype) == "int64"
    assert dict(products.loc[1, "attributes"]) == {"brand": "Acme", "price": "9.5"}
    assert dict(products.loc[2, "attributes"]) == {"price": "12.0"}


def test_no_catalogue_is_no_error(spark, data_root) -> None:
    cfg = make_test_config(data_root / "products_none")
    assert products_stage(spark, cfg) == {"input_path": None, "products": 0, "rejected_rows": 0}


def test_generated_catalogue_publishes_category_and_brand(spark, data_root) -> None:
    cfg = make_test_config(
        data_root / "products_generated",
        "generator.n_users=100",
        "generator.n_items=60",
        "generator.n_categories=4",
        "generator.lines=3",
        "generator.partitions=2",
    )
    generate(
        spark,
        cfg.generator,
        cfg.path("raw_events"),
        cfg.path("ground_truth"),
        catalog_path=cfg.path("raw_catalog"),
    )
    result = products_stage(spark, cfg)  # found at paths.raw_catalog, no setting needed
    assert (result["products"], result["rejected"]) == (60, {})
    truth = spark.read.parquet(f"{cfg.path('ground_truth')}/items").toPandas()
    products = _table(spark, cfg, "products").set_index("product_id").loc[truth["item_id"]]
    assert (products["category_id"].to_numpy() == truth["category_id"].to_numpy()).all()
    brands = [attributes["brand"] for attributes in products["attributes"]]
    assert brands == [f"brand-{line:03d}" for line in truth["line"]]


def test_attribute_tokens_hash_category_and_attributes_per_node(spark, catalogued) -> None:
    """What BLADE's attribute inputs read: the category token first, then the attributes in
    key order, hashed into the buckets; -1 pads; equal tokens hash alike on any node."""
    from recbatch.graph.attributes import attribute_tokens

    cfg, *_ = catalogued
    nodes = spark.read.format("delta").load(cfg.table_path("graph_nodes"))
    ids = nodes.select("node_index", "node_id")
    tokens = {
        r["node_id"]: list(r["tokens"])
        for r in attribute_tokens(nodes, 1 << 20, 4).join(ids, "node_index").collect()
    }
    filled = {node: sum(t >= 0 for t in row) for node, row in tokens.items()}
    assert filled == {"B000000NGH": 3, "SKU-123-XL": 2, "007": 2, "B0NEW": 0}
    assert all(0 <= t < 1 << 20 for row in tokens.values() for t in row if t >= 0)
    assert tokens["B0NEW"] == [-1] * 4
    assert tokens["SKU-123-XL"][1] != tokens["B000000NGH"][2]  # colour=red, colour=black

    same = spark.createDataFrame(
        [(0, "7", {"brand": "Acme", "colour": "red"}), (1, "7", {"colour": "red"}), (2, "8", None)],
        "node_index long, category_id string, attributes map<string,string>",
    )
    rows = {r["node_index"]: r["tokens"] for r in attribute_tokens(same, 1 << 20, 3).collect()}
    assert rows[0][0] == rows[1][0] != rows[2][0]  # category=7 twice, then category=8
    assert rows[0][2] == rows[1][1]  # colour=red, after brand=Acme on node 0
    assert rows[1][2] == rows[2][1] == rows[2][2] == -1
    cut = {r["node_index"]: r["tokens"] for r in attribute_tokens(same, 1 << 20, 1).collect()}
    assert cut == {i: [row[0]] for i, row in rows.items()}  # the category is kept first
