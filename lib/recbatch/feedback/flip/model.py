"""A fitted flip model, whichever learner made it: z from the learner, s from the delay CDF.

``fit_flip_model`` is what the stages call: it builds the counterfactual training set (unless
given one), fits the configured learner (``feedback.flip_learner``) and the delay CDF, and
returns a ``FlipModel`` whose ``apply`` scores examples at a cutoff. The hazard cells are fitted
whatever the learner: they are the per-cell view every learner is reported in (``cell_table``)
and the fallback when the history holds too few flips for a learner on the features.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recbatch.config import FeedbackSettings
from recbatch.feedback.flip.boosted import fit_boosted
from recbatch.feedback.flip.buckets import observe_at
from recbatch.feedback.flip.counterfactual import counterfactual_training_set
from recbatch.feedback.flip.hazard import CELLS_SCHEMA, apply_hazard, fit_hazard
from recbatch.feedback.flip.logistic import fit_logistic_recalibrated
from recbatch.feedback.flip.observation import fit_observation
from recbatch.feedback.flip.recalibrate import RecalibratedFlipModel
from recbatch.log import get_logger

log = get_logger(__name__)

MIN_FLIPS_FOR_FEATURES = 50
"""Fewer counterfactual flips than this: a learner on the features (and the recalibration on a
share of them) would learn noise; the hazard cells serve."""


@dataclass(frozen=True)
class FlipModel:
    """z and s for examples at a cutoff. ``learner`` is the one that gives z: the
    ``recalibrated`` model's (``boosted`` or ``logistic``) when set, else ``hazard`` (the
    cells)."""

    learner: str
    cells: DataFrame
    observation: DataFrame
    recalibrated: RecalibratedFlipModel | None = None

    def apply(self, examples_at_cutoff: DataFrame, settings: FeedbackSettings) -> DataFrame:
        """Add ``flip_probability`` (z) and ``observation_probability`` (s); the rules of
        ``hazard.apply_hazard`` (mature and observed positive examples) hold for every learner."""
        if self.recalibrated is not None:
            return self.recalibrated.apply(examples_at_cutoff, self.observation, settings)
        return apply_hazard(examples_at_cutoff, self.cells, self.observation, settings)

    def cell_table(self, training: DataFrame, settings: FeedbackSettings) -> DataFrame:
        """The cells (``CELLS_SCHEMA``) with ``z`` this model's mean z over the cell's
        counterfactual negatives (the hazard cells as they are; a cell without negatives keeps
        its hazard z): how z falls with elapsed time per signal, whatever the learner."""
        if self.learner == "hazard":
            return self.cells
        mean_z = (
            self.apply(training, settings)
            .groupBy("signal_state", "elapsed_bucket")
            .agg(F.avg("flip_probability").alias("_mean_z"))
        )
        return self.cells.join(mean_z, ["signal_state", "elapsed_bucket"], "left").select(
            *[
                F.coalesce(F.col("_mean_z"), F.col("z")).alias("z") if c == "z" else F.col(c)
                for c in CELLS_SCHEMA.fieldNames()
            ]
        )


def fit_learner(
    training: DataFrame, observation: DataFrame, settings: FeedbackSettings
) -> FlipModel:
    """The configured learner on counterfactual rows, with the delay CDF ``observation``."""
    cells = fit_hazard(training, settings)
    learner = settings.flip_learner
    if learner == "hazard":
        return FlipModel("hazard", cells, observation)
    flips = int(cells.agg(F.sum("flips")).head()[0] or 0)
    if flips < MIN_FLIPS_FOR_FEATURES:
        log.warning(
            "only %d flips in the counterfactual training set (fewer than %d): the %s flip "
            "learner would fit noise, so z comes from the hazard cells",
            flips,
            MIN_FLIPS_FOR_FEATURES,
            learner,
        )
        return FlipModel("hazard", cells, observation)
    fit = fit_logistic_recalibrated if learner == "logistic" else fit_boosted
    return FlipModel(learner, cells, observation, fit(training, settings))


def fit_flip_model(
    examples: DataFrame,
    cutoff: datetime,
    settings: FeedbackSettings,
    training: DataFrame | None = None,
) -> FlipModel:
    """The flip model learnt from the history mature at ``cutoff``.

    ``training`` is the counterfactual training set when the caller already built it (to check
    or reuse it); otherwise it is built here.
    """
    if training is not None:
        return fit_learner(training, fit_observation(examples, cutoff, settings), settings)
    training = counterfactual_training_set(examples, cutoff, settings).persist()
    try:
        return fit_learner(training, fit_observation(examples, cutoff, settings), settings)
    finally:
        training.unpersist()


def score_at_cutoff(
    examples: DataFrame, cutoff: datetime, model: FlipModel, settings: FeedbackSettings
) -> DataFrame:
    """Every example viewed by ``cutoff`` as observed then, with its z and s."""
    return model.apply(observe_at(examples, cutoff, settings), settings)
