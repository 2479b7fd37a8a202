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

from nightowl.schemas.config import ModelSettings
from nightowl.tasks.behaviour.scores import user_scores
from nightowl.tasks.models import score
from nightowl.tasks.models.export import onnx_from_booster
from nightowl.tasks.models.tensorised import gated_exports
from nightowl.warehouse.registry import ModelCard, Registry
from nightowl.warehouse.store import Warehouse


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
    code = (
        "from nightowl.tasks.models import score; import numpy as np;print(score.providers('auto'))"
    )
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
    out = user_scores(
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
        "provider", "scoring_graph", "as_of",
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


def registered(tmp_path, booster: lgb.Booster, x: np.ndarray, *, tensor: bool = True) -> tuple:
    """A registry holding ``booster`` as version v1 (with or without its tensorised graph)."""
    exports = gated_exports(booster, x, 1e-6)
    card = ModelCard(
        model="m", version="v1", code_version="test",
        features=[{"name": f"f{i}", "dtype": "float32"} for i in range(x.shape[1])],
        training={"last_day": "2026-11-01"}, metrics={}, parity=exports.parity, params={},
        best_iteration=0,
    )  # fmt: skip
    registry = Registry(Warehouse(tmp_path))
    registry.admit(
        card, exports.tree_ensemble, booster.model_to_string(), promote=True, reason="test",
        tensor_bytes=exports.tensorised if tensor else None,
    )  # fmt: skip
    return registry, card


def test_registration_gates_both_graphs(model):
    booster, _ = model
    x = np.random.default_rng(2).normal(size=(500, 4)).astype(np.float32)
    parity = gated_exports(booster, x, 1e-6).parity
    assert parity["max_abs_diff"] <= 1e-6
    assert parity["tensorised"]["max_abs_diff"] <= 1e-6 and parity["tensorised"]["rows"] > 500


def test_a_cpu_scores_with_the_tree_ensemble_graph(tmp_path, model):
    if score.cuda_really_loads():
        pytest.skip("this machine has a working CUDA provider")
    booster, _ = model
    x = np.random.default_rng(3).normal(size=(2003, 4)).astype(np.float32)
    registry, card = registered(tmp_path, booster, x)
    scorer = score.scorer_for(registry, card, ModelSettings(score_batch_rows=500))
    assert (scorer.graph, scorer.provider) == (score.TREE_ENSEMBLE, score.CPU)
    assert scorer.path == "tree_ensemble on CPUExecutionProvider"
    assert scorer.placement == {score.CPU: 2}  # the tree ensemble and the sigmoid
    assert np.abs(scorer.predict(x) - booster.predict(x)).max() <= 1e-6


def test_the_tensorised_graph_can_be_asked_for_and_scores_the_same(tmp_path, model):
    booster, _ = model
    x = np.random.default_rng(4).normal(size=(2003, 4)).astype(np.float32)
    x[::7, 1] = np.nan
    registry, card = registered(tmp_path, booster, x)
    scorer = score.scorer_for(registry, card, ModelSettings(provider="cpu", graph="tensorised"))
    assert (scorer.graph, scorer.provider) == (score.TENSORISED, score.CPU)
    assert set(scorer.placement) == {score.CPU} and scorer.placement[score.CPU] > 10
    assert np.abs(scorer.predict(x) - booster.predict(x)).max() <= 1e-12


def test_a_version_without_a_tensorised_graph_says_what_to_do(tmp_path, model):
    booster, _ = model
    x = np.random.default_rng(5).normal(size=(200, 4)).astype(np.float32)
    registry, card = registered(tmp_path, booster, x, tensor=False)
    assert registry.tensor_bytes("m", "v1") is None
    with pytest.raises(RuntimeError, match="no tensorised graph; retrain"):
        score.scorer_for(registry, card, ModelSettings(provider="cpu", graph="tensorised"))
    assert score.scorer_for(registry, card, ModelSettings()).graph == score.TREE_ENSEMBLE


def test_nodes_that_fall_back_to_the_cpu_send_scoring_to_the_tree_ensemble(
    tmp_path, model, monkeypatch, caplog
):
    """A CUDA session whose tensorised nodes ran on the CPU is not taken for GPU scoring."""
    booster, _ = model
    x = np.random.default_rng(6).normal(size=(300, 4)).astype(np.float32)
    registry, card = registered(tmp_path, booster, x)
    monkeypatch.setattr(score, "providers", lambda preference: [score.CUDA, score.CPU])
    placed = {"gather_1": score.CUDA, "greatercast_2": score.CPU}
    monkeypatch.setattr(score, "node_providers", lambda model, wanted, n: dict(placed))
    monkeypatch.setattr(score, "session", lambda model, wanted: ort.InferenceSession(model))
    scorer = score.scorer_for(registry, card, ModelSettings())
    assert scorer.graph == score.TREE_ENSEMBLE
    assert "1 of the tensorised graph's 2 nodes fell back to the CPU (greatercast_2)" in caplog.text
    assert np.abs(scorer.predict(x) - booster.predict(x)).max() <= 1e-6


def test_a_gpu_scores_with_the_tensorised_graph_when_every_node_ran_there(
    tmp_path, model, monkeypatch
):
    booster, _ = model
    x = np.random.default_rng(7).normal(size=(300, 4)).astype(np.float32)
    registry, card = registered(tmp_path, booster, x)
    monkeypatch.setattr(score, "providers", lambda preference: [score.CUDA, score.CPU])
    monkeypatch.setattr(score, "node_providers", lambda model, wanted, n: {"a": score.CUDA})
    made = {}
    monkeypatch.setattr(score, "session", lambda model, wanted: made.setdefault("model", model))
    scorer = score.scorer_for(registry, card, ModelSettings(gpu_batch_rows=123))
    assert (scorer.graph, scorer.provider, scorer.batch_rows) == (
        score.TENSORISED, score.CUDA, 123,
    )  # fmt: skip
    assert made["model"] == registry.tensor_bytes("m", "v1")
