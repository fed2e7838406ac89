"""Metrics of a scored test set: AUC, average precision, log loss, PCOC, and the table text
(RI-AUC and the intervals over model seeds: ``recbatch.feedback.comparison``).

PR-AUC is reported as **average precision** (``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct
score thresholds, ties counted together), which is what the delayed-feedback literature reports
and what ``sklearn.metrics.average_precision_score`` computes; MLlib's ``areaUnderPR`` is a
trapezoid between the curve's points, which interpolates precision linearly and reads ~5% lower
on sparse positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel


def average_precision(scored: DataFrame, score_col: str = "probability") -> float:
    """Average precision of ``scored`` (``label`` 0/1 and ``score_col``), in Spark.

    One group per distinct score (so ties form one threshold, as sklearn's), then running
    counts down the scores: the window orders the distinct scores in one partition, which is
    what MLlib's own curve does with its bins; it is a test set's worth of values, not its rows.
    Returns NaN without positives.
    """
    steps = scored.groupBy(F.col(score_col).alias("s")).agg(
        F.count(F.lit(1)).alias("n"), F.sum(F.col("label").cast("double")).alias("pos")
    )
    down = Window.orderBy(F.desc("s")).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    row = (
        steps.select(
            "pos",
            F.sum("n").over(down).alias("k"),
            F.sum("pos").over(down).alias("tp"),
        )
        .agg(F.sum(F.col("pos") * F.col("tp") / F.col("k")).alias("ap"), F.sum("pos").alias("p"))
        .head()
    )
    if not row["p"]:
        return float("nan")
    return float(row["ap"] / row["p"])


def binary_metrics(scored: DataFrame, score_col: str = "probability") -> dict[str, float]:
    """AUC (MLlib), average precision (``pr_auc``), log loss (one aggregation), rows and
    positives of ``scored`` (``label`` 0/1 and ``score_col``). Scores once: ``scored`` is
    persisted meanwhile."""
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return _metrics_of_persisted(scored, score_col)
    finally:
        scored.unpersist()


def binary_metrics_of_columns(scored: DataFrame, score_cols: Sequence[str]) -> list[dict]:
    """``binary_metrics`` of each of ``score_cols`` of one scored frame (several models on the
    same rows), which is computed once and persisted meanwhile."""
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return [_metrics_of_persisted(scored, c) for c in score_cols]
    finally:
        scored.unpersist()


def _metrics_of_persisted(scored: DataFrame, score_col: str) -> dict[str, float]:
    p = F.least(F.greatest(F.col(score_col), F.lit(1e-7)), F.lit(1 - 1e-7))
    y = F.col("label")
    row = scored.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(y).alias("positives"),
        F.avg(-(y * F.log(p) + (1 - y) * F.log(1 - p))).alias("log_loss"),
        F.avg(score_col).alias("mean_probability"),
    ).head()
    evaluator = BinaryClassificationEvaluator(rawPredictionCol=score_col, labelCol="label")
    auc = evaluator.evaluate(scored, {evaluator.metricName: "areaUnderROC"})
    ap = average_precision(scored, score_col)
    positives = int(row["positives"] or 0)
    return {
        "rows": int(row["rows"]),
        "positives": positives,
        "auc": float(auc),
        "pr_auc": ap,
        "log_loss": float(row["log_loss"]),
        # PCOC: predicted over observed conversions, 1 when the model is calibrated on average
        "pcoc": float(row["mean_probability"] * row["rows"] / positives) if positives else None,
    }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The metric table as aligned text."""
    head = (
        f"{'method':<20} {'seed':>4} {'train':>8} {'test':>7} {'pos':>5} {'AUC':>7} {'PR-AUC':>7} "
    )
    head += f"{'logloss':>8} {'PCOC':>6} {'RI-AUC':>7} {'epochs':>6} {'rows/s':>9}"
    lines = [head]
    for r in rows:
        ri = "n/a" if r["ri_auc"] is None else f"{r['ri_auc'] + 0.0:.3f}"
        pcoc = "n/a" if r.get("pcoc") is None else f"{r['pcoc']:.3f}"
        lines.append(
            f"{r['method']:<20} {r.get('model_seed') or '':>4} {r['train_rows']:>8} "
            f"{r['test_rows']:>7} "
            f"{r['test_positives']:>5} {r['auc']:>7.4f} {r['pr_auc']:>7.4f} "
            f"{r['log_loss']:>8.5f} {pcoc:>6} {ri:>7} {r['epochs']:>6} "
            f"{r['train_rows_per_s']:>9.0f}"
        )
    return "\n".join(lines)
