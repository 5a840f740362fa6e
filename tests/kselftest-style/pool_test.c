/* pool_test: warm pools end to end (docs/pools.md), with a private lanternd, the real
 * runtimes (runc, runsc) and the test image of scripts/mkimage.sh. Covers: a bad pools
 * file and a pool this node cannot serve refuse the start, naming FILE:LINE; each
 * pool fills to its size with sandboxes that are their own instance cgroup,
 * registered with network none, whose only process is the waiter; a claimed workload's
 * first instruction meets the run's egress policy (a denied address gets EPERM, the
 * allowed one connects) and reads the run's identity token, under runc and runsc; its
 * environment is the run's (TRACEPARENT of its trace, LANTERN_*, spec.env); nothing of
 * one claim (files, processes, environment) reaches the next, each sandbox is used
 * once and the pool refills; specs that do not fit start cold; a dead waiter is never
 * handed out; a failing claim falls back to a cold start with the reason logged and
 * recorded; trace, cost and receipt name the pool and the wait is not billed; a
 * sandbox's journal is made ahead (no record) and becomes its claiming run's; lanternd
 * dying between a claim and the exec resurrects no run and hands out no old sandbox;
 * kill -9 of lanternd with ready sandboxes and a claimed run: the run is adopted and
 * ends, the old sandboxes are reclaimed, never handed out, none comes back as a run;
 * memory pressure gives ready
 * sandboxes back; a clean stop leaves no sandbox behind.
 *
 * Network traffic stays on this machine: workloads reach only the test bridge's own
 * address (a listener of this test); their namespaces have no default route. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/util.h"

#define POINTS 29

static struct tl_env T;
static struct tl_net net;
static char image[256], pools_file[400], flags[1024];
static uint16_t allowed_port;

static void remove_bridge(void)
{
	tl_sh(NULL, NULL, "ip link del %s 2>/dev/null", net.bridge);
}

/* ---- helpers ---- */

static json_t *pool_of(json_t *pools, const char *name)
{
	size_t i;
	json_t *p;

	json_array_foreach(pools, i, p)
		if (!strcmp(json_string_value(json_object_get(p, "name")) ?: "", name))
			return p;
	return NULL;
}

static int ready_of(const char *name)
{
	json_t *j = tl_lantern_json(&T, "pools --json");
	int n = (int)json_integer_value(json_object_get(pool_of(j, name), "ready"));

	json_decref(j);
	return n;
}

/* Waits until pool name has at least n ready sandboxes. */
static bool wait_ready(const char *name, int n, int ms)
{
	for (int i = 0; i < ms / 100; i++) {
		if (ready_of(name) >= n)
			return true;
		usleep(100000);
	}
	return false;
}

/* The ready sandboxes' instance ids of pool name (up to max). */
static int ready_instances(const char *name, char ids[][32], int max)
{
	json_t *j = tl_lantern_json(&T, "pools --json"), *sb;
	size_t i;
	int n = 0;

	json_array_foreach(json_object_get(pool_of(j, name), "sandboxes"), i, sb)
		if (n < max && !strcmp(json_string_value(json_object_get(sb, "state")) ?: "", "ready"))
			snprintf(ids[n++], 32, "%s", json_string_value(json_object_get(sb, "instance_id")));
	json_decref(j);
	return n;
}

/* The processes of an instance (its v2 cgroup), space-separated, in buf. */
static const char *procs_of(const char *inst, char *buf, size_t len)
{
	char *out = NULL;

	tl_sh(&out, NULL, "cat /sys/fs/cgroup/unified/%s/%s/cgroup.procs /sys/fs/cgroup/%s/%s/cgroup.procs 2>/dev/null "
	      "| tr '\\n' ' '", T.cgroot, inst, T.cgroot, inst);
	snprintf(buf, len, "%s", out ? out : "");
	free(out);
	return buf;
}

static bool instance_exists(const char *inst)
{
	char p1[512], p2[512];

	snprintf(p1, sizeof(p1), "/sys/fs/cgroup/unified/%s/%s", T.cgroot, inst);
	snprintf(p2, sizeof(p2), "/sys/fs/cgroup/%s/%s", T.cgroot, inst);
	return access(p1, F_OK) == 0 || access(p2, F_OK) == 0;
}

/* Runs lanternd knows (lantern ps --json), live and ended. */
static int runs_count(void)
{
	json_t *runs = tl_lantern_json(&T, "ps --json");
	int n = json_is_array(runs) ? (int)json_array_size(runs) : -1;

	json_decref(runs);
	return n;
}

static const char *pool_name_of(json_t *rec)
{
	return json_string_value(json_object_get(json_object_get(rec, "pool"), "name"));
}

/* `lantern run FILE`: its status, output, and the run and instance ids from the
 * accepted line. */
static int run_spec(const char *file, char **out, char *id, char *inst)
{
	char *err = NULL, *a;
	int rc = tl_run(&T, file, out, &err);

	id[0] = inst[0] = '\0';
	if (err && (a = strstr(err, "run r-")))
		sscanf(a, "run %31s accepted (instance %31[^)])", id, inst);
	free(err);
	return rc;
}

/* A spec of the test image; fields are spec lines before the command. */
static const char *spec(const char *name, const char *fields, const char *cmd)
{
	return tl_file(&T, name, "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata: {name: %s}\nspec:\n"
		       "  image_digest: %s\n%s  command: %s\n", name, image, fields, cmd);
}

/* ---- refusals at start ---- */

static void test_refusals(void)
{
	const char *bad = tl_file(&T, "bad.yaml",
				  "pools:\n"
				  "  - name: a\n"
				  "    image_digest: test/busybox:1\n"
				  "    size: {min: 3, max: 2}\n"
				  "  - name: a\n"
				  "    image_digest: %s\n"
				  "    sizes: {max: 1}\n", image);
	const char *kata = tl_file(&T, "kata.yaml",
				   "pools:\n"
				   "  - name: k\n"
				   "    image_digest: %s\n"
				   "    isolation: hostile\n"
				   "    size: {max: 1}\n", image);
	char extra[1400];
	char *log = NULL;
	int rc;

	snprintf(extra, sizeof(extra), "--pools %s", bad);
	rc = tl_daemon_start(&T, extra);
	tl_sh(&log, NULL, "cat %s", T.log);
	tap_ok(rc == -ECHILD && tl_has(log, "bad.yaml:3:19: pools[0].image_digest") && tl_has(log, "not pinned by digest") &&
	       tl_has(log, "bad.yaml:4:17: pools[0].size.min: 3 is more than size.max") &&
	       tl_has(log, "bad.yaml:5:5: pools[1].name: \"a\" is declared twice") &&
	       tl_has(log, "bad.yaml:7:5: pools[1].sizes: unknown field") && tl_has(log, "pools[1].size: required"),
	       "a pools file with errors refuses the start, each error with FILE:LINE:COL and the field: %s",
	       tl_oneline(log));
	free(log);
	tl_sh(NULL, NULL, ": > %s", T.log);
	snprintf(extra, sizeof(extra), "--pools %s", kata);
	rc = tl_daemon_start(&T, extra);
	log = NULL;
	tl_sh(&log, NULL, "cat %s", T.log);
	tap_ok(rc == -ECHILD && tl_has(log, "kata.yaml:2: pool \"k\"") && tl_has(log, "\"hostile\"") &&
	       tl_has(log, "kata"), "a pool this node cannot serve (hostile: no kata) refuses the start: %s",
	       tl_oneline(log));
	free(log);
}

/* ---- filling ---- */

static void test_fill(void)
{
	char ids[4][32], procs[256], *out = NULL, *args = NULL, *maps = NULL;
	const char *sp;
	bool ok;
	int n;

	ok = wait_ready("runc-none", 2, 60000) && wait_ready("runc-bridge", 1, 60000) &&
	     wait_ready("runsc-bridge", 1, 60000) && wait_ready("untrusted-none", 1, 60000);
	tl_lantern(&T, &out, NULL, "pools");
	tap_ok(ok && tl_has(out, "runc-none            2..3      2       2"),
	       "every pool fills to its size.min (runc, runsc, untrusted; none and bridge): %s", tl_oneline(out));
	free(out);

	/* a ready sandbox: its own instance cgroup, the waiter its only process */
	n = ready_instances("runc-none", ids, 4);
	procs_of(n ? ids[0] : "none", procs, sizeof(procs));
	tl_sh(&args, NULL, "tr '\\0' ' ' < /proc/%d/cmdline", atoi(procs));
	sp = strchr(procs, ' ');
	tap_ok(n >= 2 && atoi(procs) > 0 && sp && !sp[1] &&
	       tl_has(args, "/run/lantern/lantern-waiter /run/lantern/waiter/waiter.sock"),
	       "a ready sandbox is an instance cgroup of its own whose only process is the waiter: %s(%s)", procs,
	       tl_oneline(args));
	free(args);
	/* registered with the egress programs before anything runs in it: its cgroup id is
	 * a key of lantern_instances, with net_mode 0 (none) */
	tl_sh(&maps, NULL, "bpftool -j map dump pinned %s/lantern_instances | python3 -c \"import json,sys; "
	      "d=[e.get('formatted', e) for e in json.load(sys.stdin)]; "
	      "print([e['value']['net_mode'] for e in d if e['key']==int(sys.argv[1])])\" "
	      "$(stat -c %%i /sys/fs/cgroup/unified/%s/%s)", T.bpffs, T.cgroot, n ? ids[0] : "none");
	tap_ok(tl_has(maps, "[0]"), "its cgroup is in the egress maps with network none before any run has it: %s",
	       tl_oneline(maps));
	free(maps);
	/* the journal of the run that will claim it, made ahead: format 2, preallocated,
	 * not a single record (nobody's journal yet) */
	tl_lantern(&T, &out, NULL, "journal verify %s/pool/%s/journal", T.state, n ? ids[0] : "none");
	tap_ok(tl_has(out, "ok: 0 records, 8 bytes (format 2, 65528 bytes preallocated after them)"),
	       "a ready sandbox's journal is made ahead: format 2, 64 KiB preallocated, no record: %s",
	       tl_oneline(out));
	free(out);
}

/* ---- claims ---- */

/* Under runc and runsc: the first instruction connects to a denied address (EPERM),
 * then to the allowed one (connected), then reads the identity token, which is the
 * run's: what `lantern identity RUN` shows. */
static void test_first_instruction(const char *pool, const char *iso)
{
	char fields[512], name[64], id[32], inst[32], cmd[400], *out = NULL, *ident = NULL, token[2048] = "";
	json_t *rec;
	int rc;

	snprintf(fields, sizeof(fields), "  isolation: %s\n  network: allowlist_domain\n  egress_rules:\n"
		 "    - pattern: tcp://%s:%u\n", iso, net.gw, allowed_port);
	snprintf(cmd, sizeof(cmd), "[\"/bin/lantern-probe\", \"connect\", \"%s:%u\", \"connect\", \"%s:%u\", \"read\", "
		 "\"/run/lantern/identity/token\"]", net.gw, allowed_port + 1, net.gw, allowed_port);
	snprintf(name, sizeof(name), "first-%s", iso);
	rc = run_spec(spec(name, fields, cmd), &out, id, inst);
	rec = tl_run_record(&T, id);
	tl_lantern(&T, &ident, NULL, "identity %s --json", id);
	if (out && strstr(out, "token: "))
		sscanf(strstr(out, "token: ") + 7, "%2047s", token);
	tap_ok(rc == 0 && tl_has(out, "connect") && strstr(out, "Operation not permitted") &&
	       strstr(out, "Operation not permitted") < strstr(out, ": ok\n") && token[0] == 'e' && tl_has(ident, token) &&
	       !strcmp(pool_name_of(rec) ?: "", pool),
	       "%s (%s): the claimed workload's first instruction gets EPERM for a denied address, then connects "
	       "to the allowed one, then reads the run's identity token: %s", iso, pool, tl_oneline(out));
	json_decref(rec);
	free(out);
	free(ident);
}

/* The workload's environment is the run's: LANTERN_* of the run, TRACEPARENT of its
 * trace, spec.env; the waiter's own (its PATH only) is not there. */
static void test_env(void)
{
	char id[32], inst[32], w1[64], w2[64], tp[40] = "", *out = NULL, *trace = NULL;
	int rc = run_spec(spec("env", "  isolation: trusted\n  network: none\n  limits: {memory: 128Mi}\n"
			       "  env:\n    - {name: GREETING, value: hello}\n",
			       "[\"/bin/sh\", \"-c\", \"env | sort; test -S $LANTERN_HARNESS_SOCKET && echo harness-ok; "
			       "lantern-hcall GET /v1/input\"]"),
			  &out, id, inst);
	json_t *rec = tl_run_record(&T, id);

	tl_lantern(&T, &trace, NULL, "trace %s", id);
	if (out && strstr(out, "TRACEPARENT=00-"))
		snprintf(tp, sizeof(tp), "%.32s", strstr(out, "TRACEPARENT=00-") + 15);
	snprintf(w1, sizeof(w1), "LANTERN_RUN_ID=%s\n", id);
	snprintf(w2, sizeof(w2), "LANTERN_INSTANCE_ID=%s\n", inst);
	tap_ok(rc == 0 && id[0] && inst[0] && !strcmp(pool_name_of(rec) ?: "", "runc-none") && tl_has(out, "GREETING=hello") &&
	       tl_has(out, w1) && tl_has(out, w2) &&
	       strlen(tp) == 32 && tl_has(trace, tp) && tl_has(out, "LANTERN_HARNESS_SOCKET=/run/lantern/harness/harness.sock") &&
	       tl_has(out, "LANTERN_IDENTITY_TOKEN=/run/lantern/identity/token") && tl_has(out, "harness-ok") &&
	       tl_has(out, "HTTP/1.1 200") &&
	       tl_has(out, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"),
	       "the claimed workload's environment is the run's: LANTERN_RUN_ID %s, LANTERN_INSTANCE_ID %s, "
	       "TRACEPARENT of its trace, spec.env, the image's PATH, the harness socket (bound with the sandbox, "
	       "served for the run: GET /v1/input answers 200): %s", id, inst, tl_oneline(out));
	json_decref(rec);
	free(out);
	free(trace);
	/* its journal is the one made with the sandbox: run_started first, the run's */
	tl_lantern(&T, &out, NULL, "journal %s", id);
	snprintf(w1, sizeof(w1), "run %s instance %s", id, inst);
	tl_lantern(&T, &trace, NULL, "journal verify %s", id);
	tap_ok(tl_has(out, "    1 ") && tl_has(out, "run_started") && tl_has(out, w1) && tl_has(out, "run_completed") &&
	       tl_has(trace, "ok: ") && tl_has(trace, "format 2"),
	       "the claimed run's journal (made ahead with its sandbox) holds its run_started first and verifies: %s | %s",
	       tl_oneline(out), tl_oneline(trace));
	free(out);
	free(trace);
}

/* One claim leaves a file, a process and a variable; the next claim sees none of them,
 * and the first claim's sandbox is gone with its run. */
static void test_nothing_carries_over(void)
{
	const char *fields = "  isolation: trusted\n  network: none\n  limits: {memory: 128Mi}\n";
	char id1[32], inst1[32], id2[32], inst2[32], *out1 = NULL, *out2 = NULL;
	json_t *r1, *r2;
	int rc1, rc2;

	wait_ready("runc-none", 2, 30000);
	rc1 = run_spec(spec("leave", fields,
			    "[\"/bin/sh\", \"-c\", \"echo claim1 > /tmp/left-behind; export LEFT=1; "
			    "(sleep 300 &) ; echo left\"]"), &out1, id1, inst1);
	rc2 = run_spec(spec("look", fields,
			    "[\"/bin/sh\", \"-c\", \"ls /tmp; echo LEFT=$LEFT; ps -o pid,args | grep -c '[s]leep 300' ; "
			    "ps -o pid,args | grep -v -e ps -e grep -e sh\"]"), &out2, id2, inst2);
	r1 = tl_run_record(&T, id1);
	r2 = tl_run_record(&T, id2);
	tap_ok(rc1 == 0 && rc2 == 0 && pool_name_of(r1) && pool_name_of(r2) && strcmp(inst1, inst2) &&
	       !tl_has(out2, "left-behind") && tl_has(out2, "LEFT=\n") && tl_has(out2, "\n0\n"),
	       "nothing of one claim reaches the next (another sandbox: no file, no process, no variable): %s | %s",
	       tl_oneline(out1), tl_oneline(out2));
	tap_ok(!instance_exists(inst1) && !instance_exists(inst2),
	       "each claimed sandbox is used once: its instance is gone with its run (%s, %s)", inst1, inst2);
	json_decref(r1);
	json_decref(r2);
	free(out1);
	free(out2);
}

static void test_refill(void)
{
	json_t *j, *p;
	bool ok = wait_ready("runc-none", 2, 30000);

	j = tl_lantern_json(&T, "pools --json");
	p = pool_of(j, "runc-none");
	tap_ok(ok && json_integer_value(json_object_get(p, "claimed_per_minute")) >= 3 &&
	       json_integer_value(json_object_get(json_object_get(p, "refill_ms"), "p50")) > 0,
	       "the pool refilled in the background to size.min; lantern pools shows claims per minute (%lld) and "
	       "the refill time (p50 %lld ms)", (long long)json_integer_value(json_object_get(p, "claimed_per_minute")),
	       (long long)json_integer_value(json_object_get(json_object_get(p, "refill_ms"), "p50")));
	json_decref(j);
}

/* Specs a pooled sandbox cannot serve as asked start cold. */
static void test_no_fit(void)
{
	static const struct {
		const char *what, *fields;
	} cases[] = {
		{ "other limits", "  isolation: trusted\n  network: none\n  limits: {memory: 64Mi}\n" },
		{ "a larger scratch", "  isolation: trusted\n  network: none\n  limits: {memory: 128Mi, scratch_size: 128Mi}\n" },
		{ "another network mode's namespace", "  isolation: trusted\n  network: allowlist_domain\n  limits: {memory: 128Mi}\n" },
	};
	char msg[512] = "";
	bool ok = true;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char id[32], inst[32], *out = NULL;
		int rc = run_spec(spec("nofit", cases[i].fields, "[\"/bin/true\"]"), &out, id, inst);
		json_t *rec = tl_run_record(&T, id);

		ok &= rc == 0 && rec && !json_object_get(rec, "pool");
		snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), "%s%s: %s", i ? "; " : "", cases[i].what,
			 rec ? (pool_name_of(rec) ?: "cold") : "?");
		json_decref(rec);
		free(out);
	}
	tap_ok(ok, "specs that do not fit any pool start cold (%s)", msg);
}

/* Kill the waiters of every ready sandbox of runc-none, claim at once: never one of
 * them. */
static void test_dead_waiter(void)
{
	char ids[4][32], id[32], inst[32], procs[256], *out = NULL;
	int n;
	bool other = true;

	wait_ready("runc-none", 2, 30000);
	n = ready_instances("runc-none", ids, 4);
	for (int i = 0; i < n; i++)
		tl_sh(NULL, NULL, "kill -9 %s", procs_of(ids[i], procs, sizeof(procs)));
	int rc = run_spec(spec("after-dead", "  isolation: trusted\n  network: none\n  limits: {memory: 128Mi}\n",
			       "[\"/bin/sh\", \"-c\", \"echo alive\"]"), &out, id, inst);
	for (int i = 0; i < n; i++)
		other &= strcmp(ids[i], inst) != 0;
	usleep(300000);
	tap_ok(n >= 1 && rc == 0 && tl_has(out, "alive") && other && tl_log_contains(&T, "never handed out") &&
	       !instance_exists(ids[0]),
	       "ready sandboxes whose waiter was killed are torn down, never handed out: the spawn ran in %s "
	       "(killed: %d)", inst, n);
	free(out);
}

/* Stop the waiters of every ready sandbox: the claim times out, the sandbox goes, the
 * spawn starts cold, and the reason is in lanternd's log and the run's record. */
static void test_failing_claim(void)
{
	char ids[4][32], id[32], inst[32], procs[4][256], *out = NULL;
	const char *fb;
	json_t *rec;
	int n, rc;
	bool gone;

	wait_ready("runc-none", 2, 30000);
	n = ready_instances("runc-none", ids, 4);
	for (int i = 0; i < n; i++)
		tl_sh(NULL, NULL, "kill -STOP %s", procs_of(ids[i], procs[i], sizeof(procs[i])));
	rc = run_spec(spec("stopped", "  isolation: trusted\n  network: none\n  limits: {memory: 128Mi}\n",
			   "[\"/bin/sh\", \"-c\", \"echo cold-and-well\"]"), &out, id, inst);
	rec = tl_run_record(&T, id);
	fb = json_string_value(json_object_get(json_object_get(rec, "pool"), "fallback"));
	usleep(500000);
	gone = false;
	for (int i = 0; i < n; i++)
		gone |= !instance_exists(ids[i]);
	for (int i = 0; i < n; i++)
		tl_sh(NULL, NULL, "kill -CONT %s 2>/dev/null", procs[i]);
	tap_ok(n >= 1 && rc == 0 && tl_has(out, "cold-and-well") && !pool_name_of(rec) && fb &&
	       tl_has(fb, "did not exec within") && tl_log_contains(&T, "starting it cold") && gone,
	       "a claim that fails (its waiter stopped) tears the sandbox down and the spawn starts cold, the reason "
	       "logged and recorded: %s", fb ? fb : "no reason");
	json_decref(rec);
	free(out);
}

/* The run says it came from a pool; the sandbox's wait (and its runtime's start) is
 * not billed: a claimed runsc run's wall time is less than its wait, its CPU less
 * than a cold start of the same spec (which pays the sandbox's boot). */
static void test_billing(void)
{
	char fields[512], id[32], inst[32], cid[32], cinst[32], path[600], *trace = NULL, *receipt = NULL;
	json_t *cost, *cold;
	double waited, wall, cpu, cold_cpu;
	int rc, rc2;

	snprintf(fields, sizeof(fields), "  isolation: standard\n  network: allowlist_domain\n");
	wait_ready("runsc-bridge", 1, 60000);
	sleep(2);
	rc = run_spec(spec("billed", fields, "[\"/bin/true\"]"), NULL, id, inst);
	rc2 = run_spec(spec("billed-cold", "  isolation: standard\n  network: allowlist_domain\n  limits: {memory: 200Mi}\n",
			    "[\"/bin/true\"]"), NULL, cid, cinst);
	snprintf(path, sizeof(path), "%s/runs/%s/cost.json", T.state, id);
	cost = json_load_file(path, 0, NULL);
	snprintf(path, sizeof(path), "%s/runs/%s/cost.json", T.state, cid);
	cold = json_load_file(path, 0, NULL);
	waited = json_number_value(json_object_get(json_object_get(cost, "pool"), "waited_seconds"));
	wall = json_number_value(json_object_get(json_object_get(cost, "usage"), "wall_seconds"));
	cpu = json_number_value(json_object_get(json_object_get(cost, "usage"), "cpu_seconds"));
	cold_cpu = json_number_value(json_object_get(json_object_get(cold, "usage"), "cpu_seconds"));
	tl_lantern(&T, &trace, NULL, "trace %s", id);
	tl_lantern(&T, &receipt, NULL, "receipt %s --json", id);
	tap_ok(rc == 0 && tl_has(trace, "lantern.pool.name=runsc-bridge") && tl_has(receipt, "\"pool\"") &&
	       tl_has(receipt, "runsc-bridge") && json_is_false(json_object_get(json_object_get(cost, "pool"), "waited_billed")),
	       "trace, cost and receipt say the run came from pool runsc-bridge");
	tap_ok(rc == 0 && rc2 == 0 && waited >= 2.0 && wall < waited && cpu < cold_cpu,
	       "the wait is not billed: waited %.2f s, billed wall %.3f s; CPU billed %.3f s, a cold start of the same "
	       "class %.3f s", waited, wall, cpu, cold_cpu);
	json_decref(cost);
	json_decref(cold);
	free(trace);
	free(receipt);
}

/* lanternd dies between a claim and the exec: right after the claim's run_started
 * record is appended (LANTERN_TEST_CRASH_AT=1: the first append since its start; the
 * sandbox's directory is already renamed to the run's), before it is synced and before
 * the waiter is told anything. The workload never ran, and the next lanternd finds no
 * run: a run whose start nobody saw is not resurrected (no run.json), and the claimed
 * sandbox is reclaimed with the others, never handed out again. */
static void test_crash_at_claim(void)
{
	char ids[8][32], id[32], inst[32], *out = NULL, *ps = NULL, *unrec = NULL;
	int n, st, rc;
	bool reused = false, gone = true;
	json_t *rec;

	tl_daemon_stop(&T, SIGTERM);
	setenv("LANTERN_TEST_CRASH_AT", "1", 1);
	rc = tl_daemon_start(&T, flags);
	unsetenv("LANTERN_TEST_CRASH_AT");
	wait_ready("runc-none", 2, 60000);
	n = ready_instances("runc-none", ids, 8);
	tl_lantern(&T, &out, NULL, "run %s", spec("crash-claim", "  isolation: trusted\n  network: none\n"
						  "  limits: {memory: 128Mi}\n", "[\"/bin/echo\", \"it-ran\"]"));
	st = tl_daemon_stop(&T, SIGKILL);
	tap_ok(rc == 0 && n >= 2 && WIFEXITED(st) && WEXITSTATUS(st) == 86 && !tl_has(out, "it-ran"),
	       "lanternd exits at the claim's run_started append (before its sync and the exec); the workload did "
	       "not run: %s", tl_oneline(out));
	free(out);
	out = NULL;
	tl_daemon_start(&T, flags);
	tl_lantern(&T, &ps, NULL, "ps");
	for (int i = 0; i < n; i++)
		gone &= !instance_exists(ids[i]);
	wait_ready("runc-none", 2, 60000);
	rc = run_spec(spec("after-crash", "  isolation: trusted\n  network: none\n  limits: {memory: 128Mi}\n",
			   "[\"/bin/echo\", \"fresh\"]"), &out, id, inst);
	rec = tl_run_record(&T, id);
	for (int i = 0; i < n; i++)
		reused |= !strcmp(ids[i], inst);
	tl_sh(&unrec, NULL, "cd %s/runs && for d in r-*; do [ -d \"$d\" ] && [ ! -e \"$d/run.json\" ] && echo \"$d\"; done",
	      T.state);
	tap_ok(!tl_has(ps, "crash-claim") && gone && rc == 0 && tl_has(out, "fresh") && pool_name_of(rec) && !reused &&
	       unrec && !*unrec,
	       "after it, no run is resurrected from the claim and its directory (the sandbox's, renamed, with no "
	       "run.json) is removed, the sandboxes ready before (the claimed one too) are reclaimed, and the next "
	       "claim gets a fresh one (%s; left without run.json: %s)", inst, tl_oneline(unrec));
	free(unrec);
	json_decref(rec);
	free(out);
	free(ps);
}

/* kill -9 of lanternd with ready sandboxes and a claimed run under way. */
static void test_restart(void)
{
	char before[8][32], ids[4][32], id[32], inst[32], rid[32] = "", rinst[32] = "", *out = NULL, *logs = NULL;
	int nb = 0, n, runs_before, runs_after;
	bool reused = false, reclaimed = true;
	json_t *rec;

	wait_ready("runc-none", 2, 30000);
	wait_ready("untrusted-none", 1, 30000);
	n = ready_instances("runc-none", ids, 4);
	for (int i = 0; i < n && nb < 8; i++)
		snprintf(before[nb++], 32, "%s", ids[i]);
	n = ready_instances("untrusted-none", ids, 4);
	for (int i = 0; i < n && nb < 8; i++)
		snprintf(before[nb++], 32, "%s", ids[i]);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >%s/long.out 2>&1 &", T.build, T.sock,
	      spec("long", "  isolation: trusted\n  network: none\n  limits: {memory: 128Mi}\n",
		   "[\"/bin/sh\", \"-c\", \"sleep 3; echo survived\"]"), T.dir);
	for (int i = 0; i < 50 && !rid[0]; i++) {
		json_t *runs = tl_lantern_json(&T, "ps --json"), *r;
		size_t k;

		json_array_foreach(runs, k, r)
			if (!strcmp(json_string_value(json_object_get(r, "name")) ?: "", "long") &&
			    !strcmp(json_string_value(json_object_get(r, "status")) ?: "", "running")) {
				snprintf(rid, sizeof(rid), "%s", json_string_value(json_object_get(r, "id")));
				snprintf(rinst, sizeof(rinst), "%s", json_string_value(json_object_get(r, "instance_id")));
			}
		json_decref(runs);
		usleep(100000);
	}
	runs_before = runs_count();
	tl_daemon_stop(&T, SIGKILL);
	tl_daemon_start(&T, flags);
	runs_after = runs_count();
	/* the claimed run: adopted, it ends as it would have */
	for (int i = 0; i < 100; i++) {
		rec = tl_run_record(&T, rid);
		if (rec && strcmp(json_string_value(json_object_get(rec, "status")) ?: "", "running")) {
			json_decref(rec);
			break;
		}
		json_decref(rec);
		usleep(100000);
	}
	rec = tl_run_record(&T, rid);
	tl_lantern(&T, &logs, NULL, "logs %s", rid);
	tap_ok(rid[0] && !strcmp(json_string_value(json_object_get(rec, "status")) ?: "", "succeeded") &&
	       !strcmp(pool_name_of(rec) ?: "", "runc-none") && tl_has(logs, "survived"),
	       "kill -9 of lanternd during a claimed run: the next lanternd adopts it and it succeeds (%s)", rid);
	json_decref(rec);
	free(logs);
	for (int i = 0; i < nb; i++)
		reclaimed &= !instance_exists(before[i]);
	wait_ready("runc-none", 2, 60000);
	wait_ready("untrusted-none", 1, 60000);
	for (int i = 0; i < 2; i++) {
		int rc = run_spec(spec("after-restart", "  isolation: trusted\n  network: none\n  limits: {memory: 128Mi}\n",
				       "[\"/bin/sh\", \"-c\", \"echo fresh\"]"), &out, id, inst);

		rec = tl_run_record(&T, id);
		reused |= rc != 0 || !pool_name_of(rec);
		for (int k = 0; k < nb; k++)
			reused |= !strcmp(before[k], inst);
		json_decref(rec);
		free(out);
		out = NULL;
	}
	tap_ok(nb >= 3 && reclaimed && !reused && tl_log_contains(&T, "reclaiming cgroup"),
	       "the %d sandboxes ready before the kill were reclaimed, never handed out; the pools refilled and new "
	       "claims get fresh sandboxes", nb);
	tap_ok(runs_before > 0 && runs_after == runs_before,
	       "none of them, their journals made ahead, comes back as a run: %d runs before the kill, %d after it",
	       runs_before, runs_after);
}

/* Claims as fast as the CLI goes: every one from the pool or cold, all succeed. */
static void test_burst(void)
{
	int pooled = 0, ok = 0;

	wait_ready("runc-none", 2, 30000);
	for (int i = 0; i < 8; i++) {
		char id[32], inst[32];
		int rc = run_spec(spec("burst", "  isolation: trusted\n  network: none\n  limits: {memory: 128Mi}\n",
				       "[\"/bin/true\"]"), NULL, id, inst);
		json_t *rec = tl_run_record(&T, id);

		ok += rc == 0;
		pooled += pool_name_of(rec) != NULL;
		json_decref(rec);
	}
	tap_ok(ok == 8 && pooled >= 2, "8 spawns in a row with the pool refilling: all succeed, %d from the pool", pooled);
}

static void test_untrusted(void)
{
	char id[32], inst[32], *out = NULL;
	int rc = run_spec(spec("untr", "  isolation: untrusted\n  network: none\n",
			       "[\"/bin/sh\", \"-c\", \"dmesg >/dev/null 2>&1 && echo allowed || echo denied\"]"), &out, id, inst);
	json_t *rec = tl_run_record(&T, id);

	tap_ok(rc == 0 && !strcmp(pool_name_of(rec) ?: "", "untrusted-none") && tl_has(out, "denied"),
	       "untrusted (runsc, allow-list seccomp): the claimed workload runs under the class's profile: %s",
	       tl_oneline(out));
	json_decref(rec);
	free(out);
}

static uint64_t mem_available(void)
{
	char *out = NULL;
	uint64_t kb = 0;

	tl_sh(&out, NULL, "awk '/^MemAvailable:/ {print $2}' /proc/meminfo");
	kb = out ? strtoull(out, NULL, 10) : 0;
	free(out);
	return kb * 1024;
}

/* Memory pressure: with the floor 1 GiB under what is available now, the pools fill;
 * then this test takes 2.5 GiB, and the pools give their ready sandboxes back and say
 * why; when it lets go, they fill again. */
static void test_pressure(void)
{
	char extra[1400], *out = NULL;
	uint64_t floor = mem_available() - (1ull << 30);
	bool filled, given_back = false, refilled;
	pid_t hog;

	tl_daemon_stop(&T, SIGTERM);
	snprintf(extra, sizeof(extra), "%s --pool-memory-floor %llu", flags, (unsigned long long)floor);
	tl_daemon_start(&T, extra);
	filled = wait_ready("runc-none", 2, 60000);
	hog = fork();
	if (hog == 0) {
		execlp("python3", "python3", "-c", "import time; b = b'x' * (2560 << 20); time.sleep(60)", (char *)NULL);
		_exit(127);
	}
	tl_child_track(hog, SIGKILL);
	for (int i = 0; i < 150 && !given_back; i++) {
		usleep(100000);
		free(out);
		out = NULL;
		tl_lantern(&T, &out, NULL, "pools");
		given_back = tl_has(out, "under the floor") && ready_of("runc-none") == 0 && ready_of("runsc-bridge") == 0;
	}
	tl_child_stop(hog, SIGKILL);
	refilled = wait_ready("runc-none", 2, 60000);
	tap_ok(filled && given_back && refilled, "under memory pressure (MemAvailable below --pool-memory-floor) the pools "
	       "give their ready sandboxes back and say why, and fill again when memory is back: %s", tl_oneline(out));
	free(out);
	tl_daemon_stop(&T, SIGTERM);
	tl_daemon_start(&T, flags);
}

static void test_clean_stop(void)
{
	char ids[8][32], *out = NULL;
	int n, mounted = 0, cgroups = 0;

	wait_ready("runc-none", 2, 60000);
	wait_ready("runsc-bridge", 1, 60000);
	n = ready_instances("runc-none", ids, 4);
	n += ready_instances("runsc-bridge", ids + n, 4);
	tl_daemon_stop(&T, SIGTERM);
	for (int i = 0; i < n; i++) {
		char *m = NULL;

		tl_sh(&m, NULL, "grep -c '/%s ' /proc/mounts", ids[i]);
		mounted += m ? atoi(m) : 0;
		cgroups += instance_exists(ids[i]);
		free(m);
	}
	tl_sh(&out, NULL, "(runc --root %s/oci/runc list -q; runsc --root %s/oci/runsc list -q) 2>/dev/null | grep -c .; "
	      "ls %s/pool 2>/dev/null | grep -c .", T.state, T.state, T.state);
	tap_ok(n >= 3 && out && !strcmp(out, "0\n0\n") && !mounted && !cgroups,
	       "a clean stop tears the %d ready sandboxes down: no container, directory, instance cgroup or identity "
	       "tmpfs left (%s, %d mounts, %d cgroups)", n, tl_oneline(out), mounted, cgroups);
	free(out);
}

int main(void)
{
	const char *missing = tl_env_missing();
	char dir[400], *out = NULL;
	int lfd;

	tap_plan(POINTS);
	if (missing || access("/usr/sbin/runc", X_OK) || access("/usr/bin/runsc", X_OK)) {
		for (int i = 0; i < POINTS; i++)
			tap_skip(missing ? missing : "runc and runsc are not installed (make deps)", "pool point %d", i + 1);
		return tap_failures ? 1 : 0;
	}
	tl_env_init(&T, "pool");
	tl_net_init(&net, "lp", 0);
	tl_on_exit(remove_bridge);
	snprintf(dir, sizeof(dir), "%s/img", T.dir);
	tap_ok(tl_mkimage(dir, "test/busybox:1", image, sizeof(image)) == 0 && tl_has(image, "@sha256:"),
	       "the test image is built: %s", image);
	test_refusals();

	snprintf(pools_file, sizeof(pools_file), "%s", tl_file(&T, "pools.yaml",
		 "pools:\n"
		 "  - name: runc-none\n    image_digest: %s\n    isolation: trusted\n    limits: {memory: 128Mi}\n"
		 "    size: {min: 2, max: 3}\n"
		 "  - name: runc-bridge\n    image_digest: %s\n    isolation: trusted\n    network: bridge\n"
		 "    size: {min: 1, max: 2}\n"
		 "  - name: runsc-bridge\n    image_digest: %s\n    isolation: standard\n    network: bridge\n"
		 "    size: {min: 1, max: 1}\n"
		 "  - name: untrusted-none\n    image_digest: %s\n    isolation: untrusted\n    size: {min: 1, max: 1}\n",
		 image, image, image, image));
	snprintf(flags, sizeof(flags), "--pools %s --net-bridge %s --net-subnet %s", pools_file, net.bridge, net.subnet);
	tl_sh(NULL, NULL, ": > %s", T.log);
	if (!tap_ok(tl_daemon_start(&T, flags) == 0, "lanternd starts with four pools"))
		return 1;
	tl_lantern(&T, &out, NULL, "image import %s", dir);
	free(out);
	/* the allowed destination: a listener of this test on the bridge's own address */
	wait_ready("runc-bridge", 1, 60000);
	lfd = tl_tcp_listen(net.gw, &allowed_port);
	tl_acceptor(lfd, NULL);
	test_fill();
	test_first_instruction("runc-bridge", "trusted");
	test_first_instruction("runsc-bridge", "standard");
	test_env();
	test_nothing_carries_over();
	test_refill();
	test_no_fit();
	test_untrusted();
	test_dead_waiter();
	test_failing_claim();
	test_billing();
	test_burst();
	test_crash_at_claim();
	test_restart();
	test_pressure();
	test_clean_stop();
	return tap_failures ? 1 : 0;
}
