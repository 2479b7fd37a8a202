"""Demand forecast benchmark: 20k items x 2 years of daily history, features + training + one
night's forecast, beside the 28-day moving average computed in DuckDB SQL.

The synthetic history (cached under ``bench/out/data``) is what the warehouse would hold: our
price changes (about every 15 days per item), three competitors quoting every third day (gaps
filled by the staleness rule), daily purchases and views per item (Poisson around a popularity,
a weekly pattern and halved when we are dearer than the competitors' median) and three market
indicators. nightowl runs ``tasks.demand`` on it with the default ``[market]`` settings: the
item-day grid and features, the rolling-origin backtest and the final fit, then the nightly
forecast (ONNX export and session, item and category forecasts, price scenarios). The
reference, in its own process, is what a team could run instead: a 28-day moving average per
item in DuckDB over the same sales. Each side's seconds and peak RSS are measured in its own
process; timings never go in tests.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    DATA,
    OUT,
    code_version,
    disturbed,
    log,
    peak_rss_mib,
    run_worker,
    text_table,
    write_results,
)

RESULTS = OUT / "forecast-results.json"
SEED = 20261128
THREADS = 2
LAST_DAY = date(2026, 11, 27)
CATEGORIES = 12
COMPETITORS = 3


def data_dir(items: int, days: int) -> Path:
    return DATA / f"forecast-{items}i-{days}d-v2"  # v2: our prices carry a promotion flag


def make_data(items: int, days: int) -> Path:
    """The cached synthetic history: our prices, quotes, sales and views, indicators."""
    import numpy as np
    import polars as pl

    folder = data_dir(items, days)
    if (folder / "done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(SEED)
    first = LAST_DAY - timedelta(days=days - 1)
    dates = pl.date_range(first, LAST_DAY, "1d", eager=True)
    ids = np.array([f"i{i:06d}" for i in range(items)])
    category = rng.integers(0, CATEGORIES, items)
    market = np.exp(rng.normal(3.3, 0.7, items))
    popularity = np.exp(rng.normal(-1.2, 1.0, items))
    # Our price: a markup redrawn every ~15 days, as change rows (what the items source holds).
    change = rng.random((items, days)) < 1 / 15
    change[:, 0] = True
    markup = np.where(rng.random((items, days)) < 0.7, rng.uniform(0.86, 1.0, (items, days)),
                      rng.uniform(1.08, 1.3, (items, days)))  # fmt: skip
    item_ix, day_ix = np.nonzero(change)
    history = pl.DataFrame(
        {
            "item_id": ids[item_ix],
            "date": dates.gather(day_ix),
            "our_price": np.round(market[item_ix] * markup[item_ix, day_ix], 2),
            "active": True,
            "promotion": False,
            "category": [f"c{c:02d}" for c in category[item_ix]],
        }
    )
    history.write_parquet(folder / "our_prices.parquet")
    # The daily price in force, for the demand simulation.
    last_change = np.maximum.accumulate(np.where(change, np.arange(days), 0), axis=1)
    ours = market[:, None] * np.take_along_axis(markup, last_change, axis=1)
    offset = rng.normal(1.0, 0.05, (items, COMPETITORS))
    theirs = market[:, None, None] * offset[:, None, :] * rng.normal(1, 0.01, (1, days, 1))
    median = np.median(theirs, axis=2)
    quoted = np.arange(days) % 3 == 0
    q_item, q_day, q_comp = np.nonzero(np.broadcast_to(quoted[None, :, None], theirs.shape))
    pl.DataFrame(
        {
            "date": dates.gather(q_day),
            "item_id": ids[q_item],
            "competitor": np.array(["alpha", "beta", "gamma"])[q_comp],
            "price": np.round(theirs[q_item, q_day, q_comp], 2),
        }
    ).write_parquet(folder / "quotes.parquet")
    weekday = np.array([d.weekday() for d in dates.to_list()])
    rate = popularity[:, None] * np.where(weekday >= 5, 1.3, 1.0)[None, :]
    rate = rate * np.where(ours > median, 0.5, 1.0)
    units = rng.poisson(rate)
    views = rng.poisson(popularity[:, None] * 12.0, (items, days))
    s_item, s_day = np.nonzero((units > 0) | (views > 0))
    pl.DataFrame(
        {
            "item_id": ids[s_item],
            "date": dates.gather(s_day),
            "units": units[s_item, s_day].astype(np.float64),
            "views": views[s_item, s_day].astype(np.float64),
        }
    ).write_parquet(folder / "sales.parquet")
    walks = np.cumsum(rng.normal(0, 0.01, (3, days)), axis=1)
    pl.DataFrame(
        {
            "date": np.tile(dates.to_numpy(), 3),
            "indicator": np.repeat(["fx", "ad_cost", "search"], days),
            "value": (np.exp(walks) * np.array([[1.25], [0.8], [100.0]])).ravel(),
            "dimension": None,
        },
        schema_overrides={"dimension": pl.String},
    ).write_parquet(folder / "indicators.parquet")
    (folder / "done").write_text("")
    log(f"made {items:,} items x {days} days in {time.perf_counter() - t0:.0f}s under {folder}")
    return folder


# ---- the two sides (each in its own process) ---------------------------------------------


def run_nightowl(folder: Path) -> dict[str, Any]:
    """features + training (backtest and final fit) + one night's forecast, with defaults."""
    import numpy as np
    import polars as pl

    from nightowl.schemas.config import MarketSettings
    from nightowl.tasks.market import forecast as fc
    from nightowl.tasks.market import prices as market
    from nightowl.tasks.market import units as demand
    from nightowl.tasks.models import export, score
    from nightowl.warehouse.registry import ModelCard

    cfg = MarketSettings()
    as_of = LAST_DAY + timedelta(days=1)
    t0 = time.perf_counter()
    history = pl.scan_parquet(folder / "our_prices.parquet")
    ours = market.our_daily_prices(history, LAST_DAY)
    quotes = market.competitor_quotes(
        pl.scan_parquet(folder / "quotes.parquet"), LAST_DAY, cfg.competitor_max_staleness_days
    )
    grid = market.item_day_market(ours, quotes).collect()
    panel = fc.item_day_panel(grid.lazy(), pl.scan_parquet(folder / "sales.parquet")).collect()
    categories = fc.category_panel(panel.lazy()).collect()
    days = sorted(panel["date"].unique().to_list())
    names = sorted(panel["category"].unique().to_list())
    indicators, stale = fc.indicator_panel(
        pl.scan_parquet(folder / "indicators.parquet"), days, names, 7
    )
    inputs = demand.DemandInputs(as_of, grid, panel, categories, indicators, stale, [])
    t1 = time.perf_counter()
    fitted = demand.backtested_model(inputs, cfg)
    t2 = time.perf_counter()
    onnx_bytes = export.onnx_from_booster(fitted.booster)
    sess = score.session(onnx_bytes, [score.CPU], threads=THREADS)
    card = ModelCard(
        model="demand", version="bench", code_version="bench", features=[
            {"name": n, "dtype": "float32"} for n in fitted.names],
        training={"horizon_days": cfg.horizon_days, "dispersion": fitted.phi,
                  "interval": cfg.interval, "cold_start": fitted.cold_start},
        metrics={}, parity={}, params={}, best_iteration=fitted.booster.best_iteration,
    )  # fmt: skip

    def predict(frame: pl.DataFrame) -> np.ndarray:
        matrix = fc.matrix(frame, card.feature_names)
        return score.predict(sess, matrix, 262_144).astype(np.float64)

    items, cats, scenarios = demand.forecast_tables(inputs, cfg, card, predict)
    t3 = time.perf_counter()
    overall = {r["forecaster"]: r["wape"] for r in fitted.backtest if r["horizon"] == "all"
               and r["level"] == "item"}  # fmt: skip
    return {
        "seconds": t3 - t0,
        "phases": {"features": t1 - t0, "training": t2 - t1, "forecast": t3 - t2},
        "item_days": panel.height,
        "training_rows": fitted.rows,
        "origins": len(fitted.origins),
        "rounds": fitted.booster.best_iteration,
        "forecast_rows": items.height,
        "category_rows": cats.height,
        "scenario_rows": scenarios.height,
        "backtest_item_wape": overall,
    }


def run_duckdb(folder: Path) -> dict[str, Any]:
    """The 28-day moving average per item over the same sales, in DuckDB SQL."""
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"set threads = {THREADS}")
    sql = f"""
        with days as (
            select item_id, date from read_parquet('{folder / "our_prices.parquet"}')
            group by all
        ), spans as (
            select item_id, min(date) first from days group by 1
        ), grid as (
            select s.item_id,
                unnest(generate_series(s.first, date '{LAST_DAY}', interval 1 day))::date as date
            from spans s
        ), daily as (
            select g.item_id, g.date, coalesce(s.units, 0) units
            from grid g left join read_parquet('{folder / "sales.parquet"}') s using (item_id, date)
        )
        select item_id, sum(units) / 28.0 as forecast
        from daily where date > date '{LAST_DAY}' - interval 28 day group by 1
    """
    rows = con.execute(f"select count(*), sum(forecast) from ({sql})").fetchone()
    return {"seconds": time.perf_counter() - t0, "forecast_rows": int(rows[0]) * 7}


def worker(engine: str, folder: Path, result: Path) -> None:
    found = run_nightowl(folder) if engine == "nightowl" else run_duckdb(folder)
    found["peak_rss_mib"] = peak_rss_mib()
    result.write_text(json.dumps(found, default=str))


# ---- the parent ----------------------------------------------------------------------------


def table(results: list[dict]) -> str:
    head = ["engine", "item-days", "features s", "training s", "forecast s", "total s",
            "peak RSS MiB", "x reference"]  # fmt: skip
    lines = []
    reference = next(r for r in results if r["engine"] == "duckdb")
    for r in results:
        phases = r.get("phases", {})
        lines.append(
            [
                r["engine"] + ("" if r["engine"] == "nightowl" else " (28-day average)"),
                f"{r.get('item_days', 0):,}" if "item_days" in r else "",
                *(
                    f"{phases[p]:.1f}" if p in phases else ""
                    for p in ("features", "training", "forecast")
                ),
                f"{r['seconds']:.1f}",
                f"{r['peak_rss_mib']:,.0f}",
                f"{r['seconds'] / reference['seconds']:.1f}x",
            ]
        )
    return text_table(head, lines, right={1, 2, 3, 4, 5, 6, 7})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.forecast",
        description=(
            "Demand forecast on synthetic history (default 20,000 items x 730 days): nightowl's "
            "features, training (rolling-origin backtest + final fit, default [market] settings) "
            "and one night's forecast, beside a 28-day moving average per item in DuckDB SQL, "
            "each in its own process. Prints one table (seconds per phase, peak RSS, time as a "
            "multiple of the reference), the backtest WAPE and writes "
            "bench/out/forecast-results.json.\n\n"
            "examples:\n"
            "  python -m bench.forecast                          # 20k items x 2 years\n"
            "  python -m bench.forecast --items 2000 --days 200  # quick smoke run"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--items", type=int, default=20_000, help="items (default 20,000)")
    parser.add_argument("--days", type=int, default=730, help="days of history (default 730)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        engine, folder, result = args.worker
        worker(engine, Path(folder), Path(result))
        return 0
    folder = make_data(args.items, args.days)
    results = []
    for engine in ("nightowl", "duckdb"):
        found = run_worker(
            "bench.forecast", [engine, str(folder), str(OUT / f".result-forecast-{engine}.json")],
            f"{engine:9}", OUT / f".result-forecast-{engine}.json",
        )  # fmt: skip
        results.append(found | {"engine": engine})
    print(table(results))
    ours = results[0]
    print(
        f"nightowl: {ours['training_rows']:,} training rows from {ours['origins']} origins, "
        f"{ours['rounds']} rounds; forecast {ours['forecast_rows']:,} item-days, "
        f"{ours['category_rows']:,} category-days, {ours['scenario_rows']:,} scenario rows"
    )
    wape = ours["backtest_item_wape"]
    print("backtest WAPE (item x day): " + ", ".join(f"{k} {v:.3f}" for k, v in wape.items()))
    for line in disturbed(results):
        print(line)
    write_results(
        RESULTS, "forecast", THREADS,
        code=code_version(
            "tasks/market/units.py", "tasks/market/forecast.py", "tasks/market/prices.py"
        ),
        items=args.items, days=args.days, results=results,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
