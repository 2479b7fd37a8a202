"""Read-only SQL over the warehouse: DuckDB views named after the tables, locked to the warehouse.

``events``, ``feedback``, ``market_prices`` and ``market_indicators`` read every clean partition;
``items`` reads the latest snapshot (``items_history`` all of them); ``quarantine`` every rejected
row (with ``source``, ``stage`` and ``dt``); ``held`` every early row waiting for its day (with
``source``, ``dt`` and ``waits_for``); ``raw_<source>`` the raw layer; ``ingest_ledger`` one row per
delivery (a version of a landing file), with what clean made of its rows. Tables of later layers
partitioned by ``as_of`` resolve to their latest partition, with ``<table>_history`` for all of
them; feature sets are ``<set>_features`` (``user_features``) so that they do not shadow SQL
words.

Only SELECT-like statements run, on a connection that cannot reach files outside the warehouse,
attach databases, copy data out, or install or load extensions.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import polars as pl

from warehouse.store import Warehouse

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


class QueryRefused(Exception):
    """A statement that would write, or reach outside the warehouse."""


def _sql_str(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _files(folder: Path, tail: str) -> str:
    """The SQL naming the files ``tail`` matches under ``folder``: a glob DuckDB expands when it
    reads (so a view follows new partitions), or, when the folder's own path holds glob
    characters (``[``, ``*``, ``?``) that DuckDB would read as a pattern, the files there now."""
    if not any(c in str(folder) for c in "[]*?"):
        return _sql_str(f"{folder}/{tail}")
    return "[" + ", ".join(_sql_str(f) for f in sorted(folder.glob(tail))) + "]"


def view_definitions(wh: Warehouse, *, follow_latest: bool = False) -> dict[str, str]:
    """View name → SELECT over the Parquet files of that table (only tables with files).

    A table's plain view reads its latest partition: the one there now, or with
    ``follow_latest`` whichever is latest when the view is read (for a database file that
    outlives tonight's partitions)."""
    views: dict[str, str] = {}

    def parquet(folder: Path, tail: str) -> str:
        files = _files(folder, tail)
        return f"read_parquet({files}, hive_partitioning=true, union_by_name=true)"

    for layer, table in wh.tables():
        if layer in ("quarantine", "held"):
            continue
        parts = [p.parent for p in wh.partition_dirs(layer, table)]
        if not parts or not any(p.glob("*.parquet") for p in parts):
            continue
        every = parquet(wh.table_dir(layer, table), "*/*.parquet")
        if layer == "raw":
            views[f"raw_{table}"] = every
            continue
        key = parts[-1].name.split("=", 1)[0]
        if layer == "clean" and table != "items":
            views[table] = every
            continue
        latest = parts[-1].name.split("=", 1)[1]
        name = f"{table}_features" if layer == "features" else table
        views[f"{name}_history"] = every
        newest = f"(select max({key}) from {every})" if follow_latest else _sql_str(latest)
        views[name] = f"(select * from {every} where {key} = {newest})"
    quarantine = wh.root / "quarantine"
    if any(quarantine.glob("*/*/*/*.parquet")):
        views["quarantine"] = parquet(quarantine, "*/*/*/*.parquet")
    held = wh.root / "held"
    if any(held.glob("*/*/*.parquet")):
        views["held"] = parquet(held, "*/*/*.parquet")
    else:  # nothing waiting: an empty table, not an error
        views["held"] = "(select null::varchar source, null::date dt, null::date waits_for limit 0)"
    if any((wh.root / "_ledger").glob("*/*.json")):
        ledger = _files(wh.root / "_ledger", "*/*.json")
        entries = f"read_json_auto({ledger}, union_by_name=true)"
        accounting = list(wh.accounting_dir().glob("*/deliveries.parquet"))
        if accounting:  # what clean made of each delivery's rows, beside what ingest did
            counts = parquet(wh.accounting_dir(), "*/deliveries.parquet")
            views["ingest_ledger"] = (
                f"(select l.*, a.* exclude (source, sha256, name, rows_accepted) "
                f"from {entries} l left join {counts} a using (source, sha256))"
            )
        else:
            views["ingest_ledger"] = entries
    return views


def _create_views(con: duckdb.DuckDBPyConnection, views: dict[str, str]) -> None:
    for name, select in views.items():
        source = select if select.startswith("(") else f"select * from {select}"
        con.execute(f'create view "{name}" as {source}')


@contextlib.contextmanager
def connection(wh: Warehouse) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB with the warehouse views, locked down to reading the warehouse."""
    # DuckDB may read its spill folder whatever allowed_directories says, and by default that is
    # ./.tmp of wherever the command runs: a private, empty one instead.
    with tempfile.TemporaryDirectory(prefix="nightowl-query-") as spill:
        con = duckdb.connect(":memory:", config={"threads": 2, "temp_directory": spill})
        try:
            _create_views(con, view_definitions(wh))
            root = str(wh.root).rstrip("/") + "/"
            con.execute(f"SET allowed_directories=[{_sql_str(root)}]")
            con.execute("SET enable_external_access=false")
            con.execute("SET autoinstall_known_extensions=false")
            con.execute("SET autoload_known_extensions=false")
            con.execute("SET lock_configuration=true")
            yield con
        finally:
            con.close()


def checked_statement(sql: str) -> str:
    """``sql`` if it is exactly one read-only statement; otherwise QueryRefused says why."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"not valid SQL: {exc}") from exc
    if len(statements) != 1:
        raise QueryRefused(f"expected exactly one statement, got {len(statements)}")
    kind = statements[0].type
    if kind not in ALLOWED:
        name = kind.name if hasattr(kind, "name") else str(kind)
        raise QueryRefused(
            f"{name} statements are refused: nightowl query is read-only "
            "(SELECT, WITH … SELECT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)"
        )
    return sql


#: Times a query is tried again when a partition it was reading was replaced under it.
REPUBLISHED_RETRIES = 5


def run_query(wh: Warehouse, sql: str) -> pl.DataFrame:
    """The result of one read-only statement over the warehouse views.

    A partition published while the query runs can take the files it listed away (the old
    version is deleted after the swap): then it runs again, on the new version."""
    checked_statement(sql)
    for attempt in range(REPUBLISHED_RETRIES + 1):
        try:
            with connection(wh) as con:  # binding the views lists and opens the files too
                return con.sql(sql).pl()
        except duckdb.PermissionException as exc:
            raise QueryRefused(
                f"refused: only files inside the warehouse can be read ({exc})"
            ) from exc
        except duckdb.IOException as exc:
            if attempt == REPUBLISHED_RETRIES or not _vanished(exc):
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def _vanished(exc: duckdb.Error) -> bool:
    text = str(exc)
    return any(sign in text for sign in ("Cannot open file", "No such file", "No files found"))


def write_catalog(wh: Warehouse, target: Path) -> list[str]:
    """A DuckDB database file at ``target`` holding the warehouse's views (no data: they read
    the Parquet files where they are), for BI tools and notebooks; returns the view names.

    The views follow new partitions as they are published; run it again for new tables.
    """
    views = view_definitions(wh, follow_latest=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp")
    staging.unlink(missing_ok=True)
    con = duckdb.connect(str(staging))
    try:
        _create_views(con, views)
    finally:
        con.close()
    staging.replace(target)  # a BI tool that has it open keeps the old file until it reopens
    return sorted(views)
