"""The synthetic event generator: determinism, the simulated world, and its ground truth.

One generated dataset (``base``) is shared by the statistical tests. It is small (500 users) but
with purchases and complement follow-ups made more frequent than in the default config, so that
each statistical property is measured on hundreds of purchases, not a handful.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import make_test_config
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recbatch.config import RecbatchConfig
from recbatch.events.generator import generate, window_bounds
from recbatch.events.schema import EVENT_COLUMNS, EVENT_TYPES

GENERATOR = (
    "generator.n_users=500",
    "generator.n_items=1000",
    "generator.n_categories=12",
    "generator.partitions=3",
    # More purchases and follow-ups than by default, for statistics on a few hundred users.
    "generator.buy_base_logit=-3.0",
    "generator.follow_up_rate=1.0",
    "generator.follow_up_buy_logit=3.5",
)


@dataclass(frozen=True)
class Run:
    cfg: RecbatchConfig
    counts: dict[str, int]

    @property
    def events_path(self) -> str:
        return self.cfg.path("raw_events")

    def truth(self, spark: SparkSession, table: str) -> DataFrame:
        return spark.read.parquet(f"{self.cfg.path('ground_truth')}/{table}")

    def events(self, spark: SparkSession) -> DataFrame:
        """The raw log with typed columns, whichever format it was written in."""
        if self.cfg.generator.output_format == "parquet":
            return spark.read.parquet(self.events_path)
        raw = spark.read.option("header", True).csv(self.events_path)
        return raw.select(
            *[F.col(c).cast("long").alias(c) for c in ("user_id", "item_id", "category_id")],
            "event_type",
            F.col("event_ts").cast("timestamp").alias("event_ts"),
        )


def _generate(spark: SparkSession, data_root: Path, name: str, *overrides: str) -> Run:
    cfg = make_test_config(data_root / "generator" / name, *GENERATOR, *overrides)
    counts = generate(spark, cfg.generator, cfg.path("raw_events"), cfg.path("ground_truth"))
    return Run(cfg, counts)


@pytest.fixture(scope="module")
def base(spark: SparkSession, data_root: Path) -> Run:
    return _generate(spark, data_root, "base")


def _raw_rows(spark: SparkSession, run: Run) -> list[tuple]:
    """The raw log exactly as written (CSV strings), sorted."""
    rows = spark.read.option("header", True).csv(run.events_path).collect()
    return sorted(tuple(r) for r in rows)


def _truth_rows(spark: SparkSession, run: Run) -> list[tuple]:
    return sorted(tuple(r) for r in run.truth(spark, "views").collect())


def _type_counts(frame: DataFrame) -> dict[str, int]:
    return {r["event_type"]: r["count"] for r in frame.groupBy("event_type").count().collect()}


def _documented_logit(gen) -> Column:
    """The purchase logit of a truth view joined with its item's quality, as documented: base +
    quality + cart + favourite + follow-up (no user propensity)."""
    return (
        F.lit(gen.buy_base_logit)
        + F.col("quality")
        + F.when(F.col("cart_ts").isNotNull(), gen.buy_cart_logit).otherwise(0.0)
        + F.when(F.col("fav_ts").isNotNull(), gen.buy_fav_logit).otherwise(0.0)
        + F.when(F.col("follow_up_of").isNotNull(), gen.follow_up_buy_logit).otherwise(0.0)
    )


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_identical_output(spark: SparkSession, data_root: Path, base: Run) -> None:
    again = _generate(spark, data_root, "again")
    assert again.counts == base.counts
    assert _raw_rows(spark, again) == _raw_rows(spark, base)
    assert _truth_rows(spark, again) == _truth_rows(spark, base)


def test_output_does_not_depend_on_partitioning(
    spark: SparkSession, data_root: Path, base: Run
) -> None:
    repartitioned = _generate(spark, data_root, "partitions5", "generator.partitions=5")
    assert len(list(Path(repartitioned.events_path).glob("part-*.csv"))) == 5
    assert _raw_rows(spark, repartitioned) == _raw_rows(spark, base)
    assert _truth_rows(spark, repartitioned) == _truth_rows(spark, base)


def test_another_seed_gives_another_log(spark: SparkSession, data_root: Path, base: Run) -> None:
    other = _generate(spark, data_root, "seed8", "generator.seed=8")
    assert _raw_rows(spark, other) != _raw_rows(spark, base)
    relations = {tuple(r) for r in base.truth(spark, "item_relations").collect()}
    other_relations = {tuple(r) for r in other.truth(spark, "item_relations").collect()}
    assert relations != other_relations


# --- output format -------------------------------------------------------------------------------


def test_csv_has_the_canonical_header_and_columns(base: Run) -> None:
    parts = sorted(Path(base.events_path).glob("part-*.csv"))
    assert parts
    iso_utc = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
    n_rows = 0
    for part in parts:
        lines = part.read_text().splitlines()
        assert lines[0] == ",".join(EVENT_COLUMNS)
        for line in lines[1:]:
            user, item, category, event_type, ts = line.split(",")
            assert user.isdigit() and item.isdigit() and category.isdigit(), line
            assert event_type in EVENT_TYPES, line
            assert iso_utc.match(ts), line
            n_rows += 1
    assert n_rows == sum(base.counts.values())
    assert all(base.counts[t] > 0 for t in EVENT_TYPES)


def test_parquet_log_is_typed_and_holds_the_same_events(
    spark: SparkSession, data_root: Path, base: Run
) -> None:
    parquet = _generate(spark, data_root, "parquet", "generator.output_format=parquet")
    frame = spark.read.parquet(parquet.events_path)
    types = dict(frame.dtypes)
    assert list(types) == list(EVENT_COLUMNS)
    assert types == {
        "user_id": "bigint",
        "item_id": "bigint",
        "category_id": "bigint",
        "event_type": "string",
        "event_ts": "timestamp",
    }
    # The CSV keeps every time to the millisecond: both formats hold exactly the same events.
    assert parquet.events(spark).exceptAll(base.events(spark)).count() == 0
    assert base.events(spark).exceptAll(parquet.events(spark)).count() == 0


# --- the simulated world -------------------------------------------------------------------------


def test_relations_are_asymmetric_and_consistent(spark: SparkSession, base: Run) -> None:
    cats = base.truth(spark, "category_relations")
    items = base.truth(spark, "item_relations")
    catalog = base.truth(spark, "items")
    assert cats.count() > 0 and items.count() > 0

    def reciprocated(rel: DataFrame, src: str, dst: str) -> int:
        a, b = rel.alias("a"), rel.alias("b")
        cond = (F.col(f"a.{src}") == F.col(f"b.{dst}")) & (F.col(f"a.{dst}") == F.col(f"b.{src}"))
        return a.join(b, cond).count()

    assert reciprocated(cats, "src_category", "dst_category") == 0
    assert reciprocated(items, "src_item", "dst_item") == 0
    assert items.where("src_item = dst_item").count() == 0
    assert items.select("src_item", "dst_item").distinct().count() == items.count()
    max_out = items.groupBy("src_item").count().agg(F.max("count")).first()[0]
    assert max_out <= base.cfg.generator.complements_per_item
    # Every item relation follows a category relation, with the items' true categories.
    assert items.join(cats, ["src_category", "dst_category"], "left_anti").count() == 0
    src_cat = catalog.select(F.col("item_id").alias("src_item"), F.col("category_id").alias("c"))
    assert items.join(src_cat, "src_item").where("c != src_category").count() == 0
    # The category graph is acyclic: a topological order exists (Kahn's algorithm, driver-side).
    edges = [tuple(r) for r in cats.collect()]
    remaining = {c for e in edges for c in e}
    while remaining:
        sources = {c for c in remaining if not any(d == c and s in remaining for s, d in edges)}
        assert sources, f"cycle among categories {sorted(remaining)}"
        remaining -= sources


def test_buyers_of_u_later_buy_v_not_the_reverse(spark: SparkSession, base: Run) -> None:
    buys = base.events(spark).where("event_type = 'buy'").select("user_id", "item_id", "event_ts")
    a, b = buys.alias("a"), buys.alias("b")
    sequences = (
        a.join(
            b,
            (F.col("a.user_id") == F.col("b.user_id"))
            & (F.col("a.event_ts") < F.col("b.event_ts")),
        )
        .select(
            F.col("a.user_id").alias("user_id"),
            F.col("a.item_id").alias("first"),
            F.col("b.item_id").alias("then"),
        )
        .distinct()
    )  # (user, first, then): the user bought `first`, later `then`
    rel = base.truth(spark, "item_relations").select("src_item", "dst_item")
    forward = sequences.join(
        rel, (F.col("first") == F.col("src_item")) & (F.col("then") == F.col("dst_item"))
    ).count()
    backward = sequences.join(
        rel, (F.col("first") == F.col("dst_item")) & (F.col("then") == F.col("src_item"))
    ).count()
    assert forward >= 100, (forward, backward)
    assert forward >= 5 * max(backward, 1), (forward, backward)


def test_follow_up_views_are_true_complements_of_an_earlier_purchase(
    spark: SparkSession, base: Run
) -> None:
    views = base.truth(spark, "views")
    follow = views.where("follow_up_of IS NOT NULL")
    assert follow.count() > 100
    rel = base.truth(spark, "item_relations")
    not_related = follow.join(
        rel,
        (F.col("follow_up_of") == F.col("src_item")) & (F.col("item_id") == F.col("dst_item")),
        "left_anti",
    )
    assert not_related.count() == 0
    bought = views.where("will_buy").select(
        F.col("user_id").alias("u"), F.col("item_id").alias("i"), F.col("buy_ts").alias("t")
    )
    unexplained = follow.join(
        bought,
        (F.col("user_id") == F.col("u"))
        & (F.col("follow_up_of") == F.col("i"))
        & (F.col("t") <= F.col("view_ts")),
        "left_anti",
    )
    assert unexplained.count() == 0


def test_add_to_cart_strongly_raises_the_purchase_probability(
    spark: SparkSession, base: Run
) -> None:
    gen = base.cfg.generator
    views = base.truth(spark, "views").where("follow_up_of IS NULL")
    stats = {
        r["carted"]: r
        for r in views.groupBy((F.col("cart_ts").isNotNull()).alias("carted"))
        .agg(
            F.count("*").alias("n"),
            F.avg(F.col("will_buy").cast("double")).alias("observed"),
            F.avg("buy_probability").alias("expected"),
        )
        .collect()
    }
    carted, plain = stats[True], stats[False]
    assert carted["n"] >= 200 and plain["n"] >= 2000
    assert carted["observed"] >= 4 * plain["observed"], (carted, plain)
    assert carted["expected"] >= 4 * plain["expected"], (carted, plain)
    # The outcomes follow the recorded probabilities (within ~4 standard errors).
    for group in (carted, plain):
        p = group["expected"]
        assert abs(group["observed"] - p) <= 4 * math.sqrt(p * (1 - p) / group["n"]) + 1e-3

    # The recorded probability is exactly the documented logit, item by item.
    quality = base.truth(spark, "items").select("item_id", "quality")
    logit = _documented_logit(gen)
    error = (
        base.truth(spark, "views")
        .join(quality, "item_id")
        .select(F.max(F.abs(F.col("buy_probability") - 1 / (1 + F.exp(-logit)))))
        .first()[0]
    )
    assert error < 1e-9


def test_purchase_delays_follow_the_recorded_log_normal_law(spark: SparkSession, base: Run) -> None:
    gen = base.cfg.generator
    hours = (F.unix_millis("buy_ts") - F.unix_millis("view_ts")) / 3_600_000.0
    delays = (
        base.truth(spark, "views")
        .where("will_buy")
        .select(hours.alias("h"), "delay_log_mu", "delay_log_sigma")
    )
    row = delays.agg(
        F.count("*").alias("n"),
        F.percentile_approx("h", 0.5, 100_000).alias("median"),
        F.sum((F.col("h") > 7 * 24).cast("int")).alias("over_a_week"),
        F.min("h").alias("min"),
        F.avg(F.log("h")).alias("log_mean"),
        F.stddev(F.log("h")).alias("log_sd"),
        F.min("delay_log_mu").alias("mu_lo"),
        F.max("delay_log_mu").alias("mu_hi"),
        F.max("delay_log_sigma").alias("sigma"),
    ).first()
    assert row["n"] >= 300
    assert row["min"] > 0
    assert 0.6 * gen.delay_median_hours <= row["median"] <= 1.6 * gen.delay_median_hours, row
    # A long tail: some purchases come more than a week after the view, but only a few percent.
    assert 0 < row["over_a_week"] <= 0.05 * row["n"], row
    # The law written in the truth is the one the delays were drawn from.
    assert row["mu_lo"] == row["mu_hi"] == pytest.approx(math.log(gen.delay_median_hours))
    assert row["sigma"] == pytest.approx(gen.delay_sigma)
    assert abs(row["log_mean"] - row["mu_lo"]) < 0.25, row
    assert abs(row["log_sd"] - row["sigma"]) < 0.25, row


def test_category_delay_spread_shifts_each_category_by_its_recorded_law(
    spark: SparkSession, data_root: Path
) -> None:
    """With a spread, each category has its own log-delay centre, recorded per view in the truth;
    the delays around it keep the configured sigma, and the centres really differ."""
    run = _generate(
        spark, data_root, "delay_spread", "generator.category_delay_spread=1.5", "generator.seed=3"
    )
    gen = run.cfg.generator
    log_h = F.log((F.unix_millis("buy_ts") - F.unix_millis("view_ts")) / 3_600_000.0)
    by_category = (
        run.truth(spark, "views")
        .where("will_buy")
        .groupBy("category_id")
        .agg(
            F.count("*").alias("n"),
            F.min("delay_log_mu").alias("mu_lo"),
            F.max("delay_log_mu").alias("mu_hi"),
            F.avg(log_h - F.col("delay_log_mu")).alias("residual_mean"),
        )
        .collect()
    )
    centres = [r["mu_lo"] for r in by_category]
    assert all(r["mu_lo"] == r["mu_hi"] for r in by_category), "one law per category"
    assert max(centres) - min(centres) > 1.5, centres
    residuals = (
        run.truth(spark, "views")
        .where("will_buy")
        .agg(F.avg(log_h - F.col("delay_log_mu")), F.stddev(log_h - F.col("delay_log_mu")))
        .first()
    )
    assert abs(residuals[0]) < 0.2 and abs(residuals[1] - gen.delay_sigma) < 0.2, residuals
    big = [r for r in by_category if r["n"] >= 50]
    assert big and all(abs(r["residual_mean"]) < 0.6 for r in big), big


def test_user_propensity_is_one_term_per_user_and_shows_in_the_users_carts(
    spark: SparkSession, data_root: Path
) -> None:
    """With ``user_propensity_sd`` each user's views share one extra purchase-logit term, normal
    with that sd, and keen users favourite and cart more (rates x exp(term / 2)): what a
    conversion model can learn from the user's history."""
    run = _generate(
        spark, data_root, "propensity", "generator.user_propensity_sd=1.5", "generator.seed=3"
    )
    gen = run.cfg.generator
    quality = run.truth(spark, "items").select("item_id", "quality")
    p = F.col("buy_probability")
    known = _documented_logit(gen)
    views = run.truth(spark, "views").join(quality, "item_id")
    users = (
        views.select("user_id", (F.log(p / (1 - p)) - known).alias("term"), "cart_ts")
        .groupBy("user_id")
        .agg(
            F.min("term").alias("lo"),
            F.max("term").alias("hi"),
            F.avg(F.col("cart_ts").isNotNull().cast("double")).alias("cart_rate"),
            F.count("*").alias("views"),
        )
        .toPandas()
    )
    assert (users.hi - users.lo).abs().max() < 1e-6, "one term per user"
    assert len(users) >= 400 and abs(users.lo.mean()) < 0.2
    assert abs(users.lo.std() - 1.5) < 0.2, users.lo.std()
    carts = users.cart_rate * users.views
    keen = users.lo > users.lo.median()
    keen_rate, other_rate = (carts[m].sum() / users.views[m].sum() for m in (keen, ~keen))
    assert keen_rate > 1.5 * other_rate, (keen_rate, other_rate)


def test_signals_are_in_funnel_order(spark: SparkSession, base: Run) -> None:
    views = base.truth(spark, "views")
    assert views.count() == views.select("view_id").distinct().count()
    assert views.where(F.shiftright("view_id", 20) != F.col("user_id")).count() == 0
    broken = views.where(
        (F.col("fav_ts") < F.col("view_ts"))
        | (F.col("cart_ts") < F.col("view_ts"))
        | (F.col("buy_ts") <= F.col("view_ts"))
        | (F.col("buy_ts") < F.col("cart_ts"))
        | (F.col("will_buy") != F.col("buy_ts").isNotNull())
    )
    assert broken.count() == 0
    # Carted purchases keep the add-to-cart before the purchase.
    assert views.where("will_buy AND cart_ts IS NOT NULL").count() >= 100


def test_item_popularity_is_heavy_tailed(spark: SparkSession, base: Run) -> None:
    n_items = base.cfg.generator.n_items
    per_item = (
        base.events(spark)
        .where("event_type = 'view'")
        .groupBy("item_id")
        .count()
        .orderBy(F.desc("count"), "item_id")
    )
    counts = [r["count"] for r in per_item.collect()]  # at most n_items rows
    top = max(1, n_items // 100)
    share = sum(counts[:top]) / sum(counts)
    assert share >= 0.2, share  # 1% of the items, at least a fifth of the views
    # ... while most items are seen rarely (a long tail, not a handful of items).
    assert len(counts) >= 0.3 * n_items
    assert counts[len(counts) // 2] <= 0.05 * counts[0]


def test_window_end_cuts_the_log_but_not_the_truth(spark: SparkSession, base: Run) -> None:
    start, end = window_bounds(base.cfg.generator)
    assert end - start == timedelta(days=base.cfg.generator.days)
    events = base.events(spark)
    outside = events.where((F.col("event_ts") < F.lit(start)) | (F.col("event_ts") >= F.lit(end)))
    assert outside.count() == 0

    views = base.truth(spark, "views")
    late = views.where(F.col("buy_ts") >= F.lit(end)).count()
    late_views = views.where(F.col("view_ts") >= F.lit(end)).count()
    assert late > 0 and late_views > 0
    expected = {}
    for kind, column in zip(EVENT_TYPES, ("view_ts", "fav_ts", "cart_ts", "buy_ts"), strict=True):
        expected[kind] = views.where(F.col(column) < F.lit(end)).count()
    assert _type_counts(events) == expected == base.counts


# --- product lines ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lined(spark: SparkSession, data_root: Path) -> Run:
    return _generate(spark, data_root, "lined", "generator.lines=4", "generator.line_loyalty=0.8")


def test_items_of_a_line_share_their_targets_in_that_line(spark: SparkSession, lined: Run) -> None:
    k = lined.cfg.generator.complements_per_item
    items = lined.truth(spark, "items").select("item_id", "line")
    relations = (
        lined.truth(spark, "item_relations")
        .join(
            items.withColumnRenamed("item_id", "src_item").withColumnRenamed("line", "src_line"),
            "src_item",
        )
        .join(
            items.withColumnRenamed("item_id", "dst_item").withColumnRenamed("line", "dst_line"),
            "dst_item",
        )
    )
    total = relations.count()
    assert total > 0
    assert relations.where("src_line = dst_line").count() >= 0.9 * total
    # One target pool of 2k items per (category, line): its items draw from it, so the group's
    # distinct targets never exceed 2k, and groups of several items share targets.
    groups = relations.groupBy("src_category", "src_line").agg(
        F.countDistinct("src_item").alias("members"), F.countDistinct("dst_item").alias("targets")
    )
    assert groups.agg(F.max("targets")).first()[0] <= 2 * k
    crowded = groups.where(F.col("members") >= 4)
    assert crowded.count() > 0
    assert crowded.where(F.col("targets") >= F.col("members") * k).count() == 0


def test_buyers_keep_to_their_line(spark: SparkSession, data_root: Path, lined: Run) -> None:
    def modal_line_share(run: Run) -> float:
        items = run.truth(spark, "items").select("item_id", "line")
        per_line = (
            run.truth(spark, "views").join(items, "item_id").groupBy("user_id", "line").count()
        )
        per_user = per_line.groupBy("user_id").agg(
            F.max("count").alias("modal"), F.sum("count").alias("views")
        )
        share = per_user.where("views >= 6").agg(F.sum("modal") / F.sum("views")).first()[0]
        return float(share)

    free = _generate(spark, data_root, "lines-free", "generator.lines=4")
    loyal, unbound = modal_line_share(lined), modal_line_share(free)
    # 80% of draws from the user's line, the rest spread over 4 lines: about 0.85 of the views.
    assert loyal >= 0.8, (loyal, unbound)
    assert unbound <= 0.6, (loyal, unbound)


def test_loyalty_needs_lines() -> None:
    with pytest.raises(ValueError, match="line_loyalty needs generator.lines"):
        make_test_config(Path("/unused"), "generator.line_loyalty=0.5")
