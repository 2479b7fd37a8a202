"""Our prices beside the competitors', per item and day: the grid price position and the demand
forecast both stand on.

Our price history comes from the ``items`` source: every row ever received (the raw layer keeps
them; the clean table keeps only the latest per item), dated by its export day — the date in the
landing file's name, or the run that brought it when the name has none. Before an item's first
export (a one-off historical dump is dated by the run that ingests it), its price is the median
paid for it that day in purchase events, carried forward. A competitor's price is
carried forward over gaps in its quotes for at most ``max_staleness`` days. A promotion, like
the price, holds from the export that announces it (``promotion: true``) to the one that withdraws
it; an item no row has put on promotion is not on one.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from nightowl.tasks.ingest.clean import export_day

ITEM_DAY = ["item_id", "date"]


def our_price_history(raw_items: pl.LazyFrame) -> pl.LazyFrame:
    """Per item and export day, the last price, activity, promotion flag and category received
    for that day. A price of 0 states no price (a free or adjustment line): it is skipped."""
    dated = raw_items.with_columns(
        export_day(pl.col("source_file"), pl.col("_run")).alias("date"),
        pl.when(pl.col("price") > 0).then(pl.col("price")).alias("price"),
    )
    if "promotion" not in dated.collect_schema():  # raw parts written before the column existed
        dated = dated.with_columns(pl.lit(None, pl.Boolean).alias("promotion"))
    stated = pl.any_horizontal(pl.col("price", "active", "promotion").is_not_null())
    return (
        dated.filter(stated)
        .group_by(ITEM_DAY, maintain_order=True)
        .agg(
            pl.col("price").drop_nulls().last().alias("our_price"),
            pl.col("active").drop_nulls().last(),
            pl.col("promotion").drop_nulls().last(),
            pl.col("category").drop_nulls().last(),
        )
        .with_columns(pl.when(pl.col("our_price").is_not_null()).then(True).alias("price_set"))
        .sort(ITEM_DAY)
    )


def paid_price_history(events: pl.LazyFrame) -> pl.LazyFrame:
    """Per item and day with purchases: the median unit price paid, shaped like
    ``our_price_history`` (activity, promotion and category unknown)."""
    bought = (pl.col("event_type") == "purchase") & (pl.col("price") > 0)
    return (
        events.filter(bought & pl.col("item_id").is_not_null())
        .group_by("item_id", pl.col("event_time").dt.date().alias("date"))
        .agg(pl.col("price").median().alias("our_price"))
        .with_columns(
            pl.lit(None, pl.Boolean).alias("active"),
            pl.lit(None, pl.Boolean).alias("promotion"),
            pl.lit(None, pl.String).alias("category"),
            pl.lit(False).alias("price_set"),  # read off sales: not known before the day
        )
    )


def with_paid_prices(history: pl.LazyFrame, paid: pl.LazyFrame) -> pl.LazyFrame:
    """Our price history, preceded for each catalogue item by the prices paid before its first
    export (an item no export names is not ours to position or forecast)."""
    first = history.group_by("item_id").agg(pl.col("date").min().alias("_first"))
    earlier = (
        paid.join(first, on="item_id", how="inner")
        .filter(pl.col("date") < pl.col("_first"))
        .drop("_first")
    )
    return pl.concat([history, earlier.select(history.collect_schema().names())]).sort(ITEM_DAY)


def our_daily_prices(history: pl.LazyFrame, last_day: date) -> pl.LazyFrame:
    """One row per item and day from its first known price to ``last_day``: the price, activity,
    promotion flag and category in force that day (the latest export on or before it), and
    ``price_set``: whether that price is one we set (an export), not one read off that day's
    sales."""
    if "price_set" not in history.collect_schema():  # a bare history: every price is an export
        history = history.with_columns(pl.lit(True).alias("price_set"))
    known = history.filter(pl.col("date") <= last_day)
    spans = known.group_by("item_id").agg(pl.col("date").min().alias("first"))
    days = spans.select(
        "item_id", pl.date_ranges("first", pl.lit(last_day), "1d").alias("date")
    ).explode("date")
    filled = (
        known.sort(ITEM_DAY)
        .with_columns(
            pl.col("our_price", "active", "promotion", "price_set").forward_fill().over("item_id"),
            # Categories do not move: days before the first export that names one take it too.
            pl.col("category").forward_fill().backward_fill().over("item_id"),
        )
        .select(*ITEM_DAY, "our_price", "active", "promotion", "category", "price_set")
    )
    return (
        days.sort(ITEM_DAY)
        .join_asof(
            filled.sort(ITEM_DAY),
            on="date",
            by="item_id",
            strategy="backward",
            check_sortedness=False,  # both sorted by (item, date); polars cannot verify with ``by``
        )
        .with_columns(
            pl.col("active").fill_null(True),
            pl.col("promotion").fill_null(False),
            pl.col("price_set").fill_null(False),
        )
    )


def planned_prices(history: pl.LazyFrame, last_day: date, horizon: int) -> pl.LazyFrame:
    """Per item and day after ``last_day`` (up to ``horizon`` days): the price and promotion in
    force then, where an export dated after ``last_day`` (a plan) changes them."""
    plans = history.filter(
        pl.col("date").is_between(last_day, last_day + timedelta(days=horizon), closed="right")
    )
    planned_items = plans.select("item_id").unique()
    ahead = our_daily_prices(
        history.join(planned_items, on="item_id", how="semi"), last_day + timedelta(days=horizon)
    )
    return ahead.filter(pl.col("date") > last_day).select(
        *ITEM_DAY, "our_price", "promotion", "price_set"
    )


def competitor_quotes(prices: pl.LazyFrame, last_day: date, max_staleness: int) -> pl.LazyFrame:
    """Each competitor's price per item and day, a quote carried forward over gaps for at most
    ``max_staleness`` days (never past its next quote or ``last_day``)."""
    quotes = (
        prices.filter(pl.col("date") <= last_day)
        .select("date", "item_id", "competitor", "price")
        .sort("item_id", "competitor", "date")
    )
    next_quote = pl.col("date").shift(-1).over("item_id", "competitor")
    until = pl.min_horizontal(
        pl.col("date") + timedelta(days=max_staleness),
        next_quote - timedelta(days=1),
        pl.lit(last_day),
    )
    return (
        quotes.with_columns(pl.date_ranges("date", until, "1d").alias("day"))
        .explode("day")
        .select(pl.col("day").alias("date"), "item_id", "competitor", "price")
    )


def item_day_market(ours: pl.LazyFrame, quotes: pl.LazyFrame) -> pl.LazyFrame:
    """Per item and day: our price, the competitors' min / median / max, how many quote it, our
    rank among all of them (1 = cheapest) and our gap to their median in %."""
    with_ours = quotes.join(ours.select(*ITEM_DAY, "our_price"), on=ITEM_DAY, how="inner")
    stats = with_ours.group_by(ITEM_DAY).agg(
        pl.col("price").min().alias("competitor_min"),
        pl.col("price").median().alias("competitor_median"),
        pl.col("price").max().alias("competitor_max"),
        pl.len().cast(pl.Int32).alias("competitors"),
        (pl.col("price") < pl.col("our_price")).sum().cast(pl.Int32).alias("_cheaper"),
    )
    gap = (pl.col("our_price") / pl.col("competitor_median") - 1.0) * 100.0
    return (
        ours.join(stats, on=ITEM_DAY, how="left")
        .with_columns(
            pl.col("competitors").fill_null(0),
            gap.alias("gap_pct"),
            pl.when(pl.col("_cheaper").is_not_null() & pl.col("our_price").is_not_null())
            .then(pl.col("_cheaper") + 1)
            .alias("our_rank"),
        )
        .drop("_cheaper")
        .sort(ITEM_DAY)
    )


def price_position(market: pl.LazyFrame, day: date) -> pl.LazyFrame:
    """Where each item's price stood on ``day``, with days since our price last changed and since
    the gap to the competitor median last changed sign (null: it never had a sign yet)."""
    history = market.filter(pl.col("date") <= day).sort(ITEM_DAY)
    by_item = "item_id"
    price_changed = pl.col("our_price") != pl.col("our_price").shift(1).over(by_item)
    sign = pl.col("gap_pct").sign()
    previous_sign = sign.forward_fill().shift(1).over(by_item)
    sign_changed = sign.is_not_null() & previous_sign.is_not_null() & (sign != previous_sign)
    first_sign = sign.is_not_null() & previous_sign.is_null()
    marked = history.with_columns(
        pl.when(price_changed.fill_null(True)).then(pl.col("date")).alias("_priced"),
        pl.when(sign_changed | first_sign).then(pl.col("date")).alias("_signed"),
    ).with_columns(pl.col("_priced", "_signed").forward_fill().over(by_item))
    return (
        marked.filter(pl.col("date") == day)
        .with_columns(
            (pl.col("date") - pl.col("_priced")).dt.total_days().alias("days_since_price_change"),
            (pl.col("date") - pl.col("_signed"))
            .dt.total_days()
            .alias("days_since_gap_sign_change"),
        )
        .select(
            "item_id",
            "category",
            "date",
            "our_price",
            "competitor_min",
            "competitor_median",
            "competitor_max",
            "gap_pct",
            "competitors",
            "our_rank",
            "days_since_price_change",
            "days_since_gap_sign_change",
            "active",
            "promotion",
        )
    )
