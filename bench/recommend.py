"""Recommendation benchmark: top-10 lists for 200k users over a 20k-item catalogue, end to end.

**Input** (generated once, seed fixed, cached as Parquet under ``bench/out/data``): ``--users``
users (default 200k) and ``--items`` items (default 20k) in 40 categories, over 120 days ending
2026-11-27. Each user prefers one or two categories; items within a category have Zipf
popularity. Users buy in Poisson(3) baskets of 1-4 items (85 % from their categories, 20 % of
the items a repeat of their own earlier purchase) and view about five items a month. That is
5.5M events: 1.5M purchase lines and 4.0M views.

**nightowl** (its own process): the nightly path of ``tasks.recommendations.bucketed_lists`` as
of 2026-11-28 — history, item tables (neighbours, best sellers, trending, popular), then per user
bucket of 25k: candidates (cap 200), ranker features, ONNX Runtime scores with a lambdarank model
trained beforehand on the same data (not timed; its own line: 300 trees of 31 leaves, about the
size early stopping picks on Online Retail), and the top 10 per user.
**popularity** (its own process): the plain popularity run a team starts with — the same events
read, the ten best sellers of the last 28 days, one list for every active user.

Both sides read the same Parquet file and build lists for the same users; each reports seconds,
users per second, candidate rows per second and its own peak RSS (``VmHWM``). Timings never go
in tests: this prints one table and writes ``bench/out/recommend-results.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

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

RESULTS = OUT / "recommend-results.json"
SEED = 20261202
THREADS = 2
END = date(2026, 11, 27)
DAYS = 120
CATEGORIES = 40
#: Trees in the benchmark's ranker: a model of realistic size, not whatever early stopping picks.
ROUNDS = 300


def dataset_paths(users: int, items: int) -> tuple[Path, Path]:
    stem = f"recommend-{users}u-{items}i"
    return DATA / f"{stem}-events.parquet", DATA / f"{stem}-items.parquet"


def generate(users: int, items: int) -> tuple[Path, Path]:
    """The events and catalogue files (cached): baskets, repeats and views as described above."""
    import polars as pl

    events_path, items_path = dataset_paths(users, items)
    if events_path.exists() and items_path.exists():
        return events_path, items_path
    DATA.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    category = np.sort(rng.integers(0, CATEGORIES, size=items))
    starts = np.searchsorted(category, np.arange(CATEGORIES))
    sizes = np.diff(np.append(starts, items))
    # Zipf-like popularity within each category.
    within = np.concatenate([1.0 / np.arange(1, n + 1) ** 0.9 for n in sizes])

    def pick(cats: np.ndarray) -> np.ndarray:
        u = rng.random(len(cats))
        out = np.empty(len(cats), dtype=np.int64)
        for c in range(CATEGORIES):
            mask = cats == c
            if not mask.any():
                continue
            w = within[starts[c] : starts[c] + sizes[c]]
            cdf = np.cumsum(w) / w.sum()
            out[mask] = starts[c] + np.searchsorted(cdf, u[mask])
        return out

    favourite = rng.integers(0, CATEGORIES, size=(users, 2))
    n_baskets = rng.poisson(3, size=users)
    b_user = np.repeat(np.arange(users), n_baskets)
    b_day = rng.integers(0, DAYS, size=len(b_user))
    b_size = rng.integers(1, 5, size=len(b_user))
    line_basket = np.repeat(np.arange(len(b_user)), b_size)
    line_user = b_user[line_basket]
    own = rng.random(len(line_user)) < 0.85
    cats = np.where(own, favourite[line_user, rng.integers(0, 2, len(line_user))],
                    rng.integers(0, CATEGORIES, len(line_user)))  # fmt: skip
    line_item = pick(cats)
    # A fifth of the lines repeat an item the user bought in an earlier basket of the same user.
    first_line = np.r_[0, np.flatnonzero(np.diff(line_user)) + 1]
    first_of_user = np.repeat(first_line, np.diff(np.r_[first_line, len(line_user)]))
    repeat = (rng.random(len(line_user)) < 0.2) & (np.arange(len(line_user)) > first_of_user)
    back = rng.random(len(line_user)) * (np.arange(len(line_user)) - first_of_user)
    earlier = first_of_user + back.astype(np.int64)
    line_item = np.where(repeat, line_item[earlier], line_item)
    n_views = rng.poisson(20, size=users)
    v_user = np.repeat(np.arange(users), n_views)
    liked = favourite[v_user, rng.integers(0, 2, len(v_user))]
    v_cats = np.where(
        rng.random(len(v_user)) < 0.85, liked, rng.integers(0, CATEGORIES, len(v_user))
    )
    v_item = pick(v_cats)
    start = datetime(END.year, END.month, END.day, tzinfo=UTC) - timedelta(days=DAYS - 1)
    line_seconds = b_day[line_basket] * 86400 + rng.integers(0, 86400, len(line_user))
    view_seconds = rng.integers(0, DAYS * 86400, len(v_user))
    user_ids = np.char.add("u", np.char.zfill(np.arange(users).astype(str), 7))
    item_ids = np.char.add("i", np.char.zfill(np.arange(items).astype(str), 6))
    price = np.round(rng.lognormal(3, 0.6, size=items), 2)
    frame = pl.DataFrame(
        {
            "user_id": np.concatenate([user_ids[line_user], user_ids[v_user]]),
            "item_id": np.concatenate([item_ids[line_item], item_ids[v_item]]),
            "event_type": ["purchase"] * len(line_user) + ["view"] * len(v_user),
            "order_id": np.concatenate(
                [np.char.add("o", line_basket.astype(str)), np.full(len(v_user), None)]
            ),
            "seconds": np.concatenate([line_seconds, view_seconds]),
            "quantity": np.ones(len(line_user) + len(v_user), dtype=np.int64),
            "price": np.concatenate([price[line_item], price[v_item]]),
        }
    ).with_columns(
        event_time=pl.lit(start) + pl.duration(seconds=pl.col("seconds")),
        session_id=pl.lit(None, pl.String),
        order_id=pl.col("order_id").cast(pl.String),
    ).drop("seconds").sort("event_time")  # fmt: skip
    frame.write_parquet(events_path)
    pl.DataFrame(
        {
            "item_id": item_ids,
            "title": np.char.add("Item ", item_ids),
            "category": np.char.add("cat", category.astype(str)),
            "price": price,
            "active": np.ones(items, dtype=bool),
        }
    ).with_columns(created_at=pl.lit(None, pl.Datetime("us", "UTC"))).write_parquet(items_path)
    log(f"generated {frame.height:,} events ({(frame['event_type'] == 'purchase').sum():,} "
        f"purchase lines) for {users:,} users and {items:,} items")  # fmt: skip
    return events_path, items_path


def model_path(users: int, items: int) -> Path:
    return DATA / f"recommend-{users}u-{items}i-ranker-{ROUNDS}.onnx"


def train_model(users: int, items: int) -> dict[str, Any]:
    """A lambdarank model trained as the nightly flow would (cached): its seconds and metrics."""
    import polars as pl

    from nightowl.schemas.config import RecommendSettings
    from nightowl.tasks.models import export
    from nightowl.tasks.recommend import units as recs

    path = model_path(users, items)
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return json.loads(meta.read_text())
    events_path, items_path = dataset_paths(users, items)
    cfg = RecommendSettings()
    inputs = recs.Inputs(pl.scan_parquet(events_path), pl.scan_parquet(items_path), None, [])
    started = time.perf_counter()
    train_as_of = END + timedelta(days=1 - 2 * cfg.horizon_days)
    buyers = recs.rec.purchased_in_window(inputs.events, train_as_of, cfg.horizon_days)
    users_df = recs.rec.active_users(inputs.events, train_as_of, cfg.active_days).join(
        buyers.select("user_id").unique(), on="user_id", how="semi"
    )
    snap = recs.snapshot(inputs, train_as_of, cfg, events=inputs.events, users=users_df)
    booster = recs.fit_ranker(recs.learning_rows([snap], cfg), cfg, rounds=ROUNDS)
    path.write_bytes(export.onnx_from_booster(booster))
    found = {"train_seconds": round(time.perf_counter() - started, 1),
             "rounds": booster.current_iteration()}  # fmt: skip
    meta.write_text(json.dumps(found))
    return found


def worker(side: str, users: int, items: int, bucket_users: int, result: Path) -> None:
    """One side's timed run, in this process; writes its measurements to ``result``."""
    import polars as pl

    from nightowl.schemas.config import ModelSettings, RecommendSettings
    from nightowl.tasks.models import score
    from nightowl.tasks.recommend import lists as rec
    from nightowl.tasks.recommend import units as recs

    events_path, items_path = dataset_paths(users, items)
    cfg = RecommendSettings(bucket_users=bucket_users)
    as_of = END + timedelta(days=1)
    started = time.perf_counter()
    events, catalogue = pl.scan_parquet(events_path), pl.scan_parquet(items_path)
    active = rec.active_users(events, as_of, cfg.active_days)
    if side == "nightowl":
        history = rec.history_as_of(events, catalogue, None, as_of, cfg)
        sess = score.session(model_path(users, items).read_bytes(), [score.CPU])
        scorer = score.Scorer(
            session=sess, graph=score.TREE_ENSEMBLE, provider=score.CPU, placement={},
            batch_rows=ModelSettings().score_batch_rows,
        )  # fmt: skip
        prepared = time.perf_counter() - started
        lists, stats = recs.bucketed_lists(history, active, cfg, recs.onnx_scorer(scorer), "bench")
        candidates, n_buckets = stats.candidates, stats.buckets
        phases = {"history": round(prepared, 3), **stats.seconds}
    else:
        recent = rec.events_before(events, as_of).filter(
            (pl.col("event_type") == "purchase") & (pl.col("days_ago") < 28)
        )
        top = (
            recent.group_by("item_id").len().sort(["len", "item_id"], descending=[True, False])
            .head(cfg.top_k).with_columns(rank=pl.int_range(1, pl.len() + 1)).collect()
        )  # fmt: skip
        lists = active.join(top.select("item_id", "rank"), how="cross")
        candidates, n_buckets, phases = lists.height, 1, {}
    lists.write_parquet(OUT / f"recommend-{side}.parquet")
    seconds = time.perf_counter() - started
    result.write_text(
        json.dumps(
            {
                "seconds": seconds,
                "users": active.height,
                "rows": lists.height,
                "candidates": candidates,
                "buckets": n_buckets,
                "rows_per_s": active.height / seconds,
                "candidates_per_s": candidates / seconds,
                "peak_rss_mib": peak_rss_mib(),
                "engine": side,
                "phases": phases,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument(
        "--bucket-users", type=int, default=25_000, help="users per bucket (recommend.bucket_users)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.side, args.users, args.items, args.bucket_users, args.result)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    generate(args.users, args.items)
    trained = train_model(args.users, args.items)
    log(f"ranker trained in {trained['train_seconds']} s ({trained['rounds']} rounds)")
    results = {}
    for side in ("nightowl", "popularity"):
        result = OUT / f"recommend-{side}.json"
        sized = ["--users", str(args.users), "--items", str(args.items),
                 "--bucket-users", str(args.bucket_users)]  # fmt: skip
        results[side] = run_worker(
            "bench.recommend", ["--side", side, *sized, "--result", str(result)], side, result
        )
    base = results["popularity"]
    lines = []
    for side, r in results.items():
        ratio = "" if side == "popularity" else f"{r['seconds'] / base['seconds']:.1f}x"
        lines.append([
            side, f"{r['users']:,}", f"{r['candidates']:,}", str(r["buckets"]),
            f"{r['seconds']:.1f}", f"{r['rows_per_s']:,.0f}", f"{r['candidates_per_s']:,.0f}",
            f"{r['peak_rss_mib']:,.0f}", ratio,
        ])  # fmt: skip
    head = ["side", "users", "candidates", "buckets", "seconds", "users/s", "candidates/s",
            "peak RSS MiB", "time vs popularity"]  # fmt: skip
    print(f"\nrecommendations for {args.users:,} users x {args.items:,} items, top 10, "
          f"buckets of {args.bucket_users:,} users, {THREADS} threads\n")  # fmt: skip
    print(text_table(head, lines, right=set(range(1, 9))))
    phases = results["nightowl"]["phases"]
    print("\nnightowl by phase (s): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    for warning in disturbed(list(results.values())):
        print(warning)
    write_results(
        RESULTS, "recommend", THREADS, users=args.users, items=args.items,
        bucket_users=args.bucket_users, training=trained,
        results=results, code=code_version("tasks/recommend/lists.py", "tasks/recommend/units.py"),
    )  # fmt: skip


if __name__ == "__main__":
    main()
