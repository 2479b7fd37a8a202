"""User features as of a date, and the labels a propensity model learns from.

Every feature of ``user_features(..., as_of)`` is computed from events dated strictly before
``as_of`` (midnight UTC), so appending later events changes nothing
(tests/tasks/behaviour/test_features.py proves it), and likewise from feedback created before it.
Features are finite numbers or null, never infinite: a ratio over nothing is null.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl

from nightowl.errors import NotEnoughHistory
from nightowl.tasks.common.fanout import Fanout
from nightowl.tasks.models import btyd

#: Event types whose counts, recency and trends become features (others still count as activity).
EVENT_TYPES = ("view", "add_to_cart", "remove_from_cart", "purchase", "return")
WINDOWS = (7, 28, 90)
LONGEST = max(WINDOWS)
#: Types whose short-vs-long rate difference is a feature.
TRENDED = ("view", "add_to_cart", "purchase")


def midnight(day: date) -> datetime:
    """``day`` at 00:00 UTC: the first instant that is no longer before ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def events_before(events: pl.LazyFrame, as_of: date) -> pl.LazyFrame:
    """The events dated strictly before ``as_of``, with ``days_ago`` (fractional days)."""
    cut = midnight(as_of)
    return events.filter(pl.col("event_time") < cut).with_columns(
        days_ago=(pl.lit(cut) - pl.col("event_time")).dt.total_seconds(fractional=True) / 86400.0
    )


#: Float sums are added as whole multiples of 2**-32: integer addition gives the same total in
#: whatever order Polars' threads meet the rows, so the same events give byte-identical features.
FIXED_POINT = 2.0**32


def _fixed_point(values: pl.Expr) -> pl.Expr:
    """``values`` as whole multiples of 2**-32 (Int64), for sums that ``_from_fixed`` reads back."""
    return (values * FIXED_POINT).round().cast(pl.Int64)


def _from_fixed(total: pl.Expr) -> pl.Expr:
    return total / FIXED_POINT


def exact_sum(values: pl.Expr) -> pl.Expr:
    """The sum of ``values`` to within 2**-32 each, the same whatever order rows are added in."""
    return _from_fixed(_fixed_point(values).sum())


def exact_mean(values: pl.Expr) -> pl.Expr:
    """The mean of the non-null ``values``, as :func:`exact_sum` adds them (null if none)."""
    return _ratio(exact_sum(values), values.count())


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """``num / den`` where ``den`` is positive, else null (never inf or NaN)."""
    return pl.when(den > 0).then(num / den).otherwise(None)


def _is(kind: str, within: int | None = None) -> pl.Expr:
    cond = pl.col("event_type") == kind
    return cond if within is None else cond & (pl.col("days_ago") < within)


def behaviour(history: pl.LazyFrame) -> pl.LazyFrame:
    """Per user: tenure, recency and event counts; per event type, its recency and its counts
    in each window; spend (ever, 28 and 90 days) and units bought in the last 90 days.

    Aggregated per (user, event type) first and spread into columns after: a few aggregations
    over 20M events and then many over the 0.9M pairs take 2.8 s, one filtered aggregation per
    column over the events took 6.1 s. Conditions are ``when``, not ``filter``: in a group-by
    Polars gathers each filtered group, at about 4x the cost."""
    days_ago = pl.col("days_ago")
    spend = _fixed_point(pl.col("quantity").fill_null(1) * pl.col("price"))
    per_type = history.group_by("user_id", "event_type").agg(
        days_ago.max().alias("tenure"),
        days_ago.min().alias("recency"),
        pl.len().alias("n"),
        *((days_ago < w).sum().alias(f"n_{w}d") for w in WINDOWS),
        spend.sum().alias("spend_total"),
        pl.when(days_ago < 28).then(spend).sum().alias("spend_28d"),
        pl.when(days_ago < LONGEST).then(spend).sum().alias("spend_90d"),
        pl.when(days_ago < LONGEST).then(pl.col("quantity").fill_null(1)).sum().alias("units_90d"),
    )
    # Spread by conditional aggregations over the pairs, not by joining a filtered copy per
    # type: Polars pushes such a filter down to the scan and computes days_ago there in another
    # plan, a last bit different (features made a bucket at a time then differ from whole ones).
    of_kind = {kind: pl.col("event_type") == kind for kind in EVENT_TYPES}
    return per_type.group_by("user_id").agg(
        pl.col("tenure").max().alias("tenure_days"),
        pl.col("recency").min().alias("recency_days"),
        pl.col("n").sum().alias("events_total"),
        pl.col(f"n_{LONGEST}d").sum().alias("events_90d"),
        *(
            expr
            for kind, rows in of_kind.items()
            for expr in (
                pl.when(rows).then("recency").min().alias(f"{kind}_recency_days"),
                *(pl.when(rows).then(f"n_{w}d").sum().alias(f"{kind}_n_{w}d") for w in WINDOWS),
            )
        ),
        *(
            _from_fixed(pl.when(of_kind["purchase"]).then(c).sum()).alias(c)
            for c in ("spend_total", "spend_28d", "spend_90d")
        ),
        pl.when(of_kind["purchase"]).then("units_90d").sum().alias("units_90d"),
        # When the customer first bought: with recency and buying days, the purchase cycle.
        pl.when(of_kind["purchase"]).then("tenure").max().alias("purchase_tenure_days"),
    )


def _spans(history: pl.LazyFrame, key: str, windows: tuple[int, ...], name: str) -> pl.LazyFrame:
    """Per user, distinct non-null ``key`` values with an event inside each window (and all)."""
    spans = (
        history.filter(pl.col(key).is_not_null())
        .group_by("user_id", key)
        .agg(pl.col("days_ago").min().alias("nearest"))
    )
    return spans.group_by("user_id").agg(
        pl.len().alias(f"{name}_total"),
        *((pl.col("nearest") < w).sum().alias(f"{name}_{w}d") for w in windows),
    )


def distinct_activity(history: pl.LazyFrame) -> pl.LazyFrame:
    """Per user, sessions (7/28/90 days) and orders (90 days, ever) with an event in the window.

    Counting distinct keys through one group-by per key is much cheaper than a distinct count
    per window inside the per-user aggregation.
    """
    sessions = _spans(history, "session_id", WINDOWS, "sessions").drop("sessions_total")
    bought = history.filter(pl.col("event_type") == "purchase")
    orders = _spans(bought, "order_id", (LONGEST,), "orders")
    return sessions.join(orders, on="user_id", how="full", coalesce=True)


def _derived() -> list[pl.Expr]:
    c = pl.col
    derived = [
        _ratio(c("spend_90d"), c("orders_90d")).alias("order_value_90d"),
        _ratio(c("units_90d"), c("orders_90d")).alias("basket_size_90d"),
        _ratio(c("return_n_90d"), c("purchase_n_90d")).alias("return_rate_90d"),
        _ratio(c("purchase_n_90d"), c("view_n_90d")).alias("view_to_purchase_90d"),
        _ratio(c("purchase_n_28d"), c("add_to_cart_n_28d")).alias("cart_to_purchase_28d"),
        _ratio(c("events_90d"), c("sessions_90d")).alias("events_per_session_90d"),
    ]
    # A customer's own purchase cycle: the mean gap between buying days, how late the next
    # purchase is against it, how regular the gaps are, and whether spending speeds up.
    cycle = _ratio(
        c("purchase_tenure_days") - c("purchase_recency_days"), c("buying_days_total") - 1
    )
    derived += [
        cycle.alias("purchase_cycle_days"),
        _ratio(c("purchase_recency_days"), cycle).alias("recency_vs_cycle"),
        _ratio(c("purchase_gap_std_days"), cycle).alias("purchase_gap_cv"),
        (c("spend_28d") / 28.0 - c("spend_90d") / 90.0).alias("spend_trend_28v90"),
    ]
    derived += [
        (c(f"{k}_n_7d") / 7.0 - c(f"{k}_n_28d") / 28.0).alias(f"{k}_trend_7v28") for k in TRENDED
    ]
    derived += [
        (c(f"{k}_n_28d") / 28.0 - c(f"{k}_n_90d") / 90.0).alias(f"{k}_trend_28v90") for k in TRENDED
    ]
    return derived


#: Half-lives (days) of the exponentially decayed counts of active and buying days.
HALF_LIVES = (7, 28)


def decayed_activity(history: pl.LazyFrame) -> pl.LazyFrame:
    """Per user, active and buying days: all, in the last 28 days, and weighted by
    ``0.5 ** (days ago / half-life)``."""
    days = (
        history.group_by("user_id", "dt")
        .agg(
            pl.col("days_ago").min().alias("nearest"),
            (pl.col("event_type") == "purchase").any().alias("bought"),
        )
        .with_columns(age=pl.col("nearest").floor())
    )
    aggs = []
    for half_life in HALF_LIVES:
        weight = 0.5 ** (pl.col("age") / half_life)
        aggs += [
            exact_sum(weight).alias(f"active_days_hl{half_life}"),
            exact_sum(pl.when(pl.col("bought")).then(weight)).alias(f"buying_days_hl{half_life}"),
        ]
    return days.group_by("user_id").agg(
        pl.len().alias("active_days_total"),
        (pl.col("nearest") < 28).sum().alias("active_days_28d"),
        pl.col("bought").sum().alias("buying_days_total"),
        pl.col("age").filter(pl.col("bought")).sort().diff().std().alias("purchase_gap_std_days"),
        *aggs,
    )


def category_affinity(history: pl.LazyFrame, items: pl.LazyFrame) -> pl.LazyFrame:
    """Per user, how spread their last 90 days of item events are over categories."""
    categories = items.select("item_id", "category").unique("item_id")
    per_category = (
        history.filter((pl.col("days_ago") < LONGEST) & pl.col("item_id").is_not_null())
        .join(categories, on="item_id", how="inner")
        .group_by("user_id", "category")
        .agg(pl.len().alias("n"))
    )
    return per_category.group_by("user_id").agg(
        pl.len().alias("categories_90d"),
        (pl.col("n").max() / pl.col("n").sum()).alias("top_category_share_90d"),
    )


def _paid(history: pl.LazyFrame) -> pl.LazyFrame:
    return history.filter(_is("purchase", LONGEST) & (pl.col("price") > 0))


def usual_prices(history: pl.LazyFrame) -> pl.LazyFrame:
    """Per item, the median price everyone paid in the last 90 days: a list price known then."""
    return _paid(history).group_by("item_id").agg(pl.col("price").median().alias("usual_price"))


def price_sensitivity(
    history: pl.LazyFrame,
    market_prices: pl.LazyFrame | None,
    usual: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Per user, what they paid in the last 90 days against the item's usual and market price
    (``usual``: ``usual_prices`` of everyone's history, when ``history`` is some users')."""
    usual = usual_prices(history) if usual is None else usual
    bought = _paid(history).join(usual, on="item_id", how="left")
    aggs = [exact_mean(_ratio(pl.col("price"), pl.col("usual_price"))).alias("paid_vs_usual_90d")]
    if market_prices is not None:
        market = market_prices.group_by("date", "item_id").agg(
            pl.col("price").median().alias("market_price")
        )
        bought = bought.join(
            market, left_on=["dt", "item_id"], right_on=["date", "item_id"], how="left"
        )
        vs_market = _ratio(pl.col("price"), pl.col("market_price"))
        aggs += [
            exact_mean(vs_market).alias("paid_vs_market_90d"),
            (vs_market < 1.0).mean().alias("bought_below_market_90d"),
        ]
    return bought.group_by("user_id").agg(aggs)


#: Per-user feedback features; counts are 0 for a user who gave none, the mean rating null.
FEEDBACK_FEATURES = {
    "feedback_90d": pl.UInt32,
    "negative_feedback_90d": pl.UInt32,
    "mean_rating_90d": pl.Float64,
    "support_tickets_30d": pl.UInt32,
}


def feedback_activity(feedback: pl.LazyFrame, as_of: date) -> pl.LazyFrame:
    """Per user, the feedback they gave in the 90 days before ``as_of``: how much, how much of it
    negative (1-2 stars), the mean rating, and support tickets in the last 30 days."""
    cut = midnight(as_of)
    recent = feedback.filter(
        pl.col("user_id").is_not_null()
        & (pl.col("created_at") < cut)
        & (pl.col("created_at") >= cut - timedelta(days=LONGEST))
    )
    return recent.group_by("user_id").agg(
        pl.len().alias("feedback_90d"),
        (pl.col("rating") <= 2).sum().alias("negative_feedback_90d"),
        pl.col("rating").mean().alias("mean_rating_90d"),
        ((pl.col("channel") == "support") & (pl.col("created_at") >= cut - timedelta(days=30)))
        .sum()
        .alias("support_tickets_30d"),
    )


def known_history(events: pl.LazyFrame, as_of: date) -> pl.LazyFrame:
    """The events of known users (no guests) before ``as_of``: what features are made of."""
    known = events.filter((pl.col("dt") < as_of) & pl.col("user_id").is_not_null())
    return events_before(known, as_of)


def user_features(
    events: pl.LazyFrame,
    as_of: date,
    items: pl.LazyFrame | None = None,
    market_prices: pl.LazyFrame | None = None,
    feedback: pl.LazyFrame | None = None,
    usual: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """One row per user with any event before ``as_of``: behaviour, affinity, price and (from
    their ratings and support tickets) feedback features (``usual``: the items' usual prices,
    from everyone's ``known_history``, when ``events`` are some users')."""
    history = known_history(events, as_of)
    counted = [f"sessions_{w}d" for w in WINDOWS] + ["orders_total", "orders_90d"]
    frame = (
        behaviour(history)
        .join(distinct_activity(history), on="user_id", how="left")
        .with_columns(pl.col(counted).fill_null(0))
        .join(decayed_activity(history), on="user_id", how="left")
        .with_columns(_derived())
    )
    if items is not None:
        frame = frame.join(category_affinity(history, items), on="user_id", how="left")
    else:
        frame = frame.with_columns(
            categories_90d=pl.lit(None, pl.UInt32), top_category_share_90d=pl.lit(None, pl.Float64)
        )
    sensitivity = price_sensitivity(history, market_prices, usual)
    frame = frame.join(sensitivity, on="user_id", how="left")
    if market_prices is None:
        frame = frame.with_columns(
            paid_vs_market_90d=pl.lit(None, pl.Float64),
            bought_below_market_90d=pl.lit(None, pl.Float64),
        )
    if feedback is not None:
        counts = [n for n, t in FEEDBACK_FEATURES.items() if t == pl.UInt32]
        frame = frame.join(feedback_activity(feedback, as_of), on="user_id", how="left")
        frame = frame.with_columns(pl.col(counts).fill_null(0).cast(pl.UInt32))
    else:  # no feedback at all: nobody gave any (0), not unknown, as in later snapshots
        frame = frame.with_columns(
            (pl.lit(0, t) if t == pl.UInt32 else pl.lit(None, t)).alias(n)
            for n, t in FEEDBACK_FEATURES.items()
        )
    return frame.with_columns(as_of=pl.lit(as_of)).sort("user_id")


def user_bucket(user_id: pl.Expr, buckets: int, seed: int = 0) -> pl.Expr:
    """A user's bucket: a stable hash of the id modulo ``buckets`` (same on every machine); a
    split within a split takes another ``seed``, else its buckets follow the first one's."""
    return user_id.hash(seed=seed) % buckets


def bucketed_user_features(
    events: pl.LazyFrame,
    as_of: date,
    items: pl.LazyFrame | None = None,
    market_prices: pl.LazyFrame | None = None,
    feedback: pl.LazyFrame | None = None,
    *,
    buckets: int = 1,
    fanout: Fanout | None = None,
) -> pl.DataFrame:
    """``user_features``, the same rows, computed for one hash bucket of users at a time, so that
    only one bucket's history is in memory (every feature but the items' usual prices, computed
    first, is a user's own aggregate); the buckets run where ``fanout`` puts them."""
    if buckets <= 1:
        return user_features(events, as_of, items, market_prices, feedback).collect()
    usual = usual_prices(known_history(events, as_of)).collect().lazy()  # the one shared figure
    unit = FeatureBucket(events, as_of, items, market_prices, feedback, usual, buckets)
    parts = list((fanout or Fanout("serial")).map(unit, range(buckets)))
    return pl.concat(parts).sort("user_id")


@dataclass(frozen=True)
class FeatureBucket:
    """The features of one hash bucket of users (called with the bucket's number). Picklable:
    its inputs are scans of the warehouse's files, so a Dask worker reads its bucket itself."""

    events: pl.LazyFrame
    as_of: date
    items: pl.LazyFrame | None
    market_prices: pl.LazyFrame | None
    feedback: pl.LazyFrame | None
    usual: pl.LazyFrame
    buckets: int

    def __call__(self, bucket: int) -> pl.DataFrame:
        mine = user_bucket(pl.col("user_id"), self.buckets) == bucket
        theirs = None if self.feedback is None else self.feedback.filter(mine)
        some = user_features(
            self.events.filter(mine), self.as_of, self.items, self.market_prices, theirs, self.usual
        )
        return some.collect()


#: BG/NBD's expected purchases join the features over this many days, whatever a model's
#: horizon: a customer's rate, as the other counts are.
BTYD_DAYS = 30
#: Buyers the BG/NBD fit reads at most (a stable sample): four parameters need no more, and the
#: fit's cost grows with them.
BTYD_FIT_BUYERS = 50_000
BTYD_FEATURES = {"btyd_p_alive": pl.Float64(), f"btyd_expected_{BTYD_DAYS}d": pl.Float64()}


def _btyd_inputs(features: pl.DataFrame) -> pl.DataFrame:
    x, t_x, age = btyd.btyd_inputs(
        pl.col("buying_days_total"), pl.col("purchase_recency_days"), pl.col("purchase_tenure_days")
    )
    return features.select("user_id", x.alias("x"), t_x.alias("t_x"), age.alias("age"))


def fitted_bgnbd(features: pl.DataFrame) -> btyd.BgNbd:
    """BG/NBD parameters fitted on the purchase histories of the customers in ``features`` (at
    most ``BTYD_FIT_BUYERS`` of them, the same ones for the same ids)."""
    buyers = _btyd_inputs(features).drop_nulls()
    if buyers.height > BTYD_FIT_BUYERS:
        buyers = buyers.sort(pl.col("user_id").hash(seed=2)).head(BTYD_FIT_BUYERS)
    if buyers.height == 0:
        raise NotEnoughHistory("no customer has bought yet: BG/NBD has nothing to fit")
    return btyd.fit_bgnbd(
        buyers["x"].to_numpy(), buyers["t_x"].to_numpy(), buyers["age"].to_numpy()
    )


def btyd_figures(features: pl.DataFrame, fit: btyd.BgNbd, days: int) -> pl.DataFrame:
    """Per user of ``features``: BG/NBD's ``p_alive`` and ``expected`` purchases in the next
    ``days`` (null for users who never bought)."""
    inputs = _btyd_inputs(features)
    bought = inputs["age"].is_not_null().to_numpy()
    x, t_x, age = (inputs[c].fill_null(0.0).to_numpy() for c in ("x", "t_x", "age"))
    return pl.DataFrame(
        {
            "p_alive": np.where(bought, fit.p_alive(x, t_x, age), np.nan),
            "expected": np.where(bought, fit.expected_purchases(days, x, t_x, age), np.nan),
        }
    ).fill_nan(None)


def with_btyd(features: pl.DataFrame) -> pl.DataFrame:
    """``features`` with BG/NBD's P(alive) and expected purchases in ``BTYD_DAYS`` days per
    user, from a fit on these very users' purchase histories as of the same date (null for
    users who never bought, and for everyone when nobody has)."""
    names = list(BTYD_FEATURES)
    try:
        figures = btyd_figures(features, fitted_bgnbd(features), BTYD_DAYS)
    except NotEnoughHistory:
        figures = pl.DataFrame(
            {"p_alive": [None] * features.height, "expected": [None] * features.height},
            schema={"p_alive": pl.Float64, "expected": pl.Float64},
        )
    joined = features.with_columns(
        figures["p_alive"].alias(names[0]), figures["expected"].alias(names[1])
    )
    # The date stays the last column, as in every features frame.
    last = [c for c in joined.columns if c == "as_of"]
    return joined.select(pl.exclude(last), *last)


def feature_names(features: pl.DataFrame | pl.LazyFrame) -> list[str]:
    """The model inputs among a features frame's columns (all but the key and the date)."""
    schema = features.collect_schema() if isinstance(features, pl.LazyFrame) else features.schema
    return [name for name in schema if name not in {"user_id", "as_of"}]


def purchase_labels(events: pl.LazyFrame, as_of: date, horizon_days: int) -> pl.LazyFrame:
    """``user_id`` of everyone with a purchase in [as_of, as_of + horizon): the positives."""
    start, end = midnight(as_of), midnight(as_of + timedelta(days=horizon_days))
    return (
        events.filter(
            (pl.col("dt") >= as_of)
            & (pl.col("dt") < as_of + timedelta(days=horizon_days))
            & (pl.col("event_type") == "purchase")
            & pl.col("user_id").is_not_null()
            & pl.col("event_time").is_between(start, end, closed="left")
        )
        .select("user_id")
        .unique()
        .with_columns(label=pl.lit(1, pl.Int8))
    )


def labelled(features: pl.LazyFrame, labels: pl.LazyFrame) -> pl.LazyFrame:
    """Features with ``label``: 1 if the user bought in the horizon, else 0."""
    return features.join(labels, on="user_id", how="left", maintain_order="left").with_columns(
        pl.col("label").fill_null(0)
    )
