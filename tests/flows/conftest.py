"""Fixtures of the flow tests. `prefect_api`, the session's Prefect server: tests/conftest.py."""
