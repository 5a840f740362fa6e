#!/usr/bin/env bash
# make demo: a private lanternd on this machine, the examples/ specs run through it
# (hello; egress allowed, denied, FQDN), then what an operator sees: lantern ps, lantern
# audit egress, the pinned maps through bpftool, and the JSON event log. Then OCI spawns:
# a busybox image built reproducibly and imported by digest, hello and egress under runc
# and runsc, a running spawn's logs and resource usage. Everything stays on loopback or
# on a private bridge with no route out, and is removed at the end (lantern reset).
set -u
build=$(cd "${1:-build}" && pwd)
cd "$(dirname "$0")/.."
root=$(pwd)
name=lantern-demo-$$
dir=/tmp/$name
sock=$dir/lanternd.sock
pins=/sys/fs/bpf/$name
bridge=ldemo$(( $$ % 100000 ))
pids=()

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
cleanup() {
  [ -n "${lanternd:-}" ] && kill "$lanternd" 2>/dev/null && wait "$lanternd" 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  "$build/lantern" --socket "$sock" reset --state-dir "$dir/state" --bpffs "$pins" --cgroup-root "$name" >/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p "$dir"

# Loopback stand-ins for the outside world: listeners and a DNS upstream.
# 0.0.0.0:1809x: reachable from OCI spawns on the demo bridge (10.213.77.1)
for a in 127.0.0.1:18080 127.0.0.1:18081 127.0.0.10:18443 0.0.0.0:18090 0.0.0.0:18091; do
  "$build/tests/netprobe" listen "${a%:*}" "${a#*:}" & pids+=($!)
done
dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
  --listen-address=127.0.0.1 --port=15353 --pid-file= --user=root \
  --host-record=api.demo.test,127.0.0.10 --host-record=example.org,127.0.0.11 2>/dev/null & pids+=($!)

"$build/lanternd" --state-dir "$dir/state" --socket "$sock" --bpffs "$pins" \
  --cgroup-root "$name" --process-runtime --dns-upstream 127.0.0.1:15353 \
  --net-bridge "$bridge" --net-subnet 10.213.77.0/24 2>"$dir/lanternd.log" &
lanternd=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
export LANTERN_SOCKET=$sock
L="$build/lantern"

say "lanternd is up: pins under $pins, instances under the cgroup $name"
head -n 3 "$dir/lanternd.log"

say "validate a spec without a daemon"
show "$L" validate examples/hello.yaml | head -n 12; echo "  ..."

say "hello: a host process in its own cgroup, network none"
show "$L" run examples/hello.yaml

say "egress allowed: 127.0.0.1:18080 is in the allowlist"
show "$L" run examples/egress-allowed.yaml

say "egress denied: 127.0.0.1:18081 is not; the kernel says EPERM"
show "$L" run examples/egress-denied.yaml; echo "(exit status $?)"

say "FQDN: *.demo.test resolves and becomes reachable; other names are refused"
show "$L" run examples/egress-fqdn.yaml

say "an invalid spec: errors name file:line:col and the field"
printf 'apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata: {name: bad}\nspec:\n  image_digest: host\n  limits: {memory: 12Qi}\n  egress_rules: [{pattern: "tcp://10.0.0.1/8"}]\n' >"$dir/bad.yaml"
show "$L" run "$dir/bad.yaml"

say "a running instance, audited"
"$L" run examples/watcher.yaml >/dev/null 2>&1 &
sleep 2.5
show "$L" ps
show "$L" audit egress
inst=$("$L" ps | awk '$3 == "watcher" && $4 == "running" {print $2}')
say "the same through bpftool: the instance's entry in the pinned maps"
cgid=$(stat -c %i "/sys/fs/cgroup/unified/$name/$inst" 2>/dev/null || stat -c %i "/sys/fs/cgroup/$name/$inst")
echo "# cgroup id of $inst: $cgid"
show bpftool map dump pinned "$pins/lantern_instances"

say "lanternd's log: one JSON line per deny"
grep '"verdict":"deny"' "$dir/lanternd.log" | tail -n 3

run=$("$L" ps | awk '$3 == "watcher" && $4 == "running" {print $1}')
say "stop it"
show "$L" kill "$run"
sleep 0.5
show "$L" ps

say "OCI images: busybox-static built twice by scripts/mkimage.sh, same digest both times"
ref=$(scripts/mkimage.sh "$dir/img" lantern/busybox:1.35)
ref2=$(scripts/mkimage.sh "$dir/img2" lantern/busybox:1.35)
echo "$ref"
echo "$ref2"
show "$L" image import "$dir/img"
show "$L" node
for f in oci-hello oci-egress-allowed oci-egress-denied oci-watcher; do
  sed "s|IMAGE|$ref|" "examples/$f.yaml" >"$dir/$f.yaml"
  sed -e "s|IMAGE|$ref|" -e 's/isolation: trusted/isolation: standard/' "examples/$f.yaml" >"$dir/$f-runsc.yaml"
done

say "oci-hello under runc (isolation trusted), then under runsc (isolation standard: gVisor's kernel)"
show "$L" run "$dir/oci-hello.yaml"
show "$L" run "$dir/oci-hello-runsc.yaml"

say "OCI egress on the node bridge: 10.213.77.1:18090 allowed, :18091 denied by the kernel, runc then runsc"
for v in "" -runsc; do
  show "$L" run "$dir/oci-egress-allowed$v.yaml"
  show "$L" run "$dir/oci-egress-denied$v.yaml"; echo "(exit status $?)"
done

say "a running OCI spawn: lantern ps, lantern logs, its cgroup's memory and CPU"
"$L" run "$dir/oci-watcher.yaml" >/dev/null 2>&1 &
sleep 3.5
show "$L" ps
run=$("$L" ps | awk '$3 == "oci-watcher" && $4 == "running" {print $1}')
inst=$("$L" ps | awk '$3 == "oci-watcher" && $4 == "running" {print $2}')
show "$L" logs -t "$run"
for f in memory/$name/$inst/memory.usage_in_bytes memory/$name/$inst/memory.max_usage_in_bytes \
         memory/$name/$inst/memory.limit_in_bytes cpuacct/$name/$inst/cpuacct.usage pids/$name/$inst/pids.current; do
  [ -r "/sys/fs/cgroup/$f" ] && printf '%-58s %s\n' "/sys/fs/cgroup/$f" "$(cat "/sys/fs/cgroup/$f")"
done
show "$L" kill "$run"
# sh as the container's init ignores SIGTERM: the SIGKILL after the grace ends it
for _ in $(seq 100); do "$L" ps | grep "^$run" | grep -q running || break; sleep 0.1; done
show "$L" ps | head -n 3
