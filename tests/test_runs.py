"""Run records, skipping of completed stages, forcing, and the per-run-date lock.

The stage runner is driven with small real stages (real Spark, real Delta tables) instead of
the full pipeline, whose conversion stage trains torch models for minutes. The planning rules
and the lock are also checked on their own, without Spark.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from conftest import make_test_config
from delta.tables import DeltaTable
from pyspark.sql import Row
from pyspark.sql import functions as F

from recbatch.config import PROJECT_ROOT
from recbatch.io.delta import replace_where
from recbatch.pipeline import STAGE_NAMES, pipeline_stages
from recbatch.runs import (
    FAILED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    LockOwner,
    RunLock,
    RunLockedError,
    RunLockLost,
    RunLog,
    RunsError,
    Stage,
    StageSelection,
    latest_outcomes,
    lock_dir,
    lock_path,
    plan,
    read_runs,
    run_stages,
)

RUN_DATE = date(2026, 2, 1)  # make_test_config's run date
TABLES = ("a", "b", "c")


# --- small real stages --------------------------------------------------------------------------


def chain(calls: list[str]) -> list:
    """Three dependent stages: ``a`` writes 10 rows, ``b`` keeps the even ones for the run date
    (replaceWhere, as the real stages do), ``c`` aggregates ``b`` (counts unknown to the runner)."""

    def a(spark, cfg):
        calls.append("a")
        spark.range(10).selectExpr("id", "id * id AS sq").write.format("delta").mode(
            "overwrite"
        ).save(cfg.table_path("a"))
        return {"rows_out": 10}

    def b(spark, cfg):
        calls.append("b")
        rows = (
            spark.read.format("delta")
            .load(cfg.table_path("a"))
            .where("id % 2 = 0")
            .withColumn("run_date", F.lit(cfg.run_date))
        )
        replace_where(spark, rows, cfg.table_path("b"), f"run_date = '{cfg.run_date}'")
        return {"rows_in": 10, "rows_out": 5}

    def c(spark, cfg):
        calls.append("c")
        b_rows = spark.read.format("delta").load(cfg.table_path("b"))
        b_rows.agg(F.sum("sq").alias("total")).write.format("delta").mode("overwrite").save(
            cfg.table_path("c")
        )
        return ["c wrote one row"]

    return [("a", a), ("b", b), Stage("c", c, "the c stage")]


def snapshot(spark, cfg, names=TABLES) -> dict[str, tuple[int, list[Row]]]:
    """Latest Delta version and sorted rows of each table."""
    out = {}
    for name in names:
        path = cfg.table_path(name)
        version = DeltaTable.forPath(spark, path).history(1).head()["version"]
        rows = sorted(spark.read.format("delta").load(path).collect())
        out[name] = (version, rows)
    return out


def records(spark, cfg, run_id: str) -> dict[str, Row]:
    rows = read_runs(spark, cfg).where(F.col("run_id") == run_id).collect()
    by_stage = {r["stage"]: r for r in rows}
    assert len(by_stage) == len(rows), f"one row per stage execution, got {rows}"
    return by_stage


# --- a sequence of runs on one date -------------------------------------------------------------


@pytest.fixture(scope="module")
def sequence(spark, tmp_path_factory):
    """First run, the same run again, --force-stage b, --from-stage c: what each ran, its result
    and the tables after it. (--force is exercised in test_faults.)"""
    cfg = make_test_config(tmp_path_factory.mktemp("runs_sequence"))
    calls: list[str] = []
    stages = chain(calls)
    steps = {}
    for name, selection in [
        ("first", None),
        ("again", None),
        ("force_b", StageSelection(force_stages=("b",))),
        ("from_c", StageSelection(from_stage="c")),
    ]:
        calls.clear()
        result = run_stages(spark, cfg, stages, selection)
        steps[name] = (result, list(calls), snapshot(spark, cfg))
    return cfg, steps


def test_first_run_records_every_stage(spark, sequence):
    cfg, steps = sequence
    result, calls, _ = steps["first"]
    assert calls == ["a", "b", "c"]
    assert [(o.name, o.status) for o in result.outcomes] == [
        ("a", SUCCEEDED),
        ("b", SUCCEEDED),
        ("c", SUCCEEDED),
    ]
    rec = records(spark, cfg, result.run_id)
    assert set(rec) == {"a", "b", "c"}
    for index, name in enumerate(TABLES):
        row = rec[name]
        assert row["status"] == SUCCEEDED
        assert row["run_date"] == RUN_DATE
        assert row["stage_index"] == index
        assert row["config_fingerprint"] == cfg.fingerprint()
        assert row["env"] == cfg.env == "local"
        assert row["host"] == socket.gethostname() and row["pid"] == os.getpid()
        assert row["error"] is None
        assert row["started_at"] <= row["ended_at"]
        wall = (row["ended_at"] - row["started_at"]).total_seconds()
        assert 0 < row["seconds"] <= wall + 0.01
    assert (rec["a"]["rows_in"], rec["a"]["rows_out"]) == (None, 10)
    assert (rec["b"]["rows_in"], rec["b"]["rows_out"]) == (10, 5)
    assert (rec["c"]["rows_in"], rec["c"]["rows_out"]) == (None, None)
    assert json.loads(rec["b"]["summary"]) == {"rows_in": 10, "rows_out": 5}
    assert json.loads(rec["c"]["summary"]) == ["c wrote one row"]
    assert rec["a"]["note"] == "first run for this date"
    assert rec["a"]["started_at"] < rec["b"]["started_at"] < rec["c"]["started_at"]
    # The lock was released.
    assert not lock_path(cfg, RUN_DATE).exists()


def test_same_date_again_skips_every_stage_and_changes_no_table(spark, sequence):
    cfg, steps = sequence
    first, _, before = steps["first"]
    result, calls, after = steps["again"]
    assert calls == []
    assert result.names(SKIPPED) == ["a", "b", "c"]
    assert result.result("a") is None
    # Same rows and same Delta versions: nothing was written.
    assert after == before
    rec = records(spark, cfg, result.run_id)
    assert {r["status"] for r in rec.values()} == {SKIPPED}
    assert all(first.run_id in r["note"] for r in rec.values())
    assert all(r["seconds"] == 0 for r in rec.values())


def test_force_stage_reruns_it_and_the_stages_after_it(spark, sequence):
    cfg, steps = sequence
    _, _, before = steps["again"]
    result, calls, after = steps["force_b"]
    assert calls == ["b", "c"]
    assert [(o.name, o.status) for o in result.outcomes] == [
        ("a", SKIPPED),
        ("b", SUCCEEDED),
        ("c", SUCCEEDED),
    ]
    assert after["a"] == before["a"]
    for name in ("b", "c"):
        assert after[name][0] == before[name][0] + 1, f"{name} was rewritten once"
        assert after[name][1] == before[name][1], f"{name}: same config, same rows"
    rec = records(spark, cfg, result.run_id)
    assert rec["b"]["note"] == "--force-stage"
    assert rec["c"]["note"] == "an earlier stage ran in this run"


def test_from_stage_skips_what_comes_before(spark, sequence):
    cfg, steps = sequence
    _, _, before = steps["force_b"]
    result, calls, after = steps["from_c"]
    assert calls == ["c"]
    assert result.names(SKIPPED) == ["a", "b"]
    assert after["a"] == before["a"] and after["b"] == before["b"]
    assert after["c"][0] == before["c"][0] + 1
    assert records(spark, cfg, result.run_id)["a"]["note"] == "before --from-stage c"


# --- the skip rule, without Spark ---------------------------------------------------------------

STAGES = [Stage(n, lambda spark, cfg: None) for n in ("a", "b", "c")]
T0 = datetime(2026, 2, 1, tzinfo=UTC)


def _row(stage: str, status: str, minute: int, fingerprint: str = "fp", run_id: str = "r1") -> Row:
    return Row(
        stage=stage,
        status=status,
        started_at=T0.replace(minute=minute),
        config_fingerprint=fingerprint,
        run_id=run_id,
    )


def _decisions(previous, selection=None, fingerprint="fp") -> list[bool]:
    steps = plan(STAGES, latest_outcomes(previous), fingerprint, selection or StageSelection())
    return [s.run for s in steps]


def test_plan_skips_only_a_success_under_the_same_config_with_nothing_rerun_before_it():
    done = [_row("a", SUCCEEDED, 1), _row("b", SUCCEEDED, 2), _row("c", SUCCEEDED, 3)]
    assert _decisions([]) == [True, True, True]
    assert _decisions(done) == [False, False, False]
    # A different config: everything runs.
    assert _decisions(done, fingerprint="other") == [True, True, True]
    # b's latest attempt failed: a is kept, b and everything after it run.
    assert _decisions([*done, _row("b", FAILED, 5, run_id="r2")]) == [False, True, True]
    # A later success under another config means b's tables hold that config's output.
    assert _decisions([*done, _row("b", SUCCEEDED, 5, "other", "r2")]) == [False, True, True]
    # A stage left running by a dead run is not a success.
    assert _decisions([*done, _row("c", RUNNING, 6, run_id="r3")]) == [False, False, True]
    # Skipped rows say nothing about the tables: the success before them still counts.
    assert _decisions([*done, _row("a", SKIPPED, 7, run_id="r4")]) == [False, False, False]


def test_plan_selection():
    done = [_row("a", SUCCEEDED, 1), _row("b", SUCCEEDED, 2), _row("c", SUCCEEDED, 3)]
    assert _decisions(done, StageSelection(force=True)) == [True, True, True]
    assert _decisions(done, StageSelection(force_stages=("b",))) == [False, True, True]
    assert _decisions(done, StageSelection(force_stages=("c",))) == [False, False, True]
    # --from-stage does not look at the records of the stages before it.
    assert _decisions([], StageSelection(from_stage="b")) == [False, True, True]
    # --force-stage runs what never succeeded before it, too.
    assert _decisions([], StageSelection(force_stages=("c",))) == [True, True, True]


def test_unknown_stage_names_are_rejected_before_any_work():
    with pytest.raises(RunsError, match=r"--force-stage nope: not a stage of this run; .*a, b, c"):
        StageSelection(force_stages=("nope",)).check(STAGES)
    with pytest.raises(RunsError, match="--from-stage generate: not a stage"):
        StageSelection(from_stage="generate").check(pipeline_stages(generate_input=False))
    assert [s.name for s in pipeline_stages(generate_input=True)] == list(STAGE_NAMES)
    assert STAGE_NAMES[:2] == ("generate", "ingest") and STAGE_NAMES[-3:] == (
        "decisions",
        "register",
        "report",
    )


# --- the lock, without Spark --------------------------------------------------------------------


def _lock_cfg(tmp_path: Path, *overrides: str):
    return make_test_config(tmp_path, *overrides)


def _write_lock(path: Path, *, pid: int, host: str, run_id: str = "other-run") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = LockOwner(run_id, RUN_DATE.isoformat(), host, pid, T0.isoformat())
    path.write_text(json.dumps(owner.__dict__))


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(proc.stdout)


def test_racing_contenders_always_see_a_complete_lock_naming_the_winner(tmp_path):
    """Many threads race for the lock at once, over and over: exactly one wins each round and
    every loser's message names the winner (a lock file readable half-written would say
    'an unreadable lock file' here: that race was seen in a CI run)."""
    cfg = _lock_cfg(tmp_path)
    for _ in range(25):
        barrier = threading.Barrier(8)
        won: list[RunLock] = []
        lost: list[str] = []

        def contend(barrier: threading.Barrier, won: list, lost: list) -> None:
            lock = RunLock.for_run(cfg)
            barrier.wait()
            try:
                won.append(lock.acquire())
            except RunLockedError as err:
                lost.append(str(err))

        threads = [threading.Thread(target=contend, args=(barrier, won, lost)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        try:
            assert len(won) == 1 and len(lost) == 7
            assert all(won[0].owner.run_id in message for message in lost), lost
        finally:
            for lock in won:
                lock.release()
    assert not list(lock_path(cfg, RUN_DATE).parent.glob("*.tmp")), "no temporary files left"


def test_lock_is_exclusive_and_names_its_holder(tmp_path):
    cfg = _lock_cfg(tmp_path)
    first = RunLock.for_run(cfg).acquire()
    try:
        content = json.loads(lock_path(cfg, RUN_DATE).read_text())
        assert content["run_id"] == first.owner.run_id and content["pid"] == os.getpid()
        second = RunLock.for_run(cfg)
        with pytest.raises(RunLockedError) as err:
            second.acquire()
        message = str(err.value)
        assert "2026-02-01 is already being refreshed" in message
        assert first.owner.run_id in message and f"pid {os.getpid()}" in message
        assert str(lock_path(cfg, RUN_DATE)) in message
        assert not second.held
        # Another date is another lock.
        other_day = RunLock.for_run(cfg, run_date=date(2026, 2, 2)).acquire()
        other_day.release()
    finally:
        first.release()
    assert not lock_path(cfg, RUN_DATE).exists()
    RunLock.for_run(cfg).acquire().release()  # free again


def test_stale_locks_are_taken_over(tmp_path):
    cfg = _lock_cfg(tmp_path, "runs.lock_ttl_minutes=1")
    path = lock_path(cfg, RUN_DATE)
    here = socket.gethostname()

    # Same host, the owner's pid is gone: stale.
    _write_lock(path, pid=_dead_pid(), host=here)
    lock = RunLock.for_run(cfg).acquire()
    assert json.loads(path.read_text())["run_id"] == lock.owner.run_id
    lock.release()

    # Another host (its pid cannot be checked) that refreshed the lock recently: held.
    _write_lock(path, pid=1, host="elsewhere")
    with pytest.raises(RunLockedError, match=r"pid 1 on elsewhere"):
        RunLock.for_run(cfg).acquire()
    # Unreadable but fresh (a writer that crashed mid-write, or a stranger's file): held too.
    path.write_text("not json")
    with pytest.raises(RunLockedError, match="unreadable lock file"):
        RunLock.for_run(cfg).acquire()

    # Silent for longer than the TTL: stale, whatever the host.
    _write_lock(path, pid=1, host="elsewhere")
    old = time.time() - 61
    os.utime(path, (old, old))
    lock = RunLock.for_run(cfg).acquire()
    assert json.loads(path.read_text())["run_id"] == lock.owner.run_id
    lock.release()
    assert not path.exists()


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
    cfg = _lock_cfg(tmp_path)
    lock = RunLock.for_run(cfg).acquire()
    path = lock_path(cfg, RUN_DATE)
    _write_lock(path, pid=1, host="elsewhere", run_id="the-new-owner")
    lock.release()
    assert json.loads(path.read_text())["run_id"] == "the-new-owner"


def test_heartbeat_keeps_the_lock_fresh_and_notices_a_takeover(tmp_path):
    cfg = _lock_cfg(tmp_path, "runs.lock_ttl_minutes=0.04")  # 2.4 s: a beat every 0.6 s
    path = lock_path(cfg, RUN_DATE)
    lock = RunLock.for_run(cfg).acquire()
    try:
        old = time.time() - 100
        os.utime(path, (old, old))
        deadline = time.time() + 10
        while time.time() - path.stat().st_mtime > 50 and time.time() < deadline:
            time.sleep(0.1)
        assert time.time() - path.stat().st_mtime < 5, "the heartbeat did not touch the lock"
        lock.check()
        _write_lock(path, pid=1, host="elsewhere", run_id="usurper")
        deadline = time.time() + 10
        while lock._lost is None and time.time() < deadline:
            time.sleep(0.1)
        with pytest.raises(RunLockLost, match="now held by run usurper"):
            lock.check()
    finally:
        lock.release()
    assert json.loads(path.read_text())["run_id"] == "usurper"


def test_lock_held_by_another_process_and_taken_over_once_it_is_killed(tmp_path):
    cfg = _lock_cfg(tmp_path)
    path = lock_path(cfg, RUN_DATE)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from recbatch.runs import RunLock; from conftest import "
            "make_test_config; RunLock.for_run(make_test_config(sys.argv[1])).acquire(); "
            "print('held', flush=True); time.sleep(120)",
            str(tmp_path),
        ],
        cwd=PROJECT_ROOT / "tests",
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid} on"):
            RunLock.for_run(cfg).acquire()
        holder.send_signal(signal.SIGKILL)  # no finally, no release: the lock file stays
        holder.wait(timeout=30)
        assert path.exists()
        lock = RunLock.for_run(cfg).acquire()
        lock.release()
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_lock_directory(tmp_path):
    assert lock_dir(_lock_cfg(tmp_path)) == tmp_path / "locks"
    cfg = _lock_cfg(tmp_path, f"runs.lock_dir=file://{tmp_path}/shared-locks")
    assert lock_dir(cfg) == tmp_path / "shared-locks"
    cfg = _lock_cfg(tmp_path, "paths.data_root=hdfs://nn:8020/recbatch")
    with pytest.raises(RunsError, match="set runs.lock_dir"):
        lock_dir(cfg)


# --- concurrency and recovery with Spark --------------------------------------------------------


def test_two_refreshes_of_the_same_date_at_once(spark, tmp_path):
    """Two threads start the same date together: exactly one fails with the lock message, the
    other finishes (its stage is still running when the loser tries), and the tables are valid."""
    cfg = make_test_config(tmp_path)
    start = threading.Barrier(2)
    loser_done = threading.Event()
    outcomes: dict[str, object] = {}

    def slow(spark, cfg):
        if not loser_done.wait(timeout=60):
            raise AssertionError("the second refresh never gave up")
        spark.range(5).write.format("delta").mode("overwrite").save(cfg.table_path("slow"))
        return {"rows_out": 5}

    def refresh(name: str) -> None:
        start.wait()
        try:
            outcomes[name] = run_stages(spark, cfg, [("slow", slow)])
        except Exception as err:
            outcomes[name] = err
            loser_done.set()

    threads = [threading.Thread(target=refresh, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    failures = [v for v in outcomes.values() if isinstance(v, Exception)]
    wins = [v for v in outcomes.values() if not isinstance(v, Exception)]
    assert len(failures) == 1 and len(wins) == 1, outcomes
    assert isinstance(failures[0], RunLockedError)
    assert "already being refreshed by run " + wins[0].run_id in str(failures[0])
    assert spark.read.format("delta").load(cfg.table_path("slow")).count() == 5
    rows = read_runs(spark, cfg).collect()
    assert [(r["run_id"], r["status"]) for r in rows] == [(wins[0].run_id, SUCCEEDED)]
    assert not lock_path(cfg, RUN_DATE).exists()


def test_a_killed_run_is_recovered(spark, tmp_path):
    """A run killed inside stage b left its lock and a ``running`` row: the next run takes the
    stale lock over, records b's attempt as failed and runs b again (a is done)."""
    cfg = make_test_config(tmp_path)
    calls: list[str] = []
    first = run_stages(spark, cfg, chain(calls)[:2])
    assert first.names(SUCCEEDED) == ["a", "b"]
    dead = RunLog(spark, cfg, "killed-run", RUN_DATE)
    dead.append(
        [{"stage": "b", "stage_index": 1, "status": RUNNING, "started_at": datetime.now(UTC)}],
        "a fake interrupted stage",
    )
    _write_lock(lock_path(cfg, RUN_DATE), pid=_dead_pid(), host=socket.gethostname(),
                run_id="killed-run")  # fmt: skip
    calls.clear()
    result = run_stages(spark, cfg, chain(calls)[:2])
    assert calls == ["b"]
    assert result.names(SKIPPED) == ["a"]
    killed = records(spark, cfg, "killed-run")["b"]
    assert killed["status"] == FAILED and killed["error"].startswith("interrupted")
    rec = records(spark, cfg, result.run_id)
    assert rec["b"]["note"] == "last attempt failed (run killed-run)"
    assert rec["a"]["note"] == f"succeeded in run {first.run_id} with this config"
    assert not lock_path(cfg, RUN_DATE).exists()
