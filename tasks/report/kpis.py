"""The report tables: daily KPIs, RFM segments, customers at risk and product health.

Pure functions over frames read by ``tasks.report``. Days are UTC days, like the warehouse's
``dt`` partitions; amounts are ``quantity * price`` in the shop's currency, rounded to cents.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from nightowl.tasks.behaviour.features import midnight
from nightowl.tasks.recommend.lists import fixed_order_sum

#: KPIs whose changes are relative (0.12 = 12 % more); the others' are differences.
COUNTS = (
    "active_users",
    "buyers",
    "orders",
    "revenue",
    "average_order_value",
    "returns",
    "return_value",
    "new_buyers",
    "returning_buyers",
    "feedback",
)
#: KPIs that are rates or means: their changes are differences in their own unit.
RATES = ("conversion", "mean_rating", "negative_feedback_share")
KPIS = (*COUNTS, *RATES)
#: What each segment is for, in the words a marketer would use (the briefs' goals too).
SEGMENT_GOALS = {
    "champions": "reward and keep them buying: early access, referrals",
    "loyal": "upsell and cross-sell to loyal buyers",
    "potential_loyalist": "turn recent repeat buyers into loyal ones",
    "new_customer": "welcome first-time buyers and earn a second order",
    "promising": "build the habit with a reason to come back",
    "needs_attention": "re-engage before they slip",
    "about_to_sleep": "wake them with what they liked",
    "at_risk": "win back valuable customers who stopped buying",
    "cannot_lose": "win back the best customers before they are gone",
    "hibernating": "reactivate with a low-cost offer",
    "prospect": "convert browsers into first-time buyers",
}


def purchase_lines(
    events: pl.LazyFrame, as_of: date, days: int, kinds: tuple[str, ...] = ("purchase", "return")
) -> pl.LazyFrame:
    """Purchase and return events (or only ``kinds``) of the ``days`` before ``as_of``: ``day``,
    ``kind``, the user, item, an order key (order, else session, else user and day) and the
    line's ``amount``."""
    start = as_of - timedelta(days=days)
    return (
        events.filter(
            pl.col("event_type").is_in(list(kinds))
            & (pl.col("event_time") >= midnight(start))
            & (pl.col("event_time") < midnight(as_of))
        )
        .with_columns(pl.col("event_time").dt.date().alias("day"))
        .select(
            "day",
            pl.col("event_type").alias("kind"),
            "user_id",
            "item_id",
            pl.coalesce(
                "order_id",
                "session_id",
                pl.col("user_id") + "|" + pl.col("day").cast(pl.String),
                "event_id",
            ).alias("order_key"),
            pl.col("quantity").fill_null(1).cast(pl.Float64).alias("quantity"),
            (pl.col("quantity").fill_null(1) * pl.col("price")).cast(pl.Float64).alias("amount"),
        )
    )


def kpi_daily(
    events: pl.LazyFrame,
    first_purchases: pl.LazyFrame,
    feedback: pl.LazyFrame | None,
    as_of: date,
    days: int,
) -> pl.DataFrame:
    """One row per day of the ``days`` before ``as_of``: active users, buyers, orders, revenue,
    conversion, average order value, returns, new vs returning buyers, feedback, mean rating and
    negative share, each with its day-over-day (``_dod``) and week-over-week (``_wow``) change.

    ``first_purchases`` holds each user's first purchase day over all history (``user_id``,
    ``first_day``); ``feedback`` the scored feedback (``created_at``, ``rating``,
    ``sentiment_label``). A day without data has zeros, so its changes still compare like days.
    """
    # Seven more days than shown, so the first shown day has its week-over-week change.
    span = days + 7
    start = as_of - timedelta(days=span)
    calendar = pl.LazyFrame(
        {"day": pl.date_range(start, as_of - timedelta(days=1), "1d", eager=True)}
    )
    window = events.filter(
        (pl.col("event_time") >= midnight(start)) & (pl.col("event_time") < midnight(as_of))
    ).with_columns(pl.col("event_time").dt.date().alias("day"))
    active = window.group_by("day").agg(pl.col("user_id").drop_nulls().n_unique().alias("active"))
    lines = purchase_lines(events, as_of, span)
    bought = lines.filter(pl.col("kind") == "purchase")
    sales = bought.group_by("day").agg(
        pl.col("user_id").drop_nulls().n_unique().alias("buyers"),
        pl.col("order_key").n_unique().alias("orders"),
        fixed_order_sum(pl.col("amount").fill_null(0.0)).alias("revenue"),
    )
    returned = (
        lines.filter(pl.col("kind") == "return")
        .group_by("day")
        .agg(
            pl.len().alias("returns"),
            fixed_order_sum(pl.col("amount").fill_null(0.0).abs()).alias("return_value"),
        )
    )
    newcomers = (
        bought.select("day", "user_id")
        .drop_nulls("user_id")
        .unique()
        .join(first_purchases, on="user_id", how="left")
        .group_by("day")
        .agg((pl.col("first_day") == pl.col("day")).sum().alias("new_buyers"))
    )
    frames = [active, sales, returned, newcomers]
    if feedback is not None:
        said = (
            feedback.with_columns(pl.col("created_at").dt.date().alias("day"))
            .filter(pl.col("day").is_between(start, as_of - timedelta(days=1)))
            .group_by("day")
            .agg(
                pl.len().alias("feedback"),
                pl.col("rating").mean().round(6).alias("mean_rating"),
                (pl.col("sentiment_label") == "negative")
                .mean()
                .round(6)
                .alias("negative_feedback_share"),
            )
        )
        frames.append(said)
    daily = calendar
    for frame in frames:
        daily = daily.join(frame, on="day", how="left")
    counts = ["active", "buyers", "orders", "returns", "new_buyers"]
    daily = daily.with_columns(
        *(pl.col(c).fill_null(0).cast(pl.Int64) for c in counts),
        pl.col("revenue").fill_null(0.0).pipe(cents),
        pl.col("return_value").fill_null(0.0).pipe(cents),
    ).rename({"active": "active_users"})
    if feedback is None:
        daily = daily.with_columns(
            pl.lit(0, pl.Int64).alias("feedback"),
            pl.lit(None, pl.Float64).alias("mean_rating"),
            pl.lit(None, pl.Float64).alias("negative_feedback_share"),
        )
    else:
        daily = daily.with_columns(pl.col("feedback").fill_null(0).cast(pl.Int64))
    daily = daily.sort("day").with_columns(
        (pl.col("buyers") - pl.col("new_buyers")).alias("returning_buyers"),
        _share(pl.col("buyers"), pl.col("active_users")).round(6).alias("conversion"),
        _share(pl.col("revenue"), pl.col("orders").cast(pl.Float64))
        .pipe(cents)
        .alias("average_order_value"),
    )
    changes = []
    for kpi in KPIS:
        for suffix, lag in (("dod", 1), ("wow", 7)):
            before = pl.col(kpi).shift(lag)
            change = (
                _share(pl.col(kpi) - before, before.cast(pl.Float64))
                if kpi in COUNTS
                else pl.col(kpi) - before
            )
            changes.append(change.round(6).alias(f"{kpi}_{suffix}"))
    ordered = ["day", *(c for kpi in KPIS for c in (kpi, f"{kpi}_dod", f"{kpi}_wow"))]
    return daily.with_columns(changes).select(ordered).collect().tail(days)


def cents(amount: pl.Expr) -> pl.Expr:
    """``amount`` rounded to 2 decimals, ties away from zero, as money is rounded."""
    return amount.round(2, mode="half_away_from_zero")


def _share(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """``num / den``, null where ``den`` is 0."""
    return pl.when(den != 0).then(num / den)


def first_purchase_days(events: pl.LazyFrame, as_of: date) -> pl.LazyFrame:
    """Each user's first purchase day before ``as_of`` (``user_id``, ``first_day``)."""
    return (
        events.filter(
            (pl.col("event_type") == "purchase")
            & pl.col("user_id").is_not_null()
            & (pl.col("event_time") < midnight(as_of))
        )
        .group_by("user_id")
        .agg(pl.col("event_time").min().dt.date().alias("first_day"))
    )


def customer_value(
    events: pl.LazyFrame, items: pl.LazyFrame | None, as_of: date, days: int
) -> pl.LazyFrame:
    """Per user who bought in the ``days`` before ``as_of``: ``value`` (what they spent net of
    returns, at least 0), ``orders``, ``last_purchase`` and ``favourite_category`` (most spent;
    ties: by name)."""
    lines = purchase_lines(events, as_of, days).filter(pl.col("user_id").is_not_null())
    signed = lines.with_columns(
        pl.when(pl.col("kind") == "return")
        .then(-pl.col("amount").abs())
        .otherwise(pl.col("amount"))
        .fill_null(0.0)
        .alias("amount")
    )
    bought = signed.filter(pl.col("kind") == "purchase")
    per_user = (
        signed.group_by("user_id")
        # A return of something bought before the window must not make a customer worth less
        # than nothing.
        .agg(fixed_order_sum(pl.col("amount")).clip(lower_bound=0.0).pipe(cents).alias("value"))
        .join(
            bought.group_by("user_id").agg(
                pl.col("order_key").n_unique().alias("orders"),
                pl.col("day").max().alias("last_purchase"),
            ),
            on="user_id",
            how="inner",
        )
    )
    if items is None:
        return per_user.with_columns(pl.lit(None, pl.String).alias("favourite_category"))
    categories = items.select("item_id", "category").unique("item_id")
    favourite = (
        bought.join(categories, on="item_id", how="inner")
        .drop_nulls("category")
        .group_by("user_id", "category")
        .agg(fixed_order_sum(pl.col("amount")).alias("spent"))
        .sort(["user_id", "spent", "category"], descending=[False, True, False])
        .group_by("user_id", maintain_order=True)
        .first()
        .select("user_id", pl.col("category").alias("favourite_category"))
    )
    return per_user.join(favourite, on="user_id", how="left")


def propensity_column(user_scores: pl.DataFrame | pl.LazyFrame) -> str:
    """The ``p_purchase_<H>d`` column of a user_scores frame (H is the model's horizon)."""
    names = user_scores.collect_schema().names()
    found = [n for n in names if n.startswith("p_purchase_")]
    if len(found) != 1:
        raise ValueError(f"user_scores should have one p_purchase_<H>d column, has {found}")
    return found[0]


def segments(user_scores: pl.DataFrame, value: pl.LazyFrame) -> pl.DataFrame:
    """One row per RFM segment: users, their share, customers who bought in the value window,
    revenue and its share, revenue per user, mean churn risk, mean propensity, expected buyers
    (the sum of propensities), users at high churn risk, and the segment's goal."""
    p = propensity_column(user_scores)
    joined = user_scores.lazy().join(value, on="user_id", how="left")
    table = (
        joined.group_by("segment")
        .agg(
            pl.len().alias("users"),
            pl.col("value").is_not_null().sum().alias("customers"),
            fixed_order_sum(pl.col("value").fill_null(0.0)).pipe(cents).alias("revenue"),
            pl.col("churn_risk").mean().round(6).alias("mean_churn_risk"),
            pl.col(p).mean().round(6).alias("mean_propensity"),
            fixed_order_sum(pl.col(p)).pipe(cents).alias("expected_buyers"),
            (pl.col("risk_tier") == "high").sum().alias("high_risk_users"),
            pl.col("model_version").first().alias("model_version"),
        )
        .with_columns(
            (pl.col("users") / pl.col("users").sum()).round(6).alias("user_share"),
            _share(pl.col("revenue"), pl.col("revenue").sum()).round(6).alias("revenue_share"),
            (pl.col("revenue") / pl.col("users")).pipe(cents).alias("revenue_per_user"),
            pl.col("segment").replace_strict(SEGMENT_GOALS, default=None).alias("goal"),
        )
        .sort(["revenue", "users", "segment"], descending=[True, True, False])
    )
    return table.select(
        "segment",
        "users",
        "user_share",
        "customers",
        "revenue",
        "revenue_share",
        "revenue_per_user",
        "mean_churn_risk",
        "mean_propensity",
        "expected_buyers",
        "high_risk_users",
        "goal",
        "model_version",
    ).collect()


def at_risk_customers(
    user_scores: pl.DataFrame,
    value: pl.LazyFrame,
    recommendations: pl.DataFrame | None,
    as_of: date,
    top: int,
) -> pl.DataFrame:
    """The ``top`` customers by value at risk (value x churn risk), most first: who they are,
    what they are worth, when they last bought, their favourite category and the first item
    on their recommendation list (null when they have none)."""
    p = propensity_column(user_scores)
    ranked = (
        user_scores.lazy()
        .filter(pl.col("churn_risk").is_not_null())
        .join(value, on="user_id", how="inner")
        .filter(pl.col("value") > 0)
        .with_columns((pl.col("value") * pl.col("churn_risk")).pipe(cents).alias("value_at_risk"))
        .sort(["value_at_risk", "value", "user_id"], descending=[True, True, False])
        .head(top)
        .with_row_index("rank", offset=1)
        .with_columns(
            pl.col("rank").cast(pl.Int32),
            (pl.lit(as_of) - pl.col("last_purchase")).dt.total_days().alias("days_since_purchase"),
        )
    )
    if recommendations is not None:
        first = recommendations.lazy().filter(pl.col("rank") == 1)
        ranked = ranked.join(
            first.select(
                "user_id",
                pl.col("item_id").alias("top_recommendation"),
                pl.col("title").alias("top_recommendation_title"),
                pl.col("reason").alias("top_recommendation_reason"),
            ),
            on="user_id",
            how="left",
        )
    else:
        ranked = ranked.with_columns(
            pl.lit(None, pl.String).alias(c)
            for c in ("top_recommendation", "top_recommendation_title", "top_recommendation_reason")
        )
    return (
        ranked.select(
            "rank",
            "user_id",
            "segment",
            "risk_tier",
            "churn_risk",
            pl.col(p).alias("p_purchase"),
            "value",
            "value_at_risk",
            "orders",
            "last_purchase",
            "days_since_purchase",
            "favourite_category",
            "top_recommendation",
            "top_recommendation_title",
            "top_recommendation_reason",
            "model_version",
        )
        .sort("rank")
        .collect()
    )


def product_health(
    items: pl.LazyFrame,
    events: pl.LazyFrame,
    forecast: pl.DataFrame | None,
    prices: pl.DataFrame | None,
    feedback: pl.LazyFrame | None,
    complaints: pl.DataFrame | None,
    as_of: date,
    days: int,
    limits: dict[str, float],
) -> pl.DataFrame:
    """One row per catalogue item: units and revenue of the last 7 and ``days`` days, the change
    against the 7 days before, the forecast for the next days and its change against the last 7,
    our price against the competitors', feedback, mean rating, sentiment and negative share over
    ``days``, the top complaint, and ``flags`` saying in words what needs a look (``health`` is
    ``act`` with two flags or more, ``watch`` with one, else ``ok``).

    ``limits``: ``price_gap_pct``, ``demand_change_pct`` (with at least ``min_units`` sold in
    the last 7 days), ``negative_share`` (of at least ``min_feedback`` items).
    """
    lines = purchase_lines(events, as_of, max(days, 14), kinds=("purchase",))
    recent = as_of - timedelta(days=7)
    prior = as_of - timedelta(days=14)
    window = as_of - timedelta(days=days)
    sales = lines.group_by("item_id").agg(
        pl.col("quantity").filter(pl.col("day") >= recent).sum().alias("units_7d"),
        fixed_order_sum(pl.col("amount").fill_null(0.0).filter(pl.col("day") >= recent))
        .pipe(cents)
        .alias("revenue_7d"),
        pl.col("quantity").filter(pl.col("day") >= window).sum().alias(f"units_{days}d"),
        fixed_order_sum(pl.col("amount").fill_null(0.0).filter(pl.col("day") >= window))
        .pipe(cents)
        .alias(f"revenue_{days}d"),
        pl.col("quantity")
        .filter(pl.col("day").is_between(prior, recent, closed="left"))
        .sum()
        .alias("_units_prior_7d"),
    )
    table = (
        items.select("item_id", "title", "category", "price", "active")
        .unique("item_id", keep="last")
        .join(sales, on="item_id", how="left")
        .with_columns(
            pl.col("units_7d", f"units_{days}d", "_units_prior_7d").fill_null(0.0),
            pl.col("revenue_7d", f"revenue_{days}d").fill_null(0.0),
        )
        .with_columns(
            _share(pl.col("units_7d") - pl.col("_units_prior_7d"), pl.col("_units_prior_7d"))
            .round(4)
            .alias("units_7d_change")
        )
    )
    if forecast is not None:
        ahead = (
            forecast.lazy()
            .group_by("item_id")
            .agg(
                fixed_order_sum(pl.col("forecast")).pipe(cents).alias("forecast_units"),
                pl.col("horizon").max().alias("forecast_days"),
            )
        )
        table = table.join(ahead, on="item_id", how="left")
    else:
        table = table.with_columns(
            pl.lit(None, pl.Float64).alias("forecast_units"),
            pl.lit(None, pl.Int32).alias("forecast_days"),
        )
    # The forecast per 7 days against the last 7 days' sales.
    table = table.with_columns(
        _share(
            pl.col("forecast_units") * 7 / pl.col("forecast_days") - pl.col("units_7d"),
            pl.col("units_7d"),
        )
        .round(4)
        .alias("forecast_change")
    )
    if prices is not None:
        table = table.join(
            prices.lazy().select("item_id", "competitor_median", "gap_pct", "our_rank"),
            on="item_id",
            how="left",
        )
    else:
        table = table.with_columns(
            pl.lit(None, pl.Float64).alias(c) for c in ("competitor_median", "gap_pct")
        ).with_columns(pl.lit(None, pl.Int32).alias("our_rank"))  # as price_position has it
    if feedback is not None:
        said = (
            feedback.filter(
                pl.col("item_id").is_not_null()
                & (pl.col("created_at") >= midnight(window))
                & (pl.col("created_at") < midnight(as_of))
            )
            .group_by("item_id")
            .agg(
                pl.len().alias("feedback"),
                pl.col("rating").mean().round(4).alias("mean_rating"),
                pl.col("sentiment_score").mean().round(4).alias("mean_sentiment"),
                (pl.col("sentiment_label") == "negative").mean().round(4).alias("negative_share"),
            )
        )
        table = table.join(said, on="item_id", how="left")
    else:
        table = table.with_columns(
            pl.lit(None, pl.UInt32).alias("feedback"),
            *(
                pl.lit(None, pl.Float64).alias(c)
                for c in ("mean_rating", "mean_sentiment", "negative_share")
            ),
        )
    table = table.with_columns(pl.col("feedback").fill_null(0).cast(pl.Int64))
    if complaints is not None and complaints.height:
        table = table.join(complaints.lazy(), on="item_id", how="left")
    else:
        table = table.with_columns(pl.lit(None, pl.String).alias("top_complaint"))
    flags = pl.concat_list(
        # A competitor quote of 0 makes the gap infinite: no number to flag.
        pl.when(
            pl.col("gap_pct").is_finite() & (pl.col("gap_pct") >= limits["price_gap_pct"])
        ).then(
            pl.format(
                "priced {}% above competitors",
                pl.col("gap_pct").round(0).cast(pl.Int64, strict=False),
            )
        ),
        pl.when(
            (pl.col("forecast_change") <= -limits["demand_change_pct"] / 100)
            & (pl.col("units_7d") >= max(limits["min_units"], 1))
        ).then(
            pl.format(
                "forecast {}% below last week",
                (-pl.col("forecast_change") * 100).round(0).cast(pl.Int64, strict=False),
            )
        ),
        pl.when(
            (pl.col("negative_share") >= limits["negative_share"])
            & (pl.col("feedback") >= limits["min_feedback"])
        ).then(
            pl.format(
                "{}% of {} reviews negative",
                (pl.col("negative_share") * 100).round(0).cast(pl.Int64, strict=False),
                pl.col("feedback"),
            )
        ),
        pl.when(pl.col("active").fill_null(True) & (pl.col(f"units_{days}d") == 0)).then(
            pl.lit(f"no sales in {days} days")
        ),
    ).list.drop_nulls()
    return (
        table.with_columns(flags.alias("flags"))
        .with_columns(
            pl.when(pl.col("flags").list.len() >= 2)
            .then(pl.lit("act"))
            .when(pl.col("flags").list.len() == 1)
            .then(pl.lit("watch"))
            .otherwise(pl.lit("ok"))
            .alias("health")
        )
        .drop("_units_prior_7d")
        .sort([f"revenue_{days}d", "item_id"], descending=[True, False])
        .collect()
    )


def item_complaints(product_sentiment: pl.DataFrame | None) -> pl.DataFrame | None:
    """Each item's top complaint phrase on the newest day it has one (``item_id``,
    ``top_complaint``)."""
    if product_sentiment is None:
        return None
    return (
        product_sentiment.lazy()
        .filter((pl.col("level") == "item") & (pl.col("top_complaints").list.len() > 0))
        .sort(["item_id", "day"])
        .group_by("item_id")
        .agg(pl.col("top_complaints").last().list.first().alias("top_complaint"))
        .collect()
    )
