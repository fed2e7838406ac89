"""Table names in SQL: registration in the session catalog, the spark-sql shortcut, and a Hive
metastore shared by processes (recbatch.catalog, recbatch.sql)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import make_test_config

from recbatch.catalog import OUTPUT_TABLES, CatalogError, init_sql, register_tables
from recbatch.config import PROJECT_ROOT, RecbatchConfig
from recbatch.sql import SqlError, run_sql

SUBMIT = str(PROJECT_ROOT / "spark-submit.sh")


def write_table(spark, cfg: RecbatchConfig, table: str, n: int) -> None:
    rows = [(i, f"{table}-{i}") for i in range(n)]
    frame = spark.createDataFrame(rows, "id int, label string")
    frame.write.format("delta").mode("overwrite").save(cfg.table_path(table))


def actions(done) -> dict[str, str]:
    return {r.table: r.action for r in done if r.action != "absent"}


@pytest.fixture
def two_roots(spark, tmp_path: Path) -> tuple[RecbatchConfig, RecbatchConfig]:
    """Two data roots under one database name: root A has thresholds and runs, root B only
    thresholds (a moved or a second environment)."""
    db = f"cat_{tmp_path.name[-12:].replace('-', '_')}"
    a = make_test_config(tmp_path / "a", f"catalog.database={db}")
    b = make_test_config(tmp_path / "b", f"catalog.database={db}")
    write_table(spark, a, "thresholds", 3)
    write_table(spark, a, "runs", 2)
    write_table(spark, b, "thresholds", 5)
    return a, b


def test_registration_points_names_at_the_tables_and_is_idempotent(spark, two_roots) -> None:
    a, b = two_roots
    assert actions(register_tables(spark, a)) == {"thresholds": "created", "runs": "created"}
    assert run_sql(spark, a, "SELECT count(*) AS n FROM thresholds").head()["n"] == 3
    assert spark.sql(f"SELECT count(*) AS n FROM {a.catalog.database}.runs").head()["n"] == 2

    assert actions(register_tables(spark, a)) == {"thresholds": "unchanged", "runs": "unchanged"}
    write_table(spark, a, "thresholds", 4)  # a new version is read through the same name
    assert run_sql(spark, a, "SELECT count(*) AS n FROM thresholds").head()["n"] == 4

    # The data root moved: names follow it; a name whose table is not there any more is dropped,
    # and dropping a pointer leaves the old table's data alone.
    assert actions(register_tables(spark, b)) == {
        "thresholds": "relocated",
        "runs": "unregistered",
    }
    assert run_sql(spark, b, "SELECT count(*) AS n FROM thresholds").head()["n"] == 5
    assert not spark.catalog.tableExists(f"{b.catalog.database}.runs")
    assert spark.read.format("delta").load(a.table_path("runs")).count() == 2


def test_a_managed_table_of_the_same_name_is_never_dropped(spark, two_roots) -> None:
    a, _ = two_roots
    db = a.catalog.database
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {db}")
    spark.sql(f"CREATE TABLE {db}.thresholds (x INT) USING DELTA")
    spark.sql(f"INSERT INTO {db}.thresholds VALUES (1)")
    try:
        with pytest.raises(CatalogError, match="managed table .* would delete its data"):
            register_tables(spark, a)
        assert spark.sql(f"SELECT count(*) AS n FROM {db}.thresholds").head()["n"] == 1
    finally:
        spark.sql(f"DROP TABLE {db}.thresholds")


def test_sql_errors_are_one_clear_line(spark, two_roots) -> None:
    a, _ = two_roots
    with pytest.raises(SqlError, match="SQL error in: SELECT \\* FROM no_such_table"):
        run_sql(spark, a, "SELECT * FROM no_such_table")


def test_spark_sql_init_file_registers_what_exists(two_roots) -> None:
    a, _ = two_roots
    text = init_sql(a, ["thresholds", "runs"])
    db = a.catalog.database
    assert text.splitlines()[0] == f"CREATE DATABASE IF NOT EXISTS `{db}`;"
    assert f"`{db}`.`runs` USING DELTA LOCATION '{a.table_path('runs')}';" in text
    assert text.splitlines()[-1] == f"USE `{db}`;"
    hive = a.model_copy(update={"catalog": a.catalog.model_copy(update={"metastore": "hive"})})
    assert "CREATE TABLE" not in init_sql(hive, ["thresholds"])  # names come from the metastore
    assert set(OUTPUT_TABLES) >= {"events", "scores", "thresholds", "decisions", "runs"}


def _submit(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    return subprocess.run(
        [SUBMIT, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def _overrides(cfg: RecbatchConfig, *extra: str) -> list[str]:
    settings = [
        f"paths.data_root={cfg.path('data_root')}",
        f"catalog.database={cfg.catalog.database}",
        "spark.master=local[1]",
        "spark.driver_memory=1g",
        *extra,
    ]
    return [arg for s in settings for arg in ("--set", s)]


@pytest.mark.slow
def test_spark_sql_shell_reads_the_tables_by_name(two_roots) -> None:
    a, _ = two_roots
    result = _submit("spark-sql", *_overrides(a), "-e", "SELECT count(*), max(label) FROM runs")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["2", "runs-1"]


@pytest.mark.slow
def test_hive_metastore_is_shared_by_processes_and_its_lock_is_explained(two_roots) -> None:
    """``register`` writes the names to a Derby metastore database; a later process reads them
    without registering; while one process holds embedded Derby, another gets an explanation."""
    a, _ = two_roots
    hive = _overrides(a, "catalog.metastore=hive")
    before = _submit("sql", *hive, "SELECT 1")
    assert before.returncode == 1
    assert f"database {a.catalog.database} is not in the Hive metastore yet" in before.stdout

    registered = _submit("register", *hive)
    assert registered.returncode == 0, registered.stdout[-3000:]
    assert "'created': 2" in registered.stdout and "'registered': 2" in registered.stdout
    assert Path(a.path("data_root"), "metastore_db").is_dir()

    query = _submit("sql", *hive, "SELECT count(*) AS n FROM thresholds")
    assert query.returncode == 0, query.stdout[-3000:]
    assert "|3  |" in query.stdout

    # A second process holds the metastore: it lists the tables, then sleeps inside the JVM.
    hold = "SHOW TABLES; SELECT reflect('java.lang.Thread', 'sleep', CAST(600000 AS BIGINT))"
    holder = subprocess.Popen(
        [SUBMIT, "spark-sql", *hive, "-e", hold],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
        start_new_session=True,
    )
    try:
        _wait_for_line(holder, "thresholds")
        blocked = _submit("sql", *hive, "SELECT count(*) FROM thresholds")
        assert blocked.returncode == 1
        assert "embedded Derby metastore is open in another Spark process" in blocked.stdout
    finally:
        os.killpg(holder.pid, signal.SIGTERM)
        holder.wait(timeout=60)


def _wait_for_line(process: subprocess.Popen, text: str, timeout: float = 240) -> None:
    """Block until the process prints a line containing ``text`` (a thread keeps the pipe drained)."""
    seen: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in process.stdout:
            seen.append(line)
            if text in line:
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout):
        raise AssertionError(f"{text!r} never printed; output so far:\n{''.join(seen)[-3000:]}")
