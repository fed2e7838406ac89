"""Run one Spark SQL statement with recbatch's session (Delta enabled) and print the result.

    ./spark-submit.sh sql 'SELECT reason, count(*) FROM delta.`var/local/tables/quarantine` GROUP BY 1'

"""

from recbatch.cli import run_job
from recbatch.session import build_session


def add_arguments(parser) -> None:
    parser.add_argument("statement", help="the SQL statement")
    parser.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")


def main(cfg, args) -> None:
    spark = build_session(cfg)
    spark.sql(args.statement).show(args.limit, truncate=False)


if __name__ == "__main__":
    run_job(main, __doc__, add_arguments=add_arguments)
