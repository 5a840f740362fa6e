#!/usr/bin/env bash
# Installs the Debian packages (and the test-only npm packages) Lantern needs.
# Idempotent: a second run installs nothing. make runs it again only when this file
# changes (build/.deps-stamp); preparing the host is scripts/host.sh, run every time.
set -euo pipefail

pkgs=(
  make gcc clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev   # build, BPF CO-RE
  libyaml-dev libjansson-dev libsodium-dev libssl-dev            # spec, JSON, crypto (libcrypto: the journal's SHA-256)
  dnsmasq-base                                                   # DNS upstream in tests
  nftables                                                       # egress benchmark peer
  iproute2 procps                                                # tests: netns, ss, ps
  runc runsc containernetworking-plugins iptables busybox-static   # OCI spawns: runtime handlers (runsc = gVisor), CNI bridge + host-local (+ NAT), the demo/test image
  containerd                                                     # CRI spawns (lanternd --cri-endpoint): Debian's containerd 1.6 and its runc.v2 shim; cri_test starts a private one
  libsqlite3-dev curl                                            # durable: bench/journal's SQLite peer; durable_test workloads call the harness and a sink with curl
  libprotobuf-dev                                                # tunnel: google/protobuf/timestamp.proto for dataplane.proto
  libsqlite3-dev libpq-dev postgresql                            # lantern-cp state: SQLite, PostgreSQL (tests start a private server)
  openssl curl sqlite3                                           # tunnel_test, telemetry_test: throwaway CA; operator API calls, DB checks
  protobuf-c-compiler libprotobuf-c-dev libgrpc-dev libcurl4-openssl-dev   # telemetry: OTLP/gRPC and OTLP/HTTP export
  libmicrohttpd-dev libseccomp-dev                               # telemetry: metrics endpoint, syscall names
  bpftrace                                                       # bench/telemetry: the peer counting syscalls per cgroup
  libclang-rt-14-dev                                             # make fuzz: libFuzzer, ASan and UBSan runtimes for clang
  containerd                                                     # image_test: imports lanternd's image and runs it with ctr
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

# test-only npm packages (npm registry, versions pinned by each package-lock.json):
#   tests/otlp-receiver   the official OpenTelemetry JavaScript packages decode what
#                         lanternd exports in the telemetry tests
#   tests/kube-apiserver  kubernetes-models (the official Kubernetes schemas) for the test
#                         API server and the deploy/daemonset check; yaml to read manifests
root="$(cd "$(dirname "$0")/.." && pwd)"
for pkg in otlp-receiver:@opentelemetry/otlp-transformer kube-apiserver:kubernetes-models; do
  dir="$root/tests/${pkg%%:*}"
  if [ -f "$dir/package-lock.json" ] && [ ! -d "$dir/node_modules/${pkg#*:}" ]; then
    if command -v npm >/dev/null; then
      echo "deps: npm ci in tests/${pkg%%:*}"
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    else
      echo "deps: npm not found: tests/${pkg%%:*} needs node and npm" >&2
    fi
  fi
done
echo "deps: ok"
