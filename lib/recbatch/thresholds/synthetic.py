"""Labelled scores with a planted uncertainty effect, and that law's exact population figures.

For tests and bench/thresholds_eval.py: score ``s`` and uncertainty ``u`` are independent and
uniform on [0, 1), and the true positive rate is

    p(s, u) = s ** (1 + effect * u)

so a certain score (``u = 0``) is calibrated, and at the same score the rate falls as ``u`` grows.
The population precision and recall of any per-bucket rule follow in closed form in ``s`` (one
numeric integral over ``u``), so a guarantee can be checked against the truth, not against another
noisy sample.
"""

from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

_STREAM_STRIDE = 1_000_003
"""Spark seeds ``rand(seed)`` per partition with ``seed + partition``: the three columns' seeds are
this far apart so that no partition's score stream is another partition's uncertainty stream."""


def planted_scores(
    spark: SparkSession, rows: int, seed: int, *, effect: float = 2.0, partitions: int = 4
) -> DataFrame:
    """``id, score, uncertainty, true_rate, label`` for ``rows`` rows, reproducible per seed."""
    if partitions >= _STREAM_STRIDE:
        raise ValueError(f"at most {_STREAM_STRIDE - 1} partitions")
    base = spark.range(0, rows, numPartitions=partitions).select(
        F.col("id"),
        F.rand(seed).alias("score"),
        F.rand(seed + _STREAM_STRIDE).alias("uncertainty"),
        F.rand(seed + 2 * _STREAM_STRIDE).alias("_draw"),
    )
    rate = F.pow(F.col("score"), 1.0 + effect * F.col("uncertainty"))
    return base.select(
        "id",
        "score",
        "uncertainty",
        rate.alias("true_rate"),
        (F.col("_draw") < rate).cast("int").alias("label"),
    )


def planted_rate(score: np.ndarray, uncertainty: np.ndarray, effect: float = 2.0) -> np.ndarray:
    """The true positive rate of the planted law."""
    return np.power(score, 1.0 + effect * np.asarray(uncertainty))


def population_precision_recall(
    uncertainty_edges: np.ndarray,
    thresholds: np.ndarray,
    *,
    effect: float = 2.0,
    grid: int = 20_000,
) -> tuple[float | None, float]:
    """True precision and recall of "accept ``s >= thresholds[b]`` in bucket ``b``" on the law.

    With ``a = 1 + effect * u``: positives above ``t`` have mass ``(1 - t^(a+1)) / (a+1)``, rows
    ``1 - t``; integrated over ``u`` by the midpoint rule. Precision is None when nothing is
    accepted.
    """
    u = (np.arange(grid) + 0.5) / grid
    bucket = np.searchsorted(np.asarray(uncertainty_edges, dtype=float), u, side="right")
    t = np.clip(np.asarray(thresholds, dtype=float)[bucket], 0.0, 1.0)
    power = 2.0 + effect * u
    positives_above = (1.0 - t**power) / power
    accepted = (1.0 - t).mean()
    recall = positives_above.mean() / (1.0 / power).mean()
    precision = positives_above.mean() / accepted if accepted > 0 else None
    return precision, float(recall)
