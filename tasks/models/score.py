"""Scoring with ONNX Runtime: CUDA only when it really loads, the graph that suits the provider,
large float32 batches, and a record of which execution provider ran each node.

onnxruntime-gpu lists the CUDA provider on every machine, and asking for it where the CUDA
libraries are missing logs an ERROR before falling back. So we ask only after the driver answers
with at least one device and the provider's own library (with cuBLAS, cuDNN, the runtime) loads.

Every registered LightGBM version has two graphs with the same predictions (both parity-gated
against LightGBM): ``model.onnx`` with the tree-ensemble operator, fastest on the CPU, and
``model.tensor.onnx`` in plain tensor operators (``tasks.tensorised``). ONNX Runtime has no CUDA
kernel for tree ensembles: inside a CUDA session those nodes would run on the CPU. So on a GPU the
scorer runs the tensorised graph, checks from a profiled run that every node ran on CUDA, and
feeds it through IOBinding in large batches; on a CPU it runs the tree-ensemble graph.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import logging
import os
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

from nightowl.schemas.config import ModelSettings
from nightowl.tasks.common.fanout import Fanout
from nightowl.tasks.models.export import ENSEMBLE, INPUT, OUTPUT
from nightowl.warehouse.registry import ModelCard, Registry
from nightowl.warehouse.store import Warehouse

log = logging.getLogger("nightowl")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: The graph of ``model.onnx``: ONNX-ML's TreeEnsembleRegressor (``tasks.export``).
TREE_ENSEMBLE = "tree_ensemble"
#: The graph of ``model.tensor.onnx``: plain tensor operators (``tasks.tensorised``).
TENSORISED = "tensorised"


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


def session(model: bytes, wanted: list[str], threads: int | None = None) -> ort.InferenceSession:
    """An inference session for ``model`` on ``wanted`` providers, with quiet logs; ``threads``
    by default 2, or ``OMP_NUM_THREADS`` where set (one per Dask worker of one core)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or int(os.environ.get("OMP_NUM_THREADS") or 2)
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


@dataclass(frozen=True)
class Scorer:
    """One model version ready to score: its session, which graph it runs and where it ran."""

    session: ort.InferenceSession
    graph: str
    provider: str
    placement: dict[str, int]
    batch_rows: int

    @property
    def path(self) -> str:
        """The scoring path in words, e.g. ``tensorised on CUDAExecutionProvider``."""
        return f"{self.graph} on {self.provider}"

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """The model's prediction for every row of a float32 matrix, in float64."""
        return predict(self.session, matrix, self.batch_rows, _device(self.provider))


def _device(provider: str) -> str:
    return "cuda" if provider == CUDA else "cpu"


def predict(
    sess: ort.InferenceSession, matrix: np.ndarray, batch_rows: int, device: str = "cpu"
) -> np.ndarray:
    """Predictions for every row, each batch bound to ``device`` memory with IOBinding, so a GPU
    session copies a batch in and its predictions out once, with no copies between nodes."""
    out = np.empty(len(matrix), dtype=np.float64)
    binding = sess.io_binding()
    for start in range(0, len(matrix), batch_rows):
        batch = np.ascontiguousarray(matrix[start : start + batch_rows], dtype=np.float32)
        binding.bind_ortvalue_input(INPUT, ort.OrtValue.ortvalue_from_numpy(batch, device, 0))
        binding.bind_output(OUTPUT, device, 0)
        sess.run_with_iobinding(binding)
        out[start : start + len(batch)] = binding.copy_outputs_to_cpu()[0][:, 0]
        binding.clear_binding_outputs()
    return out


def scorer_for(registry: Registry, card: ModelCard, cfg: ModelSettings) -> Scorer:
    """The scorer of a registered version: on a GPU its tensorised graph on CUDA (all nodes
    checked to have run there), on a CPU its tree-ensemble graph (``cfg.graph`` may insist)."""
    wanted = providers(cfg.provider)
    graph: str = cfg.graph  # "auto" becomes the graph it picks
    tensor = registry.tensor_bytes(card.model, card.version)
    if graph == "auto":
        graph = TENSORISED if CUDA in wanted and tensor is not None else TREE_ENSEMBLE
        if CUDA in wanted and tensor is None:
            log.warning(
                "%s %s has no tensorised graph (registered before there was one): its trees run "
                "on the CPU; retrain it (nightowl train) to score on the GPU",
                card.model,
                card.version,
            )
    if graph != TENSORISED:
        model = registry.onnx_bytes(card.model, card.version)
    elif tensor is None:
        raise RuntimeError(
            f"graph = 'tensorised' was asked for, but {card.model} {card.version} has no "
            f"tensorised graph; retrain it (nightowl train) or use graph = 'auto'"
        )
    else:
        model = tensor
    nodes = node_providers(model, wanted, len(card.feature_names))
    if graph == TENSORISED and CUDA in wanted:
        on_cpu = sorted(name for name, ran in nodes.items() if ran != CUDA)
        if on_cpu:
            log.warning(
                "%s %s: %s of the tensorised graph's %s nodes fell back to the CPU (%s); "
                "scoring with the tree-ensemble graph on the CPU instead",
                card.model,
                card.version,
                len(on_cpu),
                len(nodes),
                ", ".join(on_cpu[:5]),
            )
            wanted, graph = [CPU], TREE_ENSEMBLE
            model = registry.onnx_bytes(card.model, card.version)
            nodes = node_providers(model, wanted, len(card.feature_names))
    if graph == TREE_ENSEMBLE:
        ran = nodes.get(ENSEMBLE, wanted[0])  # where the trees really ran
    else:
        ran = Counter(nodes.values()).most_common(1)[0][0]
    batch_rows = cfg.gpu_batch_rows if ran == CUDA else cfg.score_batch_rows
    return Scorer(
        session=session(model, wanted),
        graph=graph,
        provider=ran,
        placement=provider_counts(nodes),
        batch_rows=batch_rows,
    )


@dataclass(frozen=True)
class RegisteredScorer:
    """A registered version's scorer named, not opened: it travels (with a bucket, to another
    process or a Dask worker) as a few strings, and each process opens the session once."""

    data_root: str
    model: str
    version: str
    settings: ModelSettings

    def opened(self) -> Scorer:
        """The scorer, opened in this process on first use."""
        return _opened(self.data_root, self.model, self.version, self.settings.model_dump_json())

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        return self.opened().predict(matrix)


@cache
def _opened(data_root: str, model: str, version: str, settings: str) -> Scorer:
    registry = Registry(Warehouse(Path(data_root)))
    card = registry.card(model, version)
    return scorer_for(registry, card, ModelSettings.model_validate_json(settings))


def bucketed_predict(
    scorer: RegisteredScorer, matrix: np.ndarray, bucket: np.ndarray, fanout: Fanout
) -> np.ndarray:
    """``scorer``'s predictions for ``matrix``, its rows sent out in the buckets ``bucket``
    numbers (one per row) where ``fanout`` runs them; a row's score is the same wherever its
    bucket ran."""
    order = np.argsort(bucket, kind="stable")
    bounds = np.flatnonzero(np.diff(bucket[order])) + 1
    pieces = np.split(matrix[order], bounds)
    predicted = np.empty(len(matrix), dtype=np.float64)
    predicted[order] = np.concatenate(list(fanout.map(scorer, pieces)))
    return predicted
