"""Faults: a stage that raises, a write that dies midway, a malformed config, a second job.

Real Spark and Delta with small stages; the job-level checks run ``jobs/pipeline.py`` as a
process and must fail before any Spark work (they finish in seconds, without a JVM).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_test_config
from delta.tables import DeltaTable
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recbatch.config import PROJECT_ROOT
from recbatch.io.delta import replace_where
from recbatch.runs import (
    FAILED,
    SKIPPED,
    SUCCEEDED,
    RunLock,
    StageSelection,
    error_message,
    lock_path,
    read_runs,
    run_stages,
)

RUN_DATE = date(2026, 2, 1)


def _version(spark, path: str) -> int:
    return DeltaTable.forPath(spark, path).history(1).head()["version"]


def _rows(spark, path: str, version: int | None = None) -> list:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return sorted(reader.load(path).collect())


def _records(spark, cfg, run_id: str) -> dict:
    return {r["stage"]: r for r in read_runs(spark, cfg).where(F.col("run_id") == run_id).collect()}


def stages(calls: list[str], *, scale: int = 1, fail_b: bool = False) -> list:
    """a -> b -> c over small real tables; ``scale`` changes what a writes (a new version with
    different rows), ``fail_b`` makes b raise after reading its input, before writing."""

    def a(spark, cfg):
        calls.append("a")
        spark.range(10).selectExpr("id", f"id * {scale} AS v").write.format("delta").mode(
            "overwrite"
        ).save(cfg.table_path("a"))
        return {"rows_out": 10}

    def b(spark, cfg):
        calls.append("b")
        rows = spark.read.format("delta").load(cfg.table_path("a")).where("id < 5")
        rows = rows.withColumn("run_date", F.lit(cfg.run_date))
        rows.cache().count()
        if fail_b:
            raise RuntimeError("b exploded on bad input\nsecond line of detail")
        replace_where(spark, rows, cfg.table_path("b"), f"run_date = '{cfg.run_date}'")
        return {"rows_in": 10, "rows_out": 5}

    def c(spark, cfg):
        calls.append("c")
        b_rows = spark.read.format("delta").load(cfg.table_path("b"))
        b_rows.agg(F.sum("v").alias("total")).write.format("delta").mode("overwrite").save(
            cfg.table_path("c")
        )
        return {"rows_out": 1}

    return [("a", a), ("b", b), ("c", c)]


def test_failed_stage_is_recorded_tables_stay_readable_and_the_next_run_resumes(spark, tmp_path):
    cfg = make_test_config(tmp_path)
    paths = {n: cfg.table_path(n) for n in "abc"}
    calls: list[str] = []
    run_stages(spark, cfg, stages(calls))
    before = {n: (_version(spark, p), _rows(spark, p)) for n, p in paths.items()}

    # A forced rerun with new data for a, where b fails midway (after reading, before writing).
    calls.clear()
    with pytest.raises(RuntimeError, match="b exploded") as err:
        run_stages(spark, cfg, stages(calls, scale=3, fail_b=True), StageSelection(force=True))
    assert calls == ["a", "b"]
    failed_run = read_runs(spark, cfg).where(F.col("status") == FAILED).collect()
    assert len(failed_run) == 1
    run_id = failed_run[0]["run_id"]
    rec = _records(spark, cfg, run_id)
    assert set(rec) == {"a", "b"}, "c did not start"
    assert rec["a"]["status"] == SUCCEEDED and rec["a"]["note"] == "--force"
    assert rec["b"]["status"] == FAILED
    assert rec["b"]["error"] == "RuntimeError: b exploded on bad input"
    assert rec["b"]["error"] == error_message(err.value)
    assert rec["b"]["ended_at"] >= rec["b"]["started_at"] and rec["b"]["rows_out"] is None
    assert not lock_path(cfg, RUN_DATE).exists(), "the lock is released on failure"

    # a committed a new version; its previous version is still readable as it was.
    assert _version(spark, paths["a"]) == before["a"][0] + 1
    assert _rows(spark, paths["a"], before["a"][0]) == before["a"][1]
    assert _rows(spark, paths["a"]) != before["a"][1]
    # b and c were not touched.
    for n in "bc":
        assert (_version(spark, paths[n]), _rows(spark, paths[n])) == before[n]

    # The next run (b fixed) keeps a, runs b again and everything after it.
    calls.clear()
    result = run_stages(spark, cfg, stages(calls, scale=3))
    assert calls == ["b", "c"]
    assert [(o.name, o.status) for o in result.outcomes] == [
        ("a", SKIPPED),
        ("b", SUCCEEDED),
        ("c", SUCCEEDED),
    ]
    assert _rows(spark, paths["c"])[0]["total"] == 3 * sum(range(5))
    assert _records(spark, cfg, result.run_id)["b"]["note"] == f"last attempt failed (run {run_id})"


def test_a_write_that_dies_midway_leaves_the_previous_version(spark, tmp_path):
    """The Python worker of one partition dies while another partition's file is already on
    disk: Delta never commits, the table reads as before, and the run records the failure."""
    cfg = make_test_config(tmp_path)
    path = cfg.table_path("w")
    schema = T.StructType(
        [
            T.StructField("id", T.LongType()),
            T.StructField("part", T.IntegerType()),
            T.StructField("run_date", T.DateType()),
        ]
    )

    def write_w(fail: bool):
        def stage(spark, cfg):
            table = Path(path)
            existing = {str(p) for p in table.rglob("*.parquet")} if table.exists() else set()

            def produce(batches):
                for batch in batches:
                    if fail and (batch["part"] == 1).all():
                        # Wait until the other partition's data file is on disk, then die.
                        deadline = time.time() + 60
                        while time.time() < deadline:
                            if {str(p) for p in table.rglob("*.parquet")} - existing:
                                time.sleep(0.5)
                                raise RuntimeError("killed while writing")
                            time.sleep(0.05)
                        raise RuntimeError("the other partition never wrote a file")
                    yield pd.DataFrame(batch)

            rows = (
                spark.range(0, 20, 1, numPartitions=2)
                .withColumn("part", F.spark_partition_id())
                .withColumn("run_date", F.lit(cfg.run_date))
                .mapInPandas(produce, schema)
            )
            replace_where(spark, rows, path, f"run_date = '{cfg.run_date}'")
            return {"rows_out": 20}

        return [("w", stage)]

    run_stages(spark, cfg, write_w(fail=False))
    version, rows = _version(spark, path), _rows(spark, path)
    assert len(rows) == 20

    files_before = set(Path(path).rglob("*.parquet"))
    with pytest.raises(Exception, match="killed while writing"):
        run_stages(spark, cfg, write_w(fail=True), StageSelection(force=True))
    assert set(Path(path).rglob("*.parquet")) - files_before, "a data file was written midway"
    assert _version(spark, path) == version
    assert _rows(spark, path) == rows
    failed = read_runs(spark, cfg).where(F.col("status") == FAILED).collect()
    assert len(failed) == 1
    assert failed[0]["error"] == "PythonException: RuntimeError: killed while writing"
    assert not lock_path(cfg, RUN_DATE).exists()


# --- the pipeline job: bad requests fail before Spark -------------------------------------------


def _job(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "jobs" / "pipeline.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--set", "runs.lock_ttl_minutes=0"], 2, r"runs\.lock_ttl_minutes: Input should be"),
        (
            ["--set", "run_date=2026-02-30"],
            2,
            r"override 'run_date=2026-02-30': value is not valid YAML \(day is out of range",
        ),
        (["--force-stage", "nope"], 2, r"argument --force-stage: invalid choice: 'nope'"),
        (["--no-generate", "--from-stage", "generate"], 1, "--from-stage generate: not a stage"),
    ],
    ids=["bad-runs-section", "impossible-date", "unknown-stage", "absent-stage"],
)
def test_pipeline_job_rejects_bad_requests_before_spark(tmp_path, args, code, message):
    proc = _job("--set", f"paths.data_root={tmp_path}", *args)
    assert proc.returncode == code, proc.stderr
    assert re.search(message, proc.stderr), proc.stderr
    assert "Spark " not in proc.stderr and "session" not in proc.stderr
    assert not (tmp_path / "tables").exists() and not (tmp_path / "locks").exists()


def test_pipeline_job_refuses_a_date_being_refreshed(tmp_path):
    cfg = make_test_config(tmp_path)
    with RunLock.for_run(cfg) as lock:
        start = time.monotonic()
        proc = _job("--set", f"paths.data_root={tmp_path}", "--set", "run_date=2026-02-01")
        took = time.monotonic() - start
    assert proc.returncode == 75, proc.stderr
    assert f"2026-02-01 is already being refreshed by run {lock.owner.run_id}" in proc.stderr
    assert "Spark " not in proc.stderr
    assert took < 60
    assert not lock_path(cfg, RUN_DATE).exists()
