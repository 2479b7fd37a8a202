"""No process outlives its command: the temporary Prefect API of a `nightowl` command goes with
it, however the command ends (kill -9, SIGTERM, Ctrl-C, an error); a backfill uses one for all
its runs at any concurrency; a signal ends a run within seconds in one line; an unexpected error
is one line and exit 1, its traceback in the error log.

The commands run as real processes (``python -m nightowl``), with no PREFECT_API_URL, over a small
generated shop; the temporary server is found as the command's child process.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import psutil
import pytest

from nightowl.cli import main
from nightowl.demo.generate import generate_landing
from nightowl.warehouse.store import Warehouse

END = date(2026, 11, 20)
REPO = Path(__file__).resolve().parents[2]
SERVER_APP = "prefect.server.api.server:create_app"  # in the temporary server's command line
# The events ingest of tonight's run takes long (as a big delivery would): it leaves a mark when
# it starts, so the test knows a step is under way, and sleeps.
SLOW_INGEST = """
import sys, time
from pathlib import Path
import nightowl.tasks.ingest.units as units
ingest = units.ingest_source
def slow_ingest(wh, source, *args, **kwargs):
    if source == "events":
        Path(sys.argv[1]).touch()
        time.sleep(120)
    return ingest(wh, source, *args, **kwargs)
units.ingest_source = slow_ingest
from nightowl.cli import main
main(sys.argv[2:])
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """A small shop's landing files, ten days up to END; each test copies it."""
    landing = tmp_path_factory.mktemp("shop") / "landing"
    generate_landing(landing, users=300, items=40, days=10, seed=5, end_date=END)
    return landing


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """A command's environment: nightowl's own Prefect setup (no API named, its state under the
    data root), one Prefect home for the module so that only the first server creates its
    database; this checkout's code first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {
        "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-home")),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PYTHONPATH": str(REPO),
    }


def _data_root(shop: Path, tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(shop, root / "landing")
    return root


def _start(command: list[str], env: dict[str, str], logs: Path, **popen) -> subprocess.Popen:
    """A command as its own process (its own process group, as a shell runs it), its output in
    ``logs``.out and .err (files: a pipe nobody reads could fill up and stall it)."""
    with open(f"{logs}.out", "w") as out, open(f"{logs}.err", "w") as err:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            start_new_session=True, **popen,
        )  # fmt: skip


def _servers(pid: int) -> list[psutil.Process]:
    """The temporary Prefect servers among ``pid``'s descendants."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if any(SERVER_APP in part for part in child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def _answers(server: psutil.Process) -> bool:
    """Whether ``server`` answers its health check."""
    try:
        args = server.cmdline()
        port = args[args.index("--port") + 1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as reply:
            return reply.status == 200
    except (psutil.Error, ValueError, OSError):
        return False


def _wait_for(check, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` still running (a zombie nobody reaped has ended)."""
    alive = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


def _gone_within(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Wait up to ``seconds`` for ``processes`` to end; those left are killed (a failed test
    leaves nothing behind) and returned."""
    deadline = time.monotonic() + seconds
    while (left := _alive(processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for proc in left:
        proc.kill()
    return left


def _flow_run_states(home: str) -> list[str]:
    """The states of the nightly flow runs in the Prefect database under ``home``."""
    with sqlite3.connect(Path(home) / "prefect.db") as db:
        rows = db.execute(
            "select state_type from flow_run where name like 'nightly-%' order by created"
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.e2e
def test_kill_9_of_a_run_takes_its_temporary_server_along(shop, env, tmp_path):
    root = _data_root(shop, tmp_path)
    args = ["run", "--date", END.isoformat(), "--data-root", str(root)]
    run = _start([sys.executable, "-m", "nightowl", *args], env, tmp_path / "run")
    servers: list[psutil.Process] = []
    try:
        servers = _wait_for(
            lambda: [s for s in _servers(run.pid) if _answers(s)], "the temporary server", 180
        )
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        left = _gone_within(servers, 10)
    finally:
        run.kill()
        run.wait()
    assert not left, "the temporary Prefect server outlived kill -9 of its run"


@pytest.mark.e2e
def test_a_backfill_side_by_side_shares_one_server_and_leaves_none(shop, env, tmp_path):
    root = _data_root(shop, tmp_path)
    first, last = END - timedelta(days=1), END  # both at once
    args = ["backfill", "--start", first.isoformat(), "--end", last.isoformat()]
    backfill = _start(
        [sys.executable, "-m", "nightowl", *args, "--concurrency", "2", "--data-root", str(root)],
        env, tmp_path / "backfill",
    )  # fmt: skip
    seen: dict[int, psutil.Process] = {}
    try:
        while backfill.poll() is None:
            seen.update((s.pid, s) for s in _servers(backfill.pid))
            time.sleep(0.1)
    finally:
        backfill.kill()
        code = backfill.wait()
    out = "".join(Path(f"{tmp_path}/backfill.{part}").read_text() for part in ("out", "err"))
    left = _gone_within(list(seen.values()), 5)
    assert code == 0, out[-5000:]
    assert len(seen) == 1, f"{len(seen)} temporary servers for one backfill"
    assert out.count("temporary Prefect API on ") == 1
    assert not left, "the backfill's temporary server outlived it"
    wh = Warehouse(root)
    assert wh.completed_run(first.isoformat()) and wh.completed_run(last.isoformat())


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("signum", "code", "name"),
    [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT (Ctrl-C)")],
)
def test_a_signal_ends_a_run_mid_step_within_seconds_in_one_line(
    shop, env, tmp_path, signum, code, name
):
    root, mark = _data_root(shop, tmp_path), tmp_path / "events-ingest-started"
    args = ["run", "--date", END.isoformat(), "--data-root", str(root)]
    run = _start(
        [sys.executable, "-c", SLOW_INGEST, str(mark), *args], env, tmp_path / "run", cwd=REPO
    )
    servers: list[psutil.Process] = []
    try:
        _wait_for(mark.exists, "the events ingest to start", 180)
        servers = _servers(run.pid)
        assert servers, "no temporary server while the run is under way"
        sent = time.monotonic()
        # SIGTERM as a service manager sends it to the command; Ctrl-C as a terminal sends it,
        # to the command's whole process group.
        if signum == signal.SIGINT:
            os.killpg(run.pid, signum)
        else:
            run.send_signal(signum)
        try:
            run.wait(timeout=30)
        finally:
            took = time.monotonic() - sent
    finally:
        run.kill()
        run.wait()
        left = _gone_within(servers, 3)
    err = Path(f"{tmp_path}/run.err").read_text()
    assert took < 10, f"{took:.1f} s from {name} to the end of the run"
    assert run.returncode == code, err[-3000:]
    said = [line for line in err.splitlines() if "interrupted" in line]
    assert said == [
        f"nightly run for {END} interrupted by {name}: finished steps are kept (cached); run it "
        "again to finish"
    ], err[-3000:]
    assert "Traceback" not in err
    assert not left, f"the temporary Prefect server outlived {name}"
    assert _flow_run_states(env["PREFECT_HOME"])[-1] == "CRASHED"  # not left Running forever


def test_an_unexpected_error_is_one_line_and_its_traceback_goes_to_the_log(
    tmp_path, monkeypatch, capsys
):
    import nightowl.warehouse.catalog as catalog

    def broken(*args, **kwargs):
        raise RuntimeError("the catalog fell over\nwith a second line")

    monkeypatch.setattr(catalog, "table_summaries", broken)
    root = tmp_path / "data"
    with pytest.raises(SystemExit) as exit_:
        main(["tables", "--data-root", str(root)])
    assert exit_.value.code == 1
    log = root / "_state" / "logs" / "errors.log"
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"nightowl: tables failed: RuntimeError: the catalog fell over (traceback in {log}; "
        "--debug shows it)"
    ]
    logged = log.read_text()
    assert "Traceback (most recent call last)" in logged and "in broken" in logged
    assert f"nightowl tables --data-root {root}" in logged  # which command it was

    with pytest.raises(SystemExit) as exit_:
        main(["--debug", "tables", "--data-root", str(root)])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert err.splitlines()[-1] == (
        f"nightowl: tables failed: RuntimeError: the catalog fell over (traceback in {log})"
    )
    assert log.read_text().count("Traceback (most recent call last)") == 2
