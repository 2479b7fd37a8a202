#!/usr/bin/env bash
# The GPU check of #9, as one prepared script: install the project from its own files, check the
# tensorised graph's parity and node placement on CUDA, print the scoring table (1M and 10M rows).
#
#   bench/gpu_check.sh                       # installs from the package index
#   WHEELS=/path/to/wheels bench/gpu_check.sh   # offline: every wheel the install needs is there
#
# It makes .venv-gpu beside the repo's .venv (with the system's site packages, so a GPU image's
# numpy and CUDA libraries are reused) and installs '.[gpu]': onnxruntime-gpu with its CUDA and
# cuDNN wheels. Budget: about 6 minutes on one H200 after the install. Exit status: 0 all checks
# passed, 1 a check failed, 2 no usable GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=${VENV:-.venv-gpu}
started=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
pip_args=(--quiet --disable-pip-version-check)
if [ -n "${WHEELS:-}" ]; then
    pip_args+=(--no-index --find-links "$WHEELS")
fi
"$VENV/bin/python" -m pip install "${pip_args[@]}" -e '.[gpu]'
echo "[gpu_check] installed in $(( $(date +%s) - started ))s"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
export PYTHONUNBUFFERED=1 POLARS_MAX_THREADS=2
exec timeout 480 "$VENV/bin/python" -m bench.gpu_check "$@"
