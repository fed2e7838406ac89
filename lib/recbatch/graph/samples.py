"""Fixed-shape sample rows: one per node and role, ready for Petastorm and for SQL.

Each row holds ``hops x k_max`` neighbour slots, hop-major (slot ``(h - 1) * k_max + r - 1`` is
the neighbour of rank r at hop h): ``neighbour_index`` (node index, -1 in an empty slot),
``neighbour_weight`` (the draw weight, 0 when empty) and ``neighbour_mask`` (true where a slot is
filled). ``hop_counts`` says how many slots of each hop are filled. Fixed lengths are what lets
the tensor reader stack a batch into ``(rows, hops * k_max)`` tensors without padding in Python.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recbatch.graph.budget import ROLES
from recbatch.graph.sampling import SamplerOutput

SAMPLE_COLUMNS = (
    "role",
    "role_id",
    "node_index",
    "node_id",
    "degree",
    "budget",
    "hop_counts",
    "neighbour_index",
    "neighbour_weight",
    "neighbour_mask",
)
TENSOR_COLUMNS = (
    "role_id",
    "node_index",
    "degree",
    "budget",
    "hop_counts",
    "neighbour_index",
    "neighbour_weight",
    "neighbour_mask",
)
"""The numeric columns a torch reader takes (``role`` is the readable name of ``role_id``)."""


def _padded(items: Column, width: int, field: str, empty: Column) -> Column:
    """``items[field]`` for slots 0..width-1, ``empty`` beyond the items."""
    return F.transform(
        F.sequence(F.lit(0), F.lit(width - 1)),
        lambda i: F.when(i < F.size(items), items[i][field]).otherwise(empty),
    )


def sample_rows(
    spark: SparkSession, sample: SamplerOutput, nodes: DataFrame, hops: int, width: int
) -> DataFrame:
    """``SAMPLE_COLUMNS`` for every node of ``nodes`` (``node_index``, ``node_id``) and role."""
    per_hop = sample.picks.groupBy("role", "node", "hop").agg(
        F.sort_array(F.collect_list(F.struct("rank", "nbr", "weight"))).alias("items")
    )
    grid = sample.budgets.crossJoin(
        spark.range(1, hops + 1).select(F.col("id").cast("int").alias("hop"))
    )
    items = F.coalesce(
        F.col("items"), F.array().cast("array<struct<rank:int,nbr:long,weight:double>>")
    )
    slots = grid.join(per_hop, ["role", "node", "hop"], "left").select(
        "role",
        "node",
        "degree",
        "budget",
        "hop",
        F.size(items).alias("count"),
        _padded(items, width, "nbr", F.lit(-1).cast("long")).alias("ids"),
        _padded(items, width, "weight", F.lit(0.0)).alias("weights"),
    )
    by_hop = F.sort_array(F.collect_list(F.struct("hop", "count", "ids", "weights"))).alias("hops")
    rows = slots.groupBy("role", "node", "degree", "budget").agg(by_hop)
    role_id = F.when(F.col("role") == ROLES[0], F.lit(0)).otherwise(F.lit(1))
    return rows.join(nodes.select(F.col("node_index").alias("node"), "node_id"), "node").select(
        "role",
        role_id.cast("int").alias("role_id"),
        F.col("node").alias("node_index"),
        "node_id",
        "degree",
        "budget",
        F.transform("hops", lambda h: h["count"].cast("int")).alias("hop_counts"),
        F.flatten(F.transform("hops", lambda h: h["ids"])).alias("neighbour_index"),
        F.flatten(F.transform("hops", lambda h: h["weights"]))
        .cast("array<float>")
        .alias("neighbour_weight"),
        F.transform(F.flatten(F.transform("hops", lambda h: h["ids"])), lambda x: x >= 0).alias(
            "neighbour_mask"
        ),
    )
