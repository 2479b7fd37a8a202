"""Report benchmark: nightowl's daily KPIs and customer values beside the same KPIs in DuckDB SQL.

The input is the synthetic clean events table of ``bench.features`` (one Parquet file per ``dt``,
120 days ending 2026-11-27, the clean layer's columns and types), generated once per size by its
``generate`` and cached in ``bench/out/data``; its ``items.parquet`` is the items snapshot.

- **nightowl** (its own process): what the nightly report step computes from the events, as
  ``tasks.report.report_frames`` calls it: ``kpis.kpi_daily`` for the 56 days before 2026-11-28
  (each user's first purchase day from ``kpis.first_purchase_days``, no feedback), then
  ``kpis.customer_value`` over 365 days with the items, on lazy Parquet scans. The two are timed
  apart; the peak RSS (``VmHWM``) is read after each.
- **DuckDB** (the reference, its own process, 2 threads): the base columns of the same
  ``kpi_daily`` in one SQL query over ``read_parquet`` of the same files, written from the
  semantics in ``tasks/report/kpis.py`` (not from its code). It computes neither the ``_dod`` /
  ``_wow`` change columns, nor the feedback columns (no feedback here: 0 and nulls), nor
  ``customer_value``.

Every run checks that the two agree on the base columns (counts exactly, amounts and rates within
1e-6 relative, nulls in the same places) and exits with status 1 if they do not. Timings never go
in tests: this prints one table and writes ``bench/out/report-results.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import features
from bench.common import (
    OUT,
    code_version,
    disturbed,
    log,
    peak_rss_mib,
    run_worker,
    text_table,
    write_results,
)

RESULTS = OUT / "report-results.json"
THREADS = 2
AS_OF = features.AS_OF  # 2026-11-28: the report of run date 2026-11-27
KPI_DAYS = 56  # ReportSettings.kpi_days
VALUE_DAYS = 365  # ReportSettings.value_days
#: kpi_daily reads 7 days more than it shows (the first shown day's week-over-week change).
SPAN = KPI_DAYS + 7
#: Base columns the reference computes: counts compared exactly, the others within TOLERANCE.
COUNTS = ("active_users", "buyers", "orders", "returns", "new_buyers", "returning_buyers")
AMOUNTS = ("revenue", "return_value", "average_order_value", "conversion")
TOLERANCE = 1e-6


# ---- the two sides -------------------------------------------------------------------------------


def run_nightowl(root: Path, work: Path) -> dict[str, Any]:
    from nightowl.tasks.report import kpis

    events, items, _ = features.nightowl_inputs(root)
    t0 = time.perf_counter()
    daily = kpis.kpi_daily(events, kpis.first_purchase_days(events, AS_OF), None, AS_OF, KPI_DAYS)
    t1 = time.perf_counter()
    kpi_rss = peak_rss_mib()
    value = kpis.customer_value(events, items, AS_OF, VALUE_DAYS).collect()
    t2 = time.perf_counter()
    daily.write_parquet(work / "kpi_daily.parquet")  # for the check, after the clock stops
    return {
        "seconds": t2 - t0,
        "kpi_seconds": t1 - t0,
        "value_seconds": t2 - t1,
        "kpi_peak_rss_mib": kpi_rss,
        "days_out": daily.height,
        "columns": daily.width,
        "customers_out": value.height,
    }


def duckdb_sql(root: Path) -> str:
    """The base columns of kpi_daily for the KPI_DAYS days before AS_OF, one row per day."""
    files = ", ".join(f"'{p}'" for p in features.event_files(root))
    start = AS_OF - timedelta(days=SPAN)
    first_shown = AS_OF - timedelta(days=KPI_DAYS)
    cut = f"TIMESTAMPTZ '{AS_OF.isoformat()} 00:00:00+00'"
    return f"""
        WITH events AS (
            SELECT event_id, user_id, session_id, event_time, event_type, order_id, quantity,
                   price, CAST(event_time AS DATE) AS day
            FROM read_parquet([{files}])
        ),
        window_events AS (
            SELECT * FROM events
            WHERE event_time >= TIMESTAMPTZ '{start.isoformat()} 00:00:00+00'
              AND event_time < {cut}
        ),
        active AS (
            SELECT day, count(DISTINCT user_id) AS active_users FROM window_events GROUP BY day
        ),
        lines AS (
            SELECT day, event_type, user_id,
                   coalesce(order_id, session_id, user_id || '|' || CAST(day AS VARCHAR),
                            event_id) AS order_key,
                   coalesce(quantity, 1) * price AS amount
            FROM window_events WHERE event_type IN ('purchase', 'return')
        ),
        sales AS (
            SELECT day, count(DISTINCT user_id) AS buyers, count(DISTINCT order_key) AS orders,
                   round(coalesce(sum(amount), 0), 2) AS revenue
            FROM lines WHERE event_type = 'purchase' GROUP BY day
        ),
        returned AS (
            SELECT day, count(*) AS returns, round(coalesce(sum(abs(amount)), 0), 2) AS return_value
            FROM lines WHERE event_type = 'return' GROUP BY day
        ),
        -- A user is a new buyer on the day of their first purchase ever (before AS_OF); that day
        -- they are one of the buyers, so counting first days is counting new buyers.
        first_days AS (
            SELECT CAST(min(event_time) AS DATE) AS day FROM events
            WHERE event_type = 'purchase' AND user_id IS NOT NULL AND event_time < {cut}
            GROUP BY user_id
        ),
        newcomers AS (SELECT day, count(*) AS new_buyers FROM first_days GROUP BY day),
        calendar AS (
            SELECT CAST(d AS DATE) AS day
            FROM generate_series(DATE '{first_shown.isoformat()}',
                                 DATE '{(AS_OF - timedelta(days=1)).isoformat()}',
                                 INTERVAL 1 DAY) AS t(d)
        ),
        daily AS (
            SELECT c.day,
                   coalesce(a.active_users, 0) AS active_users,
                   coalesce(s.buyers, 0) AS buyers,
                   coalesce(s.orders, 0) AS orders,
                   coalesce(s.revenue, 0.0) AS revenue,
                   coalesce(r.returns, 0) AS returns,
                   coalesce(r.return_value, 0.0) AS return_value,
                   coalesce(n.new_buyers, 0) AS new_buyers
            FROM calendar c
            LEFT JOIN active a ON a.day = c.day
            LEFT JOIN sales s ON s.day = c.day
            LEFT JOIN returned r ON r.day = c.day
            LEFT JOIN newcomers n ON n.day = c.day
        )
        SELECT day, active_users, buyers, orders, revenue, returns, return_value, new_buyers,
               buyers - new_buyers AS returning_buyers,
               CASE WHEN active_users > 0 THEN round(buyers / active_users, 6) END AS conversion,
               CASE WHEN orders > 0 THEN round(revenue / orders, 2) END AS average_order_value
        FROM daily ORDER BY day"""


def run_duckdb(root: Path, work: Path) -> dict[str, Any]:
    import duckdb
    import polars as pl

    con = duckdb.connect()
    con.execute(f"SET threads = {THREADS}")
    con.execute("SET TimeZone = 'UTC'")  # days are UTC days
    con.execute(f"SET temp_directory = '{work / 'spill'}'")
    sql = duckdb_sql(root)
    t0 = time.perf_counter()
    table = con.sql(sql).to_arrow_table()
    seconds = time.perf_counter() - t0
    daily = pl.from_arrow(table)
    daily.write_parquet(work / "kpi_daily.parquet")
    return {
        "seconds": seconds,
        "kpi_seconds": seconds,
        "days_out": daily.height,
        "columns": daily.width,
    }


def worker(engine: str, root: Path, work: Path, result: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    found = run_nightowl(root, work) if engine == "nightowl" else run_duckdb(root, work)
    found["peak_rss_mib"] = peak_rss_mib()
    result.write_text(json.dumps(found))


# ---- the check: the same base columns, day by day ------------------------------------------------


def compare(ours: Any, theirs: Any) -> str | None:
    """None when the base columns agree, else the first mismatch in words."""
    if ours["day"].to_list() != theirs["day"].to_list():
        return (
            f"days differ: nightowl {ours.height} ({ours['day'].min()}..{ours['day'].max()}), "
            f"duckdb {theirs.height} ({theirs['day'].min()}..{theirs['day'].max()})"
        )
    for i, day in enumerate(ours["day"].to_list()):
        for col in (*COUNTS, *AMOUNTS):
            a, b = ours[col][i], theirs[col][i]
            if a is None or b is None:
                same = a is None and b is None
            elif col in COUNTS:
                same = int(a) == int(b)
            else:
                same = abs(a - b) <= TOLERANCE * max(abs(a), abs(b))
            if not same:
                return f"{day} {col}: nightowl {a!r}, duckdb {b!r}"
    return None


# ---- the parent ----------------------------------------------------------------------------------


def table(results: list[dict]) -> str:
    head = ["engine", "work", "events", "seconds", "events/s", "peak RSS MiB", "ratio"]
    lines = []
    for r in results:
        ratio = r.get("ratio")
        lines.append(
            [
                r["engine"],
                r["work"],
                f"{r['events']:,}",
                f"{r['seconds']:.2f}",
                f"{r['rows_per_s']:,.0f}",
                f"{r['peak_rss_mib']:,.0f}",
                "" if ratio is None else f"{ratio:.2f}x",
            ]
        )
    return text_table(head, lines, right={2, 3, 4, 5, 6})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description=(
            "The report tables' event work as of 2026-11-28 over the synthetic clean events "
            "table of bench.features (120 days): nightowl's kpi_daily (56 days) and "
            "customer_value (365 days) beside the base columns of kpi_daily in DuckDB SQL, each "
            "in its own process with 2 threads. Checks that the two agree, then prints one "
            "table (seconds, events/s, peak RSS, speed ratio) and writes "
            "bench/out/report-results.json.\n\n"
            "examples:\n"
            "  python -m bench.report                                 # 20M events, 200k users\n"
            "  python -m bench.report --events 1000000 --users 20000  # quick smoke run"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=20_000_000, help="events (default 20M)")
    parser.add_argument("--users", type=int, default=200_000, help="users (default 200k)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=("nightowl", "duckdb"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = features.data_dir(args.events, args.users)
    if args.worker:
        worker(args.engine, root, args.work, args.result)
        return 0

    OUT.mkdir(parents=True, exist_ok=True)
    features.generate(args.events, args.users)
    runs = {}
    for engine in ("nightowl", "duckdb"):
        work = OUT / f"run-report-{engine}"
        result = OUT / f".result-report-{engine}.json"
        features.warm(root)  # both start from a warm page cache
        sized = ["--events", str(args.events), "--users", str(args.users)]
        runs[engine] = run_worker(
            "bench.report",
            ["--engine", engine, *sized, "--work", str(work), "--result", str(result)],
            engine,
            result,
        )
        runs[engine]["work_dir"] = work
    import polars as pl

    ours = pl.read_parquet(runs["nightowl"]["work_dir"] / "kpi_daily.parquet")
    theirs = pl.read_parquet(runs["duckdb"]["work_dir"] / "kpi_daily.parquet")
    mismatch = compare(ours, theirs)
    for r in runs.values():
        shutil.rmtree(r.pop("work_dir"), ignore_errors=True)
    n = args.events
    night, duck = runs["nightowl"], runs["duckdb"]
    duck_rate = n / duck["seconds"]
    results = [
        {
            "engine": "nightowl",
            "work": "kpi_daily",
            "events": n,
            "seconds": night["kpi_seconds"],
            "rows_per_s": n / night["kpi_seconds"],
            "peak_rss_mib": night["kpi_peak_rss_mib"],
            "ratio": (n / night["kpi_seconds"]) / duck_rate,
            "other_load": night["other_load"],
        },
        {
            "engine": "nightowl",
            "work": "kpi_daily + customer_value",
            "events": n,
            "seconds": night["seconds"],
            "rows_per_s": n / night["seconds"],
            "peak_rss_mib": night["peak_rss_mib"],
            "ratio": None,
        },
        {
            "engine": "duckdb",
            "work": "kpi_daily base columns",
            "events": n,
            "seconds": duck["seconds"],
            "rows_per_s": duck_rate,
            "peak_rss_mib": duck["peak_rss_mib"],
            "ratio": None,
            "other_load": duck["other_load"],
        },
    ]
    print(table(results))
    print(
        "ratio: nightowl events/s / DuckDB events/s on kpi_daily (more than 1: nightowl is "
        "faster); the reference computes kpi_daily's base columns only (no _dod/_wow changes, no "
        "feedback columns) and no customer_value, so the second nightowl row has no ratio"
    )
    print(
        f"nightowl split: kpi_daily {night['kpi_seconds']:.2f}s ({night['days_out']} days x "
        f"{night['columns']} columns), customer_value {night['value_seconds']:.2f}s "
        f"({night['customers_out']:,} customers); peak RSS after kpi_daily "
        f"{night['kpi_peak_rss_mib']:,.0f} MiB, after both {night['peak_rss_mib']:,.0f} MiB"
    )
    compared = f"{ours.height} days x {len(COUNTS) + len(AMOUNTS)} base columns"
    if mismatch is None:
        check = (
            f"agree: duckdb == nightowl on {compared} (counts exactly, amounts and rates "
            f"within {TOLERANCE:g} relative)"
        )
    else:
        check = f"MISMATCH: duckdb != nightowl on {compared}: first {mismatch}"
    print(check)
    warnings = disturbed([{**night, "engine": "nightowl"}, {**duck, "engine": "duckdb"}])
    for line in warnings:
        print(line)
    meta = json.loads((root / "input.json").read_text())
    write_results(
        RESULTS, "report", THREADS, as_of=AS_OF.isoformat(), kpi_days=KPI_DAYS,
        value_days=VALUE_DAYS, code=code_version("tasks/report/kpis.py"),
        input=meta, results=results,
        runs=runs, check=check, agree=mismatch is None, warnings=warnings,
    )  # fmt: skip
    if mismatch is not None:
        log(check)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
