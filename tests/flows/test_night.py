"""Tonight's steps on a real Prefect API: a failed step's readers are skipped by name, once."""

from __future__ import annotations

import logging

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from nightowl.flows.night import SKIPPED, Night, SoFar

pytestmark = pytest.mark.e2e


@task(task_run_name="load-{source}", cache_policy=NO_CACHE)
def load(source: str) -> int:
    if source == "broken":
        raise ValueError(f"{source} export is cut short")
    return len(source)


@task(task_run_name="total", cache_policy=NO_CACHE)
def total(counts: list[int]) -> int:
    return sum(counts)


@task(task_run_name="report", cache_policy=NO_CACHE)
def report(problems: dict[str, str]) -> dict[str, str]:
    return problems


@flow
def night_of(sources: list[str]) -> dict:
    night = Night()
    loads = [night.add(load, s) for s in sources]
    summed = night.add(total, loads)
    doubled = night.add(total, [summed, summed])
    told = night.add(report, SoFar(), after=(doubled, *loads))
    night.run()
    return {
        step.name + ("" if i < len(sources) else f"#{i}"): (
            step.skipped_for or step.state.name,
            step.future.result() if step.future and step.state.is_completed() else None,
        )
        for i, step in enumerate([*loads, summed, doubled, told])
    }


def test_readers_of_a_failed_step_are_skipped_naming_it_and_later_steps_still_run(
    prefect_api, caplog
):
    caplog.set_level(logging.INFO)
    got = night_of(["events", "broken"])
    assert got["load-events"] == ("Completed", 6)
    assert got["load-broken"] == ("Failed", None)
    # Readers of the failure, and readers of those, are skipped naming the step that failed.
    assert got["total#2"] == ("load-broken", None)
    assert got["total#3"] == ("load-broken", None)
    # A step that only runs after the others still runs, told what went wrong.
    status, problems = got["report#4"]
    assert status == "Completed"
    assert problems == {
        "load-broken": "failed: ValueError: broken export is cut short",
        "total": "skipped: load-broken failed",
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings.count("total skipped: load-broken failed") == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all("cut short" in e for e in errors), errors  # nothing on the skipped


def test_a_night_without_failures_runs_every_step_once(prefect_api):
    got = night_of(["events", "items"])
    assert got["total#2"] == ("Completed", 11)
    assert got["total#3"] == ("Completed", 22)
    assert got["report#4"] == ("Completed", {})
    assert SKIPPED not in {state for state, _ in got.values()}
