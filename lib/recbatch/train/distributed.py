"""The one torch-worker path of recbatch: ``run_distributed`` on Spark's ``TorchDistributor``.

``run_distributed(train_fn, *args, num_processes=N, spark=spark)`` starts ``N`` torch processes
with ``torchrun`` and returns what ``train_fn`` returned on rank 0:

* **local master** (``local[...]``): ``TorchDistributor(local_mode=True)`` runs ``torchrun
  --standalone --nproc_per_node=N`` on the driver machine;
* **cluster**: ``local_mode=False`` runs one barrier Spark task per process, each a one-process
  ``torchrun`` node rendezvousing at task 0 (``N`` task slots must be free at once).

Inside each worker the process group is initialised from the environment ``torchrun`` sets
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``): ``gloo`` on CPU,
``nccl`` on CUDA. ``train_fn`` then finds ``torch.distributed`` ready (``rank_and_world()``,
``device_for_rank()``, ``wrap_ddp(model)``) and must be importable by the workers: a module-level
function of ``recbatch`` (the distributor pickles it by reference; the workers import it).

Two details of ``TorchDistributor`` (pyspark 4.0.1) this module takes care of:

* in local mode every rank's return value is pickled to the *same* output file (the last writer
  wins, and two writers at once could mix their bytes). Here only rank 0 writes it: other ranks
  leave the process with ``os._exit(0)`` once the process group is torn down, so the result is
  always rank 0's. On a cluster each rank is its own barrier task with its own output file, and
  a task whose file is missing fails ("TorchDistributor failed during training"), failing the
  whole barrier stage: there the other ranks return ``None`` (only task 0's output is
  collected) instead of exiting;
* ``use_gpu=True`` in local mode needs ``spark.driver.resource.gpu.amount`` (GPU resources of the
  driver); without it the distributor refuses to start. Then the distributor is run with
  ``use_gpu=False`` (it just does not assign ``CUDA_VISIBLE_DEVICES``) and the workers still pick
  ``cuda:LOCAL_RANK`` themselves when CUDA is visible.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pyspark.sql import SparkSession

import recbatch
from recbatch.log import configure_logging, get_logger

log = get_logger(__name__)

LOG_LEVEL_ENV = "RECBATCH_LOG_LEVEL"


def is_local_master(master: str) -> bool:
    """True for ``local``, ``local[4]``, ``local[*]``, ``local[2,3]`` (one machine, no cluster)."""
    return master == "local" or master.startswith("local[")


def rank_and_world() -> tuple[int, int]:
    """This process's ``(rank, world_size)``: from the process group when there is one, else
    from the ``torchrun`` environment, else ``(0, 1)`` (a plain single process)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def device_for_rank() -> torch.device:
    """``cuda:LOCAL_RANK`` (modulo the visible GPUs) when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device``, wrapped in DistributedDataParallel when a process group is up."""
    model = model.to(device)
    if not (dist.is_available() and dist.is_initialized()):
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def join_uneven(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """DDP's join context (ranks may have different numbers of batches), or nothing."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.join()
    return contextlib.nullcontext()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.module
    return model


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """``values`` summed over all ranks (unchanged in a single process)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (``[value]`` in a single process)."""
    if not dist.is_initialized():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def _init_worker() -> torch.device:
    configure_logging(os.environ.get(LOG_LEVEL_ENV, "INFO"))
    device = device_for_rank()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device.type == "cpu":
        # N processes on one machine share its cores: no oversubscription.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    else:
        torch.cuda.set_device(device)
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
        rank, world = rank_and_world()
        log.debug("rank %d of %d up (%s, %s)", rank, world, backend, device)
    return device


def _worker(
    train_fn: Callable[..., Any], args: tuple, kwargs: dict, shared_output: bool = True
) -> Any:
    """What each torch process runs: set up the process group, train, tear down.

    Returns ``train_fn``'s result on rank 0. With ``shared_output`` (local mode: all ranks write
    one output file) the other ranks exit here; without it (a cluster: one output file per
    barrier task, each must be written) they return ``None`` (see the module doc)."""
    _init_worker()
    rank, _ = rank_and_world()
    try:
        result = train_fn(*args, **kwargs)
        if dist.is_initialized():
            dist.barrier()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        return result
    if not shared_output:
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _library_root() -> str:
    """The folder (or zip) ``recbatch`` is imported from, for the workers' ``PYTHONPATH``."""
    return str(Path(recbatch.__file__).resolve().parent.parent)


def run_distributed(
    train_fn: Callable[..., Any],
    *args: Any,
    num_processes: int,
    spark: SparkSession,
    **kwargs: Any,
) -> Any:
    """Run ``train_fn(*args, **kwargs)`` in ``num_processes`` torch DDP processes; return rank 0's
    result. ``train_fn`` and its arguments are pickled: keep them small (paths, settings), and
    let each rank read its own shard of the data (``recbatch.io.tensors``)."""
    from pyspark.ml.torch.distributor import TorchDistributor

    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    master = spark.sparkContext.master
    local = is_local_master(master)
    use_gpu = torch.cuda.is_available()
    if use_gpu and local and "gpu" not in spark.sparkContext.resources:
        log.warning(
            "CUDA is available but spark.driver.resource.gpu.amount is not set: the distributor "
            "does not assign GPUs; the workers use cuda:LOCAL_RANK themselves"
        )
        use_gpu = False
    log.info(
        "torch training: %d process(es), %s, %s",
        num_processes,
        "local mode" if local else f"barrier tasks on {master}",
        "GPU" if torch.cuda.is_available() else "CPU (gloo)",
    )
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", LOG_LEVEL_ENV)}
    try:
        if local:  # the torchrun processes inherit the driver's environment
            paths = [_library_root(), *filter(None, [saved["PYTHONPATH"]])]
            os.environ["PYTHONPATH"] = os.pathsep.join(paths)
            level = get_logger("recbatch").getEffectiveLevel()
            os.environ[LOG_LEVEL_ENV] = logging.getLevelName(level or logging.INFO)
        distributor = TorchDistributor(
            num_processes=num_processes, local_mode=local, use_gpu=use_gpu
        )
        return distributor.run(_worker, train_fn, args, kwargs, local)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
