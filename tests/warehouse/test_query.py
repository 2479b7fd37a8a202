"""``nightowl query``'s engine: views over the tables, read-only, locked to the warehouse."""

from __future__ import annotations

import polars as pl
import pytest

from warehouse.query import QueryRefused, checked_statement, run_query, view_definitions
from warehouse.store import Warehouse


@pytest.fixture
def wh(tmp_path) -> Warehouse:
    wh = Warehouse(tmp_path / "data")
    for day, n in (("2026-11-26", 2), ("2026-11-27", 3)):
        frame = pl.DataFrame({"event_type": ["view"] * n, "user_id": ["u1"] * n})
        wh.write_partition("clean", "events", {"dt": day}, frame)
        wh.write_partition("clean", "items", {"dt": day}, pl.DataFrame({"item_id": [f"i-{day}"]}))
    wh.write_partition(
        "quarantine", "source=events/stage=ingest", {"dt": "2026-11-27"},
        pl.DataFrame({"file": ["a.csv"], "row": [4], "reason": ["user_id: required"]}),
    )  # fmt: skip
    return wh


def test_views_are_named_after_tables(wh):
    assert set(view_definitions(wh)) == {"events", "items", "items_history", "quarantine"}


def test_fact_tables_read_every_partition_with_its_date(wh):
    out = run_query(wh, "select dt, count(*) n from events group by 1 order by 1")
    assert [(str(d), n) for d, n in out.rows()] == [("2026-11-26", 2), ("2026-11-27", 3)]


def test_snapshot_tables_resolve_to_the_latest_partition(wh):
    assert run_query(wh, "select item_id from items").rows() == [("i-2026-11-27",)]
    assert run_query(wh, "select count(*) from items_history").item() == 2


def test_quarantine_carries_source_stage_and_date(wh):
    row = run_query(wh, "select source, stage, dt, file, row from quarantine").row(0)
    assert row[:2] == ("events", "ingest") and row[3:] == ("a.csv", 4)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("create table x as select 1", "CREATE statements are refused"),
        ("insert into events values ('x', 'y')", "INSERT statements are refused"),
        ("copy events to '/tmp/out.csv'", "COPY statements are refused"),
        ("attach '/tmp/other.db'", "ATTACH statements are refused"),
        ("install httpfs", "statements are refused"),
        ("load httpfs", "statements are refused"),
        ("set enable_external_access = true", "SET statements are refused"),
        ("select 1; select 2", "exactly one statement"),
        ("selec nothing", "not valid SQL"),
    ],
)
def test_statements_that_write_or_escape_are_refused(wh, sql, message):
    with pytest.raises(QueryRefused, match=message):
        run_query(wh, sql)


@pytest.mark.parametrize(
    "sql",
    [
        "select * from read_csv('/etc/passwd')",
        "select * from read_text('/etc/hostname')",
        "select * from read_parquet('/tmp/../etc/*.parquet')",
    ],
)
def test_reading_files_outside_the_warehouse_is_refused(wh, sql):
    with pytest.raises(QueryRefused, match="only files inside the warehouse"):
        run_query(wh, sql)


def test_reading_warehouse_files_directly_is_allowed(wh):
    pattern = wh.glob("clean", "events")
    assert run_query(wh, f"select count(*) from read_parquet('{pattern}')").item() == 5


def test_read_only_statement_kinds_pass():
    for sql in ("select 1", "with a as (select 1) select * from a", "explain select 1"):
        assert checked_statement(sql) == sql


def test_the_catalog_file_follows_partitions_published_after_it(tmp_path):
    import duckdb
    import polars as pl

    from warehouse.query import write_catalog
    from warehouse.store import Warehouse

    wh = Warehouse(tmp_path / "data")
    frame = pl.DataFrame({"segment": ["loyal"], "users": [3]})
    wh.write_partition("reports", "segments", {"as_of": "2026-11-27"}, frame)
    target = tmp_path / "bi" / "nightowl.duckdb"
    assert write_catalog(wh, target) == ["segments", "segments_history"]
    wh.write_partition("reports", "segments", {"as_of": "2026-11-28"}, frame.with_columns(users=5))
    con = duckdb.connect(str(target), read_only=True)
    try:
        assert con.sql("select users, as_of::varchar from segments").fetchall() == [
            (5, "2026-11-28")
        ]
        assert con.sql("select count(*) from segments_history").fetchall() == [(2,)]
    finally:
        con.close()


def test_a_query_while_a_partition_is_republished_sees_the_old_or_the_new_never_a_mix(tmp_path):
    import threading
    import time

    wh = Warehouse(tmp_path / "data")
    versions = {
        n: pl.DataFrame({"user_id": [f"u{i}" for i in range(n)], "v": [n] * n})
        for n in (5_000, 20_000)
    }
    part = {"as_of": "2026-11-28"}
    wh.write_partition("predictions", "user_scores", part, versions[5_000])
    stop, seen, errors, gone = threading.Event(), set(), [], 0

    def publish() -> None:
        while not stop.is_set():
            for frame in versions.values():
                wh.write_partition("predictions", "user_scores", part, frame)
                time.sleep(0.02)  # a swap every 20 ms, many during each query

    writer = threading.Thread(target=publish)
    writer.start()
    try:
        for _ in range(150):
            try:  # nightowl query runs again when the files it listed were swapped away
                seen.add(run_query(wh, "select count(*), min(v), max(v) from user_scores").row(0))
            except Exception as exc:
                errors.append(repr(exc))
            lazy = pl.scan_parquet(wh.glob("predictions", "user_scores"))
            stats = (pl.len(), pl.col("v").min().alias("lo"), pl.col("v").max().alias("hi"))
            try:  # a plain Polars reader sees a whole version, or is told its files are gone
                seen.add(lazy.select(stats).collect().row(0))
            except FileNotFoundError:
                gone += 1
    finally:
        stop.set()
        writer.join()
    assert errors == []
    assert seen <= {(n, n, n) for n in versions}
    assert len(seen) == 2  # both versions were read while the other was being swapped in
