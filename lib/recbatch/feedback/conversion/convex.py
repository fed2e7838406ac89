"""The logistic conversion model solved to its optimum: full-batch L-BFGS across the trainers.

Why not the MLP's loop: a logistic regression's weighted loss is convex, so its optimum is one
model whatever the seed. Adam at a fixed step, stopped early on a validation slice of ~600 rows
(~7 conversions on a Taobao day), stopped wherever the slice's noise said: the same rows gave
oracle AUCs from 0.634 to 0.702 over five seeds (issue 31). Here every trainer keeps its shard in
memory (a feature row is a few dozen floats), the loss and its gradient are summed over all
trainers (one all-reduce per evaluation, so every rank takes the same L-BFGS step), and the
solver runs in float64 until the gradient vanishes. The start is fixed (zero weights, the bias at
the weighted base-rate logit), so with one head the result does not depend on the seed at all;
with bootstrap heads the seed draws their Poisson weights and nothing else.

The L2 penalty ``l2/2·|W|²`` (not on the bias) is chosen by a rule, not by hand: the value of
``conversion.l2_grid`` with the least K-fold cross-validated weighted loss over *all* the
method's rows (folds by a hash of ``example_id``; the method's own observed labels and weights,
never the true labels), then one fit on all the rows at that value. Every row serves as
validation once, so the choice reads ~85 conversions on a Taobao day instead of ~7.

FNW's weights depend on the model's own detached prediction, so its objective moves with the
model: it is solved as a fixed point (``fnw_rounds`` fits, each with the weights of the last).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from recbatch.config import ConversionSettings
from recbatch.feedback.conversion.model import bootstrap_weights, fnw_weights
from recbatch.io.tensors import iter_torch_batches
from recbatch.log import get_logger
from recbatch.train.distributed import all_sum, device_for_rank, gather_objects, rank_and_world

log = get_logger(__name__)

_FOLD_HASH = 0x9E3779B1
"""Multiplier of the fold hash (Knuth's golden-ratio constant): neighbouring ids, often written
in time order, land in different folds."""


@dataclass
class Shard:
    """This trainer's rows, in memory (float64): features, loss weights (``[rows, heads]``,
    bootstrap weights applied), and the cross-validation fold of each row."""

    features: torch.Tensor
    w_pos: torch.Tensor
    w_neg: torch.Tensor
    fold: torch.Tensor
    example_ids: list[int]

    @property
    def rows(self) -> int:
        return len(self.features)


def fold_of(example_id: torch.Tensor, folds: int) -> torch.Tensor:
    """A row's fold in ``0 .. folds - 1`` from its id alone (the same on every rank and run)."""
    return torch.remainder(example_id.to(torch.int64) * _FOLD_HASH, 2**31) % folds


def load_shard(paths: Sequence[str], settings: ConversionSettings, device: torch.device) -> Shard:
    """This rank's shard of every tensor set in ``paths``, with bootstrap weights per head drawn
    once (``settings.seed`` and the rank): the heads then solve fixed objectives."""
    rank, world = rank_and_world()
    parts: dict[str, list[torch.Tensor]] = {"features": [], "w_pos": [], "w_neg": [], "id": []}
    for path in paths:
        for batch in iter_torch_batches(
            path,
            batch_size=65536,
            shard=rank,
            shard_count=world,
            columns=["example_id", "features", "w_pos", "w_neg"],
        ):
            parts["features"].append(batch["features"])
            parts["w_pos"].append(batch["w_pos"])
            parts["w_neg"].append(batch["w_neg"])
            parts["id"].append(batch["example_id"])
    ids = torch.cat(parts["id"]) if parts["id"] else torch.zeros(0, dtype=torch.int64)
    width = parts["features"][0].shape[1] if parts["features"] else 0
    features = torch.cat(parts["features"]) if parts["features"] else torch.zeros(0, width)
    boot = bootstrap_weights(
        len(ids), settings.heads, torch.Generator().manual_seed(settings.seed * 7919 + rank)
    ).double()

    def weight(name: str) -> torch.Tensor:
        column = torch.cat(parts[name]) if parts[name] else torch.zeros(0)
        return (column.double().unsqueeze(-1) * boot).to(device)

    return Shard(
        features.double().to(device),
        weight("w_pos"),
        weight("w_neg"),
        fold_of(ids, settings.cv_folds).to(device),
        ids.tolist(),
    )


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def _loss_sum(
    model: nn.Module, x: torch.Tensor, w_pos: torch.Tensor, w_neg: torch.Tensor
) -> torch.Tensor:
    """``Σ w_pos·softplus(-f) + w_neg·softplus(f)`` over rows and heads (not the mean)."""
    logits = model(x)
    return (w_pos * nn.functional.softplus(-logits) + w_neg * nn.functional.softplus(logits)).sum()


WeightsFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""Row mask -> the (w_pos, w_neg) the objective uses for those rows."""


def solve(
    model: nn.Module,
    shard: Shard,
    mask: torch.Tensor,
    l2: float,
    settings: ConversionSettings,
    weights: WeightsFn,
) -> tuple[float, int]:
    """Minimise ``mean weighted loss over the masked rows of every rank + l2/2·|W|²`` by L-BFGS
    from the model's current parameters; returns (the mean data loss, L-BFGS iterations).

    The mean divides by the masked rows and heads of all ranks, so the penalty means the same at
    any size. Gradients are summed over ranks inside the closure: every rank sees the same loss
    and gradient and takes the same step (no DDP needed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    penalised = [p for name, p in model.named_parameters() if p.requires_grad and "weight" in name]
    x = shard.features[mask]
    w_pos, w_neg = weights(mask)
    heads = shard.w_pos.shape[1]
    count = _all_reduce(torch.tensor([float(mask.sum()) * heads], dtype=torch.float64))
    total = max(float(count.item()), 1.0)
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=settings.lbfgs_max_iterations,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    state = {"data_loss": math.nan}

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        local = _loss_sum(model, x, w_pos, w_neg)
        local.backward()
        flat = torch.cat([p.grad.reshape(-1) for p in params] + [local.detach().reshape(1)])
        flat = _all_reduce(flat) / total
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        data_loss = flat[-1]
        state["data_loss"] = float(data_loss)
        penalty = sum((p.detach() ** 2).sum() for p in penalised) * (l2 / 2)
        for p in penalised:
            p.grad.add_(p.detach(), alpha=l2)
        return data_loss + penalty

    optimizer.step(closure)
    iterations = int(optimizer.state[params[0]].get("n_iter", 0))
    return state["data_loss"], iterations


def held_out_loss(model: nn.Module, shard: Shard, mask: torch.Tensor, weights: WeightsFn) -> float:
    """Weighted loss summed over the masked rows of every rank (the folds' scores add up)."""
    with torch.no_grad():
        w_pos, w_neg = weights(mask)
        local = _loss_sum(model, shard.features[mask], w_pos, w_neg)
    return float(_all_reduce(local.reshape(1)).item())


def _stored_weights(shard: Shard) -> WeightsFn:
    return lambda mask: (shard.w_pos[mask], shard.w_neg[mask])


def _fnw_weights_of(model: nn.Module, shard: Shard) -> WeightsFn:
    """FNW's weights at the model's current prediction (fixed for one solve)."""
    with torch.no_grad():
        w_pos, w_neg = fnw_weights(model(shard.features), shard.w_pos, shard.w_neg)
    return lambda mask: (w_pos[mask], w_neg[mask])


def fit(
    model: nn.Module,
    shard: Shard,
    mask: torch.Tensor,
    l2: float,
    settings: ConversionSettings,
    fake_negative_weighting: bool,
) -> tuple[float, int, WeightsFn]:
    """``solve`` once, or FNW's fixed point (``fnw_rounds`` solves, each with the weights of the
    previous model); returns the data loss, the iterations in all, and the weights of the end."""
    if not fake_negative_weighting:
        loss, iterations = solve(model, shard, mask, l2, settings, _stored_weights(shard))
        return loss, iterations, _stored_weights(shard)
    iterations, loss = 0, math.nan
    for _ in range(settings.fnw_rounds):
        weights = _fnw_weights_of(model, shard)
        loss, used = solve(model, shard, mask, l2, settings, weights)
        iterations += used
    return loss, iterations, _fnw_weights_of(model, shard)


def start_model(n_features: int, heads: int, base_logit: float) -> nn.Linear:
    """The fixed start: zero weights, every head's bias at the weighted base-rate logit."""
    model = nn.Linear(n_features, heads).double()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.fill_(base_logit)
    return model


def base_logit(shard: Shard) -> float:
    """``log(Σ w_pos / Σ w_neg)`` over all ranks: the best constant prediction."""
    pos, neg = all_sum([float(shard.w_pos.sum()), float(shard.w_neg.sum())], shard.w_pos.device)
    return math.log(max(pos, 1e-12) / max(neg, 1e-12))


def choose_l2(
    shard: Shard, n_features: int, settings: ConversionSettings, fake_negative_weighting: bool
) -> tuple[float, dict[float, float]]:
    """The ``l2_grid`` value with the least K-fold cross-validated weighted loss (a tie goes to
    the larger penalty), and the loss of every value (per row and head)."""
    grid = sorted(settings.l2_grid)
    if len(grid) == 1:
        return grid[0], {}
    logit = base_logit(shard)
    rows = all_sum([float(shard.rows * shard.w_pos.shape[1])], shard.w_pos.device)[0]
    scores: dict[float, float] = {}
    for l2 in grid:
        held = 0.0
        for fold in range(settings.cv_folds):
            model = start_model(n_features, shard.w_pos.shape[1], logit).to(shard.features.device)
            _, _, weights = fit(
                model, shard, shard.fold != fold, l2, settings, fake_negative_weighting
            )
            held += held_out_loss(model, shard, shard.fold == fold, weights)
        scores[l2] = held / max(rows, 1.0)
    best = min(scores.values())
    chosen = max(l2 for l2, score in scores.items() if score <= best * (1 + 1e-9))
    return chosen, scores


def train_logistic(
    paths: Sequence[str],
    n_features: int,
    settings: ConversionSettings,
    record_ids: bool = False,
    fake_negative_weighting: bool = False,
) -> dict[str, Any]:
    """The logistic model on all the rows of ``paths`` (training set and validation slice
    alike: the penalty's cross-validation needs no slice of its own), in the result format of
    ``training.train_conversion_model``; one history entry for the final fit."""
    rank, world = rank_and_world()
    device = device_for_rank()
    start = time.monotonic()
    shard = load_shard(paths, settings, device)
    l2, scores = choose_l2(shard, n_features, settings, fake_negative_weighting)
    model = start_model(n_features, shard.w_pos.shape[1], base_logit(shard)).to(device)
    everything = torch.ones(shard.rows, dtype=torch.bool, device=device)
    loss, iterations, _ = fit(model, shard, everything, l2, settings, fake_negative_weighting)
    seconds = time.monotonic() - start
    rows = int(all_sum([float(shard.rows)], device)[0])
    if rank == 0:
        log.info(
            "logistic model solved by L-BFGS on %d rows (%d process(es)): l2 %.0e by %d-fold "
            "cross-validation (%s), %d iterations, weighted loss %.5f, %.1fs",
            rows,
            world,
            l2,
            settings.cv_folds,
            ", ".join(f"{k:.0e}: {v:.5f}" for k, v in scores.items()) or "one value",
            iterations,
            loss,
            seconds,
        )
    state = {
        "net.0.weight": model.weight.detach().float().cpu().clone(),
        "net.0.bias": model.bias.detach().float().cpu().clone(),
    }
    return {
        "state_dict": state,
        "epochs": [
            {
                "epoch": 1,
                "loss": loss,
                "val_loss": scores.get(l2),
                "learning_rate": None,
                "l2": l2,
                "iterations": iterations,
                "rows": rows,
                "seconds": seconds,
                "rows_per_s": rows / seconds if seconds > 0 else float("nan"),
            }
        ],
        "best_epoch": 1,
        "steps": iterations,
        "l2": l2,
        "cv_loss": scores,
        "rows_per_rank": gather_objects(shard.rows),
        "ids_per_rank": gather_objects(shard.example_ids) if record_ids else None,
    }
