"""Score + uncertainty estimators (torch) and the ``scores`` stage (Spark, TorchDistributor)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F
from torch import nn

from recbatch.config import ConversionSettings, UncertaintySettings
from recbatch.feedback.conversion import ConversionMLP, bootstrap_weights
from recbatch.thresholds.errors import ThresholdInputError
from recbatch.thresholds.stage import decisions_stage, thresholds_stage
from recbatch.uncertainty.estimators import UncertaintyModelError, predict_with_uncertainty
from recbatch.uncertainty.scores import (
    SCORES_COLUMNS,
    model_version,
    scored_model_settings,
    scores_stage,
)


class FixedHeads(nn.Module):
    """Logits chosen by hand: [rows, heads]."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_heads_score_is_the_mean_and_uncertainty_the_spread_of_head_probabilities():
    logits = torch.tensor([[0.0, 0.0, 0.0], [-2.0, 0.0, 2.0]])
    score, spread = predict_with_uncertainty(FixedHeads(logits), torch.zeros(2, 1), "heads")
    p = torch.sigmoid(logits).double()
    assert np.allclose(score, p.mean(1).numpy()) and np.allclose(spread, p.std(1, False).numpy())
    assert spread[0] == 0.0 and spread[1] > 0.3, "agreeing heads: none; disagreeing: a lot"


def test_mc_dropout_is_reproducible_and_spread_grows_with_dropout():
    torch.manual_seed(0)
    x = torch.randn(256, 6)
    spreads = {}
    for rate in (0.05, 0.5):
        torch.manual_seed(1)
        model = ConversionMLP(6, (32, 16), dropout=rate)
        first = predict_with_uncertainty(model, x, "mc_dropout", samples=40, seed=3)
        again = predict_with_uncertainty(model, x, "mc_dropout", samples=40, seed=3)
        assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
        spreads[rate] = float(np.mean(first[1]))
    assert spreads[0.5] > 2 * spreads[0.05] > 0
    assert not model.training, "left in eval mode"


def test_estimators_refuse_a_model_that_cannot_express_them():
    plain = ConversionMLP(4, (8,))
    with pytest.raises(UncertaintyModelError, match="at least 2 output heads"):
        predict_with_uncertainty(plain, torch.zeros(3, 4), "heads")
    with pytest.raises(UncertaintyModelError, match="dropout > 0"):
        predict_with_uncertainty(plain, torch.zeros(3, 4), "mc_dropout")
    with pytest.raises(ValueError, match="unknown uncertainty method"):
        predict_with_uncertainty(plain, torch.zeros(3, 4), "magic")  # type: ignore[arg-type]


def test_bootstrap_weights_are_poisson_one_per_head_and_ones_for_a_single_head():
    assert torch.equal(bootstrap_weights(5, 1), torch.ones(5, 1))
    w = bootstrap_weights(20_000, 4, torch.Generator().manual_seed(0))
    assert w.shape == (20_000, 4)
    assert abs(w.mean().item() - 1) < 0.02 and abs(w.var().item() - 1) < 0.05
    corr = np.corrcoef(w.numpy().T)
    assert np.abs(corr[np.triu_indices(4, 1)]).max() < 0.05, "heads resample independently"


def test_model_shape_follows_the_uncertainty_method():
    conv = ConversionSettings()
    heads = scored_model_settings(conv, UncertaintySettings(method="heads", heads=5))
    mc = scored_model_settings(conv, UncertaintySettings(method="mc_dropout", dropout=0.3))
    assert (heads.heads, heads.dropout) == (5, 0.0)
    assert (mc.heads, mc.dropout) == (1, 0.3)


def _scored_cfg(base, method: str, run_date: str):
    return base.model_copy(
        update={
            "run_date": date.fromisoformat(run_date),
            "conversion": base.conversion.model_copy(
                update={"epochs": 2, "batch_size": 128, "row_groups_per_trainer": 2}
            ),
            "uncertainty": UncertaintySettings(method=method, heads=4, mc_samples=8),
            "thresholds": base.thresholds.model_copy(
                update={"n_buckets": 3, "min_bucket_support": 40, "score_bins": 20}
            ),
        }
    )


@pytest.fixture(scope="module")
def heads_run(spark, small_log_cfg):
    """Scores by the heads estimator, written once for the run date 2026-02-01."""
    cfg = _scored_cfg(small_log_cfg, "heads", "2026-02-01")
    return cfg, scores_stage(spark, cfg)


def _check_scores(spark, cfg, first, method):
    table = spark.read.format("delta").load(cfg.table_path("scores"))
    assert tuple(table.columns) == SCORES_COLUMNS
    rows = table.where(F.col("run_date") == F.lit(cfg.run_date))
    stats = rows.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum("label").alias("pos"),
        F.min("score").alias("s_lo"),
        F.max("score").alias("s_hi"),
        F.min("uncertainty").alias("u_lo"),
        F.max("uncertainty").alias("u_hi"),
        F.countDistinct("example_id").alias("ids"),
        F.collect_set("uncertainty_method").alias("methods"),
        F.collect_set("model_version").alias("versions"),
    ).head()
    assert stats["n"] == first["rows"] == stats["ids"] > 0
    assert 0 < stats["pos"] == first["positives"] < stats["n"]
    assert 0 < stats["s_lo"] <= stats["s_hi"] < 1
    assert 0 <= stats["u_lo"] < stats["u_hi"], "the uncertainty varies across examples"
    assert stats["methods"] == [method]
    assert stats["versions"] == [model_version(cfg, cfg.run_date)]
    examples = spark.read.format("delta").load(cfg.table_path("examples"))
    truth = examples.select("example_id", F.col("view_ts").alias("ex_view"), "conversion_ts")
    joined = rows.join(truth, "example_id")
    assert joined.count() == stats["n"], "every scored row is an example"
    wrong = joined.where(
        (F.col("view_ts") != F.col("ex_view"))
        | (F.col("view_ts") < F.lit(first["cutoff"]))
        | (F.col("label") != F.col("conversion_ts").isNotNull().cast("int"))
    )
    assert wrong.isEmpty(), "test-period examples only, with their true labels"
    return stats["n"]


def test_heads_scores_are_labelled_and_rewritten_idempotently(spark, heads_run):
    cfg, first = heads_run
    n = _check_scores(spark, cfg, first, "heads")
    again = scores_stage(spark, cfg)
    assert again["rows"] == first["rows"]
    table = spark.read.format("delta").load(cfg.table_path("scores"))
    assert table.where(F.col("run_date") == F.lit(cfg.run_date)).count() == n


def test_thresholds_and_decisions_stages_apply_exactly_the_stored_rules(spark, heads_run):
    cfg, _ = heads_run
    summary = thresholds_stage(spark, cfg)
    assert set(summary) == {"model", "model_version", "per_bucket", "single"}
    assert summary["model"] == "conversion"
    stored = spark.read.format("delta").load(cfg.table_path("thresholds"))
    mine = stored.where(F.col("run_date") == F.lit(cfg.run_date))
    assert sorted({r["method"] for r in mine.collect()}) == ["per_bucket", "single"]
    assert mine.where("method = 'single'").count() == 1
    assert mine.where("method = 'per_bucket'").count() == summary["per_bucket"]["buckets"]

    counts = decisions_stage(spark, cfg)
    decisions = spark.read.format("delta").load(cfg.table_path("decisions"))
    scores = spark.read.format("delta").load(cfg.table_path("scores"))
    assert counts["rows"] == scores.where(F.col("run_date") == F.lit(cfg.run_date)).count()
    assert counts["unbucketed"] == 0
    rules = mine.where("method = 'per_bucket'").select(
        "bucket", "uncertainty_lo", "uncertainty_hi", "score_threshold"
    )
    d = decisions.where(F.col("run_date") == F.lit(cfg.run_date))
    checked = d.join(
        rules,
        (d["uncertainty"] >= rules["uncertainty_lo"])
        & (d["uncertainty"] < rules["uncertainty_hi"]),
    )
    assert checked.count() == counts["rows"], "each score falls in exactly one stored range"
    mismatched = checked.where(
        (d["bucket"] != rules["bucket"])
        | (d["threshold"] != rules["score_threshold"])
        | (d["accepted"] != (d["score"] >= rules["score_threshold"]))
    )
    assert mismatched.isEmpty()
    assert decisions_stage(spark, cfg) == counts, "a re-run replaces the run date's rows"


def test_thresholds_without_scores_for_the_run_date_is_a_clear_error(spark, heads_run):
    cfg, _ = heads_run
    other = cfg.model_copy(update={"run_date": date(2030, 1, 1)})
    with pytest.raises(ThresholdInputError, match="run score_uncertainty"):
        thresholds_stage(spark, other)


def test_mc_dropout_scores_are_labelled(spark, small_log_cfg):
    cfg = _scored_cfg(small_log_cfg, "mc_dropout", "2026-02-02")
    _check_scores(spark, cfg, scores_stage(spark, cfg), "mc_dropout")
