"""Run records, skipping of completed stages and the per-run-date lock: what makes a scheduled
``pipeline`` safe to re-run, to retry after a failure and to trigger twice.

* **Records.** Every stage execution is one row of the Delta table ``runs``: appended as
  ``running`` when it starts, updated in place to ``succeeded`` or ``failed`` when it ends (a
  skipped stage is appended as ``skipped`` directly). The table is partitioned by ``run_date``
  and only the holder of a date's lock writes that date's partition, so Delta's optimistic
  concurrency never sees two refreshes of different dates conflict; a conflict with anything
  else (an OPTIMIZE, say) is retried.
* **Skipping.** A stage whose latest outcome for the run date is a success under the same config
  fingerprint is skipped, unless forced. Once a stage runs, every later stage runs too: its
  inputs may have changed. A row left ``running`` by a killed process counts as a failure.
* **Lock.** One refresh per run date at a time: a lock file created atomically (``link``)
  (atomic on local and NFS file systems, no extra service) that names its owner, refreshed by a
  heartbeat thread and taken over when stale. docs/operations.md says why and what it cannot do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from delta.exceptions import captured as delta_errors  # importing it makes PySpark raise them
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recbatch.config import RecbatchConfig, local_path
from recbatch.errors import RecbatchError
from recbatch.io.delta import is_delta_table
from recbatch.log import get_logger, timed

log = get_logger(__name__)

RUNNING, SUCCEEDED, FAILED, SKIPPED = "running", "succeeded", "failed", "skipped"
RUNS_TABLE = "runs"
MAX_ERROR_CHARS = 1000
MAX_SUMMARY_CHARS = 4000


class RunsError(RecbatchError):
    """The run cannot start as asked (an unknown stage name, an unusable lock location)."""


class RunLockedError(RunsError):
    """Another refresh of the same run date holds the lock; retrying later is the remedy."""

    exit_code = 75  # EX_TEMPFAIL: a scheduler can tell "try again later" from a failure


class RunLockLost(RunsError):
    """This run's lock was taken over (judged stale): stop before two runs write the same date."""


# --- stages -------------------------------------------------------------------------------------

StageFn = Callable[[SparkSession, RecbatchConfig], Any]
Counts = tuple[int | None, int | None]


def counts_from_mapping(result: Any) -> Counts:
    """Default row counts: a stage returning a dict with ``rows_in`` / ``rows_out`` reports them;
    anything else is unknown (null in ``runs``) rather than guessed."""
    if isinstance(result, Mapping):
        return _as_count(result.get("rows_in")), _as_count(result.get("rows_out"))
    return None, None


def _as_count(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Stage:
    """One step of a run: ``run(spark, cfg)`` does the work; ``counts`` maps what it returns to
    ``(rows_in, rows_out)``; ``title`` is what the ``stage ... done in Ns`` log line says."""

    name: str
    run: StageFn
    title: str = ""
    counts: Callable[[Any], Counts] = counts_from_mapping

    @property
    def label(self) -> str:
        return self.title or self.name


def as_stage(item: Stage | tuple[str, StageFn]) -> Stage:
    """Stage lists may be written as plain ``(name, callable)`` pairs."""
    return item if isinstance(item, Stage) else Stage(name=item[0], run=item[1])


@dataclass(frozen=True)
class StageSelection:
    """What the operator forces: every stage, some stages by name, or everything from one stage
    on (the stages before it are skipped without looking at their records)."""

    force: bool = False
    force_stages: tuple[str, ...] = ()
    from_stage: str | None = None

    def check(self, stages: Sequence[Stage]) -> None:
        """Reject names that are not stages of this run, before any Spark work."""
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise RunsError(f"stage names must be unique, got {names}")
        asked = [("--force-stage", n) for n in self.force_stages]
        if self.from_stage is not None:
            asked.append(("--from-stage", self.from_stage))
        for flag, name in asked:
            if name not in names:
                raise RunsError(
                    f"{flag} {name}: not a stage of this run; its stages are {', '.join(names)}"
                )


# --- results ------------------------------------------------------------------------------------


@dataclass
class StageOutcome:
    """What happened to one stage in this run; ``result`` is what the stage returned (None when
    it was skipped)."""

    name: str
    status: str
    note: str
    seconds: float = 0.0
    rows_in: int | None = None
    rows_out: int | None = None
    result: Any = None


@dataclass
class RunResult:
    run_id: str
    run_date: date
    fingerprint: str
    outcomes: list[StageOutcome] = field(default_factory=list)

    def outcome(self, name: str) -> StageOutcome | None:
        return next((o for o in self.outcomes if o.name == name), None)

    def result(self, name: str) -> Any:
        """The stage's return value in this run, or None when it was skipped or absent."""
        found = self.outcome(name)
        return found.result if found else None

    def names(self, status: str) -> list[str]:
        return [o.name for o in self.outcomes if o.status == status]


# --- the lock -----------------------------------------------------------------------------------


def lock_dir(cfg: RecbatchConfig) -> Path:
    """The lock directory as a local path. It must be a POSIX file system that every machine
    submitting the pipeline sees (``file://`` URIs are fine); HDFS or S3 cannot do an atomic ``link``."""
    data_root = cfg.path("data_root")
    value = cfg.runs.lock_dir or "locks"
    if "://" not in value and not Path(value).is_absolute():
        value = f"{data_root.rstrip('/')}/{value}"
    path = local_path(value)
    if path is not None:
        return path
    raise RunsError(
        f"the run lock needs a POSIX directory shared by every machine that submits the "
        f"pipeline, not {value}: set runs.lock_dir (e.g. --set runs.lock_dir=/shared/locks)"
    )


def lock_path(cfg: RecbatchConfig, run_date: date) -> Path:
    return lock_dir(cfg) / f"pipeline-{run_date.isoformat()}.lock"


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock: enough to decide whether it is stale and to tell an operator."""

    run_id: str
    run_date: str
    host: str
    pid: int
    started_at: str

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host}, started {self.started_at})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class RunLock:
    """An exclusive-create lock file for one run date, held while a refresh runs.

    Stale when its owner is on this host and its pid is gone, or when nobody refreshed it for
    ``runs.lock_ttl_minutes`` (the owner's heartbeat thread touches it every minute or so, so a
    long stage keeps it fresh; a killed process stops doing so). Takeover is guarded by a second
    exclusive file, so two processes that both find the lock stale cannot both take it.
    """

    def __init__(self, path: Path, owner: LockOwner, ttl_seconds: float) -> None:
        self.path = path
        self.owner = owner
        self.ttl_seconds = ttl_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None
        self.held = False

    @classmethod
    def for_run(
        cls, cfg: RecbatchConfig, run_id: str | None = None, run_date: date | None = None
    ) -> RunLock:
        run_date = run_date or resolved_run_date(cfg)
        owner = LockOwner(
            run_id=run_id or str(uuid.uuid4()),
            run_date=run_date.isoformat(),
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=_now().isoformat(),
        )
        return cls(lock_path(cfg, run_date), owner, cfg.runs.lock_ttl_minutes * 60)

    # acquire / release ---------------------------------------------------------------------

    def acquire(self) -> RunLock:
        """Take the lock or raise RunLockedError naming the holder; take over a stale one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create(self.path):
                self._start_heartbeat()
                log.info("lock %s taken by run %s", self.path, self.owner.run_id)
                return self
            raw, owner, age = self._read(self.path)
            if raw is None:  # released between our attempt and the read: try again
                continue
            reason = self._stale_reason(owner, age)
            if reason is None:
                raise self._locked_error(owner, age)
            self._take_over(raw, reason)
        raise RunLockedError(
            f"could not take the lock {self.path} for run date {self.owner.run_date}: other "
            "processes keep taking it; is a refresh being retried in a loop?"
        )

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file, but only if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not self.held:
            return
        self.held = False
        _, owner, _ = self._read(self.path)
        if owner is not None and owner.run_id == self.owner.run_id:
            self.path.unlink(missing_ok=True)
            log.info("lock %s released by run %s", self.path, self.owner.run_id)
        else:
            log.warning(
                "lock %s is no longer held by run %s (now: %s): left alone",
                self.path,
                self.owner.run_id,
                owner.describe() if owner else "nobody",
            )

    def check(self) -> None:
        """Raise RunLockLost if another process took this lock over; called between stages."""
        if self._lost:
            raise RunLockLost(self._lost)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # internals -----------------------------------------------------------------------------

    def _create(self, path: Path, content: bytes | None = None) -> bool:
        """Exclusive create with the content already in place: exactly one process succeeds.

        The content goes to a private temporary file first, which is then hard-linked to
        ``path``; ``link`` fails if ``path`` exists. Why not ``O_CREAT | O_EXCL`` and a write:
        between the two, a competitor reads an empty file and reports "an unreadable lock"
        instead of the holder. ``link`` is atomic on local disks and is the classic NFS-safe
        lock primitive.
        """
        data = content if content is not None else self._content()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        if content is None:
            self.held = True
        return True

    def _content(self) -> bytes:
        return json.dumps(dataclasses.asdict(self.owner), sort_keys=True).encode()

    @staticmethod
    def _read(path: Path) -> tuple[bytes | None, LockOwner | None, float]:
        """Raw content, parsed owner (None if unreadable) and seconds since the last heartbeat."""
        try:
            raw = path.read_bytes()
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None, None, 0.0
        try:
            owner = LockOwner(**json.loads(raw))
        except (ValueError, TypeError):
            owner = None
        return raw, owner, age

    def _stale_reason(self, owner: LockOwner | None, age: float) -> str | None:
        if age > self.ttl_seconds:
            return f"no heartbeat for {age / 60:.1f} min (runs.lock_ttl_minutes)"
        if owner is not None and owner.host == self.owner.host and not _pid_alive(owner.pid):
            return f"pid {owner.pid} is not running on {owner.host}"
        return None

    def _locked_error(self, owner: LockOwner | None, age: float) -> RunLockedError:
        holder = owner.describe() if owner else "an unreadable lock file"
        return RunLockedError(
            f"run date {self.owner.run_date} is already being refreshed by {holder}; last "
            f"heartbeat {age:.0f}s ago. Lock: {self.path}. It is taken over automatically once "
            f"that process is gone (same host) or silent for {self.ttl_seconds / 60:g} min "
            "(runs.lock_ttl_minutes); delete the file only if you are sure no refresh is running"
        )

    def _take_over(self, stale_raw: bytes, reason: str) -> None:
        """Remove a stale lock under a guard file, re-checking it is still the same stale lock
        (another process may have replaced it meanwhile)."""
        guard = self.path.with_name(self.path.name + ".takeover")
        if not self._create(guard, content=self._content()):
            with contextlib.suppress(FileNotFoundError):
                if time.time() - guard.stat().st_mtime > 60:  # a takeover that died midway
                    guard.unlink()
                    return
            raise RunLockedError(
                f"run date {self.owner.run_date}: another process is taking over the stale lock "
                f"{self.path} right now"
            )
        try:
            raw, owner, _ = self._read(self.path)
            if raw == stale_raw:
                log.warning(
                    "taking over stale lock %s of %s: %s",
                    self.path,
                    owner.describe() if owner else "an unreadable owner",
                    reason,
                )
                self.path.unlink(missing_ok=True)
        finally:
            guard.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        interval = max(0.5, min(60.0, self.ttl_seconds / 4))
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._beat,
            args=(interval,),
            name=f"lock-heartbeat-{self.path.name}",
            daemon=True,
        )
        self._thread.start()

    def _beat(self, interval: float) -> None:
        """Touch the lock file while we hold it; notice if someone else took it over."""
        while not self._stop.wait(interval):
            _, owner, _ = self._read(self.path)
            if owner is None or owner.run_id != self.owner.run_id:
                self._lost = (
                    f"lost the lock {self.path} of run date {self.owner.run_date}: now held by "
                    f"{owner.describe() if owner else 'nobody'} (was this run silent for longer "
                    "than runs.lock_ttl_minutes?)"
                )
                log.error("%s", self._lost)
                return
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)


# --- the runs table -----------------------------------------------------------------------------

RUNS_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("run_date", T.DateType(), False),
        T.StructField("stage", T.StringType(), False),
        T.StructField("stage_index", T.IntegerType(), False),
        T.StructField("status", T.StringType(), False),
        T.StructField("started_at", T.TimestampType(), False),
        T.StructField("ended_at", T.TimestampType(), True),
        T.StructField("seconds", T.DoubleType(), True),
        T.StructField("rows_in", T.LongType(), True),
        T.StructField("rows_out", T.LongType(), True),
        T.StructField("error", T.StringType(), True),
        T.StructField("note", T.StringType(), True),
        T.StructField("summary", T.StringType(), True),
        T.StructField("config_fingerprint", T.StringType(), False),
        T.StructField("env", T.StringType(), False),
        T.StructField("host", T.StringType(), False),
        T.StructField("pid", T.IntegerType(), False),
    ]
)

_CONFLICTS = (
    delta_errors.ConcurrentAppendException,
    delta_errors.ConcurrentDeleteDeleteException,
    delta_errors.ConcurrentDeleteReadException,
    delta_errors.ConcurrentTransactionException,
    delta_errors.ConcurrentWriteException,
    delta_errors.DeltaConcurrentModificationException,
    delta_errors.MetadataChangedException,
    delta_errors.ProtocolChangedException,
)


def _now() -> datetime:
    return datetime.now(UTC)


def resolved_run_date(cfg: RecbatchConfig) -> date:
    """The run date the jobs use: configured, else today in UTC (as recbatch.cli does)."""
    return cfg.run_date or _now().date()


def error_message(err: BaseException) -> str:
    """One line that says what failed: the exception's first line, or for an error raised in a
    Python worker (whose message opens with boilerplate) the worker's own exception line."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    text = lines[0].strip() if lines else ""
    if "Traceback (most recent call last):" in lines:
        after = lines[lines.index("Traceback (most recent call last):") + 1 :]
        text = next((line for line in after if not line[0].isspace()), text)
    message = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return message[:MAX_ERROR_CHARS]


def summary_json(result: Any) -> str | None:
    """What the stage returned, as JSON text for the ``summary`` column (trimmed)."""
    if result is None:
        return None
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        result = dataclasses.asdict(result)
    text = json.dumps(result, default=str, sort_keys=True)
    return text if len(text) <= MAX_SUMMARY_CHARS else text[: MAX_SUMMARY_CHARS - 3] + "..."


def _with_retries(action: Callable[[], Any], what: str, attempts: int = 5) -> Any:
    """Run a Delta commit, retrying on an optimistic-concurrency conflict (another writer
    committed first); conflicts do not corrupt the table, they just ask for another try."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except _CONFLICTS as err:
            if attempt == attempts:
                raise RunsError(
                    f"could not record {what} in the runs table after {attempts} attempts: "
                    f"{error_message(err)}"
                ) from err
            log.warning("runs table: %s conflicted (%s); retrying", what, error_message(err))
            time.sleep(0.2 * 2**attempt * random.uniform(0.5, 1.5))


class RunLog:
    """Reads and writes one run date's rows of the ``runs`` table for one run."""

    def __init__(
        self, spark: SparkSession, cfg: RecbatchConfig, run_id: str, run_date: date
    ) -> None:
        self.spark = spark
        self.path = cfg.table_path(RUNS_TABLE)
        self.run_id = run_id
        self.run_date = run_date
        self.fingerprint = cfg.fingerprint()
        self.env = cfg.env
        self.host = socket.gethostname()
        self.pid = os.getpid()

    def history(self) -> list[Row]:
        """Every earlier row of this run date (a few per stage and run: small)."""
        if not is_delta_table(self.spark, self.path):
            return []
        return (
            self.spark.read.format("delta")
            .load(self.path)
            .where(F.col("run_date") == F.lit(self.run_date))
            .collect()
        )

    def close_orphans(self, rows: Iterable[Row]) -> list[Row]:
        """Mark rows left ``running`` by earlier runs as failed: we hold the date's lock, so
        their process is gone (killed, or lost its lock). Returns the rows as updated."""
        rows = list(rows)
        orphans = {
            r["run_id"] for r in rows if r["status"] == RUNNING and r["run_id"] != self.run_id
        }
        if not orphans:
            return rows
        message = "interrupted: the run ended without recording an outcome (process killed?)"
        log.warning("runs: marking %d interrupted stage(s) of %s as failed", len(orphans), orphans)
        _with_retries(
            lambda: DeltaTable.forPath(self.spark, self.path).update(
                (F.col("run_date") == F.lit(self.run_date))
                & (F.col("status") == RUNNING)
                & F.col("run_id").isin(sorted(orphans)),
                {"status": F.lit(FAILED), "error": F.lit(message)},
            ),
            "interrupted stages",
        )
        fixed = []
        for r in rows:
            if r["status"] == RUNNING and r["run_id"] in orphans:
                r = Row(**{**r.asDict(), "status": FAILED, "error": message})
            fixed.append(r)
        return fixed

    def append(self, rows: list[dict[str, Any]], what: str) -> None:
        """Blind appends: they never conflict with other runs' appends."""
        full = [{**self._common(), **row} for row in rows]
        frame = self.spark.createDataFrame(
            [tuple(r.get(f.name) for f in RUNS_SCHEMA.fields) for r in full], RUNS_SCHEMA
        )
        writer = frame.write.format("delta").mode("append").partitionBy("run_date")
        _with_retries(lambda: writer.save(self.path), what)

    def finish(self, stage: str, values: dict[str, Any]) -> None:
        """Turn this run's ``running`` row of a stage into its outcome, in one commit."""
        assignments = {
            name: F.lit(value).cast(RUNS_SCHEMA[name].dataType) for name, value in values.items()
        }
        condition = (
            (F.col("run_date") == F.lit(self.run_date))
            & (F.col("run_id") == self.run_id)
            & (F.col("stage") == stage)
            & (F.col("status") == RUNNING)
        )
        _with_retries(
            lambda: DeltaTable.forPath(self.spark, self.path).update(condition, assignments),
            f"the outcome of stage {stage}",
        )

    def _common(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_date": self.run_date,
            "config_fingerprint": self.fingerprint,
            "env": self.env,
            "host": self.host,
            "pid": self.pid,
        }


def read_runs(spark: SparkSession, cfg: RecbatchConfig) -> DataFrame:
    """The ``runs`` table as a DataFrame (for tests, jobs and ad-hoc queries)."""
    return spark.read.format("delta").load(cfg.table_path(RUNS_TABLE))


# --- planning -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    stage: Stage
    index: int
    run: bool
    note: str


def latest_outcomes(rows: Iterable[Row]) -> dict[str, Row]:
    """Per stage, the latest row that says what its output is (skips say nothing new)."""
    latest: dict[str, Row] = {}
    for row in sorted(rows, key=lambda r: r["started_at"]):
        if row["status"] != SKIPPED:
            latest[row["stage"]] = row
    return latest


def plan(
    stages: Sequence[Stage],
    previous: Mapping[str, Row],
    fingerprint: str,
    selection: StageSelection,
) -> list[Step]:
    """Decide, before anything runs, which stages run and why.

    A stage is skipped only when its latest outcome for the date is a success under this config
    fingerprint (a success under another config means its tables now hold that config's output)
    and no earlier stage runs in this invocation; forced stages and everything after them run.
    """
    steps: list[Step] = []
    upstream_runs = False
    reached = selection.from_stage is None
    for index, stage in enumerate(stages):
        if not reached and stage.name != selection.from_stage:
            steps.append(Step(stage, index, False, f"before --from-stage {selection.from_stage}"))
            continue
        reached = True
        prior = previous.get(stage.name)
        if selection.force:
            note = "--force"
        elif stage.name in selection.force_stages:
            note = "--force-stage"
        elif stage.name == selection.from_stage:
            note = "--from-stage"
        elif upstream_runs:
            note = "an earlier stage ran in this run"
        elif prior is None:
            note = "first run for this date"
        elif prior["status"] != SUCCEEDED:
            note = f"last attempt {prior['status']} (run {prior['run_id']})"
        elif prior["config_fingerprint"] != fingerprint:
            note = f"config changed since its success under {prior['config_fingerprint']}"
        else:
            steps.append(
                Step(stage, index, False, f"succeeded in run {prior['run_id']} with this config")
            )
            continue
        upstream_runs = True
        steps.append(Step(stage, index, True, note))
    return steps


# --- running ------------------------------------------------------------------------------------


def run_stages(
    spark: SparkSession,
    cfg: RecbatchConfig,
    stages: Sequence[Stage | tuple[str, StageFn]],
    selection: StageSelection | None = None,
    *,
    lock: RunLock | None = None,
) -> RunResult:
    """Run ``stages`` in order for the config's run date, with records, skipping and the lock.

    ``lock``: a lock already held by the caller (the pipeline job takes it before starting
    Spark, so a second refresh fails in a second); otherwise one is taken and released here.
    A failing stage is recorded as failed and its exception re-raised; later stages do not run.
    """
    stage_list = [as_stage(s) for s in stages]
    selection = selection or StageSelection()
    selection.check(stage_list)
    run_date = resolved_run_date(cfg)
    if cfg.run_date is None:
        cfg = cfg.model_copy(update={"run_date": run_date})
    own_lock = lock is None
    lock = lock or RunLock.for_run(cfg, run_date=run_date)
    if own_lock:
        lock.acquire()
    elif not lock.held or lock.owner.run_date != run_date.isoformat():
        raise RunsError(f"run_stages was given a lock that does not hold run date {run_date}")
    try:
        return _run_locked(spark, cfg, stage_list, selection, lock, run_date)
    finally:
        if own_lock:
            lock.release()


def _run_locked(
    spark: SparkSession,
    cfg: RecbatchConfig,
    stages: list[Stage],
    selection: StageSelection,
    lock: RunLock,
    run_date: date,
) -> RunResult:
    runs = RunLog(spark, cfg, lock.owner.run_id, run_date)
    result = RunResult(lock.owner.run_id, run_date, runs.fingerprint)
    history = runs.close_orphans(runs.history())
    steps = plan(stages, latest_outcomes(history), runs.fingerprint, selection)
    log.info(
        "run %s for %s (config %s): %s",
        result.run_id,
        run_date,
        result.fingerprint,
        ", ".join(f"{s.stage.name}={'run' if s.run else 'skip'}" for s in steps) or "no stages",
    )
    skipped = [s for s in steps if not s.run]
    if skipped:
        now = _now()
        runs.append(
            [
                {
                    "stage": s.stage.name,
                    "stage_index": s.index,
                    "status": SKIPPED,
                    "started_at": now,
                    "ended_at": now,
                    "seconds": 0.0,
                    "note": s.note,
                }
                for s in skipped
            ],
            "skipped stages",
        )
        for s in skipped:
            log.info("stage %s skipped: %s", s.stage.label, s.note)
            result.outcomes.append(StageOutcome(s.stage.name, SKIPPED, s.note))
    for step in (s for s in steps if s.run):
        lock.check()
        result.outcomes.append(_run_step(spark, cfg, runs, step))
    lock.check()
    log.info(
        "run %s for %s succeeded: ran %s; skipped %s",
        result.run_id,
        run_date,
        result.names(SUCCEEDED) or "nothing",
        result.names(SKIPPED) or "nothing",
    )
    return result


def _run_step(spark: SparkSession, cfg: RecbatchConfig, runs: RunLog, step: Step) -> StageOutcome:
    """One stage: a ``running`` row, the work, then its outcome (the error re-raised)."""
    stage = step.stage
    started = _now()
    runs.append(
        [
            {
                "stage": stage.name,
                "stage_index": step.index,
                "status": RUNNING,
                "started_at": started,
                "note": step.note,
            }
        ],
        f"the start of stage {stage.name}",
    )
    clock = time.monotonic()
    try:
        with timed(log, f"stage {stage.label}"):
            value = stage.run(spark, cfg)
    except BaseException as err:
        seconds = time.monotonic() - clock
        message = error_message(err)
        log.error("stage %s failed after %.1fs: %s", stage.label, seconds, message)
        try:
            runs.finish(
                stage.name,
                {"status": FAILED, "ended_at": _now(), "seconds": seconds, "error": message},
            )
        except Exception as record_err:  # the stage's own error is the one to report
            log.error("could not record the failure of %s: %s", stage.name, record_err)
        raise
    seconds = time.monotonic() - clock
    rows_in, rows_out = stage.counts(value)
    runs.finish(
        stage.name,
        {
            "status": SUCCEEDED,
            "ended_at": _now(),
            "seconds": seconds,
            "rows_in": rows_in,
            "rows_out": rows_out,
            "summary": summary_json(value),
        },
    )
    return StageOutcome(stage.name, SUCCEEDED, step.note, seconds, rows_in, rows_out, value)
