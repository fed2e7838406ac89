"""Score and uncertainty of a torch binary classifier, by one of several methods.

Every method returns, per row, ``score`` = the mean predicted probability and ``uncertainty`` =
the standard deviation of the predicted probabilities across the method's members:

* ``heads``: a multi-head ensemble. The model has ``H`` output heads trained on independent
  online-bootstrap weights (``feedback.conversion.bootstrap_weights``); the members are the heads,
  all from one forward pass, so scoring costs about one plain prediction.
* ``mc_dropout``: Monte-Carlo dropout (Gal & Ghahramani 2016). Dropout stays on at scoring time
  and the members are ``samples`` stochastic forward passes: ``samples`` times the cost.

Why the standard deviation of probabilities, not of logits: the thresholds bucket rows by it and
a probability spread is comparable across score levels in the way users read it ("0.30 ± 0.05").
The interface is the function ``predict_with_uncertainty``; the model only needs to return
``[rows, heads]`` logits and, for MC dropout, to contain ``nn.Dropout`` layers.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

Method = Literal["heads", "mc_dropout"]
METHODS: tuple[Method, ...] = ("heads", "mc_dropout")


class UncertaintyModelError(ValueError):
    """The model cannot produce the requested kind of uncertainty."""


def _dropout_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Dropout)]


def _member_probabilities(
    model: nn.Module, features: torch.Tensor, method: Method, samples: int, seed: int
) -> torch.Tensor:
    """``[members, rows]`` probabilities of the method's members."""
    model.eval()
    with torch.no_grad():
        if method == "heads":
            logits = model(features)
            if logits.dim() != 2 or logits.shape[1] < 2:
                raise UncertaintyModelError(
                    f"'heads' needs a model with at least 2 output heads, got logits of shape "
                    f"{tuple(logits.shape)} (set the model's heads)"
                )
            return torch.sigmoid(logits).T
        if method == "mc_dropout":
            layers = _dropout_layers(model)
            if not layers or all(m.p == 0 for m in layers):
                raise UncertaintyModelError(
                    "'mc_dropout' needs a model with dropout > 0 (set the model's dropout)"
                )
            if samples < 2:
                raise UncertaintyModelError(f"'mc_dropout' needs samples >= 2, got {samples}")
            for layer in layers:
                layer.train()
            torch.manual_seed(seed)
            try:
                draws = [torch.sigmoid(model(features)).mean(-1) for _ in range(samples)]
            finally:
                model.eval()
            return torch.stack(draws)
    raise ValueError(f"unknown uncertainty method '{method}'; expected one of {METHODS}")


def predict_with_uncertainty(
    model: nn.Module, features: torch.Tensor, method: Method, samples: int = 30, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(score, uncertainty)`` float64 arrays for the rows of ``features`` (module docstring).

    ``samples`` and ``seed`` only matter for ``mc_dropout``; its result is reproducible for the
    same seed and rows.
    """
    members = _member_probabilities(model, features, method, samples, seed)
    score = members.mean(0)
    spread = members.std(0, unbiased=False)
    return score.double().numpy(), spread.double().numpy()
