"""The flip model's training set: the past replayed at counterfactual cutoffs ``T'``.

At ``T' = T - CD - k·step`` the views of ``[T' - W, T')`` that looked negative at ``T'`` are
described with what was known at ``T'`` and labelled with their true label, known at ``T``.
Every learner (hazard cells, boosted trees, logistic) fits on these rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recbatch.config import FeedbackSettings
from recbatch.feedback import labels
from recbatch.feedback.flip.buckets import (
    elapsed_bucket,
    feature_columns,
    require_utc,
    viewed_in,
)
from recbatch.log import get_logger

log = get_logger(__name__)


def counterfactual_delay_hours(settings: FeedbackSettings) -> float:
    """``CD``: by default the attribution window ``W``."""
    return settings.counterfactual_delay_hours or settings.attribution_window_hours


def counterfactual_cutoffs(cutoff: datetime, settings: FeedbackSettings) -> list[datetime]:
    """``T'_k = T - CD - k·step`` for ``k = 0 .. counterfactual_cutoffs - 1`` (latest first)."""
    require_utc(cutoff)
    cd = counterfactual_delay_hours(settings)
    step = settings.counterfactual_step_hours
    return [cutoff - timedelta(hours=cd + k * step) for k in range(settings.counterfactual_cutoffs)]


def counterfactual_training_set(
    examples: DataFrame, cutoff: datetime, settings: FeedbackSettings
) -> DataFrame:
    """The flip model's training rows: one per (counterfactual cutoff ``T'``, example viewed in
    ``[T' - W, T')`` and observed negative at ``T'``).

    Columns: ``example_id``, ``cf_index`` (k), ``cf_cutoff`` (T'), ``view_ts``, ``elapsed_s`` (e'),
    ``elapsed_bucket``, ``signal_state`` (at ``T'``), ``observed_label`` (0: negative at ``T'``),
    ``true_label`` (the target) and the ``f_*`` features.

    No leakage: the inputs are computed from times ``<= T'`` only (the features predate the view)
    and the raw signal and conversion times are not passed on. The target is the label observed at
    ``T``, which is the true label because only examples mature at ``T`` (``view_ts + W <= T``) are
    kept. That holds for every row when ``CD >= W``; with a shorter ``CD`` the immature views are
    dropped (by view time, not by outcome, so the cells stay unbiased) and a warning is logged.
    """
    window = settings.attribution_window_hours
    cutoffs = counterfactual_cutoffs(cutoff, settings)
    if counterfactual_delay_hours(settings) < window:
        log.warning(
            "counterfactual delay %.1fh < attribution window %.1fh: views not mature at %s are "
            "left out of the flip model's training set",
            counterfactual_delay_hours(settings),
            window,
            cutoff.isoformat(),
        )
    mature_at_cutoff = labels.is_mature(cutoff, window)
    replays = []
    for k, t in enumerate(cutoffs):
        in_window = viewed_in(examples, t - timedelta(hours=window), t)
        elapsed = labels.elapsed_seconds(t)
        replays.append(
            examples.where(in_window & mature_at_cutoff & (labels.observed_label(t) == 0)).select(
                "example_id",
                F.lit(k).alias("cf_index"),
                F.lit(t).alias("cf_cutoff"),
                "view_ts",
                elapsed.alias("elapsed_s"),
                elapsed_bucket(elapsed, settings).alias("elapsed_bucket"),
                labels.signal_state(t).alias("signal_state"),
                F.lit(0).alias("observed_label"),
                # mature at T: the label observed at T is the true label, and nothing later is read
                labels.observed_label(cutoff).alias("true_label"),
                *feature_columns(examples),
            )
        )
    return reduce(DataFrame.unionAll, replays)


def split_holdout(
    training: DataFrame, heldout_index: int = 0, heldout_share: float = 0.2
) -> tuple[DataFrame, DataFrame]:
    """``(fit rows, held-out rows)``, disjoint in time *and* in examples.

    Held out: the rows of the latest counterfactual cutoff (``k = heldout_index``) of a seeded
    hash-share of the examples; fit: the other cutoffs' rows of the other examples. Why both:
    the held-out cutoff alone measures calibration out of time, but cutoffs ``step`` apart with a
    window ``W > step`` see the same young example several times, so a fit on the other cutoffs
    would grade the model partly on examples it has seen. Excluding *all* the held-out cutoff's
    examples from the fit instead would empty its young elapsed buckets (every young example of
    an earlier cutoff is still young at the next one), hence the hash share.
    """
    if not 0 < heldout_share < 1:
        raise ValueError(f"heldout_share must be in (0, 1), got {heldout_share}")
    k = F.col("cf_index")
    held = F.pmod(F.xxhash64("example_id", F.lit("flip-holdout")), F.lit(1000)) < F.lit(
        round(heldout_share * 1000)
    )
    return training.filter((k != heldout_index) & ~held), training.filter(
        (k == heldout_index) & held
    )
