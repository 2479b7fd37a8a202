"""Candidates, features, lists and metrics of the recommender on tiny literal frames."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from nightowl.schemas.config import RecommendSettings
from nightowl.tasks.behaviour.features import user_bucket
from nightowl.tasks.recommend import lists as rec
from nightowl.tasks.recommend.units import buckets

AS_OF = date(2026, 3, 1)
CFG = RecommendSettings(repurchase_min_share=0.5, popular_items=3, trending_items=2)


def at(days_before: float, hour: int = 12) -> datetime:
    return datetime(2026, 3, 1, hour, tzinfo=UTC) - timedelta(days=days_before)


def events(rows: list[tuple]) -> pl.LazyFrame:
    """(user, item, days before AS_OF, type, order) rows as clean events."""
    return pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_time": [at(r[2]) for r in rows],
            "event_type": [r[3] for r in rows],
            "order_id": [r[4] for r in rows],
            "session_id": [None] * len(rows),
            "quantity": [1] * len(rows),
            "price": [10.0] * len(rows),
        },
        schema_overrides={"session_id": pl.String, "event_time": pl.Datetime("us", "UTC")},
    ).lazy()


def market(rows: list[tuple]) -> pl.LazyFrame:
    """(date, item, price) competitor quotes as clean market prices."""
    return pl.DataFrame(
        {
            "date": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "competitor": ["rival"] * len(rows),
            "price": [r[2] for r in rows],
        },
        schema_overrides={"date": pl.Date},
    ).lazy()


CATALOGUE = pl.DataFrame(
    {
        "item_id": ["a", "b", "c", "d", "e", "off"],
        "title": ["Apple", "Bread", "Cheese", "Dates", "Eggs", "Old stock"],
        "category": ["fruit", "bakery", "dairy", "fruit", "dairy", "fruit"],
        "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "active": [True, True, True, None, True, False],
        "created_at": [None] * 6,
    },
    schema_overrides={"created_at": pl.Datetime("us", "UTC")},
).lazy()

HISTORY = [
    ("u1", "a", 20, "purchase", "o1"),
    ("u1", "b", 20, "purchase", "o1"),
    ("u1", "a", 5, "purchase", "o2"),  # u1 buys a again: a repurchase item for u1
    ("u2", "a", 10, "purchase", "o3"),
    ("u2", "b", 10, "purchase", "o3"),
    ("u2", "c", 10, "purchase", "o3"),
    ("u3", "c", 3, "purchase", "o4"),
    ("u3", "off", 3, "purchase", "o4"),
    ("u3", "d", 1, "view", None),
    ("u4", "e", 2, "view", None),  # one event, never bought anything
]


def tables(rows=HISTORY, cfg=CFG, catalogue=CATALOGUE, as_of=AS_OF):
    history = rec.history_as_of(events(rows), catalogue, None, as_of, cfg)
    items = rec.item_tables(history, cfg)
    users = rec.active_users(events(rows), as_of, cfg.active_days)
    ut = rec.user_tables(history, users)
    return history, items, ut


def test_neighbours_are_cosine_similarities_of_shared_baskets():
    history, items, _ = tables()
    pairs = {(r["item_id"], r["other_id"]): r["sim"] for r in items.neighbours.to_dicts()}
    assert pairs[("a", "b")] == pytest.approx(pairs[("b", "a")])
    assert 0 < pairs[("a", "b")] <= 1
    assert ("a", "a") not in pairs and ("c", "d") not in pairs  # d was only viewed
    assert ("a", "c") in pairs  # o3 holds a, b and c
    # Big baskets say little about pairs: above the limit (here o3) they are left out.
    small = rec.neighbours(history, CFG.model_copy(update={"max_basket_items": 2}))
    small_pairs = set(zip(small["item_id"], small["other_id"], strict=True))
    assert ("a", "b") in small_pairs and ("c", "off") in small_pairs
    assert ("a", "c") not in small_pairs


def test_candidates_follow_the_exclusion_rules():
    _, items, ut = tables()
    cands = rec.candidates(ut, items, CFG)
    by_user = {u: set(g["item_id"]) for (u,), g in cands.group_by("user_id")}
    assert "off" not in set(cands["item_id"])  # inactive in the catalogue
    assert "a" in by_user["u1"]  # bought twice: a repurchase item, proposed again
    assert "b" not in by_user["u1"]  # bought once, not a repurchase item: left out
    assert "d" in by_user["u3"]  # viewed, not bought
    assert by_user["u4"]  # one view is enough for a list of popular items
    row = cands.filter((pl.col("user_id") == "u1") & (pl.col("item_id") == "a")).row(0, named=True)
    assert row["source"] == "repeat" and row["repeat_rank"] == 1
    assert cands.select("user_id", "item_id").is_duplicated().sum() == 0

    keep = rec.candidates(ut, items, CFG.model_copy(update={"exclude_bought": False}))
    assert "b" in set(keep.filter(pl.col("user_id") == "u1")["item_id"])


def test_candidates_are_capped_per_user_keeping_each_source_s_best():
    _, items, ut = tables()
    full = rec.candidates(ut, items, CFG)
    capped = rec.candidates(ut, items, CFG.model_copy(update={"max_candidates": 2}))
    assert full.group_by("user_id").len()["len"].max() > 2
    assert capped.group_by("user_id").len()["len"].max() <= 2
    # Round robin: u1's best repeat item and best popular item both survive the cap.
    kept = capped.filter(pl.col("user_id") == "u1")
    assert kept["repeat_rank"].min() == 1 and kept["popular_rank"].min() == 1


def test_the_features_and_reasons_are_those_of_the_candidate():
    history, items, ut = tables()
    feats = rec.ranker_features(rec.candidates(ut, items, CFG), ut, items, history)
    assert list(feats.columns[6:]) == list(rec.FEATURES)
    row = feats.filter((pl.col("user_id") == "u1") & (pl.col("item_id") == "a")).row(0, named=True)
    assert row["ui_purchase_days"] == 2 and row["ui_recency_days"] == pytest.approx(4.5)
    assert row["ui_due_ratio"] == pytest.approx(4.5 / 15)  # 15 days between u1's two purchases
    viewed = feats.filter((pl.col("user_id") == "u3") & (pl.col("item_id") == "d")).row(
        0, named=True
    )
    assert viewed["source"] == "viewed" and viewed["ui_viewed_recency_days"] == pytest.approx(0.5)


def test_metrics_match_a_hand_computed_list():
    lists = pl.DataFrame(
        {
            "user_id": ["u"] * 3 + ["v"] * 2 + ["w"] * 3,
            "item_id": ["a", "x", "b", "y", "z", "p", "q", "r"],
            "rank": [1, 2, 3, 1, 2, 1, 2, 3],
        }
    )
    # w bought five items, more than k = 3: its ideal list is three hits, and MAP divides by 3.
    truth = pl.DataFrame(
        {
            "user_id": ["u", "u", "v", "w", "w", "w", "w", "w"],
            "item_id": ["a", "b", "q", "p", "r", "s1", "s2", "s3"],
        }
    )
    m = rec.ranking_metrics(lists, truth, 3, catalogue_items=16)
    idcg2, idcg3 = 1 + 1 / math.log2(3), 1 + 1 / math.log2(3) + 1 / math.log2(4)
    ndcg_u = (1 + 1 / math.log2(4)) / idcg2
    ndcg_w = (1 + 1 / math.log2(4)) / idcg3
    assert m["recall"] == pytest.approx((1.0 + 0.0 + 2 / 5) / 3)
    assert m["ndcg"] == pytest.approx((ndcg_u + ndcg_w) / 3)
    assert m["map"] == pytest.approx(((1 + 2 / 3) / 2 + (1 + 2 / 3) / 3) / 3)
    assert m["coverage"] == pytest.approx(8 / 16) and m["full_lists"] == pytest.approx(2 / 3)
    # A repeated truth row is the same purchase, not a second one.
    assert rec.ranking_metrics(lists, pl.concat([truth, truth]), 3, 16) == m


def test_padded_lists_fill_with_popular_items_and_respect_exclusions():
    users = pl.DataFrame({"user_id": ["u", "v"]})
    primary = pl.DataFrame({"user_id": ["u"], "item_id": ["p"], "score": [1.0]})
    popular = pl.DataFrame({"item_id": ["p", "q", "r", "s"], "score": [4.0, 3.0, 2.0, 1.0]})
    exclude = pl.DataFrame({"user_id": ["v"], "item_id": ["q"]})
    lists = rec.padded_lists(primary, users, popular, 3, exclude)
    got = {u: g.sort("rank")["item_id"].to_list() for (u,), g in lists.group_by("user_id")}
    assert got == {"u": ["p", "q", "r"], "v": ["p", "r", "s"]}


def test_the_evaluation_reports_every_scorer_under_both_protocols():
    rows = [*HISTORY, ("u1", "c", -3, "purchase", "o9"), ("u2", "a", -2, "purchase", "o8")]
    _, items, ut = tables(rows)
    truth = rec.purchased_in_window(events(rows), AS_OF, 14)
    scored = pl.DataFrame({"user_id": ["u1"], "item_id": ["c"], "score": [1.0]})
    m = rec.evaluation(scored, ut, items, truth, 2, 30)
    assert set(m) == {"model", *rec.BASELINES}
    assert m["model"]["all_recall"] == pytest.approx(1.0)  # u1 got c first; u2's a is popular
    # Repeat-buy lists u1's own a and b (c missed) and u2's a, b (a hit): recall ½.
    assert m["repeat_buy"]["all_recall"] == pytest.approx(0.5)
    assert m["repeat_buy"]["new_users"] == 1  # u2's a was bought before: not new
    assert m["model"]["new_recall"] == pytest.approx(1.0)


def test_buckets_split_users_stably_and_completely():
    users = pl.DataFrame({"user_id": [f"u{i}" for i in range(1000)]})
    parts = list(buckets(users, 300))
    assert len(parts) == 4
    assert sorted(pl.concat(parts)["user_id"].to_list()) == sorted(users["user_id"].to_list())
    again = list(buckets(users.sample(fraction=1.0, shuffle=True, seed=3), 300))
    assert [sorted(p["user_id"]) for p in again] == [sorted(p["user_id"]) for p in parts]


# ---- invariants ------------------------------------------------------------------------------

ROW = st.tuples(
    st.sampled_from(["u1", "u2", "u3", "u4"]),
    st.sampled_from(["a", "b", "c", "d", "e", "off"]),
    st.floats(min_value=0.01, max_value=300),
    st.sampled_from(["purchase", "purchase", "view", "add_to_cart"]),
    st.sampled_from(["o1", "o2", "o3", None]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(ROW, min_size=1, max_size=30),
    st.lists(ROW, min_size=1, max_size=10),
    st.integers(min_value=3, max_value=12),
)
def test_later_events_change_no_candidate_or_feature(past, future, cap):
    """Appending events dated on or after as_of changes nothing recommended as of it."""
    cfg = CFG.model_copy(update={"max_candidates": cap})
    later = [(u, i, -d, t, o) for u, i, d, t, o in future]

    def features(rows, prices):
        history = rec.history_as_of(events(rows), CATALOGUE, prices, AS_OF, cfg)
        items = rec.item_tables(history, cfg)
        users = rec.active_users(events(rows), AS_OF, cfg.active_days)
        ut = rec.user_tables(history, users)
        cands = rec.candidates(ut, items, cfg)
        return rec.ranker_features(cands, ut, items, history), items

    quotes = [(AS_OF - timedelta(days=3), "a", 0.5), (AS_OF - timedelta(days=1), "b", 3.0)]
    news = [(AS_OF, "a", 99.0), (AS_OF + timedelta(days=2), "c", 0.1)]
    before, items = features(past, market(quotes))
    after, _ = features(past + later, market(quotes + news))
    assert_frame_equal(before, after)
    # The same rows in another order give the same features: sums are added in a fixed order.
    # Not bit for bit: Polars' element-wise kernels may round a row's last bit by its position.
    shuffled, _ = features(past[::-1], market(quotes[::-1]))
    assert_frame_equal(before, shuffled, rel_tol=1e-12, abs_tol=1e-12)
    # And the invariants of any candidate set: unique pairs, the cap, eligible items only.
    assert before.select("user_id", "item_id").is_duplicated().sum() == 0
    assert (before.group_by("user_id").len()["len"].max() or 0) <= cap
    assert set(before["item_id"]) <= set(items.eligible["item_id"])
    assert before["source"].is_in(list(rec.SOURCES)).all()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.integers(0, 30), st.floats(0, 5)),
        max_size=40,
    ),
    st.integers(1, 12),
)
def test_padded_lists_without_exclusions_need_only_the_2k_most_popular(own, k):
    primary = pl.DataFrame(
        [(u, f"i{i:02d}", s) for u, i, s in own],
        schema={"user_id": pl.String, "item_id": pl.String, "score": pl.Float64},
        orient="row",
    ).unique(["user_id", "item_id"], keep="first", maintain_order=True)
    users = pl.DataFrame({"user_id": ["u1", "u2", "u3", "u4"]})
    popular = pl.DataFrame(
        {"item_id": [f"i{i:02d}" for i in range(31)], "score": [float(i % 7) for i in range(31)]}
    )
    shortcut = rec.padded_lists(primary, users, popular, k)
    # An empty exclusion takes the long way: every user paired with every padding item.
    none = pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String})
    assert_frame_equal(shortcut, rec.padded_lists(primary, users, popular, k, exclude=none))
    # Users a chunk at a time give the same lists, with and without exclusions.
    bought = primary.filter(pl.col("score") > 2).select("user_id", "item_id")
    for exclude in (None, bought):
        whole = rec.padded_lists(primary, users, popular, k, exclude)
        assert_frame_equal(rec.padded_lists(primary, users, popular, k, exclude, 1), whole)


@pytest.mark.parametrize("rule", ["repeat_buy", "popularity", "cooccurrence"])
def test_the_rules_read_only_what_rule_user_tables_hold(rule):
    history, items, ut = tables()
    light = rec.rule_user_tables(history, ut.users)
    assert_frame_equal(light.owned, ut.owned, check_row_order=False)
    full = rec.rule_lists(rule, ut, items, 5, CFG.half_life_days)
    assert full.height > 0
    assert_frame_equal(rec.rule_lists(rule, light, items, 5, CFG.half_life_days), full)


def _candidates_by_joins(ut: rec.UserTables, items: rec.ItemTables, cfg: RecommendSettings):
    """The candidates as first written, the spec ``rec.candidates`` must equal: each source
    ranked, the sources full-joined one after another, then the cap."""
    merged = None
    for ranked in rec.source_candidates(ut, items, cfg).values():
        if merged is None:
            merged = ranked
        else:
            merged = merged.join(ranked, on=["user_id", "item_id"], how="full", coalesce=True)
    rank_cols = [f"{s}_rank" for s in rec.SOURCES]
    reason = pl.lit(None, pl.String)
    for source in reversed(rec.SOURCES):
        reason = (
            pl.when(pl.col(f"{source}_rank").is_not_null()).then(pl.lit(source)).otherwise(reason)
        )
    merged = merged.with_columns(
        best_rank=pl.min_horizontal(rank_cols),
        n_sources=pl.sum_horizontal(pl.col(rank_cols).is_not_null().cast(pl.Int32)),
        source=reason,
    )
    capped = (
        merged.filter(pl.col("best_rank") <= cfg.max_candidates)
        .sort(
            ["user_id", "best_rank", "n_sources", "item_id"], descending=[False, False, True, False]
        )
        .group_by("user_id", maintain_order=True)
        .head(cfg.max_candidates)
    )
    return capped.drop("best_rank").sort("user_id", "item_id")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(ROW, min_size=1, max_size=40),
    st.integers(min_value=2, max_value=12),
    st.booleans(),
)
def test_candidates_on_codes_are_the_joined_candidates_on_ids(rows, cap, exclude):
    """Candidates grouped once on integer codes equal the sources joined on the ids."""
    cfg = CFG.model_copy(update={"max_candidates": cap, "exclude_bought": exclude})
    history, items, ut = tables(rows, cfg)
    expected = _candidates_by_joins(ut, items, cfg)
    assert_frame_equal(rec.candidates(ut, items, cfg), expected)
    codes = rec.key_codes(history, ut.users)
    coded = rec.coded_history(history, codes)
    coded_items = rec.item_tables(coded, cfg)
    coded_ut = rec.user_tables(coded, codes.coded(ut.users))
    on_codes = rec.candidates(coded_ut, coded_items, cfg)
    assert on_codes.schema["user_id"] == pl.UInt32
    assert_frame_equal(codes.decoded(on_codes), expected)
    features = rec.ranker_features(on_codes, coded_ut, coded_items, coded)
    assert_frame_equal(codes.decoded(features), rec.ranker_features(expected, ut, items, history))


def test_buckets_within_a_hash_group_are_even():
    """A group's users (hash % 10 == 0) still spread over every bucket (4 shares a factor)."""
    users = pl.DataFrame({"user_id": [f"u{i}" for i in range(20_000)]})
    group = users.filter(user_bucket(pl.col("user_id"), 10) == 0)
    sizes = [p.height for p in buckets(group, group.height // 4 + 1)]
    assert len(sizes) == 4 and min(sizes) > 0.8 * group.height / 4
