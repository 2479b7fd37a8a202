"""End-to-end nightly benchmark: wall time and peak memory of every step of `nightowl run`.

The generator's shop (``tasks.generate``) at a given size is generated once and cached under
``bench/out/data/nightly-<users>u-<items>i-<days>d/``; each run hard-links it into the landing
folder of a fresh data root and runs ``python -m nightowl run --date <last day>`` (the embedded
Prefect server, as users run it) for ``--nights`` nights, each in its own process. The first night
is the heavy one: it ingests every file of the period, cleans it and trains every model; the
nights after it ingest one day's files and score with the champions.

While a night runs, the parent samples the resident memory of its whole process tree (the run
and the Prefect server it starts) every 0.2 s. Each step's start and end come from Prefect's own
task-run records, so the table gives each step's wall seconds and the largest tree RSS seen while
it ran. Steps run concurrently where the flow allows (the sources, the model branches), so a
step's peak is that of everything running beside it; the night's peak is the number to hold
against a memory bound (``--max-rss-gib``, 8 GiB for size L in #9).

There is no reference engine for a whole nightly run; the component benchmarks have theirs.
Writes ``bench/out/nightly-results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import DATA, OUT, REPO, code_version, log, text_table, write_results

RESULTS = OUT / "nightly-results.json"
END = date(2026, 11, 27)
SEED = 7
SAMPLE_SECONDS = 0.2


def landing(users: int, items: int, days: int, activity: float) -> tuple[Path, dict]:
    """The cached landing folder of that size, generated on first use, and how long that took."""
    base = DATA / f"nightly-{users}u-{items}i-{days}d-{activity:g}a"
    meta_path = base / "generated.json"
    if meta_path.exists():
        return base / "landing", json.loads(meta_path.read_text())
    from nightowl.demo.generate import generate_landing

    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    log(f"generating {users:,} users x {items:,} items x {days} days (once, then cached)…")
    started = time.perf_counter()
    summary = generate_landing(
        base / "landing", users=users, items=items, days=days, seed=SEED, end_date=END,
        activity=activity, progress=lambda msg: log(msg),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    events = summary.rows["events"]
    meta = {
        "users": users, "items": items, "days": days, "activity": activity, "events": events,
        "seconds": seconds,
    }  # fmt: skip
    meta_path.write_text(json.dumps(meta))
    return base / "landing", meta


def tree_rss_kib(root: int) -> int:
    """Resident memory (KiB) of process ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid = int(entry.name)
        children.setdefault(int(fields["PPid"]), []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


def run_night(root: Path, night: date, threads: int | None = None) -> dict[str, Any]:
    """One ``nightowl run`` in a child process, its tree RSS sampled meanwhile (``threads``:
    ``[runner] threads``, how many steps run at once)."""
    cmd = [sys.executable, "-m", "nightowl", "run", "--data-root", str(root), "--date", str(night)]
    env = os.environ | {"POLARS_MAX_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    if threads is not None:
        env["NIGHTOWL_RUNNER__THREADS"] = str(threads)
    log_path = root / f"run-{night}.log"
    samples: list[tuple[float, int]] = []
    with log_path.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append((time.time(), tree_rss_kib(proc.pid)))
                done.wait(SAMPLE_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.time()
        sampler.start()
        code = proc.wait()
        done.set()
        sampler.join()
    wall = time.time() - started
    # A failed night still has its steps' figures: they say which step failed, and how big it got.
    failure = None
    if code != 0:
        tail = log_path.read_text().splitlines()[-15:]
        failure = f"nightowl run --date {night} failed (exit {code}):\n" + "\n".join(tail)
    return {
        "night": str(night),
        "seconds": wall,
        "peak_rss_mib": max((kib for _, kib in samples), default=0) / 1024,
        "steps": step_windows(root, samples),
        "log": str(log_path),
        "failure": failure,
    }


def step_windows(root: Path, samples: list[tuple[float, int]]) -> list[dict[str, Any]]:
    """Each task run of the newest flow run: wall seconds and the peak tree RSS while it ran."""
    db = sqlite3.connect(f"file:{root / '_state' / 'prefect' / 'prefect.db'}?mode=ro", uri=True)
    try:
        (flow_run,) = db.execute(
            "select id from flow_run order by start_time desc limit 1"
        ).fetchone()
        runs = db.execute(
            "select name, start_time, end_time, state_name from task_run "
            "where flow_run_id = ? and start_time is not null order by start_time",
            (flow_run,),
        ).fetchall()
    finally:
        db.close()

    def stamp(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    steps = []
    for name, start, end, state in runs:
        first, last = stamp(start), stamp(end) if end else samples[-1][0]
        seen = [kib for t, kib in samples if first - SAMPLE_SECONDS <= t <= last + SAMPLE_SECONDS]
        steps.append({
            "step": name, "seconds": last - first, "state": state,
            "peak_rss_mib": max(seen, default=0) / 1024,
        })  # fmt: skip
    return steps


def table(nights: list[dict[str, Any]], bound_mib: float | None) -> str:
    head = ["night", "step", "seconds", "peak RSS MiB (while it ran)", "state"]
    lines = []
    for night in nights:
        for s in night["steps"]:
            if s["seconds"] < 0.05 and s["state"] == "Completed":
                continue  # cache hits and bookkeeping tasks: nothing to read
            lines.append([night["night"], s["step"], f"{s['seconds']:.1f}",
                          f"{s['peak_rss_mib']:,.0f}", s["state"]])  # fmt: skip
        verdict = ""
        if bound_mib is not None:
            met = night["peak_rss_mib"] <= bound_mib
            verdict = f"{'within' if met else 'ABOVE'} {bound_mib / 1024:g} GiB"
        lines.append([night["night"], "whole night", f"{night['seconds']:.1f}",
                      f"{night['peak_rss_mib']:,.0f}", verdict])  # fmt: skip
    return text_table(head, lines, right={2, 3})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.nightly",
        description=__doc__.split("\n\n")[0] + "\n\nexamples:\n"
        "  python -m bench.nightly --users 20000 --days 60           # size S\n"
        "  python -m bench.nightly --users 200000 --days 90 --nights 2\n"
        "  python -m bench.nightly --users 1000000 --items 2000 --activity 3.5 \\\n"
        "      --steps-at-once 1 --max-rss-gib 8 --keep                   # size L\n"
        "  python -m bench.nightly --users 1000000 --items 2000 --activity 3.5 --resume",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=200_000, help="users (default 200k)")
    parser.add_argument("--items", type=int, default=1_000, help="items (default 1,000)")
    parser.add_argument("--days", type=int, default=90, help="days of history (default 90)")
    parser.add_argument("--nights", type=int, default=1, help="nights to run (default 1)")
    parser.add_argument(
        "--activity",
        type=float,
        default=1.0,
        help="the generator's activity (3.5: 100 events/user)",
    )
    parser.add_argument("--max-rss-gib", type=float, help="memory bound the nights must keep")
    parser.add_argument(
        "--steps-at-once",
        type=int,
        help="[runner] threads: steps run at once (1: one at a time, the least memory)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data root afterwards")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="run again in the data root a failed --keep run left: only what failed reruns "
        "(while the code is unchanged: cache keys hold its version)",
    )
    args = parser.parse_args(argv)

    code = code_version()  # now: the code may change while a long run goes on
    source, generated = landing(args.users, args.items, args.days, args.activity)
    root = OUT / "run-nightly"
    if not (args.resume and root.exists()):
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(source, root / "landing", copy_function=os.link)  # no bytes copied
    nights = []
    for k in reversed(range(args.nights)):
        night = END - timedelta(days=k)
        log(f"night {night}: running…")
        done = run_night(root, night, args.steps_at_once)
        nights.append(done)
        log(f"night {night}: {done['seconds']:.0f}s, peak {done['peak_rss_mib']:,.0f} MiB")
        if done["failure"]:
            break
    bound = None if args.max_rss_gib is None else args.max_rss_gib * 1024
    print(
        f"input: {generated['users']:,} users, {generated['items']:,} items, {generated['days']} "
        f"days, {generated['events']:,} events (generated in {generated['seconds']:.0f}s, cached)"
    )
    print(table(nights, bound))
    print("peak RSS: the run's whole process tree (it and the Prefect server it starts)")
    failure = nights[-1]["failure"]
    if failure:
        print(failure, file=sys.stderr)
    met = None if bound is None or failure else all(n["peak_rss_mib"] <= bound for n in nights)
    write_results(
        RESULTS, "nightly", 2, code=code, input=generated, nights=nights,
        bound_mib=bound, met=met, steps_at_once=args.steps_at_once,
    )  # fmt: skip
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failure else 0


if __name__ == "__main__":
    raise SystemExit(main())
