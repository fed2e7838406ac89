"""A dense 0..N-1 row index in a given order, computed on the cluster.

``row_number()`` over an unpartitioned window would move every row into one task. This is the
zipWithIndex idea in the DataFrame API instead: a range-partitioned sort, a count per partition
(one small row per partition reaches the driver), and each row's index = the rows of the
partitions before its own + its position inside its partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel

_PARTITION, _POSITION = "_index_partition", "_index_position"


def with_row_index(frame: DataFrame, order: Sequence[str | Column], name: str) -> DataFrame:
    """``frame`` with a ``long`` column ``name``: 0..N-1 in ``order``, which must be total (ties
    would let the index depend on the partitioning).

    The sorted rows are persisted (memory and disk) so that the count and the index see the same
    partitions; they stay cached for the frames built on the result.
    """
    ordered = (
        frame.orderBy(*order)
        .withColumn(_PARTITION, F.spark_partition_id())
        .withColumn(_POSITION, F.monotonically_increasing_id())
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    counts = sorted(
        (r[_PARTITION], r["n"])
        for r in ordered.groupBy(_PARTITION).agg(F.count(F.lit(1)).alias("n")).collect()
    )
    starts = [0, *accumulate(n for _, n in counts)][:-1]
    # monotonically_increasing_id() is (partition << 33) + position inside the partition.
    pairs = [F.lit(x) for (pid, _), start in zip(counts, starts, strict=True) for x in (pid, start)]
    offset = F.create_map(*pairs) if pairs else F.create_map(F.lit(0), F.lit(0))
    within = F.col(_POSITION) - F.shiftleft(F.col(_PARTITION).cast("long"), 33)
    return ordered.withColumn(name, (offset[F.col(_PARTITION)] + within).cast("long")).drop(
        _PARTITION, _POSITION
    )
