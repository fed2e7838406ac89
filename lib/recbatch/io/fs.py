"""File-system questions asked through Hadoop's FileSystem, so any scheme Spark reads works."""

from __future__ import annotations

from pyspark.sql import SparkSession


def path_exists(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` exists (asked first where a missing input is normal: Spark's reader
    would log a stack trace before failing)."""
    hadoop_path = spark._jvm.org.apache.hadoop.fs.Path(path)
    return bool(hadoop_path.getFileSystem(spark._jsc.hadoopConfiguration()).exists(hadoop_path))
