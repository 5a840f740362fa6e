#!/usr/bin/env bash
# Runs every test program in BUILD/tests, prints their TAP, and ends with
# "N passed, N failed, N skipped". Exits non-zero on any failure, including a program
# that crashed, timed out, or printed fewer points than it planned.
set -u
build=${1:-build}
export LANTERN_BUILD=$(cd "$build" && pwd)
cd "$(dirname "$0")/../.."
pass=0 fail=0 skip=0
filter=${TESTS:-}
for t in "$build"/tests/*_test; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  if [ -n "$filter" ] && ! [[ " $filter " == *" $name "* ]]; then continue; fi
  echo "# === $name"
  out=$(mktemp)
  timeout --kill-after=10 "${TEST_TIMEOUT:-600}" "$t" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  p=$(grep -cE '^ok [0-9]+' "$out" | tr -d ' ')
  s=$(grep -cE '^ok [0-9]+ .*# SKIP' "$out" | tr -d ' ')
  f=$(grep -cE '^not ok [0-9]+' "$out" | tr -d ' ')
  planned=$(sed -nE 's/^1\.\.([0-9]+).*/\1/p' "$out" | head -n1)
  p=$((p - s))
  ran=$((p + s + f))
  if [ -n "$planned" ] && [ "$ran" -lt "$planned" ]; then
    echo "not ok - $name: ran $ran of $planned planned points (exit $rc)"
    f=$((f + planned - ran))
  elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "not ok - $name: exited $rc with no failing point"
    f=$((f + 1))
  fi
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
  rm -f "$out"
done
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ] && [ $((pass + skip)) -gt 0 ]
