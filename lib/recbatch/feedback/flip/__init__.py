"""Label-flip probabilities ``z`` and observation probabilities ``s`` (docs/delayed_feedback.md).

At a training cutoff ``T`` a recent view that looks negative may still convert. This package
learns, from mature history only, how likely that is. One file per step:

* ``buckets``: the examples as observed at a cutoff (elapsed time, its bucket, signal state);
* ``counterfactual``: the training set, the past replayed at ``T' = T - CD - k·step``: the
  views that looked negative at ``T'``, described with what was known at ``T'``, labelled with
  their true label (known at ``T``); ``split_holdout`` for the calibration check;
* ``hazard``: z per (signal state, elapsed bucket) cell, Beta-smoothed;
* ``logistic``: MLlib logistic regression on the features, signal state and elapsed bucket (the
  default learner, ``feedback.flip_learner``);
* ``boosted``: MLlib gradient-boosted trees on the features, elapsed time and signal state;
* ``recalibrate``: either learner's logit recalibrated per signal state on held-out examples;
* ``observation``: ``s``, the delay CDF of mature positives per elapsed bucket;
* ``apply``: the rules every learner's z obeys (mature examples and observed positives);
* ``model``: ``FlipModel`` and ``fit_flip_model``, what the stages call;
* ``calibration``: ECE, predicted against realised flips and the AUC of z, per signal state.

Everything runs on Spark's DataFrame API and MLlib. The fitted models are small (cells, trees, a
recalibration per signal state): a model is fitted once and not recomputed by every use.

Labels at a cutoff (observed label, elapsed time, signal state, maturity) come from
``feedback.labels``, the one definition of the contract's "Labels at a cutoff": the same
expressions read the examples at ``T`` and at every counterfactual ``T'``.
"""

from __future__ import annotations

from recbatch.feedback.flip.boosted import fit_boosted
from recbatch.feedback.flip.buckets import (
    FEATURE_PREFIX,
    elapsed_bucket,
    elapsed_bucket_bounds,
    observe_at,
)
from recbatch.feedback.flip.calibration import (
    CALIBRATION_COLUMNS,
    calibration,
    calibration_at_cutoff,
    expected_calibration_errors,
    ranking_auc,
)
from recbatch.feedback.flip.counterfactual import (
    counterfactual_cutoffs,
    counterfactual_delay_hours,
    counterfactual_training_set,
    split_holdout,
)
from recbatch.feedback.flip.hazard import CELLS_SCHEMA, apply_hazard, fit_hazard
from recbatch.feedback.flip.logistic import (
    apply_logistic,
    fit_logistic,
    fit_logistic_recalibrated,
)
from recbatch.feedback.flip.model import FlipModel, fit_flip_model, fit_learner, score_at_cutoff
from recbatch.feedback.flip.observation import OBSERVATION_SCHEMA, fit_observation
from recbatch.feedback.flip.recalibrate import (
    PLATT_SCHEMA,
    RecalibratedFlipModel,
    fit_recalibrated,
)
from recbatch.feedback.labels import SIGNAL_STATES

__all__ = [
    "CALIBRATION_COLUMNS",
    "CELLS_SCHEMA",
    "FEATURE_PREFIX",
    "OBSERVATION_SCHEMA",
    "PLATT_SCHEMA",
    "SIGNAL_STATES",
    "FlipModel",
    "RecalibratedFlipModel",
    "apply_hazard",
    "apply_logistic",
    "calibration",
    "calibration_at_cutoff",
    "counterfactual_cutoffs",
    "counterfactual_delay_hours",
    "counterfactual_training_set",
    "elapsed_bucket",
    "elapsed_bucket_bounds",
    "expected_calibration_errors",
    "fit_boosted",
    "fit_flip_model",
    "fit_hazard",
    "fit_learner",
    "fit_logistic",
    "fit_logistic_recalibrated",
    "fit_observation",
    "fit_recalibrated",
    "observe_at",
    "ranking_auc",
    "score_at_cutoff",
    "split_holdout",
]
