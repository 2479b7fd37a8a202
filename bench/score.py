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
    from nightowl.schemas.config import ModelSettings

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


# ---- the sides (each runs in a child process) ---------------------------------------------------

#: Engine key → what the table calls it. ``nightowl`` is the CPU production path.
ENGINES = {
    "nightowl": "ORT tree-ensemble (CPU)",
    "tensorised-cpu": "ORT tensorised (CPU)",
    "tensorised-cuda": "ORT tensorised (CUDA)",
    "lightgbm": "LightGBM predict",
}
#: Speed ratio (LightGBM seconds / ORT tensorised CUDA seconds) the GPU path must reach at 10M rows.
GPU_TARGET = 50.0


def run_onnx(booster: Any, x: Any, batch_rows: int, engine: str) -> tuple[dict, Any]:
    """An ONNX Runtime path: the export, a session with 2 threads, batched IOBinding predict."""
    from nightowl.tasks.models import score
    from nightowl.tasks.models.export import onnx_from_booster
    from nightowl.tasks.models.tensorised import tensorised_onnx_from_booster

    wanted = [score.CUDA, score.CPU] if engine == "tensorised-cuda" else [score.CPU]
    export = onnx_from_booster if engine == "nightowl" else tensorised_onnx_from_booster
    device = "cuda" if engine == "tensorised-cuda" else "cpu"
    t0 = time.perf_counter()
    model = export(booster)
    t1 = time.perf_counter()
    sess = score.session(model, wanted, threads=THREADS)
    score.predict(sess, x[:1024], batch_rows, device)  # CUDA kernels load on the first run
    t2 = time.perf_counter()
    p = score.predict(sess, x, batch_rows, device)
    t3 = time.perf_counter()
    found = {
        "seconds": t3 - t2,
        "export_seconds": t1 - t0,
        "session_seconds": t2 - t1,
        "model_bytes": len(model),
        "providers_auto": score.providers("auto"),
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
    if engine == "lightgbm":
        found, p = run_lightgbm(booster, x)
    else:
        found, p = run_onnx(booster, x, batch_rows, engine)
    np.save(work / "p.npy", p)  # for the parity check, after the clock stops
    found["peak_rss_mib"] = peak_rss_mib()
    result.write_text(json.dumps(found))


# ---- the parent: one child per run, one table ----------------------------------------------------


def run_child(engine: str, n: int, batch_rows: int) -> dict:
    tag = f"{engine}-{n}-{batch_rows}"
    work = OUT / f"run-score-{tag}"
    result = OUT / f".result-score-{tag}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.score", "--worker", engine, str(n), str(batch_rows)]
    cmd += [str(work), str(result)]
    log(f"{tag:32} running…")
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
        f"{tag:32} {found['seconds']:7.2f}s, peak RSS {found['peak_rss_mib']:,.0f} MiB, "
        f"other processes kept {found['other_load']:.0%} of the CPUs busy"
    )
    return found


def target_of(engine: str) -> float | None:
    """The speed ratio over LightGBM an engine must reach (None: no target)."""
    return {"nightowl": TARGET, "tensorised-cuda": GPU_TARGET}.get(engine)


def table(results: list[dict]) -> str:
    head = ["engine", "batch rows", "rows", "seconds", "rows/s", "peak RSS MiB", "ratio"]
    head += ["target", "met"]
    lines = []
    for r in results:
        target = target_of(r["engine"])
        lines.append(
            [
                ENGINES[r["engine"]],
                "" if r["batch_rows"] is None else f"{r['batch_rows']:,}",
                f"{r['rows']:,}",
                *measured_cells(r),
                *(
                    verdict_cells(r.get("ratio"), target, r.get("met"))
                    if target is not None
                    else [f"{r['ratio']:.2f}x" if "ratio" in r else "", "", ""]
                ),
            ]
        )
    return text_table(head, lines, right={1, 2, 3, 4, 5, 6})


def main(argv: list[str] | None = None) -> int:
    batch_default = default_batch_rows()
    parser = argparse.ArgumentParser(
        prog="python -m bench.score",
        description=(
            f"Scoring float32 rows of {N_FEATURES} features with a LightGBM binary model "
            f"({TREES} trees, {LEAVES} leaves), each engine in its own process: ONNX Runtime on "
            "the tree-ensemble graph (nightowl's CPU path), ONNX Runtime on the tensorised graph "
            "(tasks.tensorised) on the CPU and, where a GPU answers, on CUDA with IOBinding, "
            "beside LightGBM's own booster.predict with 2 threads. Prints one table (seconds, "
            "rows/s, peak RSS, speed ratio LightGBM s / engine s, target met), the largest "
            "difference from LightGBM, the providers and node placement, and writes "
            "bench/out/score-results.json.\n\n"
            "examples:\n"
            "  python -m bench.score                                   # 1M rows, default batch\n"
            "  python -m bench.score --rows 1000000 10000000           # the #9 table\n"
            "  python -m bench.score --rows 100000                     # quick smoke run\n"
            "  python -m bench.score --batch-rows 65536 262144 1048576 # compare batch sizes"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[1_000_000], help="rows scored (default 1M)"
    )
    parser.add_argument(
        "--batch-rows",
        type=int,
        nargs="+",
        default=[batch_default],
        help=f"rows per ONNX Runtime call on the CPU; several values: one tree-ensemble run "
        f"each (default {batch_default:,}, ModelSettings().score_batch_rows)",
    )
    parser.add_argument(
        "--gpu-batch-rows", type=int, default=1_048_576, help="rows per call on CUDA (1,048,576)"
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=sorted(ENGINES),
        default=sorted(ENGINES),
        help="engines to run (default: all; tensorised-cuda only where CUDA really loads)",
    )
    parser.add_argument(
        "--tensorised-cpu-max-rows",
        type=int,
        default=1_000_000,
        help="the tensorised graph on the CPU is slow (a GPU graph): run it up to this many rows",
    )
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        engine, n, batch_rows, work, result = args.worker
        worker(engine, int(n), int(batch_rows), Path(work), Path(result))
        return 0

    import numpy as np

    from nightowl.tasks.models.score import cuda_really_loads

    train_model()
    gpu = cuda_really_loads()
    results, notes = [], []
    for n in args.rows:
        score_rows(n)
        runs: list[tuple[str, int | None]] = []
        if "nightowl" in args.engines:
            runs += [("nightowl", b) for b in args.batch_rows]
        if "tensorised-cpu" in args.engines:
            if n <= args.tensorised_cpu_max_rows:
                runs.append(("tensorised-cpu", args.batch_rows[0]))
            else:
                cap = args.tensorised_cpu_max_rows
                notes.append(f"ORT tensorised (CPU) not run at {n:,} rows (above {cap:,})")
        if "tensorised-cuda" in args.engines:
            if gpu:
                runs.append(("tensorised-cuda", args.gpu_batch_rows))
            else:
                notes.append(f"ORT tensorised (CUDA) not run at {n:,} rows: no GPU answered here")
        reference = run_child("lightgbm", n, 0) if "lightgbm" in args.engines else None
        native = np.load(reference["work"] / "p.npy") if reference else None
        done = [(engine, batch, run_child(engine, n, batch)) for engine, batch in runs]
        for engine, batch, r in [*done, *([("lightgbm", None, reference)] if reference else [])]:
            r |= {"engine": engine, "batch_rows": batch, "rows": n}
            r["rows_per_s"] = n / r["seconds"]
            if engine != "lightgbm" and native is not None:
                ours = np.load(r["work"] / "p.npy")
                r["parity_max_abs_diff"] = float(np.abs(ours.astype(np.float64) - native).max())
                r["ratio"] = reference["seconds"] / r["seconds"]
                target = target_of(engine)
                r["met"] = None if target is None else r["ratio"] >= target
            shutil.rmtree(r.pop("work"), ignore_errors=True)
            results.append(r)
    print(table(results))
    print("ratio: LightGBM seconds / engine seconds (more than 1: faster than LightGBM)")
    for line in [*notes, *disturbed(results)]:
        print(line)
    for r in results:
        if "parity_max_abs_diff" in r:
            print(
                f"{ENGINES[r['engine']]} at {r['rows']:,} rows, batch {r['batch_rows']:,}: parity "
                f"max |dp| {r['parity_max_abs_diff']:.2e}; export {r['export_seconds']:.2f}s + "
                f"session {r['session_seconds']:.2f}s before scoring; nodes {r['node_placement']}"
            )
    onnx_runs = [r for r in results if r["engine"] != "lightgbm"]
    if onnx_runs:
        print(f"providers('auto'): {onnx_runs[0]['providers_auto']}")
    model = {
        "trees": TREES, "leaves": LEAVES, "features": N_FEATURES, "train_rows": TRAIN_ROWS,
        "path": str(model_path()),
    }  # fmt: skip
    write_results(
        RESULTS, "score", THREADS,
        code=code_version(
            "tasks/models/export.py", "tasks/models/tensorised.py", "tasks/models/score.py"
        ),
        model=model, target=TARGET, gpu_target=GPU_TARGET, gpu=gpu, notes=notes,
        results=results,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
