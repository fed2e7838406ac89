"""Pipeline stages ``blade`` (train), ``recommendations`` (top-K) and ``blade_eval`` (metrics).

* ``blade_stage`` writes the run date's training edges as Parquet (one row per training edge,
  with ``one_way``: its reverse is no *training* edge), trains BLADE in torch DDP processes on the
  degree-aware samples (``run_distributed``; resumes from its checkpoint), and replaces the run
  date's rows of Delta ``embeddings`` (product, source and target vector, model version). It
  also exports them as the ``node, source, target`` Parquet ``../shared/linkpred`` scores.
* ``recommendations_stage`` ranks every product's top K targets exactly (``recommend``) and
  replaces the run date's rows of Delta ``recommendations``.
* ``evaluation_stage`` scores the held-out edges for each configured variant (BLADE, its fixed
  fan-out and single-embedding variants, popularity) and replaces their rows of ``eval_metrics``.

Variants come from one code path: ``fixed_fanout`` is BLADE on the ``sampling.law=constant``
samples (sampled on demand), ``single`` is BLADE with ``blade.embedding=single``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recbatch.blade.compose import channel_changes, compose_embeddings
from recbatch.blade.evaluate import (
    bucket_cutoffs,
    matrices_from_embeddings,
    score_held_out_edges,
    summarise,
    with_buckets,
)
from recbatch.blade.heldout import held_out_from_graph, one_way_flags
from recbatch.blade.recommend import rerank_recommendations, top_k_recommendations
from recbatch.blade.rerank import RerankScorer, RerankWeights, fit_reranker
from recbatch.blade.reuse import (
    UNSEEN,
    TrainedModel,
    latest_trained_model,
    model_rows,
    record_trained_model,
    trained_model_folder,
)
from recbatch.blade.settings import SERVING_SETTINGS, Variant
from recbatch.blade.train import NewerGraph, TrainJob, embed_graph, train_blade
from recbatch.config import RecbatchConfig, _join, local_path
from recbatch.errors import RecbatchError
from recbatch.graph.attributes import attribute_tokens
from recbatch.graph.split import TRAIN
from recbatch.graph.stage import sample_folder, samples_path, samples_stage
from recbatch.graph.truth import planted_relations, truth_agreement
from recbatch.io.delta import is_delta_table, replace_where, run_date_predicate, run_date_rows
from recbatch.io.index import with_row_index
from recbatch.io.publish import write_atomically
from recbatch.log import get_logger, timed
from recbatch.proximity.features import GRAPH_FEATURES, PairFeatures
from recbatch.proximity.graph import TrainingGraph, training_graph
from recbatch.proximity.scorers import FLOOR_SCORERS, PairScorer, floor_scorer
from recbatch.train.distributed import run_distributed

log = get_logger(__name__)

EMBEDDING_COLUMNS = (
    "run_date",
    "variant",
    "model_version",
    "node_index",
    "product",
    "source",
    "target",
)
EVAL_SCHEMA = (
    "run_date date, graph string, variant string, model_version string, split string, "
    "bucket string, edges long, direction_pairs long, hits_20 double, hits_50 double, "
    "hits_100 double, mrr double, direction_auc double, negatives int, bucket_low_max double, "
    "bucket_mid_max double, planted_precision double, planted_reversed double"
)
TRAINED_VARIANTS: dict[str, dict[str, Any]] = {
    "blade": {},
    "fixed_fanout": {},
    "fixed_fanout_equal": {},
    # A symmetric model scores u -> v and v -> u alike: reversed negatives would only fight the
    # positives, so the single-embedding baseline trains as GAE does, with random negatives.
    "single": {"embedding": "single", "reverse_weight": 0.0},
}
"""Each trained variant's changes to the ``blade`` settings."""
COMPOSE_DEFAULTS = {
    "direction_weight": 0.0,
    "potential_weight": 0.0,
    "source_prior_weight": 0.0,
    "existence_embedding": "single",
}
"""The composite's weights as a GNN fingerprint sees them: always the same."""
SAMPLING_VARIANTS: dict[str, dict[str, Any]] = {
    # GraphSAGE-style: sampling.constant_k neighbours per hop for every node, nothing carried.
    "fixed_fanout": {"law": "constant", "fill_from_farther_hops": False},
    # The same, at equal cost: k = the degree-aware law's mean budget on this graph, per role.
    "fixed_fanout_equal": {
        "law": "constant",
        "constant_k": "mean_budget",
        "fill_from_farther_hops": False,
    },
}
"""Each trained variant's changes to the ``sampling`` settings (the others use them as set)."""


DECISION_TYPES = (
    ("probability", "double"),
    ("uncertainty", "double"),
    ("bucket", "int"),
    ("threshold", "double"),
    ("accepted", "boolean"),
)
"""The decision columns ``link_decisions`` fills, null until it runs: the table has one schema
from its first version on, so time travel to any version can read them."""


class BladeInputError(RecbatchError):
    """What BLADE needs (graph tables, samples, embeddings) is missing; the message says which."""


def _table(
    spark: SparkSession, cfg: RecbatchConfig, name: str, run_date: date, hint: str
) -> DataFrame:
    return run_date_rows(
        spark, cfg.table_path(name), run_date, name=name, hint=hint, error=BladeInputError
    )


def _graph(spark: SparkSession, cfg: RecbatchConfig, run_date: date) -> tuple[DataFrame, DataFrame]:
    hint = "run the graph stage (or the pipeline) for this run date first"
    nodes = _table(spark, cfg, "graph_nodes", run_date, hint)
    edges = _table(spark, cfg, "graph_edges", run_date, hint)
    return nodes, edges


@dataclass(frozen=True)
class VariantPlan:
    """What one trained variant trains on and with which settings."""

    variant: str
    law: str
    samples: str
    job_settings: Any

    @property
    def models(self) -> dict[str, Any]:
        """The GNNs the variant trains, by name: the two channels of a composite, else one."""
        if self.job_settings.embedding == "composite":
            return {
                name: self.job_settings.model_copy(update=changes)
                for name, changes in channel_changes(self.job_settings).items()
            }
        return {"model": self.job_settings}


def _work(cfg: RecbatchConfig, run_date: date, *parts: str) -> str:
    path = _join(cfg.path("work"), "blade")
    for part in (run_date.isoformat(), *parts):
        path = _join(path, part)
    return path


def variant_plan(
    cfg: RecbatchConfig, run_date: date, variant: str, *, described: bool
) -> VariantPlan:
    """Where a trained variant reads its samples, and the settings it trains with.

    ``described``: whether the graph's nodes have catalogue attributes
    (``graph_is_described``). Without any, attribute inputs have nothing to read, so they are
    dropped from ``blade.node_inputs`` (``ids+attributes`` trains as ``ids``): a graph without a
    catalogue gets exactly the model it got before attribute inputs existed."""
    settings = cfg.blade.model_copy(update=TRAINED_VARIANTS[variant])
    if not described:
        settings = settings.model_copy(update={"node_inputs": without_attributes(settings)})
    folder = sample_folder(variant_sampling(cfg, variant))
    return VariantPlan(variant, folder, samples_path(cfg, run_date, folder), settings)


def without_attributes(settings: Any) -> str:
    """``node_inputs`` less its attribute part; an error where that is all it has (without a
    catalogue every node's input would be the same zero vector)."""
    kind = _without_attributes(settings.node_inputs)
    if kind is None:
        raise BladeInputError(
            "blade.node_inputs=attributes needs product attributes, and no node of the graph "
            "has a category: ingest a catalogue (ingest.catalog_path) or train with ids or "
            "degrees"
        )
    return kind


def _without_attributes(node_inputs: str) -> str | None:
    parts = [p for p in node_inputs.split("+") if p != "attributes"]
    return "+".join(parts) if parts else None


def graph_is_described(nodes: DataFrame) -> bool:
    """Whether any node of ``graph_nodes`` has a category (so attribute inputs read something)."""
    if "category_id" not in nodes.columns:
        return False
    return not nodes.where(F.col("category_id").isNotNull()).isEmpty()


def variant_sampling(cfg: RecbatchConfig, variant: str) -> Any:
    """The sampling settings a variant's samples are drawn with."""
    return cfg.sampling.model_copy(update=SAMPLING_VARIANTS.get(variant, {}))


GRAPH_LOCATIONS = frozenset({"edge_list_path", "nodes_path"})
"""``graph`` settings that say where a graph is read from, not how it is built: a newer run
date's edge list may sit elsewhere and still be served by the same model."""


def _settings_payload(cfg: RecbatchConfig, plan: VariantPlan, settings: Any) -> dict[str, Any]:
    return {
        "blade": settings.model_dump(mode="json", exclude=SERVING_SETTINGS),
        "sampling": variant_sampling(cfg, plan.variant).model_dump(mode="json"),
        "law": plan.law,
        "graph": cfg.graph.model_dump(mode="json"),
    }


def _hash(payload: dict[str, Any], length: int = 10) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:length]


def _digest(cfg: RecbatchConfig, plan: VariantPlan, settings: Any, edges: int) -> str:
    """A hash of what decides a model's weights: its settings, the sampling settings and law,
    the graph settings and size (so a changed input never reuses weights)."""
    return _hash({**_settings_payload(cfg, plan, settings), "edges": edges})


def settings_digest(cfg: RecbatchConfig, plan: VariantPlan) -> str:
    """A hash of the settings a variant trains with, less the graph's size and location: what
    must match for an older run date's model to serve this one (``recbatch.blade.reuse``)."""
    payload = _settings_payload(cfg, plan, plan.job_settings)
    graph = {k: v for k, v in payload["graph"].items() if k not in GRAPH_LOCATIONS}
    return _hash({**payload, "graph": graph})


def model_version(cfg: RecbatchConfig, run_date: date, plan: VariantPlan, edges: int) -> str:
    """``<variant>-<run date>-<hash>`` of everything that decides the variant's vectors."""
    return f"{plan.variant}-{run_date.isoformat()}-{_digest(cfg, plan, plan.job_settings, edges)}"


def gnn_fingerprint(
    cfg: RecbatchConfig, run_date: date, plan: VariantPlan, name: str, edges: int
) -> str:
    """``<law>-<run date>-<hash>`` of one GNN, without the composite's weights (they only mix
    trained channels). Variants whose GNNs train alike share them: ``single`` is BLADE's
    existence channel, and re-weighting a composite retrains nothing."""
    settings = plan.models[name].model_copy(update=COMPOSE_DEFAULTS)
    return f"{plan.law}-{run_date.isoformat()}-{_digest(cfg, plan, settings, edges)}"


def training_edges(edges: DataFrame) -> DataFrame:
    """``src_index``, ``dst_index``, ``weight``, ``one_way`` of the training edges."""
    train = edges.where(F.col("split") == TRAIN).select(
        "src_index", "dst_index", F.col("weight").cast("float").alias("weight")
    )
    return one_way_flags(train, train)


def _local_dir(location: str, what: str) -> str:
    path = local_path(location)
    if path is None:
        raise BladeInputError(
            f"{what} must be on a file system the torch workers share as files "
            f"(a local or mounted path), got {location}"
        )
    return str(path)


def _ensure_samples(spark: SparkSession, cfg: RecbatchConfig, run_date: date, variant: str) -> None:
    """The samples a variant trains on. The configured law's come from the samples stage (sampled
    now if missing); a baseline with its own sampling settings is always sampled afresh, since
    samples of its law drawn with other settings may sit at the same path."""
    sampling = variant_sampling(cfg, variant)
    path = local_path(samples_path(cfg, run_date, sample_folder(sampling)))
    if variant not in SAMPLING_VARIANTS and path is not None and path.exists():
        return
    log.info("sampling the %s samples of %s for %s", sampling.law, variant, run_date)
    samples_stage(spark, cfg.model_copy(update={"sampling": sampling}))


@dataclass(frozen=True)
class ServedModel:
    """The model that gives a run date's vectors, trained now or earlier: its version, per GNN
    the folders of this run date's vectors (``embeddings``) and MC-dropout draws
    (``members``), the settings it was planned with, and its record for later run dates
    (``trained``; None where an older model served)."""

    version: str
    gnns: dict[str, dict[str, str]]
    summary: dict[str, Any]
    plan: VariantPlan
    trained: TrainedModel | None
    num_nodes: int


def train_variant(spark: SparkSession, cfg: RecbatchConfig, variant: str) -> dict[str, Any]:
    """Give every node of the run date's graph its vectors from the variant's model: trained
    now, or an older run date's (``blade.model_max_age_days``, ``recbatch.blade.reuse``).
    Replace its rows of ``embeddings``."""
    return publish_variant(spark, cfg, serve_variant(spark, cfg, variant))


def serve_variant(spark: SparkSession, cfg: RecbatchConfig, variant: str) -> ServedModel:
    """The variant's vectors of the run date's graph, from an older run date's model where
    one may serve, else from training (or from complete checkpoints); nothing published."""
    run_date = cfg.effective_run_date()
    nodes, edges = _graph(spark, cfg, run_date)
    plan = variant_plan(cfg, run_date, variant, described=graph_is_described(nodes))
    _ensure_samples(spark, cfg, run_date, variant)
    num_nodes = nodes.count()
    attributes_path = _write_node_attributes(spark, cfg, run_date, plan, nodes)
    older = latest_trained_model(cfg, run_date, variant, settings_digest(cfg, plan))
    if older is not None:
        served = _embed_with_older_model(
            spark, cfg, run_date, plan, nodes, num_nodes, older, attributes_path
        )
        if served is not None:
            return served
    return _train_variant_gnns(spark, cfg, run_date, plan, num_nodes, edges, attributes_path)


def publish_variant(
    spark: SparkSession, cfg: RecbatchConfig, served: ServedModel
) -> dict[str, Any]:
    """Compose the served vectors, replace the variant's rows of ``embeddings``, export them
    for the referee, and record which model served (and, when it was trained now, the model
    itself for later run dates). Returns the variant's summary."""
    run_date = cfg.effective_run_date()
    plan, variant = served.plan, served.plan.variant
    nodes, _ = _graph(spark, cfg, run_date)
    _write_served_record(cfg, run_date, variant, served)
    if served.trained is not None:
        record_trained_model(spark, served.trained, nodes)
    if plan.job_settings.embedding == "composite":
        vectors = compose_embeddings(
            spark,
            spark.read.parquet(served.gnns["existence"]["embeddings"]),
            spark.read.parquet(served.gnns["direction"]["embeddings"]),
            nodes,
            direction_weight=plan.job_settings.direction_weight,
            potential_weight=plan.job_settings.potential_weight,
            source_prior_weight=plan.job_settings.source_prior_weight,
        )
    else:
        vectors = spark.read.parquet(served.gnns["model"]["embeddings"])
    embeddings = vectors.join(
        nodes.select("node_index", F.col("node_id").alias("product")), "node_index"
    ).select(
        F.lit(run_date).alias("run_date"),
        F.lit(variant).alias("variant"),
        F.lit(served.version).alias("model_version"),
        "node_index",
        "product",
        "source",
        "target",
    )
    predicate = f"{run_date_predicate(run_date)} AND variant = '{variant}'"
    replace_where(spark, embeddings, cfg.table_path("embeddings"), predicate)
    export = export_path(cfg, run_date, variant)
    stored = _embeddings(spark, cfg, run_date, variant)
    write_atomically(
        spark,
        stored.select(F.col("product").alias("node"), "source", "target").coalesce(1).write,
        export,
    )
    summary = {
        "variant": variant,
        "model_version": served.version,
        "nodes": served.num_nodes,
        **served.summary,
        "export": export,
    }
    log.info("BLADE %s: %s", variant, summary)
    return summary


def _train_variant_gnns(
    spark: SparkSession,
    cfg: RecbatchConfig,
    run_date: date,
    plan: VariantPlan,
    num_nodes: int,
    edges: DataFrame,
    attributes_path: str | None,
) -> ServedModel:
    """Train the variant's GNNs on the run date's training edges (or take their complete
    checkpoints); the model's record for later run dates is written when it is published."""
    edges_path = _work(cfg, run_date, "edges")
    train = training_edges(edges)
    files = max(cfg.blade.edge_files, cfg.blade.num_processes)
    # Files by a hash of the edge, each sorted: what each rank trains on (its shard of the
    # files, reshuffled per epoch by its seed) is then a function of the graph alone, not of
    # how an upstream table happened to be laid out, so one graph gives one model.
    laid_out = train.repartition(files, "src_index", "dst_index").sortWithinPartitions(
        "src_index", "dst_index"
    )
    with timed(log, f"writing training edges to {edges_path}"):
        write_atomically(spark, laid_out.write, edges_path)
    edge_count = spark.read.parquet(edges_path).count()
    version = model_version(cfg, run_date, plan, edge_count)
    log.info(
        "training %s (%s) on %d nodes, %d training edges, %s samples: %s",
        plan.variant,
        version,
        num_nodes,
        edge_count,
        plan.law,
        ", ".join(plan.models),
    )
    fingerprints = {
        name: gnn_fingerprint(cfg, run_date, plan, name, edge_count) for name in plan.models
    }
    trained = {
        name: _train_gnn(
            spark, cfg, run_date, plan, name, edges_path, num_nodes, edge_count, attributes_path
        )
        for name in plan.models
    }
    record = TrainedModel(
        variant=plan.variant,
        run_date=run_date.isoformat(),
        model_version=version,
        settings_digest=settings_digest(cfg, plan),
        num_nodes=num_nodes,
        gnns={
            name: {
                "fingerprint": fingerprint,
                "checkpoint_dir": gnn_paths(cfg, run_date, fingerprint)[0],
            }
            for name, fingerprint in fingerprints.items()
        },
        folder=trained_model_folder(cfg, run_date, plan.variant),
    )
    return ServedModel(
        version,
        {
            name: {
                "embeddings": trained[name]["embeddings"],
                "members": members_path(cfg, run_date, fingerprint),
            }
            for name, fingerprint in fingerprints.items()
        },
        {
            "edges": edge_count,
            "epochs": max(t["epochs"] for t in trained.values()),
            "resumed_from_epoch": min(t["resumed_from_epoch"] for t in trained.values()),
            "final_loss": {name: t["final_loss"] for name, t in trained.items()},
            "edges_per_s": round(float(np.mean([t["edges_per_s"] for t in trained.values()])), 1),
        },
        plan,
        record,
        num_nodes,
    )


def _embed_with_older_model(
    spark: SparkSession,
    cfg: RecbatchConfig,
    run_date: date,
    plan: VariantPlan,
    nodes: DataFrame,
    num_nodes: int,
    older: TrainedModel,
    attributes_path: str | None,
) -> ServedModel | None:
    """The run date's vectors from ``older``'s weights, without training; None (train instead)
    where the graph has products the model cannot embed: new since its training, with
    ``blade.node_inputs`` that has no input for them (``ids`` alone)."""
    rows = model_rows(nodes, spark.read.parquet(older.nodes_path))
    rows_path = _work(cfg, run_date, "model_rows", plan.variant)
    write_atomically(spark, rows.repartition(1).write, rows_path)
    rows_local = _local_dir(rows_path, "paths.work")
    unseen = spark.read.parquet(rows_path).where(F.col("model_row") == UNSEEN).count()
    inductive = all(
        "degrees" in s.node_inputs or "attributes" in s.node_inputs for s in plan.models.values()
    )
    if unseen and not inductive:
        log.info(
            "%d products are new since the %s model of %s and blade.node_inputs=%s has no input "
            "for them: training on %s instead",
            unseen,
            plan.variant,
            older.run_date,
            plan.job_settings.node_inputs,
            run_date,
        )
        return None
    log.info(
        "serving %s on %s with the model of %s (%s): embedding %d products, %d new since",
        plan.variant,
        run_date,
        older.run_date,
        older.model_version,
        num_nodes,
        unseen,
    )
    writes_members = _writes_members(cfg, plan.variant)
    gnns = {}
    for name, settings in plan.models.items():
        fingerprint = older.gnns[name]["fingerprint"]
        job = TrainJob(
            samples_path=plan.samples,
            edges_path="",
            checkpoint_dir=older.gnns[name]["checkpoint_dir"],
            embeddings_path="",
            num_nodes=older.num_nodes,
            hops=cfg.sampling.hops,
            settings=settings,
            fingerprint=fingerprint,
            members=cfg.link_uncertainty.members if writes_members else 0,
            members_seed=cfg.link_uncertainty.seed,
        )
        draws_dir = members_path(cfg, run_date, fingerprint)
        graph = NewerGraph(
            samples_path=plan.samples,
            num_nodes=num_nodes,
            embeddings_path=_local_dir(gnn_paths(cfg, run_date, fingerprint)[1], "paths.work"),
            attributes_path=attributes_path if "attributes" in settings.node_inputs else None,
            model_rows_path=rows_local if "ids" in settings.node_inputs else None,
            members_path=_local_dir(draws_dir, "paths.work") if writes_members else None,
        )
        with timed(log, f"embedding {run_date} with {plan.variant}: {name} of {older.run_date}"):
            embed_graph(job, graph)
        gnns[name] = {"embeddings": graph.embeddings_path, "members": draws_dir}
    return ServedModel(
        older.model_version,
        gnns,
        {"reused_from": older.run_date, "new_products": unseen, "epochs": 0},
        plan,
        None,
        num_nodes,
    )


def _served_record_path(cfg: RecbatchConfig, run_date: date, variant: str) -> str:
    return _work(cfg, run_date, "served", f"{variant}.json")


def _write_served_record(
    cfg: RecbatchConfig, run_date: date, variant: str, served: ServedModel
) -> None:
    """Which model's vectors and draws a run date's variant has, for the stages after it."""
    path = Path(_local_dir(_served_record_path(cfg, run_date, variant), "paths.work"))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"version": served.version, "gnns": served.gnns}, indent=2))
    os.replace(partial, path)


def gnn_paths(cfg: RecbatchConfig, run_date: date, fingerprint: str) -> tuple[str, str]:
    """(checkpoint folder, embeddings folder) of one GNN, by its fingerprint."""
    checkpoints = _join(
        _join(_join(cfg.path("checkpoints"), "blade"), run_date.isoformat()), fingerprint
    )
    return checkpoints, _work(cfg, run_date, "models", fingerprint)


def members_path(cfg: RecbatchConfig, run_date: date, fingerprint: str) -> str:
    """The MC-dropout draws of one GNN (``member=<k>`` folders), by its fingerprint."""
    return _work(cfg, run_date, "members", fingerprint)


def _writes_members(cfg: RecbatchConfig, variant: str) -> bool:
    """The served model's GNNs write MC-dropout draws when the link uncertainty uses them."""
    return variant == "blade" and cfg.link_uncertainty.method == "mc_dropout"


def gnn_outputs(
    spark: SparkSession, cfg: RecbatchConfig, variant: str
) -> dict[str, dict[str, str]]:
    """Per GNN of a trained variant: its ``embeddings`` and ``members`` folders for the run date,
    as the blade stage wrote them (trained now or served by an older model)."""
    run_date = cfg.effective_run_date()
    path = local_path(_served_record_path(cfg, run_date, variant))
    if not is_delta_table(spark, cfg.table_path("embeddings")) or path is None or not path.exists():
        raise BladeInputError(
            f"no trained BLADE for {run_date.isoformat()}: run the blade stage first "
            f"(./spark-submit.sh train_blade --run-date {run_date.isoformat()})"
        )
    return json.loads(path.read_text())["gnns"]


def _write_node_attributes(
    spark: SparkSession, cfg: RecbatchConfig, run_date: date, plan: VariantPlan, nodes: DataFrame
) -> str | None:
    """The node-attribute Parquet the variant's GNNs read, when any reads attributes."""
    readers = [s for s in plan.models.values() if "attributes" in s.node_inputs]
    if not readers:
        return None
    settings = readers[0]
    path = _work(cfg, run_date, "attributes")
    tokens = attribute_tokens(nodes, settings.attribute_buckets, settings.attribute_tokens)
    with timed(log, f"writing node attribute tokens to {path}"):
        write_atomically(spark, tokens.repartition(1).write, path)
    return _local_dir(path, "paths.work")


def _train_gnn(
    spark: SparkSession,
    cfg: RecbatchConfig,
    run_date: date,
    plan: VariantPlan,
    name: str,
    edges_path: str,
    num_nodes: int,
    edge_count: int,
    attributes_path: str | None = None,
) -> dict[str, Any]:
    """Train (or resume, or reuse when complete) one GNN of a variant in torch DDP processes."""
    settings = plan.models[name]
    fingerprint = gnn_fingerprint(cfg, run_date, plan, name, edge_count)
    checkpoint_dir, embeddings_dir = gnn_paths(cfg, run_date, fingerprint)
    job = TrainJob(
        samples_path=plan.samples,
        edges_path=edges_path,
        checkpoint_dir=_local_dir(checkpoint_dir, "paths.checkpoints"),
        embeddings_path=_local_dir(embeddings_dir, "paths.work"),
        num_nodes=num_nodes,
        hops=cfg.sampling.hops,
        settings=settings,
        fingerprint=fingerprint,
        members=cfg.link_uncertainty.members if _writes_members(cfg, plan.variant) else 0,
        members_path=_local_dir(members_path(cfg, run_date, fingerprint), "paths.work"),
        members_seed=cfg.link_uncertainty.seed,
        attributes_path=attributes_path if "attributes" in settings.node_inputs else None,
    )
    with timed(
        log, f"BLADE training ({plan.variant}: {name}, {settings.embedding}, {fingerprint})"
    ):
        result = run_distributed(
            train_blade, job, num_processes=settings.num_processes, spark=spark
        )
    last = result["epochs"][-1]
    return {
        "embeddings": job.embeddings_path,
        "epochs": len(result["epochs"]),
        "resumed_from_epoch": result["resumed_from_epoch"],
        "final_loss": round(last["loss"], 5),
        "edges_per_s": last["rows_per_s"],
    }


def export_path(cfg: RecbatchConfig, run_date: date, variant: str) -> str:
    """The referee export (``node``, ``source``, ``target``; one Parquet file) of a variant."""
    return _join(_join(_join(cfg.path("exports"), "embeddings"), run_date.isoformat()), variant)


def _embeddings(
    spark: SparkSession, cfg: RecbatchConfig, run_date: date, variant: str
) -> DataFrame:
    rows = _table(spark, cfg, "embeddings", run_date, "run the blade stage for this run date first")
    chosen = rows.where(F.col("variant") == variant)
    if chosen.isEmpty():
        raise BladeInputError(f"no {variant} embeddings for {run_date.isoformat()}: train it first")
    return chosen


def blade_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, Any]:
    """The ``blade`` pipeline stage: train the configured model (variant ``blade``; its node
    inputs chosen on the run's val edges where ``blade.node_inputs_candidates`` lists several),
    then fit its pair scorer on the run's val edges (``rerank``)."""
    cfg, choice, served = choose_node_inputs(spark, cfg)
    if served is not None:
        summary = publish_variant(spark, cfg, served)
    else:
        summary = train_variant(spark, cfg, "blade")
    if choice:
        summary["node_inputs_choice"] = choice
    if cfg.rerank.enabled:
        summary["rerank"] = fit_variant_reranker(spark, cfg, "blade")
    return summary


def with_node_inputs(cfg: RecbatchConfig, node_inputs: str) -> RecbatchConfig:
    """``cfg`` with ``blade.node_inputs`` set."""
    return cfg.model_copy(
        update={"blade": cfg.blade.model_copy(update={"node_inputs": node_inputs})}
    )


def node_input_candidates(cfg: RecbatchConfig, described: bool) -> list[str]:
    """``blade.node_inputs_candidates`` as this graph can feed them: where no node has a
    category, attribute parts dropped and attributes alone left out; each distinct result
    once, in the listed order."""
    out: list[str] = []
    for kind in cfg.blade.node_inputs_candidates:
        resolved = kind if described else _without_attributes(kind)
        if resolved is not None and resolved not in out:
            out.append(resolved)
    return out


def choose_node_inputs(
    spark: SparkSession, cfg: RecbatchConfig
) -> tuple[RecbatchConfig, dict[str, Any], ServedModel | None]:
    """``cfg`` with the node inputs BLADE serves this run, the choice's record (empty where
    there was nothing to choose), and the chosen candidate's vectors where the choice trained
    them (to publish as they are: None where nothing was trained to choose).

    Which inputs generalise depends on the graph (ID rows fit a node's own edges; attributes
    and degrees carry to products with few or none), so the choice is made per run on data
    no model trained on: each candidate is trained, and its composite embeddings rank the
    run's val edges against ``evaluation.negatives`` sampled targets; the best Hits@100 serves
    (the evaluation's headline metric; ties: the better MRR, then the earlier candidate). The
    winner's vectors are published as they were trained, without training or embedding
    again. Where an older model may serve (``blade.model_max_age_days``) and one of a
    candidate's settings is recorded, that candidate serves without training."""
    run_date = cfg.effective_run_date()
    nodes, edges = _graph(spark, cfg, run_date)
    described = graph_is_described(nodes)
    candidates = node_input_candidates(cfg, described)
    if len(candidates) < 2:
        chosen = candidates[0] if candidates else cfg.blade.node_inputs
        return with_node_inputs(cfg, chosen), {}, None
    for kind in candidates:
        option = with_node_inputs(cfg, kind)
        plan = variant_plan(option, run_date, "blade", described=described)
        if latest_trained_model(option, run_date, "blade", settings_digest(option, plan)):
            log.info("node inputs %s: a recorded model of these settings serves", kind)
            return option, {"chosen": kind, "by": "recorded model"}, None
    num_nodes = nodes.count()
    held = held_out_from_graph(
        edges, "val", num_nodes, cfg.evaluation.negatives, cfg.evaluation.seed
    ).localCheckpoint()
    if held.isEmpty():
        log.warning(
            "no val edges (graph.split=%s) to choose node inputs on: serving blade.node_inputs=%s",
            cfg.graph.split,
            cfg.blade.node_inputs,
        )
        return cfg, {}, None
    plain = cfg.model_copy(update={"rerank": cfg.rerank.model_copy(update={"enabled": False})})
    scores: dict[str, dict[str, float]] = {}
    served: dict[str, ServedModel] = {}
    for kind in candidates:
        option = with_node_inputs(plain, kind)
        served[kind] = serve_variant(spark, option, "blade")
        publish_variant(spark, option, served[kind])
        rows = evaluate_variants(spark, option, held, nodes, edges, ["blade"])
        overall = next(r for r in rows if r["bucket"] == "all")
        scores[kind] = {"hits_100": float(overall["hits_100"]), "mrr": float(overall["mrr"])}

    def rank(kind: str) -> tuple[float, float, int]:
        return scores[kind]["hits_100"], scores[kind]["mrr"], -candidates.index(kind)

    chosen = max(candidates, key=rank)
    log.info(
        "node inputs chosen on %d val edges: %s (val Hits@100 / MRR: %s)",
        held.count(),
        chosen,
        ", ".join(f"{k} {v['hits_100']:.3f} / {v['mrr']:.3f}" for k, v in scores.items()),
    )
    choice = {"chosen": chosen, "by": "val edges", "val": scores}
    return with_node_inputs(cfg, chosen), choice, served[chosen]


def rerank_path(cfg: RecbatchConfig, run_date: date, version: str) -> str:
    """The pair scorer's weights for one trained model version and the settings that shape
    them (a changed model or setting never reuses weights)."""
    payload = json.dumps(
        {
            "rerank": cfg.rerank.model_dump(mode="json"),
            "proximity": cfg.proximity.model_dump(mode="json"),
            "features": GRAPH_FEATURES,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()[:8]
    return _work(cfg, run_date, "rerank", f"{version}-{digest}.json")


def train_graph_of(edges: DataFrame, num_nodes: int) -> TrainingGraph:
    """The run's training edges as a ``TrainingGraph`` (for path features and the floor)."""
    return training_graph(edges.where(F.col("split") == TRAIN), num_nodes)


def val_edges(edges: DataFrame) -> DataFrame:
    """The run's val edges (``edge_id``, ``src_index``, ``dst_index``, ``one_way``)."""
    chosen = edges.where(F.col("split") == "val").select("src_index", "dst_index")
    return one_way_flags(with_row_index(chosen, ["src_index", "dst_index"], "edge_id"), edges)


def fit_variant_reranker(
    spark: SparkSession, cfg: RecbatchConfig, variant: str, val: DataFrame | None = None
) -> dict[str, Any]:
    """Fit (or reuse) a trained variant's pair scorer on val edges: the run's own (graph split
    ``val``), or ``val`` given (``edge_id``, ``src_index``, ``dst_index``, ``one_way``, and
    optionally ``negatives`` already drawn). Without val edges the variant serves its dot
    product, and the summary says so."""
    run_date = cfg.effective_run_date()
    nodes, edges = _graph(spark, cfg, run_date)
    embeddings = _embeddings(spark, cfg, run_date, variant)
    version = embeddings.select("model_version").head()[0]
    path = rerank_path(cfg, run_date, version)
    stored = RerankWeights.load(path)
    if stored is not None:
        log.info("%s pair scorer for %s already fitted: %s", variant, version, path)
        return {"weights": path, "val_edges": stored.val_edges, "reused": True}
    val = val if val is not None else val_edges(edges)
    if val.isEmpty():
        log.warning(
            "no val edges on %s (graph.split=%s): %s serves its dot product, without the pair "
            "scorer",
            run_date,
            cfg.graph.split,
            variant,
        )
        return {"weights": None, "val_edges": 0}
    num_nodes = nodes.count()
    dot = matrices_from_embeddings(
        variant, embeddings.select("node_index", "source", "target").toPandas(), num_nodes
    )
    features = PairFeatures(train_graph_of(edges, num_nodes), cfg.proximity, dot)
    weights = fit_reranker(
        spark, val, edges.select("src_index", "dst_index"), num_nodes, features, cfg.rerank
    )
    weights.save(path)
    return {
        "weights": path,
        "val_edges": weights.val_edges,
        "coefficients": dict(zip(weights.features, weights.coefficients, strict=False)),
    }


def served_scorer(
    spark: SparkSession,
    cfg: RecbatchConfig,
    variant: str,
    embeddings: DataFrame,
    version: str,
    graph: TrainingGraph,
) -> tuple[PairScorer, str]:
    """A trained variant's scorer: its pair scorer where fitted weights exist for its model
    version, else its dot product; and the version it reports."""
    num_nodes = graph.num_nodes
    dot = matrices_from_embeddings(
        variant, embeddings.select("node_index", "source", "target").toPandas(), num_nodes
    )
    if not cfg.rerank.enabled:
        return dot, version
    weights = RerankWeights.load(rerank_path(cfg, cfg.effective_run_date(), version))
    if weights is None:
        return dot, version
    return RerankScorer(
        variant, PairFeatures(graph, cfg.proximity, dot), weights
    ), f"{version}+rerank"


def recommendations_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, Any]:
    """Top-K related products of every product; replace the run date's ``recommendations``."""
    run_date = cfg.effective_run_date()
    settings = cfg.recommendations
    nodes, edges = _graph(spark, cfg, run_date)
    embeddings = _embeddings(spark, cfg, run_date, "blade")
    version = embeddings.select("model_version").head()[0]
    top, version = served_top_k(spark, cfg, nodes, edges, embeddings, version)
    with timed(log, f"top-{settings.top_k} recommendations ({version})"):
        ids = nodes.select("node_index", F.col("node_id").alias("product"))
        rows = (
            top.join(ids, "node_index")
            .join(
                ids.select(
                    F.col("node_index").alias("target_index"),
                    F.col("product").alias("recommended_product"),
                ),
                "target_index",
            )
            .select(
                F.lit(run_date).alias("run_date"),
                "product",
                "rank",
                "recommended_product",
                "score",
                F.lit(version).alias("model_version"),
                *(F.lit(None).cast(kind).alias(name) for name, kind in DECISION_TYPES),
            )
        )
        replace_where(
            spark,
            rows,
            cfg.table_path("recommendations"),
            run_date_predicate(run_date),
            merge_schema=True,
        )
    written = (
        spark.read.format("delta")
        .load(cfg.table_path("recommendations"))
        .where(F.col("run_date") == F.lit(run_date))
    )
    summary = {
        "rows": written.count(),
        "products": written.select("product").distinct().count(),
        "top_k": settings.top_k,
        "model_version": version,
    }
    log.info("recommendations for %s: %s", run_date, summary)
    return summary


def served_top_k(
    spark: SparkSession,
    cfg: RecbatchConfig,
    nodes: DataFrame,
    edges: DataFrame,
    embeddings: DataFrame,
    version: str,
) -> tuple[DataFrame, str]:
    """``TOPK_SCHEMA`` rows of every product's top K and the version that ranked them.

    With a fitted pair scorer: retrieval and re-ranking (the top ``rerank.candidates`` by the
    dot product and as many by the walk, ordered by the pair scorer); else the exact top K by
    the dot product."""
    settings = cfg.recommendations
    known = edges.where(F.col("split") == TRAIN).select("src_index", "dst_index")
    num_nodes = nodes.count()
    graph = train_graph_of(edges, num_nodes)
    scorer, served = served_scorer(spark, cfg, "blade", embeddings, version, graph)
    retrieve = settings.top_k if served == version else max(cfg.rerank.candidates, settings.top_k)
    top = top_k_recommendations(
        spark,
        embeddings,
        known if settings.exclude_known else None,
        k=retrieve,
        settings=settings,
        blocks_path=_work(cfg, cfg.effective_run_date(), "target_blocks", "blade"),
    )
    if served == version:
        return top, version
    reranked = rerank_recommendations(
        spark,
        top,
        scorer,
        graph,
        cfg.proximity,
        k=settings.top_k,
        walk_candidates=cfg.rerank.candidates,
        exclude_known=settings.exclude_known,
        partitions=settings.partitions,
    )
    return reranked, served


def _graph_name(cfg: RecbatchConfig) -> str:
    if cfg.graph.source == "edge_list":
        return cfg.graph.edge_list_path or "edge_list"
    return "events"


def evaluation_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, Any]:
    """Score the held-out edges for every variant in ``evaluation.variants``; replace their
    rows of ``eval_metrics``. Trained variants missing for the date are trained first."""
    run_date = cfg.effective_run_date()
    settings = cfg.evaluation
    nodes, edges = _graph(spark, cfg, run_date)
    num_nodes = nodes.count()
    held = held_out_from_graph(edges, settings.split, num_nodes, settings.negatives, settings.seed)
    held = held.localCheckpoint()
    if held.isEmpty():
        raise BladeInputError(
            f"no {settings.split} edges on {run_date.isoformat()}: set graph.split to random or "
            "time (graph.split=none keeps every edge for training)"
        )
    rows = [
        {**r, "split": settings.split}
        for r in evaluate_variants(spark, cfg, held, nodes, edges, settings.variants)
    ]
    truth = planted_relations(spark, cfg) if cfg.graph.source == "events" else None
    if truth is not None:
        rows += planted_agreement(spark, cfg, nodes, edges, truth, settings.variants)
    frame = spark.createDataFrame(
        [{**r, "run_date": run_date, "graph": _graph_name(cfg)} for r in rows], EVAL_SCHEMA
    )
    variants = ", ".join(f"'{v}'" for v in settings.variants)
    predicate = f"{run_date_predicate(run_date)} AND variant IN ({variants})"
    replace_where(spark, frame, cfg.table_path("eval_metrics"), predicate)
    overall = [r for r in rows if r["bucket"] == "all" and r["split"] == settings.split]
    return {"rows": len(rows), "metrics": overall}


def _variant_embeddings(
    spark: SparkSession, cfg: RecbatchConfig, nodes: DataFrame, variant: str
) -> tuple[DataFrame, str]:
    """(``node_index``, ``source``, ``target``) of a variant and its model version; popularity
    is s = [1], t = [training in-degree]."""
    run_date = cfg.effective_run_date()
    if variant == "popularity":
        rows = nodes.select(
            "node_index",
            F.array(F.lit(1.0)).cast("array<float>").alias("source"),
            F.array(F.col("in_degree").cast("float")).alias("target"),
        )
        return rows, f"popularity-{run_date.isoformat()}"
    stored = _existing_embeddings(spark, cfg, run_date, variant)
    return stored.select("node_index", "source", "target"), stored.select("model_version").head()[0]


def variant_scorer(
    spark: SparkSession,
    cfg: RecbatchConfig,
    nodes: DataFrame,
    variant: str,
    graph: TrainingGraph,
) -> tuple[PairScorer, str]:
    """The scorer an evaluation ranks a variant with, and its version: the training-free floor
    on the training graph, popularity's vectors, or a trained variant's served scorer."""
    run_date = cfg.effective_run_date()
    if variant in FLOOR_SCORERS:
        return floor_scorer(variant, graph, cfg.proximity), f"{variant}-{run_date.isoformat()}"
    embeddings, version = _variant_embeddings(spark, cfg, nodes, variant)
    if variant == "popularity":
        return matrices_from_embeddings(variant, embeddings.toPandas(), graph.num_nodes), version
    return served_scorer(spark, cfg, variant, embeddings, version, graph)


def planted_agreement(
    spark: SparkSession,
    cfg: RecbatchConfig,
    nodes: DataFrame,
    edges: DataFrame,
    truth: DataFrame,
    variants: list[Variant],
) -> list[dict[str, Any]]:
    """Generated data only: the share of each variant's top-K recommendations that are planted
    relations (``planted_precision``) and that run against one (``planted_reversed``)."""
    k = cfg.recommendations.top_k
    known = edges.where(F.col("split") == TRAIN).select("src_index", "dst_index")
    ids = nodes.select("node_index", "node_id")
    rows = []
    for variant in variants:
        if variant in FLOOR_SCORERS:
            continue  # scored on held-out edges only; no vectors to rank a catalogue with
        embeddings, version = _variant_embeddings(spark, cfg, nodes, variant)
        top = top_k_recommendations(
            spark,
            embeddings,
            known,
            k=k,
            settings=cfg.recommendations,
            blocks_path=_work(cfg, cfg.effective_run_date(), "target_blocks", variant),
        )
        pairs = (
            top.join(ids.withColumnRenamed("node_id", "src"), "node_index")
            .join(
                ids.select(
                    F.col("node_index").alias("target_index"), F.col("node_id").alias("dst")
                ),
                "target_index",
            )
            .select("src", "dst")
            .localCheckpoint()
        )
        total = pairs.count()
        agreement = truth_agreement(pairs, truth)
        rows.append(
            {
                "variant": variant,
                "model_version": version,
                "split": f"planted_top{k}",
                "bucket": "all",
                "edges": total,
                "planted_precision": agreement.edges_in_truth / total if total else None,
                "planted_reversed": agreement.edges_reversed_in_truth / total if total else None,
            }
        )
        log.info(
            "%s: %.2f%% of its top-%d recommendations are planted relations, %.2f%% run "
            "against one",
            variant,
            100 * (rows[-1]["planted_precision"] or 0),
            k,
            100 * (rows[-1]["planted_reversed"] or 0),
        )
    return rows


def evaluate_variants(
    spark: SparkSession,
    cfg: RecbatchConfig,
    held: DataFrame,
    nodes: DataFrame,
    edges: DataFrame,
    variants: list[Variant],
) -> list[dict[str, Any]]:
    """Metric rows (``EVAL_SCHEMA`` less run date, graph, split) of each variant on ``held``."""
    num_nodes = nodes.count()
    degrees = nodes.select("node_index", "out_degree")
    cutoffs = bucket_cutoffs(held, degrees)
    bucketed = with_buckets(held, degrees, cutoffs).localCheckpoint()
    size = bucketed.agg(F.count(F.lit(1)), F.min(F.size("negatives"))).head()
    held_edges, negatives = int(size[0]), size[1]
    graph = train_graph_of(edges, num_nodes)
    rows: list[dict[str, Any]] = []
    for variant in variants:
        scorer, version = variant_scorer(spark, cfg, nodes, variant, graph)
        with timed(log, f"evaluating {variant} on {held_edges} held-out edges"):
            metrics = summarise(score_held_out_edges(spark, bucketed, scorer))
        for row in metrics:
            rows.append(
                {
                    **row,
                    "variant": variant,
                    "model_version": version,
                    "negatives": int(negatives or 0),
                    "bucket_low_max": cutoffs[0],
                    "bucket_mid_max": cutoffs[1],
                }
            )
        overall = metrics[0]
        log.info(
            "%s: Hits@100 %.4f, MRR %.4f, direction AUC %.4f (%d edges)",
            variant,
            overall["hits_100"],
            overall["mrr"],
            overall["direction_auc"],
            overall["edges"],
        )
    return rows


def _existing_embeddings(
    spark: SparkSession, cfg: RecbatchConfig, run_date: date, variant: str
) -> DataFrame:
    path = cfg.table_path("embeddings")
    if is_delta_table(spark, path):
        stored = (
            spark.read.format("delta")
            .load(path)
            .where((F.col("run_date") == F.lit(run_date)) & (F.col("variant") == variant))
        )
        if not stored.isEmpty():
            return stored
    train_variant(spark, cfg, variant)
    return _embeddings(spark, cfg, run_date, variant)
