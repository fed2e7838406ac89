"""Isotonic calibration of score -> positive rate, per uncertainty bucket, on histogram counts.

``sklearn.isotonic.IsotonicRegression`` fits each bucket's bins (x = bin index, y = positive rate,
weight = rows), which is the weighted pool-adjacent-violators solution. Its blocks of constant
fitted rate are the *steps*: runs of adjacent bins that must be accepted or rejected together. The
step rates are then recomputed from the integer counts (``positives / rows`` of the block), so they
are exact and the optimiser's precision arithmetic does not depend on floating-point noise.

Why this is the right object: the cumulative (negatives, positives) curve of a bucket read from the
top score down is its ROC-like curve, and the isotonic steps are the segments of its concave
majorant. Any accept-set of a bucket that is a score threshold lies on or under that majorant, so
taking whole steps in order of decreasing rate is the linear-relaxation optimum (optimize.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from recbatch.thresholds.histogram import Histogram

STEP_COLUMNS = ["bucket", "first_bin", "last_bin", "positives", "negatives", "rate"]


def bucket_steps(positives: np.ndarray, negatives: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Isotonic steps of one bucket, by increasing score: ``(first_bin, last_bin, pos, neg)``.

    Only non-empty bins carry weight; an empty bin between two steps belongs to neither (no row
    says anything about it) and the threshold of a step is its first non-empty bin's lower edge.
    Consecutive step rates are strictly increasing.
    """
    positives = np.asarray(positives, dtype=np.int64)
    negatives = np.asarray(negatives, dtype=np.int64)
    rows = positives + negatives
    bins = np.flatnonzero(rows)
    if bins.size == 0:
        return []
    fitted = (
        IsotonicRegression(increasing=True)
        .fit(bins.astype(float), positives[bins] / rows[bins], sample_weight=rows[bins])
        .predict(bins.astype(float))
    )
    # Blocks: runs of equal fitted value (PAV gives one value per pooled block).
    starts = np.flatnonzero(np.r_[True, np.abs(np.diff(fitted)) > 1e-12])
    ends = np.r_[starts[1:], bins.size]
    steps = [
        [
            int(bins[s]),
            int(bins[e - 1]),
            int(positives[bins[s:e]].sum()),
            int(rows[bins[s:e]].sum()),
        ]
        for s, e in zip(starts, ends, strict=True)
    ]
    return [(f, last, p, n - p) for f, last, p, n in _pool_exact(steps)]


def _pool_exact(steps: list[list[int]]) -> list[list[int]]:
    """Merge adjacent steps whose exact rates do not strictly increase.

    Guards against the floating-point fit leaving two blocks whose exact ``pos / rows`` are equal
    or inverted by rounding; normally it changes nothing.
    """
    out: list[list[int]] = []
    for step in steps:
        out.append(list(step))
        while len(out) > 1 and out[-2][2] * out[-1][3] >= out[-1][2] * out[-2][3]:
            last = out.pop()
            out[-1] = [out[-1][0], last[1], out[-1][2] + last[2], out[-1][3] + last[3]]
    return out


def calibrated_steps(hist: Histogram) -> pd.DataFrame:
    """All buckets' steps as one frame (``STEP_COLUMNS``), each bucket by increasing score."""
    records = [
        (b, first, last, pos, neg, pos / (pos + neg))
        for b in range(hist.n_buckets)
        for first, last, pos, neg in bucket_steps(hist.positives[b], hist.negatives[b])
    ]
    frame = pd.DataFrame.from_records(records, columns=STEP_COLUMNS)
    return frame.astype({c: "int64" for c in STEP_COLUMNS[:-1]} | {"rate": "float64"})


def calibrated_rates(hist: Histogram) -> np.ndarray:
    """The calibrated positive rate of every (bucket, bin); NaN where a bin has no rows."""
    rates = np.full(hist.positives.shape, np.nan)
    for b in range(hist.n_buckets):
        nonempty = hist.rows[b] > 0
        for first, last, pos, neg in bucket_steps(hist.positives[b], hist.negatives[b]):
            span = np.zeros(hist.n_bins, dtype=bool)
            span[first : last + 1] = True
            rates[b, span & nonempty] = pos / (pos + neg)
    return rates
