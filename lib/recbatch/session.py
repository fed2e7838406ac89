"""The one place a SparkSession is built: jobs and tests both come through ``build_session``.

It wires the JVM side that PySpark does not ship (Delta, GraphFrames jars resolved by
lib/install.sh into ``.jars/``), the Delta SQL extension and catalog, a checkpoint directory
(GraphFrames' connected components needs one), UTC session time and local defaults from config.

Under ``spark-submit`` (spark-submit.sh) the JVM is already running with master, jars and driver
memory given on the command line; those launch-time settings are then left alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from recbatch.config import PROJECT_ROOT, RecbatchConfig, local_path
from recbatch.errors import RecbatchError
from recbatch.log import get_logger

log = get_logger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


class JarsUnavailable(RecbatchError):
    """A JVM library recbatch needs is not installed; the message says why and what to run."""


def jars_dir(cfg: RecbatchConfig) -> Path:
    path = Path(cfg.spark.jars_dir)
    return path if path.is_absolute() else PROJECT_ROOT / path


def library_jars(cfg: RecbatchConfig, library: str) -> list[Path]:
    """Jars of one library (``delta`` or ``graphframes``) as resolved by lib/install.sh."""
    return sorted((jars_dir(cfg) / library).glob("*.jar"))


def unavailable_reason(cfg: RecbatchConfig, library: str) -> str | None:
    """Why a JVM library cannot be used, or None when its jars are installed."""
    if library_jars(cfg, library):
        return None
    return f"{library} JVM jars are not installed under {jars_dir(cfg) / library}"


def require_library(cfg: RecbatchConfig, library: str) -> None:
    """Fail with a clear message (not a ClassNotFoundException) when a library is missing."""
    reason = unavailable_reason(cfg, library)
    if reason:
        raise JarsUnavailable(f"{reason}: run lib/install.sh (it says which repository failed)")


def all_jars(cfg: RecbatchConfig) -> list[Path]:
    return sorted(jars_dir(cfg).glob("*/*.jar"))


def launch_settings(cfg: RecbatchConfig) -> dict[str, str]:
    """Settings that only take effect when the JVM starts (spark-submit.sh passes the same)."""
    for library in ("delta", "graphframes"):
        require_library(cfg, library)
    settings = {
        "spark.master": cfg.spark.master,
        "spark.driver.memory": cfg.spark.driver_memory,
        "spark.jars": ",".join(str(p) for p in all_jars(cfg)),
    }
    return settings


def runtime_settings(cfg: RecbatchConfig) -> dict[str, str]:
    """Settings that can be applied whether or not the JVM is already running."""
    settings = {
        "spark.app.name": cfg.spark.app_name,
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.default.parallelism": str(cfg.spark.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        # Delta reads its log with this many tasks (default 50): keep it to the data's scale.
        "spark.databricks.delta.snapshotPartitions": str(cfg.spark.shuffle_partitions),
        "spark.sql.warehouse.dir": cfg.path("data_root") + "/warehouse",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": str(cfg.spark.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        # Delta: keep history cheap to read back; never evolve a schema silently.
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
    }
    settings.update(catalog_settings(cfg))
    settings.update(cfg.spark.extra_conf)
    return settings


DERBY_URL_KEY = "spark.hadoop.javax.jdo.option.ConnectionURL"
METASTORE_URIS_KEY = "spark.hadoop.hive.metastore.uris"


def catalog_settings(cfg: RecbatchConfig) -> dict[str, str]:
    """Which catalog the session's table names live in (``catalog.metastore``, docs/operations.md).

    ``hive`` without a metastore service or database in ``spark.extra_conf`` gets an embedded
    Derby database under the data root rather than Spark's default ``./metastore_db``, which
    would follow whatever directory a job happens to be started from.
    """
    if cfg.catalog.metastore == "session":
        return {"spark.sql.catalogImplementation": "in-memory"}
    settings = {"spark.sql.catalogImplementation": "hive"}
    if not {DERBY_URL_KEY, METASTORE_URIS_KEY} & cfg.spark.extra_conf.keys():
        settings[DERBY_URL_KEY] = f"jdbc:derby:;databaseName={embedded_metastore(cfg)};create=true"
    return settings


def embedded_metastore(cfg: RecbatchConfig) -> str:
    """The embedded Derby metastore's folder: a local path under the data root."""
    root = local_path(cfg.path("data_root"))
    if root is None:
        raise RecbatchError(
            f"catalog.metastore=hive needs a metastore service or database on a data root like "
            f"{cfg.path('data_root')}: set {METASTORE_URIS_KEY} or {DERBY_URL_KEY} in"
            " spark.extra_conf"
        )
    return str(root / "metastore_db")


def launched_by_spark_submit() -> bool:
    """True when this Python process was started by spark-submit (the JVM is already up)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_session(cfg: RecbatchConfig) -> SparkSession:
    """Build (or return the running) SparkSession configured from ``cfg``."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    settings = runtime_settings(cfg)
    if not launched_by_spark_submit():
        settings.update(launch_settings(cfg))
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.spark.log_level)
    spark.sparkContext.setCheckpointDir(cfg.path("checkpoints"))
    log.info(
        "Spark %s session on %s (%d shuffle partitions, jars: %s)",
        spark.version,
        spark.sparkContext.master,
        cfg.spark.shuffle_partitions,
        ", ".join(p.name for p in all_jars(cfg)) or "none",
    )
    return spark
