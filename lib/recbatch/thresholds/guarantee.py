"""Choosing the cutoff on a separate split so that precision >= target holds on fresh data.

For a fixed rule, the true positives among the rows it accepts are, given how many it accepts,
``Binomial(N, pi)`` where ``pi`` is the rule's precision on the population. The one-sided
Clopper-Pearson bound ``L = Beta.ppf(delta, TP, N - TP + 1)`` satisfies ``P(L > pi) <= delta``, so
"certify the rule when ``L >= target``" is a level-``delta`` test of ``H0: pi < target``.

Scanning many cutoffs and keeping the loosest certified one would multiply the chances of a false
certification. Fixed-sequence testing avoids paying for the scan: the candidates are put in an
order fixed *before* looking at the selection split (here: from the calibration split only), each
is tested at level ``delta`` in that order, and the scan stops at the first one not certified. A
false certification can only happen at the first true null reached, whose test alone has level
``delta``, so ``P(some certified rule has pi < target) <= delta`` for the whole scan. The nested
candidates are tested from strict to loose, so stopping early only costs recall.

Where the scan starts is also fixed from calibration alone: at the strictest candidate
(``strictest``), or at the candidate whose calibration precision and size predict the highest
Clopper-Pearson bound on the selection split (``calibration_best``), continuing towards looser
candidates. The second avoids stalling on the strictest candidates, which accept a handful of rows
and cannot be certified whatever their precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta


def clopper_pearson(
    k: np.ndarray | int, n: np.ndarray | int, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided exact binomial interval for ``k`` successes in ``n`` trials at ``level``;
    ``(0, 1)`` where ``n`` is 0."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    alpha = 1.0 - level
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, beta.ppf(alpha / 2, np.maximum(k, 1e-300), n - k + 1), 0.0)
        hi = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, np.maximum(n - k, 1e-300)), 1.0)
    return np.nan_to_num(lo, nan=0.0), np.nan_to_num(hi, nan=1.0)


def precision_lower_bound(tp: np.ndarray | int, n: np.ndarray | int, delta: float) -> np.ndarray:
    """One-sided ``1 - delta`` lower confidence bound of a precision from ``tp`` of ``n``; 0 when
    ``tp`` is 0 (in particular when nothing is accepted: an empty rule certifies nothing)."""
    tp = np.asarray(tp, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = np.where(tp > 0, beta.ppf(delta, np.maximum(tp, 1e-300), n - tp + 1), 0.0)
    return np.nan_to_num(bound, nan=0.0)


def scan_order(
    cal_tp: np.ndarray,
    cal_n: np.ndarray,
    size_ratio: float,
    delta: float,
    start: str = "calibration_best",
) -> list[int]:
    """The fixed testing order of candidates ``1..G`` (0, accept nothing, is never tested).

    Uses only calibration counts (and the split sizes), never selection labels: that is what makes
    the fixed-sequence guarantee hold. ``size_ratio`` = selection rows / calibration rows.
    """
    n_candidates = len(cal_tp) - 1
    if n_candidates <= 0:
        return []
    if start == "strictest":
        first = 1
    elif start == "calibration_best":
        predicted = precision_lower_bound(
            np.asarray(cal_tp[1:], dtype=float) * size_ratio,
            np.asarray(cal_n[1:], dtype=float) * size_ratio,
            delta,
        )
        # The loosest of equally good starts: more recall for the same chance of passing.
        first = 1 + int(np.flatnonzero(predicted == predicted.max()).max())
    else:
        raise ValueError(f"unknown sequence start {start!r}")
    return list(range(first, n_candidates + 1))


@dataclass(frozen=True)
class FixedSequenceResult:
    chosen: int
    """The loosest certified candidate, 0 (accept nothing) when the first test fails."""
    lower_bounds: np.ndarray
    """Selection-split lower bound of every candidate tested (NaN where not tested)."""
    certified: np.ndarray
    """Bool per candidate: tested and certified."""

    @property
    def chosen_lower_bound(self) -> float | None:
        return float(self.lower_bounds[self.chosen]) if self.chosen else None


def fixed_sequence(
    order: list[int], tp: np.ndarray, n: np.ndarray, target: float, delta: float
) -> FixedSequenceResult:
    """Test candidates in ``order`` on the selection counts ``tp``/``n``; stop at the first failure."""
    bounds = np.full(len(tp), np.nan)
    certified = np.zeros(len(tp), dtype=bool)
    chosen = 0
    for k in order:
        bounds[k] = float(precision_lower_bound(tp[k], n[k], delta))
        if bounds[k] < target:
            break
        certified[k] = True
        chosen = k
    return FixedSequenceResult(chosen, bounds, certified)
