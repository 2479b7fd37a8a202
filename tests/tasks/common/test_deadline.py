"""Step time limits: checked between units of work, so a late step stops with nothing half-done."""

from __future__ import annotations

from datetime import date

import pytest

from nightowl.flows.steps import retry_on_io_error
from nightowl.schemas.sources import SourceConfig
from nightowl.tasks.common.deadline import StepTimeout, check_time, time_limit
from nightowl.tasks.ingest.units import ingest_source
from nightowl.warehouse.ledger import Ledger
from nightowl.warehouse.store import Warehouse


def test_no_limit_never_raises():
    check_time()
    with time_limit(None, "ingest-events"):
        check_time()


def test_a_step_past_its_limit_stops_at_the_next_check(data_root):
    (data_root / "landing/events/a.csv").write_text(
        "user_id,event_time,event_type\nu1,2026-11-27T10:00:00Z,view\n"
    )
    wh = Warehouse(data_root)
    with (
        time_limit(0, "ingest-events"),
        pytest.raises(StepTimeout, match=r"ingest-events ran past its limit of 0 minutes"),
    ):
        ingest_source(wh, "events", SourceConfig(), date(2026, 11, 27), data_root)
    assert Ledger(wh).entries("events") == []  # nothing half-done was recorded
    check_time()  # the limit ends with its block


def test_a_timeout_is_not_retried():
    class Failed:
        def result(self):
            raise StepTimeout("clean-events ran past its limit")

    assert retry_on_io_error(None, None, Failed()) is False
