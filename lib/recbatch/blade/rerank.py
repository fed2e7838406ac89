"""BLADE's pair scorer: the embeddings' score and the pair features, weighted on val edges.

The embeddings give every node a source and a target vector; a dot product of the two cannot
hold what joins one *pair* (common neighbours per direction, walk proximity), which is why a
training-free personalised PageRank outranked the embeddings on citation graphs
(``../shared/notes/blade.md``). BLADE therefore scores a candidate pair as

    score(u -> v) = w . features(u, v) + b          (``recbatch.proximity.features``)

with ``w`` a logistic regression (Spark MLlib, instance weights) fitted on the run's **val
edges**, which no model trained on: each val edge is a positive, ``rerank.negatives`` random
targets of its source are negatives (together weighted like the positive), and its reverse,
where the edge is one-way, is a negative of weight ``rerank.reverse_weight`` (direction). The
weights are chosen per run by this rule, never per graph by hand, so they carry to a graph
nobody tuned on. The features are standardised by MLlib before the fit and the coefficients
are reported on the original scale.

Serving is retrieval plus re-ranking (``recbatch.blade.recommend``): the exact top-M targets by
the dot product and the two-hop neighbourhood of the source are the candidates; this score
orders them. Evaluation scores the held-out edges and their sampled targets with it directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from scipy.optimize import minimize

from recbatch.blade.heldout import sample_negatives
from recbatch.config import local_path
from recbatch.log import get_logger, timed
from recbatch.proximity.features import SOURCE_FEATURES, PairFeatures
from recbatch.proximity.graph import require_columns
from recbatch.proximity.scorers import PairScorer

log = get_logger(__name__)

VAL_COLUMNS = ("edge_id", "src_index", "dst_index", "one_way")
POSITIVE, DRAWN, REVERSED = 0, 1, 2
"""``kind`` of a training pair: a val edge, a drawn target of its source, its reverse."""


@dataclass(frozen=True)
class RerankWeights:
    """A fitted pair scorer's weights, by feature name, and what they were fitted on."""

    features: tuple[str, ...]
    coefficients: tuple[float, ...]
    intercept: float
    val_edges: int
    training_pairs: int

    def save(self, path: str) -> None:
        target = local_path(path)
        if target is None:
            raise ValueError(f"re-ranker weights need a local or mounted path, got {path}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".tmp")
        partial.write_text(json.dumps(asdict(self), indent=1))
        partial.replace(target)  # atomic: a reader sees the old weights or the new

    @classmethod
    def load(cls, path: str) -> RerankWeights | None:
        target = local_path(path)
        if target is None or not target.exists():
            return None
        raw = json.loads(Path(target).read_text())
        return cls(
            features=tuple(raw["features"]),
            coefficients=tuple(raw["coefficients"]),
            intercept=float(raw["intercept"]),
            val_edges=int(raw["val_edges"]),
            training_pairs=int(raw["training_pairs"]),
        )


class RerankScorer(PairScorer):
    """w . features(u, v) + b."""

    def __init__(self, name: str, features: PairFeatures, weights: RerankWeights) -> None:
        if tuple(features.names) != tuple(weights.features):
            raise ValueError(
                f"re-ranker weights are for features {weights.features}, not {features.names}"
            )
        self.name, self.features, self.weights = name, features, weights
        embedding = features.embedding
        self.width = len(features.names) + (embedding.width if embedding is not None else 0)
        self._w = np.asarray(weights.coefficients, np.float64)

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.features(u, v) @ self._w + self.weights.intercept


def training_pairs(
    spark: SparkSession,
    val: DataFrame,
    all_edges: DataFrame,
    num_nodes: int,
    features: PairFeatures,
    *,
    negatives: int,
    reverse_weight: float,
    seed: int,
) -> DataFrame:
    """``edge_id``, ``label``, ``weight``, ``kind`` and one double column per feature, for every
    val edge, its
    ``negatives`` random targets (weight 1 / negatives each) and its reverse where one-way.

    ``val``: ``edge_id``, ``src_index``, ``dst_index``, ``one_way`` and optionally
    ``negatives`` (drawn targets; else drawn here); ``all_edges``: every known edge
    (``src_index``, ``dst_index``), which a random target must not be."""
    require_columns(val, VAL_COLUMNS, "training_pairs")
    if "negatives" in val.columns:  # drawn already (a referee split's val edges)
        pairs = val.select(*VAL_COLUMNS, F.slice("negatives", 1, negatives).alias("negatives"))
    else:
        drawn = sample_negatives(val, all_edges, num_nodes, negatives, seed)
        pairs = val.select(*VAL_COLUMNS).join(drawn, "edge_id", "left")
    shared = spark.sparkContext.broadcast(features)
    names = features.names

    def drawn_v_of(frame: pd.DataFrame) -> list[np.ndarray]:
        return [np.asarray(t if t is not None else [], np.int64) for t in frame["negatives"]]

    def featurise(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = shared.value
        for frame in frames:
            if frame.empty:
                continue
            u = frame["src_index"].to_numpy(np.int64)
            v = frame["dst_index"].to_numpy(np.int64)
            drawn_u, drawn_v, drawn_w = [], [], []
            for src, targets in zip(u, frame["negatives"], strict=False):
                if targets is not None and len(targets):
                    drawn_v.append(np.asarray(targets, np.int64))
                    drawn_u.append(np.full(len(targets), src, np.int64))
                    drawn_w.append(np.full(len(targets), 1.0 / len(targets)))
            one_way = frame["one_way"].to_numpy(bool)
            su = np.concatenate([u, *drawn_u, v[one_way]])
            sv = np.concatenate([v, *drawn_v, u[one_way]])
            n_drawn = len(su) - len(u) - int(one_way.sum())
            n_reversed = int(one_way.sum())
            ids = frame["edge_id"].to_numpy(np.int64)
            drawn_ids = [
                np.full(len(x), e, np.int64) for e, x in zip(ids, drawn_v_of(frame), strict=True)
            ]
            label = np.r_[np.ones(len(u)), np.zeros(n_drawn), np.zeros(n_reversed)]
            kind = np.r_[
                np.full(len(u), POSITIVE), np.full(n_drawn, DRAWN), np.full(n_reversed, REVERSED)
            ]
            weight = np.concatenate(
                [np.ones(len(u)), *drawn_w, np.full(int(one_way.sum()), reverse_weight)]
            )
            values = scorer(su, sv)
            yield pd.DataFrame(
                {
                    "edge_id": np.concatenate([ids, *drawn_ids, ids[one_way]]),
                    "label": label,
                    "weight": weight,
                    "kind": kind.astype(np.int32),
                    **{n: values[:, i] for i, n in enumerate(names)},
                }
            )

    schema = "edge_id long, label double, weight double, kind int, " + ", ".join(
        f"{n} double" for n in names
    )
    return pairs.mapInPandas(featurise, schema)


def fit_listwise(
    frame: pd.DataFrame, names: list[str], reverse_candidates: float, regularisation: float
) -> np.ndarray:
    """Stage 1 as a ranking: per val edge, a softmax over the edge, its drawn targets and (where
    one-way) its reverse counted as ``reverse_candidates`` targets; minimised by L-BFGS (scipy)
    on standardised features. Returns w on the raw features' scale (a softmax per source has no
    intercept). This is the loss of what is measured, a rank among a source's targets; a
    pointwise logistic regression also spends its fit on score levels across sources."""
    listed = frame["edge_id"].isin(frame.loc[frame["kind"] == POSITIVE, "edge_id"])
    frame = frame[listed].sort_values(["edge_id", "kind"], kind="stable")
    values = frame[names].to_numpy(np.float64)
    kinds = frame["kind"].to_numpy()
    _, list_of = np.unique(frame["edge_id"].to_numpy(), return_inverse=True)
    lists = int(list_of.max()) + 1 if len(list_of) else 0
    if lists == 0:
        raise ValueError("no val edges to fit BLADE's pair scorer on")
    drawn = values[kinds == DRAWN]
    mu, sd = drawn.mean(0), drawn.std(0)
    sd[sd == 0] = 1.0
    z = (values - mu) / sd
    positive_z = np.zeros((lists, z.shape[1]))
    positive_z[list_of[kinds == POSITIVE]] = z[kinds == POSITIVE]
    log_mult = np.zeros(len(z))
    reversed_rows = kinds == REVERSED
    log_mult[reversed_rows] = np.log(reverse_candidates) if reverse_candidates > 0 else -np.inf

    def loss(c: np.ndarray) -> tuple[float, np.ndarray]:
        scores = z @ c + log_mult
        top = np.full(lists, -np.inf)
        np.maximum.at(top, list_of, scores)
        exp = np.exp(scores - top[list_of])
        total = np.bincount(list_of, exp, minlength=lists)
        lse = top + np.log(total)
        prob = exp / total[list_of]
        value = (lse - positive_z @ c).mean() + 0.5 * regularisation * c @ c
        grad = (z.T @ prob - positive_z.sum(0)) / lists + regularisation * c
        return float(value), grad

    fitted = minimize(
        loss,
        np.zeros(z.shape[1]),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 500, "gtol": 1e-9},
    ).x
    return fitted / sd


def fit_logistic(
    pairs: DataFrame, names: list[str], regularisation: float
) -> tuple[np.ndarray, float]:
    """(coefficients, intercept) of MLlib's weighted logistic regression of ``label`` on the
    ``names`` columns (standardised inside the fit, reported on the original scale)."""
    assembled = VectorAssembler(inputCols=names, outputCol="features").transform(pairs)
    model = LogisticRegression(
        featuresCol="features",
        labelCol="label",
        weightCol="weight",
        regParam=regularisation,
        elasticNetParam=0.0,
        standardization=True,
        maxIter=200,
        tol=1e-8,
    ).fit(assembled)
    return model.coefficients.toArray().astype(np.float64), float(model.intercept)


def fit_sample(pairs: DataFrame, max_edges: int, seed: int) -> pd.DataFrame:
    """The training pairs of at most ``max_edges`` val edges (a seeded hash sample), on the
    driver: the listwise fit needs each edge's whole list in one place, and a bounded sample
    keeps the driver's memory independent of the catalogue (``rerank.max_fit_edges``)."""
    edges = pairs.select("edge_id").distinct().count()
    if edges > max_edges:
        keep = F.pmod(F.xxhash64(F.lit(seed), "edge_id"), F.lit(edges)) < max_edges
        pairs = pairs.where(keep)
    return pairs.drop("label", "weight").toPandas()


def existence_pairs(pairs: DataFrame, reverse_share: float) -> DataFrame:
    """Stage 1's pairs: val edges and drawn targets, and the reverses weighted so that they
    total ``reverse_share`` of the drawn targets' weight (0: left out). A small share teaches
    the existence score that a pair's orientation matters, at little cost to its ranking."""
    if reverse_share <= 0:
        return pairs.where(F.col("kind") != REVERSED)
    totals = pairs.groupBy("kind").agg(F.sum("weight").alias("total"), F.count(F.lit(1)).alias("n"))
    by_kind = {r["kind"]: r for r in totals.collect()}  # three rows
    if REVERSED not in by_kind or DRAWN not in by_kind:
        return pairs.where(F.col("kind") != REVERSED)
    each = reverse_share * by_kind[DRAWN]["total"] / by_kind[REVERSED]["n"]
    return pairs.withColumn(
        "weight", F.when(F.col("kind") == REVERSED, F.lit(each)).otherwise(F.col("weight"))
    )


def linear_score(coefficients: np.ndarray, intercept: float, names: list[str]) -> Column:
    """w . x + b as a Spark expression over the feature columns."""
    total = F.lit(float(intercept))
    for name, weight in zip(names, coefficients, strict=True):
        total = total + F.lit(float(weight)) * F.col(name)
    return total


def fit_reranker(
    spark: SparkSession,
    val: DataFrame,
    all_edges: DataFrame,
    num_nodes: int,
    features: PairFeatures,
    settings: Any,
) -> RerankWeights:
    """Fit the pair scorer on ``val`` in two stages, so that direction never costs ranking:

    1. **existence**: val edges against random targets of their own source (and their reverses
       at a small weight, ``existence_pairs``), every feature: ``g = w . x + b``. This alone
       orders each source's targets (Hits@K, MRR, the top K);
    2. **direction**: val edges against their reverses, on the standardised ``g`` and the
       *source-only* features (``SOURCE_FEATURES``): ``c z(g) + h . x_u``. A term that depends
       on the source alone moves a source's whole row up or down, so with ``c > 0`` no source's
       ranking changes; what changes is the level of its scores, which is what a score compared
       across sources reads (the pooled direction AUC, one global link threshold): target-like
       nodes rarely link out.

    Both stages are linear in the features, so the result is one weight vector (folded here).
    Where stage 2 has nothing to learn from (no one-way val edge) or finds ``c <= 0``, the
    score is stage 1's."""
    val = val.localCheckpoint()
    val_edges = val.count()
    if val_edges == 0:
        raise ValueError("no val edges to fit BLADE's pair scorer on")
    pairs = training_pairs(
        spark,
        val,
        all_edges,
        num_nodes,
        features,
        negatives=settings.negatives,
        reverse_weight=settings.reverse_weight,
        seed=settings.seed,
    ).localCheckpoint()
    count = pairs.count()
    names = list(features.names)
    with timed(log, f"fitting BLADE's pair scorer on {val_edges} val edges ({count} pairs)"):
        if settings.loss == "listwise":
            sample = fit_sample(pairs, settings.max_fit_edges, settings.seed)
            w1 = fit_listwise(sample, names, settings.reverse_candidates, settings.regularisation)
            b1 = 0.0
        else:
            w1, b1 = fit_logistic(
                existence_pairs(pairs, settings.existence_reverse_share),
                names,
                settings.regularisation,
            )
        final, intercept, stage2 = w1, b1, "none"
        direction = pairs.where(F.col("kind") != DRAWN).withColumn(
            "existence", linear_score(w1, b1, names)
        )
        moments = direction.agg(
            F.avg("existence"),
            F.stddev("existence"),
            F.sum((F.col("kind") == REVERSED).cast("int")),
        ).head()
        reversed_pairs = int(moments[2] or 0)
        if reversed_pairs > 0 and moments[1]:
            mean, sd = float(moments[0]), float(moments[1])
            standard = direction.withColumn("existence", (F.col("existence") - mean) / sd)
            w2, b2 = fit_logistic(
                standard, ["existence", *SOURCE_FEATURES], settings.regularisation
            )
            if w2[0] > 0:
                scale = w2[0] / sd
                final = scale * w1
                for name, weight in zip(SOURCE_FEATURES, w2[1:], strict=True):
                    final[names.index(name)] += weight
                intercept = scale * (b1 - mean) + b2
                stage2 = f"c {w2[0]:.3f} on {reversed_pairs} reversed val edges"
    weights = RerankWeights(
        features=tuple(names),
        coefficients=tuple(float(c) for c in final),
        intercept=float(intercept),
        val_edges=val_edges,
        training_pairs=count,
    )
    log.info(
        "pair scorer (direction stage: %s): %s",
        stage2,
        ", ".join(
            f"{n} {c:+.3f}" for n, c in zip(weights.features, weights.coefficients, strict=True)
        ),
    )
    return weights
