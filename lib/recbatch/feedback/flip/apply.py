"""Scoring examples with a flip model: z from the learner, s from the delay CDF, and the rules
every learner shares (mature examples and observed positives do not flip)."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recbatch.config import FeedbackSettings
from recbatch.feedback.flip.buckets import elapsed_bucket, window_seconds


def prepared(df: DataFrame, settings: FeedbackSettings) -> DataFrame:
    missing = {"elapsed_s", "signal_state", "observed_label"} - set(df.columns)
    if missing:
        raise ValueError(f"scoring needs columns {sorted(missing)}")
    df = df.drop("flip_probability", "observation_probability")
    if "elapsed_bucket" not in df.columns:
        df = df.withColumn("elapsed_bucket", elapsed_bucket(F.col("elapsed_s"), settings))
    return df


def finish(
    scored: DataFrame,
    columns: Sequence[str],
    z: Column,
    observation: DataFrame,
    settings: FeedbackSettings,
) -> DataFrame:
    """Join ``s``, apply the mature / observed-positive rules, keep ``columns`` plus z and s."""
    s = F.broadcast(observation.select("elapsed_bucket", F.col("s").alias("_cell_s")))
    joined = scored.withColumn("_z", z).join(s, "elapsed_bucket", "left")
    mature = F.col("elapsed_s") >= F.lit(window_seconds(settings))
    if "mature" in columns:  # from feedback.labels.at_cutoff: the same rule in whole microseconds
        mature = F.coalesce(F.col("mature"), mature)
    positive = F.col("observed_label").cast("int") == 1
    return joined.select(
        *[F.col(f"`{c}`") for c in columns],
        F.when(mature | positive, F.lit(0.0)).otherwise(F.col("_z")).alias("flip_probability"),
        F.when(mature, F.lit(1.0)).otherwise(F.col("_cell_s")).alias("observation_probability"),
    )
