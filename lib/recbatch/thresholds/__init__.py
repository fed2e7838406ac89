"""Uncertainty-aware decision thresholds (docs/thresholds.md).

A classifier returns a score and an uncertainty; at the same score the positive rate falls as the
uncertainty grows. This package picks one score threshold per uncertainty bucket that maximises
recall at a target precision, certifies on a separate split that the precision holds on fresh data
with probability >= 1 - delta, reports it on a third split, stores it in a Delta ``thresholds``
table and applies it to new scores. A single raw-score threshold goes through the same machinery as
the baseline.

* ``aggregate``: Spark: splits, validity, bucket/bin edges, the one histogram aggregation.
* ``histogram``: the histograms the driver works from; merging small buckets.
* ``calibrate``: isotonic score -> positive rate per bucket (its steps).
* ``optimize``: greedy pooled-step optimum, the exact knapsack reference, the candidate path.
* ``guarantee``: Clopper-Pearson bounds and fixed-sequence testing.
* ``fit``: the whole fit for both methods; ``table``: the Delta table; ``apply``: accept/reject.
"""

from __future__ import annotations

import importlib
from typing import Any

# Exports are resolved lazily (PEP 562) so that ``recbatch.thresholds.settings`` can be imported by
# recbatch.config without pulling in Spark, scipy and scikit-learn (or importing config back).
_EXPORTS = {
    "build_histograms": "aggregate",
    "invalid_rows": "aggregate",
    "split_column": "aggregate",
    "apply_thresholds": "apply",
    "InvalidRowsError": "errors",
    "ThresholdError": "errors",
    "ThresholdInputError": "errors",
    "ThresholdTableError": "errors",
    "METHODS": "fit",
    "RuleFit": "fit",
    "ThresholdFit": "fit",
    "fit_from_histograms": "fit",
    "fit_thresholds": "fit",
    "ThresholdSettings": "settings",
    "THRESHOLDS_SCHEMA": "table",
    "read_thresholds": "table",
    "thresholds_table": "table",
    "write_thresholds": "table",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'recbatch.thresholds' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"recbatch.thresholds.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
