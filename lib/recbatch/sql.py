"""SQL on recbatch's tables by name: what ``./spark-submit.sh sql "SELECT ..."`` runs.

The statement runs in the catalog database (``recbatch`` by default), so ``thresholds`` and
``recbatch.thresholds`` both name the Delta table at ``paths.tables``/thresholds, in every
environment. With ``catalog.metastore: session`` the names are registered by this session first
(``recbatch.catalog``); with ``hive`` they come from the shared metastore.
"""

from __future__ import annotations

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession

from recbatch.catalog import CatalogError, metastore_errors, register_tables
from recbatch.config import RecbatchConfig
from recbatch.errors import RecbatchError


class SqlError(RecbatchError):
    """The statement does not parse or names something that does not exist."""


def use_catalog(spark: SparkSession, cfg: RecbatchConfig) -> None:
    """Make the output tables' names resolvable and their database the current one."""
    database = cfg.catalog.database
    with metastore_errors(cfg):
        if cfg.catalog.metastore == "session":
            register_tables(spark, cfg)
        elif not spark.catalog.databaseExists(database):
            raise CatalogError(
                f"database {database} is not in the Hive metastore yet: a pipeline run registers"
                " it (stage register), or run ./spark-submit.sh register"
            )
        spark.catalog.setCurrentDatabase(database)


def run_sql(spark: SparkSession, cfg: RecbatchConfig, statement: str) -> DataFrame:
    """The statement's result, with a one-line error instead of an analyzer stack trace."""
    use_catalog(spark, cfg)
    try:
        return spark.sql(statement)
    except AnalysisException as err:
        raise SqlError(f"SQL error in: {statement}\n{str(err).splitlines()[0]}") from err
