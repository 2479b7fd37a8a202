"""The run summary's rows and page, from a literal flow summary."""

from __future__ import annotations

from tasks.summary import summary_markdown, summary_rows

SUMMARY = {
    "events": {
        "ingest": {
            "newly_ingested": ["2026-11-27.csv"],
            "seconds": 1.5,
            "files": [{"rows_read": 10, "rows_accepted": 8, "rows_quarantined": 2}],
        },
        "clean": {
            "rows_in": 8,
            "rows_out": 6,
            "duplicates": 1,
            "future": 1,
            "partitions": {"2026-11-26": "h1", "2026-11-27": "h2"},
            "seconds": 0.5,
        },
    }
}


def test_one_row_per_step_with_counts_that_add_up():
    ingest, clean = summary_rows(SUMMARY)
    assert ingest == {
        "step": "ingest-events", "files": 1, "rows_in": 10, "rows_out": 8, "quarantined": 2,
        "partitions": 1, "seconds": 1.5,
    }  # fmt: skip
    assert clean["rows_in"] == ingest["rows_out"] and clean["quarantined"] == 2
    assert clean["partitions"] == 2


def test_the_page_has_the_table_totals_and_a_query():
    page = summary_markdown("2026-11-27", summary_rows(SUMMARY), "/data/warehouse")
    assert "| ingest-events | 1 | 10 | 8 | 2 | 1 | 1.5 |" in page
    assert "Quarantined rows in total: **4**" in page
    assert "where dt = '2026-11-27'" in page and "/data/warehouse/clean/" in page
