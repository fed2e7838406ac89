"""The delayed-feedback stages end to end on a small generated log: events -> examples -> weights."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from recbatch.feedback.stage import FeedbackInputError, flip_weights_stage


@pytest.fixture(scope="module")
def stage_cfg(small_log_cfg):
    return small_log_cfg


def _table(spark, cfg, name: str):
    return spark.read.format("delta").load(cfg.table_path(name))


def test_stage_writes_model_calibration_and_weights_for_the_run_date(spark, stage_cfg):
    summary = flip_weights_stage(spark, stage_cfg)

    weights = _table(spark, stage_cfg, "training_weights")
    assert weights.count() == summary["examples"] > 0
    assert summary["examples"] == _table(spark, stage_cfg, "examples").count()
    assert {r["run_date"].isoformat() for r in weights.select("run_date").distinct().collect()} == {
        "2026-02-01"
    }
    # label correction: positives (1, 0); negatives (z, 1 - z) with z clipped to [0, max]
    bad = weights.where(
        ((F.col("observed_label") == 1) & ((F.col("w_pos") != 1) | (F.col("w_neg") != 0)))
        | ((F.col("observed_label") == 0) & (F.abs(F.col("w_pos") + F.col("w_neg") - 1) > 1e-9))
    )
    assert bad.count() == 0
    mature = weights.where(F.col("elapsed_s") >= 168 * 3600)
    assert mature.where("flip_probability != 0 OR observation_probability != 1").count() == 0
    recent = weights.where((F.col("elapsed_s") < 24 * 3600) & (F.col("observed_label") == 0))
    assert recent.agg(F.max("flip_probability")).head()[0] > 0, "recent negatives may still flip"

    cells = _table(spark, stage_cfg, "flip_model")
    assert cells.count() == 4 * 12  # signal states x elapsed buckets (11 edges + the last to W)
    calibration = _table(spark, stage_cfg, "flip_calibration")
    assert "all" in {r["scope"] for r in calibration.select("scope").collect()}
    # The held-out check grades a model fitted on every elapsed range (the default cutoffs
    # overlap: step 24 h < W): a holdout that starved the fit of young examples scored ~0.3 here.
    assert summary["ece_all"] < 0.02, summary


def test_rerunning_the_same_date_gives_identical_weights(spark, stage_cfg):
    flip_weights_stage(spark, stage_cfg)
    first = _table(spark, stage_cfg, "training_weights").orderBy("example_id").collect()
    flip_weights_stage(spark, stage_cfg)
    second = _table(spark, stage_cfg, "training_weights").orderBy("example_id").collect()
    assert second == first


def test_too_little_history_is_a_clear_error(spark, stage_cfg):
    from recbatch.config import load_config

    short = load_config(
        None,
        [
            f"paths.data_root={stage_cfg.path('data_root')}",
            "run_date=2026-02-01",
            "feedback.cutoff=2026-01-10T00:00:00+00:00",
        ],
    )
    with pytest.raises(FeedbackInputError, match="too little mature history"):
        flip_weights_stage(spark, short)
