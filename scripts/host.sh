#!/usr/bin/env bash
# Prepares the host for lanternd, its tests and benchmarks: bpffs (the pin root) and
# tracefs (telemetry's tracepoints). Mounts do not survive a reboot, so make runs this
# on every `make deps`, `check`, `demo` and `bench`; it is cheap and idempotent.
set -euo pipefail

if [ "$(id -u)" = 0 ]; then
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
  mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
else
  echo "host: not root: bpffs and tracefs not checked" >&2
fi
