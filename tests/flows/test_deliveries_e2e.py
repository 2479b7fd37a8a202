"""Deliveries and time through the whole nightly flow: reruns of older dates, early rows, and a
correction, as a user meets them from the command line (real Prefect API, real warehouse)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nightowl.cli import app
from nightowl.demo.generate import generate_landing
from nightowl.warehouse.query import run_query
from nightowl.warehouse.store import Warehouse

pytestmark = pytest.mark.e2e
END = date(2026, 3, 20)


def _run(root: Path, day: str, *more: str) -> str:
    result = CliRunner().invoke(app, ["run", "--date", day, "--data-root", str(root), *more])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "ERROR" not in result.output
    return result.output


def _per_day(wh: Warehouse, table: str = "events") -> dict[str, int]:
    counts = run_query(wh, f"select dt::varchar d, count(*) n from {table} group by 1 order by 1")
    return dict(counts.rows())


def test_reruns_early_rows_and_corrections_through_the_flow(prefect_api, tmp_path):
    root = tmp_path / "data"
    generate_landing(root / "landing", users=150, items=20, days=6, seed=4, end_date=END)
    wh = Warehouse(root)
    landing = root / "landing" / "events"
    # A row of the 20th in the 17th's file, and an undated file of rows for the 23rd.
    with (landing / "2026-03-17.csv").open("a") as fh:
        fh.write("late-1,u000001,s1,2026-03-20T09:00:00Z,view,i0001,,,,search,desktop\n")
    header = (landing / "2026-03-17.csv").read_text().splitlines()[0]
    (landing / "preorders.csv").write_text(
        header + "\n" + "early-1,u000002,s2,2026-03-23T10:00:00Z,view,i0002,,,,search,mobile\n"
    )

    _run(root, "2026-03-17")
    _run(root, "2026-03-20")
    after_latest = _per_day(wh)
    rerun = _run(root, "2026-03-17")
    assert _per_day(wh) == after_latest  # the older rerun removed nothing the 20th published
    assert "events: held 1 rows (days 2026-03-23)" in rerun
    assert run_query(wh, "select event_id, waits_for::varchar from held").rows() == [
        ("early-1", "2026-03-22")
    ]
    tables = CliRunner().invoke(app, ["tables", "--data-root", str(root)])
    assert "events: held 1 rows (days 2026-03-23)" in tables.output

    # The 19th's export is corrected: the new version replaces the old one's rows.
    corrected = landing / "2026-03-19.csv"
    lines = corrected.read_text().splitlines(keepends=True)
    corrected.write_text(
        "".join(lines[:1] + [line.replace(",view,", ",add_to_cart,") for line in lines[1:]])
    )
    (landing / "2026-03-23.csv").write_text(
        header + "\n" + "e-23,u000003,s3,2026-03-23T08:00:00Z,view,i0003,,,,search,mobile\n"
    )
    output = _run(root, "2026-03-23")
    assert (
        "events: 2026-03-19.csv changed since 2026-03-20: the new version supersedes it" in output
    )
    views = run_query(
        wh, "select count(*) from events where dt = '2026-03-19' and event_type = 'view'"
    )
    assert views.item() == 0
    assert run_query(wh, "select count(*) from held").item() == 0  # the 23rd has come
    assert _per_day(wh)["2026-03-23"] == 2  # the held row, and the 23rd's own
    ledger = run_query(
        wh,
        "select name, live, rows_superseded = rows_accepted from ingest_ledger "
        "where source = 'events' and name = '2026-03-19.csv' order by seq",
    )
    assert ledger.rows() == [("2026-03-19.csv", False, True), ("2026-03-19.csv", True, False)]
    tables = CliRunner().invoke(app, ["tables", "--data-root", str(root)]).output
    assert (
        "events: 1 delivery version(s) superseded by a correction (latest: 2026-03-19.csv" in tables
    )
    assert "held" not in tables.split("updated")[-1]  # nothing waits any more
