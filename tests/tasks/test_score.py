"""Scoring: the provider choice, node placement, batching and the user_scores columns."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import polars as pl
import pytest

from tasks import score
from tasks.export import onnx_from_booster


@pytest.fixture(scope="module")
def model() -> tuple[lgb.Booster, bytes]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(x, y), 5)
    return booster, onnx_from_booster(booster)


def test_cpu_only_machines_never_ask_for_cuda():
    if score.cuda_really_loads():
        pytest.skip("this machine has a working CUDA provider: nothing to fall back from")
    assert score.providers("auto") == [score.CPU]
    assert score.providers("cpu") == [score.CPU]
    with pytest.raises(RuntimeError, match="no GPU answered"):
        score.providers("cuda")


def test_choosing_a_provider_prints_nothing():
    """No ERROR spam from onnxruntime-gpu on machines without CUDA (or with it)."""
    code = "from tasks import score; import numpy as np;print(score.providers('auto'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr == ""
    assert "CPUExecutionProvider" in done.stdout


def test_node_placement_counts_the_nodes_each_provider_ran(model):
    _, onnx_bytes = model
    placement = score.node_placement(onnx_bytes, [score.CPU], n_features=4)
    assert placement == {score.CPU: 2}  # the tree ensemble and the sigmoid


def test_batched_prediction_equals_one_call(model):
    booster, onnx_bytes = model
    sess = score.session(onnx_bytes, [score.CPU])
    x = np.random.default_rng(1).normal(size=(1003, 4)).astype(np.float32)
    small = score.predict(sess, x, batch_rows=100)
    whole = score.predict(sess, x, batch_rows=10_000)
    assert np.array_equal(small, whole)
    assert np.abs(small - booster.predict(x)).max() < 1e-6


def test_user_scores_columns_tiers_and_segments():
    features = pl.DataFrame(
        {
            "user_id": ["buyer", "lapsed", "prospect", "sure"],
            "purchase_recency_days": [3.0, 200.0, None, 1.0],
            "buying_days_total": [2, 1, 0, 9],
            "spend_total": [50.0, 10.0, 0.0, 900.0],
        }
    )
    out = score.user_scores(
        features,
        np.array([0.1, 0.5, 0.3, 0.9], dtype=np.float32),
        horizon_days=30,
        churn_lookback_days=90,
        risk_tiers={"high": 0.8, "medium": 0.5},
        model_version="v1",
        provider=score.CPU,
        as_of=date(2026, 11, 28),
    )
    assert out.columns == [
        "user_id", "p_purchase_30d", "churn_risk", "risk_tier", "segment", "model_version",
        "provider", "as_of",
    ]  # fmt: skip
    rows = {r["user_id"]: r for r in out.iter_rows(named=True)}
    assert (
        rows["buyer"]["churn_risk"] == pytest.approx(0.9) and rows["buyer"]["risk_tier"] == "high"
    )
    assert rows["sure"]["risk_tier"] == "low" and rows["sure"]["segment"] == "champions"
    assert rows["lapsed"]["churn_risk"] is None and rows["lapsed"]["risk_tier"] == "lapsed"
    assert rows["prospect"]["risk_tier"] == "prospect" and rows["prospect"]["segment"] == "prospect"
    assert out["p_purchase_30d"].to_list() == pytest.approx([0.1, 0.5, 0.3, 0.9])


def test_a_session_asks_for_what_it_is_given(model):
    _, onnx_bytes = model
    sess = score.session(onnx_bytes, [score.CPU])
    assert sess.get_providers() == [score.CPU]
    assert isinstance(sess, ort.InferenceSession)
