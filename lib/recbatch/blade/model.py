"""The BLADE dual-embedding GNN: a source and a target embedding per node, from its samples.

Orientation (tested in ``tests/test_blade.py``): score(u -> v) = s_u . t_v, where

* the **source** embedding s_u aggregates *target*-role input representations over u's sampled
  *out*-neighbourhood (what u leads to), and
* the **target** embedding t_v aggregates *source*-role input representations over v's sampled
  *in*-neighbourhood (what leads to v),

so that s_u . t_v is high when what u leads to resembles v and what leads to v resembles u (the
DiGAE orientation, consistent with the score). Each role's representation is built from its own
input embedding and one masked mean per hop (hop-aware: hops are never pooled together), combined
by ``RoleEncoder`` (an average and a linear map, or a ``layers``-deep MLP).

Embedding variants, from the same code (``BladeSettings.embedding``; BLADE's default,
``composite``, is two of these models added in one dot product: ``recbatch.blade.compose``):

* ``dual``: s_u = [z_u ; p_u] and t_v = [z_v ; q_v]. The *shared* part z is encoded from
  both neighbourhoods of a node with one input table, so z_u . z_v is symmetric: it says whether u
  and v are related at all. The *directional* parts p (source role) and q (target role) say which
  way. Why both: the reference table shows that one unconstrained dot product trades existence for
  direction (reversed-edge negatives cost dual MF 6 points of Hits@100); keeping a symmetric
  channel lets the asymmetric term learn direction without unlearning existence. The score stays
  one dot product, so the referee and the top-K stage need nothing else.
* ``directional``: only [p ; q] (the plain dual embedding, no shared part).
* ``single``: only z, s = t (symmetric, the single-embedding baseline).

Node inputs (``BladeSettings.node_inputs``, ``NodeInputs``): what a node contributes to its own
and its neighbours' representations. ``ids``: a learnt row per node (transductive: a node seen in
training only). ``degrees``: an embedding of the node's log-binned out- and in-degree in the graph
being embedded, so the model is a *function* of a node's sample and degrees (GraphSAGE's and
PinSage's answer; DirLinkBench: degree inputs beat random features on graphs without
attributes): a node that appears after training gets its vectors from the same model, without
retraining. ``ids+degrees``: both, summed; a node unseen in training gets the degree part only.
``attributes``: the mean of learnt vectors of the node's catalogue tokens (``category=...``,
``brand=...``, hashed into ``attribute_buckets``; ``GraphSamples.attributes``): products that
share a brand or a category share inputs, which carries what one product's edges teach to the
others of its kind, and to a new product from its first day. Any parts join with ``+``
(``NODE_INPUTS``), summed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

import torch
from torch import Tensor, nn

from recbatch.blade.settings import NodeInputKind

SOURCE_ROLE = 0
TARGET_ROLE = 1
NODE_INPUT_PARTS = ("ids", "degrees", "attributes")
NODE_INPUTS: tuple[str, ...] = get_args(NodeInputKind)
DEGREE_BINS = 32
"""Degree bins: half a power of two each (``degree_bin``), the last one open (degree >= 2^15.5)."""


def degree_bin(degree: Tensor) -> Tensor:
    """``floor(2·log2(degree + 1))``, capped at ``DEGREE_BINS - 1``: 0 for no edge, 1 for one,
    then finer than powers of two, so low degrees (where the sample is the whole neighbourhood)
    each get their own bin and hubs share a few."""
    bins = torch.floor(2 * torch.log2(degree.double() + 1)).long()
    return bins.clamp(max=DEGREE_BINS - 1)


@dataclass(frozen=True)
class NodeSamples:
    """Every node's neighbourhood sample for one role, as dense tensors (hop-major slots).

    ``index[n, h * k + r]`` is the neighbour of rank r at hop h + 1 (-1 in an empty slot), the
    layout of ``recbatch.graph.samples``; ``mask`` is true where a slot is filled.
    """

    index: Tensor  # [nodes, hops * width] long
    mask: Tensor  # [nodes, hops * width] bool
    hops: int
    degree: Tensor | None = None
    """[nodes] long: each node's degree in this role (out-degree for ``out``, in-degree for
    ``into``) in the graph the samples were drawn from; what degree inputs read."""

    @property
    def width(self) -> int:
        return self.index.shape[1] // self.hops

    def to(self, device: torch.device) -> NodeSamples:
        degree = None if self.degree is None else self.degree.to(device)
        return NodeSamples(self.index.to(device), self.mask.to(device), self.hops, degree)


@dataclass(frozen=True)
class GraphSamples:
    """Both roles' samples: ``out`` (source role, out-edges) and ``into`` (target role)."""

    out: NodeSamples
    into: NodeSamples

    @property
    def num_nodes(self) -> int:
        return self.out.index.shape[0]

    attributes: Tensor | None = None
    """[nodes, tokens] long: each node's hashed catalogue tokens, -1 in an empty slot
    (``recbatch.blade.data.load_node_attributes``); what attribute inputs read."""
    model_rows: Tensor | None = None
    """[nodes] long: each node's ID row in a model trained on another graph (an older run
    date's, whose dense node indices differ), -1 for a node that graph did not have
    (``recbatch.blade.data.load_model_rows``); None: a node's index is its row."""

    def unseen_nodes(self, trained_nodes: int) -> int:
        """How many of these nodes have no ID row in a model trained on ``trained_nodes``."""
        if self.model_rows is not None:
            return int((self.model_rows < 0).sum())
        return max(0, self.num_nodes - trained_nodes)

    def to(self, device: torch.device) -> GraphSamples:
        def moved(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else tensor.to(device)

        return GraphSamples(
            self.out.to(device),
            self.into.to(device),
            moved(self.attributes),
            moved(self.model_rows),
        )


class NodeInputs(nn.Module):
    """One role's input vector of nodes: the sum of an ID row, a degree embedding and the mean
    of its attribute tokens' vectors, as ``kind`` names them (module doc).

    The degree embedding reads the node's out- and in-degree bins from the samples of the graph
    being embedded (``NodeSamples.degree``), the attribute part its tokens
    (``GraphSamples.attributes``): nothing stored at training time. ``sparse_ids``: the ID
    table's gradient holds only the rows a batch touched, so a training step costs the batch,
    not the catalogue (``recbatch.blade.train.RowwiseAdam``)."""

    def __init__(
        self,
        num_nodes: int,
        dim: int,
        kind: str,
        attribute_buckets: int = 0,
        sparse_ids: bool = False,
    ) -> None:
        super().__init__()
        if kind not in NODE_INPUTS:
            raise ValueError(f"unknown node inputs {kind!r}; expected one of {NODE_INPUTS}")
        parts = kind.split("+")
        self.num_nodes = num_nodes
        self.ids = nn.Embedding(num_nodes, dim, sparse=sparse_ids) if "ids" in parts else None
        degrees = "degrees" in parts
        self.out_degree = nn.Embedding(DEGREE_BINS, dim) if degrees else None
        self.in_degree = nn.Embedding(DEGREE_BINS, dim) if degrees else None
        if "attributes" in parts and attribute_buckets < 1:
            raise ValueError("attribute inputs need attribute_buckets >= 1")
        self.tokens = nn.Embedding(attribute_buckets, dim) if "attributes" in parts else None

    @property
    def inductive(self) -> bool:
        """Whether a node unseen in training gets an input (from its degrees or attributes)."""
        return self.out_degree is not None or self.tokens is not None

    def _attributes(self, samples: GraphSamples, nodes: Tensor) -> Tensor:
        """The mean of the vectors of each node's tokens (zero for a node without any)."""
        if self.tokens is None or samples.attributes is None:
            raise ValueError("attribute inputs need the graph's node attributes")
        tokens = samples.attributes[nodes]
        present = (tokens >= 0).unsqueeze(-1)
        vectors = self.tokens(tokens.clamp(min=0)) * present
        return vectors.sum(-2) / present.sum(-2).clamp(min=1)

    def forward(self, samples: GraphSamples, nodes: Tensor) -> Tensor:
        """The inputs of ``nodes`` (any shape). With attributes or sparse ID rows, computed once
        per distinct node and gathered: a batch's neighbourhood slots repeat nodes many times
        over, an attribute input costs a lookup per token (half the step time on the embedded
        default), and a sparse gradient holds a row per lookup, which the optimizer sorts;
        a dense ID or degree lookup is cheaper than the sort that finds the distinct nodes."""
        if self.tokens is None and not (self.ids is not None and self.ids.sparse):
            return self._vectors(samples, nodes)
        distinct, where = torch.unique(nodes, return_inverse=True)
        return self._vectors(samples, distinct)[where]

    def _id_rows(self, rows: Tensor, known: Tensor) -> Tensor:
        """The ID rows ``rows`` where ``known``, zero elsewhere (an empty slot, an unseen node).
        A sparse table reads only the known rows, so its gradient names no other row: lazy Adam
        would otherwise move row 0 on every step's momentum."""
        assert self.ids is not None
        if not self.ids.sparse:
            vectors = self.ids(torch.where(known, rows, torch.zeros_like(rows)))
            return vectors * known.unsqueeze(-1)
        vectors = self.ids.weight.new_zeros((*rows.shape, self.ids.embedding_dim))
        vectors[known] = self.ids(rows[known])
        return vectors

    def _vectors(self, samples: GraphSamples, nodes: Tensor) -> Tensor:
        parts = []
        present = nodes >= 0  # -1: an empty sample slot (its vector is masked out)
        node = nodes.clamp(min=0)
        if self.ids is not None:
            rows = node if samples.model_rows is None else samples.model_rows[node]
            known = present & (rows >= 0) & (rows < self.num_nodes)
            parts.append(self._id_rows(rows, known))
        if self.out_degree is not None and self.in_degree is not None:
            if samples.out.degree is None or samples.into.degree is None:
                raise ValueError("degree inputs need the samples' degree column")
            parts.append(self.out_degree(degree_bin(samples.out.degree[node])))
            parts.append(self.in_degree(degree_bin(samples.into.degree[node])))
        if self.tokens is not None:
            parts.append(self._attributes(samples, node))
        return torch.stack(parts).sum(0)


Inputs = Callable[[Tensor], Tensor]
"""Node indices (any shape; -1 for an empty sample slot) -> their input vectors (shape + [dim])."""


def hop_means(inputs: Inputs, samples: NodeSamples, nodes: Tensor) -> list[Tensor]:
    """Per hop, the masked mean of the ``inputs`` of the sampled neighbours of ``nodes``.

    Empty hops give a zero vector (a node without out-edges has nothing to aggregate)."""
    index = samples.index[nodes].view(len(nodes), samples.hops, samples.width)
    mask = samples.mask[nodes].view(len(nodes), samples.hops, samples.width)
    vectors = inputs(index) * mask.unsqueeze(-1)
    counts = mask.sum(-1, keepdim=True).clamp(min=1)
    means = vectors.sum(2) / counts
    return list(means.unbind(1))


class RoleEncoder(nn.Module):
    """One role's representation from [own input ; hop-1 mean ; ... ; hop-H mean].

    ``combine="mean"`` (default): the average of the parts, dropout, one linear map. Like
    LightGCN's layer average, it cannot ignore the neighbourhood, which regularises the free
    per-node inputs (the model's parameters are mostly those: a node with few edges could
    otherwise memorise them). ``combine="mlp"``: a ``layers``-deep MLP over the concatenated
    parts (LayerNorm, GELU, dropout), free to weigh each part.
    """

    def __init__(
        self, parts: int, dim: int, out_dim: int, layers: int, dropout: float, combine: str
    ) -> None:
        super().__init__()
        self.combine = combine
        blocks: list[nn.Module] = []
        width = parts * dim if combine == "mlp" else dim
        if combine == "mean" and dropout:
            blocks.append(nn.Dropout(dropout))
        for _ in range(layers - 1 if combine == "mlp" else 0):
            blocks += [nn.Linear(width, out_dim), nn.LayerNorm(out_dim), nn.GELU()]
            if dropout:
                blocks.append(nn.Dropout(dropout))
            width = out_dim
        blocks.append(nn.Linear(width, out_dim, bias=combine == "mlp"))
        self.net = nn.Sequential(*blocks)

    def forward(self, parts: list[Tensor]) -> Tensor:
        if self.combine == "mean":
            return self.net(torch.stack(parts).mean(0))
        return self.net(torch.cat(parts, dim=-1))


class BladeModel(nn.Module):
    """Source and target embeddings of nodes from their degree-aware samples (module doc)."""

    def __init__(
        self,
        num_nodes: int,
        *,
        dim: int,
        layers: int,
        hops: int,
        embedding: str = "dual",
        shared_fraction: float = 0.5,
        dropout: float = 0.0,
        combine: str = "mean",
        node_inputs: str = "ids",
        attribute_buckets: int = 0,
        sparse_ids: bool = False,
    ) -> None:
        super().__init__()
        if embedding not in ("dual", "directional", "single"):
            raise ValueError(f"unknown embedding variant {embedding!r}")
        if combine not in ("mean", "mlp"):
            raise ValueError(f"unknown combine {combine!r}")
        if layers < 2:
            raise ValueError("BLADE needs at least 2 layers")
        self.embedding = embedding
        self.num_nodes = num_nodes
        shared = {"dual": round(dim * shared_fraction), "directional": 0, "single": dim}[embedding]
        directional = dim - shared
        self.shared_dim, self.directional_dim = shared, directional
        self.input_dim = dim
        self.node_inputs = node_inputs
        if shared:
            self.shared_input = NodeInputs(
                num_nodes, dim, node_inputs, attribute_buckets, sparse_ids
            )
            self.shared = RoleEncoder(1 + 2 * hops, dim, shared, layers, dropout, combine)
        if directional:
            self.source_input = NodeInputs(
                num_nodes, dim, node_inputs, attribute_buckets, sparse_ids
            )
            self.target_input = NodeInputs(
                num_nodes, dim, node_inputs, attribute_buckets, sparse_ids
            )
            self.source = RoleEncoder(1 + hops, dim, directional, layers, dropout, combine)
            self.target = RoleEncoder(1 + hops, dim, directional, layers, dropout, combine)
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.1)

    def _inputs(self, table: NodeInputs, samples: GraphSamples) -> Inputs:
        return lambda index: table(samples, index)

    @property
    def inductive(self) -> bool:
        """Whether a node unseen in training gets an input of its own (degrees, attributes)."""
        return self.source_or_shared_input.inductive

    def _check_nodes(self, samples: GraphSamples) -> None:
        unseen = samples.unseen_nodes(self.num_nodes)
        if unseen and not self.inductive:
            raise ValueError(
                f"{unseen} of the samples' {samples.num_nodes} nodes are unseen by the model, "
                f"trained on {self.num_nodes}: blade.node_inputs={self.node_inputs} has no input "
                "for a node unseen in training (degrees or attributes have)"
            )

    @property
    def source_or_shared_input(self) -> NodeInputs:
        return self.shared_input if self.shared_dim else self.source_input

    def _shared(self, samples: GraphSamples, nodes: Tensor) -> Tensor:
        inputs = self._inputs(self.shared_input, samples)
        parts = [inputs(nodes), *hop_means(inputs, samples.out, nodes)]
        parts += hop_means(inputs, samples.into, nodes)
        return self.shared(parts)

    def encode_sources(self, samples: GraphSamples, nodes: Tensor) -> Tensor:
        """s for ``nodes``: target-role inputs of the out-neighbourhood (module doc)."""
        parts = []
        if self.shared_dim:
            parts.append(self._shared(samples, nodes))
        if self.directional_dim:
            own = self.source_input(samples, nodes)
            neighbours = hop_means(self._inputs(self.target_input, samples), samples.out, nodes)
            parts.append(self.source([own, *neighbours]))
        return torch.cat(parts, dim=-1)

    def encode_targets(self, samples: GraphSamples, nodes: Tensor) -> Tensor:
        """t for ``nodes``: source-role inputs of the in-neighbourhood (module doc)."""
        parts = []
        if self.shared_dim:
            parts.append(self._shared(samples, nodes))
        if self.directional_dim:
            own = self.target_input(samples, nodes)
            neighbours = hop_means(self._inputs(self.source_input, samples), samples.into, nodes)
            parts.append(self.target([own, *neighbours]))
        return torch.cat(parts, dim=-1)

    def forward(self, samples: GraphSamples, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """(s, t) of ``nodes``; score(u -> v) = s[u] . t[v]."""
        return self.encode_sources(samples, nodes), self.encode_targets(samples, nodes)

    @torch.no_grad()
    def embed_all(
        self, samples: GraphSamples, chunk: int = 65536, dropout_seed: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """(s, t) of every node of ``samples``, in chunks (for export and top-K). With degree
        or attribute inputs the samples may be of a newer graph, with nodes unseen in training
        (module doc).

        ``dropout_seed`` given: one Monte-Carlo dropout draw (dropout on, masks from that seed),
        the members of ``recbatch.links``' MC-dropout uncertainty; else the deterministic
        eval-mode vectors."""
        self._check_nodes(samples)
        was_training = self.training
        self.train(dropout_seed is not None)
        if dropout_seed is not None:
            torch.manual_seed(dropout_seed)
        device = samples.out.index.device
        sources, targets = [], []
        try:
            for start in range(0, samples.num_nodes, chunk):
                nodes = torch.arange(start, min(start + chunk, samples.num_nodes), device=device)
                s, t = self(samples, nodes)
                sources.append(s)
                targets.append(t)
        finally:
            self.train(was_training)
        return torch.cat(sources), torch.cat(targets)
