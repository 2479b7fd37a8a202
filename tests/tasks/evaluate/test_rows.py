"""model_evaluation rows and the verdicts drawn from them."""

from __future__ import annotations

from datetime import date

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from nightowl.tasks.evaluate.rows import (
    MODEL,
    REFERENCE,
    RULE,
    Judged,
    by_origin,
    figure_rows,
    summary,
    verdict_lines,
    verdicts,
)
from nightowl.warehouse.tables import MODEL_EVALUATION

KINDS = {"model": MODEL, "rfm": RULE, "recency": RULE, "lgbm_rfm": REFERENCE}
O1, O2 = date(2026, 10, 1), date(2026, 10, 15)


def judged(origin: date, primary: str = "roc_auc") -> Judged:
    return Judged("propensity", origin, 30, "all_users", 100, primary)


def test_figure_rows_are_one_per_scorer_and_metric_in_the_table_contract():
    figures = {
        "model": {"roc_auc": 0.8, "brier": 0.1},
        "rfm": {"roc_auc": 0.7, "brier": None},
        "not_a_scorer": {"roc_auc": 0.9},
    }
    rows = figure_rows(judged(O1), figures, KINDS, ("roc_auc", "brier"))
    assert rows.schema == MODEL_EVALUATION.schema
    assert rows.height == 4  # an unknown scorer is left out
    brier = rows.filter(pl.col("metric") == "brier")
    assert brier["higher_is_better"].to_list() == [False, False]
    assert brier.filter(pl.col("scorer") == "rfm")["value"].item() is None
    assert rows.filter(pl.col("primary"))["metric"].unique().to_list() == ["roc_auc"]


def evaluation(values: dict[date, dict[str, float]], primary: str = "roc_auc") -> pl.DataFrame:
    return pl.concat(
        figure_rows(judged(origin, primary), {s: {primary: v} for s, v in by.items()}, KINDS,
                    (primary,))
        for origin, by in values.items()
    )  # fmt: skip


def test_the_verdict_is_against_the_best_rule_and_ignores_references():
    frame = evaluation(
        {
            O1: {"model": 0.80, "rfm": 0.78, "recency": 0.70, "lgbm_rfm": 0.95},
            O2: {"model": 0.75, "rfm": 0.72, "recency": 0.76, "lgbm_rfm": 0.10},
        }
    )
    got = verdicts(frame).select("origin", "best_rule", "rule_value", "beats").to_dicts()
    assert got == [
        {"origin": O1, "best_rule": "rfm", "rule_value": 0.78, "beats": True},
        {"origin": O2, "best_rule": "recency", "rule_value": 0.76, "beats": False},
    ]
    assert not verdicts(frame, margin=0.05)["beats"].any()
    overall = summary(verdicts(frame)).row(0, named=True)
    assert overall["origins"] == 2 and overall["won"] == 1 and not overall["beats_everywhere"]
    assert "does not always beat" in verdict_lines(summary(verdicts(frame)))[0]


def test_lower_is_better_metrics_pick_the_smallest_rule():
    frame = evaluation({O1: {"model": 0.6, "rfm": 0.7, "recency": 0.65}}, primary="wape")
    verdict = verdicts(frame).row(0, named=True)
    assert verdict["best_rule"] == "recency" and verdict["beats"]


@settings(max_examples=60, deadline=None)
@given(
    st.floats(0, 1), st.lists(st.floats(0, 1), min_size=1, max_size=4), st.booleans(),
    st.floats(0, 0.2),
)  # fmt: skip
def test_the_model_beats_exactly_when_it_is_better_than_every_rule_by_the_margin(
    model, rules, lower_is_better, margin
):
    metric = "wape" if lower_is_better else "roc_auc"
    kinds = {"model": MODEL} | {f"r{i}": RULE for i in range(len(rules))}
    figures = {"model": {metric: model}} | {f"r{i}": {metric: v} for i, v in enumerate(rules)}
    frame = figure_rows(judged(O1, metric), figures, kinds, (metric,))
    beats = verdicts(frame, margin)["beats"].item()
    if lower_is_better:
        assert beats == all(model < r - margin for r in rules)
    else:
        assert beats == all(model > r + margin for r in rules)


def test_by_origin_puts_origins_in_columns_model_first():
    frame = evaluation(
        {O1: {"model": 0.8, "rfm": 0.7, "lgbm_rfm": 0.9}, O2: {"model": 0.6, "rfm": 0.5}}
    )
    wide = by_origin(frame)
    assert wide["scorer"].to_list() == ["model", "rfm", "lgbm_rfm"]
    assert wide.columns[-3:] == [O1.isoformat(), O2.isoformat(), "mean"]
    assert wide.filter(pl.col("scorer") == "model")["mean"].item() == 0.7
    assert wide.filter(pl.col("scorer") == "lgbm_rfm")["mean"].item() == 0.9  # one origin
