"""BLADE's composite score: an existence channel and a direction channel, as one dot product.

One dot product asked to answer both questions, "are u and v related?" and "which way?",
trades one for the other: reversed-edge negatives teach direction and unteach existence (the
reference table of ``../shared/data/README.md``: dual MF loses 6 points of Hits@100 to them,
DiGAE 15). BLADE therefore learns the two answers with two GNN channels on the same degree-aware
samples and adds them:

    score(u -> v) = z_u(v) + lambda * ( d(u, v) / sd_d + c * (phi_v - phi_u) ) - beta * phi_u

* ``z_u(v) = (x_u . x_v - mean_w x_u . x_w) / sd_w(x_u . x_w)``: the **existence** channel, a
  symmetric embedding x (``embedding=single``, random negatives only, as GAE trains),
  standardised per source over all targets. Standardising is a per-source monotone map, so it
  never changes a source's ranking; what it changes is that scores of different sources become
  comparable. That matters for direction, which the referee measures *pooled* (a true edge
  against other pairs' reverses): a raw symmetric score varies so much from pair to pair that it
  drowns any direction signal added to it.
* ``d(u, v) = p_u . q_v - p_v . q_u``: the **direction** channel, antisymmetric, from a dual
  source/target embedding trained with BLADE's asymmetric loss (reversed one-way edges as
  negatives). ``sd_d`` is the standard deviation of ``p_u . q_w`` over all pairs, so ``lambda``
  means the same on every graph.
* ``phi = log((in_degree + 1) / (out_degree + 1))`` in the training graph: the **degree
  potential**, how target-like a node is (a paper cited more than it cites is older; a product
  bought after others is the accessory). ``phi_v - phi_u`` is antisymmetric too.

* ``- beta * phi_u``: the **source prior** (``blade.source_prior_weight``), a per-source offset
  like the user bias of matrix factorisation: a target-like node (many in-edges, few out-edges)
  is rarely the source of any edge. It is constant over a source's targets, so it changes no
  ranking of targets (Hits@K, MRR and the top-K are exactly those of ``beta = 0``); it moves the
  absolute level of a source's scores, which is what a score compared *across* sources reads:
  the pooled direction AUC, and the link probability that one global threshold is applied to.

Since both direction terms are antisymmetric, ``score(u, v) - score(v, u)`` is (up to the
per-source scales) ``2 lambda (d + c dphi)``: the direction channel decides direction, and with
a moderate ``lambda`` the existence channel still decides the ranking of a source's targets.
``lambda`` (``blade.direction_weight``) and ``c`` (``blade.potential_weight``) are tuned on
validation edges (``bench/blade_eval.py --which val``).

Every term is a dot product of a per-source and a per-target vector, so the composite is exported
as ordinary (source, target) vectors and everything downstream (top-K, evaluation, the referee)
scores it as ``s_u . t_v``:

    s_u = [ x_u / sd_u ;  r p_u ;  r q_u ;  lambda c ;  -(lambda c + beta) phi_u ]
    t_v = [ x_v - x_mean ;  r q_v ; -r p_v ;  phi_v    ;  1 ]          r = sqrt(lambda / sd_d)

The moments (mean and covariance of x, second moments of p and q) are summed per partition on
the cluster; the driver only adds up a few d x d matrices.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

CHANNELS = ("existence", "direction")


def channel_changes(settings: Any) -> dict[str, dict[str, Any]]:
    """Each channel's changes to the ``blade`` settings: the existence channel trains without
    reversed negatives (a symmetric one could not satisfy them; an asymmetric one would unlearn
    existence), the direction channel is the dual embedding with the asymmetric loss."""
    return {
        "existence": {"embedding": settings.existence_embedding, "reverse_weight": 0.0},
        "direction": {"embedding": "directional"},
    }


_EPS = 1e-12


@dataclass(frozen=True)
class ChannelMoments:
    """What the composite needs of all nodes: moments of the two channels' embeddings."""

    b_mean: np.ndarray  # [de]: mean existence target vector
    b_cov: np.ndarray  # [de, de]: their population covariance
    p_mean: np.ndarray  # [dd]
    q_mean: np.ndarray  # [dd]
    p_second: np.ndarray  # [dd, dd], E[p p^T]
    q_second: np.ndarray  # [dd, dd], E[q q^T]

    @property
    def direction_sd(self) -> float:
        """sd of p_u . q_w over independent uniform u, w: E[(p.q)^2] = tr(E[pp^T] E[qq^T])."""
        second = float(np.trace(self.p_second @ self.q_second))
        mean = float(self.p_mean @ self.q_mean)
        return float(np.sqrt(max(second - mean * mean, _EPS)))


SUM_FIELDS = ("n", "b", "bb", "p", "q", "pp", "qq")


def moments_of(b: np.ndarray, p: np.ndarray, q: np.ndarray) -> ChannelMoments:
    """The moments of in-memory matrices (rows = nodes); the Spark path sums the same terms.

    ``b``: the existence channel's target vectors; ``p``, ``q``: the direction channel's."""
    return _moments_from_sums(_partial_sums(b, p, q))


def _partial_sums(b: np.ndarray, p: np.ndarray, q: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "n": np.array([len(b)], dtype=np.float64),
        "b": b.sum(0),
        "bb": b.T @ b,
        "p": p.sum(0),
        "q": q.sum(0),
        "pp": p.T @ p,
        "qq": q.T @ q,
    }


def _moments_from_sums(sums: dict[str, np.ndarray]) -> ChannelMoments:
    n = float(sums["n"][0])
    if n <= 0:
        raise ValueError("no embeddings to compose")
    b_mean = sums["b"] / n
    return ChannelMoments(
        b_mean=b_mean,
        b_cov=sums["bb"] / n - np.outer(b_mean, b_mean),
        p_mean=sums["p"] / n,
        q_mean=sums["q"] / n,
        p_second=sums["pp"] / n,
        q_second=sums["qq"] / n,
    )


def degree_potential(in_degree: np.ndarray, out_degree: np.ndarray) -> np.ndarray:
    """``log((in + 1) / (out + 1))``: positive for nodes that are mostly targets."""
    return np.log1p(np.asarray(in_degree, np.float64)) - np.log1p(
        np.asarray(out_degree, np.float64)
    )


def compose_vectors(
    a: np.ndarray,
    b: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    potential: np.ndarray,
    moments: ChannelMoments,
    *,
    direction_weight: float,
    potential_weight: float,
    source_prior_weight: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(sources, targets) of the composite for the rows given (module doc for the layout):
    ``a``, ``b`` the existence channel's source and target vectors, ``p``, ``q`` the direction
    channel's, ``potential`` the degree potential."""
    a, b, p, q = (np.asarray(m, np.float64) for m in (a, b, p, q))
    lam, c, beta = direction_weight, potential_weight, source_prior_weight
    spread = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", a, moments.b_cov, a), 0.0))
    scale = np.sqrt(lam / moments.direction_sd)
    ones = np.ones((len(a), 1))
    phi = np.asarray(potential, np.float64).reshape(-1, 1)
    sources = np.hstack(
        [
            a / np.maximum(spread, _EPS)[:, None],
            scale * p,
            scale * q,
            lam * c * ones,
            -(lam * c + beta) * phi,
        ]
    )
    targets = np.hstack([b - moments.b_mean, scale * q, -scale * p, phi, ones])
    return sources, targets


def _vectors(column: pd.Series) -> np.ndarray:
    return np.stack(column.to_numpy()).astype(np.float64)


def channel_moments(joined: DataFrame) -> ChannelMoments:
    """Moments of ``joined`` (``b``, ``p``, ``q`` array columns), summed per partition."""

    def sums(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        frames = [f for f in frames if len(f)]
        if not frames:
            return
        frame = pd.concat(frames)
        part = _partial_sums(_vectors(frame["b"]), _vectors(frame["p"]), _vectors(frame["q"]))
        yield pd.DataFrame({k: [part[k].reshape(-1)] for k in SUM_FIELDS})

    schema = ", ".join(f"{k} array<double>" for k in SUM_FIELDS)
    rows = joined.select("b", "p", "q").mapInPandas(sums, schema).collect()  # one per partition
    if not rows:
        raise ValueError("no embeddings to compose")
    total = {k: np.sum([np.asarray(r[k]) for r in rows], axis=0) for k in SUM_FIELDS}
    de, dd = len(total["b"]), len(total["p"])
    total.update(
        bb=total["bb"].reshape(de, de),
        pp=total["pp"].reshape(dd, dd),
        qq=total["qq"].reshape(dd, dd),
    )
    return _moments_from_sums(total)


def compose_embeddings(
    spark: SparkSession,
    existence: DataFrame,
    direction: DataFrame,
    nodes: DataFrame,
    *,
    direction_weight: float,
    potential_weight: float,
    source_prior_weight: float = 0.0,
) -> DataFrame:
    """``node_index``, ``source``, ``target`` (array<float>) of the composite.

    ``existence``, ``direction``: ``node_index``, ``source``, ``target`` of each channel;
    ``nodes``: ``node_index``, ``in_degree``, ``out_degree`` (training graph). Every node needs
    a row in each channel; a missing one is an error, not a zero vector."""

    def channel(frame: DataFrame, source: str, target: str) -> DataFrame:
        return frame.select(
            "node_index", F.col("source").alias(source), F.col("target").alias(target)
        )

    joined = (
        nodes.select("node_index", "in_degree", "out_degree")
        .join(channel(existence, "a", "b"), "node_index", "left")
        .join(channel(direction, "p", "q"), "node_index", "left")
    )
    missing = joined.where(F.col("a").isNull() | F.col("p").isNull()).count()
    if missing:
        raise ValueError(f"{missing} nodes lack an embedding of one of BLADE's channels")
    joined = joined.localCheckpoint()
    moments = spark.sparkContext.broadcast(channel_moments(joined))
    lam, c, beta = float(direction_weight), float(potential_weight), float(source_prior_weight)

    def compose(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            if not len(frame):
                continue
            phi = degree_potential(frame["in_degree"].to_numpy(), frame["out_degree"].to_numpy())
            sources, targets = compose_vectors(
                *(_vectors(frame[m]) for m in ("a", "b", "p", "q")),
                phi,
                moments.value,
                direction_weight=lam,
                potential_weight=c,
                source_prior_weight=beta,
            )
            yield pd.DataFrame(
                {
                    "node_index": frame["node_index"].to_numpy(np.int64),
                    "source": list(sources.astype(np.float32)),
                    "target": list(targets.astype(np.float32)),
                }
            )

    return joined.mapInPandas(compose, "node_index long, source array<float>, target array<float>")
