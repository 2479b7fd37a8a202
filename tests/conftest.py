"""Test-wide setup: Prefect gets a throw-away home, no analytics, before anything imports it."""

from __future__ import annotations

import os
import tempfile
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


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """An empty data root with landing folders for every source."""
    root = tmp_path / "data"
    for source in ("events", "items", "feedback", "market_prices", "market_indicators"):
        (root / "landing" / source).mkdir(parents=True)
    return root
