"""Settings of BLADE (``blade:``), its recommendations (``recommendations:``) and its evaluation
(``evaluation:``). See docs/blade.md for what each knob does to quality and time."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from recbatch.config import _Section

Variant = Literal[
    "blade",
    "fixed_fanout",
    "fixed_fanout_equal",
    "single",
    "popularity",
    "ppr",
    "ppr_potential",
    "adamic_adar",
]
NodeInputKind = Literal[
    "ids",
    "degrees",
    "ids+degrees",
    "attributes",
    "degrees+attributes",
    "ids+attributes",
    "ids+degrees+attributes",
]
"""What a node puts into its representations (recbatch.blade.model.NodeInputs)."""
TRAINING_FREE: tuple[str, ...] = ("popularity", "ppr", "ppr_potential", "adamic_adar")
"""Variants that learn nothing: the floor a trained model must clear."""


SERVING_SETTINGS = frozenset({"model_max_age_days", "node_inputs_candidates"})
"""``blade`` settings that choose which model serves, not what a model learns: left out of a
model's fingerprint, so changing them never retrains."""


class BladeSettings(_Section):
    """The dual-embedding GNN and how the torch workers train it."""

    embedding: Literal["composite", "dual", "directional", "single"] = Field(
        "composite",
        description="composite (BLADE): an existence channel (single) plus a direction channel "
        "(directional, asymmetric loss) and the degree potential, one dot product "
        "(recbatch.blade.compose); dual: one model with a shared symmetric part and directional "
        "parts; directional: source/target parts only; single: one embedding, s = t",
    )
    existence_embedding: Literal["single", "dual", "directional"] = Field(
        "single",
        description="composite: the existence channel's embedding, trained with random negatives "
        "only. single (symmetric, GAE-like) where related means related both ways (citations, "
        "co-purchase); dual or directional where existence itself is one-way (votes: many "
        "sources, few targets). Chosen on val edges (bench/blade_eval.py --tune)",
    )
    direction_weight: float = Field(
        0.5,
        ge=0,
        description="composite: lambda, the weight of the direction channel against the "
        "per-source standardised existence score (tuned on cora_ml val edges)",
    )
    potential_weight: float = Field(
        1.0,
        ge=0,
        description="composite: c, the weight of the degree potential log((in+1)/(out+1)) "
        "inside the direction channel",
    )
    source_prior_weight: float = Field(
        0.0,
        ge=0,
        description="composite: beta, the weight of -phi_u, a per-source offset (target-like "
        "nodes rarely link out). Changes no source's ranking of targets; moves scores compared "
        "across sources (pooled direction AUC, one global link threshold)",
    )
    node_inputs: NodeInputKind = Field(
        "ids",
        description="what a node puts into its own and its neighbours' representations: ids, "
        "a learnt row per node (nodes seen in training only); degrees, an embedding of its "
        "log-binned out- and in-degree, so a node new since training gets vectors from the same "
        "model; attributes, the mean of learnt vectors of its category and catalogue attributes "
        "(graph_nodes, from the products table), dropped by the blade stage where no node "
        "has one (a graph without a catalogue trains as without it); parts joined with + are "
        "summed (recbatch.blade.model.NodeInputs)",
    )
    node_inputs_candidates: list[NodeInputKind] = Field(
        default_factory=list,
        description="node inputs chosen per run on its val edges: the blade stage trains each "
        "(without a catalogue: attribute parts dropped, attributes alone left out; duplicates "
        "once) and serves the one whose embeddings rank the val edges best (Hits@100 against "
        "evaluation.negatives sampled targets; ties: MRR, then the earlier candidate); empty "
        "or one: blade.node_inputs as set",
    )
    attribute_buckets: int = Field(
        4096,
        ge=1,
        description="attribute inputs: hash buckets of the tokens 'category=<id>' and "
        "'<attribute>=<value>' (one learnt vector each)",
    )
    attribute_tokens: int = Field(
        8, ge=1, description="attribute inputs: tokens kept per node (category first)"
    )
    dim: int = Field(64, ge=2, description="width of the source and of the target embedding")
    shared_fraction: float = Field(
        0.5, gt=0, lt=1, description="dual only: share of dim that is the symmetric part"
    )
    combine: Literal["mean", "mlp"] = Field(
        "mean",
        description="mean: average own input and hop means, then one linear map (LightGCN-like); "
        "mlp: an MLP of `layers` over them concatenated",
    )
    layers: int = Field(2, ge=2, le=6, description="depth of each role's MLP (combine: mlp)")
    dropout: float = Field(
        0.3, ge=0, lt=1, description="dropout in the encoders (also what MC-dropout draws mask)"
    )
    negatives: int = Field(5, ge=1, description="random targets per positive edge")
    reverse_weight: float = Field(
        1.0, ge=0, description="weight of the reversed one-way edges as negatives (0: off)"
    )
    positive_weight: Literal["uniform", "edge_weight"] = Field(
        "uniform", description="edge_weight: positives weighted by their co-purchase count"
    )
    learning_rate: float = Field(0.01, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(1024, ge=1, description="positive edges per step and rank")
    num_processes: int = Field(2, ge=1, description="torch DDP processes (TorchDistributor)")
    edge_files: int = Field(8, ge=1, description="Parquet files of the training edges")
    seed: int = Field(0, ge=0)
    row_updates: Literal["auto", "sparse", "dense"] = Field(
        "auto",
        description="how the per-node ID rows learn: sparse, each step updates only the rows "
        "its batch touched (lazy Adam; a step's cost follows the batch, not the catalogue); "
        "dense, Adam over the whole table every step (what NCCL's dense all-reduce needs); "
        "auto: sparse on CPU where the table has more rows than one step can read (batch x "
        "(2 + negatives) x (1 + sample slots)), else dense (a GPU updates a million rows in "
        "milliseconds)",
    )
    model_max_age_days: int = Field(
        0,
        ge=0,
        description="serve with the latest model trained within this many days before the run "
        "date on the same settings, embedding the run date's graph with it instead of "
        "training (a nightly refresh that retrains weekly: 6); products new since then get "
        "vectors from their attributes, degrees and neighbours. 0: train every run date",
    )

    @model_validator(mode="after")
    def _symmetric_without_reverse(self) -> BladeSettings:
        if self.embedding == "single" and self.reverse_weight > 0:
            raise ValueError(
                "blade.embedding=single scores u -> v and v -> u alike, so reversed edges cannot "
                "be negatives: set blade.reverse_weight=0"
            )
        return self


class RerankSettings(_Section):
    """BLADE's pair scorer: embeddings plus pair features, weighted on val edges (blade.rerank)."""

    enabled: bool = Field(
        True,
        description="score pairs with the re-ranker where the run has val edges to fit it on; "
        "false (or no val edges): the embeddings' dot product alone",
    )
    loss: Literal["listwise", "pointwise"] = Field(
        "listwise",
        description="existence stage: listwise (a softmax over each val edge and its random "
        "targets: the rank that is measured) or pointwise (MLlib's weighted logistic "
        "regression)",
    )
    negatives: int = Field(
        200, ge=1, description="random targets per val edge, together weighted like the edge"
    )
    reverse_candidates: float = Field(
        20.0,
        ge=0,
        description="listwise: a one-way val edge's reverse joins its list counted as this "
        "many random targets (direction inside the ranking loss; 0: left out)",
    )
    max_fit_edges: int = Field(
        5000,
        ge=1,
        description="listwise: val edges (a seeded sample) whose lists the driver fits on",
    )
    reverse_weight: float = Field(
        1.0,
        ge=0,
        description="direction stage: weight of a one-way val edge's reverse as a negative",
    )
    existence_reverse_share: float = Field(
        0.05,
        ge=0,
        description="pointwise existence stage: the reverses' total weight as a share of the random "
        "targets' (0: random targets only, the best ranking; more: direction learnt in the "
        "ranking score itself, at a small cost to it)",
    )
    regularisation: float = Field(
        1e-4, ge=0, description="L2 strength of the logistic regression (standardised features)"
    )
    candidates: int = Field(
        200,
        ge=1,
        description="recommendations: the top M targets by the dot product re-ranked, beside "
        "the source's two-hop neighbourhood",
    )
    seed: int = Field(0, ge=0)


class RecommendationSettings(_Section):
    """Exact top-K targets of every source by blocked matrix multiply."""

    top_k: int = Field(50, ge=1, description="recommendations per product")
    exclude_known: bool = Field(
        True, description="leave out targets the product already has a training edge to"
    )
    block_rows: int = Field(
        2048, ge=1, description="sources scored per matrix multiply inside a Spark task"
    )
    partitions: int = Field(8, ge=1, description="Spark tasks the sources are spread over")
    target_block_rows: int = Field(
        262_144,
        ge=1,
        description="targets per block: the target vectors are written in blocks of this "
        "many products and a task reads one block at a time (its memory: one block, never the "
        "whole catalogue)",
    )
    score_buffer_mb: int = Field(
        256,
        ge=1,
        description="the most a task's score buffer holds: fewer than block_rows sources "
        "are scored per multiply where block_rows x target_block_rows x 4 bytes is more",
    )
    search: Literal["exact", "ivf"] = Field(
        "exact",
        description="exact: every target block multiplied in full; ivf: each block searched "
        "through a faiss inverted-file index (approximate, for catalogues where exact is too "
        "slow; measure its recall with bench/blade_scale.py --top-k)",
    )
    ivf_lists: int = Field(
        0, ge=0, description="ivf: inverted lists per target block (0: about 4 sqrt(rows))"
    )
    ivf_probes: int = Field(
        16, ge=1, description="ivf: lists scanned per query (more: higher recall, slower)"
    )


class EvaluationSettings(_Section):
    """Held-out edges ranked against sampled targets of the same source, by degree bucket."""

    variants: list[Variant] = Field(
        default_factory=lambda: ["blade", "popularity", "ppr", "ppr_potential"],
        description="models scored by the evaluation stage: BLADE and its trained baselines "
        "(fixed_fanout: k = sampling.constant_k; fixed_fanout_equal: k = BLADE's mean budget; "
        "single), and the training-free floor (popularity, ppr, ppr_potential, "
        "adamic_adar)",
    )
    negatives: int = Field(1000, ge=1, description="sampled targets per held-out edge")
    split: Literal["test", "val"] = "test"
    seed: int = Field(0, ge=0)
