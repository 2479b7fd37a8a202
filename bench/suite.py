"""The benchmark suite: every benchmark at one size, one table, one Markdown file.

``make bench SIZE=S`` (or ``python -m bench.suite --size S``) runs, each in its own processes as
they always do: ``bench.ingest``, ``bench.features``, ``bench.score``, ``bench.recommend``,
``bench.feedback``, ``bench.forecast``, ``bench.report`` and ``bench.nightly`` (the whole nightly
run, whose train steps are the suite's training rows), with the arguments of the size below.
Then it reads what each wrote under ``bench/out/`` and prints one table: step, engine, input,
seconds, rate, peak RSS and the speed ratio beside the component's reference (DuckDB SQL,
pandas, LightGBM's predict, a lexicon, a moving average), with the target where an issue set one.
The same table, the sizes and the machine go to ``bench/RESULTS.md`` (``--markdown``), which the
README links.

A benchmark that fails is a row saying so; the others still run. Sizes (S: a smoke run, about 20
minutes; M: the sizes the issues set their targets at, about an hour; L: M's components and the
nightly at 1M users and about 100M events over 90 days, held to 8 GiB):
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import OUT, REPO, log, text_table

MARKDOWN = REPO / "bench" / "RESULTS.md"

#: size → benchmark → its command-line arguments.
SIZES: dict[str, dict[str, list[str]]] = {
    "S": {
        "ingest": ["--rows", "1000000", "--days", "30"],
        "features": ["--events", "2000000", "--users", "20000"],
        "score": ["--rows", "100000", "1000000", "--tensorised-cpu-max-rows", "100000"],
        "recommend": ["--users", "20000", "--items", "2000"],
        "feedback": ["--texts", "50000", "--only", "throughput"],
        "forecast": ["--items", "2000", "--days", "365"],
        "report": ["--events", "2000000", "--users", "20000"],
        "nightly": ["--users", "20000", "--items", "500", "--days", "60", "--nights", "2"],
    },
    "M": {
        "ingest": ["--rows", "10000000", "--days", "30"],
        "features": ["--events", "20000000", "--users", "200000", "--pandas-events", "5000000"],
        "score": ["--rows", "1000000", "10000000"],
        "recommend": ["--users", "200000", "--items", "20000"],
        "feedback": ["--texts", "1000000", "--only", "throughput"],
        "forecast": ["--items", "20000", "--days", "730"],
        "report": ["--events", "20000000", "--users", "200000"],
        "nightly": ["--users", "200000", "--items", "1000", "--days", "90", "--nights", "2"],
    },
}
#: L: M's components and the nightly at 1M users and about 100M events, one step at a time.
SIZES["L"] = SIZES["M"] | {
    "nightly": [
        "--users", "1000000", "--items", "2000", "--days", "90", "--activity", "3.5",
        "--steps-at-once", "1", "--max-rss-gib", "8",
    ],
}  # fmt: skip
__doc__ += "\n".join(
    f"\n{size}:\n" + "\n".join(f"  {name:10} {' '.join(args)}" for name, args in runs.items())
    for size, runs in SIZES.items()
)


def cells(
    step: str,
    engine: str,
    what: str,
    r: dict[str, Any],
    unit: str,
    *,
    ratio: float | None = None,
    target: float | None = None,
    met: bool | None = None,
) -> dict[str, Any]:
    """One row of the suite's table."""
    return {
        "step": step, "engine": engine, "input": what, "seconds": r.get("seconds"),
        "rate": r.get("rows_per_s"), "unit": unit, "peak_rss_mib": r.get("peak_rss_mib"),
        "ratio": ratio, "target": target, "met": met,
    }  # fmt: skip


def ingest_rows(doc: dict) -> list[dict]:
    return [
        cells(
            "ingest",
            r["engine"],
            f"{r['rows']:,} events, {r['format']}",
            r,
            "rows/s",
            ratio=r.get("ratio"),
            target=doc["targets"][r["format"]] if "ratio" in r else None,
            met=r.get("met"),
        )
        for r in doc["results"]
    ]


def features_rows(doc: dict) -> list[dict]:
    return [
        cells(
            "features",
            r["engine"],
            f"{r['events']:,} events, {r['users']:,} users",
            r,
            "events/s",
            ratio=r.get("ratio"),
            target=r.get("target"),
            met=r.get("met"),
        )
        for r in doc["results"]
    ]


def score_rows(doc: dict) -> list[dict]:
    from bench.score import ENGINES, target_of

    rows = []
    for r in doc["results"]:
        ratio = r.get("ratio")
        target = target_of(r["engine"]) if ratio is not None else None
        rows.append(cells("score", ENGINES[r["engine"]], f"{r['rows']:,} rows", r, "rows/s",
                          ratio=ratio, target=target, met=r.get("met")))  # fmt: skip
    return rows


def recommend_rows(doc: dict) -> list[dict]:
    given = doc["results"]  # side → result
    results = given if isinstance(given, dict) else {r["engine"]: r for r in given}
    rows = []
    for side, r in results.items():
        what = f"{r['users']:,} users, {r['candidates']:,} candidates"
        rows.append(cells("recommend", side, what, r, "users/s"))
    return rows


def feedback_rows(doc: dict) -> list[dict]:
    return [
        cells(
            "feedback",
            r.get("label", r["engine"]),
            f"{r['texts_scored']:,} texts",
            r,
            "texts/s",
            ratio=r.get("ratio"),
        )
        for r in doc.get("results", [])
    ]


def forecast_rows(doc: dict) -> list[dict]:
    rows = []
    for r in doc["results"]:
        what = f"{doc['items']:,} items x {doc['days']} days"
        engine = r["engine"] + ("" if r["engine"] == "nightowl" else " (28-day average)")
        # The reference is a moving average, not the same work: no speed ratio.
        rows.append(cells("forecast", engine, what, r | {"rows_per_s": None}, ""))
    return rows


def report_rows(doc: dict) -> list[dict]:
    return [
        cells(
            "report",
            f"{r['engine']}: {r['work']}",
            f"{r['events']:,} events",
            r,
            "events/s",
            ratio=r.get("ratio"),
        )
        for r in doc["results"]
    ]


#: Steps of the nightly run shown apart (the others are in its own table).
NIGHTLY_SHOWN = (
    "ingest-events", "clean-events", "features-user", "train-propensity", "score-users",
    "train-recommender", "recommend", "train-demand", "forecast", "train-sentiment",
    "feedback-scores", "support-queue", "report",
)  # fmt: skip


def nightly_rows(doc: dict) -> list[dict]:
    given = doc["input"]
    rows = []
    for night in doc["nights"]:
        what = f"night {night['night']}"
        for s in night["steps"]:
            if s["step"] in NIGHTLY_SHOWN:
                step = "train" if s["step"].startswith("train-") else "nightly"
                rows.append(cells(step, s["step"], what, s | {"rows_per_s": None}, ""))
        total = (
            f"{given['users']:,} users, {given['events']:,} events, {given['days']} days, "
            f"night {night['night']}"
        )
        bound = doc.get("bound_mib")
        met = None if bound is None else night["peak_rss_mib"] <= bound
        if night.get("failure"):  # a night that did not finish meets no bound
            met = False
        rows.append(cells("nightly", "whole night", total, night | {"rows_per_s": None}, "",
                          met=met))  # fmt: skip
    return rows


#: benchmark → its results file and how its results become rows.
READERS: dict[str, tuple[str, Callable[[dict], list[dict]]]] = {
    "ingest": ("ingest-results.json", ingest_rows),
    "features": ("features-results.json", features_rows),
    "score": ("score-results.json", score_rows),
    "recommend": ("recommend-results.json", recommend_rows),
    "feedback": ("feedback-results.json", feedback_rows),
    "forecast": ("forecast-results.json", forecast_rows),
    "report": ("report-results.json", report_rows),
    "nightly": ("nightly-results.json", nightly_rows),
}


def run_one(name: str, args: list[str]) -> tuple[list[dict], float, str | None]:
    """Run one benchmark; its rows, wall seconds and, if it failed, why."""
    results = OUT / READERS[name][0]
    results.unlink(missing_ok=True)
    log(f"{name}: python -m bench.{name} {' '.join(args)}")
    started = time.perf_counter()
    env = os.environ | {"POLARS_MAX_THREADS": "2"}
    done = subprocess.run([sys.executable, "-m", f"bench.{name}", *args], cwd=REPO, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0 or not results.exists():
        return [], wall, f"exit {done.returncode}"
    rows, _, why = read_one(name)
    return rows, wall, why


def read_one(name: str) -> tuple[list[dict], str, str | None]:
    """The rows of the results file a benchmark's last run left, when it ran, and what is wrong
    with the file if it cannot be read."""
    results = OUT / READERS[name][0]
    if not results.exists():
        return [], "none", f"no {results.name}: run it first"
    try:
        doc = json.loads(results.read_text())
        code = doc.get("code")
        commit = (code.get("commit") if isinstance(code, dict) else code) or "?"
        return READERS[name][1](doc), f"{doc['when']}, commit {commit[:7]}", None
    except (KeyError, TypeError, ValueError) as exc:  # a results file in a shape not known here
        return [], "unreadable", f"unreadable {results.name}: {exc!r}"


def fmt(row: dict[str, Any]) -> list[str]:
    def num(value: float | None, spec: str) -> str:
        return "" if value is None else format(value, spec)

    verdict = "" if row["met"] is None else ("yes" if row["met"] else "NO")
    return [
        row["step"], row["engine"], row["input"], num(row["seconds"], ".1f"),
        "" if row["rate"] is None else f"{row['rate']:,.0f} {row['unit']}",
        num(row["peak_rss_mib"], ",.0f"), "" if row["ratio"] is None else f"{row['ratio']:.2f}x",
        "" if row["target"] is None else f">= {row['target']:g}x", verdict,
    ]  # fmt: skip


HEAD = ["step", "engine", "input", "seconds", "rate", "peak RSS MiB", "ratio", "target", "met"]


def markdown(
    size: str,
    rows: list[dict],
    walls: dict[str, float],
    failed: dict[str, str],
    ran: dict[str, str] | None = None,
) -> str:
    made = f"Made by `make bench SIZE={size}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    if ran is not None:  # --tabulate: the runs happened before, perhaps at other sizes
        made = (
            f"Tabulated by `python -m bench.suite --tabulate` on {datetime.now(UTC):%Y-%m-%d %H:%M}"
            " UTC from the results files of the benchmarks' last runs ("
            + "; ".join(f"{k}: {v}" for k, v in ran.items())
            + "; each row's input says its size)"
        )
    lines = [
        f"# Benchmark results, size {size}" if ran is None else "# Benchmark results",
        "",
        f"{made}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}. "
        "One run; each benchmark's own section of [bench/README.md](README.md) says what it "
        "measures and against which reference. ratio: the speed of nightowl over the "
        "reference's (more than 1: nightowl is faster), on the row the benchmark puts it. "
        "Peak RSS of a nightly step: the run's whole process tree while the step ran.",
        "",
        "| " + " | ".join(HEAD) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * 4 + ["---"] * 2) + "|",
        *("| " + " | ".join(fmt(r)) + " |" for r in rows),
    ]
    if walls:
        lines += [
            "",
            "Wall time per benchmark (input generation included): "
            + ", ".join(f"{k} {v / 60:.1f} min" for k, v in walls.items())
            + ".",
        ]
    if failed:
        lines += ["", "Failed: " + ", ".join(f"{k} ({v})" for k, v in failed.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.suite",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  make bench SIZE=S\n  python -m bench.suite --size M\n"
        "  python -m bench.suite --size S --only score nightly\n"
        "  python -m bench.suite --tabulate --only nightly --markdown bench/RESULTS-L.md",
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="S", help="default S")
    parser.add_argument("--only", nargs="+", choices=list(READERS), help="run these alone")
    parser.add_argument("--markdown", type=Path, default=MARKDOWN, help=f"default {MARKDOWN}")
    parser.add_argument(
        "--tabulate",
        action="store_true",
        help="run nothing: make the table from the results files the benchmarks' last runs "
        "left in bench/out/ (e.g. a long bench.nightly run at size L)",
    )
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    walls: dict[str, float] = {}
    failed: dict[str, str] = {}
    ran: dict[str, str] | None = {} if args.tabulate else None
    for name, bench_args in SIZES[args.size].items():
        if args.only and name not in args.only:
            continue
        if ran is not None:
            found, ran[name], why = read_one(name)
        else:
            found, walls[name], why = run_one(name, bench_args)
        rows += found
        if why:
            failed[name] = why
            rows.append(cells(name, "FAILED", why, {}, ""))
    print(text_table(HEAD, [fmt(r) for r in rows], right={3, 4, 5, 6}))
    args.markdown.write_text(markdown(args.size, rows, walls, failed, ran))
    log(f"wrote {args.markdown}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
