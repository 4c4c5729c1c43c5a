#!/usr/bin/env bash
# Set up (if needed) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The web page's test drives Debian's headless Chromium through Playwright's executable_path (never
# `playwright install`: it downloads browsers). Install it where apt works; the test skips, saying
# why, where it cannot.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
           --no-install-recommends chromium >/dev/null 2>&1; } \
      || echo "scripts/test.sh: could not install chromium with apt-get; the browser test will be skipped" >&2
  else
    echo "scripts/test.sh: no chromium and no apt-get as root; the browser test will be skipped" >&2
  fi
fi
export RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
