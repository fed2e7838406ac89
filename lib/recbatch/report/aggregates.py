"""The report's Spark aggregations: DataFrame API in, a handful of rows out.

Rows never reach the driver: every function here ends in a ``groupBy``/``agg`` whose result is
bounded by the number of stages, reasons, buckets or bins (at most a few hundred rows), and the
driver-side arithmetic (cumulative sums for a PR curve) works on that. The bucket and bin
expressions are ``thresholds.aggregate.edge_index``, the same ``CASE WHEN`` tree the thresholds
are fitted and applied with, so a row lands in the same bucket here as in ``decisions``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recbatch.feedback.comparison import (
    SeedInterval,
    paired_to_vanilla,
    relative_improvement,
    seed_interval,
)
from recbatch.graph.budget import ROLES
from recbatch.report.tables import for_run_date, run_date_filter
from recbatch.thresholds.aggregate import edge_index, finite

SCORED_MODEL = "conversion"
"""The model the ``scores`` and ``thresholds`` stages write (their ``MODEL``; not imported from
``uncertainty.scores``, which would load torch just to draw a report)."""

QUANTILE_ACCURACY = 10_000


@dataclass(frozen=True)
class RowCount:
    """Rows of one stage's table: all of them, and those of the run date (None: no run_date)."""

    stage: str
    table: str
    rows: int | None
    run_rows: int | None
    present: bool


def count_rows(frame: DataFrame, run_date: date) -> tuple[int, int | None]:
    """``(rows, rows of the run date)`` in one aggregation; the second is None without a
    ``run_date`` column (events and examples accumulate, they belong to no single run)."""
    aggs = [F.count(F.lit(1)).alias("rows")]
    if "run_date" in frame.columns:
        aggs.append(F.sum(run_date_filter(frame, run_date).cast("long")).alias("run_rows"))
    row = frame.agg(*aggs).head()
    run_rows = int(row["run_rows"] or 0) if "run_date" in frame.columns else None
    return int(row["rows"]), run_rows


def quarantine_reasons(quarantine: DataFrame, run_date: date) -> pd.DataFrame:
    """``reason, rows, run_rows`` (rows quarantined by this run date's ingest), most first."""
    rows = (
        quarantine.groupBy("reason")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum(run_date_filter(quarantine, run_date).cast("long")).alias("run_rows"),
        )
        .collect()
    )
    frame = pd.DataFrame([r.asDict() for r in rows], columns=["reason", "rows", "run_rows"])
    return frame.sort_values(["rows", "reason"], ascending=[False, True], ignore_index=True)


RUN_COLUMNS = ("run_id", "run_date", "stage", "started_at")
"""What the stage timeline needs from the ``runs`` table; its other columns are shown if present."""
RUN_OPTIONAL = ("status", "ended_at", "seconds", "rows_in", "rows_out", "error")


def latest_run(runs: DataFrame, run_date: date) -> tuple[str, pd.DataFrame] | None:
    """The run date's latest run (the one whose first stage started last) and its stages.

    Returns ``(run_id, stages)`` with ``start_s``/``end_s`` (epoch seconds, for the timeline
    bars), the times as UTC text, and the optional columns that exist; None without a run."""
    started = F.col("started_at").cast("timestamp")
    mine = for_run_date(runs, run_date)
    first = (
        mine.groupBy("run_id")
        .agg(F.min(started).alias("first_start"))
        .orderBy(F.col("first_start").desc_nulls_last(), F.col("run_id").cast("string").desc())
        .limit(1)
        .collect()
    )
    if not first:
        return None
    run_id = first[0]["run_id"]
    optional = [c for c in RUN_OPTIONAL if c in runs.columns]
    # Stages recorded in the same instant (skipped ones) keep the pipeline's order.
    order = [F.col("stage_index")] if "stage_index" in runs.columns else []
    ended = F.col("ended_at") if "ended_at" in runs.columns else F.lit(None)
    ended = ended.cast("timestamp")
    stages = (
        mine.where(F.col("run_id") == F.lit(run_id))
        .select(
            F.col("stage").cast("string").alias("stage"),
            *[F.col(c) for c in optional if c not in ("ended_at",)],
            F.date_format(started, "yyyy-MM-dd HH:mm:ss").alias("started"),
            F.date_format(ended, "HH:mm:ss").alias("ended"),
            (F.unix_micros(started) / 1e6).alias("start_s"),
            (F.unix_micros(ended) / 1e6).alias("end_s"),
        )
        .orderBy(F.col("start_s").asc_nulls_last(), *order, "stage")
        .collect()
    )
    return str(run_id), pd.DataFrame([r.asDict() for r in stages])


def small_table(
    frame: DataFrame, columns: Sequence[str | Column], order: Sequence[str | Column]
) -> pd.DataFrame:
    """Rows of a table that is small by construction (flip cells, calibration scopes, metric
    rows, one run's thresholds), collected in one job; empty when there are none."""
    selected = frame.select(*columns)
    rows = selected.orderBy(*order).collect()
    return pd.DataFrame([r.asDict() for r in rows], columns=selected.columns)


# --- scores and thresholds ----------------------------------------------------------------------


def run_scores(scores: DataFrame, run_date: date, model: str = SCORED_MODEL) -> DataFrame:
    """The run date's scores of ``model`` (conversion, or link; lazy)."""
    mine = for_run_date(scores, run_date)
    if "model" in scores.columns:
        mine = mine.where(F.col("model") == model)
    return mine


def model_versions(scores: DataFrame) -> list[str]:
    """The model versions among the run's scores (the stage writes exactly one)."""
    return sorted(r[0] for r in scores.select("model_version").distinct().limit(5).collect())


def valid_score(score: str = "score", label: str = "label") -> Column:
    """Rows a PR curve or a reliability bin can use: a finite score and a 0/1 label."""
    return finite(F.col(score).cast("double")) & F.col(label).cast("double").isin(0.0, 1.0)


@dataclass(frozen=True)
class BucketRange:
    """One stored uncertainty bucket ``[lo, hi)`` and its stored score threshold."""

    bucket: int
    lo: float
    hi: float
    threshold: float


def bucket_ranges(stored: pd.DataFrame, method: str = "per_bucket") -> list[BucketRange]:
    """The buckets of one stored rule, in order, from the run's collected thresholds rows."""
    rows = stored[stored["method"] == method].sort_values("bucket")
    return [
        BucketRange(
            int(r.bucket),
            float(r.uncertainty_lo),
            float(r.uncertainty_hi),
            float(r.score_threshold),
        )
        for r in rows.itertuples()
    ]


def _bucket_column(buckets: Sequence[BucketRange]) -> Column:
    """The stored bucket of a row: ``edge_index`` on the inner edges, as ``apply_thresholds``."""
    uncertainty = F.col("uncertainty").cast("double")
    inner = [b.lo for b in buckets[1:]]
    return F.when(finite(uncertainty), edge_index(uncertainty, inner))


def _decile_edges(frame: DataFrame, bins: int) -> dict[int, list[float]]:
    """Per bucket, the score quantiles that cut it into ``bins`` equal-count bins (ties merge)."""
    probabilities = [i / bins for i in range(1, bins)]
    rows = (
        frame.groupBy("_bucket")
        .agg(F.percentile_approx("_score", probabilities, QUANTILE_ACCURACY).alias("q"))
        .collect()
    )
    return {int(r["_bucket"]): sorted(set(map(float, r["q"] or []))) for r in rows}


def reliability_bins(
    scores: DataFrame, buckets: Sequence[BucketRange], bins: int = 10
) -> tuple[pd.DataFrame, int]:
    """Per stored uncertainty bucket and score decile: rows, mean score, observed positive rate.

    Returns ``(bins frame, rows excluded)``; excluded rows have no finite score/uncertainty or a
    label that is not 0/1 (``apply_thresholds`` gives them no bucket either). Two passes: the
    per-bucket deciles (``percentile_approx``), then one ``groupBy(bucket, decile)``."""
    prepared = scores.select(
        F.when(valid_score(), _bucket_column(buckets)).alias("_bucket"),
        F.col("score").cast("double").alias("_score"),
        F.col("label").cast("double").alias("_label"),
    )
    valid = prepared.where(F.col("_bucket").isNotNull())
    edges = _decile_edges(valid, bins)
    decile = F.coalesce(
        *[F.when(F.col("_bucket") == b, edge_index(F.col("_score"), e)) for b, e in edges.items()],
        F.lit(None).cast("int"),
    )
    rows = (
        prepared.groupBy("_bucket", F.when(F.col("_bucket").isNotNull(), decile).alias("_bin"))
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.avg("_score").alias("mean_score"),
            F.avg("_label").alias("positive_rate"),
        )
        .collect()
    )
    frame = pd.DataFrame(
        [r.asDict() for r in rows],
        columns=["_bucket", "_bin", "rows", "mean_score", "positive_rate"],
    ).rename(columns={"_bucket": "bucket", "_bin": "bin"})
    excluded = int(frame.loc[frame["bucket"].isna(), "rows"].sum())
    frame = frame[frame["bucket"].notna()].astype({"bucket": int, "bin": int})
    return frame.sort_values(["bucket", "bin"], ignore_index=True), excluded


def score_histogram(scores: DataFrame, bins: int = 200) -> tuple[pd.DataFrame, int]:
    """Rows and positives per score bin (quantile edges), highest scores last.

    Returns ``(histogram, rows excluded)`` with columns ``bin``, ``lo`` (the lowest score in the
    bin: accepting ``score >= lo`` accepts this bin and every higher one), ``rows``,
    ``positives``. Quantile edges put the curve's points where the scores are."""
    prepared = scores.select(
        F.when(valid_score(), F.col("score").cast("double")).alias("_score"),
        F.col("label").cast("double").alias("_label"),
    )
    quantiles = [i / bins for i in range(1, bins)]
    row = (
        prepared.where(F.col("_score").isNotNull())
        .agg(F.percentile_approx("_score", quantiles, QUANTILE_ACCURACY).alias("q"))
        .head()
    )
    edges = sorted(set(map(float, row["q"] or [])))
    rows = (
        prepared.groupBy(edge_index(F.col("_score"), edges).alias("bin"))
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum("_label").alias("positives"),
            F.min("_score").alias("lo"),
        )
        .collect()
    )
    frame = pd.DataFrame([r.asDict() for r in rows], columns=["bin", "rows", "positives", "lo"])
    excluded = int(frame.loc[frame["bin"].isna(), "rows"].sum())
    frame = frame[frame["bin"].notna()].astype({"bin": int, "rows": int, "positives": int})
    return frame.sort_values("bin", ignore_index=True)[["bin", "lo", "rows", "positives"]], excluded


def pr_curve(histogram: pd.DataFrame) -> pd.DataFrame:
    """Precision and recall of every threshold ``score >= lo`` of a ``score_histogram``.

    Why on the driver: after the histogram it is a cumulative sum over at most ``bins`` rows.
    Rows go from the strictest threshold (highest bin) to accepting everything, whose precision
    is the positive rate. Empty without positives (recall is undefined)."""
    ordered = histogram.sort_values("lo", ascending=False, ignore_index=True)
    positives = int(ordered["positives"].sum())
    if positives == 0 or ordered.empty:
        return pd.DataFrame(
            columns=["threshold", "accepted", "true_positives", "precision", "recall"]
        )
    accepted = ordered["rows"].cumsum().to_numpy()
    true_positives = ordered["positives"].cumsum().to_numpy()
    return pd.DataFrame(
        {
            "threshold": ordered["lo"].to_numpy(dtype=float),
            "accepted": accepted,
            "true_positives": true_positives,
            "precision": true_positives / accepted,
            "recall": true_positives / positives,
        }
    )


def average_precision(curve: pd.DataFrame) -> float | None:
    """Step-wise area under the PR curve, ``sum (R_k - R_k-1) * P_k`` over its points."""
    if curve.empty:
        return None
    recall = np.concatenate([[0.0], curve["recall"].to_numpy(dtype=float)])
    return float(np.sum(np.diff(recall) * curve["precision"].to_numpy(dtype=float)))


@dataclass(frozen=True)
class OperatingPoint:
    """A stored rule measured on its evaluation split, summed over its buckets."""

    method: str
    buckets: int
    accepted: int
    true_positives: int
    positives: int
    target_precision: float | None
    certified_precision_lb: float | None

    @property
    def precision(self) -> float | None:
        """None when the rule accepts nothing (every threshold ``+inf``)."""
        return self.true_positives / self.accepted if self.accepted else None

    @property
    def recall(self) -> float | None:
        return self.true_positives / self.positives if self.positives else None


def operating_points(thresholds: DataFrame) -> list[OperatingPoint]:
    """Per stored method: sums of the evaluation counts over its buckets (one aggregation)."""
    rows = (
        thresholds.groupBy("method")
        .agg(
            F.count(F.lit(1)).alias("buckets"),
            F.sum("eval_accepted").alias("accepted"),
            F.sum("eval_true_positives").alias("true_positives"),
            F.sum("eval_positives").alias("positives"),
            F.max("target_precision").alias("target_precision"),
            F.max("certified_precision_lb").alias("certified_precision_lb"),
        )
        .orderBy("method")
        .collect()
    )
    return [
        OperatingPoint(
            method=r["method"],
            buckets=int(r["buckets"]),
            accepted=int(r["accepted"] or 0),
            true_positives=int(r["true_positives"] or 0),
            positives=int(r["positives"] or 0),
            target_precision=r["target_precision"],
            certified_precision_lb=r["certified_precision_lb"],
        )
        for r in rows
    ]


# --- graph and neighbourhood samples ------------------------------------------------------------

GRAPH_ROLES = ROLES
"""The sample roles in page order."""
DEGREE_BUCKETS = (0, 1, 2, 4, 8, 16)
"""Lower edges of the degree buckets 0, 1, 2-3, 4-7, 8-15, 16+: doubling widths, because the
degrees are heavy-tailed and the budget law changes fastest at small degrees."""


def reason_counts(frame: DataFrame) -> pd.DataFrame:
    """``reason, rows`` of a (run date's) quarantine, most first."""
    rows = frame.groupBy("reason").agg(F.count(F.lit(1)).alias("rows")).collect()
    counts = pd.DataFrame([r.asDict() for r in rows], columns=["reason", "rows"])
    return counts.sort_values(["rows", "reason"], ascending=[False, True], ignore_index=True)


def degree_histogram(nodes: DataFrame) -> pd.DataFrame:
    """``direction`` (out/in), ``degree``, ``nodes``: nodes per degree, both directions in one
    aggregation (one row per distinct degree, not per node)."""
    pairs = F.explode(
        F.array(
            *[
                F.struct(
                    F.lit(direction).alias("direction"),
                    F.col(f"{direction}_degree").cast("long").alias("degree"),
                )
                for direction in ("out", "in")
            ]
        )
    )
    rows = (
        nodes.select(pairs.alias("p"))
        .select("p.*")
        .where(F.col("degree").isNotNull())
        .groupBy("direction", "degree")
        .agg(F.count(F.lit(1)).alias("nodes"))
        .collect()
    )
    frame = pd.DataFrame([r.asDict() for r in rows], columns=["direction", "degree", "nodes"])
    return frame.sort_values(["direction", "degree"], ignore_index=True)


@dataclass(frozen=True)
class SampleShape:
    """What the run's sample rows hold: hops per row and the degree laws they were drawn with."""

    rows: int
    hops: int
    laws: tuple[str, ...]


def sample_shape(samples: DataFrame) -> SampleShape:
    """Rows, hops (the length of ``hop_counts``) and laws of a run's samples (one aggregation);
    the hops name the per-hop columns of ``budget_by_degree``."""
    row = samples.agg(
        F.count(F.lit(1)).alias("rows"),
        F.max(F.size("hop_counts")).alias("hops"),
        F.sort_array(F.collect_set(F.col("law").cast("string"))).alias("laws"),
    ).head()
    return SampleShape(int(row["rows"]), max(int(row["hops"] or 0), 0), tuple(row["laws"] or ()))


def budget_by_degree(samples: DataFrame, hops: int) -> pd.DataFrame:
    """Per role and degree: ``nodes``, ``budget`` and ``filled`` (summed over the nodes) and
    ``hop_1`` .. ``hop_<hops>`` (filled slots of each hop, summed).

    Sums, not means, so ``degree_buckets`` can merge degrees exactly; ``get`` (null past the end)
    rather than ``[]``, which fails on a short array under ANSI mode."""
    counts = F.col("hop_counts")
    filled = F.aggregate(
        counts, F.lit(0).cast("long"), lambda acc, x: acc + F.coalesce(x, F.lit(0))
    )
    rows = (
        samples.where(F.col("degree").isNotNull())
        .groupBy("role", F.col("degree").cast("long").alias("degree"))
        .agg(
            F.count(F.lit(1)).alias("nodes"),
            F.sum(F.col("budget").cast("long")).alias("budget"),
            F.sum(filled).alias("filled"),
            *[
                F.sum(F.coalesce(F.get(counts, h), F.lit(0))).alias(f"hop_{h + 1}")
                for h in range(hops)
            ],
        )
        .collect()
    )
    columns = [
        "role",
        "degree",
        "nodes",
        "budget",
        "filled",
        *[f"hop_{h + 1}" for h in range(hops)],
    ]
    frame = pd.DataFrame([r.asDict() for r in rows], columns=columns)
    return frame.sort_values(["role", "degree"], ignore_index=True)


def degree_bucket_label(lo: int, hi: int | None) -> str:
    """``1``, ``2-3``, ``16+``: a bucket ``[lo, hi)`` of integer degrees as people write it."""
    if hi is None:
        return f"{lo}+"
    return str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}"


def degree_buckets(per_degree: pd.DataFrame, hops: int) -> pd.DataFrame:
    """``budget_by_degree`` merged into ``DEGREE_BUCKETS``: per role and bucket, ``nodes``,
    ``mean_budget``, ``mean_filled`` and ``mean_hop_<h>``. Driver-side: a few rows per degree
    bucket from at most one row per distinct degree; empty buckets are left out."""
    hop_columns = [f"hop_{h + 1}" for h in range(hops)]
    columns = ["role", "bucket", "label", "nodes", "mean_budget", "mean_filled"]
    columns += [f"mean_{c}" for c in hop_columns]
    if per_degree.empty:
        return pd.DataFrame(columns=columns)
    edges = np.asarray(DEGREE_BUCKETS[1:])
    bucket = np.searchsorted(edges, per_degree["degree"].to_numpy(dtype=float), side="right")
    summed = (
        per_degree.assign(bucket=bucket)
        .groupby(["role", "bucket"], as_index=False)[["nodes", "budget", "filled", *hop_columns]]
        .sum()
    )
    highs = [*DEGREE_BUCKETS[1:], None]
    summed["label"] = [degree_bucket_label(DEGREE_BUCKETS[b], highs[b]) for b in summed["bucket"]]
    for column in ["budget", "filled", *hop_columns]:
        summed[f"mean_{column}"] = summed[column] / summed["nodes"]
    return summed[columns].sort_values(["role", "bucket"], ignore_index=True)


@dataclass(frozen=True)
class MethodSummary:
    """One weighting method of the run's ``conversion_metrics``, over its model seeds."""

    method: str
    seeds: int
    train_rows: int
    test_rows: int
    test_positives: int
    auc: SeedInterval
    pr_auc: SeedInterval
    log_loss: SeedInterval
    pcoc: float | None
    ri_auc: float | None
    auc_vs_vanilla: SeedInterval | None
    log_loss_vs_vanilla: SeedInterval | None
    train_seconds: float


def method_summary(metrics: pd.DataFrame) -> list[MethodSummary]:
    """Per method (vanilla, oracle, then the rest by name): seed means with 95% intervals, the
    paired differences to vanilla, and RI-AUC from the mean AUCs. ``metrics``: the run date's
    rows (one per method and, where the table has the column, ``model_seed``)."""
    rows = metrics.to_dict("records")
    reference = {"vanilla": 0, "oracle": 1}
    methods = sorted({r["method"] for r in rows}, key=lambda m: (reference.get(m, 2), m))
    mean_auc = {m: float(np.mean([r["auc"] for r in rows if r["method"] == m])) for m in methods}
    summaries = []
    for method in methods:
        own = [r for r in rows if r["method"] == method]
        pcoc = [r["pcoc"] for r in own if r.get("pcoc") is not None and not pd.isna(r["pcoc"])]

        def paired(metric: str, method: str = method) -> SeedInterval | None:
            diffs = paired_to_vanilla(rows, method, metric)
            return seed_interval(diffs) if diffs and method != "vanilla" else None

        summaries.append(
            MethodSummary(
                method=method,
                seeds=len(own),
                train_rows=int(own[0]["train_rows"]),
                test_rows=int(own[0]["test_rows"]),
                test_positives=int(own[0]["test_positives"]),
                auc=seed_interval([r["auc"] for r in own]),
                pr_auc=seed_interval([r["pr_auc"] for r in own]),
                log_loss=seed_interval([r["log_loss"] for r in own]),
                pcoc=float(np.mean(pcoc)) if pcoc else None,
                ri_auc=(
                    relative_improvement(mean_auc[method], mean_auc["vanilla"], mean_auc["oracle"])
                    if "vanilla" in mean_auc and "oracle" in mean_auc
                    else None
                ),
                auc_vs_vanilla=paired("auc"),
                log_loss_vs_vanilla=paired("log_loss"),
                train_seconds=float(np.mean([r["train_seconds"] for r in own])),
            )
        )
    return summaries


# --- recommendations against the planted relations ---------------------------------------------

PLANTED_COLUMNS = ("list", "products", "pairs", "planted", "precision", "recall")


def planted_quality(
    recommendations: DataFrame,
    nodes: DataFrame,
    truth: DataFrame,
    k: int,
    known: DataFrame | None = None,
) -> pd.DataFrame:
    """Each product's top ``k`` against the generator's planted relations, in ``PLANTED_COLUMNS``.

    Rows: ``blade`` (the recommendations' first ``k`` ranks), ``popularity`` (the ``k`` nodes of
    highest training in-degree, the product itself left out: what a user gets without a model)
    and ``blade accepted`` (the recommendations the link thresholds accepted, any rank). Only
    products of the run's graph with a planted relation to another graph node count, and only
    those relations (one outside the graph is out of every list's reach); ``known`` pairs (the
    training edges, when recommendations leave them out) are out of every list and of the
    truth: what counts is what a list adds. ``products`` is how
    many of them the list covers; precision is planted pairs over listed pairs, recall planted
    pairs over all their planted relations.

    Required columns: ``recommendations``: product, rank, recommended_product, accepted;
    ``nodes``: node_id, in_degree; ``truth``: src, dst; ``known``: src, dst.
    """
    ids = nodes.select("node_id")
    reachable = (
        truth.join(ids.withColumnRenamed("node_id", "src"), "src", "left_semi")
        .join(ids.withColumnRenamed("node_id", "dst"), "dst", "left_semi")
        .select(F.col("src").alias("product"), F.col("dst").alias("recommended_product"))
        .distinct()
    )
    if known is not None:
        known = known.select(
            F.col("src").alias("product"), F.col("dst").alias("recommended_product")
        )
        reachable = reachable.join(known, ["product", "recommended_product"], "left_anti")
    products = reachable.select("product").distinct()
    ranked = recommendations.join(products, "product", "left_semi")
    lists = {
        "blade": ranked.where(F.col("rank") <= k),
        "popularity": _top_popular(products, nodes, k, known),
        "blade accepted": ranked.where(F.col("accepted")),
    }
    relations = reachable.count()
    listed = None
    for name, pairs in lists.items():  # one aggregation over the three lists, by list
        named = pairs.select(F.lit(name).alias("list"), "product", "recommended_product")
        listed = named if listed is None else listed.unionByName(named)
    totals = {
        r["list"]: r
        for r in listed.distinct()
        .join(reachable.withColumn("hit", F.lit(1)), ["product", "recommended_product"], "left")
        .groupBy("list")
        .agg(
            F.countDistinct("product").alias("products"),
            F.count(F.lit(1)).alias("pairs"),
            F.count("hit").alias("planted"),
        )
        .collect()
    }
    rows = []
    for name in lists:
        row = totals.get(name)
        pairs_n, hits = (int(row["pairs"]), int(row["planted"])) if row else (0, 0)
        rows.append(
            {
                "list": name,
                "products": int(row["products"]) if row else 0,
                "pairs": pairs_n,
                "planted": hits,
                "precision": hits / pairs_n if pairs_n else float("nan"),
                "recall": hits / relations if relations else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=PLANTED_COLUMNS)


def _top_popular(
    products: DataFrame, nodes: DataFrame, k: int, known: DataFrame | None
) -> DataFrame:
    """Each product's ``k`` most popular other nodes (training in-degree, ties by id), leaving
    out its ``known`` targets as the recommendations do. A product can know at most its
    out-degree of them, so the candidates are the top ``k + 1 + max out-degree`` nodes."""
    reach = k + 1
    if known is not None:
        widest = known.groupBy("product").count().agg(F.max("count")).first()[0]
        reach += int(widest or 0)
    popular = (
        nodes.orderBy(F.desc("in_degree"), "node_id")
        .limit(reach)
        .select(F.col("node_id").alias("recommended_product"), "in_degree")
    )
    pairs = products.crossJoin(popular).where(F.col("product") != F.col("recommended_product"))
    if known is not None:
        pairs = pairs.join(known, ["product", "recommended_product"], "left_anti")
    order = Window.partitionBy("product").orderBy(F.desc("in_degree"), "recommended_product")
    return pairs.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= k)
