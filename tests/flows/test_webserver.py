"""The report pages beside Prefect's app: behind the API's password, sandboxed, and linked over
HTTP by a run only when its server serves that very file. A real HTTP server (uvicorn, in a
thread) stands in front of a stand-in for Prefect's app: no Prefect server is started."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from starlette.responses import PlainTextResponse

from nightowl.flows.webserver import with_reports

DAY = "2026-11-20"
AUTH = ("owl", "night-watch-7c1f")


async def _prefect(scope, receive, send) -> None:
    """Stands in for Prefect's app: answers every path it gets."""
    await PlainTextResponse("prefect")(scope, receive, send)


@pytest.fixture
def pages(tmp_path: Path) -> Path:
    """A pages root with one published report."""
    folder = tmp_path / "reports" / DAY
    folder.mkdir(parents=True)
    (folder / "index.html").write_text(f"<title>nightowl report · {DAY}</title>")
    return tmp_path / "reports"


@contextmanager
def _serving(app) -> Iterator[str]:
    """``app`` on a free loopback port until the block ends; its base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_reports_ask_for_the_servers_password_and_run_sandboxed(pages):
    page = f"/reports/{DAY}/index.html"
    with _serving(with_reports(_prefect, pages, ":".join(AUTH))) as url:
        refused = httpx.get(url + page, timeout=10)
        wrong = httpx.get(url + page, auth=(AUTH[0], "guess"), timeout=10)
        good = httpx.get(url + page, auth=AUTH, timeout=10)
        put = httpx.put(url + page, content=b"x", auth=AUTH, timeout=10)
        other = httpx.get(f"{url}/runs", timeout=10)  # Prefect's (its UI asks for the password)
    assert refused.status_code == 401 and wrong.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic ")  # the browser prompts
    assert good.status_code == 200 and good.text.startswith("<title>nightowl report")
    # The page's text comes from partners' files and shares its origin with the UI, which holds
    # the password: a script slipped into it runs in an origin of its own.
    assert good.headers["content-security-policy"] == "sandbox allow-scripts allow-downloads"
    assert good.headers["x-content-type-options"] == "nosniff"
    assert put.status_code == 405 and put.headers["allow"] == "GET, HEAD"
    assert other.text == "prefect"


def test_a_run_links_its_page_over_http_only_where_its_server_serves_that_file(pages, tmp_path):
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from nightowl.flows.steps import report_link

    page = pages / DAY / "index.html"
    copy = tmp_path / "elsewhere" / DAY / "index.html"  # the same date in another data root
    copy.parent.mkdir(parents=True)
    copy.write_bytes(page.read_bytes())
    os.utime(copy, (0, 0))
    with _serving(with_reports(_prefect, pages, ":".join(AUTH))) as url:
        api = {PREFECT_API_URL: f"{url}/api", PREFECT_API_AUTH_STRING: ":".join(AUTH)}
        with temporary_settings(api):
            assert report_link(str(page)) == f"{url}/reports/{DAY}/index.html"
            assert report_link(str(copy)) == copy.as_uri()
        with temporary_settings({PREFECT_API_URL: f"{url}/api"}):  # no password: not seen
            assert report_link(str(page)) == page.as_uri()
    with _serving(_prefect) as url, temporary_settings({PREFECT_API_URL: f"{url}/api"}):
        assert report_link(str(page)) == page.as_uri()  # a server that is not nightowl's
    assert report_link(str(page)) == page.as_uri()  # no server named: a temporary one
