"""The temporary Prefect API of one ``nightowl`` command, which dies with the command.

Without ``PREFECT_API_URL``, Prefect starts a temporary server itself the first time a flow needs
one, and stops it only at a normal interpreter exit: a ``kill -9`` of the command left it running,
and runs in threads (``backfill --concurrency``) raced to start one each. Instead, the command
starts the same server (Prefect's uvicorn factory, the same environment, so its SQLite database
stays under the data root) before Prefect is imported, points ``PREFECT_API_URL`` at it, and
stops it on the way out. On Linux the kernel also sends it SIGTERM the moment its parent dies
(``PR_SET_PDEATHSIG``); on other POSIX systems it polls for its parent once a second. Elsewhere
Prefect's own temporary server is used, as before.

Run as ``python -m nightowl.flows.local_api <parent pid> <uvicorn arguments>``, this module is that
server's process.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from nightowl.errors import NightowlError

#: How long the server may take to answer (Prefect's own setting for its temporary server).
STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_SECONDS = 3.0


class LocalAPIError(NightowlError):
    """The temporary Prefect API did not come up; the message says why and where its log is."""


class LocalAPI:
    """A Prefect API server in a child process that exits with this one."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.started = time.monotonic()
        self.ready_after: float | None = None

    @property
    def url(self) -> str:
        """Its API address, for PREFECT_API_URL."""
        return f"http://127.0.0.1:{self.port}/api"

    def spawn(self) -> None:
        """Start the server process on a free loopback port; ``wait`` sees it answer."""
        self.port = _free_port()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "nightowl.flows.local_api",
            str(os.getpid()),
            "--app-dir",
            _site_packages_of("prefect"),
            "--factory",
            "prefect.server.api.server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ]
        # What Prefect sets for its own temporary server: no UI, ephemeral service set.
        env = os.environ | {
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop("PREFECT_API_URL", None)
        with self.log.open("a") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} for pid {os.getpid()}\n")
            out.flush()
            # Its own session: a Ctrl-C at the terminal reaches only the command, which stops
            # the server once it has recorded the interrupted runs through it.
            self.proc = subprocess.Popen(
                args,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self, timeout: float) -> None:
        """Return once the server answers /api/health; LocalAPIError if it does not in time."""
        if self.ready_after is not None:
            return
        assert self.proc is not None
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            # No second try on another port: PREFECT_API_URL names this one, and Prefect, once
            # imported, has read it.
            if self.proc.poll() is not None:
                raise LocalAPIError(
                    f"the temporary Prefect server exited with code {self.proc.returncode} "
                    f"(its log: {self.log})"
                )
            if _healthy(self.url):
                self.ready_after = time.monotonic() - self.started
                return
            time.sleep(0.1)
        self.stop()
        raise LocalAPIError(
            f"the temporary Prefect server did not answer within {timeout:.0f} s (its log: "
            f"{self.log}); raise {STARTUP_TIMEOUT_ENV}, or start one with `nightowl server` and "
            "set PREFECT_API_URL"
        )

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it is not gone in a few seconds."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_running: LocalAPI | None = None
_lock = threading.Lock()


def start(log: Path) -> LocalAPI | None:
    """Start this command's temporary API and point PREFECT_API_URL at it, unless one is named
    already (or Prefect was imported before, or this is not a POSIX system): then None."""
    global _running
    with _lock:
        if _running is not None:
            return _running
        if os.environ.get("PREFECT_API_URL") or "prefect" in sys.modules or os.name != "posix":
            return None  # Prefect has read its settings already: it starts its own, as before
        api = LocalAPI(log)
        api.spawn()
        os.environ["PREFECT_API_URL"] = api.url
        _running = api
        # Stopped at exit: registered before Prefect is imported, this runs after Prefect's own
        # exit handlers have sent the server their last logs and events (they run last first).
        atexit.register(stop)
        return api


def wait(timeout: float | None = None) -> LocalAPI | None:
    """Wait for the running temporary API to answer (if any); LocalAPIError if it does not."""
    api = _running
    if api is None:
        return None
    try:
        api.wait(timeout if timeout is not None else startup_timeout())
    except LocalAPIError:
        stop()
        raise
    return api


def stop() -> None:
    """Stop this command's temporary API, if it started one, and forget its address."""
    global _running
    with _lock:
        api, _running = _running, None
        if api is None:
            return
        api.stop()
        if os.environ.get("PREFECT_API_URL") == api.url:
            del os.environ["PREFECT_API_URL"]


def startup_timeout() -> float:
    """Seconds the temporary API may take to start (Prefect's setting; 120 on 2 slow cores)."""
    try:
        return float(os.environ.get(STARTUP_TIMEOUT_ENV) or 120)
    except ValueError:
        return 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _site_packages_of(package: str) -> str:
    """The folder ``package`` is imported from, found without importing it (which would read
    Prefect's settings before PREFECT_API_URL names this server)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.origin is not None, f"{package} is not installed"
    return str(Path(spec.origin).parent.parent)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _die_with(parent: int) -> None:
    """Get SIGTERM when ``parent`` dies, even by SIGKILL; exit now if it is gone already."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            _poll_parent(parent)
    else:
        _poll_parent(parent)
    # The parent may have died before the death signal was armed: then nobody sends it.
    if os.getppid() != parent:
        os._exit(0)


def _poll_parent(parent: int) -> None:
    """Where the kernel cannot tell us: look once a second whether the parent is still there."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


if __name__ == "__main__":  # the server process itself
    _die_with(int(sys.argv[1]))
    sys.argv = ["uvicorn", *sys.argv[2:]]
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
