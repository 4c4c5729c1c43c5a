#!/usr/bin/env bash
# The main job on the embedded default data: set up, then `metaprune quickstart` (meta-train,
# Pareto search, export, scratch training against the uniform baseline on Ray, report).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/metaprune quickstart "$@"
