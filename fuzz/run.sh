#!/usr/bin/env bash
# fuzz/run.sh BUILD SECONDS [NAME...]: runs each fuzz target (every one with a corpus
# in fuzz/corpus, or the NAMEs given) for SECONDS, one after the other under nice (the
# machine's cores are shared), with its dictionary (fuzz/dict/NAME.dict) if it has one.
# Each keeps a working corpus in BUILD/fuzz/corpus/NAME (grown from the tree's
# fuzz/corpus/NAME, which it never writes), its log in BUILD/fuzz/logs/NAME.log and what
# it finds in BUILD/fuzz/artifacts/NAME/. Prints one line per target with its executions
# and coverage; exits non-zero if any target found something. FUZZ_FLAGS is added to every
# target's command line: FUZZ_FLAGS="-fork=1 -ignore_crashes=1" keeps a target going past
# what it finds (each finding is saved in artifacts/), for a target whose first finding is
# already known.
set -u
build=${1:-build}
secs=${2:-60}
shift 2 || shift $#
cd "$(dirname "$0")/.."
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for d in fuzz/corpus/*/; do names+=("$(basename "$d")"); done
fi
# targets' temporary directories on tmpfs when there is one: the tunnel's outbox and the
# image store sync their files, which on a disk costs every input a flush
base=${TMPDIR:-/tmp}
[ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
found=()
for n in "${names[@]}"; do
  bin=$build/fuzz/$n
  if [ ! -x "$bin" ]; then
    echo "fuzz $n: $bin is not built (make fuzz-build)" >&2
    found+=("$n")
    continue
  fi
  mkdir -p "$build/fuzz/corpus/$n" "$build/fuzz/logs" "$build/fuzz/artifacts/$n"
  log=$build/fuzz/logs/$n.log
  dict=()
  [ -f "fuzz/dict/$n.dict" ] && dict=(-dict="fuzz/dict/$n.dict")
  tmp=$(mktemp -d "$base/lantern-fuzz-run-XXXXXX")
  # shellcheck disable=SC2086
  TMPDIR=$tmp nice -n 10 "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -close_fd_mask=2 -print_final_stats=1 "${dict[@]}" -artifact_prefix="$build/fuzz/artifacts/$n/" \
    ${FUZZ_FLAGS:-} "$build/fuzz/corpus/$n" "fuzz/corpus/$n" >"$log" 2>&1
  rc=$?
  rm -rf "$tmp"
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -n1)
  # fork mode prints no final stats: its last status line counts the executions
  [ -n "$execs" ] || execs=$(grep -E '^#[0-9]+' "$log" | tail -n1 | sed -nE 's/^#([0-9]+).*/\1/p')
  stats=$(grep -E '^#[0-9]+' "$log" | tail -n1 | sed -nE 's/.*(cov: [0-9]+ ft: [0-9]+ corp: [^ ]+).*/\1/p')
  if [ "$rc" -eq 0 ]; then
    echo "fuzz $n: ${execs:-?} executions in ${secs} s, ${stats:-no stats}"
  else
    echo "fuzz $n: FOUND something (exit $rc) after ${execs:-?} executions; see $log and $build/fuzz/artifacts/$n/"
    grep -E 'SUMMARY' "$log" | head -n 3
    found+=("$n")
  fi
done
[ ${#found[@]} -eq 0 ]
