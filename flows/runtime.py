"""Prefect's process environment: quiet, offline, with its state under the data root.

Prefect reads most of its settings when it is first imported, so ``prepare_prefect`` must run
before anything imports it; the command line does that before importing the flows.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextvars import Context
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nightowl.flows.settings import Settings

STATE_DIR = "_state"


def log_dir(data_root: Path) -> Path:
    """Where a command's own logs go: the temporary Prefect API's, unexpected errors' tracebacks."""
    return Path(data_root).absolute() / STATE_DIR / "logs"


def prepare_prefect(data_root: Path) -> None:
    """Point Prefect at a home under the data root (unless set); turn off what needs a network."""
    state = Path(data_root).absolute() / STATE_DIR
    defaults = {
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no network; telemetry also locks SQLite
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # 2 slow cores
        "PREFECT_LOGGING_EXTRA_LOGGERS": "nightowl",
        "DO_NOT_TRACK": "1",
    }
    if not os.environ.get("PREFECT_API_URL"):
        # No server named: the command starts a temporary one (flows/local_api.py), whose
        # shutdown can log errors about events it no longer needs to flush. Only its own log
        # (<data root>/_state/logs/prefect-api.log) is quietened.
        defaults["PREFECT_SERVER_LOGGING_LEVEL"] = "CRITICAL"
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(state / "results")
    for var in ("PREFECT_HOME", "PREFECT_LOCAL_STORAGE_PATH"):
        Path(os.environ[var]).expanduser().mkdir(parents=True, exist_ok=True)
    logging.getLogger("nightowl").setLevel(logging.INFO)
    console_logs_to_current_stderr()


def console_logs_to_current_stderr() -> None:
    """Point Prefect's console log handlers at today's ``sys.stderr``.

    Prefect sets them up once per process, writing to the stderr of that moment; a later command
    in the same process (a notebook, a test runner) may have another one, and the first may be
    closed by then. A live progress bar swaps stderr for a proxy that prints above the bar."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if type(handler).__name__ == "PrefectConsoleHandler" and handler.stream != sys.stderr:
                with handler.lock:  # not setStream(): it flushes the old stream, maybe closed
                    handler.stream = sys.stderr
                    handler.console.file = sys.stderr


def task_runner(settings: "Settings"):  # noqa: UP037 - imported lazily
    """The task runner the settings ask for: Prefect's threads, or a Dask cluster."""
    if settings.runner.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=settings.runner.threads)
    from prefect_dask import DaskTaskRunner

    if settings.runner.dask_address:
        return DaskTaskRunner(address=settings.runner.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": settings.runner.dask_workers, "threads_per_worker": 1}
    )


# Prefect is imported inside the functions below: the command line imports this module before
# ``prepare_prefect`` has set Prefect's environment.


def running_flow_runs(contexts: list[Context]) -> list[Any]:
    """The ids of the flow runs still going in ``contexts`` (a flow run's context is set while
    it runs)."""
    if "prefect.context" not in sys.modules:
        return []
    from prefect.context import FlowRunContext

    found = (context.get(FlowRunContext.__var__) for context in contexts)
    return [run.flow_run.id for run in found if run is not None and run.flow_run]


def cron_schedule(cron: str, timezone: str) -> Any:
    """A deployment schedule from a cron expression in a time zone."""
    from prefect.schedules import Cron

    return Cron(cron, timezone=timezone)


def mark_crashed(ids: list[Any], message: str, wait_seconds: float) -> None:
    """Set the flow runs ``ids``, and their task runs, to Crashed unless they ended already;
    give up after ``wait_seconds`` (an API that does not answer must not hold the exit)."""
    if not ids:
        return

    def mark() -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterId,
            TaskRunFilter,
            TaskRunFilterState,
            TaskRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.states import Crashed

        try:
            with get_client(sync_client=True) as client:
                for run_id in ids:
                    run = client.read_flow_run(run_id)
                    if run.state is None or not run.state.is_final():
                        client.set_flow_run_state(run_id, Crashed(message=message), force=True)
                unfinished = TaskRunFilterStateType(
                    any_=[StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED]
                )
                tasks = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)),
                    task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=unfinished)),
                )
                for task_run in tasks:
                    client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
        except Exception:  # best effort on the way out: nothing may hold up the exit
            pass

    marker = threading.Thread(target=mark, name="mark-crashed", daemon=True)
    marker.start()
    marker.join(wait_seconds)
