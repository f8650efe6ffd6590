#!/usr/bin/env bash
# Installs the Debian packages, builds losslens, trains a Fashion-MNIST
# classifier twice with losslens attached and its live dashboard on (a healthy run, then one at a
# learning rate that blows up), and prints what losslens found. About two minutes on 2 cores.
# Usage: bash scripts/demo.sh [BUILD_DIR]   (default: build); PORT=8080 to change the port.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${1:-build}
port=${PORT:-8080}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"${LOSSLENS_JOBS:-2}" --target losslens_cli fmnist_train
cli="$build/tools/losslens/losslens"
train="$build/examples/fmnist_train"
mkdir -p "$build/demo"
db="$build/demo/runs.db"
rm -f "$db" "$db-wal" "$db-shm"

echo "== dashboard: http://127.0.0.1:$port/  (served by each trainer while it runs; the page"
echo "   reconnects between runs; afterwards 'losslens serve' keeps it up)"
echo
echo "== healthy run (lr 0.05)"
"$train" --db "$db" --run demo-healthy --steps 15000 --limit 0 --port "$port"
echo
echo "== too-high learning rate (lr 5)"
"$train" --db "$db" --run demo-lr5 --lr 5 --steps 15000 --limit 0 --port "$port"
echo
echo "== losslens runs --db $db"
"$cli" runs --db "$db"
echo
if [ -t 0 ]; then
  echo "== dashboard: http://127.0.0.1:$port/  (Ctrl-C to stop)"
  exec "$cli" serve --db "$db" --port "$port"
else
  echo "== look back at both runs: $cli serve --db $db --port $port"
fi
