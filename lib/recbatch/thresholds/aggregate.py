"""Spark side: splits, validity, bucket and bin edges, and the one histogram aggregation.

Nothing here brings rows to the driver. Two passes over the input:

1. ``percentile_approx`` of score and uncertainty on the valid calibration rows: the score bin
   edges and the initial uncertainty bucket edges (one aggregation, two columns).
2. One ``groupBy(split, reason, bucket, bin)`` aggregation: positives, rows and score sums per cell,
   plus the count of every invalid row by reason. Its result (``3 x buckets x bins`` rows at most
   plus a few reasons) is what the driver receives.

Buckets and bins are computed with Column expressions only (no Python UDF): ``edge_index`` builds
a balanced ``CASE WHEN`` tree that finds how many edges are ``<= value`` in ``log2(edges)``
comparisons, the same expression apply.py uses for stored thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, NumericType

from recbatch.log import get_logger
from recbatch.thresholds.errors import InvalidRowsError, ThresholdInputError
from recbatch.thresholds.histogram import (
    SPLITS,
    Histogram,
    SplitHistograms,
    merge_small_buckets,
    merged_edges,
)
from recbatch.thresholds.settings import ThresholdSettings

log = get_logger(__name__)

SPLIT, REASON, BUCKET, BIN = "_split", "_reason", "_bucket", "_bin"
_HASH_RESOLUTION = 1 << 30

INVALID_REASONS = (
    "missing_score",
    "bad_score",
    "missing_uncertainty",
    "bad_uncertainty",
    "missing_label",
    "bad_label",
)
"""Why a row cannot be used: null, or NaN/infinite (labels: not 0 or 1). First reason wins."""


def finite(col: Column) -> Column:
    """Not null, not NaN, not infinite: the values a threshold can be compared with."""
    return col.isNotNull() & ~F.isnan(col) & ~col.isin(float("inf"), float("-inf"))


def invalid_reason(score: Column, uncertainty: Column, label: Column) -> Column:
    """The first reason a row is unusable, or null for a valid row."""
    label_value = label.cast("double")
    return (
        F.when(score.isNull(), "missing_score")
        .when(~finite(score), "bad_score")
        .when(uncertainty.isNull(), "missing_uncertainty")
        .when(~finite(uncertainty), "bad_uncertainty")
        .when(label.isNull(), "missing_label")
        .when(~label_value.isin(0.0, 1.0) | label_value.isNull(), "bad_label")
    )


def split_column(settings: ThresholdSettings, key_cols: Sequence[str] = ()) -> Column:
    """``calibration`` / ``selection`` / ``evaluation`` per row, by a seeded hash of the keys.

    Hashing the row's keys makes the split reproducible on any re-read of the input, whatever its
    partitioning, and independent of the labels (the guarantee needs that). Without keys it falls
    back to ``rand(seed)``, reproducible only while the input's partitioning is.
    """
    if key_cols:
        hashed = F.xxhash64(F.lit(settings.seed), *[F.col(c) for c in key_cols])
        uniform = F.pmod(hashed, F.lit(_HASH_RESOLUTION)) / float(_HASH_RESOLUTION)
    else:
        log.warning("no key columns for the threshold split: rand(seed) depends on partitioning")
        uniform = F.rand(settings.seed)
    cal = settings.calibration_fraction
    sel = cal + settings.selection_fraction
    return F.when(uniform < cal, SPLITS[0]).when(uniform < sel, SPLITS[1]).otherwise(SPLITS[2])


def edge_index(value: Column, edges: Sequence[float]) -> Column:
    """How many of the increasing ``edges`` are ``<= value`` (0 .. len(edges)), as a ``CASE WHEN``
    binary search. Bin/bucket ``i`` is then ``[edges[i-1], edges[i])``. Null for a null value."""
    edges = [float(e) for e in edges]

    def node(lo: int, hi: int) -> Column:
        if lo == hi:
            return F.lit(lo)
        mid = (lo + hi + 1) // 2
        return F.when(value >= F.lit(edges[mid - 1]), node(mid, hi)).otherwise(node(lo, mid - 1))

    return F.when(value.isNotNull(), node(0, len(edges)))


def prepare(
    df: DataFrame,
    settings: ThresholdSettings,
    *,
    key_cols: Sequence[str] = (),
    score_col: str = "score",
    uncertainty_col: str = "uncertainty",
    label_col: str = "label",
) -> DataFrame:
    """``score``, ``uncertainty``, ``label`` (doubles) with the split and the invalid reason."""
    _check_columns(df, [score_col, uncertainty_col, label_col, *key_cols])
    for name in (score_col, uncertainty_col):
        if not isinstance(df.schema[name].dataType, NumericType):
            raise ThresholdInputError(
                f"column '{name}' must be numeric, not {df.schema[name].dataType.simpleString()}"
            )
    label_type = df.schema[label_col].dataType
    if not isinstance(label_type, NumericType | BooleanType):
        raise ThresholdInputError(
            f"label column '{label_col}' must be 0/1 numeric or boolean, not "
            f"{label_type.simpleString()}"
        )
    score = F.col(score_col).cast("double")
    uncertainty = F.col(uncertainty_col).cast("double")
    label = F.col(label_col)
    return df.select(
        score.alias("score"),
        uncertainty.alias("uncertainty"),
        label.cast("double").alias("label"),
        split_column(settings, key_cols).alias(SPLIT),
        invalid_reason(score, uncertainty, label).alias(REASON),
    )


def invalid_rows(
    df: DataFrame,
    *,
    score_col: str = "score",
    uncertainty_col: str = "uncertainty",
    label_col: str = "label",
) -> DataFrame:
    """The rows a fit excludes, with their ``reason``: for a quarantine table or a look."""
    _check_columns(df, [score_col, uncertainty_col, label_col])
    reason = invalid_reason(
        F.col(score_col).cast("double"), F.col(uncertainty_col).cast("double"), F.col(label_col)
    )
    return df.withColumn("reason", reason).where(F.col("reason").isNotNull())


def _check_columns(df: DataFrame, names: Sequence[str]) -> None:
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise ThresholdInputError(
            f"labelled scores lack column(s) {missing}; they have {df.columns}"
        )


def quantile_edges(
    prepared: DataFrame, settings: ThresholdSettings
) -> tuple[np.ndarray, np.ndarray, int]:
    """Score bin edges, initial uncertainty edges and the valid calibration row count (one pass).

    Duplicated quantiles (ties, e.g. a score that takes few values) collapse to one edge: a
    threshold cannot split equal scores anyway.
    """
    score_probs = [i / settings.score_bins for i in range(1, settings.score_bins)]
    bucket_probs = [i / settings.n_buckets for i in range(1, settings.n_buckets)]
    calibration = prepared.where(F.col(REASON).isNull() & (F.col(SPLIT) == SPLITS[0]))
    row = calibration.agg(
        F.percentile_approx("score", score_probs or [0.5], settings.quantile_accuracy).alias("s"),
        F.percentile_approx("uncertainty", bucket_probs or [0.5], settings.quantile_accuracy).alias(
            "u"
        ),
        F.count(F.lit(1)).alias("n"),
    ).head()
    if not row or row["n"] == 0:
        return np.array([]), np.array([]), 0
    score_edges = np.unique(np.asarray(row["s"], dtype=float))
    u_edges = np.unique(np.asarray(row["u"], dtype=float)) if bucket_probs else np.array([])
    return score_edges, u_edges, int(row["n"])


def histogram_cells(
    prepared: DataFrame, score_edges: np.ndarray, uncertainty_edges: np.ndarray
) -> pd.DataFrame:
    """The one aggregation: ``split, reason, bucket, bin, rows, positives, score_sum`` per cell.

    Invalid rows keep a null bucket and bin and are counted under their reason.
    """
    valid = F.col(REASON).isNull()
    cells = prepared.groupBy(
        SPLIT,
        REASON,
        F.when(valid, edge_index(F.col("uncertainty"), uncertainty_edges)).alias(BUCKET),
        F.when(valid, edge_index(F.col("score"), score_edges)).alias(BIN),
    ).agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(valid, F.col("label"))).cast("long").alias("positives"),
        F.sum(F.when(valid, F.col("score"))).alias("score_sum"),
    )
    return cells.toPandas()


def cells_to_histograms(
    cells: pd.DataFrame,
    score_edges: np.ndarray,
    uncertainty_edges: np.ndarray,
    min_bucket_support: int,
) -> SplitHistograms:
    """Dense per-split arrays from the aggregated cells, small buckets merged on calibration
    support (merging is a sum of histogram rows, so it needs no second pass over the data)."""
    shape = (len(uncertainty_edges) + 1, len(score_edges) + 1)
    valid = cells[cells[REASON].isna()]
    arrays = {}
    for split in SPLITS:
        part = valid[valid[SPLIT] == split]
        b, j = part[BUCKET].astype(int).to_numpy(), part[BIN].astype(int).to_numpy()
        pos, rows, ssum = np.zeros(shape, np.int64), np.zeros(shape, np.int64), np.zeros(shape)
        np.add.at(pos, (b, j), part["positives"].fillna(0).astype("int64").to_numpy())
        np.add.at(rows, (b, j), part["rows"].astype("int64").to_numpy())
        np.add.at(ssum, (b, j), part["score_sum"].fillna(0.0).to_numpy())
        arrays[split] = Histogram(pos, rows - pos, ssum)
    groups = merge_small_buckets(arrays[SPLITS[0]].rows.sum(axis=1), min_bucket_support)
    if len(groups) < shape[0]:
        log.info(
            "merged %d uncertainty buckets into %d (min support %d)",
            shape[0],
            len(groups),
            min_bucket_support,
        )
    invalid = cells[cells[REASON].notna()].groupby(REASON)["rows"].sum()
    return SplitHistograms(
        score_edges=np.asarray(score_edges, dtype=float),
        uncertainty_edges=merged_edges(np.asarray(uncertainty_edges, dtype=float), groups),
        calibration=arrays[SPLITS[0]].merge_buckets(groups),
        selection=arrays[SPLITS[1]].merge_buckets(groups),
        evaluation=arrays[SPLITS[2]].merge_buckets(groups),
        invalid={str(k): int(v) for k, v in invalid.items()},
        rows=int(cells["rows"].sum()),
    )


def build_histograms(
    df: DataFrame,
    settings: ThresholdSettings,
    *,
    key_cols: Sequence[str] = (),
    score_col: str = "score",
    uncertainty_col: str = "uncertainty",
    label_col: str = "label",
) -> SplitHistograms:
    """The three splits' histograms of labelled scores: quantile pass + one aggregation.

    Invalid rows (``INVALID_REASONS``) are never dropped silently: they are counted by reason, and
    when they are more than ``settings.max_invalid_ratio`` of the rows the fit stops with the
    counts (``InvalidRowsError``); otherwise they are excluded and the counts travel with the
    result and into the log. ``df`` is read twice; persist it first if it is expensive.
    """
    prepared = prepare(
        df,
        settings,
        key_cols=key_cols,
        score_col=score_col,
        uncertainty_col=uncertainty_col,
        label_col=label_col,
    )
    score_edges, u_edges, n_calibration = quantile_edges(prepared, settings)
    if n_calibration == 0:
        counts = prepared.groupBy(REASON).count().toPandas()
        summary = ", ".join(
            f"{r or 'valid'}: {c}" for r, c in zip(counts[REASON], counts["count"], strict=True)
        )
        raise ThresholdInputError(
            f"no valid rows in the calibration split ({summary or 'the input is empty'})"
        )
    cells = histogram_cells(prepared, score_edges, u_edges)
    hists = cells_to_histograms(cells, score_edges, u_edges, settings.min_bucket_support)
    _check_invalid(hists, settings.max_invalid_ratio)
    return hists


def _check_invalid(hists: SplitHistograms, max_ratio: float) -> None:
    n_invalid = sum(hists.invalid.values())
    if not n_invalid:
        return
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(hists.invalid.items()))
    ratio = n_invalid / hists.rows
    if ratio > max_ratio:
        raise InvalidRowsError(
            f"{n_invalid} of {hists.rows} labelled scores ({ratio:.2%}) are unusable ({detail}); "
            f"thresholds.max_invalid_ratio is {max_ratio:.2%}. Fix the scores, or raise the ratio "
            "to fit on the valid rows only"
        )
    log.warning(
        "excluded %d of %d labelled scores from the threshold fit (%s)",
        n_invalid,
        hists.rows,
        detail,
    )
