#!/usr/bin/env bash
# GPU figures of issue 15 in one run: PruningNet vs static step (MobileNetV2-1.4 at 224, batch 64 and
# 256), ResNet-50 PruningNet memory, per-candidate evaluation (MetaPruning's protocol) and
# scratch-training images/s with and without autocast / channels-last. Synthetic data; needs torch and
# this repository only (no Ray, DEAP or YAML). About 11 minutes on one H200 (2026-11-28: latency tables
# 404 s, CLI meta-training 138 s, scratch 89 s, the rest 34 s); pick sections with --only:
#   bash scripts/gpu_check.sh --out gpu_check.json
#   bash scripts/gpu_check.sh --only meta_step,candidate_eval,profile --out gpu_check.json
# Issue 29 (masked execution, CUDA graphs; not yet run on a GPU, time unknown):
#   bash scripts/gpu_check.sh --only masked_check,masked_step,masked_eval,latency_graphs --out gpu_check_29.json
# CI runs `bash scripts/gpu_check.sh --device cpu --quick --out FILE` so it cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" benchmarks/gpu_check.py "$@"
