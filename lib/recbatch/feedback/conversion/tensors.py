"""The tensor sets the conversion model trains and is scored on: Spark-written Parquet of
``TENSOR_COLUMNS``, read back by the trainers through Petastorm (``recbatch.io.tensors``).

``feature_vector`` turns the ``f_*`` columns into one ``features`` array<float>: ``log1p``, then
standardised with the mean and standard deviation of the *training* rows (one Spark aggregation,
``feature_stats``), so test rows are scaled as the model saw its training rows.
``write_tensor_set`` repartitions into ``num_processes * row_groups_per_trainer`` files of one
row group each, so every trainer reads several row groups.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recbatch.config import ConversionSettings
from recbatch.feedback.conversion.errors import ConversionInputError
from recbatch.feedback.examples import FEATURE_COLUMNS
from recbatch.io.tensors import count_rows

TENSOR_COLUMNS = ("example_id", "features", "w_pos", "w_neg", "label")


def feature_stats(examples: DataFrame) -> dict[str, tuple[float, float]]:
    """``{feature: (mean, std)}`` of ``log1p(feature)`` over ``examples``, in one aggregation.
    A constant feature gets std 1 (it standardises to 0 instead of dividing by 0)."""
    aggs = []
    for name in FEATURE_COLUMNS:
        value = F.log1p(F.col(name).cast("double"))
        aggs += [F.avg(value).alias(f"m_{name}"), F.stddev_pop(value).alias(f"s_{name}")]
    row = examples.agg(*aggs).head()
    stats = {}
    for name in FEATURE_COLUMNS:
        mean, std = row[f"m_{name}"], row[f"s_{name}"]
        if mean is None:
            raise ConversionInputError("feature statistics need at least one training example")
        stats[name] = (float(mean), float(std) if std and std > 1e-12 else 1.0)
    return stats


def feature_vector(stats: dict[str, tuple[float, float]]) -> Column:
    """The standardised ``log1p`` features as one ``array<float>`` column, in ``stats`` order."""
    parts = [
        ((F.log1p(F.col(name).cast("double")) - F.lit(mean)) / F.lit(std)).cast("float")
        for name, (mean, std) in stats.items()
    ]
    return F.array(*parts).alias("features")


def write_tensor_set(rows: DataFrame, path: str, settings: ConversionSettings) -> int:
    """Write ``TENSOR_COLUMNS`` of ``rows`` as Parquet at ``path`` (replacing it) in
    ``num_processes * row_groups_per_trainer`` files; return the row count, checked so that every
    trainer has a non-empty shard."""
    files = settings.num_processes * settings.row_groups_per_trainer
    (
        rows.select(
            F.col("example_id").cast("long"),
            "features",
            F.col("w_pos").cast("float"),
            F.col("w_neg").cast("float"),
            F.col("label").cast("float"),
        )
        .repartition(files)
        .write.mode("overwrite")
        .parquet(path)
    )
    try:
        shards = [
            count_rows(path, shard=r, shard_count=settings.num_processes)
            for r in range(settings.num_processes)
        ]
    except ValueError as err:  # fewer row groups than trainers
        raise ConversionInputError(
            f"too little data for {settings.num_processes} trainers: {err}"
        ) from err
    if min(shards) == 0:
        raise ConversionInputError(
            f"{path}: a trainer would get no rows (rows per shard {shards}); "
            "use fewer processes or more data"
        )
    return sum(shards)
