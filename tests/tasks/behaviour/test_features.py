"""User features as of a date: right numbers on tiny frames, and no leakage from later events."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from nightowl.tasks.behaviour.features import (
    EVENT_TYPES,
    WINDOWS,
    behaviour,
    bucketed_user_features,
    exact_sum,
    feature_names,
    known_history,
    labelled,
    purchase_labels,
    user_features,
)

AS_OF = date(2026, 11, 28)
SCHEMA = {
    "user_id": pl.String,
    "session_id": pl.String,
    "event_time": pl.Datetime("us", "UTC"),
    "event_type": pl.String,
    "item_id": pl.String,
    "order_id": pl.String,
    "quantity": pl.Int64,
    "price": pl.Float64,
}


def events(rows: list[tuple]) -> pl.LazyFrame:
    """Events from (user, session, time, type, item, order, quantity, price) tuples."""
    frame = pl.DataFrame(rows, schema=SCHEMA, orient="row")
    return frame.with_columns(dt=pl.col("event_time").dt.date()).lazy()


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


EVENTS = [
    ("u1", "s1", at(20), "view", "i1", None, None, None),
    ("u1", "s1", at(20, 13), "purchase", "i1", "o1", 2, 10.0),
    ("u1", "s2", at(27), "view", "i2", None, None, None),
    ("u2", "s3", at(1), "view", "i1", None, None, None),
    ("u2", "s4", at(28, 1), "purchase", "i1", "o2", 1, 9.0),  # on as_of: not a feature, a label
]
ITEMS = pl.LazyFrame({"item_id": ["i1", "i2"], "category": ["toys", "books"]})
MARKET = pl.LazyFrame(
    {
        "date": [date(2026, 11, 20)] * 2,
        "item_id": ["i1", "i1"],
        "competitor": ["a", "b"],
        "price": [8.0, 12.0],
    }
)


def test_counts_recency_money_and_affinity_on_a_tiny_frame():
    f = user_features(events(EVENTS), AS_OF, ITEMS, MARKET).collect()
    assert f["user_id"].to_list() == ["u1", "u2"]
    u1 = f.row(0, named=True)
    assert u1["view_n_7d"] == 1 and u1["view_n_28d"] == 2 and u1["purchase_n_28d"] == 1
    assert u1["purchase_recency_days"] == pytest.approx(7.5 - 1 / 24)
    assert u1["recency_days"] == pytest.approx(0.5)
    assert u1["spend_total"] == 20.0 and u1["orders_total"] == 1 and u1["basket_size_90d"] == 2.0
    assert u1["sessions_28d"] == 2 and u1["active_days_28d"] == 2
    assert u1["categories_90d"] == 2 and u1["top_category_share_90d"] == pytest.approx(2 / 3)
    assert u1["paid_vs_market_90d"] == pytest.approx(1.0)  # 10 vs the median of 8 and 12
    assert u1["paid_vs_usual_90d"] == pytest.approx(1.0)
    u2 = f.row(1, named=True)
    assert u2["purchase_n_90d"] == 0 and u2["purchase_recency_days"] is None
    assert u2["return_rate_90d"] is None  # a ratio over nothing is null, not NaN or inf
    assert u2["tenure_days"] == pytest.approx(26.5)


def test_labels_are_purchases_inside_the_horizon():
    labels = purchase_labels(events(EVENTS), AS_OF, 30).collect()
    assert labels["user_id"].to_list() == ["u2"]
    out = labelled(user_features(events(EVENTS), AS_OF), labels.lazy()).collect()
    assert dict(zip(out["user_id"], out["label"], strict=True)) == {"u1": 0, "u2": 1}
    assert purchase_labels(events(EVENTS), AS_OF - timedelta(days=30), 30).collect().height == 1


def test_features_are_finite_or_null():
    f = user_features(events(EVENTS), AS_OF, ITEMS, MARKET).collect()
    numeric = f.select(feature_names(f)).cast(pl.Float64)
    assert not numeric.select(pl.all().is_infinite().any() | pl.all().is_nan().any()).row(0)[0]


def test_without_items_or_market_the_columns_are_there_and_null():
    f = user_features(events(EVENTS), AS_OF).collect()
    with_all = user_features(events(EVENTS), AS_OF, ITEMS, MARKET).collect()
    assert feature_names(f) == feature_names(with_all)
    assert f["top_category_share_90d"].null_count() == f.height


later_event = st.tuples(
    st.sampled_from(["u1", "u2", "u3"]),
    st.sampled_from(["s1", "s9"]),
    st.integers(min_value=0, max_value=60 * 24 * 60),  # minutes on or after as_of
    st.sampled_from(["view", "add_to_cart", "purchase", "return", "remove_from_cart"]),
    st.sampled_from(["i1", "i2", None]),
    st.sampled_from(["o9", None]),
    st.integers(min_value=1, max_value=5),
    st.floats(min_value=0.01, max_value=500),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(later=st.lists(later_event, max_size=20))
def test_events_on_or_after_as_of_change_no_feature(later):
    """No leakage: whatever happens from as_of on, the features as of that date are the same."""
    start = datetime(AS_OF.year, AS_OF.month, AS_OF.day, tzinfo=UTC)
    extra = [
        (u, s, start + timedelta(minutes=m), t, i, o, q, p) for u, s, m, t, i, o, q, p in later
    ]
    market_later = pl.LazyFrame(
        {"date": [AS_OF], "item_id": ["i1"], "competitor": ["a"], "price": [1.0]}
    )
    before = user_features(events(EVENTS), AS_OF, ITEMS, MARKET).collect()
    after = user_features(
        events(EVENTS + extra), AS_OF, ITEMS, pl.concat([MARKET, market_later])
    ).collect()
    assert_frame_equal(before, after)


def feedback(rows: list[tuple]) -> pl.LazyFrame:
    """Feedback from (user, created_at, rating, channel) tuples."""
    schema = {"user_id": pl.String, "created_at": pl.Datetime("us", "UTC"),
              "rating": pl.Int64, "channel": pl.String}  # fmt: skip
    return pl.DataFrame(rows, schema=schema, orient="row").lazy()


FEEDBACK = [
    ("u1", at(20), 1, "review"),
    ("u1", at(25), 5, "survey"),
    ("u1", at(26), None, "support"),
    ("u2", datetime(2026, 8, 1, tzinfo=UTC), 2, "review"),  # more than 90 days before
    (None, at(21), 1, "app_store"),  # no user: counts for nobody
]


def test_feedback_features_count_the_last_90_days_per_user():
    f = user_features(events(EVENTS), AS_OF, feedback=feedback(FEEDBACK)).collect()
    u1, u2 = (f.filter(pl.col("user_id") == u).row(0, named=True) for u in ("u1", "u2"))
    assert (u1["feedback_90d"], u1["negative_feedback_90d"], u1["support_tickets_30d"]) == (3, 1, 1)
    assert u1["mean_rating_90d"] == 3.0
    assert (u2["feedback_90d"], u2["support_tickets_30d"], u2["mean_rating_90d"]) == (0, 0, None)
    without = user_features(events(EVENTS), AS_OF).collect()
    assert feature_names(without) == feature_names(f)
    assert (
        without["feedback_90d"].to_list() == [0, 0] and without["mean_rating_90d"].null_count() == 2
    )


@settings(max_examples=30, deadline=None)
@given(minutes=st.lists(st.integers(min_value=0, max_value=60 * 24 * 30), max_size=10))
def test_feedback_from_as_of_on_changes_no_feature(minutes):
    start = datetime(AS_OF.year, AS_OF.month, AS_OF.day, tzinfo=UTC)
    later = [("u1", start + timedelta(minutes=m), 1, "support") for m in minutes]
    before = user_features(events(EVENTS), AS_OF, feedback=feedback(FEEDBACK)).collect()
    after = user_features(events(EVENTS), AS_OF, feedback=feedback(FEEDBACK + later)).collect()
    assert_frame_equal(before, after)


def test_the_same_events_in_any_order_give_identical_features():
    # Float addition is not associative: features must not depend on the order rows arrive in.
    n = 60_000
    frame = pl.DataFrame(
        {
            "user_id": [f"u{i % 500}" for i in range(n)],
            "session_id": [f"s{i % 4000}" for i in range(n)],
            "event_time": [at(1 + i % 27, i % 24) for i in range(n)],
            "event_type": ["purchase" if i % 3 else "view" for i in range(n)],
            "item_id": [f"i{i % 2}" for i in range(n)],
            "order_id": [f"o{i % 9000}" for i in range(n)],
            "quantity": [1 + i % 4 for i in range(n)],
            "price": [0.1 + (i * 7919 % 1000) / 7.0 for i in range(n)],
        },
        schema=SCHEMA,
    ).with_columns(dt=pl.col("event_time").dt.date())
    first = user_features(frame.lazy(), AS_OF, ITEMS, MARKET).collect()
    for seed in (1, 2):
        shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed).lazy()
        assert first.equals(user_features(shuffled, AS_OF, ITEMS, MARKET).collect())


past_event = st.tuples(
    st.sampled_from([f"u{i}" for i in range(12)] + [None]),
    st.sampled_from(["s1", "s2", "s3"]),
    st.integers(min_value=1, max_value=120 * 24 * 60),  # minutes before as_of
    st.sampled_from(["view", "add_to_cart", "purchase", "return", "remove_from_cart", "share"]),
    st.sampled_from(["i1", "i2", None]),
    st.sampled_from(["o1", "o2", None]),
    st.integers(min_value=1, max_value=5),
    st.floats(min_value=0.01, max_value=500),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(past_event, min_size=1, max_size=60), buckets=st.integers(2, 5))
def test_bucketed_features_are_the_same_rows(rows, buckets):
    """Computing the features a hash bucket of users at a time changes no value."""
    start = datetime(AS_OF.year, AS_OF.month, AS_OF.day, tzinfo=UTC)
    history = events([(u, s, start - timedelta(minutes=m), *rest) for u, s, m, *rest in rows])
    given_feedback = feedback([*FEEDBACK, ("u3", at(22), 4, "review")])
    whole = bucketed_user_features(history, AS_OF, ITEMS, MARKET, given_feedback)
    split = bucketed_user_features(history, AS_OF, ITEMS, MARKET, given_feedback, buckets=buckets)
    assert_frame_equal(whole, split)
    assert whole.equals(user_features(history, AS_OF, ITEMS, MARKET, given_feedback).collect())


def behaviour_one_filter_per_column(history: pl.LazyFrame) -> pl.LazyFrame:
    """``behaviour`` written plainly: one filtered aggregation per column, over the users."""
    days_ago, event_type = pl.col("days_ago"), pl.col("event_type")
    spend = pl.col("quantity").fill_null(1) * pl.col("price")
    bought = event_type == "purchase"
    aggs = [
        days_ago.max().alias("tenure_days"),
        days_ago.min().alias("recency_days"),
        pl.len().alias("events_total"),
        (days_ago < 90).sum().alias("events_90d"),
    ]
    for kind in EVENT_TYPES:
        aggs.append(days_ago.filter(event_type == kind).min().alias(f"{kind}_recency_days"))
        aggs += [
            ((event_type == kind) & (days_ago < w)).sum().alias(f"{kind}_n_{w}d") for w in WINDOWS
        ]
    aggs += [
        exact_sum(spend.filter(bought)).alias("spend_total"),
        exact_sum(spend.filter(bought & (days_ago < 28))).alias("spend_28d"),
        exact_sum(spend.filter(bought & (days_ago < 90))).alias("spend_90d"),
        pl.col("quantity").fill_null(1).filter(bought & (days_ago < 90)).sum().alias("units_90d"),
        days_ago.filter(bought).max().alias("purchase_tenure_days"),
    ]
    return history.group_by("user_id").agg(aggs)


#: Minutes before as_of, often a minute either side of a window's edge.
edge_minutes = st.one_of(
    st.integers(min_value=1, max_value=120 * 24 * 60),
    st.sampled_from([w * 24 * 60 + d for w in WINDOWS for d in (-1, 0, 1)]),
)
event_near_edges = st.tuples(past_event.map(lambda e: e[:2]), edge_minutes, past_event).map(
    lambda t: (*t[0], t[1], *t[2][3:])
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(event_near_edges, min_size=1, max_size=60))
def test_behaviour_per_event_type_spread_into_columns_is_the_plain_aggregation(rows):
    start = datetime(AS_OF.year, AS_OF.month, AS_OF.day, tzinfo=UTC)
    history = known_history(
        events([(u, s, start - timedelta(minutes=m), *rest) for u, s, m, *rest in rows]), AS_OF
    )
    expected = behaviour_one_filter_per_column(history).sort("user_id").collect()
    assert_frame_equal(behaviour(history).sort("user_id").collect(), expected)


def test_btyd_figures_join_every_user_and_are_null_for_who_never_bought():
    from nightowl.tasks.behaviour.features import with_btyd

    frame = pl.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(6)],
            "buying_days_total": [5, 1, 3, 0, 8, 2],
            "purchase_recency_days": [2.0, 60.0, 10.0, None, 1.0, 90.0],
            "purchase_tenure_days": [100.0, 60.0, 80.0, None, 120.0, 110.0],
        }
    )
    out = with_btyd(frame)
    assert out.columns[-2:] == ["btyd_p_alive", "btyd_expected_30d"]  # no as_of here
    dated = with_btyd(frame.with_columns(as_of=pl.lit(date(2026, 1, 1))))
    assert dated.columns[-3:] == ["btyd_p_alive", "btyd_expected_30d", "as_of"]
    never = out.filter(pl.col("user_id") == "u3")
    assert never["btyd_p_alive"].item() is None and never["btyd_expected_30d"].item() is None
    bought = out.filter(pl.col("user_id") != "u3")
    assert bought["btyd_p_alive"].is_between(0, 1).all()
    assert bought.sort("btyd_expected_30d")["user_id"][-1] == "u4"  # most days, most recent
    nobody = with_btyd(frame.filter(pl.col("buying_days_total") == 0))
    assert nobody["btyd_p_alive"].null_count() == nobody.height == 1
