"""Serving a run date with an older run date's model, for a nightly refresh that retrains weekly.

Training is the blade stage's expensive step, and a catalogue's graph changes a little a day.
With ``blade.model_max_age_days`` = N, the blade stage first looks for a model trained within N
days before the run date on the same settings (``latest_trained_model``), and if there is one
it embeds the run date's graph with it (``recbatch.blade.train.embed_graph``) instead of
training: every product gets its vectors from its own sample and node inputs through the same
weights, products new since training included (from their attributes, degrees and neighbours;
``blade.node_inputs`` must have an inductive part for them, else the stage trains).

What a trained model leaves for this (``record_trained_model``), in
``paths.checkpoints/blade/<run date>/trained/<variant>/``:

* ``manifest.json`` (``TrainedModel``): its version, the digest of the settings it was trained
  with, its node count, and each GNN's fingerprint and checkpoint folder;
* ``nodes/``: its graph's ``node_id`` -> ``node_index``. A newer graph numbers its nodes afresh
  (dense, in id order), so a model with ID rows reads them through ``model_rows``.

Only a model that was trained is recorded: a run date served by an older model never becomes a
model to reuse, so a model's age always counts from its own training.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recbatch.config import RecbatchConfig, _join, local_path
from recbatch.io.publish import write_atomically
from recbatch.log import get_logger
from recbatch.proximity.graph import require_columns

log = get_logger(__name__)

MANIFEST_FILE = "manifest.json"
UNSEEN = -1
"""``model_row`` of a node the older model's graph did not have."""


@dataclass(frozen=True)
class TrainedModel:
    """A trained variant as ``manifest.json`` records it."""

    variant: str
    run_date: str
    model_version: str
    settings_digest: str
    num_nodes: int
    gnns: dict[str, dict[str, str]]
    """Per GNN of the variant: its ``fingerprint`` and ``checkpoint_dir``."""
    folder: str

    @property
    def nodes_path(self) -> str:
        """The trained graph's ``node_id`` -> ``node_index`` (its models' ID rows)."""
        return _join(self.folder, "nodes")


def trained_model_folder(cfg: RecbatchConfig, run_date: date, variant: str) -> str:
    """Where the variant trained on ``run_date`` is recorded."""
    path = _join(_join(cfg.path("checkpoints"), "blade"), run_date.isoformat())
    return _join(_join(path, "trained"), variant)


def _local(folder: str) -> Path:
    path = local_path(folder)
    if path is None:
        raise ValueError(f"paths.checkpoints must be a local or mounted path, got {folder}")
    return path


def record_trained_model(spark: SparkSession, model: TrainedModel, nodes: DataFrame) -> None:
    """Record a variant just trained: its graph's node ids first, then the manifest (written,
    then renamed), so a manifest always names a complete node table."""
    require_columns(nodes, ("node_id", "node_index"), "graph_nodes")
    write_atomically(
        spark, nodes.select("node_id", "node_index").repartition(1).write, model.nodes_path
    )
    folder = _local(model.folder)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{MANIFEST_FILE}.partial"
    partial.write_text(json.dumps(asdict(model), indent=2, sort_keys=True))
    os.replace(partial, folder / MANIFEST_FILE)


def load_trained_model(folder: str) -> TrainedModel | None:
    """The model recorded in ``folder``, or None where none is."""
    path = _local(folder) / MANIFEST_FILE
    if not path.exists():
        return None
    fields: dict[str, Any] = json.loads(path.read_text())
    return TrainedModel(**fields)


def latest_trained_model(
    cfg: RecbatchConfig, run_date: date, variant: str, settings_digest: str
) -> TrainedModel | None:
    """The variant's most recent model trained within ``blade.model_max_age_days`` before
    ``run_date`` on settings of this digest, or None (then the stage trains)."""
    for age in range(1, cfg.blade.model_max_age_days + 1):
        trained_on = run_date - timedelta(days=age)
        model = load_trained_model(trained_model_folder(cfg, trained_on, variant))
        if model is None:
            continue
        if model.settings_digest != settings_digest:
            log.info(
                "the %s model of %s was trained on other settings: not serving with it",
                variant,
                trained_on,
            )
            continue
        return model
    return None


def model_rows(nodes: DataFrame, trained_nodes: DataFrame) -> DataFrame:
    """``node_index``, ``model_row``: each node of ``nodes`` (``node_id``, ``node_index``) with
    its index in the older model's graph (``trained_nodes``, same columns), ``UNSEEN`` where
    that graph did not have it. The join is on the product's own id, which both graphs keep."""
    require_columns(nodes, ("node_id", "node_index"), "graph_nodes")
    require_columns(trained_nodes, ("node_id", "node_index"), "the trained model's nodes")
    older = trained_nodes.select("node_id", F.col("node_index").alias("model_row"))
    return (
        nodes.select("node_id", "node_index")
        .join(older, "node_id", "left")
        .select(
            "node_index",
            F.coalesce(F.col("model_row"), F.lit(UNSEEN)).cast("long").alias("model_row"),
        )
    )
