/* kube_pods_test: pods lanternd --kubernetes makes through the API server, run by a
 * kubelet in a real containerd. No kubelet can run here: the test kubelet (kubelet.h)
 * watches the test API server (tests/kube-apiserver) for this node's pods and makes each
 * through containerd's CRI as a kubelet does, with the cgroup parent a kubelet chooses
 * (/kubepods/pod<uid>), and reports their statuses back; the containerd is a private one
 * (ctdlib.h) with lantern's drop-in, so every container of a lantern-<class> handler
 * goes through lantern-oci's bind.
 *
 * Asserts: a cold spawn of the trusted class (runc) runs through the API server, the
 * kubelet, containerd and lantern-oci, and its exit code reaches the run's record
 * (failed with 3; succeeded with 0; oom_killed over its memory limit); the workload ran inside its run's instance cgroup
 * although the kubelet asked for /kubepods/pod<uid> (lantern-oci's cgroups_path move),
 * and nothing was made under /kubepods; its first instruction's connect to a denied
 * address gets EPERM, one to the allowed address connects; pods lantern did not make
 * (naming no live run; naming a live run's instance with another pod's name) are refused
 * by lantern-oci's bind, never run, and the kubelet reports CreateContainerError; `lantern
 * kill` of a running run deletes its pod and its sandbox is torn down; the kubelet itself,
 * on pods of containerd's default runtime, mounts hostPath File read-only, Directory and
 * emptyDir, passes env, and runs the image's Cmd when a pod has no command; lanternd's
 * SIGTERM and the kubelet's stop leave no container, sandbox, network namespace, kubepods
 * cgroup or instance cgroup in any hierarchy. Warm pools (--pools): the pool's pod runs
 * lantern-waiter in place of the image's process (lantern-oci wrote lanternd's "exec"
 * into its bundle); a claim's first instruction gets EPERM for a denied address, connects
 * to the allowed one and reads the run's token; the pool refills; a claimed workload's
 * exit code and the image's environment.
 *
 * Packets stay on this machine: the pods reach only the test bridge's own address. */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "tap.h"
#include "testlib.h"
#include "ctdlib.h"
#include "kubelib.h"
#include "kubelet.h"
#include "lantern/util.h"

#define NODE "node-k"
#define TENANT "acme"
#define NS "lantern-t-" TENANT
#define TOKEN "kube-pods-token-7d21b9"
#define PLAN 18

static struct tl_env T;
static struct tl_net net;
static struct tl_ctd C;
static struct tl_kube K = { .t = &T, .token = TOKEN, .node = NODE };
static struct tl_kubelet KL;
static char kubeconfig[400], uids[64][64];
static int n_uids;

static void stop_all(void)
{
	tl_kubelet_stop(&KL);
	tl_kube_stop(&K);
}

static const char *spec(const char *name, const char *fields, const char *script)
{
	return tl_spec(&T, name, NULL, script, "  image_digest: %s\n  isolation: trusted\n%s", C.image,
		       fields ? fields : "");
}

/* An AgentSpec whose workload is argv (a YAML flow list): its first instruction is the
 * program's own. */
static const char *spec_argv(const char *name, const char *fields, const char *argv)
{
	char file[128];

	snprintf(file, sizeof(file), "%s.yaml", name);
	return tl_file(&T, file,
		       "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: %s\nspec:\n"
		       "  image_digest: %s\n  isolation: trusted\n%s  command: %s\n",
		       name, C.image, fields ? fields : "", argv);
}

static const char *rec_str(json_t *rec, const char *k1, const char *k2)
{
	json_t *x = json_object_get(rec, k1);

	return json_string_value(k2 ? json_object_get(x, k2) : x) ?: "";
}

/* The pod's container output as containerd logged it for the kubelet (CRI log lines). */
static char *pod_log(const struct tl_kubelet_pod *p)
{
	char *out = NULL;

	tl_sh(&out, NULL, "cat %s/pods/%s_%s_%s/workload/0.log 2>/dev/null", KL.dir, p->ns, p->name, p->uid);
	return out;
}

static void remember(const struct tl_kubelet_pod *p)
{
	if (p->uid[0] && n_uids < 64)
		snprintf(uids[n_uids++], sizeof(uids[0]), "%s", p->uid);
}

/* `lantern run FILE` to its end: the run's id, instance, record and the kubelet's pod
 * (in namespace ns: its tenant's, or lantern-pool for a claimed one). */
static int run_pod_ns(const char *file, const char *ns, char *out_id, json_t **rec, struct tl_kubelet_pod *p,
		      char **log)
{
	char inst[32], *out = NULL, *err = NULL;
	int rc = tl_run(&T, file, &out, &err);

	tl_newest_run(&T, out_id, 32, inst, sizeof(inst));
	*rec = tl_run_record(&T, out_id);
	tl_kubelet_wait(&KL, ns, rec_str(*rec, "pod", "name"), TL_KUBELET_GONE, p, 20000);
	remember(p);
	*log = pod_log(p);
	free(out);
	free(err);
	return rc;
}

static int run_pod(const char *file, char *out_id, json_t **rec, struct tl_kubelet_pod *p, char **log)
{
	return run_pod_ns(file, NS, out_id, rec, p, log);
}

static void test_cold(void)
{
	char id[32], want[200], *log = NULL, *kp = NULL;
	struct tl_kubelet_pod p;
	json_t *rec = NULL;
	int rc;

	rc = run_pod(spec("cold", NULL, "echo hello-kube; cat /proc/self/cgroup; exit 3"), id, &rec, &p, &log);
	tap_ok(rc != 0 && !strcmp(rec_str(rec, "status", NULL), "failed") &&
	       json_integer_value(json_object_get(rec, "exit_code")) == 3 && p.ended && p.exit_code == 3 &&
	       tl_has(log, "hello-kube") && p.gone,
	       "a cold trusted (runc) spawn runs as a pod through the API server, the kubelet, containerd and "
	       "lantern-oci: exit code 3 reaches its record (%s, exit %lld), the pod is torn down after the run: %s",
	       rec_str(rec, "status", NULL), (long long)json_integer_value(json_object_get(rec, "exit_code")),
	       tl_oneline(log));
	/* the kubelet asked for /kubepods/pod<uid>; lantern-oci moved the container into the
	 * instance (the bind answer's cgroups_path) */
	snprintf(want, sizeof(want), "/%s/%s/", T.cgroot, rec_str(rec, "instance_id", NULL));
	tl_sh(&kp, NULL, "ls -d /sys/fs/cgroup/kubepods/pod%s /sys/fs/cgroup/*/kubepods/pod%s 2>/dev/null | grep -c .",
	      p.uid, p.uid);
	tap_ok(rec_str(rec, "instance_id", NULL)[0] && tl_has(log, want) && !tl_has(log, "kubepods") &&
	       tl_has(p.cgroup_parent, "/kubepods/pod") && kp && atoi(kp) == 0,
	       "its workload ran inside the run's instance cgroup (%s) although the kubelet asked for %s: "
	       "lantern-oci moved it, nothing was made under kubepods (%d)", want, p.cgroup_parent, kp ? atoi(kp) : -1);
	json_decref(rec);
	free(log);
	free(kp);

	rc = run_pod(spec("cold-ok", NULL, "echo fine"), id, &rec, &p, &log);
	tap_ok(rc == 0 && !strcmp(rec_str(rec, "status", NULL), "succeeded") && p.ended && p.exit_code == 0 &&
	       tl_has(log, "fine"),
	       "exit 0: the run succeeds (%s): %s", rec_str(rec, "status", NULL), tl_oneline(log));
	json_decref(rec);
	free(log);

	rc = run_pod(spec("k-oom", "  limits:\n    memory: 32Mi\n", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"), id,
		     &rec, &p, &log);
	tap_ok(rc != 0 && !strcmp(rec_str(rec, "status", NULL), "oom_killed") && p.ended && p.oom,
	       "a workload over limits.memory: the kubelet reports OOMKilled, the run ends oom_killed (%s)",
	       rec_str(rec, "status", NULL));
	json_decref(rec);
	free(log);
}

static void test_egress(void)
{
	uint16_t ok_port = 0, deny_port = 0;
	int ok_fd = tl_tcp_listen("0.0.0.0", &ok_port), deny_fd = tl_tcp_listen("0.0.0.0", &deny_port), rc;
	char fields[300], argv[200], id[32], *log = NULL;
	struct tl_kubelet_pod p;
	json_t *rec = NULL;

	tl_acceptor(ok_fd, "pong\n");
	tl_acceptor(deny_fd, "pong\n");
	snprintf(fields, sizeof(fields), "  network: allowlist_domain\n  egress_rules:\n    - pattern: tcp://%s:%u\n",
		 net.gw, ok_port);
	snprintf(argv, sizeof(argv), "[\"/bin/nc\", \"-w\", \"2\", \"%s\", \"%u\"]", net.gw, deny_port);
	rc = run_pod(spec_argv("k-deny", fields, argv), id, &rec, &p, &log);
	tap_ok(rc != 0 && p.ended && p.exit_code != 0 && tl_has(log, "Operation not permitted") && !tl_has(log, "pong") &&
	       !strcmp(rec_str(rec, "status", NULL), "failed"),
	       "the run's egress policy applies from the first instruction: nc's connect to a denied address of "
	       "the bridge gets EPERM (%s): %s", rec_str(rec, "status", NULL), tl_oneline(log));
	json_decref(rec);
	free(log);

	snprintf(argv, sizeof(argv), "[\"/bin/nc\", \"-w\", \"2\", \"%s\", \"%u\"]", net.gw, ok_port);
	rc = run_pod(spec_argv("k-allow", fields, argv), id, &rec, &p, &log);
	tap_ok(rc == 0 && tl_has(log, "pong") && !strcmp(rec_str(rec, "status", NULL), "succeeded"),
	       "the allowed address connects (%s): %s", rec_str(rec, "status", NULL), tl_oneline(log));
	json_decref(rec);
	free(log);
}

/* A pod created straight in the API server, not by lanternd, on this node. */
static bool forge(const char *name, const char *run, const char *inst)
{
	long code = 0;
	json_t *pod = json_pack(
		"{s:s, s:s, s:{s:s, s:s, s:{s:s, s:s, s:s, s:s}}, s:{s:s, s:s, s:s, s:[{s:s, s:s, s:[s,s,s]}]}}",
		"apiVersion", "v1", "kind", "Pod", "metadata", "name", name, "namespace", NS, "annotations",
		"lantern.dev/run-id", run, "lantern.dev/agent-instance-id", inst, "lantern.dev/tenant", TENANT,
		"lantern.dev/isolation", "trusted", "spec", "nodeName", NODE, "runtimeClassName", "lantern-trusted",
		"restartPolicy", "Never", "containers", "name", "workload", "image", C.image, "command", "/bin/sh", "-c",
		"echo must-not-run");
	json_t *r = tl_kube_api(&K, "POST", "/_test/pods", pod, &code);

	json_decref(r);
	return code == 201 || code == 200;
}

/* The waiting reason of the pod's container as the API server stores it (the kubelet's
 * report). */
static const char *waiting(const char *name, char *buf, size_t len)
{
	json_t *o = tl_kube_api(&K, "GET", "/_test/objects", NULL, NULL), *pod;
	size_t i;

	buf[0] = '\0';
	json_array_foreach(json_object_get(o, "pods"), i, pod) {
		json_t *md = json_object_get(pod, "metadata");
		json_t *cs = json_array_get(json_object_get(json_object_get(pod, "status"), "containerStatuses"), 0);

		if (!strcmp(rec_str(md, "name", NULL), name) && !strcmp(rec_str(md, "namespace", NULL), NS))
			snprintf(buf, len, "%s/%s", rec_str(json_object_get(pod, "status"), "phase", NULL),
				 rec_str(json_object_get(cs, "state"), "waiting", "reason"));
	}
	json_decref(o);
	return buf;
}

static void drop_ns(const char *ns, const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "/_test/pods/%s/%s/delete", ns, name);
	json_decref(tl_kube_api(&K, "POST", path, NULL, NULL));
}

static void drop(const char *name)
{
	drop_ns(NS, name);
}

static void test_foreign(void)
{
	char id[32] = "", inst[32] = "", why[128], *log = NULL, *left = NULL;
	struct tl_kubelet_pod p, v;
	json_t *rec = NULL;
	bool ok;

	ok = forge("forged-none", "r-000000000000", "i-000000000000") &&
	     tl_kubelet_wait(&KL, NS, "forged-none", TL_KUBELET_FAILED, &p, 60000);
	remember(&p);
	log = pod_log(&p);
	usleep(300000);
	waiting("forged-none", why, sizeof(why));
	tap_ok(ok && !p.started && tl_has(p.error, "no live run of this node has instance") && !tl_has(log, "must-not-run") &&
	       !strcmp(why, "Pending/CreateContainerError"),
	       "a pod lantern did not make, naming no live run: lantern-oci's bind refuses it, nothing runs, the "
	       "kubelet reports %s: %s", why, tl_oneline(p.error));
	free(log);
	drop("forged-none");

	/* a live run to forge against */
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock,
	      spec("victim", NULL, "sleep 60"));
	if (tl_running_run(&T, "victim", id, sizeof(id), 20000)) {
		rec = tl_run_record(&T, id);
		snprintf(inst, sizeof(inst), "%s", rec_str(rec, "instance_id", NULL));
	}
	ok = rec && tl_kubelet_wait(&KL, NS, rec_str(rec, "pod", "name"), TL_KUBELET_STARTED, &v, 60000);
	remember(&v);
	ok = ok && forge("forged-live", id, inst) && tl_kubelet_wait(&KL, NS, "forged-live", TL_KUBELET_FAILED, &p, 60000);
	remember(&p);
	log = pod_log(&p);
	usleep(300000);
	waiting("forged-live", why, sizeof(why));
	tap_ok(ok && !p.started && tl_has(p.error, "refused") && !tl_has(log, "must-not-run") &&
	       !strcmp(why, "Pending/CreateContainerError"),
	       "a pod lantern did not make, naming a live run and its instance under another pod's name: refused by "
	       "the bind, nothing runs, the kubelet reports %s: %s", why, tl_oneline(p.error));
	free(log);
	drop("forged-live");
	ok = tl_kubelet_wait(&KL, NS, "forged-live", TL_KUBELET_GONE, NULL, 20000) &&
	     tl_kubelet_wait(&KL, NS, "forged-none", TL_KUBELET_GONE, NULL, 1000);
	json_decref(rec);
	rec = tl_run_record(&T, id);
	tap_ok(ok && !strcmp(rec_str(rec, "status", NULL), "running") && !strcmp(rec_str(rec, "pod", "phase"), "Running"),
	       "the forged pods are torn down on their deletion; the run they named is still running, its pod "
	       "Running as the kubelet reported (%s, %s)", rec_str(rec, "status", NULL), rec_str(rec, "pod", "phase"));

	/* lantern kill: lanternd deletes the pod, the kubelet tears the sandbox down */
	tl_lantern(&T, NULL, NULL, "kill %s", id);
	ok = tl_kubelet_wait(&KL, NS, v.name, TL_KUBELET_GONE, &v, 60000);
	for (int i = 0; i < 100; i++) {
		json_decref(rec);
		rec = tl_run_record(&T, id);
		if (strcmp(rec_str(rec, "status", NULL), "running"))
			break;
		usleep(100000);
	}
	tl_sh(&left, NULL, "%s containers ls -q | grep -c '%s'; %s containers ls -q | grep -c '%s'", C.ctr,
	      v.sandbox[0] ? v.sandbox : "none", C.ctr, v.container[0] ? v.container : "none");
	tap_ok(ok && v.sandbox[0] && left && !strcmp(left, "0\n0\n") && !strcmp(rec_str(rec, "status", NULL), "cancelled"),
	       "lantern kill of a running run deletes its pod; the kubelet stops and removes its sandbox, containerd "
	       "has none of it left (%s); the run is %s", tl_oneline(left), rec_str(rec, "status", NULL));
	json_decref(rec);
	free(left);
}

/* The kubelet itself, on pods of no lantern handler (containerd's default runc): what
 * pods lanternd makes may need of it (docs/pools.md: no command, hostPath File and
 * Directory mounted readOnly) in a namespace of its own. */
static json_t *plain_pod(const char *name, json_t *command)
{
	json_t *c = json_pack("{s:s, s:s, s:[{s:s, s:s}], s:[{s:s, s:s, s:b}, {s:s, s:s}, {s:s, s:s}]}", "name",
			      "workload", "image", C.image, "env", "name", "GREETING", "value", "hello-env",
			      "volumeMounts", "name", "file", "mountPath", "/w/file", "readOnly", 1, "name", "dir",
			      "mountPath", "/d", "name", "scratch", "mountPath", "/e");

	if (command)
		json_object_set_new(c, "command", command);
	return json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:s, s:s, s:[o], s:[{s:s, s:{s:s, s:s}}, {s:s, s:{s:s, s:s}}, "
			 "{s:s, s:{s:s}}]}}",
			 "apiVersion", "v1", "kind", "Pod", "metadata", "name", name, "namespace", "kubelet-check",
			 "spec", "nodeName", NODE, "restartPolicy", "Never", "containers", c, "volumes", "name", "file",
			 "hostPath", "path", tl_file(&T, "hostfile", "host-file\n"), "type", "File", "name", "dir",
			 "hostPath", "path", T.dir, "type", "Directory", "name", "scratch", "emptyDir", "medium",
			 "Memory");
}

static void test_kubelet_itself(void)
{
	struct tl_kubelet_pod a = { 0 }, b = { 0 };
	long c1 = 0, c2 = 0;
	char *log = NULL, *host = NULL, path[400];
	bool ok;

	json_decref(tl_kube_api(&K, "POST", "/api/v1/namespaces", json_pack("{s:s, s:s, s:{s:s}}", "apiVersion", "v1",
				"kind", "Namespace", "metadata", "name", "kubelet-check"), NULL));
	json_decref(tl_kube_api(&K, "POST", "/_test/pods", plain_pod("plain-script", json_pack("[s,s,s]", "/bin/sh", "-c",
		"cat /w/file; (echo x >> /w/file) 2>/dev/null && echo file-rw || echo file-ro; echo hi > /d/kubelet-out && "
		"echo dir-rw; echo e > /e/x && cat /e/x; echo env=$GREETING")), &c1));
	json_decref(tl_kube_api(&K, "POST", "/_test/pods", plain_pod("plain-cmd", NULL), &c2));
	ok = tl_kubelet_wait(&KL, "kubelet-check", "plain-script", TL_KUBELET_ENDED, &a, 60000) &&
	     tl_kubelet_wait(&KL, "kubelet-check", "plain-cmd", TL_KUBELET_ENDED, &b, 60000);
	remember(&a);
	remember(&b);
	log = pod_log(&a);
	snprintf(path, sizeof(path), "%s/kubelet-out", T.dir);
	util_read_file(path, &host, NULL);
	tap_ok(ok && c1 == 201 && c2 == 201 && a.exit_code == 0 && b.exit_code == 0 && tl_has(log, "host-file") &&
	       tl_has(log, "file-ro") && tl_has(log, "dir-rw") && tl_has(log, " e\n") && tl_has(log, "env=hello-env") &&
	       tl_has(host, "hi"),
	       "the test kubelet on pods of containerd's default runtime: hostPath File read-only, Directory "
	       "writable, emptyDir, env; no command runs the image's Cmd (exit %d): %s", b.exit_code, tl_oneline(log));
	if (!ok || a.exit_code || b.exit_code)
		tap_diag("created %ld %ld; %s: %s exit %d; %s: %s exit %d", c1, c2, a.name, a.error, a.exit_code, b.name,
			 b.error, b.exit_code);
	free(log);
	free(host);
	drop_ns("kubelet-check", "plain-script");
	drop_ns("kubelet-check", "plain-cmd");
	tl_kubelet_wait(&KL, "kubelet-check", "plain-script", TL_KUBELET_GONE, NULL, 20000);
	tl_kubelet_wait(&KL, "kubelet-check", "plain-cmd", TL_KUBELET_GONE, NULL, 20000);
}

/* ---- warm pools: the pool's pods through the kubelet, claimed by runs ---- */

#define POOL "kp"

/* The pool's ready sandboxes' instance ids (at most max), from `lantern pools --json`. */
static int pool_ready(char ids[][32], int max)
{
	json_t *pools = tl_lantern_json(&T, "pools --json"), *sb;
	size_t i;
	int n = 0;

	json_array_foreach(json_object_get(json_array_get(pools, 0), "sandboxes"), i, sb)
		if (n < max && !strcmp(json_string_value(json_object_get(sb, "state")) ?: "", "ready"))
			snprintf(ids[n++], 32, "%s", json_string_value(json_object_get(sb, "instance_id")) ?: "");
	json_decref(pools);
	return n;
}

static bool pool_wait(int n, int ms)
{
	char ids[4][32];

	for (uint64_t end = tl_ms() + (uint64_t)ms;; usleep(100000)) {
		if (pool_ready(ids, 4) >= n)
			return true;
		if (tl_ms() >= end)
			return false;
	}
}

static void test_pool(const char *flags)
{
	char more[1600], fields[400], argv[400], id[32], ready[4][32], want[160], *procs = NULL, *ident = NULL;
	char *log = NULL, token[2048] = "", pod[160];
	uint16_t ok_port = 0, deny_port = 0;
	int ok_fd = tl_tcp_listen("0.0.0.0", &ok_port), deny_fd = tl_tcp_listen("0.0.0.0", &deny_port), n, rc;
	struct tl_kubelet_pod p = { 0 };
	json_t *rec = NULL;

	tl_acceptor(ok_fd, "pong\n");
	tl_acceptor(deny_fd, "pong\n");
	tl_daemon_stop(&T, SIGTERM);
	snprintf(more, sizeof(more), "%s --pools %s", flags,
		 tl_file(&T, "pools.yaml", "pools:\n  - name: " POOL "\n    image_digest: %s\n    isolation: trusted\n"
			 "    network: bridge\n    size: {min: 1, max: 1}\n", C.image));
	n = tl_daemon_start(&T, more) == 0 && pool_wait(1, 90000) ? pool_ready(ready, 4) : 0;
	/* the container's one process is lantern-waiter, not the image's: lantern-oci
	 * wrote lanternd's "exec" into its bundle */
	if (n)
		tl_sh(&procs, NULL, "for p in $(cat /sys/fs/cgroup/unified/%s/%s/*/cgroup.procs 2>/dev/null); do "
		      "tr '\\0' ' ' < /proc/$p/cmdline; echo; done", T.cgroot, ready[0]);
	tap_ok(n == 1 && tl_has(procs, "/run/lantern/lantern-waiter /run/lantern/waiter/waiter.sock"),
	       "a pool under --kubernetes fills through the API server, the kubelet, containerd and lantern-oci: its "
	       "pod in lantern-pool runs lantern-waiter (in the instance, in place of the image's process: %s)",
	       tl_oneline(procs));
	free(procs);

	/* a claim: the first instruction is the run's, with its policy and identity */
	snprintf(fields, sizeof(fields), "  network: allowlist_domain\n  egress_rules:\n    - pattern: tcp://%s:%u\n",
		 net.gw, ok_port);
	snprintf(argv, sizeof(argv), "[\"/bin/lantern-probe\", \"connect\", \"%s:%u\", \"connect\", \"%s:%u\", \"read\", "
		 "\"/run/lantern/identity/token\"]", net.gw, deny_port, net.gw, ok_port);
	rc = run_pod_ns(spec_argv("pooled-first", fields, argv), "lantern-pool", id, &rec, &p, &log);
	tl_lantern(&T, &ident, NULL, "identity %s --json", id);
	if (log && strstr(log, "token: "))
		sscanf(strstr(log, "token: ") + 7, "%2047s", token);
	snprintf(want, sizeof(want), "lantern-%s", n ? ready[0] : "none");
	tap_ok(rc == 0 && !strcmp(rec_str(rec, "pool", "name"), POOL) && !strcmp(rec_str(rec, "pod", "name"), want) &&
	       !strcmp(rec_str(rec, "pod", "namespace"), "lantern-pool") && tl_has(log, "Operation not permitted") &&
	       strstr(log, "Operation not permitted") < strstr(log, ": ok") && token[0] == 'e' && tl_has(ident, token) &&
	       !strcmp(rec_str(rec, "status", NULL), "succeeded") && p.gone,
	       "a spawn that fits claims the pooled pod (%s/%s): its first instruction gets EPERM for a denied "
	       "address, connects to the allowed one, reads the run's identity token; the run succeeds and the pod "
	       "goes: %s", rec_str(rec, "pod", "namespace"), rec_str(rec, "pod", "name"), tl_oneline(log));
	{
		json_t *cu = json_object_get(json_object_get(rec, "pool"), "claim_us");

		tap_diag("the claim's stages: admission %lld us, preparation %lld us, the waiter's exec %lld us",
			 (long long)json_integer_value(json_object_get(cu, "admission")),
			 (long long)json_integer_value(json_object_get(cu, "prepare")),
			 (long long)json_integer_value(json_object_get(cu, "exec")));
	}
	json_decref(rec);
	free(log);
	free(ident);
	log = NULL;

	/* refilled; a claimed workload's exit code, with the image's environment */
	snprintf(pod, sizeof(pod), "%s", want);
	n = pool_wait(1, 90000) ? pool_ready(ready, 4) : 0;
	rc = run_pod_ns(spec("pooled-exit", "  network: allowlist_domain\n", "echo pooled-out path=$PATH; exit 5"),
			"lantern-pool", id, &rec, &p, &log);
	snprintf(want, sizeof(want), "lantern-%s", n ? ready[0] : "none");
	tap_ok(n == 1 && strcmp(pod, want) && rc != 0 && !strcmp(rec_str(rec, "pod", "name"), want) &&
	       !strcmp(rec_str(rec, "status", NULL), "failed") && json_integer_value(json_object_get(rec, "exit_code")) == 5 &&
	       tl_has(log, "pooled-out path=/") && p.gone,
	       "the pool refills with a new pod; a claimed workload's exit code 5 ends its run failed, with the "
	       "image's environment (PATH) and its output in the pod's log: %s", tl_oneline(log));
	json_decref(rec);
	free(log);
}

/* After lanternd's SIGTERM and the kubelet's stop: no container or sandbox, network
 * namespace, kubepods directory, or directory of an instance in any cgroup hierarchy
 * (those lanternd does not manage too: runc makes one in each for a container
 * lantern-oci moved into an instance). */
static void test_leftovers(void)
{
	char *out = NULL, kp[8192] = "";
	size_t off = 0;

	tl_daemon_stop(&T, SIGTERM);
	tl_kubelet_stop(&KL);
	for (int i = 0; i < n_uids && off < sizeof(kp) - 200; i++)
		off += (size_t)snprintf(kp + off, sizeof(kp) - off, " /sys/fs/cgroup/kubepods/pod%s /sys/fs/cgroup/*/kubepods/pod%s",
					uids[i], uids[i]);
	/* counted again for up to 3 s: what containerd and runc remove may still be going */
	for (int i = 0; i < 30 && (!out || strcmp(out, "0\n0\n0\n0\n")); i++) {
		if (out)
			usleep(100000);
		free(out);
		out = NULL;
		tl_sh(&out, NULL, "%s containers ls -q | grep -c .; ls %s/state/io.containerd.grpc.v1.cri/netns 2>/dev/null | "
		      "grep -c .; find /sys/fs/cgroup/%s /sys/fs/cgroup/*/%s -mindepth 1 -type d 2>/dev/null | grep -c .; "
		      "ls -d%s 2>/dev/null | grep -c .", C.ctr, C.dir, T.cgroot, T.cgroot, kp);
	}
	if (!tap_ok(out && !strcmp(out, "0\n0\n0\n0\n"),
		    "lanternd's SIGTERM and the kubelet's stop leave no container or sandbox, network namespace, "
		    "instance cgroup in any hierarchy, or kubepods cgroup (%s; %d pods)", tl_oneline(out), n_uids)) {
		char *left = NULL;

		tl_sh(&left, NULL, "find /sys/fs/cgroup/*/%s /sys/fs/cgroup/%s -mindepth 1 -type d 2>/dev/null | head -20",
		      T.cgroot, T.cgroot);
		tap_diag("left: %s", left ? left : "");
		free(left);
	}
	free(out);
}

int main(void)
{
	const char *missing = tl_env_missing();
	char flags[1200], *out = NULL;

	tap_plan(PLAN);
	if (missing || access("/usr/bin/containerd", X_OK) ||
	    access("tests/kube-apiserver/node_modules/kubernetes-models", F_OK)) {
		for (int i = 0; i < PLAN; i++)
			tap_skip(missing ? missing : "containerd or tests/kube-apiserver/node_modules missing (make deps)",
				 "kube_pods point %d", i + 1);
		return tap_failures ? 1 : 0;
	}
	tl_env_init(&T, "kpods");
	T.no_process_runtime = true;
	tl_net_init(&net, "lk", 50);
	tl_ctd_init(&C, &T, &net);
	tl_on_exit(stop_all);
	curl_global_init(CURL_GLOBAL_DEFAULT);

	tl_ctd_images(&C, &out);
	free(out);
	out = NULL;
	/* the node's own pods (containerd's default runtime, no lantern handler): the test
	 * bridge, addresses .200-.250 of its subnet (lantern's pods count up from .2), no
	 * route beyond it */
	{
		char a1[32], a2[32];

		tl_net_addr(&net, 200, a1, sizeof(a1));
		tl_net_addr(&net, 250, a2, sizeof(a2));
		tl_sh(NULL, NULL, "mkdir -p %s/nodecni", C.dir);
		tl_file(&T, "ctd/nodecni/10-node.conflist", "{\"cniVersion\": \"0.4.0\", \"name\": \"node-k\", "
			"\"plugins\": [{\"type\": \"bridge\", \"bridge\": \"%s\", \"ipam\": {\"type\": "
			"\"host-local\", \"dataDir\": \"%s/node-ipam\", \"ranges\": [[{\"subnet\": \"%s\", "
			"\"rangeStart\": \"%s\", \"rangeEnd\": \"%s\"}]]}}]}\n", net.bridge, C.dir, net.subnet, a1, a2);
	}
	if (!tap_ok(tl_ctd_config(&C, &out, NULL) == 0 && tl_ctd_start(&C) == 0,
		    "a private containerd starts with lantern's drop-in (lantern-<class> handlers run lantern-oci); the "
		    "pause and workload images imported"))
		return 1;
	free(out);
	if (!tap_ok(tl_kube_certs(&T, false) && tl_kube_start(&K, "--bookmark-ms 200") > 0,
		    "the test API server starts (see %s/apiserver.log)", T.dir))
		return 1;
	snprintf(kubeconfig, sizeof(kubeconfig), "%s", tl_kube_kubeconfig(&K, "kubeconfig", "    token: " TOKEN "\n"));
	snprintf(flags, sizeof(flags), "--kubernetes --kubeconfig %s --node-name " NODE " --tenant " TENANT, kubeconfig);
	if (!tap_ok(tl_daemon_start(&T, flags) == 0 && tl_kubelet_start(&KL, &K, NODE, C.endpoint) == 0,
		    "lanternd starts with --kubernetes; the test kubelet of " NODE " runs against the containerd"))
		return 1;
	test_cold();
	test_egress();
	test_foreign();
	test_kubelet_itself();
	test_pool(flags);
	test_leftovers();
	return tap_done();
}
