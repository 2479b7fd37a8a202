"""What a run prints to the terminal: each failure once, without Prefect's tracebacks.

A failed step is logged by Prefect up to three times — "Task run failed with exception" with a
traceback (once its retries are spent), "Finished in state Failed(…)", and the flow's own
"Finished in state Failed(…)" repeating every step's message — and the command then says which
step failed. On the terminal only the step's "Finished in state Failed(…)" line stays. The
records still reach the Prefect API whole: the UI's logs keep the tracebacks.
"""

from __future__ import annotations

import logging

#: Console records that repeat a failure another line already states.
REPEATS = {
    "prefect.task_runs": ("Task run failed with ",),
    "prefect.flow_runs": ("Finished in state Failed", "Encountered exception during execution"),
}


class OncePerFailure(logging.Filter):
    """Drops the console records that repeat a failure (``REPEATS``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        starts = REPEATS.get(record.name)
        if not starts or not str(record.msg).startswith(starts):
            return True
        # A retry's notice ("Task run failed with …: Retry 1/2 will start") is news: kept.
        return record.name == "prefect.task_runs" and record.levelno < logging.ERROR


def quiet_failures() -> None:
    """Give each of Prefect's console handlers the ``OncePerFailure`` filter (once)."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if type(handler).__name__ != "PrefectConsoleHandler":
                continue
            if not any(isinstance(f, OncePerFailure) for f in handler.filters):
                handler.addFilter(OncePerFailure())
