"""The conversion model trained on delayed feedback, and the harness comparing weighting methods.

Everything a method changes is the pair of loss weights of each example (docs/delayed_feedback.md,
"Weights"): one torch MLP trained with ``w_pos·BCE(f, 1) + w_neg·BCE(f, 0)`` on Spark-written
Parquet read through Petastorm, one shard per DDP process. One file per step:

* ``protocol``: the cutoff T, the training window before it, the test window after it, and
  whether test labels must be mature;
* ``tensors``: the standardised features and the Parquet tensor sets;
* ``model``: the MLP, its weighted loss, FNW's weights, the bootstrap weights of its heads;
* ``training``: DDP training to convergence (step budget, early stopping on a validation
  slice, learning-rate schedule);
* ``scoring``: the trained model in ``mapInPandas``;
* ``metrics``: AUC, average precision, log loss, PCOC, RI-AUC;
* ``evaluate``: one model per method on the same test window;
* ``stage``: the ``train_conversion`` stage and the Delta ``conversion_metrics`` table.
"""

from __future__ import annotations

from recbatch.config import ConversionSettings
from recbatch.feedback.comparison import (
    SeedInterval,
    paired_to_vanilla,
    relative_improvement,
    seed_interval,
)
from recbatch.feedback.conversion.errors import ConversionInputError
from recbatch.feedback.conversion.evaluate import (
    METHODS,
    TrainingData,
    evaluate_methods,
    training_data,
    weighted_training_rows,
    write_training_sets,
)
from recbatch.feedback.conversion.metrics import (
    average_precision,
    binary_metrics,
    binary_metrics_of_columns,
    format_table,
)
from recbatch.feedback.conversion.model import (
    ConversionMLP,
    bootstrap_weights,
    build_model,
    fnw_weights,
    weighted_bce,
)
from recbatch.feedback.conversion.protocol import (
    EvaluationWindow,
    data_end,
    evaluation_window,
    examples_end,
)
from recbatch.feedback.conversion.scoring import map_model, score, score_models
from recbatch.feedback.conversion.stage import METRICS_SCHEMA, conversion_stage, write_metrics
from recbatch.feedback.conversion.tensors import (
    TENSOR_COLUMNS,
    feature_stats,
    feature_vector,
    write_tensor_set,
)
from recbatch.feedback.conversion.training import (
    TrainingJob,
    epochs_for_budget,
    train,
    train_conversion_jobs,
    train_conversion_model,
    train_jobs,
)

__all__ = [
    "METHODS",
    "METRICS_SCHEMA",
    "TENSOR_COLUMNS",
    "ConversionInputError",
    "ConversionMLP",
    "ConversionSettings",
    "SeedInterval",
    "EvaluationWindow",
    "TrainingData",
    "TrainingJob",
    "average_precision",
    "binary_metrics",
    "binary_metrics_of_columns",
    "bootstrap_weights",
    "build_model",
    "conversion_stage",
    "data_end",
    "epochs_for_budget",
    "evaluate_methods",
    "evaluation_window",
    "examples_end",
    "feature_stats",
    "feature_vector",
    "fnw_weights",
    "format_table",
    "map_model",
    "paired_to_vanilla",
    "relative_improvement",
    "score",
    "score_models",
    "seed_interval",
    "train",
    "train_conversion_jobs",
    "train_conversion_model",
    "train_jobs",
    "training_data",
    "weighted_bce",
    "weighted_training_rows",
    "write_metrics",
    "write_tensor_set",
    "write_training_sets",
]
