"""The true flip probability of generated examples, from the generator's ground truth.

For a generated log the generator (``events/generator.py``) keeps, for every simulated view, its
purchase probability ``p`` and its purchase-delay law (log-normal in hours:
``ln(delay) ~ Normal(delay_log_mu, delay_log_sigma)``). That is enough to compute, for each
observed negative at a cutoff ``T``, the probability that it flips, and to check the learned ``z``
of ``feedback.flip`` against it.

Derivation
----------
Take an example (the first view of a pair, at ``v``) observed negative at ``T``, elapsed
``e = T - v`` (hours) with ``e < W``. The generator draws for that view ``B ~ Bernoulli(p)`` and,
when ``B = 1``, a delay ``D ~ LogNormal(mu, sigma)`` independent of ``B``; write ``F`` for the
delay CDF (hours). The view's buy is a conversion when ``B = 1`` and ``D <= W``, it is seen by
``T`` when ``B = 1`` and ``D <= e``. With ``y`` the view's conversion and ``y_T = 0`` "no buy of it
by T"::

    P(y = 1, y_T = 0) = P(B = 1, e < D <= W) = p·(F(W) - F(e))
    P(y_T = 0)        = 1 - P(B = 1, D <= e)  = 1 - p·F(e)
    z = P(y = 1 | y_T = 0) = p·(F(W) - F(e)) / (1 - p·F(e))

(the contract's ``z = p(1 - s)/(1 - p s)`` with ``s = F(e)`` when ``F(W) = 1``). ``W`` is replaced
by ``min(W, H - v)`` when a horizon ``H`` is given (a buy after the end of the log is never seen:
use the log end for "what the log will show"); by default ``H`` is unbounded.

Which ``p``. The generator decides a view's favourite and add-to-cart *at the view* and puts them
in its purchase logit (``buy_base_logit + quality + cart + fav [+ follow-up]``); their times come
minutes later (a cart is moved before a quick purchase). So a cart seen by ``T`` says exactly that
the view's ``p`` is the "cart" one; no cart seen by ``T`` leaves two cases: no cart at all, or a
cart still to come. The truth row's ``buy_probability`` is the view's actual ``p`` (latent cart
included), so the per-example ``z`` above is the flip probability given *everything* the generator
decided for the view. Averaged over the observed negatives of a cell (signal state seen by ``T``
x elapsed bucket), that is the cell's true flip rate (tower property: the cell is coarser than the
latent state), which is what the learned hazard ``z`` of the cell estimates. So learned and true z
are compared by cell means, not example by example (the learned model cannot know an item's
quality or a cart still to come). One approximation: a quick buyer's cart is moved before the buy,
so "cart not seen by ``T``" is slightly informative about the delay; it matters only for elapsed
times of the order of the cart gap (minutes).

Other views of the pair. A pair's buy can also come from a later view of the same item (a revisit
in another session, or a follow-up view after buying a complement): any buy of the pair in
``(v, v + W]`` is the example's conversion. Views are independent in the generator, so given no
buy of the pair by ``T`` the pair stays unconverted with probability ``prod_j (1 - z_j)`` over its
views ``j`` seen by ``T``, ``z_j`` as above with ``e_j = T - t_j`` and window ``v + W - t_j``.
Two columns are computed:

* ``true_z_first_view``: the first view's own law only (the formula above);
* ``true_z``: all views of the pair seen by ``T`` (``1 - prod_j (1 - z_j)``); a view after ``T``
  is unknown at ``T`` and not included (its chance of existing is not a per-view truth).

``realized_flip`` (did the pair really buy in ``(T, v + W]``, from the truth, which keeps buys
after the log end) and ``conversion_source`` (which view's buy was the first conversion of the
pair: ``first_view``, ``other_view_seen`` by ``T``, ``view_after_cutoff``) measure how much the
views left out matter.

Join key. Examples compare times in epoch microseconds; the generator writes whole milliseconds,
so ``unix_micros(view_ts)`` of an example equals that of its truth view exactly; the join is on
``(user_id, item_id, unix_micros(view_ts))`` and ``truth_matched`` flags examples without a truth
view (expected: none for generated data).

Everything is DataFrame expressions (the normal CDF is a polynomial approximation with absolute
error below 1.5e-7, Abramowitz & Stegun 7.1.26); no UDF, no collect of data.
"""

from __future__ import annotations

import math
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recbatch.config import FeedbackSettings
from recbatch.feedback.examples import MICROS_PER_HOUR, MICROS_PER_SECOND, window_micros

TRUTH_COLUMNS = (
    "truth_matched",
    "buy_probability",
    "pair_views_seen",
    "true_z_first_view",
    "true_z",
    "realized_flip",
    "conversion_source",
)
"""What ``true_flip_probability`` adds to its input rows."""

CONVERSION_SOURCES = ("first_view", "other_view_seen", "view_after_cutoff")

_REQUIRED = ("example_id", "user_id", "item_id", "view_ts", "elapsed_s", "observed_label")

# Abramowitz & Stegun 7.1.26: erf(x) ~ 1 - (a1 t + ... + a5 t^5) exp(-x^2), t = 1 / (1 + p x)
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def normal_cdf(x: Column) -> Column:
    """Standard normal CDF of a double column (absolute error < 1.5e-7)."""
    u = F.abs(x) / F.lit(math.sqrt(2.0))
    t = F.lit(1.0) / (F.lit(1.0) + F.lit(_ERF_P) * u)
    poly = F.lit(0.0)
    for a in reversed(_ERF_A):
        poly = (poly + F.lit(a)) * t
    erf_abs = F.lit(1.0) - poly * F.exp(-u * u)
    return F.when(x >= 0, 0.5 * (1.0 + erf_abs)).otherwise(0.5 * (1.0 - erf_abs))


def lognormal_cdf(hours: Column, mu: Column, sigma: Column) -> Column:
    """``P(D <= hours)`` for ``ln D ~ Normal(mu, sigma)``; 0 for ``hours <= 0``."""
    return F.when(hours > 0, normal_cdf((F.log(hours) - mu) / sigma)).otherwise(F.lit(0.0))


def flip_probability_of_view(
    p: Column, elapsed_hours: Column, window_hours: Column, mu: Column, sigma: Column
) -> Column:
    """``p·(F(w) - F(e)) / (1 - p·F(e))``, floored at 0 (``w <= e``: nothing left to flip)."""
    f_e = lognormal_cdf(elapsed_hours, mu, sigma)
    f_w = lognormal_cdf(window_hours, mu, sigma)
    z = p * (f_w - f_e) / (F.lit(1.0) - p * f_e)
    return F.greatest(z, F.lit(0.0))


def _cutoff_micros(df: DataFrame) -> Column:
    """The cutoff of each row: ``cf_cutoff`` for counterfactual rows, else ``view_ts + e``."""
    if "cf_cutoff" in df.columns:
        return F.unix_micros(F.col("cf_cutoff"))
    return F.unix_micros(F.col("view_ts")) + F.round(
        F.col("elapsed_s") * F.lit(MICROS_PER_SECOND)
    ).cast("long")


def true_flip_probability(
    examples_at_cutoff: DataFrame,
    truth_views: DataFrame,
    settings: FeedbackSettings,
    horizon: datetime | None = None,
) -> DataFrame:
    """``examples_at_cutoff`` with ``TRUTH_COLUMNS`` added (see the module docstring).

    Input: rows of ``flip.observe_at`` (or ``labels.at_cutoff``) or counterfactual rows joined back
    to ``user_id``/``item_id``: they need ``example_id``, ``user_id``, ``item_id``, ``view_ts``,
    ``elapsed_s`` and ``observed_label`` (``cf_cutoff``, when present, is the cutoff). Rows are
    keyed by ``(example_id, cutoff)``. ``truth_views`` is the generator's ``views`` Parquet.

    Observed positives and mature rows get ``true_z = true_z_first_view = 0`` (as the learned z);
    ``realized_flip`` is 1 when the pair bought in ``(T, v + W]`` (always 0 for them).
    """
    missing = set(_REQUIRED) - set(examples_at_cutoff.columns)
    if missing:
        raise ValueError(f"true_flip_probability needs columns {sorted(missing)}")
    if horizon is not None and horizon.utcoffset() is None:
        raise ValueError(f"horizon {horizon!r} needs a UTC offset")
    window = window_micros(settings.attribution_window_hours)
    rows = examples_at_cutoff.select(
        "*",
        _cutoff_micros(examples_at_cutoff).alias("_t"),
        F.unix_micros("view_ts").alias("_v"),
        F.col("observed_label").cast("int").alias("_obs"),
    )
    keys = rows.select("example_id", "_t", "user_id", "item_id", "_v")
    ids = {c: examples_at_cutoff.schema[c].dataType for c in ("user_id", "item_id")}
    views = truth_views.select(
        *[F.col(c).cast(kind).alias(c) for c, kind in ids.items()],  # ingest.ids may be string
        F.unix_micros("view_ts").alias("_tj"),
        F.col("buy_probability").alias("_p"),
        F.col("delay_log_mu").alias("_mu"),
        F.col("delay_log_sigma").alias("_sigma"),
        F.when(F.col("will_buy"), F.unix_micros("buy_ts")).alias("_b"),
    )
    pair = keys.join(views, ["user_id", "item_id"]).where(F.col("_tj") >= F.col("_v"))

    end = F.col("_v") + F.lit(window)
    if horizon is not None:
        end = F.least(end, F.unix_micros(F.lit(horizon)))
    hours = F.lit(float(MICROS_PER_HOUR))
    z_j = flip_probability_of_view(
        F.col("_p"),
        (F.col("_t") - F.col("_tj")) / hours,
        (end - F.col("_tj")) / hours,
        F.col("_mu"),
        F.col("_sigma"),
    )
    first = F.col("_tj") == F.col("_v")
    seen = F.col("_tj") <= F.col("_t")
    source = (
        F.when(first, F.lit(CONVERSION_SOURCES[0]))
        .when(seen, F.lit(CONVERSION_SOURCES[1]))
        .otherwise(F.lit(CONVERSION_SOURCES[2]))
    )
    # the pair's first buy in (v, v + W] (contract window, not cut by the horizon)
    converts = (F.col("_b") > F.col("_v")) & (F.col("_b") <= F.col("_v") + F.lit(window))
    per_row = pair.groupBy("example_id", "_t").agg(
        F.max(F.when(first, F.lit(True))).alias("_matched"),
        F.max(F.when(first, F.col("_p"))).alias("buy_probability"),
        F.count(F.when(seen, F.lit(1))).alias("pair_views_seen"),
        F.max(F.when(first, z_j)).alias("_z_first"),
        F.sum(F.when(seen, F.log1p(-F.least(z_j, F.lit(1.0 - 1e-12))))).alias("_log_stay"),
        F.max(F.when(converts & (F.col("_b") > F.col("_t")), F.lit(1)).otherwise(F.lit(0))).alias(
            "_realized"
        ),
        F.min(F.when(converts, F.struct(F.col("_b").alias("b"), source.alias("s")))).alias("_conv"),
    )
    immature_negative = (F.col("_obs") == 0) & (F.col("_t") < F.col("_v") + F.lit(window))
    out = rows.join(per_row, ["example_id", "_t"], "left")
    matched = F.coalesce(F.col("_matched"), F.lit(False))
    return out.select(
        *[F.col(f"`{c}`") for c in examples_at_cutoff.columns],
        matched.alias("truth_matched"),
        "buy_probability",
        F.coalesce(F.col("pair_views_seen"), F.lit(0)).cast("long").alias("pair_views_seen"),
        F.when(~matched, F.lit(None).cast("double"))
        .when(immature_negative, F.col("_z_first"))
        .otherwise(F.lit(0.0))
        .alias("true_z_first_view"),
        F.when(~matched, F.lit(None).cast("double"))
        .when(immature_negative, F.lit(1.0) - F.exp(F.col("_log_stay")))
        .otherwise(F.lit(0.0))
        .alias("true_z"),
        F.coalesce(F.col("_realized"), F.lit(0)).alias("realized_flip"),
        F.col("_conv.s").alias("conversion_source"),
    )


def flip_calibration_against_truth(
    scored: DataFrame, truth: DataFrame, learned_col: str = "flip_probability"
) -> DataFrame:
    """Learned z (``scored``, from a flip model's ``apply``) against the true z (``truth``, from
    ``true_flip_probability`` on the same rows), on the observed negatives not yet mature.

    One row per (signal_state, elapsed_bucket) cell, then one total row per signal state
    (``elapsed_bucket`` null) and one for ``signal_state = 'all'``. Columns: ``signal_state``,
    ``elapsed_bucket``, ``n``, ``mean_learned_z``, ``mean_true_z``, ``mean_true_z_first_view``,
    ``realized_flip_rate``, ``calibration_error``. A cell's ``calibration_error`` is
    ``|mean_learned_z - mean_true_z|``; a total row's is the n-weighted mean of its cells' errors
    (the weighted mean absolute difference), so cancelling errors across cells do not hide.
    Rows whose example has no truth view are left out.
    """
    key_s = scored.select(
        "example_id",
        _cutoff_micros(scored).alias("_t"),
        "signal_state",
        "elapsed_bucket",
        F.col(learned_col).cast("double").alias("_learned"),
        F.col("observed_label").cast("int").alias("_obs"),
        (F.col("mature") if "mature" in scored.columns else F.lit(False)).alias("_mature"),
    )
    key_t = truth.where(F.col("truth_matched")).select(
        "example_id",
        _cutoff_micros(truth).alias("_t"),
        "true_z",
        "true_z_first_view",
        "realized_flip",
    )
    rows = key_s.join(key_t, ["example_id", "_t"]).where(
        (F.col("_obs") == 0) & ~F.col("_mature") & (F.col("true_z").isNotNull())
    )
    cells = rows.groupBy("signal_state", "elapsed_bucket").agg(
        F.count(F.lit(1)).alias("n"),
        F.avg("_learned").alias("mean_learned_z"),
        F.avg("true_z").alias("mean_true_z"),
        F.avg("true_z_first_view").alias("mean_true_z_first_view"),
        F.avg(F.col("realized_flip").cast("double")).alias("realized_flip_rate"),
    )
    cells = cells.withColumn(
        "calibration_error", F.abs(F.col("mean_learned_z") - F.col("mean_true_z"))
    )

    def totals(df: DataFrame, by: list[Column]) -> DataFrame:
        n = F.sum("n")

        def weighted(c: str) -> Column:
            return (F.sum(F.col(c) * F.col("n")) / n).alias(c)

        return df.groupBy(*by).agg(
            n.alias("n"),
            *[
                weighted(c)
                for c in (
                    "mean_learned_z",
                    "mean_true_z",
                    "mean_true_z_first_view",
                    "realized_flip_rate",
                    "calibration_error",
                )
            ],
        )

    no_bucket = F.lit(None).cast("int")
    per_state = totals(cells, [F.col("signal_state")]).withColumn("elapsed_bucket", no_bucket)
    overall = totals(cells.withColumn("signal_state", F.lit("all")), [F.col("signal_state")])
    overall = overall.withColumn("elapsed_bucket", no_bucket)
    per_state, overall = per_state.select(*cells.columns), overall.select(*cells.columns)
    order = F.when(F.col("signal_state") == "all", 0).otherwise(1)
    return (
        cells.unionByName(per_state)
        .unionByName(overall)
        .orderBy(order, "signal_state", F.col("elapsed_bucket").asc_nulls_last())
    )


def truth_calibration_errors(table: DataFrame) -> dict[str, float]:
    """``{signal_state | 'all': weighted mean |learned - true|}`` from the total rows of a
    ``flip_calibration_against_truth`` table (a handful of rows)."""
    totals = table.where(F.col("elapsed_bucket").isNull())
    return {r["signal_state"]: r["calibration_error"] for r in totals.collect()}


def conversion_sources(truth: DataFrame) -> DataFrame:
    """How the pairs' conversions in ``(v, v + W]`` came about, by ``conversion_source`` (counts
    and shares): is the first view's own buy the conversion, or another view's?"""
    converted = truth.where(F.col("conversion_source").isNotNull())
    total = converted.count()
    return (
        converted.groupBy("conversion_source")
        .agg(F.count(F.lit(1)).alias("n"))
        .withColumn("share", F.col("n") / F.lit(max(total, 1)))
        .orderBy("conversion_source")
    )
