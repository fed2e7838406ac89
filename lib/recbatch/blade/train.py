"""BLADE training in torch DDP processes (``run_distributed``), resumable from checkpoints.

``train_blade(job)`` is what every rank runs: it reads the samples whole and its own shard of the
training edges (``recbatch.blade.data``), trains with the asymmetric loss
(``recbatch.blade.loss``), logs loss and rows/s per epoch, and after every epoch rank 0 writes a
checkpoint (model, optimizer, epoch, history) atomically. A run that is killed and
started again with the same ``TrainJob.fingerprint`` resumes after the last finished epoch; a
checkpoint of another fingerprint (other data or settings) is ignored, so a changed config never
resumes stale weights. At the end rank 0 writes the source and target embedding of every node as
Parquet (``embeddings_path``) for Spark to read: the vectors never travel through the driver.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from recbatch.blade.data import (
    EdgeBatch,
    edge_batches,
    edge_dataset,
    load_graph_samples,
    load_model_rows,
    load_node_attributes,
)
from recbatch.blade.loss import LossTerms, link_loss, pair_logits
from recbatch.blade.model import BladeModel, GraphSamples
from recbatch.blade.settings import BladeSettings
from recbatch.log import get_logger
from recbatch.train.distributed import (
    all_sum,
    device_for_rank,
    gather_objects,
    join_uneven,
    rank_and_world,
    unwrap,
    wrap_ddp,
)

log = get_logger(__name__)

CHECKPOINT_FILE = "last.pt"


@dataclass(frozen=True)
class TrainJob:
    """Everything a rank needs (small and picklable: paths and settings, never data)."""

    samples_path: str
    edges_path: str
    checkpoint_dir: str
    embeddings_path: str
    num_nodes: int
    hops: int
    settings: BladeSettings
    fingerprint: str
    members: int = 0
    """Monte-Carlo dropout draws of every node's (s, t) to write after training (0: none)."""
    members_path: str | None = None
    members_seed: int = 0
    attributes_path: str | None = None
    """The node-attribute Parquet (``blade.node_inputs`` with attributes), else None."""
    stop_after_epochs: int | None = field(default=None, compare=False)
    """Tests: stop (as if killed) after this many epochs of this run, checkpoint written."""


def lookups_per_step(settings: BladeSettings, samples: GraphSamples) -> int:
    """The most ID rows one step can read: each node of its batch (sources, targets,
    negatives), and every sample slot of each, both roles."""
    nodes = settings.batch_size * (2 + settings.negatives)
    return nodes * (1 + samples.out.index.shape[1] + samples.into.index.shape[1])


def sparse_id_rows(settings: BladeSettings, device: torch.device, samples: GraphSamples) -> bool:
    """Whether the ID rows train with sparse gradients (``blade.row_updates``). ``auto``: on
    CPU, where the table has more rows than a step can read (``lookups_per_step``): below that,
    a step's sparse gradient is as large as the table and dense Adam is cheaper; above, dense
    Adam's cost follows the catalogue and the sparse one's the batch. On a GPU, dense."""
    if settings.row_updates == "auto":
        return device.type == "cpu" and samples.num_nodes > lookups_per_step(settings, samples)
    return settings.row_updates == "sparse"


class RowwiseAdam:
    """Adam for the dense parameters, and for the per-node ID rows either the same Adam or, with
    sparse ID tables, lazy Adam (``torch.optim.SparseAdam``): only the rows a step touched move
    and keep moments.

    Why: an ID table has a row per product, and a step touches a few thousand. Dense Adam
    updates every row every step and DDP all-reduces the whole gradient, so the step costs the
    catalogue: 16 ms of Adam at 10k products, 3 s at 1M (``bench/blade_scale.py``). Sparse
    gradients make it the batch's, and gloo all-reduces them as they are. ``weight_decay``
    applies to the dense parameters only (SparseAdam has none)."""

    def __init__(self, model: nn.Module, learning_rate: float, weight_decay: float) -> None:
        rows = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
        sparse = {id(p) for p in rows}
        dense = [p for p in model.parameters() if id(p) not in sparse]
        self.dense = torch.optim.Adam(dense, lr=learning_rate, weight_decay=weight_decay)
        self.rows = torch.optim.SparseAdam(rows, lr=learning_rate) if rows else None

    @property
    def mode(self) -> str:
        """``sparse`` or ``dense``: what a checkpoint's optimizer state holds."""
        return "dense" if self.rows is None else "sparse"

    def zero_grad(self) -> None:
        self.dense.zero_grad(set_to_none=True)
        if self.rows is not None:
            self.rows.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.dense.step()
        if self.rows is not None:
            self.rows.step()

    def state_dict(self) -> dict[str, Any]:
        rows = None if self.rows is None else self.rows.state_dict()
        return {"mode": self.mode, "dense": self.dense.state_dict(), "rows": rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dense.load_state_dict(state["dense"])
        if self.rows is not None:
            self.rows.load_state_dict(state["rows"])


def build_model(job: TrainJob, sparse_ids: bool = False) -> BladeModel:
    s = job.settings
    if s.embedding == "composite":
        raise ValueError(
            "embedding=composite is two GNNs (recbatch.blade.compose.CHANNELS): train each "
            "channel with its own settings, then compose them"
        )
    return BladeModel(
        job.num_nodes,
        dim=s.dim,
        layers=s.layers,
        hops=job.hops,
        embedding=s.embedding,
        shared_fraction=s.shared_fraction,
        dropout=s.dropout,
        combine=s.combine,
        node_inputs=s.node_inputs,
        attribute_buckets=s.attribute_buckets if "attributes" in s.node_inputs else 0,
        sparse_ids=sparse_ids,
    )


def graph_samples(job: TrainJob, samples_path: str, num_nodes: int) -> GraphSamples:
    """The samples of a graph of ``num_nodes`` nodes, with the job's node attributes when its
    model reads them (for a newer graph, ``job.attributes_path`` must be that graph's)."""
    samples = load_graph_samples(samples_path, num_nodes, job.hops)
    if "attributes" not in job.settings.node_inputs:
        return samples
    if job.attributes_path is None:
        raise ValueError("blade.node_inputs reads attributes but the job has no attributes_path")
    return replace(samples, attributes=load_node_attributes(job.attributes_path, num_nodes))


def batch_loss(
    model: nn.Module,
    samples: GraphSamples,
    batch: EdgeBatch,
    negatives: torch.Tensor,
    settings: BladeSettings,
) -> LossTerms:
    """The loss of one batch: each distinct node is encoded once, whatever its part in it."""
    b = len(batch)
    nodes, inverse = torch.unique(
        torch.cat([batch.src, batch.dst, negatives.flatten()]), return_inverse=True
    )
    sources, targets = model(samples, nodes)
    u, v = inverse[:b], inverse[b : 2 * b]
    negative = inverse[2 * b :].view(b, -1)
    weight = (
        batch.weight if settings.positive_weight == "edge_weight" else torch.ones_like(batch.weight)
    )
    return link_loss(
        positive=pair_logits(sources[u], targets[v]),
        positive_weight=weight,
        negative=pair_logits(sources[u].unsqueeze(1), targets[negative]),
        reverse=pair_logits(sources[v], targets[u]),
        reverse_mask=batch.one_way,
        reverse_weight=settings.reverse_weight,
    )


def epoch_generator(seed: int, rank: int, epoch: int) -> torch.Generator:
    """The negatives' generator of one rank and epoch: a resumed run draws what the killed one
    would have drawn, with no generator state to save."""
    return torch.Generator().manual_seed(seed * 7919 + rank * 104729 + epoch)


def _checkpoint_path(job: TrainJob) -> Path:
    return Path(job.checkpoint_dir) / CHECKPOINT_FILE


def load_checkpoint(job: TrainJob) -> dict[str, Any] | None:
    """The last checkpoint of this job's fingerprint, or None (none yet, or another job's)."""
    path = _checkpoint_path(job)
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != job.fingerprint:
        log.info("checkpoint %s belongs to another config or graph: starting afresh", path)
        return None
    return state


def save_checkpoint(
    job: TrainJob,
    model: nn.Module,
    optimizer: RowwiseAdam,
    epoch: int,
    history: list[dict],
) -> None:
    """Write the checkpoint next to its final place, then rename it (a kill never leaves half)."""
    path = _checkpoint_path(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(
        {
            "fingerprint": job.fingerprint,
            "epoch": epoch,
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
        },
        partial,
    )
    os.replace(partial, path)


def train_blade(job: TrainJob) -> dict[str, Any]:
    """Train on this rank's edge shard; rank 0 writes the embeddings. Returns (rank 0's) history:
    per epoch the loss terms, rows, seconds and rows/s, plus the epoch training resumed from."""
    rank, world = rank_and_world()
    device = device_for_rank()
    s = job.settings
    torch.manual_seed(s.seed)
    samples = graph_samples(job, job.samples_path, job.num_nodes).to(device)
    core = build_model(job, sparse_id_rows(s, device, samples))
    optimizer = RowwiseAdam(core, s.learning_rate, s.weight_decay)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    checkpoint = load_checkpoint(job)
    if checkpoint is not None and checkpoint["optimizer"].get("mode") != optimizer.mode:
        if rank == 0:
            log.info("the checkpoint's row updates are not %s: starting afresh", optimizer.mode)
        checkpoint = None
    if checkpoint is not None:
        core.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch, history = int(checkpoint["epoch"]), list(checkpoint["history"])
        if rank == 0:
            log.info("resuming BLADE training after epoch %d of %d", start_epoch, s.epochs)
    model = wrap_ddp(core, device)
    dataset = edge_dataset(
        job.edges_path, batch_size=s.batch_size, shard=rank, shard_count=world, seed=s.seed
    )
    end_epoch = s.epochs
    if job.stop_after_epochs is not None:
        end_epoch = min(s.epochs, start_epoch + job.stop_after_epochs)
    for epoch in range(start_epoch, end_epoch):
        generator = epoch_generator(s.seed, rank, epoch)
        torch.manual_seed(generator.initial_seed())  # dropout masks: reproducible on resume
        history.append(
            _train_epoch(model, optimizer, samples, dataset, epoch, generator, job, device)
        )
        if rank == 0:
            save_checkpoint(job, model, optimizer, epoch + 1, history)
    finished = len(history) >= s.epochs
    if rank == 0 and finished:
        write_embeddings(unwrap(model), samples, job.embeddings_path)
        if job.members:
            write_members(unwrap(model), samples, job)
    rows_per_rank = gather_objects(history[-1]["own_rows"] if history else 0)
    return {
        "epochs": history,
        "resumed_from_epoch": start_epoch,
        "finished": finished,
        "rows_per_rank": rows_per_rank,
        "world": world,
    }


@dataclass(frozen=True)
class NewerGraph:
    """A graph to embed with a finished model trained on another (``embed_graph``): its
    samples and node inputs, and where its vectors go."""

    samples_path: str
    num_nodes: int
    embeddings_path: str
    attributes_path: str | None = None
    """Its node attributes, when the model reads them."""
    model_rows_path: str | None = None
    """Each node's ID row in the model (``recbatch.blade.data.MODEL_ROW_COLUMNS``), when the
    model has ID rows and the graphs' node indices differ; None: the index is the row."""
    members_path: str | None = None
    """Where its MC-dropout draws go, when the model's job writes draws."""


def embed_graph(job: TrainJob, graph: NewerGraph) -> int:
    """The finished model of ``job`` applied to another graph (e.g. a newer run date's, with
    products added since training), its vectors written as ``write_embeddings`` writes them,
    and its ``job.members`` MC-dropout draws where ``graph.members_path`` is given. Nodes the
    model never saw need node inputs that serve them (``blade.node_inputs`` with degrees or
    attributes). Returns the nodes written."""
    checkpoint = load_checkpoint(job)
    if checkpoint is None or int(checkpoint["epoch"]) < job.settings.epochs:
        raise ValueError(
            f"no finished model in {job.checkpoint_dir} for fingerprint {job.fingerprint}: "
            "train it first (train_blade)"
        )
    model = build_model(job)
    model.load_state_dict(checkpoint["model"])
    newer = replace(job, attributes_path=graph.attributes_path or job.attributes_path)
    samples = graph_samples(newer, graph.samples_path, graph.num_nodes)
    if graph.model_rows_path is not None:
        samples = replace(
            samples, model_rows=load_model_rows(graph.model_rows_path, graph.num_nodes)
        )
    write_embeddings(model, samples, graph.embeddings_path)
    if job.members and graph.members_path is not None:
        write_members(model, samples, replace(job, members_path=graph.members_path))
    log.info(
        "embedded %d nodes (%d unseen in training) with the model of %s",
        graph.num_nodes,
        samples.unseen_nodes(job.num_nodes),
        job.checkpoint_dir,
    )
    return graph.num_nodes


def _train_epoch(
    model: nn.Module,
    optimizer: RowwiseAdam,
    samples: GraphSamples,
    dataset: Any,
    epoch: int,
    generator: torch.Generator,
    job: TrainJob,
    device: torch.device,
) -> dict[str, Any]:
    s = job.settings
    rank, world = rank_and_world()
    started = time.monotonic()
    sums = np.zeros(4)  # positive, negative, reverse, total (row-weighted)
    rows = 0
    model.train()
    with join_uneven(model):
        for batch in edge_batches(dataset, epoch):
            negatives = torch.randint(
                0, job.num_nodes, (len(batch), s.negatives), generator=generator
            )
            batch = EdgeBatch(
                *(t.to(device) for t in (batch.src, batch.dst, batch.weight, batch.one_way))
            )
            terms = batch_loss(model, samples, batch, negatives.to(device), s)
            optimizer.zero_grad()
            terms.total.backward()
            optimizer.step()
            values = [terms.positive, terms.negative, terms.reverse, terms.total]
            sums += np.array([x.detach().item() for x in values]) * len(batch)
            rows += len(batch)
    totals = all_sum([*sums.tolist(), float(rows)], device)
    seconds = time.monotonic() - started
    total_rows = max(totals[4], 1.0)
    stats = {
        "epoch": epoch + 1,
        "loss": totals[3] / total_rows,
        "loss_positive": totals[0] / total_rows,
        "loss_negative": totals[1] / total_rows,
        "loss_reverse": totals[2] / total_rows,
        "rows": int(totals[4]),
        "own_rows": rows,
        "seconds": seconds,
        "rows_per_s": totals[4] / seconds if seconds > 0 else float("nan"),
    }
    if rank == 0:
        log.info(
            "BLADE epoch %d/%d: loss %.4f (positive %.4f, negative %.4f, reverse %.4f), "
            "%d edges in %.1fs (%.0f edges/s, %d process(es))",
            epoch + 1,
            s.epochs,
            stats["loss"],
            stats["loss_positive"],
            stats["loss_negative"],
            stats["loss_reverse"],
            stats["rows"],
            seconds,
            stats["rows_per_s"],
            world,
        )
    return stats


def embedding_table(sources: np.ndarray, targets: np.ndarray) -> pa.Table:
    """``node_index``, ``source``, ``target`` (fixed-size float lists) of every node."""
    n, dim = sources.shape

    def vectors(matrix: np.ndarray) -> pa.Array:
        flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, dim).cast(pa.list_(pa.float32()))

    return pa.table(
        {
            "node_index": pa.array(np.arange(n, dtype=np.int64)),
            "source": vectors(sources),
            "target": vectors(targets),
        }
    )


def write_embeddings(model: BladeModel, samples: GraphSamples, path: str) -> None:
    """Every node's (s, t) as one Parquet file under ``path`` (written, then renamed)."""
    sources, targets = model.embed_all(samples)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / "_embeddings.parquet.partial"
    pq.write_table(embedding_table(sources.cpu().numpy(), targets.cpu().numpy()), partial)
    os.replace(partial, folder / "embeddings.parquet")


def write_members(model: BladeModel, samples: GraphSamples, job: TrainJob) -> None:
    """``job.members`` MC-dropout draws of every node's (s, t): one Parquet file per draw under
    ``members_path`` (``member=<k>`` folders), each written then renamed, draw k seeded by
    ``members_seed + k`` so a re-run writes the same draws."""
    if job.members_path is None:
        raise ValueError("members requested without a members_path")
    if not any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        raise ValueError("MC-dropout members need a model with dropout > 0 (set blade.dropout)")
    root = Path(job.members_path)
    for k in range(job.members):
        sources, targets = model.embed_all(samples, dropout_seed=job.members_seed + k)
        folder = root / f"member={k}"
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / "_member.parquet.partial"
        pq.write_table(embedding_table(sources.cpu().numpy(), targets.cpu().numpy()), partial)
        os.replace(partial, folder / "member.parquet")
    log.info("wrote %d MC-dropout draws of the embeddings to %s", job.members, root)
