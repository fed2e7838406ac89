"""The run report on small real Delta tables: sections, plots, missing tables, atomic replacement.

Tables are written in the layout their stages write (the stages' schema constants and column
lists; written out where the constant lives in a module that imports torch). The stages
themselves take too long to run here, and hand-made rows let the figures the report shows be
checked against numbers computed independently (numpy on the same generated scores).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from conftest import make_test_config
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from recbatch.config import RecbatchConfig
from recbatch.events.generator import ITEM_RELATION_SCHEMA
from recbatch.events.schema import EVENTS_SCHEMA, QUARANTINE_SCHEMA
from recbatch.feedback.examples import EXAMPLE_COLUMNS
from recbatch.feedback.flip import CELLS_SCHEMA, OBSERVATION_SCHEMA
from recbatch.feedback.weights import TRAINING_WEIGHTS_COLUMNS
from recbatch.graph.build import QUARANTINE_COLUMNS as GRAPH_QUARANTINE_COLUMNS
from recbatch.graph.samples import SAMPLE_COLUMNS
from recbatch.graph.stage import STATS_SCHEMA
from recbatch.report import ReportError, publish_report, report_dir, report_stage
from recbatch.report import aggregates as agg
from recbatch.report.tables import ReportContext
from recbatch.thresholds.stage import DECISION_COLUMNS
from recbatch.thresholds.table import THRESHOLDS_SCHEMA

RUN_DATE = date(2026, 2, 1)  # make_test_config's run_date
OTHER_DATE = date(2026, 1, 31)
VERSION = "conversion-2026-02-01-test"
OLD_VERSION = "conversion-2026-02-01-oldcfg"
CUTOFF = datetime(2026, 1, 30, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

TITLES = (
    "1. Pipeline row counts and quarantine",
    "2. Delayed feedback: flip probability by elapsed time",
    "3. Conversion model by weighting method",
    "4. Reliability per uncertainty bucket",
    "5. Precision-recall: one threshold vs per-bucket thresholds",
    "6. Product graph and neighbourhood samples",
    "7. BLADE: degree-bucket quality, link thresholds and decisions",
)

# The schemas of conversion.METRICS_SCHEMA and uncertainty.scores.SCORES_COLUMNS, written out:
# importing either module loads torch (seconds), and the report must not need it either.
METRICS_DDL = (
    "run_date date, method string, cutoff timestamp, train_rows long, test_rows long, "
    "test_positives long, auc double, pr_auc double, log_loss double, ri_auc double, "
    "epochs int, final_train_loss double, train_rows_per_s double, train_seconds double"
)
SCORES_DDL = (
    "run_date date, model string, model_version string, uncertainty_method string, "
    "example_id long, view_ts timestamp, score double, uncertainty double, label int"
)
# feedback.flip.calibration's output (stamped by the stage with run_date and cutoff).
CALIBRATION_DDL = (
    "scope string, n long, flips long, mean_predicted double, observed_rate double, ece double, "
    "auc double"
)
RUNS_DDL = (
    "run_id string, run_date date, stage string, status string, started_at timestamp, "
    "ended_at timestamp, seconds double, rows_in long, rows_out long, error string"
)
WEIGHT_TYPES = {
    "example_id": LongType(),
    "observed_label": IntegerType(),
    "signal_state": StringType(),
    "method": StringType(),
    "cutoff": TimestampType(),
    "run_date": DateType(),
}

# Stored thresholds of VERSION: (bucket, lo, hi, threshold, accepted, true positives, positives).
PER_BUCKET = [
    (0, -np.inf, 1 / 3, 0.55, 100, 85, 150),
    (1, 1 / 3, 2 / 3, 0.70, 80, 66, 130),
    (2, 2 / 3, np.inf, 0.85, 60, 48, 110),
]
SINGLE = (0, -np.inf, np.inf, 0.72, 200, 160, 390)


# --- table builders ---------------------------------------------------------------------------


def _path(cfg: RecbatchConfig, name: str) -> str:
    return cfg.table_path(name)


def write_events(spark: SparkSession, cfg: RecbatchConfig, n: int = 7) -> None:
    start = datetime(2026, 1, 20, tzinfo=UTC)
    rows = [
        (
            i,
            100 + i,
            1,
            "view",
            start + timedelta(hours=i),
            (start + timedelta(hours=i)).date(),
            "f1",
        )
        for i in range(n)
    ]
    frame = spark.createDataFrame(rows, EVENTS_SCHEMA)
    frame.write.format("delta").partitionBy("event_date").save(_path(cfg, "events"))


def write_quarantine(spark: SparkSession, cfg: RecbatchConfig) -> None:
    """3 bad times from this run date's ingest, 1 duplicate from an earlier one."""
    rows = [("1", "2", "3", "view", "yesterday", None, "bad_event_ts", "f1", "2026-02-01")] * 3
    rows.append(
        ("1", "2", "3", "view", "2026-01-20T00:00:00Z", None, "duplicate", "f0", "2026-01-31")
    )
    frame = spark.createDataFrame(rows, QUARANTINE_SCHEMA)
    frame.write.format("delta").save(_path(cfg, "quarantine"))


def write_examples(spark: SparkSession, cfg: RecbatchConfig) -> None:
    def kind(name: str):
        if name.endswith("_ts"):
            return TimestampType()
        return {"view_date": DateType(), "f_item_conversion_rate": DoubleType()}.get(
            name, LongType()
        )

    schema = StructType([StructField(c, kind(c), True) for c in EXAMPLE_COLUMNS])
    view = datetime(2026, 1, 20, tzinfo=UTC)
    rows = []
    for i in range(5):
        values = {"example_id": i, "user_id": i, "item_id": 1, "category_id": 1, "view_ts": view}
        values |= {"view_date": view.date(), "f_item_conversion_rate": 0.0}
        rows.append(
            tuple(values.get(c, 0 if c.startswith("f_") else None) for c in EXAMPLE_COLUMNS)
        )
    spark.createDataFrame(rows, schema).write.format("delta").save(_path(cfg, "examples"))


def write_training_weights(spark: SparkSession, cfg: RecbatchConfig) -> None:
    """6 rows of the run date, 4 of an earlier one."""
    schema = StructType(
        [StructField(c, WEIGHT_TYPES.get(c, DoubleType()), True) for c in TRAINING_WEIGHTS_COLUMNS]
    )
    rows = []
    for i, run_date in enumerate([RUN_DATE] * 6 + [OTHER_DATE] * 4):
        values = {"example_id": i, "observed_label": i % 2, "signal_state": "none"}
        values |= {"method": "label_correction", "cutoff": CUTOFF, "run_date": run_date}
        rows.append(tuple(values.get(c, 0.5) for c in TRAINING_WEIGHTS_COLUMNS))
    spark.createDataFrame(rows, schema).write.format("delta").save(_path(cfg, "training_weights"))


def write_flip_tables(spark: SparkSession, cfg: RecbatchConfig) -> None:
    """``flip_model`` as the stage writes it (cells joined with the delay CDF, stamped) and
    ``flip_calibration`` (one row per scope, ``all`` and each signal state)."""
    edges = [(0.0, 1.0), (1.0, 24.0), (24.0, 168.0)]
    states = {"none": 0.01, "revisit": 0.03, "fav": 0.05, "cart": 0.2}
    cells = [
        (
            state,
            b,
            lo,
            hi,
            1000 // (b + 1),
            int(rate * 1000 // (b + 1) / (b + 1)),
            rate,
            rate / (b + 1) ** 2,
        )
        for state, rate in states.items()
        for b, (lo, hi) in enumerate(edges)
    ]
    observation = [
        (b, lo, hi, 50, [0.4, 0.9, 1.0][b], [0.2, 0.7, 0.95][b]) for b, (lo, hi) in enumerate(edges)
    ]
    model = (
        spark.createDataFrame(cells, CELLS_SCHEMA)
        .join(
            spark.createDataFrame(observation, OBSERVATION_SCHEMA).select(
                "elapsed_bucket", "positives", "s_upper", "s"
            ),
            "elapsed_bucket",
            "left",
        )
        .select(
            "*",
            F.lit("boosted").alias("learner"),
            F.lit(RUN_DATE).alias("run_date"),
            F.lit(CUTOFF).alias("cutoff"),
        )
    )
    model.write.format("delta").save(_path(cfg, "flip_model"))
    scopes = [
        ("all", 800, 58, 0.07, 0.072, 0.004, 0.81),
        *[(st, 200, int(200 * r * 1.1), r, r * 1.1, r / 20, 0.7) for st, r in states.items()],
    ]
    calibration = spark.createDataFrame(scopes, CALIBRATION_DDL).select(
        "*", F.lit(RUN_DATE).alias("run_date"), F.lit(CUTOFF).alias("cutoff")
    )
    calibration.write.format("delta").save(_path(cfg, "flip_calibration"))


def write_metrics(spark: SparkSession, cfg: RecbatchConfig, run_date: date = RUN_DATE) -> None:
    """AUC 0.60 (vanilla) to 0.70 (oracle); label_correction is the best contender."""
    methods = {"vanilla": 0.60, "oracle": 0.70, "waiting_window": 0.61, "label_correction": 0.66}
    rows = [
        (run_date, m, CUTOFF, 900, 300, 30, auc, auc / 10, 0.2 - auc / 10, (auc - 0.6) / 0.1,
         3, 0.3, 1e4, 2.5)
        for m, auc in methods.items()
    ]  # fmt: skip
    frame = spark.createDataFrame(rows, METRICS_DDL)
    frame.write.format("delta").save(_path(cfg, "conversion_metrics"))


def score_arrays(n: int = 3000, seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score and uncertainty uniform, positive with probability ``score ** (1 + 2u)`` (uncertain
    scores convert less), the first two scores NaN."""
    rng = np.random.default_rng(seed)
    score, uncertainty = rng.random(n), rng.random(n)
    label = (rng.random(n) < score ** (1 + 2 * uncertainty)).astype(int)
    score[:2] = np.nan
    return score, uncertainty, label


def scores_frame(spark: SparkSession):
    """The run date's scores (``score_arrays``) and a few rows of an earlier run date."""
    score, uncertainty, label = score_arrays()
    view = datetime(2026, 1, 28, tzinfo=UTC)
    rows = [
        (RUN_DATE, "conversion", VERSION, "heads", i, view, float(s), float(u), int(y))
        for i, (s, u, y) in enumerate(zip(score, uncertainty, label, strict=True))
    ]
    rows += [
        (OTHER_DATE, "conversion", "conversion-old", "heads", len(rows) + i, view, 0.9, 0.1, 1)
        for i in range(5)
    ]
    return spark.createDataFrame(rows, SCORES_DDL)


def write_scores(spark: SparkSession, cfg: RecbatchConfig) -> None:
    scores_frame(spark).write.format("delta").save(_path(cfg, "scores"))


def threshold_rows(version: str, per_bucket: list[tuple], single: tuple) -> list[tuple]:
    rows = []
    for method, buckets in (("per_bucket", per_bucket), ("single", [single])):
        for bucket, lo, hi, threshold, accepted, tp, positives in buckets:
            precision = tp / accepted
            rows.append(
                (version, RUN_DATE, method, bucket, float(lo), float(hi), threshold, 0.8, 0.8, 0.1, 0.81,
                 precision, precision - 0.05, min(1.0, precision + 0.05), tp / positives, tp / positives - 0.1,
                 tp / positives + 0.1, 0.95, 1000, 500, positives, accepted, tp, "conversion")
            )  # fmt: skip
    return rows


def write_threshold_tables(spark: SparkSession, cfg: RecbatchConfig) -> None:
    """The run's thresholds, plus those of an older model version of the same date (a re-run
    with another config keeps them in the table; the report must not mix them in)."""
    old = [(0, -np.inf, 0.5, 0.5, 1, 1, 7), (1, 0.5, np.inf, 0.9, 1, 1, 7)]
    rows = threshold_rows(OLD_VERSION, old, (0, -np.inf, np.inf, 0.5, 9, 1, 7))
    rows += threshold_rows(VERSION, PER_BUCKET, SINGLE)
    frame = spark.createDataFrame(rows, THRESHOLDS_SCHEMA)
    frame.write.format("delta").save(_path(cfg, "thresholds"))


def write_decisions(spark: SparkSession, cfg: RecbatchConfig) -> None:
    """What ``decisions_stage`` writes for the run's scores under PER_BUCKET (built directly:
    the stage itself costs seconds and is tested with the thresholds)."""
    bucket = (
        F.when(F.col("uncertainty") < 1 / 3, 0).when(F.col("uncertainty") < 2 / 3, 1).otherwise(2)
    )
    threshold = F.element_at(F.array(*[F.lit(b[3]) for b in PER_BUCKET]), bucket + 1)
    decided = (
        scores_frame(spark)
        .where(F.col("run_date") == F.lit(RUN_DATE))
        .withColumn("bucket", bucket)
        .withColumn("threshold", threshold)
        .withColumn("accepted", F.coalesce(F.col("score") >= F.col("threshold"), F.lit(False)))
        .select(*DECISION_COLUMNS)
    )
    decided.write.format("delta").save(_path(cfg, "decisions"))


LINK_VERSION = "link-mc_dropout-blade-2026-02-01-test"


def write_blade_tables(spark: SparkSession, cfg: RecbatchConfig) -> None:
    """eval_metrics by variant and bucket, the link scores and thresholds (appended beside the
    conversion model's), and decided recommendations: what the BLADE and link stages write."""
    metrics = [
        (RUN_DATE, variant, "test", bucket, 100, hits, 0.3, auc)
        for variant, hits, auc in (("blade", 0.8, 0.9), ("popularity", 0.5, 0.7))
        for bucket in ("all", "low", "mid", "high")
    ]
    spark.createDataFrame(
        metrics,
        "run_date date, variant string, split string, bucket string, edges long, "
        "hits_100 double, mrr double, direction_auc double",
    ).write.format("delta").save(_path(cfg, "eval_metrics"))
    score, uncertainty, label = score_arrays(seed=3)
    rows = [
        (RUN_DATE, "link", LINK_VERSION, "mc_dropout", i, None, float(s), float(u), int(y))
        for i, (s, u, y) in enumerate(zip(score, uncertainty, label, strict=True))
    ]
    link = spark.createDataFrame(rows, SCORES_DDL)
    link.write.format("delta").mode("append").save(_path(cfg, "scores"))
    thresholds = [(*r[:-1], "link") for r in threshold_rows(LINK_VERSION, PER_BUCKET, SINGLE)]
    spark.createDataFrame(thresholds, THRESHOLDS_SCHEMA).write.format("delta").mode("append").save(
        _path(cfg, "thresholds")
    )
    recs = [
        (RUN_DATE, product, rank, 100 + rank, 1.0 / rank, 0.9 / rank, 0.1, rank % 2 == 1)
        for product in range(5)
        for rank in range(1, 7)
    ]
    spark.createDataFrame(
        recs,
        "run_date date, product long, rank int, recommended_product long, score double, "
        "probability double, uncertainty double, accepted boolean",
    ).write.format("delta").save(_path(cfg, "recommendations"))


def write_runs(spark: SparkSession, cfg: RecbatchConfig) -> None:
    t0 = datetime(2026, 2, 1, 2, 0, tzinfo=UTC)

    def stage(run_id, name, start_min, minutes, status="ok", error=None):
        start = t0 + timedelta(minutes=start_min)
        end = start + timedelta(minutes=minutes)
        return (run_id, RUN_DATE, name, status, start, end, minutes * 60.0, 10, 9, error)

    rows = [
        stage("run-old", "ingest", 0, 3),
        stage("run-new", "ingest", 60, 2),
        stage("run-new", "examples", 62, 5),
        stage("run-new", "scores", 67, 1, "failed", "boom <script>alert(1)</script>"),
    ]
    spark.createDataFrame(rows, RUNS_DDL).write.format("delta").save(_path(cfg, "runs"))


# Training-graph degrees of 10 nodes (out, in), and the budget law of the samples below.
GRAPH_DEGREES = [(0, 1), (1, 1), (1, 0), (2, 0), (3, 2), (4, 2), (5, 3), (8, 9), (16, 30), (20, 12)]
GRAPH_HOPS, GRAPH_K_MAX = 2, 6
SAMPLE_DDL = (
    "run_date date, law string, role string, role_id int, node_index long, node_id long, "
    "degree int, budget int, hop_counts array<int>, neighbour_index array<long>, "
    "neighbour_weight array<float>, neighbour_mask array<boolean>"
)


def sample_budget(degree: int) -> int:
    return 2 + round(4 / max(degree, 1))


def sample_hops(degree: int) -> list[int]:
    """Hop 1 takes what the degree allows, hop 2 half the budget (made up, but checkable)."""
    budget = sample_budget(degree)
    return [min(budget, degree), budget // 2 if degree else 0]


def write_graph_tables(spark: SparkSession, cfg: RecbatchConfig) -> None:
    """``graph_stats``, ``graph_quarantine``, ``graph_nodes`` and ``graph_samples`` in the
    stages' layouts: GRAPH_DEGREES on the run date, a bigger graph on the day before."""
    stats = [
        (
            RUN_DATE,
            "events",
            10,
            40,
            6,
            0.15,
            2,
            9,
            2.31,
            2,
            None,
            None,
            30,
            5,
            5,
            3,
            None,
            None,
            None,
        ),
        (
            OTHER_DATE,
            "events",
            99,
            999,
            0,
            0.0,
            1,
            99,
            9.9,
            9,
            9.9,
            9,
            1,
            1,
            1,
            5,
            None,
            None,
            None,
        ),
    ]
    spark.createDataFrame(stats, STATS_SCHEMA).write.format("delta").save(_path(cfg, "graph_stats"))
    reasons = ["self-loop (src = dst)"] * 2 + ["duplicate edge (kept once)"]
    quarantine = [(RUN_DATE, "1", "1", "1\t1", r, "events") for r in reasons]
    quarantine += [(OTHER_DATE, None, None, "x", "missing id", "events")] * 5
    schema = "run_date date, " + ", ".join(f"{c} string" for c in GRAPH_QUARANTINE_COLUMNS)
    spark.createDataFrame(quarantine, schema).write.format("delta").save(
        _path(cfg, "graph_quarantine")
    )
    nodes = [(RUN_DATE, i, 100 + i, o, n, 0) for i, (o, n) in enumerate(GRAPH_DEGREES)]
    nodes += [(OTHER_DATE, i, 100 + i, 50, 50, 0) for i in range(3)]
    spark.createDataFrame(
        nodes,
        "run_date date, node_index long, node_id long, out_degree int, in_degree int, "
        "component long",
    ).write.format("delta").save(_path(cfg, "graph_nodes"))
    width = GRAPH_HOPS * GRAPH_K_MAX
    samples = [
        (run_date, "power", role, role_id, i, 100 + i, d, sample_budget(d), sample_hops(d),
         [-1] * width, [0.0] * width, [False] * width)
        for run_date, degrees in ((RUN_DATE, GRAPH_DEGREES), (OTHER_DATE, [(50, 50)] * 3))
        for i, pair in enumerate(degrees)
        for role_id, (role, d) in enumerate(zip(("source", "target"), pair, strict=True))
    ]  # fmt: skip
    frame = spark.createDataFrame(samples, SAMPLE_DDL)
    assert tuple(frame.columns[2:]) == SAMPLE_COLUMNS
    frame.write.format("delta").save(_path(cfg, "graph_samples"))
    t0 = datetime(2026, 1, 20, tzinfo=UTC)
    spark.createDataFrame(
        [(RUN_DATE, 100, 103, 0, 3, 1.0, t0, t0, "train")],
        "run_date date, src long, dst long, src_index long, dst_index long, weight double, "
        "first_ts timestamp, last_ts timestamp, split string",
    ).write.format("delta").save(_path(cfg, "graph_edges"))
    # The generator's truth: 100 -> 103 is a training edge, 100 -> 101 and 104 -> 102 are left.
    relations = [(100, 101, 0, 1), (100, 103, 0, 1), (104, 102, 0, 1)]
    spark.createDataFrame(relations, ITEM_RELATION_SCHEMA).write.parquet(
        f"{cfg.path('ground_truth')}/item_relations"
    )


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_cfg(spark, tmp_path_factory: pytest.TempPathFactory) -> RecbatchConfig:
    """Every table the report reads."""
    cfg = make_test_config(tmp_path_factory.mktemp("report_full"))
    write_events(spark, cfg)
    write_quarantine(spark, cfg)
    write_examples(spark, cfg)
    write_training_weights(spark, cfg)
    write_flip_tables(spark, cfg)
    write_metrics(spark, cfg)
    write_scores(spark, cfg)
    write_threshold_tables(spark, cfg)
    write_decisions(spark, cfg)
    write_runs(spark, cfg)
    write_graph_tables(spark, cfg)
    write_blade_tables(spark, cfg)
    return cfg


@pytest.fixture(scope="module")
def full_report(spark, full_cfg: RecbatchConfig) -> Path:
    return Path(report_stage(spark, full_cfg))


@pytest.fixture(scope="module")
def partial_cfg(spark, tmp_path_factory: pytest.TempPathFactory) -> RecbatchConfig:
    """A pipeline that stopped after scoring: scores, and conversion metrics of an older run."""
    cfg = make_test_config(tmp_path_factory.mktemp("report_partial"))
    write_scores(spark, cfg)
    write_metrics(spark, cfg, run_date=OTHER_DATE)
    return cfg


def images(index: Path) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', index.read_text())


def hidden_leftovers(cfg: RecbatchConfig) -> list[str]:
    return sorted(
        p.name for p in report_dir(cfg, RUN_DATE).parent.iterdir() if p.name.startswith(".")
    )


# --- the full report --------------------------------------------------------------------------


def test_full_report_has_every_section_and_valid_pngs(full_cfg, full_report: Path) -> None:
    assert full_report == report_dir(full_cfg, RUN_DATE) / "index.html"
    assert full_report.parent == Path(full_cfg.path("data_root")) / "reports" / "2026-02-01"
    page = full_report.read_text()
    for title in TITLES:
        assert f"<h2>{title}</h2>" in page
    assert page.count("Skipped:") == 0, re.findall(r'<p class="note">[^<]*', page)
    assert "<script" not in page
    assert "A sample of recommendations" in page and page.count("<td>yes</td>") >= 3
    # Popularity's top 10 over products 100 and 104 (nodes 100..109; 100's training edge left
    # out), all nodes but the product itself and its known target: 8 + 9 pairs, both relations.
    assert "Recommendations against the planted relations" in page
    assert re.search(r"<td>popularity</td><td[^>]*>2</td><td[^>]*>17</td><td[^>]*>2</td>", page)
    assert "by the <em>boosted</em> learner" in page and "AUC of z" in page
    assert page.index(f"<h2>{TITLES[5]}</h2>") < page.index(f"<h2>{TITLES[6]}</h2>")
    srcs = images(full_report)
    assert sorted(srcs) == [
        "blade_buckets.png",
        "degree_distribution.png",
        "flip_calibration.png",
        "flip_model.png",
        "link_pr_curve.png",
        "link_reliability.png",
        "pr_curve.png",
        "reliability.png",
        "sample_budgets.png",
    ]
    assert sorted(p.name for p in full_report.parent.iterdir()) == sorted([*srcs, "index.html"])
    for src in srcs:
        png = full_report.parent / src
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert png.stat().st_size > 10_000
        height, width = matplotlib.image.imread(png).shape[:2]
        assert height > 300 and width > 600


def test_counts_quarantine_and_latest_run(full_report: Path) -> None:
    page = full_report.read_text()
    num = '<td class="num">{}</td>'
    assert "<td>events</td>" + num.format("—") + num.format(7) in page
    assert "<td>training_weights</td>" + num.format(6) + num.format(10) in page
    # conversion and link scores of the run date (3,000 each), and 5 of an earlier date
    assert "<td>scores</td>" + num.format("6,000") + num.format("6,005") in page
    assert "<td>decisions</td>" + num.format("3,000") + num.format("3,000") in page
    assert "<td>bad_event_ts</td>" + num.format(3) + num.format(3) in page
    assert "<td>duplicate</td>" + num.format(1) + num.format(0) in page
    # The latest run of the date only, in start order, its error escaped.
    assert "run-new" in page and "run-old" not in page
    timeline = page[page.index("stage timeline") :]
    assert (
        timeline.index("<td>ingest</td>")
        < timeline.index("<td>examples</td>")
        < timeline.index("<td>scores</td>")
    )
    assert "boom &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'class="span failed"' in page


def test_stored_rules_are_summed_over_buckets_of_the_scores_version(full_report: Path) -> None:
    page = full_report.read_text()
    tp, accepted, positives = (sum(b[i] for b in PER_BUCKET) for i in (5, 4, 6))
    assert (tp, accepted) == (199, 240)
    per_bucket = "<td>per_bucket</td>" + "".join(
        f'<td class="num">{v}</td>'
        for v in (3, accepted, tp, positives, f"{tp / accepted:.4f}", f"{tp / positives:.4f}")
    )
    assert per_bucket in page
    single = "<td>single</td>" + "".join(
        f'<td class="num">{v}</td>' for v in (1, 200, 160, 390, "0.8000", "0.4103")
    )
    assert single in page
    assert "0.9000" not in page.split("Stored rules")[1].split("</table>")[0]  # old version's 0.9
    assert (
        '<span class="best">0.6600</span>' in page
    )  # label_correction's AUC; the oracle is not a contender


def test_graph_section_shows_the_run_dates_graph_and_budgets(full_report: Path) -> None:
    page = full_report.read_text()
    graph = page[page.index(f"<h2>{TITLES[5]}</h2>") : page.index(f"<h2>{TITLES[6]}</h2>")]
    assert "<td>nodes</td><td>10</td>" in graph and "<td>2 / 9</td>" in graph
    assert "<td>2.310 (d<sub>min</sub> 2)</td>" in graph  # out-degree fit
    assert "<td>— (tail too small to fit)</td>" in graph  # no in-degree fit
    assert "<td>30 / 5 / 5</td>" in graph and "0.150 (6 edges)" in graph
    num = '<td class="num">{}</td>'
    assert "<td>self-loop (src = dst)</td>" + num.format(2) + num.format("0.667") in graph
    assert "missing id" not in graph  # the day before's quarantine
    assert "without an outgoing training edge: 1, without an incoming one: 2 (" in graph
    assert "20 sample rows (one per node and role), 2 hops, degree law <code>power</code>" in graph
    # Per role and degree bucket, computed here from the same made-up law.
    for role, column in (("source", 0), ("target", 1)):
        table = graph[graph.index(f"<strong>{role}</strong> role") :].split("</table>")[0]
        degrees = np.array([pair[column] for pair in GRAPH_DEGREES])
        buckets = np.searchsorted([1, 2, 4, 8, 16], degrees, side="right")
        labels = ["0", "1", "2-3", "4-7", "8-15", "16+"]
        for bucket in sorted(set(buckets)):
            mine = degrees[buckets == bucket]
            hops = np.array([sample_hops(int(d)) for d in mine])
            cells = [
                len(mine),
                f"{np.mean([sample_budget(int(d)) for d in mine]):.2f}",
                f"{hops[:, 0].mean():.2f}",
                f"{hops[:, 1].mean():.2f}",
                f"{hops.sum(axis=1).mean():.2f}",
            ]
            row = f"<td>{labels[bucket]}</td>" + "".join(num.format(c) for c in cells)
            assert row in table, (role, labels[bucket], table)
        assert table.count("<tr>") == 1 + len(set(buckets))


def test_reliability_bins_agree_with_direct_counts(spark, full_cfg, tmp_path: Path) -> None:
    ctx = ReportContext(spark, full_cfg, RUN_DATE, tmp_path)
    scores = agg.run_scores(ctx.table("scores"), RUN_DATE)
    thresholds = ctx.table("thresholds").where(F.col("model_version") == VERSION)
    buckets = agg.bucket_ranges(agg.small_table(thresholds, ["*"], ["method", "bucket"]))
    assert [(b.bucket, b.threshold) for b in buckets] == [(b[0], b[3]) for b in PER_BUCKET]
    bins, excluded = agg.reliability_bins(scores, buckets)
    assert excluded == 2  # the two NaN scores
    score, uncertainty, label = score_arrays()
    valid = ~np.isnan(score)
    for bucket in buckets:
        mine = bins[bins["bucket"] == bucket.bucket]
        inside = valid & (uncertainty >= bucket.lo) & (uncertainty < bucket.hi)
        assert int(mine["rows"].sum()) == inside.sum()
        assert len(mine) == 10 and mine["rows"].min() >= inside.sum() // 10 - 15
        positives = (mine["positive_rate"] * mine["rows"]).sum()
        assert positives == pytest.approx(label[inside].sum())
        assert (mine["mean_score"] * mine["rows"]).sum() == pytest.approx(score[inside].sum())
        # The planted effect: the top decile converts far more often than the bottom one.
        assert mine["positive_rate"].iloc[-1] > mine["positive_rate"].iloc[0] + 0.3


def test_pr_curve_from_histogram_reaches_the_positive_rate(spark, full_cfg, tmp_path: Path) -> None:
    scores = agg.run_scores(
        ReportContext(spark, full_cfg, RUN_DATE, tmp_path).table("scores"), RUN_DATE
    )
    histogram, excluded = agg.score_histogram(scores, bins=50)
    assert excluded == 2 and 40 <= len(histogram) <= 50
    curve = agg.pr_curve(histogram)
    score, _, label = score_arrays()
    valid = ~np.isnan(score)
    assert curve["accepted"].iloc[-1] == valid.sum()
    assert curve["recall"].iloc[-1] == 1.0
    assert curve["precision"].iloc[-1] == pytest.approx(label[valid].mean())
    # Each point is the exact precision of accepting score >= its threshold.
    for point in curve.iloc[[5, 20, 35]].itertuples():
        accepted = valid & (score >= point.threshold)
        assert point.accepted == accepted.sum()
        assert point.precision == pytest.approx(label[accepted].mean())
    assert curve["threshold"].is_monotonic_decreasing and curve["recall"].is_monotonic_increasing


def test_pr_curve_and_average_precision_by_hand() -> None:
    histogram = pd.DataFrame(
        {"bin": [0, 1, 2], "lo": [0.1, 0.5, 0.9], "rows": [70, 20, 10], "positives": [5, 6, 9]}
    )
    curve = agg.pr_curve(histogram)
    assert curve["threshold"].tolist() == [0.9, 0.5, 0.1]
    assert curve["precision"].tolist() == pytest.approx([0.9, 0.5, 0.2])
    assert curve["recall"].tolist() == pytest.approx([0.45, 0.75, 1.0])
    assert agg.average_precision(curve) == pytest.approx(0.45 * 0.9 + 0.3 * 0.5 + 0.25 * 0.2)
    assert agg.pr_curve(histogram.assign(positives=0)).empty


# --- partial pipelines, re-runs and failures --------------------------------------------------


def test_no_tables_gives_notes_not_failures(spark, tmp_path: Path) -> None:
    cfg = make_test_config(tmp_path / "empty")
    index = Path(report_stage(spark, cfg))
    page = index.read_text()
    for title in TITLES:
        assert f"<h2>{title}</h2>" in page
    for name in ("quarantine", "flip_model", "flip_calibration", "conversion_metrics", "scores"):
        assert f"Skipped: no {name} table at {cfg.table_path(name)}" in page
    for name in ("graph_stats", "graph_quarantine", "graph_nodes", "graph_samples"):
        assert f"Skipped: no {name} table at {cfg.table_path(name)}" in page
    assert "Skipped: no runs table yet" in page
    assert page.count("table missing") == 6
    assert images(index) == [] and [p.name for p in index.parent.iterdir()] == ["index.html"]


def test_partial_pipeline_draws_what_its_tables_allow(spark, partial_cfg) -> None:
    index = Path(report_stage(spark, partial_cfg))
    page = index.read_text()
    assert images(index) == ["pr_curve.png"]  # the raw-score curve needs only the scores
    assert (
        page.count(f"Skipped: no thresholds table at {partial_cfg.table_path('thresholds')}") == 2
    )
    assert "Skipped: no flip_model table" in page
    assert (
        "Skipped: the conversion_metrics table has no rows for run date 2026-02-01 "
        "(latest run date in it: 2026-01-31)."
    ) in page
    scores = '<td>scores</td><td class="num">3,000</td><td class="num">3,005</td>'
    assert scores in page and page.count("table missing") == 5
    assert "3,000 scored examples of the run date" not in page  # two NaN scores are left out
    assert "2,998 scored examples of the run date" in page and "2 invalid rows left out" in page


def test_rerun_replaces_the_report(spark, tmp_path: Path) -> None:
    cfg = make_test_config(tmp_path / "rerun")
    index = Path(report_stage(spark, cfg))
    assert "Skipped: no conversion_metrics table" in index.read_text()
    stale = index.parent / "stale.png"
    stale.write_bytes(PNG_MAGIC)
    folder = index.parent.stat().st_ino
    write_metrics(spark, cfg)
    again = Path(report_stage(spark, cfg))
    assert again == index
    assert not stale.exists() and index.parent.stat().st_ino != folder
    page = again.read_text()
    assert (
        "Skipped: no conversion_metrics table" not in page and "<td>label_correction</td>" in page
    )
    assert sorted(p.name for p in index.parent.parent.iterdir()) == ["2026-02-01"]  # no leftovers


def test_failure_midway_keeps_the_previous_report(spark, tmp_path: Path) -> None:
    cfg = make_test_config(tmp_path / "broken")
    write_flip_tables(spark, cfg)
    # The optional runs table is still being designed: an unexpected layout is only a note.
    runs = spark.createDataFrame(
        [("r1", RUN_DATE, "ingest")], "run_id string, run_date date, stage string"
    )
    runs.write.format("delta").save(cfg.table_path("runs"))
    index = Path(report_stage(spark, cfg))
    assert "Skipped: the runs table lacks started_at" in index.read_text()
    before = {p.name: p.read_bytes() for p in index.parent.iterdir()}
    assert sorted(before) == ["flip_calibration.png", "flip_model.png", "index.html"]
    # A core table without the columns the report reads fails it: conversion_metrics is read in
    # section 3, after section 2 has drawn its plots into the staging folder.
    spark.createDataFrame([(RUN_DATE, "vanilla")], "run_date date, method string").write.format(
        "delta"
    ).save(cfg.table_path("conversion_metrics"))
    with pytest.raises(ReportError, match=r"conversion_metrics .* lacks the column\(s\) .*auc"):
        report_stage(spark, cfg)
    assert {p.name: p.read_bytes() for p in index.parent.iterdir()} == before
    assert [p.name for p in index.parent.parent.iterdir()] == ["2026-02-01"]  # staging removed


def test_publish_swaps_folders_and_report_dir_needs_a_local_root(tmp_path: Path) -> None:
    target, staging = tmp_path / "2026-02-01", tmp_path / ".staging"
    staging.mkdir()
    (staging / "index.html").write_text("first")
    publish_report(staging, target)
    assert (target / "index.html").read_text() == "first" and not staging.exists()
    staging.mkdir()
    (staging / "index.html").write_text("second")
    (target / "old.png").write_bytes(b"x")
    publish_report(staging, target)
    assert sorted(p.name for p in target.iterdir()) == ["index.html"]
    assert (target / "index.html").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-02-01"]

    cfg = make_test_config(tmp_path, "paths.data_root=hdfs://namenode/recbatch")
    with pytest.raises(ReportError, match="local or mounted"):
        report_dir(cfg, RUN_DATE)
    local = make_test_config(tmp_path, f"paths.data_root=file://{tmp_path}/root")
    assert report_dir(local, RUN_DATE) == tmp_path / "root" / "reports" / "2026-02-01"


def test_folders_of_killed_runs_are_removed_once_stale(tmp_path: Path) -> None:
    from recbatch.report.stage import remove_leftovers

    target = tmp_path / "2026-02-01"
    target.mkdir()
    stale = [tmp_path / ".2026-02-01.tmp-dead", tmp_path / ".2026-02-01.old-dead"]
    fresh = tmp_path / ".2026-02-01.tmp-live"  # a run of the date that may still be working
    other = tmp_path / ".2026-02-02.tmp-dead"  # another date's: not this run's business
    for folder in [*stale, fresh, other]:
        folder.mkdir()
        (folder / "index.html").write_text("partial")
    an_hour_ago = datetime.now(UTC).timestamp() - 3600
    for folder in [*stale, other]:
        os.utime(folder, (an_hour_ago, an_hour_ago))

    assert sorted(remove_leftovers(target, max_age_s=1800)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, fresh.name, other.name]
    )


def test_method_summary_gives_seed_intervals_and_paired_differences_to_vanilla() -> None:
    """Three model seeds per method: the mean and 95% t-interval of each metric, the paired
    differences to vanilla of the same seed, RI-AUC from the mean AUCs."""
    auc = {"vanilla": [0.80, 0.81, 0.83], "oracle": [0.84, 0.84, 0.86], "fnw": [0.81, 0.81, 0.85]}
    rows = [
        {"method": m, "model_seed": 7 + i, "train_rows": 100, "test_rows": 50,
         "test_positives": 5, "auc": a, "pr_auc": a / 2, "log_loss": 1 - a, "ri_auc": None,
         "train_seconds": 2.0 + i, "pcoc": 0.9}
        for m, values in auc.items() for i, a in enumerate(values)
    ]  # fmt: skip
    summary = agg.method_summary(pd.DataFrame(rows))
    assert [s.method for s in summary] == ["vanilla", "oracle", "fnw"]
    fnw = summary[2]
    assert fnw.seeds == 3 and fnw.auc.mean == pytest.approx(np.mean(auc["fnw"]))
    half = 4.302653 * np.std(auc["fnw"], ddof=1) / np.sqrt(3)  # t(0.975, 2) sd / sqrt(n)
    assert fnw.auc.half_width == pytest.approx(half, rel=1e-5)
    diffs = np.array(auc["fnw"]) - np.array(auc["vanilla"])  # 0.01, 0.0, 0.02
    assert fnw.auc_vs_vanilla.mean == pytest.approx(diffs.mean())
    assert fnw.auc_vs_vanilla.half_width == pytest.approx(
        4.302653 * diffs.std(ddof=1) / np.sqrt(3), rel=1e-5
    )
    assert fnw.log_loss_vs_vanilla.mean == pytest.approx(-diffs.mean())
    assert summary[0].auc_vs_vanilla is None
    mean = {m: np.mean(v) for m, v in auc.items()}
    assert fnw.ri_auc == pytest.approx(
        (mean["fnw"] - mean["vanilla"]) / (mean["oracle"] - mean["vanilla"])
    )
    assert fnw.train_seconds == pytest.approx(3.0)
    assert str(fnw.auc) == f"{np.mean(auc['fnw']):.4f} ± {half:.4f}"
    single = agg.method_summary(pd.DataFrame([r for r in rows if r["model_seed"] == 7]))
    assert single[2].auc.half_width is None and str(single[2].auc) == "0.8100"


def test_planted_quality_by_hand(spark) -> None:
    # Truth: 1 -> 2, 1 -> 3 (a training edge: out of every list), 4 -> 5, and 9 -> 1 (9 is not
    # in the graph: out of reach). Left: 1 -> 2 and 4 -> 5 over products 1 and 4.
    nodes = spark.createDataFrame(
        [(1, 1), (2, 4), (3, 5), (4, 0), (5, 3)], "node_id long, in_degree int"
    )
    truth = spark.createDataFrame([(1, 2), (1, 3), (4, 5), (9, 1)], "src long, dst long")
    known = spark.createDataFrame([(1, 3)], "src long, dst long")
    recommendations = spark.createDataFrame(
        [(1, 1, 2, True), (1, 2, 4, False), (1, 3, 3, False), (4, 1, 1, False), (4, 2, 5, True)],
        "product long, rank int, recommended_product long, accepted boolean",
    )
    quality = agg.planted_quality(recommendations, nodes, truth, 2, known).set_index("list")
    # BLADE's top 2: 1 -> {2, 4}, 4 -> {1, 5}: both relations among 4 pairs.
    assert quality.loc["blade", ["products", "pairs", "planted"]].tolist() == [2, 4, 2]
    assert quality.loc["blade", "precision"] == 0.5 and quality.loc["blade", "recall"] == 1.0
    # Popularity (in-degree 3 > 2 > 5 > 1 > 4), the product and its known targets left out:
    # 1 -> {2, 5}, 4 -> {3, 2}: one relation among 4 pairs.
    assert quality.loc["popularity", ["pairs", "planted"]].tolist() == [4, 1]
    assert quality.loc["popularity", "recall"] == 0.5
    # The accepted recommendations are exactly the two relations.
    assert quality.loc["blade accepted", ["products", "pairs", "planted"]].tolist() == [2, 2, 2]
    assert quality.loc["blade accepted", "precision"] == 1.0
