"""Operations against a real Prefect server: serve the schedule, fail a task, fix it, Retry.

The Retry goes through Prefect's own `prefect flow-run retry`, which does what the UI's button
does (it schedules the same flow run again for the serving process to pick up). Only the failed
task and its downstream step may run again; every other task must end as Cached.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import httpx
import pytest

from nightowl.demo.generate import generate_landing
from nightowl.schemas.landing import SOURCES

pytestmark = pytest.mark.e2e
END = date(2026, 11, 20)
NIGHTOWL = [sys.executable, "-m", "nightowl"]
AUTH = "owl:night-watch-7c1f"  # PREFECT_SERVER_API_AUTH_STRING on the server, _API_ on clients


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(check, what: str, timeout: float = 120, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def running_server(base: Path, data_root: Path, env: dict[str, str]) -> Iterator[str]:
    """`nightowl server` for ``data_root`` on a free loopback port (its log under ``base``),
    answering; its address. Stopped on the way out as a service manager stops it: it must exit
    cleanly and take its server along."""
    port = _free_port()
    address = f"http://127.0.0.1:{port}"
    args = [*NIGHTOWL, "server", "--port", str(port), "--data-root", str(data_root)]
    with (base / "server.log").open("w") as log:  # not a pipe: nobody would drain it
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        try:
            return httpx.get(f"{address}/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait(healthy, "the Prefect server", timeout=180)
        yield address
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=40) == 0
        finally:
            proc.kill()
        assert not healthy()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`nightowl server` on a free loopback port, with its own Prefect home, behind Prefect's
    basic auth as the README says to set it up: every client below passes the auth string."""
    base = tmp_path_factory.mktemp("ops")
    env = os.environ | {
        "PREFECT_HOME": str(base / "prefect-home"),
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",  # schedule runs quickly
        "PREFECT_SERVER_API_AUTH_STRING": AUTH,
    }
    env.pop("PREFECT_LOCAL_STORAGE_PATH", None)
    with running_server(base, base / "data", env) as address:
        port = int(address.rsplit(":", 1)[1])
        yield {"url": f"{address}/api", "env": env, "base": base, "port": port}


def _client_env(server: dict) -> dict:
    """Environment of a process that talks to the test server (and polls it every 2 s)."""
    return server["env"] | {
        "PREFECT_API_URL": server["url"],
        "PREFECT_API_AUTH_STRING": AUTH,
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    }


def _serve(env: dict, log: Path, *args: str) -> subprocess.Popen:
    """`nightowl serve` in the background, its output in ``log`` (a pipe nobody reads could fill
    up and stall the flow runs it starts)."""
    with log.open("a") as out:
        return subprocess.Popen(
            [*NIGHTOWL, "serve", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _client(url: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: AUTH}):
        return get_client(sync_client=True)


def _served_deployment(url: str, name: str):
    """The deployment, once `nightowl serve` has registered it."""

    def deployment():
        with _client(url) as client:
            try:
                return client.read_deployment_by_name(name)
            except Exception:  # not there yet
                return None

    return _wait(deployment, f"{name} to be served", timeout=120)


def _start_run(url: str, name: str):
    """A flow run of the deployment for END, as a custom run from the UI would start it."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: AUTH}):
        return run_deployment(name, parameters={"run_date": END.isoformat()}, timeout=0)


def _final_run(url: str, run_id):
    def final():
        with _client(url) as client:
            run = client.read_flow_run(run_id)
        return run if run.state is not None and run.state.is_final() else None

    return _wait(final, "the flow run to finish", timeout=180)


#: The task runs that do work (checks and the run record run every time, by design).
STEPS = {f"{step}-{source}" for step in ("ingest", "clean") for source in SOURCES} | {
    "features-user",
    "train-propensity",
    "score-users",
}


def _task_states_since(url: str, run_id, since) -> dict[str, str]:
    """Final state per task run name, for the task runs started after ``since``."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    def settled():
        with _client(url) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
        latest: dict = {}  # per step run, its newest task run: the retry's, not the failure's
        for r in sorted(runs, key=lambda r: r.created):
            if r.created >= since and r.name in STEPS:
                latest[r.name] = r
        seen.update({name: r.state.name if r.state else None for name, r in latest.items()})
        done = all(r.state is not None and r.state.is_final() for r in latest.values())
        if len(latest) == len(STEPS) and done:
            return {name: r.state.name for name, r in latest.items()}
        return None

    seen: dict = {}
    try:
        return _wait(settled, "the task runs to settle", timeout=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {seen}") from None


def _listening(port: int) -> set[str]:
    """The addresses a TCP socket of this machine listens on at ``port`` (from /proc)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]  # host order
                found.add(str(ipaddress.ip_address(b"".join(words))))
    return found


def test_the_server_listens_on_loopback_only_and_refuses_a_caller_without_the_auth_string(
    server,
):
    assert _listening(server["port"]) == {"127.0.0.1"}
    flows = f"{server['url']}/flows/filter"
    assert httpx.post(flows, json={}, timeout=10).status_code == 401
    wrong = httpx.post(flows, json={}, auth=("owl", "guess"), timeout=10)
    assert wrong.status_code == 401
    user, password = AUTH.split(":")
    assert httpx.post(flows, json={}, auth=(user, password), timeout=10).status_code == 200


def test_retry_after_a_fix_reruns_only_the_failed_task_and_its_downstream(server, tmp_path):
    url, env = server["url"], _client_env(server)
    root = tmp_path / "data"
    generate_landing(root / "landing", users=150, items=24, days=3, seed=11, end_date=END)
    broken = root / "landing/events/2026-11-20.csv"
    good_text = broken.read_text()
    broken.write_text("user_id,event_type\nu1,view\n")  # the export lost its timestamp column

    serve = _serve(env, tmp_path / "serve.log", "--data-root", str(root))
    try:
        dep = _served_deployment(url, "nightowl-nightly/nightly")
        assert not dep.paused
        assert [s.schedule.cron for s in dep.schedules] == ["0 2 * * *"]
        assert dep.schedules[0].schedule.timezone == "UTC"
        run = _start_run(url, "nightowl-nightly/nightly")
        first = _final_run(url, run.id)
        assert first.state.is_failed(), first.state
        assert "2026-11-20.csv" in first.state.message

        broken.write_text(good_text)  # the cause is fixed …
        since = first.state.timestamp
        retried = subprocess.run(
            [sys.executable, "-m", "prefect", "flow-run", "retry", str(run.id)],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert retried.returncode == 0, retried.stdout + retried.stderr
        second = _final_run(url, run.id)
        assert second.state.is_completed(), second.state

        states = _task_states_since(url, run.id, since)
        ran = {name for name, state in states.items() if state == "Completed"}
        # The failed step, and what reads it: the clean step, the features, training (never
        # cached: it decides from the registry) and the scores. Everything else is reused.
        downstream = {"clean-events", "features-user", "train-propensity", "score-users"}
        assert ran == {"ingest-events"} | downstream, states
        assert {states[n] for n in states if n not in ran} == {"Cached"}, states
        # What the first attempt could not run is Skipped under its own name, not left Pending
        # ("NotReady") under a generated one: the run's page counts no Pending task after all.
        from prefect.client.schemas.filters import (
            ArtifactFilter,
            ArtifactFilterFlowRunId,
            FlowRunFilter,
            FlowRunFilterId,
        )

        with _client(url) as client:
            every = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
            shown = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
        assert all(r.state is not None and r.state.is_final() for r in every)
        assert "Skipped" in {r.state.name for r in every if r.name == "clean-events"}
        # One artifact per key, the retry's: the first card the UI opens is the current one.
        keys = sorted(a.key for a in shown if a.key)
        assert len(keys) == len(set(keys)) and {"checks-events", "nightly-summary"} <= set(keys)
        assert all(a.created >= since for a in shown if a.key), keys
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=60)

    with _client(url) as client:  # stopping `serve` leaves the schedule as it was
        dep = client.read_deployment_by_name("nightowl-nightly/nightly")
    assert not dep.paused and all(s.active for s in dep.schedules)
    assert len(dep.schedules) == 1

    # Serving again updates the same deployment: one schedule, no duplicate scheduled runs.
    again = _serve(env, tmp_path / "serve.log", "--data-root", str(root))
    try:
        _wait(lambda: _scheduled_runs(url, dep.id), "scheduled runs", timeout=60)
        time.sleep(5)  # let the scheduler loop run again after the restart
        with _client(url) as client:
            after = client.read_deployment_by_name("nightowl-nightly/nightly")
        assert after.id == dep.id and not after.paused and len(after.schedules) == 1
        # The scheduler may be between deleting stale runs and scheduling new ones: wait.
        runs = _wait(lambda: _scheduled_runs(url, dep.id), "scheduled runs again", timeout=60)
        times = [r.expected_start_time for r in runs]
        assert len(times) == len(set(times)), times
    finally:
        again.send_signal(signal.SIGINT)
        again.wait(timeout=60)


def _scheduled_runs(url: str, deployment_id) -> list:
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateName,
    )

    with _client(url) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Scheduled"]))
            ),
        )


def test_served_runs_use_the_configured_dask_cluster(server, tmp_path):
    url, env = server["url"], _client_env(server)
    root = tmp_path / "data"
    generate_landing(root / "landing", users=100, items=24, days=2, seed=12, end_date=END)
    config = tmp_path / "nightowl.toml"
    config.write_text(
        f'data_root = "{root}"\n[schedule]\ndeployment = "on-dask"\n'
        '[runner]\nkind = "dask"\ndask_workers = 2\n'
    )
    serve = _serve(env, tmp_path / "serve.log", "--config", str(config))
    try:
        _served_deployment(url, "nightowl-nightly/on-dask")
        run = _start_run(url, "nightowl-nightly/on-dask")
        assert _final_run(url, run.id).state.is_completed()
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=60)
    assert "distributed.scheduler" in (tmp_path / "serve.log").read_text()  # ran on Dask


def test_the_ui_on_another_port_talks_to_its_own_api(tmp_path):
    """`nightowl server --port P`: the UI's runs list loads from P's API, even with another
    server's PREFECT_API_URL in the environment (the UI used to call port 4200)."""
    from tests.browser import FLAGS, chromium

    browser = chromium()  # skips (fails in CI) when Chromium is not installed
    port = _free_port()
    env = os.environ | {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": "http://127.0.0.1:9/api",  # some other server: not this UI's API
    }
    env.pop("PREFECT_LOCAL_STORAGE_PATH", None)
    args = [*NIGHTOWL, "server", "--port", str(port), "--data-root", str(tmp_path / "data")]
    with (tmp_path / "server.log").open("w") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/api/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(healthy, "the Prefect server", timeout=180)
        assert httpx.get(f"{base}/ui-settings", timeout=10).json()["api_url"] == f"{base}/api"
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            chrome = pw.chromium.launch(executable_path=browser, args=FLAGS)
            page = chrome.new_page()
            calls: list[str] = []
            page.on("request", lambda r: calls.append(r.url) if "/api/" in r.url else None)
            page.goto(f"{base}/runs", wait_until="networkidle")
            page.wait_for_timeout(1000)
            text = page.inner_text("body")
            chrome.close()
        assert any(c.startswith(f"{base}/api/flow_runs") for c in calls), calls
        assert all(c.startswith(f"{base}/api/") for c in calls), calls
        assert "Runs" in text and "Can't connect" not in text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        finally:
            proc.kill()
