"""Pipeline stages ``link_scores``, ``link_thresholds`` and ``link_decisions``.

* ``link_scores_stage``: fits the scorer's heads on a bounded sample of training pairs, scores the
  run's labelled pairs (held-out edges against sampled non-edges of the same source, ``pairs``)
  with their uncertainty, and replaces the run's ``model = 'link'`` rows of Delta ``scores``
  (``example_id`` = the pair id, ``view_ts`` null). The heads are saved next to the run's work
  files, so the decisions score recommendations with exactly the scorer the thresholds saw.
* ``link_thresholds_stage``: the thresholds machinery on those scores
  (``thresholds.stage.fit_and_store``), into ``thresholds`` with ``model = 'link'``.
* ``link_decisions_stage``: scores every recommended pair, applies the *stored* link thresholds
  (``apply_thresholds``, as the decisions stage does) and replaces the run date's
  ``recommendations`` with ``probability``, ``uncertainty``, ``bucket``, ``threshold`` and
  ``accepted`` added.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recbatch.blade.stage import gnn_outputs
from recbatch.config import RecbatchConfig, _join, local_path
from recbatch.errors import RecbatchError
from recbatch.io.delta import replace_where, run_date_predicate, run_date_rows
from recbatch.links.members import LinkMembers, dropout_members, served_members
from recbatch.links.pairs import fit_pairs, labelled_pairs
from recbatch.links.scorer import ScorerHeads, fit_heads, score_pairs
from recbatch.links.settings import LinkUncertaintySettings
from recbatch.log import get_logger, timed
from recbatch.thresholds.apply import apply_thresholds
from recbatch.thresholds.stage import decided_counts, fit_and_store
from recbatch.thresholds.table import read_thresholds
from recbatch.uncertainty.scores import SCORES_COLUMNS

log = get_logger(__name__)

MODEL = "link"
RECOMMENDATION_COLUMNS = (
    "run_date",
    "product",
    "rank",
    "recommended_product",
    "score",
    "model_version",
    "probability",
    "uncertainty",
    "bucket",
    "threshold",
    "accepted",
)


class LinkInputError(RecbatchError):
    """What the link stages need (BLADE's embeddings, scores, thresholds) is missing."""


def link_version(cfg: RecbatchConfig, blade_version: str) -> str:
    """``link-<method>-<BLADE's model version>``: the scorer's name in ``scores`` and
    ``thresholds`` (a new BLADE model or estimator never reuses another's thresholds)."""
    return f"{MODEL}-{cfg.link_uncertainty.method}-{blade_version}"


def _rows(spark: SparkSession, cfg: RecbatchConfig, name: str, run_date: date) -> DataFrame:
    hint = "run the graph, blade and recommendations stages (or the pipeline) first"
    return run_date_rows(
        spark, cfg.table_path(name), run_date, name=name, hint=hint, error=LinkInputError
    )


def _blade(spark: SparkSession, cfg: RecbatchConfig, run_date: date) -> tuple[DataFrame, str]:
    embeddings = _rows(spark, cfg, "embeddings", run_date).where(F.col("variant") == "blade")
    first = embeddings.select("model_version").head()
    if first is None:
        raise LinkInputError(f"no blade embeddings for {run_date.isoformat()}: run blade first")
    return embeddings, first[0]


def link_members(spark: SparkSession, cfg: RecbatchConfig, nodes: DataFrame) -> LinkMembers:
    """The members of the configured estimator (``members``)."""
    run_date = cfg.effective_run_date()
    if cfg.link_uncertainty.method == "heads":
        embeddings, _ = _blade(spark, cfg, run_date)
        return served_members(embeddings, nodes.count())
    if cfg.blade.embedding != "composite":
        raise LinkInputError("link_uncertainty.method=mc_dropout needs blade.embedding=composite")
    gnns = gnn_outputs(spark, cfg, "blade")
    for name, paths in gnns.items():
        folder = local_path(paths["members"])
        if folder is None or not folder.exists():
            raise LinkInputError(
                f"BLADE's {name} channel has no MC-dropout draws at {paths['members']}: re-run "
                "the blade stage with link_uncertainty.method=mc_dropout"
            )
    return dropout_members(
        spark,
        gnns["existence"]["embeddings"],
        gnns["direction"]["embeddings"],
        gnns["existence"]["members"],
        gnns["direction"]["members"],
        nodes,
        direction_weight=cfg.blade.direction_weight,
        potential_weight=cfg.blade.potential_weight,
        source_prior_weight=cfg.blade.source_prior_weight,
    )


def fit_scorer(
    edges: DataFrame, members: LinkMembers, settings: LinkUncertaintySettings, num_nodes: int
) -> tuple[ScorerHeads, int]:
    """The scorer's heads fitted on the bounded sample of training pairs, and its size."""
    index, labels = fit_pairs(
        edges, settings.fit_edges, num_nodes, settings.negatives_per_edge, settings.seed
    )
    heads = fit_heads(
        members,
        index,
        labels,
        method=settings.method,
        heads=settings.heads,
        steps=settings.fit_steps,
        seed=settings.seed,
    )
    return heads, int(len(labels))


def _heads_file(cfg: RecbatchConfig, run_date: date) -> Path:
    location = _join(_join(_join(cfg.path("work"), "links"), run_date.isoformat()), "heads.npz")
    path = local_path(location)
    if path is None:
        raise LinkInputError(f"paths.work must be a local or mounted path, got {location}")
    return path


def save_heads(path: Path, heads: ScorerHeads, version: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, weight=heads.weight, bias=heads.bias, version=np.array(version))
    partial.replace(path)


def load_heads(path: Path, version: str) -> ScorerHeads:
    if not path.exists():
        raise LinkInputError(f"no link scorer at {path}: run link_scores for this run date first")
    stored = np.load(path)
    if str(stored["version"]) != version:
        raise LinkInputError(
            f"the link scorer at {path} is {stored['version']}, the run's model is {version}: "
            "run link_scores again"
        )
    return ScorerHeads(stored["weight"], stored["bias"])


def link_scores_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, Any]:
    """Score the run's labelled pairs with their uncertainty into ``scores`` (``model='link'``)."""
    run_date = cfg.effective_run_date()
    settings = cfg.link_uncertainty
    nodes = _rows(spark, cfg, "graph_nodes", run_date)
    edges = _rows(spark, cfg, "graph_edges", run_date)
    num_nodes = nodes.count()
    _, blade_version = _blade(spark, cfg, run_date)
    version = link_version(cfg, blade_version)
    with timed(log, f"link scorer members ({settings.method})"):
        members = link_members(spark, cfg, nodes)
    with timed(log, f"fitting the link scorer's heads on up to {settings.fit_edges} edges"):
        heads, fitted = fit_scorer(edges, members, settings, num_nodes)
    save_heads(_heads_file(cfg, run_date), heads, version)
    pairs = labelled_pairs(
        edges, settings.splits, num_nodes, settings.negatives_per_edge, settings.seed
    ).localCheckpoint()
    if pairs.isEmpty():
        raise LinkInputError(
            f"no {'/'.join(settings.splits)} edges on {run_date.isoformat()}: set graph.split to "
            "random or time (the link thresholds are fitted on held-out edges)"
        )
    scored = score_pairs(spark, pairs, members, heads, keep=["pair_id", "label"])
    rows = scored.select(
        F.lit(run_date).alias("run_date"),
        F.lit(MODEL).alias("model"),
        F.lit(version).alias("model_version"),
        F.lit(settings.method).alias("uncertainty_method"),
        F.col("pair_id").alias("example_id"),
        F.lit(None).cast("timestamp").alias("view_ts"),
        "score",
        "uncertainty",
        "label",
    ).select(*SCORES_COLUMNS)
    start = time.monotonic()
    predicate = f"{run_date_predicate(run_date)} AND model = '{MODEL}'"
    replace_where(spark, rows, cfg.table_path("scores"), predicate)
    seconds = time.monotonic() - start
    written = (
        spark.read.format("delta")
        .load(cfg.table_path("scores"))
        .where((F.col("run_date") == F.lit(run_date)) & (F.col("model") == MODEL))
        .agg(F.count(F.lit(1)).alias("rows"), F.sum("label").alias("positives"))
        .head()
    )
    summary = {
        "model_version": version,
        "method": settings.method,
        "members": members.count * len(heads.bias),
        "rows": int(written["rows"]),
        "positives": int(written["positives"] or 0),
        "negatives_per_edge": settings.negatives_per_edge,
        "fit_pairs": fitted,
        "scoring_seconds": round(seconds, 2),
        "pairs_per_s": round(written["rows"] / seconds, 1) if seconds > 0 else None,
    }
    log.info(
        "link scores: %d labelled pairs (%d held-out edges, %d sampled non-edges each) scored "
        "with %s uncertainty (%d members) in %.1fs incl. the Delta write; model %s",
        summary["rows"],
        summary["positives"],
        settings.negatives_per_edge,
        settings.method,
        summary["members"],
        seconds,
        version,
    )
    return summary


def link_thresholds_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, Any]:
    """Per-uncertainty-bucket thresholds of the link scores into ``thresholds``."""
    return fit_and_store(spark, cfg, MODEL, cfg.link_thresholds)


def link_decisions_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, Any]:
    """Probability, uncertainty and the stored rule's decision on every recommended pair."""
    run_date = cfg.effective_run_date()
    nodes = _rows(spark, cfg, "graph_nodes", run_date)
    recommendations = _rows(spark, cfg, "recommendations", run_date)
    _, blade_version = _blade(spark, cfg, run_date)
    version = link_version(cfg, blade_version)
    stored = read_thresholds(
        spark, cfg.table_path("thresholds"), model_version=version, run_date=run_date
    )
    if stored.isEmpty():
        raise LinkInputError(f"no link thresholds of {version}: run link_thresholds first")
    heads = load_heads(_heads_file(cfg, run_date), version)
    members = link_members(spark, cfg, nodes)
    ids = nodes.select("node_index", "node_id")
    pairs = (
        recommendations.select(*RECOMMENDATION_COLUMNS[:6])
        .withColumnRenamed("score", "dot")
        .join(
            ids.select(F.col("node_id").alias("product"), F.col("node_index").alias("src_index")),
            "product",
        )
        .join(
            ids.select(
                F.col("node_id").alias("recommended_product"),
                F.col("node_index").alias("dst_index"),
            ),
            "recommended_product",
        )
    )
    keep = ["run_date", "product", "rank", "recommended_product", "dot", "model_version"]
    scored = (
        score_pairs(spark, pairs, members, heads, keep=keep)
        .withColumnRenamed("score", "probability")
        .withColumnRenamed("dot", "score")
    )
    decided = apply_thresholds(scored, stored, method="per_bucket", score_col="probability").select(
        *RECOMMENDATION_COLUMNS
    )
    path = cfg.table_path("recommendations")
    replace_where(spark, decided, path, run_date_predicate(run_date), merge_schema=True)
    counts: dict[str, Any] = decided_counts(spark, path, run_date)
    counts["accepted_share"] = counts["accepted"] / counts["rows"] if counts["rows"] else 0.0
    counts["model_version"] = version
    log.info(
        "link decisions: %d of %d recommendations accepted (%.1f%%) by the thresholds of %s "
        "(%d without a bucket, rejected) into %s",
        counts["accepted"],
        counts["rows"],
        100 * counts["accepted_share"],
        version,
        counts["unbucketed"],
        path,
    )
    return counts
