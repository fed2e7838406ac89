"""Held-out edges ranked against sampled targets of the same source, by degree bucket.

The protocol is the one of ``../shared/linkpred`` (the project's referee), computed on the cluster:

* **ranking**: each held-out edge (u, v) is ranked among its own sampled targets (u, w), w != u,
  (u, w) an edge in no split. With g targets scoring above v and t tied with it the rank is uniform
  on g+1 .. g+t+1, so Hits@K = clip((K - g) / (t + 1), 0, 1) and the reciprocal rank is its
  expectation (H(g+t+1) - H(g)) / (t + 1), H the harmonic numbers: random tie-breaking without the
  randomness. Means over held-out edges.
* **direction AUC**: one-way held-out edges u -> v (v -> u an edge in no split) against their
  reverses, pooled: the ROC-AUC of score(u, v) versus score(v, u) over all of them, exact
  (Mann-Whitney with average ranks for ties, via a distributed sort).
* **buckets**: the source's out-degree in the training graph, cut at the 1/3 and 2/3 quantiles
  (linear interpolation) over the distinct sources of held-out edges: low <= q1 < mid <= q2 < high.

Every model is a ``recbatch.proximity.scorers.PairScorer``: a dot product s_u . t_v of exported
vectors (BLADE; popularity: s = 1, t = training in-degree, from ``blade.stage``), a training-free
proximity score (ppr, ppr_potential, adamic_adar) or BLADE's re-ranker over pair features,
broadcast to the tasks that score a partition of held-out edges at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from scipy.special import digamma

from recbatch.io.index import with_row_index
from recbatch.proximity.scorers import DotScorer, PairScorer

KS = (20, 50, 100)
BUCKETS = ("low", "mid", "high")
EDGE_METRICS_SCHEMA = (
    "edge_id long, bucket string, one_way boolean, positive double, reverse double, "
    + ", ".join(f"hits_{k} double" for k in KS)
    + ", rr double, negatives int"
)
HELD_OUT_COLUMNS = ("edge_id", "src_index", "dst_index", "one_way", "negatives")


def matrices_from_embeddings(name: str, embeddings: pd.DataFrame, num_nodes: int) -> DotScorer:
    """``node_index``, ``source``, ``target`` rows as a dot-product scorer over dense matrices
    (nodes without a row score nothing: zero vectors)."""
    dim = len(embeddings["source"].iloc[0])
    sources = np.zeros((num_nodes, dim), dtype=np.float64)
    targets = np.zeros((num_nodes, dim), dtype=np.float64)
    index = embeddings["node_index"].to_numpy(np.int64)
    sources[index] = np.stack(embeddings["source"].to_numpy())
    targets[index] = np.stack(embeddings["target"].to_numpy())
    return DotScorer(name, sources, targets)


def _harmonic(n: np.ndarray) -> np.ndarray:
    return np.where(n > 0, digamma(n + 1.0) + np.euler_gamma, 0.0)


def ranking_from_scores(positive: np.ndarray, negative: np.ndarray, mask: np.ndarray) -> dict:
    """Per-edge expected Hits@K and reciprocal rank (module doc) from ``positive`` [n] and
    ``negative`` [n, m] scores, ``mask`` marking the real (not padded) negatives."""
    above = ((negative > positive[:, None]) & mask).sum(1).astype(np.float64)
    tied = ((negative == positive[:, None]) & mask).sum(1).astype(np.float64)
    out = {f"hits_{k}": np.clip((k - above) / (tied + 1.0), 0.0, 1.0) for k in KS}
    out["rr"] = (_harmonic(above + tied + 1.0) - _harmonic(above)) / (tied + 1.0)
    return out


PAIR_VALUES = 1 << 24
"""Values a scorer gathers per call (128 MB of float64): edges are scored in chunks of at most
``PAIR_VALUES / width`` pairs (width: a dot product's dimension, a feature scorer's features),
whatever the partition's size."""


def _pairs_per_call(model: PairScorer) -> int:
    return max(1024, PAIR_VALUES // max(getattr(model, "width", 1), 1))


RANKING_SCHEMA = EDGE_METRICS_SCHEMA.replace(" reverse double,", "")


def _score_chunk(model: PairScorer, frame: pd.DataFrame) -> pd.DataFrame:
    """Positives and sampled targets of a chunk of edges, in one call of the scorer (a scorer
    that reads rows per source, PPR or paths, computes each source's row once)."""
    u = frame["src_index"].to_numpy(np.int64)
    v = frame["dst_index"].to_numpy(np.int64)
    width = max(max((len(x) for x in frame["negatives"]), default=0), 1)
    negatives = np.full((len(frame), width), -1, dtype=np.int64)
    for row, values in enumerate(frame["negatives"]):
        negatives[row, : len(values)] = values
    mask = negatives >= 0
    scores = model(
        np.concatenate([u, np.repeat(u, width)]),
        np.concatenate([v, np.maximum(negatives, 0).ravel()]),
    )
    positive = scores[: len(u)]
    negative = scores[len(u) :].reshape(len(u), width)
    metrics = ranking_from_scores(positive, negative, mask)
    return pd.DataFrame(
        {
            "edge_id": frame["edge_id"].to_numpy(np.int64),
            "bucket": frame["bucket"].to_numpy(),
            "one_way": frame["one_way"].to_numpy(bool),
            "positive": positive,
            **metrics,
            "negatives": mask.sum(1).astype(np.int32),
        }
    )


def score_held_out_edges(spark: SparkSession, held_out: DataFrame, model: PairScorer) -> DataFrame:
    """``EDGE_METRICS_SCHEMA`` per held-out edge (``HELD_OUT_COLUMNS`` + ``bucket``).

    The model is broadcast once. Ranking: each task scores its partition's edges sorted by
    source, in chunks of at most ``PAIR_VALUES`` gathered values. Reverses (v -> u of the
    one-way edges; null for the others, which direction AUC does not read) are scored in a
    second pass partitioned by *their* source v, so that a row-per-source scorer computes each
    node's row once per pass, not once in every partition that holds an edge into it."""
    shared = spark.sparkContext.broadcast(model)

    def rank(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = shared.value
        frames = [f for f in frames if not f.empty]
        if not frames:
            return
        edges = pd.concat(frames, ignore_index=True).sort_values("src_index", kind="stable")
        per_edge = max(max(len(x) for x in edges["negatives"]) + 1, 1)
        chunk = max(1, _pairs_per_call(scorer) // per_edge)
        for start in range(0, len(edges), chunk):
            yield _score_chunk(scorer, edges.iloc[start : start + chunk])

    ranked = held_out.repartition(F.col("src_index")).mapInPandas(rank, RANKING_SCHEMA)
    reverses = held_out.where("one_way").select(
        "edge_id", F.col("dst_index").alias("src_index"), F.col("src_index").alias("dst_index")
    )
    scored = score_pairs(spark, reverses, model, shared).select(
        "edge_id", F.col("score").alias("reverse")
    )
    columns = [c.split(" ")[0] for c in EDGE_METRICS_SCHEMA.split(", ")]
    return ranked.join(scored, "edge_id", "left").select(*columns)


def exact_auc(scored: DataFrame) -> tuple[float, int, int]:
    """(ROC-AUC, positives, negatives) of ``score``/``label`` rows, ties at half credit.

    Mann-Whitney: AUC = (sum of the positives' ranks - P(P+1)/2) / (P N), ranks ascending and
    averaged within a tie, from a distributed sort (``with_row_index``)."""
    ranked = with_row_index(scored, ["score", "label", "row_id"], "position")
    groups = ranked.groupBy("score").agg(
        (F.avg("position") + 1).alias("rank"),
        F.sum("label").alias("positives"),
        F.count(F.lit(1)).alias("rows"),
    )
    row = groups.agg(
        F.sum(F.col("rank") * F.col("positives")).alias("rank_sum"),
        F.sum("positives").alias("positives"),
        F.sum("rows").alias("rows"),
    ).head()
    positives = int(row["positives"] or 0)
    negatives = int(row["rows"] or 0) - positives
    ranked.unpersist()
    if positives == 0 or negatives == 0:
        return float("nan"), positives, negatives
    auc = (float(row["rank_sum"]) - positives * (positives + 1) / 2) / (positives * negatives)
    return auc, positives, negatives


def direction_auc(edge_metrics: DataFrame) -> tuple[float, int]:
    """Direction AUC of the one-way edges of ``edge_metrics`` and how many there were."""
    one_way = edge_metrics.where("one_way")
    scored = one_way.select(
        F.col("positive").alias("score"), F.lit(1).alias("label"), F.col("edge_id").alias("row_id")
    ).unionByName(
        one_way.select(
            F.col("reverse").alias("score"),
            F.lit(0).alias("label"),
            F.col("edge_id").alias("row_id"),
        )
    )
    auc, positives, _ = exact_auc(scored)
    return auc, positives


def bucket_cutoffs(held_out: DataFrame, train_out_degree: DataFrame) -> tuple[float, float]:
    """The 1/3 and 2/3 quantiles (linear) of the training out-degree of held-out sources."""
    sources = held_out.select(F.col("src_index").alias("node_index")).distinct()
    degrees = sources.join(train_out_degree, "node_index", "left").fillna(0, ["out_degree"])
    q = degrees.agg(
        F.percentile(F.col("out_degree").cast("double"), F.array(F.lit(1 / 3), F.lit(2 / 3))).alias(
            "q"
        )
    ).head()["q"]
    return float(q[0]), float(q[1])


def with_buckets(
    held_out: DataFrame, train_out_degree: DataFrame, cutoffs: tuple[float, float]
) -> DataFrame:
    """``held_out`` with the ``bucket`` of its source (low / mid / high)."""
    low, mid = cutoffs
    degree = F.coalesce(F.col("out_degree"), F.lit(0))
    bucket = F.when(degree <= low, "low").when(degree <= mid, "mid").otherwise("high")
    return (
        held_out.join(
            train_out_degree.withColumnRenamed("node_index", "src_index"), "src_index", "left"
        )
        .withColumn("bucket", bucket)
        .drop("out_degree")
    )


def summarise(edge_metrics: DataFrame) -> list[dict]:
    """One row per bucket and one for ``all``: mean Hits@K and MRR, direction AUC, counts."""
    edge_metrics = edge_metrics.persist()
    rows = []
    means = [F.avg(f"hits_{k}").alias(f"hits_{k}") for k in KS] + [F.avg("rr").alias("mrr")]
    counts = [F.count(F.lit(1)).alias("edges"), F.sum(F.col("one_way").cast("int")).alias("dir")]
    per_bucket = {
        r["bucket"]: r for r in edge_metrics.groupBy("bucket").agg(*means, *counts).collect()
    }
    overall = edge_metrics.agg(*means, *counts).head()
    for bucket, row in [("all", overall), *((b, per_bucket.get(b)) for b in BUCKETS)]:
        subset = edge_metrics if bucket == "all" else edge_metrics.where(F.col("bucket") == bucket)
        auc, n_dir = direction_auc(subset) if row is not None else (float("nan"), 0)
        entry = {
            "bucket": bucket,
            "edges": int(row["edges"]) if row else 0,
            "direction_pairs": n_dir,
            "direction_auc": auc,
        }
        for k in KS:
            entry[f"hits_{k}"] = float(row[f"hits_{k}"]) if row else float("nan")
        entry["mrr"] = float(row["mrr"]) if row else float("nan")
        rows.append(entry)
    edge_metrics.unpersist()
    return rows


def score_pairs(
    spark: SparkSession, pairs: DataFrame, model: PairScorer, shared: Broadcast | None = None
) -> DataFrame:
    """``pairs`` (``src_index``, ``dst_index``, any other columns) with ``score`` added: any
    scorer, on the cluster, a partition's pairs sorted by source and scored in chunks.
    ``shared``: the model's broadcast where the caller has one already."""
    shared = shared or spark.sparkContext.broadcast(model)
    schema = pairs.schema.add("score", "double")

    def score(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = shared.value
        frames = [f for f in frames if not f.empty]
        if not frames:
            return
        frame = pd.concat(frames, ignore_index=True).sort_values("src_index", kind="stable")
        chunk = _pairs_per_call(scorer)
        for start in range(0, len(frame), chunk):
            part = frame.iloc[start : start + chunk]
            yield part.assign(
                score=scorer(
                    part["src_index"].to_numpy(np.int64), part["dst_index"].to_numpy(np.int64)
                )
            )

    return pairs.repartition(F.col("src_index")).mapInPandas(score, schema)
