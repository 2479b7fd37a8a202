"""The ONNX export reproduces LightGBM: same branch for every float32 value, p within 1e-6."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nightowl.tasks.models.export import (
    ZERO_THRESHOLD,
    UnsupportedModel,
    float32_threshold,
    onnx_from_booster,
    parity_max_diff,
    parity_rows,
    split_thresholds,
)


def lightgbm_goes_left(x: np.float32, threshold: float) -> bool:
    """LightGBM's numerical decision for a non-missing value (near-zero values read as 0)."""
    value = 0.0 if abs(float(x)) <= ZERO_THRESHOLD else float(x)
    return value <= threshold


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(x=finite32, threshold=st.floats(allow_nan=False, allow_infinity=False))
def test_stored_threshold_routes_every_float32_like_lightgbm(x, threshold):
    x32 = np.float32(x)
    assert (x32 <= np.float32(float32_threshold(threshold))) == lightgbm_goes_left(x32, threshold)


@given(x=finite32, threshold=finite32)
def test_routing_is_exact_at_and_beside_float32_thresholds(x, threshold):
    # Thresholds that are themselves float32 values, probed at their neighbours.
    t = float(np.float32(threshold))
    for probe in (np.float32(t), np.nextafter(np.float32(t), np.float32(np.inf)), np.float32(x)):
        assert (probe <= np.float32(float32_threshold(t))) == lightgbm_goes_left(probe, t)


def test_zero_band_thresholds_move_to_the_band_edge():
    assert float32_threshold(0.0) >= ZERO_THRESHOLD * 0.99  # zero and its band go left
    assert float32_threshold(-ZERO_THRESHOLD) < -ZERO_THRESHOLD  # the band goes right


@pytest.fixture(scope="module")
def booster() -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 6)).astype(np.float32)
    x[rng.random(x.shape) < 0.08] = np.nan  # NaN-aware splits
    x[rng.random(x.shape) < 0.08] = 0.0  # splits around the zero band
    x[:, 5] = np.where(rng.random(4000) < 0.5, 0.0, x[:, 5])
    signal = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 2])
    y = (signal + rng.normal(size=4000) > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 31, "verbose": -1, "seed": 1}
    return lgb.train(params, lgb.Dataset(x, y), 60), x


def test_onnx_matches_lightgbm_on_rows_nans_zeros_and_thresholds(booster):
    model, x = booster
    rows = parity_rows(model, x[:500])
    assert len(rows) > 500 + 1000  # edge rows were added
    sess = ort.InferenceSession(onnx_from_booster(model), providers=["CPUExecutionProvider"])
    assert parity_max_diff(model, sess, rows) <= 1e-6
    # Every split, probed exactly at its float32 threshold and on both sides of it.
    probes = []
    for feature, threshold in split_thresholds(model):
        at = np.float32(threshold)
        for value in (
            at,
            np.nextafter(at, np.float32(np.inf)),
            np.nextafter(at, np.float32(-1e30)),
        ):
            row = x[0].copy()
            row[feature] = value
            probes.append(row)
    assert parity_max_diff(model, sess, np.array(probes, dtype=np.float32)) <= 1e-6


def test_nearest_float32_thresholds_would_fail_the_gate(booster):
    """The rounding matters: storing the nearest float32 (as onnxmltools does) mis-routes."""
    import onnx

    model, x = booster
    proto = onnx.load_from_string(onnx_from_booster(model))
    ensemble = proto.graph.node[0]
    values = next(a for a in ensemble.attribute if a.name == "nodes_values")
    thresholds = iter(t for _, t in split_thresholds(model))
    modes = next(a for a in ensemble.attribute if a.name == "nodes_modes").strings
    for i, mode in enumerate(modes):
        if mode == b"BRANCH_LEQ":
            values.floats[i] = float(np.float32(next(thresholds)))  # nearest, not at-or-below
    naive = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    probes = []
    for feature, threshold in split_thresholds(model):
        if float(np.float32(threshold)) > threshold:  # rounded up: the value at it goes astray
            row = x[0].copy()
            row[feature] = np.float32(threshold)
            probes.append(row)
    assert probes, "expected some thresholds that round up"
    assert parity_max_diff(model, naive, np.array(probes, dtype=np.float32)) > 1e-6


def test_categorical_splits_are_refused():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(500, 2)).astype(np.float32)
    y = (x[:, 0] == 3).astype(int)
    data = lgb.Dataset(x, y, categorical_feature=[0])
    params = {"objective": "binary", "verbose": -1, "min_data_per_group": 5, "cat_smooth": 1}
    model = lgb.train(params, data, 3)
    with pytest.raises(UnsupportedModel, match="categorical split"):
        onnx_from_booster(model)


@pytest.mark.parametrize(
    ("objective", "target"),
    [
        ("poisson", lambda x: np.random.default_rng(1).poisson(np.exp(x[:, 0]))),
        ("tweedie", lambda x: np.random.default_rng(1).poisson(np.exp(x[:, 0]))),
        ("regression", lambda x: 3 * x[:, 0] + x[:, 1]),
    ],
)
def test_count_and_regression_models_export_with_their_link(objective, target):
    x = np.random.default_rng(0).normal(size=(2000, 3)).astype(np.float32)
    params = {"objective": objective, "verbose": -1, "min_data_in_leaf": 20}
    model = lgb.train(params, lgb.Dataset(x, target(x)), 40)
    onnx_bytes = onnx_from_booster(model)
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    rows = parity_rows(model, x)
    assert parity_max_diff(model, sess, rows, relative=True) <= 1e-6
    if objective != "regression":  # a log link: predictions are positive means
        assert sess.run(None, {"features": x})[0].min() > 0


def test_unknown_objectives_are_refused():
    x = np.random.default_rng(0).normal(size=(200, 2))
    model = lgb.train({"objective": "mape", "verbose": -1}, lgb.Dataset(x, x[:, 0] + 5), 2)
    with pytest.raises(UnsupportedModel, match="exported objectives"):
        onnx_from_booster(model)
