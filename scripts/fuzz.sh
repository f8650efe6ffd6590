#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each for a bounded time, starting
# from the committed corpus and regressions copied into a scratch directory (fuzz/ is never
# modified). Fails on any crash, sanitizer report, leak, timeout or out-of-memory and prints
# where the input that caused it is. See docs/fuzzing.md.
# Usage: bash scripts/fuzz.sh [BUILD_DIR [TARGET...]]   (default: build-fuzz; csv tfevents http ws)
# Env: LOSSLENS_FUZZ_SECONDS (per target, default 60), LOSSLENS_JOBS (build jobs, default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-fuzz}
shift $(( $# > 0 ? 1 : 0 ))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(csv tfevents http ws)
seconds=${LOSSLENS_FUZZ_SECONDS:-60}
jobs=${LOSSLENS_JOBS:-2}

# Only what the fuzzers need; LOSSLENS_BUILD_FUZZERS instruments everything in this directory.
CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLOSSLENS_WITH_TORCH=OFF -DLOSSLENS_BUILD_EXAMPLES=OFF -DLOSSLENS_BUILD_BENCH=OFF \
  -DLOSSLENS_BUILD_TESTS=OFF -DLOSSLENS_BUILD_FUZZERS=ON >/dev/null
cmake --build "$build" -j"$jobs" --target fuzzers

# LeakSanitizer needs to stop the process' threads (ptrace); some containers deny that.
leaks=1
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'int main() { return 0; }' >"$probe/p.cpp"
if ! { clang++ -fsanitize=address "$probe/p.cpp" -o "$probe/p" &&
       ASAN_OPTIONS=detect_leaks=1 "$probe/p"; } >/dev/null 2>&1; then
  leaks=0
  echo "fuzz: LeakSanitizer does not work here; fuzzing without leak detection" >&2
fi

work=$(realpath "$build")/fuzz-run  # scratch: corpus copies, crashing inputs, logs
failed=()
for t in "${targets[@]}"; do
  dir="$work/$t"
  rm -rf "$dir"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp fuzz/corpus/"$t"/* "$dir/corpus/"
  if [ -d fuzz/regressions/"$t" ]; then cp fuzz/regressions/"$t"/* "$dir/corpus/"; fi
  echo "fuzz: $t for ${seconds}s"
  # -timeout: one input running longer is a hang; -rss_limit_mb: memory blow-up; leaks are
  # crashes too.
  if "$build/fuzz/fuzz_$t" "$dir/corpus" -max_total_time="$seconds" -timeout=10 \
       -rss_limit_mb=2048 -dict="fuzz/dict/$t.dict" -artifact_prefix="$dir/artifacts/" \
       -detect_leaks="$leaks" -print_final_stats=1 >"$dir/fuzz.log" 2>&1; then
    # e.g. "fuzz: csv ok: 290674 runs, 4765 exec/s, cov 2301, corpus 900 inputs"
    awk -v t="$t" '/^stat::number_of_executed_units/ {runs=$2}
                   /^stat::average_exec_per_sec/ {eps=$2}
                   /DONE/ {for (i = 1; i < NF; i++) {if ($i == "cov:") cov=$(i+1);
                                                     if ($i == "corp:") corp=$(i+1)}}
                   END {printf "fuzz: %s ok: %s runs, %s exec/s, cov %s, corpus %s\n",
                               t, runs, eps, cov, corp}' "$dir/fuzz.log"
  else
    failed+=("$t")
    tail -n 80 "$dir/fuzz.log"
    echo "fuzz: $t FAILED (log: $dir/fuzz.log)"
    for f in "$dir"/artifacts/*; do
      [ -e "$f" ] || continue
      echo "fuzz: input: $f"
      echo "fuzz:   reproduce: $build/fuzz/fuzz_$t $f"
      echo "fuzz:   after the fix, commit it as fuzz/regressions/$t/<what-it-found>"
    done
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failures in: ${failed[*]}" >&2
  exit 1
fi
