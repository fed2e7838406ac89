"""Publish a folder of files atomically: write it beside the target, then swap it in by rename.

Readers (Petastorm trainers, a person listing the folder) see the previous complete output or the
new complete one, never a half-written mix; a run that fails before the swap leaves the previous
output in place. Renames go through Hadoop's FileSystem API, so the same code works for local
paths and cluster storage (on HDFS a directory rename is atomic; on object stores it is a copy,
which is still never observed half-done under the target name because the staging name differs).
"""

from __future__ import annotations

import uuid

from pyspark.sql import DataFrameWriter, SparkSession

from recbatch.log import get_logger

log = get_logger(__name__)


def _filesystem(spark: SparkSession, path: str):  # noqa: ANN202 (py4j objects)
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    return hadoop_path.getFileSystem(conf), hadoop_path, jvm


def write_atomically(spark: SparkSession, writer: DataFrameWriter, target: str) -> None:
    """Write ``writer``'s Parquet output to ``target``, replacing what is there in one swap."""
    staging = f"{target.rstrip('/')}.staging-{uuid.uuid4().hex[:12]}"
    writer.mode("errorifexists").parquet(staging)
    publish_folder(spark, staging, target)


def publish_folder(spark: SparkSession, staging: str, target: str) -> None:
    """Move the complete folder ``staging`` to ``target``; the previous ``target`` is removed
    only after the new one is in place (and restored if the swap fails)."""
    fs, target_path, jvm = _filesystem(spark, target)
    staging_path = jvm.org.apache.hadoop.fs.Path(staging)
    previous = None
    if fs.exists(target_path):
        previous = jvm.org.apache.hadoop.fs.Path(
            f"{target.rstrip('/')}.old-{uuid.uuid4().hex[:12]}"
        )
        if not fs.rename(target_path, previous):
            raise OSError(f"could not move the previous {target} aside")
    else:
        fs.mkdirs(target_path.getParent())
    if not fs.rename(staging_path, target_path):
        if previous is not None:
            fs.rename(previous, target_path)
        raise OSError(f"could not move {staging} to {target}")
    if previous is not None:
        fs.delete(previous, True)
    log.info("published %s", target)
