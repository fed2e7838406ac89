"""Time and memory of the delayed-feedback stages on a generated log of a given size.

    .venv/bin/python bench/feedback_scale.py --views 1.6e6 [--views-per-user 9.1]
        [--work-dir DIR] [--config FILE] [--set key=value ...] [--keep]

The log is generated with the configured generator settings, ``n_users = views / views_per_user``
(about 9 views per user at the defaults: 3 sessions x 3 views, plus follow-ups). Setup (not
timed as a stage): the truth views and the observed events are written as Parquet under
``--work-dir`` (default ``<paths.data_root>/bench/feedback_scale/<views>``). Then, each timed:

1. ``examples``: ``build_examples`` on the events, written as a Delta table (``write_examples``);
2. ``flip``: counterfactual training set, hazard cells, delay CDF and the held-out calibration
   (what ``feedback.stage`` does before the weights);
3. ``weights``: ``apply_hazard`` + ``training_weights`` at T, written as a Delta table.

T is the last event time (as ``feedback.stage.snapshot_cutoff`` without ``feedback.cutoff``).
Memory is sampled every 0.2 s during each stage: driver Python RSS (psutil), the Spark JVM's RSS
(the ``java`` child process, /proc via psutil), the JVM heap in use (``Runtime`` over py4j) and
the PySpark Python workers' RSS. Prints one row per stage. Timings are wall clock on a shared
machine: other Spark jobs compete for the same cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import psutil  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.storagelevel import StorageLevel  # noqa: E402

from recbatch.config import load_config  # noqa: E402
from recbatch.events.generator import build_catalog, observed_events, simulate_views  # noqa: E402
from recbatch.feedback.examples import build_examples, write_examples  # noqa: E402
from recbatch.feedback.flip import (  # noqa: E402
    apply_hazard,
    calibration,
    counterfactual_training_set,
    expected_calibration_errors,
    fit_hazard,
    fit_observation,
    observe_at,
    split_holdout,
)
from recbatch.feedback.weights import training_weights  # noqa: E402
from recbatch.log import configure_logging  # noqa: E402
from recbatch.session import build_session  # noqa: E402

MIB = 1024 * 1024


@dataclass
class Peaks:
    driver_rss: int = 0
    jvm_rss: int = 0
    jvm_heap: int = 0
    workers_rss: int = 0
    samples: int = 0
    errors: list[str] = field(default_factory=list)


class MemorySampler:
    """Samples the driver, the JVM and the Python workers in a thread; ``peaks`` per stage."""

    def __init__(self, spark, interval_s: float = 0.2) -> None:
        self.me = psutil.Process()
        self.runtime = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
        self.interval_s = interval_s
        self.peaks = Peaks()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _jvm_and_workers(self) -> tuple[int, int]:
        jvm, workers = 0, 0
        for child in self.me.children(recursive=True):
            try:
                name = child.name()
                rss = child.memory_info().rss
            except psutil.Error:
                continue
            if name.startswith("java"):
                jvm += rss
            elif "python" in name:
                workers += rss
        return jvm, workers

    def sample(self) -> None:
        p = self.peaks
        try:
            p.driver_rss = max(p.driver_rss, self.me.memory_info().rss)
            jvm, workers = self._jvm_and_workers()
            p.jvm_rss, p.workers_rss = max(p.jvm_rss, jvm), max(p.workers_rss, workers)
            used = self.runtime.totalMemory() - self.runtime.freeMemory()
            p.jvm_heap = max(p.jvm_heap, used)
            p.samples += 1
        except Exception as err:  # a sample lost is not a failed benchmark
            if len(p.errors) < 3:
                p.errors.append(repr(err))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self.peaks = Peaks()
        self._stop.clear()
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.sample()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", type=float, required=True, help="target views, e.g. 1.6e6")
    parser.add_argument(
        "--views-per-user",
        type=float,
        default=9.1,
        help="mean views per user at the generator settings (9.1 measured at the defaults)",
    )
    parser.add_argument("--work-dir", help="default <paths.data_root>/bench/feedback_scale/<N>")
    parser.add_argument("--config", help="YAML config (default conf/local.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--keep", action="store_true", help="keep the generated data and tables")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level)
    n_users = max(1, round(args.views / args.views_per_user))
    cfg = load_config(args.config, [*args.overrides, f"generator.n_users={n_users}"])
    work = Path(args.work_dir or Path(cfg.path("data_root")) / "bench" / "feedback_scale")
    work = work / f"{int(args.views)}" if not args.work_dir else work
    truth_path, events_path = str(work / "truth_views"), str(work / "events")
    examples_path, weights_path = str(work / "examples"), str(work / "training_weights")
    spark = build_session(cfg)
    sampler = MemorySampler(spark)
    settings = cfg.feedback
    results = []

    def stage(name: str, fn) -> None:
        start = time.monotonic()
        with sampler:
            rows = fn()
        seconds = time.monotonic() - start
        p = sampler.peaks
        results.append((name, seconds, rows, p))
        print(
            f"  {name}: {seconds:.1f}s, {rows} rows"
            + (f" (sampler errors: {p.errors})" if p.errors else ""),
            flush=True,
        )

    print(
        f"feedback scale bench: target {args.views:.3g} views -> n_users={n_users} "
        f"on {spark.sparkContext.master}, {cfg.spark.shuffle_partitions} shuffle partitions, "
        f"driver memory {cfg.spark.driver_memory}; data under {work}",
        flush=True,
    )

    def generate() -> int:
        catalog = build_catalog(cfg.generator)
        views = simulate_views(spark, cfg.generator, catalog)
        views.write.mode("overwrite").parquet(truth_path)
        truth = spark.read.parquet(truth_path)
        observed_events(truth, cfg.generator).write.mode("overwrite").parquet(events_path)
        return truth.count()

    stage("setup: generate views + events (Parquet)", generate)
    events = spark.read.parquet(events_path)
    n_views = events.where("event_type = 'view'").count()
    n_events = events.count()
    cutoff = events.agg(F.max("event_ts")).head()[0]
    cutoff = cutoff.astimezone() if cutoff.tzinfo is None else cutoff
    print(f"  {n_views} observed views, {n_events} events; cutoff T = {cutoff.isoformat()}")

    def examples_stage() -> int:
        write_examples(spark, build_examples(events, settings), examples_path)
        return spark.read.format("delta").load(examples_path).count()

    stage("examples (build + Delta write)", examples_stage)
    examples = spark.read.format("delta").load(examples_path).persist(StorageLevel.MEMORY_AND_DISK)
    state: dict[str, object] = {}

    def flip_stage() -> int:
        training = counterfactual_training_set(examples, cutoff, settings).persist()
        cells = fit_hazard(training, settings)
        observation = fit_observation(examples, cutoff, settings)
        fit_rows, heldout = split_holdout(training)
        check = fit_hazard(fit_rows, settings)
        ece = expected_calibration_errors(
            calibration(apply_hazard(heldout, check, observation, settings))
        )
        state.update(cells=cells, observation=observation, ece=ece, training=training)
        return training.count()

    stage("flip (training set + hazard + delay CDF + held-out ECE)", flip_stage)

    def weights_stage() -> int:
        scored = apply_hazard(
            observe_at(examples, cutoff, settings),
            state["cells"],
            state["observation"],
            settings,
        )
        run_date = cfg.run_date or cutoff.date()
        rows = training_weights(scored, settings.weighting, settings, cutoff, run_date)
        rows.write.format("delta").mode("overwrite").save(weights_path)
        return spark.read.format("delta").load(weights_path).count()

    stage("weights (score at T + Delta write)", weights_stage)
    state["training"].unpersist()
    examples.unpersist()

    print(f"\nheld-out ECE: { {k: round(v, 4) for k, v in state['ece'].items()} }")
    header = (
        f"{'stage':58s} {'seconds':>8s} {'rows':>10s} {'driver RSS':>11s} {'JVM RSS':>9s} "
        f"{'JVM heap':>9s} {'py workers':>10s}"
    )
    print(f"\n{header}\n{'-' * len(header)}")
    for name, seconds, rows, p in results:
        print(
            f"{name:58s} {seconds:8.1f} {rows:10d} {p.driver_rss / MIB:9.0f}Mi "
            f"{p.jvm_rss / MIB:7.0f}Mi {p.jvm_heap / MIB:7.0f}Mi {p.workers_rss / MIB:8.0f}Mi"
        )
    total = sum(r[1] for r in results[1:])
    print(f"{'examples + flip + weights':58s} {total:8.1f}")
    print(
        "(memory: peaks over 0.2 s samples; JVM heap = Runtime total - free; timings are wall "
        "clock on a shared machine, other Spark jobs compete for the cores)"
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
