"""Demand forecast pieces on tiny literal frames: sales, the panel, rows without leakage,
indicators as of a day, intervals and the backtest's arithmetic."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nightowl.schemas.config import MarketSettings
from nightowl.tasks.market.forecast import (
    FORECASTERS,
    TARGET,
    accuracy,
    backtest_table,
    category_panel,
    daily_sales,
    demand_rows,
    feature_names,
    fit_demand,
    indicator_panel,
    interval,
    item_day_panel,
    matrix,
    naive_scale,
    needs_cold_start,
    sales_grain,
    weekly_demand_rows,
    with_cold_start,
    with_price_features,
)
from nightowl.tasks.market.prices import (
    item_day_market,
    our_daily_prices,
    paid_price_history,
    with_paid_prices,
)

D1 = date(2026, 10, 1)


def day(n: int) -> date:
    return D1 + timedelta(days=n - 1)


def test_daily_sales_sum_purchased_units_and_count_views_per_item_day():
    t = datetime(2026, 10, 1, 23, 30, tzinfo=UTC)
    events = pl.LazyFrame(
        {
            "event_type": ["purchase", "purchase", "view", "purchase", "add_to_cart", "purchase"],
            "item_id": ["a", "a", "a", "a", "a", None],
            "event_time": [t, t, t, t + timedelta(hours=1), t, t],
            "quantity": [2, None, None, 1, 1, 1],
        }
    )
    out = daily_sales(events).collect().sort("date")
    assert out.select("date", TARGET, "views").rows() == [(day(1), 3.0, 1.0), (day(2), 1.0, 0.0)]


def market_grid(
    days: int, items: dict[str, str], price: float = 10.0, promoted: frozenset[int] = frozenset()
) -> pl.DataFrame:
    """Every item every day at ``price``, one competitor at 10, items mapped to categories, on
    promotion on the ``promoted`` days."""
    return pl.DataFrame(
        [
            {
                "item_id": item,
                "date": day(n),
                "our_price": price,
                "active": True,
                "category": cat,
                "competitor_min": 10.0,
                "competitor_median": 10.0,
                "competitor_max": 10.0,
                "competitors": 1,
                "gap_pct": (price / 10 - 1) * 100,
                "our_rank": 1,
                "promotion": n in promoted,
                "price_set": True,
            }
            for item, cat in items.items()
            for n in range(1, days + 1)
        ]
    )


def sales_frame(units: dict[tuple[str, int], float]) -> pl.LazyFrame:
    return pl.LazyFrame(
        {
            "item_id": [k[0] for k in units],
            "date": [day(k[1]) for k in units],
            TARGET: list(units.values()),
            "views": [10.0 * v for v in units.values()],
        }
    )


def test_panel_rolls_units_over_the_items_own_days():
    grid = market_grid(10, {"a": "Toys"})
    panel = item_day_panel(grid.lazy(), sales_frame({("a", 1): 2.0, ("a", 9): 1.0})).collect()
    last = panel.row(-1, named=True)
    assert last["units_7d"] == 1.0 and last["units_28d"] == 3.0
    assert last["days_since_sale"] == 1 and last["age"] == 9
    assert last["units_same_weekday_4w"] == 0.0  # day 10 and day 3: nothing sold
    assert panel.filter(pl.col("date") == day(8))["units_same_weekday_4w"].item() == 2.0


def _rows(sales: dict[tuple[str, int], float], origins: list[date], **kw) -> pl.DataFrame:
    grid = market_grid(kw.pop("days", 40), {"a": "Toys", "b": "Toys", "c": "Garden"})
    panel = item_day_panel(grid.lazy(), sales_frame(sales)).collect()
    cats = category_panel(panel.lazy()).collect()
    return demand_rows(panel.lazy(), cats.lazy(), None, origins, 7, kw.pop("holidays", []))


def test_rows_cover_every_active_item_and_horizon_with_targets_where_known():
    rows = _rows({("a", 30): 4.0}, [day(30), day(37)], days=36, holidays=[day(31)])
    assert rows.height == 2 * 3 * 7
    first = rows.filter((pl.col("origin") == day(30)) & (pl.col("item_id") == "a"))
    assert first["target_date"].to_list() == [day(30 + h) for h in range(7)]
    assert first[TARGET].to_list() == [4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert first["holiday"].to_list() == [0, 1, 0, 0, 0, 0, 0]
    later = rows.filter(pl.col("origin") == day(37))
    assert later[TARGET].is_null().all()  # beyond the data: to forecast, not to learn from
    assert later["price"].null_count() == 0  # today's price stands for the days ahead


@settings(max_examples=25, deadline=None)
@given(
    before=st.lists(st.integers(0, 5), min_size=30, max_size=30),
    after=st.lists(st.integers(0, 5), min_size=10, max_size=10),
)
def test_features_at_an_origin_never_see_its_day_or_later(before, after):
    """Sales on or after the origin change the targets, never a feature."""
    sales = {("a", n + 1): float(u) for n, u in enumerate(before)}
    quiet = _rows(sales, [day(31)])
    sales |= {("a", 31 + n): float(u) for n, u in enumerate(after)}
    busy = _rows(sales, [day(31)])
    names = feature_names(quiet)
    assert busy.select(names).equals(quiet.select(names))


def test_a_new_item_has_no_history_but_its_categorys_shape():
    grid = pl.concat([market_grid(40, {"a": "Toys"}), market_grid(40, {"n": "Toys"})[-3:]])
    sales = {("a", n): float(n % 7 == 0) * 7 for n in range(1, 41)}  # a weekly peak
    panel = item_day_panel(grid.lazy(), sales_frame(sales)).collect()
    cats = category_panel(panel.lazy()).collect()
    rows = demand_rows(panel.lazy(), cats.lazy(), None, [day(41)], 7, [])
    new = rows.filter(pl.col("item_id") == "n").sort("horizon")
    assert new["age"].to_list() == [2] * 7 and new["units_28d"].to_list() == [0.0] * 7
    shape = new["category_weekday_shape"].to_list()
    assert max(shape) == pytest.approx(7.0) and sorted(shape)[:6] == [0.0] * 6


def test_a_promotion_set_for_a_target_day_is_known_else_todays_stands():
    grid = market_grid(40, {"a": "Toys"}, promoted=frozenset({30, 31, 38}))
    panel = item_day_panel(grid.lazy(), sales_frame({("a", 1): 1.0})).collect()
    cats = category_panel(panel.lazy()).collect()
    rows = demand_rows(panel.lazy(), cats.lazy(), None, [day(30), day(36), day(41)], 7, [])
    by_origin = {o: g.sort("horizon")["promotion"].to_list() for (o,), g in rows.group_by("origin")}
    assert by_origin[day(30)] == [1, 1, 0, 0, 0, 0, 0]  # the promotion as it was set
    assert by_origin[day(36)] == [0, 0, 1, 0, 0, 0, 0]
    assert by_origin[day(41)] == [0] * 7  # beyond the data: as on the last day
    assert "promotion" in feature_names(rows)


def test_a_promotion_that_doubles_sales_is_learned():
    """Items on promotion one week in five sell twice as much: the fitted model must forecast
    clearly more for the same rows with the promotion flag set."""
    rng = np.random.default_rng(5)
    items = {f"i{k:02d}": ("Toys", "Garden")[k % 2] for k in range(40)}
    start = {item: int(rng.integers(0, 35)) for item in items}
    promoted = {
        item: frozenset(n for n in range(1, 121) if (n + start[item]) % 35 < 7) for item in items
    }
    grid = pl.concat([market_grid(120, {i: c}, promoted=promoted[i]) for i, c in items.items()])
    rate = {item: float(rng.uniform(0.5, 3.0)) for item in items}
    sales = {
        (item, n): float(rng.poisson(rate[item] * (2.0 if n in promoted[item] else 1.0)))
        for item in items
        for n in range(1, 121)
    }
    panel = item_day_panel(grid.lazy(), sales_frame(sales)).collect()
    cats = category_panel(panel.lazy()).collect()
    origins = [day(n) for n in range(36, 115)]
    rows = demand_rows(panel.lazy(), cats.lazy(), None, origins, 7, [])
    cfg = MarketSettings(min_data_in_leaf=20, max_rounds=300, early_stopping_rounds=20)
    booster, _ = fit_demand(rows, day(121), cfg)
    last = rows.filter(pl.col("origin") == day(114))
    names = feature_names(rows)

    def units(promotion: int) -> float:
        flagged = last.with_columns(pl.lit(promotion, pl.Int8).alias("promotion"))
        return float(booster.predict(matrix(flagged, names)).sum())

    assert units(1) > 1.5 * units(0)


def test_a_planned_price_and_promotion_are_the_target_days_own():
    grid = market_grid(40, {"a": "Toys", "b": "Toys"})
    panel = item_day_panel(grid.lazy(), sales_frame({("a", 1): 1.0})).collect()
    cats = category_panel(panel.lazy()).collect()
    planned = pl.DataFrame(
        {
            "item_id": ["a"] * 7,
            "date": [day(41 + k) for k in range(7)],
            "our_price": [10.0, 10.0, 12.0, 12.0, 12.0, 12.0, 12.0],
            "promotion": [False, False, False, True, True, False, False],
            "price_set": [True] * 7,
        }
    )
    rows = demand_rows(panel.lazy(), cats.lazy(), None, [day(41)], 7, [], planned)
    a = rows.filter(pl.col("item_id") == "a").sort("horizon")
    assert a["price"].to_list() == [10.0, 10.0, 12.0, 12.0, 12.0, 12.0, 12.0]
    assert a["promotion"].to_list() == [0, 0, 0, 1, 1, 0, 0]
    assert a["overpriced"].to_list() == [0, 0, 1, 1, 1, 1, 1]
    assert a[TARGET].is_null().all()
    b = rows.filter(pl.col("item_id") == "b")
    assert b["price"].unique().to_list() == [10.0]  # no plan: today's price stands


def test_items_that_never_sold_get_their_categorys_weekday_rate_not_the_models():
    rows = pl.DataFrame(
        {
            "days_since_sale": [3, None, None],
            "category_units_per_item_28d": [0.5, 0.5, None],
            "category_weekday_shape": [1.2, 1.2, None],
        }
    )
    units = with_cold_start(rows, np.array([2.0, 700.0, 700.0]))
    assert units.tolist() == pytest.approx([2.0, 0.6, 0.0])
    history = rows.with_columns(pl.Series(TARGET, [1.0, 0.0, 2.0]))
    assert needs_cold_start(history, 3)  # two unsold rows: too few to learn from
    assert not needs_cold_start(history, 2)


def _paid_panel(sales: list[tuple[int, float, int]]) -> pl.DataFrame:
    """The panel of item "a", listed in one catalogue export on day 40 (a one-off dump) and
    priced before it by its (day, price, units) purchases."""
    t0 = datetime(2026, 10, 1, 12, tzinfo=UTC)
    events = pl.LazyFrame(
        {
            "event_type": ["purchase"] * len(sales),
            "item_id": ["a"] * len(sales),
            "event_time": [t0 + timedelta(days=n - 1) for n, _, _ in sales],
            "quantity": [u for _, _, u in sales],
            "price": [p for _, p, _ in sales],
        }
    )
    export = pl.LazyFrame(
        {"item_id": ["a"], "date": [day(40)], "our_price": [10.0], "active": [True],
         "promotion": [None], "category": ["Toys"], "price_set": [True]},
        schema_overrides={"promotion": pl.Boolean},
    )  # fmt: skip
    history = with_paid_prices(export, paid_price_history(events))
    quotes = pl.LazyFrame(schema={"date": pl.Date, "item_id": pl.String, "price": pl.Float64})
    grid = item_day_market(our_daily_prices(history, day(45)), quotes)
    return item_day_panel(grid, daily_sales(events)).collect()


def test_prices_read_off_sales_never_tell_the_rows_of_an_earlier_origin_about_those_sales():
    before = [(n, 10.0, 1) for n in range(1, 30, 3)]
    later = [(31, 7.0, 5), (33, 12.0, 2)]  # on and after the origin, at other prices
    rows = []
    for sales in (before, before + later):
        panel = _paid_panel(sales)
        cats = category_panel(panel.lazy()).collect()
        rows.append(demand_rows(panel.lazy(), cats.lazy(), None, [day(31)], 7, []))
    names = feature_names(rows[0])
    assert rows[1].select(names).equals(rows[0].select(names))
    assert rows[0]["price"].unique().to_list() == [10.0]  # the last price paid before day 31


def test_items_without_a_category_share_one_for_category_features_and_indicators():
    grid = market_grid(40, {"a": None, "b": None}).with_columns(pl.col("category").cast(pl.String))
    panel = item_day_panel(grid.lazy(), sales_frame({("a", 30): 3.0, ("b", 32): 1.0})).collect()
    cats = category_panel(panel.lazy()).collect()
    series = pl.LazyFrame(
        {"date": [day(20)], "indicator": ["fx"], "value": [1.2], "dimension": [None]},
        schema_overrides={"dimension": pl.String},
    )
    days = sorted(panel["date"].unique().to_list())
    indicators, _ = indicator_panel(series, days, [None], 30)
    rows = demand_rows(panel.lazy(), cats.lazy(), indicators, [day(41)], 7, [])
    assert rows["category_units_per_item_28d"].null_count() == 0
    assert rows["ind_fx"].to_list() == [1.2] * rows.height


def test_price_features_follow_the_price_we_set():
    rows = pl.DataFrame(
        {
            "price": [9.0, 11.0],
            "_price_28d": [10.0, 10.0],
            "competitor_median": [10.0, 10.0],
            "competitor_min": [8.0, 8.0],
        }
    )
    out = with_price_features(rows)
    assert out["overpriced"].to_list() == [0, 1]
    assert out["gap_to_median"].to_list() == pytest.approx([-0.1, 0.1])
    assert out["price_vs_28d"].to_list() == pytest.approx([0.9, 1.1])


def test_indicators_are_taken_as_of_each_day_and_dropped_when_stale():
    frame = pl.LazyFrame(
        {
            "date": [day(1), day(5), day(1), day(3)],
            "indicator": ["fx", "fx", "trend", "trend"],
            "value": [1.0, 2.0, 100.0, 110.0],
            "dimension": [None, None, "Toys", "Toys"],
        }
    )
    days = [day(n) for n in range(1, 10)]
    grid, stale = indicator_panel(frame, days, ["Toys", "Garden"], max_staleness=2)
    toys = grid.filter(pl.col("category") == "Toys").sort("date")
    assert toys["ind_fx"].to_list() == [1.0, 1.0, 1.0, None, 2.0, 2.0, 2.0, None, None]
    assert toys["ind_trend"].to_list()[:6] == [100.0, 100.0, 110.0, 110.0, 110.0, None]
    assert grid.filter(pl.col("category") == "Garden")["ind_trend"].is_null().all()
    assert {s["indicator"]: s["stale"] for s in stale} == {"fx": True, "trend": True}
    assert {s["indicator"]: s["last_seen"] for s in stale} == {
        "fx": "2026-10-05",
        "trend": "2026-10-03",
    }


@pytest.mark.parametrize("phi", [1.0, 2.5])
def test_intervals_cover_about_their_share_of_simulated_counts(phi):
    rng = np.random.default_rng(3)
    mean = rng.uniform(0.2, 30, size=20_000)
    # Poisson, or a negative binomial with variance phi * mean
    nb = phi > 1
    draws = rng.negative_binomial(mean / (phi - 1), 1 / phi) if nb else rng.poisson(mean)
    low, high = interval(mean, phi, 0.8)
    covered = np.mean((draws >= low) & (draws <= high))
    assert 0.8 <= covered <= 0.9  # discrete quantiles include their edges: a little over
    assert np.all(low <= mean) and np.all(mean <= high + 1)
    zero_low, zero_high = interval(np.array([0.0]), phi, 0.8)
    assert zero_low[0] == zero_high[0] == 0


def test_accuracy_measures():
    actual, predicted = np.array([2.0, 0.0, 2.0]), np.array([1.0, 1.0, 2.0])
    assert accuracy(actual, predicted, 0.5) == {"wape": 0.5, "bias": 0.0, "mase": 4 / 3}
    assert accuracy(np.zeros(2), np.ones(2), 1.0)["wape"] is None


def test_naive_scale_is_the_in_sample_seasonal_naive_error():
    frame = pl.LazyFrame(
        {
            "item_id": ["a"] * 15,
            "date": [day(n) for n in range(1, 16)],
            TARGET: [float(n % 2) for n in range(1, 16)],
        }
    )
    assert naive_scale(frame, day(16)) == 1.0  # a week apart the parity flips: off by one
    assert np.isnan(naive_scale(frame, day(8)))  # no day has a week before it


def test_backtest_table_scores_each_level_horizon_and_forecaster():
    rows = pl.DataFrame(
        {
            "origin": [day(8)] * 4,
            "category": ["Toys", "Toys", "Toys", "Toys"],
            "target_date": [day(8), day(8), day(9), day(9)],
            "horizon": [1, 1, 2, 2],
            TARGET: [1.0, 3.0, 2.0, 2.0],
        }
    )
    predictions = {
        "model": np.array([1.0, 3.0, 2.0, 2.0]),
        "seasonal_naive": np.array([0.0, 0.0, 0.0, 0.0]),
        "moving_average_28d": np.array([3.0, 1.0, 2.0, 2.0]),
    }
    table = backtest_table([(rows, predictions, 1.0, 2.0)])
    assert len(table) == 2 * 3 * len(FORECASTERS)
    get = {(r["level"], r["horizon"], r["forecaster"]): r for r in table}
    assert get["item", "all", "model"]["wape"] == 0.0
    assert get["item", "1", "moving_average_28d"]["wape"] == 1.0
    assert get["category", "1", "moving_average_28d"]["wape"] == 0.0  # errors cancel in the sum
    assert get["category", "all", "seasonal_naive"]["mase"] == 4.0 / 2.0


def test_discontinued_items_are_not_forecast():
    grid = market_grid(20, {"a": "Toys", "b": "Toys"}).with_columns(
        active=~((pl.col("item_id") == "b") & (pl.col("date") >= day(15)))
    )
    panel = item_day_panel(grid.lazy(), sales_frame({("b", 3): 1.0})).collect()
    cats = category_panel(panel.lazy()).collect()
    rows = demand_rows(panel.lazy(), cats.lazy(), None, [day(10), day(21)], 7, [])
    assert rows.filter(pl.col("origin") == day(10))["item_id"].unique().sort().to_list() == [
        "a",
        "b",
    ]
    assert rows.filter(pl.col("origin") == day(21))["item_id"].unique().to_list() == ["a"]


def _weekly_rows(sales: dict[tuple[str, int], float], origins: list[date], **kw) -> pl.DataFrame:
    grid = market_grid(kw.pop("days", 50), {"a": "Toys", "b": "Toys", "c": "Garden"})
    panel = item_day_panel(grid.lazy(), sales_frame(sales)).collect()
    cats = category_panel(panel.lazy()).collect()
    return weekly_demand_rows(
        panel.lazy(), cats.lazy(), None, origins, kw.pop("weeks", 1), kw.pop("holidays", [])
    )


def test_weekly_rows_hold_the_week_s_units_and_the_weeks_before():
    sales = {("a", 22): 1.0, ("a", 29): 2.0, ("a", 36): 3.0, ("a", 37): 4.0, ("a", 43): 5.0}
    rows = _weekly_rows(sales, [day(36), day(43)], days=49, weeks=1, holidays=[day(38)])
    first = rows.filter((pl.col("origin") == day(36)) & (pl.col("item_id") == "a")).row(
        0, named=True
    )
    assert first["target_date"] == day(42) and first["horizon"] == 7
    assert first[TARGET] == 7.0  # days 36 to 42
    assert first["units_7d"] == first["units_same_weekday"] == 2.0  # days 29 to 35
    assert first["units_week_minus_1"] == 1.0 and first["units_week_minus_2"] == 0.0
    assert first["holiday"] == 1 and first["period_days"] == 7
    assert rows.filter(pl.col("origin") == day(43))[TARGET].to_list() == [5.0, 0.0, 0.0]
    assert rows.height == 2 * 3 and set(feature_names(rows)).isdisjoint({"period_days"})


@settings(max_examples=20, deadline=None)
@given(
    before=st.lists(st.integers(0, 5), min_size=35, max_size=35),
    after=st.lists(st.integers(0, 5), min_size=14, max_size=14),
)
def test_weekly_features_never_see_the_origin_or_later(before, after):
    sales = {("a", n + 1): float(u) for n, u in enumerate(before)}
    quiet = _weekly_rows(sales, [day(36)], weeks=2)
    sales |= {("a", 36 + n): float(u) for n, u in enumerate(after)}
    busy = _weekly_rows(sales, [day(36)], weeks=2)
    names = feature_names(quiet)
    assert busy.select(names).equals(quiet.select(names))
    known = busy.filter(pl.col("item_id") == "a").sort("horizon")[TARGET].to_list()
    assert known == [float(sum(after[:7])), float(sum(after[7:]))]


def test_the_grain_is_a_week_when_the_units_land_on_one_weekday():
    grid = market_grid(70, {"a": "Toys"})
    daily = item_day_panel(grid.lazy(), sales_frame({("a", n): 1.0 for n in range(1, 71)}))
    weekly = item_day_panel(grid.lazy(), sales_frame({("a", n): 7.0 for n in range(1, 71, 7)}))
    assert sales_grain(daily.collect()) == "day"
    assert sales_grain(weekly.collect()) == "week"
    assert sales_grain(daily.collect().with_columns(pl.lit(0.0).alias(TARGET))) == "day"
