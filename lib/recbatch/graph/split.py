"""Train / val / test edges for evaluation, in Spark.

``random``: the protocol of ``../shared/linkpred/split.py`` (DirLinkBench): a random spanning
forest of the undirected graph (minimum spanning forest under seeded uniform edge weights) is
forced into train, so the training graph keeps every weak component connected; of the other
edges, in a seeded random order, exactly ``int(test_fraction * E)`` go to test and
``int(val_fraction * E)`` to val. Both directions of a tree pair stay in train, as the referee
does.

``time``: graphs built from events hold out their *latest* edges (by first purchase): the
``test_fraction`` newest go to test and the ``val_fraction`` before them to val, so a model is
evaluated on relations that appeared after everything it trained on.

The forest is built by Borůvka's algorithm: each round, every component picks its lightest edge
to another component, and the picked edges merge components (GraphFrames' connected components
on the small graph of components). Rounds at least halve the number of components, so a graph of
N nodes takes at most log2(N) rounds.
"""

from __future__ import annotations

from graphframes import GraphFrame
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recbatch.graph.build import edge_key
from recbatch.graph.settings import GraphSettings
from recbatch.io.index import with_row_index
from recbatch.log import get_logger

log = get_logger(__name__)

TRAIN, VAL, TEST = "train", "val", "test"


def split_edges(edges: DataFrame, settings: GraphSettings) -> DataFrame:
    """``edges`` (``src_index``, ``dst_index``, ``first_ts``, ...) with a ``split`` column."""
    if settings.split == "none":
        return edges.withColumn("split", F.lit(TRAIN))
    if settings.split == "time":
        return _time_split(edges, settings)
    return _random_connected_split(edges, settings)


def _held_out_counts(total: int, settings: GraphSettings) -> tuple[int, int]:
    return int(settings.test_fraction * total), int(settings.val_fraction * total)


def _assign_by_rank(
    ranked: DataFrame, n_first: int, n_second: int, first: str, second: str
) -> DataFrame:
    """Rows with ``_rank`` < n_first get ``first``, the next n_second ``second``, others train."""
    rank = F.col("_rank")
    return ranked.withColumn(
        "split",
        F.when(rank < n_first, F.lit(first))
        .when(rank < n_first + n_second, F.lit(second))
        .otherwise(F.lit(TRAIN)),
    ).drop("_rank")


def _time_split(edges: DataFrame, settings: GraphSettings) -> DataFrame:
    total = edges.count()
    n_test, n_val = _held_out_counts(total, settings)
    # Newest first; the hash breaks ties between edges first seen at the same instant.
    tie = edge_key(settings.seed, "src_index", "dst_index")
    ranked = with_row_index(
        edges.withColumn("_tie", tie),
        [F.col("first_ts").desc_nulls_last(), "_tie", "src_index", "dst_index"],
        "_rank",
    ).drop("_tie")
    return _assign_by_rank(ranked, n_test, n_val, TEST, VAL)


def _random_connected_split(edges: DataFrame, settings: GraphSettings) -> DataFrame:
    total = edges.count()
    n_test, n_val = _held_out_counts(total, settings)
    tree = spanning_forest(edges, settings.seed)
    pair = [
        F.least("src_index", "dst_index").alias("a"),
        F.greatest("src_index", "dst_index").alias("b"),
    ]
    in_tree = edges.select("src_index", "dst_index", *pair).join(tree, ["a", "b"], "left_semi")
    forced = in_tree.select("src_index", "dst_index", F.lit(True).alias("_forced"))
    marked = edges.join(forced, ["src_index", "dst_index"], "left")
    free = marked.where(F.col("_forced").isNull()).drop("_forced")
    n_free = free.count()
    if n_free < n_test + n_val:
        log.warning(
            "only %d edges outside the spanning forest, fewer than the %d to hold out: "
            "holding out all of them",
            n_free,
            n_test + n_val,
        )
    order = edge_key(settings.seed + 1, "src_index", "dst_index")
    ranked = with_row_index(
        free.withColumn("_order", order), ["_order", "src_index", "dst_index"], "_rank"
    ).drop("_order")
    held = _assign_by_rank(ranked, n_test, n_val, TEST, VAL)
    kept = (
        marked.where(F.col("_forced").isNotNull()).drop("_forced").withColumn("split", F.lit(TRAIN))
    )
    log.info(
        "split: %d edges, %d forced into train by the spanning forest, %d test, %d val",
        total,
        total - n_free,
        min(n_test, n_free),
        max(0, min(n_val, n_free - n_test)),
    )
    return kept.unionByName(held)


def spanning_forest(edges: DataFrame, seed: int) -> DataFrame:
    """Undirected pairs ``a < b`` of a minimum spanning forest under seeded random weights.

    Weights come from a hash of the pair, ties broken by the pair itself, so the forest is unique
    and the same on every run with the same seed.
    """
    pairs = (
        edges.select(
            F.least("src_index", "dst_index").alias("a"),
            F.greatest("src_index", "dst_index").alias("b"),
        )
        .distinct()
        .withColumn("w", edge_key(seed, "a", "b"))
        .localCheckpoint()
    )
    spark = edges.sparkSession
    label = (
        pairs.select(F.col("a").alias("id"))
        .union(pairs.select(F.col("b").alias("id")))
        .distinct()
        .withColumn("comp", F.col("id"))
        .localCheckpoint()
    )
    tree = spark.createDataFrame([], "a long, b long")
    rounds = 0
    while True:
        crossing = (
            pairs.join(label.withColumnsRenamed({"id": "a", "comp": "ca"}), "a")
            .join(label.withColumnsRenamed({"id": "b", "comp": "cb"}), "b")
            .where(F.col("ca") != F.col("cb"))
        )
        lightest = F.min(F.struct("w", "a", "b")).alias("e")
        picks = (
            crossing.select(F.col("ca").alias("comp"), "w", "a", "b", "ca", "cb")
            .unionByName(crossing.select(F.col("cb").alias("comp"), "w", "a", "b", "ca", "cb"))
            .groupBy("comp")
            .agg(lightest)
            .select("e.a", "e.b")
            .distinct()
            .join(crossing.select("a", "b", "ca", "cb"), ["a", "b"])
            .localCheckpoint()
        )
        if picks.isEmpty():
            break
        rounds += 1
        tree = tree.unionByName(picks.select("a", "b")).localCheckpoint()
        merged = GraphFrame(
            picks.select(F.col("ca").alias("id"))
            .union(picks.select(F.col("cb").alias("id")))
            .distinct(),
            picks.select(F.col("ca").alias("src"), F.col("cb").alias("dst")),
        ).connectedComponents(algorithm="graphx")
        label = (
            label.join(
                merged.withColumnsRenamed({"id": "comp", "component": "new"}), "comp", "left"
            )
            .select("id", F.coalesce("new", "comp").alias("comp"))
            .localCheckpoint()
        )
    log.info("spanning forest: %d edges after %d Borůvka rounds", tree.count(), rounds)
    return tree
