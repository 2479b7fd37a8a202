"""Training pieces: the honest time split, metrics, baselines and RFM segments."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nightowl.schemas.config import ModelSettings
from nightowl.tasks.behaviour.train import (
    NotEnoughHistory,
    baseline_scores,
    classification_metrics,
    rfm_segment,
    rfm_table,
    snapshot_plan,
    validation_users,
)

FIRST = date(2026, 7, 31)


@given(
    days=st.integers(min_value=88, max_value=400),
    horizon=st.integers(min_value=1, max_value=45),
    snapshots=st.integers(min_value=1, max_value=8),
    step=st.integers(min_value=1, max_value=14),
)
def test_no_training_label_reaches_into_the_held_out_window(days, horizon, snapshots, step):
    cfg = ModelSettings(horizon_days=horizon, snapshots=snapshots, snapshot_step_days=step)
    last = FIRST + timedelta(days=days - 1)
    try:
        plan = snapshot_plan(FIRST, last, cfg)
    except NotEnoughHistory:
        assert days < cfg.min_history_days + 2 * horizon
        return
    assert plan.holdout + timedelta(days=horizon - 1) == last  # held-out labels end with the data
    assert all(d + timedelta(days=horizon) <= plan.holdout for d in plan.train)
    assert all(d >= FIRST + timedelta(days=cfg.min_history_days) for d in plan.train)
    assert list(plan.train) == sorted(set(plan.train)) and len(plan.train) <= snapshots


def test_too_little_history_says_how_much_is_needed():
    with pytest.raises(NotEnoughHistory, match=r"at least 88 days .* has 60"):
        snapshot_plan(FIRST, FIRST + timedelta(days=59), ModelSettings())


def test_metrics_of_a_perfect_and_a_useless_scorer():
    y = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    perfect = classification_metrics(y, y * 0.9 + 0.05)
    assert perfect["roc_auc"] == 1.0 and perfect["pr_auc"] == 1.0
    assert perfect["lift_top_decile"] == pytest.approx(5.0)  # top 10 % = 1 row, a positive
    assert perfect["brier"] == pytest.approx(0.05**2)
    flat = classification_metrics(y, np.full(10, 0.2))
    assert flat["roc_auc"] == 0.5 and flat["brier"] == pytest.approx(0.16)


FEATURES = pl.DataFrame(
    {
        "user_id": ["a", "b", "c", "d", "e", "f"],
        "recency_days": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "purchase_recency_days": [1.0, 40.0, 3.0, 80.0, 2.0, None],
        "buying_days_total": [9, 1, 4, 2, 6, 0],
        "spend_total": [900.0, 10.0, 300.0, 50.0, 500.0, 0.0],
        "purchase_tenure_days": [200.0, 45.0, 100.0, 90.0, 150.0, None],
    }
)


def test_rfm_quintiles_among_buyers_only():
    rfm = rfm_table(FEATURES)
    assert rfm["user_id"].to_list() == FEATURES["user_id"].to_list()
    assert rfm.filter(pl.col("user_id") == "f").row(0)[1:] == (0, 0, 0)
    scores = rfm.filter(pl.col("user_id") != "f")
    for col in ("r", "f", "m"):
        assert scores[col].min() >= 1 and scores[col].max() == 5
    assert rfm.filter(pl.col("user_id") == "a").row(0)[1:] == (5, 5, 5)


def test_segments_follow_the_grid():
    grid = pl.DataFrame({"r": [0, 5, 1, 3, 5], "f": [0, 5, 1, 3, 1]})
    names = grid.select(rfm_segment(pl.col("r"), pl.col("f"))).to_series().to_list()
    assert names == ["prospect", "champions", "hibernating", "needs_attention", "new_customer"]


def test_baselines_rank_recent_buyers_first():
    scores = baseline_scores(FEATURES)
    assert np.argmax(scores["recency_only"]) == 0
    assert np.argmax(scores["rfm"]) == 0 and np.argmin(scores["rfm"]) == 5
    # BG/NBD: the frequent, recent buyer expects the most purchases; who never bought, none.
    assert np.argmax(scores["bgnbd"]) == 0 and scores["bgnbd"][5] == 0.0


def test_validation_users_are_stable_and_about_the_share():
    users = pl.Series([f"u{i}" for i in range(5000)])
    held = validation_users(users, 0.2)
    assert np.array_equal(held, validation_users(users, 0.2))
    assert 0.17 < held.mean() < 0.23
    # The same user is held out in every snapshot, so no user leaks across the split.
    twice = validation_users(pl.concat([users, users]), 0.2)
    assert np.array_equal(twice[:5000], twice[5000:])


def test_equal_customers_get_equal_rfm_scores():
    twins = pl.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(10)],
            "purchase_recency_days": [5.0] * 10,
            "buying_days_total": [1] * 10,
            "spend_total": [20.0] * 10,
        }
    )
    rfm = rfm_table(twins)
    assert rfm.select(pl.col("r", "f", "m").n_unique()).row(0) == (1, 1, 1)
