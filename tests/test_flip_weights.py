"""Flip model and loss weights (docs/delayed_feedback.md) on hand-made and simulated examples.

The simulated population has a known law: each view has a signal state (arriving within a minute
of the view), a conversion probability per state, and a log-normal view -> buy delay; a buy counts
when it comes within the attribution window W. The flip probability of an observed negative at
elapsed time e is then ``z = p (F(W) - F(e)) / (1 - p F(e))`` (F the delay CDF; with F rescaled to
F/F(W) this is the contract's ``p (1 - s) / (1 - p s)``), and over a bucket of uniformly spread
elapsed times F is replaced by its mean over the bucket (numerator and denominator are linear in
F), which gives each hazard cell's exact expected value.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DateType,
    DoubleType,
    LongType,
    StructField,
    StructType,
    TimestampType,
)

from recbatch.config import FeedbackSettings
from recbatch.feedback.flip import (
    CELLS_SCHEMA,
    OBSERVATION_SCHEMA,
    SIGNAL_STATES,
    apply_hazard,
    apply_logistic,
    calibration,
    counterfactual_cutoffs,
    counterfactual_training_set,
    elapsed_bucket_bounds,
    expected_calibration_errors,
    fit_boosted,
    fit_hazard,
    fit_logistic,
    fit_logistic_recalibrated,
    fit_observation,
    observe_at,
    ranking_auc,
    split_holdout,
)
from recbatch.feedback.weights import (
    METHODS,
    TRAINING_WEIGHTS_COLUMNS,
    loss_weights,
    training_weights_table,
)

T = datetime(2026, 1, 20, tzinfo=UTC)
RUN_DATE = date(2026, 1, 20)

EXAMPLES_SCHEMA = StructType(
    [
        StructField("example_id", LongType(), False),
        StructField("user_id", LongType(), False),
        StructField("item_id", LongType(), False),
        StructField("category_id", LongType(), False),
        StructField("view_ts", TimestampType(), False),
        StructField("view_date", DateType(), False),
        StructField("revisit_ts", TimestampType(), True),
        StructField("fav_ts", TimestampType(), True),
        StructField("cart_ts", TimestampType(), True),
        StructField("conversion_ts", TimestampType(), True),
        StructField("f_user_views", LongType(), True),
        StructField("f_item_conversion_rate", DoubleType(), True),
    ]
)

# --- the simulated law --------------------------------------------------------------------------

SIM = FeedbackSettings(
    attribution_window_hours=24,
    counterfactual_cutoffs=3,  # T' = T-24h, T-48h, T-72h: disjoint windows covering [T-96h, T-24h)
    counterfactual_step_hours=24,
    elapsed_buckets_hours=[3, 8, 16, 48],  # 48 >= W is dropped: buckets 0-3, 3-8, 8-16, 16-24 h
    prior_strength=20,
)
N_SIM = 80_000
SIM_HOURS = 96  # views uniform in [T - 96h, T): the last 24 h are immature at T
STATE_SHARE = {"none": 0.4, "revisit": 0.2, "fav": 0.2, "cart": 0.2}
STATE_P = {"none": 0.05, "revisit": 0.1, "fav": 0.2, "cart": 0.5}
DELAY_MEDIAN_H, DELAY_SIGMA = 6.0, 1.0


def delay_cdf(hours: np.ndarray | float) -> np.ndarray:
    h = np.maximum(np.asarray(hours, dtype=float), 1e-12)
    erf = np.vectorize(math.erf)
    return 0.5 * (1.0 + erf((np.log(h) - math.log(DELAY_MEDIAN_H)) / (DELAY_SIGMA * math.sqrt(2))))


def mean_cdf(lo: float, hi: float) -> float:
    """Mean of F over elapsed times uniform in [lo, hi) hours."""
    grid = lo + (hi - lo) * (np.arange(4000) + 0.5) / 4000
    return float(delay_cdf(grid).mean())


def true_z(state: str, lo: float, hi: float) -> float:
    p, f_w, f_bar = STATE_P[state], float(delay_cdf(SIM.attribution_window_hours)), mean_cdf(lo, hi)
    return p * (f_w - f_bar) / (1 - p * f_bar)


def true_s(lo: float, hi: float) -> float:
    return mean_cdf(lo, hi) / float(delay_cdf(SIM.attribution_window_hours))


def simulate(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    states = np.array(SIGNAL_STATES)[
        rng.choice(len(SIGNAL_STATES), size=n, p=[STATE_SHARE[s] for s in SIGNAL_STATES])
    ]
    view_s = T.timestamp() - rng.uniform(0, SIM_HOURS * 3600, n)
    view_s = np.round(view_s, 3)  # whole milliseconds, like the event log

    def signal(mask: np.ndarray) -> np.ndarray:
        return np.where(mask, view_s + rng.uniform(1, 60, n), np.nan)

    revisit = signal((states == "revisit") | ((states == "cart") & (rng.random(n) < 0.5)))
    fav = signal(states == "fav")
    cart = signal(states == "cart")
    p = np.vectorize(STATE_P.get)(states)
    delay_h = np.exp(math.log(DELAY_MEDIAN_H) + DELAY_SIGMA * rng.standard_normal(n))
    converts = (rng.random(n) < p) & (delay_h <= SIM.attribution_window_hours)
    conversion = np.where(converts, view_s + delay_h * 3600, np.nan)
    # the contract keeps a signal only if it comes before the conversion
    for times in (revisit, fav, cart):
        times[~np.isnan(conversion) & (times > conversion)] = np.nan

    def ts(seconds: np.ndarray) -> pd.Series:
        return pd.Series(pd.to_datetime(seconds * 1e6, unit="us", utc=True))

    views = ts(view_s)
    return pd.DataFrame(
        {
            "example_id": np.arange(n, dtype=np.int64),
            "user_id": rng.integers(1, 5_000, n),
            "item_id": rng.integers(1, 2_000, n),
            "category_id": rng.integers(1, 40, n),
            "view_ts": views,
            "view_date": views.dt.date,
            "revisit_ts": ts(revisit),
            "fav_ts": ts(fav),
            "cart_ts": ts(cart),
            "conversion_ts": ts(conversion),
            "f_user_views": rng.poisson(5, n).astype(np.int64),
            "f_item_conversion_rate": rng.beta(2, 30, n),
        }
    )


@pytest.fixture(scope="module")
def sim(spark: SparkSession):
    """The simulated examples (80k rows) as a cached Spark DataFrame."""
    examples = spark.createDataFrame(simulate(N_SIM, seed=11), EXAMPLES_SCHEMA).cache()
    assert examples.count() == N_SIM
    yield examples
    examples.unpersist()


@pytest.fixture(scope="module")
def sim_training(sim: DataFrame):
    training = counterfactual_training_set(sim, T, SIM).cache()
    yield training
    training.unpersist()


@pytest.fixture(scope="module")
def sim_models(sim: DataFrame, sim_training: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The hazard cells (fitted on all counterfactual cutoffs) and the delay CDF at T."""
    return fit_hazard(sim_training, SIM), fit_observation(sim, T, SIM)


# --- hand-made examples -------------------------------------------------------------------------


def _example(i: int, view: datetime, **times: datetime | None) -> tuple:
    return (
        i,
        100 + i,
        200 + i,
        7,
        view,
        view.date(),
        times.get("revisit"),
        times.get("fav"),
        times.get("cart"),
        times.get("conversion"),
        3,
        0.1,
    )


def _epoch(collected: datetime) -> float:
    """Seconds since the epoch of a collected timestamp (PySpark returns naive local times)."""
    return collected.timestamp()


def _by_id(df: DataFrame) -> dict[int, dict]:
    return {r["example_id"]: r.asDict() for r in df.collect()}


H = timedelta(hours=1)


def test_elapsed_buckets_end_at_the_window() -> None:
    assert elapsed_bucket_bounds(SIM) == [(0.0, 3), (3, 8), (8, 16), (16, 24)]
    default = FeedbackSettings()  # W = 168h, edges up to 120h: a last bucket 120-168h
    bounds = elapsed_bucket_bounds(default)
    assert bounds[0] == (0.0, 0.25) and bounds[-1] == (120, 168.0) and len(bounds) == 12


def test_counterfactual_set_sees_only_what_was_known_at_t_prime(spark: SparkSession) -> None:
    """Inputs at T' use signals and conversions up to T' only; the target is the truth at T."""
    settings = FeedbackSettings(attribution_window_hours=24, counterfactual_cutoffs=1)
    (tp,) = counterfactual_cutoffs(T, settings)
    assert tp == T - 24 * H
    rows = [
        # cart and buy after T': negative, no signal yet at T'; flips (true label 1)
        _example(1, tp - 10 * H, cart=tp + H, conversion=tp + 2 * H),
        # fav before T', cart after T': state fav; never converts
        _example(2, tp - 5 * H, fav=tp - 4 * H, cart=tp + H),
        # bought before T': observed positive at T', not a training row
        _example(3, tp - 20 * H, revisit=tp - 19 * H, conversion=tp - H),
        _example(4, tp - 30 * H),  # before the window [T' - W, T')
        _example(5, tp),  # at T': not an example at T' (view_ts < T')
        _example(6, tp - 24 * H, revisit=tp - 23 * H),  # at T' - W: included, e' = W
        # cart before T', buy after T': state cart, flips
        _example(7, tp - 2 * H, revisit=tp - 1.5 * H, cart=tp - H, conversion=tp + H),
        _example(8, T - 2 * H, conversion=T - H),  # recent: not mature at T
    ]
    examples = spark.createDataFrame(rows, EXAMPLES_SCHEMA)
    training = counterfactual_training_set(examples, T, settings)
    got = _by_id(training)
    assert set(got) == {1, 2, 6, 7}
    assert {i: got[i]["signal_state"] for i in got} == {
        1: "none",
        2: "fav",
        6: "revisit",
        7: "cart",
    }
    assert {i: got[i]["true_label"] for i in got} == {1: 1, 2: 0, 6: 0, 7: 1}
    assert {i: got[i]["elapsed_s"] for i in got} == {1: 36000.0, 2: 18000.0, 6: 86400.0, 7: 7200.0}
    assert got[6]["elapsed_bucket"] == len(elapsed_bucket_bounds(settings)) - 1
    assert all(
        r["observed_label"] == 0 and _epoch(r["cf_cutoff"]) == tp.timestamp() for r in got.values()
    )
    # nothing observed after T' travels with the rows
    leaky = {"revisit_ts", "fav_ts", "cart_ts", "conversion_ts"}
    assert not leaky & set(training.columns)
    assert {"f_user_views", "f_item_conversion_rate"} <= set(training.columns)
    _assert_no_future_leakage(training, examples)


def _assert_no_future_leakage(training: DataFrame, examples: DataFrame) -> None:
    """Each row's signal state and (negative) observed label are those of the times <= T'."""
    t = F.col("cf_cutoff")

    def seen(c: str):
        return F.col(c).isNotNull() & (F.col(c) <= t)

    expected = (
        F.when(seen("cart_ts"), "cart")
        .when(seen("fav_ts"), "fav")
        .when(seen("revisit_ts"), "revisit")
        .otherwise("none")
    )
    joined = training.alias("t").join(
        examples.select("example_id", "revisit_ts", "fav_ts", "cart_ts", "conversion_ts"),
        "example_id",
    )
    bad = joined.filter(
        (F.col("signal_state") != expected)
        | seen("conversion_ts")
        | (F.col("view_ts") >= t)
        | (F.col("elapsed_s") != (F.unix_micros(t) - F.unix_micros(F.col("view_ts"))) / 1e6)
    )
    assert bad.count() == 0


def test_counterfactual_set_keeps_only_examples_mature_at_cutoff(spark: SparkSession) -> None:
    """CD < W: T' = T - 12h; views in (T - 24h, T - 12h) are not mature at T and are left out."""
    settings = FeedbackSettings(
        attribution_window_hours=24, counterfactual_delay_hours=12, counterfactual_cutoffs=1
    )
    (tp,) = counterfactual_cutoffs(T, settings)
    rows = [
        _example(1, T - 30 * H),  # mature at T, e' = 18h
        _example(2, T - 24 * H),  # mature exactly at T
        _example(3, T - 20 * H, conversion=T - H),  # not mature at T: its label may still change
        _example(4, T - 13 * H),
    ]
    training = counterfactual_training_set(
        spark.createDataFrame(rows, EXAMPLES_SCHEMA), T, settings
    )
    got = _by_id(training)
    assert set(got) == {1, 2}
    assert all(
        _epoch(r["view_ts"]) + 24 * 3600 <= T.timestamp() and _epoch(r["view_ts"]) < tp.timestamp()
        for r in got.values()
    )


def test_hazard_smoothing_and_delay_cdf_on_hand_made_rows(spark: SparkSession) -> None:
    settings = FeedbackSettings(
        attribution_window_hours=24, elapsed_buckets_hours=[3, 8, 16], prior_strength=10
    )
    # (signal_state, elapsed_bucket, negatives, flips)
    groups = [("none", 0, 10, 2), ("none", 1, 30, 0), ("cart", 0, 4, 4)]
    training = spark.createDataFrame(
        [(st, b, int(i < f)) for st, b, n, f in groups for i in range(n)],
        "signal_state string, elapsed_bucket int, true_label int",
    )
    z = {
        (r["signal_state"], r["elapsed_bucket"]): r
        for r in fit_hazard(training, settings).collect()
    }
    assert len(z) == 16
    # rates: overall 6/44; states none 2/40, cart 4/4, others unseen (-> 6/44);
    # buckets 0: 6/14, 1: 0/30, 2 and 3 unseen (-> 6/44). Prior = state x bucket / overall.
    overall, none, bucket0 = 6 / 44, 2 / 40, 6 / 14
    assert z["none", 0]["prior_rate"] == pytest.approx(none * bucket0 / overall)
    assert z["none", 0]["z"] == pytest.approx((2 + 10 * none * bucket0 / overall) / (10 + 10))
    assert z["none", 1]["prior_rate"] == 0.0 and z["none", 1]["z"] == 0.0
    assert z["none", 3]["z"] == pytest.approx(none)  # empty cell of an unseen bucket
    assert z["cart", 0]["prior_rate"] == 1.0, "capped at 1"
    assert z["cart", 0]["z"] == pytest.approx(1.0) and z["cart", 2]["z"] == pytest.approx(1.0)
    assert z["fav", 2]["z"] == pytest.approx(overall)  # state and bucket unseen: overall rate
    assert z["fav", 0]["z"] == pytest.approx(bucket0)  # state unseen: the bucket's rate
    assert (z["none", 0]["negatives"], z["none", 0]["flips"], z["fav", 1]["negatives"]) == (
        10,
        2,
        0,
    )

    # delays of 1h and 10h (mature at T): s per bucket is the share of the bucket past the delay
    rows = [
        _example(1, T - 30 * H, conversion=T - 29 * H),
        _example(2, T - 40 * H, conversion=T - 30 * H),
        _example(3, T - 30 * H),  # negative: not in the delay CDF
        _example(4, T - 5 * H, conversion=T - 4 * H),  # not mature at T
    ]
    obs = fit_observation(spark.createDataFrame(rows, EXAMPLES_SCHEMA), T, settings).collect()
    assert [r["positives"] for r in obs] == [2] * 4
    assert [r["s_upper"] for r in obs] == pytest.approx([0.5, 0.5, 1.0, 1.0])
    # bucket 0-3h: (2/3 + 0) / 2; 3-8h: (1 + 0) / 2; 8-16h: (1 + 6/8) / 2; 16-24h: 1
    assert [r["s"] for r in obs] == pytest.approx([1 / 3, 0.5, 0.875, 1.0])


def test_flip_model_recovers_a_known_law(
    sim: DataFrame, sim_training: DataFrame, sim_models: tuple[DataFrame, DataFrame]
) -> None:
    """The fitted z of each (signal state, elapsed bucket) cell is within sampling error of the
    analytic z of the simulated law.

    The tolerance (0.01 + 4 standard errors of the cell) is checked to have power: the models that
    ignore the signal state (pooled over states per bucket) or the elapsed time (a state's pooled
    rate) miss the truth by several tolerances in some cell, so either mistake fails this test.
    """
    _assert_no_future_leakage(sim_training, sim)
    cells = sim_models[0].toPandas()
    assert len(cells) == len(SIGNAL_STATES) * len(elapsed_bucket_bounds(SIM))
    cells["true_z"] = [
        true_z(r.signal_state, r.bucket_lo_hours, r.bucket_hi_hours) for r in cells.itertuples()
    ]
    cells["tolerance"] = 0.01 + 4 * np.sqrt(cells.true_z * (1 - cells.true_z) / cells.negatives)
    pooled = cells.groupby("elapsed_bucket")[["flips", "negatives"]].transform("sum")
    cells["no_signal_z"] = pooled.flips / pooled.negatives
    by_state = cells.groupby("signal_state")[["flips", "negatives"]].transform("sum")
    cells["state_z"] = by_state.flips / by_state.negatives
    cells["error"] = cells.z - cells.true_z
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("\nrecovered vs true z per cell:")
        print(
            cells[
                [
                    "signal_state",
                    "bucket_lo_hours",
                    "bucket_hi_hours",
                    "negatives",
                    "flips",
                    "z",
                    "true_z",
                    "error",
                    "tolerance",
                    "prior_rate",
                    "state_z",
                    "no_signal_z",
                ]
            ].to_string(index=False, float_format=lambda v: f"{v:.4f}")
        )
    assert cells.negatives.min() >= 800  # every cell is well populated
    assert (cells.error.abs() <= cells.tolerance).all()
    # power: ignoring the signal state or the elapsed time would fail the check above
    assert ((cells.no_signal_z - cells.true_z).abs() / cells.tolerance).max() > 3
    assert ((cells.state_z - cells.true_z).abs() / cells.tolerance).max() > 3

    z = cells.pivot(index="elapsed_bucket", columns="signal_state", values="z")
    assert (z["cart"] > z["fav"]).all() and (z["fav"] > z["revisit"]).all()
    assert (z["revisit"] > z["none"]).all()
    for state in SIGNAL_STATES:  # z falls as time passes without a conversion
        assert (np.diff(z[state].to_numpy()) < 0).all(), state


def test_observation_probability_is_the_delay_cdf(sim_models: tuple[DataFrame, DataFrame]) -> None:
    obs = sim_models[1].toPandas()
    truth = np.array([true_s(lo, hi) for lo, hi in elapsed_bucket_bounds(SIM)])
    print("\ns per bucket (fitted, true):", list(zip(obs.s.round(4), truth.round(4), strict=True)))
    assert (np.diff(obs.s) >= 0).all() and (np.diff(obs.s_upper) >= 0).all()
    assert obs.s_upper.iloc[-1] == pytest.approx(1.0)
    assert (obs.s <= obs.s_upper + 1e-12).all()
    assert np.abs(obs.s - truth).max() < 0.02
    assert obs.positives.iloc[0] > 1000


def test_calibration_on_a_heldout_counterfactual_cutoff(sim_training: DataFrame) -> None:
    fit_rows, heldout = split_holdout(sim_training)
    assert set(r["cf_index"] for r in fit_rows.select("cf_index").distinct().collect()) == {1, 2}
    assert fit_rows.join(heldout, "example_id").isEmpty(), "no example on both sides"
    cells = fit_hazard(fit_rows, SIM)
    observation = _unit_observation(sim_training.sparkSession)
    scored = apply_hazard(heldout, cells, observation, SIM)
    table = calibration(scored).toPandas()
    print("\nheld-out calibration (hazard):")
    print(table.to_string(index=False))
    ece = dict(zip(table.scope, table.ece, strict=True))
    assert set(ece) == {"all", *SIGNAL_STATES}
    assert ece["all"] < 0.01
    assert max(ece.values()) < 0.04
    # power: predicting "no flip" (vanilla) is badly calibrated on the same rows
    baseline = expected_calibration_errors(
        calibration(scored.withColumn("flip_probability", F.lit(0.0)))
    )
    assert baseline["all"] > 0.05


def test_holdout_is_disjoint_in_time_and_examples_and_keeps_young_rows_in_the_fit(
    spark: SparkSession,
) -> None:
    """Overlapping cutoffs (step < W) see a young example at every cutoff: no example may be on
    both sides, yet the fit must keep examples of every cutoff (young ones included)."""
    rows = spark.createDataFrame(
        [(i, k) for i in range(2000) for k in (0, 1, 2)], "example_id long, cf_index int"
    )
    fit_rows, heldout = split_holdout(rows, heldout_share=0.2)
    held_ids = {r["example_id"] for r in heldout.collect()}
    fit = [(r["example_id"], r["cf_index"]) for r in fit_rows.collect()]
    assert {k for _, k in fit} == {1, 2}
    assert {r["cf_index"] for r in heldout.collect()} == {0}
    assert not held_ids & {i for i, _ in fit}, "no example on both sides"
    assert 300 < len(held_ids) < 500, "about a fifth of the examples are held out"
    assert len(fit) == 2 * (2000 - len(held_ids)), "every other example at every other cutoff"
    with pytest.raises(ValueError, match="heldout_share"):
        split_holdout(rows, heldout_share=1.0)


def _unit_observation(spark: SparkSession) -> DataFrame:
    """An observation table with s = 1 everywhere (calibration of z does not use s)."""
    rows = [(i, lo, hi, 0, 1.0, 1.0) for i, (lo, hi) in enumerate(elapsed_bucket_bounds(SIM))]
    return spark.createDataFrame(rows, OBSERVATION_SCHEMA)


def test_logistic_flip_model_is_calibrated_out_of_time(sim_training: DataFrame) -> None:
    fit_rows, heldout = split_holdout(sim_training)
    model = fit_logistic(fit_rows, SIM, max_iter=20)
    scored = apply_logistic(heldout, model, _unit_observation(heldout.sparkSession), SIM)
    table = calibration(scored).toPandas()
    print("\nheld-out calibration (logistic):")
    print(table.to_string(index=False))
    assert table.scope.iloc[0] == "all" and table.ece.iloc[0] < 0.02
    means = dict(zip(table.scope, table.mean_predicted, strict=True))
    assert means["cart"] > means["fav"] > means["revisit"] > means["none"]


def test_ranking_auc_is_sklearns_with_ties(spark: SparkSession) -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    p = np.round(rng.random(3000), 2)  # many ties, as the hazard cells' z has
    y = (rng.random(3000) < p**2).astype(float)
    scope = np.where(rng.random(3000) < 0.5, "all", "cart")
    frame = pd.DataFrame({"scope": scope, "p": p, "y": y})
    got = {r["scope"]: r["auc"] for r in ranking_auc(spark.createDataFrame(frame)).collect()}
    for name, group in frame.groupby("scope"):
        assert got[name] == pytest.approx(roc_auc_score(group.y, group.p), abs=1e-12)
    only_negatives = spark.createDataFrame(pd.DataFrame({"scope": ["a"], "p": [0.5], "y": [0.0]}))
    assert ranking_auc(only_negatives).head()["auc"] is None


@pytest.mark.parametrize("learner", ["logistic", "boosted"])
def test_recalibrated_learners_match_realised_flips_per_signal_out_of_time(
    sim_training: DataFrame, learner: str
) -> None:
    """A learner on the features (noise here), elapsed time and signal state, recalibrated per
    state: on the held-out cutoff each state's predicted flips match the realised ones, and the
    noise features do not cost ranking against the hazard cells (the true law is per cell)."""
    fit_rows, heldout = split_holdout(sim_training)
    observation = _unit_observation(heldout.sparkSession)
    fit = fit_boosted if learner == "boosted" else fit_logistic_recalibrated
    model = fit(fit_rows, SIM.model_copy(update={"flip_trees": 20}))
    table = calibration(model.apply(heldout, observation, SIM)).toPandas()
    cells = calibration(apply_hazard(heldout, fit_hazard(fit_rows, SIM), observation, SIM))
    hazard = cells.toPandas().set_index("scope")
    print(f"\nheld-out calibration ({learner}):")
    print(table.to_string(index=False))
    table = table.set_index("scope")
    for scope, row in table.iterrows():
        # realised flips are Poisson-like: 3 standard errors of the count, plus 5% for the fit
        assert row.flips >= 20, scope  # the rule: states with 20+ flips
        ratio = row.mean_predicted / row.observed_rate
        assert abs(ratio - 1) <= 3 / math.sqrt(row.flips) + 0.05, (scope, ratio, row.flips)
        assert row.auc >= hazard.loc[scope, "auc"] - 0.03, (scope, row.auc, hazard.loc[scope])
    assert table.loc["all", "ece"] < 0.02
    assert table.loc["all", "auc"] > 0.6


def test_apply_flip_model_rules(spark: SparkSession) -> None:
    settings = FeedbackSettings(attribution_window_hours=24, elapsed_buckets_hours=[3, 8, 16])
    cells = spark.createDataFrame(
        [
            (s, i, 0.0, 0.0, 0, 0, 0.0, 0.1 * (i + 1) + {"cart": 0.5}.get(s, 0.0))
            for s in SIGNAL_STATES
            for i in range(4)
        ],
        CELLS_SCHEMA,
        OBSERVATION_SCHEMA,
    )
    observation = spark.createDataFrame(
        [(i, 0.0, 0.0, 10, 0.0, s) for i, s in enumerate([0.1, 0.4, 0.7, 0.9])],
        OBSERVATION_SCHEMA,
    )
    rows = [
        # example_id, observed_label, elapsed_s, signal_state
        (1, 0, 1.0 * 3600, "none"),  # bucket 0
        (2, 0, 10.0 * 3600, "cart"),  # bucket 2
        (3, 1, 5.0 * 3600, "fav"),  # observed positive, bucket 1
        (4, 0, 24.0 * 3600, "cart"),  # mature (e = W)
        (5, 1, 100.0 * 3600, "revisit"),  # mature positive
    ]
    df = spark.createDataFrame(
        rows, "example_id long, observed_label int, elapsed_s double, signal_state string"
    )
    got = _by_id(apply_hazard(df, cells, observation, settings))
    assert {i: (r["flip_probability"], r["observation_probability"]) for i, r in got.items()} == {
        1: pytest.approx((0.1, 0.1)),
        2: pytest.approx((0.8, 0.7)),
        3: pytest.approx((0.0, 0.4)),
        4: (0.0, 1.0),
        5: (0.0, 1.0),
    }
    with pytest.raises(ValueError, match="observed_label"):
        apply_hazard(df.drop("observed_label"), cells, observation, settings)


# --- weights ------------------------------------------------------------------------------------

WEIGHT_ROWS = [
    # example_id, observed_label, z, s, true_label
    (1, 1, 0.0, 0.5, 1),  # observed positive, s = 0.5 -> 1/s = 2
    (2, 1, 0.0, 0.05, 1),  # observed positive, 1/s = 20 clipped at max_weight = 10
    (3, 0, 0.3, 0.5, 1),  # observed negative that will flip
    (4, 0, 0.99, 0.5, 0),  # z clipped at max_flip_probability = 0.95
    (5, 0, 0.0, 1.0, 0),  # mature negative
    (6, 1, 0.0, 1.0, 1),  # mature positive
    (7, 1, 0.0, 0.0, 1),  # s = 0: clipped, no division by zero
]
EXPECTED = {  # method -> example_id -> (w_pos, w_neg), computed by hand
    "vanilla": {1: (1, 0), 2: (1, 0), 3: (0, 1), 4: (0, 1), 5: (0, 1), 6: (1, 0), 7: (1, 0)},
    "importance_sampling": {
        1: (2, 0),
        2: (10, 0),
        3: (0, 0.7),
        4: (0, 0.05),
        5: (0, 1),
        6: (1, 0),
        7: (10, 0),
    },
    "label_correction": {
        1: (1, 0),
        2: (1, 0),
        3: (0.3, 0.7),
        4: (0.95, 0.05),
        5: (0, 1),
        6: (1, 0),
        7: (1, 0),
    },
    "fnw": {1: (1, 1), 2: (1, 1), 3: (0, 1), 4: (0, 1), 5: (0, 1), 6: (1, 1), 7: (1, 1)},
    "oracle": {1: (1, 0), 2: (1, 0), 3: (1, 0), 4: (0, 1), 5: (0, 1), 6: (1, 0), 7: (1, 0)},
}


@pytest.fixture(scope="module")
def weight_rows(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(
        WEIGHT_ROWS,
        "example_id long, observed_label int, flip_probability double, "
        "observation_probability double, true_label int",
    )


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_weights_match_hand_computed_values(weight_rows: DataFrame, method: str) -> None:
    settings = FeedbackSettings(
        max_weight=10, max_flip_probability=0.95, importance_normalisation="none"
    )
    got = _by_id(loss_weights(weight_rows, method, settings))
    assert {i: (r["w_pos"], r["w_neg"]) for i, r in got.items()} == {
        i: pytest.approx(w) for i, w in EXPECTED[method].items()
    }


def test_importance_weights_add_up_to_the_expected_conversions(weight_rows: DataFrame) -> None:
    """Self-normalised: the positives' clipped 1/s (2, 10, 1, 10: 23 in all) are scaled to the
    flip model's expected conversions, 4 observed + 0.3 + 0.95 (z clipped) + 0 = 5.25; the
    negatives keep 1 - z, so the weighted base rate is 5.25 / 7, label correction's."""
    settings = FeedbackSettings(max_weight=10, max_flip_probability=0.95)
    got = _by_id(loss_weights(weight_rows, "importance_sampling", settings))
    scale = 5.25 / 23
    plain = EXPECTED["importance_sampling"]
    assert {i: (r["w_pos"], r["w_neg"]) for i, r in got.items()} == {
        i: pytest.approx((w_pos * scale, w_neg)) for i, (w_pos, w_neg) in plain.items()
    }
    corrected = _by_id(loss_weights(weight_rows, "label_correction", settings))
    assert sum(r["w_pos"] for r in got.values()) == pytest.approx(
        sum(r["w_pos"] for r in corrected.values())
    )
    assert "_positive_weight_scale" not in loss_weights(weight_rows, "vanilla", settings).columns


def test_weight_errors(weight_rows: DataFrame) -> None:
    with pytest.raises(ValueError, match="unknown weighting method"):
        loss_weights(weight_rows, "magic", FeedbackSettings())
    with pytest.raises(ValueError, match="observation_probability"):
        loss_weights(
            weight_rows.drop("observation_probability"), "importance_sampling", FeedbackSettings()
        )
    with pytest.raises(ValueError, match="true label"):
        loss_weights(weight_rows.drop("true_label"), "oracle", FeedbackSettings())
    with pytest.raises(ValueError, match="UTC offset"):
        counterfactual_cutoffs(datetime(2026, 1, 20), FeedbackSettings())


def _all_methods(scored: DataFrame) -> DataFrame:
    """``scored`` with ``<method>_pos`` and ``<method>_neg`` weight columns for every method."""
    for method in METHODS:
        scored = (
            loss_weights(scored, method, SIM)
            .withColumnRenamed("w_pos", f"{method}_pos")
            .withColumnRenamed("w_neg", f"{method}_neg")
        )
    return scored


def test_weights_are_vanilla_when_nothing_can_flip(
    sim: DataFrame, sim_models: tuple[DataFrame, DataFrame]
) -> None:
    """Mature examples get z = 0, s = 1 from the model and then every method's weights are 1
    (FNW aside: it counts each conversion as a negative too, by design, mature or not)."""
    mature = observe_at(sim, T, SIM).filter("mature")
    weighted = _all_methods(apply_hazard(mature, *sim_models, SIM))
    differs = [
        F.sum((F.col(f"{m}_{side}") != F.col(f"vanilla_{side}")).cast("int")).alias(f"{m}_{side}")
        for m in METHODS
        if m != "fnw"
        for side in ("pos", "neg")
    ]
    counts = weighted.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(
            ((F.col("flip_probability") != 0) | (F.col("observation_probability") != 1)).cast("int")
        ).alias("can_flip"),
        *differs,
    ).head()
    assert counts["n"] > 50_000
    assert counts.asDict() == {"n": counts["n"], **{k: 0 for k in counts.asDict() if k != "n"}}


def test_weighted_loss_is_unbiased_on_the_simulated_population(
    sim: DataFrame, sim_models: tuple[DataFrame, DataFrame]
) -> None:
    """On the immature examples at T (their labels still incomplete), the weighted positive and
    negative counts and the weighted log loss of a fixed predictor match those of the true labels
    (the oracle) for importance sampling and label correction: ``E_Q[w1 l1 + w0 l0] = E_P[l]``.

    The tolerance is 3 standard errors of the difference to the oracle (estimated from the rows,
    conservatively, as ``sqrt(sum((x_method - x_oracle)^2))``) plus 1% for the models' own error;
    vanilla misses by tens of standard errors.
    """
    immature = observe_at(sim, T, SIM).filter(~F.col("mature"))
    weighted = _all_methods(apply_hazard(immature, *sim_models, SIM))
    # a fixed predictor f per signal state; its log loss under each method's weights
    f = {"none": 0.1, "revisit": 0.2, "fav": 0.3, "cart": 0.6}
    f_col = F.create_map(*[F.lit(x) for kv in f.items() for x in kv])[F.col("signal_state")]
    terms = {}
    for m in METHODS:
        pos, neg = F.col(f"{m}_pos"), F.col(f"{m}_neg")
        terms[m] = {"pos": pos, "neg": neg, "loss": -(pos * F.log(f_col) + neg * F.log(1 - f_col))}
    aggs = [F.count(F.lit(1)).alias("n")]
    for m in METHODS:
        for k, x in terms[m].items():
            diff = x - terms["oracle"][k]
            aggs += [F.sum(x).alias(f"{m}.{k}"), F.sqrt(F.sum(diff * diff)).alias(f"{m}.{k}.se")]
    row = weighted.agg(*aggs).head().asDict()
    print(f"\nweighted sums on the {row['n']} immature examples at T (difference / std error):")
    report = {}
    for m in METHODS:
        cells = []
        for k in ("pos", "neg", "loss"):
            got, truth, se = row[f"{m}.{k}"], row[f"oracle.{k}"], row[f"{m}.{k}.se"]
            report[m, k] = (got - truth, 3 * se + 0.01 * truth, se)
            cells.append(f"{k}={got:9.1f} ({(got - truth) / se if se else 0.0:+6.1f} se)")
        print(f"  {m:20s} " + "  ".join(cells))
    assert row["n"] > 15_000 and row["oracle.pos"] > 2_000
    for m in ("importance_sampling", "label_correction"):
        for k in ("pos", "neg", "loss"):
            diff, tolerance, _ = report[m, k]
            assert abs(diff) <= tolerance, (m, k, diff, tolerance)
    for k in ("pos", "loss"):  # vanilla under-counts positives and under-states the loss
        diff, _, se = report["vanilla", k]
        assert diff < -10 * se, (k, diff, se)
    assert row["vanilla.pos"] < 0.8 * row["oracle.pos"]


def test_training_weights_table_end_to_end(sim: DataFrame) -> None:
    """The job-level function: fit on data mature at T, weight every example at T."""
    table = training_weights_table(sim, T, SIM, RUN_DATE)  # method: settings.weighting
    assert tuple(table.columns) == TRAINING_WEIGHTS_COLUMNS
    types = dict(table.dtypes)
    assert types == {
        "example_id": "bigint",
        "observed_label": "int",
        "elapsed_s": "double",
        "signal_state": "string",
        "flip_probability": "double",
        "observation_probability": "double",
        "w_pos": "double",
        "w_neg": "double",
        "method": "string",
        "cutoff": "timestamp",
        "run_date": "date",
    }
    summary = table.agg(
        F.count(F.lit(1)).alias("n"),
        F.countDistinct("example_id").alias("ids"),
        F.min("elapsed_s").alias("min_elapsed"),
        F.sum((F.col("w_pos") + F.col("w_neg") - 1).cast("double")).alias("lc_sum_minus_one"),
        F.collect_set("method").alias("methods"),
        F.min("cutoff").alias("cutoff"),
        F.max("run_date").alias("run_date"),
        F.sum(F.col("w_pos").isNull().cast("int")).alias("null_weights"),
    ).head()
    assert summary["n"] == summary["ids"] == N_SIM  # every simulated view is before T
    assert summary["min_elapsed"] >= 0
    assert summary["lc_sum_minus_one"] == pytest.approx(0.0, abs=1e-6)  # w1 + w0 = 1 for LC
    assert summary["methods"] == ["label_correction"] and summary["run_date"] == RUN_DATE
    assert _epoch(summary["cutoff"]) == T.timestamp() and summary["null_weights"] == 0
