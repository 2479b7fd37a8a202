"""Scoring with ONNX Runtime: CUDA only when it really loads, large float32 batches, and a record
of which execution provider ran each node.

onnxruntime-gpu lists the CUDA provider on every machine, and asking for it where the CUDA
libraries are missing logs an ERROR before falling back. So we ask only after the driver answers
with at least one device and the provider's own library (with cuBLAS, cuDNN, the runtime) loads.
Note that ONNX Runtime has no CUDA kernel for tree ensembles: inside a CUDA session those nodes
run on the CPU, which ``node_placement`` makes visible instead of hiding.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import logging
import tempfile
import warnings
from collections import Counter
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl

from tasks.export import INPUT
from tasks.train import rfm_segment, rfm_table

log = logging.getLogger("nightowl")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def _gpu_count() -> int:
    """CUDA devices the driver reports (0 without a driver): no CUDA runtime needed."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


@cache
def cuda_really_loads() -> bool:
    """True when a GPU is there and ONNX Runtime's CUDA provider library loads with its deps."""
    if CUDA not in ort.get_available_providers() or _gpu_count() == 0:
        return False
    capi = Path(ort.__file__).parent / "capi"
    try:
        if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from the nvidia-* wheels, when installed
            said = io.StringIO()  # it prints what it could not load: ours to report, not to spill
            with contextlib.redirect_stdout(said), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ort.preload_dlls(directory="")
            if said.getvalue().strip():
                log.info("onnxruntime.preload_dlls: %s", said.getvalue().strip())
        ctypes.CDLL(str(capi / "libonnxruntime_providers_shared.so"), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(capi / "libonnxruntime_providers_cuda.so"))
    except OSError as exc:
        log.info("CUDA provider not used: %s", exc)
        return False
    return True


def providers(preference: str = "auto") -> list[str]:
    """Execution providers to ask for: CUDA first only when wanted and really loadable."""
    if preference == "cpu":
        return [CPU]
    if cuda_really_loads():
        return [CUDA, CPU]
    if preference == "cuda":
        raise RuntimeError(
            "provider = 'cuda' was asked for, but no GPU answered or ONNX Runtime's CUDA provider "
            "could not load its libraries (install onnxruntime-gpu[cuda,cudnn]); use 'auto' to "
            "fall back to the CPU"
        )
    return [CPU]


def session(model: bytes, wanted: list[str], threads: int = 2) -> ort.InferenceSession:
    """An inference session for ``model`` on ``wanted`` providers, with quiet logs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's concern
    return ort.InferenceSession(model, options, providers=wanted)


def node_providers(model: bytes, wanted: list[str], n_features: int) -> dict[str, str]:
    """Graph node name → the execution provider that ran it, read from one profiled tiny run."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "placement")
        probe = ort.InferenceSession(model, options, providers=wanted)
        probe.run(None, {INPUT: np.zeros((2, n_features), dtype=np.float32)})
        events = json.loads(Path(probe.end_profiling()).read_text())
    return {
        e["name"].removesuffix("_kernel_time"): e["args"]["provider"]
        for e in events
        if e.get("cat") == "Node" and "provider" in e.get("args", {})
    }


def provider_counts(nodes: dict[str, str]) -> dict[str, int]:
    """How many of ``nodes`` (name → provider) each execution provider ran."""
    return dict(Counter(nodes.values()))


def node_placement(model: bytes, wanted: list[str], n_features: int) -> dict[str, int]:
    """How many graph nodes each execution provider ran."""
    return provider_counts(node_providers(model, wanted, n_features))


def predict(sess: ort.InferenceSession, matrix: np.ndarray, batch_rows: int) -> np.ndarray:
    """Probabilities for every row of a float32 matrix, scored in contiguous batches."""
    out = np.empty(len(matrix), dtype=np.float32)
    for start in range(0, len(matrix), batch_rows):
        batch = np.ascontiguousarray(matrix[start : start + batch_rows])
        out[start : start + len(batch)] = sess.run(None, {INPUT: batch})[0][:, 0]
    return out


def user_scores(
    features: pl.DataFrame,
    probability: np.ndarray,
    *,
    horizon_days: int,
    churn_lookback_days: int,
    risk_tiers: dict[str, float],
    model_version: str,
    provider: str,
    as_of: date,
) -> pl.DataFrame:
    """One row per user: p(purchase within H days), churn risk and tier for active customers,
    RFM segment, and the model version and provider that produced the score."""
    p = pl.Series(f"p_purchase_{horizon_days}d", probability, dtype=pl.Float64)
    active = pl.col("purchase_recency_days") < churn_lookback_days
    churn = pl.when(active).then(1.0 - p).otherwise(None)
    tier = pl.when(pl.col("purchase_recency_days").is_null()).then(pl.lit("prospect"))
    tier = tier.when(~active).then(pl.lit("lapsed"))
    for name, threshold in sorted(risk_tiers.items(), key=lambda kv: -kv[1]):
        tier = tier.when(churn >= threshold).then(pl.lit(name))
    scored = features.join(rfm_table(features), on="user_id", how="left", maintain_order="left")
    return scored.select(
        "user_id",
        p,
        churn.alias("churn_risk"),
        tier.otherwise(pl.lit("low")).alias("risk_tier"),
        rfm_segment(pl.col("r"), pl.col("f")).alias("segment"),
        pl.lit(model_version).alias("model_version"),
        pl.lit(provider).alias("provider"),
        pl.lit(as_of).alias("as_of"),
    )
