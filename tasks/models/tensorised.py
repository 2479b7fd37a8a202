"""LightGBM models as ONNX graphs of plain tensor operators, so that a GPU really runs the trees.

ONNX Runtime has no CUDA kernel for the tree-ensemble operator (``ai.onnx.ml`` TreeEnsemble*):
in a CUDA session those nodes run on the CPU, with copies around them. This exporter writes the
same model with operators that do have CUDA kernels (Gather, GatherElements, Greater, IsNaN,
Where, Add, ReduceSum, Sigmoid / Exp). Every tree's nodes go into flat tables, the two children
of a split side by side, and all trees of all rows are walked at once, one level per step::

    node  = root of each tree                          [T]
    depth times:
        x     = X[row, feature[node]]                  [B, T]
        right = x > threshold[node]                    (NaN read as 0 where LightGBM does)
        right = default_right[node] where x counts as missing at that node
        node  = first_child[node] + right
    score = sum over trees of leaf_value[node]         [B, 1] in float64
    out   = the objective's link of score

A leaf is its own first child with an infinite threshold, so a row that reached it stays there
for the remaining steps. The first step reads the roots from constants, so the graph has no
shape arithmetic for a provider to push back to the CPU.

LightGBM's split semantics, all honoured: ``double(x) <= t`` becomes ``x <= t32`` with ``t32``
the largest float32 not above ``t`` (``tasks.export.float32_threshold``, which also handles the
band of values LightGBM reads as 0); missing type NaN sends NaN the default way; None reads NaN
as 0; Zero reads NaN as 0 and sends 0 the default way. Leaves are summed in float64, so regression
and count outputs match ``Booster.predict`` to ~1e-12, not just float32's seven digits.
Categorical splits, linear trees, multi-output and random-forest models are refused
(``UnsupportedModel``) rather than approximated.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nightowl.tasks.models.export import (
    INPUT,
    ONNX_OPSET,
    OUTPUT,
    ZERO_THRESHOLD,
    UnsupportedModel,
    link_of,
    numerical_split,
    onnx_from_booster,
    parity_gate,
    sigmoid_scale,
)
from nightowl.tasks.models.score import CPU, TENSORISED, session

#: ``graph`` metadata value of these models, beside ``tree_ensemble`` for ``tasks.export``'s.
GRAPH = TENSORISED


#: Held-out rows (before the edge rows) the tensorised graph's parity gate scores at most.
TENSOR_GATE_ROWS = 20_000
#: Which copy of the input a split node reads: the features with NaN (and, for missing type Zero,
#: zero) replaced by -inf, so that it goes left, or by +inf, so that it goes right.
NAN_LEFT, NAN_RIGHT, MISSING_LEFT, MISSING_RIGHT = range(4)


@dataclass
class NodeTables:
    """Every tree's nodes laid out flat: what one traversal step gathers, and each tree's root.

    ``column`` is the split feature's index in the widened input (``variant * F + feature``).
    """

    n_features: int
    column: list[int] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)
    first_child: list[int] = field(default_factory=list)
    leaf_value: list[float] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)
    depth: int = 0
    zero_missing: bool = False

    def _new(self) -> int:
        """A fresh slot, filled as a leaf that stays put until a split overwrites it."""
        at = len(self.column)
        self.column.append(0)
        self.threshold.append(float("inf"))  # nothing is above it: a leaf keeps its rows
        self.first_child.append(at)
        self.leaf_value.append(0.0)
        return at

    def add_tree(self, tree_id: int, root: dict[str, Any]) -> None:
        """Lay out one tree of ``Booster.dump_model`` breadth first, children side by side."""
        queue = deque([(self._new(), root, 0)])
        self.roots.append(queue[0][0])
        while queue:
            at, node, level = queue.popleft()
            if "leaf_value" in node:
                if node.get("leaf_coeff"):
                    raise UnsupportedModel(f"tree {tree_id}: linear trees are not exported")
                self.leaf_value[at] = float(node["leaf_value"])
                self.depth = max(self.depth, level)
                continue
            threshold, missing = numerical_split(tree_id, node)
            if missing == "NaN":
                variant = NAN_LEFT if node["default_left"] else NAN_RIGHT
            elif missing == "None":  # LightGBM reads NaN as 0
                variant = NAN_LEFT if threshold >= 0.0 else NAN_RIGHT
            elif missing == "Zero":  # NaN read as 0, and 0 goes the default way
                variant = MISSING_LEFT if node["default_left"] else MISSING_RIGHT
                self.zero_missing = True
            else:
                raise UnsupportedModel(f"tree {tree_id}: unknown missing_type {missing!r}")
            left, right = self._new(), self._new()
            self.column[at] = variant * self.n_features + int(node["split_feature"])
            self.threshold[at] = threshold
            self.first_child[at] = left
            queue.append((left, node["left_child"], level + 1))
            queue.append((right, node["right_child"], level + 1))


def node_tables(booster: lgb.Booster) -> tuple[NodeTables, dict[str, Any]]:
    """The flat node tables of a single-output boosted model, and its dump (for the objective)."""
    dump = booster.dump_model()
    if dump.get("num_tree_per_iteration", 1) != 1 or dump.get("average_output"):
        raise UnsupportedModel("only single-output boosted (not random-forest) models are exported")
    link_of(dump["objective"])  # refuses objectives without a known link
    tables = NodeTables(n_features=int(dump["max_feature_idx"]) + 1)
    for tree in dump["tree_info"]:
        tables.add_tree(int(tree["tree_index"]), tree["tree_structure"])
    return tables, dump


class _Graph:
    """Nodes and constants of the graph being built, with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.constants: dict[str, onnx.TensorProto] = {}
        self._count = 0

    def const(self, name: str, value: Any) -> str:
        if name not in self.constants:
            self.constants[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        self._count += 1
        out = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


def _widened_input(g: _Graph, zero_missing: bool) -> str:
    """The input's copies side by side [B, 2F or 4F]: NaN as -inf, NaN as +inf and, when some
    split has missing type Zero, NaN-or-zero as -inf and as +inf (see ``NAN_LEFT`` …)."""
    low, high = g.const("minus_inf", np.float32(-np.inf)), g.const("plus_inf", np.float32(np.inf))
    nan = g.op("IsNaN", INPUT)
    copies = [g.op("Where", nan, low, INPUT), g.op("Where", nan, high, INPUT)]
    if zero_missing:
        band = g.const("zero_band", np.float32(ZERO_THRESHOLD))
        missing = g.op("Or", nan, g.op("LessOrEqual", g.op("Abs", INPUT), band))
        copies += [g.op("Where", missing, low, INPUT), g.op("Where", missing, high, INPUT)]
    return g.op("Concat", *copies, axis=1)


def _step(g: _Graph, t: NodeTables, x: str, node: str | None) -> str:
    """One traversal step for every row and tree: the next node index, int32 [B, T].

    ``node`` None is the first step, which reads the roots' attributes from constants.
    """
    if node is None:
        roots = np.asarray(t.roots)
        value = g.op("Gather", x, g.const("column_root", np.asarray(t.column)[roots]), axis=1)
        threshold = g.const("threshold_root", np.asarray(t.threshold, np.float32)[roots])
        first_child = g.const("first_child_root", np.asarray(t.first_child, np.int32)[roots])
    else:
        column = g.op("Gather", g.const("column", np.asarray(t.column, np.int32)), node, axis=0)
        value = g.op("GatherElements", x, column, axis=1)
        threshold = g.op("Gather", g.const("threshold", np.asarray(t.threshold, np.float32)), node)
        first_child = g.op(
            "Gather", g.const("first_child", np.asarray(t.first_child, np.int32)), node
        )
    right = g.op("Cast", g.op("Greater", value, threshold), to=TensorProto.INT32)
    return g.op("Add", first_child, right)


def tensorised_onnx_from_booster(booster: lgb.Booster) -> bytes:
    """The serialized ONNX model of a single-output LightGBM booster in standard operators:
    float32 features [N, F] in, what ``booster.predict`` returns out, float64 [N, 1]."""
    tables, dump = node_tables(booster)
    n_features = int(dump["max_feature_idx"]) + 1
    g = _Graph()
    x = _widened_input(g, tables.zero_missing)
    node = _step(g, tables, x, None)  # one step even for stumps: it gives the [B, T] shape
    for _ in range(max(1, tables.depth) - 1):
        node = _step(g, tables, x, node)
    leaf_values = np.asarray(tables.leaf_value, dtype=np.float64)
    leaves = g.op("Gather", g.const("leaf_value", leaf_values), node, axis=0)
    score = g.op("ReduceSum", leaves, g.const("tree_axis", np.array([1])), keepdims=1)
    link = link_of(dump["objective"])
    if link == "sigmoid":
        scale = sigmoid_scale(dump["objective"])
        if scale != 1.0:
            score = g.op("Mul", score, g.const("sigmoid_scale", np.float64(scale)))
        g.nodes.append(helper.make_node("Sigmoid", [score], [OUTPUT], name="link"))
    elif link == "exp":
        g.nodes.append(helper.make_node("Exp", [score], [OUTPUT], name="link"))
    else:
        g.nodes.append(helper.make_node("Identity", [score], [OUTPUT], name="link"))
    graph = helper.make_graph(
        g.nodes,
        "lightgbm_tensorised",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.DOUBLE, [None, 1])],
        initializer=list(g.constants.values()),
    )
    model = helper.make_model(
        graph, producer_name="nightowl", opset_imports=[helper.make_opsetid("", ONNX_OPSET)]
    )
    model.ir_version = 8  # what onnxruntime 1.17+ reads; newer IRs add nothing we use
    for key, value in (
        ("feature_names", ",".join(dump["feature_names"])),
        ("graph", GRAPH),
        ("depth", str(tables.depth)),
        ("trees", str(len(tables.roots))),
    ):
        meta = model.metadata_props.add()
        meta.key, meta.value = key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()


@dataclass(frozen=True)
class Exports:
    """Both graphs of a booster, each parity-gated against it: what the registry stores."""

    tree_ensemble: bytes
    tensorised: bytes
    parity: dict[str, Any]


def gated_exports(
    booster: lgb.Booster,
    rows: np.ndarray,
    tolerance: float,
    *,
    relative: bool = False,
    what: str = "the model",
) -> Exports:
    """The tree-ensemble and tensorised graphs of ``booster`` with their parity records; raises
    ``ParityFailed`` (``what`` is not registered) if either differs from LightGBM by more than
    ``tolerance`` on ``rows`` and the edge rows. The tensorised graph's float64 output is held to
    ``tolerance`` in absolute terms even where the float32 tree ensemble is judged ``relative``
    (on at most ``TENSOR_GATE_ROWS`` of ``rows``: on a CPU it is the slower graph)."""
    ensemble = onnx_from_booster(booster)
    parity = parity_gate(
        booster, session(ensemble, [CPU]), rows, tolerance, relative=relative, what=what
    )
    tensor = tensorised_onnx_from_booster(booster)
    if len(rows) > TENSOR_GATE_ROWS:
        rows = rows[np.random.default_rng(0).choice(len(rows), TENSOR_GATE_ROWS, replace=False)]
    parity[GRAPH] = parity_gate(booster, session(tensor, [CPU]), rows, tolerance, what=what)
    return Exports(tree_ensemble=ensemble, tensorised=tensor, parity=parity)
