"""Scaling benchmark of the bucketed steps on Dask: the same warehouse, ranked and featurized by
a local cluster of 1 worker x 1 thread, then of N workers x 1 thread.

**Input**: the generator's shop at ``--users``/``--items``/``--days`` (``bench.nightly``'s cached
landing), run once through ``nightowl run`` (cached under ``bench/out/data/fanout-...``, reused
after): clean tables, user features and a trained recommender.

**Each configuration** runs in its own process with ``POLARS_MAX_THREADS=1`` and one-thread ONNX
Runtime sessions (``OMP_NUM_THREADS=1``), so the driver and each worker use one core's worth of
threads: a worker is a core. It starts a ``LocalCluster`` of that many one-thread worker
processes and runs, as the nightly steps do with ``[runner] fanout = "dask"``:

* ``features-user``: ``bucketed_user_features`` in ``--feature-buckets`` hash buckets (each
  worker reads its bucket from the warehouse's files itself);
* ``recommend``: ``recommendations_table`` with ``--bucket-users`` users per bucket (the driver
  builds the history, codes and item tables, then sends each bucket's own rows out).

Reported per step: wall seconds, the fan-out alone (first bucket out to last one back), each
worker's peak RSS, and the speed-up over the 1-worker run (the reference). Timings never go in
tests: this prints one table and writes ``bench/out/fanout-results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import DATA, OUT, REPO, code_version, log, text_table, write_results
from bench.nightly import END, landing, run_night

RESULTS = OUT / "fanout-results.json"


def warehouse(users: int, items: int, days: int) -> Path:
    """The data root after one nightly run on that shop: built on first use, then cached."""
    root = DATA / f"fanout-{users}u-{items}i-{days}d"
    if (root / "ready").exists():
        return root
    source, _ = landing(users, items, days, 1.0)
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(source, root / "landing", copy_function=os.link)
    log(f"building the warehouse: one nightly run of {users:,} users (once, then cached)…")
    night = run_night(root, END)
    if night["failure"]:
        raise SystemExit(night["failure"])
    (root / "ready").write_text(json.dumps({"seconds": night["seconds"]}))
    return root


def _worker_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(root: Path, workers: int, feature_buckets: int, bucket_users: int) -> dict[str, Any]:
    """One configuration, in this process (``POLARS_MAX_THREADS`` set by the parent)."""
    from distributed import Client, LocalCluster

    from nightowl.schemas.config import ModelSettings, RecommendSettings
    from nightowl.tasks.behaviour.features import bucketed_user_features
    from nightowl.tasks.behaviour.units import feature_sources
    from nightowl.tasks.common.fanout import Fanout
    from nightowl.tasks.recommend.units import recommendations_table
    from nightowl.warehouse.store import Warehouse
    from nightowl.warehouse.tables import (
        CLEAN_EVENTS,
        CLEAN_FEEDBACK,
        CLEAN_ITEMS,
        CLEAN_MARKET_PRICES,
    )

    wh, as_of = Warehouse(root), END + timedelta(days=1)
    steps: dict[str, Any] = {}
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        fanout = Fanout("dask", workers, cluster.scheduler_address)
        client.run(lambda: __import__("nightowl.tasks.recommend.units"))  # imports not timed
        sources = feature_sources(wh, as_of)
        tables = (CLEAN_EVENTS, CLEAN_ITEMS, CLEAN_MARKET_PRICES, CLEAN_FEEDBACK)
        events, items, market, feedback = (sources[t.name][0] for t in tables)
        assert events is not None
        started = time.perf_counter()
        frame = bucketed_user_features(
            events, as_of, items, market, feedback, buckets=feature_buckets, fanout=fanout
        )
        steps["features-user"] = {
            "seconds": time.perf_counter() - started,
            "rows": frame.height,
            "buckets": feature_buckets,
        }
        log(f"{workers} worker(s): features-user {steps['features-user']['seconds']:.1f} s")
        del frame
        cfg = RecommendSettings(bucket_users=bucket_users)
        started = time.perf_counter()
        report = recommendations_table(wh, as_of, cfg, ModelSettings(), fanout)
        steps["recommend"] = {
            "seconds": time.perf_counter() - started,
            "fanout_seconds": report.notes["fanout_seconds"],
            "rows": report.rows,
            "buckets": report.notes["buckets"],
            "users": report.notes["users"],
            "content_hash": report.content_hash,
        }
        log(f"{workers} worker(s): recommend {steps['recommend']['seconds']:.1f} s")
        peaks = client.run(_worker_peak_mib)
    return {
        "workers": workers,
        "steps": steps,
        "worker_peak_rss_mib": sorted(peaks.values()),
        "driver_peak_rss_mib": _worker_peak_mib(),
    }


def table(runs: list[dict[str, Any]]) -> str:
    base = runs[0]["steps"]
    lines = []
    for run in runs:
        for step, r in run["steps"].items():
            fan = r.get("fanout_seconds")
            ref_fan = base[step].get("fanout_seconds")
            lines.append(
                [
                    step,
                    f"{run['workers']} x 1",
                    f"{r['seconds']:.1f}",
                    f"{base[step]['seconds'] / r['seconds']:.2f}",
                    "" if fan is None else f"{fan:.1f}",
                    "" if fan is None else f"{ref_fan / fan:.2f}",
                    ", ".join(f"{m:,.0f}" for m in run["worker_peak_rss_mib"]),
                ]
            )
    head = ["step", "workers", "seconds", "speed-up", "fan-out s", "fan-out speed-up",
            "peak RSS per worker MiB"]  # fmt: skip
    return text_table(head, lines, {2, 3, 4, 5})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout",
        description=__doc__.split("\n\n")[0] + "\n\nexamples:\n"
        "  python -m bench.fanout                                   # 200k users, 1 vs 2 workers\n"
        "  python -m bench.fanout --users 50000 --workers 1 2\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=200_000, help="users (default 200k)")
    parser.add_argument("--items", type=int, default=1_000, help="items (default 1,000)")
    parser.add_argument("--days", type=int, default=90, help="days of history (default 90)")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="cluster sizes (default 1 2)"
    )
    parser.add_argument("--feature-buckets", type=int, default=8, help="default 8")
    parser.add_argument("--bucket-users", type=int, default=25_000, help="default 25,000")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one configuration
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        found = measure(args.root, args.one, args.feature_buckets, args.bucket_users)
        print(json.dumps(found))
        return 0
    root = warehouse(args.users, args.items, args.days)
    runs = []
    env = os.environ | {"POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1"}
    for n in args.workers:
        child = [sys.executable, "-m", "bench.fanout", "--one", str(n), "--root", str(root),
                 "--feature-buckets", str(args.feature_buckets),
                 "--bucket-users", str(args.bucket_users)]  # fmt: skip
        done = subprocess.run(child, cwd=REPO, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    same = {r["steps"]["recommend"]["content_hash"] for r in runs}
    print(f"input: {args.users:,} users, {args.items:,} items, {args.days} days")
    print(table(runs))
    print(f"recommendations the same bytes in every configuration: {len(same) == 1}")
    write_results(
        RESULTS, "fanout", 1, code=code_version(), input=vars(args) | {"root": str(root)},
        runs=runs, identical=len(same) == 1,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
