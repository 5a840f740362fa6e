/* oci_test: spawns on OCI images end to end, with a private lanternd and the real
 * runtimes: an image built by scripts/mkimage.sh and imported; every isolation class
 * of this node (runc and runsc run, hostile and wasm refused); tag-only, unknown and
 * corrupt images refused; read-only root and tmpfs scratch; OOM, pids cap, CPU
 * throttling, timeout, cancel; egress allowed and denied through the CNI bridge under
 * runc and runsc (whose Sentry and gofer sit in the instance cgroup); logs followed
 * across a lanternd restart with no gap and no duplicate; 200 spawns in a row leave
 * no cgroup, namespace, veth, map entry, container, mount, fd or process behind;
 * and after kill -9 of lanternd with spawns running, `lantern reset` removes their
 * containers, namespaces, veths, bridge, cgroups (every hierarchy) and processes.
 *
 * Network traffic stays on this machine: spawns reach only the test bridge's own
 * address (a listener of this test), and their namespaces have no default route. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/util.h"

static struct tl_env T;
static struct tl_net net;
static char image[256], extra[256];

/* A spec running `sh -c SCRIPT` in the test image. */
static const char *spec(const char *name, const char *iso, const char *img, const char *extra,
			const char *script)
{
	return tl_spec(&T, name, NULL, script, "  image_digest: %s\n  isolation: %s\n%s",
		       img ? img : image, iso, extra ? extra : "");
}

/* The bridge lanternd made; after the daemon is stopped and reset (testlib), in case
 * reset did not get that far. */
static void remove_bridge(void)
{
	tl_sh(NULL, NULL, "ip link del %s 2>/dev/null", net.bridge);
}

static void test_node_and_images(void)
{
	char *out = NULL, *err = NULL, dir[400], path[600];
	int rc;

	rc = tl_lantern(&T, &out, NULL, "node");
	tap_ok(rc == 0 && tl_has(out, "trusted       runc     yes") && tl_has(out, "standard      runsc    yes") &&
	       tl_has(out, "untrusted     runsc    yes"), "lantern node advertises trusted=runc, standard and untrusted=runsc");
	tap_ok(tl_has(out, "hostile       kata     no") && tl_has(out, "kata-runtime is not installed") &&
	       tl_has(out, "wasm          -        no"), "hostile (kata) and wasm are not advertised, with the reason");
	free(out);

	snprintf(dir, sizeof(dir), "%s/img", T.dir);
	rc = tl_mkimage(dir, "test/busybox:1", image, sizeof(image));
	tap_ok(rc == 0 && tl_has(image, "test/busybox@sha256:"), "scripts/mkimage.sh builds an OCI layout: %s", image);

	/* a damaged layer in the store is refused at first use, then fixed by re-import */
	rc = tl_lantern(&T, &out, NULL, "image import %s", dir);
	tap_ok(rc == 0 && tl_has(out, strchr(image, '@') + 1), "lantern image import stores it by digest");
	free(out);
	/* unpacked by the import, on lanternd's image worker: a spawn only verifies */
	rc = tl_lantern(&T, &out, NULL, "image ls");
	tap_ok(rc == 0 && tl_has(out, strchr(image, '@') + 1) && tl_has(out, " yes\n"),
	       "the import unpacked it before any spawn: %s", tl_oneline(out));
	free(out);
	/* same size, one byte changed: only the hash can tell */
	tl_sh(NULL, NULL, "f=$(ls -S %s/images/blobs/sha256/* | head -1); printf x | dd of=$f bs=1 seek=1000 conv=notrunc 2>/dev/null",
	      T.state);
	rc = tl_run(&T, spec("corrupt", "trusted", NULL, NULL, "echo must-not-run"), &out, &err);
	tap_ok(rc != 0 && tl_has(err, "does not match its digest") && !tl_has(out, "must-not-run"),
	       "a blob whose bytes do not match its digest refuses the spawn: %s", tl_oneline(err));
	free(out);
	free(err);
	rc = tl_lantern(&T, NULL, NULL, "image import %s", dir);
	snprintf(path, sizeof(path), "%s/images/blobs/sha256", T.state);
	rc = tl_lantern(&T, &out, NULL, "image ls");
	tap_ok(rc == 0 && tl_has(out, "test/busybox:1") && tl_has(out, strchr(image, '@') + 1),
	       "re-import repairs the store; lantern image ls lists the image");
	free(out);

	rc = tl_run(&T, spec("tag", "trusted", "test/busybox:1", NULL, "true"), NULL, &err);
	tap_ok(rc != 0 && tl_has(err, "a tag is not a pin"), "a tag without a digest is refused: %s", tl_oneline(err));
	free(err);
	rc = tl_run(&T, spec("unknown", "trusted",
			     "x@sha256:0000000000000000000000000000000000000000000000000000000000000000", NULL, "true"),
		    NULL, &err);
	tap_ok(rc != 0 && tl_has(err, "not in this node's store"), "an unknown digest is refused: %s", tl_oneline(err));
	free(err);
}

static void test_classes(void)
{
	static const char *const isos[] = { "trusted", "standard", "untrusted" };
	char *out = NULL, *err = NULL;
	uint64_t t0;
	int rc;

	for (size_t i = 0; i < ARRAY_SIZE(isos); i++) {
		t0 = tl_ms();
		rc = tl_run(&T, spec(isos[i], isos[i], NULL, "  env:\n    - {name: GREETING, value: hi}\n",
				     "echo $GREETING $LANTERN_RUN_ID; touch /ro 2>/dev/null || echo root-read-only; "
				     "echo x > /tmp/s && cat /tmp/s; ls /run/lantern/secrets | wc -l"),
			    &out, &err);
		tap_ok(rc == 0 && tl_has(out, "hi r-") && tl_has(out, "root-read-only\nx\n0\n"),
		       "isolation %s runs (%llu ms): env, read-only root, scratch, empty secrets: %s", isos[i],
		       (unsigned long long)(tl_ms() - t0), tl_oneline(out));
		free(out);
		free(err);
	}
	/* one environment for every runtime: lantern's variables, the trace context and the
	 * harness socket as the sandbox sees it; host paths (the CLI) stay out */
	for (size_t i = 0; i < 2; i++) {
		char id[32], inst[32], *trace = NULL, tp[40] = "";
		const char *iso = i ? "standard" : "trusted";

		rc = tl_run(&T, spec(i ? "env-runsc" : "env-runc", iso, NULL, NULL,
				     "env | grep -E '^(TRACEPARENT|LANTERN_)' | sort; test -S $LANTERN_HARNESS_SOCKET && echo socket-there"),
			    &out, NULL);
		tl_newest_run(&T, id, sizeof(id), inst, sizeof(inst));
		tl_lantern(&T, &trace, NULL, "trace %s", id);
		if (out && strstr(out, "TRACEPARENT=00-"))
			snprintf(tp, sizeof(tp), "%.32s", strstr(out, "TRACEPARENT=00-") + 15);
		tap_ok(rc == 0 && tl_has(out, "LANTERN_HARNESS_SOCKET=/run/lantern/harness/harness.sock") &&
		       tl_has(out, "socket-there") && tl_has(out, "LANTERN_RUN_ID=r-") &&
		       tl_has(out, "LANTERN_INSTANCE_ID=i-") && strlen(tp) == 32 && tl_has(trace, tp) &&
		       !tl_has(out, "LANTERN_CLI"),
		       "%s (%s): TRACEPARENT of the run's trace, LANTERN_* and the harness socket reach the "
		       "workload: %s", iso, i ? "runsc" : "runc", tl_oneline(out));
		free(out);
		free(trace);
	}
	/* syslog(2) (dmesg) is in no deny-list but outside the untrusted allow-list */
	rc = tl_run(&T, spec("sys-std", "standard", NULL, NULL, "dmesg >/dev/null && echo allowed"), &out, NULL);
	tap_ok(rc == 0 && tl_has(out, "allowed"), "standard: the default profile allows syslog(2)");
	free(out);
	rc = tl_run(&T, spec("sys-untr", "untrusted", NULL, NULL, "dmesg >/dev/null 2>&1 && echo allowed || echo denied"), &out, NULL);
	tap_ok(tl_has(out, "denied"), "untrusted: deny-by-default seccomp refuses it: %s", tl_oneline(out));
	free(out);
	rc = tl_run(&T, spec("hostile", "hostile", NULL, NULL, "true"), NULL, &err);
	tap_ok(rc != 0 && tl_has(err, "\"hostile\"") && tl_has(err, "\"kata\"") && tl_has(err, "not installed"),
	       "hostile is refused naming class, handler and what is missing: %s", tl_oneline(err));
	free(err);
	rc = tl_run(&T, spec("wasm", "wasm", NULL, NULL, "true"), NULL, &err);
	tap_ok(rc != 0 && tl_has(err, "\"wasm\" is not supported"), "wasm is refused as not supported: %s", tl_oneline(err));
	free(err);
	rc = tl_run(&T, spec("open-untr", "untrusted", NULL, "  network: open\n", "true"), NULL, &err);
	tap_ok(rc != 0 && tl_has(err, "untrusted") && tl_has(err, "open"), "untrusted with network open is refused");
	free(err);
}

static void test_limits(void)
{
	char *out = NULL, *err = NULL, id[32], inst[32], path[512];
	uint64_t t0;
	int rc;

	rc = tl_run(&T, spec("oom", "trusted", NULL, "  limits:\n    memory: 32Mi\n",
			     "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"), NULL, &err);
	tap_ok(rc != 0 && tl_has(err, "oom_killed"), "memory limit: the run ends oom_killed: %s", tl_oneline(err));
	free(err);

	/* a process of the run OOM-killed while the main one goes on and exits 0: the run
	 * succeeded, and says an OOM kill happened in it */
	rc = tl_run(&T, spec("oomchild", "trusted", NULL, "  limits:\n    memory: 32Mi\n",
			     "sh -c 'x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done'; echo main-survived"), &out, NULL);
	tl_newest_run(&T, id, sizeof(id), inst, sizeof(inst));
	tl_lantern(&T, &err, NULL, "ps --json | grep -A24 '\"id\": \"%s\"' | grep -E '\"(oom_kills|status)\"'", id);
	tap_ok(rc == 0 && tl_has(out, "main-survived") && tl_has(err, "\"status\": \"succeeded\"") &&
	       err && strstr(err, "\"oom_kills\": ") && atoi(strstr(err, "\"oom_kills\": ") + 13) >= 1,
	       "a child OOM-killed, the main process exits 0: succeeded, oom_kills in lantern ps --json: %s",
	       tl_oneline(err));
	free(out);
	free(err);

	rc = tl_run(&T, spec("pids", "trusted", NULL, NULL,
			     "n=0; while [ $n -lt 260 ]; do sleep 5 & n=$((n+1)); done 2>&1 | grep -c fork; true"),
		    &out, NULL);
	tap_ok(rc == 0 && out && atoi(out) > 0, "pids cap (--pids-max 200): forks past it fail (%d refused)",
	       out ? atoi(out) : -1);
	free(out);

	/* throttling, read from the instance's cpu controller while it spins */
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock,
	      spec("cpu", "trusted", NULL, "  limits:\n    vcpu: 100m\n",
		   "timeout 2 sh -c 'while :; do :; done'; true"));
	usleep(1500 * 1000);
	tl_newest_run(&T, id, sizeof(id), inst, sizeof(inst));
	snprintf(path, sizeof(path), "/sys/fs/cgroup/cpu/%s/%s/cpu.stat", T.cgroot, inst);
	if (access(path, F_OK) < 0)
		snprintf(path, sizeof(path), "/sys/fs/cgroup/%s/%s/cpu.stat", T.cgroot, inst);
	rc = tl_sh(&out, NULL, "cat %s", path);
	tap_ok(rc == 0 && tl_has(out, "nr_throttled") && !tl_has(out, "nr_throttled 0\n"),
	       "vcpu 100m: the instance is throttled: %s", tl_oneline(out));
	free(out);
	tl_sh(NULL, NULL, "sleep 1");

	t0 = tl_ms();
	rc = tl_run(&T, spec("timeout", "trusted", NULL, "  limits:\n    timeout: 1s\n", "sleep 30"), NULL, &err);
	tap_ok(rc != 0 && tl_has(err, "timed_out") && tl_ms() - t0 < 8000,
	       "limits.timeout: SIGTERM, grace, SIGKILL: timed_out after %llu ms",
	       (unsigned long long)(tl_ms() - t0));
	free(err);

	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >%s/cancel.out 2>&1 &", T.build, T.sock,
	      spec("cancel", "standard", NULL, NULL, "sleep 30"), T.dir);
	usleep(1200 * 1000);
	tl_newest_run(&T, id, sizeof(id), inst, sizeof(inst));
	rc = tl_lantern(&T, NULL, NULL, "kill %s", id);
	tl_sh(NULL, NULL, "for i in $(seq 50); do %s/lantern --socket %s ps | grep %s | grep -q running || break; sleep 0.1; done",
	      T.build, T.sock, id);
	rc = tl_lantern(&T, &out, NULL, "ps | grep %s", id);
	tap_ok(tl_has(out, "cancelled"), "lantern kill of a runsc spawn: cancelled: %s", tl_oneline(out));
	free(out);
}

static void test_egress(void)
{
	static const char *const isos[] = { "trusted", "standard" };
	int lfd[2];
	uint16_t port[2] = { 0, 0 };
	pid_t acc[2];
	char *out = NULL, rules[256], script[512];

	for (int i = 0; i < 2; i++) {
		lfd[i] = tl_tcp_listen("0.0.0.0", &port[i]);
		acc[i] = tl_acceptor(lfd[i], "pong\n");
	}
	snprintf(rules, sizeof(rules), "  network: allowlist_domain\n  egress_rules:\n    - pattern: tcp://%s:%u\n",
		 net.gw, port[0]);
	snprintf(script, sizeof(script),
		 "ip route | grep -c default; nc -w 2 %s %u </dev/null; nc -w 2 %s %u </dev/null 2>&1; sleep 0.3", net.gw,
		 port[0], net.gw, port[1]);
	for (size_t i = 0; i < ARRAY_SIZE(isos); i++) {
		tl_run(&T, spec(isos[i], isos[i], NULL, rules, script), &out, NULL);
		tap_ok(tl_has(out, "0\npong\n"), "%s: allowed connect to the bridge's address %s:%u works, no default route",
		       isos[i], net.gw, port[0]);
		tap_ok(tl_has(out, "Operation not permitted"), "%s: the kernel denies %s:%u (EPERM): %s", isos[i], net.gw,
		       port[1], tl_oneline(out));
		free(out);
	}
	tap_ok(tl_log_contains(&T, "\"verdict\":\"deny\"") && tl_log_contains(&T, "\"comm\":\"exe\""),
	       "deny events for both, the runsc one from the Sentry (comm exe)");

	/* the Sentry and gofer run inside the instance cgroup */
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock,
	      spec("sentry", "standard", NULL, rules, "sleep 3"));
	usleep(1500 * 1000);
	{
		char id[32], inst[32];

		tl_newest_run(&T, id, sizeof(id), inst, sizeof(inst));
		tl_sh(&out, NULL, "for p in $(cat /sys/fs/cgroup/unified/%s/%s/cgroup.procs); do tr '\\0' ' ' < /proc/$p/cmdline | cut -c1-40; echo; done",
			   T.cgroot, inst);
		tap_ok(tl_has(out, "runsc-sandbox") && tl_has(out, "runsc-gofer"),
		       "runsc's sandbox and gofer are in the instance cgroup: %s", tl_oneline(out));
		free(out);
	}
	for (int i = 0; i < 2; i++) {
		tl_child_stop(acc[i], 0);
		close(lfd[i]);
	}
	tl_sh(NULL, NULL, "sleep 2");
}

static void test_logs(void)
{
	char *out = NULL, id[32], inst[32];
	int rc, bad = 0, n = 0;

	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock,
	      spec("logs", "trusted", NULL, NULL, "i=1; while [ $i -le 300 ]; do echo line-$i; i=$((i+1)); usleep 10000; done"));
	usleep(600 * 1000);
	tl_newest_run(&T, id, sizeof(id), inst, sizeof(inst));
	tl_sh(NULL, NULL, "%s/lantern --socket %s logs -f --json %s > %s/logs.json 2>%s/logs.err &", T.build,
	      T.sock, id, T.dir, T.dir);
	usleep(800 * 1000);
	tl_daemon_stop(&T, SIGTERM);
	usleep(700 * 1000);
	rc = tl_daemon_start(&T, extra);
	tl_sh(NULL, NULL, "for i in $(seq 100); do grep -q line-300 %s/logs.json && break; sleep 0.1; done; sleep 0.5", T.dir);
	tl_sh(&out, NULL, "cat %s/logs.json", T.dir);
	for (char *p = out, *nl; p && *p; p = nl + 1) {
		char want[64];

		nl = strchr(p, '\n');
		if (!nl)
			break;
		snprintf(want, sizeof(want), "\"data\":\"line-%d\\n\"", n + 1);
		if (!strstr(p, want) || strstr(p, "\"seq\":") == NULL)
			bad++;
		n++;
	}
	tap_ok(rc == 0 && n == 300 && !bad, "lantern logs -f across a lanternd restart: %d records, %d out of order or duplicated", n, bad);
	free(out);
	rc = tl_lantern(&T, &out, NULL, "logs --from 298 %s", id);
	tap_ok(rc == 0 && out && !strcmp(out, "line-299\nline-300\n"), "lantern logs --from resumes at a record: %s", tl_oneline(out));
	free(out);
	rc = tl_lantern(&T, &out, NULL, "logs -t %s | head -1", id);
	tap_ok(rc == 0 && out && out[4] == '-' && tl_has(out, "Z line-1"), "lantern logs -t: timestamped: %s", tl_oneline(out));
	free(out);
}

/* The harness socket's directory is bind-mounted into the sandbox, so after kill -9 of
 * lanternd and adoption the container sees the socket the new lanternd bound (a
 * bind-mounted socket file would stay the old, dead inode). busybox has no Unix-socket
 * client: the workload prints the inode and change time it sees, the test compares them
 * with the host's. The number alone is not enough: ext4 hands the inode freed by the
 * unlink straight to the socket bound next. */
static void test_harness_after_kill(void)
{
	char *out = NULL, *ino1 = NULL, *ino2 = NULL, id[32], inst[32], sockp[512];
	int rc;

	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock,
	      spec("harness-ino", "trusted", NULL, NULL,
		   "i=0; while [ $i -lt 60 ]; do stat -c %i.%Z /run/lantern/harness/harness.sock; i=$((i+1)); usleep 100000; done"));
	usleep(1500 * 1000);
	tl_newest_run(&T, id, sizeof(id), inst, sizeof(inst));
	snprintf(sockp, sizeof(sockp), "%s/runs/%s/harness/harness.sock", T.state, id);
	tl_sh(&ino1, NULL, "stat -c %%i.%%Z %s", sockp);
	tl_daemon_stop(&T, SIGKILL);
	rc = tl_daemon_start(&T, extra);
	tl_sh(&ino2, NULL, "stat -c %%i.%%Z %s", sockp);
	usleep(500 * 1000);
	/* follows the run to its end, so it is over before the next test */
	tl_lantern(&T, &out, NULL, "logs -f %s | tail -1", id);
	for (char **p = (char *[]){ ino1, ino2, out }, **end = p + 3; p < end; p++)
		if (*p)
			(*p)[strcspn(*p, "\n")] = '\0';
	tap_ok(rc == 0 && ino1 && ino2 && *ino2 && strcmp(ino1, ino2) && out && !strcmp(out, ino2),
	       "after kill -9 and adoption the OCI workload sees the harness socket the new lanternd "
	       "bound (inode.ctime before %s, after %s, seen inside %s)", ino1 ? ino1 : "?", ino2 ? ino2 : "?",
	       out ? out : "?");
	free(out);
	free(ino1);
	free(ino2);
}

/* The harness socket's directory is the node's state: a sandbox sees it read-only (no
 * file can be written there, so container root cannot fill the state filesystem) and
 * still sees the socket, which connect() reaches through a read-only mount. */
static void test_harness_read_only(void)
{
	static const char *const isos[] = { "trusted", "standard" };
	char *out = NULL, *left = NULL, id[32], inst[32];
	int rc;

	for (size_t i = 0; i < ARRAY_SIZE(isos); i++) {
		rc = tl_run(&T, spec(i ? "harness-ro-runsc" : "harness-ro-runc", isos[i], NULL, NULL,
			      "touch /run/lantern/harness/x 2>&1; "
			      "dd if=/dev/zero of=/run/lantern/harness/fill bs=1k count=64 2>&1 | head -1; "
			      "grep ' /run/lantern/harness ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; "
			      "test -S /run/lantern/harness/harness.sock && echo socket-there"),
			 &out, NULL);
		tl_newest_run(&T, id, sizeof(id), inst, sizeof(inst));
		tl_sh(&left, NULL, "ls %s/runs/%s/harness", T.state, id);
		tap_ok(rc == 0 && out && strstr(out, "Read-only file system") &&
		       strstr(strstr(out, "Read-only file system") + 1, "Read-only file system") &&
		       tl_has(out, "\nro\nsocket-there") && left &&
		       (!*left || !strcmp(left, "harness.sock\n")),
		       "%s (%s): /run/lantern/harness is mounted read-only: nothing can be written "
		       "there, the socket is still there (%s; left on the node: %s)", isos[i],
		       i ? "runsc" : "runc", tl_oneline(out), tl_oneline(left));
		free(out);
		free(left);
		left = NULL;
	}
}

/* An image whose config says User 65534: the workload is not root, and still uses its
 * harness socket (mode 0666 in a read-only directory it may enter; who may call is the
 * caller's cgroup, checked by lanternd), under runc and runsc. */
static void test_harness_non_root(void)
{
	static const char *const isos[] = { "trusted", "standard" };
	char dir[400], img[256], *out = NULL, *err = NULL;
	int rc;

	snprintf(dir, sizeof(dir), "%s/img-nobody", T.dir);
	tl_sh(&out, NULL, "IMAGE_USER=65534:65534 scripts/mkimage.sh %s test/nobody:1", dir);
	snprintf(img, sizeof(img), "%.*s", out ? (int)strcspn(out, "\n") : 0, out ? out : "");
	free(out);
	out = NULL;
	tl_lantern(&T, NULL, NULL, "image import %s", dir);
	for (size_t i = 0; i < ARRAY_SIZE(isos); i++) {
		rc = tl_lantern(&T, &out, &err, "run --input-json '{\"q\":65534}' %s",
				spec(i ? "nobody-runsc" : "nobody-runc", isos[i], img, NULL,
				     "id -u; lantern-hcall GET /v1/input"));
		if (!tap_ok(rc == 0 && tl_has(out, "65534\nHTTP/1.1 200") && tl_has(out, "\"input\":{\"q\":65534}"),
			    "%s (%s): an image with User 65534 runs as 65534 and reads its input from the "
			    "harness socket (%s)", isos[i], i ? "runsc" : "runc", tl_oneline(out))) {
			char *log = NULL;

			/* what lanternd and lantern-wire said about the harness meanwhile */
			tl_sh(&log, NULL, "grep -E 'wire|harness|%s' %s/lanternd.log | tail -n 15",
			      i ? "nobody-runsc" : "nobody-runc", T.dir);
			tap_diag("rc %d; stderr: %s; lanternd.log: %s", rc, err ? err : "", log ? log : "");
			free(log);
		}
		free(out);
		free(err);
		out = err = NULL;
	}
}

static void test_no_leftovers(void)
{
	char *before = NULL, *after = NULL, *out = NULL, cmd[2048];
	const char *f = spec("many", "trusted", NULL, NULL, "echo ok");
	const char *fnet;
	char rules[200];
	uint64_t t0;
	int rc;

	snprintf(rules, sizeof(rules), "  network: allowlist_domain\n  egress_rules:\n    - pattern: tcp://%s:9\n", net.gw);
	fnet = spec("manynet", "trusted", NULL, rules, "echo ok");
	/* what can leak: instance cgroups, namespaces, veths, containers, mounts, fds, processes */
	snprintf(cmd, sizeof(cmd),
		 "find /sys/fs/cgroup/*/%s -mindepth 1 -type d 2>/dev/null | wc -l; ip netns | grep -c %s-; "
		 "ip -o link | grep -c 'master %s'; runc --root %s/oci/runc list -q | wc -l; grep -c %s /proc/mounts; "
		 "ls /proc/%d/fd | wc -l; ps -e -o args | grep -c '[/]%s/'",
		 T.cgroot, T.cgroot, net.bridge, T.state, T.state, (int)T.daemon, strrchr(T.dir, '/') + 1);
	tl_sh(&before, NULL, "%s", cmd);
	t0 = tl_ms();
	rc = tl_sh(&out, NULL,
		   "ok=0; for i in $(seq 180); do %s/lantern --socket %s run %s 2>/dev/null | grep -q ok && ok=$((ok+1)); done; "
		   "for i in $(seq 20); do %s/lantern --socket %s run %s 2>/dev/null | grep -q ok && ok=$((ok+1)); done; echo $ok",
		   T.build, T.sock, f, T.build, T.sock, fnet);
	tap_ok(out && atoi(out) == 200, "200 spawns in a row (20 with a veth) all succeed: %d in %llu ms (%.1f/s)",
	       out ? atoi(out) : -1, (unsigned long long)(tl_ms() - t0), 200000.0 / (double)(tl_ms() - t0 + 1));
	free(out);
	tl_sh(NULL, NULL, "sleep 1");
	tl_sh(&after, NULL, "%s", cmd);
	{
		char b[200];

		char *pb = before, *pa = after;
		bool none = before && after;

		/* each count may only have gone down (something from an earlier test ending) */
		while (none) {
			char *eb, *ea;
			long vb = strtol(pb, &eb, 10), va = strtol(pa, &ea, 10);

			if (eb == pb || ea == pa) {
				none = eb == pb && ea == pa;
				break;
			}
			none = va <= vb;
			pb = eb;
			pa = ea;
		}
		snprintf(b, sizeof(b), "%s", tl_oneline(before));
		tap_ok(none,
		       "nothing left behind (cgroups, netns, veths, containers, mounts, lanternd fds, processes): %s -> %s",
		       b, tl_oneline(after));
	}
	free(before);
	free(after);
	rc = tl_sh(&out, NULL, "bpftool map dump pinned %s/lantern_instances 2>/dev/null | grep -c cgid", T.bpffs);
	tap_ok(out && atoi(out) == 0, "no lantern_instances map entry left (%s)", out ? tl_oneline(out) : "?");
	free(out);
	(void)rc;
}

/* lanternd dies with a runc and a runsc spawn running on the bridge: reset removes all. */
static void test_reset_after_kill(void)
{
	char rules[200], *out = NULL, cmd[2048];
	int rc;

	snprintf(rules, sizeof(rules), "  network: allowlist_domain\n  egress_rules:\n    - pattern: tcp://%s:9\n", net.gw);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock,
	      spec("left-runc", "trusted", NULL, rules, "sleep 60"));
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock,
	      spec("left-runsc", "standard", NULL, rules, "sleep 60"));
	tl_sh(NULL, NULL, "for i in $(seq 100); do [ $(%s/lantern --socket %s ps | grep -c running) -ge 2 ] && break; sleep 0.1; done",
	      T.build, T.sock);
	/* containers, namespaces, veths on the bridge, the bridge, cgroup dirs in any
	 * hierarchy, processes of the runs */
	snprintf(cmd, sizeof(cmd),
		 "(runc --root %s/oci/runc list -q; runsc --root %s/oci/runsc list -q) 2>/dev/null | grep -c .; "
		 "ip netns | grep -c %s-; ip -o link | grep -c 'master %s'; ip -o link show %s 2>/dev/null | grep -c .; "
		 "ls -d /sys/fs/cgroup/*/%s 2>/dev/null | grep -c .; sleep 0.3; ps -e -o args | grep '[/]%s/' | grep -vc '^sh -c'",
		 T.state, T.state, T.cgroot, net.bridge, net.bridge, T.cgroot, strrchr(T.dir, '/') + 1);
	{
		int v[6] = { 0 };

		/* `lantern ps` says running once the shim has started; the runtime may still be
		 * creating the container, so give it a few seconds to show up. runsc lists a
		 * container only while its sandbox is up: at least runc's. */
		for (int tries = 0; tries < 50 && (v[0] < 1 || v[5] < 1); tries++) {
			if (tries)
				usleep(100000);
			free(out);
			out = NULL;
			tl_sh(&out, NULL, "%s", cmd);
			if (out)
				sscanf(out, "%d %d %d %d %d %d", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]);
		}
		tap_ok(v[0] >= 1 && v[1] == 2 && v[2] == 2 && v[3] == 1 && v[4] >= 1 && v[5] >= 1,
		       "two spawns left running (containers, netns, veths, bridge, cgroups, processes): %s",
		       tl_oneline(out));
	}
	free(out);
	tl_daemon_stop(&T, SIGKILL);
	rc = tl_lantern(&T, &out, NULL, "reset --state-dir %s --bpffs %s --cgroup-root %s", T.state, T.bpffs, T.cgroot);
	free(out);
	tl_sh(NULL, NULL, "sleep 0.5");
	tl_sh(&out, NULL, "%s", cmd);
	{
		char *left = NULL;

		tl_sh(&left, NULL, "ps -e -o args | grep '[/]%s/' | cut -c1-100", strrchr(T.dir, '/') + 1);
		tap_ok(rc == 0 && out && !strcmp(out, "0\n0\n0\n0\n0\n0\n"),
		       "after kill -9 of lanternd, lantern reset removes them all: %s %s", tl_oneline(out),
		       left && *left ? left : "");
		free(left);
	}
	free(out);
}

int main(void)
{
	const char *missing = tl_env_missing();

	tap_plan(45);
	if (missing || access("/usr/sbin/runc", X_OK) || access("/usr/bin/runsc", X_OK)) {
		for (int i = 0; i < 45; i++)
			tap_skip(missing ? missing : "runc and runsc are not installed (make deps)", "oci point %d", i + 1);
		return tap_failures ? 1 : 0;
	}
	tl_env_init(&T, "oci");
	tl_net_init(&net, "lt", 200);
	tl_on_exit(remove_bridge);
	snprintf(extra, sizeof(extra), "--pids-max 200 --net-bridge %s --net-subnet %s", net.bridge, net.subnet);
	if (!tap_ok(tl_daemon_start(&T, extra) == 0, "lanternd starts with runtime handlers probed"))
		return 1;
	test_node_and_images();
	test_classes();
	test_limits();
	test_egress();
	test_logs();
	test_harness_after_kill();
	test_harness_read_only();
	test_harness_non_root();
	test_no_leftovers();
	test_reset_after_kill();
	return tap_failures ? 1 : 0;
}
