"""Price position, demand training with its backtest, and forecasts, on a real (small) warehouse."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from nightowl.errors import NotEnoughHistory
from nightowl.schemas.config import MarketSettings
from nightowl.tasks.market.forecast import FORECASTERS
from nightowl.tasks.market.units import (
    MODEL,
    forecast_demand,
    forecasting_model,
    price_position_table,
    train_demand,
    training_due,
)
from nightowl.tasks.models.lifecycle import NoChampion
from nightowl.warehouse.registry import Registry
from nightowl.warehouse.store import Warehouse
from tests.tasks.behaviour.test_units import END, build_warehouse

# The model serves unless it trails its best rule by more than 1 WAPE (never): these tests are
# about the model; the guard's own tests set a margin no model can beat.
FAST = MarketSettings(
    max_rounds=150, min_data_in_leaf=50, backtest_origins=2, scenario_items=10, rule_margin=-1.0
)
AS_OF = END + timedelta(days=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_warehouse(
        tmp_path_factory.mktemp("demand") / "data", users=1500, days=84
    ).data_root


@pytest.fixture(scope="module")
def trained(built: Path, tmp_path_factory) -> Path:
    """A copy of the warehouse with a demand champion trained up to END."""
    root = tmp_path_factory.mktemp("demand-trained") / "data"
    shutil.copytree(built, root)
    train_demand(Warehouse(root, "test"), END, FAST)
    return root


def _copy(src: Path, tmp_path: Path) -> Warehouse:
    root = tmp_path / "data"
    shutil.copytree(src, root)
    return Warehouse(root, "test")


def _table(wh: Warehouse, table: str) -> pl.DataFrame:
    return wh.scan("predictions", table, [{"as_of": AS_OF.isoformat()}]).collect()


def test_price_position_is_published_for_the_day_before_as_of(built, tmp_path):
    wh = _copy(built, tmp_path)
    report = price_position_table(wh, AS_OF, FAST)
    frame = _table(wh, "price_position")
    assert report.rows == frame.height == frame["item_id"].n_unique() > 100
    assert frame["date"].unique().to_list() == [END]
    quoted = frame.filter(pl.col("competitors") > 0)
    assert quoted.height > 0.9 * frame.height
    assert (quoted["competitor_min"] <= quoted["competitor_median"]).all()
    assert (quoted["our_rank"].is_between(1, quoted["competitors"] + 1)).all()
    assert report.overpriced == (frame["gap_pct"] > 0).sum()


def test_training_registers_a_parity_checked_model_with_its_backtest(trained):
    wh = Warehouse(trained, "test")
    registry = Registry(wh)
    champion = registry.champion(MODEL)
    card = registry.card(MODEL, champion.version)
    assert card.parity["max_rel_diff"] <= FAST.parity_tolerance
    backtest = card.training["backtest"]
    assert len(backtest) == 2 * (FAST.horizon_days + 1) * len(FORECASTERS)
    assert set(card.metrics) == set(FORECASTERS)
    # The model must beat both baselines on the backtest of demo data, at both levels.
    for key in ("wape", "mase", "category_wape"):
        model = card.metrics["model"][key]
        assert model < card.metrics["seasonal_naive"][key], key
        assert model < card.metrics["moving_average_28d"][key], key
    assert card.training["dispersion"] > 0
    assert training_due(wh, END, FAST) is None
    assert "horizon" in training_due(wh, END, FAST.model_copy(update={"horizon_days": 5}))


def test_forecast_writes_items_categories_and_price_scenarios(trained, tmp_path):
    wh = _copy(trained, tmp_path)
    report = forecast_demand(wh, AS_OF, FAST)
    items = _table(wh, "demand_forecast")
    assert report.rows == items.height and items["model_version"].unique().to_list() == [
        report.model_version
    ]
    assert items.group_by("item_id").len()["len"].unique().to_list() == [FAST.horizon_days]
    assert items["target_date"].min() == AS_OF
    assert (items["forecast"] >= 0).all() and (items["lower"] <= items["upper"]).all()
    assert (items["lower"] <= items["forecast"]).all()
    assert items["promotion"].dtype == pl.Boolean and items["promotion"].null_count() == 0
    categories = _table(wh, "category_forecast")
    per_category = items.group_by("category", "target_date").agg(pl.col("forecast").sum())
    joined = categories.join(per_category, on=["category", "target_date"], suffix="_items")
    assert joined.height == categories.height
    assert (joined["forecast"] - joined["forecast_items"]).abs().max() < 1e-9
    scenarios = _table(wh, "price_scenarios")
    assert scenarios.height == FAST.scenario_items * len(FAST.scenario_price_changes)
    as_is = scenarios.filter(pl.col("price_change_pct") == 0)
    assert (as_is["vs_as_is_pct"] == 0).all()


def test_the_planted_price_effect_shows_in_the_scenarios(trained, tmp_path):
    """Pricing above the competitors' median halves demand in the generator: the forecast must
    fall when +10 % takes an item there, and fall less (or rise) when -10 % does not."""
    wh = _copy(trained, tmp_path)
    forecast_demand(wh, AS_OF, FAST.model_copy(update={"scenario_items": 80}))
    scenarios = _table(wh, "price_scenarios")
    wide = scenarios.pivot("price_change_pct", index="item_id", values=["vs_as_is_pct", "gap_pct"])
    crossing = wide.filter((pl.col("gap_pct_0.0") <= 0) & (pl.col("gap_pct_10.0") > 0))
    assert crossing.height >= 3
    assert crossing["vs_as_is_pct_10.0"].mean() < -15
    assert crossing["vs_as_is_pct_-10.0"].mean() > crossing["vs_as_is_pct_10.0"].mean() + 15


def test_a_model_that_does_not_beat_its_best_rule_serves_the_rules_forecast(built, tmp_path):
    wh = _copy(built, tmp_path)
    rules_only = FAST.model_copy(update={"rule_margin": 1.0})
    report = train_demand(wh, END, rules_only)
    guard = report.guard
    assert guard is not None and not guard["beats"] and guard["metric"] == "wape"
    rule = guard["rule"]
    assert guard["rule_value"] == min(report.metrics[r]["wape"] for r in FORECASTERS[1:])
    assert guard["dispersion"] > 0

    served = forecast_demand(wh, AS_OF, rules_only)
    items = _table(wh, "demand_forecast")
    assert served.model_version == f"rule:{rule}@{report.version}" and served.graph == "rule"
    assert set(items["model_version"]) == {served.model_version}
    assert (items["lower"] <= items["forecast"]).all() and (items["forecast"] >= 0).all()
    categories = _table(wh, "category_forecast")
    assert set(categories["model_version"]) == {served.model_version}


def test_at_weekly_grain_the_model_is_trained_backtested_and_serves_a_week_per_item(
    built, trained, tmp_path
):
    wh = _copy(built, tmp_path / "weekly")
    weekly = FAST.model_copy(update={"grain": "week"})
    report = train_demand(wh, END, weekly)
    card = Registry(wh).card(MODEL, report.version)
    assert card.training["grain"] == "week" and "units_week_minus_1" in card.feature_names
    assert {r["horizon"] for r in report.backtest} == {"all", "7"}
    forecast = forecast_demand(wh, AS_OF, FAST)  # the card's grain, whatever the setting
    items = _table(wh, "demand_forecast")
    assert forecast.rows == items.height == items["item_id"].n_unique()
    assert set(items["target_date"]) == {AS_OF + timedelta(days=6)}
    assert set(items["horizon"]) == {7}
    daily = forecast_demand(_copy(trained, tmp_path / "daily"), AS_OF, FAST)
    assert daily.rows == FAST.horizon_days * forecast.rows  # a row per day, not per week


def test_a_model_trained_on_less_data_does_not_unseat_the_champion(trained, tmp_path):
    wh = _copy(trained, tmp_path)
    champion = Registry(wh).champion(MODEL).version
    report = train_demand(wh, END - timedelta(days=7), FAST)
    assert report.trained and report.version != champion
    assert not report.promoted and "champion kept" in report.reason
    assert Registry(wh).champion(MODEL).version == champion


def test_a_newer_model_replaces_a_champion_that_saw_its_backtest_week(built, tmp_path):
    wh = _copy(built, tmp_path)
    older = train_demand(wh, END - timedelta(days=3), FAST)
    newer = train_demand(wh, END, FAST)
    assert newer.promoted and "saw sales of the newest backtest week" in newer.reason
    assert Registry(wh).champion(MODEL).version == newer.version != older.version


def test_a_champion_that_never_saw_the_week_is_judged_on_it(built, tmp_path):
    wh = _copy(built, tmp_path)
    train_demand(wh, END - timedelta(days=7), FAST)
    newer = train_demand(wh, END, FAST)
    assert "WAPE in the week from" in newer.reason
    assert newer.promoted == ("promoted" in newer.reason.rsplit(":", 1)[-1])


def test_new_items_get_a_forecast_from_their_category(trained, tmp_path):
    wh = _copy(trained, tmp_path)
    forecast_demand(wh, AS_OF, FAST)
    items = _table(wh, "demand_forecast")
    young = items.filter(pl.col("history_days") <= 7)
    assert young.height > 0 and (young["forecast"] > 0).all()


def test_a_past_date_is_forecast_only_by_a_model_trained_before_it(trained, tmp_path):
    wh = _copy(trained, tmp_path)
    registry = Registry(wh)
    assert forecasting_model(registry, AS_OF).version == registry.champion(MODEL).version
    with pytest.raises(NoChampion, match="trained on sales"):
        forecasting_model(registry, END)


def test_too_short_a_history_says_what_it_needs(tmp_path):
    wh = build_warehouse(tmp_path / "data", users=200, days=30)
    with pytest.raises(NotEnoughHistory, match="too short"):
        train_demand(wh, END, FAST)
