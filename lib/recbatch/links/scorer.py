"""``LinkScorer``: P(u -> v is a real edge) with an uncertainty, through ``recbatch.uncertainty``.

The scorer is a torch module whose ``forward(pairs)`` returns ``[rows, members x heads]`` logits,
the shape ``recbatch.uncertainty.estimators.predict_with_uncertainty`` reads as an ensemble
(method ``heads``): score = the mean member probability, uncertainty = their standard deviation,
exactly as for the conversion model. Member m, head h scores a pair as

    logit = w_h . (s^m_u * t^m_v) + b_h

a diagonal bilinear form on the composite vectors (``w_h = a * 1`` is Platt scaling of the dot
product s . t that ranks the recommendations).

* ``mc_dropout``: members are MC-dropout draws (``members``), one Platt head fitted on the served
  vectors: the spread is the GNN's;
* ``heads``: one member (the served vectors), ``heads`` diagonal heads each fitted on a Poisson
  bootstrap of the training pairs (the conversion model's online bootstrap, offline): the spread
  is the scorer's.

Both fits are logistic regressions (scikit-learn) on a bounded sample of training edges and their
sampled negatives (``link_uncertainty.fit_edges``); the thresholds recalibrate per uncertainty
bucket on held-out pairs afterwards, so the fit needs to order and spread, not to be calibrated.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import DoubleType, StructField, StructType
from sklearn.linear_model import LogisticRegression
from torch import Tensor, nn

from recbatch.links.members import LinkMembers
from recbatch.uncertainty.estimators import predict_with_uncertainty


@dataclass(frozen=True)
class ScorerHeads:
    """``weight`` ``[heads, dim]`` and ``bias`` ``[heads]`` of the scorer's heads."""

    weight: np.ndarray
    bias: np.ndarray


class LinkScorer(nn.Module):
    """Logits ``[rows, members * heads]`` of ``[rows, 2]`` (source, target) node-index pairs."""

    def __init__(self, members: LinkMembers, heads: ScorerHeads) -> None:
        super().__init__()
        self.register_buffer("sources", torch.as_tensor(members.sources, dtype=torch.float32))
        self.register_buffer("targets", torch.as_tensor(members.targets, dtype=torch.float32))
        self.register_buffer("weight", torch.as_tensor(heads.weight, dtype=torch.float32))
        self.register_buffer("bias", torch.as_tensor(heads.bias, dtype=torch.float32))

    def forward(self, pairs: Tensor) -> Tensor:
        products = self.sources[:, pairs[:, 0]] * self.targets[:, pairs[:, 1]]  # [m, rows, d]
        logits = torch.einsum("mrd,hd->rmh", products, self.weight) + self.bias
        return logits.reshape(len(pairs), -1)


def platt_head(dots: np.ndarray, labels: np.ndarray) -> ScorerHeads:
    """One head ``a * 1, b``: Platt scaling of the dot product, ``dim`` from the caller."""
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(dots.reshape(-1, 1), labels)
    return ScorerHeads(np.array([[float(fit.coef_[0, 0])]]), np.array([float(fit.intercept_[0])]))


def fit_heads(
    members: LinkMembers,
    pairs: np.ndarray,
    labels: np.ndarray,
    *,
    method: str,
    heads: int,
    steps: int,
    seed: int,
) -> ScorerHeads:
    """The scorer's heads for ``method`` from labelled training pairs ``[rows, 2]`` (on the
    first member: the served vectors for ``heads``, a draw's scale equals theirs)."""
    sources = members.sources[0][pairs[:, 0]].astype(np.float64)
    targets = members.targets[0][pairs[:, 1]].astype(np.float64)
    dim = sources.shape[1]
    if method == "mc_dropout":
        platt = platt_head((sources * targets).sum(1), labels)
        return ScorerHeads(np.full((1, dim), platt.weight[0, 0]), platt.bias)
    if method != "heads":
        raise ValueError(f"unknown link uncertainty method {method!r}")
    products = sources * targets
    rng = np.random.default_rng(seed)
    weights, biases = [], []
    for _ in range(heads):
        bootstrap = rng.poisson(1.0, len(labels)).astype(np.float64)
        fit = LogisticRegression(C=1.0, max_iter=steps).fit(
            products, labels, sample_weight=bootstrap
        )
        weights.append(fit.coef_[0])
        biases.append(fit.intercept_[0])
    return ScorerHeads(np.stack(weights), np.array(biases))


def score_pairs(
    spark: SparkSession,
    pairs: DataFrame,
    members: LinkMembers,
    heads: ScorerHeads,
    *,
    keep: list[str],
    block_rows: int = 8192,
) -> DataFrame:
    """``keep`` columns of ``pairs`` (with ``src_index``, ``dst_index``) plus ``score`` (mean
    member probability) and ``uncertainty`` (their spread), by ``predict_with_uncertainty`` in
    ``mapInPandas``; the members and heads are broadcast once. A block of ``block_rows`` pairs
    holds ``members x block_rows x dim`` float32 products (16 x 8192 x 194: 100 MB)."""
    shared = spark.sparkContext.broadcast((members, heads))
    schema = StructType(
        [pairs.schema[c] for c in keep]
        + [StructField("score", DoubleType()), StructField("uncertainty", DoubleType())]
    )

    def score(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = LinkScorer(*shared.value)
        for frame in frames:
            for start in range(0, len(frame), block_rows):
                block = frame.iloc[start : start + block_rows]
                index = torch.as_tensor(
                    block[["src_index", "dst_index"]].to_numpy(np.int64), dtype=torch.long
                )
                mean, spread = predict_with_uncertainty(scorer, index, "heads")
                yield block[keep].assign(score=mean, uncertainty=spread)

    return pairs.select(*dict.fromkeys([*keep, "src_index", "dst_index"])).mapInPandas(
        score, schema
    )
