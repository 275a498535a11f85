#!/usr/bin/env bash
# Run on the lent GPU machine from the repo root: bash bench/gpu_check.sh COMMIT. Wheels for what its image lacks
# (Hydra 1.3, omegaconf, Optuna and their needs) travel in .whl/; the project is installed as a user would, not editable.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation . || exit 1
export SWEEP_COMMIT="${1:-unknown}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
cd /tmp && python3 "$OLDPWD/bench/gpu_check.py" /tmp/gpucheck 2>&1 | grep -v "^\[" | tee "$OUT/gpu_check.txt"
