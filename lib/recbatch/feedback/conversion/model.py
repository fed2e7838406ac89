"""The conversion model and its loss: one torch MLP, ``w_pos·BCE(f, 1) + w_neg·BCE(f, 0)``.

Everything a delayed-feedback method changes is the pair of loss weights of each example
(docs/delayed_feedback.md, "Weights"), so one model and one loss serve every method.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recbatch.config import ConversionSettings


class ConversionMLP(nn.Module):
    """Features -> hidden ReLU layers (each followed by dropout when ``dropout > 0``) -> one logit
    per head, shape ``[rows, heads]``.

    Why heads and dropout: they are the two cheap sources of a per-prediction uncertainty
    (``recbatch.uncertainty``): heads trained on different bootstrap weights of the same rows
    disagree where data is thin; dropout kept on at scoring time samples sub-networks. With one
    head and no dropout it is a plain MLP; with no hidden layers, a logistic regression (one
    linear layer): on a 6k-row Taobao day it ranked better and varied 8x less between seeds
    than the default two layers (bench/README.md, "Taobao dev protocol").

    With hidden layers the model is *wide and deep*: ``linear(x) + net(x)``, a logistic part
    beside the hidden layers. Why: training solves the convex linear part to its optimum first
    (``convex.py``) and trains the hidden layers as a correction on top of it (their output
    layer starting at zero), so a seed moves only the non-convex part, and a validation slice too
    thin to show that the hidden layers help leaves the logistic optimum (``training.py``).
    """

    def __init__(
        self, n_features: int, hidden_sizes: Sequence[int], dropout: float = 0.0, heads: int = 1
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, heads))
        self.net = nn.Sequential(*layers)
        self.linear = nn.Linear(n_features, heads) if hidden_sizes else None
        self.heads = heads

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.linear is None:
            return self.net(features)
        return self.linear(features) + self.net(features)


def build_model(n_features: int, settings: ConversionSettings) -> ConversionMLP:
    """The model ``settings`` describe (one place, so training and scoring build the same)."""
    return ConversionMLP(n_features, settings.hidden_sizes, settings.dropout, settings.heads)


def bootstrap_weights(
    rows: int, heads: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``[rows, heads]`` online-bootstrap weights: Poisson(1) per row and head (Oza & Russell),
    so each head sees its own resample of every batch; all ones for a single head."""
    if heads == 1:
        return torch.ones(rows, 1)
    return torch.poisson(torch.ones(rows, heads), generator=generator)


def weighted_bce(logits: torch.Tensor, w_pos: torch.Tensor, w_neg: torch.Tensor) -> torch.Tensor:
    """``mean(w_pos·(-log f) + w_neg·(-log(1 - f)))`` with ``f = sigmoid(logits)``, computed
    stably from the logits (``-log f = softplus(-x)``, ``-log(1 - f) = softplus(x)``). Shapes
    broadcast: ``[rows, heads]`` logits with ``[rows, heads]`` or ``[rows, 1]`` weights."""
    losses = w_pos * nn.functional.softplus(-logits) + w_neg * nn.functional.softplus(logits)
    return losses.mean()


def fnw_weights(
    logits: torch.Tensor, w_pos: torch.Tensor, w_neg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """FNW's importance weights ``(w_pos·(1 + p), w_neg·(1 - p)(1 + p))``.

    Why: with every example first counted as a negative and each conversion once more as a
    positive, the biased data has ``b(1|x) = p/(1 + p)`` and ``b(0|x) = 1/(1 + p)``; the ratios
    ``P/b`` are these factors. ``p`` is the model's prediction without gradient (the paper's
    stop-gradient), so the weights rescale the loss but are not themselves optimised.
    """
    p = torch.sigmoid(logits.detach())
    return w_pos * (1.0 + p), w_neg * (1.0 - p) * (1.0 + p)
