"""LightGBM binary boosters as ONNX graphs that route float32 rows exactly as LightGBM does.

Our own converter rather than onnxmltools: the stock one stores each split threshold as the
float32 *nearest* to LightGBM's double, which sends features lying between the two down the wrong
branch. LightGBM compares ``double(x) <= t``; for a float32 ``x`` that is the same as comparing
``x <= t32`` where ``t32`` is the largest float32 not above ``t``, so that is what we store.
Missing values follow LightGBM's rules: with ``missing_type`` NaN a NaN goes the default way; with
``None`` a NaN is read as 0. Categorical splits and ``zero_as_missing`` are refused, not guessed.

The graph: ``features`` float32 [N, F] → TreeEnsembleRegressor (sum of leaves = raw score) →
the objective's link (Sigmoid for classifiers, Exp for Poisson / Tweedie / gamma counts, none for
regressions) → ``probability`` float32 [N, 1] (named so for every model: what scoring reads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
from onnx import TensorProto, helper

from nightowl.errors import NightowlError

INPUT = "features"
OUTPUT = "probability"
#: Graph node names, so where each one ran can be looked up.
ENSEMBLE = "trees"
ML_OPSET = 3
ONNX_OPSET = 17


class UnsupportedModel(NightowlError, ValueError):
    """A booster this converter would not reproduce exactly."""


class ParityFailed(NightowlError, RuntimeError):
    """The ONNX export does not reproduce the native model closely enough to be registered."""


#: LightGBM reads any feature value within this distance of 0 as exactly 0 (its kZeroThreshold).
ZERO_THRESHOLD = float(np.float32(1e-35))


def float32_at_or_below(value: float) -> float:
    """The largest float32 not above ``value``: ``x <= it`` iff ``double(x) <= value``."""
    with np.errstate(over="ignore"):  # beyond float32's range: the largest finite one below
        v32 = np.float32(value)
    if float(v32) > value:
        v32 = np.nextafter(v32, np.float32(-np.inf))
    return float(v32)


def float32_threshold(threshold: float) -> float:
    """The float32 threshold ``t32`` with ``x <= t32`` exactly where LightGBM sends ``x`` left.

    LightGBM compares ``double(x) <= threshold`` after reading near-zero values as 0, so a
    threshold within ``ZERO_THRESHOLD`` of 0 moves to the edge of that zero band.
    """
    if 0.0 <= threshold < ZERO_THRESHOLD:
        return float32_at_or_below(ZERO_THRESHOLD)  # the whole zero band goes left
    if -ZERO_THRESHOLD <= threshold < 0.0:  # the zero band goes right: left only below it
        below = float32_at_or_below(-ZERO_THRESHOLD)
        if below == -ZERO_THRESHOLD:
            below = float(np.nextafter(np.float32(below), np.float32(-np.inf)))
        return below
    return float32_at_or_below(threshold)


def numerical_split(tree_id: int, node: dict[str, Any]) -> tuple[float, str]:
    """The float32 threshold (``float32_threshold``) and missing type of a split node of
    ``Booster.dump_model``; raises UnsupportedModel for a categorical split."""
    if node["decision_type"] != "<=":
        raise UnsupportedModel(
            f"tree {tree_id}: categorical split on feature {node['split_feature']}; "
            "encode categories as numbers before training"
        )
    return float32_threshold(float(node["threshold"])), node["missing_type"]


@dataclass
class _Nodes:
    """The flat node and leaf attribute lists of a TreeEnsembleRegressor, filled tree by tree."""

    tree_ids: list[int] = field(default_factory=list)
    node_ids: list[int] = field(default_factory=list)
    feature_ids: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    true_ids: list[int] = field(default_factory=list)
    false_ids: list[int] = field(default_factory=list)
    missing_true: list[int] = field(default_factory=list)
    leaf_tree_ids: list[int] = field(default_factory=list)
    leaf_node_ids: list[int] = field(default_factory=list)
    leaf_weights: list[float] = field(default_factory=list)

    def add_tree(self, tree_id: int, root: dict[str, Any]) -> None:
        counter = iter(range(1 << 30))

        def visit(node: dict[str, Any]) -> int:
            node_id = next(counter)
            at = len(self.node_ids)
            self.tree_ids.append(tree_id)
            self.node_ids.append(node_id)
            if "leaf_value" in node:
                self.feature_ids.append(0)
                self.values.append(0.0)
                self.modes.append("LEAF")
                self.true_ids.append(0)
                self.false_ids.append(0)
                self.missing_true.append(0)
                self.leaf_tree_ids.append(tree_id)
                self.leaf_node_ids.append(node_id)
                self.leaf_weights.append(float(node["leaf_value"]))
                return node_id
            threshold, missing = numerical_split(tree_id, node)
            if missing == "NaN":
                nan_goes_left = bool(node["default_left"])
            elif missing == "None":
                nan_goes_left = float(node["threshold"]) >= 0.0  # LightGBM reads NaN as 0
            else:
                raise UnsupportedModel(
                    f"tree {tree_id}: missing_type {missing!r} (zero_as_missing) is not supported"
                )
            self.feature_ids.append(int(node["split_feature"]))
            self.values.append(threshold)
            self.modes.append("BRANCH_LEQ")
            self.missing_true.append(int(nan_goes_left))
            self.true_ids.append(-1)
            self.false_ids.append(-1)
            self.true_ids[at] = visit(node["left_child"])
            self.false_ids[at] = visit(node["right_child"])
            return node_id

        visit(root)


#: How each exported objective turns the sum of leaves into a prediction.
LINKS = {
    "binary": "sigmoid",
    "cross_entropy": "sigmoid",
    "xentropy": "sigmoid",
    "poisson": "exp",
    "tweedie": "exp",
    "gamma": "exp",
    "regression": "identity",
    "regression_l1": "identity",
    "huber": "identity",
    "quantile": "identity",
    "lambdarank": "identity",
    "rank_xendcg": "identity",
}


def link_of(objective: str) -> str:
    """The link of a LightGBM objective string: sigmoid, exp or identity."""
    name = objective.split()[0]
    if name not in LINKS:
        raise UnsupportedModel(f"objective {name!r}: exported objectives are {sorted(LINKS)}")
    return LINKS[name]


def sigmoid_scale(objective: str) -> float:
    """The ``sigmoid:`` factor of a LightGBM binary objective string (1 unless configured)."""
    name, *params = objective.split()
    if link_of(objective) != "sigmoid":
        raise UnsupportedModel(f"objective {name!r} is not a binary classifier")
    for param in params:
        key, _, value = param.partition(":")
        if key == "sigmoid":
            return float(value)
    return 1.0


def onnx_from_booster(booster: lgb.Booster) -> bytes:
    """The serialized ONNX model of a single-output LightGBM booster: float32 features in, what
    ``booster.predict`` returns out (p(1) of a classifier, the mean of a count or regression)."""
    dump = booster.dump_model()
    if dump.get("num_tree_per_iteration", 1) != 1 or dump.get("average_output"):
        raise UnsupportedModel("only single-output boosted (not random-forest) models are exported")
    link = link_of(dump["objective"])
    nodes = _Nodes()
    for tree in dump["tree_info"]:
        nodes.add_tree(int(tree["tree_index"]), tree["tree_structure"])
    n_features = int(dump["max_feature_idx"]) + 1

    ensemble = helper.make_node(
        "TreeEnsembleRegressor",
        [INPUT],
        ["raw_score"],
        name=ENSEMBLE,
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="SUM",
        base_values=[0.0],
        nodes_treeids=nodes.tree_ids,
        nodes_nodeids=nodes.node_ids,
        nodes_featureids=nodes.feature_ids,
        nodes_values=nodes.values,
        nodes_modes=nodes.modes,
        nodes_truenodeids=nodes.true_ids,
        nodes_falsenodeids=nodes.false_ids,
        nodes_missing_value_tracks_true=nodes.missing_true,
        target_treeids=nodes.leaf_tree_ids,
        target_nodeids=nodes.leaf_node_ids,
        target_ids=[0] * len(nodes.leaf_node_ids),
        target_weights=nodes.leaf_weights,
    )
    graph_nodes = [ensemble]
    initializers = []
    if link == "sigmoid":
        logit, scale = "raw_score", sigmoid_scale(dump["objective"])
        if not math.isclose(scale, 1.0):
            initializers.append(helper.make_tensor("sigmoid_scale", TensorProto.FLOAT, [], [scale]))
            graph_nodes.append(
                helper.make_node("Mul", ["raw_score", "sigmoid_scale"], ["logit"], name="scale")
            )
            logit = "logit"
        graph_nodes.append(helper.make_node("Sigmoid", [logit], [OUTPUT], name="sigmoid"))
    elif link == "exp":
        graph_nodes.append(helper.make_node("Exp", ["raw_score"], [OUTPUT], name="exp"))
    else:
        graph_nodes.append(helper.make_node("Identity", ["raw_score"], [OUTPUT], name="identity"))
    graph = helper.make_graph(
        graph_nodes,
        "lightgbm_binary",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None, 1])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="nightowl",
        opset_imports=[
            helper.make_opsetid("", ONNX_OPSET),
            helper.make_opsetid("ai.onnx.ml", ML_OPSET),
        ],
    )
    model.ir_version = 8  # what onnxruntime 1.17+ reads; newer IRs add nothing we use
    meta = model.metadata_props.add()
    meta.key, meta.value = "feature_names", ",".join(dump["feature_names"])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def split_thresholds(booster: lgb.Booster) -> list[tuple[int, float]]:
    """(feature index, threshold) of every numerical split in the booster."""
    found: list[tuple[int, float]] = []

    def visit(node: dict[str, Any]) -> None:
        if "leaf_value" in node:
            return
        found.append((int(node["split_feature"]), float(node["threshold"])))
        visit(node["left_child"])
        visit(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        visit(tree["tree_structure"])
    return found


def parity_rows(booster: lgb.Booster, rows: np.ndarray, probes: int = 20_000) -> np.ndarray:
    """``rows`` plus rows that probe the edges: values at, just above and just below split
    thresholds, NaNs and zeros, each planted in a copy of a real row."""
    if len(rows) == 0:
        return rows
    rng = np.random.default_rng(0)
    splits = split_thresholds(booster)
    picked = rng.choice(len(splits), size=min(len(splits), probes // 3), replace=False)
    extra: list[np.ndarray] = []
    with np.errstate(over="ignore"):
        for i in picked:
            feature, threshold = splits[i]
            at = np.float32(threshold)
            if not np.isfinite(at):
                continue
            for value in (at, np.nextafter(at, np.float32(np.inf)), np.nextafter(at, -np.inf)):
                row = rows[rng.integers(len(rows))].copy()
                row[feature] = value
                extra.append(row)
    n_features = rows.shape[1]
    for value in (np.nan, 0.0):
        block = rows[rng.integers(len(rows), size=min(len(rows), 1000))].copy()
        block[np.arange(len(block)), rng.integers(n_features, size=len(block))] = value
        extra.append(block)
    edge = np.vstack([np.atleast_2d(e) for e in extra]).astype(np.float32)
    return np.ascontiguousarray(np.vstack([rows, edge]))


def parity_max_diff(
    booster: lgb.Booster, session: Any, rows: np.ndarray, *, relative: bool = False
) -> float:
    """Largest |ONNX - LightGBM| prediction over ``rows``; ``relative`` divides each difference
    by max(1, |LightGBM|), for outputs (counts) whose float32 precision scales with their size."""
    native = booster.predict(rows, num_threads=2)
    exported = session.run(None, {INPUT: rows})[0][:, 0]
    diff = np.abs(native - exported.astype(np.float64))
    if relative:
        diff = diff / np.maximum(1.0, np.abs(native))
    return float(diff.max(initial=0.0))


def parity_gate(
    booster: lgb.Booster,
    session: Any,
    rows: np.ndarray,
    tolerance: float,
    *,
    relative: bool = False,
    what: str = "the model",
) -> dict[str, Any]:
    """The parity record of ``session`` against ``booster`` on ``rows`` and the edge rows
    ``parity_rows`` adds; raises ParityFailed (``what`` was not registered) above ``tolerance``."""
    probe = parity_rows(booster, rows)
    max_diff = parity_max_diff(booster, session, probe, relative=relative)
    if not max_diff <= tolerance:
        raise ParityFailed(
            f"ONNX export differs from LightGBM by {max_diff:.3g}"
            f"{' (relative)' if relative else ''} on {len(probe)} held-out and edge rows "
            f"(tolerance {tolerance:g}); {what} was not registered"
        )
    if not relative:
        return {"max_abs_diff": max_diff, "rows": len(probe), "tolerance": tolerance}
    return {
        "max_rel_diff": max_diff,
        "rows": len(probe),
        "tolerance": tolerance,
        "measure": "|onnx - lightgbm| / max(1, |lightgbm|)",
    }
