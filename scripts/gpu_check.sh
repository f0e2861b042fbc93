#!/usr/bin/env bash
# One bounded check of jaxdl on an NVIDIA GPU; writes logs and a summary table to OUT_DIR and stdout.
#   bash scripts/gpu_check.sh OUT_DIR [--budget-s 480] [--data DIR] [--tiny] [--parts tests vae ...]
#   JAX_PLATFORMS=cpu bash scripts/gpu_check.sh OUT_DIR --budget-s 180 --tiny      # dry run on a CPU
# Python: $PYTHON if set, else the repository's .venv, else python3 (an image's own, with the wheelhouse on
# PYTHONPATH: README "On a GPU cluster"). The parts and their budget: scripts/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" -m scripts.gpu_check "$@"
