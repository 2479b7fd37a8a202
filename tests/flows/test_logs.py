"""The terminal shows each failure once: the records that repeat one are filtered out."""

from __future__ import annotations

import logging

import pytest

from nightowl.flows.logs import OncePerFailure


def _record(logger: str, level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord(logger, level, __file__, 1, msg, None, None)


@pytest.mark.parametrize(
    ("logger", "level", "msg", "shown"),
    [
        ("prefect.task_runs", logging.ERROR, "Task run failed with exception: E('x')", False),
        ("prefect.task_runs", logging.INFO, "Task run failed with exception: E() - Retry 1", True),
        ("prefect.task_runs", logging.ERROR, "Finished in state Failed('…exception E')", True),
        ("prefect.flow_runs", logging.INFO, "Finished in state Failed('steps failed: …')", False),
        ("prefect.flow_runs", logging.ERROR, "Encountered exception during execution: E()", False),
        ("prefect.flow_runs", logging.INFO, "Finished in state Completed()", True),
        ("nightowl", logging.ERROR, "Task run failed with exception: not Prefect's", True),
    ],
)  # fmt: skip
def test_only_the_records_repeating_a_failure_are_dropped(logger, level, msg, shown):
    assert OncePerFailure().filter(_record(logger, level, msg)) is shown
