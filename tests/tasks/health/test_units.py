"""The model-health step against a real (small) warehouse: served nights judged once their
outcomes are in, judged again only when what they were judged on changed, and the alerts."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from nightowl.schemas.config import (
    FeedbackSettings,
    HealthSettings,
    MarketSettings,
    RecommendSettings,
    ReportSettings,
)
from nightowl.tasks.behaviour.units import score_users, train_propensity, user_features_table
from nightowl.tasks.common.reads import clean_before
from nightowl.tasks.health.units import Sections, health_history, model_health
from nightowl.tasks.recommend.lists import purchased_in_window
from nightowl.tasks.report.units import build_report
from nightowl.warehouse.store import Warehouse
from nightowl.warehouse.tables import MODEL_DRIFT, MODEL_HEALTH, USER_FEATURES, USER_SCORES
from tests.tasks.behaviour.test_units import END, FAST, build_warehouse

TRAINED_TO = END - timedelta(days=40)
NIGHTS = [TRAINED_TO + timedelta(days=k) for k in (1, 2, 3)]  # served as of these
HEALTH = HealthSettings(losing_nights=3)
SECTIONS = Sections(FAST, RecommendSettings(), MarketSettings(), FeedbackSettings(), HEALTH)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A shop ingested and cleaned to END, a champion trained on data to TRAINED_TO, and three
    nights served by it (features and user_scores as of NIGHTS)."""
    wh = build_warehouse(tmp_path_factory.mktemp("health") / "data", users=500, days=130)
    assert train_propensity(wh, TRAINED_TO, FAST).promoted
    for night in NIGHTS:
        user_features_table(wh, night)
        score_users(wh, night, FAST)
    return wh.data_root


@pytest.fixture
def wh(built: Path, tmp_path: Path) -> Warehouse:
    root = tmp_path / "data"
    shutil.copytree(built, root)
    return Warehouse(root, "test")


def _scores(wh: Warehouse, night: date) -> pl.DataFrame:
    return wh.scan(USER_SCORES.layer, USER_SCORES.name, [{"as_of": night.isoformat()}]).collect()


def _replace_scores(wh: Warehouse, night: date, p: pl.Expr) -> None:
    scores = _scores(wh, night).with_columns(p.alias("p_purchase_30d"))
    wh.write_partition(USER_SCORES.layer, USER_SCORES.name, {"as_of": night.isoformat()}, scores)


def test_a_served_night_is_judged_once_its_outcomes_are_in_and_again_only_if_they_change(wh):
    first = NIGHTS[0]
    early = model_health(wh, first + timedelta(days=29), SECTIONS)  # one outcome day to go
    assert early.judged == {} and not health_history(wh).height

    ripe = first + timedelta(days=30)
    report = model_health(wh, ripe, SECTIONS)
    assert report.judged == {first.isoformat(): ["churn", "propensity"]}
    rows = health_history(wh)
    assert rows.drop("as_of").schema == MODEL_HEALTH.schema
    assert set(rows["as_of"]) == {first}
    served = rows.filter(
        (pl.col("model") == "propensity") & (pl.col("scorer") == "served")
        & (pl.col("metric") == "roc_auc")
    )  # fmt: skip
    # The served figure is the ROC-AUC of that night's scores against who bought in 30 days.
    scores = _scores(wh, first)
    events, _ = clean_before(wh, "events", ripe)
    buyers = purchased_in_window(events, first, 30)["user_id"]
    bought = scores["user_id"].is_in(buyers.implode()).to_numpy()
    assert served["value"].item() == pytest.approx(roc_auc_score(bought, scores["p_purchase_30d"]))
    assert served["units"].item() == scores.height
    assert served["outcome_end"].item() == first + timedelta(days=29)
    assert served["model_version"].item() == scores["model_version"][0]
    rules = set(rows.filter(pl.col("kind") == "rule")["scorer"])
    assert rules == {"recency_only", "rfm", "bgnbd"}
    curve = rows.filter(pl.col("bin").is_not_null() & (pl.col("model") == "propensity"))
    counts = curve.filter(pl.col("metric") == "reliability_count")["value"].sum()
    assert counts == scores.height

    again = model_health(wh, ripe, SECTIONS)
    assert again.judged == {} and again.unchanged == 1
    _replace_scores(wh, first, 1 - pl.col("p_purchase_30d"))  # a corrected partition
    corrected = model_health(wh, ripe, SECTIONS)
    assert corrected.judged == {first.isoformat(): ["churn", "propensity"]}
    flipped = health_history(wh).filter(
        (pl.col("model") == "propensity") & (pl.col("scorer") == "served")
        & (pl.col("metric") == "roc_auc")
    )["value"].item()  # fmt: skip
    assert flipped == pytest.approx(1 - served["value"].item())


def test_a_degraded_model_and_an_input_shift_raise_both_alerts(wh):
    for night in NIGHTS:  # served scores that rank buyers last: worse than any simple rule
        _replace_scores(wh, night, 1 - pl.col("p_purchase_30d"))
    tonight = NIGHTS[-1] + timedelta(days=30)
    # Tonight's features: recency a year longer for everyone, and half the spend missing.
    features = wh.scan(USER_FEATURES.layer, USER_FEATURES.name, [{"as_of": NIGHTS[0].isoformat()}])
    shifted = features.collect().with_columns(
        pl.col("recency_days") + 365,
        pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.col("spend_total")).alias("spend_total"),
    )
    partition = {"as_of": tonight.isoformat()}
    wh.write_partition(USER_FEATURES.layer, USER_FEATURES.name, partition, shifted)
    # Served tonight by the same champion (drift is of what a served version read).
    wh.write_partition(USER_SCORES.layer, USER_SCORES.name, partition, _scores(wh, NIGHTS[0]))

    report = model_health(wh, tonight, SECTIONS)
    assert set(report.judged) == {n.isoformat() for n in NIGHTS}
    losing = [a for a in report.alerts if "served nights in a row" in a]
    assert len(losing) == 1 and losing[0].startswith("propensity (all_users)")
    assert all(n.isoformat() in losing[0] for n in NIGHTS)
    (drift,) = [a for a in report.alerts if "drifted from the champion" in a]
    assert drift.startswith("propensity:") and "recency_days (input" in drift
    assert "spend_total (input" in drift

    rows = wh.scan(MODEL_DRIFT.layer, MODEL_DRIFT.name, [partition]).collect()
    by = {r["column"]: r for r in rows.iter_rows(named=True)}
    assert by["recency_days"]["drifted"] and by["recency_days"]["psi"] > 1
    assert by["spend_total"]["missing_share"] == pytest.approx(0.5, abs=0.01)
    assert by["spend_total"]["reference_as_of"] == NIGHTS[0]
    assert not by["events_total"]["drifted"] and by["events_total"]["psi"] == pytest.approx(0)
    assert np.isclose(by["recency_days"]["mean"] - by["recency_days"]["reference_mean"], 365)

    # The morning page reads both tables: the banner says it, the figures are beside it.
    built = build_report(wh, tonight - timedelta(days=1), ReportSettings(), "UTC", {}, HEALTH)
    page = Path(built.page)
    html = page.read_text()
    assert 'id="health-banner"' in html and "Model health: 2 alerts" in html
    assert (page.parent / "model_health.csv").exists() and (
        page.parent / "model_drift.csv"
    ).exists()
