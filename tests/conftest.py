"""Test-wide setup: Prefect gets a throw-away home, no analytics, before anything imports it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="nightowl-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(Path(_PREFECT_HOME) / "storage")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.pop("PREFECT_API_URL", None)
# The user's NIGHTOWL_* settings must not leak into tests; the harness's own flags (CI's
# NIGHTOWL_REQUIRE_BROWSER / NIGHTOWL_REQUIRE_MOUNT, which turn a skip into a failure) must stay.
for var in [v for v in os.environ if v.startswith("NIGHTOWL_")]:
    if not var.startswith("NIGHTOWL_REQUIRE_"):
        os.environ.pop(var)

import pytest  # noqa: E402


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove the generated landings cached for this session (tests/landings.py), if any."""
    import sys

    if (landings := sys.modules.get("tests.landings")) is not None:
        landings.clear()


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """An empty data root with landing folders for every source."""
    root = tmp_path / "data"
    for source in ("events", "items", "feedback", "market_prices", "market_indicators"):
        (root / "landing" / source).mkdir(parents=True)
    return root


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real Prefect server (temporary database, the test session's PREFECT_HOME) shared by the
    whole test session (under xdist: by one worker), started the first time a test asks for it;
    its API URL. Tests on it share its database: what they read back they filter by their own
    flow runs. Tests that need a server to themselves (one behind a password, one a `nightowl`
    command starts, one whose every record a test reads) start their own."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    _release_prefect_events()
    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[str]:
    """A local Dask cluster of two one-thread worker processes, shared by the test session (under
    xdist: by one worker), started the first time a test asks for it; its scheduler address."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def prefect_api(prefect_server: str) -> str:
    """The session's Prefect server, for one test: its API URL."""
    _release_prefect_events()
    return prefect_server


def _release_prefect_events() -> None:
    """Send what Prefect's events worker holds and stop it, so that the next one is started for
    the server in use now. Task runs reach the server as events, and the worker (one per
    process, whatever the API URL) keeps the server it started with: after a test that ran a
    flow against a server of its own, task runs would go there. A worker whose server has gone
    never drains: it is given up on after a while (it is out of use at once)."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=30)
