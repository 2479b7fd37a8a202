"""What `nightowl server` runs: Prefect's UI and API, and the report pages, on one port.

The report pages (``<data root>/reports/``) are served read-only at ``/reports/``, a path none of
the UI's pages uses, so the link artifact of a run opens over HTTP from the run page: a browser
follows no ``file://`` link from an ``http://`` page. Prefect's app is built as `prefect
server start` builds it (settings, services, database); only ``/reports/`` is answered here.

Run as ``python -m nightowl.flows.webserver --host H --port P --pages DIR`` with Prefect's
environment set (``nightowl server`` does that).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hmac
import socket
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from nightowl.warehouse.store import PAGES_URL_PATH

#: A report page holds text from partners' files (product titles, reviews) and shares its origin
#: with the UI, which keeps the API's password in the browser: the page runs sandboxed, in an
#: origin of its own, so a script slipped into it could read nothing of the UI's nor call the API.
#: Its own script (sorting its tables) and its CSV downloads still work.
PAGE_HEADERS = {
    "content-security-policy": "sandbox allow-scripts allow-downloads",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",  # a rerun replaces the page: revalidate (ETag) every time
}


class _Pages(StaticFiles):
    """GET and HEAD of files under the pages root; 405 for other methods, 404 for any path that
    leaves the root (``..``, a symbolic link out) and for folders without ``index.html``."""

    async def check_config(self) -> None:
        """Nothing to check: before the first run there is no pages root yet (404, not 500)."""


def reports_app(pages_root: Path, auth_string: str | None = None) -> ASGIApp:
    """The ASGI app that serves ``pages_root`` read-only (paths relative to it); with
    ``auth_string`` (``user:password``, the API's) it answers 401 to a caller without it, which a
    browser turns into a password prompt."""
    files = _Pages(directory=pages_root, html=True, check_dir=False)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no websockets here
            await files(scope, receive, send)
            return
        try:
            if auth_string is not None and not _authorised(scope, auth_string):
                raise HTTPException(401, headers={"www-authenticate": 'Basic realm="nightowl"'})
            await files(scope, receive, _with_headers(send))
        except HTTPException as exc:
            await _error(exc, send)

    return app


def _authorised(scope: Scope, auth_string: str) -> bool:
    header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    scheme, _, creds = header.partition(" ")
    try:
        given = base64.b64decode(creds.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return scheme.lower() == "basic" and hmac.compare_digest(given, auth_string)


def _with_headers(send: Send) -> Send:
    async def sending(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", [])]
            headers += [(k.encode(), v.encode()) for k, v in PAGE_HEADERS.items()]
            message = {**message, "headers": headers}
        await send(message)

    return sending


async def _error(exc: HTTPException, send: Send) -> None:
    body = f"{exc.status_code} {exc.detail}\n".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    headers += [(b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def with_reports(app: ASGIApp, pages_root: Path, auth_string: str | None = None) -> ASGIApp:
    """``app`` (Prefect's), with ``/reports/…`` answered by ``reports_app`` instead: the request
    never reaches Prefect's routes or the UI's catch-all page."""
    prefix = PAGES_URL_PATH.rstrip("/")
    pages = reports_app(pages_root, auth_string)

    async def both(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] in ("http", "websocket") and (
            path == prefix or path.startswith(PAGES_URL_PATH)
        ):
            # StaticFiles serves the path past root_path: the pages root answers /reports/
            await pages({**scope, "root_path": prefix}, receive, send)
        else:
            await app(scope, receive, send)

    return both


def serve(host: str, port: int, pages_root: Path) -> None:
    """Serve Prefect's UI and API (as `prefect server start` does, its services included) and
    ``pages_root`` at ``/reports/`` on ``host``:``port`` until interrupted."""
    import uvicorn
    from prefect.server.api.server import create_app
    from prefect.settings import (
        PREFECT_SERVER_API_AUTH_STRING,
        PREFECT_SERVER_API_KEEPALIVE_TIMEOUT,
        PREFECT_SERVER_API_WEBSOCKET_PING_INTERVAL,
        PREFECT_SERVER_API_WEBSOCKET_PING_TIMEOUT,
        PREFECT_SERVER_LOGGING_LEVEL,
    )

    auth = PREFECT_SERVER_API_AUTH_STRING.value()
    app = with_reports(create_app(final=True), pages_root, auth)
    uvicorn.run(
        app,
        host=host,
        port=port,
        timeout_keep_alive=PREFECT_SERVER_API_KEEPALIVE_TIMEOUT.value(),
        ws_ping_interval=PREFECT_SERVER_API_WEBSOCKET_PING_INTERVAL.value(),
        ws_ping_timeout=PREFECT_SERVER_API_WEBSOCKET_PING_TIMEOUT.value(),
        log_level=PREFECT_SERVER_LOGGING_LEVEL.value().lower(),
    )


def main(argv: list[str] | None = None) -> None:
    """The command line of the server process (`nightowl server` starts it)."""
    parser = argparse.ArgumentParser(prog="python -m nightowl.flows.webserver")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pages", type=Path, required=True, help="The pages root to serve.")
    args = parser.parse_args(argv)
    problem = _cannot_bind(args.host, args.port)
    if problem:
        sys.exit(f"nightowl server: {problem}")
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises Ctrl-C again once stopped
        serve(args.host, args.port, args.pages)


def _cannot_bind(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host``:``port`` (None: it can). Asked first, as
    `prefect server start` does: the app starts its services before uvicorn binds, and a port
    in use would end in their shutdown's traceback."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        return f"cannot bind to {host!r}: {exc.strerror}; give --host an address of this machine"
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port"
    return None


if __name__ == "__main__":
    main()
