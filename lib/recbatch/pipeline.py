"""The refresh pipeline: every stage in order for one run date, each reading earlier outputs.

Stages so far: generate (embedded default only) -> ingest -> the product catalogue, when there is
one (products) -> the directed product graph (graph) ->
degree-aware neighbourhood samples (samples) -> BLADE dual embeddings (blade) -> top-K related
products (recommendations) -> link scores with uncertainty (link_scores) -> link thresholds ->
decisions on the recommendations (link_decisions) -> held-out evaluation (blade_eval) -> examples -> flip model and training weights ->
conversion model (trained and evaluated per weighting method) -> scores with uncertainty ->
thresholds per uncertainty bucket -> decisions -> table names in the catalog (register) -> report.

The stages are a declarative list; ``recbatch.runs.run_stages`` runs them with a record per
stage in the ``runs`` table, skips the ones already done for the date and config, and holds the
run date's lock (docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyspark.sql import SparkSession

from recbatch.blade.stage import blade_stage, evaluation_stage, recommendations_stage
from recbatch.catalog import register_stage
from recbatch.config import RecbatchConfig
from recbatch.events.generator import generate
from recbatch.events.ingest import IngestReport, events_summary, ingest_events
from recbatch.events.products import products_stage
from recbatch.feedback.conversion import conversion_stage
from recbatch.feedback.examples import examples_stage
from recbatch.feedback.stage import flip_weights_stage
from recbatch.graph.stage import graph_stage, samples_stage
from recbatch.links.stage import link_decisions_stage, link_scores_stage, link_thresholds_stage
from recbatch.log import get_logger
from recbatch.report.stage import report_dir, report_stage
from recbatch.runs import Counts, RunLock, RunResult, Stage, StageSelection, run_stages
from recbatch.thresholds.stage import decisions_stage, thresholds_stage
from recbatch.uncertainty.scores import scores_stage

log = get_logger(__name__)


def _generate(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, int]:
    return generate(
        spark,
        cfg.generator,
        cfg.path("raw_events"),
        cfg.path("ground_truth"),
        catalog_path=cfg.path("raw_catalog"),
    )


def _out(key: str) -> Callable[[dict[str, Any]], Counts]:
    """Counts of a stage whose summary dict reports the rows it wrote under ``key``."""

    def counts(result: dict[str, Any]) -> Counts:
        return None, int(result[key])

    return counts


def _ingest_counts(report: IngestReport) -> Counts:
    """Rows read, rows accepted (the insert count, 0 on a re-run, is in the summary)."""
    return report.total_rows, report.accepted_rows


PIPELINE_STAGES: tuple[Stage, ...] = (
    Stage("generate", _generate, "generate", lambda counts: (None, sum(counts.values()))),
    Stage("ingest", ingest_events, "ingest", _ingest_counts),
    Stage(
        "products",
        products_stage,
        "product catalogue",
        lambda r: (r.get("total_rows"), int(r["products"])),
    ),
    Stage("graph", graph_stage, "directed product graph", _out("edges")),
    Stage("samples", samples_stage, "neighbourhood samples", _out("rows")),
    Stage("blade", blade_stage, "BLADE dual embeddings", _out("nodes")),
    Stage("recommendations", recommendations_stage, "top-K recommendations", _out("rows")),
    Stage("link_scores", link_scores_stage, "link scores with uncertainty", _out("rows")),
    Stage("link_thresholds", link_thresholds_stage, "link thresholds", lambda _: (None, None)),
    Stage("link_decisions", link_decisions_stage, "decisions on recommendations", _out("rows")),
    Stage("blade_eval", evaluation_stage, "BLADE evaluation", _out("rows")),
    Stage("examples", examples_stage, "examples", _out("examples")),
    Stage("flip_weights", flip_weights_stage, "flip model and training weights", _out("examples")),
    Stage("conversion", conversion_stage, "conversion model", lambda rows: (None, len(rows))),
    Stage("scores", scores_stage, "scores with uncertainty", _out("rows")),
    Stage("thresholds", thresholds_stage, "thresholds", lambda _: (None, None)),
    Stage("decisions", decisions_stage, "decisions", _out("rows")),
    Stage("register", register_stage, "table names in the catalog", _out("registered")),
    Stage("report", report_stage, "report", lambda _: (None, None)),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in PIPELINE_STAGES)


def pipeline_stages(*, generate_input: bool) -> list[Stage]:
    """The stages of one refresh; synthetic input is generated only when asked."""
    return [s for s in PIPELINE_STAGES if generate_input or s.name != "generate"]


def run_pipeline(
    spark: SparkSession,
    cfg: RecbatchConfig,
    *,
    generate_input: bool,
    selection: StageSelection | None = None,
    lock: RunLock | None = None,
) -> RunResult:
    """Run the stages; ``generate_input`` first writes a synthetic raw log (embedded default).

    Stages already done for the run date under the same config are skipped unless
    ``selection`` forces them; ``lock`` is the run date's lock when the caller already holds it.
    """
    return run_stages(
        spark, cfg, pipeline_stages(generate_input=generate_input), selection, lock=lock
    )


def query_guide(spark: SparkSession, cfg: RecbatchConfig, run: RunResult) -> str:
    """Where the tables are and how to query them, printed at the end of a run."""
    report: IngestReport | None = run.result("ingest")
    ingested = report.summary() if report else "skipped (already done for this run date and config)"
    events = cfg.table_path("events")
    summary = events_summary(spark, events).toPandas().to_string(index=False)
    return "\n".join(
        [
            "",
            f"recbatch pipeline finished: run {run.run_id} for {run.run_date} (config"
            f" {run.fingerprint}); ran {', '.join(run.names('succeeded')) or 'nothing'};"
            f" skipped {', '.join(run.names('skipped')) or 'nothing'}.",
            f"  ingest:     {ingested}",
            f"  events:     {events}   (Delta, partitioned by event_date)",
            f"  quarantine: {cfg.table_path('quarantine')}   (Delta, reason + source of each"
            " bad row)",
            f"  products:   {cfg.table_path('products')}   (Delta, the catalogue: category and"
            " attributes of each product, when there is one)",
            "  embeddings, recommendations, eval_metrics:"
            f" {cfg.path('tables')}/   (referee export: {cfg.path('exports')}/embeddings/)",
            "  graph_nodes, graph_edges, graph_stats, graph_quarantine, graph_samples:"
            f" {cfg.path('tables')}/   (samples as Parquet for torch: {cfg.path('samples')}/)",
            "  examples, flip_model, flip_calibration, training_weights, conversion_metrics,"
            f" scores, thresholds, decisions: {cfg.path('tables')}/",
            f"  runs:       {cfg.table_path('runs')}   (Delta, one row per stage execution)",
            f"  report:     {report_dir(cfg, run.run_date)}/index.html   (HTML + PNG plots)",
            f"  raw input:  {cfg.ingest_input()}",
            f"  truth:      {cfg.path('ground_truth')}   (Parquet: views, item/category relations)",
            "",
            summary,
            "",
            f"Query them by name (database {cfg.catalog.database}), e.g.:",
            "  ./spark-submit.sh sql 'SELECT event_type, count(*) FROM events GROUP BY 1'",
            "  ./spark-submit.sh sql 'SELECT reason, count(*) FROM quarantine GROUP BY 1'",
            "  ./spark-submit.sh sql 'DESCRIBE HISTORY events'",
            "  ./spark-submit.sh sql 'SELECT * FROM conversion_metrics'",
            "  ./spark-submit.sh sql 'SELECT stage, status, seconds, rows_out, error FROM runs"
            f' WHERE run_id = "{run.run_id}" ORDER BY stage_index\'',
            "  ./spark-submit.sh sql 'SELECT method, bucket, uncertainty_lo, uncertainty_hi,"
            " score_threshold, expected_precision, expected_recall FROM thresholds'",
            "  ./spark-submit.sh spark-sql          (an interactive SQL shell with the same names)",
        ]
    )
