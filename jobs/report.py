"""Write the run report: one HTML page with PNG plots, from the run date's Delta tables.

./spark-submit.sh report [--set run_date=2026-11-22]

Reads only the configured data root's tables and writes <data_root>/reports/<run_date>/index.html
with its plots beside it, replacing the previous report of that date in one rename (a failed run
keeps it). Sections whose tables are missing say so instead of failing. Prints the page's path.
"""

from recbatch.cli import run_job
from recbatch.report import report_stage
from recbatch.session import build_session


def main(cfg, args) -> None:
    spark = build_session(cfg)
    print(report_stage(spark, cfg))


if __name__ == "__main__":
    run_job(main, __doc__)
