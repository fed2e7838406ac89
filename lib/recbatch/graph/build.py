"""Directed edges from their two sources, cleaned, and the GraphFrame over them.

* ``copurchase_edges``: U -> V when one customer bought V after U within the window. The relation
  is kept as observed (phone -> case does not imply case -> phone): never symmetrised.
* ``read_edge_list``: a TSV ``src<TAB>dst`` file (the dev graphs, a referee ``train.tsv``).

Both return an :class:`EdgeInput`: the clean edges (``src``, ``dst``, ``weight``, ``first_ts``,
``last_ts``) and the rows set aside, each with its reason, for the ``graph_quarantine`` table.
Nothing is dropped without a row there.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphframes import GraphFrame
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from recbatch.graph.errors import GraphInputError
from recbatch.graph.settings import GraphSettings
from recbatch.io.ids import IdKind, parse_id
from recbatch.io.index import with_row_index
from recbatch.log import get_logger

log = get_logger(__name__)

EDGE_COLUMNS = ("src", "dst", "weight", "first_ts", "last_ts")
QUARANTINE_COLUMNS = ("src", "dst", "raw_record", "reason", "source")

MALFORMED = "malformed row (expected two tab-separated fields)"
NULL_ID = "missing id"
NOT_INTEGER = "id is not an integer"
SELF_LOOP = "self-loop (src = dst)"
DUPLICATE = "duplicate edge (kept once)"
DANGLING = "dangling id (not in graph.nodes_path)"
BAD_ROW_REASONS = (MALFORMED, NULL_ID, NOT_INTEGER)
"""Reasons that count toward ``graph.max_reject_ratio``; self-loops and duplicates are cleaning."""

_CORRUPT = "_corrupt_record"
_RAW_EDGE_SCHEMA = StructType(
    [
        StructField("src", StringType(), True),
        StructField("dst", StringType(), True),
        StructField(_CORRUPT, StringType(), True),
    ]
)


@dataclass(frozen=True)
class EdgeInput:
    """Clean directed edges, their nodes and what was set aside on the way."""

    edges: DataFrame  # src, dst (long), weight (double), first_ts, last_ts (timestamp or null)
    nodes: DataFrame  # node_id (long): every endpoint, plus catalogue nodes without edges
    quarantine: DataFrame  # QUARANTINE_COLUMNS, all strings
    source: str  # "events" or the edge-list path


# --- co-purchases ---------------------------------------------------------------------------------


def copurchase_edges(events: DataFrame, settings: GraphSettings) -> EdgeInput:
    """U -> V for every customer who bought V strictly after U, at most the window later.

    Weight is the number of distinct customers; ``first_ts``/``last_ts`` are the first and last
    purchase of V that realised the edge. Pairs bought at the same instant have no order and
    make no edge; U = V (a repeat purchase) is not an edge. Edges below ``min_support``
    customers, or below ``min_lift`` (customers over those expected by chance), are set aside
    with that reason: the "customers who bought" filter that keeps a related product apart
    from a popular one bought in the same month.
    """
    buys = events.where(F.col("event_type") == "buy").select("user_id", "item_id", "event_ts")
    before, after = buys.alias("u"), buys.alias("v")
    window_s = F.lit(int(settings.buy_window_days * 86400))
    pairs = before.join(
        after,
        (F.col("u.user_id") == F.col("v.user_id"))
        & (F.col("u.item_id") != F.col("v.item_id"))
        & (F.col("v.event_ts") > F.col("u.event_ts"))
        & (F.unix_timestamp("v.event_ts") - F.unix_timestamp("u.event_ts") <= window_s),
    )
    grouped = pairs.groupBy(F.col("u.item_id").alias("src"), F.col("v.item_id").alias("dst")).agg(
        F.countDistinct("u.user_id").cast("double").alias("weight"),
        F.min("v.event_ts").alias("first_ts"),
        F.max("v.event_ts").alias("last_ts"),
    )
    scored = with_lift(grouped, buys)
    reason = F.when(
        F.col("weight") < F.lit(settings.min_support),
        F.concat(
            F.lit(f"below graph.min_support={settings.min_support} customers (had "),
            F.col("weight").cast("int").cast("string"),
            F.lit(")"),
        ),
    ).when(
        F.col("lift") < F.lit(settings.min_lift),
        F.lit(f"below graph.min_lift={settings.min_lift:g}"),
    )
    marked = scored.withColumn("reason", reason)
    quarantine = marked.where(F.col("reason").isNotNull()).select(
        F.col("src").cast("string"),
        F.col("dst").cast("string"),
        F.format_string("customers=%d lift=%.2f", F.col("weight").cast("int"), "lift").alias(
            "raw_record"
        ),
        "reason",
        F.lit("events").alias("source"),
    )
    edges = marked.where(F.col("reason").isNull()).select(*EDGE_COLUMNS)
    bought = buys.select(F.col("item_id").alias("node_id")).distinct()
    return EdgeInput(edges, bought, quarantine, "events")


def with_lift(pairs: DataFrame, buys: DataFrame) -> DataFrame:
    """``pairs`` (``src``, ``dst``, ``weight`` = customers) with ``lift``: the customers over
    ``customers(src) x customers(dst) / all buyers``, what independent buyers would give.

    Required columns: ``pairs``: src, dst, weight; ``buys``: user_id, item_id.
    """
    customers = buys.groupBy("item_id").agg(F.countDistinct("user_id").alias("customers"))
    buyers = buys.agg(F.countDistinct("user_id").alias("buyers"))
    src = customers.select(F.col("item_id").alias("src"), F.col("customers").alias("src_customers"))
    dst = customers.select(F.col("item_id").alias("dst"), F.col("customers").alias("dst_customers"))
    expected = F.col("src_customers") * F.col("dst_customers") / F.col("buyers")
    return (
        pairs.join(src, "src")
        .join(dst, "dst")
        .crossJoin(buyers)
        .withColumn("lift", F.col("weight") / expected)
        .drop("src_customers", "dst_customers", "buyers")
    )


# --- TSV edge lists -------------------------------------------------------------------------------


def read_edge_list(
    spark: SparkSession,
    path: str,
    settings: GraphSettings,
    nodes_path: str | None = None,
    ids: IdKind = "integer",
) -> EdgeInput:
    """Read ``src<TAB>dst`` (header required), set bad rows aside, keep each edge once.

    ``ids`` is ``ingest.ids``: integers (``007`` is ``7``) or any non-blank text (io/ids.py).

    Raises GraphInputError when the file is missing, has another header, or when the share of
    malformed rows exceeds ``graph.max_reject_ratio`` (a wrong file, not a few bad lines).
    """
    _check_header(spark, path, ("src", "dst"), "an edge list")
    raw = (
        spark.read.option("sep", "\t")
        .option("header", True)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", _CORRUPT)
        .schema(_RAW_EDGE_SCHEMA)
        .csv(path)
    )
    src, dst = F.trim("src"), F.trim("dst")
    parsed = raw.select(
        src.alias("src"),
        dst.alias("dst"),
        F.col(_CORRUPT).alias("raw_record"),
        parse_id(F.col("src"), ids).alias("src_id"),
        parse_id(F.col("dst"), ids).alias("dst_id"),
    )
    reason = (
        F.when(F.col("raw_record").isNotNull(), F.lit(MALFORMED))
        .when(src.isNull() | dst.isNull() | (src == "") | (dst == ""), F.lit(NULL_ID))
        .when(F.col("src_id").isNull() | F.col("dst_id").isNull(), F.lit(NOT_INTEGER))
        .when(F.col("src_id") == F.col("dst_id"), F.lit(SELF_LOOP))
    )
    checked = parsed.withColumn("reason", reason)
    valid = checked.where(F.col("reason").isNull())
    if nodes_path:
        catalogue = read_node_list(spark, nodes_path, ids)
        valid = _mark_dangling(valid, catalogue)
    else:
        catalogue = None
    first = Window.partitionBy("src_id", "dst_id").orderBy("src_id")
    ranked = valid.withColumn(
        "reason",
        F.when(F.row_number().over(first) > 1, F.lit(DUPLICATE)).otherwise(F.col("reason")),
    )
    rejected = checked.where(F.col("reason").isNotNull()).unionByName(
        ranked.where(F.col("reason").isNotNull())
    )
    quarantine = rejected.select("src", "dst", "raw_record", "reason", F.lit(path).alias("source"))
    edges = ranked.where(F.col("reason").isNull()).select(
        F.col("src_id").alias("src"),
        F.col("dst_id").alias("dst"),
        F.lit(1.0).alias("weight"),
        F.lit(None).cast("timestamp").alias("first_ts"),
        F.lit(None).cast("timestamp").alias("last_ts"),
    )
    endpoints = edges.select(F.col("src").alias("node_id")).union(
        edges.select(F.col("dst").alias("node_id"))
    )
    nodes = (endpoints.union(catalogue) if catalogue is not None else endpoints).distinct()
    _check_reject_ratio(raw, quarantine, path, settings, ids)
    return EdgeInput(edges, nodes, quarantine, path)


def read_node_list(spark: SparkSession, path: str, ids: IdKind = "integer") -> DataFrame:
    """A node catalogue (TSV, header ``id``): one id per line, of kind ``ids``."""
    _check_header(spark, path, ("id",), "a node list")
    rows = spark.read.option("sep", "\t").option("header", True).csv(path)
    parsed = rows.select(parse_id(F.col("id"), ids).alias("node_id"))
    bad = parsed.where(F.col("node_id").isNull()).limit(1).count()
    if bad:
        what = "non-integer" if ids == "integer" else "blank"
        raise GraphInputError(f"{path}: the node list has a missing or {what} id")
    return parsed.distinct()


def _mark_dangling(valid: DataFrame, catalogue: DataFrame) -> DataFrame:
    known_src = catalogue.select(F.col("node_id").alias("src_id"), F.lit(True).alias("src_ok"))
    known_dst = catalogue.select(F.col("node_id").alias("dst_id"), F.lit(True).alias("dst_ok"))
    joined = valid.join(F.broadcast(known_src), "src_id", "left").join(
        F.broadcast(known_dst), "dst_id", "left"
    )
    dangling = F.col("src_ok").isNull() | F.col("dst_ok").isNull()
    return joined.withColumn("reason", F.when(dangling, F.lit(DANGLING))).drop("src_ok", "dst_ok")


def _check_header(spark: SparkSession, path: str, expected: tuple[str, ...], what: str) -> None:
    """Fail clearly on a missing file or another header (e.g. no header, or comma-separated)."""
    try:
        header = spark.read.option("sep", "\t").option("header", True).csv(path).columns
    except Exception as err:  # AnalysisException: PATH_NOT_FOUND and friends
        raise GraphInputError(f"cannot read {what} at {path}: {str(err).splitlines()[0]}") from err
    if tuple(c.strip() for c in header) != expected:
        raise GraphInputError(
            f"{path}: expected {what} with the header {'<TAB>'.join(expected)}, found {header!r}"
        )


def _check_reject_ratio(
    raw: DataFrame, quarantine: DataFrame, path: str, settings: GraphSettings, ids: IdKind
) -> None:
    counts = quarantine.groupBy("reason").count().collect()  # one row per reason
    by_reason = {r["reason"]: int(r["count"]) for r in counts}
    total = raw.count()
    if total == 0:
        raise GraphInputError(f"{path}: the edge list has a header but no edges")
    bad = sum(n for reason, n in by_reason.items() if reason in BAD_ROW_REASONS)
    if by_reason:
        log.warning(
            "%s: %d of %d rows set aside (%s)",
            path,
            sum(by_reason.values()),
            total,
            ", ".join(f"{n} {reason}" for reason, n in sorted(by_reason.items())),
        )
    if bad > settings.max_reject_ratio * total:
        raise GraphInputError(
            f"{path}: {bad} of {total} rows are malformed (more than graph.max_reject_ratio="
            f"{settings.max_reject_ratio}); first reasons: {sorted(by_reason)}. Is it a "
            f"tab-separated src<TAB>dst file with {ids} ids (ingest.ids)?"
        )


# --- the graph object -----------------------------------------------------------------------------


def index_nodes(nodes: DataFrame) -> DataFrame:
    """``node_id`` -> dense ``node_index`` 0..N-1 in id order (embedding rows of the model)."""
    return with_row_index(nodes.select("node_id").distinct(), ["node_id"], "node_index")


def with_indices(edges: DataFrame, nodes: DataFrame) -> DataFrame:
    """Add ``src_index``/``dst_index`` from ``nodes`` (``node_id``, ``node_index``)."""
    src = nodes.select(F.col("node_id").alias("src"), F.col("node_index").alias("src_index"))
    dst = nodes.select(F.col("node_id").alias("dst"), F.col("node_index").alias("dst_index"))
    return edges.join(src, "src").join(dst, "dst")


def graph_frame(nodes: DataFrame, edges: DataFrame) -> GraphFrame:
    """The GraphFrame of the directed graph: vertices ``id`` = node index, edges as given."""
    vertices = nodes.select(F.col("node_index").alias("id"), *[c for c in nodes.columns])
    links = edges.select(
        F.col("src_index").alias("src"),
        F.col("dst_index").alias("dst"),
        *[c for c in edges.columns if c not in ("src", "dst")],
    )
    return GraphFrame(vertices, links)


def require_edges(edges: DataFrame, source: str, hint: str) -> int:
    """The edge count; a clear error for an empty graph instead of failures further on."""
    count = edges.count()
    if count == 0:
        raise GraphInputError(f"no edges from {source}: {hint}")
    return count


def edge_key(seed: int, *columns: str | Column) -> Column:
    """A uniform double in (0, 1) from a seeded hash: deterministic whatever the partitioning."""
    hashed = F.xxhash64(F.lit(seed), *columns)
    return (F.shiftrightunsigned(hashed, 11).cast("double") + F.lit(0.5)) / F.lit(float(2**53))
