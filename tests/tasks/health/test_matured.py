"""model_health rows, calibration, the population stability index and the alerts."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nightowl.tasks.health.matured import (
    SERVED,
    Cohort,
    calibration_error,
    drift_alerts,
    drift_rows,
    judged_rows,
    losing_alerts,
    losing_streaks,
    matured_lines,
    psi,
    reliability,
    reliability_rows,
)
from nightowl.warehouse.tables import MODEL_DRIFT, MODEL_HEALTH

NIGHT = date(2026, 10, 1)


def cohort(night: date = NIGHT, version: str = "2026-09-30-abc") -> Cohort:
    return Cohort(
        "propensity", version, night, night, night + timedelta(days=29), "all_users", 4, "roc_auc"
    )


def test_judged_rows_keep_probability_metrics_for_what_was_served_only():
    figures = {SERVED: {"roc_auc": 0.8, "brier": 0.1}, "rfm": {"roc_auc": 0.7, "brier": None}}
    rows = judged_rows(cohort(), figures, ("roc_auc", "brier"))
    assert rows.schema == MODEL_HEALTH.schema
    assert rows.select("scorer", "kind", "metric").rows() == [
        (SERVED, SERVED, "roc_auc"),
        (SERVED, SERVED, "brier"),
        ("rfm", "rule", "roc_auc"),
    ]
    assert rows["primary"].to_list() == [True, False, True]
    assert rows["higher_is_better"].to_list() == [True, False, True]
    assert set(rows["outcome_end"]) == {NIGHT + timedelta(days=29)}


def test_reliability_bins_and_calibration_error():
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.05, 0.15, 0.85, 0.95, 1.0])  # 1.0 falls in the last bin
    curve = reliability(labels, scores, bins=10)
    assert curve["bin"].to_list() == [0, 1, 8, 9]
    assert curve["count"].to_list() == [1, 1, 1, 2]
    assert curve["observed"].to_list() == [0.0, 0.0, 1.0, 1.0]
    # |0.05-0| + |0.15-0| + |0.85-1| + 2 * |0.975-1|, over 5.
    assert calibration_error(curve) == pytest.approx((0.05 + 0.15 + 0.15 + 0.05) / 5)
    rows = reliability_rows(cohort(), curve)
    assert rows.schema == MODEL_HEALTH.schema and rows.height == 12
    assert not rows["primary"].any() and rows["bin"].drop_nulls().len() == 12


def test_a_perfectly_calibrated_curve_has_no_error():
    curve = pl.DataFrame({"bin": [1, 5], "predicted": [0.1, 0.5], "observed": [0.1, 0.5],
                          "count": [10, 4]})  # fmt: skip
    assert calibration_error(curve) == 0.0
    assert calibration_error(curve.clear()) is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200), st.integers(2, 20))
def test_psi_of_a_sample_against_itself_is_zero_and_never_negative(values, bins):
    sample = np.array(values)
    assert psi(sample, sample, bins) == pytest.approx(0.0, abs=1e-9)
    shuffled = np.random.default_rng(0).permutation(sample)[: max(1, len(sample) // 2)]
    assert psi(sample, shuffled, bins) >= -1e-12


def test_psi_sees_a_shift_and_a_new_value():
    rng = np.random.default_rng(1)
    before = rng.normal(0, 1, 5000)
    assert psi(before, rng.normal(0, 1, 5000), 10) < 0.05
    assert psi(before, rng.normal(1.5, 1, 5000), 10) > 0.25
    # Few distinct values: one bin per value, and one for values never seen before.
    flags = np.array([0.0, 1.0] * 50)
    assert psi(flags, np.array([2.0] * 100), 10) > 1.0
    assert psi(np.array([np.nan]), flags, 10) is None


def test_drift_rows_flag_a_shift_and_a_rise_in_missing_values():
    rng = np.random.default_rng(2)
    reference = pl.DataFrame({"a": rng.normal(0, 1, 1000), "b": rng.normal(0, 1, 1000)})
    current = pl.DataFrame(
        {
            "a": rng.normal(3, 1, 1000),
            "b": pl.Series(rng.normal(0, 1, 1000)).scatter(list(range(300)), None),
        }
    )
    rows = drift_rows(
        reference, current, ["a", "b", "gone"], "input",
        bins=10, psi_threshold=0.25, missing_threshold=0.1,
    )  # fmt: skip
    assert rows["column"].to_list() == ["a", "b"]  # a column missing on one side is left out
    assert rows["drifted"].to_list() == [True, True]
    assert rows["psi"][0] > 1 and rows["psi"][1] < 0.25
    assert rows["missing_share"].to_list() == [0.0, 0.3]
    assert rows["reference_missing_share"].to_list() == [0.0, 0.0]
    exempt = drift_rows(
        reference, current, ["a", "b"], "input",
        bins=10, psi_threshold=0.25, missing_threshold=0.1, exempt=frozenset({"a"}),
    )  # fmt: skip
    assert exempt["drifted"].to_list() == [False, True] and exempt["psi"][0] == rows["psi"][0]
    framed = rows.select(
        pl.lit("propensity").alias("model"),
        pl.lit("v1").alias("model_version"),
        pl.lit(NIGHT).alias("reference_as_of"),
        pl.all(),
    )
    assert framed.schema == MODEL_DRIFT.schema
    (line,) = drift_alerts(framed, 0.25)
    assert line.startswith("propensity: 2 column(s) drifted") and "a (input, PSI" in line
    assert "missing 0% → 30%" in line


def health(nights: list[tuple[date, float, float]], version: str = "v1") -> pl.DataFrame:
    """model_health rows of served nights: (night, served roc_auc, rfm roc_auc)."""
    parts = [
        judged_rows(
            cohort(night, version), {SERVED: {"roc_auc": s}, "rfm": {"roc_auc": r}}, ("roc_auc",)
        ).with_columns(as_of=pl.lit(night))
        for night, s, r in nights
    ]
    return pl.concat(parts)


def test_a_losing_streak_needs_every_one_of_the_newest_nights_lost():
    d = [NIGHT + timedelta(days=i) for i in range(4)]
    lost_three = health([(d[0], 0.8, 0.7), (d[1], 0.6, 0.7), (d[2], 0.6, 0.7), (d[3], 0.6, 0.7)])
    streaks = losing_streaks(lost_three, nights=3)
    assert streaks.height == 1 and streaks["nights"].to_list() == [d[1:]]
    assert streaks["best_rule"].to_list() == ["rfm"]
    (line,) = losing_alerts(streaks)
    assert "propensity (all_users)" in line and "rfm on roc_auc for 3 served nights" in line
    assert losing_streaks(lost_three, nights=4).height == 0  # the oldest night was won
    won_last = health([(d[0], 0.6, 0.7), (d[1], 0.6, 0.7), (d[2], 0.8, 0.7)])
    assert losing_streaks(won_last, nights=2).height == 0
    assert losing_streaks(health([(d[0], 0.6, 0.7)]), nights=2).height == 0  # too few nights


def test_matured_lines_name_the_champions_newest_judged_night():
    frame = health([(NIGHT, 0.8, 0.7), (NIGHT + timedelta(days=1), 0.75, 0.7)], version="v1")
    (line,) = matured_lines(frame, "propensity", "v1")
    assert line.startswith(f"matured (propensity, all_users, served {NIGHT + timedelta(days=1)})")
    assert "0.7500 vs 0.7000 for rfm" in line and "not better" not in line
    newer = matured_lines(frame, "propensity", "v2")
    assert newer[0] == "matured: no night served by v2 has had its outcomes in yet"
    assert newer[1].startswith(
        f"matured (propensity, all_users, served {NIGHT + timedelta(1)} by v1)"
    )
    assert matured_lines(frame.clear(), "propensity", "v2") == [newer[0]]
    rule = health([(NIGHT, 0.6, 0.7)], version="rule:rfm@v3")
    assert "[not better than the rule]" in matured_lines(rule, "propensity", "v3")[0]
