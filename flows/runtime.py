"""Prefect's process environment: quiet, offline, with its state under the data root.

Prefect reads most of its settings when it is first imported, so ``prepare_prefect`` must run
before anything imports it; the command line does that before importing the flows.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

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
