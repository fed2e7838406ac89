"""The logistic learner (MLlib): the features (log1p), one-hot signal state and one-hot elapsed
bucket, additive on the logit scale, recalibrated per signal state (``recalibrate``).

Few parameters, so it learns from the few dozen flips a short log holds, and one Spark job per
optimizer pass, so it is cheap; what it cannot learn is an interaction of the features with
elapsed time (the boosted learner can).
"""

from __future__ import annotations

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import OneHotEncoder, StringIndexer, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recbatch.config import FeedbackSettings
from recbatch.feedback.flip.apply import finish, prepared
from recbatch.feedback.flip.buckets import feature_columns
from recbatch.feedback.flip.recalibrate import Logit, RecalibratedFlipModel, fit_recalibrated
from recbatch.log import get_logger

log = get_logger(__name__)


def _with_model_features(df: DataFrame) -> tuple[DataFrame, list[str]]:
    """Copies of the ``f_*`` features as ``log1p`` of the value, nulls as 0 (the originals are
    kept): counts are heavy-tailed, and a linear logit in a raw count lets one busy user
    dominate."""
    features = feature_columns(df)
    copies = [
        F.log1p(F.greatest(F.coalesce(F.col(c).cast("double"), F.lit(0.0)), F.lit(0.0))).alias(
            f"_x_{c}"
        )
        for c in features
    ]
    return df.select("*", *copies), [f"_x_{c}" for c in features]


def fit_logistic(
    training: DataFrame,
    settings: FeedbackSettings,
    reg_param: float = 0.001,
    max_iter: int = 50,
) -> PipelineModel:
    """MLlib logistic regression of ``true_label`` on the ``f_*`` features (log1p, nulls as 0),
    the one-hot signal state and the one-hot elapsed bucket, on the counterfactual training set.

    Signal state and elapsed bucket enter additively on the logit scale (no interaction, which the
    hazard cells do not assume); the features can refine ``z`` within a cell.
    """
    rows, features = _with_model_features(training)
    stages = [
        StringIndexer(
            inputCol="signal_state",
            outputCol="_state_index",
            stringOrderType="alphabetAsc",
            handleInvalid="keep",
        ),
        OneHotEncoder(
            inputCols=["_state_index", "elapsed_bucket"],
            outputCols=["_state_onehot", "_bucket_onehot"],
            handleInvalid="keep",
        ),
        VectorAssembler(
            inputCols=[*features, "_state_onehot", "_bucket_onehot"], outputCol="_features"
        ),
        LogisticRegression(
            featuresCol="_features",
            labelCol="_label",
            probabilityCol="_probability",
            rawPredictionCol="_raw",
            predictionCol="_prediction",
            regParam=reg_param,
            maxIter=max_iter,
        ),
    ]
    rows = rows.withColumn("_label", F.col("true_label").cast("double"))
    model = Pipeline(stages=stages).fit(rows)
    log.info("logistic flip model on %d features + signal state + elapsed bucket", len(features))
    return model


def apply_logistic(
    examples_at_cutoff: DataFrame,
    model: PipelineModel,
    observation: DataFrame,
    settings: FeedbackSettings,
) -> DataFrame:
    """Like ``apply_hazard`` with ``z`` from ``fit_logistic``'s model as it is (same columns
    out); the ``logistic`` learner of the stages recalibrates it (``fit_logistic_recalibrated``)."""
    df = prepared(examples_at_cutoff, settings)
    rows, _ = _with_model_features(df)
    scored = model.transform(rows)
    z = vector_to_array(F.col("_probability"))[1]
    return finish(scored, df.columns, z, observation, settings)


def logistic_logit(model: PipelineModel) -> Logit:
    """The regression's log-odds (MLlib's raw prediction of class 1)."""

    def logit(df: DataFrame) -> DataFrame:
        rows, _ = _with_model_features(df)
        return model.transform(rows).withColumn("_logit", vector_to_array(F.col("_raw"))[1])

    return logit


def fit_logistic_recalibrated(
    training: DataFrame, settings: FeedbackSettings
) -> RecalibratedFlipModel:
    """The regression on one share of the counterfactual examples, its recalibration per signal
    state on the other."""
    return fit_recalibrated(
        "logistic", lambda rows: logistic_logit(fit_logistic(rows, settings)), training, settings
    )
