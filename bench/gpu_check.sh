#!/usr/bin/env bash
# Run on the lent GPU machine from the repo root; wheels for what its image lacks travel in .whl/.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
cd bench && python3 gpu_check.py /tmp/gpucheck 2>&1 | grep -v "^\[" | tee "$OUT/gpu_check.txt"
