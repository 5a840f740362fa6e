#!/usr/bin/env bash
# Runs every benchmark program in BUILD/bench (built from bench/NAME/ by make) and
# prints its table. Each benchmark sets up and removes its own cgroups, pins and
# nft tables. Exits non-zero if any benchmark fails or none exists.
# Usage: bench/run.sh [BUILD]   (BENCH_ARGS="..." is passed to every program)
set -u
build=${1:-build}
cd "$(dirname "$0")/.."
ran=0 failed=()
for b in "$build"/bench/*; do
  [ -f "$b" ] && [ -x "$b" ] || continue
  name=$(basename "$b")
  echo "# === bench $name"
  # shellcheck disable=SC2086
  "$b" ${BENCH_ARGS:-}
  rc=$?
  ran=$((ran + 1))
  if [ "$rc" -ne 0 ]; then
    echo "# bench $name failed (exit $rc)"
    failed+=("$name")
  fi
done
if [ "$ran" -eq 0 ]; then
  echo "# no benchmark programs in $build/bench" >&2
  exit 1
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "# $ran benchmarks, failed: ${failed[*]}"
  exit 1
fi
echo "# $ran benchmarks, all completed"
