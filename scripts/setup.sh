#!/usr/bin/env bash
# Create .venv (if missing) and install metaprune with its test extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch and torchvision first, pinned to the pair that works together on this machine
.venv/bin/python -m pip install -q --disable-pip-version-check 'torch==2.14.1' 'torchvision==0.29.1' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import metaprune, torch, ray, deap; print('metaprune', metaprune.__version__, 'torch', torch.__version__)"
