"""build_report against a real warehouse: what it writes, what it leaves out and why, reruns."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from nightowl.errors import NotEnoughHistory
from nightowl.schemas.config import ReportSettings
from nightowl.tasks.report.units import TABLES, build_report
from nightowl.warehouse.query import run_query
from nightowl.warehouse.store import Warehouse
from nightowl.warehouse.tables import SEGMENTS
from tests.tasks.behaviour.test_units import END, build_warehouse
from tests.warehouse.test_tables import frame_of


@pytest.fixture(scope="module")
def wh(tmp_path_factory) -> Warehouse:
    """A young shop: clean tables only, no model has scored anything yet."""
    return build_warehouse(tmp_path_factory.mktemp("report") / "data", users=200, days=20)


def test_a_young_warehouse_gets_kpis_and_products_and_is_told_what_is_missing(wh):
    built = build_report(wh, END, ReportSettings(kpi_days=14), "UTC")
    assert set(built.tables) == {"kpi_daily", "product_health"}
    assert any(m.startswith("segments: no user_scores") for m in built.missing)
    assert any(m.startswith("campaign_briefs:") for m in built.missing)
    page = Path(built.page)
    assert page == wh.data_root / "reports" / END.isoformat() / "index.html"
    html = page.read_text()
    assert "Not in this report" in html and 'id="chart-kpi"' in html
    assert 'id="chart-segments"' not in html
    # Every table is downloadable beside the page, and is the table in the warehouse.
    with (page.parent / "kpi_daily.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    revenue = run_query(wh, "select sum(revenue) from kpi_daily").item()
    assert len(rows) == 14 and sum(float(r["revenue"]) for r in rows) == pytest.approx(revenue)
    as_of = (END + timedelta(days=1)).isoformat()
    assert run_query(wh, "select distinct as_of from kpi_daily").item().isoformat() == as_of


def test_the_kpis_reconcile_with_the_clean_events(wh):
    build_report(wh, END, ReportSettings(kpi_days=14), "UTC")
    day = END.isoformat()
    ours = run_query(
        wh, f"select buyers, revenue from kpi_daily where day = date '{day}'"
    ).row(0)  # fmt: skip
    theirs = run_query(
        wh, "select count(distinct user_id), round(sum(coalesce(quantity, 1) * price), 2) "
        f"from events where event_type = 'purchase' and dt = date '{day}'"
    ).row(0)  # fmt: skip
    assert ours == theirs


def test_a_rerun_gives_the_same_tables_and_page(wh):
    cfg = ReportSettings(kpi_days=14)
    first = build_report(wh, END, cfg, "UTC")
    page = Path(first.page).read_bytes()
    again = build_report(wh, END, cfg, "UTC")
    assert again.tables == first.tables and Path(again.page).read_bytes() == page


def test_a_table_left_out_tonight_does_not_keep_an_older_partition(wh):
    as_of = {"as_of": (END + timedelta(days=1)).isoformat()}
    wh.write_partition("reports", "segments", as_of, frame_of(SEGMENTS, segment=["stale"]))
    built = build_report(wh, END, ReportSettings(kpi_days=14), "UTC")
    assert "segments" not in built.tables and set(TABLES) > set(built.tables)
    assert wh.manifest("reports", "segments", as_of) is None


def test_a_warehouse_without_events_says_so(tmp_path):
    with pytest.raises(NotEnoughHistory, match="clean events table is empty"):
        build_report(Warehouse(tmp_path / "empty"), END, ReportSettings(), "UTC")


def test_every_line_of_what_changed_names_a_query_that_gives_its_numbers(wh):
    build_report(wh, END, ReportSettings(kpi_days=14), "UTC")
    assert assert_findings_traceable(wh, END, ReportSettings(kpi_days=14)) >= 4


def assert_findings_traceable(wh: Warehouse, run_date, cfg: ReportSettings | None = None) -> int:
    """Each "what changed" line of the report for ``run_date``: its query runs, and gives every
    number the line states (changes: recomputed from the sums it gives); returns how many."""
    import re
    from decimal import Decimal

    from nightowl.tasks.report import page
    from nightowl.tasks.report.briefs import TemplateWriter
    from nightowl.tasks.report.units import report_frames, report_inputs

    cfg = cfg or ReportSettings()
    inputs = report_inputs(wh, run_date + timedelta(days=1))
    frames, _ = report_frames(inputs, cfg, "UTC", TemplateWriter())
    findings = page.what_changed(frames, inputs)
    for finding in findings:
        result = run_query(wh, finding.query)
        if "last_7_days" in result.columns:
            now = result.filter(pl.col("last_7_days")).drop("last_7_days").row(0)
            then = result.filter(~pl.col("last_7_days")).drop("last_7_days").row(0)
            changes = [
                page._change((a - b) / b if b else None) for a, b in zip(now, then, strict=True)
            ]
            assert all(c in finding.text for c in changes), (finding.text, changes)
            continue
        shown = {
            form
            for row in result.iter_rows()
            for v in (int(x) if isinstance(x, Decimal) and x == int(x) else x for x in row)
            if isinstance(v, int | float | Decimal) and not isinstance(v, bool)
            # As a count or amount, a share, or a change in % or points ("up 12 %").
            for form in (
                f"{v:,.0f}",
                f"{v:,}",
                f"{v:.0%}",
                f"{v:.1%}",
                f"{abs(v) * 100:.0f}",
                f"{abs(v) * 100:.0f}%",
                f"{abs(v) * 100:.1f}",
                f"{v:.0f}%",
            )
        }
        # The counts and amounts a line states (not dates, not the "7" of "7 days").
        stated = {
            n
            for n in re.findall(r"(?<![\w.])\d[\d,]*(?:\.\d)?%?", finding.text)
            if n not in {"7", "7 days"} and not re.fullmatch(r"\d{1,2}", n)
        }
        shown |= {str(v) for row in result.iter_rows() for v in row}  # ids like 18102
        missing = stated - shown
        assert not missing, (finding.text, finding.query, missing, result)
    return len(findings)
