/* identity_cp_test: identity under a control plane. One lantern-cp (plaintext gRPC on
 * loopback, SQLite) and two lanternd registered with it, in regions eu-west-1 and
 * us-east-1. Covers the node key and region sent at Register and published, an
 * assigned run's identity token signed by lantern-cp (with the claims it owns) while a
 * local run on the same node is node-signed, the receipt sent with the completion,
 * checked against the node's registered key, countersigned and served, both
 * signatures verified by our verifier and by Node's crypto, a changed byte failing,
 * and placement by spec.preferred_regions (a preferred region first, elsewhere only
 * when the spec allows). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/util.h"

#define OPTOK  "identity-cp-test-operator-token-0123"
#define POINTS 11

static struct tl_env N[2];
static const char *const REGION[2] = { "eu-west-1", "us-east-1" };
static char plane_of[2][64], out_dir[400], helper[512], cp_log[512];
static uint16_t grpc_port, http_port;
static pid_t cp_pid;

static uint16_t free_port(void)
{
	uint16_t p = 0;
	int fd = tl_tcp_listen("127.0.0.1", &p);

	if (fd >= 0)
		close(fd);
	return p;
}

/* curl to lantern-cp's HTTP API (with the operator token unless path is public). */
static json_t *api(const char *method, const char *path, json_t *body, long *code)
{
	char *out = NULL, *nl;
	const char *bf = "/dev/null";
	json_t *j = NULL;

	if (body) {
		char *s = json_dumps(body, JSON_COMPACT);

		bf = tl_file(&N[0], "body.json", "%s", s ? s : "{}");
		free(s);
	}
	*code = 0;
	tl_sh(&out, NULL, "curl -s -m 10 -X %s -H 'Authorization: Bearer %s' --data-binary @%s "
	      "-w '\\n%%{http_code}' http://127.0.0.1:%u%s", method, OPTOK, bf, http_port, path);
	if (out && (nl = strrchr(out, '\n'))) {
		*code = strtol(nl + 1, NULL, 10);
		*nl = '\0';
		j = json_loads(out, 0, NULL);
	}
	free(out);
	return j;
}

static const char *str(json_t *j, const char *k)
{
	return json_string_value(json_object_get(j, k)) ?: "";
}

static bool cp_start(void)
{
	char cmd[2048], tokf[400], db[400];

	snprintf(tokf, sizeof(tokf), "%s/optok", N[0].dir);
	snprintf(db, sizeof(db), "%s/cp.db", N[0].dir);
	snprintf(cp_log, sizeof(cp_log), "%s/cp.log", N[0].dir);
	tl_file(&N[0], "optok", OPTOK "\n");
	snprintf(cmd, sizeof(cmd), "exec %s/lantern-cp --listen 127.0.0.1:%u --http 127.0.0.1:%u --insecure "
		 "--operator-token-file %s --database %s --heartbeat-interval 1 --metrics-interval 1 "
		 "--ping-interval 1 --down-after 30 --lease-ttl-ms 60000 >>%s 2>&1", N[0].build, grpc_port, http_port, tokf, db, cp_log);
	cp_pid = fork();
	if (cp_pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	tl_child_track(cp_pid, SIGTERM);
	for (int i = 0; i < 200; i++) {
		long code = 0;
		json_t *j = api("GET", "/v1/data-planes", NULL, &code);

		json_decref(j);
		if (code == 200)
			return true;
		usleep(50000);
	}
	return false;
}

static bool node_start(int i)
{
	long code;
	json_t *in = json_pack("{s:s, s:s}", "tenant_id", "acme", "name", REGION[i]);
	json_t *j = api("POST", "/v1/data-planes", in, &code);
	char extra[1200];
	const char *tf;

	json_decref(in);
	if (code != 201) {
		json_decref(j);
		return false;
	}
	snprintf(plane_of[i], sizeof(plane_of[i]), "%s", str(j, "id"));
	tf = tl_file(&N[i], "bootstrap", "%s", str(j, "bootstrap_token"));
	snprintf(extra, sizeof(extra), "--control-plane 127.0.0.1:%u --insecure --tenant acme "
		 "--bootstrap-token-file %s --region %s --identity-dir %s/ids --reconnect-max 1 "
		 "--identity-sign-timeout 10000 --token-ttl 60", grpc_port, tf,
		 REGION[i], N[i].dir);
	json_decref(j);
	return tl_daemon_start(&N[i], extra) == 0;
}

static bool connected(int i)
{
	char path[128];
	long code;
	json_t *p;
	bool ok;

	snprintf(path, sizeof(path), "/v1/data-planes/%s", plane_of[i]);
	p = api("GET", path, NULL, &code);
	ok = json_is_true(json_object_get(p, "connected"));
	json_decref(p);
	return ok;
}

/* Submits an AgentSpec (YAML file); returns the run id (static) or "". */
static const char *submit(const char *spec_file)
{
	static char id[4][64];
	static int k;
	char *text = NULL;
	size_t len;
	long code;
	json_t *in, *j;

	k = (k + 1) % 4;
	id[k][0] = '\0';
	if (util_read_file(spec_file, &text, &len) < 0)
		return id[k];
	in = json_pack("{s:s, s:s}", "tenant_id", "acme", "spec", text);
	j = api("POST", "/v1/runs", in, &code);
	if (code == 202)
		snprintf(id[k], sizeof(id[k]), "%s", str(j, "id"));
	json_decref(in);
	json_decref(j);
	free(text);
	return id[k];
}

static json_t *wait_run(const char *id, const char *want, int ms)
{
	char path[128];
	long code;

	snprintf(path, sizeof(path), "/v1/runs/%s", id);
	for (int i = 0; i < ms / 100; i++) {
		json_t *j = api("GET", path, NULL, &code);

		if (!strcmp(str(j, "status"), want) || (strcmp(want, "queued") && strcmp(want, "running") &&
							 (!strcmp(str(j, "status"), "failed") ||
							  !strcmp(str(j, "status"), "succeeded"))))
			return j;
		json_decref(j);
		usleep(100000);
	}
	return api("GET", path, NULL, &code);
}

static const char *spec_file(const char *name, const char *meta, const char *regions)
{
	char fields[512];
	const char *f;

	snprintf(fields, sizeof(fields), "  image_digest: host\n  isolation: trusted\n  network: none\n"
		 "  limits: {timeout: 60s}\n%s%s%s", regions ? "  preferred_regions: [" : "", regions ? regions : "",
		 regions ? "]\n" : "");
	f = tl_spec(&N[0], name, meta, "cp $LANTERN_IDENTITY_TOKEN OUTDIR/NAME.token", "%s", fields);
	tl_sh(NULL, NULL, "sed -i 's|OUTDIR|%s|; s|NAME|%s|' %s", out_dir, name, f);
	return f;
}

static char *slurp(const char *path)
{
	char *b = NULL;

	util_read_file(path, &b, NULL);
	return b;
}

static void scenario(void)
{
	char path[600], url[256], *out = NULL, *err = NULL, rid[64];
	json_t *j, *keys, *x;
	long code;
	bool ok;
	int rc;

	/* 1: registration carries the node key and region */
	ok = node_start(0) && node_start(1);
	for (int i = 0; ok && i < 100 && !(connected(0) && connected(1)); i++)
		usleep(100000);
	ok = ok && connected(0) && connected(1);
	snprintf(path, sizeof(path), "/v1/data-planes/%s", plane_of[1]);
	j = api("GET", path, NULL, &code);
	tap_ok(ok && !strcmp(str(j, "region"), "us-east-1") && strlen(str(j, "node_key")) == 43,
	       "nodes register with their region and node key: %s", str(j, "region"));
	json_decref(j);

	/* 2: the published keys */
	j = api("GET", "/.well-known/lantern-receipts", NULL, &code);
	keys = json_object_get(j, "keys");
	x = api("GET", "/.well-known/lantern-agent-identity", NULL, &code);
	tap_ok(json_array_size(keys) == 3 && !strcmp(str(x, "algorithm"), "Ed25519") && str(x, "publicKey")[0],
	       "lantern-cp publishes its token key (agent-identity document, JWKS) and its receipt key with "
	       "every node's at /.well-known/lantern-receipts (%zu keys)", json_array_size(keys));
	json_decref(j);
	json_decref(x);

	/* 3: placement in a preferred region, a token signed by lantern-cp */
	snprintf(rid, sizeof(rid), "%s", submit(spec_file("cp-us", NULL, "us-east-1")));
	j = wait_run(rid, "succeeded", 30000);
	tap_ok(!strcmp(str(j, "status"), "succeeded") && !strcmp(str(j, "plane_id"), plane_of[1]),
	       "a run preferring us-east-1 is placed on the us-east-1 node and succeeds: %s %s", str(j, "status"),
	       str(j, "detail"));
	json_decref(j);
	snprintf(path, sizeof(path), "%s/cp-us.token", out_dir);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/.well-known/jwks.json", http_port);
	rc = tl_lantern(&N[1], &out, &err, "identity verify %s --jwks %s --json", path, url);
	x = json_loads(out ? out : "", 0, NULL);
	tap_ok(rc == 0 && !strcmp(str(x, "run_id"), rid) && !strcmp(str(x, "tenant_id"), "acme") &&
	       !strcmp(str(x, "agent_version_id"), "cp-us") && !strcmp(str(x, "typ"), "agent-instance") &&
	       tl_sh(NULL, NULL, "curl -s http://127.0.0.1:%u/.well-known/jwks.json > %s/cp-jwks.json && "
		     "node %s %s %s/cp-jwks.json >/dev/null", http_port, out_dir, helper, path, out_dir) == 0,
	       "the assigned run's token is signed by lantern-cp with the run's platform id, tenant and "
	       "agent version; ours and Node's crypto verify it with the control plane's JWKS: %s",
	       tl_oneline(err));
	json_decref(x);
	free(out);
	free(err);
	out = err = NULL;

	/* 4: the receipt, countersigned */
	snprintf(path, sizeof(path), "/v1/runs/%s/receipt", rid);
	for (int i = 0; i < 50; i++) {
		j = api("GET", path, NULL, &code);
		if (code == 200)
			break;
		json_decref(j);
		j = NULL;
		usleep(100000);
	}
	{
		char *s = json_dumps(j, JSON_COMPACT), rf[500], *nout = NULL;

		snprintf(rf, sizeof(rf), "%s/cp-receipt.json", out_dir);
		util_write_file_atomic(rf, s ? s : "", s ? strlen(s) : 0);
		snprintf(url, sizeof(url), "http://127.0.0.1:%u/.well-known/lantern-receipts", http_port);
		rc = tl_lantern(&N[1], &out, &err, "receipt verify %s --keys %s", rf, url);
		tl_sh(NULL, NULL, "curl -s %s > %s/rc-jwks.json", url, out_dir);
		tl_sh(&nout, NULL, "node %s %s %s/rc-jwks.json", helper, rf, out_dir);
		tap_ok(code == 200 && json_array_size(json_object_get(j, "signatures")) == 2 && rc == 0 &&
		       tl_has(out, "signature 2") && tl_has(nout, "jcs ok") && !tl_has(nout, "bad"),
		       "the completion's receipt is checked against the node's registered key, countersigned "
		       "and served at /v1/runs/{id}/receipt; both signatures verify (ours, Node's): %s",
		       tl_oneline(nout));
		free(nout);
		free(s);
		free(out);
		free(err);
		out = err = NULL;
		/* a changed byte in the countersignature */
		{
			json_t *sig = json_array_get(json_object_get(j, "signatures"), 1);
			char *sv = strdup(str(sig, "signature")), *bad;

			if (sv && strlen(sv) > 5)
				sv[5] = sv[5] == 'A' ? 'B' : 'A';
			json_object_set_new(sig, "signature", json_string(sv ? sv : ""));
			bad = json_dumps(j, JSON_COMPACT);
			snprintf(path, sizeof(path), "%s.bad", rf);
			util_write_file_atomic(path, bad ? bad : "", bad ? strlen(bad) : 0);
			free(bad);
			free(sv);
		}
		snprintf(rf + strlen(rf), sizeof(rf) - strlen(rf), ".bad");
		rc = tl_lantern(&N[1], NULL, NULL, "receipt verify %s --keys %s", rf, url);
		tap_ok(rc != 0 && tl_sh(NULL, NULL, "node %s %s %s/rc-jwks.json", helper, rf, out_dir) != 0,
		       "a changed byte in a signature of the countersigned receipt fails verification");
	}
	json_decref(j);

	/* 5: no node in the preferred region: queued, unless the spec allows elsewhere */
	snprintf(rid, sizeof(rid), "%s", submit(spec_file("cp-ap", NULL, "ap-south-1")));
	usleep(2000000);
	j = wait_run(rid, "queued", 500);
	{
		char rid2[64];
		json_t *k;

		snprintf(rid2, sizeof(rid2), "%s",
			 submit(spec_file("cp-ap-fb", "  labels: {lantern.dev/region-fallback: allow}\n", "ap-south-1")));
		k = wait_run(rid2, "succeeded", 30000);
		tap_ok(!strcmp(str(j, "status"), "queued") && !strcmp(str(k, "status"), "succeeded"),
		       "a run preferring a region no node is in waits queued; with region-fallback allow it "
		       "runs elsewhere: %s / %s %s", str(j, "status"), str(k, "status"), str(k, "detail"));
		json_decref(k);
	}
	json_decref(j);

	/* 6: a local run on a connected node: the node key signs */
	rc = tl_run(&N[0], spec_file("local", NULL, NULL), NULL, &err);
	{
		char id[32] = "", f[500];
		json_t *rec;

		tl_newest_run(&N[0], id, sizeof(id), NULL, 0);
		snprintf(f, sizeof(f), "%s/runs/%s/run.json", N[0].state, id);
		rec = json_load_file(f, 0, NULL);
		snprintf(path, sizeof(path), "%s/local.token", out_dir);
		tap_ok(rc == 0 && !strcmp(str(json_object_get(rec, "identity"), "issuer"), "node") &&
		       tl_lantern(&N[0], NULL, NULL, "identity verify %s", path) == 0,
		       "a local run on a connected node gets a node-signed token: %s", tl_oneline(err));
		json_decref(rec);
	}
	free(err);
	err = NULL;

	/* 7: the control plane goes away between an assignment and the token it signs: the
	 * start waits for the stream to come back (within --identity-sign-timeout), the
	 * restarted control plane signs, and the run is placed once, not given back */
	{
		char *log = NULL;
		json_t *k;
		bool placed, back;

		kill(N[1].daemon, SIGSTOP);
		snprintf(rid, sizeof(rid), "%s", submit(spec_file("cp-failover", NULL, "us-east-1")));
		j = wait_run(rid, "assigned", 5000);
		placed = !strcmp(str(j, "status"), "assigned");
		json_decref(j);
		usleep(300000); /* the assignment is in the stopped node's socket */
		tl_child_stop(cp_pid, SIGKILL);
		kill(N[1].daemon, SIGCONT);
		back = cp_start();
		k = wait_run(rid, "succeeded", 30000);
		snprintf(path, sizeof(path), "%s/cp-failover.token", out_dir);
		snprintf(url, sizeof(url), "http://127.0.0.1:%u/.well-known/jwks.json", http_port);
		rc = tl_lantern(&N[1], NULL, &err, "identity verify %s --jwks %s", path, url);
		tl_sh(&log, NULL, "grep -h '%s' %s/lanternd.log", rid, N[1].dir);
		tap_ok(placed && back && !strcmp(str(k, "status"), "succeeded") &&
		       json_integer_value(json_object_get(k, "epoch")) == 1 && rc == 0 &&
		       !tl_has(log, "given back"),
		       "the control plane killed after placing a run, before signing its token, and "
		       "restarted: the node's start waits for the new stream, the run succeeds at epoch %lld "
		       "with a token the control plane signed, never given back (%s %s; %s)",
		       (long long)json_integer_value(json_object_get(k, "epoch")), str(k, "status"),
		       str(k, "detail"), tl_oneline(log ? log : err));
		json_decref(k);
		free(log);
		free(err);
		err = NULL;
	}

	/* 8: a token refresh (two thirds into its 60 s, at ~40 s) while the control plane is
	 * away from 30 s to 52 s: the request kept for the stream (10 s) is gone by the time
	 * it comes back, so the node asks again (after 5 s, then 10 s) and the refreshed token
	 * lands before the workload reads it again at 65 s (the control plane is started with
	 * --down-after 30 and 60 s leases so that the outage costs the node nothing else) */
	{
		char first[600], second[600], *a = NULL, *b = NULL;
		const char *f;
		json_t *k;
		bool back;

		snprintf(first, sizeof(first), "%s/cp-refresh.first", out_dir);
		snprintf(second, sizeof(second), "%s/cp-refresh.token", out_dir);
		f = tl_spec(&N[0], "cp-refresh", NULL,
			    "cp $LANTERN_IDENTITY_TOKEN FIRST; sleep 65; cp $LANTERN_IDENTITY_TOKEN SECOND",
			    "  image_digest: host\n  isolation: trusted\n  network: none\n"
			    "  limits: {timeout: 300s}\n  preferred_regions: [us-east-1]\n");
		tl_sh(NULL, NULL, "sed -i 's|FIRST|%s|; s|SECOND|%s|' %s", first, second, f);
		snprintf(rid, sizeof(rid), "%s", submit(f));
		k = wait_run(rid, "running", 10000);
		json_decref(k);
		usleep(30000000);
		tl_child_stop(cp_pid, SIGKILL);
		usleep(22000000);
		back = cp_start();
		k = wait_run(rid, "succeeded", 40000);
		util_read_file(first, &a, NULL);
		util_read_file(second, &b, NULL);
		rc = tl_lantern(&N[1], NULL, &err, "identity verify %s --jwks %s", second, url);
		tap_ok(back && !strcmp(str(k, "status"), "succeeded") && a && b && strcmp(a, b) && rc == 0,
		       "a token refresh due while the control plane is away past the tunnel's keep is asked "
		       "again and lands once it is back: the run's last token is a new one (%s) the control "
		       "plane signed (%s %s; %s)", a && b && strcmp(a, b) ? "changed" : "unchanged",
		       str(k, "status"), str(k, "detail"), tl_oneline(err));
		json_decref(k);
		free(a);
		free(b);
		free(err);
	}
}

int main(void)
{
	const char *missing = tl_env_missing();

	tap_plan(POINTS);
	if (missing) {
		for (int i = 0; i < POINTS; i++)
			tap_skip(missing, "identity control plane point %d", i + 1);
		return tap_failures ? 1 : 0;
	}
	tl_env_init(&N[0], "idcpA");
	tl_env_init(&N[1], "idcpB");
	snprintf(out_dir, sizeof(out_dir), "%s/out", N[0].dir);
	util_mkdir_p(out_dir, 0700);
	if (!realpath("tests/kselftest-style/helpers/jws-verify.js", helper))
		snprintf(helper, sizeof(helper), "tests/kselftest-style/helpers/jws-verify.js");
	grpc_port = free_port();
	http_port = free_port();
	if (!tap_ok(cp_start(), "lantern-cp starts (SQLite, migrations)")) {
		char *log = slurp(cp_log);

		tap_diag("%s", tl_oneline(log));
		free(log);
	} else {
		scenario();
	}
	while (tap_count < POINTS)
		tap_ok(false, "not reached");
	return tap_failures ? 1 : 0;
}
