"""Features benchmark: nightowl's ``user_features`` beside the same features in DuckDB and pandas.

The input is a synthetic clean events table (one Parquet file per ``dt``, the clean layer's
columns and types), an items table and daily competitor prices, generated once per size and cached
in ``bench/out/data``. Each engine runs in its own subprocess, so the peak RSS reported is that
engine's alone (the child's ``VmHWM``, see ``peak_rss_mib``). The seconds are measured
inside the child around the work (read the Parquet files, compute, hold the result in memory),
interpreter start and imports excluded, on a warm page cache.

Every run checks that DuckDB's features equal nightowl's (same users, same columns, values within
1e-9 relative or 1e-8 absolute, nulls in the same places), and pandas' too when pandas ran on the
same input, and exits with status 1 if they do not. Timings never go in tests: this prints one
table and writes ``bench/out/features-results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    DATA,
    OUT,
    code_version,
    cpu_busy_seconds,
    disturbed,
    log,
    measured_cells,
    other_load,
    peak_rss_mib,
    text_table,
    verdict_cells,
    write_results,
)

RESULTS = OUT / "features-results.json"
SEED = 20261128
AS_OF = date(2026, 11, 28)  # features as of this date: every event before it counts
LAST_DAY = AS_OF - timedelta(days=1)  # the last day of generated events
DAYS = 120
THREADS = 2
ENGINES = ("nightowl", "duckdb", "pandas")
#: Speed ratio (reference seconds per event / nightowl's) that nightowl must reach per reference.
TARGETS = {"duckdb": 1.0, "pandas": 10.0}
#: Largest relative difference allowed between two engines' values of one feature...
TOLERANCE = 1e-9
#: ...unless the absolute one is below this: nightowl adds float sums as multiples of 2**-32
#: (``tasks.features.exact_sum``, the same total in any order), a few 1e-10 off a plain sum.
ABSOLUTE = 1e-8

N_ITEMS = 20_000
CATALOGUE_SHARE = 0.98  # items that have a row in the items table (the rest have no category)
CATEGORIES = [
    "books",
    "electronics",
    "home",
    "garden",
    "toys",
    "fashion",
    "beauty",
    "sports",
    "grocery",
    "auto",
    "music",
    "office",
]
MARKET_ITEMS = 2_000  # the most popular items have competitor prices
COMPETITORS = ["alpha", "bravo", "charlie", "delta"]
MARKET_COVERAGE = 0.85  # share of (date, item, competitor) with a price
EVENT_TYPES = ["view", "add_to_cart", "remove_from_cart", "purchase", "return"]
EVENT_TYPE_P = [0.70, 0.15, 0.04, 0.08, 0.03]
CHANNELS = ["web", "app", "email", "ads"]
CHANNEL_P = [0.5, 0.3, 0.1, 0.1]
DEVICES = ["desktop", "mobile", "tablet"]
DEVICE_P = [0.45, 0.45, 0.10]
NULL_SESSION_SHARE = 0.02
NULL_ITEM_SHARE = 0.01
NULL_ORDER_SHARE = 0.01  # of purchases
FREE_SHARE = 0.005  # purchases at price 0 (left out of price sensitivity)


# ---- input generation ----------------------------------------------------------------------------


def data_dir(events: int, users: int) -> Path:
    return DATA / f"features-{events}e-{users}u-{DAYS}d"


def event_files(root: Path) -> list[Path]:
    return sorted((root / "events").glob("dt=*/part-*.parquet"))


def generate(events: int, users: int) -> Path:
    """The cached input (events by day, items, market prices) for ``events`` and ``users``."""
    root = data_dir(events, users)
    done = root / "input.json"
    if done.exists():
        return root
    import numpy as np
    import polars as pl

    t0 = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    (root / "events").mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    n = events
    start = datetime(LAST_DAY.year, LAST_DAY.month, LAST_DAY.day, tzinfo=UTC) - timedelta(
        days=DAYS - 1
    )
    # Time order (as the clean layer holds it); every other column is drawn independently.
    t_us = np.sort(rng.integers(0, DAYS * 86_400 * 1_000_000, n))
    day = t_us // (86_400 * 1_000_000)
    # Some users are far more active than others.
    weight = rng.lognormal(0.0, 1.0, users)
    user = rng.choice(users, n, p=weight / weight.sum())
    etype = rng.choice(len(EVENT_TYPES), n, p=EVENT_TYPE_P).astype(np.uint8)
    purchase = etype == EVENT_TYPES.index("purchase")
    basket = etype != 0
    # Popular items get most of the traffic (Pareto), every item can appear.
    item = np.minimum((rng.pareto(1.16, n) * 300).astype(np.int64), N_ITEMS - 1)
    item_price = np.round(rng.lognormal(3.0, 1.0, N_ITEMS), 2)
    paid = np.round(item_price[item] * rng.uniform(0.8, 1.1, n), 2)
    paid[rng.random(n) < FREE_SHARE] = 0.0
    base = pl.DataFrame(
        {
            "t": t_us,
            "day": day,
            "event_id": rng.integers(0, 2**62, n),
            "user": user,
            # A few sessions a day per user; a session id never spans users.
            "session": np.where(
                rng.random(n) < NULL_SESSION_SHARE,
                -1,
                user * 512 + day * 4 + rng.integers(0, 4, n),
            ),
            "etype": etype,
            "item": np.where(rng.random(n) < NULL_ITEM_SHARE, -1, item),
            "order": np.where(
                purchase & (rng.random(n) >= NULL_ORDER_SHARE),
                user * 256 + day * 2 + rng.integers(0, 2, n),
                -1,
            ),
            "quantity": np.where(basket, rng.integers(1, 4, n), 1),
            "price": np.where(purchase, paid, np.nan),
            "channel": rng.choice(len(CHANNELS), n, p=CHANNEL_P).astype(np.uint8),
            "device": rng.choice(len(DEVICES), n, p=DEVICE_P).astype(np.uint8),
        }
    )
    del t_us, day, user, etype, purchase, basket, item, paid

    def names(col: str, values: list[str]) -> pl.Expr:
        return pl.col(col).replace_strict(list(range(len(values))), values, return_dtype=pl.String)

    def ident(prefix: str, col: str) -> pl.Expr:
        return pl.when(pl.col(col) >= 0).then(prefix + pl.col(col).cast(pl.String))

    event_time = pl.from_epoch(pl.col("t") + int(start.timestamp()) * 1_000_000, "us")
    event_time = event_time.dt.replace_time_zone("UTC")
    dt = (pl.lit(start.date()) + pl.duration(days=pl.col("day"))).cast(pl.Date)
    # The clean events table: contract columns, lineage, then dt (the UTC date of event_time).
    frame = base.select(
        ("ev_" + pl.col("event_id").cast(pl.String)).alias("event_id"),
        ("u" + pl.col("user").cast(pl.String)).alias("user_id"),
        ident("s", "session").alias("session_id"),
        event_time.alias("event_time"),
        names("etype", EVENT_TYPES).alias("event_type"),
        ident("i", "item").alias("item_id"),
        ident("o", "order").alias("order_id"),
        pl.col("quantity").cast(pl.Int64),
        pl.col("price").fill_nan(None).cast(pl.Float64),
        names("channel", CHANNELS).alias("channel"),
        names("device", DEVICES).alias("device"),
        pl.format("events-{}.csv", dt).alias("source_file"),
        (pl.int_range(pl.len()).over("day") + 1).cast(pl.Int64).alias("source_row"),
        dt.alias("dt"),
    )
    del base
    # One file per day, as the clean layer writes it (rows are in time order, so days are runs).
    first = (start.date() - date(1970, 1, 1)).days
    days_col = frame["dt"].to_physical().to_numpy()
    bounds = np.searchsorted(days_col, first + np.arange(DAYS + 1), "left")
    for k in range(DAYS):
        part = frame.slice(int(bounds[k]), int(bounds[k + 1] - bounds[k]))
        target = root / "events" / f"dt={start.date() + timedelta(days=k)}"
        target.mkdir()
        part.write_parquet(target / "part-0.parquet", compression="snappy", statistics=True)
    del frame

    in_catalogue = rng.random(N_ITEMS) < CATALOGUE_SHARE
    items = pl.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(N_ITEMS)],
            "category": np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), N_ITEMS)],
        }
    ).filter(pl.Series(in_catalogue))
    items.write_parquet(root / "items.parquet", compression="snappy", statistics=True)

    cells = DAYS * MARKET_ITEMS * len(COMPETITORS)
    k = np.arange(cells)
    m_day, rest = np.divmod(k, MARKET_ITEMS * len(COMPETITORS))
    m_item, m_comp = np.divmod(rest, len(COMPETITORS))
    keep = rng.random(cells) < MARKET_COVERAGE
    market = pl.DataFrame(
        {
            "day": m_day[keep],
            "item": m_item[keep],
            "competitor": np.array(COMPETITORS)[m_comp[keep]],
            "price": np.round(item_price[m_item[keep]] * rng.lognormal(0.0, 0.08, keep.sum()), 2),
        }
    ).select(
        (pl.lit(start.date()) + pl.duration(days=pl.col("day"))).cast(pl.Date).alias("date"),
        ("i" + pl.col("item").cast(pl.String)).alias("item_id"),
        "competitor",
        "price",
    )
    market.write_parquet(root / "market_prices.parquet", compression="snappy", statistics=True)
    meta = {
        "events": events,
        "users": users,
        "days": DAYS,
        "first_day": start.date().isoformat(),
        "last_day": LAST_DAY.isoformat(),
        "seed": SEED,
        "items": items.height,
        "market_prices": market.height,
        "bytes": sum(p.stat().st_size for p in root.rglob("*.parquet")),
    }
    done.write_text(json.dumps(meta, indent=2))
    log(f"generated {events:,} events of {users:,} users in {time.perf_counter() - t0:.1f}s")
    return root


# ---- nightowl ------------------------------------------------------------------------------------


def nightowl_inputs(root: Path) -> tuple[Any, Any, Any]:
    """The three inputs as nightowl's feature task reads clean tables: lazy Parquet scans."""
    import polars as pl

    files = [str(p) for p in event_files(root)]
    events = pl.scan_parquet(files, hive_partitioning=True, missing_columns="insert")
    items = pl.scan_parquet(root / "items.parquet")
    market = pl.scan_parquet(root / "market_prices.parquet")
    return events, items, market


def run_nightowl(root: Path) -> tuple[float, Any]:
    """The production path: user-hash buckets of ``features_bucket_events`` events, as the
    features step runs them; the feedback features (no feedback given here) are left out."""
    import math

    import polars as pl

    from nightowl.schemas.config import ModelSettings
    from nightowl.tasks.behaviour.features import FEEDBACK_FEATURES, bucketed_user_features

    events, items, market = nightowl_inputs(root)
    t0 = time.perf_counter()
    rows = events.select(pl.len()).collect().item()
    buckets = math.ceil(rows / ModelSettings().features_bucket_events)
    frame = bucketed_user_features(events, AS_OF, items, market, buckets=buckets)
    return time.perf_counter() - t0, frame.drop(list(FEEDBACK_FEATURES))


def profile_nightowl(root: Path) -> dict[str, float]:
    """Seconds of each feature group alone (each reads its own columns of the input again)."""
    import polars as pl

    from nightowl.tasks.behaviour import features as f

    events, items, market = nightowl_inputs(root)
    known = events.filter((pl.col("dt") < AS_OF) & pl.col("user_id").is_not_null())
    history = f.events_before(known, AS_OF)
    needed = ["user_id", "session_id", "event_type", "item_id", "order_id", "quantity", "price"]
    parts = {
        "read + days_ago": history.select(*needed, "dt", "days_ago"),
        "behaviour: counts, recency, spend": f.behaviour(history),
        "distinct activity": f.distinct_activity(history),
        "decayed activity": f.decayed_activity(history),
        "category affinity": f.category_affinity(history, items),
        "price sensitivity": f.price_sensitivity(history, market),
    }
    return {name: _timed(lambda q=q: q.collect()) for name, q in parts.items()}


def _timed(work: Any) -> float:
    t0 = time.perf_counter()
    work()
    return time.perf_counter() - t0


# ---- DuckDB: the same features in SQL ------------------------------------------------------------


def _feature_constants() -> tuple[tuple, tuple, tuple, tuple, int]:
    from nightowl.tasks.behaviour.features import EVENT_TYPES as KINDS
    from nightowl.tasks.behaviour.features import HALF_LIVES, LONGEST, TRENDED, WINDOWS

    return KINDS, WINDOWS, TRENDED, HALF_LIVES, LONGEST


def _ratio_sql(num: str, den: str) -> str:
    return f"CASE WHEN {den} > 0 THEN CAST({num} AS DOUBLE) / {den} END"


def duckdb_ctes(root: Path) -> dict[str, str]:
    """The feature groups of ``tasks.features.user_features`` as DuckDB common table expressions."""
    kinds, windows, trended, half_lives, longest = _feature_constants()
    files = ", ".join(f"'{p}'" for p in event_files(root))
    cut = f"TIMESTAMPTZ '{AS_OF.isoformat()} 00:00:00+00'"
    purchase = "event_type = 'purchase'"
    behaviour = [
        "max(days_ago) AS tenure_days",
        "min(days_ago) AS recency_days",
        "count(*) AS events_total",
        f"count(*) FILTER (WHERE days_ago < {longest}) AS events_90d",
    ]
    for kind in kinds:
        behaviour.append(
            f"min(days_ago) FILTER (WHERE event_type = '{kind}') AS {kind}_recency_days"
        )
        behaviour += [
            f"count(*) FILTER (WHERE event_type = '{kind}' AND days_ago < {w}) AS {kind}_n_{w}d"
            for w in windows
        ]
    behaviour += [
        f"count(DISTINCT session_id) FILTER (WHERE days_ago < {w}) AS sessions_{w}d"
        for w in windows
    ]
    spend = "coalesce(quantity, 1) * price"
    behaviour += [
        "count(DISTINCT dt) FILTER (WHERE days_ago < 28) AS active_days_28d",
        f"coalesce(sum({spend}) FILTER (WHERE {purchase}), 0) AS spend_total",
        f"coalesce(sum({spend}) FILTER (WHERE {purchase} AND days_ago < 28), 0) AS spend_28d",
        f"coalesce(sum({spend}) FILTER (WHERE {purchase} AND days_ago < {longest}), 0) "
        "AS spend_90d",
        f"count(DISTINCT order_id) FILTER (WHERE {purchase}) AS orders_total",
        f"count(DISTINCT order_id) FILTER (WHERE {purchase} AND days_ago < {longest}) "
        "AS orders_90d",
        f"coalesce(sum(coalesce(quantity, 1)) FILTER (WHERE {purchase} AND days_ago < {longest})"
        ", 0) AS units_90d",
    ]
    derived = [
        _ratio_sql("spend_90d", "orders_90d") + " AS order_value_90d",
        _ratio_sql("units_90d", "orders_90d") + " AS basket_size_90d",
        _ratio_sql("return_n_90d", "purchase_n_90d") + " AS return_rate_90d",
        _ratio_sql("purchase_n_90d", "view_n_90d") + " AS view_to_purchase_90d",
        _ratio_sql("purchase_n_28d", "add_to_cart_n_28d") + " AS cart_to_purchase_28d",
        _ratio_sql("events_90d", "sessions_90d") + " AS events_per_session_90d",
    ]
    derived += [f"{k}_n_7d / 7.0 - {k}_n_28d / 28.0 AS {k}_trend_7v28" for k in trended]
    derived += [f"{k}_n_28d / 28.0 - {k}_n_90d / 90.0 AS {k}_trend_28v90" for k in trended]
    decayed = ["count(*) AS active_days_total", "sum(CAST(bought AS BIGINT)) AS buying_days_total"]
    for hl in half_lives:
        weight = f"power(0.5, age / {hl})"
        decayed += [
            f"sum({weight}) AS active_days_hl{hl}",
            f"coalesce(sum({weight}) FILTER (WHERE bought), 0) AS buying_days_hl{hl}",
        ]
    sep = ",\n            "
    return {
        "history": f"""
            SELECT user_id, session_id, event_type, item_id, order_id, quantity, price, dt,
                   CAST(epoch_us({cut}) - epoch_us(event_time) AS DOUBLE) / 1e6 / 86400.0
                       AS days_ago
            FROM read_parquet([{files}])
            WHERE dt < DATE '{AS_OF.isoformat()}' AND event_time < {cut}
              AND user_id IS NOT NULL""",
        "behaviour": f"""
            SELECT *, {sep.join(derived)}
            FROM (SELECT user_id, {sep.join(behaviour)} FROM history GROUP BY user_id)""",
        # The two halves of behaviour, only for --profile (the full query leaves them unused).
        "behaviour_plain": f"""
            SELECT user_id, {sep.join(b for b in behaviour if "DISTINCT" not in b)}
            FROM history GROUP BY user_id""",
        "behaviour_distinct": f"""
            SELECT user_id, {sep.join(b for b in behaviour if "DISTINCT" in b)}
            FROM history GROUP BY user_id""",
        "decayed": f"""
            SELECT user_id, {sep.join(decayed)}
            FROM (
                SELECT user_id, dt, floor(min(days_ago)) AS age, bool_or({purchase}) AS bought
                FROM history GROUP BY user_id, dt
            ) GROUP BY user_id""",
        "affinity": f"""
            SELECT user_id, count(*) AS categories_90d,
                   max(n) / sum(n) AS top_category_share_90d
            FROM (
                SELECT h.user_id, c.category, count(*) AS n
                FROM history h
                JOIN (SELECT item_id, any_value(category) AS category
                      FROM read_parquet('{root / "items.parquet"}') GROUP BY item_id) c
                  ON h.item_id = c.item_id
                WHERE h.days_ago < {longest} AND h.item_id IS NOT NULL
                GROUP BY h.user_id, c.category
            ) GROUP BY user_id""",
        "sensitivity": f"""
            WITH paid AS (
                SELECT user_id, item_id, dt, price FROM history
                WHERE {purchase} AND days_ago < {longest} AND price > 0
            ),
            usual AS (SELECT item_id, median(price) AS usual_price FROM paid GROUP BY item_id),
            market AS (
                SELECT date, item_id, median(price) AS market_price
                FROM read_parquet('{root / "market_prices.parquet"}') GROUP BY date, item_id
            ),
            rated AS (
                SELECT p.user_id,
                       {_ratio_sql("p.price", "u.usual_price")} AS vs_usual,
                       {_ratio_sql("p.price", "m.market_price")} AS vs_market
                FROM paid p
                LEFT JOIN usual u ON p.item_id = u.item_id
                LEFT JOIN market m ON p.dt = m.date AND p.item_id = m.item_id
            )
            SELECT user_id, avg(vs_usual) AS paid_vs_usual_90d,
                   avg(vs_market) AS paid_vs_market_90d,
                   avg(CAST(vs_market < 1.0 AS DOUBLE)) AS bought_below_market_90d
            FROM rated GROUP BY user_id""",
    }


#: The common table expressions the full query uses (the others are parts for --profile).
GROUPS = ("history", "behaviour", "decayed", "affinity", "sensitivity")


def duckdb_sql(root: Path, part: str | None = None) -> str:
    """The whole feature query, or (``part``) one feature group alone."""
    ctes = duckdb_ctes(root)
    used = GROUPS if part is None else dict.fromkeys(["history", part])
    head = "WITH " + ",\n".join(f"{name} AS ({ctes[name]})" for name in used)
    if part is not None:
        return f"{head}\nSELECT * FROM {part}"
    return f"""{head}
        SELECT b.*,
               d.* EXCLUDE (user_id), a.* EXCLUDE (user_id), s.* EXCLUDE (user_id),
               DATE '{AS_OF.isoformat()}' AS as_of
        FROM behaviour b
        LEFT JOIN decayed d ON b.user_id = d.user_id
        LEFT JOIN affinity a ON b.user_id = a.user_id
        LEFT JOIN sensitivity s ON b.user_id = s.user_id
        ORDER BY b.user_id"""


def duckdb_connection(work: Path) -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {THREADS}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET temp_directory = '{work / 'spill'}'")
    return con


def run_duckdb(root: Path, work: Path) -> tuple[float, Any]:
    import polars as pl

    sql = duckdb_sql(root)
    con = duckdb_connection(work)
    t0 = time.perf_counter()
    table = con.sql(sql).to_arrow_table()
    seconds = time.perf_counter() - t0
    return seconds, pl.from_arrow(table)


def profile_duckdb(root: Path, work: Path) -> dict[str, float]:
    con = duckdb_connection(work)
    parts = {
        "read + days_ago": "history",
        "behaviour: counts, recency, spend": "behaviour_plain",
        "behaviour: distinct counts": "behaviour_distinct",
        "decayed activity": "decayed",
        "category affinity": "affinity",
        "price sensitivity": "sensitivity",
    }
    return {
        name: _timed(lambda p=p: con.sql(duckdb_sql(root, p)).to_arrow_table())
        for name, p in parts.items()
    }


# ---- pandas: the same features with groupby ------------------------------------------------------


def run_pandas(root: Path) -> tuple[float, Any]:
    import numpy as np
    import pandas as pd

    DATES = {"date_as_object": False}
    kinds, windows, trended, half_lives, longest = _feature_constants()
    columns = ["user_id", "session_id", "event_time", "event_type", "item_id", "order_id"]
    columns += ["quantity", "price", "dt"]
    t0 = time.perf_counter()
    ev = pd.concat(
        [pd.read_parquet(p, columns=columns, to_pandas_kwargs=DATES) for p in event_files(root)],
        ignore_index=True,
    )
    cut = pd.Timestamp(AS_OF.isoformat(), tz="UTC")
    ev = ev[(ev["dt"] < pd.Timestamp(AS_OF)) & (ev["event_time"] < cut) & ev["user_id"].notna()]
    h = pd.DataFrame(
        {
            # integer user codes: one factorisation instead of hashing strings in every groupby
            "user": pd.factorize(ev["user_id"])[0],
            "days_ago": (cut - ev["event_time"]).dt.total_seconds().to_numpy() / 86400.0,
        }
    )
    users = ev["user_id"].to_numpy()
    first_user = pd.Series(users, index=h["user"].to_numpy()).groupby(level=0).first()
    kind = ev["event_type"].to_numpy()
    is_kind = {k: kind == k for k in kinds}
    days_ago = h["days_ago"].to_numpy()
    quantity = ev["quantity"].fillna(1).to_numpy(dtype="float64")
    price = ev["price"].to_numpy(dtype="float64", na_value=np.nan)
    bought = is_kind["purchase"]
    cols: dict[str, Any] = {"tenure_days": days_ago, "recency_days": days_ago}
    aggs: dict[str, tuple[str, str]] = {
        "tenure_days": ("tenure_days", "max"),
        "recency_days": ("recency_days", "min"),
        "events_total": ("tenure_days", "size"),
    }
    cols["events_90d"] = days_ago < longest
    aggs["events_90d"] = ("events_90d", "sum")
    for k in kinds:
        cols[f"{k}_recency_days"] = np.where(is_kind[k], days_ago, np.nan)
        aggs[f"{k}_recency_days"] = (f"{k}_recency_days", "min")
        for w in windows:
            cols[f"{k}_n_{w}d"] = is_kind[k] & (days_ago < w)
            aggs[f"{k}_n_{w}d"] = (f"{k}_n_{w}d", "sum")
    spend = quantity * price
    cols["spend_total"] = np.where(bought, spend, np.nan)
    cols["spend_28d"] = np.where(bought & (days_ago < 28), spend, np.nan)
    cols["spend_90d"] = np.where(bought & (days_ago < longest), spend, np.nan)
    cols["units_90d"] = np.where(bought & (days_ago < longest), quantity, 0.0)
    for name in ("spend_total", "spend_28d", "spend_90d", "units_90d"):
        aggs[name] = (name, "sum")
    g = pd.DataFrame(cols).assign(user=h["user"].to_numpy()).groupby("user").agg(**aggs)

    def distinct(values: Any, mask: Any) -> Any:
        """Distinct non-null values per user among rows where ``mask`` holds (0 when none)."""
        frame = pd.DataFrame({"user": h["user"].to_numpy()[mask], "v": values[mask]})
        return frame.dropna().groupby("user")["v"].nunique().reindex(g.index, fill_value=0)

    session = ev["session_id"].to_numpy()
    order = ev["order_id"].to_numpy()
    for w in windows:
        g[f"sessions_{w}d"] = distinct(session, days_ago < w)
    g["active_days_28d"] = distinct(ev["dt"].to_numpy(), days_ago < 28)
    g["orders_total"] = distinct(order, bought)
    g["orders_90d"] = distinct(order, bought & (days_ago < longest))

    def ratio(num: Any, den: Any) -> Any:
        return (num / den.astype("float64")).where(den > 0)

    g["order_value_90d"] = ratio(g["spend_90d"], g["orders_90d"])
    g["basket_size_90d"] = ratio(g["units_90d"], g["orders_90d"])
    g["return_rate_90d"] = ratio(g["return_n_90d"], g["purchase_n_90d"])
    g["view_to_purchase_90d"] = ratio(g["purchase_n_90d"], g["view_n_90d"])
    g["cart_to_purchase_28d"] = ratio(g["purchase_n_28d"], g["add_to_cart_n_28d"])
    g["events_per_session_90d"] = ratio(g["events_90d"], g["sessions_90d"])
    for k in trended:
        g[f"{k}_trend_7v28"] = g[f"{k}_n_7d"] / 7.0 - g[f"{k}_n_28d"] / 28.0
    for k in trended:
        g[f"{k}_trend_28v90"] = g[f"{k}_n_28d"] / 28.0 - g[f"{k}_n_90d"] / 90.0

    # Decayed activity over distinct (user, dt) days.
    days = (
        pd.DataFrame({"user": h["user"].to_numpy(), "dt": ev["dt"].to_numpy()})
        .assign(days_ago=days_ago, bought=bought)
        .groupby(["user", "dt"])
        .agg(age=("days_ago", "min"), bought=("bought", "any"))
    )
    days["age"] = np.floor(days["age"])
    per_day = {"active_days_total": days["bought"].notna(), "buying_days_total": days["bought"]}
    for hl in half_lives:
        weight = 0.5 ** (days["age"] / hl)
        per_day[f"active_days_hl{hl}"] = weight
        per_day[f"buying_days_hl{hl}"] = weight.where(days["bought"], 0.0)
    decayed = pd.DataFrame(per_day).groupby(level="user").sum()
    g = g.join(decayed)

    # Category affinity over the last 90 days of item events.
    items = pd.read_parquet(root / "items.parquet").drop_duplicates("item_id")
    recent = pd.DataFrame({"user": h["user"].to_numpy(), "item_id": ev["item_id"].to_numpy()})
    recent = recent[(days_ago < longest) & recent["item_id"].notna().to_numpy()]
    n = recent.merge(items, on="item_id", how="inner").groupby(["user", "category"]).size()
    per_user = n.groupby(level="user")
    g["categories_90d"] = per_user.size()
    g["top_category_share_90d"] = per_user.max() / per_user.sum()

    # Price sensitivity: paid price against the item's median paid price and the market's.
    paid = pd.DataFrame({"user": h["user"].to_numpy(), "item_id": ev["item_id"].to_numpy()}).assign(
        dt=ev["dt"].to_numpy(), price=price
    )
    paid = paid[bought & (days_ago < longest) & (price > 0)]
    usual = paid.groupby("item_id")["price"].median().rename("usual_price")
    market = (
        pd.read_parquet(root / "market_prices.parquet", to_pandas_kwargs=DATES)
        .groupby(["date", "item_id"])["price"]
        .median()
        .rename("market_price")
        .reset_index()
        .rename(columns={"date": "dt"})
    )
    paid = paid.merge(usual, left_on="item_id", right_index=True, how="left")
    paid = paid.merge(market, on=["dt", "item_id"], how="left")
    paid["vs_usual"] = ratio(paid["price"], paid["usual_price"])
    paid["vs_market"] = ratio(paid["price"], paid["market_price"])
    paid["below"] = (paid["vs_market"] < 1.0).astype("float64").where(paid["vs_market"].notna())
    sens = paid.groupby("user")[["vs_usual", "vs_market", "below"]].mean()
    g["paid_vs_usual_90d"] = sens["vs_usual"]
    g["paid_vs_market_90d"] = sens["vs_market"]
    g["bought_below_market_90d"] = sens["below"]

    g.insert(0, "user_id", first_user.reindex(g.index).to_numpy())
    g["as_of"] = AS_OF
    g = g.sort_values("user_id").reset_index(drop=True)
    seconds = time.perf_counter() - t0
    return seconds, g


# ---- the children --------------------------------------------------------------------------------


def worker(engine: str, mode: str, root: Path, work: Path, result: Path) -> None:
    import polars as pl

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    found: dict[str, Any] = {}
    if mode == "profile":
        found["parts"] = (
            profile_nightowl(root) if engine == "nightowl" else profile_duckdb(root, work)
        )
    else:
        if engine == "nightowl":
            seconds, frame = run_nightowl(root)
        elif engine == "duckdb":
            seconds, frame = run_duckdb(root, work)
        else:
            seconds, g = run_pandas(root)
            frame = pl.from_pandas(g)
        found |= {"seconds": seconds, "users_out": frame.height, "columns": frame.width}
        frame.write_parquet(work / "features.parquet")  # for the check, after the clock stops
    found["peak_rss_mib"] = peak_rss_mib()
    result.write_text(json.dumps(found))


def warm(root: Path) -> None:
    """Read the input once so that every engine starts from the same (warm) page cache."""
    for path in root.rglob("*.parquet"):
        with path.open("rb") as fh:
            while fh.read(16 << 20):
                pass


def run_child(engine: str, root: Path, mode: str = "run") -> dict:
    work = OUT / f"run-features-{engine}"
    result = OUT / f".result-features-{engine}.json"
    result.unlink(missing_ok=True)
    warm(root)
    cmd = [sys.executable, "-m", "bench.features", "--worker", engine, mode, str(root), str(work)]
    cmd += [str(result)]
    env = os.environ | {"POLARS_MAX_THREADS": str(THREADS)}
    log(f"{engine:9} {mode}…")
    busy = cpu_busy_seconds()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if code != 0 or not result.exists():
        raise SystemExit(f"{engine} ({mode}) failed (exit {code})")
    found = json.loads(result.read_text())
    result.unlink()
    found |= {"child_wall_seconds": wall, "work": work}
    found["other_load"] = other_load(busy, wall, usage)
    if mode == "run":
        log(
            f"{engine:9} {found['seconds']:7.1f}s, peak RSS {found['peak_rss_mib']:,.0f} MiB, "
            f"other processes kept {found['other_load']:.0%} of the CPUs busy"
        )
    return found


# ---- the check: same users, same columns, same values --------------------------------------------


def compare(ours: Any, theirs: Any, name: str) -> float:
    """The largest relative difference between two feature frames; SystemExit when they differ."""
    import polars as pl

    problems = []
    if set(ours.columns) != set(theirs.columns):
        missing = [c for c in ours.columns if c not in theirs.columns]
        extra = [c for c in theirs.columns if c not in ours.columns]
        problems.append(f"columns differ: {name} lacks {missing}, has extra {extra}")
    elif ours.height != theirs.height or not ours["user_id"].equals(theirs["user_id"]):
        problems.append(f"users differ: nightowl {ours.height:,}, {name} {theirs.height:,}")
    if not problems:
        theirs = theirs.select(ours.columns)  # same names; the order may differ
    worst = 0.0
    for col in [] if problems else ours.columns[1:]:
        a, b = ours[col], theirs[col]
        if a.dtype in (pl.Date, pl.String) or b.dtype in (pl.Date, pl.String):
            if not a.cast(pl.String).equals(b.cast(pl.String)):
                problems.append(f"{col}: values differ")
            continue
        a, b = a.cast(pl.Float64), b.cast(pl.Float64)
        nulls = a.is_null() != b.is_null()
        if nulls.any():
            at = ours["user_id"].filter(nulls).head(3).to_list()
            problems.append(f"{col}: nulls in different places ({nulls.sum():,} users, e.g. {at})")
            continue
        x, y = pl.col("a"), pl.col("b")
        relative = (x - y).abs() / pl.max_horizontal(x.abs(), y.abs())  # 0 / 0 (both 0) is NaN
        diff = pl.DataFrame({"a": a, "b": b}).select(relative.fill_nan(0.0).fill_null(0.0))
        diff = diff.to_series()
        worst = max(worst, float(diff.max() or 0.0))
        bad = (diff > TOLERANCE) & ((a - b).abs() > ABSOLUTE).fill_null(False)
        if bad.any():
            i = int(bad.arg_max())
            problems.append(
                f"{col}: {bad.sum():,} values differ by more than {TOLERANCE:g} relative "
                f"(e.g. {ours['user_id'][i]}: nightowl {a[i]!r}, {name} {b[i]!r})"
            )
    if problems:
        print(f"CHECK FAILED: {name} != nightowl", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        raise SystemExit(1)
    return worst


# ---- the parent: one child per engine, one table -------------------------------------------------


def table(results: list[dict]) -> str:
    head = ["engine", "events", "users", "seconds", "events/s", "peak RSS MiB", "ratio", "target"]
    head += ["met"]
    lines = []
    for r in results:
        ratio = r.get("ratio")
        lines.append(
            [
                r["engine"],
                f"{r['events']:,}",
                f"{r['users']:,}",
                *measured_cells(r),
                *verdict_cells(ratio, r.get("target", 0.0), r.get("met")),
            ]
        )
    return text_table(head, lines, right={1, 2, 3, 4, 5, 6})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.features",
        description=(
            "User features (tasks.features.user_features) as of 2026-11-28 over a synthetic "
            "clean events table of 120 days, with nightowl (Polars), the same features in DuckDB "
            "SQL and in pandas, each engine in its own process (2 threads for Polars and "
            "DuckDB). Checks that the references compute the same values, then prints one table "
            "(seconds, events/s, peak RSS, speed ratio nightowl vs each reference, target met) "
            "and writes bench/out/features-results.json.\n\n"
            "examples:\n"
            "  python -m bench.features                                # 20M events, 200k users\n"
            "  python -m bench.features --events 200000 --users 2000   # quick smoke run\n"
            "  python -m bench.features --pandas-events 2000000 --pandas-users 20000\n"
            "  python -m bench.features --engines nightowl duckdb --profile"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=20_000_000, help="events (default 20M)")
    parser.add_argument("--users", type=int, default=200_000, help="users (default 200k)")
    parser.add_argument(
        "--pandas-events",
        type=int,
        help="run pandas on a smaller input of this many events (default: the same input)",
    )
    parser.add_argument(
        "--pandas-users", type=int, help="users of that smaller input (default: scaled down)"
    )
    parser.add_argument(
        "--engines", nargs="+", choices=ENGINES, default=list(ENGINES), help="engines to run"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also time each feature group alone (nightowl and DuckDB, extra processes)",
    )
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        engine, mode, root, work, result = args.worker
        worker(engine, mode, Path(root), Path(work), Path(result))
        return 0
    if "nightowl" not in args.engines:
        parser.error("nightowl is what the references are compared with: keep it in --engines")

    root = generate(args.events, args.users)
    sizes = {e: (args.events, args.users, root) for e in args.engines}
    if "pandas" in args.engines and args.pandas_events:
        p_users = args.pandas_users or max(1, args.users * args.pandas_events // args.events)
        sizes["pandas"] = (args.pandas_events, p_users, generate(args.pandas_events, p_users))
    runs = {e: run_child(e, sizes[e][2]) for e in args.engines}
    ours_path = runs["nightowl"]["work"] / "features.parquet"
    import polars as pl

    ours = pl.read_parquet(ours_path)
    checks = []
    for engine in args.engines:
        if engine == "nightowl":
            continue
        n_events, n_users, _ = sizes[engine]
        if (n_events, n_users) != (args.events, args.users):
            checks.append(f"check: {engine} ran on another input, not compared")
            continue
        theirs = pl.read_parquet(runs[engine]["work"] / "features.parquet")
        worst = compare(ours, theirs, engine)
        checks.append(
            f"check passed: {engine} == nightowl on {ours.height:,} users x {ours.width} columns "
            f"(values within {TOLERANCE:g} relative or {ABSOLUTE:g} absolute, largest relative "
            f"difference {worst:.1e}; nulls in the same places)"
        )
    results = []
    for engine, r in runs.items():
        shutil.rmtree(r.pop("work"), ignore_errors=True)
        n_events, n_users, _ = sizes[engine]
        r |= {"engine": engine, "events": n_events, "users": n_users}
        r["rows_per_s"] = n_events / r["seconds"]
        results.append(r)
    for r in results:
        if r["engine"] != "nightowl":
            r["ratio"] = runs["nightowl"]["rows_per_s"] / r["rows_per_s"]
            r["target"] = TARGETS[r["engine"]]
            r["met"] = r["ratio"] >= r["target"]
    print(table(results))
    print("ratio: nightowl events/s / that engine's events/s (more than 1: nightowl is faster)")
    for line in checks:
        print(line)
    for line in disturbed(results):
        print(line)
    profiles = {}
    if args.profile:
        for engine in ("nightowl", "duckdb"):
            if engine in args.engines:
                found = run_child(engine, root, "profile")
                shutil.rmtree(found.pop("work"), ignore_errors=True)
                profiles[engine] = found | {"engine": f"{engine} profile"}
        for engine, found in profiles.items():
            shown = ", ".join(f"{name} {s:.2f}s" for name, s in found["parts"].items())
            print(f"{engine} groups alone: {shown}")
        for line in disturbed(list(profiles.values())):
            print(line)
    meta = json.loads((root / "input.json").read_text())
    write_results(
        RESULTS, "features", THREADS, as_of=AS_OF.isoformat(),
        code=code_version("tasks/behaviour/features.py"),
        input=meta, targets=TARGETS, results=results,
        checks=checks, profiles=profiles,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
