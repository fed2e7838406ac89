"""The asymmetric link loss of BLADE: weighted positives, random negatives, reversed edges.

For a batch of training edges u -> v (weights w_uv) the loss is

    sum_uv w_uv * softplus(-x_uv) / sum w                       positive edges score high
  + mean over sampled negatives (u, n) of softplus(x_un)        random targets of the same source
  + reverse_weight * mean over one-way edges of softplus(x_vu)  the reverse of a one-way edge low

with x = s . t the logit (binary cross-entropy written with ``softplus``, stable for any logit).
The third term is the asymmetric one: "phone -> case" high must not make "case -> phone" high.
Edges whose reverse is also an edge (reciprocal) get no reversed negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.functional import softplus


@dataclass(frozen=True)
class LossTerms:
    """The three terms (for the log) and their weighted total (for ``backward``)."""

    positive: Tensor
    negative: Tensor
    reverse: Tensor
    total: Tensor


def link_loss(
    positive: Tensor,
    positive_weight: Tensor,
    negative: Tensor,
    reverse: Tensor,
    reverse_mask: Tensor,
    reverse_weight: float,
) -> LossTerms:
    """BLADE's loss from logits: ``positive`` [b], ``negative`` [b, m], ``reverse`` [b] (the
    logit of v -> u for each u -> v, counted where ``reverse_mask`` says the edge is one-way)."""
    pos = (positive_weight * softplus(-positive)).sum() / positive_weight.sum().clamp(min=1e-12)
    neg = softplus(negative).mean() if negative.numel() else positive.new_zeros(())
    mask = reverse_mask.to(reverse.dtype)
    rev = (softplus(reverse) * mask).sum() / mask.sum().clamp(min=1.0)
    return LossTerms(pos, neg, rev, pos + neg + reverse_weight * rev)


def pair_logits(sources: Tensor, targets: Tensor) -> Tensor:
    """s . t row by row (``[..., d]`` x ``[..., d]`` -> ``[...]``)."""
    return (sources * targets).sum(-1)


def uniform_negatives(
    num_nodes: int, rows: int, per_row: int, generator: torch.Generator
) -> Tensor:
    """``rows x per_row`` targets drawn uniformly (a draw may hit a true edge: with sparse graphs
    that is rare, and filtering would need the whole edge set in every worker)."""
    return torch.randint(0, num_nodes, (rows, per_row), generator=generator)
