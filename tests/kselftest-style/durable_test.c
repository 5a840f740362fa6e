/* durable_test: durable execution end to end, with a private lanternd and workloads
 * that make their steps with `lantern step` and curl. Side effects go to a loopback
 * HTTP sink (a child of this test) that records each request's path and
 * Idempotency-Key header.
 *
 * Covers: lanternd crashing after every journal record of a run (the test-only crash
 * point LANTERN_TEST_CRASH_AT), once with the workload dying too (a machine restart:
 * resume in a fresh instance) and once with the workload surviving (it reconnects):
 * every completed step's effect exactly once, the in-flight one at most twice and
 * then with the same key; idempotent: false refusing a restart; a torn journal tail;
 * a corrupt middle record; a power loss that leaves a run's step records only in the
 * node log (put back at start); budgets (steps, tokens, cost) and the loop guard;
 * `lantern step` replay; the input; the caller check; lantern journal verify. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/journal.h"
#include "lantern/util.h"

#define NSTEPS 4
/* run_started + (step_started + step_completed) per step + run_completed */
#define NRECORDS (1 + 2 * NSTEPS + 1)

static struct tl_env T;
static uint16_t sink_port;
static char sink_log[512];

/* The sink: one line "PATH KEY" per request, then 200. */
static void sink_serve(int lfd)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (;;) {
		int c = accept(lfd, NULL, NULL);
		char buf[8192], path[256] = "?", key[128] = "-", line[512];
		size_t n = 0;

		if (c < 0)
			continue;
		while (n < sizeof(buf) - 1) {
			ssize_t r = read(c, buf + n, sizeof(buf) - 1 - n);
			if (r <= 0)
				break;
			n += (size_t)r;
			buf[n] = '\0';
			if (strstr(buf, "\r\n\r\n"))
				break;
		}
		buf[n] = '\0';
		sscanf(buf, "%*s %255s", path);
		char *k = strcasestr(buf, "\r\nIdempotency-Key:");
		if (k)
			sscanf(k + 18, " %127s", key);
		int fd = open(sink_log, O_WRONLY | O_APPEND | O_CREAT, 0600);
		int ln = snprintf(line, sizeof(line), "%s %s\n", path, key);
		if (fd >= 0) {
			if (write(fd, line, (size_t)ln) < 0)
				_exit(1);
			close(fd);
		}
		static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
		if (write(c, ok, sizeof(ok) - 1) < 0)
			_exit(1);
		close(c);
	}
}

/* A spec whose workload is `sh -c SCRIPT`, egress to the sink allowed. */
static const char *spec(const char *name, const char *extra_spec, const char *limits,
			const char *script)
{
	return tl_spec(&T, name, NULL, script,
		       "  image_digest: host\n  isolation: trusted\n  network: allowlist_domain\n"
		       "  egress_rules:\n    - pattern: tcp://127.0.0.1:%u\n%s"
		       "  limits:\n    memory: 256Mi\n%s",
		       sink_port, extra_spec ? extra_spec : "", limits ? limits : "");
}

/* The steps script: NSTEPS effects on the sink, each a `lantern step`. */
static const char *steps_script(void)
{
	static char s[2048];
	size_t off = 0;

	off += (size_t)snprintf(s + off, sizeof(s) - off, "set -e; L=$LANTERN_CLI; ");
	for (int i = 1; i <= NSTEPS; i++)
		off += (size_t)snprintf(s + off, sizeof(s) - off,
					"$L step s%d -- sh -c 'curl -sf -H \"Idempotency-Key: "
					"$LANTERN_IDEMPOTENCY_KEY\" http://127.0.0.1:%u/s%d'; ",
					i, sink_port, i);
	snprintf(s + off, sizeof(s) - off, "echo all-steps-done");
	return s;
}

/* Status of run id per lantern ps, waiting up to ms for it to be final. */
static const char *wait_final(const char *id, int ms)
{
	static char st[64];

	for (uint64_t end = tl_ms() + (uint64_t)ms; tl_ms() < end; usleep(50000)) {
		char *out = NULL;
		tl_lantern(&T, &out, NULL, "ps");
		for (char *save = NULL, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
			char rid[64], inst[64], nm[128];
			if (sscanf(l, "%63s %63s %127s %63s", rid, inst, nm, st) == 4 && !strcmp(rid, id) &&
			    strcmp(st, "running") && strcmp(st, "accepted")) {
				free(out);
				return st;
			}
		}
		free(out);
	}
	return "still-running";
}

static char *run_reason(const char *id)
{
	char *out = NULL;

	tl_sh(&out, NULL, "cat %s/runs/%s/run.json", T.state, id);
	return out;
}

/* Counts sink hits of path; *same_key is false if they carry different keys. */
static int sink_hits(const char *path, bool *same_key, char *key, size_t klen)
{
	char *buf = NULL;
	int n = 0;

	*same_key = true;
	key[0] = '\0';
	if (util_read_file(sink_log, &buf, NULL) < 0)
		return 0;
	for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char p[256], k[128];
		if (sscanf(l, "%255s %127s", p, k) != 2 || strcmp(p, path))
			continue;
		if (n++ == 0)
			snprintf(key, klen, "%s", k);
		else if (strcmp(key, k))
			*same_key = false;
	}
	free(buf);
	return n;
}

/* One crash point: lanternd exits after record n; kill_workload as on a machine
 * restart. Returns true if every check held (reported as one TAP point). */
static bool crash_once(int n, bool kill_workload, char *why, size_t wlen)
{
	char env[32], id[64] = "", *out = NULL, *err = NULL;
	const char *f = spec("steps", NULL, NULL, steps_script()), *st;
	bool ok = true;

	unlink(sink_log);
	snprintf(env, sizeof(env), "%d", n);
	setenv("LANTERN_TEST_CRASH_AT", env, 1);
	setenv("LANTERN_TEST_CRASH_KILL", kill_workload ? "1" : "0", 1);
	if (tl_daemon_start(&T, NULL) < 0) {
		snprintf(why, wlen, "lanternd did not start");
		return false;
	}
	unsetenv("LANTERN_TEST_CRASH_AT");
	unsetenv("LANTERN_TEST_CRASH_KILL");
	tl_lantern(&T, &out, &err, "run %s", f);
	tl_daemon_stop(&T, SIGKILL); /* it has crashed (or for n past the end, finished) */
	free(out);
	free(err);
	if (!tl_newest_run(&T, id, sizeof(id), NULL, 0)) {
		snprintf(why, wlen, "no run directory");
		return false;
	}
	if (tl_daemon_start(&T, NULL) < 0) {
		snprintf(why, wlen, "lanternd did not restart");
		return false;
	}
	st = wait_final(id, 30000);
	if (strcmp(st, "succeeded")) {
		char *r = run_reason(id);
		snprintf(why, wlen, "run %s ended %s: %s", id, st, tl_oneline(r));
		free(r);
		ok = false;
	}
	for (int i = 1; ok && i <= NSTEPS; i++) {
		char path[16], key[128];
		bool same;
		int hits;

		snprintf(path, sizeof(path), "/s%d", i);
		hits = sink_hits(path, &same, key, sizeof(key));
		/* in daemon-only crashes the workload never re-runs a step; after a machine
		 * crash only the one in flight may run twice, with the same key */
		if (hits < 1 || hits > (kill_workload ? 2 : 1) || !same || strlen(key) != 64) {
			snprintf(why, wlen, "step s%d: %d effects, keys %s (%s)", i, hits,
				 same ? "equal" : "DIFFERENT", key);
			ok = false;
		}
	}
	if (ok) {
		int twice = 0;
		for (int i = 1; i <= NSTEPS; i++) {
			char path[16], key[128];
			bool same;
			snprintf(path, sizeof(path), "/s%d", i);
			twice += sink_hits(path, &same, key, sizeof(key)) == 2;
		}
		if (twice > 1) {
			snprintf(why, wlen, "%d steps ran twice: only the in-flight one may", twice);
			ok = false;
		}
	}
	if (ok && tl_lantern(&T, &out, NULL, "journal verify %s", id) != 0) {
		snprintf(why, wlen, "journal verify failed: %s", tl_oneline(out));
		ok = false;
	}
	if (ok)
		free(out);
	tl_daemon_stop(&T, SIGTERM);
	return ok;
}

static void test_crash_points(void)
{
	for (int mode = 0; mode < 2; mode++) {
		int failed = 0;
		char why[1024] = "";

		/* record 1 is run_started, written before `lantern run` is answered: a crash
		 * there is a refused submission, not a run to resume */
		for (int n = 2; n <= NRECORDS; n++) {
			char w[1024] = "";
			if (!crash_once(n, mode == 1, w, sizeof(w))) {
				failed++;
				snprintf(why, sizeof(why), "after record %d: %s", n, w);
				tap_diag("%s crash after record %d: %s", mode ? "machine" : "daemon", n, w);
			}
		}
		tap_ok(failed == 0, "%s: lanternd crashing after each record 2..%d, then restarting: the "
		       "run succeeds, each completed step's effect once, the in-flight one at most "
		       "twice with the same key (%s)",
		       mode ? "machine restart (workload dies too, resumed in a fresh instance)"
			    : "lanternd alone dies (the workload survives and reconnects)",
		       NRECORDS, failed ? why : "all held");
	}
}

static void test_basics(void)
{
	char script[2048], id[64], *out = NULL, *err = NULL;
	const char *f;
	int rc;

	snprintf(script, sizeof(script),
		 "L=$LANTERN_CLI; curl -s --unix-socket $LANTERN_HARNESS_SOCKET http://h/v1/input; echo; "
		 "$L step a -- sh -c 'echo first-$LANTERN_STEP_ATTEMPT'; "
		 "$L step a -- sh -c 'echo SHOULD-NOT-RUN; exit 9'; echo rc=$?; "
		 "$L step b -- sh -c 'echo bee; exit 3'; echo rc=$?; "
		 "$L step b -- sh -c 'exit 4'; echo rc=$?");
	f = spec("basics", NULL, NULL, script);
	rc = tl_lantern(&T, &out, &err, "run --input-json '{\"q\":\"what\"}' %s", f);
	tap_ok(rc == 0 && tl_has(out, "\"input\":{\"q\":\"what\"}"),
	       "the run's input reaches the workload (GET /v1/input) (%s)", tl_oneline(out));
	tap_ok(tl_has(out, "first-1\nfirst-1\nrc=0\n") && !tl_has(out, "SHOULD-NOT-RUN"),
	       "lantern step: a completed step replays its stdout and exit code without running");
	tap_ok(tl_has(out, "bee\nrc=3\nbee\nrc=3\n"), "lantern step: a non-zero exit code is recorded and replayed");
	free(out);
	free(err);

	tl_newest_run(&T, id, sizeof(id), NULL, 0);
	rc = tl_lantern(&T, &out, NULL, "journal %s", id);
	tap_ok(rc == 0 && tl_has(out, "run_started") && tl_has(out, "step_started    a (tool) attempt 1") &&
	       tl_has(out, "step_completed  b attempt 1 exit 3") && tl_has(out, "run_completed   succeeded"),
	       "lantern journal prints every record readably");
	free(out);
	rc = tl_lantern(&T, &out, NULL, "journal verify %s", id);
	tap_ok(rc == 0 && tl_has(out, "ok: 7 records") && tl_has(out, "head ") && tl_has(out, "(format 2)"),
	       "lantern journal verify checks CRCs and the chain, the receipt last; the ended run's journal is "
	       "format 2, its preallocated space given back (%s)", tl_oneline(out));
	free(out);

	/* another process (this test) may not use a run's socket */
	snprintf(script, sizeof(script), "sleep 30");
	f = spec("idle", NULL, NULL, script);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock, f);
	tl_running_run(&T, "idle", id, sizeof(id), 10000);
	usleep(300000);
	rc = tl_sh(&out, NULL, "curl -s --unix-socket %s/runs/%s/harness/harness.sock http://h/v1/input", T.state, id);
	tap_ok(tl_has(out, "not a process of run") && !tl_has(out, "\"input\""),
	       "a process outside the run's instance is refused by its harness socket (%s)", tl_oneline(out));
	free(out);
	tl_lantern(&T, NULL, NULL, "kill %s", id);
	wait_final(id, 10000);
}

static void test_budgets(void)
{
	char script[2048], *out = NULL, *err = NULL;
	const char *f;
	int rc;

	snprintf(script, sizeof(script),
		 "L=$LANTERN_CLI; for i in 1 2 3 4; do $L step s$i -- echo $i || exit 1; done");
	f = spec("maxsteps", NULL, "    max_steps: 2\n", script);
	rc = tl_lantern(&T, &out, &err, "run %s", f);
	tap_ok(rc != 0 && tl_has(err, "budget_exceeded") && tl_has(err, "limits.max_steps of 2") &&
	       tl_has(out, "1\n2\n") && !tl_has(out, "3"),
	       "max_steps: the third step is refused before it runs; the run ends budget_exceeded (%s)",
	       tl_oneline(err));
	free(out);
	free(err);

	snprintf(script, sizeof(script),
		 "S=$LANTERN_HARNESS_SOCKET; for i in 1 2 3; do "
		 "curl -s --unix-socket $S -XPOST -d '{\"step_id\":\"l'$i'\",\"kind\":\"llm\"}' http://h/v1/steps/begin; echo; "
		 "curl -s --unix-socket $S -XPOST -d '{\"step_id\":\"l'$i'\",\"result\":\"x\",\"usage\":{\"provider\":\"p\","
		 "\"model\":\"m\",\"input_tokens\":600,\"output_tokens\":100}}' http://h/v1/steps/complete; echo; done; sleep 5");
	f = spec("maxtokens", NULL, "    max_tokens: 1000\n", script);
	rc = tl_lantern(&T, &out, &err, "run %s", f);
	tap_ok(rc != 0 && tl_has(err, "budget_exceeded") && tl_has(err, "limits.max_tokens of 1000 exceeded (1400") &&
	       !tl_has(out, "\"step_id\":\"l3\""),
	       "max_tokens: checked after completion (1400 > 1000): the run ends budget_exceeded (%s)",
	       tl_oneline(err));
	free(out);
	free(err);

	/* 1M input tokens of model m at the price file's $2/M: $2 > $1.5 */
	tl_file(&T, "prices.json", "{\"p/m\": {\"input\": 2.0, \"output\": 10.0}}\n");
	snprintf(script, sizeof(script),
		 "S=$LANTERN_HARNESS_SOCKET; "
		 "curl -s --unix-socket $S -XPOST -d '{\"step_id\":\"c1\",\"kind\":\"llm\"}' http://h/v1/steps/begin; echo; "
		 "curl -s --unix-socket $S -XPOST -d '{\"step_id\":\"c1\",\"result\":\"x\",\"usage\":{\"provider\":\"p\","
		 "\"model\":\"m\",\"input_tokens\":1000000}}' http://h/v1/steps/complete; echo; sleep 5");
	tl_daemon_stop(&T, SIGTERM);
	{
		char extra[600];
		snprintf(extra, sizeof(extra), "--prices %s/prices.json", T.dir);
		tl_daemon_start(&T, extra);
	}
	f = spec("maxcost", NULL, "    max_cost_usd: 1.5\n", script);
	rc = tl_lantern(&T, &out, &err, "run %s", f);
	tap_ok(rc != 0 && tl_has(err, "budget_exceeded") && tl_has(err, "max_cost_usd of 1.5"),
	       "max_cost_usd: priced from --prices (1M tokens at $2/M), the run ends budget_exceeded (%s)",
	       tl_oneline(err));
	free(out);
	free(err);

	snprintf(script, sizeof(script),
		 "L=$LANTERN_CLI; for i in 1 2 3 4 5 6 7; do $L step try$i -- echo same || exit 1; done");
	f = spec("loop", NULL, NULL, script);
	rc = tl_lantern(&T, &out, &err, "run %s", f);
	tap_ok(rc != 0 && tl_has(err, "budget_exceeded") && tl_has(err, "loop detected") && tl_has(err, "try6") &&
	       tl_has(out, "same\nsame\nsame\nsame\nsame\n") && !tl_has(out, "same\nsame\nsame\nsame\nsame\nsame"),
	       "loop guard: the 6th step with the same input digest is refused and ends the run (%s)",
	       tl_oneline(err));
	free(out);
	free(err);
}

/* Stops lanternd cleanly, kills the workload as a machine restart would, then lets
 * damage() change the journal before lanternd starts again. */
static const char *restart_with(const char *id, void (*damage)(const char *path))
{
	char path[600], *out = NULL;

	tl_daemon_stop(&T, SIGTERM);
	tl_sh(&out, NULL, "cat %s/runs/%s/shim.pid", T.state, id);
	if (out && atoi(out) > 0) {
		kill(atoi(out), SIGKILL);
	}
	free(out);
	tl_sh(NULL, NULL, "for p in $(cat /sys/fs/cgroup/unified/%s/*/cgroup.procs 2>/dev/null); do kill -9 $p; done",
	      T.cgroot);
	usleep(200000);
	snprintf(path, sizeof(path), "%s/runs/%s/journal", T.state, id);
	damage(path);
	tl_daemon_start(&T, NULL);
	return wait_final(id, 30000);
}

static void torn(const char *path)
{
	static const char half[] = "\200\000\000\000\022\064";
	struct journal_scan info;
	struct lerr e;
	int fd;

	/* half a record header where the next record was going: what a crash mid-append
	 * leaves (after the records, in the space preallocated for them) */
	if (journal_scan(path, NULL, NULL, &info, &e) < 0 || (fd = open(path, O_WRONLY)) < 0)
		return;
	if (pwrite(fd, half, 6, (off_t)info.bytes) != 6)
		tap_diag("torn: short write");
	close(fd);
}

static void corrupt_middle(const char *path)
{
	char *buf = NULL;
	size_t len = 0, off;
	uint32_t body;
	FILE *f;

	/* one byte inside record 2's payload: past the 8-byte magic, record 1, record 2's
	 * frame and header */
	if (util_read_file(path, &buf, &len) < 0 || len < 16)
		return;
	memcpy(&body, buf + 8, 4);
	off = 8 + 8 + body + 8 + 56 + 3;
	if (off < len && (f = fopen(path, "r+"))) {
		buf[off] ^= 1;
		fseek(f, (long)off, SEEK_SET);
		fputc((unsigned char)buf[off], f);
		fclose(f);
	}
	free(buf);
}

static void no_damage(const char *path)
{
}

static int second_record(void *arg, const struct journal_record *rec)
{
	if (rec->seq == 2)
		*(uint64_t *)arg = rec->offset;
	return 0;
}

/* A power loss that took every page of the journal the kernel had not written back
 * yet, after run_started (synced in place): zeros from record 2 to the end, as the
 * preallocated space reads. Only the node log (STATE/journal.log) still has them. */
static void power_loss(const char *path)
{
	struct journal_scan info;
	struct lerr e;
	uint64_t off = 0;
	off_t end;
	char *z;
	int fd;

	if (journal_scan(path, second_record, &off, &info, &e) < 0 || !off || (fd = open(path, O_WRONLY)) < 0)
		return;
	end = lseek(fd, 0, SEEK_END);
	z = calloc(1, (size_t)end);
	if (z && end > (off_t)off && pwrite(fd, z, (size_t)(end - (off_t)off), (off_t)off) != end - (off_t)off)
		tap_diag("power_loss: short write");
	free(z);
	close(fd);
}

/* A machine that loses power with a run's step records only in the node log: lanternd
 * puts them back at its start, so the run resumes after its completed steps (each
 * effect once) instead of from its start. */
static void test_power_loss(void)
{
	char script[2048], id[64], *out = NULL, key[128];
	struct journal_scan info;
	struct lerr e;
	const char *f, *st;
	char path[600];
	bool same;
	int h1, h2;

	snprintf(script, sizeof(script),
		 "set -e; L=$LANTERN_CLI; "
		 "$L step p1 -- sh -c 'curl -sf -H \"Idempotency-Key: $LANTERN_IDEMPOTENCY_KEY\" http://127.0.0.1:%u/p1'; "
		 "$L step p2 -- sh -c 'curl -sf -H \"Idempotency-Key: $LANTERN_IDEMPOTENCY_KEY\" http://127.0.0.1:%u/p2'; "
		 "$L step wait -- sleep 2; echo power-done", sink_port, sink_port);
	f = spec("power", NULL, NULL, script);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock, f);
	tl_running_run(&T, "power", id, sizeof(id), 10000);
	snprintf(path, sizeof(path), "%s/runs/%s/journal", T.state, id);
	/* run_started, p1 and p2 started and completed, wait started */
	for (uint64_t end = tl_ms() + 10000; tl_ms() < end; usleep(50000))
		if (journal_scan(path, NULL, NULL, &info, &e) == 0 && info.records >= 6)
			break;
	st = restart_with(id, power_loss);
	h1 = sink_hits("/p1", &same, key, sizeof(key));
	h2 = sink_hits("/p2", &same, key, sizeof(key));
	tl_lantern(&T, &out, NULL, "journal verify %s", id);
	tap_ok(info.records >= 6 && !strcmp(st, "succeeded") && h1 == 1 && h2 == 1 &&
	       tl_log_contains(&T, "journal node log") && tl_log_contains(&T, "put back") &&
	       tl_has(out, "ok:"),
	       "a power loss takes a run's step records from its journal file: lanternd puts them back from "
	       "STATE/journal.log at start and the run resumes after its completed steps (%s; p1 %d, p2 %d "
	       "effects; %s)", st, h1, h2, tl_oneline(out));
	free(out);
}

static void test_journal_damage(void)
{
	char script[1024], id[64], *out = NULL, *r;
	const char *f, *st;

	snprintf(script, sizeof(script),
		 "L=$LANTERN_CLI; $L step one -- echo one; $L step two -- sleep 2; echo finished");
	f = spec("torn", NULL, NULL, script);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock, f);
	tl_running_run(&T, "torn", id, sizeof(id), 10000);
	usleep(800000);
	st = restart_with(id, torn);
	tl_lantern(&T, &out, NULL, "logs %s", id);
	tap_ok(!strcmp(st, "succeeded") && tl_log_contains(&T, "torn tail of 6 bytes") &&
	       tl_has(out, "one\none\nfinished"),
	       "a torn journal tail is truncated on restart; the run resumes (step one replayed) to success (%s, %s)", st,
	       tl_oneline(out));
	free(out);

	f = spec("corrupt", NULL, NULL, script);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock, f);
	tl_running_run(&T, "corrupt", id, sizeof(id), 10000);
	usleep(800000);
	st = restart_with(id, corrupt_middle);
	r = run_reason(id);
	tap_ok(!strcmp(st, "failed") && tl_has(r, "corrupt record 2") && tl_has(r, "CRC32C"),
	       "a corrupt middle record stops the run with a clear reason, nothing skipped (%s)", tl_oneline(r));
	free(r);
	tl_lantern(&T, &out, NULL, "journal verify %s", id);
	tap_ok(tl_has(out, "FAILED: 1 records verified"), "lantern journal verify reports the damage (%s)",
	       tl_oneline(out));
	free(out);

	/* idempotent: false and a step in flight: not restarted */
	snprintf(script, sizeof(script), "L=$LANTERN_CLI; $L step slow -- sleep 30");
	f = spec("noidem", "  idempotent: false\n", NULL, script);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock, f);
	tl_running_run(&T, "noidem", id, sizeof(id), 10000);
	usleep(800000);
	st = restart_with(id, no_damage);
	r = run_reason(id);
	tap_ok(!strcmp(st, "failed") && tl_has(r, "idempotent is false") && tl_has(r, "step \\\"slow\\\""),
	       "idempotent: false with a step in flight: the run ends failed naming the step (%s)", tl_oneline(r));
	free(r);
}

int main(void)
{
	const char *missing = tl_env_missing();
	pid_t pid;
	int lfd;

	tap_plan(17);
	if (missing) {
		for (int i = 0; i < 17; i++)
			tap_skip(missing, "durable execution");
		return tap_done();
	}
	if (tl_env_init(&T, "durable") < 0 || tl_daemon_start(&T, NULL) < 0) {
		tap_ok(false, "lanternd starts");
		tl_env_cleanup(&T);
		return tap_done();
	}
	snprintf(sink_log, sizeof(sink_log), "%s/sink.log", T.dir);
	lfd = tl_tcp_listen("127.0.0.1", &sink_port);
	pid = fork();
	if (pid == 0)
		sink_serve(lfd);
	tl_child_track(pid, SIGKILL);
	close(lfd);

	test_basics();
	test_budgets();
	test_journal_damage();
	test_power_loss();
	tl_daemon_stop(&T, SIGTERM);
	test_crash_points();

	tl_child_stop(pid, 0);
	tl_env_cleanup(&T);
	return tap_done();
}
