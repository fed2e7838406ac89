"""A seeded generator of realistic event logs, with the ground truth later stages are checked on.

The world it simulates (all knobs in ``GeneratorSettings``):

* **Catalog.** Items fall into categories; item popularity follows a power law (Zipf).
* **Asymmetric complements.** Categories are put in a random order and a category only relates to
  categories *after* it (phone -> case -> screen guard), so no relation is ever reciprocated.
  Each item gets a few true targets in its complement categories, drawn by popularity.
* **Users.** Sessions start at uniform times; each views an anchor item (by popularity) and browses
  the same category. A view may lead to a favourite and an add-to-cart minutes later, and to a
  purchase with probability ``sigmoid(base + quality + cart + fav)`` after a log-normal delay
  (hours to days, a long tail past a week). After a purchase the user may come back days later to
  view a true complement of what they bought, which they buy far more readily: that is the
  "U before V" signal of the directed product graph.
* **Observation.** The raw log stops at ``start + days``: events after it are not in the log,
  though the ground truth keeps them (a late purchase is exactly what delayed feedback is about).

Everything is a pure function of the seed: the catalog is built on the driver from
``default_rng(seed)``; each user is simulated inside ``mapInPandas`` from ``default_rng([seed, user])``,
so the output does not depend on partitioning or on which executor ran which user.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    LongType,
    StructField,
    StructType,
    TimestampType,
)

from recbatch.config import GeneratorSettings
from recbatch.log import get_logger

log = get_logger(__name__)

VIEW_TRUTH_SCHEMA = StructType(
    [
        StructField("view_id", LongType(), False),
        StructField("user_id", LongType(), False),
        StructField("item_id", LongType(), False),
        StructField("category_id", LongType(), False),
        StructField("view_ts", TimestampType(), False),
        StructField("fav_ts", TimestampType(), True),
        StructField("cart_ts", TimestampType(), True),
        StructField("buy_probability", DoubleType(), False),
        StructField("delay_log_mu", DoubleType(), False),
        StructField("delay_log_sigma", DoubleType(), False),
        StructField("will_buy", BooleanType(), False),
        StructField("buy_ts", TimestampType(), True),
        StructField("follow_up_of", LongType(), True),
    ]
)
"""One row per simulated view: its signals, its true purchase probability and delay law (hours,
log-normal), whether it converts and when (possibly after the observed window), and for a
follow-up view the item whose purchase led to it."""

_MAX_VIEWS_PER_USER_BITS = 20  # view_id = user_id << 20 | sequence number


@dataclass(frozen=True)
class Catalog:
    """The simulated world shared by every user (small: built on the driver, shipped in closures)."""

    item_category: np.ndarray  # [n_items] category of each item
    item_quality: np.ndarray  # [n_items] logit offset of buying the item
    popularity_cdf: np.ndarray  # [n_items] cumulative popularity over all items
    items_by_category: np.ndarray  # item ids grouped by category
    category_offsets: np.ndarray  # [n_categories + 1] slice of each category in items_by_category
    category_cdf: np.ndarray  # popularity cdf within each category's slice
    category_targets: list[list[int]]  # complement categories of each category
    complements: np.ndarray  # [n_items, complements_per_item] true targets, -1 padded


def build_catalog(cfg: GeneratorSettings) -> Catalog:
    """Items, categories, popularity and the asymmetric complement relations, from the seed."""
    rng = np.random.default_rng([cfg.seed, 0])
    n_items, n_cat = cfg.n_items, cfg.n_categories
    category_weight = 1.0 / np.arange(1, n_cat + 1) ** 0.7
    item_category = rng.choice(n_cat, size=n_items, p=category_weight / category_weight.sum())
    ranks = rng.permutation(n_items) + 1
    popularity = 1.0 / ranks ** cfg.popularity_exponent
    item_quality = rng.normal(0.0, 0.5, size=n_items)

    items_by_category = np.argsort(item_category, kind="stable")
    counts = np.bincount(item_category, minlength=n_cat)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    category_cdf = np.empty(n_items)
    for c in range(n_cat):
        lo, hi = offsets[c], offsets[c + 1]
        if hi > lo:
            weights = popularity[items_by_category[lo:hi]]
            category_cdf[lo:hi] = np.cumsum(weights) / weights.sum()

    order = rng.permutation(n_cat)  # position of each category in the complement order
    by_position = np.argsort(order)
    category_targets: list[list[int]] = []
    for c in range(n_cat):
        later = by_position[order[c] + 1 :]
        later = later[counts[later] > 0]
        k = min(cfg.complements_per_category, len(later))
        category_targets.append(sorted(rng.choice(later, size=k, replace=False).tolist()) if k else [])

    complements = np.full((n_items, cfg.complements_per_item), -1, dtype=np.int64)
    for item in range(n_items):
        targets = category_targets[item_category[item]]
        if not targets:
            continue
        pool = np.concatenate([items_by_category[offsets[t] : offsets[t + 1]] for t in targets])
        k = min(cfg.complements_per_item, len(pool))
        weights = popularity[pool] / popularity[pool].sum()
        complements[item, :k] = rng.choice(pool, size=k, replace=False, p=weights)

    return Catalog(
        item_category=item_category.astype(np.int64),
        item_quality=item_quality,
        popularity_cdf=np.cumsum(popularity) / popularity.sum(),
        items_by_category=items_by_category.astype(np.int64),
        category_offsets=offsets,
        category_cdf=category_cdf,
        category_targets=category_targets,
        complements=complements,
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _UserSimulator:
    """Simulates one user's views and their outcomes; all randomness from ``default_rng([seed, u])``."""

    def __init__(self, cfg: GeneratorSettings, catalog: Catalog) -> None:
        self.cfg = cfg
        self.cat = catalog
        self.start_s = cfg.start.timestamp()
        self.span_s = cfg.days * 86_400.0
        self.delay_mu = float(np.log(cfg.delay_median_hours))

    def _draw_item(self, rng: np.random.Generator, category: int | None) -> int:
        cat = self.cat
        if category is None:
            return int(np.searchsorted(cat.popularity_cdf, rng.random(), side="right").clip(0, len(cat.popularity_cdf) - 1))
        lo, hi = cat.category_offsets[category], cat.category_offsets[category + 1]
        pos = np.searchsorted(cat.category_cdf[lo:hi], rng.random(), side="right")
        return int(cat.items_by_category[lo + min(pos, hi - lo - 1)])

    def _view(self, rng, rows, user, item, ts, follow_up_of, depth) -> None:
        cfg, cat = self.cfg, self.cat
        fav = rng.random() < cfg.fav_rate
        cart = rng.random() < cfg.cart_rate * (2.0 if fav else 1.0)
        logit = cfg.buy_base_logit + cat.item_quality[item]
        logit += cfg.buy_cart_logit * cart + cfg.buy_fav_logit * fav
        if follow_up_of is not None:
            logit += cfg.follow_up_buy_logit
        p_buy = float(_sigmoid(np.array(logit)))
        will_buy = rng.random() < p_buy
        delay_h = float(np.exp(rng.normal(self.delay_mu, cfg.delay_sigma)))
        fav_ts = ts + rng.exponential(600.0) if fav else None
        cart_ts = ts + rng.exponential(900.0) if cart else None
        buy_ts = ts + delay_h * 3600.0 if will_buy else None
        if buy_ts is not None and cart_ts is not None and buy_ts < cart_ts:
            buy_ts = cart_ts + 60.0  # a purchase never precedes its add-to-cart
        rows.append((user, item, ts, fav_ts, cart_ts, p_buy, will_buy, buy_ts, follow_up_of))
        if will_buy and depth < 2 and rng.random() < cfg.follow_up_rate:
            targets = cat.complements[item][cat.complements[item] >= 0]
            if len(targets):
                gap_s = rng.exponential(cfg.follow_up_mean_days * 86_400.0)
                target = int(targets[rng.integers(len(targets))])
                self._view(rng, rows, user, target, buy_ts + gap_s, item, depth + 1)

    def simulate(self, user: int) -> list[tuple]:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 1, user])
        rows: list[tuple] = []
        n_sessions = 1 + rng.poisson(cfg.sessions_per_user - 1) if cfg.sessions_per_user > 1 else 1
        for _ in range(n_sessions):
            ts = self.start_s + rng.random() * self.span_s
            anchor = self._draw_item(rng, None)
            category = int(self.cat.item_category[anchor])
            n_views = 1 + rng.poisson(cfg.views_per_session - 1)
            for k in range(n_views):
                item = anchor if k == 0 else self._draw_item(rng, category)
                self._view(rng, rows, user, item, ts, None, 0)
                ts += rng.exponential(120.0)
        return rows


def _simulate_partition(cfg: GeneratorSettings, catalog: Catalog):
    sim = _UserSimulator(cfg, catalog)
    sigma = cfg.delay_sigma
    mu = float(np.log(cfg.delay_median_hours))

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            records = []
            for user in batch["id"].tolist():
                for seq, row in enumerate(sim.simulate(int(user))[: 1 << _MAX_VIEWS_PER_USER_BITS]):
                    records.append(((int(user) << _MAX_VIEWS_PER_USER_BITS) | seq, *row))
            frame = pd.DataFrame.from_records(
                records,
                columns=["view_id", "user_id", "item_id", "view_ts", "fav_ts", "cart_ts",
                         "buy_probability", "will_buy", "buy_ts", "follow_up_of"],
            )
            if frame.empty:
                continue
            frame["category_id"] = catalog.item_category[frame["item_id"].to_numpy()]
            for col in ("view_ts", "fav_ts", "cart_ts", "buy_ts"):
                frame[col] = pd.to_datetime(frame[col].astype("float64"), unit="s", utc=True)
            frame["delay_log_mu"] = mu
            frame["delay_log_sigma"] = sigma
            frame["follow_up_of"] = frame["follow_up_of"].astype("Int64")
            yield frame[[f.name for f in VIEW_TRUTH_SCHEMA.fields]]

    return run


def simulate_views(spark: SparkSession, cfg: GeneratorSettings, catalog: Catalog) -> DataFrame:
    """The ground-truth views of all users (one row per view), computed in parallel by user."""
    users = spark.range(0, cfg.n_users, numPartitions=cfg.partitions)
    return users.mapInPandas(_simulate_partition(cfg, catalog), VIEW_TRUTH_SCHEMA)


def observed_events(views: DataFrame, cfg: GeneratorSettings) -> DataFrame:
    """The raw event log a tracking system would have recorded by the end of the window."""
    end = F.lit(cfg.start.timestamp() + cfg.days * 86_400.0).cast("timestamp")
    kinds = [("view", "view_ts"), ("fav", "fav_ts"), ("cart", "cart_ts"), ("buy", "buy_ts")]
    stacked = views.select(
        "user_id",
        "item_id",
        "category_id",
        F.explode(
            F.array(*[F.struct(F.lit(k).alias("event_type"), F.col(c).alias("event_ts")) for k, c in kinds])
        ).alias("e"),
    ).select("user_id", "item_id", "category_id", "e.event_type", "e.event_ts")
    return stacked.where(F.col("event_ts").isNotNull() & (F.col("event_ts") < end))


def relation_truth(spark: SparkSession, catalog: Catalog) -> tuple[DataFrame, DataFrame]:
    """The true item -> item and category -> category relations (small tables)."""
    src, rank = np.nonzero(catalog.complements >= 0)
    items = pd.DataFrame(
        {
            "src_item": src.astype(np.int64),
            "dst_item": catalog.complements[src, rank],
            "src_category": catalog.item_category[src],
        }
    )
    items["dst_category"] = catalog.item_category[items["dst_item"].to_numpy()]
    cats = pd.DataFrame(
        [(c, t) for c, targets in enumerate(catalog.category_targets) for t in targets],
        columns=["src_category", "dst_category"],
    ).astype("int64")
    return spark.createDataFrame(items), spark.createDataFrame(cats)


def write_events(events: DataFrame, path: str, fmt: str) -> None:
    """Write the raw log as the canonical CSV (ISO-8601 UTC times, header) or typed Parquet."""
    if fmt == "csv":
        out = events.withColumn("event_ts", F.date_format("event_ts", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"))
        out.write.mode("overwrite").option("header", True).csv(path)
    else:
        events.write.mode("overwrite").parquet(path)


def generate(spark: SparkSession, cfg: GeneratorSettings, events_path: str, truth_path: str) -> dict[str, int]:
    """Generate the raw event log and its ground truth; return row counts for the log."""
    catalog = build_catalog(cfg)
    views = simulate_views(spark, cfg, catalog).persist()
    try:
        views.write.mode("overwrite").parquet(f"{truth_path}/views")
        item_rel, cat_rel = relation_truth(spark, catalog)
        item_rel.write.mode("overwrite").parquet(f"{truth_path}/item_relations")
        cat_rel.write.mode("overwrite").parquet(f"{truth_path}/category_relations")
        events = observed_events(views, cfg)
        write_events(events, events_path, cfg.output_format)
        counts = {
            row["event_type"]: row["count"]
            for row in spark.read.parquet(f"{truth_path}/views").transform(lambda v: observed_events(v, cfg))
            .groupBy("event_type").count().collect()
        }
    finally:
        views.unpersist()
    log.info("generated %d events %s -> %s", sum(counts.values()), counts, events_path)
    return counts
