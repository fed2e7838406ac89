"""Thresholds that maximise recall subject to precision >= target, on histogram counts.

The problem: pick a cut ``c_b`` per bucket (accept the bins ``>= c_b``) to maximise the total true
positives ``sum TP_b`` subject to ``sum TP_b / sum N_b >= target``. With ``target = p / q`` exactly
(a rational read from the decimal text of the target), the constraint is the integer knapsack
constraint ``sum((q - p) * TP_b - p * FP_b) >= 0``: each bucket contributes a *slack*, positive
where its accepted rows are more precise than the target, negative where they are less.

* ``greedy_optimum`` pools the isotonic steps of every bucket (calibrate.py) and accepts them by
  decreasing calibrated rate while the pooled precision holds: one cutoff on calibrated rate. It
  is the linear-relaxation optimum except for the first step it cannot take whole, so it is exact
  up to one step: ``greedy.tp <= exact.tp <= greedy.tp + greedy.next_step_tp``.
* ``exact_optimum`` is the reference: a dynamic program over buckets on all bin cuts (not only step
  boundaries), keeping the Pareto front of (slack, TP) states. Exponential in the worst case, so it
  is for small inputs and tests.
* ``candidate_path`` is the greedy's whole sequence of nested rules (strictest first), which
  guarantee.py tests on a separate split to choose the final cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pandas as pd

from recbatch.thresholds.calibrate import calibrated_steps
from recbatch.thresholds.errors import ProblemTooLarge
from recbatch.thresholds.histogram import Histogram


def target_fraction(target: float) -> tuple[int, int]:
    """``(p, q)`` with ``p / q`` the target as written in decimal (0.8 -> 4/5), not its binary
    approximation: the precision constraint is then decided in exact integer arithmetic."""
    if not 0 < target < 1:
        raise ValueError(f"target precision {target} must be in (0, 1)")
    frac = Fraction(repr(float(target)))
    return frac.numerator, frac.denominator


def precision_slack(tp: np.ndarray | int, fp: np.ndarray | int, target: float) -> np.ndarray:
    """``(q - p) * tp - p * fp``: >= 0 exactly when ``tp / (tp + fp) >= p / q`` (or nothing is
    accepted). Python integers, so no overflow whatever the counts."""
    p, q = target_fraction(target)
    tp_arr = np.asarray(tp, dtype=object)
    fp_arr = np.asarray(fp, dtype=object)
    return (q - p) * tp_arr - p * fp_arr


@dataclass(frozen=True)
class Candidates:
    """The greedy's nested rules. ``cut_bins[k]`` accepts the ``k`` highest rate groups."""

    rates: np.ndarray
    """Calibrated rate of each group of steps, strictly decreasing, shape ``(G,)``."""
    cut_bins: np.ndarray
    """Shape ``(G + 1, buckets)``; row 0 accepts nothing (every cut is ``bins``)."""

    @property
    def n_groups(self) -> int:
        return len(self.rates)


def candidate_path(steps: pd.DataFrame, n_buckets: int, n_bins: int) -> Candidates:
    """Accept the steps by decreasing calibrated rate, equal rates together.

    Within a bucket the step rates increase with the score, so each prefix is a score threshold
    per bucket, and the thresholds only move down (looser) along the path.
    """
    order = np.lexsort((steps["bucket"].to_numpy(), -steps["rate"].to_numpy()))
    rate = steps["rate"].to_numpy()[order]
    bucket = steps["bucket"].to_numpy()[order]
    first = steps["first_bin"].to_numpy()[order]
    rates, group_starts = np.unique(-rate, return_index=True)
    group_ends = np.r_[group_starts[1:], len(rate)]
    cut_bins = np.full((len(rates) + 1, n_buckets), n_bins, dtype=np.int64)
    current = cut_bins[0].copy()
    for k, (lo, hi) in enumerate(zip(group_starts, group_ends, strict=True), start=1):
        np.minimum.at(current, bucket[lo:hi], first[lo:hi])
        cut_bins[k] = current
    return Candidates(rates=-rates.astype(float), cut_bins=cut_bins)


def candidates_for(hist: Histogram) -> Candidates:
    """The candidate path of a histogram (isotonic steps of each bucket, pooled)."""
    return candidate_path(calibrated_steps(hist), hist.n_buckets, hist.n_bins)


@dataclass(frozen=True)
class Optimum:
    """One rule: a cut per bucket and its counts on the histogram it was chosen on."""

    cut_bins: np.ndarray
    tp: int
    fp: int
    groups: int = 0
    """Greedy only: how many rate groups it accepted (``k`` of ``Candidates.cut_bins``)."""
    next_step_tp: int = 0
    """Greedy only: true positives of the first group it could not take (the "one step")."""

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None


def greedy_optimum(hist: Histogram, target: float, cands: Candidates | None = None) -> Optimum:
    """The longest prefix of the candidate path whose pooled precision is >= target.

    Groups with rate >= target add slack and come first, the others spend it, so the slack rises
    then falls along the path: the feasible prefixes are exactly those up to the last one with
    non-negative slack. ``cands``: the histogram's candidate path, when already computed.
    """
    cands = candidates_for(hist) if cands is None else cands
    tp, n = hist.counts_at(cands.cut_bins)
    slack = precision_slack(tp, n - tp, target)
    k = max(i for i, s in enumerate(slack) if s >= 0)
    next_tp = int(tp[k + 1] - tp[k]) if k < cands.n_groups else 0
    return Optimum(cands.cut_bins[k], int(tp[k]), int(n[k] - tp[k]), k, next_tp)


def exact_optimum(hist: Histogram, target: float, max_states: int = 200_000) -> Optimum:
    """Maximum TP over all per-bucket bin cuts with precision >= target (ties: most slack).

    Knapsack over buckets on the Pareto front of ``(slack, tp)``: a state with less slack and no
    more TP than another can never end better, since the later buckets add the same to both.
    """
    p, q = target_fraction(target)
    tp_tail, n_tail = hist.tails()
    states: list[tuple[int, int, tuple[int, ...]]] = [(0, 0, ())]
    for b in range(hist.n_buckets):
        options = [
            (
                (q - p) * int(tp_tail[b, c]) - p * int(n_tail[b, c] - tp_tail[b, c]),
                int(tp_tail[b, c]),
                c,
            )
            for c in range(hist.n_bins + 1)
        ]
        if len(states) * len(options) > max_states:
            raise ProblemTooLarge(
                f"exact optimiser: {len(states)} states x {len(options)} cuts in bucket {b} "
                f"exceeds max_states={max_states}; it is a reference for small inputs"
            )
        combined = [
            (slack + ds, tp + dtp, (*cuts, c))
            for slack, tp, cuts in states
            for ds, dtp, c in options
        ]
        states = _pareto_front(combined)
    slack, tp, cuts = max((s for s in states if s[0] >= 0), key=lambda s: (s[1], s[0]))
    n = int(hist.counts_at(np.array(cuts))[1]) if cuts else 0
    return Optimum(np.array(cuts, dtype=np.int64), tp, n - tp)


def _pareto_front(
    states: list[tuple[int, int, tuple[int, ...]]],
) -> list[tuple[int, int, tuple[int, ...]]]:
    """States not dominated in (slack, tp); on exact ties the lexicographically first cuts."""
    front = []
    best_tp = -1
    for state in sorted(states, key=lambda s: (-s[0], -s[1], s[2])):
        if state[1] > best_tp:
            front.append(state)
            best_tp = state[1]
    return front


def score_thresholds(cut_bins: np.ndarray, score_edges: np.ndarray) -> np.ndarray:
    """Score threshold of each cut: the lower edge of bin ``c`` (``-inf`` for bin 0: accept all;
    ``+inf`` for the cut past the last bin: accept none)."""
    lower = np.r_[-np.inf, np.asarray(score_edges, dtype=float), np.inf]
    return lower[np.asarray(cut_bins, dtype=np.int64)]
