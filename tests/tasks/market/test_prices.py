"""Our price history, competitor quotes and price position on tiny literal frames."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from nightowl.tasks.market.prices import (
    competitor_quotes,
    item_day_market,
    our_daily_prices,
    our_price_history,
    paid_price_history,
    planned_prices,
    price_position,
    with_paid_prices,
)

D1 = date(2026, 11, 1)


def day(n: int) -> date:
    return D1 + timedelta(days=n - 1)


def raw_items(rows: list[tuple[str, str, float | None, bool | None]]) -> pl.LazyFrame:
    """(item, landing file, price, active) rows as the raw layer holds them, in arrival order."""
    return pl.LazyFrame(
        {
            "item_id": [r[0] for r in rows],
            "source_file": [r[1] for r in rows],
            "price": [r[2] for r in rows],
            "active": [r[3] for r in rows],
            "category": ["Toys"] * len(rows),
            "_run": ["2026-11-20"] * len(rows),
            "source_row": list(range(1, len(rows) + 1)),
        },
        schema_overrides={"price": pl.Float64, "active": pl.Boolean},
    )


def quotes(rows: list[tuple[int, str, str, float]]) -> pl.LazyFrame:
    """(day number, item, competitor, price) rows of the clean market_prices table."""
    return pl.LazyFrame(
        {
            "date": [day(r[0]) for r in rows],
            "item_id": [r[1] for r in rows],
            "competitor": [r[2] for r in rows],
            "price": [r[3] for r in rows],
        }
    )


def test_a_rows_day_is_its_files_date_else_its_run():
    raw = raw_items([("a", "2026-11-03.jsonl", 10.0, True), ("b", "catalogue.jsonl", 5.0, True)])
    history = our_price_history(raw).collect()
    assert history.select("item_id", "date").rows() == [("a", day(3)), ("b", date(2026, 11, 20))]


def test_daily_prices_carry_the_latest_export_forward_and_the_last_row_of_a_day_wins():
    raw = raw_items(
        [
            ("a", "2026-11-01.jsonl", 10.0, True),
            ("a", "2026-11-03.jsonl", 11.0, True),
            ("a", "2026-11-03.jsonl", 12.0, None),  # a correction the same day
            ("a", "2026-11-04.jsonl", None, False),  # only the activity changed
            ("a", "2026-11-05.jsonl", 0.0, None),  # a free line: states no price
        ]
    )
    daily = our_daily_prices(our_price_history(raw), day(5)).collect()
    assert daily.select("date", "our_price", "active").rows() == [
        (day(1), 10.0, True),
        (day(2), 10.0, True),
        (day(3), 12.0, True),
        (day(4), 12.0, False),
        (day(5), 12.0, False),
    ]


def test_a_promotion_holds_from_the_export_that_starts_it_to_the_one_that_ends_it():
    raw = raw_items(
        [
            ("a", "2026-11-01.jsonl", 10.0, True),
            ("b", "2026-11-01.jsonl", 5.0, True),
            ("a", "2026-11-02.jsonl", None, None),
            ("a", "2026-11-04.jsonl", None, None),
        ]
    ).with_columns(promotion=pl.Series([None, None, True, False], dtype=pl.Boolean))
    daily = our_daily_prices(our_price_history(raw), day(5)).collect()
    assert daily.filter(pl.col("item_id") == "a")["promotion"].to_list() == [
        False, True, True, False, False,
    ]  # fmt: skip
    assert not daily.filter(pl.col("item_id") == "b")["promotion"].any()  # never said: none
    assert daily.filter(pl.col("item_id") == "a")["our_price"].to_list() == [10.0] * 5


def test_raw_items_without_a_promotion_column_mean_no_promotions():
    raw = raw_items([("a", "2026-11-01.jsonl", 1.0, True)])
    daily = our_daily_prices(our_price_history(raw), D1)
    assert daily.collect()["promotion"].to_list() == [False]


def test_planned_prices_are_the_days_after_the_last_one_that_a_plan_changes():
    raw = raw_items(
        [
            ("a", "2026-11-01.jsonl", 10.0, True),
            ("b", "2026-11-01.jsonl", 5.0, True),
            ("a", "2026-11-04.jsonl", 8.0, None),  # planned on day 1 for day 4
        ]
    ).with_columns(promotion=pl.Series([None, None, True], dtype=pl.Boolean))
    history = our_price_history(raw)
    plan = planned_prices(history, day(2), horizon=3).collect()
    assert plan.drop("price_set").rows() == [
        ("a", day(3), 10.0, False), ("a", day(4), 8.0, True), ("a", day(5), 8.0, True),
    ]  # fmt: skip
    today = our_daily_prices(history, day(2)).collect()
    assert today["our_price"].to_list() == [10.0, 10.0, 5.0, 5.0]  # the plan is not in force yet


def test_before_an_items_first_export_its_price_is_the_median_paid_that_day():
    t = datetime(2026, 11, 1, 12, tzinfo=UTC)
    events = pl.LazyFrame(
        {
            "event_type": ["purchase", "purchase", "purchase", "view", "purchase", "purchase"],
            "item_id": ["a", "a", "a", "a", "a", "z"],
            "event_time": [t, t, t, t, t + timedelta(days=3), t],
            "price": [9.0, 10.0, 12.0, 1.0, 99.0, 5.0],
        }
    )
    exported = raw_items([("a", "2026-11-03.jsonl", 11.0, True)])
    history = with_paid_prices(our_price_history(exported), paid_price_history(events))
    daily = our_daily_prices(history, day(4)).collect()
    assert daily.select("item_id", "date", "our_price", "category", "active").rows() == [
        ("a", day(1), 10.0, "Toys", True),  # median paid; the export's category
        ("a", day(2), 10.0, "Toys", True),
        ("a", day(3), 11.0, "Toys", True),  # from its first export on, the export's price
        ("a", day(4), 11.0, "Toys", True),
    ]  # z is in no export: not ours to position


def test_a_competitor_quote_is_carried_over_gaps_only_up_to_the_staleness_limit():
    frame = quotes([(1, "a", "x", 10.0), (7, "a", "x", 12.0), (1, "a", "y", 9.0)])
    carried = competitor_quotes(frame, day(8), max_staleness=2).collect().sort("competitor", "date")
    assert carried.filter(pl.col("competitor") == "x").select("date", "price").rows() == [
        (day(1), 10.0), (day(2), 10.0), (day(3), 10.0), (day(7), 12.0), (day(8), 12.0),
    ]  # fmt: skip
    assert carried.filter(pl.col("competitor") == "y")["date"].to_list() == [day(1), day(2), day(3)]


def _ours(rows: list[tuple[int, str, float]]) -> pl.LazyFrame:
    return pl.LazyFrame(
        {
            "item_id": [r[1] for r in rows],
            "date": [day(r[0]) for r in rows],
            "our_price": [r[2] for r in rows],
            "active": [True] * len(rows),
            "promotion": [False] * len(rows),
            "category": ["Toys"] * len(rows),
        }
    )


def test_market_stats_rank_us_among_the_competitors():
    ours = _ours([(1, "a", 11.0), (1, "b", 5.0)])
    theirs = quotes([(1, "a", "x", 10.0), (1, "a", "y", 12.0), (1, "a", "z", 10.5)])
    grid = item_day_market(ours, theirs).collect()
    a, b = grid.row(0, named=True), grid.row(1, named=True)
    assert (a["competitor_min"], a["competitor_median"], a["competitor_max"]) == (10.0, 10.5, 12.0)
    assert a["competitors"] == 3 and a["our_rank"] == 3
    assert abs(a["gap_pct"] - (11 / 10.5 - 1) * 100) < 1e-12
    assert b["competitors"] == 0 and b["gap_pct"] is None and b["our_rank"] is None


def test_price_position_counts_days_since_our_change_and_since_the_gap_flipped():
    ours = _ours([(n, "a", p) for n, p in [(1, 10.0), (2, 10.0), (3, 12.0), (4, 12.0), (5, 12.0)]])
    theirs = quotes([(n, "a", "x", 11.0) for n in range(1, 6)])
    grid = item_day_market(ours, theirs)
    row = price_position(grid, day(5)).collect().row(0, named=True)
    assert row["date"] == day(5) and row["our_price"] == 12.0
    assert row["days_since_price_change"] == 2  # 12.0 since day 3
    assert row["days_since_gap_sign_change"] == 2  # below the median until day 3, above since
    first = price_position(grid, day(2)).collect().row(0, named=True)
    assert first["days_since_price_change"] == 1 and first["days_since_gap_sign_change"] == 1


@settings(max_examples=40, deadline=None)
@given(
    prices=st.lists(st.floats(5, 20, allow_nan=False), min_size=6, max_size=6),
    theirs=st.lists(st.floats(5, 20, allow_nan=False), min_size=6, max_size=6),
    later=st.lists(st.floats(5, 20, allow_nan=False), min_size=3, max_size=3),
)
def test_price_position_of_a_day_ignores_everything_after_it(prices, theirs, later):
    ours = [(n + 1, "a", p) for n, p in enumerate(prices)]
    quoted = [(n + 1, "a", "x", p) for n, p in enumerate(theirs)]
    before = price_position(item_day_market(_ours(ours), quotes(quoted)), day(6)).collect()
    ours += [(7 + n, "a", p) for n, p in enumerate(later)]
    quoted += [(7 + n, "a", "x", p) for n, p in enumerate(later)]
    after = price_position(item_day_market(_ours(ours), quotes(quoted)), day(6)).collect()
    assert after.equals(before)
