"""The tensorised export reproduces LightGBM exactly with operators a GPU provider can run."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nightowl.tasks.models.export import (
    UnsupportedModel,
    onnx_from_booster,
    parity_max_diff,
    parity_rows,
)
from nightowl.tasks.models.tensorised import GRAPH, node_tables, tensorised_onnx_from_booster

#: Operators ONNX Runtime's CUDA provider has kernels for; the graph must use no others.
CUDA_OPS = {
    "Abs", "Add", "Cast", "Concat", "Exp", "Gather", "GatherElements", "Greater", "Identity",
    "IsNaN", "LessOrEqual", "Mul", "Or", "ReduceSum", "Sigmoid", "Where",
}  # fmt: skip


def session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def dirty_rows(n: int, n_features: int, seed: int) -> np.ndarray:
    """Normal float32 rows with NaNs, exact zeros and a mostly-zero column."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features)).astype(np.float32)
    x[rng.random(x.shape) < 0.08] = np.nan
    x[rng.random(x.shape) < 0.08] = 0.0
    x[:, -1] = np.where(rng.random(n) < 0.6, 0.0, x[:, -1])
    return x


def signal(x: np.ndarray) -> np.ndarray:
    filled = np.nan_to_num(x)
    return filled[:, 0] + filled[:, 1] * filled[:, 2] - (x[:, 3] == 0)


def target(objective: str, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    s = signal(x)
    if objective == "binary":
        return (s + rng.normal(size=len(x)) > 0).astype(int)
    if objective in ("poisson", "tweedie", "gamma"):
        return rng.poisson(np.exp(np.clip(s, -3, 3))) + (objective == "gamma")
    if objective == "lambdarank":
        return np.clip(np.round(s + rng.normal(size=len(x))), 0, 4).astype(int)
    return 250.0 * s + rng.normal(size=len(x))  # large regression outputs: float64 matters


def trained(objective: str, rounds: int = 60, seed: int = 1, **params) -> tuple:
    x = dirty_rows(4000, 6, seed)
    y = target(objective, x, np.random.default_rng(seed))
    group = [20] * 200 if objective == "lambdarank" else None
    params = {"objective": objective, "num_leaves": 31, "verbose": -1, "seed": seed, **params}
    return lgb.train(params, lgb.Dataset(x, y, group=group), rounds), x


CASES = {
    "binary": ("binary", {}),
    "binary, sigmoid 0.7": ("binary", {"sigmoid": 0.7}),
    "binary, missing type None": ("binary", {"use_missing": False}),
    "binary, missing type Zero": ("binary", {"zero_as_missing": True}),
    "regression": ("regression", {}),
    "poisson": ("poisson", {}),
    "tweedie": ("tweedie", {"tweedie_variance_power": 1.3}),
    "gamma": ("gamma", {}),
    "lambdarank": ("lambdarank", {}),
}


@pytest.mark.parametrize("case", CASES)
def test_matches_lightgbm_on_held_out_nan_zero_and_threshold_rows(case):
    objective, params = CASES[case]
    booster, x = trained(objective, **params)
    rows = parity_rows(booster, x[3000:])
    assert np.isnan(rows).any() and (rows == 0).any() and len(rows) > 2000
    assert parity_max_diff(booster, session(tensorised_onnx_from_booster(booster)), rows) <= 1e-6


def test_every_missing_type_is_exercised():
    kinds = {}
    for case in ("binary", "binary, missing type None", "binary, missing type Zero"):
        objective, params = CASES[case]
        _, dump = node_tables(trained(objective, rounds=20, **params)[0])
        kinds[case] = {n["missing_type"] for n in _splits(dump)}
    assert "NaN" in kinds["binary"]
    assert kinds["binary, missing type None"] == {"None"}
    assert kinds["binary, missing type Zero"] == {"Zero"}


def _splits(dump: dict) -> list[dict]:
    found, stack = [], [t["tree_structure"] for t in dump["tree_info"]]
    while stack:
        node = stack.pop()
        if "leaf_value" not in node:
            found.append(node)
            stack += [node["left_child"], node["right_child"]]
    return found


def test_every_split_probed_at_and_beside_its_threshold():
    booster, x = trained("binary")
    probes = []
    for node in _splits(booster.dump_model()):
        at = np.float32(node["threshold"])
        for value in (
            at,
            np.nextafter(at, np.float32(np.inf)),
            np.nextafter(at, np.float32(-1e30)),
        ):
            row = x[0].copy()
            row[node["split_feature"]] = value
            probes.append(row)
    sess = session(tensorised_onnx_from_booster(booster))
    assert parity_max_diff(booster, sess, np.array(probes, dtype=np.float32)) <= 1e-6


def test_infinities_go_where_lightgbm_sends_them():
    booster, x = trained("binary")
    rows = np.repeat(x[:50], 4, axis=0)
    columns = np.random.default_rng(0).integers(0, x.shape[1], size=len(rows))
    rows[np.arange(len(rows)), columns] = np.tile([np.inf, -np.inf, np.inf, -np.inf], 50)
    assert parity_max_diff(booster, session(tensorised_onnx_from_booster(booster)), rows) <= 1e-6


def test_agrees_with_the_tree_ensemble_export():
    booster, x = trained("binary")
    rows = parity_rows(booster, x[:1000])
    ensemble = session(onnx_from_booster(booster)).run(None, {"features": rows})[0][:, 0]
    tensor = session(tensorised_onnx_from_booster(booster)).run(None, {"features": rows})[0][:, 0]
    assert np.abs(ensemble - tensor).max() <= 1e-6


def test_graph_uses_only_operators_with_cuda_kernels():
    for objective, params in CASES.values():
        proto = onnx.load_from_string(
            tensorised_onnx_from_booster(trained(objective, 5, **params)[0])
        )
        ops = {n.op_type for n in proto.graph.node}
        assert ops <= CUDA_OPS, ops - CUDA_OPS
        assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta["graph"] == GRAPH and int(meta["trees"]) == 5


def test_stump_only_models_score_their_constant():
    x = dirty_rows(300, 3, 0)
    params = {"objective": "regression", "verbose": -1, "min_data_in_leaf": 1000}
    booster = lgb.train(params, lgb.Dataset(x, np.arange(300.0)), 3)
    assert node_tables(booster)[0].depth == 0
    out = session(tensorised_onnx_from_booster(booster)).run(None, {"features": x[:7]})[0]
    assert out.shape == (7, 1)
    assert np.allclose(out[:, 0], booster.predict(x[:7]), atol=1e-9)


def test_unsupported_models_are_refused_with_the_reason():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(500, 2)).astype(np.float32)
    params = {"objective": "binary", "verbose": -1, "min_data_per_group": 5, "cat_smooth": 1}
    model = lgb.train(
        params, lgb.Dataset(x, (x[:, 0] == 3).astype(int), categorical_feature=[0]), 3
    )
    with pytest.raises(UnsupportedModel, match="categorical split"):
        tensorised_onnx_from_booster(model)
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1}
    model = lgb.train(params, lgb.Dataset(x, x[:, 0] % 3), 2)
    with pytest.raises(UnsupportedModel, match="single-output"):
        tensorised_onnx_from_booster(model)
    model = lgb.train({"objective": "regression", "linear_tree": True, "verbose": -1},
                      lgb.Dataset(x, x[:, 0] * 2.0), 2)  # fmt: skip
    with pytest.raises(UnsupportedModel, match="linear trees"):
        tensorised_onnx_from_booster(model)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    objective=st.sampled_from(["binary", "regression", "poisson"]),
    leaves=st.integers(2, 40),
    missing=st.sampled_from([{}, {"use_missing": False}, {"zero_as_missing": True}]),
    seed=st.integers(0, 10_000),
)
def test_any_model_any_rows_matches_lightgbm(objective, leaves, missing, seed):
    booster, _ = trained(objective, rounds=8, seed=seed, num_leaves=leaves, **missing)
    rows = parity_rows(booster, dirty_rows(300, 6, seed + 1), probes=600)
    assert parity_max_diff(booster, session(tensorised_onnx_from_booster(booster)), rows) <= 1e-6
