#!/usr/bin/env bash
# fuzz/check.sh, installed as BUILD/tests/fuzz_test: the fuzz targets as a regression
# test, run by tests/kselftest-style/run.sh from the top of the tree. Each target runs
# over its corpus (fuzz/corpus/NAME: the seeds and every input that once found a bug),
# then a fixed number of mutations from a fixed seed. One TAP point per target: not ok on
# a crash, a leak, a UBSan report, a broken property (FZ_CHECK), a timeout, or a target
# that was not built (make fuzz-build). New inputs, the targets' temporary directories
# and what a failing target leaves go to a scratch directory, never into the tree.
set -u
build=${LANTERN_BUILD:-build}

# mutations after the corpus: fewer for the targets that touch files, sockets or a
# database on every input, so the whole check stays well under a minute
runs_of() {
  case "$1" in
    image|cp_service|cp_http|tunnel|harness_http|wire) echo 300 ;;
    tar) echo 1000 ;;
    *) echo 2000 ;;
  esac
}

if [ ! -d fuzz/corpus ]; then
  echo "TAP version 13"; echo "1..1"
  echo "not ok 1 - fuzz: no fuzz/corpus here (run from the top of the tree)"
  exit 1
fi
names=()
for d in fuzz/corpus/*/; do names+=("$(basename "$d")"); done
echo "TAP version 13"
echo "1..${#names[@]}"
# on tmpfs when there is one: targets that sync files (the tunnel's outbox, the image
# store) would wait on the disk at every input
base=${TMPDIR:-/tmp}
[ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
scratch=$(mktemp -d "$base/lantern-fuzz-check-XXXXXX")
trap 'rm -rf "$scratch"' EXIT
i=0 failed=0
for n in "${names[@]}"; do
  i=$((i + 1))
  bin=$build/fuzz/$n
  if [ ! -x "$bin" ]; then
    echo "not ok $i - fuzz $n: $bin is not built (make fuzz-build)"
    failed=$((failed + 1))
    continue
  fi
  mkdir -p "$scratch/$n/new"
  seeds=$(find "fuzz/corpus/$n" -type f | wc -l)
  runs=$(runs_of "$n")
  dict=()
  [ -f "fuzz/dict/$n.dict" ] && dict=(-dict="fuzz/dict/$n.dict")
  start=$(date +%s%N)
  mkdir -p "$scratch/$n/tmp"
  TMPDIR=$scratch/$n/tmp timeout --kill-after=5 120 "$bin" -runs="$runs" -seed=1 -timeout=10 \
    -rss_limit_mb=2048 -close_fd_mask=2 "${dict[@]}" -artifact_prefix="$scratch/$n/" \
    "$scratch/$n/new" "fuzz/corpus/$n" >"$scratch/$n/log" 2>&1
  rc=$?
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  secs=$((ms / 1000)).$((ms % 1000 / 100))
  stats=$(sed -nE 's/^#[0-9]+[[:space:]]+DONE[[:space:]]+(cov: [0-9]+ ft: [0-9]+).*/\1/p' "$scratch/$n/log" | tail -n1)
  if [ "$rc" -eq 0 ]; then
    printf 'ok %d - fuzz %s: %d seeds + %d runs in %s s (%s)\n' "$i" "$n" "$seeds" "$runs" "$secs" "${stats:-no stats}"
  else
    printf 'not ok %d - fuzz %s: exit %d after %s s\n' "$i" "$n" "$rc" "$secs"
    grep -E 'ERROR|SUMMARY|^    #[0-9]|Test unit written|crash-|leak-|timeout-' "$scratch/$n/log" | head -n 40 | sed 's/^/# /'
    failed=$((failed + 1))
  fi
done
[ "$failed" -eq 0 ]
