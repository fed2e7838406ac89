"""A seeded generator of realistic event logs, with the ground truth later stages are checked on.

The world it simulates (all knobs in ``GeneratorSettings``):

* **Catalog.** Items fall into categories of skewed sizes; item popularity follows a power law
  (Zipf with ``popularity_exponent``), the popularity ranks being shuffled over item ids.
* **Asymmetric complements.** Categories are put in a random order and a category only relates to
  categories *after* it (phone -> case -> screen guard), so no relation is ever reciprocated.
  Each item gets ``complements_per_item`` distinct true targets in its complement categories,
  drawn by tempered popularity (its square root: popular targets are frequent without being
  everyone's target); items of the last categories in the order have none.
* **Product lines** (``lines > 0``). Each item belongs to a latent line (brand, model, style)
  that cuts across categories. The complements of an item are then drawn from one target pool
  per (category, line): its line's items in the complement categories (a phone's case fits its
  model). Items that share a line share targets, so a held-out relation is predictable from the
  others, as in real co-purchase data; with ``lines = 0`` each item draws its own. A user keeps
  to a line of their own for ``line_loyalty`` of their item draws (anchors and browsing), so
  buyers of a line buy more of it: co-purchases beyond the planted relations have structure
  too, as real baskets do.
* **Users.** Activity is heavy-tailed: a user has ``1 + Poisson(Gamma)`` sessions (mean
  ``sessions_per_user``). A session starts at a uniform time in the window, views an anchor item
  (by popularity) and browses the same category (by popularity within it), a couple of minutes
  apart. A view may lead to a favourite and an add-to-cart minutes later, and to a purchase with
  probability ``sigmoid(buy_base_logit + item quality + user propensity + cart + fav
  [+ follow-up])`` after a
  log-normal delay (median ``delay_median_hours``, spread ``delay_sigma``: hours to days, a long
  tail past a week; with ``category_delay_spread > 0`` each category shifts the log delay by its
  own normal draw: some are considered for days, others bought at once). An add-to-cart always precedes the purchase of its view. After a purchase the
  user may come back days later to view a true complement of what they bought, which they buy far
  more readily (up to two steps: phone -> case -> screen guard): that is the "U before V" signal
  of the directed product graph. Nothing ever leads from V back to U. Item quality is normal
  (sd ``item_quality_sd``); a user's propensity is normal (sd ``user_propensity_sd``, 0 by
  default) and also scales the user's favourite and add-to-cart rates by ``exp(propensity / 2)``:
  keen buyers browse with intent, so their history (carts, favourites, buys) shows what the
  conversion model can learn. The truth's ``buy_probability`` is each view's own probability, so
  its AUC on a test window is the reachable AUC.
* **Observation.** The raw log stops at ``start + days``: events at or after it are not in the
  log, though the ground truth keeps them (a late purchase is exactly what delayed feedback is
  about). All times are whole milliseconds (UTC), so the CSV log and the truth agree exactly.

Outputs of ``generate(spark, cfg, events_path, truth_path)``:

* ``events_path``: the raw log, CSV with header ``user_id,item_id,category_id,event_type,event_ts``
  (``event_ts`` ISO-8601 UTC with milliseconds, e.g. ``2026-01-03T10:15:00.123Z``) or typed
  Parquet (``output_format``).
* ``truth_path/views``: one row per simulated view (``VIEW_TRUTH_SCHEMA``), including views and
  outcomes after the window.
* ``truth_path/item_relations``: the true directed item -> item graph (``ITEM_RELATION_SCHEMA``).
* ``truth_path/category_relations``: the true directed category -> category graph.
* ``truth_path/items``: the catalog: category, popularity share and quality of each item.
* ``catalog_path`` (when given): the product catalogue a shop would publish, the input of the
  ``products`` stage: CSV ``product_id,category_id,brand`` (``brand`` is the item's product
  line, present when ``lines > 0``; popularity and quality stay hidden, as in a real shop).

Everything is a pure function of the seed: the catalog is built on the driver from
``default_rng([seed, 0])``; each user is simulated inside ``mapInPandas`` from
``default_rng([seed, 1, user])``, so the output does not depend on partitioning, on which executor
ran which user, or on a lost cached partition being recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
from recbatch.events.schema import EVENT_COLUMNS, EVENT_TYPES
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
"""One row per simulated view (``view_id = user_id << 20 | n``, n its rank in the user's
simulation): its signals, its true purchase probability, its true delay law (view -> purchase
delay in hours is log-normal: ``ln(delay) ~ Normal(delay_log_mu, delay_log_sigma)``), whether it
converts and when (possibly after the observed window), and for a follow-up view the item whose
purchase led to it (null otherwise)."""

ITEM_RELATION_SCHEMA = StructType(
    [
        StructField("src_item", LongType(), False),
        StructField("dst_item", LongType(), False),
        StructField("src_category", LongType(), False),
        StructField("dst_category", LongType(), False),
    ]
)
"""True directed complements: buyers of ``src_item`` may later buy ``dst_item`` (never reverse)."""

CATEGORY_RELATION_SCHEMA = StructType(
    [
        StructField("src_category", LongType(), False),
        StructField("dst_category", LongType(), False),
    ]
)

ITEM_SCHEMA = StructType(
    [
        StructField("item_id", LongType(), False),
        StructField("category_id", LongType(), False),
        StructField("popularity", DoubleType(), False),
        StructField("quality", DoubleType(), False),
        StructField("line", LongType(), False),
    ]
)
"""The catalog: ``popularity`` is the item's share of anchor views (sums to 1), ``quality`` its
additive term in the purchase logit, ``line`` its latent product line (0 without lines)."""

_MAX_VIEWS_PER_USER_BITS = 20  # view_id = user_id << 20 | sequence number
_NO_TS = np.iinfo(np.int64).min  # a missing time in the int64 milliseconds columns (NaT)
_FAV_GAP_S = 600.0  # mean view -> favourite gap (exponential)
_CART_GAP_S = 900.0  # mean view -> add-to-cart gap (exponential)
_BROWSE_GAP_S = 120.0  # mean gap between two views of a session (exponential)
_SESSION_SHAPE = 1.0  # Gamma shape of a user's activity: smaller is more heavy-tailed
_MAX_FOLLOW_UP_DEPTH = 2  # phone -> case -> screen guard
_TRUTH_COLUMNS = [f.name for f in VIEW_TRUTH_SCHEMA.fields]


@dataclass(frozen=True)
class Catalog:
    """The world shared by every user: built on the driver, shipped to the executors in the
    ``mapInPandas`` closure (which PySpark broadcasts once it is over 1 MB)."""

    item_category: np.ndarray  # [n_items] category of each item
    item_quality: np.ndarray  # [n_items] logit offset of buying the item
    popularity: np.ndarray  # [n_items] share of anchor views, sums to 1
    popularity_cdf: np.ndarray  # [n_items] cumulative popularity over all items, ends at 1
    items_by_category: np.ndarray  # item ids grouped by category
    category_offsets: np.ndarray  # [n_categories + 1] slice of each category in items_by_category
    category_cdf: np.ndarray  # popularity cdf within each category's slice, each ends at 1
    category_targets: list[list[int]]  # complement categories of each category
    complements: np.ndarray  # [n_items, complements_per_item] true targets, -1 padded
    category_delay_shift: np.ndarray  # [n_categories] added to the log of the purchase delay
    item_line: np.ndarray  # [n_items] latent product line (all 0 without lines)
    line_groups: _Groups  # items by line, popularity cdf within each line
    category_line_groups: _Groups  # items by (category, line): category * lines + line


@dataclass(frozen=True)
class _Groups:
    """Items grouped by a key, with each group's popularity cdf: a group's slice of ``items``
    is ``offsets[g]:offsets[g + 1]`` and ``cdf`` over that slice ends at 1."""

    items: np.ndarray
    offsets: np.ndarray
    cdf: np.ndarray

    @staticmethod
    def of(key: np.ndarray, n_groups: int, popularity: np.ndarray) -> _Groups:
        items = np.argsort(key, kind="stable").astype(np.int64)
        counts = np.bincount(key, minlength=n_groups)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        cdf = np.empty(len(key))
        for g in np.flatnonzero(counts):
            lo, hi = offsets[g], offsets[g + 1]
            cdf[lo:hi] = _cdf(popularity[items[lo:hi]])
        return _Groups(items, offsets, cdf)

    def draw(self, rng: np.random.Generator, group: int) -> int | None:
        """One item of the group by popularity, or None when the group is empty."""
        lo, hi = self.offsets[group], self.offsets[group + 1]
        if lo == hi:
            return None
        pos = int(np.searchsorted(self.cdf[lo:hi], rng.random(), side="right"))
        return int(self.items[lo + min(pos, hi - lo - 1)])


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights) / weights.sum()
    cdf[-1] = 1.0  # no uniform draw in [0, 1) may fall past the end
    return cdf


def _weighted_distinct(
    rng: np.random.Generator, pool: np.ndarray, cdf: np.ndarray, n_rows: int, k: int
) -> np.ndarray:
    """``n_rows`` draws of ``k`` distinct items of ``pool`` by weight (``k <= len(pool)``)."""
    out = np.empty((n_rows, k), dtype=np.int64)
    candidates = pool[np.searchsorted(cdf, rng.random((n_rows, 4 * k)), side="right")]
    for row in range(n_rows):
        distinct = list(dict.fromkeys(candidates[row].tolist()))[:k]
        if len(distinct) < k:  # the pool is dominated by a few items: draw exactly
            weights = np.diff(cdf, prepend=0.0)
            distinct = rng.choice(pool, size=k, replace=False, p=weights / weights.sum())
        out[row] = distinct
    return out


def build_catalog(cfg: GeneratorSettings) -> Catalog:
    """Items, categories, popularity and the asymmetric complement relations, from the seed."""
    rng = np.random.default_rng([cfg.seed, 0])
    n_items, n_cat = cfg.n_items, cfg.n_categories
    category_weight = 1.0 / np.arange(1, n_cat + 1) ** 0.7
    item_category = rng.choice(n_cat, size=n_items, p=category_weight / category_weight.sum())
    ranks = rng.permutation(n_items) + 1
    popularity = 1.0 / ranks.astype(np.float64) ** cfg.popularity_exponent
    popularity /= popularity.sum()
    item_quality = rng.normal(0.0, 1.0, size=n_items) * cfg.item_quality_sd

    items_by_category = np.argsort(item_category, kind="stable").astype(np.int64)
    counts = np.bincount(item_category, minlength=n_cat)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    category_cdf = np.empty(n_items)
    for c in np.flatnonzero(counts):
        lo, hi = offsets[c], offsets[c + 1]
        category_cdf[lo:hi] = _cdf(popularity[items_by_category[lo:hi]])

    order = rng.permutation(n_cat)  # position of each category in the complement order
    by_position = np.argsort(order)
    category_targets: list[list[int]] = []
    for c in range(n_cat):
        later = by_position[order[c] + 1 :]
        later = later[counts[later] > 0]
        k = min(cfg.complements_per_category, len(later)) if counts[c] else 0
        category_targets.append(sorted(rng.choice(later, size=k, replace=False).tolist()))

    # Its own random stream, so that a world without lines keeps every other draw of the seed.
    line_rng = np.random.default_rng([cfg.seed, 4])
    n_lines = max(cfg.lines, 1)
    item_line = line_rng.integers(n_lines, size=n_items) if cfg.lines else np.zeros(n_items, int)

    complements = np.full((n_items, cfg.complements_per_item), -1, dtype=np.int64)
    for c, targets in enumerate(category_targets):
        if not targets:
            continue
        pool = np.concatenate([items_by_category[offsets[t] : offsets[t + 1]] for t in targets])
        sources = items_by_category[offsets[c] : offsets[c + 1]]
        if cfg.lines:
            _line_complements(line_rng, cfg, complements, sources, pool, item_line, popularity)
            continue
        k = min(cfg.complements_per_item, len(pool))
        complements[sources, :k] = _weighted_distinct(
            rng, pool, _cdf(np.sqrt(popularity[pool])), len(sources), k
        )

    # Its own random stream, so that a zero spread leaves every other draw of the seed unchanged.
    delay_rng = np.random.default_rng([cfg.seed, 2])
    category_delay_shift = delay_rng.normal(0.0, 1.0, size=n_cat) * cfg.category_delay_spread

    return Catalog(
        item_category=item_category.astype(np.int64),
        item_quality=item_quality,
        popularity=popularity,
        popularity_cdf=_cdf(popularity),
        items_by_category=items_by_category,
        category_offsets=offsets,
        category_cdf=category_cdf,
        category_targets=category_targets,
        complements=complements,
        category_delay_shift=category_delay_shift,
        item_line=item_line.astype(np.int64),
        line_groups=_Groups.of(item_line, n_lines, popularity),
        category_line_groups=_Groups.of(
            item_category * n_lines + item_line, n_cat * n_lines, popularity
        ),
    )


def _line_complements(
    rng: np.random.Generator,
    cfg: GeneratorSettings,
    complements: np.ndarray,
    sources: np.ndarray,
    pool: np.ndarray,
    item_line: np.ndarray,
    popularity: np.ndarray,
) -> None:
    """The complements of one category's items, line by line: each (category, line) draws one
    target pool of twice ``complements_per_item`` items of its line in the complement
    categories (by tempered popularity; the whole pool when the line has too few there), and
    each of its items draws its complements from that shared pool."""
    k = cfg.complements_per_item
    for line in np.unique(item_line[sources]):
        members = sources[item_line[sources] == line]
        candidates = pool[item_line[pool] == line]
        if len(candidates) < k:
            candidates = pool
        shared = _weighted_distinct(
            rng, candidates, _cdf(np.sqrt(popularity[candidates])), 1, min(2 * k, len(candidates))
        )[0]
        n = min(k, len(shared))
        complements[members, :n] = _weighted_distinct(
            rng, shared, _cdf(np.ones(len(shared))), len(members), n
        )


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _ms(seconds: float) -> int:
    return round(seconds * 1000.0)


def window_bounds(cfg: GeneratorSettings) -> tuple[datetime, datetime]:
    """The observed window ``[start, start + days)`` in UTC (a naive ``start`` is taken as UTC)."""
    start = cfg.start if cfg.start.tzinfo else cfg.start.replace(tzinfo=UTC)
    start = start.astimezone(UTC)
    return start, start + timedelta(days=cfg.days)


class _UserSimulator:
    """Simulates one user's views and their outcomes; all randomness from
    ``default_rng([seed, 1, user])``.

    A row is ``(item, view_ms, fav_ms, cart_ms, p_buy, will_buy, buy_ms, follow_up_of)`` with
    times in integer milliseconds since the epoch, ``_NO_TS`` / -1 for a missing time / source.
    """

    def __init__(self, cfg: GeneratorSettings, catalog: Catalog) -> None:
        self.cfg = cfg
        self.cat = catalog
        start, _ = window_bounds(cfg)
        self.start_s = start.timestamp()
        self.span_s = cfg.days * 86_400.0
        self.delay_mu = math.log(cfg.delay_median_hours)
        self.quality = catalog.item_quality.tolist()
        self.item_category = catalog.item_category.tolist()
        self.delay_shift = catalog.category_delay_shift.tolist()
        self.propensity = 0.0
        self.line = 0
        self.n_lines = max(cfg.lines, 1)

    def _draw_item(self, rng: np.random.Generator, category: int | None) -> int:
        cat = self.cat
        if self.cfg.line_loyalty > 0 and rng.random() < self.cfg.line_loyalty:
            loyal = (
                cat.line_groups.draw(rng, self.line)
                if category is None
                else cat.category_line_groups.draw(rng, category * self.n_lines + self.line)
            )
            if loyal is not None:
                return loyal
        if category is None:
            return int(np.searchsorted(cat.popularity_cdf, rng.random(), side="right"))
        lo, hi = cat.category_offsets[category], cat.category_offsets[category + 1]
        pos = int(np.searchsorted(cat.category_cdf[lo:hi], rng.random(), side="right"))
        return int(cat.items_by_category[lo + pos])

    def _view(
        self,
        rng: np.random.Generator,
        rows: list[tuple],
        item: int,
        ts: float,
        follow_up_of: int,
        depth: int,
    ) -> None:
        cfg = self.cfg
        intent = math.exp(self.propensity / 2.0)
        fav = rng.random() < cfg.fav_rate * intent
        cart = rng.random() < cfg.cart_rate * (2.0 if fav else 1.0) * intent
        logit = cfg.buy_base_logit + self.quality[item] + self.propensity
        if cart:
            logit += cfg.buy_cart_logit
        if fav:
            logit += cfg.buy_fav_logit
        if follow_up_of >= 0:
            logit += cfg.follow_up_buy_logit
        p_buy = _sigmoid(logit)
        will_buy = bool(rng.random() < p_buy)
        fav_ts = ts + rng.exponential(_FAV_GAP_S) if fav else None
        cart_ts = ts + rng.exponential(_CART_GAP_S) if cart else None
        buy_ts = None
        if will_buy:
            mu = self.delay_mu + self.delay_shift[self.item_category[item]]
            buy_ts = ts + 3600.0 * math.exp(rng.normal(mu, cfg.delay_sigma))
            if cart_ts is not None and cart_ts > buy_ts:
                # A quick buyer carts quickly: the add-to-cart moves before the purchase, so the
                # purchase delay keeps exactly its log-normal law.
                cart_ts = ts + (buy_ts - ts) * rng.random()
        rows.append(
            (
                item,
                _ms(ts),
                _NO_TS if fav_ts is None else _ms(fav_ts),
                _NO_TS if cart_ts is None else _ms(cart_ts),
                p_buy,
                will_buy,
                _NO_TS if buy_ts is None else _ms(buy_ts),
                follow_up_of,
            )
        )
        if (
            buy_ts is not None
            and depth < _MAX_FOLLOW_UP_DEPTH
            and rng.random() < cfg.follow_up_rate
        ):
            targets = self.cat.complements[item]
            targets = targets[targets >= 0]
            if len(targets):
                gap_s = rng.exponential(cfg.follow_up_mean_days * 86_400.0)
                target = int(targets[rng.integers(len(targets))])
                self._view(rng, rows, target, buy_ts + gap_s, item, depth + 1)

    def _n_sessions(self, rng: np.random.Generator) -> int:
        mean = self.cfg.sessions_per_user
        if mean < 1.0:
            return int(rng.random() < mean)
        if mean == 1.0:
            return 1
        return 1 + int(rng.poisson(rng.gamma(_SESSION_SHAPE, (mean - 1.0) / _SESSION_SHAPE)))

    def simulate(self, user: int) -> list[tuple]:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 1, user])
        # Its own stream: a zero spread leaves every other draw of the user unchanged.
        self.propensity = (
            float(np.random.default_rng([cfg.seed, 3, user]).normal(0.0, cfg.user_propensity_sd))
            if cfg.user_propensity_sd > 0
            else 0.0
        )
        if self.cfg.line_loyalty > 0:  # its own stream too
            self.line = int(np.random.default_rng([cfg.seed, 5, user]).integers(self.n_lines))
        rows: list[tuple] = []
        for _ in range(self._n_sessions(rng)):
            ts = self.start_s + rng.random() * self.span_s
            anchor = self._draw_item(rng, None)
            category = self.item_category[anchor]
            n_views = 1 + int(rng.poisson(cfg.views_per_session - 1.0))
            for k in range(n_views):
                item = anchor if k == 0 else self._draw_item(rng, category)
                self._view(rng, rows, item, ts, -1, 0)
                ts += rng.exponential(_BROWSE_GAP_S)
        return rows[: 1 << _MAX_VIEWS_PER_USER_BITS]


def _timestamps(ms: np.ndarray) -> pd.Series:
    """int64 epoch milliseconds (``_NO_TS`` for none) -> UTC timestamps (NaT for none)."""
    return pd.Series(ms.view("datetime64[ms]").astype("datetime64[us]")).dt.tz_localize("UTC")


def _simulate_partition(
    cfg: GeneratorSettings, catalog: Catalog
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    mu, sigma = math.log(cfg.delay_median_hours), cfg.delay_sigma

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        sim = _UserSimulator(cfg, catalog)  # on the executor: the closure ships only the catalog
        for batch in batches:
            view_ids: list[int] = []
            user_ids: list[int] = []
            rows: list[tuple] = []
            for user in batch["id"].tolist():
                user_rows = sim.simulate(user)
                view_ids.extend(
                    (user << _MAX_VIEWS_PER_USER_BITS) | n for n in range(len(user_rows))
                )
                user_ids.extend([user] * len(user_rows))
                rows.extend(user_rows)
            if not rows:
                continue
            item, view_ms, fav_ms, cart_ms, p_buy, will_buy, buy_ms, follow = (
                np.array(column) for column in zip(*rows, strict=True)
            )
            item = item.astype(np.int64)
            follow = follow.astype(np.int64)
            yield pd.DataFrame(
                {
                    "view_id": np.array(view_ids, dtype=np.int64),
                    "user_id": np.array(user_ids, dtype=np.int64),
                    "item_id": item,
                    "category_id": catalog.item_category[item],
                    "view_ts": _timestamps(view_ms.astype(np.int64)),
                    "fav_ts": _timestamps(fav_ms.astype(np.int64)),
                    "cart_ts": _timestamps(cart_ms.astype(np.int64)),
                    "buy_probability": p_buy.astype(np.float64),
                    "delay_log_mu": mu + catalog.category_delay_shift[catalog.item_category[item]],
                    "delay_log_sigma": np.full(len(rows), sigma),
                    "will_buy": will_buy.astype(bool),
                    "buy_ts": _timestamps(buy_ms.astype(np.int64)),
                    "follow_up_of": pd.arrays.IntegerArray(follow, follow < 0),
                },
                columns=_TRUTH_COLUMNS,
            )

    return run


def simulate_views(spark: SparkSession, cfg: GeneratorSettings, catalog: Catalog) -> DataFrame:
    """The ground-truth views of all users (one row per view), computed in parallel by user."""
    users = spark.range(0, cfg.n_users, numPartitions=cfg.partitions)
    return users.mapInPandas(_simulate_partition(cfg, catalog), VIEW_TRUTH_SCHEMA)


def observed_events(views: DataFrame, cfg: GeneratorSettings) -> DataFrame:
    """The raw event log a tracking system would have recorded by the end of the window.

    Columns ``EVENT_COLUMNS``; each partition sorted by user, time and funnel order.
    """
    _, end = window_bounds(cfg)
    kinds = dict(zip(EVENT_TYPES, ("view_ts", "fav_ts", "cart_ts", "buy_ts"), strict=True))
    stacked = views.select(
        "user_id",
        "item_id",
        "category_id",
        F.explode(
            F.array(
                *[
                    F.struct(
                        F.lit(kind).alias("event_type"),
                        F.col(column).alias("event_ts"),
                        F.lit(rank).alias("rank"),
                    )
                    for rank, (kind, column) in enumerate(kinds.items())
                ]
            )
        ).alias("e"),
    ).select("user_id", "item_id", "category_id", "e.event_type", "e.event_ts", "e.rank")
    return (
        stacked.where(F.col("event_ts").isNotNull() & (F.col("event_ts") < F.lit(end)))
        .sortWithinPartitions("user_id", "event_ts", "rank")
        .select(*EVENT_COLUMNS)
    )


def relation_truth(spark: SparkSession, catalog: Catalog) -> tuple[DataFrame, DataFrame]:
    """The true item -> item and category -> category relations (small tables)."""
    src, rank = np.nonzero(catalog.complements >= 0)
    dst = catalog.complements[src, rank]
    items = pd.DataFrame(
        {
            "src_item": src.astype(np.int64),
            "dst_item": dst,
            "src_category": catalog.item_category[src],
            "dst_category": catalog.item_category[dst],
        }
    )
    cats = pd.DataFrame(
        [(c, t) for c, targets in enumerate(catalog.category_targets) for t in targets],
        columns=["src_category", "dst_category"],
        dtype=np.int64,
    )
    return (
        spark.createDataFrame(items, ITEM_RELATION_SCHEMA),
        spark.createDataFrame(cats, CATEGORY_RELATION_SCHEMA),
    )


def catalog_truth(spark: SparkSession, catalog: Catalog) -> DataFrame:
    """The items with their category, popularity share, quality and line (a small table)."""
    items = pd.DataFrame(
        {
            "item_id": np.arange(len(catalog.item_category), dtype=np.int64),
            "category_id": catalog.item_category,
            "popularity": catalog.popularity,
            "quality": catalog.item_quality,
            "line": catalog.item_line,
        }
    )
    return spark.createDataFrame(items, ITEM_SCHEMA)


def write_events(events: DataFrame, path: str, fmt: str) -> None:
    """Write the raw log as the canonical CSV (ISO-8601 times, header) or typed Parquet.

    CSV times are rendered in the session time zone, which ``build_session`` sets to UTC
    (``2026-01-03T10:15:00.123Z``).
    """
    if fmt == "csv":
        out = events.withColumn(
            "event_ts", F.date_format("event_ts", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX")
        )
        out.write.mode("overwrite").option("header", True).csv(path)
    else:
        events.write.mode("overwrite").parquet(path)


def published_catalogue(catalog: Catalog, *, brands: bool) -> pd.DataFrame:
    """What a shop publishes of its catalog: id, category and brand (the product line)."""
    table = pd.DataFrame(
        {
            "product_id": np.arange(len(catalog.item_category), dtype=np.int64),
            "category_id": catalog.item_category,
        }
    )
    if brands:
        table["brand"] = [f"brand-{line:03d}" for line in catalog.item_line]
    return table


def generate(
    spark: SparkSession,
    cfg: GeneratorSettings,
    events_path: str,
    truth_path: str,
    catalog_path: str | None = None,
) -> dict[str, int]:
    """Generate the raw event log and its ground truth; return the log's row count per event type.

    The views are simulated once (cached while both outputs are written); an evicted partition
    is recomputed identically since every user's simulation is a pure function of the seed.
    """
    catalog = build_catalog(cfg)
    truth = truth_path.rstrip("/")
    item_rel, cat_rel = relation_truth(spark, catalog)
    item_rel.coalesce(1).write.mode("overwrite").parquet(f"{truth}/item_relations")
    cat_rel.coalesce(1).write.mode("overwrite").parquet(f"{truth}/category_relations")
    catalog_truth(spark, catalog).coalesce(1).write.mode("overwrite").parquet(f"{truth}/items")
    if catalog_path:
        published = spark.createDataFrame(published_catalogue(catalog, brands=cfg.lines > 0))
        published.coalesce(1).write.mode("overwrite").option("header", True).csv(catalog_path)

    views = simulate_views(spark, cfg, catalog).persist()
    try:
        views.write.mode("overwrite").parquet(f"{truth}/views")
        events = observed_events(views, cfg)
        write_events(events, events_path, cfg.output_format)
        counts = dict.fromkeys(EVENT_TYPES, 0)
        for row in events.groupBy("event_type").count().collect():
            counts[row["event_type"]] = row["count"]
    finally:
        views.unpersist()
    log.info(
        "generated %d events %s -> %s (ground truth -> %s)",
        sum(counts.values()),
        counts,
        events_path,
        truth,
    )
    return counts
