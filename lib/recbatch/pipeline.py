"""The refresh pipeline: every stage in order for one run date, each reading earlier outputs.

Stages so far: generate (embedded default only) -> ingest -> examples -> flip model and training
weights -> conversion model (trained and evaluated per weighting method) -> scores with
uncertainty -> thresholds per uncertainty bucket -> decisions. The graph stages (BLADE) join this
list once GraphFrames' jars can be installed (README, Known issues).
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from recbatch.config import RecbatchConfig
from recbatch.events.generator import generate
from recbatch.events.ingest import IngestReport, events_summary, ingest_events
from recbatch.feedback.conversion import conversion_stage
from recbatch.feedback.examples import examples_stage
from recbatch.feedback.stage import flip_weights_stage
from recbatch.log import get_logger, timed
from recbatch.thresholds.stage import decisions_stage, thresholds_stage
from recbatch.uncertainty.scores import scores_stage

log = get_logger(__name__)


def run_pipeline(spark: SparkSession, cfg: RecbatchConfig, *, generate_input: bool) -> IngestReport:
    """Run the stages; ``generate_input`` first writes a synthetic raw log (embedded default)."""
    if generate_input:
        with timed(log, "stage generate"):
            generate(spark, cfg.generator, cfg.path("raw_events"), cfg.path("ground_truth"))
    with timed(log, "stage ingest"):
        report = ingest_events(spark, cfg)
    with timed(log, "stage examples"):
        examples_stage(spark, cfg)
    with timed(log, "stage flip model and training weights"):
        flip_weights_stage(spark, cfg)
    with timed(log, "stage conversion model"):
        conversion_stage(spark, cfg)
    with timed(log, "stage scores with uncertainty"):
        scores_stage(spark, cfg)
    with timed(log, "stage thresholds"):
        thresholds_stage(spark, cfg)
    with timed(log, "stage decisions"):
        decisions_stage(spark, cfg)
    return report


def query_guide(spark: SparkSession, cfg: RecbatchConfig, report: IngestReport) -> str:
    """Where the tables are and how to query them, printed at the end of a run."""
    summary = events_summary(spark, report.events_table).toPandas().to_string(index=False)
    return "\n".join(
        [
            "",
            "recbatch pipeline finished.",
            f"  ingest:     {report.summary()}",
            f"  events:     {report.events_table}   (Delta, partitioned by event_date)",
            f"  quarantine: {report.quarantine_table}   (Delta, reason + source of each bad row)",
            "  examples, flip_model, flip_calibration, training_weights, conversion_metrics,"
            f" scores, thresholds, decisions: {cfg.path('tables')}/",
            f"  raw input:  {report.input_path}",
            f"  truth:      {cfg.path('ground_truth')}   (Parquet: views, item/category relations)",
            "",
            summary,
            "",
            "Query them with Spark SQL, e.g.:",
            "  ./spark-submit.sh sql 'SELECT event_type, count(*) FROM {events} GROUP BY 1'",
            "  ./spark-submit.sh sql 'SELECT reason, count(*) FROM {quarantine} GROUP BY 1'",
            "  ./spark-submit.sh sql 'DESCRIBE HISTORY {events}'",
            "  ./spark-submit.sh sql 'SELECT signal_state, elapsed_bucket, negatives, z FROM"
            " {flip_model} ORDER BY 1, 2'",
            "  ./spark-submit.sh sql 'SELECT * FROM {conversion_metrics}'",
            "  ./spark-submit.sh sql 'SELECT method, bucket, uncertainty_lo, uncertainty_hi,"
            " score_threshold, expected_precision, expected_recall FROM {thresholds}'",
            "  ({name} stands for the Delta table name of this config; the paths above work in"
            " any Spark SQL as delta.`<path>`)",
        ]
    )
