#!/usr/bin/env bash
# Create .venv (if missing) and install metaprune with its test extras. Idempotent; when .venv was
# set up from the same setup.cfg/pyproject.toml and imports, pip is skipped (seconds, not ~20 s).
set -euo pipefail
cd "$(dirname "$0")/.."
# The glyphs dataset renders the fonts of a fixed list of Debian packages (FONT_PACKAGES in
# metaprune/data/glyphs.py; about 38 MB of .deb files). Install the missing ones with apt where it
# works (as root); elsewhere the dataset refuses naming the missing package and its tests skip.
fonts=$(sed -n 's/^    "\(fonts-[a-z0-9-]*\)": .*/\1/p' metaprune/data/glyphs.py)
missing=$(for p in $fonts; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done | tr '\n' ' ')
if [ -n "${missing// /}" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
           --no-install-recommends $missing >/dev/null 2>&1; } \
      || echo "scripts/setup.sh: could not install the glyphs fonts with apt-get ($missing); data.name=glyphs will refuse and its tests skip" >&2
  else
    echo "scripts/setup.sh: font packages missing ($missing) and no apt-get as root; data.name=glyphs will refuse and its tests skip" >&2
  fi
fi
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
