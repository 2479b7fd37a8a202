"""Recommendations as plain transforms: history as of a date, candidates, ranker features, lists
and their metrics.

Everything here reads only events dated before ``as_of`` (midnight UTC). Candidate sources:

* ``repeat``   the user's own purchases that are bought again on a cycle (repurchase items);
* ``viewed``   items the user viewed or carted recently and has not bought since;
* ``cooc``     items bought in the same basket (order, else session, else user-day) as the user's
               recent purchases, weighted by a half-life, cosine-normalised;
* ``category`` best sellers of the user's favourite categories;
* ``trending`` items whose last week sells well above their last four weeks;
* ``popular``  the global best sellers (so every list can be filled).

A candidate keeps the score of each source that proposed it; the reason shown is that of the
first source in the order above, which is the one a person finds most specific.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from datetime import date
from typing import TypeVar, cast

import numpy as np
import polars as pl

from nightowl.schemas.config import RecommendSettings
from nightowl.tasks.behaviour.features import events_before, midnight

SOURCES = ("repeat", "viewed", "cooc", "category", "trending", "popular")
#: Ranker inputs, in the order the model sees them.
FEATURES = (
    *(f"{s}_score" for s in SOURCES),
    *(f"{s}_rank" for s in SOURCES),
    "n_sources",
    "item_sales_7d",
    "item_sales_28d",
    "item_popularity",
    "item_trend",
    "item_buyers_90d",
    "item_repurchase_share",
    "item_cycle_days",
    "item_age_days",
    "user_purchase_days",
    "user_items",
    "user_recency_days",
    "ui_purchase_days",
    "ui_units",
    "ui_recency_days",
    "ui_due_ratio",
    "ui_viewed_recency_days",
    "category_affinity",
    "category_recency_days",
    "price_vs_user",
    "price_vs_competitor",
)
BUY_EVENTS = ("purchase",)
BROWSE_EVENTS = ("view", "add_to_cart")


@dataclass(frozen=True)
class History:
    """What is known before ``as_of``: purchases, recent browsing, the catalogue, competitors."""

    as_of: date
    purchases: pl.DataFrame  # user_id, item_id, basket, day, days_ago, units, unit_price
    browsing: pl.DataFrame  # user_id, item_id, event_type, days_ago (views and carts)
    catalogue: pl.DataFrame  # item_id, title, category, price, active, created_at
    competitor: pl.DataFrame | None  # item_id, competitor_median


def decay(days_ago: pl.Expr, half_life: float) -> pl.Expr:
    """The weight of something ``days_ago`` old: 1 today, ½ after ``half_life`` days."""
    return (days_ago * (-math.log(2) / half_life)).exp()


def _known_before(events: pl.LazyFrame, as_of: date, cfg: RecommendSettings) -> pl.LazyFrame:
    return events_before(
        events.filter(pl.col("user_id").is_not_null() & pl.col("item_id").is_not_null()), as_of
    ).filter(pl.col("days_ago") < cfg.history_days)


def browsing_before(
    events: pl.LazyFrame, as_of: date, cfg: RecommendSettings, whose: pl.Expr | None = None
) -> pl.LazyFrame:
    """Views and carts of the last ``browsing_days`` (or ``viewed_days`` if longer) before
    ``as_of``: user_id, item_id, event_type, days_ago; only of the users ``whose`` selects."""
    # Views of the whole active window tell a user's categories; the recent ones are candidates.
    browsing = _known_before(events, as_of, cfg).filter(
        pl.col("event_type").is_in(BROWSE_EVENTS)
        & (pl.col("days_ago") < max(cfg.viewed_days, cfg.browsing_days))
        & (pl.lit(True) if whose is None else whose)
    )
    return browsing.select("user_id", "item_id", "event_type", "days_ago")


def history_as_of(
    events: pl.LazyFrame,
    catalogue: pl.LazyFrame | None,
    market_prices: pl.LazyFrame | None,
    as_of: date,
    cfg: RecommendSettings,
    browsing_of: pl.Expr | None = None,
) -> History:
    """Purchases of the last ``history_days``, views and carts (``browsing_before``) and the
    catalogue and competitor prices, all from before ``as_of``.

    Item tables need every purchase, but a user's views matter to that user's list only:
    ``browsing_of`` (a predicate on ``user_id``) keeps the views of the users being ranked,
    the largest part of the events, out of memory for the others."""
    before = _known_before(events, as_of, cfg)
    purchases = before.filter(pl.col("event_type").is_in(BUY_EVENTS)).select(
        "user_id",
        "item_id",
        pl.coalesce(
            pl.col("order_id"),
            pl.col("session_id"),
            pl.col("user_id") + pl.lit("|") + pl.col("event_time").dt.date().cast(pl.String),
        ).alias("basket"),
        pl.col("event_time").dt.date().alias("day"),
        "days_ago",
        pl.col("quantity").fill_null(1).alias("units"),
        pl.col("price").alias("unit_price"),
    )
    browsing = browsing_before(events, as_of, cfg, browsing_of)
    if catalogue is None:
        items = purchases.select("item_id").unique()
        cat = items.with_columns(
            pl.lit(None, pl.String).alias("title"),
            pl.lit(None, pl.String).alias("category"),
            pl.lit(None, pl.Float64).alias("price"),
            pl.lit(None, pl.Boolean).alias("active"),
            pl.lit(None, pl.Datetime("us", "UTC")).alias("created_at"),
        )
    else:
        cat = catalogue.select(
            "item_id", "title", "category", "price", "active", "created_at"
        ).unique("item_id", keep="last", maintain_order=True)
    competitor = None
    if market_prices is not None:
        latest = market_prices.filter(pl.col("date") < as_of)
        competitor = (
            latest.filter(pl.col("date") == pl.col("date").max().over("item_id"))
            .group_by("item_id")
            .agg(pl.col("price").median().alias("competitor_median"))
        )
    frames = pl.collect_all(
        [purchases, browsing, cat, *([competitor] if competitor is not None else [])]
    )
    return History(
        as_of=as_of,
        purchases=frames[0],
        browsing=frames[1],
        catalogue=frames[2],
        competitor=frames[3] if competitor is not None else None,
    )


# ---- integer keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyCodes:
    """The night's dictionaries of user and item ids. Code ``i`` is the ``i``-th id in sorted
    order, so ordering by code is ordering by id: joins, group-bys and sorts run on integers and
    every tie-break (by user, then item id) falls exactly as it does on the strings."""

    users: pl.Series  # sorted, unique user ids
    items: pl.Series  # sorted, unique item ids

    def coded(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with ``user_id`` and ``item_id`` as UInt32 codes. Rows naming an id outside
        the dictionaries are dropped: they are of users nobody ranks or items nobody may offer."""
        known = [c for c in ("user_id", "item_id") if c in frame.columns]
        dicts = {"user_id": self.users, "item_id": self.items}
        coded = frame.with_columns(
            pl.col(c).cast(pl.Enum(dicts[c]), strict=False).to_physical().cast(pl.UInt32)
            for c in known
        )
        return coded.drop_nulls(known) if coded.height else coded

    def decoded(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with the codes of ``user_id`` and of its items back to the ids."""
        decoded = decoded_items(frame, self.items)
        if "user_id" not in frame.columns:
            return decoded
        return decoded.with_columns(self.users.gather(frame["user_id"]).alias("user_id"))


#: Columns that hold item ids.
ITEM_KEYS = ("item_id", "other_id", "anchor")


def decoded_items(frame: pl.DataFrame, items: pl.Series) -> pl.DataFrame:
    """``frame`` with its item codes (``ITEM_KEYS``) back to the ids of ``items``."""
    return frame.with_columns(items.gather(frame[c]).alias(c) for c in ITEM_KEYS if c in frame)


def key_codes(history: History, users: pl.DataFrame) -> KeyCodes:
    """Dictionaries for ranking ``users`` from ``history``: every user ranked or buying, every
    item in the catalogue or bought (nothing else can be offered)."""
    user_ids = pl.concat([users["user_id"], history.purchases["user_id"]])
    item_ids = pl.concat([history.catalogue["item_id"], history.purchases["item_id"]])
    return KeyCodes(
        users=user_ids.unique().sort().alias("user_id"),
        items=item_ids.unique().sort().alias("item_id"),
    )


Tables = TypeVar("Tables", "UserTables", "ItemTables")


def decoded_tables(tables: Tables, codes: KeyCodes) -> Tables:
    """User or item tables with their codes back to ids."""
    return replace(
        tables, **{f.name: codes.decoded(getattr(tables, f.name)) for f in fields(tables)}
    )


def coded_history(history: History, codes: KeyCodes) -> History:
    """``history`` with user and item ids as ``codes`` (browsing of unknown ids dropped)."""
    competitor = None if history.competitor is None else codes.coded(history.competitor)
    # Baskets are only grouped and joined on, never ordered: any integer per basket will do.
    basket = pl.col("basket").cast(pl.Categorical).to_physical().alias("basket")
    return replace(
        history,
        purchases=codes.coded(history.purchases).with_columns(basket),
        browsing=codes.coded(history.browsing),
        catalogue=codes.coded(history.catalogue),
        competitor=competitor,
    )


# ---- item-level tables (once per night) -----------------------------------------------------


def fixed_order_sum(values: pl.Expr) -> pl.Expr:
    """The sum of ``values`` added smallest first: the same bits whatever order a join or a
    parallel group-by delivered the rows in (float addition is not associative)."""
    return values.sort().sum()


def item_stats(history: History, cfg: RecommendSettings) -> pl.DataFrame:
    """Per catalogue or sold item: sales of the last 7 and 28 days, decayed popularity, trend,
    buyers, the share of buyers who came back for it, its repurchase cycle and age (0 sales and
    null cycle for an item nobody bought)."""
    p = history.purchases
    per_user = p.group_by("item_id", "user_id").agg(
        pl.col("day").n_unique().alias("days"),
        pl.col("day").unique().sort().diff().dt.total_days().median().alias("gap"),
    )
    buyers = per_user.group_by("item_id").agg(
        pl.len().alias("buyers"),
        (pl.col("days") >= 2).mean().alias("item_repurchase_share"),
        pl.col("gap").median().alias("item_cycle_days"),
    )
    sales = p.group_by("item_id").agg(
        (pl.col("days_ago") < 7).sum().alias("item_sales_7d"),
        (pl.col("days_ago") < 28).sum().alias("item_sales_28d"),
        fixed_order_sum(decay(pl.col("days_ago"), cfg.half_life_days)).alias("item_popularity"),
        pl.col("user_id").filter(pl.col("days_ago") < 90).n_unique().alias("item_buyers_90d"),
        pl.col("days_ago").max().alias("first_sold_days_ago"),
        pl.col("unit_price").median().alias("paid_price"),
    )
    cat = history.catalogue
    age_from_catalogue = (pl.lit(midnight(history.as_of)) - pl.col("created_at")).dt.total_seconds(
        fractional=True
    ) / 86400.0
    unsold = {"item_sales_7d": 0, "item_sales_28d": 0, "item_popularity": 0.0, "item_buyers_90d": 0}
    stats = (
        cat.join(
            sales.join(buyers, on="item_id", how="left"), on="item_id", how="full", coalesce=True
        )
        .with_columns(pl.col(name).fill_null(value) for name, value in unsold.items())
        .with_columns(
            item_trend=(pl.col("item_sales_7d") + 1) / (pl.col("item_sales_28d") / 4 + 1),
            item_age_days=pl.coalesce(age_from_catalogue, pl.col("first_sold_days_ago")),
            item_price=pl.coalesce(pl.col("price"), pl.col("paid_price")),
        )
    )
    return stats.select(
        "item_id",
        "title",
        "category",
        "active",
        "item_sales_7d",
        "item_sales_28d",
        "item_popularity",
        "item_trend",
        "item_buyers_90d",
        "item_repurchase_share",
        "item_cycle_days",
        "item_age_days",
        "item_price",
    ).sort("item_id")


def eligible_items(history: History) -> pl.DataFrame:
    """Items that may be recommended: in the catalogue (when there is one) and not inactive."""
    cat = history.catalogue
    return cat.filter(pl.col("active").fill_null(True)).select("item_id")


def neighbours(history: History, cfg: RecommendSettings) -> pl.DataFrame:
    """item_id → other_id with a cosine score of time-decayed shared baskets: the ``neighbours``
    strongest per item. Baskets of one item, or more than ``max_basket_items``, are left out."""
    baskets = (
        history.purchases.group_by("basket", "item_id")
        .agg(pl.col("days_ago").min())
        .with_columns(w=decay(pl.col("days_ago"), cfg.half_life_days))
        .with_columns(size=pl.len().over("basket"))
        .filter((pl.col("size") >= 2) & (pl.col("size") <= cfg.max_basket_items))
        .select("basket", "item_id", "w")
    )
    totals = baskets.group_by("item_id").agg(fixed_order_sum(pl.col("w")).alias("total"))
    pairs = (
        baskets.join(baskets.select("basket", pl.col("item_id").alias("other_id")), on="basket")
        .filter(pl.col("item_id") != pl.col("other_id"))
        .group_by("item_id", "other_id")
        .agg(fixed_order_sum(pl.col("w")).alias("shared"))
        .join(totals, on="item_id")
        .join(totals.rename({"item_id": "other_id", "total": "other_total"}), on="other_id")
        .with_columns(sim=pl.col("shared") / (pl.col("total") * pl.col("other_total")).sqrt())
    )
    return (
        pairs.sort(["item_id", "sim", "other_id"], descending=[False, True, False])
        .group_by("item_id", maintain_order=True)
        .head(cfg.neighbours)
        .select("item_id", "other_id", "sim")
    )


def global_lists(stats: pl.DataFrame, eligible: pl.DataFrame, cfg: RecommendSettings):
    """The trending and popular candidate lists shared by every user: item_id, score."""
    ok = stats.join(eligible, on="item_id", how="semi").filter(pl.col("item_popularity") > 0)
    popular = ok.sort(["item_popularity", "item_id"], descending=[True, False]).head(
        cfg.popular_items
    )
    trending = (
        ok.filter(pl.col("item_sales_7d") >= 3)
        .with_columns(score=pl.col("item_trend") * pl.col("item_sales_7d").log1p())
        .sort(["score", "item_id"], descending=[True, False])
        .head(cfg.trending_items)
    )
    top = popular["item_popularity"].max() or 1.0
    return (
        trending.select("item_id", "score"),
        popular.select("item_id", (pl.col("item_popularity") / top).alias("score")),
    )


def category_bestsellers(stats: pl.DataFrame, eligible: pl.DataFrame, n: int) -> pl.DataFrame:
    """category, item_id, share: each category's ``n`` best sellers and their share of its sales."""
    ok = stats.join(eligible, on="item_id", how="semi").filter(
        pl.col("category").is_not_null() & (pl.col("item_popularity") > 0)
    )
    return (
        ok.with_columns(
            share=pl.col("item_popularity")
            / fixed_order_sum(pl.col("item_popularity")).over("category")
        )
        .sort(["category", "share", "item_id"], descending=[False, True, False])
        .group_by("category", maintain_order=True)
        .head(n)
        .select("category", "item_id", "share")
    )


@dataclass(frozen=True)
class ItemTables:
    """The item-level tables every bucket of users shares."""

    stats: pl.DataFrame
    eligible: pl.DataFrame
    neighbours: pl.DataFrame
    bestsellers: pl.DataFrame
    trending: pl.DataFrame
    popular: pl.DataFrame


def item_tables(history: History, cfg: RecommendSettings) -> ItemTables:
    """Item statistics, eligible items, neighbours and the shared lists, as of the history."""
    stats = item_stats(history, cfg)
    eligible = eligible_items(history)
    trending, popular = global_lists(stats, eligible, cfg)
    return ItemTables(
        stats=stats,
        eligible=eligible,
        neighbours=neighbours(history, cfg),
        bestsellers=category_bestsellers(stats, eligible, cfg.category_items),
        trending=trending,
        popular=popular,
    )


# ---- per-user tables (per bucket) -----------------------------------------------------------


@dataclass(frozen=True)
class UserTables:
    """What one bucket of users did before ``as_of``."""

    users: pl.DataFrame  # user_id
    owned: pl.DataFrame  # user_id, item_id, ui_purchase_days, ui_units, ui_recency_days, ui_gap
    browsed: pl.DataFrame  # user_id, item_id, ui_viewed_recency_days, viewed_score
    prefs: pl.DataFrame  # user_id, category, category_affinity, category_recency_days
    profile: pl.DataFrame  # user_id, user_purchase_days, user_items, user_recency_days, ...


def user_tables(history: History, users: pl.DataFrame) -> UserTables:
    """Purchases per (user, item), browsing, category preferences and a profile per user."""
    users = users.select("user_id").unique().sort("user_id")
    bought = history.purchases.join(users, on="user_id", how="semi")
    owned = owned_items(bought)
    cart = pl.when(pl.col("event_type") == "add_to_cart").then(3.0).otherwise(1.0)
    browsed = (
        history.browsing.join(users, on="user_id", how="semi")
        .group_by("user_id", "item_id")
        .agg(
            pl.col("days_ago").min().alias("ui_viewed_recency_days"),
            fixed_order_sum(decay(pl.col("days_ago"), 7.0) * cart).alias("viewed_score"),
        )
    )
    profile = bought.group_by("user_id").agg(
        pl.col("day").n_unique().alias("user_purchase_days"),
        pl.col("item_id").n_unique().alias("user_items"),
        pl.col("days_ago").min().alias("user_recency_days"),
        pl.col("unit_price").filter(pl.col("unit_price") > 0).median().alias("user_median_price"),
    )
    return UserTables(
        users=users,
        owned=owned,
        browsed=browsed,
        prefs=category_preferences(history, users),
        profile=profile,
    )


def owned_items(bought: pl.DataFrame) -> pl.DataFrame:
    """Per user and item of ``bought`` (purchases): purchase days, units, days since the last
    purchase and the median gap between purchase days."""
    return bought.group_by("user_id", "item_id").agg(
        pl.col("day").n_unique().alias("ui_purchase_days"),
        pl.col("units").sum().cast(pl.Float64).alias("ui_units"),
        pl.col("days_ago").min().alias("ui_recency_days"),
        pl.col("day").unique().sort().diff().dt.total_days().median().alias("ui_gap"),
    )


def rule_user_tables(history: History, users: pl.DataFrame) -> UserTables:
    """What the popularity and repeat-buy rules read of ``users`` (who they are, what they
    own), without the browsing, preferences and profile only the ranker reads."""
    users = users.select("user_id").unique().sort("user_id")
    owned = owned_items(history.purchases.join(users, on="user_id", how="semi"))
    return UserTables(users, owned, owned.clear(), users.clear(), users.clear())


def category_preferences(history: History, users: pl.DataFrame) -> pl.DataFrame:
    """user_id, category, affinity (decayed share of the user's item events), days since."""
    cats = history.catalogue.select("item_id", "category").filter(pl.col("category").is_not_null())
    events = pl.concat(
        [
            history.purchases.select("user_id", "item_id", "days_ago", pl.lit(3.0).alias("w")),
            history.browsing.select("user_id", "item_id", "days_ago", pl.lit(1.0).alias("w")),
        ]
    ).join(users, on="user_id", how="semi")
    per = (
        events.join(cats, on="item_id")
        .group_by("user_id", "category")
        .agg(
            fixed_order_sum(pl.col("w") * decay(pl.col("days_ago"), 30.0)).alias("weight"),
            pl.col("days_ago").min().alias("category_recency_days"),
        )
    )
    return per.with_columns(
        category_affinity=pl.col("weight") / fixed_order_sum(pl.col("weight")).over("user_id")
    ).drop("weight")


def _ranked(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """One source's candidates with ``<source>_score`` and the within-user ``<source>_rank``."""
    ranked = frame.sort(["user_id", "score", "item_id"], descending=[False, True, False])
    return ranked.with_columns(
        (pl.int_range(pl.len()).over("user_id") + 1).cast(pl.Int32).alias(f"{source}_rank")
    ).rename({"score": f"{source}_score"})


def repurchasable(owned: pl.DataFrame, stats: pl.DataFrame, min_share: float) -> pl.Series:
    """Per row of ``owned``: whether the user bought it on two days or its buyers come back."""
    share = owned.join(
        stats.select("item_id", "item_repurchase_share"),
        on="item_id",
        how="left",
        maintain_order="left",
    )["item_repurchase_share"]
    return (owned["ui_purchase_days"] >= 2) | (share.fill_null(0) >= min_share)


def source_candidates(
    ut: UserTables, items: ItemTables, cfg: RecommendSettings
) -> dict[str, pl.DataFrame]:
    """Per source, what it may offer each user, ranked: user_id, item_id, ``<source>_score``,
    ``<source>_rank`` (and the co-occurrence ``anchor``). Ranks count only what may be offered:
    eligible items, less those bought once (when ``exclude_bought``), so a source's top
    ``max_candidates`` are all real candidates."""
    again = repurchasable(ut.owned, items.stats, cfg.repurchase_min_share)
    repeat = ut.owned.filter(again).select("user_id", "item_id", _frequency_then_recency())
    viewed = (
        ut.browsed.filter(pl.col("ui_viewed_recency_days") < cfg.viewed_days)
        .join(ut.owned, on=["user_id", "item_id"], how="anti")
        .select("user_id", "item_id", pl.col("viewed_score").alias("score"))
    )
    cooc = cooccurring(ut.owned, items.neighbours, cfg.half_life_days)
    favourite = (
        ut.prefs.sort(["user_id", "category_affinity", "category"], descending=[False, True, False])
        .group_by("user_id", maintain_order=True)
        .head(cfg.favourite_categories)
    )
    category = favourite.join(items.bestsellers, on="category").select(
        "user_id", "item_id", (pl.col("category_affinity") * pl.col("share")).alias("score")
    )
    shared = [
        ut.users.join(lst, how="cross").select("user_id", "item_id", "score")
        for lst in (items.trending, items.popular)
    ]
    once = ut.owned.filter(~again).select("user_id", "item_id")
    ranked = {}
    for source, frame in zip(SOURCES, [repeat, viewed, cooc, category, *shared], strict=True):
        offered = frame.join(items.eligible, on="item_id", how="semi")
        if cfg.exclude_bought:
            offered = offered.join(once, on=["user_id", "item_id"], how="anti")
        ranked[source] = _ranked(offered, source)
    return ranked


def candidates(ut: UserTables, items: ItemTables, cfg: RecommendSettings) -> pl.DataFrame:
    """Per user, up to ``max_candidates`` eligible items with each source's score and rank, the
    anchor of a co-occurrence and the reason's ``source``; bought items are left out unless
    they are repurchase items (when ``exclude_bought``)."""
    ranked = {s: f.with_columns(pair_key(f)) for s, f in source_candidates(ut, items, cfg).items()}
    # One long frame of (user, item, source, rank) is grouped once; each source's score and
    # rank join back only for the pairs that survive the cap.
    proposals = pl.concat(
        [
            frame.select(
                "pair", "user_id", "item_id", pl.col(f"{s}_rank").alias("rank"), src=pl.lit(k)
            )
            for k, (s, frame) in enumerate(ranked.items())
        ]
    )
    per_pair = proposals.group_by("pair").agg(
        pl.col("user_id", "item_id").first(),
        pl.col("rank").min().alias("best_rank"),
        pl.len().cast(pl.Int32).alias("n_sources"),
        pl.col("src").min().alias("first"),
    )
    # The cap keeps each source's best first, round robin: no single source crowds out the rest.
    # (An item ranked below the cap in some source loses to that source's top ``max_candidates``,
    # so it can be dropped before sorting.)
    capped = (
        per_pair.filter(pl.col("best_rank") <= cfg.max_candidates)
        .sort(
            ["user_id", "best_rank", "n_sources", "item_id"], descending=[False, False, True, False]
        )
        .filter(pl.int_range(pl.len()).over("user_id") < cfg.max_candidates)
        .sort("user_id", "item_id")
    )
    wide = capped.select("pair", "user_id", "item_id")
    for frame in ranked.values():
        theirs = frame.drop("user_id", "item_id")
        wide = wide.join(theirs, on="pair", how="left", maintain_order="left")
    source = capped["first"].replace_strict(dict(enumerate(SOURCES)), return_dtype=pl.String)
    return wide.drop("pair").with_columns(capped["n_sources"], source.alias("source"))


def pair_key(frame: pl.DataFrame) -> pl.Expr:
    """One join key for (user_id, item_id), ``pair``: both codes in a UInt64 when the keys are
    coded (one integer joins and groups far faster than two columns), else a struct."""
    if frame.schema["user_id"] == pl.UInt32 and frame.schema["item_id"] == pl.UInt32:
        return (pl.col("user_id").cast(pl.UInt64) * 2**32 + pl.col("item_id")).alias("pair")
    return pl.struct("user_id", "item_id").alias("pair")


def _frequency_then_recency() -> pl.Expr:
    """A score that orders a user's items by purchase days, then by how recent the last was."""
    return (pl.col("ui_purchase_days") + 1 / (2 + pl.col("ui_recency_days"))).alias("score")


def cooccurring(owned: pl.DataFrame, neighbours: pl.DataFrame, half_life: float) -> pl.DataFrame:
    """user_id, item_id, score, anchor: items co-bought with the user's 20 latest items, scored
    by similarity times the anchor's recency weight; the anchor is the strongest contributor."""
    recent = (
        owned.sort(["user_id", "ui_recency_days", "item_id"])
        .group_by("user_id", maintain_order=True)
        .head(20)
        .select(
            "user_id",
            pl.col("item_id").alias("anchor"),
            decay(pl.col("ui_recency_days"), half_life).alias("w"),
        )
    )
    return (
        recent.join(neighbours, left_on="anchor", right_on="item_id")
        .with_columns(contribution=pl.col("w") * pl.col("sim"))
        .sort(
            ["user_id", "other_id", "contribution", "anchor"],
            descending=[False, False, True, False],
        )
        .group_by("user_id", "other_id", maintain_order=True)
        .agg(pl.col("contribution").sum().alias("score"), pl.col("anchor").first())
        .rename({"other_id": "item_id"})
    )


def ranker_features(
    cands: pl.DataFrame, ut: UserTables, items: ItemTables, history: History
) -> pl.DataFrame:
    """The candidates with every ranker input of ``FEATURES`` (null where unknown), plus the
    item's title and category for the reason."""
    stats = items.stats
    frame = (
        cands.join(stats, on="item_id", how="left")
        .join(ut.owned, on=["user_id", "item_id"], how="left")
        .join(ut.browsed.drop("viewed_score"), on=["user_id", "item_id"], how="left")
        .join(ut.profile, on="user_id", how="left")
        .join(ut.prefs, on=["user_id", "category"], how="left")
    )
    if history.competitor is not None:
        frame = frame.join(history.competitor, on="item_id", how="left")
    else:
        frame = frame.with_columns(competitor_median=pl.lit(None, pl.Float64))
    cycle = pl.coalesce(pl.col("ui_gap"), pl.col("item_cycle_days"))
    frame = frame.with_columns(
        ui_due_ratio=pl.when(cycle > 0).then(pl.col("ui_recency_days") / cycle),
        price_vs_user=pl.when(pl.col("user_median_price") > 0).then(
            pl.col("item_price") / pl.col("user_median_price")
        ),
        price_vs_competitor=pl.when(pl.col("competitor_median") > 0).then(
            pl.col("item_price") / pl.col("competitor_median")
        ),
    )
    return frame.select("user_id", "item_id", "source", "anchor", "title", "category", *FEATURES)


# ---- labels, lists and their quality ----------------------------------------------------------


def purchased_in_window(events: pl.LazyFrame, as_of: date, horizon_days: int) -> pl.DataFrame:
    """user_id, item_id: what each user bought in the ``horizon_days`` from ``as_of`` on."""
    start = midnight(as_of)
    end = midnight(date.fromordinal(as_of.toordinal() + horizon_days))
    return (
        events.filter(
            (pl.col("event_type").is_in(BUY_EVENTS))
            & pl.col("user_id").is_not_null()
            & pl.col("item_id").is_not_null()
            & (pl.col("event_time") >= start)
            & (pl.col("event_time") < end)
        )
        .select("user_id", "item_id")
        .unique()
        .collect()
        .sort("user_id", "item_id")
    )


def active_users(events: pl.LazyFrame, as_of: date, days: int | None) -> pl.DataFrame:
    """user_id of everyone with any event in the ``days`` before ``as_of`` (None: any event in
    ``events`` before it)."""
    recent = events_before(events.filter(pl.col("user_id").is_not_null()), as_of)
    if days is not None:
        recent = recent.filter(pl.col("days_ago") < days)
    active = recent.select("user_id").unique()
    return active.collect(engine="streaming").sort("user_id")  # not every event's id at once


def previous_buyers(events: pl.LazyFrame, as_of: date) -> pl.DataFrame:
    """user_id of everyone with a purchase in ``events`` before ``as_of``."""
    bought = events.filter(pl.col("event_type").is_in(BUY_EVENTS))
    return active_users(bought, as_of, None)


def top_lists(scored: pl.DataFrame, k: int) -> pl.DataFrame:
    """The ``k`` best items per user by ``score`` (ties: item id), with ``rank`` 1..k."""
    return (
        scored.sort(["user_id", "score", "item_id"], descending=[False, True, False])
        .group_by("user_id", maintain_order=True)
        .head(k)
        .with_columns((pl.int_range(pl.len()).over("user_id") + 1).cast(pl.Int32).alias("rank"))
    )


#: Users padded at once: every user is paired with every padding item (with ``exclude``).
PAD_CHUNK_USERS = 10_000


def padded_lists(
    primary: pl.DataFrame,
    users: pl.DataFrame,
    popular: pl.DataFrame,
    k: int,
    exclude: pl.DataFrame | None = None,
    chunk_users: int = PAD_CHUNK_USERS,
) -> pl.DataFrame:
    """Top-``k`` lists for ``users``: ``primary`` (user_id, item_id, score) first, then popular
    items not already in them; pairs in ``exclude`` never appear. Columns user_id, item_id, rank.

    A user's list reads only that user's rows, so users go ``chunk_users`` at a time (in id
    order: the lists come out as they would all at once) to bound the user x item pairs."""
    users = users.select("user_id").unique().sort("user_id")
    if users.height <= chunk_users:
        return _padded(primary, users, popular, k, exclude)
    chunk_of = users.with_columns(chunk=pl.int_range(pl.len()) // chunk_users)

    def chunks(frame: pl.DataFrame) -> dict:
        keyed = frame.join(chunk_of, on="user_id")
        return {
            key: part.drop("chunk")
            for (key,), part in keyed.partition_by("chunk", as_dict=True).items()
        }

    mine = chunks(primary)
    theirs = chunks(exclude) if exclude is not None else {}
    parts = [
        _padded(mine.get(c, primary.clear()), part.drop("chunk"), popular, k,
                None if exclude is None else theirs.get(c, exclude.clear()))
        for (c,), part in chunk_of.partition_by("chunk", as_dict=True, maintain_order=True).items()
    ]  # fmt: skip
    return pl.concat(parts)


def _padded(
    primary: pl.DataFrame,
    users: pl.DataFrame,
    popular: pl.DataFrame,
    k: int,
    exclude: pl.DataFrame | None,
) -> pl.DataFrame:
    if exclude is None:
        # A user with p < k own items loses at most p of the fill to them, so the 2k most
        # popular always fill the list: no need to pair every user with every padding item.
        popular = popular.sort(["score", "item_id"], descending=[True, False]).head(2 * k)
    fill = users.join(popular.select("item_id", pl.col("score").alias("fill")), how="cross")
    both = pl.concat(
        [
            primary.join(users, on="user_id", how="semi").select(
                "user_id", "item_id", pl.lit(1).alias("tier"), pl.col("score").cast(pl.Float64)
            ),
            fill.select(
                "user_id", "item_id", pl.lit(2).alias("tier"), pl.col("fill").alias("score")
            ),
        ]
    )
    if exclude is not None:
        both = both.join(exclude, on=["user_id", "item_id"], how="anti")
    return (
        both.sort(["user_id", "item_id", "tier"])
        .unique(["user_id", "item_id"], keep="first", maintain_order=True)
        .sort(["user_id", "tier", "score", "item_id"], descending=[False, False, True, False])
        .group_by("user_id", maintain_order=True)
        .head(k)
        .with_columns((pl.int_range(pl.len()).over("user_id") + 1).cast(pl.Int32).alias("rank"))
        .select("user_id", "item_id", "rank")
    )


def ranking_metrics(
    lists: pl.DataFrame, truth: pl.DataFrame, k: int, catalogue_items: int
) -> dict[str, float | None]:
    """Recall, NDCG and MAP at ``k`` over the users in ``truth`` (user_id, item_id), catalogue
    coverage of their lists and the share of them with a full list of ``k``."""
    truth = truth.select("user_id", "item_id").unique()
    users = truth.select("user_id").unique()
    n_users = users.height
    if n_users == 0:
        return {
            "users": 0,
            "recall": None,
            "ndcg": None,
            "map": None,
            "coverage": None,
            "full_lists": None,
        }
    mine = lists.join(users, on="user_id", how="semi").filter(pl.col("rank") <= k)
    sizes = truth.group_by("user_id").agg(pl.len().alias("relevant"))
    hits = mine.join(truth, on=["user_id", "item_id"], how="semi").sort("user_id", "rank")
    hits = hits.with_columns(
        (pl.int_range(pl.len()).over("user_id") + 1).alias("hit_no"),
        (1.0 / (pl.col("rank") + 1).cast(pl.Float64).log(2)).alias("gain"),
    ).with_columns(precision=pl.col("hit_no") / pl.col("rank"))
    per_user = hits.group_by("user_id").agg(
        pl.len().alias("hits"), pl.col("gain").sum(), pl.col("precision").sum()
    )
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    scored = (
        sizes.join(per_user, on="user_id", how="left")
        .fill_null(0)
        .with_columns(cap=pl.min_horizontal(pl.col("relevant"), pl.lit(k)))
    )
    idcg = scored["cap"].map_elements(lambda c: float(ideal[c - 1]), return_dtype=pl.Float64)
    # Series.mean() is typed as any Python scalar or None; these are means of Float64 columns
    # with a row per user, and there is at least one user (above): floats.
    recall = cast(float, (scored["hits"] / scored["relevant"]).mean())
    ndcg = cast(float, (scored["gain"] / idcg).mean())
    ap = cast(float, (scored["precision"] / scored["cap"]).mean())
    full = mine.group_by("user_id").len().filter(pl.col("len") >= k).height
    return {
        "users": n_users,
        "recall": float(recall),
        "ndcg": float(ndcg),
        "map": float(ap),
        "coverage": mine["item_id"].n_unique() / catalogue_items if catalogue_items else None,
        "full_lists": full / n_users,
    }


#: The baselines a ranker must beat, in the order they are reported.
BASELINES = ("popularity", "cooccurrence", "repeat_buy")
PROTOCOLS = ("all", "new")
#: The candidate source each baseline's own items stand for, when it serves the lists.
RULE_SOURCES = {"popularity": "popular", "cooccurrence": "cooc", "repeat_buy": "repeat"}


def popular_padding(items: ItemTables, k: int) -> pl.DataFrame:
    """The most popular eligible items (item_id, score): what fills every list to ``k``."""
    return (
        items.stats.join(items.eligible, on="item_id", how="semi")
        .filter(pl.col("item_popularity") > 0)
        .sort(["item_popularity", "item_id"], descending=[True, False])
        .head(k + 500)
        .select("item_id", pl.col("item_popularity").alias("score"))
    )


def rule_primary(rule: str, ut: UserTables, items: ItemTables, half_life: float) -> pl.DataFrame:
    """A simple rule's own items per user (user_id, item_id, score, anchor), before padding:
    nothing (popularity: the padding is the list), items co-bought with the user's latest ones,
    or the user's own items by purchase days then recency (repeat-buy)."""
    if rule == "popularity":
        ids = {"user_id": ut.users["user_id"].dtype, "item_id": items.eligible["item_id"].dtype}
        return pl.DataFrame(schema={**ids, "score": pl.Float64, "anchor": ids["item_id"]})
    if rule == "cooccurrence":
        return cooccurring(ut.owned, items.neighbours, half_life).join(
            items.eligible, on="item_id", how="semi"
        )
    if rule == "repeat_buy":
        owned = ut.owned.join(items.eligible, on="item_id", how="semi")
        return owned.select(
            "user_id", "item_id", _frequency_then_recency(), pl.lit(None).alias("anchor")
        ).with_columns(pl.col("anchor").cast(owned["item_id"].dtype))
    raise ValueError(f"unknown recommendation rule {rule!r}; expected one of {BASELINES}")


def rule_lists(
    rule: str, ut: UserTables, items: ItemTables, k: int, half_life: float
) -> pl.DataFrame:
    """Top-``k`` lists of ``ut``'s users by a simple rule, padded with popular items, as the
    rule is judged: user_id, item_id, rank, score, source, anchor."""
    primary = rule_primary(rule, ut, items, half_life).with_columns(
        pl.col("score").cast(pl.Float64)
    )
    padding = popular_padding(items, k)
    lists = padded_lists(primary.select("user_id", "item_id", "score"), ut.users, padding, k)
    own = primary.with_columns(source=pl.lit(RULE_SOURCES[rule]))
    return (
        lists.join(own, on=["user_id", "item_id"], how="left")
        .join(padding.rename({"score": "popularity"}), on="item_id", how="left")
        .select(
            "user_id",
            "item_id",
            "rank",
            pl.coalesce("score", "popularity").alias("score"),
            pl.col("source").fill_null("popular"),
            "anchor",
        )
    )


def evaluation(
    scored: pl.DataFrame,
    ut: UserTables,
    items: ItemTables,
    truth: pl.DataFrame,
    k: int,
    half_life: float,
) -> dict[str, dict[str, float | None]]:
    """Metrics at ``k`` of the ranker's lists (``scored``: user_id, item_id, score) and of the
    three baselines, for users of ``ut`` who bought in the window, under both protocols:
    ``all`` (repurchases are hits) and ``new`` (items bought before are removed from lists and
    truth). Keys ``<protocol>_<metric>``; every list is padded with popular items."""
    truth = truth.join(ut.users, on="user_id", how="semi")
    users = truth.select("user_id").unique().sort("user_id")
    padding = popular_padding(items, k)
    primaries = {
        "model": scored,
        **{rule: rule_primary(rule, ut, items, half_life) for rule in BASELINES},
    }
    bought = ut.owned.select("user_id", "item_id")
    new_truth = truth.join(bought, on=["user_id", "item_id"], how="anti")
    catalogue = items.eligible.height
    out: dict[str, dict[str, float | None]] = {}
    for name, primary in primaries.items():
        primary = primary.select("user_id", "item_id", pl.col("score").cast(pl.Float64))
        metrics: dict[str, float | None] = {}
        for protocol in PROTOCOLS:
            exclude, wanted = (None, truth) if protocol == "all" else (bought, new_truth)
            lists = padded_lists(primary, users, padding, k, exclude)
            for key, value in ranking_metrics(lists, wanted, k, catalogue).items():
                metrics[f"{protocol}_{key}"] = value
        out[name] = metrics
    return out
