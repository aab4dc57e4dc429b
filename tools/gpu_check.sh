#!/usr/bin/env bash
# Measure the diffusers backend with SDXL-sized random-weight pipelines (no downloads); see tools/gpu_check.py.
#   tools/gpu_check.sh --tiny out.json            # CPU, a few channels wide (the test suite runs this)
#   tools/gpu_check.sh --scale 1.0 out.json       # on a GPU: the real SDXL sizes (~2.6 B UNet parameters)
# PYTHON may name the interpreter (default: the project's .venv, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
else
  echo "gpu_check: no nvidia-smi here; running on what torch finds" >&2
fi
exec "$PY" tools/gpu_check.py "$@"
