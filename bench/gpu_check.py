"""The GPU check of #9: parity and node placement of the tensorised graph on CUDA, then the table.

Run by ``bench/gpu_check.sh`` on a machine with a GPU (it installs the project first). Steps:

1. ``tasks.score.cuda_really_loads()`` must be true: the driver answers and ONNX Runtime's CUDA
   provider library loads with its CUDA libraries. Otherwise it stops, saying why (exit 2).
2. For each exported objective (binary, regression, Poisson, Tweedie, lambdarank) a small model
   is trained on rows with NaNs and zeros; its tensorised graph runs in a CUDA session, a profiled
   run must show every node on ``CUDAExecutionProvider`` and the predictions on held-out, NaN,
   zero and threshold-equal rows (``tasks.export.parity_rows``) must be within 1e-6 of
   ``Booster.predict``.
3. The scoring benchmark (``bench.score``) at 1M and 10M rows: LightGBM predict, ONNX Runtime's
   tree ensemble on the CPU and the tensorised graph on CUDA, with the 50x target at 10M rows.

Prints PASS or FAIL per check; exits 1 if any check failed. ``--rehearse-on-cpu`` runs the same
steps with the CPU provider in place of CUDA (no GPU needed, no target): a check of the script
itself, run by the tests, so that a session lent a GPU does not spend it on a broken script.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.common import log

TOLERANCE = 1e-6
OBJECTIVES = ("binary", "regression", "poisson", "tweedie", "lambdarank")


def parity_on_device(
    objective: str, device: str, rows: int = 20_000, rounds: int = 200
) -> tuple[bool, str]:
    """Train a small model for ``objective``; check its tensorised graph on ``device`` (cuda or
    cpu), scored through the nightly scorer's own ``Scorer``."""
    import lightgbm as lgb
    import numpy as np

    from nightowl.tasks.models import score
    from nightowl.tasks.models.export import parity_rows
    from nightowl.tasks.models.tensorised import tensorised_onnx_from_booster

    rng = np.random.default_rng(9)
    x = rng.normal(size=(rows, 12)).astype(np.float32)
    x[rng.random(x.shape) < 0.08] = np.nan
    x[rng.random(x.shape) < 0.08] = 0.0
    s = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 2])
    y = {
        "binary": (s + rng.normal(size=len(x)) > 0).astype(int),
        "regression": 100.0 * s,
        "poisson": rng.poisson(np.exp(np.clip(s, -3, 3))),
        "tweedie": rng.poisson(np.exp(np.clip(s, -3, 3))),
        "lambdarank": np.clip(np.round(s + 2), 0, 4).astype(int),
    }[objective]
    train = rows * 3 // 4 // 50 * 50  # whole lambdarank groups of 50
    group = [50] * (train // 50) if objective == "lambdarank" else None
    params = {"objective": objective, "num_leaves": 63, "verbose": -1, "num_threads": 2}
    booster = lgb.train(params, lgb.Dataset(x[:train], y[:train], group=group), rounds)
    model = tensorised_onnx_from_booster(booster)
    wanted = score.providers(device)
    provider = wanted[0]
    nodes = score.node_providers(model, wanted, x.shape[1])
    elsewhere = sorted(n for n, p in nodes.items() if p != provider)
    scorer = score.Scorer(
        score.session(model, wanted), "tensorised", provider, score.provider_counts(nodes), 1 << 20
    )
    probe = parity_rows(booster, x[train:])
    diff = float(np.abs(scorer.predict(probe) - booster.predict(probe)).max())
    ok = not elsewhere and diff <= TOLERANCE
    where = provider.removesuffix("ExecutionProvider")
    return ok, (
        f"{objective:10} {len(nodes)} nodes, {len(nodes) - len(elsewhere)} on {where}"
        f"{' (elsewhere: ' + ', '.join(elsewhere[:5]) + ')' if elsewhere else ''}; "
        f"max |d| {diff:.2e} over {len(probe):,} held-out and edge rows (tolerance {TOLERANCE:g})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu_check",
        description=__doc__.split("\n\n")[0] + "\n\nexamples:\n  bench/gpu_check.sh\n"
        "  python -m bench.gpu_check --rows 1000000          # a shorter table\n"
        "  python -m bench.gpu_check --rehearse-on-cpu --rows 20000   # check the script, no GPU",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[1_000_000, 10_000_000], help="table sizes"
    )
    parser.add_argument(
        "--rehearse-on-cpu",
        action="store_true",
        help="run every step on the CPU provider instead of CUDA (checks the script; no target)",
    )
    args = parser.parse_args(argv)
    from nightowl.tasks.models import score

    started = time.perf_counter()
    device = "cpu" if args.rehearse_on_cpu else "cuda"
    if device == "cuda" and not score.cuda_really_loads():
        print("FAIL no usable GPU: the CUDA driver did not answer or ONNX Runtime's CUDA provider "
              "could not load its libraries (see the log above)")  # fmt: skip
        return 2
    failed = 0
    for objective in OBJECTIVES:
        ok, line = parity_on_device(objective, device)
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} parity and placement: {line}", flush=True)
    log(f"parity checks took {time.perf_counter() - started:.0f}s; now the scoring table")
    from bench import score as bench_score

    engines = ["lightgbm", "nightowl", f"tensorised-{device}"]
    bench_score.main(["--rows", *map(str, args.rows), "--engines", *engines])
    print(f"gpu check done in {time.perf_counter() - started:.0f}s; {failed} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
