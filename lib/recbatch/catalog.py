"""Names for recbatch's Delta tables in SQL: ``recbatch.thresholds`` instead of a path.

The tables are written by path (``paths.tables``/NAME); a catalog entry is only a pointer to that
location (``CREATE TABLE ... USING DELTA LOCATION``), so a name always reads the newest version
and a registration never copies or rewrites data. Where the pointers live is
``catalog.metastore`` (docs/operations.md, "SQL by name"):

* ``session``: each SQL session registers the tables it finds, in its own in-memory catalog
  (``register_tables``; ``init_sql`` writes the same for ``spark-sql -i``). Nothing is shared,
  so no process waits on a metastore lock, and a table moved to a new data root is found there.
* ``hive``: the pipeline's ``register`` stage writes the pointers to a shared Hive metastore;
  re-running it changes nothing, and a pointer to an old location is repaired.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from recbatch.config import PROJECT_ROOT, ConfigError, RecbatchConfig, load_config, local_path
from recbatch.errors import RecbatchError
from recbatch.io.delta import is_delta_table
from recbatch.log import get_logger

log = get_logger(__name__)

OUTPUT_TABLES: dict[str, str] = {
    "events": "accepted events, partitioned by event_date",
    "quarantine": "rejected input rows with reason and source",
    "products": "the product catalogue as of the last run: id, category, attributes",
    "graph_nodes": "products of the directed graph: index, training degrees, weak component",
    "graph_edges": "directed edges U -> V with weight, first/last time and split, per run",
    "graph_stats": "size, reciprocity, components and power-law fit of the graph, per run",
    "graph_quarantine": "edge rows set aside with their reason, per run",
    "graph_samples": "degree-aware neighbourhood samples per node and role, per run",
    "embeddings": "BLADE source and target vector of every product, per variant and run",
    "recommendations": "top-K related products of every product with score, probability, "
    "uncertainty and the link thresholds' decision, per run",
    "eval_metrics": "held-out Hits@K, MRR and direction AUC by degree bucket, per variant and run",
    "examples": "views with as-of features and their observed/matured labels",
    "flip_model": "label-flip hazard per signal state and elapsed bucket, per run",
    "flip_calibration": "held-out calibration of the flip model, per run",
    "training_weights": "importance weights of the training examples, per run",
    "conversion_metrics": "conversion model quality per weighting method, per run",
    "scores": "scores with uncertainty of the test examples (model conversion) and of held-out "
    "pairs (model link), per run",
    "thresholds": "score threshold per uncertainty bucket, per model (conversion, link), model "
    "version and run",
    "decisions": "accept/reject of each score under the stored thresholds, per run",
    "runs": "one row per stage execution",
}
"""Every table a refresh writes, by its name under ``paths.tables`` and in the catalog."""


class CatalogError(RecbatchError):
    """A table name cannot be registered without destroying something; the message says what."""


@dataclass(frozen=True)
class Registration:
    table: str
    location: str
    action: str  # created | unchanged | relocated | unregistered | absent


def qualified(cfg: RecbatchConfig, table: str) -> str:
    return f"`{cfg.catalog.database}`.`{table}`"


def register_tables(spark: SparkSession, cfg: RecbatchConfig) -> list[Registration]:
    """Point ``<database>.<table>`` at each output table that exists; idempotent.

    A name already pointing at the right location is left alone; one pointing elsewhere (the
    data root moved) is re-created, and one whose table is gone is dropped: these are external
    tables, so dropping one removes only the pointer. A managed table of the same name is never
    dropped (that would delete its data).
    """
    spark.sql(f"CREATE DATABASE IF NOT EXISTS `{cfg.catalog.database}`")
    done = [_register(spark, cfg, table) for table in OUTPUT_TABLES]
    by_action: dict[str, list[str]] = {}
    for r in done:
        by_action.setdefault(r.action, []).append(r.table)
    log.info(
        "catalog %s (%s metastore): %s",
        cfg.catalog.database,
        cfg.catalog.metastore,
        "; ".join(f"{action} {', '.join(names)}" for action, names in sorted(by_action.items())),
    )
    return done


def register_stage(spark: SparkSession, cfg: RecbatchConfig) -> dict[str, int]:
    """The pipeline stage: register what exists and count the outcomes (for the runs table)."""
    with metastore_errors(cfg):
        done = register_tables(spark, cfg)
    counts = dict.fromkeys(("created", "unchanged", "relocated", "unregistered", "absent"), 0)
    for r in done:
        counts[r.action] += 1
    counts["registered"] = len(done) - counts["absent"] - counts["unregistered"]
    return counts


@contextmanager
def metastore_errors(cfg: RecbatchConfig) -> Iterator[None]:
    """Turn the embedded Derby metastore's single-process lock into an explanation."""
    try:
        yield
    except Exception as err:
        if "Another instance of Derby may have already booted" not in _full_text(err):
            raise
        raise CatalogError(
            "the embedded Derby metastore is open in another Spark process (Derby admits one"
            " process at a time): wait for it to finish, or use catalog.metastore=session, or a"
            " metastore service (spark.hadoop.hive.metastore.uris)"
        ) from err


def _full_text(err: BaseException) -> str:
    """The message of an error and of everything it was raised from (Py4J nests the JVM's)."""
    parts = []
    while err is not None:
        parts.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(parts)


def _register(spark: SparkSession, cfg: RecbatchConfig, table: str) -> Registration:
    location = cfg.table_path(table)
    name = qualified(cfg, table)
    registered = _registration(spark, cfg, table)
    exists = is_delta_table(spark, location)
    if registered is not None and exists and _same_location(registered["Location"], location):
        return Registration(table, location, "unchanged")
    if registered is not None:
        _drop_pointer(spark, name, registered, location)
    if not exists:
        return Registration(table, location, "absent" if registered is None else "unregistered")
    spark.sql(f"CREATE TABLE {name} USING DELTA LOCATION '{_sql_string(location)}'")
    return Registration(table, location, "created" if registered is None else "relocated")


def _drop_pointer(
    spark: SparkSession, name: str, registered: dict[str, str], location: str
) -> None:
    """Drop a name that points elsewhere (or at a table that is gone): only ever a pointer."""
    if registered.get("Type", "").upper() != "EXTERNAL":
        raise CatalogError(
            f"{name} is a managed table at {registered['Location']}, not recbatch's table at"
            f" {location}; dropping it would delete its data. Rename or drop it yourself, or set"
            " catalog.database to another database."
        )
    log.warning(
        "catalog: %s pointed at %s; the table is at %s now", name, registered["Location"], location
    )
    spark.sql(f"DROP TABLE {name}")


def _registration(spark: SparkSession, cfg: RecbatchConfig, table: str) -> dict[str, str] | None:
    """The '# Detailed Table Information' rows of DESCRIBE TABLE EXTENDED (Location, Type, ...)
    of ``<database>.<table>``, or None when the name is not registered."""
    if not spark.catalog.tableExists(f"{cfg.catalog.database}.{table}"):
        return None
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {qualified(cfg, table)}").collect()
    detail = {r["col_name"]: r["data_type"] for r in rows if r["col_name"]}
    detail.setdefault("Location", "")
    return detail


def _same_location(a: str, b: str) -> bool:
    return _normalise(a) == _normalise(b)


def _normalise(location: str) -> str:
    """``file:/x/``, ``file:///x`` and ``/x`` are one place."""
    path = location.removeprefix("file://").removeprefix("file:")
    return path.rstrip("/") or "/"


def _sql_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


# --- spark-sql ------------------------------------------------------------------------------


def init_sql(cfg: RecbatchConfig, present: Sequence[str]) -> str:
    """The statements that give a fresh ``spark-sql`` session the names (``spark-sql -i``)."""
    db = f"`{cfg.catalog.database}`"
    lines = [f"CREATE DATABASE IF NOT EXISTS {db};"]
    if cfg.catalog.metastore == "session":
        lines += [
            f"CREATE TABLE IF NOT EXISTS {qualified(cfg, t)} USING DELTA"
            f" LOCATION '{_sql_string(cfg.table_path(t))}';"
            for t in present
        ]
    lines.append(f"USE {db};")
    return "\n".join(lines) + "\n"


def tables_on_local_disk(cfg: RecbatchConfig) -> list[str]:
    """The output tables that exist, checked without Spark (spark-sql is started after this)."""
    base = local_path(cfg.path("tables"))
    if base is None:
        raise CatalogError(
            f"spark-sql with catalog.metastore=session looks for the tables on local disk, but"
            f" paths.tables is {cfg.path('tables')}; use catalog.metastore=hive with a shared"
            " metastore there"
        )
    return [t for t in OUTPUT_TABLES if (base / t / "_delta_log").is_dir()]


def spark_sql_command(cfg: RecbatchConfig, user_args: Sequence[str], init_file: Path) -> list[str]:
    """pyspark's ``spark-sql`` with recbatch's jars, Delta, catalog and the names registered."""
    from recbatch.session import launch_settings, runtime_settings

    settings = {**runtime_settings(cfg), **launch_settings(cfg)}
    settings.pop("spark.app.name", None)
    init_file.parent.mkdir(parents=True, exist_ok=True)
    init_file.write_text(init_sql(cfg, tables_on_local_disk(cfg)))
    command = [
        str(Path(sys.executable).parent / "spark-sql"),
        "--name",
        f"{cfg.spark.app_name}-sql",
    ]
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    log4j = PROJECT_ROOT / "conf" / "log4j2.properties"
    command += ["--driver-java-options", f"-Dlog4j2.configurationFile=file:{log4j}"]
    return [*command, "-i", str(init_file), *user_args]


def _spark_sql_main(argv: Sequence[str] | None = None) -> None:
    """Print the spark-sql command line, NUL-separated (spark-submit.sh execs it)."""
    parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    parser.add_argument("--config")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args, user_args = parser.parse_known_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        work = local_path(cfg.path("work")) or PROJECT_ROOT / "var"
        init_file = work / "spark-sql-init.sql"
        command = spark_sql_command(cfg, user_args, init_file)
    except (ConfigError, RecbatchError) as err:
        print(f"recbatch: {err}", file=sys.stderr)
        sys.exit(2)
    print(
        f"recbatch: spark-sql on {cfg.spark.master}, database {cfg.catalog.database}"
        f" ({cfg.catalog.metastore} catalog; names registered by {init_file})",
        file=sys.stderr,
    )
    sys.stdout.write("\0".join(command) + "\0")


if __name__ == "__main__":
    _spark_sql_main()
