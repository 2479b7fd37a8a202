"""Fixtures of the flow tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def prefect_api():
    """A real Prefect server (temporary database, the test session's PREFECT_HOME), one per
    test module."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
