#!/usr/bin/env bash
# Installs every Debian package losslens needs. Idempotent: when all packages are already
# installed it does nothing (no apt-get update, no network). Needs root (or sudo).
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libtorch-dev libopenblas0-pthread libgloo-dev libsleef-dev
  libboost-dev nlohmann-json3-dev libsqlite3-dev zlib1g-dev
  libprotobuf-dev protobuf-compiler python3
  nodejs chromium
  catch2
  clang libclang-rt-14-dev clang-format
  dataset-fashion-mnist
)

# The dashboard page's npm packages (uPlot, and playwright-core for the browser test), from
# dashboard/web/package-lock.json. Idempotent: nothing to do when node_modules matches the lock.
npm_ci() {
  local web="$(dirname "$0")/../dashboard/web"
  if [ -f "$web/node_modules/.package-lock.json" ] &&
     ! [ "$web/package-lock.json" -nt "$web/node_modules/.package-lock.json" ]; then
    return 0
  fi
  echo "setup: npm ci in dashboard/web"
  npm ci --prefix "$web" --no-audit --no-fund
}

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# Debian's nodejs comes without npm (NodeSource's includes it).
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
  npm_ci
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "setup: missing packages (${missing[*]}); run this script as root" >&2; exit 1
  fi
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
npm_ci
echo "setup: done"
