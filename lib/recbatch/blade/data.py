"""From Spark's Parquet to BLADE's tensors, through the project's Petastorm readers.

Two inputs, read differently because they play different parts:

* the **samples** (``paths.samples/<date>/<law>``, one row per node and role) are the graph
  structure every rank needs whole, the way a PyG loader holds the whole graph: each rank reads
  all of it once (``load_graph_samples``) into dense per-role tensors indexed by node;
* the **training edges** (one row per training edge, written by ``blade.stage``) are the examples:
  each rank reads only its own shard of row groups, reshuffled each epoch (``edge_batches``), so
  no edge is seen twice per epoch and none goes to the driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from recbatch.blade.model import SOURCE_ROLE, TARGET_ROLE, GraphSamples, NodeSamples
from recbatch.io.tensors import ParquetBatches, iter_torch_batches

SAMPLE_TENSOR_COLUMNS = ("role_id", "node_index", "degree", "neighbour_index", "neighbour_mask")
EDGE_COLUMNS = ("src_index", "dst_index", "weight", "one_way")
"""The training-edge Parquet: one row per training edge; ``one_way`` says its reverse is no edge."""


@dataclass(frozen=True)
class EdgeBatch:
    """A batch of positive training edges u -> v."""

    src: torch.Tensor  # [b] long
    dst: torch.Tensor  # [b] long
    weight: torch.Tensor  # [b] float
    one_way: torch.Tensor  # [b] bool: the reverse v -> u is no edge (it becomes a negative)

    def __len__(self) -> int:
        return len(self.src)


def load_graph_samples(
    path: str, num_nodes: int, hops: int, batch_size: int = 65536
) -> GraphSamples:
    """Both roles' samples of every node from the sample Parquet (all row groups).

    Every node index in ``[0, num_nodes)`` must have exactly one row per role: a missing or
    repeated row means the samples belong to another graph, and training on them would silently
    misalign neighbours and nodes."""
    width: int | None = None
    index = mask = None
    seen = torch.zeros(2, num_nodes, dtype=torch.long)
    degree = torch.zeros(2, num_nodes, dtype=torch.long)
    for batch in iter_torch_batches(path, batch_size=batch_size, columns=SAMPLE_TENSOR_COLUMNS):
        nodes, roles = batch["node_index"].long(), batch["role_id"].long()
        if index is None:
            width = batch["neighbour_index"].shape[1]
            index = torch.full((2, num_nodes, width), -1, dtype=torch.long)
            mask = torch.zeros((2, num_nodes, width), dtype=torch.bool)
        if nodes.numel() and (nodes.min() < 0 or nodes.max() >= num_nodes):
            raise ValueError(f"{path} has node indices outside 0..{num_nodes - 1}: another graph?")
        index[roles, nodes] = batch["neighbour_index"].long()
        mask[roles, nodes] = batch["neighbour_mask"].bool()
        degree[roles, nodes] = batch["degree"].long()
        seen.index_put_((roles, nodes), torch.ones_like(nodes), accumulate=True)
    if index is None or mask is None or width is None:
        raise ValueError(f"{path} holds no sample rows")
    if not bool((seen == 1).all()):
        missing, repeated = int((seen == 0).sum()), int((seen > 1).sum())
        raise ValueError(
            f"{path} must hold one row per node and role: {missing} missing, {repeated} repeated"
        )
    if width % hops:
        raise ValueError(f"sample width {width} is not a multiple of {hops} hops")
    if bool(((index >= num_nodes) | ((index < 0) & mask)).any()):
        raise ValueError(f"{path} has neighbour indices outside 0..{num_nodes - 1}")
    return GraphSamples(
        NodeSamples(index[SOURCE_ROLE], mask[SOURCE_ROLE], hops, degree[SOURCE_ROLE]),
        NodeSamples(index[TARGET_ROLE], mask[TARGET_ROLE], hops, degree[TARGET_ROLE]),
    )


ATTRIBUTE_COLUMNS = ("node_index", "tokens")
"""The node-attribute Parquet (written by ``blade.stage``): each node's hashed catalogue tokens,
a fixed-length ``array<long>``, -1 in an empty slot."""


def load_node_attributes(path: str, num_nodes: int, batch_size: int = 65536) -> torch.Tensor:
    """``[num_nodes, tokens]`` long: each node's attribute tokens (-1 where a node has fewer,
    and for every token of a node the file does not list)."""
    tokens: torch.Tensor | None = None
    for batch in iter_torch_batches(path, batch_size=batch_size, columns=ATTRIBUTE_COLUMNS):
        nodes = batch["node_index"].long()
        if tokens is None:
            tokens = torch.full((num_nodes, batch["tokens"].shape[1]), -1, dtype=torch.long)
        if nodes.numel() and (nodes.min() < 0 or nodes.max() >= num_nodes):
            raise ValueError(f"{path} has node indices outside 0..{num_nodes - 1}: another graph?")
        tokens[nodes] = batch["tokens"].long()
    if tokens is None:
        raise ValueError(f"{path} holds no node attribute rows")
    return tokens


MODEL_ROW_COLUMNS = ("node_index", "model_row")
"""The model-row Parquet (written by ``blade.reuse``): each node's ID row in a model trained on
an older graph, -1 for a node that graph did not have."""


def load_model_rows(path: str, num_nodes: int, batch_size: int = 65536) -> torch.Tensor:
    """``[num_nodes]`` long: each node's row in the older model (-1 where it had none, and for
    every node the file does not list)."""
    rows = torch.full((num_nodes,), -1, dtype=torch.long)
    for batch in iter_torch_batches(path, batch_size=batch_size, columns=MODEL_ROW_COLUMNS):
        nodes = batch["node_index"].long()
        if nodes.numel() and (nodes.min() < 0 or nodes.max() >= num_nodes):
            raise ValueError(f"{path} has node indices outside 0..{num_nodes - 1}: another graph?")
        rows[nodes] = batch["model_row"].long()
    return rows


def edge_dataset(
    path: str, *, batch_size: int, shard: int, shard_count: int, seed: int
) -> ParquetBatches:
    """This rank's shard of the training edges, shuffled (reproducibly) per epoch."""
    return ParquetBatches(
        path,
        batch_size=batch_size,
        shard=shard,
        shard_count=shard_count,
        columns=EDGE_COLUMNS,
        shuffle=True,
        seed=seed + 1,
    )


def edge_batches(dataset: ParquetBatches, epoch: int) -> Iterator[EdgeBatch]:
    """One epoch of ``dataset`` as ``EdgeBatch``es."""
    dataset.set_epoch(epoch)
    for batch in dataset:
        yield EdgeBatch(
            batch["src_index"].long(),
            batch["dst_index"].long(),
            batch["weight"].float(),
            batch["one_way"].bool(),
        )
