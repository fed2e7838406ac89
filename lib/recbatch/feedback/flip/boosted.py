"""The boosted learner: gradient-boosted trees (MLlib) on the example features, the elapsed time
and the signal state, recalibrated per signal state (``recalibrate``).

Why trees: the hazard cells know only (signal state, elapsed bucket), so every carted view that
is two hours old gets the same z, whether its user buys daily or never. Which negatives flip also
depends on the user's and the item's history (the ``f_*`` as-of features), in ways that interact
with elapsed time; trees learn those interactions without a hand-written feature cross. Their
cost is many small Spark jobs per tree, and they need flips: hundreds, not dozens.

The recalibration is not optional here: MLlib's first tree fits the labels mapped to -1/+1 (a
margin near -1, p ~ 0.12, for a rare label) and a few dozen shrunken trees do not bring a flip
rate of a few per mille down to its level.
"""

from __future__ import annotations

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recbatch.config import FeedbackSettings
from recbatch.feedback.flip.buckets import feature_columns
from recbatch.feedback.flip.recalibrate import Logit, RecalibratedFlipModel, fit_recalibrated
from recbatch.feedback.labels import SIGNAL_STATES
from recbatch.log import get_logger

log = get_logger(__name__)

MISSING = -1.0
"""A null feature (counts are never negative, so trees can split it off)."""


def signal_rank(state: Column) -> Column:
    """Signal states as their order, weakest (``none``) 0 to strongest: a tree splits the
    ordered states as it would any count; an unknown state is ``MISSING``."""
    expr = F.when(state == F.lit(SIGNAL_STATES[0]), F.lit(0.0))
    for rank, name in enumerate(SIGNAL_STATES[1:], start=1):
        expr = expr.when(state == F.lit(name), F.lit(float(rank)))
    return expr.otherwise(F.lit(MISSING))


def learner_inputs(df: DataFrame) -> tuple[DataFrame, list[str]]:
    """``df`` with the trees' inputs as doubles (``_x_*``: the ``f_*`` features with nulls as
    ``MISSING``, the elapsed hours, the signal rank) and their names."""
    features = feature_columns(df)
    inputs = [
        *[F.coalesce(F.col(c).cast("double"), F.lit(MISSING)).alias(f"_x_{c}") for c in features],
        (F.col("elapsed_s").cast("double") / 3600.0).alias("_x_elapsed_hours"),
        signal_rank(F.col("signal_state")).alias("_x_signal_rank"),
    ]
    names = [*[f"_x_{c}" for c in features], "_x_elapsed_hours", "_x_signal_rank"]
    return df.select("*", *inputs), names


def fit_trees(rows: DataFrame, settings: FeedbackSettings) -> PipelineModel:
    """The GBT pipeline on counterfactual rows (``true_label`` the target)."""
    rows, inputs = learner_inputs(rows)
    stages = [
        VectorAssembler(inputCols=inputs, outputCol="_features"),
        GBTClassifier(
            featuresCol="_features",
            labelCol="_label",
            predictionCol="_prediction",
            maxIter=settings.flip_trees,
            maxDepth=settings.flip_tree_depth,
            stepSize=0.1,
            subsamplingRate=0.8,
            minInstancesPerNode=20,
            seed=settings.flip_seed,
        )
        .setRawPredictionCol("_raw")
        .setProbabilityCol("_probability"),
    ]
    model = Pipeline(stages=stages).fit(
        rows.withColumn("_label", F.col("true_label").cast("double"))
    )
    log.info(
        "boosted flip model: %d trees of depth %d on %d inputs",
        settings.flip_trees,
        settings.flip_tree_depth,
        len(inputs),
    )
    return model


def trees_logit(trees: PipelineModel) -> Logit:
    """The trees' log-odds: MLlib's GBT margin ``m`` gives ``p = 1 / (1 + exp(-2m))``."""

    def logit(df: DataFrame) -> DataFrame:
        rows, _ = learner_inputs(df)
        scored = trees.transform(rows)
        return scored.withColumn("_logit", F.lit(2.0) * vector_to_array(F.col("_raw"))[1])

    return logit


def fit_boosted(training: DataFrame, settings: FeedbackSettings) -> RecalibratedFlipModel:
    """Trees on one share of the counterfactual examples, their recalibration on the other."""
    return fit_recalibrated(
        "boosted", lambda rows: trees_logit(fit_trees(rows, settings)), training, settings
    )
