"""Recalibration per signal state of a learner's logit, on examples the learner never saw.

The learners that use the features (``boosted``, ``logistic``) rank flips better than the cells,
but their probabilities need not match the realised rates, and the weights use z as a
probability: a z too high in one signal state moves too much mass in that whole state (carted
views are where the flips are). So a hashed share of the counterfactual *examples* is kept out of
the learner, and on it one MLlib logistic regression ``z = sigmoid(a + b · logit + c_s)`` is
fitted: a slope shared by every state (the learner's ranking is on one scale) and an offset
``c_s`` per signal state ``s`` with a flip there (lightly ridge-penalised: a state with a
handful of flips gets an offset near what they say, not an infinite one). With the intercept
and the offsets free, the fitted z sum (up to the light penalty) to the realised flips overall
and in every state with an offset, and the map is monotone, so the learner's ranking is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from recbatch.config import FeedbackSettings
from recbatch.feedback.flip.apply import finish, prepared
from recbatch.feedback.labels import SIGNAL_STATES
from recbatch.log import get_logger

log = get_logger(__name__)

MIN_STATE_FLIPS = 1
"""A state needs a flip in its calibration rows for an offset of its own; without one it gets the
shared map (a state that never flips there would otherwise get an offset of minus infinity).
Why not more: a shared map fitted mostly on the no-signal views crushes a rare state whose flip
rate is far higher (carted views on a short log: a dozen flips in forty negatives)."""

PLATT_SCHEMA = StructType(
    [
        StructField("signal_state", StringType(), False),
        StructField("rows", LongType(), False),
        StructField("flips", LongType(), False),
        StructField("intercept", DoubleType(), False),
        StructField("slope", DoubleType(), False),
    ]
)
"""The recalibration per signal state: ``z = sigmoid(intercept + slope · logit)``; ``rows`` and
``flips`` are the state's calibration rows."""

Logit = Callable[[DataFrame], DataFrame]
"""Adds the learner's log-odds as ``_logit`` to prepared examples (all columns kept)."""


def calibration_split(training: DataFrame, share: float) -> tuple[DataFrame, DataFrame]:
    """``(rows for the learner, rows for the recalibration)``: disjoint in examples, so an
    example the learner saw at one counterfactual cutoff never grades it at another."""
    held = F.pmod(F.xxhash64("example_id", F.lit("flip-calibration")), F.lit(1000)) < F.lit(
        round(share * 1000)
    )
    return training.where(~held), training.where(held)


def sigmoid(x: Column) -> Column:
    return F.lit(1.0) / (F.lit(1.0) + F.exp(-x))


def fit_recalibration(logit: Logit, rows: DataFrame, settings: FeedbackSettings) -> DataFrame:
    """The ``PLATT_SCHEMA`` table fitted on the calibration ``rows`` (one MLlib fit, one
    count); a state without its own offset gets the shared ``a`` and ``b``."""
    spark = rows.sparkSession
    scored = logit(prepared(rows, settings)).select(
        "signal_state", "_logit", F.col("true_label").cast("double").alias("_label")
    )
    scored = scored.persist()
    counts = {
        r["signal_state"]: (int(r["rows"]), int(r["flips"]))
        for r in scored.groupBy("signal_state")
        .agg(F.count(F.lit(1)).alias("rows"), F.sum("_label").alias("flips"))
        .collect()
    }
    offsets = [s for s in SIGNAL_STATES if counts.get(s, (0, 0))[1] >= MIN_STATE_FLIPS]
    design = scored.select(
        "_label",
        "_logit",
        *[(F.col("signal_state") == F.lit(s)).cast("double").alias(f"_is_{s}") for s in offsets],
    )
    names = ["_logit", *[f"_is_{s}" for s in offsets]]
    model = LogisticRegression(
        featuresCol="_design",
        labelCol="_label",
        standardization=False,
        regParam=1e-3,
        maxIter=100,
    ).fit(VectorAssembler(inputCols=names, outputCol="_design").transform(design))
    scored.unpersist()
    beta = model.coefficients.toArray()
    a, b = float(model.intercept), float(beta[0])
    offset = {s: float(beta[1 + i]) for i, s in enumerate(offsets)}
    table = [(s, *counts.get(s, (0, 0)), a + offset.get(s, 0.0), b) for s in SIGNAL_STATES]
    log.info(
        "flip recalibration (slope %.3f) per signal state (rows, flips, intercept): %s",
        b,
        {s: (n, f, round(c, 3)) for s, n, f, c, _ in table},
    )
    return spark.createDataFrame(table, PLATT_SCHEMA)


@dataclass(frozen=True)
class RecalibratedFlipModel:
    """A learner's logit and its recalibration per signal state."""

    name: str
    logit: Logit
    platt: DataFrame

    def apply(
        self, examples_at_cutoff: DataFrame, observation: DataFrame, settings: FeedbackSettings
    ) -> DataFrame:
        """Like ``hazard.apply_hazard`` with z from the recalibrated logit (same columns out)."""
        df = prepared(examples_at_cutoff, settings)
        platt = F.broadcast(self.platt.select("signal_state", "intercept", "slope"))
        scored = self.logit(df).join(platt, "signal_state", "left")
        a = F.coalesce(F.col("intercept"), F.lit(0.0))
        b = F.coalesce(F.col("slope"), F.lit(1.0))
        return finish(scored, df.columns, sigmoid(a + b * F.col("_logit")), observation, settings)


def fit_recalibrated(
    name: str,
    fit: Callable[[DataFrame], Logit],
    training: DataFrame,
    settings: FeedbackSettings,
) -> RecalibratedFlipModel:
    """``fit`` (a learner: rows -> its logit) on one share of the counterfactual examples, the
    recalibration on the other (``flip_calibration_share``)."""
    learner_rows, calibration_rows = calibration_split(training, settings.flip_calibration_share)
    logit = fit(learner_rows)
    return RecalibratedFlipModel(name, logit, fit_recalibration(logit, calibration_rows, settings))
