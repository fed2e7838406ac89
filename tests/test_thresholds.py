"""Uncertainty-aware thresholds, driver side: isotonic steps, optimisers, guarantee (no Spark).

Expected values in the hand-made cases are derived in the comments next to them; the random cases
compare the greedy optimiser with the exact dynamic program, and the exact program with brute force.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.stats import binom

from recbatch.errors import RecbatchError
from recbatch.thresholds.calibrate import bucket_steps, calibrated_rates
from recbatch.thresholds.errors import ProblemTooLarge
from recbatch.thresholds.fit import fit_from_histograms
from recbatch.thresholds.guarantee import (
    clopper_pearson,
    fixed_sequence,
    precision_lower_bound,
    scan_order,
)
from recbatch.thresholds.histogram import (
    Histogram,
    SplitHistograms,
    merge_small_buckets,
    merged_edges,
)
from recbatch.thresholds.optimize import (
    candidates_for,
    exact_optimum,
    greedy_optimum,
    precision_slack,
    score_thresholds,
    target_fraction,
)
from recbatch.thresholds.settings import ThresholdSettings

# Two buckets, four score bins each (low -> high score), counts (positives, negatives):
#   bucket 0 (certain):   0/10  2/8  8/2  10/0   rates 0  .2  .8  1
#   bucket 1 (uncertain): 0/10  1/9  4/6   9/1   rates 0  .1  .4  .9
# Pooled steps by rate: 1.0 (b0 bin 3, 10/0), .9 (b1 bin 3, 9/1), .8 (b0 bin 2, 8/2), .4 (b1 bin 2)
# cumulative precision: 10/10, 19/20 = .95, 27/30 = .9, 31/40 = .775.
HAND = Histogram(
    positives=[[0, 2, 8, 10], [0, 1, 4, 9]],
    negatives=[[10, 8, 2, 0], [10, 9, 6, 1]],
)


def brute_force(hist: Histogram, target: float) -> int:
    """Max TP over every combination of per-bucket cuts with precision >= target."""
    tp_tail, n_tail = hist.tails()
    best = 0
    for cuts in itertools.product(range(hist.n_bins + 1), repeat=hist.n_buckets):
        tp = sum(int(tp_tail[b, c]) for b, c in enumerate(cuts))
        n = sum(int(n_tail[b, c]) for b, c in enumerate(cuts))
        if n == 0 or tp / n >= target - 1e-12:
            best = max(best, tp)
    return best


def pav(y: list[float], w: list[float]) -> list[float]:
    """Textbook weighted pool-adjacent-violators, independent of sklearn."""
    blocks: list[list[float]] = []  # [weighted sum, weight, count]
    for yi, wi in zip(y, w, strict=True):
        blocks.append([yi * wi, wi, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            s, ww, c = blocks.pop()
            blocks[-1] = [blocks[-1][0] + s, blocks[-1][1] + ww, blocks[-1][2] + c]
    return [s / ww for s, ww, c in blocks for _ in range(c)]


def random_histogram(
    rng: np.random.Generator, max_buckets: int = 3, max_bins: int = 5, top: int = 6
):
    shape = (int(rng.integers(1, max_buckets + 1)), int(rng.integers(1, max_bins + 1)))
    return Histogram(rng.integers(0, top, shape), rng.integers(0, top, shape))


# --- settings -----------------------------------------------------------------------------------


def test_settings_validate_splits_and_forbid_unknown_keys():
    ThresholdSettings(calibration_fraction=0.6, selection_fraction=0.3)
    with pytest.raises(ValidationError, match="evaluation split"):
        ThresholdSettings(calibration_fraction=0.6, selection_fraction=0.4)
    with pytest.raises(ValidationError):
        ThresholdSettings(n_bukets=3)
    with pytest.raises(ValidationError):
        ThresholdSettings(target_precision=1.0)


# --- isotonic steps -----------------------------------------------------------------------------


def test_isotonic_pools_violators_hand_made():
    # rates .2 .6 .4 .9: bins 1 and 2 violate and pool to (3+2)/(5+5) = .5
    steps = bucket_steps(np.array([1, 3, 2, 9]), np.array([4, 2, 3, 1]))
    assert steps == [(0, 0, 1, 4), (1, 2, 5, 5), (3, 3, 9, 1)]


def test_isotonic_matches_textbook_pav_on_random_buckets():
    rng = np.random.default_rng(3)
    for _ in range(200):
        m = int(rng.integers(1, 12))
        pos, neg = rng.integers(0, 7, m), rng.integers(0, 7, m)
        rows = pos + neg
        nonempty = np.flatnonzero(rows)
        expected = pav(list(pos[nonempty] / rows[nonempty]), list(rows[nonempty].astype(float)))
        got = calibrated_rates(Histogram([pos], [neg]))[0]
        assert np.isnan(got[rows == 0]).all()
        np.testing.assert_allclose(got[nonempty], expected, rtol=0, atol=1e-12)
        steps = bucket_steps(pos, neg)
        rates = [p / (p + n) for _, _, p, n in steps]
        assert all(a < b for a, b in zip(rates, rates[1:], strict=False)), "steps must increase"
        assert sum(p for _, _, p, _ in steps) == pos.sum()
        assert sum(n for _, _, _, n in steps) == neg.sum()


def test_isotonic_empty_tied_and_single_bins():
    assert bucket_steps(np.zeros(4, int), np.zeros(4, int)) == []
    # every score tied in one bin: one step; empty bins around it belong to no step
    assert bucket_steps(np.array([0, 3, 0]), np.array([0, 7, 0])) == [(1, 1, 3, 7)]
    # all negative: one step of rate 0 spanning the non-empty bins
    assert bucket_steps(np.array([0, 0, 0]), np.array([2, 0, 5])) == [(0, 2, 0, 7)]


# --- optimiser ----------------------------------------------------------------------------------


def test_target_fraction_is_the_decimal_target():
    assert target_fraction(0.8) == (4, 5)
    assert target_fraction(0.95) == (19, 20)
    # 9 of 10 is exactly 0.9: feasible with zero slack, not lost to binary rounding
    assert precision_slack(9, 1, 0.9) == 0
    assert precision_slack(8, 1, 0.9) < 0 < precision_slack(10, 1, 0.9)


@pytest.mark.parametrize(
    ("target", "groups", "tp", "fp", "cuts"),
    [
        (0.8, 3, 27, 3, [2, 3]),  # 27/30 = .9; adding .4-step gives 31/40 < .8
        (0.9, 3, 27, 3, [2, 3]),  # 27/30 is exactly .9
        (0.95, 2, 19, 1, [3, 3]),  # 19/20 is exactly .95; 27/30 < .95
        (0.99, 1, 10, 0, [3, 4]),  # only the all-positive step
    ],
)
def test_greedy_and_exact_on_hand_made_histogram(target, groups, tp, fp, cuts):
    greedy = greedy_optimum(HAND, target)
    assert (greedy.groups, greedy.tp, greedy.fp, greedy.cut_bins.tolist()) == (groups, tp, fp, cuts)
    exact = exact_optimum(HAND, target)
    assert exact.tp == brute_force(HAND, target)
    assert greedy.tp <= exact.tp <= greedy.tp + greedy.next_step_tp


def test_per_bucket_beats_one_threshold_on_hand_made_histogram():
    # pooled bins: 0/20 3/17 12/8 19/1 -> at .8 one threshold takes 19/20 only (31/40 < .8)
    single = greedy_optimum(HAND.pooled(), 0.8)
    assert (single.tp, single.fp) == (19, 1)
    assert greedy_optimum(HAND, 0.8).tp == 27


def test_greedy_equals_exact_within_one_step_on_random_small_inputs():
    rng = np.random.default_rng(11)
    gaps = 0
    for _ in range(400):
        hist = random_histogram(rng)
        target = float(rng.choice([0.3, 0.5, 0.6, 2 / 3, 0.75, 0.8, 0.9]))
        greedy, exact = greedy_optimum(hist, target), exact_optimum(hist, target)
        assert exact.tp == brute_force(hist, target)
        assert precision_slack(greedy.tp, greedy.fp, target) >= 0, "greedy must be feasible"
        assert precision_slack(exact.tp, exact.fp, target) >= 0
        assert greedy.tp <= exact.tp <= greedy.tp + greedy.next_step_tp
        gaps += exact.tp > greedy.tp
    # The comparison is not vacuous: the discrete optimum sometimes beats the greedy.
    assert gaps > 0


def test_exact_optimum_refuses_large_inputs():
    big = Histogram(np.ones((6, 30), int), np.ones((6, 30), int))
    with pytest.raises(ProblemTooLarge, match="max_states"):
        exact_optimum(big, 0.5, max_states=20)
    assert issubclass(ProblemTooLarge, RecbatchError)


def test_thresholds_are_nested_along_the_path_and_monotone_in_target():
    rng = np.random.default_rng(5)
    for _ in range(100):
        hist = random_histogram(rng, max_buckets=4, max_bins=8, top=20)
        cuts = candidates_for(hist).cut_bins
        # looser candidates never raise a bucket's threshold
        assert (np.diff(cuts, axis=0) <= 0).all()
        previous = None
        for target in (0.3, 0.5, 0.7, 0.9):
            cut = greedy_optimum(hist, target).cut_bins
            if previous is not None:
                assert (cut >= previous).all(), "a higher target never lowers a threshold"
            previous = cut


def test_ties_across_buckets_form_one_step():
    # both buckets' only step has rate .5: one cutoff on calibrated rate takes both or neither
    hist = Histogram([[2], [3]], [[2], [3]])
    cands = candidates_for(hist)
    assert cands.rates.tolist() == [0.5]
    assert cands.cut_bins.tolist() == [[1, 1], [0, 0]]


def test_all_negative_histogram_accepts_nothing():
    hist = Histogram(np.zeros((2, 3), int), np.full((2, 3), 4))
    greedy = greedy_optimum(hist, 0.5)
    assert greedy.tp == 0 and greedy.cut_bins.tolist() == [3, 3]
    assert score_thresholds(greedy.cut_bins, np.array([0.2, 0.6])).tolist() == [math.inf] * 2
    assert exact_optimum(hist, 0.5).tp == 0


def test_empty_bucket_rejects_everything_and_does_not_disturb_the_others():
    hist = Histogram([[0, 2, 8, 10], [0, 0, 0, 0]], [[10, 8, 2, 0], [0, 0, 0, 0]])
    greedy, exact = greedy_optimum(hist, 0.8), exact_optimum(hist, 0.8)
    assert greedy.cut_bins[1] == hist.n_bins  # no step in the empty bucket: +inf threshold
    assert (greedy.tp, greedy.fp) == (18, 2)  # 10/10 + 8/10 of bucket 0, as without bucket 1
    assert exact.tp == greedy.tp == brute_force(hist, 0.8)


def test_score_thresholds_are_lower_bin_edges():
    edges = np.array([0.2, 0.5, 0.9])
    assert score_thresholds(np.array([0, 1, 3, 4]), edges).tolist() == [
        -math.inf,
        0.2,
        0.9,
        math.inf,
    ]


# --- buckets ------------------------------------------------------------------------------------


def test_merge_small_buckets_hand_made():
    # smallest first: 0 (idx 4) -> left; 3 (idx 2) -> smaller neighbour 50; 5 (idx 0) -> right
    groups = merge_small_buckets(np.array([5, 100, 3, 50, 0]), 10)
    assert groups == [[0, 1], [2, 3, 4]]
    assert merged_edges(np.array([0.1, 0.2, 0.3, 0.4]), groups).tolist() == [0.2]
    assert merge_small_buckets(np.array([20, 30]), 10) == [[0], [1]]
    # too little data overall: one bucket
    assert merge_small_buckets(np.array([1, 2, 3]), 100) == [[0, 1, 2]]


def test_merged_histogram_keeps_every_row():
    rng = np.random.default_rng(2)
    hist = Histogram(rng.integers(0, 5, (5, 4)), rng.integers(0, 5, (5, 4)))
    merged = hist.merge_buckets([[0, 1], [2], [3, 4]])
    assert merged.rows.sum() == hist.rows.sum()
    np.testing.assert_array_equal(merged.positives[0], hist.positives[0] + hist.positives[1])


# --- guarantee ----------------------------------------------------------------------------------


def test_clopper_pearson_closed_forms():
    n, level = 10, 0.95
    lo, hi = clopper_pearson(0, n, level)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / n))
    lo, hi = clopper_pearson(n, n, level)
    assert hi == 1 and lo == pytest.approx(0.025 ** (1 / n))
    assert precision_lower_bound(n, n, 0.1) == pytest.approx(0.1 ** (1 / n))
    assert precision_lower_bound(0, 0, 0.1) == 0
    assert clopper_pearson(0, 0, level) == (0, 1)


def test_clopper_pearson_lower_bound_covers():
    rng = np.random.default_rng(8)
    pi, n, delta = 0.8, 60, 0.1
    bounds = precision_lower_bound(rng.binomial(n, pi, 20_000), n, delta)
    assert (bounds > pi).mean() <= delta  # exact test: at most delta (conservative)
    assert (bounds > pi).mean() > delta / 3  # and not vacuous


def test_scan_order_uses_calibration_only():
    cal_tp = np.array([0, 2, 30, 60, 70])
    cal_n = np.array([0, 2, 32, 70, 100])
    assert scan_order(cal_tp, cal_n, 1.0, 0.1, "strictest") == [1, 2, 3, 4]
    # 2/2 is perfect but tiny; 30/32 predicts the highest bound
    assert scan_order(cal_tp, cal_n, 1.0, 0.1, "calibration_best") == [2, 3, 4]
    assert scan_order(np.array([0]), np.array([0]), 1.0, 0.1) == []


def test_fixed_sequence_stops_at_first_failure():
    tp = np.array([0, 50, 5, 500])  # candidate 3 would pass, but 2 fails first
    n = np.array([0, 52, 10, 520])
    result = fixed_sequence([1, 2, 3], tp, n, 0.8, 0.1)
    assert result.chosen == 1
    assert result.certified.tolist() == [False, True, False, False]
    assert np.isnan(result.lower_bounds[3])
    assert fixed_sequence([2, 3], tp, n, 0.8, 0.1).chosen == 0


def _law(n_buckets: int, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """A planted law on the (bucket, bin) grid: rate s^(1 + 2u), uniform mass."""
    s = (np.arange(n_bins) + 0.5) / n_bins
    u = (np.arange(n_buckets) + 0.5) / n_buckets
    rate = s[None, :] ** (1 + 2 * u[:, None])
    return rate, np.full(rate.shape, 1 / rate.size)


def _sample(rng, rate, mass, rows) -> Histogram:
    counts = rng.multinomial(rows, mass.ravel()).reshape(mass.shape)
    pos = rng.binomial(counts, rate)
    return Histogram(pos, counts - pos)


def _true_precision(cut, rate, mass) -> float | None:
    accepted = np.arange(rate.shape[1])[None, :] >= np.asarray(cut)[:, None]
    weight = (mass * accepted).sum()
    return (mass * rate * accepted).sum() / weight if weight else None


def test_guarantee_holds_in_simulation_and_naive_choice_violates_it():
    """Certified rules have true precision >= target in >= 1 - delta of repeats; choosing the
    loosest candidate whose selection precision merely reaches the target (no bound) does not."""
    rng = np.random.default_rng(2024)
    rate, mass = _law(4, 25)
    settings = ThresholdSettings(target_precision=0.8, delta=0.1, min_bucket_support=1)
    repeats, misses, naive_misses, single_misses, certified = 300, 0, 0, 0, 0
    for _ in range(repeats):
        hists = SplitHistograms(
            score_edges=np.arange(1, 25) / 25,
            uncertainty_edges=np.arange(1, 4) / 4,
            calibration=_sample(rng, rate, mass, 3000),
            selection=_sample(rng, rate, mass, 1500),
            evaluation=_sample(rng, rate, mass, 1500),
        )
        fit = fit_from_histograms(hists, settings)
        precision = _true_precision(fit.per_bucket.cut_bins, rate, mass)
        certified += precision is not None
        misses += precision is not None and precision < settings.target_precision
        single = _true_precision(
            fit.single.cut_bins, rate.mean(0, keepdims=True), mass.sum(0, keepdims=True)
        )
        single_misses += single is not None and single < settings.target_precision
        # the naive rule: same candidates, loosest one whose selection precision >= target
        trace = fit.per_bucket.candidates
        ok = trace[
            (trace.selection_accepted > 0) & (trace.selection_tp >= 0.8 * trace.selection_accepted)
        ]
        cands = candidates_for(hists.calibration).cut_bins
        naive = _true_precision(cands[int(ok.candidate.max())], rate, mass)
        naive_misses += naive is not None and naive < settings.target_precision
    allowed = binom.ppf(0.999, repeats, settings.delta)  # misses ~ Binomial(repeats, <= delta)
    assert certified > 0.9 * repeats, "the simulation must certify rules to test anything"
    assert misses <= allowed
    assert single_misses <= allowed
    assert naive_misses > 2 * allowed, "the simulation must be able to detect a broken guarantee"


def test_nothing_certified_when_selection_is_empty():
    empty = Histogram(np.zeros((2, 4), int), np.zeros((2, 4), int))
    hists = SplitHistograms(np.array([0.25, 0.5, 0.75]), np.array([0.5]), HAND, empty, HAND)
    fit = fit_from_histograms(hists, ThresholdSettings(min_bucket_support=1))
    assert fit.per_bucket.certified_lower_bound is None
    assert fit.per_bucket.score_thresholds.tolist() == [math.inf, math.inf]
    assert fit.per_bucket.overall["precision"] is None and fit.per_bucket.overall["recall"] == 0
    assert fit.per_bucket.calibration_optimum == 3  # the calibration alone would accept 3 groups


def test_fit_on_hand_made_splits_reports_evaluation_counts():
    hists = SplitHistograms(np.array([0.25, 0.5, 0.75]), np.array([0.5]), HAND, HAND, HAND)
    settings = ThresholdSettings(target_precision=0.6, delta=0.2, min_bucket_support=1)
    rule = fit_from_histograms(hists, settings).per_bucket
    assert rule.certified_lower_bound is not None and rule.certified_lower_bound >= 0.6
    ev = rule.evaluation
    tp_tail, n_tail = HAND.tails()
    for b in range(2):
        assert ev.eval_true_positives[b] == tp_tail[b, rule.cut_bins[b]]
        assert ev.eval_accepted[b] == n_tail[b, rule.cut_bins[b]]
        assert ev.recall[b] == pytest.approx(tp_tail[b, rule.cut_bins[b]] / HAND.positives[b].sum())
        assert ev.precision_lo[b] <= ev.precision[b] <= ev.precision_hi[b]
    assert (
        rule.score_thresholds.tolist()
        == score_thresholds(rule.cut_bins, hists.score_edges).tolist()
    )
