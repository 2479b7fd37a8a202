"""Data checks: each compares one number with its threshold and says which, where and how much."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from nightowl.tasks.ingest.checks import (
    delivery_cadence,
    freshness,
    null_share,
    quarantine_share,
    row_count,
)


def test_a_weekly_source_is_fresh_all_week_and_stale_after_it():
    weekly = ["2026-11-16", "2026-11-23"]
    assert freshness("events", "2026-11-27", weekly, True, cadence_days=7).status == "pass"
    late = freshness("events", "2026-11-30", weekly, True, cadence_days=7)
    assert late.status == "fail"
    assert late.message == (
        "events: no landing file for the 7 days to 2026-11-30 arrived (freshness)"
    )


def test_a_day_between_weekly_deliveries_skips_the_row_count():
    between = row_count("events", 0, [700, 710, 690], 0.5, True, cadence_days=7)
    assert between.status == "skip"
    assert between.message == "events: no rows this day; the source delivers every 7 days"
    assert row_count("events", 0, [700, 710, 690], 0.5, True).status == "fail"  # daily: a drop
    assert row_count("events", 705, [700, 710, 690], 0.5, True, cadence_days=7).status == "pass"


def test_the_cadence_is_read_off_the_newest_delivery_dates():
    start = date(2026, 9, 7)
    weekly = [start + timedelta(days=7 * k) for k in range(10)]
    assert delivery_cadence(weekly) == 7
    assert delivery_cadence([start + timedelta(days=k) for k in range(30)]) == 1
    assert delivery_cadence(weekly[:2]) == 1  # too few to tell: daily
    # A missed week is one gap of fourteen among sevens: still weekly.
    assert delivery_cadence(weekly[:5] + weekly[6:]) == 7


def test_freshness_needs_a_file_for_the_run_date():
    assert freshness("events", "2026-11-27", ["2026-11-27"], True).status == "pass"
    assert freshness("events", "2026-11-27", [None], True).status == "pass"  # undated export
    late = freshness("events", "2026-11-27", ["2026-11-26"], True)
    assert late.status == "fail"
    assert late.message == "events: no landing file for 2026-11-27 arrived (freshness)"
    assert freshness("events", "2026-11-27", [], False).status == "warn"


def test_quarantine_share_names_the_numbers():
    result = quarantine_share("events", 1000, 80, 0.05, True)
    assert result.status == "fail"
    assert result.message == "events: 80 of 1,000 rows quarantined (8.0%), over the limit of 5.0%"
    assert quarantine_share("events", 1000, 50, 0.05, True).status == "pass"
    assert quarantine_share("events", 0, 0, 0.05, True).status == "skip"
    assert quarantine_share("feedback", 4, 1, 0.05, True, min_rows=100).status == "skip"


def test_row_count_against_the_trailing_median():
    history = [1000, 1100, 900, 1050]
    assert row_count("events", 980, history, 0.5, True).status == "pass"
    drop = row_count("events", 200, history, 0.5, True)
    assert drop.status == "fail" and "200 rows vs a trailing median of 1,025" in drop.message
    assert row_count("events", 200, history[:2], 0.5, True).status == "skip"
    assert row_count("events", 3, [1, 1, 1], 0.5, True, min_rows=100).status == "skip"


def test_null_share_of_a_required_column():
    result = null_share("events", "user_id", 30, 100, 0.25, False)
    assert result.status == "warn" and result.check == "null_share:user_id"
    assert "30 of 100 values missing (30.0%)" in result.message


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.floats(0, 1))
def test_quarantine_share_fails_exactly_over_the_limit(read, quarantined, limit):
    quarantined = min(quarantined, read)
    result = quarantine_share("t", read, quarantined, limit, True)
    if read == 0:
        assert result.status == "skip"
    else:
        assert (result.status == "fail") == (quarantined / read > limit)
