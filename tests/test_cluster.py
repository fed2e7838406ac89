"""spark-submit.sh against a real Spark standalone cluster (one master, two workers) on 127.0.0.1.

Two workers of one core each: the conversion model's TorchDistributor runs
``conversion.num_processes`` (2) barrier tasks at once, one per worker.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyspark
import pytest
from conftest import TEST_NODE_INPUTS, code_graph_filters

from recbatch.config import PROJECT_ROOT

pytestmark = pytest.mark.cluster

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(log: Path, text: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"'{text}' not seen in {log}:\n{log.read_text(errors='replace')[-3000:]}")


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [str(SPARK_CLASS), *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )


WORKERS = 2
"""Workers of the cluster, one core and WORKER_MEMORY each (driver 1g + executors 1g fit)."""
WORKER_MEMORY = "2g"
EXECUTOR_MEMORY = "1g"


def worker_dir(workdir: Path, index: int) -> Path:
    """The ``--work-dir`` of worker ``index``: its executors' ``app-*/<id>/stderr`` are there."""
    return workdir / f"work-{index}"


def executor_logs(workdir: Path, index: int) -> list[Path]:
    return sorted(worker_dir(workdir, index).glob("app-*/*/stderr"))


def _ran_tasks(log: Path) -> bool:
    """Whether the executor whose stderr is ``log`` ran a task (Spark logs each at INFO)."""
    return "Running task" in log.read_text(errors="replace")


def assert_tasks_on_every_worker(workdir: Path, before: dict[int, set[Path]]) -> None:
    """Executors started since ``before`` (per worker, its executor logs then) ran tasks on
    every worker."""
    for index in range(WORKERS):
        new = set(executor_logs(workdir, index)) - before[index]
        assert new, f"no executor of this application started on worker {index}"
        assert any(_ran_tasks(log) for log in new), f"no task ran on worker {index}: {new}"


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """Start a master and WORKERS workers by their classes; stop them by process id afterwards."""
    workdir = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": str(SPARK_CLASS.parents[1])}
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    port = _free_port()
    master_url = f"spark://127.0.0.1:{port}"
    master = _start(
        [
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(_free_port()),
        ],
        workdir / "master.log",
        env,
    )
    processes = [master]
    try:
        _wait_for(workdir / "master.log", "I have been elected leader", master)
        workers = []
        for index in range(WORKERS):
            log = workdir / f"worker-{index}.log"
            worker = _start(
                [
                    "org.apache.spark.deploy.worker.Worker",
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    "1",
                    "--memory",
                    WORKER_MEMORY,
                    "--webui-port",
                    str(_free_port()),
                    "--work-dir",
                    str(worker_dir(workdir, index)),
                    master_url,
                ],
                log,
                env,
            )
            processes.append(worker)
            workers.append((log, worker))
        for log, worker in workers:
            _wait_for(log, "Successfully registered with master", worker)
        yield master_url, workdir
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _submit(job: str, *overrides: str, timeout: float) -> tuple[int, str]:
    """``./spark-submit.sh JOB --set ...``; its exit code and merged output."""
    command = [str(PROJECT_ROOT / "spark-submit.sh"), job]
    for override in overrides:
        command += ["--set", override]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def test_ingestion_through_spark_submit_on_standalone_cluster(
    standalone_cluster, spark, shared_data
):
    master_url, workdir = standalone_cluster
    data_root = workdir / "data"
    code, output = _submit(
        "ingest_events",
        f"spark.master={master_url}",
        "spark.driver_memory=1g",
        f"spark.extra_conf.spark.executor.memory={EXECUTOR_MEMORY}",
        f"paths.data_root={data_root}",
        f"ingest.input_path={shared_data / 'taobao_user_behavior_dev.csv'}",
        "ingest.input_format=taobao",
        "ingest.window_start=2017-11-25T00:00:00+08:00",
        "ingest.window_end=2017-12-01T00:00:00+08:00",
        "run_date=2026-02-01",
        timeout=600,
    )
    # spark-submit merges the driver's stderr into stdout
    assert code == 0, output[-4000:]
    assert f"session on {master_url}" in output
    assert re.search(r"\d+ rows read from .*: \d+ accepted, 36 quarantined", output), output[-2000:]

    executors = [log for index in range(WORKERS) for log in executor_logs(workdir, index)]
    assert executors, "no executor ran on the workers"
    events = spark.read.format("delta").load(str(data_root / "tables" / "events"))
    quarantine = spark.read.format("delta").load(str(data_root / "tables" / "quarantine"))
    assert events.count() > 50_000
    assert {r["reason"] for r in quarantine.select("reason").distinct().collect()} == {
        "malformed_row",
        "before_window",
    }


DISTRIBUTED_PROBE = """
import sys
from pyspark.sql import SparkSession
from recbatch.train.distributed import rank_and_world, run_distributed
spark = (
    SparkSession.builder.master(sys.argv[1])
    .config("spark.executor.memory", sys.argv[2])
    .config("spark.driver.memory", "1g")
    .config("spark.ui.enabled", "false")
    .getOrCreate()
)
print("rank 0 returned", run_distributed(rank_and_world, num_processes=2, spark=spark))
spark.stop()
"""


def test_run_distributed_as_barrier_tasks_on_two_workers(standalone_cluster):
    """``run_distributed`` on a cluster: one barrier task per torch process, every task must
    finish with its output written (rank 1 leaving early failed the barrier stage)."""
    master_url, workdir = standalone_cluster
    before = {index: set(executor_logs(workdir, index)) for index in range(WORKERS)}
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    result = subprocess.run(
        [sys.executable, "-c", DISTRIBUTED_PROBE, master_url, EXECUTOR_MEMORY],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "rank 0 returned (0, 2)" in result.stdout, output[-2000:]
    assert_tasks_on_every_worker(workdir, before)  # the two barrier tasks: one per worker's core


PIPELINE_DATE = "2026-02-01"
REFRESH_STAGES = (
    "generate",
    "ingest",
    "graph",
    "samples",
    "blade",
    "recommendations",
    "link_scores",
    "link_thresholds",
    "link_decisions",
    "blade_eval",
    "examples",
    "flip_weights",
    "conversion",
    "scores",
    "thresholds",
    "decisions",
    "report",
)
"""Stages the refresh must have (the pipeline's STAGE_NAMES may hold more, e.g. register)."""
PIPELINE_TABLES = (
    "events",
    "graph_edges",
    "graph_samples",
    "embeddings",
    "recommendations",
    "eval_metrics",
    "examples",
    "training_weights",
    "conversion_metrics",
    "scores",
    "thresholds",
    "decisions",
)


@dataclass(frozen=True)
class PipelineRun:
    master_url: str
    workdir: Path
    data_root: Path
    code: int
    output: str
    executors_before: dict[int, set[Path]]


@pytest.fixture(scope="module")
def cluster_pipeline(standalone_cluster) -> PipelineRun:
    """The whole refresh (generate .. report) through spark-submit.sh on the cluster, once for
    the tests that check its outcome and query its tables."""
    master_url, workdir = standalone_cluster
    data_root = workdir / "pipeline"
    before = {index: set(executor_logs(workdir, index)) for index in range(WORKERS)}
    code, output = _submit(
        "pipeline",
        f"spark.master={master_url}",
        "spark.driver_memory=1g",
        f"spark.extra_conf.spark.executor.memory={EXECUTOR_MEMORY}",
        "spark.shuffle_partitions=2",
        f"paths.data_root={data_root}",
        f"run_date={PIPELINE_DATE}",
        *code_graph_filters(),
        TEST_NODE_INPUTS,
        # 14 days with W = 3 days: the flip model needs 2W of history before its cutoff, the
        # conversion split trains before T = end - (3 test days + W) and tests on the next 3.
        "generator.n_users=2000",
        "generator.n_items=400",
        "generator.n_categories=8",
        "generator.days=14",
        "generator.partitions=2",
        "ingest.now=2026-02-15T00:00:00+00:00",
        "feedback.attribution_window_hours=72",
        "conversion.num_processes=2",
        "conversion.epochs=2",
        "conversion.batch_size=256",
        "conversion.row_groups_per_trainer=2",
        "uncertainty.heads=4",
        "thresholds.n_buckets=3",
        "thresholds.min_bucket_support=40",
        "thresholds.score_bins=20",
        timeout=1500,
    )
    return PipelineRun(master_url, workdir, data_root, code, output, before)


@pytest.mark.slow
def test_pipeline_through_spark_submit_on_two_workers(cluster_pipeline, spark):
    """Every stage succeeds, executors ran on both workers (the conversion model's two barrier
    tasks need both cores at once), and every table the stages write has rows."""
    from recbatch.pipeline import STAGE_NAMES

    run = cluster_pipeline
    master_url, workdir, data_root, output = run.master_url, run.workdir, run.data_root, run.output
    assert run.code == 0, output[-6000:]
    assert f"session on {master_url}" in output, output[-2000:]
    assert "barrier tasks on " + master_url in output, output[-2000:]

    assert_tasks_on_every_worker(workdir, run.executors_before)

    runs = (
        spark.read.format("delta")
        .load(str(data_root / "tables" / "runs"))
        .where(f"run_date = '{PIPELINE_DATE}'")
        .select("stage", "status", "error")
        .collect()
    )
    assert set(REFRESH_STAGES) <= set(STAGE_NAMES)
    statuses = {r["stage"]: r["status"] for r in runs}
    errors = {r["stage"]: r["error"] for r in runs if r["error"]}
    assert statuses == dict.fromkeys(STAGE_NAMES, "succeeded"), errors

    for table in PIPELINE_TABLES:
        rows = spark.read.format("delta").load(str(data_root / "tables" / table)).count()
        assert rows > 0, f"the {table} table is empty"
    assert (data_root / "reports" / PIPELINE_DATE / "index.html").is_file()


README_SQL = re.compile(r"^\./spark-submit\.sh sql (.+)$", re.MULTILINE)
MUST_HAVE_ROWS = {
    "events",
    "thresholds",
    "conversion_metrics",
    "runs",
    "decisions",
    "graph_stats",
    "graph_edges",
    "graph_samples",
    "recommendations",
    "eval_metrics",
}


def readme_sql_statements() -> list[str]:
    """Every ``./spark-submit.sh sql '...'`` line of the README, as the shell would pass it."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    return [_statement(shlex.split(m.group(1))) for m in README_SQL.finditer(readme)]


def _statement(arguments: list[str]) -> str:
    """The one positional argument of the sql job (its options take a value each)."""
    positional, skip = [], False
    for argument in arguments:
        if not skip and argument in ("--config", "--set", "--limit"):
            skip = True
        elif skip:
            skip = False
        else:
            positional.append(argument)
    assert len(positional) == 1, arguments
    return positional[0]


@pytest.mark.slow
def test_readme_sql_examples_run_on_the_pipeline_tables(cluster_pipeline, spark):
    """The README's queries, by name, through the sql job's own code, on the tables the cluster
    pipeline wrote. Time travel to yesterday needs history across yesterday's midnight: the
    decisions and recommendations tables' first commits are dated two days back, then their
    stages run again today, as on tables refreshed nightly."""
    from conftest import make_test_config

    from recbatch.blade.stage import recommendations_stage
    from recbatch.links.stage import link_decisions_stage
    from recbatch.sql import run_sql
    from recbatch.thresholds.stage import decisions_stage

    assert cluster_pipeline.code == 0, cluster_pipeline.output[-3000:]
    cfg = make_test_config(cluster_pipeline.data_root, f"run_date={PIPELINE_DATE}")
    two_days_ago = time.time() - 2 * 86400
    for table, stage in (
        ("decisions", decisions_stage),
        (
            "recommendations",
            lambda spark, cfg: (
                recommendations_stage(spark, cfg),
                link_decisions_stage(spark, cfg),
            ),
        ),
    ):
        first_commit = Path(cfg.table_path(table)) / "_delta_log" / f"{0:020d}.json"
        os.utime(first_commit, (two_days_ago, two_days_ago))
        stage(spark, cfg)

    statements = readme_sql_statements()
    assert len(statements) >= 15, statements
    for statement in statements:
        rows = run_sql(spark, cfg, statement).collect()
        tables = set(re.findall(r"\bFROM (\w+)", statement)) | set(
            re.findall(r"HISTORY (\w+)", statement)
        )
        if tables & MUST_HAVE_ROWS and " accepted AND " not in statement:
            assert rows, f"no rows from: {statement}"
