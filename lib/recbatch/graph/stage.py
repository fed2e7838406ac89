"""Pipeline stages ``graph`` (edges -> Delta graph tables) and ``samples`` (-> Parquet + Delta).

``graph_stage`` reads the configured input (co-purchases from ``events``, or a TSV edge list),
quarantines bad rows, indexes the nodes, splits the edges, computes the GraphFrames statistics
and replaces the run date's rows of ``graph_nodes``, ``graph_edges``, ``graph_stats`` and
``graph_quarantine``. ``samples_stage`` reads those tables back (training edges only), samples
both roles of every node and publishes the fixed-shape rows as Parquet under
``paths.samples/<run date>/<law>`` (one atomic swap) and as the Delta table ``graph_samples``
(the run date's rows of that law replaced: the fixed fan-out baseline, ``sampling.law=constant``,
is kept beside the degree-aware sample).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recbatch.config import RecbatchConfig, _join
from recbatch.graph import build, stats
from recbatch.graph.attributes import ATTRIBUTE_COLUMNS, node_attributes, with_attributes
from recbatch.graph.budget import ROLES, SOURCE, TARGET, DegreeLaw, degree_law, equal_cost_law
from recbatch.graph.errors import GraphInputError
from recbatch.graph.samples import SAMPLE_COLUMNS, sample_rows, write_sample_files
from recbatch.graph.sampling import SamplerInput, sample_neighbourhoods
from recbatch.graph.settings import SamplingSettings
from recbatch.graph.split import TRAIN, split_edges
from recbatch.graph.stats import PowerLawFit
from recbatch.graph.truth import planted_relations, truth_agreement
from recbatch.io.delta import is_delta_table, replace_where, run_date_predicate, run_date_rows
from recbatch.log import get_logger, timed

log = get_logger(__name__)

STATS_SCHEMA = (
    "run_date date, source string, nodes long, edges long, reciprocated_edges long, "
    "reciprocity double, components long, largest_component_nodes long, out_alpha double, "
    "out_dmin int, in_alpha double, in_dmin int, train_edges long, val_edges long, "
    "test_edges long, quarantined long, truth_relations long, edges_in_truth long, "
    "edges_reversed_in_truth long"
)


def read_graph_input(spark: SparkSession, cfg: RecbatchConfig) -> build.EdgeInput:
    """The configured edges: co-purchases from ``events`` or the edge list file."""
    settings = cfg.graph
    if settings.source == "edge_list":
        nodes = cfg.project_file(settings.nodes_path) if settings.nodes_path else None
        edge_list = cfg.project_file(settings.edge_list_path or "")
        return build.read_edge_list(
            spark, edge_list, settings, nodes_path=nodes, ids=cfg.ingest.ids
        )
    events = cfg.table_path("events")
    if not is_delta_table(spark, events):
        raise GraphInputError(f"no events table at {events}: run the ingest stage first")
    return build.copurchase_edges(spark.read.format("delta").load(events), settings)


def graph_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, Any]:
    """Build, split and describe the directed graph of the run date; write the graph tables."""
    run_date = cfg.effective_run_date()
    edge_input = read_graph_input(spark, cfg)
    quarantined = _write_quarantine(spark, cfg, edge_input.quarantine, run_date)
    hint = (
        "no customer bought two different products within graph.buy_window_days "
        f"({cfg.graph.buy_window_days})"
        if edge_input.source == "events"
        else "the file has no valid edge"
    )
    edges = edge_input.edges.localCheckpoint()
    build.require_edges(edges, edge_input.source, hint)

    with timed(log, "graph: node index and edge split"):
        nodes = build.index_nodes(edge_input.nodes).localCheckpoint()
        indexed = build.with_indices(edges, nodes)
        split = split_edges(indexed, cfg.graph).localCheckpoint()
    train = split.where(F.col("split") == TRAIN)
    with timed(log, "graph: GraphFrames degrees, components, reciprocity"):
        full_graph = build.graph_frame(nodes, split)
        train_degrees = stats.node_degrees(build.graph_frame(nodes, train)).localCheckpoint()
        components = stats.weak_components(
            full_graph, cfg.graph.components_algorithm
        ).localCheckpoint()
        summary = stats.graph_stats(
            full_graph, train_degrees, components, cfg.graph.powerlaw_max_dmin
        )

    attributes, attributes_source = node_attributes(spark, cfg)
    node_rows = (
        with_attributes(nodes, attributes, cfg)
        .join(train_degrees.withColumnRenamed("id", "node_index"), "node_index")
        .join(components.withColumnRenamed("id", "node_index"), "node_index")
        .select(
            F.lit(run_date).alias("run_date"),
            "node_index",
            "node_id",
            F.col("out_degree").cast("int"),
            F.col("in_degree").cast("int"),
            "component",
            *ATTRIBUTE_COLUMNS,
        )
    )
    edge_rows = split.select(
        F.lit(run_date).alias("run_date"),
        "src",
        "dst",
        "src_index",
        "dst_index",
        "weight",
        "first_ts",
        "last_ts",
        "split",
    )
    predicate = run_date_predicate(run_date)
    replace_where(spark, node_rows, cfg.table_path("graph_nodes"), predicate, merge_schema=True)
    replace_where(spark, edge_rows, cfg.table_path("graph_edges"), predicate)
    split_counts = {r["split"]: int(r["count"]) for r in split.groupBy("split").count().collect()}
    row = {
        "run_date": run_date,
        "source": edge_input.source,
        **summary.as_row(),
        **{f"{name}_edges": split_counts.get(name, 0) for name in ("train", "val", "test")},
        "quarantined": quarantined,
        **_truth_columns(spark, cfg, edges),
    }
    stats_frame = spark.createDataFrame([row], STATS_SCHEMA)
    replace_where(spark, stats_frame, cfg.table_path("graph_stats"), predicate)
    log.info(
        "graph tables for %s: %d nodes, %d edges (%s), %d rows quarantined",
        run_date,
        summary.nodes,
        summary.edges,
        ", ".join(f"{k} {v}" for k, v in sorted(split_counts.items())),
        quarantined,
    )
    described = _described_nodes(node_rows, attributes_source, summary.nodes)
    return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in row.items()} | described


def _described_nodes(node_rows: DataFrame, source: str, nodes: int) -> dict[str, Any]:
    """How many of the graph's nodes have a category (from ``source``), logged and returned."""
    described = node_rows.where(F.col("category_id").isNotNull()).count() if source != "none" else 0
    log.info(
        "graph nodes: %d of %d have a category (from %s)%s",
        described,
        nodes,
        source,
        "; no product catalogue (ingest.catalog_path)" if source != "products" else "",
    )
    return {"attributes_source": source, "nodes_with_category": described}


def _truth_columns(spark: SparkSession, cfg: RecbatchConfig, edges: DataFrame) -> dict[str, Any]:
    """The agreement with planted relations for co-purchase graphs of generated data, else nulls."""
    truth = planted_relations(spark, cfg) if cfg.graph.source == "events" else None
    if truth is None:
        return dict.fromkeys(("truth_relations", "edges_in_truth", "edges_reversed_in_truth"))
    agreement = truth_agreement(edges, truth)
    log.info(
        "planted relations: %d; %d edges follow one, %d run against one (their reverse is planted)",
        agreement.truth_relations,
        agreement.edges_in_truth,
        agreement.edges_reversed_in_truth,
    )
    return asdict(agreement)


def _write_quarantine(
    spark: SparkSession, cfg: RecbatchConfig, quarantine: DataFrame, run_date: date
) -> int:
    rows = quarantine.select(
        F.lit(run_date).alias("run_date"), *build.QUARANTINE_COLUMNS
    ).localCheckpoint()
    replace_where(spark, rows, cfg.table_path("graph_quarantine"), run_date_predicate(run_date))
    return rows.count()


# --- samples --------------------------------------------------------------------------------------


def _graph_table(spark: SparkSession, cfg: RecbatchConfig, name: str, run_date: date) -> DataFrame:
    return run_date_rows(
        spark,
        cfg.table_path(name),
        run_date,
        name=name,
        hint="run the graph stage (or the pipeline) for this run date first",
        error=GraphInputError,
    )


def _fits(stats_row: dict[str, Any]) -> dict[str, PowerLawFit | None]:
    """The power-law fits stored by the graph stage: out-degree for sources, in for targets."""
    fits: dict[str, PowerLawFit | None] = {}
    for role, prefix in zip(ROLES, ("out", "in"), strict=True):
        alpha, d_min = stats_row[f"{prefix}_alpha"], stats_row[f"{prefix}_dmin"]
        fits[role] = PowerLawFit(alpha, d_min, 0, 0.0) if alpha is not None else None
    return fits


def sampling_laws(
    settings: SamplingSettings, fits: dict[str, PowerLawFit | None], nodes: DataFrame
) -> dict[str, DegreeLaw]:
    """Each role's degree law; ``constant_k=mean_budget`` resolved on this graph's degrees."""
    if settings.law == "constant" and settings.constant_k == "mean_budget":
        power = settings.model_copy(update={"law": "power", "constant_k": None})
        columns = {SOURCE: "out_degree", TARGET: "in_degree"}
        return {
            role: equal_cost_law(degree_law(power, fit), nodes, columns[role])
            for role, fit in fits.items()
        }
    return {role: degree_law(settings, fit) for role, fit in fits.items()}


def sample_folder(settings: SamplingSettings) -> str:
    """``power``, ``constant``, or ``constant-mean_budget`` (the fixed fan-out of equal cost)."""
    if settings.law == "constant" and settings.constant_k == "mean_budget":
        return "constant-mean_budget"
    return settings.law


def samples_path(cfg: RecbatchConfig, run_date: date, folder: str | None = None) -> str:
    """The sample Parquet folder of a run date and sampler (what the torch workers read):
    ``paths.samples/<run date>/<sample_folder>``, so the degree-aware sample (``power``) and
    the fixed fan-out baselines (``constant``, ``constant-mean_budget``) of one date live side
    by side."""
    return _join(
        _join(cfg.path("samples"), run_date.isoformat()), folder or sample_folder(cfg.sampling)
    )


def samples_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, Any]:
    """Sample both roles of every node on the training graph; publish Parquet and Delta rows."""
    run_date = cfg.effective_run_date()
    settings = cfg.sampling
    nodes = _graph_table(spark, cfg, "graph_nodes", run_date)
    edges = _graph_table(spark, cfg, "graph_edges", run_date).where(F.col("split") == TRAIN)
    stats_row = _graph_table(spark, cfg, "graph_stats", run_date).head().asDict()
    laws = sampling_laws(settings, _fits(stats_row), nodes)
    for role, law in laws.items():
        log.info(
            "%s budget k(d) = %d + %d * d^-%.3f (law %s)",
            role,
            law.k_min,
            law.k_max - law.k_min,
            law.exponent,
            settings.law,
        )
    sampler_input = SamplerInput(
        nodes.select("node_index", "out_degree", "in_degree"),
        edges.select("src_index", "dst_index", "weight"),
        laws,
    )
    sample = sample_neighbourhoods(sampler_input, settings)
    rows = sample_rows(
        sample, nodes.select("node_index", "node_id"), settings.hops, settings.k_max
    ).localCheckpoint()

    target = samples_path(cfg, run_date)
    with timed(log, f"writing samples to {target}"):
        write_sample_files(spark, rows, target, settings.files)
    delta_rows = rows.select(
        F.lit(run_date).alias("run_date"), F.lit(settings.law).alias("law"), *SAMPLE_COLUMNS
    )
    predicate = f"{run_date_predicate(run_date)} AND law = '{settings.law}'"
    replace_where(spark, delta_rows, cfg.table_path("graph_samples"), predicate)
    summary = _sample_summary(rows)
    summary["parquet"] = target
    log.info("samples for %s: %s", run_date, summary)
    return summary


def _sample_summary(rows: DataFrame) -> dict[str, Any]:
    """Rows and the mean budget and filled slots per role (one small row per role)."""
    filled = F.aggregate("hop_counts", F.lit(0), lambda acc, x: acc + x)
    per_role = (
        rows.groupBy("role")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.avg("budget").alias("mean_budget"),
            F.avg(filled).alias("mean_filled"),
        )
        .collect()
    )
    summary: dict[str, Any] = {"rows": sum(int(r["rows"]) for r in per_role)}
    for r in per_role:
        prefix = "source" if r["role"] == SOURCE else "target"
        summary[f"{prefix}_mean_budget"] = round(float(r["mean_budget"]), 3)
        summary[f"{prefix}_mean_filled"] = round(float(r["mean_filled"]), 3)
    return summary
