"""spark-submit.sh against a real Spark standalone cluster (one master, one worker) on 127.0.0.1."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyspark
import pytest

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


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """Start a master and a worker by their classes; stop both by process id afterwards."""
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
        worker = _start(
            [
                "org.apache.spark.deploy.worker.Worker",
                "--host",
                "127.0.0.1",
                "--cores",
                "1",
                "--memory",
                "2g",
                "--webui-port",
                str(_free_port()),
                "--work-dir",
                str(workdir / "work"),
                master_url,
            ],
            workdir / "worker.log",
            env,
        )
        processes.append(worker)
        _wait_for(workdir / "worker.log", "Successfully registered with master", worker)
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


def test_ingestion_through_spark_submit_on_standalone_cluster(
    standalone_cluster, spark, shared_data
):
    master_url, workdir = standalone_cluster
    data_root = workdir / "data"
    command = [
        str(PROJECT_ROOT / "spark-submit.sh"),
        "ingest_events",
        "--set",
        f"spark.master={master_url}",
        "--set",
        "spark.driver_memory=1g",
        "--set",
        f"paths.data_root={data_root}",
        "--set",
        f"ingest.input_path={shared_data / 'taobao_user_behavior_dev.csv'}",
        "--set",
        "ingest.input_format=taobao",
        "--set",
        "ingest.window_start=2017-11-25T00:00:00+08:00",
        "--set",
        "ingest.window_end=2017-12-01T00:00:00+08:00",
        "--set",
        "run_date=2026-02-01",
    ]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    output = result.stdout + result.stderr  # spark-submit merges the driver's stderr into stdout
    assert result.returncode == 0, output[-4000:]
    assert f"session on {master_url}" in output
    assert re.search(r"\d+ rows read from .*: \d+ accepted, 36 quarantined", output), output[-2000:]

    executors = list((workdir / "work").glob("app-*/*/stderr"))
    assert executors, "no executor ran on the worker"
    events = spark.read.format("delta").load(str(data_root / "tables" / "events"))
    quarantine = spark.read.format("delta").load(str(data_root / "tables" / "quarantine"))
    assert events.count() > 50_000
    assert {r["reason"] for r in quarantine.select("reason").distinct().collect()} == {
        "malformed_row",
        "before_window",
    }


def test_bad_config_fails_before_spark_starts(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spark:\n  mastr: local[1]\n")
    started = time.monotonic()
    result = subprocess.run(
        [str(PROJECT_ROOT / "spark-submit.sh"), "ingest_events", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "spark.mastr" in result.stderr and "Extra inputs are not permitted" in result.stderr
    assert "SparkContext" not in result.stderr
    assert time.monotonic() - started < 60
