/* lease_test: a node loss is a brief resume, not a failed run (issue 12). Everything on
 * loopback: two private PostgreSQL servers started by the test (one is the control
 * plane's database, the other the data plane's journal store), two lantern-cp
 * replicas on the first (short lease and leader TTLs), three lanternd (each with its
 * own state, pin root and cgroup root) replicating their journals to the second, and
 * a sink (a child of this test) that records every side effect a workload sends it:
 * path, idempotency key, trace id and instance.
 *
 * Covers: why a queued run waits; a node lost during step 3 of five (lanternd, shim
 * and workload killed): resumed on another node, steps 1-2 not run again, step 3 at
 * most twice with one key, 4-5 once, one trace id, the store's copy verified, and the
 * lost node, restarted, refused by the store when it tries to go on; idempotent:
 * false with a step in flight and a damaged store copy, both failing with the reason;
 * a partitioned node (lanternd stopped past its lease, then continued): its appends
 * refused, its copy of the workload stopped, no step completed twice; the store away
 * for a moment (answers late, not wrong) and past its bound (the run fails, the store
 * holds a verified prefix); and the leader replica killed during a burst of 100 runs
 * over the three nodes: every run completes exactly once, none is placed twice. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/magic.h>

#include <jansson.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/journal.h"
#include "lantern/util.h"

#define OPTOK   "lease-test-operator-token-0123456789"
#define TTL_MS  5000
#define STORE_BOUND_S 6
#define BURST   100
#define POINTS  14

static struct tl_env N[3];
static const char *const NN[3] = { "leaseA", "leaseB", "leaseC" };
static char plane_of[3][64], node_flags[3][2048];
static struct tl_pg cpdb, store;
static char store_url[300];
static uint16_t grpc_port[2], http_port[2];
static pid_t cp_pid[2];
static char cp_log[2][512], optok[512], marks[300];
static uint16_t sink_port;
static char sink_log[512];

static void ms_sleep(int ms)
{
	usleep((useconds_t)ms * 1000);
}

static uint16_t free_port(void)
{
	uint16_t p = 0;
	int fd = tl_tcp_listen("127.0.0.1", &p);

	if (fd >= 0)
		close(fd);
	return p;
}

static const char *str(json_t *j, const char *k)
{
	return json_string_value(json_object_get(j, k)) ?: "";
}

/* --- the sink: one line "PATH KEY TRACE INSTANCE" per request --- */

static void header(const char *buf, const char *name, char *out, size_t len)
{
	char pat[64];
	const char *h;

	snprintf(pat, sizeof(pat), "\r\n%s:", name);
	snprintf(out, len, "-");
	if ((h = strcasestr(buf, pat))) {
		h += strlen(pat);
		while (*h == ' ')
			h++;
		snprintf(out, len, "%.*s", (int)strcspn(h, "\r\n "), h);
	}
}

static void sink_serve(int lfd)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (;;) {
		int c = accept(lfd, NULL, NULL);
		char buf[8192], path[256] = "?", key[128], tp[128], inst[64], line[700];
		const char *trace;
		size_t n = 0;
		int fd, ln;

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
		header(buf, "Idempotency-Key", key, sizeof(key));
		header(buf, "traceparent", tp, sizeof(tp));
		header(buf, "X-Instance", inst, sizeof(inst));
		/* 00-<trace id>-<span id>-01 */
		trace = strlen(tp) > 35 ? tp + 3 : "-";
		ln = snprintf(line, sizeof(line), "%s %s %.32s %s\n", path, key, trace, inst);
		if ((fd = open(sink_log, O_WRONLY | O_APPEND | O_CREAT, 0600)) >= 0) {
			if (write(fd, line, (size_t)ln) < 0)
				_exit(1);
			close(fd);
		}
		static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
		if (write(c, ok, sizeof(ok) - 1) < 0) {
			close(c);
			continue;
		}
		close(c);
	}
}

/* Requests to path: their count, whether all carried one key, and that key and trace. */
static int hits(const char *path, bool *same_key, char *key, char *trace)
{
	char *buf = NULL;
	int n = 0;

	*same_key = true;
	key[0] = trace[0] = '\0';
	if (util_read_file(sink_log, &buf, NULL) < 0)
		return 0;
	for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char p[256], k[128], t[64], i[64];

		if (sscanf(l, "%255s %127s %63s %63s", p, k, t, i) != 4 || strcmp(p, path))
			continue;
		if (n++ == 0) {
			strcpy(key, k);
			strcpy(trace, t);
		} else if (strcmp(key, k)) {
			*same_key = false;
		}
	}
	free(buf);
	return n;
}

static int count(const char *path)
{
	char k[128], t[64];
	bool same;

	return hits(path, &same, k, t);
}

static bool wait_hit(const char *path, int ms)
{
	for (uint64_t end = tl_ms() + (uint64_t)ms; tl_ms() < end; ms_sleep(50))
		if (count(path) > 0)
			return true;
	return false;
}

/* --- specs --- */

/* A workload of n steps named NAME/s1..sn, each a side effect on the sink made by
 * `lantern step`. Step slow lingers `secs` after its effect the first time it runs
 * anywhere (a marker file). */
static char *steps_spec(const char *name, int n, int slow, int secs, bool idempotent)
{
	char script[8192], spec[12288];
	size_t off = 0;

	off += (size_t)snprintf(script + off, sizeof(script) - off, "set -e; L=$LANTERN_CLI; ");
	for (int i = 1; i <= n; i++) {
		char linger[512] = "";

		if (i == slow)
			snprintf(linger, sizeof(linger), "; if [ ! -e %s/%s ]; then touch %s/%s; sleep %d; fi",
				 marks, name, marks, name, secs);
		off += (size_t)snprintf(script + off, sizeof(script) - off,
					"$L step s%d -- sh -c 'curl -sf -H \"Idempotency-Key: $LANTERN_IDEMPOTENCY_KEY\" "
					"-H \"traceparent: $TRACEPARENT\" -H \"X-Instance: $LANTERN_INSTANCE_ID\" "
					"http://127.0.0.1:%u/%s/s%d%s'; ", i, sink_port, name, i, linger);
	}
	snprintf(script + off, sizeof(script) - off, "echo all-done");
	snprintf(spec, sizeof(spec),
		 "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: %s\nspec:\n"
		 "  image_digest: host\n  isolation: trusted\n  network: allowlist_domain\n"
		 "  egress_rules:\n    - pattern: tcp://127.0.0.1:%u\n%s  limits:\n    memory: 64Mi\n"
		 "  command: [\"/bin/sh\", \"-c\"]\n  args:\n    - |\n      %s\n",
		 name, sink_port, idempotent ? "" : "  idempotent: false\n", script);
	return strdup(spec);
}

/* --- lantern-cp replicas and their operator API --- */

static json_t *api(int rep, const char *method, const char *path, json_t *body, long *code)
{
	char *out = NULL, *nl;
	char bf[600] = "/dev/null";
	json_t *j = NULL;

	if (body) {
		char *s = json_dumps(body, JSON_COMPACT);

		snprintf(bf, sizeof(bf), "%s/body-%d.json", N[0].dir, getpid());
		FILE *f = fopen(bf, "w");
		if (f) {
			fputs(s ? s : "{}", f);
			fclose(f);
		}
		free(s);
	}
	*code = 0;
	tl_sh(&out, NULL, "curl -s -m 10 -X %s -H 'Authorization: Bearer %s' --data-binary @%s "
	      "-w '\\n%%{http_code}' http://127.0.0.1:%u%s", method, OPTOK, bf, http_port[rep], path);
	if (out && (nl = strrchr(out, '\n'))) {
		*code = strtol(nl + 1, NULL, 10);
		*nl = '\0';
		j = json_loads(out, 0, NULL);
	}
	free(out);
	return j;
}

static bool cp_start(int rep)
{
	char cmd[4096];

	snprintf(cmd, sizeof(cmd),
		 "exec %s/lantern-cp --insecure --listen 127.0.0.1:%u --http 127.0.0.1:%u "
		 "--operator-token-file %s --database '%s' --heartbeat-interval 1 --metrics-interval 1 "
		 "--down-after 3 --ping-interval 1 --lease-ttl-ms %d --leader-ttl-ms 2000 --replica-id cp%d "
		 ">>%s 2>&1", N[0].build, grpc_port[rep], http_port[rep], optok, cpdb.url, TTL_MS, rep,
		 cp_log[rep]);
	cp_pid[rep] = fork();
	if (cp_pid[rep] == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	tl_child_track(cp_pid[rep], SIGKILL);
	for (int i = 0; i < 200; i++) {
		long code = 0;

		json_decref(api(rep, "GET", "/v1/control-plane", NULL, &code));
		if (code == 200)
			return true;
		ms_sleep(50);
	}
	return false;
}

static bool mint(char *id, size_t idlen, char *tok, size_t toklen)
{
	long code;
	json_t *in = json_pack("{s:s, s:s}", "tenant_id", "t1", "name", "lease");
	json_t *j = api(0, "POST", "/v1/data-planes", in, &code);
	bool ok = code == 201;

	if (ok) {
		snprintf(id, idlen, "%s", str(j, "id"));
		snprintf(tok, toklen, "%s", str(j, "bootstrap_token"));
	}
	json_decref(in);
	json_decref(j);
	return ok;
}

static const char *submit(int rep, const char *spec)
{
	static char id[4][64];
	static int k;
	char *out = id[k++ % 4];
	long code;
	json_t *in = json_pack("{s:s, s:s}", "tenant_id", "t1", "spec", spec);
	json_t *j = api(rep, "POST", "/v1/runs", in, &code);

	snprintf(out, 64, "%s", (code == 202 || code == 200) ? str(j, "id") : "");
	json_decref(in);
	json_decref(j);
	return out;
}

static json_t *run_get(int rep, const char *id)
{
	char path[128];
	long code;

	snprintf(path, sizeof(path), "/v1/runs/%s", id);
	return api(rep, "GET", path, NULL, &code);
}

static json_t *wait_run(int rep, const char *id, const char *want, int ms)
{
	char w[128];
	json_t *r = NULL;

	snprintf(w, sizeof(w), "|%s|", want);
	for (uint64_t t0 = tl_ms(); tl_ms() - t0 < (uint64_t)ms; ms_sleep(100)) {
		char pat[64];

		json_decref(r);
		r = run_get(rep, id);
		snprintf(pat, sizeof(pat), "|%s|", str(r, "status"));
		if (strstr(w, pat))
			return r;
	}
	return r;
}

static int node_of(const char *plane)
{
	for (int i = 0; i < 3; i++)
		if (!strcmp(plane_of[i], plane))
			return i;
	return -1;
}

/* --- nodes --- */

static const char *cg2_root(void)
{
	struct statfs sf;

	return statfs("/sys/fs/cgroup/unified", &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC ?
	       "/sys/fs/cgroup/unified" : "/sys/fs/cgroup";
}

/* The node is lost: lanternd, the run's shim and every workload of the node, SIGKILL. */
static void node_kill(int i, const char *local_run)
{
	char path[700], *pid = NULL;

	tl_daemon_stop(&N[i], SIGKILL);
	snprintf(path, sizeof(path), "%s/runs/%s/shim.pid", N[i].state, local_run);
	if (util_read_file(path, &pid, NULL) == 0 && atoi(pid) > 0)
		kill(atoi(pid), SIGKILL);
	free(pid);
	snprintf(path, sizeof(path), "%s/%s/cgroup.kill", cg2_root(), N[i].cgroot);
	util_write_str(path, "1");
}

static bool node_start(int i)
{
	if (tl_daemon_start(&N[i], node_flags[i]) < 0)
		return false;
	for (uint64_t t0 = tl_ms(); tl_ms() - t0 < 10000; ms_sleep(100)) {
		long code;
		char path[128];
		json_t *p;
		bool ok;

		snprintf(path, sizeof(path), "/v1/data-planes/%s", plane_of[i]);
		p = api(0, "GET", path, NULL, &code);
		ok = json_is_true(json_object_get(p, "connected")) && json_is_true(json_object_get(p, "live"));
		json_decref(p);
		if (ok)
			return true;
	}
	return false;
}

/* The local run a node made for a control-plane run: its newest. */
static void local_run(int i, char *id, size_t len)
{
	if (!tl_newest_run(&N[i], id, len, NULL, 0))
		snprintf(id, len, "?");
}

/* step_completed records per step id in the store's copy of key; -1 if unreadable. */
struct completions {
	int n[8];
};

static int completion_cb(void *arg, const struct journal_record *rec)
{
	struct completions *c = arg;
	json_t *p;
	int k;

	if (rec->type != JOURNAL_STEP_COMPLETED)
		return 0;
	p = json_loadb(rec->payload, rec->len, 0, NULL);
	if (sscanf(json_string_value(json_object_get(p, "step_id")) ?: "", "s%d", &k) == 1 && k > 0 && k < 8)
		c->n[k]++;
	json_decref(p);
	return 0;
}

static int store_completions(const char *key, struct completions *c)
{
	struct journal_scan info;
	struct lerr e;
	uint8_t *buf;
	size_t len;
	int err;

	memset(c, 0, sizeof(*c));
	if (journal_store_read(store_url, key, &buf, &len, &e) < 0)
		return -1;
	err = journal_scan_buf(key, buf, len, completion_cb, c, &info, &e);
	free(buf);
	return err < 0 || info.torn_bytes ? -1 : 0;
}

static char *file_text(const char *path)
{
	char *buf = NULL;

	util_read_file(path, &buf, NULL);
	return buf;
}

/* --- the scenarios --- */

static void test_queue_reasons(void)
{
	char *big = steps_spec("big", 1, 0, 0, true), *hostile;
	const char *b, *h;
	json_t *x, *y;

	/* more memory than any node has for runs (--allocatable-memory 1 GiB) */
	big = realloc(big, strlen(big) + 32);
	{
		char *m = strstr(big, "memory: 64Mi");
		memcpy(m, "memory: 4Gi ", 12);
	}
	hostile = strdup("apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: hostile\nspec:\n"
			 "  image_digest: test@sha256:1111111111111111111111111111111111111111111111111111111111111111\n"
			 "  isolation: hostile\n  network: none\n  command: [\"/bin/true\"]\n");
	b = submit(1, big);
	h = submit(1, hostile);
	ms_sleep(1500);
	x = run_get(0, b);
	y = run_get(1, h);
	tap_ok(!strcmp(str(x, "status"), "queued") && tl_has(str(x, "why_queued"), "no node has room") &&
	       tl_has(str(x, "why_queued"), "memory") && !strcmp(str(y, "status"), "queued") &&
	       tl_has(str(y, "why_queued"), "isolation class hostile"),
	       "a run that fits nowhere waits and says why (%s), as does one no node can run (%s)",
	       str(x, "why_queued"), str(y, "why_queued"));
	json_decref(x);
	json_decref(y);
	{
		char path[128];
		long code;

		snprintf(path, sizeof(path), "/v1/runs/%s/cancel", b);
		json_decref(api(0, "POST", path, NULL, &code));
		snprintf(path, sizeof(path), "/v1/runs/%s/cancel", h);
		json_decref(api(0, "POST", path, NULL, &code));
	}
	free(big);
	free(hostile);
}

/* A run of five steps; its node is lost while step 3 lingers. */
static void test_node_loss(void)
{
	char *spec = steps_spec("loss", 5, 3, 30, true), local[64], key[5][128], trace[5][64],
	     path[700], *out = NULL;
	const char *id = submit(0, spec);
	int a = -1, b = -1, n[5];
	bool same[5], ok;
	uint64_t t_kill, t_resumed = 0;
	json_t *x;

	free(spec);
	if (!wait_hit("/loss/s3", 20000)) {
		for (int i = 0; i < 4; i++)
			tap_ok(false, "node loss: step 3 never ran (run %s)", id);
		return;
	}
	x = run_get(0, id);
	a = node_of(str(x, "plane_id"));
	json_decref(x);
	local_run(a, local, sizeof(local));
	t_kill = tl_ms();
	node_kill(a, local);
	for (; tl_ms() - t_kill < TTL_MS + 10000; ms_sleep(100)) {
		x = run_get(1, id);
		b = node_of(str(x, "plane_id"));
		if (b >= 0 && b != a && (!strcmp(str(x, "status"), "running") ||
					 !strcmp(str(x, "status"), "succeeded"))) {
			t_resumed = tl_ms();
			json_decref(x);
			break;
		}
		json_decref(x);
	}
	tap_ok(t_resumed && t_resumed - t_kill < TTL_MS + 5000,
	       "node loss: the run resumes on node %d within lease TTL + 5 s (%llu ms after node %d was "
	       "killed during step 3)", b, (unsigned long long)(t_resumed - t_kill), a);
	x = wait_run(1, id, "succeeded|failed", 30000);
	for (int i = 0; i < 5; i++) {
		char p[64];

		snprintf(p, sizeof(p), "/loss/s%d", i + 1);
		n[i] = hits(p, &same[i], key[i], trace[i]);
	}
	tap_ok(!strcmp(str(x, "status"), "succeeded") && n[0] == 1 && n[1] == 1 && n[2] >= 1 && n[2] <= 2 &&
	       same[2] && strlen(key[2]) == 64 && n[3] == 1 && n[4] == 1 && json_integer_value(json_object_get(x, "epoch")) == 2,
	       "node loss: the run succeeds at epoch %lld; steps 1-2 not re-run (%d, %d), step 3 %d times "
	       "with %s key, steps 4-5 once (%d, %d)", (long long)json_integer_value(json_object_get(x, "epoch")),
	       n[0], n[1], n[2], same[2] ? "one" : "DIFFERENT", n[3], n[4]);
	json_decref(x);
	ok = true;
	for (int i = 1; i < 5; i++)
		ok = ok && trace[i][0] && !strcmp(trace[i], trace[0]);
	{
		/* the resumed run kept its run id on the new node: the same journal and trace */
		char *verify_store = NULL, *verify_local = NULL;
		int rs = tl_sh(&verify_store, NULL, "%s/lantern journal verify --store '%s' %s", N[0].build,
			       store_url, id);
		int rl = b >= 0 ? tl_sh(&verify_local, NULL, "%s/lantern journal verify --state-dir %s %s",
					N[0].build, N[b].state, local) : -1;
		const char *hs = verify_store ? strstr(verify_store, "head ") : NULL;
		const char *hl = verify_local ? strstr(verify_local, "head ") : NULL;

		/* the receipt lantern-cp countersigned covers the whole journal: both nodes' records */
		char path[128], rf[600], *rv = NULL;
		long code;
		json_t *rc;
		int rr = -1;

		snprintf(path, sizeof(path), "/v1/runs/%s/receipt", id);
		rc = api(0, "GET", path, NULL, &code);
		if (code == 200 && rc && b >= 0) {
			char *txt = json_dumps(rc, JSON_COMPACT);

			snprintf(rf, sizeof(rf), "%s", tl_file(&N[0], "loss-receipt.json", "%s", txt ? txt : ""));
			free(txt);
			rr = tl_sh(&rv, NULL, "%s/lantern receipt verify %s --journal %s/runs/%s/journal --keys "
				   "http://127.0.0.1:%u/.well-known/lantern-receipts", N[0].build, rf, N[b].state,
				   local, http_port[0]);
		}
		json_decref(rc);
		tap_ok(ok && rs == 0 && rl == 0 && hs && hl && !strcmp(hs, hl) && rr == 0,
		       "node loss: one trace id for every step (%s), the same run id on the new node, the store's "
		       "copy verifies with the new node's head (%s), and the countersigned receipt covers the "
		       "whole journal (%s)", trace[0], tl_oneline(verify_store), tl_oneline(rv));
		free(rv);
		free(verify_store);
		free(verify_local);
	}
	/* the lost node comes back: it does not go on with its copy (the store would refuse
	 * its appends; identity, asked first, cannot reach the control plane yet), and the
	 * control plane keeps the new node's outcome */
	ok = node_start(a);
	snprintf(path, sizeof(path), "%s/runs/%s/run.json", N[a].state, local);
	for (uint64_t t0 = tl_ms(); ok && tl_ms() - t0 < 5000; ms_sleep(100)) {
		free(out);
		out = file_text(path);
		if (tl_has(out, "\"status\":\"failed\""))
			break;
	}
	x = run_get(0, id);
	tap_ok(ok && tl_has(out, "\"status\":\"failed\"") && count("/loss/s4") == 1 &&
	       !strcmp(str(x, "status"), "succeeded") && json_integer_value(json_object_get(x, "epoch")) == 2,
	       "node loss: the lost node, restarted, does not run its copy again and its end changes "
	       "nothing (%s)", tl_oneline(out));
	json_decref(x);
	free(out);
}

/* idempotent: false with a step in flight, and a store copy that cannot be read: the
 * run fails with the reason, never restarted from scratch. */
static void test_not_resumable(void)
{
	char *spec = steps_spec("noidem", 3, 2, 30, false), local[64];
	const char *id;
	int a;
	json_t *x;

	id = submit(0, spec);
	free(spec);
	if (wait_hit("/noidem/s2", 20000)) {
		x = run_get(0, id);
		a = node_of(str(x, "plane_id"));
		json_decref(x);
		local_run(a, local, sizeof(local));
		node_kill(a, local);
		x = wait_run(1, id, "failed|succeeded", TTL_MS + 20000);
		tap_ok(!strcmp(str(x, "status"), "failed") && tl_has(str(x, "detail"), "idempotent is false") &&
		       count("/noidem/s2") == 1 && count("/noidem/s3") == 0,
		       "idempotent: false, step 2 in flight when its node was lost: failed with the reason (%s)",
		       str(x, "detail"));
		json_decref(x);
		node_start(a);
	} else {
		tap_ok(false, "idempotent: false: step 2 never ran");
	}

	spec = steps_spec("damaged", 3, 2, 30, true);
	id = submit(0, spec);
	free(spec);
	if (wait_hit("/damaged/s2", 20000)) {
		char *o = NULL;

		/* a flipped byte in record 2 (not the last): the copy is corrupt */
		tl_sh(&o, NULL, "psql -At '%s' -c \"UPDATE lantern_journal_records SET rec = overlay(rec "
		      "placing decode('ff', 'hex') from 40 for 1) WHERE run_key = '%s' AND seq = 2\"",
		      store_url, id);
		free(o);
		x = run_get(0, id);
		a = node_of(str(x, "plane_id"));
		json_decref(x);
		local_run(a, local, sizeof(local));
		node_kill(a, local);
		x = wait_run(1, id, "failed|succeeded", TTL_MS + 20000);
		tap_ok(!strcmp(str(x, "status"), "failed") && tl_has(str(x, "detail"), "cannot be used") &&
		       tl_has(str(x, "detail"), "not restarted from scratch") && count("/damaged/s1") == 1,
		       "a damaged store copy: the run fails with the reason, step 1 not run again (%s)",
		       str(x, "detail"));
		json_decref(x);
		node_start(a);
	} else {
		tap_ok(false, "damaged store copy: step 2 never ran");
	}
}

/* lanternd of the run's node is stopped (SIGSTOP) past its lease, then continued. */
static void test_partition(void)
{
	char *spec = steps_spec("part", 5, 3, 4, true), local[64], path[700], *out = NULL, *log;
	const char *id = submit(0, spec);
	int a, b = -1, twice = 0;
	struct completions sc;
	bool fenced = false, gone = false;
	json_t *x;
	pid_t wpid = 0;

	free(spec);
	if (!wait_hit("/part/s3", 20000)) {
		tap_ok(false, "partition: step 3 never ran");
		tap_ok(false, "partition: not reached");
		return;
	}
	x = run_get(0, id);
	a = node_of(str(x, "plane_id"));
	json_decref(x);
	local_run(a, local, sizeof(local));
	snprintf(path, sizeof(path), "%s/runs/%s/pid", N[a].state, local);
	out = file_text(path);
	wpid = out ? atoi(out) : 0;
	free(out);
	out = NULL;
	kill(N[a].daemon, SIGSTOP);
	x = wait_run(1, id, "succeeded|failed", TTL_MS + 30000);
	b = node_of(str(x, "plane_id"));
	tap_ok(!strcmp(str(x, "status"), "succeeded") && b >= 0 && b != a &&
	       json_integer_value(json_object_get(x, "epoch")) == 2,
	       "partition: node %d's lanternd stopped past its lease: the run continued and succeeded on "
	       "node %d at epoch %lld", a, b, (long long)json_integer_value(json_object_get(x, "epoch")));
	json_decref(x);
	kill(N[a].daemon, SIGCONT);
	snprintf(path, sizeof(path), "%s/runs/%s/run.json", N[a].state, local);
	for (uint64_t t0 = tl_ms(); tl_ms() - t0 < 8000 && !(fenced && gone); ms_sleep(100)) {
		free(out);
		out = file_text(path);
		fenced = tl_has(out, "\"fenced\":true") && !tl_has(out, "\"status\":\"running\"");
		gone = wpid <= 0 || (kill(wpid, 0) < 0 && errno == ESRCH);
	}
	log = file_text(N[a].log);
	/* the store's copy is the record: each step completed once, under one epoch */
	if (store_completions(id, &sc) < 0)
		twice = -1;
	for (int i = 1; i <= 5 && twice >= 0; i++)
		twice += sc.n[i] != 1;
	x = run_get(0, id);
	tap_ok(fenced && gone && tl_has(log, "its appends are refused (fenced)") && twice == 0 &&
	       count("/part/s3") == 2 && count("/part/s4") == 1 && !strcmp(str(x, "status"), "succeeded") &&
	       node_of(str(x, "plane_id")) == b,
	       "partition: continued, node %d has its appends refused by the store, fences its copy "
	       "(stopped: %s); the store's journal holds each step completed once (%d not), and the "
	       "control plane kept node %d's outcome", a, gone ? "yes" : "NO", twice, b);
	json_decref(x);
	free(log);
	free(out);
}

/* Standalone runs on node C (replicated as well): the store away a moment, then past
 * its bound. */
static void test_store_outage(void)
{
	char *spec = steps_spec("brief", 3, 2, 1, true), local[64], *o = NULL, *e = NULL, why[256];
	const char *f = tl_file(&N[2], "brief.yaml", "%s", spec);
	uint64_t t2 = 0, t3;
	pid_t pid;
	int st = -1;

	free(spec);
	pid = fork();
	if (pid == 0) {
		char *so = NULL;
		_exit(tl_lantern(&N[2], &so, NULL, "run %s", f));
	}
	if (wait_hit("/brief/s2", 20000)) {
		t2 = tl_ms();
		tl_pg_halt(&store);
		ms_sleep(1500);
		tl_pg_resume(&store);
	}
	waitpid(pid, &st, 0);
	wait_hit("/brief/s3", 5000);
	t3 = tl_ms();
	local_run(2, local, sizeof(local));
	{
		char path[700];
		uint8_t *copy = NULL;
		char *file = NULL;
		size_t clen = 0, flen = 0;
		struct lerr le = { 0 };
		bool same;

		snprintf(path, sizeof(path), "%s/runs/%s/journal", N[2].state, local);
		same = journal_store_read(store_url, local, &copy, &clen, &le) == 0 &&
		       util_read_file(path, &file, &flen) == 0 && clen <= flen && !memcmp(copy, file, clen);
		/* after the records, only what the journal preallocated (zeros) */
		for (size_t i = clen; same && i < flen; i++)
			same = !file[i];
		tap_ok(t2 && WIFEXITED(st) && WEXITSTATUS(st) == 0 && t3 - t2 >= 1500 && same,
		       "store away for 1.5 s: the step's answer waits (step 3 began %llu ms after step 2's "
		       "effect), the run succeeds, the store's copy equals the file (%zu bytes; %s)",
		       (unsigned long long)(t3 - t2), clen, le.msg);
		free(copy);
		free(file);
	}

	spec = steps_spec("bound", 3, 2, 1, true);
	f = tl_file(&N[2], "bound.yaml", "%s", spec);
	free(spec);
	pid = fork();
	if (pid == 0) {
		char *so = NULL;
		_exit(tl_lantern(&N[2], &so, NULL, "run %s", f));
	}
	if (wait_hit("/bound/s2", 20000)) {
		tl_pg_halt(&store);
		ms_sleep(2500);
		/* while the store is known away, nothing new starts */
		tl_lantern(&N[2], &o, &e, "run %s", tl_file(&N[2], "other.yaml", "%s",
							   "apiVersion: lantern.dev/v1\nkind: AgentSpec\n"
							   "metadata:\n  name: other\nspec:\n  image_digest: host\n"
							   "  isolation: trusted\n  network: none\n"
							   "  command: [\"/bin/true\"]\n"));
		ms_sleep(STORE_BOUND_S * 1000 + 1000);
	}
	waitpid(pid, &st, 0);
	local_run(2, local, sizeof(local));
	{
		char path[700], *rj;
		uint8_t *copy = NULL;
		char *file = NULL;
		size_t clen = 0, flen = 0;
		struct lerr le = { 0 };
		struct journal_scan si, fi;
		bool prefix;

		snprintf(path, sizeof(path), "%s/runs/%s/run.json", N[2].state, local);
		rj = file_text(path);
		tl_pg_resume(&store);
		snprintf(path, sizeof(path), "%s/runs/%s/journal", N[2].state, local);
		prefix = journal_store_read(store_url, local, &copy, &clen, &le) == 0 &&
			 util_read_file(path, &file, &flen) == 0 && clen < flen && !memcmp(copy, file, clen) &&
			 journal_scan_buf("store", copy, clen, NULL, NULL, &si, &le) == 0 && !si.torn_bytes &&
			 journal_scan(path, NULL, NULL, &fi, &le) == 0 && si.records < fi.records;
		snprintf(why, sizeof(why), "%s", tl_oneline(e));
		tap_ok(tl_has(rj, "\"status\":\"failed\"") && tl_has(rj, "journal store unreachable") &&
		       tl_has(e, "cannot be replicated") && prefix && count("/bound/s3") == 0,
		       "store away past its %d s bound: the run fails with the reason, new runs are refused "
		       "(%s), the store holds a verified prefix (%llu of %llu records)", STORE_BOUND_S, why,
		       (unsigned long long)si.records, (unsigned long long)fi.records);
		free(rj);
		free(copy);
		free(file);
	}
	free(o);
	free(e);
	/* the node takes runs again once it sees the store back */
	for (uint64_t t0 = tl_ms(); tl_ms() - t0 < 15000; ms_sleep(200)) {
		o = e = NULL;
		st = tl_lantern(&N[2], &o, &e, "run %s", tl_file(&N[2], "again.yaml", "%s",
								 "apiVersion: lantern.dev/v1\nkind: AgentSpec\n"
								 "metadata:\n  name: again\nspec:\n  image_digest: host\n"
								 "  isolation: trusted\n  network: none\n"
								 "  command: [\"/bin/true\"]\n"));
		free(o);
		free(e);
		if (st == 0)
			break;
	}
}

/* 100 runs over three nodes; the leader replica is killed a third of the way in. */
static void test_leader_burst(void)
{
	char ids[BURST][64], *spec_fmt =
		"apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: burst%d\nspec:\n"
		"  image_digest: host\n  isolation: trusted\n  network: allowlist_domain\n"
		"  egress_rules:\n    - pattern: tcp://127.0.0.1:%u\n  limits:\n    memory: 32Mi\n"
		"  command: [\"/bin/sh\", \"-c\", \"curl -sf http://127.0.0.1:%u/burst/%d; sleep 0.3\"]\n";
	int leader = -1, survivor, done = 0, succeeded = 0, once = 0, placed_once = 0, nodes[3] = { 0 };
	char again[400] = "", again_id[80] = "";
	long code;
	json_t *c = api(0, "GET", "/v1/control-plane", NULL, &code), *c2;
	int64_t epoch0 = json_integer_value(json_object_get(c, "leader_epoch"));

	leader = !strcmp(str(c, "leader"), "cp1") ? 1 : 0;
	survivor = 1 - leader;
	json_decref(c);
	for (int i = 0; i < BURST; i++) {
		char spec[2048];

		snprintf(spec, sizeof(spec), spec_fmt, i, sink_port, sink_port, i);
		snprintf(ids[i], sizeof(ids[i]), "%s", submit(survivor, spec));
		if (i == BURST / 3) {
			tl_child_stop(cp_pid[leader], SIGKILL);
			cp_pid[leader] = 0;
		}
	}
	for (uint64_t t0 = tl_ms(); tl_ms() - t0 < 120000 && done < BURST; ms_sleep(500)) {
		done = 0;
		for (int i = 0; i < BURST; i++) {
			json_t *x = run_get(survivor, ids[i]);
			const char *st = str(x, "status");

			done += !strcmp(st, "succeeded") || !strcmp(st, "failed") || !strcmp(st, "cancelled");
			json_decref(x);
		}
	}
	for (int i = 0; i < BURST; i++) {
		json_t *x = run_get(survivor, ids[i]);
		char p[64];
		int n;

		succeeded += !strcmp(str(x, "status"), "succeeded");
		placed_once += json_integer_value(json_object_get(x, "epoch")) == 1;
		if (json_integer_value(json_object_get(x, "epoch")) != 1 && !again[0]) {
			snprintf(again, sizeof(again), "; %s at epoch %lld: %s", ids[i],
				 (long long)json_integer_value(json_object_get(x, "epoch")), str(x, "detail"));
			snprintf(again_id, sizeof(again_id), "%s", ids[i]);
		}
		n = node_of(str(x, "plane_id"));
		if (n >= 0)
			nodes[n]++;
		snprintf(p, sizeof(p), "/burst/%d", i);
		once += count(p) == 1;
		json_decref(x);
	}
	c2 = api(survivor, "GET", "/v1/control-plane", NULL, &code);
	tap_ok(succeeded == BURST && once == BURST,
	       "leader killed during a burst of %d runs: %d succeeded, %d ran exactly once (nodes %d/%d/%d)",
	       BURST, succeeded, once, nodes[0], nodes[1], nodes[2]);
	tap_ok(placed_once == BURST && json_is_true(json_object_get(c2, "leads")) &&
	       json_integer_value(json_object_get(c2, "leader_epoch")) > epoch0,
	       "no run was placed twice (%d of %d placed once), and replica cp%d took over as leader at "
	       "epoch %lld (was %lld)%s", placed_once, BURST, survivor,
	       (long long)json_integer_value(json_object_get(c2, "leader_epoch")), (long long)epoch0, again);
	if (again_id[0]) {
		char *log = NULL;

		/* why it was placed again, in the replicas' and nodes' words */
		tl_sh(&log, NULL, "grep -h '%s' %s/lantern-cp*.log %s/lanternd.log %s/lanternd.log %s/lanternd.log "
		      "| tail -n 20", again_id, N[0].dir, N[0].dir, N[1].dir, N[2].dir);
		tap_diag("%s", log ? log : "");
		free(log);
	}
	json_decref(c2);
}

static void setup(void)
{
	char tok[3][80], db[400];
	char *o = NULL;
	bool ok = true;
	int lfd;

	snprintf(optok, sizeof(optok), "%s", tl_file(&N[0], "operator.token", "%s\n", OPTOK));
	snprintf(marks, sizeof(marks), "%s/marks", N[0].dir);
	util_mkdir_p(marks, 0777);
	snprintf(sink_log, sizeof(sink_log), "%s/sink.log", N[0].dir);
	lfd = tl_tcp_listen("127.0.0.1", &sink_port);
	{
		pid_t s = fork();
		if (s == 0)
			sink_serve(lfd);
		tl_child_track(s, SIGKILL);
		close(lfd);
	}
	ok = tl_pg_start(&cpdb, "leasecp", false) == 0 && tl_pg_start(&store, "leasestore", false) == 0;
	if (ok) {
		tl_psql(&store, &o, "CREATE DATABASE journal");
		free(o);
		snprintf(store_url, sizeof(store_url), "postgres://lantern@127.0.0.1:%u/journal", store.port);
	}
	for (int r = 0; ok && r < 2; r++) {
		grpc_port[r] = free_port();
		http_port[r] = free_port();
		snprintf(cp_log[r], sizeof(cp_log[r]), "%s/lantern-cp%d.log", N[0].dir, r);
		ok = cp_start(r);
		/* cp0 leads: it starts first */
		if (r == 0)
			ms_sleep(300);
	}
	for (int i = 0; ok && i < 3; i++)
		ok = mint(plane_of[i], sizeof(plane_of[i]), tok[i], sizeof(tok[i]));
	for (int i = 0; ok && i < 3; i++) {
		const char *tf = tl_file(&N[i], "bootstrap.token", "%s\n", tok[i]);

		/* node C talks to the other replica first: a replica delivers to planes whose
		 * streams another one holds */
		snprintf(node_flags[i], sizeof(node_flags[i]),
			 "--control-plane 127.0.0.1:%u,127.0.0.1:%u --insecure --tenant t1 "
			 "--bootstrap-token-file %s --max-runs 8 --reconnect-max 1 --journal-store %s "
			 "--journal-store-timeout %d --allocatable-memory 1073741824",
			 grpc_port[i == 2], grpc_port[i != 2], tf, store_url, STORE_BOUND_S);
		ok = node_start(i);
	}
	snprintf(db, sizeof(db), "%s", ok ? "" : "(see the logs)");
	{
		long code;
		json_t *p = api(1, "GET", "/v1/data-planes", NULL, &code), *c = api(1, "GET", "/v1/control-plane",
										    NULL, &code);
		json_t *first = json_array_get(json_object_get(p, "data_planes"), 0);

		tap_ok(ok && str(first, "journal_store")[0] &&
		       !strcmp(str(c, "leader"), "cp0"),
		       "two lantern-cp replicas (leader %s) and three lanternd replicating to one journal "
		       "store (%s) %s", str(c, "leader"), str(first, "journal_store"), db);
		json_decref(p);
		json_decref(c);
	}
}

int main(void)
{
	const char *why = tl_env_missing();

	setvbuf(stdout, NULL, _IOLBF, 0);
	tap_plan(POINTS);
	if (why) {
		for (int i = 0; i < POINTS; i++)
			tap_skip(why, "lease");
		return tap_failures ? 1 : 0;
	}
	for (int i = 0; i < 3; i++)
		tl_env_init(&N[i], NN[i]);
	setup();
	if (tap_failures) {
		while (tap_count < POINTS)
			tap_ok(false, "not reached: set-up failed");
		return 1;
	}
	test_queue_reasons();
	test_node_loss();
	test_not_resumable();
	test_partition();
	test_store_outage();
	test_leader_burst();
	while (tap_count < POINTS)
		tap_ok(false, "not reached");
	return tap_failures ? 1 : 0;
}
