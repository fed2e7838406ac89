"""How the observed graph relates to planted relations (the embedded default's ground truth).

The generator plants directed item relations (buyers of U may later buy V, never the reverse)
and writes them under ``paths.ground_truth/item_relations``. Counting the co-purchase edges that
are planted relations, and those whose *reverse* is one, shows at a glance that the graph holds
the planted structure and its direction (later stages score recommendations against the same
table).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recbatch.config import RecbatchConfig, _join
from recbatch.io.fs import path_exists
from recbatch.io.ids import id_type


@dataclass(frozen=True)
class TruthAgreement:
    truth_relations: int  # planted relations
    edges_in_truth: int  # edges U -> V that are planted relations
    edges_reversed_in_truth: int  # edges U -> V whose reverse V -> U is planted


def planted_relations(spark: SparkSession, cfg: RecbatchConfig) -> DataFrame | None:
    """``src``, ``dst`` of the planted item relations, or None when there is no ground truth
    (any input but the generator's)."""
    path = _join(cfg.path("ground_truth"), "item_relations")
    if not path_exists(spark, path):  # not generated data (checked first: Spark logs a stack trace)
        return None
    try:
        relations = spark.read.parquet(path)
    except AnalysisException:  # removed in between, or not Parquet
        return None
    ids = id_type(cfg.ingest.ids)  # the generator's ids are integers; ingest may read them as text
    return relations.select(
        F.col("src_item").cast(ids).alias("src"), F.col("dst_item").cast(ids).alias("dst")
    )


def truth_agreement(edges: DataFrame, truth: DataFrame) -> TruthAgreement:
    """Counts of ``edges`` (``src``, ``dst``) along and against the planted relations."""
    truth = truth.distinct()
    reversed_truth = truth.select(F.col("dst").alias("src"), F.col("src").alias("dst"))
    observed = edges.select("src", "dst")
    return TruthAgreement(
        truth_relations=truth.count(),
        edges_in_truth=observed.join(truth, ["src", "dst"], "left_semi").count(),
        edges_reversed_in_truth=observed.join(reversed_truth, ["src", "dst"], "left_semi").count(),
    )
