#!/usr/bin/env bash
# Create .venv (if missing) and install metaprune with its test extras. Idempotent; when .venv was
# set up from the same setup.cfg/pyproject.toml and imports, pip is skipped (seconds, not ~20 s).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAMP=.venv/.metaprune-setup
want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] && .venv/bin/python -c \
   "import metaprune, torch, ray, deap; print('metaprune', metaprune.__version__, 'torch', torch.__version__, '(already set up)')" 2>/dev/null; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch and torchvision first, pinned to the pair that works together on this machine
.venv/bin/python -m pip install -q --disable-pip-version-check 'torch==2.14.1' 'torchvision==0.29.1' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import metaprune, torch, ray, deap; print('metaprune', metaprune.__version__, 'torch', torch.__version__)"
echo "$want" > "$STAMP"
