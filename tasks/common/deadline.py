"""Step time limits that work in threads: long loops check the clock between batches.

Prefect can only time out async tasks; a step running in a worker thread cannot be interrupted
from outside. So a step sets its limit here and its loops call :func:`check_time` between units
of work (a batch of rows, a file, a partition), where stopping leaves nothing half-published.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from nightowl.errors import NightowlError

_limit: ContextVar[tuple[float, str, float] | None] = ContextVar("_limit", default=None)


class StepTimeout(NightowlError):
    """A step ran past its time limit and stopped at the next safe point."""


@contextmanager
def time_limit(seconds: float | None, step: str) -> Iterator[None]:
    """Within the block, :func:`check_time` raises once ``seconds`` have passed (None: no limit)."""
    token = _limit.set(None if seconds is None else (time.monotonic() + seconds, step, seconds))
    try:
        yield
    finally:
        _limit.reset(token)


def check_time() -> None:
    """Raise StepTimeout if the current step is past its limit."""
    limit = _limit.get()
    if limit is not None and time.monotonic() > limit[0]:
        _, step, seconds = limit
        raise StepTimeout(
            f"{step} ran past its limit of {seconds / 60:g} minutes ([run] step_timeout_minutes)"
        )
