/* cri_test: spawns as CRI pods of a real containerd (Debian's 1.6, its runc.v2 shim),
 * started by this test with its own root, state, socket and config: the drop-in from
 * `lantern node containerd-config`, lantern-oci as the handlers' runtime, the pause image
 * built from the tree (scripts/mkpause.sh) and the workload image (scripts/mkimage.sh)
 * imported with ctr. Through lanternd --cri-endpoint: trusted under runc and standard and
 * untrusted under runsc run and report their exit code; a workload whose first
 * instruction connects to a denied address gets EPERM (with network none too, where the
 * pod has loopback only) and one to the allowed bridge address connects; its syscalls
 * are counted from the start; OOM and timeout are reported; hostile is refused. Through
 * lantern-oci directly (ctr run --runc-binary): a container lanternd did not ask for, one
 * forging a run's cgroup, annotations or class, and any container while lanternd is down
 * are refused and never run. kill -9 of lanternd keeps a pod enforced and a restarted
 * lanternd adopts it by its labels; 50 spawns leave no pod, container, network
 * namespace, cgroup, map entry or handler record behind. A warm pool of pods (--pools):
 * it fills in the namespace lantern-pool, a container forging a ready pooled sandbox is
 * refused, a matching spec takes a pooled pod whose
 * first instruction is judged by the run's policy and reads the run's identity, its
 * exit code is reported and its pod goes after the run, the pool refills; a pod whose
 * waiter was killed is never handed out, a claim whose waiter is stopped fails and the
 * spawn starts cold; after kill -9 of lanternd a claimed pooled run
 * is adopted and the ready pods reclaimed; a clean stop leaves nothing.
 *
 * Packets stay on this machine: the pods reach only the test bridge's own address. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "tap.h"
#include "testlib.h"
#include "ctdlib.h"
#include "lantern/util.h"

static struct tl_env T;
static struct tl_net net;
static struct tl_ctd C;
static const char *image = C.image, *ctd = C.dir, *ctr = C.ctr, *hroot = C.hroot;
static char extra[1024];

/* An AgentSpec whose workload is argv (a YAML flow list), not a shell. */
static const char *spec_argv(const char *name, const char *iso, const char *fields, const char *argv)
{
	char file[128];

	snprintf(file, sizeof(file), "%s.yaml", name);
	return tl_file(&T, file,
		       "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: %s\nspec:\n"
		       "  image_digest: %s\n  isolation: %s\n%s  command: %s\n",
		       name, image, iso, fields ? fields : "", argv);
}

static const char *spec(const char *name, const char *iso, const char *fields, const char *script)
{
	return tl_spec(&T, name, NULL, script, "  image_digest: %s\n  isolation: %s\n%s", image, iso,
		       fields ? fields : "");
}

static void test_config(void)
{
	char *out = NULL, *err = NULL;
	int rc;

	rc = tl_ctd_config(&C, &out, &err);
	tap_ok(rc == 0 && tl_has(out, "runtimes.lantern-trusted]") && tl_has(out, "runtimes.lantern-standard]") &&
	       tl_has(out, "runtimes.lantern-untrusted]") && !tl_has(out, "runtimes.lantern-hostile]") &&
	       tl_has(out, "# isolation hostile: not run on this node") && tl_has(out, "pod_annotations = [\"lantern.dev/*\"]"),
	       "lantern node containerd-config: handlers lantern-trusted, -standard, -untrusted (lantern-oci), "
	       "hostile left out with the reason: %s", tl_oneline(err));
	free(out);
	free(err);
}

static bool status_is(const char *id, const char *status)
{
	char *out = NULL;
	bool ok;

	tl_lantern(&T, &out, NULL, "ps | grep '^%s '", id);
	ok = tl_has(out, status);
	free(out);
	return ok;
}

static void test_runs(void)
{
	char *out = NULL, *err = NULL, id[32], inst[32];
	int rc;

	rc = tl_run(&T, spec("trusted", "trusted", NULL,
			     "echo hello-runc; cat /proc/self/cgroup | grep -c \"/$LANTERN_INSTANCE_ID/\"; "
			     "touch /x 2>/dev/null || echo root-read-only; echo s > /tmp/s && cat /tmp/s; exit 3"),
		    &out, &err);
	tl_newest_run(&T, id, sizeof(id), inst, sizeof(inst));
	tap_ok(rc != 0 && tl_has(out, "hello-runc\n") && tl_has(out, "root-read-only\ns\n") && tl_has(err, "exit code 3") &&
	       status_is(id, "failed"),
	       "trusted (runc) pod runs in a cgroup inside its instance, read-only root, scratch, exit code 3 "
	       "reported: %s %s", tl_oneline(out), tl_oneline(err));
	free(out);
	free(err);

	rc = tl_run(&T, spec("standard", "standard", NULL, "echo hello-runsc; exit 4"), &out, &err);
	tl_newest_run(&T, id, sizeof(id), inst, sizeof(inst));
	tap_ok(rc != 0 && tl_has(out, "hello-runsc\n") && tl_has(err, "exit code 4"),
	       "standard (runsc) pod runs, its output and exit code 4 reported: %s %s", tl_oneline(out), tl_oneline(err));
	free(out);
	free(err);

	rc = tl_run(&T, spec("untrusted", "untrusted", "  network: none\n",
			     "ip -o link | grep -vc ': lo:'; dmesg >/dev/null 2>&1 && echo syslog-ok || echo syslog-denied"),
		    &out, &err);
	tap_ok(rc == 0 && tl_has(out, "0\nsyslog-denied\n"),
	       "untrusted (runsc): deny-by-default seccomp, network none keeps loopback only: %s", tl_oneline(out));
	free(out);
	free(err);

	/* runc has no network flag of its own: the pod's veth from the node's CNI is removed
	 * by lantern-oci (rtnetlink) before the sandbox is created */
	rc = tl_run(&T, spec("none-runc", "trusted", "  network: none\n", "ip -o link | grep -vc ': lo:'; ip -o link"),
		    &out, &err);
	tap_ok(rc == 0 && !strncmp(out ? out : "", "0\n", 2) && tl_has(out, ": lo:"),
	       "trusted (runc), network none: the pod's CNI link is gone, loopback alone is left: %s", tl_oneline(out));
	free(out);
	free(err);

	rc = tl_run(&T, spec("hostile", "hostile", NULL, "echo must-not-run"), &out, &err);
	tap_ok(rc != 0 && !tl_has(out, "must-not-run") && tl_has(err, "\"hostile\"") && tl_has(err, "refused"),
	       "hostile is refused: this node does not run it: %s", tl_oneline(err));
	free(out);
	free(err);

	rc = tl_run(&T, spec("oom", "trusted", "  limits:\n    memory: 32Mi\n", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"),
		    NULL, &err);
	tap_ok(rc != 0 && tl_has(err, "oom_killed"), "memory limit: the pod's OOM kill is reported as oom_killed: %s",
	       tl_oneline(err));
	free(err);

	rc = tl_run(&T, spec("timeout", "trusted", "  limits:\n    timeout: 1s\n", "sleep 30"), NULL, &err);
	tap_ok(rc != 0 && tl_has(err, "timed_out"), "limits.timeout: the pod ends timed_out: %s", tl_oneline(err));
	free(err);
}

static void test_egress(void)
{
	uint16_t ok_port = 0, deny_port = 0;
	int ok_fd = tl_tcp_listen("0.0.0.0", &ok_port), deny_fd = tl_tcp_listen("0.0.0.0", &deny_port);
	char fields[300], argv[200], *out = NULL, *err = NULL, id[32], inst[32], *spans = NULL;
	int rc;

	tl_acceptor(ok_fd, "pong\n");
	tl_acceptor(deny_fd, "pong\n");
	snprintf(fields, sizeof(fields), "  network: allowlist_domain\n  egress_rules:\n    - pattern: tcp://%s:%u\n", net.gw,
		 ok_port);
	snprintf(argv, sizeof(argv), "[\"/bin/nc\", \"-w\", \"2\", \"%s\", \"%u\"]", net.gw, deny_port);
	rc = tl_run(&T, spec_argv("first-deny", "trusted", fields, argv), &out, &err);
	tl_newest_run(&T, id, sizeof(id), inst, sizeof(inst));
	tap_ok(rc != 0 && tl_has(err, "Operation not permitted") && !tl_has(out, "pong"),
	       "a workload whose first instruction connects to a denied bridge address gets EPERM: %s", tl_oneline(err));
	free(out);
	free(err);
	/* nc is the container's first process: its exec and its one connect are counted */
	tl_sh(&spans, NULL, "grep -o '\"connect\": *{\"count\": *[0-9]*' %s/runs/%s/telemetry.json | grep -o '[0-9]*$'; "
	      "grep -c '\"stringValue\": *\"/bin/nc\"' %s/runs/%s/telemetry.json", T.state, id, T.state, id);
	tap_ok(spans && atoi(spans) >= 1 && strchr(spans, '\n') && atoi(strchr(spans, '\n') + 1) >= 1,
	       "its syscalls are counted from the start: the exec of /bin/nc and its connect (connect count, nc execs: %s)",
	       tl_oneline(spans));
	free(spans);

	snprintf(argv, sizeof(argv), "[\"/bin/nc\", \"-w\", \"2\", \"%s\", \"%u\"]", net.gw, ok_port);
	rc = tl_run(&T, spec_argv("first-allow", "trusted", fields, argv), &out, &err);
	tap_ok(rc == 0 && tl_has(out, "pong"), "the allowed address on the node bridge connects: %s %s", tl_oneline(out),
	       tl_oneline(err));
	free(out);
	free(err);

	snprintf(argv, sizeof(argv), "[\"/bin/nc\", \"-w\", \"2\", \"%s\", \"%u\"]", net.gw, ok_port);
	rc = tl_run(&T, spec_argv("none-deny", "trusted", "  network: none\n", argv), &out, &err);
	tap_ok(rc != 0 && tl_has(err, "Operation not permitted") && !tl_has(err, "unreachable"),
	       "network none: the first connect gets EPERM from the hook, not \"network unreachable\": %s", tl_oneline(err));
	free(out);
	free(err);

	snprintf(argv, sizeof(argv), "[\"/bin/nc\", \"-w\", \"2\", \"%s\", \"%u\"]", net.gw, deny_port);
	rc = tl_run(&T, spec_argv("runsc-deny", "standard", fields, argv), &out, &err);
	tap_ok(rc != 0 && tl_has(err, "Operation not permitted"),
	       "standard (runsc, the Sentry's host sockets in the pod's namespace): the denied connect gets EPERM: %s",
	       tl_oneline(err));
	free(out);
	free(err);
}

/* ctr run through lantern-oci: root names the handler containerd would give, then the
 * extra ctr flags; the marker must never be printed. */
static bool refused(const char *root, const char *flags, const char *name, char **why)
{
	char *out = NULL;
	int rc = tl_sh(&out, why, "timeout 30 %s run --rm --runc-binary %s/lantern-oci %s%s %s docker.io/test/busybox:1 %s "
		       "echo must-not-run", ctr, T.build, root ? "--runc-root " : "", root ? root : "", flags, name);
	bool ok = rc != 0 && !tl_has(out, "must-not-run") && !tl_has(*why, "must-not-run");

	free(out);
	tl_sh(NULL, NULL, "%s containers rm %s >/dev/null 2>&1", ctr, name);
	return ok;
}

static void test_refusals(void)
{
	char *why = NULL, id[32], inst[32], root[500], flags[800];
	bool ok;

	ok = refused(NULL, "", "unknown1", &why);
	tap_ok(ok && tl_has(why, "not a lantern handler"),
	       "ctr run --runc-binary lantern-oci, a container lanternd did not ask for: refused, never runs: %s",
	       tl_oneline(why));
	free(why);

	/* a run to forge against */
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock,
	      spec("victim", "trusted", NULL, "sleep 20"));
	if (!tl_running_run(&T, "victim", id, sizeof(id), 10000))
		id[0] = '\0';
	tl_newest_run(&T, id, sizeof(id), inst, sizeof(inst));
	snprintf(root, sizeof(root), "%s/lantern-trusted", hroot);
	snprintf(flags, sizeof(flags), "--cgroup /%s/%s/forged", T.cgroot, inst);
	ok = refused(root, flags, "forged1", &why);
	tap_ok(ok && tl_has(why, "do not name run"),
	       "a container in a live run's instance cgroup without the run's annotations: refused: %s", tl_oneline(why));
	free(why);

	snprintf(flags, sizeof(flags),
		 "--cgroup /%s/%s/forged --annotation lantern.dev/run-id=%s --annotation lantern.dev/agent-instance-id=%s "
		 "--annotation io.kubernetes.cri.sandbox-namespace=lantern-t-default", T.cgroot, inst, id, inst);
	snprintf(root, sizeof(root), "%s/lantern-standard", hroot);
	ok = refused(root, flags, "forged2", &why);
	tap_ok(ok && tl_has(why, "isolation \"trusted\""),
	       "the run's annotations through another class's handler: refused: %s", tl_oneline(why));
	free(why);
	snprintf(root, sizeof(root), "%s/lantern-trusted", hroot);
	ok = refused(root, flags, "forged3", &why);
	tap_ok(ok && tl_has(why, "is not the pod lanternd made"),
	       "the run's annotations and class but not the pod lanternd made for it: refused: %s", tl_oneline(why));
	free(why);
	tl_lantern(&T, NULL, NULL, "kill %s", id);
	tl_sh(NULL, NULL, "sleep 4");

	tl_daemon_stop(&T, SIGTERM);
	ok = refused(root, flags, "nolanternd", &why);
	tap_ok(ok && tl_has(why, "lanternd is not reachable"),
	       "lanternd unreachable: refused, never runs: %s", tl_oneline(why));
	free(why);
	tl_daemon_start(&T, extra);
}

/* kill -9 of lanternd: the pod goes on, still enforced; the new lanternd finds it by
 * its labels (its cri.json removed) and sees it to its end. */
static void test_kill9(void)
{
	char *out = NULL, id[32], inst[32], log[600], script[300];
	uint16_t port = 0;
	int fd = tl_tcp_listen("0.0.0.0", &port);
	long before, after;

	tl_acceptor(fd, "pong\n");
	snprintf(script, sizeof(script), "i=0; while [ $i -lt 40 ]; do nc -w 1 %s %u </dev/null 2>&1 | tail -1; i=$((i+1)); "
		 "usleep 200000; done; echo finished", net.gw, port);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock,
	      spec("survivor", "trusted", "  network: allowlist_domain\n", script));
	tl_running_run(&T, "survivor", id, sizeof(id), 10000);
	tl_newest_run(&T, id, sizeof(id), inst, sizeof(inst));
	usleep(1500 * 1000);
	tl_sh(&out, NULL, "%s containers info $(%s containers ls -q | head -50 | while read c; do %s containers info $c | "
	      "grep -q '\"lantern.dev/run-id\": \"%s\"' && echo $c; done | head -1) | grep -cE "
	      "'\"io.kubernetes.pod.namespace\": \"lantern-t-default\"|\"lantern.dev/agent-instance-id\": \"%s\"|"
	      "\"io.kubernetes.pod.name\": \"%s\"'", ctr, ctr, ctr, id, inst, inst);
	tap_ok(out && atoi(out) >= 3, "the pod carries the kubelet's labels in lantern-t-default and lantern's run and "
	       "instance ids (%d matches)", out ? atoi(out) : -1);
	free(out);
	snprintf(log, sizeof(log), "%s/runs/%s/cri/workload.log", T.state, id);
	tl_daemon_stop(&T, SIGKILL);
	tl_sh(NULL, NULL, "rm -f %s/runs/%s/cri.json", T.state, id);
	tl_sh(&out, NULL, "grep -c 'Operation not permitted' %s", log);
	before = out ? atol(out) : 0;
	free(out);
	usleep(2000 * 1000);
	tl_sh(&out, NULL, "grep -c 'Operation not permitted' %s", log);
	after = out ? atol(out) : 0;
	free(out);
	tap_ok(after > before && before >= 1,
	       "with lanternd killed (-9) the pod keeps running and its connects keep getting EPERM (%ld, then %ld)",
	       before, after);
	tap_ok(tl_daemon_start(&T, extra) == 0 && tl_running_run(&T, "survivor", id, sizeof(id), 5000),
	       "a restarted lanternd adopts the pod by its labels (its record removed)");
	tl_lantern(&T, &out, NULL, "logs -f %s | tail -1", id);
	tap_ok(tl_has(out, "finished") && status_is(id, "succeeded"), "and sees it to its end: succeeded, output: %s",
	       tl_oneline(out));
	free(out);
}

/* Killed while containerd makes its pod (lanternd asks for the pod before its own start
 * is done, so the window is the pod's whole creation): the run ends cancelled at once,
 * and no workload is started after the kill (sleep 30 would keep it running). */
static void test_kill_starting(void)
{
	const char *f = spec("early-kill", "trusted", NULL, "sleep 30");
	char id[32] = "", *out = NULL;
	uint64_t t0 = 0;
	bool ended = false;

	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock, f);
	if (tl_running_run(&T, "early-kill", id, sizeof(id), 10000)) {
		t0 = tl_ms();
		tl_lantern(&T, NULL, NULL, "kill %s", id);
		while (!ended && tl_ms() - t0 < 20000) {
			ended = !status_is(id, "running");
			if (!ended)
				usleep(100000);
		}
	}
	tl_lantern(&T, &out, NULL, "ps | grep '^%s '", id);
	tap_ok(ended && tl_ms() - t0 < 10000 && tl_has(out, "cancelled"),
	       "killed while its pod is made: the run ends cancelled within %llu ms, no workload outlives it: %s",
	       (unsigned long long)(t0 ? tl_ms() - t0 : 0), tl_oneline(out));
	free(out);
}

static void test_leftovers(void)
{
	char cmd[2048], *before = NULL, *after = NULL, *out = NULL;
	const char *f = spec("many", "trusted", NULL, "echo ok");
	uint64_t t0;

	/* pods and containers, netns, cgroups in every hierarchy, map entries, handler records */
	snprintf(cmd, sizeof(cmd),
		 "%s containers ls -q | grep -c .; ls %s/state/io.containerd.grpc.v1.cri/netns 2>/dev/null | grep -c .; "
		 "find /sys/fs/cgroup/*/%s -mindepth 1 -type d 2>/dev/null | grep -c .; "
		 "bpftool map dump pinned %s/lantern_instances 2>/dev/null | grep -c cgid; "
		 "ls %s/*/*/lantern-oci 2>/dev/null | grep -c json",
		 ctr, ctd, T.cgroot, T.bpffs, hroot);
	test_kill_starting();
	tl_sh(NULL, NULL, "sleep 1");
	tl_sh(&before, NULL, "%s", cmd);
	t0 = tl_ms();
	tl_sh(&out, NULL, "ok=0; for i in $(seq 50); do %s/lantern --socket %s run %s 2>/dev/null | grep -q ok && ok=$((ok+1)); "
	      "done; echo $ok", T.build, T.sock, f);
	tap_ok(out && atoi(out) == 50, "50 spawns in a row through containerd all succeed: %d in %llu ms",
	       out ? atoi(out) : -1, (unsigned long long)(tl_ms() - t0));
	free(out);
	tl_sh(NULL, NULL, "sleep 2");
	tl_sh(&after, NULL, "%s", cmd);
	tap_ok(after && !strcmp(after, "0\n0\n0\n0\n0\n"),
	       "they leave no pod or container, netns, cgroup, map entry or handler record (before %s, after %s)",
	       tl_oneline(before), tl_oneline(after));
	free(before);
	free(after);
}

/* ---- warm pools of pods (docs/pools.md) ---- */

#define POOL "cp"
#define POOL_FIELDS "  network: allowlist_domain\n  limits:\n    memory: 128Mi\n"

/* The ready sandboxes' instance ids of the test's pool (up to max). */
static int pool_ready(char ids[][32], int max)
{
	json_t *j = tl_lantern_json(&T, "pools --json"), *p, *sb;
	size_t i, k;
	int n = 0;

	json_array_foreach(json_is_array(j) ? j : json_object_get(j, "pools"), i, p) {
		if (strcmp(json_string_value(json_object_get(p, "name")) ?: "", POOL))
			continue;
		json_array_foreach(json_object_get(p, "sandboxes"), k, sb)
			if (n < max && !strcmp(json_string_value(json_object_get(sb, "state")) ?: "", "ready"))
				snprintf(ids[n++], 32, "%s", json_string_value(json_object_get(sb, "instance_id")));
	}
	json_decref(j);
	return n;
}

static bool pool_wait(int n, int ms)
{
	char ids[8][32];

	for (int i = 0; i < ms / 200; i++) {
		if (pool_ready(ids, 8) >= n)
			return true;
		usleep(200000);
	}
	return false;
}

static const char *rec_str(json_t *rec, const char *k1, const char *k2)
{
	json_t *x = json_object_get(rec, k1);

	return json_string_value(k2 ? json_object_get(x, k2) : x) ?: "";
}

/* How many containers of the private containerd carry label key=value. */
static int containers_labelled(const char *key, const char *value)
{
	char *out = NULL;
	int n;

	tl_sh(&out, NULL, "%s containers ls -q 'labels.\"%s\"==%s' | grep -c .", ctr, key, value);
	n = out ? atoi(out) : -1;
	free(out);
	return n;
}

static bool cgroup_exists(const char *inst)
{
	char *out = NULL;
	bool yes;

	tl_sh(&out, NULL, "ls -d /sys/fs/cgroup/%s/%s /sys/fs/cgroup/*/%s/%s 2>/dev/null | grep -c .", T.cgroot, inst,
	      T.cgroot, inst);
	yes = out && atoi(out) > 0;
	free(out);
	return yes;
}

/* `lantern run FILE` and the run's ids from its accepted line. */
static int run_ids(const char *file, char **out, char **err, char *id, char *inst)
{
	int rc = tl_run(&T, file, out, err);
	const char *a = *err ? strstr(*err, "run r-") : NULL;

	id[0] = inst[0] = '\0';
	if (a)
		sscanf(a, "run %31s accepted (instance %31[^)])", id, inst);
	return rc;
}

static void test_pool_fill(const char *flags)
{
	char ids[4][32], *out = NULL;
	int n = 0, labelled = 0;

	tl_sh(NULL, NULL, ": > %s", T.log);
	if (tl_daemon_start(&T, flags) == 0 && pool_wait(2, 60000)) {
		n = pool_ready(ids, 4);
		for (int i = 0; i < n; i++)
			labelled += containers_labelled("lantern.dev/agent-instance-id", ids[i]) == 2;
		tl_sh(&out, NULL, "%s containers info $(%s containers ls -q 'labels.\"lantern.dev/agent-instance-id\"==%s' | "
		      "head -1) | grep -cE '\"io.kubernetes.pod.namespace\": \"lantern-pool\"|\"lantern.dev/pool\": \"cp\"'",
		      ctr, ctr, n ? ids[0] : "none");
	}
	tap_ok(n == 2 && labelled == 2 && out && atoi(out) >= 2 && tl_log_contains(&T, "bound to pooled sandbox"),
	       "a pool under --cri-endpoint fills: %d pods ready in namespace lantern-pool (sandbox and waiter "
	       "container each: %d), their containers bound to their pooled instances", n, labelled);
	free(out);
}

/* A container forging a ready pooled sandbox's instance (its cgroup, its annotations,
 * the pool namespace) through lantern-oci: only a sandbox being started may bind. */
static void test_pool_forged(void)
{
	char ids[4][32], root[500], flags[800], *why = NULL;
	int n = pool_ready(ids, 4);
	bool ok;

	snprintf(root, sizeof(root), "%s/lantern-trusted", hroot);
	snprintf(flags, sizeof(flags), "--cgroup /%s/%s/forged --annotation lantern.dev/agent-instance-id=%s "
		 "--annotation io.kubernetes.cri.sandbox-namespace=lantern-pool", T.cgroot, n ? ids[0] : "none",
		 n ? ids[0] : "none");
	ok = refused(root, flags, "forgedpool", &why);
	tap_ok(n >= 1 && ok && tl_has(why, "no live run of this node has instance"),
	       "a container forging a ready pooled sandbox (its cgroup, instance annotation, namespace lantern-pool): "
	       "refused, never runs: %s", tl_oneline(why));
	free(why);
}

static void test_pool_claim(void)
{
	char fields[400], argv[400], id[32], inst[32], *out = NULL, *err = NULL, *ident = NULL, token[2048] = "";
	char ready[4][32], pod[96] = "";
	uint16_t ok_port = 0, deny_port = 0;
	int ok_fd = tl_tcp_listen("0.0.0.0", &ok_port), deny_fd = tl_tcp_listen("0.0.0.0", &deny_port), n, rc;
	bool from_ready = false;
	json_t *rec;

	tl_acceptor(ok_fd, "pong\n");
	tl_acceptor(deny_fd, "pong\n");
	n = pool_ready(ready, 4);
	snprintf(fields, sizeof(fields), POOL_FIELDS "  egress_rules:\n    - pattern: tcp://%s:%u\n", net.gw, ok_port);
	snprintf(argv, sizeof(argv), "[\"/bin/lantern-probe\", \"connect\", \"%s:%u\", \"connect\", \"%s:%u\", \"read\", "
		 "\"/run/lantern/identity/token\"]", net.gw, deny_port, net.gw, ok_port);
	rc = run_ids(spec_argv("pooled-first", "trusted", fields, argv), &out, &err, id, inst);
	rec = tl_run_record(&T, id);
	tl_lantern(&T, &ident, NULL, "identity %s --json", id);
	if (out && strstr(out, "token: "))
		sscanf(strstr(out, "token: ") + 7, "%2047s", token);
	for (int i = 0; i < n; i++)
		from_ready |= !strcmp(ready[i], inst);
	tap_ok(rc == 0 && from_ready && !strcmp(rec_str(rec, "pool", "name"), POOL) &&
	       !strcmp(rec_str(rec, "pod", "namespace"), "lantern-pool") && strstr(out ?: "", "Operation not permitted") &&
	       strstr(out, "Operation not permitted") < strstr(out, ": ok\n") && token[0] == 'e' && tl_has(ident, token),
	       "a matching spec is served from the pool (ps: pool %s, pod in %s): its first instruction gets EPERM "
	       "for a denied address, then connects to the allowed one, then reads the run's identity token: %s %s",
	       rec_str(rec, "pool", "name"), rec_str(rec, "pod", "namespace"), tl_oneline(out), tl_oneline(err));
	json_decref(rec);
	free(out);
	free(err);
	free(ident);

	pool_wait(2, 60000);
	rc = run_ids(spec("pooled-exit", "trusted", POOL_FIELDS, "echo pooled-out; exit 5"), &out, &err, id, inst);
	rec = tl_run_record(&T, id);
	snprintf(pod, sizeof(pod), "%s", rec_str(rec, "pod_id", NULL));
	usleep(500000);
	tap_ok(rc != 0 && tl_has(out, "pooled-out\n") && tl_has(err, "exit code 5") &&
	       !strcmp(rec_str(rec, "pool", "name"), POOL) && pod[0] &&
	       containers_labelled("lantern.dev/agent-instance-id", inst) == 0 && !cgroup_exists(inst) && pool_wait(2, 60000),
	       "a pooled pod's output and exit code 5 are reported, the pod (%s) and its instance are gone after "
	       "the run, and the pool refills: %s %s", pod, tl_oneline(out), tl_oneline(err));
	json_decref(rec);
	free(out);
	free(err);
}

/* Kill the waiters of every ready pooled pod, spawn at once: never one of them. */
static void test_pool_dead_waiter(void)
{
	char ids[4][32], id[32], inst[32], *out = NULL, *err = NULL;
	int n, rc;
	bool other = true;

	pool_wait(2, 60000);
	n = pool_ready(ids, 4);
	for (int i = 0; i < n; i++)
		tl_sh(NULL, NULL, "for p in $(pgrep -f 'lantern-waiter /run/lantern/waiter/waiter.sock'); do "
		      "grep -q '/%s/' /proc/$p/cgroup 2>/dev/null && kill -9 $p; done", ids[i]);
	rc = run_ids(spec("after-dead", "trusted", POOL_FIELDS, "echo alive"), &out, &err, id, inst);
	for (int i = 0; i < n; i++)
		other &= strcmp(ids[i], inst) != 0;
	tap_ok(n == 2 && rc == 0 && tl_has(out, "alive") && other && tl_log_contains(&T, "never handed out"),
	       "pooled pods whose waiter was killed are torn down and never handed out: the spawn ran in %s, the "
	       "reason is logged: %s", inst, tl_oneline(err));
	free(out);
	free(err);
}

/* Stop the waiters of every ready pooled pod: the claim times out, the claimed pod goes
 * with the undone run, the spawn starts cold with the reason logged and recorded. */
static void test_pool_failing_claim(void)
{
	char ids[4][32], id[32], inst[32], *out = NULL, *err = NULL;
	const char *fb;
	bool gone = false;
	json_t *rec;
	int n, rc;

	pool_wait(2, 60000);
	n = pool_ready(ids, 4);
	for (int i = 0; i < n; i++)
		tl_sh(NULL, NULL, "for p in $(pgrep -f 'lantern-waiter /run/lantern/waiter/waiter.sock'); do "
		      "grep -q '/%s/' /proc/$p/cgroup 2>/dev/null && kill -STOP $p; done", ids[i]);
	rc = run_ids(spec("stopped", "trusted", POOL_FIELDS, "echo cold-and-well"), &out, &err, id, inst);
	rec = tl_run_record(&T, id);
	fb = json_string_value(json_object_get(json_object_get(rec, "pool"), "fallback"));
	usleep(500000);
	for (int i = 0; i < n; i++)
		gone |= containers_labelled("lantern.dev/agent-instance-id", ids[i]) == 0 && !cgroup_exists(ids[i]);
	for (int i = 0; i < n; i++)
		tl_sh(NULL, NULL, "for p in $(pgrep -f 'lantern-waiter /run/lantern/waiter/waiter.sock'); do "
		      "grep -q '/%s/' /proc/$p/cgroup 2>/dev/null && kill -CONT $p; done", ids[i]);
	tap_ok(n == 2 && rc == 0 && tl_has(out, "cold-and-well") && !json_object_get(json_object_get(rec, "pool"), "name") &&
	       fb && tl_has(fb, "did not exec within") && tl_log_contains(&T, "starting it cold") && gone,
	       "a claim that fails (the pooled pod's waiter stopped) tears the pod down and the spawn starts cold, "
	       "the reason logged and recorded: %s", fb ? fb : tl_oneline(err));
	json_decref(rec);
	free(out);
	free(err);
}

/* What containerd and runc leave of a pod removed after its instance was reclaimed (a
 * pod being made at a kill -9 of lanternd): the instance's empty directories, with the
 * pod's below, in every v1 hierarchy lanternd does not manage. Returns how many. */
static int leave_unmanaged(const char *inst)
{
	char *out = NULL;
	int n;

	tl_sh(&out, NULL, "n=0; for h in /sys/fs/cgroup/*; do [ -d \"$h\" ] && [ ! -L \"$h\" ] || continue; "
	      "case ${h##*/} in memory|cpu|pids|unified) continue;; esac; "
	      "mkdir -p \"$h/%s/%s/pod-left/ctr\" && n=$((n+1)); done; echo $n", T.cgroot, inst);
	n = out ? atoi(out) : 0;
	free(out);
	return n;
}

/* How many hierarchies still hold inst's directory. */
static int unmanaged_left(const char *inst)
{
	char *out = NULL;
	int n;

	tl_sh(&out, NULL, "ls -d /sys/fs/cgroup/*/%s/%s 2>/dev/null | grep -c .", T.cgroot, inst);
	n = out ? atoi(out) : -1;
	free(out);
	return n;
}

/* kill -9 of lanternd with pooled pods ready and one claimed run: the claimed run is
 * adopted (its pod carries no run label), the others reclaimed, never adopted. */
static void test_pool_restart(const char *flags)
{
	char ids[4][32], id[32] = "", inst[32], *out = NULL, *logs = NULL;
	bool gone = true, adopted = false;
	json_t *rec = NULL;
	int n, left;

	pool_wait(2, 60000);
	n = pool_ready(ids, 4);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock,
	      spec("pooled-long", "trusted", POOL_FIELDS, "sleep 3; echo survived"));
	tl_running_run(&T, "pooled-long", id, sizeof(id), 10000);
	/* not tl_newest_run: a claimed run's directory is its sandbox's, made earlier */
	rec = tl_run_record(&T, id);
	snprintf(inst, sizeof(inst), "%s", rec_str(rec, "instance_id", NULL));
	for (int i = 0; i < n; i++)
		if (!strcmp(ids[i], inst))
			ids[i][0] = '\0';
	tl_daemon_stop(&T, SIGKILL);
	tl_sh(NULL, NULL, ": > %s", T.log);
	left = leave_unmanaged("i-0000dead0001");
	tl_daemon_start(&T, flags);
	for (int i = 0; i < 100 && !adopted; i++) {
		json_decref(rec);
		rec = tl_run_record(&T, id);
		adopted = !strcmp(rec_str(rec, "status", NULL), "succeeded");
		usleep(100000);
	}
	tl_lantern(&T, &logs, NULL, "logs %s", id);
	for (int i = 0; i < n; i++)
		gone &= !ids[i][0] || (containers_labelled("lantern.dev/agent-instance-id", ids[i]) == 0 &&
				       !cgroup_exists(ids[i]));
	tl_sh(&out, NULL, "ls %s/pool | grep -c .", T.state);
	tap_ok(n == 2 && id[0] && adopted && !strcmp(rec_str(rec, "pool", "name"), POOL) && tl_has(logs, "survived") && gone &&
	       tl_log_contains(&T, "reclaiming pod") && pool_wait(2, 60000) &&
	       (left >= 1 || access("/sys/fs/cgroup/unified", F_OK)) && unmanaged_left("i-0000dead0001") == 0,
	       "kill -9 of lanternd: its claimed pooled run is adopted and succeeds, the ready pooled pods are "
	       "reclaimed (pods, cgroups, STATE/pool: %d entries), never adopted; the pool refills (%s, %d ready before); "
	       "an unowned instance's empty directories in the %d unmanaged hierarchies are removed (%d left)",
	       out ? atoi(out) : -1, id, n, left, unmanaged_left("i-0000dead0001"));
	json_decref(rec);
	free(out);
	free(logs);
}

/* A clean stop tears every ready pooled pod down: nothing is left, in any hierarchy.
 * Pods being made when lanternd was killed (the kill -9 point before) and removed by
 * containerd after the restart's reclaim leave their instance's empty directories in the
 * v1 hierarchies lanternd does not manage: the restart's sweep and the clean stop's remove
 * them, so they are counted with the rest. */
static void test_pool_stop(void)
{
	char *out = NULL;
	char count[1024];
	int left;

	/* as a pod removed by containerd after the restart's reclaim leaves them */
	left = leave_unmanaged("i-0000dead0002");
	tl_daemon_stop(&T, SIGTERM);
	tl_sh(&out, NULL, "grep -c 'no instance owns it' %s", T.log);
	tap_diag("instance directories lanternd removed from unmanaged hierarchies since the kill -9: %d "
		 "(%d made for an unowned instance before the stop)", out ? atoi(out) : 0, left);
	free(out);
	out = NULL;
	snprintf(count, sizeof(count),
		 "%s containers ls -q | grep -c .; ls %s/state/io.containerd.grpc.v1.cri/netns 2>/dev/null | "
		 "grep -c .; find /sys/fs/cgroup/*/%s /sys/fs/cgroup/%s -mindepth 1 -type d 2>/dev/null | grep -c .; "
		 "ls %s/pool 2>/dev/null | grep -c .", ctr, ctd, T.cgroot, T.cgroot, T.state);
	/* counted again for up to 3 s before it is a failure: what containerd and runc
	 * remove of a pod may still be going when lanternd has exited */
	for (int i = 0; i < 30 && (!out || strcmp(out, "0\n0\n0\n0\n")); i++) {
		if (out)
			usleep(100000);
		free(out);
		out = NULL;
		tl_sh(&out, NULL, "%s", count);
	}
	if (!tap_ok(out && !strcmp(out, "0\n0\n0\n0\n"),
		    "lanternd stopped (SIGTERM) with pooled pods ready leaves no pod or container, netns, cgroup (in any "
		    "hierarchy) or sandbox directory (%s)", tl_oneline(out))) {
		char *left = NULL;

		tl_sh(&left, NULL, "find /sys/fs/cgroup/*/%s /sys/fs/cgroup/%s -mindepth 1 -type d 2>/dev/null | head -20; "
		      "grep -E 'pool|cgroup|sandbox|reclaim' %s | tail -n 20", T.cgroot, T.cgroot, T.log);
		tap_diag("left: %s", left ? left : "");
		free(left);
	}
	free(out);
}

static void test_pools(void)
{
	const char *pf = tl_file(&T, "pools.yaml", "pools:\n  - name: " POOL "\n    image_digest: %s\n"
				 "    isolation: trusted\n    network: bridge\n    limits: {memory: 128Mi}\n"
				 "    size: {min: 2, max: 2}\n", image);
	char flags[1400];

	snprintf(flags, sizeof(flags), "%s --pools %s", extra, pf);
	tl_daemon_stop(&T, SIGTERM);
	test_pool_fill(flags);
	test_pool_forged();
	test_pool_claim();
	test_pool_dead_waiter();
	test_pool_failing_claim();
	test_pool_restart(flags);
	test_pool_stop();
}

int main(void)
{
	const char *missing = tl_env_missing();
	char *out = NULL;

	tap_plan(36);
	if (missing || access("/usr/bin/containerd", X_OK) || access("/usr/bin/runsc", X_OK)) {
		for (int i = 0; i < 36; i++)
			tap_skip(missing ? missing : "containerd or runsc not installed (make deps)", "cri point %d", i + 1);
		return tap_failures ? 1 : 0;
	}
	tl_env_init(&T, "cri");
	T.no_process_runtime = true;
	tl_net_init(&net, "lc", 50);
	tl_ctd_init(&C, &T, &net);

	tl_ctd_images(&C, &out);
	tap_ok(out && tl_has(out, "docker.io/lantern/pause:1") && tl_has(image, "docker.io/test/busybox@sha256:"),
	       "the pause image (scripts/mkpause.sh) and the workload image (scripts/mkimage.sh) are built: %s", image);
	free(out);
	test_config();
	if (!tap_ok(tl_ctd_start(&C) == 0, "a private containerd starts with the drop-in; both images imported with ctr"))
		return 1;
	snprintf(extra, sizeof(extra), "--cri-endpoint %s --net-bridge %s --net-subnet %s", C.endpoint, net.bridge,
		 net.subnet);
	if (!tap_ok(tl_daemon_start(&T, extra) == 0, "lanternd starts with --cri-endpoint"))
		return 1;
	test_runs();
	test_egress();
	test_refusals();
	test_kill9();
	test_leftovers();
	test_pools();
	return tap_failures ? 1 : 0;
}
