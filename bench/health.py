"""What the nightly model-health step costs: its seconds beside the whole night's.

The generator's shop at a given size (cached, as ``bench.nightly`` does) is run as ``nightowl
demo`` runs it: ``--history-nights`` nights about five weeks back (the first ingests the history
and trains every model), then the ``--nights`` last nights. Each night is its own ``nightowl
run`` process; the model-health step's seconds come from Prefect's task-run records. The first
of the last nights judges the backfilled nights (a catch-up); on a steady night one served night
per model matures. That steady cost is measured apart, in this process: the newest judged
night's ``model_health`` partition is removed and the step judges it again (all four models)
and writes tonight's drift, timed. The share printed is that cost over the last night's wall
time (target: under 5 %).

There is no reference engine: the step is measured against the night it is part of.
Writes ``bench/out/health-results.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from datetime import date, timedelta

from bench.common import OUT, code_version, log, text_table, write_results
from bench.nightly import END, landing, run_night

RESULTS = OUT / "health-results.json"


def steady_cost(root: os.PathLike, last: date) -> dict:
    """Judge the newest judged night again (its partition removed) and write tonight's drift,
    timed: what one steady night adds."""
    from nightowl.flows.settings import load_settings
    from nightowl.tasks.health.units import Sections, model_health
    from nightowl.warehouse.store import Warehouse
    from nightowl.warehouse.tables import MODEL_HEALTH

    settings = load_settings(None, data_root=str(root))
    wh = Warehouse(settings.data_root)
    sections = Sections(
        settings.model, settings.recommend, settings.market, settings.feedback, settings.health
    )
    tonight = last + timedelta(days=1)
    # Once to import and warm what the nightly process has warm by then (nothing is judged).
    model_health(wh, tonight, sections)
    judged = wh.manifests(MODEL_HEALTH.layer, MODEL_HEALTH.name)
    if not judged:
        raise SystemExit("no served night was judged: run more --history-nights or --days")
    newest = judged[-1]
    shutil.rmtree(wh.partition_dir(MODEL_HEALTH.layer, MODEL_HEALTH.name, newest.partition))
    started = time.perf_counter()
    report = model_health(wh, tonight, sections)
    return {
        "night": newest.partition["as_of"],
        "models": report.judged.get(newest.partition["as_of"], []),
        "seconds": time.perf_counter() - started,
        "drift_rows": report.drift_rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.health",
        description=__doc__.split("\n\n")[0] + "\n\nexamples:\n"
        "  python -m bench.health                                   # the demo's shop\n"
        "  python -m bench.health --users 20000 --items 500 --days 130   # size S's shop",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=20_000, help="users (default 20k)")
    parser.add_argument("--items", type=int, default=1_000, help="items (default 1,000)")
    parser.add_argument(
        "--days", type=int, default=130, help="days of history (default 130, the demo's)"
    )
    parser.add_argument("--history-nights", type=int, default=2, help="backfilled nights")
    parser.add_argument("--nights", type=int, default=2, help="last nights (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the data root afterwards")
    args = parser.parse_args(argv)

    code = code_version()
    source, generated = landing(args.users, args.items, args.days, 1.0)
    root = OUT / "run-health"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(source, root / "landing", copy_function=os.link)
    last = [END - timedelta(days=k) for k in reversed(range(args.nights))]
    past = [last[0] - timedelta(days=35 + k) for k in reversed(range(args.history_nights))]
    nights = []
    for night in past + last:
        log(f"night {night}: running…")
        done = run_night(root, night)
        step = next((s for s in done["steps"] if s["step"] == "model-health"), None)
        done["health_seconds"] = step["seconds"] if step else None
        nights.append(done)
        log(f"night {night}: {done['seconds']:.0f}s, model-health {done['health_seconds']}")
        if done["failure"]:
            print(done["failure"])
            return 1
    steady = steady_cost(root, last[-1])
    lines = [
        [
            n["night"],
            f"{n['seconds']:.1f}",
            "-" if n["health_seconds"] is None else f"{n['health_seconds']:.2f}",
            "-" if n["health_seconds"] is None else f"{n['health_seconds'] / n['seconds']:.1%}",
        ]
        for n in nights
    ]
    share = steady["seconds"] / nights[-1]["seconds"]
    lines.append(
        [
            "steady night",
            f"{nights[-1]['seconds']:.1f}",
            f"{steady['seconds']:.2f}",
            f"{share:.1%} ({'within' if share < 0.05 else 'ABOVE'} 5 %)",
        ]
    )
    print(
        f"input: {generated['users']:,} users, {generated['items']:,} items, "
        f"{generated['days']} days, {generated['events']:,} events"
    )
    print(text_table(["night", "night s", "model-health s", "share"], lines, right={1, 2, 3}))
    print(
        f"steady night: served night {steady['night']} judged again "
        f"({', '.join(steady['models'])}) and {steady['drift_rows']} drift rows written"
    )
    write_results(
        RESULTS, "health", 2, code=code, input=generated, nights=nights, steady=steady,
        share=share, met=share < 0.05,
    )  # fmt: skip
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
