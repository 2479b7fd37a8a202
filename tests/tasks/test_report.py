"""build_report against a real warehouse: what it writes, what it leaves out and why, reruns."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from schemas.config import ReportSettings
from tasks.report import TABLES, build_report
from tasks.train import NotEnoughHistory
from tests.tasks.test_propensity import END, build_warehouse
from warehouse.query import run_query
from warehouse.store import Warehouse


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
    stale = wh.manifest("reports", "segments", {"as_of": first.as_of})
    assert stale is None and set(TABLES) > set(first.tables)


def test_a_warehouse_without_events_says_so(tmp_path):
    with pytest.raises(NotEnoughHistory, match="clean events table is empty"):
        build_report(Warehouse(tmp_path / "empty"), END, ReportSettings(), "UTC")


def test_every_line_of_what_changed_names_a_query_that_gives_its_numbers(wh):
    import re

    from tasks import page
    from tasks.briefs import TemplateWriter
    from tasks.report import report_frames, report_inputs

    cfg = ReportSettings(kpi_days=14)
    build_report(wh, END, cfg, "UTC")
    inputs = report_inputs(wh, END + timedelta(days=1))
    frames, _ = report_frames(inputs, cfg, "UTC", TemplateWriter())
    findings = page.what_changed(frames, inputs)
    assert len(findings) >= 4
    for finding in findings:
        result = run_query(wh, finding.query)
        if "last_7_days" in result.columns:  # changes: recomputed from the sums it gives
            now = result.filter(pl.col("last_7_days")).drop("last_7_days").row(0)
            then = result.filter(~pl.col("last_7_days")).drop("last_7_days").row(0)
            changes = [
                page._change((a - b) / b if b else None) for a, b in zip(now, then, strict=True)
            ]
            assert all(c in finding.text for c in changes), (finding.text, changes)
            continue
        shown = {
            f"{v:,.0f}" if isinstance(v, float) else f"{v:,}"
            for row in result.iter_rows()
            for v in row
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        numbers = set(re.findall(r"\b\d[\d,]*\b", finding.text))
        assert numbers & shown, (finding.text, finding.query, result)
