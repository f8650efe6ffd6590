#!/usr/bin/env bash
# Formats the C++ sources with clang-format and the repository's .clang-format (the house
# style), or with --check lists the files that differ from it and fails (CI runs the check).
# Usage: bash scripts/format.sh [--check]
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "format.sh: unknown argument '$1' (use --check or nothing)" >&2; exit 2 ;;
esac
mapfile -t files < <(git ls-files '*.cpp' '*.hpp' '*.h' | grep -v '/node_modules/')
if [ "$check" = 1 ]; then
  bad=()
  for f in "${files[@]}"; do
    clang-format --style=file "$f" | cmp -s - "$f" || bad+=("$f")
  done
  if [ "${#bad[@]}" -gt 0 ]; then
    printf 'format: %s is not in the house style\n' "${bad[@]}" >&2
    echo "format: ${#bad[@]} of ${#files[@]} files differ; run: bash scripts/format.sh" >&2
    exit 1
  fi
  echo "format: ${#files[@]} files in the house style"
else
  clang-format --style=file -i "${files[@]}"
fi
