"""Run one Spark SQL statement on recbatch's tables, by name, and print the result.

The tables (events, quarantine, examples, flip_model, flip_calibration, training_weights,
conversion_metrics, scores, thresholds, decisions, runs) are in the database ``catalog.database``
(default ``recbatch``), which is the current one:

    ./spark-submit.sh sql 'SELECT reason, count(*) FROM quarantine GROUP BY 1'
    ./spark-submit.sh sql 'SELECT count(*) FROM recbatch.events VERSION AS OF 0'

For an interactive shell: ./spark-submit.sh spark-sql
"""

from recbatch.cli import run_job
from recbatch.session import build_session
from recbatch.sql import run_sql


def add_arguments(parser) -> None:
    parser.add_argument("statement", help="the SQL statement (tables by name)")
    parser.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")


def main(cfg, args) -> None:
    spark = build_session(cfg)
    run_sql(spark, cfg, args.statement).show(args.limit, truncate=False)


if __name__ == "__main__":
    run_job(main, __doc__, add_arguments=add_arguments)
