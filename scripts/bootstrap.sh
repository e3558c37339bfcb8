#!/usr/bin/env bash
# Install demakeup into ./.venv (idempotent), with DeepSpeed and the inference extra (face detector, ONNX). With --test, also what the test suite needs:
# Debian's slurm-wlm + munge (a real single-node Slurm for the launcher tests) and iproute2.
#
#   bash scripts/bootstrap.sh          # the tool
#   bash scripts/bootstrap.sh --test   # the tool + test dependencies
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if [ "${1:-}" = "--test" ]; then
    bash .ci/slurm-setup.sh
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# Pin torch first: an unpinned resolve (by accelerate or deepspeed) may pull a different multi-GB build.
python -m pip install -q "torch==${TORCH_VERSION}"
# DS_BUILD_OPS=0: DeepSpeed compiles its ops on first use instead of at install (no CUDA needed here).
DS_BUILD_OPS=0 python -m pip install -q -e ".[deepspeed,infer,dev]"
echo "demakeup installed in $(pwd)/.venv ($(python -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'))"
