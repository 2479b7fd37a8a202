"""`nightowl server` serves the report pages: a run's link opens from the run page in the UI.

One server on a free port, and one nightly run against it (a small generated shop) that wrote a
report page under the server's data root. Then Chromium clicks through the UI to the page; plain
HTTP checks that the pages are served read-only; and the report's artifacts, written twice in one
flow run as a Retry writes them, are left one per key: the newer.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from datetime import date
from pathlib import Path

import httpx
import pytest

from nightowl.warehouse.manifest import file_sha256
from tests.flows.test_operations_e2e import NIGHTOWL, running_server
from tests.landings import landing

pytestmark = pytest.mark.e2e
END = date(2026, 11, 20)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`nightowl server` on a free loopback port, after one nightly run for END reported to it."""
    base = tmp_path_factory.mktemp("reports")
    root = base / "data"
    landing(root / "landing", users=100, items=20, days=2, seed=9, end_date=END)
    env = os.environ | {"PREFECT_HOME": str(base / "prefect-home")}
    env.pop("PREFECT_LOCAL_STORAGE_PATH", None)
    with running_server(base, root, env) as url:
        run = subprocess.run(
            [*NIGHTOWL, "run", "--date", END.isoformat(), "--data-root", str(root)],
            env=env | {"PREFECT_API_URL": f"{url}/api"}, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        yield {"url": url, "root": root, "page": root / "reports" / END.isoformat() / "index.html"}


def _flow_run_id(url: str) -> str:
    (run,) = httpx.post(f"{url}/api/flow_runs/filter", json={}, timeout=10).json()
    return run["id"]


@pytest.mark.parametrize("ui", ["", "/v2"], ids=["ui-v1", "ui-v2"])
def test_the_report_link_on_the_run_page_opens_the_report_from_the_server(served, ui):
    """In both of Prefect's UIs (v2 is where the home page leads): the run page's Artifacts tab,
    the nightly-report card, then its link, which opens the page over HTTP, scripts and all."""
    from playwright.sync_api import sync_playwright

    from tests.browser import FLAGS, chromium

    browser = chromium()  # skips (fails in CI) when Chromium is not installed
    url, page_file = served["url"], served["page"]
    expected = f"{url}/reports/{END.isoformat()}/index.html"
    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=browser, args=FLAGS)
        try:
            context = chrome.new_context(viewport={"width": 1200, "height": 1600})
            page = context.new_page()
            page.goto(f"{url}{ui}/runs/flow-run/{_flow_run_id(url)}", wait_until="networkidle")
            page.get_by_role("tab", name="Artifacts").or_(page.locator("li#artifacts")).click()
            page.locator("a", has_text="nightly-report").first.click()
            link = page.get_by_role("link", name=f"nightowl report {END.isoformat()}")
            assert link.get_attribute("href") == expected
            errors: list[str] = []
            context.on("weberror", lambda e: errors.append(str(e.error)))
            if link.get_attribute("target") == "_blank":  # v1 opens outside links in a new tab
                with context.expect_page() as opened:
                    link.click()
                report = opened.value
            else:
                with page.expect_navigation(url=expected):
                    link.click()
                report = page
            report.wait_for_load_state("load")
            assert report.url == expected
            assert report.title() == f"nightowl report · {END.isoformat()}"
            heading = report.locator("h1").inner_text()
            sorted_as = _sort_a_table(report)
        finally:
            chrome.close()
    assert heading == "nightowl report · Friday 20 November 2026"
    assert errors == [] and sorted_as == "ascending"  # its own script runs, sandboxed as it is
    assert page_file.is_file()


def _sort_a_table(report) -> str | None:
    """Click the first sortable table's first header: the sort order the page's script marks on
    it (None: the script did not run)."""
    header = report.locator("table.sortable th").first
    header.click()
    return header.get_attribute("aria-sort")


def _raw(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request with ``path`` sent as written (an HTTP client library would drop ``..``)."""
    parts = httpx.URL(url)
    conn = http.client.HTTPConnection(parts.host, parts.port, timeout=10)
    try:
        conn.request(method, path, body=body)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_the_served_reports_are_read_only_and_stay_under_the_pages_root(served):
    url, root, page = served["url"], served["root"], served["page"]
    path = f"/reports/{END.isoformat()}/index.html"
    status, body = _raw(url, "GET", path)
    assert status == 200 and body == page.read_bytes()
    before = file_sha256(page)
    for method in ("PUT", "POST", "DELETE", "PATCH"):
        assert _raw(url, method, path, b"<h1>defaced</h1>")[0] == 405, method
        assert _raw(url, method, "/reports/new.html", b"<h1>new</h1>")[0] == 405, method
    assert file_sha256(page) == before and not (root / "reports" / "new.html").exists()
    # Files beside the pages root, reached with .. (encoded or not), a symbolic link out of it,
    # or an absolute path: none is served.
    outside = root / "landing" / "events" / f"{END.isoformat()}.csv"
    assert outside.is_file()
    (root / "reports" / "out").symlink_to(root / "landing")
    for escape in (
        f"/reports/../landing/events/{outside.name}",
        f"/reports/%2e%2e/landing/events/{outside.name}",
        f"/reports/..%2flanding/events/{outside.name}",
        f"/reports/out/events/{outside.name}",
        f"/reports/{END.isoformat()}/../../landing/events/{outside.name}",
        f"/reports//{outside}",
    ):
        status, body = _raw(url, "GET", escape)
        assert status == 404 and b"user_id" not in body, escape
    assert _raw(url, "GET", "/reports/")[0] == 404  # no listing of the reports
    assert httpx.get(f"{url}/api/health", timeout=10).status_code == 200  # Prefect's untouched


def test_report_artifacts_run_twice_in_one_flow_run_leave_the_newer_one_per_key(served):
    """What a Retry does: the report-artifacts step runs again in the same flow run. The run
    then shows one nightly-report and one report-summary, the second attempt's, linked over
    HTTP; and a page this server does not serve (another data root) is linked as a file."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.events.worker import EventsWorker
    from prefect.runtime import flow_run
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_LOGGING_TO_API_ENABLED,
        temporary_settings,
    )

    from nightowl.flows.steps import report_artifacts_step, report_link
    from nightowl.tasks.report.units import ReportReport

    page = served["page"]

    def built(run_date: str, said: str) -> ReportReport:
        return ReportReport(run_date=run_date, as_of=run_date, page=str(page), summary=[said])

    @flow(name="report-artifacts-twice")
    def twice() -> str:
        report_artifacts_step(built("2026-11-19", "the first attempt"))
        time.sleep(0.05)  # the second attempt's artifacts are strictly newer
        report_artifacts_step(built(END.isoformat(), "the retry"))
        return str(flow_run.id)

    # Its logs are not sent: the log worker would send the last of them at exit, to no server.
    quiet = {PREFECT_API_URL: f"{served['url']}/api", PREFECT_LOGGING_TO_API_ENABLED: False}
    # Its task runs reach a server as events, through one worker per process that keeps the
    # server it started with (the session's shared one, if a test here used it): a new one, for
    # this server, and sent before the block ends.
    EventsWorker.drain_all()
    with temporary_settings(quiet):
        run_id = twice()
        EventsWorker.drain_all()
        with get_client(sync_client=True) as client:
            left = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
        elsewhere = Path(served["root"]).parent / "copy" / END.isoformat() / "index.html"
        elsewhere.parent.mkdir(parents=True)
        elsewhere.write_bytes(page.read_bytes())
        os.utime(elsewhere, (0, 0))
        assert report_link(str(elsewhere)) == elsewhere.as_uri()
    by_key = {}
    for artifact in left:
        assert artifact.key not in by_key, f"{artifact.key} twice"
        by_key[artifact.key] = artifact
    assert set(by_key) == {"nightly-report", "report-summary"}
    served_at = f"{served['url']}/reports/{END.isoformat()}/index.html"
    assert by_key["nightly-report"].data == f"[nightowl report {END.isoformat()}]({served_at})"
    assert "the retry" in by_key["report-summary"].data
    assert f"({served_at})" in by_key["report-summary"].data
