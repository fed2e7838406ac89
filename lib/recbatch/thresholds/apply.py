"""Applying stored thresholds to scores: DataFrame in, DataFrame out, no UDF, no row collect.

The thresholds table is tiny (buckets x methods rows): it is read on the driver and turned into
Column expressions whose literals are the stored doubles, so the accept decision is exactly
``score >= score_threshold`` of the stored row whose ``[uncertainty_lo, uncertainty_hi)`` holds
the row's uncertainty; the bucket uses the same ``edge_index`` expression as the fit.

Rows whose score or uncertainty is null, NaN or infinite have no bucket: they keep a null
``bucket`` and ``threshold`` and ``accepted = false`` (no certified rule covers them), and are
never dropped.
"""

from __future__ import annotations

import math

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recbatch.thresholds.aggregate import edge_index, finite
from recbatch.thresholds.errors import ThresholdTableError

OUTPUT_COLUMNS = ("bucket", "threshold", "accepted")


def _rows_of(thresholds: DataFrame | pd.DataFrame, method: str) -> pd.DataFrame:
    wanted = ["model_version", "run_date", "method", "bucket", "uncertainty_lo", "uncertainty_hi"]
    wanted.append("score_threshold")
    if isinstance(thresholds, DataFrame):
        thresholds = thresholds.where(F.col("method") == method).select(*wanted).toPandas()
    else:
        thresholds = thresholds[thresholds["method"] == method][wanted]
    return thresholds.sort_values("bucket").reset_index(drop=True)


def check_thresholds(rows: pd.DataFrame, method: str) -> None:
    """One run, buckets ``0..B-1`` covering ``(-inf, +inf)`` without gaps or overlaps."""
    if rows.empty:
        raise ThresholdTableError(f"no '{method}' thresholds given")
    runs = rows[["model_version", "run_date"]].drop_duplicates()
    if len(runs) != 1:
        raise ThresholdTableError(
            f"thresholds of {len(runs)} runs given ({runs.to_dict('records')}); "
            "select one model version and run date (read_thresholds)"
        )
    lo, hi = rows["uncertainty_lo"].tolist(), rows["uncertainty_hi"].tolist()
    if (
        rows["bucket"].tolist() != list(range(len(rows)))
        or lo[0] != -math.inf
        or hi[-1] != math.inf
        or any(h != next_lo for h, next_lo in zip(hi[:-1], lo[1:], strict=True))
        or any(not lo_b < hi_b for lo_b, hi_b in zip(lo, hi, strict=True))
    ):
        raise ThresholdTableError(
            f"'{method}' buckets must be 0..B-1 with contiguous increasing uncertainty ranges "
            f"from -inf to +inf; got {rows[['bucket', 'uncertainty_lo', 'uncertainty_hi']].to_dict('records')}"
        )


def threshold_expression(bucket: Column, thresholds: list[float]) -> Column:
    """``CASE bucket WHEN 0 THEN t0 WHEN 1 THEN t1 ... END`` with the stored thresholds."""
    expr = F.when(bucket == 0, F.lit(float(thresholds[0])))
    for b, t in enumerate(thresholds[1:], start=1):
        expr = expr.when(bucket == b, F.lit(float(t)))
    return expr


def apply_thresholds(
    df: DataFrame,
    thresholds: DataFrame | pd.DataFrame,
    *,
    method: str = "per_bucket",
    score_col: str = "score",
    uncertainty_col: str = "uncertainty",
) -> DataFrame:
    """``df`` with ``bucket``, ``threshold`` and ``accepted`` added, by the stored rules of one run.

    ``thresholds``: the rows of one (model version, run date), e.g. ``read_thresholds(...)``.
    """
    clash = [c for c in OUTPUT_COLUMNS if c in df.columns]
    if clash:
        raise ThresholdTableError(f"input already has column(s) {clash}; rename them first")
    rows = _rows_of(thresholds, method)
    check_thresholds(rows, method)
    score, uncertainty = F.col(score_col).cast("double"), F.col(uncertainty_col).cast("double")
    valid = finite(score) & finite(uncertainty)
    bucket = F.when(valid, edge_index(uncertainty, rows["uncertainty_hi"].tolist()[:-1]))
    threshold = threshold_expression(F.col("bucket"), rows["score_threshold"].tolist())
    return (
        df.withColumn("bucket", bucket.cast("int"))
        .withColumn("threshold", threshold)
        .withColumn("accepted", F.coalesce(score >= F.col("threshold"), F.lit(False)))
    )
