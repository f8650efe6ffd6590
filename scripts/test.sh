#!/usr/bin/env bash
# Installs the Debian packages (scripts/setup.sh), checks the house style (scripts/format.sh
# --check), builds everything with warnings as errors (LOSSLENS_WERROR) and runs every test;
# then runs the fuzzers for a bounded time (scripts/fuzz.sh, in BUILD_DIR-fuzz), the tests
# again under AddressSanitizer + UndefinedBehaviorSanitizer (scripts/sanitize.sh, in
# BUILD_DIR-asan) and the tests of the concurrent code under ThreadSanitizer (scripts/tsan.sh,
# in BUILD_DIR-tsan).
# See docs/fuzzing.md and docs/reliability.md.
# Usage: bash scripts/test.sh [BUILD_DIR]   (default: build)
# Env: LOSSLENS_JOBS (2), LOSSLENS_FUZZ_SECONDS (per fuzzer, 60), LOSSLENS_SKIP_FUZZ=1,
#      LOSSLENS_SKIP_SANITIZERS=1 (quick local runs: only the main build and its tests)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/format.sh --check
build=${1:-build}
jobs=${LOSSLENS_JOBS:-2}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOSSLENS_WERROR=ON
# Say whether the shared fixtures are there: without them their tests pass unchecked.
fixtures=$(cmake -L -N "$build" 2>/dev/null | sed -n 's/^LOSSLENS_FIXTURES_DIR:PATH=//p')
if [ -f "$fixtures/tensorboard/expected.json" ]; then
  echo "test: shared fixtures found at $fixtures"
else
  echo "test: WARNING: no shared fixtures at '$fixtures': the tests that read them skip their" \
    "checks (clone next to ../shared, or configure -DLOSSLENS_FIXTURES_DIR=DIR)" >&2
fi
cmake --build "$build" -j"$jobs"
ctest --test-dir "$build" -j"$jobs" --output-on-failure

if [ "${LOSSLENS_SKIP_FUZZ:-0}" != 1 ]; then
  bash scripts/fuzz.sh "$build-fuzz"
fi

if [ "${LOSSLENS_SKIP_SANITIZERS:-0}" != 1 ]; then
  bash scripts/sanitize.sh "$build-asan"
  bash scripts/tsan.sh "$build-tsan"
fi
