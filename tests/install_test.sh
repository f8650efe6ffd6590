#!/usr/bin/env bash
# Installs the build into a temporary prefix and builds a project that uses find_package(losslens).
set -euo pipefail
build_dir=$1
src_dir=$2
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build_dir" --prefix "$prefix" >/dev/null
test -x "$prefix/bin/losslens"
"$prefix/bin/losslens" --version
cmake -S "$src_dir/tests/install_consumer" -B "$prefix/consumer-build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/consumer-build" -j2 >/dev/null
"$prefix/consumer-build/consumer"
bash "$src_dir/tests/help_test.sh" "$prefix/consumer-build/consumer"
