#!/usr/bin/env bash
# Create .venv with the project and its dependencies (CPU is enough; CUDA is used if present).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first, pinned to the builds that match torchvision (compressai needs torchvision)
.venv/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/pip install -q -e ".[dask,eval,test]"
echo "ready: .venv/bin/python -m core.tile_codec --help"
