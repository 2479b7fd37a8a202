"""Scoring benchmark: nightowl's ONNX Runtime path beside LightGBM's own predict.

A binary LightGBM model (300 trees, 63 leaves, 40 features) is trained once on synthetic rows with
NaNs and zeros and cached in ``bench/out/data``. Each run scores the same 1M float32 rows (cached
too), in its own subprocess so that the peak RSS reported is that run's alone (the child's
``VmHWM``, see ``peak_rss_mib``). The seconds are measured inside the child around the scoring
alone: for
nightowl ``tasks.score.predict`` on a session already made (the export to ONNX and the session are
timed apart), for LightGBM ``booster.predict(X, num_threads=2)`` on a booster already loaded.

Both sides' probabilities are kept, and the parent prints the largest difference between them.
Timings never go in tests: this prints one table and writes ``bench/out/score-results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
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

RESULTS = OUT / "score-results.json"
SEED = 20261128
THREADS = 2
N_FEATURES = 40
TREES = 300
LEAVES = 63
TRAIN_ROWS = 200_000
NAN_SHARE = 0.05  # of the values of the features that can be missing
ZERO_SHARE = 0.30  # of the values of count-like features
#: Speed ratio (LightGBM seconds / nightowl seconds) that nightowl must reach.
TARGET = 1.2


def default_batch_rows() -> int:
    from schemas.config import ModelSettings

    return ModelSettings().score_batch_rows


# ---- data and model ------------------------------------------------------------------------------


def rows(n: int, seed: int) -> tuple[Any, Any]:
    """``n`` float32 rows of N_FEATURES (some with NaNs, some mostly zeros) and 0/1 labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, N_FEATURES), dtype=np.float32)
    # Features 0-9 are counts (many zeros), 10-19 skewed amounts, 20-39 plain scores.
    x[:, :10] = np.floor(np.abs(x[:, :10]) * 3.0)
    x[:, :10][rng.random((n, 10)) < ZERO_SHARE] = 0.0
    x[:, 10:20] = np.exp(x[:, 10:20]).astype(np.float32)
    # Features 5-24 go missing now and then.
    x[:, 5:25][rng.random((n, 20)) < NAN_SHARE] = np.nan
    filled = np.nan_to_num(x, nan=0.0)
    logit = (
        0.6 * filled[:, 0]
        - 0.4 * filled[:, 3]
        + 0.8 * np.log1p(filled[:, 12])
        + 0.5 * filled[:, 21] * filled[:, 22]
        - 0.3 * np.abs(filled[:, 30])
        + 0.7 * np.isnan(x[:, 7])
        + np.sin(filled[:, 35])
        - 1.0
    )
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    return np.ascontiguousarray(x), y


def model_path() -> Path:
    return DATA / f"score-lgbm-{TREES}t-{LEAVES}l-{N_FEATURES}f.txt"


def rows_path(n: int) -> Path:
    return DATA / f"score-rows-{n}x{N_FEATURES}.npy"


def score_rows(n: int) -> Path:
    """The cached rows to score (float32, C order), so that no child pays for making them."""
    path = rows_path(n)
    if not path.exists():
        import numpy as np

        DATA.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, rows(n, SEED + 1)[0])
        tmp.rename(path)
    return path


def train_model() -> Path:
    """The cached LightGBM model: trained once on TRAIN_ROWS synthetic rows."""
    path = model_path()
    if path.exists():
        return path
    import lightgbm as lgb

    t0 = time.perf_counter()
    DATA.mkdir(parents=True, exist_ok=True)
    x, y = rows(TRAIN_ROWS, SEED)
    params = {
        "objective": "binary",
        "num_leaves": LEAVES,
        "learning_rate": 0.05,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "num_threads": THREADS,
        "seed": SEED,
        "verbose": -1,
    }
    names = [f"f{i:02d}" for i in range(N_FEATURES)]
    train = lgb.Dataset(x, label=y, feature_name=names)
    booster = lgb.train(params, train, num_boost_round=TREES)
    if booster.num_trees() != TREES:
        raise SystemExit(f"expected {TREES} trees, got {booster.num_trees()}")
    tmp = path.with_suffix(".tmp")
    booster.save_model(tmp)
    tmp.rename(path)
    log(f"trained {TREES} trees of {LEAVES} leaves in {time.perf_counter() - t0:.1f}s")
    return path


# ---- the two sides (each runs in a child process) ------------------------------------------------


def run_nightowl(booster: Any, x: Any, batch_rows: int) -> tuple[dict, Any]:
    """nightowl's path: our ONNX export, a CPU session with 2 threads, batched predict."""
    from tasks import score
    from tasks.export import onnx_from_booster

    t0 = time.perf_counter()
    model = onnx_from_booster(booster)
    t1 = time.perf_counter()
    sess = score.session(model, [score.CPU], threads=THREADS)
    t2 = time.perf_counter()
    p = score.predict(sess, x, batch_rows)
    t3 = time.perf_counter()
    wanted = score.providers("auto")
    found = {
        "seconds": t3 - t2,
        "export_seconds": t1 - t0,
        "session_seconds": t2 - t1,
        "model_bytes": len(model),
        "providers_auto": wanted,
        "node_placement": score.node_placement(model, wanted, x.shape[1]),
        "session_providers": sess.get_providers(),
    }
    return found, p


def run_lightgbm(booster: Any, x: Any) -> tuple[dict, Any]:
    t0 = time.perf_counter()
    p = booster.predict(x, num_threads=THREADS)
    return {"seconds": time.perf_counter() - t0}, p


def worker(engine: str, n: int, batch_rows: int, work: Path, result: Path) -> None:
    import lightgbm as lgb
    import numpy as np

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    x = np.load(rows_path(n))
    booster = lgb.Booster(model_file=str(model_path()))
    if engine == "nightowl":
        found, p = run_nightowl(booster, x, batch_rows)
    else:
        found, p = run_lightgbm(booster, x)
    np.save(work / "p.npy", p)  # for the parity check, after the clock stops
    found["peak_rss_mib"] = peak_rss_mib()
    result.write_text(json.dumps(found))


# ---- the parent: one child per run, one table ----------------------------------------------------


def run_child(engine: str, n: int, batch_rows: int) -> dict:
    tag = f"{engine}-{batch_rows}" if engine == "nightowl" else engine
    work = OUT / f"run-score-{tag}"
    result = OUT / f".result-score-{tag}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.score", "--worker", engine, str(n), str(batch_rows)]
    cmd += [str(work), str(result)]
    log(f"{tag:16} running…")
    busy = cpu_busy_seconds()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if code != 0 or not result.exists():
        raise SystemExit(f"{tag} failed (exit {code})")
    found = json.loads(result.read_text())
    result.unlink()
    found |= {"child_wall_seconds": wall, "work": work}
    found["other_load"] = other_load(busy, wall, usage)
    log(
        f"{tag:16} {found['seconds']:7.2f}s, peak RSS {found['peak_rss_mib']:,.0f} MiB, "
        f"other processes kept {found['other_load']:.0%} of the CPUs busy"
    )
    return found


def table(results: list[dict]) -> str:
    head = ["engine", "batch rows", "rows", "seconds", "rows/s", "peak RSS MiB", "ratio"]
    head += ["target", "met"]
    lines = []
    for r in results:
        ratio = r.get("ratio")
        lines.append(
            [
                r["engine"],
                "" if r["batch_rows"] is None else f"{r['batch_rows']:,}",
                f"{r['rows']:,}",
                *measured_cells(r),
                *verdict_cells(ratio, TARGET, r.get("met")),
            ]
        )
    return text_table(head, lines, right={1, 2, 3, 4, 5, 6})


def main(argv: list[str] | None = None) -> int:
    batch_default = default_batch_rows()
    parser = argparse.ArgumentParser(
        prog="python -m bench.score",
        description=(
            f"Scoring of 1M rows x {N_FEATURES} float32 features with a LightGBM binary model "
            f"({TREES} trees, {LEAVES} leaves): nightowl's path (tasks.export.onnx_from_booster, "
            "an ONNX Runtime CPU session with 2 threads, tasks.score.predict in batches) beside "
            "LightGBM's own booster.predict with 2 threads, each run in its own process. Prints "
            "one table (seconds, rows/s, peak RSS, speed ratio LightGBM s / nightowl s, target "
            "met), the largest probability difference, the providers and node placement, and "
            "writes bench/out/score-results.json.\n\n"
            "examples:\n"
            "  python -m bench.score                                   # 1M rows, default batch\n"
            "  python -m bench.score --rows 100000                     # quick smoke run\n"
            "  python -m bench.score --batch-rows 65536 262144 1048576 # compare batch sizes"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows scored (default 1M)")
    parser.add_argument(
        "--batch-rows",
        type=int,
        nargs="+",
        default=[batch_default],
        help=f"rows per ONNX Runtime call; several values: one run each (default {batch_default:,}"
        ", ModelSettings().score_batch_rows)",
    )
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        engine, n, batch_rows, work, result = args.worker
        worker(engine, int(n), int(batch_rows), Path(work), Path(result))
        return 0

    import numpy as np

    train_model()
    score_rows(args.rows)
    runs = [("nightowl", b, run_child("nightowl", args.rows, b)) for b in args.batch_rows]
    reference = run_child("lightgbm", args.rows, 0)
    native = np.load(reference["work"] / "p.npy")
    results = []
    for engine, batch, r in [*runs, ("lightgbm", None, reference)]:
        r |= {"engine": engine, "batch_rows": batch, "rows": args.rows}
        r["rows_per_s"] = args.rows / r["seconds"]
        if engine == "nightowl":
            ours = np.load(r["work"] / "p.npy")
            r["parity_max_abs_diff"] = float(np.abs(ours.astype(np.float64) - native).max())
            r["ratio"] = reference["seconds"] / r["seconds"]
            r["met"] = r["ratio"] >= TARGET
        shutil.rmtree(r.pop("work"), ignore_errors=True)
        results.append(r)
    print(table(results))
    print("ratio: LightGBM seconds / nightowl seconds (more than 1: nightowl is faster)")
    for line in disturbed(results):
        print(line)
    first = results[0]
    for r in results[: len(runs)]:
        print(
            f"nightowl batch {r['batch_rows']:,}: parity max |dp| {r['parity_max_abs_diff']:.2e} "
            f"over {args.rows:,} rows; export {r['export_seconds']:.2f}s + session "
            f"{r['session_seconds']:.2f}s before scoring"
        )
    print(
        f"providers('auto'): {first['providers_auto']}; session ran on "
        f"{first['session_providers']}; node placement {first['node_placement']}"
    )
    if len(runs) > 1:
        best = max(results[: len(runs)], key=lambda r: r["rows_per_s"])
        print(f"fastest batch: {best['batch_rows']:,} rows ({best['seconds']:.2f}s)")
    model = {
        "trees": TREES, "leaves": LEAVES, "features": N_FEATURES, "train_rows": TRAIN_ROWS,
        "path": str(model_path()),
    }  # fmt: skip
    write_results(
        RESULTS, "score", THREADS, code=code_version("tasks/export.py", "tasks/score.py"),
        model=model, target=TARGET, results=results,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
