"""Comparing weighting methods over model seeds: intervals, paired differences, RI-AUC.

Why seeds: on a test set of a few thousand positives the AUC of one model moves by more between
initialisations than most delayed-feedback methods move it, so a table of one model per method
can rank them by noise. Several models per method on the same rows (``conversion.model_seeds``)
give each metric a 95% t-interval; pairing each method's model with vanilla's of the same seed
removes the spread they share. Plain Python and numpy (no Spark, no torch): the report and
``bench/feedback_methods.py`` use the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats


def relative_improvement(auc: float, auc_vanilla: float, auc_oracle: float) -> float | None:
    """``RI-AUC = (AUC - AUC_vanilla) / (AUC_oracle - AUC_vanilla)``; None when the oracle does
    not differ from vanilla (the ratio is undefined)."""
    gap = auc_oracle - auc_vanilla
    if abs(gap) < 1e-12:
        return None
    return (auc - auc_vanilla) / gap + 0.0  # + 0.0: vanilla's own 0 is never stored as -0.0


@dataclass(frozen=True)
class SeedInterval:
    """Mean of one metric over model seeds with the half-width of its 95% t-interval (None for
    a single seed: one model says nothing about the seed-to-seed spread)."""

    mean: float
    half_width: float | None
    sd: float | None
    seeds: int

    def __str__(self) -> str:
        if self.half_width is None:
            return f"{self.mean:.4f}"
        return f"{self.mean:.4f} ± {self.half_width:.4f}"


def seed_interval(values: Sequence[float]) -> SeedInterval:
    """The mean and 95% t-interval of ``values`` (one per seed)."""
    if not len(values):
        raise ValueError("seed_interval needs at least one value")
    mean = float(np.mean(values))
    if len(values) < 2:
        return SeedInterval(mean, None, None, 1)
    sd = float(np.std(values, ddof=1))
    half = float(scipy_stats.t.ppf(0.975, len(values) - 1)) * sd / len(values) ** 0.5
    return SeedInterval(mean, half, sd, len(values))


def paired_to_vanilla(rows: Sequence[dict[str, Any]], method: str, metric: str) -> list[float]:
    """``metric(method) - metric(vanilla)`` per model seed (rows with ``model_seed``): the seeds
    share the data, so the paired difference removes the spread every method has in common."""
    vanilla = {r.get("model_seed"): r[metric] for r in rows if r["method"] == "vanilla"}
    return [
        r[metric] - vanilla[r.get("model_seed")]
        for r in rows
        if r["method"] == method and r.get("model_seed") in vanilla and r[metric] is not None
    ]
