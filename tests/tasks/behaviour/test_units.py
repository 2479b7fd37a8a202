"""Features, training, registry and scoring against a real (small) warehouse of demo data."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from nightowl.demo.generate import generate_landing
from nightowl.errors import NotEnoughHistory
from nightowl.schemas.config import ModelSettings
from nightowl.schemas.landing import SOURCES
from nightowl.schemas.sources import SourceConfig
from nightowl.tasks.behaviour import train
from nightowl.tasks.behaviour.train import feature_matrix
from nightowl.tasks.behaviour.units import (
    MODEL,
    NoChampion,
    ParityFailed,
    booster_of,
    clean_before,
    outcomes_seen_until,
    score_users,
    train_propensity,
    training_due,
    user_features_table,
)
from nightowl.tasks.common.fanout import Fanout
from nightowl.tasks.ingest import units
from nightowl.warehouse.registry import Registry
from nightowl.warehouse.store import Warehouse

END = date(2026, 11, 27)
# The model is served unless it trails its best simple rule by more than 1 AUC (never): these
# tests are about the model; the guard's own tests set a margin no model can beat.
FAST = ModelSettings(snapshots=3, max_rounds=200, min_data_in_leaf=20, rule_margin=-1.0)
RULES_ONLY = FAST.model_copy(update={"rule_margin": 1.0})


def build_warehouse(root: Path, *, users: int, days: int, seed: int = 7) -> Warehouse:
    """Demo landing files for ``days`` days ending END, ingested and cleaned as of END."""
    generate_landing(
        root / "landing", users=users, items=max(120, users // 25), days=days, seed=seed,
        end_date=END,
    )  # fmt: skip
    wh = Warehouse(root, "test")
    for source in SOURCES:
        units.ingest_source(wh, source, SourceConfig(), END, root)
        units.clean_source(wh, source, SourceConfig(), END, 2.0)
    return wh


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_warehouse(
        tmp_path_factory.mktemp("propensity") / "data", users=1000, days=92
    ).data_root


@pytest.fixture
def wh(built: Path, tmp_path: Path) -> Warehouse:
    """A private copy of the built warehouse, so tests may register and promote freely."""
    root = tmp_path / "data"
    shutil.copytree(built, root)
    return Warehouse(root, "test")


def test_features_made_a_bucket_of_users_at_a_time_are_the_same(wh, tmp_path):
    as_of = END + timedelta(days=1)
    whole, report = user_features_table(wh, as_of)
    other = Warehouse(tmp_path / "other", "test")
    shutil.copytree(wh.data_root, other.data_root)
    shutil.rmtree(other.table_dir("features", "user"), ignore_errors=True)
    events = clean_before(other, "events", as_of)[0].select(pl.len()).collect().item()
    assert events > 3 * 5_000  # so the features below take several buckets
    split, again = user_features_table(other, as_of, bucket_events=5_000)
    assert not again.reused and split.equals(whole)
    assert again.content_hash == report.content_hash


def test_features_whose_buckets_ran_on_a_dask_cluster_are_the_same_bytes(
    wh, tmp_path, dask_cluster
):
    as_of = END + timedelta(days=1)
    _, report = user_features_table(wh, as_of)
    other = Warehouse(tmp_path / "other", "test")
    shutil.copytree(wh.data_root, other.data_root)
    shutil.rmtree(other.table_dir("features", "user"), ignore_errors=True)
    spread = Fanout("dask", 2, dask_cluster)
    _, again = user_features_table(other, as_of, bucket_events=5_000, fanout=spread)
    assert not again.reused and again.content_hash == report.content_hash


def test_features_are_published_once_and_reused(wh):
    as_of = END + timedelta(days=1)
    frame, first = user_features_table(wh, as_of)
    again_frame, again = user_features_table(wh, as_of)
    assert not first.reused and again.reused
    assert again.content_hash == first.content_hash and again_frame.equals(frame)
    manifest = wh.manifest("features", "user", {"as_of": as_of.isoformat()})
    assert manifest.rows == frame.height > 0
    assert {r.name.split("/")[1] for r in manifest.inputs} == {
        "events",
        "items",
        "market_prices",
        "feedback",
    }
    assert all(r.name < f"clean/events/dt={as_of}" for r in manifest.inputs if "events" in r.name)


def test_train_registers_a_parity_checked_champion_and_scores(wh):
    report = train_propensity(wh, END, FAST)
    assert report.trained and report.promoted and report.champion == report.version
    registry = Registry(wh)
    card = registry.card(MODEL, report.version)
    assert (
        card.parity["max_abs_diff"] <= 1e-6 and card.parity["rows"] > card.training["holdout_rows"]
    )
    assert set(card.metrics) == {"model", "recency_only", "rfm", "bgnbd", "lightgbm_rfm"}
    guard = card.guard
    assert guard is not None and guard["metric"] == "roc_auc"
    best = max(("recency_only", "rfm", "bgnbd"), key=lambda r: card.metrics[r]["roc_auc"])
    assert guard["rule"] == best and guard["rule_value"] == card.metrics[best]["roc_auc"]
    assert guard["beats"] and guard["margin"] == -1.0
    assert card.training["holdout_as_of"] == (END - timedelta(days=29)).isoformat()
    assert all(
        date.fromisoformat(d) + timedelta(days=30)
        <= date.fromisoformat(card.training["holdout_as_of"])
        for d in card.training["train_as_of"]
    )
    folder = registry.version_dir(MODEL, report.version)
    assert {p.name for p in folder.iterdir()} == {
        "model.onnx", "model.tensor.onnx", "model.lgb.txt", "card.json",
    }  # fmt: skip
    assert card.parity["tensorised"]["max_abs_diff"] <= 1e-6

    as_of = END + timedelta(days=1)
    scored = score_users(wh, as_of, FAST)
    table = pl.read_parquet(
        wh.partition_dir("predictions", "user_scores", {"as_of": str(as_of)}) / "*.parquet"
    )
    features = user_features_table(wh, as_of)[0]
    assert table.height == scored.rows == features.height
    assert table["model_version"].unique().to_list() == [report.version]
    assert table["provider"].unique().to_list() == [scored.provider]
    assert table["scoring_graph"].unique().to_list() == [scored.graph] == ["tree_ensemble"]
    assert table["p_purchase_30d"].is_between(0, 1).all()
    stats = wh.manifest("predictions", "user_scores", {"as_of": str(as_of)}).stats
    assert stats["placement"] == scored.placement and sum(scored.placement.values()) == 2


def test_a_model_that_does_not_beat_its_best_rule_serves_the_calibrated_rule(wh):
    report = train_propensity(wh, END, RULES_ONLY)
    assert report.trained and report.promoted  # the first model, but not what serves
    assert report.guard is not None and not report.guard["beats"]
    rule = report.guard["rule"]
    assert f"it serves the simple rule {rule}" in report.reason
    card = Registry(wh).card(MODEL, report.version)
    assert card.serves_rule == rule

    as_of = END + timedelta(days=1)
    scored = score_users(wh, as_of, RULES_ONLY)
    table = pl.read_parquet(
        wh.partition_dir("predictions", "user_scores", {"as_of": str(as_of)}) / "*.parquet"
    )
    assert table["model_version"].unique().to_list() == [f"rule:{rule}@{report.version}"]
    assert table["scoring_graph"].unique().to_list() == ["rule"] == [scored.graph]
    assert scored.rule is not None and "did not beat its best simple rule" in scored.rule
    # Calibrated: probabilities, ordered as the rule orders the users.
    p = table["p_purchase_30d"]
    assert p.is_between(0, 1).all() and p.n_unique() > 1
    features = user_features_table(wh, as_of)[0]
    raw = train.rule_scores(features, rule, 30)
    served = features.select("user_id").with_columns(raw=raw).join(table, on="user_id")
    ordered = served.sort("raw")["p_purchase_30d"].to_numpy()
    assert (np.diff(ordered) >= -1e-7).all()


def test_a_challenger_that_loses_to_its_rule_does_not_unseat_a_champion_that_won(wh):
    champion = train_propensity(wh, END, FAST)
    challenger = train_propensity(wh, END - timedelta(days=2), RULES_ONLY)
    assert not challenger.promoted and challenger.champion == champion.version
    assert "did not beat its best simple rule" in challenger.reason
    assert f"champion {champion.version} did: champion kept" in challenger.reason


def test_same_data_same_version_and_a_worse_challenger_is_not_promoted(wh):
    first = train_propensity(wh, END, FAST)
    again = train_propensity(wh, END, FAST)
    registry = Registry(wh)
    assert again.version == first.version and len(registry.versions(MODEL)) == 1
    weak = FAST.model_copy(update={"num_leaves": 2, "max_rounds": 1, "early_stopping_rounds": 1})
    challenger = train_propensity(wh, END, weak)
    assert challenger.trained and not challenger.promoted and "champion kept" in challenger.reason
    assert registry.champion(MODEL).version == first.version
    assert len(registry.versions(MODEL)) == 2  # registered, for the record, but not champion


def test_a_model_failing_the_parity_gate_is_not_registered(wh):
    with pytest.raises(ParityFailed, match="not registered"):
        train_propensity(wh, END, FAST.model_copy(update={"parity_tolerance": 1e-15}))
    assert Registry(wh).versions(MODEL) == [] and Registry(wh).champion(MODEL) is None


def test_scoring_without_a_champion_says_what_to_do(wh):
    with pytest.raises(NoChampion, match="nightowl train"):
        score_users(wh, END + timedelta(days=1), FAST)


def test_training_is_due_without_a_champion_and_when_it_is_old(wh):
    assert training_due(wh, END, FAST) == "no champion yet"
    train_propensity(wh, END, FAST)
    user_features_table(wh, END + timedelta(days=1))
    assert training_due(wh, END, FAST) is None
    later = END + timedelta(days=FAST.retrain_every_days)
    assert "days old" in training_due(wh, later, FAST)
    skipped = train_propensity(wh, END, FAST, only_if_due=True)
    assert not skipped.trained and "fresh" in skipped.reason


def test_a_past_date_the_champion_may_score_does_not_make_training_due(wh):
    # Its training outcomes end a horizon before its held-out window: it serves earlier nights.
    train_propensity(wh, END, FAST)
    assert training_due(wh, END - timedelta(days=3), FAST) is None


def test_a_young_warehouse_explains_how_much_history_training_needs(wh):
    with pytest.raises(NotEnoughHistory, match="needs at least 88 days"):
        train_propensity(wh, END - timedelta(days=40), FAST)


def test_an_older_challenger_cannot_unseat_a_champion_that_saw_its_held_out_outcomes(wh):
    newer = train_propensity(wh, END, FAST)
    older = train_propensity(wh, END - timedelta(days=3), FAST)
    assert older.trained and not older.promoted
    assert "inside this model's held-out window" in older.reason
    assert Registry(wh).champion(MODEL).version == newer.version


def test_each_score_is_the_model_s_probability_for_that_user(wh):
    report = train_propensity(wh, END, FAST)
    as_of = END + timedelta(days=1)
    score_users(wh, as_of, FAST)
    features = user_features_table(wh, as_of)[0]
    card = Registry(wh).card(MODEL, report.version)
    native = booster_of(wh, report.version).predict(feature_matrix(features, card.feature_names))
    expected = features.select("user_id").with_columns(native=native)
    scores = pl.read_parquet(
        wh.partition_dir("predictions", "user_scores", {"as_of": str(as_of)}) / "*.parquet"
    )
    joined = scores.join(expected, on="user_id", how="inner")
    assert joined.height == scores.height == features.height
    assert (joined["p_purchase_30d"] - joined["native"]).abs().max() < 1e-6


def test_scores_whose_buckets_ran_on_a_dask_cluster_are_the_same_bytes(wh, dask_cluster):
    train_propensity(wh, END, FAST)
    as_of = END + timedelta(days=1)
    whole = score_users(wh, as_of, FAST)
    small = FAST.model_copy(update={"score_bucket_users": 100})
    spread = score_users(wh, as_of, small, Fanout("dask", 2, dask_cluster))
    assert spread.content_hash == whole.content_hash


def test_a_lost_challenge_does_not_make_training_due_every_night(wh):
    train_propensity(wh, END - timedelta(days=2), FAST)
    weak = FAST.model_copy(update={"num_leaves": 2, "max_rounds": 1, "early_stopping_rounds": 1})
    lost = train_propensity(wh, END, weak)
    assert not lost.promoted
    assert training_due(wh, END + timedelta(days=1), FAST) is None  # the attempt counts
    assert "days old" in training_due(wh, END + timedelta(days=FAST.retrain_every_days), FAST)


def test_a_past_date_is_scored_only_by_a_model_that_did_not_see_its_future(wh):
    train_propensity(wh, END - timedelta(days=3), FAST)
    train_propensity(wh, END, FAST)
    as_of = END - timedelta(days=31)
    report = score_users(wh, as_of, FAST)
    card = Registry(wh).card(MODEL, report.model_version)
    assert outcomes_seen_until(card) <= as_of
    with pytest.raises(NoChampion, match="know the future"):
        score_users(wh, END - timedelta(days=60), FAST)


def test_training_past_the_last_event_day_is_refused(wh):
    with pytest.raises(NotEnoughHistory, match=f"events end on {END}"):
        train_propensity(wh, END + timedelta(days=5), FAST)
