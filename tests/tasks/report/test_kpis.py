"""The report tables from tiny literal frames: every number checked by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nightowl.tasks.report import kpis

AS_OF = date(2026, 11, 28)


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def events(rows: list[tuple]) -> pl.LazyFrame:
    """(user, day, type, item, order, quantity, price) rows as clean events."""
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "user_id": [r[0] for r in rows],
            "event_time": [at(r[1]) for r in rows],
            "event_type": [r[2] for r in rows],
            "item_id": [r[3] for r in rows],
            "order_id": [r[4] for r in rows],
            "session_id": [None] * len(rows),
            "quantity": [r[5] for r in rows],
            "price": [r[6] for r in rows],
        },
        schema_overrides={"session_id": pl.String, "order_id": pl.String, "user_id": pl.String},
    ).lazy()


D1, D2 = AS_OF - timedelta(days=2), AS_OF - timedelta(days=1)
WEEK = AS_OF - timedelta(days=8)
ROWS = [
    ("u1", WEEK, "purchase", "a", "o0", 1, 10.0),  # u1's first purchase, a week before D2
    ("u1", D1, "view", "a", None, 1, None),
    ("u2", D1, "view", "b", None, 1, None),
    ("u2", D1, "purchase", "b", "o1", 2, 5.0),  # u2's first purchase
    ("u1", D2, "purchase", "a", "o2", 1, 10.0),
    ("u1", D2, "purchase", "c", "o2", 3, 2.0),  # same order: one order, 16.0 in all
    ("u3", D2, "view", "a", None, 1, None),
    (None, D2, "purchase", "b", "o3", 1, 5.0),  # a guest: revenue and an order, not a buyer
    ("u2", D2, "return", "b", "o1", 1, 5.0),
    ("u9", AS_OF, "purchase", "a", "o9", 9, 99.0),  # on as_of: not known yet
]
FEEDBACK = pl.DataFrame(
    {
        "created_at": [at(D2), at(D2), at(D1)],
        "rating": [5, 1, 4],
        "sentiment_label": ["positive", "negative", "positive"],
        "item_id": ["a", "a", "b"],
        "sentiment_score": [0.9, 0.1, 0.8],
    }
).lazy()


def _kpis(rows=ROWS, feedback=FEEDBACK, days=10) -> pl.DataFrame:
    ev = events(rows)
    return kpis.kpi_daily(ev, kpis.first_purchase_days(ev, AS_OF), feedback, AS_OF, days)


def test_kpi_daily_counts_one_day_by_hand():
    table = _kpis()
    assert table.height == 10 and table["day"].to_list()[-1] == D2
    d2 = table.row(-1, named=True)
    assert d2["active_users"] == 3  # u1, u2 (a return), u3; the guest is no user
    assert d2["buyers"] == 1 and d2["orders"] == 2  # u1's o2 and the guest's o3
    assert d2["revenue"] == 21.0  # 10 + 3 x 2 + the guest's 5
    assert d2["average_order_value"] == 10.5
    assert d2["conversion"] == pytest.approx(1 / 3, abs=1e-6)
    assert d2["returns"] == 1 and d2["return_value"] == 5.0
    assert d2["new_buyers"] == 0 and d2["returning_buyers"] == 1  # u1 first bought a week ago
    assert d2["feedback"] == 2 and d2["mean_rating"] == 3.0
    assert d2["negative_feedback_share"] == 0.5
    d1 = table.row(-2, named=True)
    assert d1["new_buyers"] == 1 and d1["revenue"] == 10.0 and d1["active_users"] == 2


def test_kpi_changes_are_relative_for_counts_and_differences_for_rates():
    table = _kpis()
    d1, d2 = table.row(-2, named=True), table.row(-1, named=True)
    assert d2["revenue_dod"] == pytest.approx((21.0 - 10.0) / 10.0)
    assert d2["revenue_wow"] == pytest.approx((21.0 - 10.0) / 10.0)  # a week before: u1's 10.0
    assert d2["conversion_dod"] == pytest.approx(1 / 3 - 1 / 2, abs=1e-6)
    assert d2["mean_rating_dod"] == pytest.approx(3.0 - 4.0)
    assert d1["active_users_wow"] is None  # nobody was active a week before D1: no ratio


def test_days_without_data_are_zeros_not_gaps():
    table = _kpis()
    quiet = table.filter(pl.col("day") == AS_OF - timedelta(days=5)).row(0, named=True)
    assert quiet["active_users"] == 0 and quiet["revenue"] == 0.0 and quiet["feedback"] == 0
    assert quiet["conversion"] is None and quiet["mean_rating"] is None


def test_kpi_daily_without_feedback_has_null_ratings():
    table = _kpis(feedback=None)
    assert table["feedback"].sum() == 0 and table["mean_rating"].null_count() == table.height


later = st.tuples(
    st.sampled_from(["u1", "u2", "u7", None]),
    st.integers(0, 30).map(lambda d: AS_OF + timedelta(days=d)),
    st.sampled_from(["view", "purchase", "return"]),
    st.sampled_from(["a", "b", "z"]),
    st.sampled_from(["o1", "o8", None]),
    st.integers(1, 5),
    st.floats(0.5, 500, allow_nan=False),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(later, max_size=12))
def test_events_on_or_after_as_of_change_no_kpi(extra):
    assert _kpis(ROWS + extra).equals(_kpis())


def test_customer_value_nets_returns_and_picks_the_favourite_category():
    items = pl.DataFrame({"item_id": ["a", "b", "c"], "category": ["x", "y", "y"]}).lazy()
    value = kpis.customer_value(events(ROWS), items, AS_OF, 30).collect().sort("user_id")
    assert value["user_id"].to_list() == ["u1", "u2"]  # u3 never bought; the guest is no one
    u1, u2 = value.row(0, named=True), value.row(1, named=True)
    assert u1["value"] == 26.0 and u1["orders"] == 2 and u1["last_purchase"] == D2
    assert u1["favourite_category"] == "x"  # 20.0 on a against 6.0 on c
    assert u2["value"] == 5.0  # 10.0 bought, 5.0 returned


SCORES = pl.DataFrame(
    {
        "user_id": ["u1", "u2", "u3", "u4"],
        "p_purchase_30d": [0.9, 0.2, 0.1, 0.5],
        "churn_risk": [0.1, 0.8, None, 0.5],
        "risk_tier": ["low", "high", "prospect", "medium"],
        "segment": ["champions", "at_risk", "prospect", "at_risk"],
        "model_version": ["m1"] * 4,
    }
)
VALUE = pl.DataFrame(
    {
        "user_id": ["u1", "u2", "u4"],
        "value": [100.0, 50.0, 200.0],
        "orders": [5, 2, 1],
        "last_purchase": [D2, D1, WEEK],
        "favourite_category": ["x", "y", None],
    }
).lazy()


def test_segments_reconcile_with_the_scores():
    table = kpis.segments(SCORES, VALUE)
    assert table["users"].sum() == SCORES.height and table["revenue"].sum() == 350.0
    at_risk = table.filter(pl.col("segment") == "at_risk").row(0, named=True)
    assert at_risk["users"] == 2 and at_risk["revenue"] == 250.0
    assert at_risk["mean_churn_risk"] == pytest.approx(0.65)
    assert at_risk["mean_propensity"] == pytest.approx(0.35)
    assert at_risk["high_risk_users"] == 1 and at_risk["goal"].startswith("win back")
    assert table["segment"][0] == "at_risk"  # most revenue first
    assert table["revenue_share"].sum() == pytest.approx(1.0)


def test_at_risk_customers_rank_by_value_at_risk_with_their_first_recommendation():
    lists = pl.DataFrame(
        {
            "user_id": ["u4", "u4", "u2"],
            "rank": [1, 2, 1],
            "item_id": ["b", "c", "a"],
            "title": ["Bread", "Cheese", "Apple"],
            "reason": ["bought with Apple", "popular", "buy again"],
        }
    )
    table = kpis.at_risk_customers(SCORES, VALUE, lists, AS_OF, top=2)
    assert table["user_id"].to_list() == ["u4", "u2"]  # 200 x 0.5 = 100, then 50 x 0.8 = 40
    assert table["value_at_risk"].to_list() == [100.0, 40.0]
    assert table["top_recommendation_title"].to_list() == ["Bread", "Apple"]
    assert table["days_since_purchase"].to_list() == [8, 2]
    assert table["rank"].to_list() == [1, 2]


def test_product_health_flags_what_needs_a_look():
    catalogue = pl.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "title": ["Apple", "Bread", "Cheese", "Dates"],
            "category": ["x", "y", "y", "x"],
            "price": [10.0, 5.0, 2.0, 1.0],
            "active": [True, True, True, True],
        }
    ).lazy()
    ago = [AS_OF - timedelta(days=d) for d in (1, 2, 3)]
    sales = [("u1", day, "purchase", "a", f"o{day}", 4, 10.0) for day in ago]
    sales += [("u1", AS_OF - timedelta(days=9), "purchase", "b", "p", 1, 5.0)]
    sales += [("u2", AS_OF - timedelta(days=2), "purchase", "c", "q", 1, 2.0)]
    forecast = pl.DataFrame(
        {"item_id": ["a"] * 7, "horizon": list(range(1, 8)), "forecast": [0.5] * 7}
    )
    prices = pl.DataFrame(
        {"item_id": ["a", "c"], "competitor_median": [8.0, 2.0], "gap_pct": [25.0, 0.0],
         "our_rank": [3, 1]}
    )  # fmt: skip
    limits = {"price_gap_pct": 15, "demand_change_pct": 30, "negative_share": 0.4,
              "min_feedback": 2, "min_units": 10}  # fmt: skip
    complaints = pl.DataFrame({"item_id": ["a"], "top_complaint": ["too sour"]})
    table = kpis.product_health(
        catalogue, events(sales), forecast, prices, FEEDBACK, complaints, AS_OF, 28, limits
    )
    rows = {r["item_id"]: r for r in table.iter_rows(named=True)}
    a = rows["a"]
    assert a["units_7d"] == 12 and a["revenue_28d"] == 120.0 and a["forecast_units"] == 3.5
    assert a["forecast_change"] == pytest.approx((3.5 - 12) / 12, abs=1e-4)
    assert a["flags"] == [
        "priced 25% above competitors",
        "forecast 71% below last week",
        "50% of 2 reviews negative",
    ]
    assert a["health"] == "act" and a["top_complaint"] == "too sour"
    assert rows["b"]["units_7d"] == 0 and rows["b"]["units_28d"] == 1
    assert rows["b"]["flags"] == [] and rows["b"]["feedback"] == 1  # one review: too few
    assert rows["c"]["health"] == "ok"  # 1 unit: too few to call its forecast a fall
    assert rows["d"]["flags"] == ["no sales in 28 days"] and rows["d"]["health"] == "watch"
    assert table["item_id"][0] == "a"  # biggest seller first


def test_item_complaints_take_each_items_newest_top_phrase():
    sentiment = pl.DataFrame(
        {
            "level": ["item", "item", "item", "category"],
            "item_id": ["a", "a", "b", None],
            "day": [D1, D2, D2, D2],
            "top_complaints": [["old"], ["new", "other"], [], ["cat"]],
        }
    )
    table = kpis.item_complaints(sentiment)
    assert table.rows() == [("a", "new")]


@settings(max_examples=25, deadline=None)
@given(st.lists(later, min_size=1, max_size=12))
def test_events_on_or_after_as_of_change_no_value_product_or_send_time(extra):
    from nightowl.tasks.report.briefs import send_times

    items = pl.DataFrame(
        {"item_id": ["a", "b", "c", "z"], "title": ["A", "B", "C", "Z"],
         "category": ["x", "y", "y", "x"], "price": [1.0] * 4, "active": [True] * 4}
    ).lazy()  # fmt: skip
    limits = {"price_gap_pct": 15, "demand_change_pct": 30, "negative_share": 0.4,
              "min_feedback": 1, "min_units": 1}  # fmt: skip
    late_feedback = pl.DataFrame(
        {"created_at": [at(AS_OF)], "rating": [1], "sentiment_label": ["negative"],
         "item_id": ["a"], "sentiment_score": [0.0]}
    ).lazy()  # fmt: skip

    def outputs(rows, feedback):
        ev = events(rows)
        return (
            kpis.customer_value(ev, items, AS_OF, 30).collect().sort("user_id"),
            kpis.product_health(items, ev, None, None, feedback, None, AS_OF, 28, limits),
            send_times(ev, SCORES, AS_OF, 30, "Europe/Berlin").sort("segment"),
        )

    before = outputs(ROWS, FEEDBACK)
    after = outputs(ROWS + extra, pl.concat([FEEDBACK, late_feedback]))
    assert all(a.equals(b) for a, b in zip(after, before, strict=True))
