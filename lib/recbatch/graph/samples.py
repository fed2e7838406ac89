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
from recbatch.io.publish import write_atomically

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
TENSOR_COLUMNS = tuple(c for c in SAMPLE_COLUMNS if c != "role")
"""The numeric columns a torch reader takes (``role`` is the readable name of ``role_id``)."""


def _slots(entries: Column, size: int, default: Column) -> Column:
    """An array of ``size`` slots: the value of each slot in the map ``entries``, else ``default``."""
    return F.transform(
        F.sequence(F.lit(0), F.lit(size - 1)),
        lambda i: F.coalesce(F.element_at(entries, i), default),
    )


def sample_rows(sample: SamplerOutput, nodes: DataFrame, hops: int, width: int) -> DataFrame:
    """``SAMPLE_COLUMNS`` for every node of ``nodes`` (``node_index``, ``node_id``) and role.

    One aggregation per (role, node): each pick goes to its slot ``(hop - 1) * width + rank - 1``,
    and the slots become fixed-length arrays by a lookup in the node's slot map.
    """
    size = hops * width
    slot = (F.col("hop") - 1) * width + F.col("rank") - 1
    per_node = sample.picks.groupBy("role", "node").agg(
        F.map_from_entries(F.collect_list(F.struct(slot.cast("int"), F.col("nbr")))).alias("ids"),
        F.map_from_entries(F.collect_list(F.struct(slot.cast("int"), F.col("weight")))).alias("ws"),
        F.array(*[F.sum((F.col("hop") == h).cast("int")) for h in range(1, hops + 1)]).alias(
            "hop_counts"
        ),
    )
    empty_ids = F.create_map().cast("map<int,bigint>")
    empty_ws = F.create_map().cast("map<int,double>")
    ids = _slots(F.coalesce(F.col("ids"), empty_ids), size, F.lit(-1).cast("long"))
    role_id = F.when(F.col("role") == ROLES[0], F.lit(0)).otherwise(F.lit(1))
    return (
        sample.budgets.join(per_node, ["role", "node"], "left")
        .join(nodes.select(F.col("node_index").alias("node"), "node_id"), "node")
        .select(
            "role",
            role_id.cast("int").alias("role_id"),
            F.col("node").alias("node_index"),
            "node_id",
            "degree",
            "budget",
            F.coalesce(F.col("hop_counts"), F.array(*[F.lit(0)] * hops))
            .cast("array<int>")
            .alias("hop_counts"),
            ids.alias("neighbour_index"),
            _slots(F.coalesce(F.col("ws"), empty_ws), size, F.lit(0.0))
            .cast("array<float>")
            .alias("neighbour_weight"),
            F.transform(ids, lambda x: x >= 0).alias("neighbour_mask"),
        )
    )


def write_sample_files(spark: SparkSession, rows: DataFrame, target: str, files: int) -> None:
    """The sample rows as at most ``files`` Parquet files at ``target`` (replaced in one swap).

    The partitions are merged (``coalesce``), not shuffled again by node: the reader places
    every row by its ``node_index`` and reads all of them, so which file holds a row does not
    matter. (At 1M nodes the two wrote in the same time, within the bench's noise.)"""
    write_atomically(spark, rows.coalesce(files).write, target)
