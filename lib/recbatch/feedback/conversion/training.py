"""Training the conversion model: torch DDP workers on Petastorm shards, to convergence.

Without hidden layers the model is a logistic regression, solved to its optimum (``convex.py``).
With them it is wide and deep (``model.ConversionMLP``): first its linear part is solved the same
way on the training rows and frozen, then the hidden layers, whose output layer starts at zero,
are trained with Adam as a correction on top of it. So the seed moves only the non-convex part.

Why a budget rule and not a fixed epoch count: the same settings must serve a 6k-row Taobao day
and a 1M-row generated month. So training runs up to ``conversion.epochs`` passes, at least
``min_steps`` optimizer steps, and stops early once the loss on a **validation slice of the
training window** (``validation_fraction`` of the rows, by a hash of ``example_id``) has not
improved for ``patience`` epochs; the learning rate halves whenever the validation loss stalls
(``ReduceLROnPlateau``), and the weights returned are those of the best validation epoch, epoch
0 (the logistic part alone) included. A slice with less than ``min_validation_positives`` of
positive weight cannot tell a correction from noise (a Taobao day's 10% slice holds ~7
conversions; stopping on it gave AUCs 0.07 apart between seeds, issue 31): then the hidden layers
are not trained and the model is its logistic part, with a warning; unless the model has
dropout, which MC dropout samples at scoring time: then they train for the step budget alone.

The validation loss is the *method's own* weighted loss on its validation rows (observed labels
and weights at the cutoff, as in training): early stopping must not read true labels, or every
method would peek at the oracle. Every rank evaluates its shard of the slice and the sums are
all-reduced, so all ranks take the same stop decision in the same epoch (DDP needs that).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from recbatch.config import ConversionSettings
from recbatch.feedback.conversion.convex import (
    base_logit,
    choose_l2,
    fit,
    load_shard,
    start_model,
    train_logistic,
)
from recbatch.feedback.conversion.model import (
    bootstrap_weights,
    build_model,
    fnw_weights,
    weighted_bce,
)
from recbatch.io.tensors import iter_torch_batches
from recbatch.log import get_logger
from recbatch.train.distributed import (
    all_sum,
    device_for_rank,
    gather_objects,
    join_uneven,
    rank_and_world,
    run_distributed,
    wrap_ddp,
)

log = get_logger(__name__)


def epochs_for_budget(rows: int, settings: ConversionSettings, world: int) -> int:
    """Passes needed for ``min_steps`` optimizer steps over ``rows`` training rows in ``world``
    ranks (each rank steps once per local batch), capped by ``settings.epochs``."""
    steps_per_epoch = max(1, math.ceil(rows / (world * settings.batch_size)))
    return min(settings.epochs, max(1, math.ceil(settings.min_steps / steps_per_epoch)))


def weight_sums(path: str, device: torch.device) -> tuple[float, float]:
    """``(Σ w_pos, Σ w_neg)`` over every rank's shard of ``path``: how much positive signal a
    validation slice holds."""
    rank, world = rank_and_world()
    pos, neg = 0.0, 0.0
    for batch in iter_torch_batches(
        path, batch_size=65536, shard=rank, shard_count=world, columns=["w_pos", "w_neg"]
    ):
        pos += float(batch["w_pos"].sum())
        neg += float(batch["w_neg"].sum())
    pos, neg = all_sum([pos, neg], device)
    return pos, neg


@dataclass(frozen=True)
class LinearPart:
    """The wide-and-deep model's solved linear part and its epoch-0 history entry. With one
    head it does not depend on the seed, so the model seeds of one job share one solve."""

    weight: torch.Tensor
    bias: torch.Tensor
    history: dict[str, Any]


def solve_linear_part(
    train_path: str,
    n_features: int,
    settings: ConversionSettings,
    device: torch.device,
    fake_negative_weighting: bool,
) -> LinearPart:
    """Solve the linear part on the training rows (``convex.py``: L-BFGS, L2 by
    cross-validation)."""
    start = time.monotonic()
    shard = load_shard([train_path], settings, device)
    l2, _ = choose_l2(shard, n_features, settings, fake_negative_weighting)
    linear = start_model(n_features, settings.heads, base_logit(shard)).to(device)
    everything = torch.ones(shard.rows, dtype=torch.bool, device=device)
    loss, _, _ = fit(linear, shard, everything, l2, settings, fake_negative_weighting)
    seconds = time.monotonic() - start
    rows = int(all_sum([float(shard.rows)], device)[0])
    history = {
        "epoch": 0,
        "loss": loss,
        "val_loss": None,
        "learning_rate": None,
        "l2": l2,
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds if seconds > 0 else float("nan"),
    }
    return LinearPart(linear.weight.detach().float(), linear.bias.detach().float(), history)


def install_linear_part(core: nn.Module, part: LinearPart) -> dict[str, Any]:
    """Copy the solved linear part into ``core``, freeze it, and zero the hidden layers' output
    layer, so the model starts at the logistic optimum and the seed moves only the hidden
    layers. Returns (a copy of) the epoch-0 history entry."""
    with torch.no_grad():
        core.linear.weight.copy_(part.weight)
        core.linear.bias.copy_(part.bias)
        core.net[-1].weight.zero_()
        core.net[-1].bias.zero_()
    core.linear.requires_grad_(False)
    return dict(part.history)


def seed_free_solve(settings: ConversionSettings) -> bool:
    """Whether the convex solve (the logistic model, or the MLP's linear part) is the same for
    every seed: with one head, yes (``convex.py``); bootstrap heads draw their weights by seed."""
    return settings.heads == 1


def _loss_terms(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    boot: torch.Tensor | None,
    fake_negative_weighting: bool,
) -> torch.Tensor:
    """The batch's weighted BCE (bootstrap weights ``boot`` per head, or none)."""
    x = batch["features"].to(device)
    logits = model(x)
    w_pos = batch["w_pos"].to(device).unsqueeze(-1)
    w_neg = batch["w_neg"].to(device).unsqueeze(-1)
    if boot is not None:
        w_pos, w_neg = w_pos * boot, w_neg * boot
    if fake_negative_weighting:
        w_pos, w_neg = fnw_weights(logits, w_pos, w_neg)
    return weighted_bce(logits, w_pos, w_neg)


def validation_loss(
    model: nn.Module,
    val_path: str,
    settings: ConversionSettings,
    device: torch.device,
    fake_negative_weighting: bool,
) -> float:
    """Mean weighted loss over all ranks' shards of the validation set (same value on every
    rank: the sums are all-reduced)."""
    rank, world = rank_and_world()
    model.eval()
    loss_sum, rows = 0.0, 0
    with torch.no_grad():
        for batch in iter_torch_batches(
            val_path,
            batch_size=4096,
            shard=rank,
            shard_count=world,
            columns=["features", "w_pos", "w_neg"],
        ):
            n = len(batch["features"])
            loss_sum += _loss_terms(model, batch, device, None, fake_negative_weighting).item() * n
            rows += n
    total, count = all_sum([loss_sum, float(rows)], device)
    return total / max(count, 1.0)


def train_conversion_model(
    train_path: str,
    n_features: int,
    settings: ConversionSettings,
    record_ids: bool = False,
    fake_negative_weighting: bool = False,
    val_path: str | None = None,
    train_rows: int | None = None,
    linear_part: LinearPart | None = None,
) -> dict[str, Any]:
    """Train the model on this rank's shard of ``train_path`` (run it with ``run_distributed``).

    With ``fake_negative_weighting`` the stored weights are multiplied by ``fnw_weights``. With
    ``val_path`` training runs up to ``settings.epochs``, stops early and returns the best
    validation epoch's weights (module docstring); ``train_rows`` (all ranks) sets the epochs
    ``min_steps`` needs: the least run with a slice, all that run without one.

    Returns (rank 0's) ``state_dict`` (CPU tensors), ``epochs`` (per epoch: mean weighted loss
    over all rows, validation loss or None, learning rate, rows, seconds, rows/s; with hidden
    layers the first entry is epoch 0, the linear part's solve, with its ``l2``),
    ``best_epoch``, ``steps``, ``rows_per_rank`` (rows each rank read per epoch) and, with
    ``record_ids``, ``ids_per_rank``: the ``example_id`` each rank read in the first epoch.
    ``linear_part``: the linear part already solved on these rows (another seed's), else solved.
    """
    if not settings.hidden_sizes:  # convex: solved to its optimum instead (convex.py)
        paths = [train_path, *([val_path] if val_path else [])]
        return train_logistic(paths, n_features, settings, record_ids, fake_negative_weighting)
    rank, world = rank_and_world()
    device = device_for_rank()
    torch.manual_seed(settings.seed)
    core = build_model(n_features, settings).to(device)
    if linear_part is None:
        linear_part = solve_linear_part(
            train_path, n_features, settings, device, fake_negative_weighting
        )
    linear = install_linear_part(core, linear_part)
    model = wrap_ddp(core, device)
    resample = torch.Generator().manual_seed(settings.seed * 7919 + rank)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=settings.learning_rate)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=max(settings.patience // 2, 1)
    )
    min_epochs = epochs_for_budget(train_rows, settings, world) if train_rows else settings.epochs
    planned = settings.epochs if val_path else min_epochs  # without a slice: the budget alone
    columns = ["features", "w_pos", "w_neg", *(["example_id"] if record_ids else [])]
    history: list[dict[str, Any]] = [linear]
    ids: list[int] = []
    own_rows, steps = 0, 0
    best_loss, best_epoch, best_state, stale = math.inf, 0, None, 0
    judged = val_path is not None
    if val_path:  # the logistic optimum is the first candidate: hidden layers must beat it
        best_loss = linear["val_loss"] = validation_loss(
            core, val_path, settings, device, fake_negative_weighting
        )
        best_state = copy.deepcopy(core.state_dict())
        positives, _ = weight_sums(val_path, device)
        if positives < settings.min_validation_positives:
            # Too thin to judge. With dropout (what MC dropout samples) the hidden layers must
            # exist, so they train for the step budget alone; otherwise they are left out.
            judged = False
            planned = min_epochs if settings.dropout > 0 else 0
            best_state = None if settings.dropout > 0 else best_state
            if rank == 0:
                log.warning(
                    "the validation slice holds %.1f positive weight (< conversion."
                    "min_validation_positives %.0f): too little to tell whether the hidden "
                    "layers help, so %s",
                    positives,
                    settings.min_validation_positives,
                    "they train for the step budget alone (dropout > 0: MC dropout samples them)"
                    if settings.dropout > 0
                    else "the model is its logistic part",
                )
    for epoch in range(planned):
        start = time.monotonic()
        loss_sum, rows = 0.0, 0
        batches = iter_torch_batches(
            train_path,
            batch_size=settings.batch_size,
            shard=rank,
            shard_count=world,
            columns=columns,
            shuffle=True,
            seed=settings.seed * 1000 + epoch + 1,
        )
        model.train()
        with join_uneven(model):
            for batch in batches:
                boot = bootstrap_weights(len(batch["features"]), settings.heads, resample)
                loss = _loss_terms(model, batch, device, boot.to(device), fake_negative_weighting)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(batch["features"])
                rows += len(batch["features"])
                steps += 1
                if record_ids and epoch == 0:
                    ids.extend(batch["example_id"].tolist())
        total_loss, total_rows = all_sum([loss_sum, float(rows)], device)
        val = (
            validation_loss(_core(model), val_path, settings, device, fake_negative_weighting)
            if val_path
            else None
        )
        seconds = time.monotonic() - start
        own_rows = rows
        stats = {
            "epoch": epoch + 1,
            "loss": total_loss / max(total_rows, 1.0),
            "val_loss": val,
            "learning_rate": optimizer.param_groups[0]["lr"],
            "rows": int(total_rows),
            "seconds": seconds,
            "rows_per_s": total_rows / seconds if seconds > 0 else float("nan"),
        }
        history.append(stats)
        if rank == 0:
            log.info(
                "epoch %d/%d: weighted loss %.5f, validation %s, lr %.2g, %d rows in %.1fs "
                "(%.0f rows/s, %d process(es))",
                epoch + 1,
                planned,
                stats["loss"],
                "-" if val is None else f"{val:.5f}",
                stats["learning_rate"],
                stats["rows"],
                seconds,
                stats["rows_per_s"],
                world,
            )
        if val is None or not judged:
            continue
        plateau.step(val)
        if val < best_loss - 1e-6:
            best_loss, best_epoch, stale = val, epoch + 1, 0
            best_state = copy.deepcopy(_core(model).state_dict())
        else:
            stale += 1
        if stale >= settings.patience and epoch + 1 >= min_epochs:
            if rank == 0:
                log.info(
                    "early stop after epoch %d: validation loss best at epoch %d (%.5f), "
                    "%d optimizer steps per rank",
                    epoch + 1,
                    best_epoch,
                    best_loss,
                    steps,
                )
            break
    rows_per_rank = gather_objects(own_rows)
    ids_per_rank = gather_objects(ids) if record_ids else None
    state = best_state if best_state is not None else _core(model).state_dict()
    return {
        "state_dict": {k: v.detach().cpu().clone() for k, v in state.items()},
        "epochs": history,
        "best_epoch": best_epoch if judged else len(history) - 1,
        "steps": steps,
        "rows_per_rank": rows_per_rank,
        "ids_per_rank": ids_per_rank,
    }


def _core(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@dataclass(frozen=True)
class TrainingJob:
    """One tensor set to train on: a method's training rows, its validation slice, its loss."""

    train_path: str
    val_path: str | None = None
    train_rows: int | None = None
    fake_negative_weighting: bool = False


def train_conversion_jobs(
    jobs: Sequence[TrainingJob], n_features: int, settings: ConversionSettings, seeds: Sequence[int]
) -> list[list[dict[str, Any]]]:
    """``train_conversion_model`` for every job and seed, one after the other in the same
    process group, so the DDP start-up (~15 s on 2 cores) is paid once for the whole comparison
    and not once per method and seed. Only the seed changes between a job's models, so what
    does not depend on it is solved once per job (``seed_free_solve``): the logistic model
    itself, or the MLP's linear part. Each result has ``seconds``: its own training time."""
    results = []
    for job in jobs:
        per_seed: list[dict[str, Any]] = []
        shared: LinearPart | None = None
        for seed in seeds:
            start = time.monotonic()
            seeded = settings.model_copy(update={"seed": seed})
            if per_seed and not settings.hidden_sizes and seed_free_solve(settings):
                result = copy.deepcopy(per_seed[0])  # the optimum, whatever the seed
            else:
                if settings.hidden_sizes and seed_free_solve(settings) and shared is None:
                    shared = solve_linear_part(
                        job.train_path,
                        n_features,
                        seeded,
                        device_for_rank(),
                        job.fake_negative_weighting,
                    )
                result = train_conversion_model(
                    job.train_path,
                    n_features,
                    seeded,
                    fake_negative_weighting=job.fake_negative_weighting,
                    val_path=job.val_path,
                    train_rows=job.train_rows,
                    linear_part=shared,
                )
            result["seconds"] = time.monotonic() - start
            per_seed.append(result)
        results.append(per_seed)
    return results


def train_jobs(
    spark,
    jobs: Sequence[TrainingJob],
    n_features: int,
    settings: ConversionSettings,
    seeds: Sequence[int],
) -> list[list[dict[str, Any]]]:
    """``train_conversion_jobs`` in ``settings.num_processes`` DDP processes: per job (in
    order), one result per seed (in ``seeds`` order)."""
    return run_distributed(
        train_conversion_jobs,
        list(jobs),
        n_features,
        settings,
        list(seeds),
        num_processes=settings.num_processes,
        spark=spark,
    )


def train(
    spark,
    train_path: str,
    n_features: int,
    settings: ConversionSettings,
    fake_negative_weighting: bool = False,
    val_path: str | None = None,
    train_rows: int | None = None,
) -> dict[str, Any]:
    """One model (``settings.seed``) in ``settings.num_processes`` DDP processes."""
    job = TrainingJob(train_path, val_path, train_rows, fake_negative_weighting)
    ((result,),) = train_jobs(spark, [job], n_features, settings, [settings.seed])
    return result
