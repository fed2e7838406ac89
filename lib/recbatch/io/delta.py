"""Delta Lake writes that make batch stages idempotent.

Two patterns cover the stages: *insert what is new* (an event seen again is not duplicated) and
*replace a slice* (the rows a stage owns for one input or run date are swapped in one commit).
Both are single Delta commits, so a failed run leaves the previous version readable.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F


def is_delta_table(spark: SparkSession, path: str) -> bool:
    return DeltaTable.isDeltaTable(spark, path)


def run_date_predicate(run_date: date) -> str:
    """The ``replaceWhere`` predicate of one run date's slice."""
    return f"run_date = '{run_date.isoformat()}'"


def run_date_rows(
    spark: SparkSession,
    path: str,
    run_date: date,
    *,
    name: str,
    hint: str,
    error: type[Exception],
) -> DataFrame:
    """The run date's rows of the Delta table at ``path``; ``error`` naming the table and the
    ``hint`` when the table is missing or has no rows for that date (an earlier stage not run)."""
    if not is_delta_table(spark, path):
        raise error(f"no {name} table at {path}: {hint}")
    rows = spark.read.format("delta").load(path).where(F.col("run_date") == F.lit(run_date))
    if rows.isEmpty():
        raise error(f"{path} has no rows for run date {run_date.isoformat()}: {hint}")
    return rows


def table_version(spark: SparkSession, path: str) -> int:
    """The table's latest version (its last commit)."""
    return int(DeltaTable.forPath(spark, path).history(1).select("version").head()["version"])


def enable_change_data_feed(spark: SparkSession, path: str) -> bool:
    """Record row-level changes from the next commit on (readers of the change feed need it);
    returns True when this call turned it on."""
    properties = DeltaTable.forPath(spark, path).detail().select("properties").head()[0] or {}
    if properties.get("delta.enableChangeDataFeed", "false").lower() == "true":
        return False
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES (delta.enableChangeDataFeed = true)")
    return True


def merge_new_rows(
    spark: SparkSession,
    rows: DataFrame,
    path: str,
    key_columns: Sequence[str],
    partition_columns: Sequence[str] = (),
) -> int:
    """Insert the rows whose key is not in the table yet (creating it if needed); return how many.

    The partition columns lead the merge condition so Delta prunes files to the touched partitions.
    """
    if not is_delta_table(spark, path):
        rows.write.format("delta").partitionBy(*partition_columns).mode("errorifexists").save(path)
        return last_commit_metric(spark, path, "numOutputRows")
    on = " AND ".join(f"t.`{c}` = s.`{c}`" for c in [*partition_columns, *key_columns])
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(rows.alias("s"), on)
        .whenNotMatchedInsertAll()
        .execute()
    )
    return last_commit_metric(spark, path, "numTargetRowsInserted")


def replace_where(
    spark: SparkSession,
    rows: DataFrame,
    path: str,
    predicate: str,
    *,
    partition_columns: Sequence[str] = (),
    user_metadata: str | None = None,
    merge_schema: bool = False,
) -> None:
    """Atomically replace the rows matching ``predicate`` with ``rows`` (create the table if new).

    Every row written must satisfy the predicate; Delta checks it and fails the commit otherwise.
    ``partition_columns`` apply when the table is created; ``user_metadata`` is stored with the
    commit (``DESCRIBE HISTORY`` shows it); ``merge_schema`` lets the write add columns (a
    table that gained columns in a release), never change a column's type.
    """
    writer = rows.write.format("delta")
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    if partition_columns:
        writer = writer.partitionBy(*partition_columns)
    if user_metadata is not None:
        writer = writer.option("userMetadata", user_metadata)
    if is_delta_table(spark, path):
        writer = writer.mode("overwrite").option("replaceWhere", predicate)
    else:
        writer = writer.mode("errorifexists")
    writer.save(path)


def last_commit_metric(spark: SparkSession, path: str, name: str) -> int:
    """One of the last commit's ``operationMetrics`` (e.g. ``numOutputRows``), 0 if absent."""
    last = DeltaTable.forPath(spark, path).history(1).select("operationMetrics").head()
    metrics = (last["operationMetrics"] if last else None) or {}
    return int(metrics.get(name, 0))


def sql_literal_list(values: Sequence[str]) -> str:
    """``'a', 'b'`` with quotes escaped, for small IN (...) predicates."""
    return ", ".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)
