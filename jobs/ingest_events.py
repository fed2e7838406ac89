"""Validate raw events into the Delta ``events`` and ``quarantine`` tables.

./spark-submit.sh ingest_events [--config conf/local.yaml] [--set ingest.input_path=...]
"""

from recbatch.cli import run_job
from recbatch.events.ingest import ingest_events
from recbatch.session import build_session


def main(cfg, args) -> None:
    spark = build_session(cfg)
    report = ingest_events(spark, cfg)
    print(report.summary())


if __name__ == "__main__":
    run_job(main, __doc__)
