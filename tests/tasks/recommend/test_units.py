"""The recommender against real warehouses: demo data for training and lists, hand-made ones for
the edge cases."""

from __future__ import annotations

import logging
import shutil
from datetime import date, timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from nightowl.errors import NotEnoughHistory
from nightowl.schemas.config import ModelSettings, RecommendSettings
from nightowl.tasks.behaviour import train
from nightowl.tasks.common.fanout import Fanout
from nightowl.tasks.common.reads import clean_before
from nightowl.tasks.models import score
from nightowl.tasks.recommend import lists as rec
from nightowl.tasks.recommend.units import (
    HEURISTIC,
    MODEL,
    TABLE,
    RankerScorer,
    inputs_before,
    listed_users,
    ranked_lists,
    recommendations_table,
    scoring_model,
    snapshot,
    train_recommender,
    training_due,
)
from nightowl.warehouse.registry import Registry
from nightowl.warehouse.store import Warehouse
from nightowl.warehouse.tables import CLEAN_EVENTS, CLEAN_ITEMS
from tests.tasks.behaviour.test_units import END, build_warehouse
from tests.tasks.recommend.test_lists import CATALOGUE, events
from tests.warehouse.test_tables import as_table

# The ranker serves unless it trails its best rule by more than 1 (never): these tests are about
# the ranker; the guard's own tests set a margin no ranker can beat.
FAST = RecommendSettings(max_rounds=150, min_data_in_leaf=20, rule_margin=-1.0)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_warehouse(
        tmp_path_factory.mktemp("recommend") / "data", users=1500, days=70
    ).data_root


@pytest.fixture(scope="module")
def trained(built: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recommend-trained") / "data"
    shutil.copytree(built, root)
    train_recommender(Warehouse(root, "test"), END, FAST)
    return root


def _copy(src: Path, tmp_path: Path) -> Warehouse:
    root = tmp_path / "data"
    shutil.copytree(src, root)
    return Warehouse(root, "test")


def _lists(wh: Warehouse, as_of: date) -> pl.DataFrame:
    return wh.scan("predictions", TABLE, [{"as_of": as_of.isoformat()}]).collect()


def test_training_registers_a_parity_checked_ranker_ahead_of_every_baseline(trained):
    registry = Registry(Warehouse(trained, "test"))
    champion = registry.champion(MODEL)
    card = registry.card(MODEL, champion.version)
    assert card.parity["max_rel_diff"] <= FAST.parity_tolerance
    assert card.feature_names == list(rec.FEATURES)
    assert (
        card.training["holdout_as_of"] == (END + timedelta(days=1 - FAST.horizon_days)).isoformat()
    )
    assert set(card.metrics) == {"model", *rec.BASELINES}
    for protocol in rec.PROTOCOLS:
        for baseline in rec.BASELINES:
            assert (
                card.metrics["model"][f"{protocol}_ndcg"]
                > card.metrics[baseline][f"{protocol}_ndcg"]
            )
    # The registered ONNX graph ranks as the native booster does.
    wh = Warehouse(trained, "test")
    held = snapshot(inputs_before(wh, END + timedelta(days=1), FAST), END + timedelta(days=1), FAST)
    x = train.feature_matrix(held.frame.head(5000), list(rec.FEATURES))
    booster = lgb.Booster(
        model_file=str(registry.version_dir(MODEL, champion.version) / "model.lgb.txt")
    )
    onnx = score.predict(
        score.session(registry.onnx_bytes(MODEL, champion.version), [score.CPU]), x, 1024
    )
    np.testing.assert_allclose(onnx, booster.predict(x), rtol=1e-5, atol=1e-5)


def test_the_nightly_lists_are_full_ranked_and_follow_the_rules(trained, tmp_path):
    wh = _copy(trained, tmp_path)
    as_of = END + timedelta(days=1)
    report = recommendations_table(wh, as_of, FAST)
    lists = _lists(wh, as_of)
    champion = Registry(wh).champion(MODEL).version
    active = rec.active_users(inputs_before(wh, as_of, FAST).events, as_of, FAST.active_days)
    assert report.model_version == champion and set(lists["model_version"]) == {champion}
    assert set(lists["user_id"]) == set(active["user_id"]) and report.notes["short_lists"] == 0
    ranks = lists.group_by("user_id").agg(pl.col("rank").sort())["rank"].to_list()
    assert all(r == list(range(1, FAST.top_k + 1)) for r in ranks)
    assert lists.select("user_id", "item_id").is_duplicated().sum() == 0
    assert lists["reason"].null_count() == 0 and lists["title"].null_count() == 0
    ranked = lists.sort("user_id", "rank")
    steps = ranked.group_by("user_id", maintain_order=True).agg(pl.col("score").diff().max())
    assert (steps["score"].fill_null(0) <= 0).all()
    # Items bought once, by a user, of an item nobody buys twice, are not offered again.
    history = rec.history_as_of(*_inputs(wh, as_of), as_of, FAST)
    items = rec.item_tables(history, FAST)
    ut = rec.user_tables(history, active)
    once = ut.owned.filter(~rec.repurchasable(ut.owned, items.stats, FAST.repurchase_min_share))
    assert lists.join(once, on=["user_id", "item_id"], how="semi").height == 0
    # The same inputs give the same bytes, also with the users' views loaded in hash groups.
    assert recommendations_table(wh, as_of, FAST).content_hash == report.content_hash
    grouped = FAST.model_copy(update={"group_events": 2_000, "bucket_users": 100})
    again = recommendations_table(wh, as_of, grouped)
    assert again.notes["groups"] > 2 and again.content_hash == report.content_hash


def test_a_ranker_that_does_not_beat_its_best_rule_serves_the_rules_lists(built, tmp_path):
    wh = _copy(built, tmp_path)
    rules_only = FAST.model_copy(update={"rule_margin": 1.0})
    report = train_recommender(wh, END, rules_only)
    assert report.guard is not None and not report.guard["beats"]
    rule = report.guard["rule"]
    best = max(rec.BASELINES, key=lambda b: report.metrics[b]["all_recall"] or 0)
    assert rule == best and f"it serves the simple rule {rule}" in report.reason

    as_of = END + timedelta(days=1)
    served = recommendations_table(wh, as_of, rules_only)
    lists = _lists(wh, as_of)
    assert served.model_version == f"rule:{rule}@{report.version}"
    assert set(lists["model_version"]) == {served.model_version}
    assert set(lists["source"]) <= {rec.RULE_SOURCES[rule], "popular"}
    assert lists.select("user_id", "item_id").is_duplicated().sum() == 0
    assert lists["reason"].null_count() == 0
    ranks = lists.group_by("user_id").agg(pl.col("rank").sort())["rank"].to_list()
    assert all(r == list(range(1, FAST.top_k + 1)) for r in ranks)


@pytest.mark.parametrize("rule", rec.BASELINES)
def test_a_served_rule_makes_the_lists_it_was_judged_by(built, rule):
    wh = Warehouse(built, "test")
    as_of = END + timedelta(days=1 - FAST.horizon_days)
    inputs = inputs_before(wh, as_of, FAST)
    everything, _ = clean_before(wh, "events", None)
    buyers = rec.purchased_in_window(everything, as_of, FAST.horizon_days)
    users = rec.previous_buyers(inputs.events, as_of).join(buyers, on="user_id", how="semi")
    held = snapshot(inputs, as_of, FAST, events=everything, users=users)
    judged = rec.evaluation(
        held.frame.select("user_id", "item_id", score=pl.lit(0.0)),
        held.users, held.items, held.truth, FAST.top_k, FAST.half_life_days,
    )  # fmt: skip
    lists = rec.rule_lists(rule, held.users, held.items, FAST.top_k, FAST.half_life_days)
    truth = held.truth.join(held.users.users, on="user_id", how="semi")
    again = rec.ranking_metrics(lists, truth, FAST.top_k, held.items.eligible.height)
    assert again["recall"] == pytest.approx(judged[rule]["all_recall"])
    assert again["ndcg"] == pytest.approx(judged[rule]["all_ndcg"])


def _inputs(wh: Warehouse, as_of: date):
    i = inputs_before(wh, as_of, FAST)
    return i.events, i.items, i.market_prices


def test_before_any_ranker_lists_are_ranked_by_the_heuristic(built, tmp_path):
    wh = _copy(built, tmp_path)
    report = recommendations_table(wh, END + timedelta(days=1), FAST)
    assert report.model_version == HEURISTIC
    assert set(_lists(wh, END + timedelta(days=1))["model_version"]) == {HEURISTIC}


def test_a_past_date_is_never_ranked_by_a_model_that_saw_it(trained, tmp_path):
    wh = _copy(trained, tmp_path)
    assert recommendations_table(wh, END, FAST).model_version == HEURISTIC


def test_training_is_due_by_the_cadence_and_retraining_the_same_data_changes_nothing(
    trained, tmp_path
):
    wh = _copy(trained, tmp_path)
    assert training_due(wh, END, FAST) is None
    assert "days old" in training_due(wh, END + timedelta(days=7), FAST)
    again = train_recommender(wh, END, FAST, only_if_due=True)
    assert not again.trained and "fresh" in again.reason


def test_too_short_a_history_says_what_it_needs(built, tmp_path):
    wh = _copy(built, tmp_path)
    with pytest.raises(NotEnoughHistory, match="needs at least 56 days"):
        train_recommender(wh, END - timedelta(days=30), FAST)


# ---- edge cases on hand-made warehouses -----------------------------------------------------

AS_OF = date(2026, 3, 1)


def handmade(
    root: Path,
    rows: list[tuple],
    catalogue: pl.LazyFrame = CATALOGUE,
    items_day: str = "2026-01-01",
) -> Warehouse:
    """A warehouse whose clean events are ``rows`` and whose items snapshot (of ``items_day``)
    is ``catalogue``."""
    wh = Warehouse(root, "test")
    frame = events(rows).collect().with_columns(dt=pl.col("event_time").dt.date())
    for (day,), part in frame.group_by("dt"):
        rows_of_day = as_table(CLEAN_EVENTS, part.drop("dt"))
        wh.write_partition("clean", "events", {"dt": day.isoformat()}, rows_of_day)
    items = as_table(CLEAN_ITEMS, catalogue.collect())
    wh.write_partition("clean", "items", {"dt": items_day}, items)
    return wh


SHOP = [
    ("u1", "a", 20, "purchase", "o1"),
    ("u1", "b", 20, "purchase", "o1"),
    ("u2", "a", 10, "purchase", "o2"),
    ("u2", "c", 10, "purchase", "o2"),
    ("u3", "b", 6, "purchase", "o3"),
    ("u3", "e", 6, "purchase", "o3"),
    ("u3", "off", 6, "purchase", "o3"),
    ("u3", "off", 40, "purchase", "o0"),
]
CFG = RecommendSettings(top_k=3)


def test_a_user_with_one_event_gets_a_full_list_of_best_sellers(tmp_path):
    wh = handmade(tmp_path, [*SHOP, ("solo", "c", 2, "view", None)])
    recommendations_table(wh, AS_OF, CFG)
    solo = _lists(wh, AS_OF).filter(pl.col("user_id") == "solo").sort("rank")
    assert solo.height == CFG.top_k
    assert solo.row(0, named=True)["item_id"] == "c"  # what they looked at comes first
    assert solo.row(0, named=True)["reason"].startswith("viewed 2 days ago")


def test_a_brand_new_item_reaches_only_those_who_looked_at_it(tmp_path):
    catalogue = pl.concat(
        [CATALOGUE.collect(), CATALOGUE.collect().head(1).with_columns(item_id=pl.lit("new"))]
    ).lazy()
    wh = handmade(tmp_path, [*SHOP, ("u1", "new", 1, "view", None)], catalogue)
    recommendations_table(wh, AS_OF, CFG)
    lists = _lists(wh, AS_OF)
    offered = lists.filter(pl.col("item_id") == "new")
    assert set(offered["user_id"]) == {"u1"}
    assert offered["title"].to_list() == ["Apple"] and offered["category"].to_list() == ["fruit"]


def test_an_item_that_became_inactive_is_offered_to_nobody(tmp_path):
    wh = handmade(tmp_path, SHOP)  # u3 bought "off" twice: a repurchase item, but inactive
    recommendations_table(wh, AS_OF, CFG)
    assert "off" not in set(_lists(wh, AS_OF)["item_id"])


def test_a_single_category_catalogue_gives_full_lists(tmp_path):
    wh = handmade(tmp_path, SHOP, CATALOGUE.with_columns(category=pl.lit("shop")))
    recommendations_table(wh, AS_OF, CFG.model_copy(update={"exclude_bought": False}))
    lists = _lists(wh, AS_OF)
    assert lists.group_by("user_id").len()["len"].min() == CFG.top_k
    assert (
        lists.filter(pl.col("source") == "category")["reason"]
        .str.contains("best seller in shop")
        .all()
    )


def test_a_day_without_purchases_changes_nothing_but_the_date(tmp_path):
    wh = handmade(tmp_path, SHOP)  # no event on the day before AS_OF, or the one before that
    first = recommendations_table(wh, AS_OF, CFG)
    second = recommendations_table(wh, AS_OF + timedelta(days=1), CFG)
    assert first.rows == second.rows > 0


def test_a_catalogue_smaller_than_k_gives_short_lists_and_says_so(tmp_path, caplog):
    wh = handmade(tmp_path, SHOP)
    with caplog.at_level(logging.WARNING, logger="nightowl"):
        report = recommendations_table(wh, AS_OF, RecommendSettings(top_k=10))
    assert report.notes["short_lists"] == report.notes["users"] == 3
    assert "fewer than 10 recommendations: the sources found too few of the 5 eligible" in (
        caplog.text
    )


def test_nobody_active_gives_an_empty_table_with_its_columns(tmp_path):
    wh = handmade(tmp_path, SHOP)
    recent_only = CFG.model_copy(update={"active_days": 90})
    report = recommendations_table(wh, AS_OF + timedelta(days=200), recent_only)
    assert report.rows == 0
    assert "reason" in _lists(wh, AS_OF + timedelta(days=200)).columns


def test_lapsed_customers_get_win_back_lists_by_default(tmp_path):
    wh = handmade(tmp_path, SHOP)
    later = AS_OF + timedelta(days=200)
    assert CFG.active_days is None
    report = recommendations_table(wh, later, CFG)
    lists = _lists(wh, later)
    assert report.rows == lists.height > 0
    assert lists["reason"].str.starts_with("win-back, away ").all()
    # The days away are each user's own: 200 days and more since their last event.
    away = lists["reason"].str.extract(r"away (\d+) days", 1).cast(pl.Int64)
    assert away.min() >= 200


def test_customers_who_bought_before_the_history_window_still_get_a_list(tmp_path):
    much_later = AS_OF + timedelta(days=CFG.history_days + 30)
    days_ago = -(CFG.history_days + 20)  # 10 days before it
    newcomers = [
        ("new", "a", days_ago, "purchase", "o9"),
        ("new2", "b", days_ago, "purchase", "o8"),
    ]
    wh = handmade(tmp_path, [*SHOP, *newcomers])
    recommendations_table(wh, much_later, CFG)
    listed = _lists(wh, much_later)
    assert set(listed["user_id"]) == {"u1", "u2", "u3", "new", "new2"}
    assert listed.group_by("user_id").len()["len"].min() >= 1


def test_a_catalogue_known_only_later_lends_its_categories_but_not_its_prices(tmp_path):
    wh = handmade(tmp_path, SHOP, items_day="2026-02-20")  # events start on 2026-01-20
    before = inputs_before(wh, date(2026, 2, 10), CFG).items.collect()
    after = inputs_before(wh, AS_OF, CFG).items.collect()
    assert before["category"].to_list() == after["category"].to_list()
    assert before["price"].null_count() == before["active"].null_count() == before.height
    assert after["active"].to_list() == CATALOGUE.collect()["active"].to_list()


def test_a_held_out_window_without_buyers_registers_nothing(tmp_path):
    # Buyers come back in the training window (15-27 days before AS_OF) but only look in the
    # held-out one (the last 14 days): there is nothing to judge a ranker on.
    rows = [(u, i, d, "purchase", f"o{u}{d}") for u in ("u1", "u2", "u3") for i, d in
            (("a", 60), ("b", 50))]  # fmt: skip
    rows += [("u1", "c", 55, "purchase", "o9"), ("u2", "c", 20, "purchase", "o10"),
             ("u3", "c", 25, "purchase", "o11")]  # fmt: skip
    rows += [
        ("u1", "b", 5, "view", None),
        ("u2", "c", 3, "view", None),
        ("u3", "a", 1, "view", None),
    ]
    wh = handmade(tmp_path, rows)
    with pytest.raises(NotEnoughHistory, match="cannot be judged"):
        train_recommender(wh, AS_OF - timedelta(days=1), CFG)
    assert Registry(wh).versions(MODEL) == []


def test_training_samples_are_stable_and_bounded():
    from nightowl.tasks.recommend.units import sampled_users

    users = pl.DataFrame({"user_id": [f"u{i:05d}" for i in range(5000)]})
    few = sampled_users(users, 300)
    assert few.height == 300 and few["user_id"].is_sorted()
    assert few.equals(sampled_users(users.sample(fraction=1.0, shuffle=True, seed=3), 300))
    assert sampled_users(few, 1000).equals(few)  # under the limit: all of them
    # a larger sample contains the smaller one: raising the limit only adds users
    assert set(few["user_id"]) <= set(sampled_users(users, 600)["user_id"])


def test_training_builds_candidates_for_the_capped_samples_only(trained, tmp_path):
    wh = _copy(trained, tmp_path)  # a champion is there: the new version is judged against it
    small = FAST.model_copy(update={"max_training_users": 100, "max_holdout_users": 150})
    report = train_recommender(wh, END, small)
    assert "vs champion" in report.reason  # the champion's ONNX graph scored the same window
    card = Registry(wh).card(MODEL, report.version)
    assert 0 < card.training["groups"] <= 100 * small.snapshots
    assert 0 < card.training["holdout_users"] <= 150
    assert card.parity["tensorised"]["max_abs_diff"] <= small.parity_tolerance


# ---- buckets, codes and where they run -------------------------------------------------------


def _lists_on_ids(wh: Warehouse, as_of) -> pl.DataFrame:
    """The lists the plain way: every user at once, joins on the string ids, no codes."""
    inputs = inputs_before(wh, as_of, FAST)
    history = rec.history_as_of(inputs.events, inputs.items, inputs.market_prices, as_of, FAST)
    items = rec.item_tables(history, FAST)
    ut = rec.user_tables(history, listed_users(wh, inputs, as_of, FAST))
    frame = rec.ranker_features(rec.candidates(ut, items, FAST), ut, items, history)
    card = scoring_model(Registry(wh), as_of)
    assert card is not None
    named = score.RegisteredScorer(str(wh.data_root), MODEL, card.version, ModelSettings())
    scores = RankerScorer(named)(frame)
    lists = ranked_lists(frame, scores, items, FAST.top_k, card.version, FAST.lapsed_days)
    return lists.sort("user_id", "rank")


def test_lists_on_a_two_worker_dask_cluster_are_those_ranked_in_one_piece_on_the_ids(
    trained, tmp_path, dask_cluster
):
    as_of = END + timedelta(days=1)
    one = _copy(trained, tmp_path / "one")
    whole = recommendations_table(one, as_of, FAST, fanout=Fanout("serial"))
    assert whole.notes["buckets"] == 1
    spread = _copy(trained, tmp_path / "spread")
    small = FAST.model_copy(update={"bucket_users": 150, "group_events": 5_000})
    split = recommendations_table(spread, as_of, small, fanout=Fanout("dask", 2, dask_cluster))
    assert split.notes["buckets"] > 4 and split.notes["groups"] > 1
    assert split.content_hash == whole.content_hash
    assert_frame_equal(_lists(spread, as_of), _lists(one, as_of))
    assert_frame_equal(_lists(one, as_of), _lists_on_ids(one, as_of))


def test_lists_in_local_processes_and_threads_are_the_same_bytes(trained, tmp_path):
    as_of = END + timedelta(days=1)
    small = FAST.model_copy(update={"bucket_users": 200})
    hashes = {
        kind: recommendations_table(
            _copy(trained, tmp_path / kind), as_of, small, fanout=Fanout(kind, 2)
        ).content_hash
        for kind in ("serial", "threads", "processes")
    }
    assert len(set(hashes.values())) == 1


def test_codes_keep_the_order_of_the_ids_and_come_back_to_them():
    history = rec.History(
        as_of=END,
        purchases=pl.DataFrame({"user_id": ["u10", "u9"], "item_id": ["b", "a"], "basket": "o"}),
        browsing=pl.DataFrame({"user_id": ["u9", "ghost"], "item_id": ["zz", "a"]}),
        catalogue=pl.DataFrame({"item_id": ["c", "a", "b"]}),
        competitor=None,
    )
    codes = rec.key_codes(history, pl.DataFrame({"user_id": ["u2", "u9"]}))
    assert codes.users.to_list() == ["u10", "u2", "u9"] and codes.items.to_list() == ["a", "b", "c"]
    coded = rec.coded_history(history, codes)
    assert coded.purchases.select("user_id", "item_id").rows() == [(0, 1), (2, 0)]
    # Browsing of users nobody ranks and of items nobody may offer is not needed: dropped.
    assert coded.browsing.height == 0
    frame = pl.DataFrame(
        {"user_id": [2, 0], "item_id": [1, 2], "anchor": [None, 0]},
        schema={"user_id": pl.UInt32, "item_id": pl.UInt32, "anchor": pl.UInt32},
    )
    back = codes.decoded(frame)
    assert back.rows() == [("u9", "b", None), ("u10", "c", "a")]
    assert (
        back.sort("user_id")["user_id"].to_list()
        == codes.decoded(frame.sort("user_id"))["user_id"].to_list()
    )
