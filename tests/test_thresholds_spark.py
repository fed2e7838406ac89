"""Uncertainty-aware thresholds on Spark: the histogram aggregation, invalid rows, the Delta table
and applying stored thresholds.

The histogram is checked against pandas on the same rows; applying the stored thresholds is
checked cell by cell against the table's own evaluation counts and against a pandas decision on
boundary values (scores exactly at a threshold, uncertainties exactly at a bucket edge).
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, LongType, StringType, StructField, StructType

from recbatch.thresholds import (
    InvalidRowsError,
    ThresholdInputError,
    ThresholdSettings,
    ThresholdTableError,
    apply_thresholds,
    build_histograms,
    fit_from_histograms,
    invalid_rows,
    read_thresholds,
    split_column,
    thresholds_table,
    write_thresholds,
)
from recbatch.thresholds.synthetic import planted_scores

ROWS_SCHEMA = StructType(
    [
        StructField("id", LongType(), False),
        StructField("score", DoubleType(), True),
        StructField("uncertainty", DoubleType(), True),
        StructField("label", IntegerType(), True),
    ]
)


def small_rows(n: int, seed: int) -> pd.DataFrame:
    """Rows with ties: scores on a 0.05 grid, uncertainties on a 0.1 grid."""
    rng = np.random.default_rng(seed)
    score = np.round(rng.random(n) * 20) / 20
    uncertainty = np.round(rng.random(n) * 10) / 10
    label = (rng.random(n) < score * (1 - 0.5 * uncertainty)).astype(int)
    return pd.DataFrame(
        {"id": np.arange(n), "score": score, "uncertainty": uncertainty, "label": label}
    )


def to_spark(spark: SparkSession, rows: pd.DataFrame) -> DataFrame:
    records = [
        (int(r.id), float(r.score), float(r.uncertainty), int(r.label))
        for r in rows.itertuples(index=False)
    ]
    return spark.createDataFrame(records, ROWS_SCHEMA)


def pandas_histogram(
    rows: pd.DataFrame, split: pd.Series, hists, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Independent histogram of the split's rows on the fitted edges (np.searchsorted)."""
    part = rows[split == name]
    bucket = np.searchsorted(hists.uncertainty_edges, part.uncertainty, side="right")
    bin_ = np.searchsorted(hists.score_edges, part.score, side="right")
    shape = (len(hists.uncertainty_edges) + 1, len(hists.score_edges) + 1)
    pos, n = np.zeros(shape, int), np.zeros(shape, int)
    np.add.at(pos, (bucket, bin_), part.label.to_numpy())
    np.add.at(n, (bucket, bin_), 1)
    return pos, n


@pytest.mark.parametrize("min_support", [1, 400])
def test_spark_histogram_equals_pandas_histogram(spark, min_support):
    rows = small_rows(4000, seed=min_support)
    settings = ThresholdSettings(n_buckets=6, score_bins=30, min_bucket_support=min_support)
    df = to_spark(spark, rows)
    hists = build_histograms(df, settings, key_cols=["id"])
    split = (
        df.select("id", split_column(settings, ["id"]).alias("split"))
        .toPandas()
        .set_index("id")
        .loc[rows.id, "split"]
        .to_numpy()
    )
    split = pd.Series(split, index=rows.index)
    for name in ("calibration", "selection", "evaluation"):
        pos, n = pandas_histogram(rows, split, hists, name)
        np.testing.assert_array_equal(hists.split(name).positives, pos, err_msg=name)
        np.testing.assert_array_equal(hists.split(name).rows, n, err_msg=name)
        sums = hists.split(name).score_sum
        assert sums.sum() == pytest.approx(rows.score[split == name].sum())
    assert hists.rows == len(rows) and hists.invalid == {}
    assert (split == "calibration").mean() == pytest.approx(settings.calibration_fraction, abs=0.03)
    # ties collapse duplicated quantiles: at most one edge per distinct score
    assert len(hists.score_edges) <= rows.score.nunique()
    assert np.all(np.diff(hists.score_edges) > 0)
    support = hists.calibration.rows.sum(axis=1)
    if min_support > 1:
        assert len(support) < 6 and support.min() >= min_support  # merged, and enough
    else:  # nothing to merge: the quantile buckets of the 11 distinct uncertainties stay
        assert len(support) >= 5 and support.min() >= 1


def test_invalid_rows_fail_with_counts_or_are_counted(spark):
    rows = small_rows(300, seed=1)
    rows["label"] = rows["label"].astype(float)
    rows.loc[0, "score"] = np.nan
    rows.loc[1, "score"] = math.inf
    rows.loc[2, "uncertainty"] = -math.inf
    rows.loc[3, "label"] = 2
    rows.loc[4, "label"] = np.nan
    records = [
        (
            int(r.id),
            float(r.score),
            float(r.uncertainty),
            None if pd.isna(r.label) else int(r.label),
        )
        for r in rows.itertuples(index=False)
    ]
    records[5] = (5, None, 0.5, 1)
    records[6] = (6, 0.5, None, 0)
    df = spark.createDataFrame(records, ROWS_SCHEMA)
    expected = {
        "bad_score": 2,
        "bad_uncertainty": 1,
        "bad_label": 1,
        "missing_label": 1,
        "missing_score": 1,
        "missing_uncertainty": 1,
    }
    settings = ThresholdSettings(n_buckets=2, score_bins=10, min_bucket_support=1)
    with pytest.raises(InvalidRowsError) as err:
        build_histograms(df, settings, key_cols=["id"])
    for reason, count in expected.items():
        assert f"{reason}: {count}" in str(err.value)
    quarantine = invalid_rows(df).groupBy("reason").count().toPandas()
    assert dict(zip(quarantine.reason, quarantine["count"], strict=True)) == expected
    tolerant = settings.model_copy(update={"max_invalid_ratio": 0.05})
    hists = build_histograms(df, tolerant, key_cols=["id"])
    assert hists.invalid == expected
    counted = sum(h.rows.sum() for h in (hists.calibration, hists.selection, hists.evaluation))
    assert counted + sum(expected.values()) == len(rows) == hists.rows  # nothing dropped silently


def test_unusable_inputs_are_clear_errors(spark):
    settings = ThresholdSettings(n_buckets=2, score_bins=4, min_bucket_support=1)
    empty = spark.createDataFrame([], ROWS_SCHEMA)
    with pytest.raises(ThresholdInputError, match="no valid rows in the calibration split"):
        build_histograms(empty, settings)
    only_nan = spark.createDataFrame([(i, float("nan"), 0.1, 1) for i in range(5)], ROWS_SCHEMA)
    with pytest.raises(ThresholdInputError, match="bad_score: 5"):
        build_histograms(only_nan, settings, key_cols=["id"])
    text = spark.createDataFrame(
        [(1, "0.5", 0.1, 1)], "id long, score string, uncertainty double, label int"
    )
    with pytest.raises(ThresholdInputError, match="'score' must be numeric"):
        build_histograms(text, settings)
    with pytest.raises(ThresholdInputError, match="lack column"):
        build_histograms(empty.drop("label"), settings)


def test_all_negative_data_accepts_nothing(spark):
    rows = small_rows(600, seed=4).assign(label=0)
    settings = ThresholdSettings(n_buckets=2, score_bins=10, min_bucket_support=50)
    fit = fit_from_histograms(
        build_histograms(to_spark(spark, rows), settings, key_cols=["id"]), settings
    )
    for method in ("per_bucket", "single"):
        rule = fit.rule(method)
        assert np.isinf(rule.score_thresholds).all() and (rule.score_thresholds > 0).all()
        assert rule.certified_lower_bound is None and rule.overall["eval_accepted"] == 0


@pytest.fixture(scope="module")
def planted(spark):
    """A planted-effect sample, its fit, and the split of each row."""
    settings = ThresholdSettings(
        n_buckets=4, min_bucket_support=1000, score_bins=60, target_precision=0.8, delta=0.1
    )
    df = planted_scores(spark, 40_000, seed=3, partitions=2).cache()
    fit = fit_from_histograms(build_histograms(df, settings, key_cols=["id"]), settings)
    yield df, fit
    df.unpersist()


def test_planted_effect_gives_rising_thresholds_and_more_recall(planted):
    _, fit = planted
    per_bucket, single = fit.per_bucket, fit.single
    assert per_bucket.certified_lower_bound is not None and per_bucket.certified_lower_bound >= 0.8
    thresholds = per_bucket.score_thresholds
    assert len(thresholds) == 4
    assert np.all(np.diff(thresholds) >= 0), (
        f"thresholds should rise with uncertainty: {thresholds}"
    )
    assert per_bucket.overall["recall"] > single.overall["recall"]


DAY = date(2026, 2, 1)


@pytest.fixture(scope="module")
def stored(spark, planted, data_root: Path):
    """The planted fit written once as run (m1, DAY); its path and the rows that were written."""
    _, fit = planted
    path = str(data_root / "thresholds")
    rows = thresholds_table(spark, fit, model_version="m1", run_date=DAY)
    write_thresholds(spark, rows, path, model_version="m1", run_date=DAY)
    return path, rows


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["method", "bucket"]).reset_index(drop=True)


def test_delta_table_round_trips_and_rewrites_idempotently(spark, planted, stored):
    _, fit = planted
    path, rows = stored
    expected = _sorted(rows.toPandas())
    assert len(expected) == len(fit.per_bucket.score_thresholds) + 1
    assert expected.uncertainty_lo.min() == -math.inf and expected.uncertainty_hi.max() == math.inf

    def read() -> pd.DataFrame:
        return _sorted(read_thresholds(spark, path, model_version="m1", run_date=DAY).toPandas())

    pd.testing.assert_frame_equal(read(), expected)
    write_thresholds(spark, rows, path, model_version="m1", run_date=DAY)
    pd.testing.assert_frame_equal(read(), expected)
    last = DeltaTable.forPath(spark, path).history(1).head()
    # the re-run was a real commit that replaced exactly this run's rows
    assert last.operation == "WRITE" and last.operationParameters["mode"] == "Overwrite"
    assert "model_version = 'm1'" in last.operationParameters["predicate"]
    assert int(last.operationMetrics["numOutputRows"]) == len(expected)
    later = date(2026, 2, 2)
    write_thresholds(
        spark,
        thresholds_table(spark, fit, model_version="m1", run_date=later),
        path,
        model_version="m1",
        run_date=later,
    )
    assert spark.read.format("delta").load(path).count() == 2 * len(expected)
    latest = read_thresholds(spark, path, model_version="m1").select("run_date").distinct()
    assert [r.run_date for r in latest.collect()] == [later]
    with pytest.raises(ThresholdTableError, match="no thresholds for model version"):
        read_thresholds(spark, path, model_version="other")
    with pytest.raises(ThresholdTableError, match="THRESHOLDS_SCHEMA"):
        write_thresholds(spark, rows.drop("delta"), path, model_version="m1", run_date=DAY)


def test_applying_stored_thresholds_reproduces_the_evaluation_counts(spark, planted, stored):
    df, fit = planted
    table_rows = read_thresholds(spark, stored[0], model_version="m1", run_date=DAY)
    evaluation = df.where(split_column(fit.settings, ["id"]) == "evaluation")
    for method in ("per_bucket", "single"):
        applied = apply_thresholds(evaluation, table_rows, method=method)
        counts = (
            applied.groupBy("bucket", "threshold")
            .agg(
                F.sum(F.col("accepted").cast("int")).alias("accepted"),
                F.sum((F.col("accepted") & (F.col("label") == 1)).cast("int")).alias("tp"),
            )
            .toPandas()
            .sort_values("bucket")
        )
        table = table_rows.where(F.col("method") == method).toPandas().sort_values("bucket")
        assert counts.bucket.tolist() == table.bucket.tolist()
        assert counts.threshold.tolist() == table.score_threshold.tolist()
        assert counts.threshold.tolist() == fit.rule(method).score_thresholds.tolist()
        assert counts.accepted.tolist() == table.eval_accepted.tolist()
        assert counts.tp.tolist() == table.eval_true_positives.tolist()


def test_apply_uses_exactly_the_stored_values_at_the_edges(spark):
    lo = [-math.inf, 0.2, 0.5]
    hi = [0.2, 0.5, math.inf]
    thresholds = pd.DataFrame(
        {
            "model_version": "m",
            "run_date": date(2026, 1, 1),
            "method": "per_bucket",
            "bucket": [0, 1, 2],
            "uncertainty_lo": lo,
            "uncertainty_hi": hi,
            "score_threshold": [0.3, 0.6, math.inf],
        }
    )

    def below(x: float, toward: float) -> float:
        return float(np.nextafter(x, toward))

    u = [below(0.2, 0), 0.2, below(0.5, 0), 0.5, 0.2, 0.1, 0.1, None, 0.1, math.inf]
    s = [0.3, 0.6, below(0.6, 0), 1.0, 0.3, below(0.3, 0), None, 0.9, float("nan"), 0.9]
    df = spark.createDataFrame(
        [(i, s[i], u[i]) for i in range(len(u))], "id long, score double, uncertainty double"
    )
    got = apply_thresholds(df, thresholds).orderBy("id").toPandas()
    edges = np.array([0.2, 0.5])
    for i, row in got.iterrows():
        valid = all(v is not None and math.isfinite(v) for v in (s[i], u[i]))
        if not valid:
            assert pd.isna(row.bucket) and pd.isna(row.threshold) and not row.accepted
            continue
        b = int(np.searchsorted(edges, u[i], side="right"))
        t = thresholds.score_threshold[b]
        assert (row.bucket, row.threshold, row.accepted) == (b, t, s[i] >= t), i
    assert got.accepted.tolist()[:5] == [True, True, False, False, False]
    assert len(got) == len(u)  # invalid rows are kept, not dropped

    with pytest.raises(ThresholdTableError, match="2 runs"):
        apply_thresholds(df, pd.concat([thresholds, thresholds.assign(run_date=date(2026, 1, 2))]))
    with pytest.raises(ThresholdTableError, match="contiguous"):
        apply_thresholds(df, thresholds.assign(uncertainty_lo=[-math.inf, 0.25, 0.5]))
    with pytest.raises(ThresholdTableError, match="no 'single' thresholds"):
        apply_thresholds(df, thresholds, method="single")
    with pytest.raises(ThresholdTableError, match="already has"):
        apply_thresholds(df.withColumn("accepted", F.lit(True)), thresholds)


def test_table_has_both_methods_and_needs_a_model_version(spark, planted):
    _, fit = planted
    rows = thresholds_table(spark, fit, model_version="m3", run_date=date(2026, 1, 1))
    assert rows.schema["model_version"].dataType == StringType()
    methods = {r.method for r in rows.select("method").distinct().collect()}
    assert methods == {"per_bucket", "single"}
    with pytest.raises(ThresholdTableError, match="non-empty"):
        thresholds_table(spark, fit, model_version="", run_date=date(2026, 1, 1))
