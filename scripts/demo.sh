#!/usr/bin/env bash
# make demo: a private lanternd on this machine, the examples/ specs run through it
# (hello; egress allowed, denied, FQDN), then what an operator sees: lantern ps, lantern
# audit egress, the pinned maps through bpftool, and the JSON event log. Everything stays
# on loopback and is removed at the end.
set -u
build=$(cd "${1:-build}" && pwd)
cd "$(dirname "$0")/.."
root=$(pwd)
name=lantern-demo-$$
dir=/tmp/$name
sock=$dir/lanternd.sock
pins=/sys/fs/bpf/$name
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
for a in 127.0.0.1:18080 127.0.0.1:18081 127.0.0.10:18443; do
  "$build/tests/netprobe" listen "${a%:*}" "${a#*:}" & pids+=($!)
done
dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
  --listen-address=127.0.0.1 --port=15353 --pid-file= --user=root \
  --host-record=api.demo.test,127.0.0.10 --host-record=example.org,127.0.0.11 2>/dev/null & pids+=($!)

"$build/lanternd" --state-dir "$dir/state" --socket "$sock" --bpffs "$pins" \
  --cgroup-root "$name" --process-runtime --dns-upstream 127.0.0.1:15353 2>"$dir/lanternd.log" &
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
