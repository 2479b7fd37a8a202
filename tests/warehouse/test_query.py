"""``nightowl query``'s engine: views over the tables, read-only, locked to the warehouse."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from nightowl.warehouse.query import QueryRefused, run_query, view_definitions
from nightowl.warehouse.store import Warehouse
from nightowl.warehouse.tables import (
    CLEAN_EVENTS,
    CLEAN_ITEMS,
    QUARANTINE,
    SEGMENTS,
    USER_SCORES,
)
from tests.warehouse.test_tables import frame_of

REJECTED = QUARANTINE[("events", "ingest")]


@pytest.fixture
def wh(tmp_path) -> Warehouse:
    wh = Warehouse(tmp_path / "data")
    for day, n in (("2026-11-26", 2), ("2026-11-27", 3)):
        frame = frame_of(CLEAN_EVENTS, event_type=["view"] * n, user_id=["u1"] * n)
        wh.write_partition("clean", "events", {"dt": day}, frame)
        items = frame_of(CLEAN_ITEMS, item_id=[f"i-{day}"])
        wh.write_partition("clean", "items", {"dt": day}, items)
    wh.write_partition(
        "quarantine", "source=events/stage=ingest", {"dt": "2026-11-27"},
        frame_of(REJECTED, file=["a.csv"], row=[4], reason=["user_id: required"]),
    )  # fmt: skip
    return wh


def test_views_are_named_after_tables(wh):
    assert set(view_definitions(wh)) == {"events", "items", "items_history", "quarantine", "held"}


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
        ("set allowed_directories = ['/']", "SET statements are refused"),
        ("reset allowed_directories", "SET statements are refused"),
        ("use system", "SET statements are refused"),
        ("update events set user_id = 'x'", "UPDATE statements are refused"),
        ("delete from events", "DELETE statements are refused"),
        ("drop view events", "DROP statements are refused"),
        ("alter view events rename to e", "ALTER statements are refused"),
        ("with x as (select 1) insert into events select 'a', 'b'", "INSERT statements"),
        ("create temp table t as select 1", "CREATE statements are refused"),
        ("create macro m(a) as a", "CREATE statements are refused"),
        ("create secret (type s3, key_id 'x', secret 'y')", "CREATE statements are refused"),
        ("export database '/tmp/nightowl-export'", "EXPORT statements are refused"),
        ("import database '/tmp/nightowl-export'", "statements are refused"),
        ("detach memory", "DETACH statements are refused"),
        ("pragma database_list", "PRAGMA statements are refused"),
        ("call pragma_database_list()", "CALL statements are refused"),
        ("checkpoint", "statements are refused"),
        ("vacuum", "VACUUM statements are refused"),
        ("begin transaction", "TRANSACTION statements are refused"),
        ("force install httpfs", "statements are refused"),
        ("load '/tmp/evil.duckdb_extension'", "LOAD statements are refused"),
        ("select 1; select 2", "exactly one statement"),
        ("select 1; copy events to '/tmp/out.csv'", "exactly one statement"),
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
        "select * from glob('/etc/*')",
        "select * from read_blob('/etc/hostname')",
        "select * from read_json('/etc/os-release')",
        "select * from read_json_auto('/etc/os-release')",
        "select * from read_ndjson_objects('/etc/passwd')",
        "select * from read_text('/proc/self/environ')",
        "select * from sniff_csv('/etc/passwd')",
        "select * from parquet_metadata('/etc/passwd')",
        "select * from read_csv('file:///etc/passwd')",
        "select * from read_parquet('https://example.com/x.parquet')",
        "select * from read_csv('s3://bucket/x.csv')",
        "select * from duckdb_secrets()",
        "summarize select * from read_csv('/etc/passwd')",
        "describe select * from read_csv('/etc/passwd')",
        "explain analyze select * from read_csv('/etc/passwd')",
        "select * from read_csv('{root}/../outside.csv')",  # up and out of the warehouse
        "select * from '{root}/../outside.csv'",
    ],
)
def test_reading_files_outside_the_warehouse_is_refused(wh, sql):
    (wh.data_root / "outside.csv").write_text("secret\n42\n")
    with pytest.raises(QueryRefused, match="only files inside the warehouse"):
        run_query(wh, sql.format(root=wh.root))


def test_a_path_that_is_not_a_table_reads_nothing(wh):
    with pytest.raises(duckdb.CatalogException):
        run_query(wh, "select * from '/etc/passwd'")


def test_the_folder_the_command_runs_in_is_not_readable(wh, tmp_path, monkeypatch):
    # DuckDB lets a query read its spill folder, ./.tmp by default: it must not be that one.
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "notes.csv").write_text("secret\n42\n")
    with pytest.raises(QueryRefused, match="only files inside the warehouse"):
        run_query(wh, f"select * from read_csv('{tmp_path}/.tmp/notes.csv')")


def test_reading_warehouse_files_directly_is_allowed(wh):
    pattern = wh.glob("clean", "events")
    assert run_query(wh, f"select count(*) from read_parquet('{pattern}')").item() == 5


def test_read_only_statement_kinds_pass(wh):
    reads = [
        "select 1", "with a as (select 1) select * from a", "explain select 1", "from events",
        "describe events", "summarize events", "show tables", "explain analyze select 1",
        "explain (format json) select 1", "EXPLAIN /* c */ ANALYZE (select 1)", "select 1; ",
        "select count(*) from events -- trailing comment",
    ]  # fmt: skip
    for sql in reads:
        assert run_query(wh, sql).height >= 1, sql


WRITES = [
    "copy (select 1 as a) to '{part}/x.parquet' (format parquet)",
    "copy events to '{part}/x.csv'",
    "insert into events values ('x', 'y')",
    "create table t as select 1",
    "create view v as select 1",
    "update events set user_id = 'x'",
    "delete from events",
    "attach '{root}/x.db'",
    "export database '{root}/export'",
    "install httpfs",
    "load httpfs",
    "set enable_external_access = true",
    "pragma database_list",
    "create secret (type s3, key_id 'x', secret 'y')",
    "call enable_logging(storage='file', storage_path='{root}/log')",
    "checkpoint",
]


@pytest.mark.parametrize(
    "prefix",
    [
        "explain ",
        "explain analyze ",
        "EXPLAIN /* x */ ANALYZE ",
        "explain analyze (format json) ",
        "explain\n-- c\nanalyse ",
    ],
)
@pytest.mark.parametrize("write", WRITES)
def test_explaining_a_write_is_refused_and_writes_nothing(wh, prefix, write):
    part = wh.table_dir("clean", "events") / "dt=2026-11-27"
    before = sorted(p for p in wh.data_root.rglob("*"))
    # What DuckDB cannot EXPLAIN (ATTACH, EXPORT, …) is refused as not valid SQL.
    with pytest.raises(QueryRefused, match=r"refused|not valid SQL"):
        run_query(wh, prefix + write.format(part=part, root=wh.root))
    assert sorted(p for p in wh.data_root.rglob("*")) == before


@pytest.mark.parametrize("write", WRITES)
def test_writes_are_refused_and_write_nothing(wh, write):
    part = wh.table_dir("clean", "events") / "dt=2026-11-27"
    before = sorted(p for p in wh.data_root.rglob("*"))
    with pytest.raises(QueryRefused, match="refused"):
        run_query(wh, write.format(part=part, root=wh.root))
    assert sorted(p for p in wh.data_root.rglob("*")) == before


def test_what_runs_is_parsed_by_duckdb_as_a_query(wh):
    # Even a write that got past the statement check is a syntax error where it runs.
    from nightowl.warehouse.query import connection, interruptible

    part = wh.table_dir("clean", "events") / "dt=2026-11-27"
    with connection(wh) as con, pytest.raises(duckdb.ParserException):
        interruptible(con, f"from (\ncopy (select 1) to '{part}/x.parquet'\n)", None)
    assert not (part / "x.parquet").exists()


def test_a_query_past_its_timeout_is_stopped(wh):
    import time

    from nightowl.warehouse.query import QueryTimedOut

    started = time.monotonic()
    with pytest.raises(QueryTimedOut, match=r"stopped after 0\.2 s"):
        run_query(wh, "select count(*) from range(10000000000000)", timeout=0.2)
    assert time.monotonic() - started < 10


def test_ctrl_c_interrupts_a_running_query(wh):
    import _thread
    import signal
    import threading
    import time

    # interrupt_main does nothing unless Python handles SIGINT, and an earlier test (or Prefect)
    # may have changed the handler: Python's own one for this test. The timeout only keeps a
    # broken interrupt from hanging the suite; the interrupt must come long before it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        started = time.monotonic()
        threading.Timer(0.3, _thread.interrupt_main).start()  # as SIGINT does, in the main thread
        with pytest.raises(KeyboardInterrupt):
            run_query(wh, "select count(*) from range(10000000000000)", timeout=60)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 10
    for worker in [t for t in threading.enumerate() if t.name == "nightowl-query"]:
        worker.join(5)  # DuckDB stopped it: it ends
        assert not worker.is_alive()


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ("user_scores", "score step"),
        ("user_scores_history", "score step"),
        ("kpi_daily", "report step"),
        ("user_features", "features step"),
        ("recommendations", "recommend step"),
        ("demand_forecast", "nightowl models"),
    ],
)
def test_a_known_table_not_made_yet_says_which_step_makes_it(wh, table, says):
    from nightowl.warehouse.query import explain_missing

    with pytest.raises(duckdb.CatalogException) as caught:
        run_query(wh, f"select * from {table}")
    why = explain_missing(caught.value)
    assert why is not None and why.startswith(f"{table} has no partition yet") and says in why


def test_a_declared_table_without_its_own_line_still_says_where_it_comes_from(wh, monkeypatch):
    from nightowl.warehouse import query

    monkeypatch.delitem(query.NOT_YET, "price_scenarios")
    with pytest.raises(duckdb.CatalogException) as caught:
        run_query(wh, "select * from price_scenarios_history")
    assert query.explain_missing(caught.value) == (
        "price_scenarios_history has no partition yet: nightowl writes it to "
        "predictions/price_scenarios; nothing has yet (see `nightowl tables`)"
    )


def test_an_unknown_table_keeps_duckdbs_message(wh):
    from nightowl.warehouse.query import explain_missing

    with pytest.raises(duckdb.CatalogException) as caught:
        run_query(wh, "select * from event")
    assert explain_missing(caught.value) is None


def test_the_catalog_file_follows_partitions_published_after_it(tmp_path):
    import duckdb
    import polars as pl

    from nightowl.warehouse.query import write_catalog
    from nightowl.warehouse.store import Warehouse

    wh = Warehouse(tmp_path / "data")
    frame = frame_of(SEGMENTS, segment=["loyal"], users=[3])
    wh.write_partition("reports", "segments", {"as_of": "2026-11-27"}, frame)
    target = tmp_path / "bi" / "nightowl.duckdb"
    assert write_catalog(wh, target) == ["held", "segments", "segments_history"]
    later = frame.with_columns(users=pl.lit(5, pl.UInt32))
    wh.write_partition("reports", "segments", {"as_of": "2026-11-28"}, later)
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
        n: frame_of(USER_SCORES, user_id=[f"u{i}" for i in range(n)], churn_risk=[n] * n)
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
                sql = "select count(*), min(churn_risk), max(churn_risk) from user_scores"
                seen.add(run_query(wh, sql).row(0))
            except Exception as exc:
                errors.append(repr(exc))
            lazy = pl.scan_parquet(wh.glob("predictions", "user_scores"))
            risk = pl.col("churn_risk")
            stats = (pl.len(), risk.min().alias("lo"), risk.max().alias("hi"))
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


def test_a_data_root_with_glob_characters_is_read_literally(tmp_path):
    wh = Warehouse(tmp_path / "shop[1]" / "data")
    events = frame_of(CLEAN_EVENTS, quantity=[1, 2])
    wh.write_partition("clean", "events", {"dt": "2026-11-27"}, events)
    wh.write_partition(
        "quarantine", "source=events/stage=ingest", {"dt": "2026-11-27"},
        frame_of(REJECTED, file=["a.csv"], row=[4], reason=["bad"]),
    )  # fmt: skip
    assert run_query(wh, "select sum(quantity) from events").item() == 3
    assert run_query(wh, "select count(*) from quarantine").item() == 1
