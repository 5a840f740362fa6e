#!/usr/bin/env bash
# Installs the Debian packages (and the test-only npm packages) Lantern needs.
# Idempotent: a second run installs nothing. make runs it again only when this file
# changes (build/.deps-stamp); preparing the host is scripts/host.sh, run every time.
set -euo pipefail

pkgs=(
  make gcc clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev   # build, BPF CO-RE
  libyaml-dev libjansson-dev libsodium-dev                       # spec, JSON, crypto
  dnsmasq-base                                                   # DNS upstream in tests
  nftables                                                       # egress benchmark peer
  iproute2 procps                                                # tests: netns, ss, ps
  runc runsc containernetworking-plugins iptables busybox-static   # OCI spawns: runtime handlers (runsc = gVisor), CNI bridge + host-local (+ NAT), the demo/test image
  libsqlite3-dev curl                                            # durable: bench/journal's SQLite peer; durable_test workloads call the harness and a sink with curl
  libprotobuf-dev                                                # tunnel: google/protobuf/timestamp.proto for dataplane.proto
  libsqlite3-dev libpq-dev postgresql                            # lantern-cp state: SQLite, PostgreSQL (tests start a private server)
  openssl curl sqlite3                                           # tunnel_test, telemetry_test: throwaway CA; operator API calls, DB checks
  protobuf-c-compiler libprotobuf-c-dev libgrpc-dev libcurl4-openssl-dev   # telemetry: OTLP/gRPC and OTLP/HTTP export
  libmicrohttpd-dev libseccomp-dev                               # telemetry: metrics endpoint, syscall names
  bpftrace                                                       # bench/telemetry: the peer counting syscalls per cgroup
  libclang-rt-14-dev                                             # make fuzz: libFuzzer, ASan and UBSan runtimes for clang
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# tests/otlp-receiver: the official OpenTelemetry JavaScript packages (npm registry)
# decode what lanternd exports in the telemetry tests
recv="$(cd "$(dirname "$0")/.." && pwd)/tests/otlp-receiver"
if [ -f "$recv/package-lock.json" ] && [ ! -d "$recv/node_modules/@opentelemetry/otlp-transformer" ]; then
  if command -v npm >/dev/null; then
    echo "deps: npm ci in tests/otlp-receiver"
    (cd "$recv" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  else
    echo "deps: npm not found: the telemetry tests need node and npm" >&2
  fi
fi
echo "deps: ok"
