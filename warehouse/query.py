"""Read-only SQL over the warehouse: DuckDB views named after the tables, locked to the warehouse.

``events``, ``feedback``, ``market_prices`` and ``market_indicators`` read every clean partition;
``items`` reads the latest snapshot (``items_history`` all of them); ``quarantine`` every rejected
row (with ``source``, ``stage`` and ``dt``); ``held`` every early row waiting for its day (with
``source``, ``dt`` and ``waits_for``); ``raw_<source>`` the raw layer; ``ingest_ledger`` one row per
delivery (a version of a landing file), with what clean made of its rows. Tables of later layers
partitioned by ``as_of`` resolve to their latest partition, with ``<table>_history`` for all of
them; feature sets are ``<set>_features`` (``user_features``) so that they do not shadow SQL
words.

Only reads run (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, and EXPLAIN [ANALYZE] of one of
those), on a connection that cannot reach files outside the warehouse, attach databases, or
install or load extensions, and that DuckDB itself is made to parse as a query.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import polars as pl

from nightowl.errors import NightowlError
from nightowl.warehouse.store import Warehouse
from nightowl.warehouse.tables import (
    CATEGORY_FORECAST,
    CLEAN,
    CLEAN_ITEMS,
    DEMAND_FORECAST,
    FEEDBACK_SCORES,
    PRICE_POSITION,
    PRICE_SCENARIOS,
    PRODUCT_SENTIMENT,
    RECOMMENDATIONS,
    REPORT_TABLES,
    SUPPORT_QUEUE,
    TABLES,
    USER_FEATURES,
    USER_SCORES,
)

READS = {duckdb.StatementType.SELECT}  # DESCRIBE, SHOW and SUMMARIZE parse as SELECT too
_REFUSAL = "nightowl query is read-only (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN of those)"


class QueryRefused(NightowlError):
    """A statement that would write, or reach outside the warehouse."""


class QueryTimedOut(NightowlError):
    """A query stopped because it ran longer than its time limit."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"query stopped after {seconds:g} s")
        self.seconds = seconds


#: Tables nightowl writes → why one is not there yet: which step makes it and what it waits for.
#: Said instead of DuckDB's "does not exist" when a young warehouse has no partition of it yet
#: (a table declared in tables.py without a line here gets a plainer one: see ``explain_missing``).
NOT_YET: dict[str, str] = {
    **{
        t.name: f"the clean step writes it from landing/{source}/ files; there are none yet "
        "(see `nightowl tables`)"
        for source, t in CLEAN.items()
    },
    f"{CLEAN_ITEMS.name}_history": "the clean step writes it from landing/items/ files; there "
    "are none yet (see `nightowl tables`)",
    "quarantine": "nothing has been rejected yet (ingest and clean write the rejected rows)",
    "ingest_ledger": "the ingest step records each delivery it reads; none has run yet "
    "(see `nightowl tables`)",
    f"{USER_FEATURES.name}_features": "the features step writes it once clean events exist (see "
    "`nightowl tables`)",
    USER_SCORES.name: "the score step writes it once a propensity model is trained (training "
    "needs weeks of events with the defaults; see `nightowl models`)",
    PRICE_POSITION.name: "the price-position step writes it once clean market_prices exist "
    "(see `nightowl tables`)",
    DEMAND_FORECAST.name: "the forecast step writes it once a demand model is trained (training "
    "needs weeks of purchases with the defaults; see `nightowl models`)",
    CATEGORY_FORECAST.name: "the forecast step writes it once a demand model is trained (see "
    "`nightowl models`)",
    PRICE_SCENARIOS.name: "the forecast step writes it once a demand model is trained (see "
    "`nightowl models`)",
    FEEDBACK_SCORES.name: "the feedback step writes it once clean feedback exists (see "
    "`nightowl tables` and `nightowl models`)",
    PRODUCT_SENTIMENT.name: "the product-sentiment step writes it from feedback_scores, which "
    "has none yet (see `nightowl tables`)",
    SUPPORT_QUEUE.name: "the support-queue step writes it from feedback_scores, which has none "
    "yet (see `nightowl tables`)",
    RECOMMENDATIONS.name: "the recommend step writes it once clean events exist (see "
    "`nightowl models`)",
    **{
        t.name: "the report step writes it after the nightly model steps; no night has reached "
        "it yet (see `nightowl tables`)"
        for t in REPORT_TABLES
    },
}
_MISSING_TABLE = re.compile(r"Table with name (\w+) does not exist")


def explain_missing(exc: duckdb.Error) -> str | None:
    """One line on why a known nightowl table is not there yet, for DuckDB's "does not exist"."""
    found = _MISSING_TABLE.search(str(exc))
    if not isinstance(exc, duckdb.CatalogException) or found is None:
        return None
    name = found.group(1).lower()
    base = name.removesuffix("_history") if name != "items_history" else name
    why = NOT_YET.get(name) or NOT_YET.get(base)
    if why is None and base.endswith("_features"):  # any feature set, not only user
        why = "the features step writes it once clean events exist (see `nightowl tables`)"
    declared = next((t for t in TABLES.values() if view_name(t.layer, t.name) == base), None)
    if why is None and declared is not None:  # a table declared in tables.py, with no line above
        why = f"nightowl writes it to {declared.path}; nothing has yet (see `nightowl tables`)"
    return None if why is None else f"{name} has no partition yet: {why}"


def view_name(layer: str, table: str) -> str | None:
    """The view ``nightowl query`` reads a table through (None: a quarantine or held table, read
    with those of every source through the ``quarantine`` and ``held`` views). Feature sets are
    ``<set>_features``, so that they do not shadow SQL words."""
    if layer in ("quarantine", "held"):
        return None
    if layer == "raw":
        return f"raw_{table}"
    return f"{table}_features" if layer == "features" else table


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
        name = view_name(layer, table) or table
        if layer == "raw" or (layer == "clean" and table != CLEAN_ITEMS.name):
            views[name] = every  # every partition: the rows of every night or day
            continue
        key = parts[-1].name.split("=", 1)[0]
        latest = parts[-1].name.split("=", 1)[1]
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


def _one_statement(sql: str) -> duckdb.Statement:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"not valid SQL: {str(exc).splitlines()[0]}") from exc
    if len(statements) != 1:
        raise QueryRefused(f"expected exactly one statement, got {len(statements)}")
    return statements[0]


def _refuse(kind: duckdb.StatementType, explained: bool = False) -> QueryRefused:
    name = kind.name if hasattr(kind, "name") else str(kind)
    what = f"EXPLAIN of {name}" if explained else name
    return QueryRefused(f"{what} statements are refused: {_REFUSAL}")


def _explained(query: str) -> tuple[str, duckdb.Statement]:
    """The ``EXPLAIN [ANALYZE] [(options)]`` words of ``query`` and the statement they explain.

    The words are found with DuckDB's own tokeniser, so comments and parentheses cannot hide
    the statement; where the split is ambiguous (``EXPLAIN (…)``: options or a parenthesised
    query) the first reading DuckDB parses as one statement is taken, and none refuses."""
    marks = duckdb.tokenize(query)
    bounds = [offset for offset, _ in marks[1:]] + [len(query)]
    words = [
        (offset, kind, query[offset:end].strip().lower())
        for (offset, kind), end in zip(marks, bounds, strict=True)
        if kind != duckdb.token_type.comment
    ]
    at = 1  # words[0] is EXPLAIN
    if at < len(words) and words[at][2] in ("analyze", "analyse"):
        at += 1
    starts = [at]
    if at < len(words) and words[at][2].startswith("("):
        depth = 0
        for i in range(at, len(words)):
            if words[i][1] == duckdb.token_type.operator:
                depth += words[i][2].count("(") - words[i][2].count(")")
            if depth <= 0:
                starts.append(i + 1)
                break
    for start in starts:
        if start >= len(words):
            continue
        offset = words[start][0]
        try:
            inner = duckdb.extract_statements(query[offset:])
        except duckdb.Error:
            continue
        if len(inner) == 1:
            return query[:offset], inner[0]
    raise QueryRefused(f"EXPLAIN of something that is not a query is refused: {_REFUSAL}")


def _as_subquery(read: str) -> str:
    # What runs is the read as a subquery: DuckDB itself then parses it as a query, whatever our
    # own check made of it, and a subquery can only read (COPY, INSERT, ATTACH, SET, … are
    # syntax errors there). The newline keeps a trailing -- comment off the parenthesis.
    body = read.rstrip()
    body = body[:-1] if body.endswith(";") else body
    return f"from (\n{body}\n)"


def checked_statement(sql: str) -> str:
    """The statement to run for ``sql`` if it is exactly one read; otherwise QueryRefused.

    Reads are what DuckDB's parser calls SELECT (DESCRIBE, SHOW and SUMMARIZE included), and
    EXPLAIN or EXPLAIN ANALYZE of one: EXPLAIN ANALYZE runs what it explains, so explaining a
    COPY would write."""
    statement = _one_statement(sql)
    if statement.type == duckdb.StatementType.EXPLAIN:
        words, inner = _explained(statement.query)
        if inner.type not in READS:
            raise _refuse(inner.type, explained=True)
        return words + _as_subquery(inner.query)
    if statement.type not in READS:
        raise _refuse(statement.type)
    return _as_subquery(statement.query)


#: Times a query is tried again when a partition it was reading was replaced under it.
REPUBLISHED_RETRIES = 5


def run_query(wh: Warehouse, sql: str, timeout: float | None = None) -> pl.DataFrame:
    """The result of one read-only statement over the warehouse views.

    ``timeout`` seconds (None or 0: none) stop it with QueryTimedOut; Ctrl-C stops it at once
    (KeyboardInterrupt). A partition published while the query runs can take the files it
    listed away (the old version is deleted after the swap): then it runs again, on the new
    version."""
    statement = checked_statement(sql)
    deadline = time.monotonic() + timeout if timeout else None
    for attempt in range(REPUBLISHED_RETRIES + 1):
        try:
            with connection(wh) as con:  # binding the views lists and opens the files too
                return interruptible(con, statement, deadline, timeout or 0)
        except duckdb.PermissionException as exc:
            raise QueryRefused(
                f"refused: only files inside the warehouse can be read ({exc})"
            ) from exc
        except duckdb.IOException as exc:
            if attempt == REPUBLISHED_RETRIES or not _vanished(exc):
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def interruptible(
    con: duckdb.DuckDBPyConnection, sql: str, deadline: float | None, timeout: float = 0
) -> pl.DataFrame:
    """``sql``'s result, run on a worker thread so that the deadline and Ctrl-C can stop it.

    While DuckDB runs a query the thread that asked waits inside it and Python cannot deliver
    SIGINT there; the main thread waits here instead, and on the deadline or KeyboardInterrupt
    calls ``con.interrupt()``, which DuckDB checks between chunks of work."""
    outcome: dict[str, object] = {}
    # An Event, not Thread.join: a KeyboardInterrupt inside join can leave the thread looking
    # stopped while DuckDB still runs it (Python 3.11).
    done = threading.Event()

    def work() -> None:
        try:
            outcome["frame"] = con.sql(sql).pl()
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc
        finally:
            done.set()

    def stop() -> None:
        # Again until it ends: an interrupt before DuckDB has started the query is lost.
        while not done.is_set():
            con.interrupt()
            done.wait(0.05)

    worker = threading.Thread(target=work, name="nightowl-query", daemon=True)
    try:
        worker.start()
        while not done.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                stop()
                raise QueryTimedOut(timeout)
            done.wait(0.1 if left is None else min(left, 0.1))
    except KeyboardInterrupt:
        stop()
        raise
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["frame"]  # type: ignore[return-value]


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
