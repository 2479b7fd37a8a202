"""The quality benchmark's oracle: the generator's equations applied to history alone."""

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.quality import auc_gaps, oracle_probability

FIRST, AS_OF = date(2026, 9, 1), date(2026, 11, 1)


def events(rows: list[tuple[str, int, str]]) -> pl.LazyFrame:
    """Clean-shaped events from (user, day number from FIRST, event type)."""
    times = [datetime(2026, 9, 1, 12, tzinfo=UTC) + timedelta(days=d) for _, d, _ in rows]
    return pl.LazyFrame(
        {
            "user_id": [u for u, _, _ in rows],
            "event_time": times,
            "event_type": [t for _, _, t in rows],
            "dt": [t.date() for t in times],
        }
    )


# u1 visits every other day and often buys, lately too; u2 came twice, long ago, and never bought.
HISTORY = [("u1", d, "view") for d in range(0, 61, 2)] + [
    ("u1", d, "purchase") for d in (40, 56, 58)
]
HISTORY += [("u2", 3, "view"), ("u2", 4, "view")]


def test_a_frequent_recent_buyer_is_likelier_to_buy_than_a_lapsed_visitor():
    p = oracle_probability(events(HISTORY), AS_OF, FIRST, 30)
    assert p["user_id"].to_list() == ["u1", "u2"]
    p1, p2 = p["p_oracle"].to_list()
    assert 0.0 < p2 < p1 < 1.0
    assert p1 > 0.5 and p2 < 0.1


@settings(max_examples=25, deadline=None)
@given(
    later=st.lists(
        st.tuples(
            st.sampled_from(["u1", "u2", "u3"]),
            st.integers(min_value=61, max_value=120),  # on or after AS_OF
            st.sampled_from(["view", "purchase"]),
        ),
        max_size=15,
    )
)
def test_events_on_or_after_as_of_change_nothing(later):
    before = oracle_probability(events(HISTORY), AS_OF, FIRST, 30)
    after = oracle_probability(events(HISTORY + later), AS_OF, FIRST, 30)
    assert after.equals(before)


def test_gaps_are_truth_minus_each_ranking():
    label = np.array([0, 0, 1, 1, 0, 1])
    truth = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])  # perfect: AUC 1
    model = np.array([0.2, 0.9, 0.8, 0.7, 0.1, 0.6])  # 0.9 outranks 3 buyers: 3 of 9 wrong
    found = auc_gaps(label, model, truth, truth, boot=20)
    assert found["auc"]["truth"] == 1.0 and found["oracle_gap"] == 0.0
    assert abs(found["model_gap"] - 3 / 9) < 1e-12
    assert found["model_gap_se"] > 0
