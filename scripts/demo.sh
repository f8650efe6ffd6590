#!/usr/bin/env bash
# Installs the Debian packages, builds losslens and shows what it finds in a set of training
# runs: a healthy one and one per pathology (generated runs with a known onset).
# Usage: bash scripts/demo.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${1:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"${LOSSLENS_JOBS:-2}" --target losslens_cli synthetic_runs
out="$build/demo-runs"
echo "== writing runs to $out"
"$build/examples/synthetic_runs" "$out"
for f in "$out"/*.csv; do
  echo
  echo "== losslens analyze $f --classes 10"
  "$build/tools/losslens/losslens" analyze "$f" --classes 10
done
