"""BG/NBD: the fit finds the parameters it simulated from, and its figures behave."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nightowl.tasks.models.btyd import BgNbd, btyd_inputs, fit_bgnbd

TRUTH = BgNbd(r=0.8, alpha=2.0, a=1.6, b=3.0)  # time in weeks, as the fit keeps it


def simulated(n: int, weeks: float, seed: int = 3) -> tuple[np.ndarray, ...]:
    """Customers drawn from ``TRUTH``: (x, t_x, age) in days after ``weeks`` of history."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(TRUTH.r, 1 / TRUTH.alpha, n)
    drop = rng.beta(TRUTH.a, TRUTH.b, n)
    x, t_x = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / rate[i])
            if t > weeks:
                break
            x[i], t_x[i] = x[i] + 1, t
            if rng.random() < drop[i]:
                break
    return x, t_x * 7, np.full(n, weeks * 7)


def test_the_fit_recovers_the_parameters_it_was_simulated_from():
    x, t_x, age = simulated(4000, weeks=52)
    fit = fit_bgnbd(x, t_x, age, penalty=0.0)
    # The population's mean rate (r / alpha) and mean dropout (a / (a + b)) are well pinned.
    assert fit.r / fit.alpha == pytest.approx(TRUTH.r / TRUTH.alpha, rel=0.15)
    assert fit.a / (fit.a + fit.b) == pytest.approx(TRUTH.a / (TRUTH.a + TRUTH.b), rel=0.25)


def test_expected_purchases_rank_the_frequent_recent_buyer_first():
    x = np.array([0.0, 2.0, 10.0, 10.0])
    t_x = np.array([0.0, 100.0, 300.0, 50.0])  # the last: ten purchases, then silence
    age = np.full(4, 350.0)
    expected = TRUTH.expected_purchases(30, x, t_x, age)
    assert expected[2] > expected[1] > 0 and expected[2] > expected[3]
    alive = TRUTH.p_alive(x, t_x, age)
    assert alive[0] == 1.0  # no repeat purchase: no evidence of dropping out
    assert alive[2] > alive[3]


def test_heavy_buyers_get_finite_figures_where_the_series_overflows():
    x = np.array([400.0, 800.0])
    expected = TRUTH.expected_purchases(30, x, np.array([360.0, 364.0]), np.array([365.0] * 2))
    assert np.isfinite(expected).all() and (expected > 1).all()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.floats(0, 1), st.floats(1, 700)), min_size=1, max_size=30
    )
)
def test_figures_are_finite_and_within_their_ranges(customers):
    x = np.array([c[0] for c in customers], dtype=float)
    age = np.array([c[2] for c in customers])
    t_x = np.where(x > 0, age * np.array([c[1] for c in customers]), 0.0)
    expected = TRUTH.expected_purchases(30, x, t_x, age)
    alive = TRUTH.p_alive(x, t_x, age)
    assert np.isfinite(expected).all() and (expected >= 0).all()
    assert ((alive > 0) & (alive <= 1)).all()


def test_inputs_from_features_count_repeat_days_and_their_span():
    frame = pl.DataFrame({"days": [3, 1], "recency": [5.0, 40.0], "first": [65.0, 40.0]})
    x, t_x, age = btyd_inputs(pl.col("days"), pl.col("recency"), pl.col("first"))
    got = frame.select(x.alias("x"), t_x.alias("t_x"), age.alias("age"))
    assert got.to_dicts() == [
        {"x": 2.0, "t_x": 60.0, "age": 65.0},
        {"x": 0.0, "t_x": 0.0, "age": 40.0},
    ]
