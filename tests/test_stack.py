"""The engines recbatch stands on, exercised for real through ``build_session``'s session.

One small test per engine: Delta (versions, overwrite, time travel, history), GraphFrames
(degrees of a hand-checked graph) and Petastorm (Spark-written Parquet read into torch tensors as
disjoint shards through ``recbatch.io.tensors``). They fail here, with a small input, rather than
in the middle of a nightly run when a pin or a jar drifts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from delta.tables import DeltaTable
from graphframes import GraphFrame
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recbatch.config import RecbatchConfig
from recbatch.io.tensors import (
    ParquetBatches,
    column_to_tensor,
    count_rows,
    iter_torch_batches,
    loader_worker_shard,
    parquet_url,
)

# Petastorm 0.13 drives pyarrow's legacy dataset API, which warns on every call site; the pins in
# setup.py keep it working, so the warnings are noise here.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _rows(df: DataFrame) -> list[tuple]:
    return sorted(tuple(row) for row in df.collect())


# --- Delta --------------------------------------------------------------------------------------


def test_delta_overwrite_time_travel_and_history(
    spark: SparkSession, cfg: RecbatchConfig, data_root: Path
) -> None:
    path = cfg.table_path("stack_delta")
    assert path.startswith(str(data_root)), "tables must live under the test data root"
    schema = "item_id long, score double"

    spark.createDataFrame([(1, 0.5), (2, 0.25)], schema).write.format("delta").mode(
        "errorifexists"
    ).save(path)
    spark.createDataFrame([(3, 0.75)], schema).write.format("delta").mode("overwrite").save(path)

    assert DeltaTable.isDeltaTable(spark, path)
    assert _rows(spark.read.format("delta").load(path)) == [(3, 0.75)]
    version0 = spark.read.format("delta").option("versionAsOf", 0).load(path)
    assert _rows(version0) == [(1, 0.5), (2, 0.25)]
    assert _rows(spark.read.format("delta").option("versionAsOf", 1).load(path)) == [(3, 0.75)]

    history = (
        DeltaTable.forPath(spark, path)
        .history()
        .select("version", "operation", F.col("operationParameters")["mode"].alias("mode"))
        .orderBy("version")
        .collect()
    )
    assert [tuple(h) for h in history] == [
        (0, "WRITE", "ErrorIfExists"),
        (1, "WRITE", "Overwrite"),
    ]


# --- GraphFrames --------------------------------------------------------------------------------


def test_graphframes_degrees(spark: SparkSession) -> None:
    vertices = spark.createDataFrame([(v,) for v in "abcde"], "id string")
    edges = spark.createDataFrame(
        [("a", "b"), ("a", "c"), ("b", "c"), ("c", "a"), ("d", "a"), ("d", "c")],
        "src string, dst string",
    )
    graph = GraphFrame(vertices, edges)

    # Counted by hand from the edge list; vertices without such edges are absent, not 0 ("e").
    assert dict(_rows(graph.inDegrees)) == {"a": 2, "b": 1, "c": 3}
    assert dict(_rows(graph.outDegrees)) == {"a": 2, "b": 1, "c": 1, "d": 2}


# --- Petastorm: Spark Parquet -> torch ----------------------------------------------------------

N_ROWS = 1200
VEC_LEN = 8


@pytest.fixture(scope="module")
def features_parquet(spark: SparkSession, data_root: Path) -> str:
    """A Spark output folder: 3 files, several small row groups each, _SUCCESS and .crc files."""
    path = str(data_root / "stack_features")
    df = spark.range(N_ROWS).select(
        F.col("id"),
        (F.col("id") * 0.5).cast("float").alias("x"),
        F.transform(
            F.sequence(F.lit(0), F.lit(VEC_LEN - 1)),
            lambda j: (F.col("id") * 10 + j).cast("float"),
        ).alias("vec"),
    )
    # A tiny row-group size so each file holds several row groups: shards are sets of row groups.
    df.repartition(3).write.mode("overwrite").option("parquet.block.size", 4096).parquet(path)
    return path


def _row_group_count(path: str) -> int:
    files = [f for f in os.listdir(path) if f.endswith(".parquet")]
    return sum(pq.ParquetFile(os.path.join(path, f)).metadata.num_row_groups for f in files)


def _read_all(path: str, **options) -> dict[str, torch.Tensor]:
    batches = list(iter_torch_batches(path, **options))
    assert batches, "the shard is empty"
    return {name: torch.cat([b[name] for b in batches]) for name in batches[0]}


def _assert_matches_written(columns: dict[str, torch.Tensor]) -> None:
    ids = columns["id"].numpy()
    np.testing.assert_array_equal(columns["x"].numpy(), (ids * 0.5).astype(np.float32))
    expected_vec = (ids[:, None] * 10 + np.arange(VEC_LEN)[None, :]).astype(np.float32)
    np.testing.assert_array_equal(columns["vec"].numpy(), expected_vec)


def test_petastorm_reads_spark_parquet_as_disjoint_torch_shards(features_parquet: str) -> None:
    names = os.listdir(features_parquet)
    assert "_SUCCESS" in names and any(n.endswith(".crc") for n in names)
    assert _row_group_count(features_parquet) >= 6

    batch_size = 64
    shard_ids = []
    for shard in (0, 1):
        batches = list(
            iter_torch_batches(features_parquet, batch_size=batch_size, shard=shard, shard_count=2)
        )
        assert batches
        for i, batch in enumerate(batches):
            assert list(batch) == ["id", "x", "vec"]
            rows = batch["id"].shape[0]
            assert rows == batch_size or (i == len(batches) - 1 and 0 < rows < batch_size)
            assert batch["id"].dtype == torch.int64 and batch["id"].shape == (rows,)
            assert batch["x"].dtype == torch.float32 and batch["x"].shape == (rows,)
            assert batch["vec"].dtype == torch.float32 and batch["vec"].shape == (rows, VEC_LEN)
        columns = {name: torch.cat([b[name] for b in batches]) for name in batches[0]}
        _assert_matches_written(columns)
        shard_ids.append(columns["id"].tolist())

    every_id = shard_ids[0] + shard_ids[1]
    assert len(every_id) == N_ROWS and set(every_id) == set(range(N_ROWS))
    assert not set(shard_ids[0]) & set(shard_ids[1])


def test_petastorm_order_is_reproducible_and_shuffle_is_seeded(features_parquet: str) -> None:
    def ids(**options) -> list[int]:
        return _read_all(features_parquet, batch_size=100, shard=0, shard_count=2, **options)[
            "id"
        ].tolist()

    in_file_order = ids()
    assert in_file_order == ids(prefetch=0) == ids(prefetch=3)
    shuffled = ids(shuffle=True, seed=11)
    assert shuffled == ids(shuffle=True, seed=11, prefetch=0)
    assert shuffled != in_file_order and sorted(shuffled) == sorted(in_file_order)
    assert ids(shuffle=True, seed=12) != shuffled
    with pytest.raises(ValueError, match="seed=0"):
        ids(shuffle=True, seed=0)


def test_petastorm_columns_epochs_and_drop_last(features_parquet: str) -> None:
    subset = next(iter_torch_batches(features_parquet, batch_size=10, columns=["vec", "id"]))
    assert list(subset) == ["vec", "id"]

    two_epochs = _read_all(features_parquet, batch_size=500, num_epochs=2, columns=["id"])["id"]
    assert sorted(two_epochs.tolist()) == sorted(list(range(N_ROWS)) * 2)

    sizes = [
        b["id"].shape[0]
        for b in iter_torch_batches(features_parquet, batch_size=500, drop_last=True)
    ]
    assert sizes == [500, 500]

    with pytest.raises(ValueError, match="nope"):
        next(iter_torch_batches(features_parquet, batch_size=10, columns=["id", "nope"]))
    with pytest.raises(ValueError, match="shard_count"):
        iter_torch_batches(features_parquet, batch_size=10, shard=0)


def test_count_rows_matches_the_shards(features_parquet: str) -> None:
    assert count_rows(features_parquet) == N_ROWS
    per_shard = [count_rows(features_parquet, shard=s, shard_count=3) for s in range(3)]
    assert sum(per_shard) == N_ROWS and all(per_shard)
    shard_1 = _read_all(features_parquet, batch_size=128, shard=1, shard_count=3)
    assert shard_1["id"].shape[0] == per_shard[1]
    with pytest.raises(ValueError, match="fewer than"):
        count_rows(features_parquet, shard=0, shard_count=10_000)


def test_parquet_batches_is_reiterable_and_splits_shards_between_loader_workers(
    features_parquet: str,
) -> None:
    dataset = ParquetBatches(features_parquet, batch_size=256, shard=1, shard_count=2)
    first = torch.cat([b["id"] for b in dataset]).tolist()
    assert first == torch.cat([b["id"] for b in dataset]).tolist()

    # Each DataLoader worker's sub-shard of shard 1 of 2, together: exactly shard 1.
    row_groups = range(_row_group_count(features_parquet))
    per_worker = []
    for worker in range(3):
        shard, count = loader_worker_shard(1, 2, worker, 3)
        per_worker.append({i for i in row_groups if i % count == shard})
    assert set().union(*per_worker) == {i for i in row_groups if i % 2 == 1}
    assert sum(len(s) for s in per_worker) == len({i for i in row_groups if i % 2 == 1})
    assert loader_worker_shard(None, None, 1, 2) == (1, 2)
    assert loader_worker_shard(0, 4, 0, 1) == (0, 4)


def test_parquet_url_and_column_conversion(tmp_path: Path) -> None:
    assert parquet_url(tmp_path) == f"file://{tmp_path.resolve()}"
    assert parquet_url("hdfs://nn:8020/data/x") == "hdfs://nn:8020/data/x"
    assert parquet_url("file:/tmp/spark-style") == "file:/tmp/spark-style"
    with pytest.raises(ValueError, match="'#'"):
        parquet_url(tmp_path / "a#b")

    lists = np.empty(3, dtype=object)
    lists[:] = [np.array([1.0, 2.0], np.float32) * k for k in range(3)]
    stacked = column_to_tensor("vec", lists)
    assert stacked.dtype == torch.float32 and stacked.shape == (3, 2)
    assert column_to_tensor("n", np.array([1, 2], np.uint32)).dtype == torch.int64
    read_only = np.arange(4, dtype=np.int64)
    read_only.flags.writeable = False
    assert column_to_tensor("ro", read_only).tolist() == [0, 1, 2, 3]

    ragged = np.empty(2, dtype=object)
    ragged[:] = [np.zeros(2), np.zeros(3)]
    with pytest.raises(TypeError, match="'vec'.*different lengths"):
        column_to_tensor("vec", ragged)
    with_null = np.array([np.zeros(2), None], dtype=object)
    with pytest.raises(TypeError, match="'vec' has nulls"):
        column_to_tensor("vec", with_null)
    with pytest.raises(TypeError, match="'name'"):
        column_to_tensor("name", np.array(["a", "b"]))
