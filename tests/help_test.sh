#!/usr/bin/env bash
# Every program of the project answers --help with its usage (on stdout, exit 0) and refuses
# an unknown flag (exit 2), and does nothing else: neither call writes into its working
# directory or runs long (a benchmark that ignored the flag would). CTest test programs_help
# passes every executable but the Catch2 test binaries.
#
# usage: help_test.sh PROGRAM...
set -u
failed=0
for prog in "$@"; do
  prog=$(realpath "$prog")
  name=$(basename "$prog")
  dir=$(mktemp -d)
  ok=1
  out=$(cd "$dir" && timeout 60 "$prog" --help 2>/dev/null </dev/null)
  rc=$?
  if [ "$rc" -ne 0 ] || ! grep -q "usage" <<<"$out"; then
    echo "FAIL $name --help: exit $rc, stdout: ${out:0:300}"
    ok=0
  fi
  err=$(cd "$dir" && timeout 60 "$prog" --no-such-flag 2>&1 >/dev/null </dev/null)
  rc=$?
  if [ "$rc" -ne 2 ]; then
    echo "FAIL $name --no-such-flag: exit $rc (expected 2), stderr: ${err:0:300}"
    ok=0
  fi
  if [ -n "$(ls -A "$dir")" ]; then
    echo "FAIL $name wrote into its working directory: $(ls -A "$dir" | head -5 | tr '\n' ' ')"
    ok=0
  fi
  rm -rf "$dir"
  if [ "$ok" -eq 1 ]; then echo "ok   $name"; else failed=$((failed + 1)); fi
done
echo "$# programs, $failed failed"
[ "$failed" -eq 0 ]
