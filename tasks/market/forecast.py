"""Daily demand per item: the feature rows of a direct multi-horizon forecast, its model, the
baselines it must beat, and prediction intervals.

A forecast is made at an *origin* ``T`` (an as_of date) for the target days ``T + h - 1``,
``h = 1..H``. Its features come from the item-day panel up to ``T - 1`` — sales, competitors,
market indicators — plus what is known about the target day itself: the calendar, our own price and
whether the item is on promotion (as set for that day when already known, else as today). One
LightGBM model (Tweedie or Poisson: daily unit counts) covers every horizon, with ``h`` as a
feature. Training rows are past origins whose targets are known; nothing at or after a row's origin
enters its features.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import Any, TypeVar, cast

import lightgbm as lgb
import numpy as np
import polars as pl
from scipy import stats

from nightowl.schemas.config import MarketSettings

ITEM_DAY = ["item_id", "date"]
#: Features whose value depends on the price we set on the target day (price scenarios).
PRICE_FEATURES = ("price", "price_vs_28d", "gap_to_median", "overpriced", "gap_to_min")
TARGET = "units"
Frame = TypeVar("Frame", pl.LazyFrame, pl.DataFrame)


def daily_sales(events: pl.LazyFrame) -> pl.LazyFrame:
    """Units bought and product views per item and day (UTC days)."""
    kind = pl.col("event_type")
    return (
        events.filter(kind.is_in(["purchase", "view"]) & pl.col("item_id").is_not_null())
        .group_by(pl.col("item_id"), pl.col("event_time").dt.date().alias("date"))
        .agg(
            pl.col("quantity")
            .fill_null(1)
            .filter(kind == "purchase")
            .sum()
            .cast(pl.Float64)
            .alias(TARGET),
            (kind == "view").sum().cast(pl.Float64).alias("views"),
        )
    )


def item_day_panel(market: pl.LazyFrame, sales: pl.LazyFrame) -> pl.LazyFrame:
    """The item-day grid with units sold and the rolling state as of the end of each day."""
    by_item = "item_id"
    units = pl.col(TARGET)
    sold_on = pl.when(units > 0).then(pl.col("date"))
    return (
        market.join(sales, on=ITEM_DAY, how="left")
        .with_columns(units.fill_null(0.0), pl.col("views").fill_null(0.0))
        .sort(ITEM_DAY)
        .with_columns(
            units.rolling_sum(7, min_samples=1).over(by_item).alias("units_7d"),
            units.rolling_sum(28, min_samples=1).over(by_item).alias("units_28d"),
            units.rolling_sum(91, min_samples=1).over(by_item).alias("units_91d"),
            pl.col("views").rolling_sum(7, min_samples=1).over(by_item).alias("views_7d"),
            pl.col("views").rolling_sum(28, min_samples=1).over(by_item).alias("views_28d"),
            (units.cum_sum().over(by_item) / pl.int_range(1, pl.len() + 1).over(by_item)).alias(
                "units_per_day"
            ),
            *(
                (
                    pl.when(cond).then(units).otherwise(0.0).cum_sum().over(by_item)
                    / cond.cast(pl.Float64).cum_sum().over(by_item).clip(lower_bound=1)
                ).alias(name)
                for name, cond in (
                    ("units_per_day_above_median", pl.col("gap_pct").fill_null(0) > 0),
                    ("units_per_day_at_or_below_median", pl.col("gap_pct").fill_null(0) <= 0),
                )
            ),
            pl.col("our_price").rolling_mean(28, min_samples=1).over(by_item).alias("_price_28d"),
            (pl.col("date") - sold_on.forward_fill().over(by_item))
            .dt.total_days()
            .alias("days_since_sale"),
            (pl.col("date") - pl.col("date").min().over(by_item)).dt.total_days().alias("age"),
            pl.col("date").dt.weekday().alias("_weekday"),
        )
        .with_columns(
            units.rolling_sum(4, min_samples=1)
            .over(partition_by=["item_id", "_weekday"], order_by="date")
            .alias("units_same_weekday_4w")
        )
    )


def category_panel(panel: pl.LazyFrame) -> pl.LazyFrame:
    """Per category and day: units per active item over 28 days and the same-weekday units over
    eight weeks (the category's weekly shape, which new items inherit)."""
    daily = (
        panel.group_by("category", "date")
        .agg(
            pl.col(TARGET).sum().alias("_units"),
            pl.col("active").sum().alias("_items"),
            pl.col("_weekday").first(),
        )
        .sort("category", "date")
    )
    by_cat = "category"
    return daily.with_columns(
        (
            pl.col("_units").rolling_sum(28, min_samples=1).over(by_cat)
            / pl.col("_items").rolling_sum(28, min_samples=1).over(by_cat).clip(lower_bound=1)
        ).alias("category_units_per_item_28d"),
        pl.col("_units").rolling_sum(56, min_samples=1).over(by_cat).alias("_units_56d"),
        pl.col("_units").rolling_sum(7, min_samples=1).over(by_cat).alias("_units_7d"),
        pl.col("_units")
        .rolling_sum(8, min_samples=1)
        .over(partition_by=["category", "_weekday"], order_by="date")
        .alias("_same_weekday_8w"),
    )


def indicator_panel(
    indicators: pl.LazyFrame, days: list[date], categories: list[str | None], max_staleness: int
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Market indicators aligned to (day, category): each series' latest value on or before the
    day (never later), carried at most ``max_staleness`` days, and its change over 7 days.

    A series whose dimension names a category joins that category's items; any other series is
    the same for every item. Also returns, per series, when it was last seen before the newest
    day and whether that is too old to use.
    """
    frame = indicators.select("date", "indicator", "value", "dimension").collect()
    cats = {c for c in categories if c is not None}  # None: items without a category
    named = frame.with_columns(
        pl.when(pl.col("dimension").is_in(list(cats))).then(pl.col("dimension")).alias("_category"),
        pl.when(pl.col("dimension").is_null() | pl.col("dimension").is_in(list(cats)))
        .then(pl.col("indicator"))
        .otherwise(pl.format("{}_{}", "indicator", "dimension"))
        .str.to_lowercase()
        .str.replace_all(r"[^a-z0-9]+", "_")
        .alias("_name"),
    )
    grid = pl.DataFrame({"date": days}, schema={"date": pl.Date}).join(
        pl.DataFrame({"category": categories}, schema={"category": pl.String}), how="cross"
    )
    stale: list[dict[str, Any]] = []
    newest = max(days) if days else None
    tolerance = timedelta(days=max_staleness)
    for name in sorted(named["_name"].unique().to_list()):
        series = named.filter(pl.col("_name") == name).sort("date")
        per_category = series["_category"].is_not_null().any()
        by = ["category"] if per_category else None
        values = series.select(
            "date", pl.col("_category").alias("category"), pl.col("value").alias(f"ind_{name}")
        )
        if not per_category:
            values = values.drop("category")
        for lag, column in ((0, f"ind_{name}"), (7, f"ind_{name}_7d_ago")):
            shifted = grid.with_columns((pl.col("date") - timedelta(days=lag)).alias("_at"))
            joined = shifted.sort("_at").join_asof(
                values.rename({"date": "_seen", f"ind_{name}": column}).sort("_seen"),
                left_on="_at",
                right_on="_seen",
                by=by,
                strategy="backward",
                tolerance=tolerance,
                check_sortedness=False,  # sorted just above; with ``by`` polars cannot verify it
            )
            grid = joined.drop("_at", "_seen")
        grid = grid.with_columns(
            (pl.col(f"ind_{name}") / pl.col(f"ind_{name}_7d_ago") - 1.0).alias(f"ind_{name}_chg_7d")
        ).drop(f"ind_{name}_7d_ago")
        if newest is not None:
            # Series.max() is typed as any Python scalar; of this pl.Date column: a date or None.
            last_seen = cast("date | None", series.filter(pl.col("date") <= newest)["date"].max())
            age = (newest - last_seen).days if last_seen is not None else None
            stale.append(
                {
                    "indicator": name,
                    "last_seen": last_seen.isoformat() if last_seen else None,
                    "stale": age is None or age > max_staleness,
                }
            )
    return grid, stale


def holiday_days(first: date, last: date, country: str, subdivision: str | None) -> list[date]:
    """Public holidays of ``country`` between two days (inclusive)."""
    import holidays  # a big module: only when a forecast is made

    years = list(range(first.year, last.year + 1))
    calendar = holidays.country_holidays(country, subdiv=subdivision, years=years)
    return sorted(d for d in calendar if first <= d <= last)


def demand_rows(
    panel: pl.LazyFrame,
    categories: pl.LazyFrame,
    indicators: pl.DataFrame | None,
    origins: list[date],
    horizon: int,
    holidays: list[date],
    planned: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per (origin, active item, horizon): the features known at the origin, what is
    known of the target day, and the units sold on it (null where the target is still ahead).

    ``planned`` holds our price and promotion on days after the panel where plans set them."""
    states = [o - timedelta(days=1) for o in origins]
    state_cols = [
        "item_id",
        "date",
        "category",
        "our_price",
        "competitor_min",
        "competitor_median",
        "competitors",
        "units_7d",
        "units_28d",
        "units_91d",
        "units_per_day",
        "views_7d",
        "views_28d",
        "units_per_day_above_median",
        "units_per_day_at_or_below_median",
        "_price_28d",
        "days_since_sale",
        "age",
        "promotion",
    ]
    state = panel.filter(pl.col("date").is_in(states) & pl.col("active")).select(state_cols)
    steps = pl.LazyFrame({"horizon": list(range(1, horizon + 1))}, schema={"horizon": pl.Int32})
    rows = state.join(steps, how="cross").with_columns(
        (pl.col("date") + pl.duration(days=pl.col("horizon"))).alias("target_date"),
    )
    # The latest day on or before the state with the target's weekday.
    weeks_back = (pl.col("horizon") + 6) // 7
    rows = rows.with_columns(
        (pl.col("target_date") - pl.duration(days=weeks_back * 7)).alias("_same_weekday")
    )
    target_days = panel.select(*ITEM_DAY, "our_price", "promotion", "price_set", TARGET)
    if planned is not None and planned.height:  # the days after the panel: no units yet
        target_days = pl.concat([target_days, planned.lazy()], how="diagonal_relaxed")
    on_target = target_days.select(
        "item_id",
        pl.col("date").alias("target_date"),
        # Only a price we set is known ahead; one read off the day's sales would leak them.
        pl.when(pl.col("price_set")).then(pl.col("our_price")).alias("_price_then"),
        pl.col("promotion").alias("_promotion_then"),
        pl.col(TARGET),
    )
    same_weekday = panel.select(
        "item_id",
        pl.col("date").alias("_same_weekday"),
        pl.col(TARGET).alias("units_same_weekday"),
        "units_same_weekday_4w",
    )
    cat_state = categories.select("category", "date", "category_units_per_item_28d", "_units_56d")
    cat_weekday = categories.select(
        "category", pl.col("date").alias("_same_weekday"), "_same_weekday_8w"
    )
    rows = (
        rows.join(on_target, on=["item_id", "target_date"], how="left")
        .join(same_weekday, on=["item_id", "_same_weekday"], how="left")
        # An item without a category is in the null category: its rows must find it too.
        .join(cat_state, on=["category", "date"], how="left", nulls_equal=True)
        .join(cat_weekday, on=["category", "_same_weekday"], how="left", nulls_equal=True)
    )
    if indicators is not None and indicators.width > 2:
        rows = rows.join(indicators.lazy(), on=["date", "category"], how="left", nulls_equal=True)
    target = pl.col("target_date")
    rows = rows.with_columns(
        # Our price on the target day where it is already set, else the one in force today.
        pl.coalesce("_price_then", "our_price").alias("price"),
        pl.coalesce("_promotion_then", "promotion").cast(pl.Int8).alias("promotion"),
        target.dt.weekday().alias("weekday"),
        (target.dt.weekday() >= 6).cast(pl.Int8).alias("weekend"),
        target.is_in(holidays).cast(pl.Int8).alias("holiday"),
        (pl.col("_same_weekday_8w") * 7 / pl.col("_units_56d").clip(lower_bound=1)).alias(
            "category_weekday_shape"
        ),
        (pl.col("date") + pl.duration(days=1)).alias("origin"),
        pl.lit(1, pl.Int8).alias("period_days"),
    )
    rows = with_price_features(rows)
    drop = [
        "date",
        "_price_then",
        "_promotion_then",
        "_same_weekday",
        "_same_weekday_8w",
        "_units_56d",
    ]
    return rows.drop(drop).sort("origin", "item_id", "horizon").collect()


def with_price_features(rows: Frame) -> Frame:
    """The features that follow from our price on the target day (``price``)."""
    price = pl.col("price")
    return rows.with_columns(
        (price / pl.col("_price_28d")).alias("price_vs_28d"),
        (price / pl.col("competitor_median") - 1.0).alias("gap_to_median"),
        (price > pl.col("competitor_median")).cast(pl.Int8).alias("overpriced"),
        (price / pl.col("competitor_min") - 1.0).alias("gap_to_min"),
    )


#: Row columns that are not features.
NOT_FEATURES = {
    "item_id", "category", "target_date", "origin", TARGET, "our_price", "_price_28d",
    "period_days",
}  # fmt: skip

GRAINS = ("day", "week")
WEEK = 7


def sales_grain(panel: pl.DataFrame, weeks: int = 8, share: float = 0.9) -> str:
    """The grain sales arrive at: ``week`` when at least ``share`` of the units of the last
    ``weeks`` weeks fall on one weekday (a weekly export dated on its delivery day), else
    ``day``."""
    last = cast(date | None, panel["date"].max())
    if last is None:
        return "day"
    recent = panel.filter(pl.col("date") > last - timedelta(days=WEEK * weeks))
    by_weekday = recent.group_by(pl.col("date").dt.weekday()).agg(pl.col(TARGET).sum())
    total = float(by_weekday[TARGET].sum())
    if total <= 0:
        return "day"
    days_sold = recent.filter(pl.col(TARGET) > 0)["date"].n_unique()
    # max() of a Float64 column with rows: a float (typed as any Python scalar).
    busiest = cast(float, by_weekday[TARGET].max())
    weekly = busiest / total >= share and days_sold >= weeks // 2
    return "week" if weekly else "day"


def weekly_demand_rows(
    panel: pl.LazyFrame,
    categories: pl.LazyFrame,
    indicators: pl.DataFrame | None,
    origins: list[date],
    weeks: int,
    holidays: list[date],
    planned: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per (origin, active item, week ahead): the features known at the origin and the
    units sold in the seven days ending on ``target_date`` (null where that week is not over).
    ``horizon`` is the days from the origin to the week's last day (7, 14, ...)."""
    states = [o - timedelta(days=1) for o in origins]
    state_cols = [
        "item_id", "date", "category", "our_price", "competitor_min", "competitor_median",
        "competitors", "units_7d", "units_28d", "units_91d", "units_per_day", "views_7d",
        "views_28d", "_price_28d", "days_since_sale", "age", "promotion",
    ]  # fmt: skip
    state = panel.filter(pl.col("date").is_in(states) & pl.col("active")).select(state_cols)
    steps = pl.LazyFrame({"week": list(range(1, weeks + 1))}, schema={"week": pl.Int32})
    rows = state.join(steps, how="cross").with_columns(
        (pl.col("week") * WEEK).cast(pl.Int32).alias("horizon"),
        (pl.col("date") + pl.duration(days=pl.col("week") * WEEK)).alias("target_date"),
        (pl.col("date") + pl.duration(days=1)).alias("origin"),
    )
    week_total = panel.select(
        "item_id", pl.col("date").alias("target_date"), pl.col("units_7d").alias(TARGET)
    )
    price_days = panel.select("item_id", "date", "our_price", "promotion", "price_set")
    if planned is not None and planned.height:  # the days after the panel: prices set ahead
        price_days = pl.concat([price_days, planned.lazy()], how="diagonal_relaxed")
    # Our price and promotion on the week's first day where they are set ahead.
    first_day = price_days.select(
        "item_id",
        pl.col("date").alias("_first_day"),
        pl.when(pl.col("price_set")).then(pl.col("our_price")).alias("_price_then"),
        pl.col("promotion").alias("_promotion_then"),
    )
    holiday_days = pl.Series(holidays, dtype=pl.Date)
    # Each of the last four weeks on its own: a weekly series' own lags.
    for back in (1, 2, 3):
        earlier = panel.select(
            "item_id",
            (pl.col("date") + pl.duration(days=WEEK * back)).alias("date"),
            pl.col("units_7d").alias(f"units_week_minus_{back}"),
        )
        rows = rows.join(earlier, on=["item_id", "date"], how="left")
    rows = (
        rows.with_columns((pl.col("target_date") - pl.duration(days=WEEK - 1)).alias("_first_day"))
        .join(week_total, on=["item_id", "target_date"], how="left")
        .join(first_day, on=["item_id", "_first_day"], how="left")
        .join(
            categories.select("category", "date", "category_units_per_item_28d"),
            on=["category", "date"],
            how="left",
            nulls_equal=True,
        )
    )
    if indicators is not None and indicators.width > 2:
        rows = rows.join(indicators.lazy(), on=["date", "category"], how="left", nulls_equal=True)
    rows = rows.with_columns(
        pl.coalesce("_price_then", "our_price").alias("price"),
        pl.coalesce("_promotion_then", "promotion").cast(pl.Int8).alias("promotion"),
        pl.sum_horizontal(
            (pl.col("_first_day") + pl.duration(days=d)).is_in(holiday_days.implode())
            for d in range(WEEK)
        )
        .cast(pl.Int8)
        .alias("holiday"),
        # Last week's units stand where the daily rows' same-weekday units do (seasonal naive).
        pl.col("units_7d").alias("units_same_weekday"),
        pl.lit(float(WEEK)).alias("category_weekday_shape"),
        pl.lit(WEEK, pl.Int8).alias("period_days"),
    )
    rows = with_price_features(rows)
    drop = ["date", "week", "_first_day", "_price_then", "_promotion_then"]
    return rows.drop(drop).sort("origin", "item_id", "horizon").collect()


def feature_names(rows: pl.DataFrame) -> list[str]:
    """The model's inputs, in a stable order."""
    return [c for c in rows.columns if c not in NOT_FEATURES]


def matrix(rows: pl.DataFrame, names: list[str]) -> np.ndarray:
    """The float32 feature matrix in ``names`` order; a feature the rows lack is missing (NaN)."""
    cols = [
        pl.col(n).cast(pl.Float32) if n in rows.columns else pl.lit(None, pl.Float32).alias(n)
        for n in names
    ]
    return np.ascontiguousarray(rows.select(cols).to_numpy(), dtype=np.float32)


def lightgbm_params(cfg: MarketSettings, threads: int) -> dict[str, Any]:
    """LightGBM parameters of the demand model (Poisson: daily unit counts)."""
    return {
        "objective": cfg.objective,
        **(
            {"tweedie_variance_power": cfg.tweedie_variance_power}
            if cfg.objective == "tweedie"
            else {}
        ),
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": cfg.seed,
        "deterministic": True,
        "num_threads": threads,
        "verbosity": -1,
    }


def fit_demand(rows: pl.DataFrame, until: date, cfg: MarketSettings) -> tuple[lgb.Booster, float]:
    """A model fitted on targets before ``until - 7 days``, early-stopped on the week before
    ``until``; and the dispersion (variance / mean) of its errors on that week."""
    known = rows.filter(pl.col(TARGET).is_not_null() & (pl.col("target_date") < until))
    cut = until - timedelta(days=7)
    fit, valid = (
        known.filter(pl.col("target_date") < cut),
        known.filter(pl.col("target_date") >= cut),
    )
    if fit.height == 0 or valid.height == 0:
        raise ValueError(f"no training rows before {cut} or none in the week before {until}")
    names = feature_names(rows)
    train_set = lgb.Dataset(matrix(fit, names), fit[TARGET].to_numpy(), feature_name=names)
    valid_set = lgb.Dataset(
        matrix(valid, names), valid[TARGET].to_numpy(), feature_name=names, reference=train_set
    )
    booster = lgb.train(
        lightgbm_params(cfg, 2),
        train_set,
        num_boost_round=cfg.max_rounds,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )
    # predict() is typed for every input and mode (a list of sparse matrices for pred_contrib on
    # sparse input); a dense matrix without pred_contrib always gives an ndarray.
    predicted = cast(np.ndarray, booster.predict(matrix(valid, names), num_threads=2))
    return booster, dispersion(valid[TARGET].to_numpy(), predicted)


def dispersion(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Pearson dispersion of counts: 1 for Poisson noise, more when they scatter wider."""
    mean = np.clip(predicted, 1e-9, None)
    return float(np.sum((actual - predicted) ** 2 / mean) / max(len(actual), 1))


def interval(mean: np.ndarray, phi: float, coverage: float) -> tuple[np.ndarray, np.ndarray]:
    """Central ``coverage`` interval of a count with this mean and variance ``phi * mean``
    (negative binomial; Poisson when ``phi <= 1``). Sums of such counts stay in the family."""
    mean = np.clip(np.asarray(mean, dtype=np.float64), 0.0, None)
    low_q, high_q = (1 - coverage) / 2, 1 - (1 - coverage) / 2
    if phi <= 1.0 + 1e-6:
        return stats.poisson.ppf(low_q, mean), stats.poisson.ppf(high_q, mean)
    p = 1.0 / phi
    n = np.clip(mean / (phi - 1.0), 1e-12, None)
    low, high = stats.nbinom.ppf(low_q, n, p), stats.nbinom.ppf(high_q, n, p)
    zero = mean <= 0
    return np.where(zero, 0.0, low), np.where(zero, 0.0, high)


def needs_cold_start(rows: pl.DataFrame, min_rows: int) -> bool:
    """Whether the training rows hold fewer than ``min_rows`` known targets of items that had
    never sold: too few for the model to learn them (an export that lists the whole catalogue at
    once has none), so ``with_cold_start`` should forecast those items instead."""
    unsold = rows.filter(pl.col("days_since_sale").is_null() & pl.col(TARGET).is_not_null())
    return unsold.height < min_rows


def with_cold_start(rows: pl.DataFrame, units: np.ndarray, applies: bool = True) -> np.ndarray:
    """The model's units, except (when the rule ``applies``) for items that have never sold:
    their category's units per item-day on the target weekday (0 where the category has sold
    nothing yet)."""
    if not applies:
        return units
    never_sold = rows["days_since_sale"].is_null().to_numpy()
    category_rate = rows.select(
        pl.col("category_units_per_item_28d").fill_null(0.0)
        * pl.col("category_weekday_shape").fill_null(1.0)
    ).to_series()
    return np.where(never_sold, category_rate.to_numpy(), units)


def baseline_forecasts(rows: pl.DataFrame) -> dict[str, np.ndarray]:
    """Seasonal naive (the same weekday's units a week before; at weekly grain, last week's
    units) and the 28-day moving average (at weekly grain, the four-week one)."""
    return {
        "seasonal_naive": rows["units_same_weekday"].fill_null(0.0).to_numpy(),
        # Over the days the item has had, when it is younger than 28 days; per row's period
        # (a day, or a week: then the four-week moving average).
        "moving_average_28d": (
            rows["units_28d"].fill_null(0.0)
            / (rows["age"] + 1).clip(upper_bound=28)
            * rows["period_days"].cast(pl.Float64)
        ).to_numpy(),
    }


def naive_scale(
    daily: pl.LazyFrame, before: date, by: str = "item_id", value: str = TARGET
) -> float:
    """Mean |value - value a week earlier| per ``by`` over days before ``before``: MASE's
    yardstick (the in-sample error of the seasonal naive forecast)."""
    diffs = (
        daily.filter(pl.col("date") < before)
        .sort(by, "date")
        .select((pl.col(value) - pl.col(value).shift(7).over(by)).abs().mean())
        .collect()
        .item()
    )
    return float(diffs) if diffs else float("nan")


def accuracy(actual: np.ndarray, predicted: np.ndarray, scale: float) -> dict[str, float | None]:
    """WAPE, bias (both relative to units sold) and MASE of a forecast."""
    sold = float(actual.sum())
    error = predicted - actual
    return {
        "wape": float(np.abs(error).sum() / sold) if sold else None,
        "bias": float(error.sum() / sold) if sold else None,
        "mase": float(np.abs(error).mean() / scale) if scale and math.isfinite(scale) else None,
    }


FORECASTERS = ("model", "seasonal_naive", "moving_average_28d")


def category_sums(rows: pl.DataFrame, predictions: dict[str, np.ndarray]) -> pl.DataFrame:
    """Units and each forecaster's forecast summed per origin, category, target day and horizon."""
    named = rows.select("origin", "category", "target_date", "horizon", TARGET).with_columns(
        **{name: pl.Series(values, dtype=pl.Float64) for name, values in predictions.items()}
    )
    return named.group_by("origin", "category", "target_date", "horizon").agg(
        pl.col(TARGET, *predictions).sum()
    )


def backtest_table(
    folds: list[tuple[pl.DataFrame, dict[str, np.ndarray], float, float]],
) -> list[dict[str, Any]]:
    """WAPE, bias and MASE per level (item, category), horizon and forecaster over the folds.

    A fold is (its rows, each forecaster's forecast for them, the item-level MASE scale, the
    category-level one); the scales come from the history before the fold's origin.
    """
    table: list[dict[str, Any]] = []
    per_level: dict[str, list[pl.DataFrame]] = {"item": [], "category": []}
    for rows, predictions, item_scale, category_scale in folds:
        item = rows.select("horizon", TARGET).with_columns(
            **{n: pl.Series(v, dtype=pl.Float64) for n, v in predictions.items()},
            _scale=pl.lit(item_scale),
        )
        category = category_sums(rows, predictions).with_columns(_scale=pl.lit(category_scale))
        per_level["item"].append(item.select("horizon", TARGET, *predictions, "_scale"))
        per_level["category"].append(category.select("horizon", TARGET, *predictions, "_scale"))
    for level, parts in per_level.items():
        frame = pl.concat(parts)
        groups = [("all", frame), *((str(h), g) for (h,), g in frame.group_by("horizon"))]
        for horizon, group in sorted(groups, key=lambda g: (g[0] != "all", g[0].zfill(3))):
            actual = group[TARGET].to_numpy()
            for name in FORECASTERS:
                predicted = group[name].to_numpy()
                # MASE per row against its fold's scale, then averaged: folds may differ in scale.
                mase = float(np.mean(np.abs(predicted - actual) / group["_scale"].to_numpy()))
                scores = accuracy(actual, predicted, 1.0) | {"mase": mase}
                table.append({"level": level, "horizon": horizon, "forecaster": name} | scores)
    return table


def backtest_winner(table: list[dict[str, Any]], level: str = "item") -> dict[str, bool]:
    """Whether the model's all-horizon WAPE and MASE at ``level`` beat every baseline's."""
    overall = {r["forecaster"]: r for r in table if r["level"] == level and r["horizon"] == "all"}
    model = overall["model"]
    return {
        metric: all(model[metric] < overall[b][metric] for b in FORECASTERS[1:])
        for metric in ("wape", "mase")
    }


def item_forecast(
    rows: pl.DataFrame, mean: np.ndarray, phi: float, coverage: float, version: str
) -> pl.DataFrame:
    """Per item and target day: the expected units and a ``coverage`` prediction interval."""
    lower, upper = interval(mean, phi, coverage)
    return rows.select(
        "item_id",
        "category",
        "target_date",
        "horizon",
        pl.Series("forecast", mean, dtype=pl.Float64),
        pl.Series("lower", lower, dtype=pl.Float64),
        pl.Series("upper", upper, dtype=pl.Float64),
        (pl.col("age") + 1).cast(pl.Int32).alias("history_days"),
        pl.col("promotion").cast(pl.Boolean),
        pl.lit(version).alias("model_version"),
    )


def category_forecast(
    items: pl.DataFrame, phi: float, coverage: float, version: str
) -> pl.DataFrame:
    """Per category and target day: the summed item forecasts and the interval of that sum."""
    sums = (
        items.group_by("category", "target_date", "horizon")
        .agg(pl.col("forecast").sum(), pl.len().cast(pl.Int32).alias("items"))
        .sort("category", "target_date")
    )
    lower, upper = interval(sums["forecast"].to_numpy(), phi, coverage)
    return sums.with_columns(
        pl.Series("lower", lower, dtype=pl.Float64),
        pl.Series("upper", upper, dtype=pl.Float64),
        pl.lit(version).alias("model_version"),
    )


def price_scenarios(
    rows: pl.DataFrame,
    mean: np.ndarray,
    predict: Any,
    top_items: int,
    changes: list[float],
    version: str,
) -> pl.DataFrame:
    """For the ``top_items`` with the largest forecast: the horizon's units if our price changed
    by each of ``changes`` (0 = as is) on every target day, competitors' prices unchanged."""
    totals = (
        rows.select("item_id", pl.Series("_mean", mean))
        .group_by("item_id")
        .agg(pl.col("_mean").sum())
        .sort("_mean", "item_id", descending=[True, False])
        .head(top_items)
    )
    top = rows.join(totals.select("item_id"), on="item_id", how="semi")
    parts = []
    for change in changes:
        moved = with_price_features(top.with_columns(pl.col("price") * (1.0 + change)))
        units = predict(moved)
        parts.append(
            moved.with_columns(pl.Series("_units", units, dtype=pl.Float64))
            .group_by("item_id", "category")
            .agg(
                pl.col("price").filter(pl.col("horizon") == 1).first(),
                (pl.col("gap_to_median").filter(pl.col("horizon") == 1).first() * 100).alias(
                    "gap_pct"
                ),
                pl.col("_units").sum().alias("forecast_units"),
            )
            .with_columns(pl.lit(change * 100.0).alias("price_change_pct"))
        )
    scenarios = pl.concat(parts)
    as_is = scenarios.filter(pl.col("price_change_pct") == 0.0).select(
        "item_id", pl.col("forecast_units").alias("_as_is")
    )
    return (
        scenarios.join(as_is, on="item_id", how="left")
        .with_columns(
            ((pl.col("forecast_units") / pl.col("_as_is") - 1.0) * 100).alias("vs_as_is_pct"),
            pl.lit(version).alias("model_version"),
        )
        .drop("_as_is")
        .sort("item_id", "price_change_pct")
        .select(
            "item_id",
            "category",
            "price_change_pct",
            "price",
            "gap_pct",
            "forecast_units",
            "vs_as_is_pct",
            "model_version",
        )
    )
