#!/usr/bin/env bash
# Builds the concurrent code with ThreadSanitizer (g++) and runs the tests that drive its
# threads: the monitor thread and its sinks (pipeline), the hand-off queues, the run writer's
# thread and readers beside it, the dashboard's I/O threads, poller and websocket sessions, and
# the LibTorch hooks firing during backward. Any data race report fails the test that caused
# it. LibTorch itself is not instrumented (Debian's build); see docs/reliability.md.
# Usage: bash scripts/tsan.sh [BUILD_DIR]   (default: build-tsan)
# Env: LOSSLENS_JOBS (2)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-tsan}
jobs=${LOSSLENS_JOBS:-2}

san="-fsanitize=thread -fno-omit-frame-pointer"
export CXXFLAGS="$san -Wno-maybe-uninitialized -Wno-tsan" LDFLAGS="$san"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
  -DLOSSLENS_BUILD_EXAMPLES=OFF -DLOSSLENS_BUILD_BENCH=OFF >/dev/null
targets=(test_core test_csv test_child_process test_storage test_tfevents test_dashboard
  test_dashboard_security losslens_cli)
if grep -q '^LOSSLENS_WITH_TORCH:BOOL=ON' "$build/CMakeCache.txt"; then targets+=(test_hooks); fi
cmake --build "$build" -j"$jobs" --target "${targets[@]}"

export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan.supp"
# The tests whose code runs on several threads (the readers of event files and MLflow runs
# among them: they read in parts, a thread each). Left out: the quality and detector tests
# (single-threaded, ten times slower under TSan; they run in the other builds) and the tests of
# volume and speed (3000 connections, a client too slow to keep up, million-point windows),
# whose timing TSan's slowdown distorts and whose threads the others exercise too.
ctest --test-dir "$build" -j"$jobs" --output-on-failure \
  -R '^(test_child_process:|test_core:pipeline|test_core:router|test_core:prefetcher|test_core:observe_stream|test_csv:mlflow|test_tfevents:tfevents: a file read in parts|test_storage:|test_dashboard|test_dashboard_security:|test_hooks:)' \
  -E 'soak|never reads|3000 connections|downsampled windows|at every zoom'
