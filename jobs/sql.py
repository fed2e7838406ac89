"""Run one Spark SQL statement with recbatch's session (Delta enabled) and print the result.

``{name}`` in the statement stands for the Delta table ``name`` of the configured environment
(``{events}`` -> delta.`<paths.tables>/events`), so the same query works locally and on a cluster:

    ./spark-submit.sh sql 'SELECT reason, count(*) FROM {quarantine} GROUP BY 1'
    ./spark-submit.sh sql 'SELECT count(*) FROM {events} VERSION AS OF 0'
"""

from pyspark.errors import AnalysisException

from recbatch.cli import run_job
from recbatch.errors import RecbatchError
from recbatch.session import build_session
from recbatch.sql import expand_table_names


def add_arguments(parser) -> None:
    parser.add_argument("statement", help="the SQL statement; {table} names a recbatch table")
    parser.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")


def main(cfg, args) -> None:
    spark = build_session(cfg)
    statement = expand_table_names(args.statement, cfg)
    try:
        result = spark.sql(statement)
    except AnalysisException as err:
        raise RecbatchError(f"SQL error in: {statement}\n{str(err).splitlines()[0]}") from err
    result.show(args.limit, truncate=False)


if __name__ == "__main__":
    run_job(main, __doc__, add_arguments=add_arguments)
