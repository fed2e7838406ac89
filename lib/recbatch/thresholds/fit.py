"""Fitting: histograms -> candidate rules (calibration) -> certified rule (selection) -> report
(evaluation), for the per-bucket method and the single raw-score threshold baseline.

Both methods go through exactly the same machinery; the baseline is the per-bucket method on the
histograms with all uncertainty buckets pooled into one. So the two can be compared at the same
guarantee: each rule is certified at ``target_precision`` with error probability ``delta``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

from recbatch.log import get_logger
from recbatch.thresholds.aggregate import build_histograms
from recbatch.thresholds.guarantee import clopper_pearson, fixed_sequence, scan_order
from recbatch.thresholds.histogram import Histogram, SplitHistograms
from recbatch.thresholds.optimize import candidates_for, greedy_optimum, score_thresholds
from recbatch.thresholds.settings import ThresholdSettings

log = get_logger(__name__)

METHODS = ("per_bucket", "single")
"""``per_bucket``: one threshold per uncertainty bucket; ``single``: one on the raw score."""

EVALUATION_COLUMNS = [
    "bucket",
    "support",
    "eval_rows",
    "eval_positives",
    "eval_accepted",
    "eval_true_positives",
    "precision",
    "precision_lo",
    "precision_hi",
    "recall",
    "recall_lo",
    "recall_hi",
]


@dataclass(frozen=True)
class RuleFit:
    """One certified rule with its trace and its evaluation."""

    method: str
    uncertainty_edges: np.ndarray
    """Internal uncertainty edges; bucket ``b`` is ``[edges[b-1], edges[b])``, open at the ends."""
    cut_bins: np.ndarray
    """Per bucket, the first accepted score bin (``bins`` = none)."""
    score_thresholds: np.ndarray
    """Per bucket, accept ``score >= threshold`` (``+inf``: nothing, ``-inf``: everything)."""
    rate_cutoff: float | None
    """The calibrated positive rate of the last accepted step (None when nothing is accepted)."""
    certified_lower_bound: float | None
    """Selection-split Clopper-Pearson lower bound of the chosen rule's precision."""
    calibration_optimum: int
    """Rate groups the greedy accepts on the calibration split alone (for comparison)."""
    candidates: pd.DataFrame
    """Trace: per candidate its rate cutoff, calibration and selection counts, bound, outcome."""
    evaluation: pd.DataFrame
    """Per bucket (``EVALUATION_COLUMNS``): evaluation-split counts, precision, recall, intervals."""
    overall: dict[str, float | int | None]
    """The same over all buckets."""


@dataclass(frozen=True)
class ThresholdFit:
    settings: ThresholdSettings
    histograms: SplitHistograms
    per_bucket: RuleFit
    single: RuleFit

    def rule(self, method: str) -> RuleFit:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        return self.per_bucket if method == "per_bucket" else self.single


def fit_rule(hists: SplitHistograms, settings: ThresholdSettings, method: str) -> RuleFit:
    """Candidates from calibration, fixed-sequence choice on selection, report on evaluation."""
    cal, sel = hists.calibration, hists.selection
    cands = candidates_for(cal)
    cal_tp, cal_n = cal.counts_at(cands.cut_bins)
    sel_tp, sel_n = sel.counts_at(cands.cut_bins)
    size_ratio = sel.rows.sum() / max(int(cal.rows.sum()), 1)
    order = scan_order(cal_tp, cal_n, size_ratio, settings.delta, settings.sequence_start)
    result = fixed_sequence(order, sel_tp, sel_n, settings.target_precision, settings.delta)
    chosen = result.chosen
    cut = cands.cut_bins[chosen]
    greedy = greedy_optimum(cal, settings.target_precision, cands)
    evaluation, overall = evaluate_rule(cut, cal, hists.evaluation, settings.interval_level)
    trace = pd.DataFrame(
        {
            "candidate": np.arange(cands.n_groups + 1),
            "rate_cutoff": np.r_[np.nan, cands.rates],
            "calibration_tp": cal_tp,
            "calibration_accepted": cal_n,
            "selection_tp": sel_tp,
            "selection_accepted": sel_n,
            "lower_bound": result.lower_bounds,
            "certified": result.certified,
        }
    )
    fit = RuleFit(
        method=method,
        uncertainty_edges=np.asarray(hists.uncertainty_edges, dtype=float),
        cut_bins=cut,
        score_thresholds=score_thresholds(cut, hists.score_edges),
        rate_cutoff=float(cands.rates[chosen - 1]) if chosen else None,
        certified_lower_bound=result.chosen_lower_bound,
        calibration_optimum=greedy.groups,
        candidates=trace,
        evaluation=evaluation,
        overall=overall,
    )
    _log_fit(fit, settings, int(np.isfinite(result.lower_bounds).sum()))
    return fit


def _log_fit(fit: RuleFit, settings: ThresholdSettings, tested: int) -> None:
    if fit.certified_lower_bound is None:
        log.warning(
            "%s: no rule certified at precision >= %.3f (delta %.3f) after %d test(s): "
            "everything is rejected; more selection rows or a lower target would help",
            fit.method,
            settings.target_precision,
            settings.delta,
            tested,
        )
        return
    log.info(
        "%s: certified precision >= %.4f (target %.3f); evaluation precision %s recall %s; "
        "thresholds %s",
        fit.method,
        fit.certified_lower_bound,
        settings.target_precision,
        _fmt(fit.overall["precision"]),
        _fmt(fit.overall["recall"]),
        np.array2string(fit.score_thresholds, precision=4),
    )


def _fmt(value: float | int | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def evaluate_rule(
    cut_bins: np.ndarray, calibration: Histogram, evaluation: Histogram, level: float
) -> tuple[pd.DataFrame, dict[str, float | int | None]]:
    """Per-bucket and overall precision and recall of a rule on the evaluation histogram, with
    two-sided Clopper-Pearson intervals at ``level`` (precision undefined when nothing is
    accepted, recall when a bucket has no positives: None)."""
    tp_tail, n_tail = evaluation.tails()
    rows = np.arange(evaluation.n_buckets)
    tp, accepted = tp_tail[rows, cut_bins], n_tail[rows, cut_bins]
    positives = evaluation.positives.sum(axis=1)
    frame = pd.DataFrame(
        {
            "bucket": rows,
            "support": calibration.rows.sum(axis=1),
            "eval_rows": evaluation.rows.sum(axis=1),
            "eval_positives": positives,
            "eval_accepted": accepted,
            "eval_true_positives": tp,
        }
    )
    _add_rate(frame, "precision", tp, accepted, level)
    _add_rate(frame, "recall", tp, positives, level)
    total = {
        "eval_accepted": int(accepted.sum()),
        "eval_true_positives": int(tp.sum()),
        "eval_positives": int(positives.sum()),
    }
    summary = pd.DataFrame(index=[0])
    _add_rate(summary, "precision", tp.sum(), accepted.sum(), level)
    _add_rate(summary, "recall", tp.sum(), positives.sum(), level)
    overall = total | {k: _none_if_nan(v) for k, v in summary.iloc[0].items()}
    return frame[EVALUATION_COLUMNS], overall


def _add_rate(frame: pd.DataFrame, name: str, k: np.ndarray, n: np.ndarray, level: float) -> None:
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    lo, hi = clopper_pearson(k, n, level)
    defined = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        frame[name] = np.where(defined, k / np.where(defined, n, 1), np.nan)
    frame[f"{name}_lo"] = np.where(defined, lo, np.nan)
    frame[f"{name}_hi"] = np.where(defined, hi, np.nan)


def _none_if_nan(value: object) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


def fit_from_histograms(hists: SplitHistograms, settings: ThresholdSettings) -> ThresholdFit:
    """Both methods on the same histograms (no Spark work: the driver's part of the fit)."""
    return ThresholdFit(
        settings=settings,
        histograms=hists,
        per_bucket=fit_rule(hists, settings, "per_bucket"),
        single=fit_rule(hists.pooled(), settings, "single"),
    )


def fit_thresholds(
    df: DataFrame,
    settings: ThresholdSettings,
    *,
    key_cols: Sequence[str] = (),
    score_col: str = "score",
    uncertainty_col: str = "uncertainty",
    label_col: str = "label",
) -> ThresholdFit:
    """Per-bucket thresholds and the single-threshold baseline from labelled scores in Spark.

    ``key_cols`` identify a row (they seed the split hash; see ``aggregate.split_column``).
    """
    hists = build_histograms(
        df,
        settings,
        key_cols=key_cols,
        score_col=score_col,
        uncertainty_col=uncertainty_col,
        label_col=label_col,
    )
    return fit_from_histograms(hists, settings)
