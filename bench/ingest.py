"""Ingest benchmark: nightowl's ingest + clean of an events file beside DuckDB's typed read → write.

Each (input format, engine) pair runs in its own subprocess, so the peak RSS reported is that run's
alone (``VmHWM`` read by the child itself: ``ru_maxrss`` would include the parent's peak, which a
child started by ``subprocess`` inherits). The seconds are measured inside the
child around the work itself (interpreter start and imports excluded, for both engines alike), on
a warm page cache (the parent reads the input once before each run).

Input rows are generated once per (rows, days) and cached in ``bench/out/data``. Timings never go
in tests: this prints one table and writes ``bench/out/ingest-results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench.common import (
    DATA,
    OUT,
    log,
    measured_cells,
    peak_rss_mib,
    text_table,
    verdict_cells,
    write_results,
)

RESULTS = OUT / "ingest-results.json"
SEED = 20261127
RUN_DATE = date(2026, 11, 27)  # the last day of generated data; the run is for that day
THREADS = 2
FORMATS = ("csv", "parquet")
#: duckdb is the issue's reference (one typed read → de-duplicated write); duckdb-layers writes
#: the same two layers nightowl does (raw, then clean from raw), like for like, with no target.
ENGINES = ("nightowl", "duckdb", "duckdb-layers")
#: Speed ratio (DuckDB seconds / nightowl seconds) that nightowl must reach per input format.
TARGETS = {"parquet": 1.0, "csv": 0.7}

N_USERS = 200_000
N_ITEMS = 20_000
SESSIONS_PER_USER = 16
DIRTY_SHARE = 0.001  # half unparseable timestamps, half negative prices
DUPLICATE_SHARE = 0.005  # re-sent events: exact copies of an earlier row, shortly after it

EVENT_TYPES = ["view", "add_to_cart", "remove_from_cart", "purchase", "return"]
EVENT_TYPE_P = [0.70, 0.15, 0.04, 0.08, 0.03]
CHANNELS = ["web", "app", "email", "ads"]
CHANNEL_P = [0.5, 0.3, 0.1, 0.1]
DEVICES = ["desktop", "mobile", "tablet"]
DEVICE_P = [0.45, 0.45, 0.10]
BAD_TIMESTAMPS = ["2026-11-31T25:61:00+00:00", "yesterday", "27/11/2026 14:03", "n/a"]


# ---- input generation ----------------------------------------------------------------------------


def input_paths(rows: int, days: int) -> dict[str, Path]:
    stem = f"events-{rows}-{days}d"
    return {"csv": DATA / f"{stem}.csv", "parquet": DATA / f"{stem}.parquet"}


def generate(rows: int, days: int) -> dict[str, Path]:
    """The cached input files (CSV and Parquet, same events) for ``rows`` and ``days``."""
    paths = input_paths(rows, days)
    done = DATA / f"events-{rows}-{days}d.json"
    if done.exists() and all(p.exists() for p in paths.values()):
        return paths
    import numpy as np
    import polars as pl

    t0 = time.perf_counter()
    DATA.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    n_dup = int(rows * DUPLICATE_SHARE)
    n = rows - n_dup
    start = datetime(RUN_DATE.year, RUN_DATE.month, RUN_DATE.day, tzinfo=UTC) - timedelta(
        days=days - 1
    )
    etype = rng.choice(len(EVENT_TYPES), n, p=EVENT_TYPE_P).astype(np.uint8)
    basket = etype != 0
    ordered = etype >= 3
    user = rng.integers(0, N_USERS, n)
    # Popular items get most of the traffic (Pareto), every item can appear.
    item = np.minimum((rng.pareto(1.16, n) * 300).astype(np.int64), N_ITEMS - 1)
    item_price = np.round(rng.lognormal(3.0, 1.0, N_ITEMS), 2)
    base = pl.DataFrame(
        {
            "_t": np.sort(rng.integers(0, days * 86_400, n)),
            "event_id": rng.integers(0, 2**62, n),
            "user_id": user,
            "session_id": user * SESSIONS_PER_USER + rng.integers(0, SESSIONS_PER_USER, n),
            "event_type": etype,
            "item_id": item,
            "order_id": np.where(ordered, rng.integers(0, rows // 20 + 1, n), -1),
            "quantity": np.where(basket, rng.integers(1, 4, n), -1),
            "price": item_price[item],
            "channel": rng.choice(len(CHANNELS), n, p=CHANNEL_P).astype(np.uint8),
            "device": rng.choice(len(DEVICES), n, p=DEVICE_P).astype(np.uint8),
        }
    )
    dups = base[np.sort(rng.choice(n, n_dup, replace=False))]
    # Stable sort: each re-sent copy lands right after the rows of its second (first is kept).
    frame = pl.concat([base, dups]).sort("_t", maintain_order=True)
    dirty = rng.choice(rows, int(rows * DIRTY_SHARE), replace=False)
    bad_time, bad_price = np.zeros(rows, bool), np.zeros(rows, bool)
    bad_time[dirty[: len(dirty) // 2]] = True
    bad_price[dirty[len(dirty) // 2 :]] = True
    bad_text = np.array(BAD_TIMESTAMPS)[rng.integers(0, len(BAD_TIMESTAMPS), rows)]

    def names(col: str, values: list[str]) -> pl.Expr:
        return pl.col(col).replace_strict(list(range(len(values))), values, return_dtype=pl.String)

    event_time = pl.from_epoch(pl.col("_t") + int(start.timestamp()), "s").dt.replace_time_zone(
        "UTC"
    )
    typed = frame.select(
        ("ev_" + pl.col("event_id").cast(pl.String)).alias("event_id"),
        ("u" + pl.col("user_id").cast(pl.String)).alias("user_id"),
        ("s" + pl.col("session_id").cast(pl.String)).alias("session_id"),
        pl.when(pl.Series(bad_time).not_())
        .then(event_time.dt.cast_time_unit("us"))
        .alias("event_time"),
        names("event_type", EVENT_TYPES).alias("event_type"),
        ("i" + pl.col("item_id").cast(pl.String)).alias("item_id"),
        pl.when(pl.col("order_id") >= 0)
        .then("o" + pl.col("order_id").cast(pl.String))
        .alias("order_id"),
        pl.when(pl.col("quantity") > 0).then(pl.col("quantity")).alias("quantity"),
        pl.when(pl.Series(bad_price)).then(-pl.col("price")).otherwise("price").alias("price"),
        names("channel", CHANNELS).alias("channel"),
        names("device", DEVICES).alias("device"),
    )
    # Parquet as a typed exporter writes it: timestamp[us, UTC], int64, double, strings; an
    # unreadable timestamp arrives as a null (the row breaks the contract: event_time required).
    typed.write_parquet(paths["parquet"], compression="snappy", statistics=True)
    # CSV as text: ISO 8601 with an offset, the unreadable timestamps spelled out.
    as_text = typed.with_columns(
        pl.when(pl.Series(bad_time))
        .then(pl.Series(bad_text))
        .otherwise(pl.col("event_time").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
        .alias("event_time")
    )
    as_text.write_csv(paths["csv"])
    meta = {
        "rows": rows,
        "days": days,
        "seed": SEED,
        "duplicates": n_dup,
        "bad_timestamps": int(bad_time.sum()),
        "negative_prices": int(bad_price.sum()),
        "bytes": {fmt: p.stat().st_size for fmt, p in paths.items()},
    }
    done.write_text(json.dumps(meta, indent=2))
    log(f"generated {rows:,} events over {days} days in {time.perf_counter() - t0:.1f}s")
    return paths


# ---- the two engines (each runs in a child process) ---------------------------------------------


def run_nightowl(path: Path, work: Path, raw_compression: str) -> dict:
    """nightowl: ingest_source then clean_source of the file, in a fresh data root."""
    from nightowl.schemas.sources import SourceConfig
    from nightowl.tasks.ingest.units import clean_source, ingest_source
    from nightowl.warehouse.store import Warehouse

    landing = work / "landing" / "events"
    landing.mkdir(parents=True)
    dropped = landing / path.name
    try:
        os.link(path, dropped)
    except OSError:  # another file system: a link out of the landing folder would be refused
        shutil.copyfile(path, dropped)
    wh = Warehouse(work, code_version="bench")
    cfg = SourceConfig()
    t0 = time.perf_counter()
    ingested = ingest_source(
        wh, "events", cfg, RUN_DATE, config_dir=work, raw_compression=raw_compression
    )
    t1 = time.perf_counter()
    cleaned = clean_source(wh, "events", cfg, RUN_DATE, tolerance_hours=24)
    t2 = time.perf_counter()
    return {
        "seconds": t2 - t0,
        "ingest_seconds": t1 - t0,
        "clean_seconds": t2 - t1,
        "rows_out": cleaned.rows_out,
        "rejected_ingest": ingested.rows_quarantined,
        "rejected_clean": cleaned.duplicates + cleaned.future,
        "partitions": len(cleaned.partitions),
    }


COLUMNS = {
    "event_id": "VARCHAR",
    "user_id": "VARCHAR",
    "session_id": "VARCHAR",
    "event_time": "TIMESTAMPTZ",
    "event_type": "VARCHAR",
    "item_id": "VARCHAR",
    "order_id": "VARCHAR",
    "quantity": "BIGINT",
    "price": "DOUBLE",
    "channel": "VARCHAR",
    "device": "VARCHAR",
}


def duckdb_sql(path: Path, fmt: str, out: Path) -> str:
    """Typed read → contract filter → first row per event_id → Parquet partitioned by UTC date."""
    if fmt == "csv":
        columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items()) + "}"
        source = (
            f"read_csv('{path}', header = true, columns = {columns}, "
            "nullstr = ['', 'NULL', 'null'], store_rejects = true)"
        )
        select = "*"
    else:
        source = f"read_parquet('{path}')"
        select = ", ".join(f"CAST({k} AS {v}) AS {k}" for k, v in COLUMNS.items())
    return f"""
        COPY (
            SELECT * REPLACE (coalesce(quantity, 1) AS quantity), CAST(event_time AS DATE) AS dt
            FROM (SELECT {select} FROM {source})
            WHERE user_id IS NOT NULL AND event_time IS NOT NULL AND event_type IS NOT NULL
              AND (quantity IS NULL OR quantity >= 1) AND (price IS NULL OR price >= 0)
            QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY event_time) = 1
        ) TO '{out}' (FORMAT parquet, COMPRESSION snappy, PARTITION_BY (dt))
    """


def duckdb_layers_sql(path: Path, fmt: str, work: Path) -> tuple[str, str]:
    """The same work in two layers, as nightowl does it: the typed rows that meet the contract
    written as one raw Parquet file (LZ4, with the file's row number where DuckDB gives one),
    then that file read back, de-duplicated and written partitioned by date (snappy)."""
    raw = work / "raw.parquet"
    if fmt == "csv":  # read_csv has no file row number
        columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items()) + "}"
        source = (
            f"read_csv('{path}', header = true, columns = {columns}, "
            "nullstr = ['', 'NULL', 'null'], store_rejects = true)"
        )
        select, order = "*", "event_time"
    else:
        source = f"read_parquet('{path}', file_row_number = true)"
        select = "file_row_number + 1 AS _row, " + ", ".join(
            f"CAST({k} AS {v}) AS {k}" for k, v in COLUMNS.items()
        )
        order = "_row"
    ingest = f"""
        COPY (
            SELECT {select} FROM {source}
            WHERE user_id IS NOT NULL AND event_time IS NOT NULL AND event_type IS NOT NULL
              AND (quantity IS NULL OR quantity >= 1) AND (price IS NULL OR price >= 0)
        ) TO '{raw}' (FORMAT parquet, COMPRESSION lz4_raw)
    """
    clean = f"""
        COPY (
            SELECT * REPLACE (coalesce(quantity, 1) AS quantity), CAST(event_time AS DATE) AS dt
            FROM read_parquet('{raw}')
            QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY {order}) = 1
        ) TO '{work / "events"}' (FORMAT parquet, COMPRESSION snappy, PARTITION_BY (dt))
    """
    return ingest, clean


def run_duckdb(path: Path, fmt: str, work: Path, *, layers: bool = False) -> dict:
    """DuckDB: the equivalent typed read → de-duplicated, date-partitioned Parquet write (in
    one statement, or through a raw layer with ``layers``)."""
    import duckdb

    out = work / "events"
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads = {THREADS}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = '{work / 'spill'}'")
    for statement in duckdb_layers_sql(path, fmt, work) if layers else [duckdb_sql(path, fmt, out)]:
        con.execute(statement)
    t1 = time.perf_counter()
    written = con.execute(f"SELECT count(*) FROM read_parquet('{out}/*/*.parquet')").fetchone()
    rejected = 0
    if fmt == "csv":
        rejected = con.execute("SELECT count(*) FROM reject_errors").fetchone()[0]
    return {
        "seconds": t1 - t0,
        "rows_out": written[0],
        "rejected_ingest": rejected,
        "partitions": len(list(out.glob("dt=*"))),
    }


def worker(engine: str, fmt: str, path: Path, work: Path, result: Path, compression: str) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if engine == "nightowl":
        found = run_nightowl(path, work, compression)
    else:
        found = run_duckdb(path, fmt, work, layers=engine == "duckdb-layers")
    found["peak_rss_mib"] = peak_rss_mib()
    result.write_text(json.dumps(found))


# ---- the parent: one child per run, one table ----------------------------------------------------


def warm(path: Path) -> None:
    """Read the file once so that both engines start from the same (warm) page cache."""
    with path.open("rb") as fh:
        while fh.read(16 << 20):
            pass


def run_child(engine: str, fmt: str, path: Path, keep: bool, compression: str) -> dict:
    work = OUT / f"run-{engine}-{fmt}"
    result = OUT / f".result-{engine}-{fmt}.json"
    result.unlink(missing_ok=True)
    warm(path)
    cmd = [sys.executable, "-m", "bench.ingest", "--worker", engine, fmt, str(path), str(work)]
    cmd += [str(result), compression]
    env = os.environ | {"POLARS_MAX_THREADS": str(THREADS)}
    log(f"{fmt:8} {engine:13} running…")
    import subprocess

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent, env=env)
    _, status, _ = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not result.exists():
        raise SystemExit(f"{engine} on {fmt} failed (exit {proc.returncode})")
    found = json.loads(result.read_text())
    result.unlink()
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    found |= {"child_wall_seconds": wall}
    log(f"{fmt:8} {engine:13} {found['seconds']:7.1f}s, peak RSS {found['peak_rss_mib']:,.0f} MiB")
    return found


def table(results: list[dict]) -> str:
    head = ["input", "engine", "rows", "seconds", "rows/s", "peak RSS MiB", "rows out", "ratio"]
    head += ["target", "met"]
    lines = []
    for r in results:
        ratio = r.get("ratio")
        lines.append(
            [
                r["format"],
                r["engine"],
                f"{r['rows']:,}",
                *measured_cells(r),
                f"{r['rows_out']:,}",
                *verdict_cells(ratio, r.get("target", 0.0), r.get("met")),
            ]
        )
    return text_table(head, lines, right={2, 3, 4, 5, 6, 7})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description=(
            "Ingest + clean of one events file from CSV and from Parquet with nightowl, beside "
            "DuckDB doing the equivalent typed read → de-duplicated Parquet write (the target's "
            "reference) and DuckDB writing the same two layers as nightowl (raw, then clean; "
            "like for like), each run in its own process. Prints one table (rows/s, peak RSS, "
            "speed ratio DuckDB s / nightowl s, target met) and writes "
            "bench/out/ingest-results.json.\n\n"
            "examples:\n"
            "  python -m bench.ingest --rows 10000000 --days 30\n"
            "  python -m bench.ingest --formats parquet --engines nightowl duckdb"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="events (default 10M)")
    parser.add_argument("--days", type=int, default=30, help="days they span (default 30)")
    parser.add_argument(
        "--keep", action="store_true", help="keep each run's output under bench/out/run-*"
    )
    parser.add_argument(
        "--formats", nargs="+", choices=FORMATS, default=list(FORMATS), help="input formats"
    )
    parser.add_argument(
        "--engines", nargs="+", choices=ENGINES, default=list(ENGINES), help="engines to run"
    )
    parser.add_argument(
        "--raw-compression",
        help="nightowl's raw_compression setting: lz4 (a run's default), snappy, zstd or "
        "uncompressed",
    )
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        engine, fmt, path, work, result, compression = args.worker
        worker(engine, fmt, Path(path), Path(work), Path(result), compression)
        return 0
    # Here, not at the top: the engines' children import only their own engine.
    from typing import get_args

    from nightowl.schemas.config import RAW_COMPRESSION, RawCompression

    args.raw_compression = args.raw_compression or RAW_COMPRESSION
    if args.raw_compression not in get_args(RawCompression):
        parser.error(f"--raw-compression: expected one of {', '.join(get_args(RawCompression))}")
    paths = generate(args.rows, args.days)
    results = []
    for fmt in args.formats:
        runs = {
            e: run_child(e, fmt, paths[fmt], args.keep, args.raw_compression) for e in args.engines
        }
        for engine, r in runs.items():
            r |= {"format": fmt, "engine": engine, "rows": args.rows}
            r["rows_per_s"] = args.rows / r["seconds"]
            if engine == "nightowl" and "duckdb" in runs:
                r["ratio"] = runs["duckdb"]["seconds"] / r["seconds"]
                r["target"] = TARGETS[fmt]
                r["met"] = r["ratio"] >= TARGETS[fmt]
            if engine == "nightowl" and "duckdb-layers" in runs:
                r["ratio_layers"] = runs["duckdb-layers"]["seconds"] / r["seconds"]
            results.append(r)
    print(table(results))
    for r in results:
        if r["engine"] == "nightowl":
            print(
                f"nightowl {r['format']}: ingest {r['ingest_seconds']:.2f}s + clean "
                f"{r['clean_seconds']:.2f}s; quarantined {r['rejected_ingest']:,} at ingest, "
                f"{r['rejected_clean']:,} at clean; raw parts {args.raw_compression}"
            )
            if "ratio_layers" in r:
                print(
                    f"nightowl {r['format']}: {r['ratio_layers']:.2f}x DuckDB writing the same two "
                    "layers (raw, then clean from raw; like for like, no target)"
                )
    meta = json.loads((DATA / f"events-{args.rows}-{args.days}d.json").read_text())
    write_results(
        RESULTS, "ingest", THREADS, input=meta, targets=TARGETS, results=results,
        raw_compression=args.raw_compression,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
