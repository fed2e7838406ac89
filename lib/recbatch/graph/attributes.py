"""What the graph's nodes are, beyond their edges: category and catalogue attributes.

The ``products`` table (the catalogue, events/products.py) is the source when there is one.
Without it, a co-purchase graph still knows each product's category from the events (the one
most of its events name); an edge list without a catalogue knows nothing, and says so with
nulls. The graph stage writes these onto ``graph_nodes``, where node-attribute models read them.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recbatch.config import RecbatchConfig
from recbatch.io.delta import is_delta_table
from recbatch.io.ids import id_type

ATTRIBUTE_COLUMNS = ("category_id", "attributes")


def node_attributes(spark: SparkSession, cfg: RecbatchConfig) -> tuple[DataFrame | None, str]:
    """(``node_id``, ``category_id``, ``attributes``) per known product and where they came
    from (``products``, ``events`` or ``none``)."""
    products = cfg.table_path("products")
    if is_delta_table(spark, products):
        table = spark.read.format("delta").load(products)
        return table.select(F.col("product_id").alias("node_id"), *ATTRIBUTE_COLUMNS), "products"
    events = cfg.table_path("events")
    if cfg.graph.source == "events" and is_delta_table(spark, events):
        return categories_from_events(spark.read.format("delta").load(events)), "events"
    return None, "none"


def categories_from_events(events: DataFrame) -> DataFrame:
    """Each item's category: the one most of its events name (ties: the smallest id)."""
    counts = events.groupBy("item_id", "category_id").count()
    first = Window.partitionBy("item_id").orderBy(F.desc("count"), "category_id")
    return (
        counts.withColumn("_rank", F.row_number().over(first))
        .where(F.col("_rank") == 1)
        .select(
            F.col("item_id").alias("node_id"),
            "category_id",
            F.lit(None).cast("map<string,string>").alias("attributes"),
        )
    )


def with_attributes(
    nodes: DataFrame, attributes: DataFrame | None, cfg: RecbatchConfig
) -> DataFrame:
    """``nodes`` (with ``node_id``) plus ``category_id`` and ``attributes``, null where unknown."""
    if attributes is None:
        return nodes.select(
            "*",
            F.lit(None).cast(id_type(cfg.ingest.ids)).alias("category_id"),
            F.lit(None).cast("map<string,string>").alias("attributes"),
        )
    return nodes.join(attributes, "node_id", "left")


def attribute_tokens(nodes: DataFrame, buckets: int, width: int) -> DataFrame:
    """``node_index``, ``tokens``: each node's ``category=<id>`` and ``<key>=<value>`` tokens
    (attributes in key order, category first), hashed into ``[0, buckets)`` and cut or padded
    with -1 to ``width``: the fixed-length rows attribute inputs read.

    Required columns: ``node_index``, ``category_id``, ``attributes`` (``graph_nodes``).
    """
    missing = {"node_index", *ATTRIBUTE_COLUMNS} - set(nodes.columns)
    if missing:
        raise ValueError(
            f"node attributes need the columns {sorted(missing)} of graph_nodes: re-run the "
            "graph stage for this run date (tables written before the catalogue have none)"
        )
    category = F.when(
        F.col("category_id").isNotNull(),
        F.array(F.concat(F.lit("category="), F.col("category_id").cast("string"))),
    ).otherwise(F.array().cast("array<string>"))
    entries = F.array_sort(
        F.map_entries(F.coalesce(F.col("attributes"), F.create_map().cast("map<string,string>")))
    )
    pairs = F.transform(entries, lambda e: F.concat(e["key"], F.lit("="), e["value"]))
    hashed = F.transform(
        F.concat(category, pairs), lambda token: F.pmod(F.xxhash64(token), F.lit(buckets))
    )
    padding = F.array_repeat(F.lit(-1).cast("long"), width)
    return nodes.select("node_index", F.slice(F.concat(hashed, padding), 1, width).alias("tokens"))
