"""How good a flip model is on held-out negatives: calibration (ECE, predicted against realised
flips) overall and per signal state, and how well z ranks the flips (AUC).

Both questions matter for the weights: label correction moves mass ``z`` from the negative to the
positive side, so a z that is right on average but ranks poorly spreads that mass over the wrong
examples, and a z that ranks well but is biased in one signal state over- or under-weights a
whole state (carted views are where the flips are).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

CALIBRATION_COLUMNS = (
    "scope",
    "n",
    "flips",
    "mean_predicted",
    "observed_rate",
    "ece",
    "auc",
)
"""One row per scope (``all``, then each signal state): held-out negatives, realised flips, mean
z, realised flip rate, expected calibration error and the AUC of z against the flips (null when
the scope has no flips or no non-flips)."""


def _scoped(scored: DataFrame, label_col: str, probability_col: str) -> DataFrame:
    """``scope, p, y`` with every row twice: once in ``all``, once in its signal state."""
    return scored.select(
        F.explode(F.array(F.lit("all"), F.col("signal_state"))).alias("scope"),
        F.col(probability_col).cast("double").alias("p"),
        F.col(label_col).cast("double").alias("y"),
    )


def ranking_auc(scoped: DataFrame) -> DataFrame:
    """``scope, auc``: the probability that a random flip has a higher z than a random non-flip
    (ties count one half), exact, from one sort per scope.

    Rows with the same z are grouped first, so ties cost nothing and a step-function z (the
    hazard cells) is scored as it ranks: ``Σ_g flips_g · (non-flips below g + non-flips_g / 2)``
    over the groups ``g`` of equal z, divided by ``flips · non-flips``.
    """
    groups = scoped.groupBy("scope", "p").agg(
        F.sum("y").alias("pos"), F.sum(F.lit(1.0) - F.col("y")).alias("neg")
    )
    below = Window.partitionBy("scope").orderBy("p").rowsBetween(Window.unboundedPreceding, -1)
    ranked = groups.withColumn("neg_below", F.coalesce(F.sum("neg").over(below), F.lit(0.0)))
    return ranked.groupBy("scope").agg(
        F.try_divide(
            F.sum(F.col("pos") * (F.col("neg_below") + F.col("neg") / 2)),
            F.sum("pos") * F.sum("neg"),
        ).alias("auc")
    )


def calibration(
    scored_heldout: DataFrame,
    label_col: str = "true_label",
    probability_col: str = "flip_probability",
    bins: int = 10,
) -> DataFrame:
    """The ``CALIBRATION_COLUMNS`` table of ``z`` overall (``scope = 'all'``, first) and per
    signal state, with ``ece = Σ_b |Σ z - Σ y|_b / n`` over ``bins`` equal-width probability bins.

    Meant for the observed negatives of a held-out counterfactual cutoff (``split_holdout``)
    scored by a flip model, whose target is ``true_label``; the predicted/realised ratio of a
    scope is ``mean_predicted / observed_rate``.
    """
    if bins < 1:
        raise ValueError("bins must be >= 1")
    scoped = _scoped(scored_heldout, label_col, probability_col)
    binned = scoped.withColumn(
        "bin", F.least(F.floor(F.col("p") * bins), F.lit(bins - 1)).cast("int")
    )
    per_bin = binned.groupBy("scope", "bin").agg(
        F.count(F.lit(1)).alias("n"), F.sum("p").alias("sum_p"), F.sum("y").alias("sum_y")
    )
    n = F.sum("n")
    table = per_bin.groupBy("scope").agg(
        n.cast("long").alias("n"),
        F.sum("sum_y").cast("long").alias("flips"),
        F.try_divide(F.sum("sum_p"), n).alias("mean_predicted"),
        F.try_divide(F.sum("sum_y"), n).alias("observed_rate"),
        F.try_divide(F.sum(F.abs(F.col("sum_p") - F.col("sum_y"))), n).alias("ece"),
    )
    return (
        table.join(ranking_auc(scoped), "scope", "left")
        .select(*CALIBRATION_COLUMNS)
        .orderBy(F.col("scope") != "all", "scope")
    )


def expected_calibration_errors(calibration_table: DataFrame) -> dict[str, float]:
    """``{scope: ece}`` of a ``calibration`` table (a handful of rows)."""
    return {r["scope"]: r["ece"] for r in calibration_table.collect()}


def calibration_at_cutoff(scored_at_cutoff: DataFrame, bins: int = 10) -> DataFrame:
    """``calibration`` of z where the weights use it: the examples observed negative and not yet
    mature at ``T`` (scored by a flip model), against whether they convert within ``W``
    (``conversion_ts``, which the examples hold once the log reaches past ``T``). Out of time for
    the model, which learnt at counterfactual cutoffs before ``T``; meaningful only when the log
    reaches ``T + W`` (later flips are not in it yet)."""
    negatives = scored_at_cutoff.where(
        (F.col("observed_label").cast("int") == 0) & ~F.col("mature")
    ).withColumn("true_label", F.col("conversion_ts").isNotNull().cast("int"))
    return calibration(negatives, bins=bins)
