/* kube_secrets_test: k8s://SECRET/KEY secrets on lanternd --kubernetes, against the test
 * API server of tests/kube-apiserver (TLS on loopback, a bearer token; Secrets made,
 * rotated and deleted by the test, and its faults: a slow answer, 403). Workloads are
 * host processes (trusted, image_digest host) so they really ask the harness API for
 * their secrets, with `lantern secrets exec`; a 2-second lease TTL.
 *
 * Asserts: a Secret's key reaches the workload, read once before the start by name in
 * the tenant's namespace; a rotated Secret reaches it after the lease expired (read
 * again); a missing Secret, a missing key, 403 from the authorizer, an API server that
 * does not answer within 5 s and one that is down each refuse the run at admission
 * with the reason, leaving no run directory and no run; while a start waits for the API
 * server, lanternd answers other requests; a client that leaves meanwhile calls the
 * start off; a bad NAME or KEY is refused naming the field; the value is in none of
 * lanternd's log, the journal, the run's logs or any file under the state dir; every
 * API call lanternd made is allowed by deploy/daemonset/rbac.yaml plus
 * deploy/tenant/secrets-reader.yaml in the tenant's namespace, each verb of them used. */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "tap.h"
#include "testlib.h"
#include "kubelib.h"
#include "lantern/util.h"

#define POINTS 17
#define NODE "node-s"
#define TENANT "acme"
#define NS "lantern-t-" TENANT
#define TOKEN "kube-secrets-test-token-9a1"
#define HOSTRUN "  image_digest: host\n  isolation: trusted\n  network: none\n"
#define IMAGE "registry.example/lantern/agent@sha256:4a5e0b1c2d3e4f5061728394a5b6c7d8e9f00112233445566778899aabbccdde"

static struct tl_env T;
static struct tl_kube K = { .t = &T, .token = TOKEN, .node = NODE };
static char out_dir[400];

/* ---- the test API server ---- */

static json_t *api(const char *method, const char *path, json_t *body, long *status)
{
	return tl_kube_api(&K, method, path, body, status);
}

/* Secret NS/name with data {key: value} (base64), made or replaced. */
static bool put_secret(const char *name, const char *key, const char *value)
{
	char b64[512];
	long code = 0;

	sodium_bin2base64(b64, sizeof(b64), (const unsigned char *)value, strlen(value),
			  sodium_base64_VARIANT_ORIGINAL);
	json_decref(api("POST", "/_test/secrets", json_pack("{s:s, s:s, s:{s:s, s:s}, s:s, s:{s:s}}", "apiVersion",
							     "v1", "kind", "Secret", "metadata", "name", name,
							     "namespace", NS, "type", "Opaque", "data", key, b64),
			&code));
	return code == 200;
}

static void faults(const char *json)
{
	json_decref(api("POST", "/_test/faults", json_loads(json, 0, NULL), NULL));
}

/* GETs of secrets/name lanternd made, by the token (its kubeconfig's user). */
static size_t secret_gets(const char *name)
{
	json_t *log = api("GET", "/_test/log", NULL, NULL), *e;
	char path[256];
	size_t i, n = 0;

	snprintf(path, sizeof(path), "/api/v1/namespaces/" NS "/secrets/%s", name);
	json_array_foreach(log, i, e)
		n += !strcmp(json_string_value(json_object_get(e, "method")) ?: "", "GET") &&
		     !strcmp(json_string_value(json_object_get(e, "path")) ?: "", path) &&
		     !strcmp(json_string_value(json_object_get(e, "user")) ?: "", "token");
	json_decref(log);
	return n;
}

static void stop_server(void)
{
	tl_kube_stop(&K);
}

/* ---- runs ---- */

static char *slurp(const char *path)
{
	char *b = NULL;

	return util_read_file(path, &b, NULL) < 0 ? NULL : b;
}

static const char *p(const char *name)
{
	static char buf[8][600];
	static int k;

	k = (k + 1) % 8;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", out_dir, name);
	return buf[k];
}

static bool wait_file(const char *path, int ms)
{
	for (uint64_t end = tl_ms() + (uint64_t)ms; tl_ms() < end; usleep(50000))
		if (access(path, F_OK) == 0)
			return true;
	return access(path, F_OK) == 0;
}

/* Run directories under the state dir. */
static size_t run_dirs(void)
{
	char path[400];
	struct dirent *de;
	size_t n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/runs", T.state);
	if (!(d = opendir(path)))
		return 0;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* A spec naming uri as $DB whose workload writes what it was given into OUTDIR/name. */
static const char *db_spec(const char *name, const char *uri)
{
	char script[600];
	const char *spec;

	snprintf(script, sizeof(script), "$LANTERN_CLI secrets exec -- sh -c 'printf %%s \"$DB\" > %s/%s'", out_dir, name);
	spec = tl_spec(&T, name, NULL, script, HOSTRUN "  secrets:\n    - {env_name: DB, secret_uri: \"%s\"}\n", uri);
	return spec;
}

/* `lantern run` of a spec that must be refused: the CLI's error and whether nothing of
 * the run stayed (no run directory, no run in `lantern ps`). */
static bool refused(const char *name, const char *uri, char **err, uint64_t *ms)
{
	size_t before = run_dirs();
	char *ps = NULL;
	uint64_t t0 = tl_ms();
	int rc = tl_run(&T, db_spec(name, uri), NULL, err);
	bool gone;

	if (ms)
		*ms = tl_ms() - t0;
	tl_lantern(&T, &ps, NULL, "ps");
	gone = run_dirs() == before && !tl_has(ps, name);
	free(ps);
	return rc != 0 && gone;
}

/* A field of the run named name in `lantern ps --json`, into out. */
static bool run_field(const char *name, const char *field, char *out, size_t len)
{
	char *ps = NULL;
	json_t *runs, *r;
	size_t i;

	out[0] = '\0';
	tl_lantern(&T, &ps, NULL, "ps --json");
	runs = ps ? json_loads(ps, 0, NULL) : NULL;
	json_array_foreach(runs, i, r)
		if (!strcmp(json_string_value(json_object_get(r, "name")) ?: "", name))
			snprintf(out, len, "%s", json_string_value(json_object_get(r, field)) ?: "");
	json_decref(runs);
	free(ps);
	return out[0] != '\0';
}

/* True if any file below dir holds needle. */
static bool tree_has(const char *dir, const char *needle, char *where, size_t wlen)
{
	char *out = NULL;
	bool found;

	tl_sh(&out, NULL, "grep -rlF -- '%s' %s 2>/dev/null | head -1", needle, dir);
	found = out && *out;
	if (found)
		snprintf(where, wlen, "%s", tl_oneline(out));
	free(out);
	return found;
}

int main(void)
{
	const char *missing = tl_env_missing();
	char extra[1024], canary[64] = "K8S-CANARY-", rot1[40] = "rot-one-", rot2[40] = "rot-two-";
	char *err = NULL, *v = NULL, *ps = NULL, where[600] = "";
	uint64_t ms = 0;
	size_t gets;
	bool ok;

	tap_plan(POINTS);
	if (missing || access("tests/kube-apiserver/node_modules/kubernetes-models", F_OK) != 0) {
		for (int i = 0; i < POINTS; i++)
			tap_skip(missing ? missing : "tests/kube-apiserver/node_modules missing (make deps)",
				 "kube_secrets_test");
		return tap_done();
	}
	tl_env_init(&T, "ksec");
	tl_on_exit(stop_server);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	snprintf(out_dir, sizeof(out_dir), "%s/out", T.dir);
	mkdir(out_dir, 0755);
	util_random_hex(canary + 11, 12);
	util_random_hex(rot1 + 8, 8);
	util_random_hex(rot2 + 8, 8);
	if (!tl_kube_certs(&T, false) || tl_kube_start(&K, NULL) <= 0) {
		for (int i = 0; i < POINTS; i++)
			tap_ok(false, "test API server could not start (see %s/apiserver.log)", T.dir);
		return 1;
	}
	snprintf(extra, sizeof(extra), "--kubernetes --kubeconfig %s --node-name " NODE " --tenant " TENANT
		 " --secret-ttl 2", tl_kube_kubeconfig(&K, "token.kubeconfig", "    token: " TOKEN "\n"));
	if (!tap_ok(tl_daemon_start(&T, extra) == 0 && put_secret("db", "password", canary),
		    "lanternd --kubernetes --secret-ttl 2 starts; Secret " NS "/db made")) {
		for (int i = 1; i < POINTS; i++)
			tap_ok(false, "lanternd did not start (see %s)", T.log);
		tl_env_cleanup(&T);
		return 1;
	}

	/* the value reaches the workload, read before the start */
	tl_run(&T, db_spec("k-db", "k8s://db/password"), NULL, &err);
	v = wait_file(p("k-db"), 10000) ? slurp(p("k-db")) : NULL;
	gets = secret_gets("db");
	tap_ok(v && !strcmp(v, canary) && gets == 1,
	       "k8s://db/password: the workload's `lantern secrets exec` gets .data.password of Secret " NS
	       "/db, read once (%zu GET by lanternd's token) before the start and vended as its first lease "
	       "(%s)", gets, tl_oneline(err));
	free(v);
	free(err);
	err = NULL;

	/* rotation: the lease expires, the Secret is read again */
	{
		char script[1200];
		const char *spec;

		put_secret("rot", "token", rot1);
		snprintf(script, sizeof(script),
			 "$LANTERN_CLI secrets exec -- sh -c 'printf %%s \"$TOK\" > %s/rot-1'; "
			 "while [ ! -e %s/rotated ]; do sleep 0.05; done; sleep 2.5; "
			 "$LANTERN_CLI secrets exec -- sh -c 'printf %%s \"$TOK\" > %s/rot-2'",
			 out_dir, out_dir, out_dir);
		spec = tl_spec(&T, "k-rot", NULL, script,
			       HOSTRUN "  secrets:\n    - {env_name: TOK, secret_uri: \"k8s://rot/token\"}\n");
		tl_sh(NULL, NULL, "%s/lantern --socket %s run %s > %s 2>&1 &", T.build, T.sock, spec, p("rot.log"));
		ok = wait_file(p("rot-1"), 10000);
		put_secret("rot", "token", rot2);
		tl_sh(NULL, NULL, "touch %s", p("rotated"));
		ok = wait_file(p("rot-2"), 10000) && ok;
		{
			char *a = slurp(p("rot-1")), *b = slurp(p("rot-2"));

			tap_ok(ok && a && b && !strcmp(a, rot1) && !strcmp(b, rot2) && secret_gets("rot") == 2,
			       "a Secret rotated while the run goes on: after the 2 s lease expired the workload's "
			       "request waits for a fresh GET and gets the new value (GETs %zu)", secret_gets("rot"));
			free(a);
			free(b);
		}
	}

	/* deleted while the run goes on: the workload is told why, and asking again at once
	 * does not make lanternd ask the API server again */
	{
		char script[1200], *g1, *g2;
		const char *spec;

		put_secret("gone", "k", "short-lived");
		snprintf(script, sizeof(script),
			 "$LANTERN_CLI secrets exec -- true; while [ ! -e %s/deleted ]; do sleep 0.05; done; sleep 2.5; "
			 "$LANTERN_CLI secrets exec -- true 2> %s/gone-1.tmp; mv %s/gone-1.tmp %s/gone-1; "
			 "$LANTERN_CLI secrets exec -- true 2> %s/gone-2.tmp; mv %s/gone-2.tmp %s/gone-2",
			 out_dir, out_dir, out_dir, out_dir, out_dir, out_dir, out_dir);
		spec = tl_spec(&T, "k-gone", NULL, script,
			       HOSTRUN "  secrets:\n    - {env_name: G, secret_uri: \"k8s://gone/k\"}\n");
		tl_sh(NULL, NULL, "%s/lantern --socket %s run %s > %s 2>&1 &", T.build, T.sock, spec, p("gone.log"));
		usleep(1000000);
		json_decref(api("POST", "/_test/secrets/" NS "/gone/delete", NULL, NULL));
		tl_sh(NULL, NULL, "touch %s", p("deleted"));
		ok = wait_file(p("gone-2"), 10000);
		g1 = slurp(p("gone-1"));
		g2 = slurp(p("gone-2"));
		tap_ok(ok && tl_has(g1, "no Secret gone in namespace " NS) && tl_has(g2, "no Secret gone") &&
		       secret_gets("gone") == 2,
		       "a Secret deleted while its run goes on: after the lease the workload's request is answered "
		       "with the reason, and one right after gets it again without another GET (GETs %zu): %s",
		       secret_gets("gone"), tl_oneline(g1));
		free(g1);
		free(g2);
	}

	/* a request whose connection goes away while its Secret is read: the read is called off
	 * (had it gone on, its value would be the lease the next request gets) */
	faults("{\"secrets\": {\"delayMs\": 1500}}");
	{
		char script[1200], *c2;
		const char *spec;

		put_secret("cut", "k", "cut-value");
		snprintf(script, sizeof(script),
			 "sleep 2.5; timeout -s KILL 0.5 $LANTERN_CLI secrets exec -- true; sleep 2; "
			 "$LANTERN_CLI secrets exec -- sh -c 'printf %%s \"$C\"' > %s/cut-2.tmp; mv %s/cut-2.tmp %s/cut-2",
			 out_dir, out_dir, out_dir);
		spec = tl_spec(&T, "k-cut", NULL, script,
			       HOSTRUN "  secrets:\n    - {env_name: C, secret_uri: \"k8s://cut/k\"}\n");
		tl_sh(NULL, NULL, "%s/lantern --socket %s run %s > %s 2>&1 &", T.build, T.sock, spec, p("cut.log"));
		ok = wait_file(p("cut-2"), 15000);
		c2 = slurp(p("cut-2"));
		tap_ok(ok && c2 && !strcmp(c2, "cut-value") && secret_gets("cut") == 3,
		       "a secret request whose client is killed while lanternd waits for the API server: that GET "
		       "is cancelled (the next request, within what would have been its lease, reads again: GETs "
		       "%zu of 3)", secret_gets("cut"));
		free(c2);
	}
	faults("{}");

	/* a pod spawn refused at admission: no pod, no namespace step, nothing left */
	{
		size_t before = run_dirs(), i, posts = 0;
		const char *spec = tl_spec(&T, "k-pod", NULL, "true",
					   "  image_digest: \"" IMAGE "\"\n  isolation: standard\n"
					   "  secrets:\n    - {env_name: DB, secret_uri: \"k8s://nope/password\"}\n");
		int rc = tl_run(&T, spec, NULL, &err);
		json_t *log = api("GET", "/_test/log", NULL, NULL), *e;

		json_array_foreach(log, i, e)
			posts += !strcmp(json_string_value(json_object_get(e, "method")) ?: "", "POST");
		json_decref(log);
		tap_ok(rc != 0 && tl_has(err, "no Secret nope") && run_dirs() == before && posts == 0,
		       "a spawn that would be a Pod, refused for its Secret: no pod, no namespace made, no run "
		       "directory (POSTs to the API server: %zu) (%s)", posts, tl_oneline(err));
		free(err);
		err = NULL;
	}

	/* refusals at admission, nothing left */
	ok = refused("k-nosecret", "k8s://nope/password", &err, NULL);
	tap_ok(ok && tl_has(err, "spec.secrets[0].secret_uri") && tl_has(err, "no Secret nope in namespace " NS),
	       "a Secret that does not exist refuses the run at admission naming the field and the Secret; "
	       "no run directory, no run (%s)", tl_oneline(err));
	free(err);
	err = NULL;
	ok = refused("k-nokey", "k8s://db/user", &err, NULL);
	tap_ok(ok && tl_has(err, "spec.secrets[0].secret_uri") && tl_has(err, "has no key \"user\""),
	       "a key the Secret does not have refuses the run at admission; nothing left (%s)", tl_oneline(err));
	free(err);
	err = NULL;
	faults("{\"secrets\": {\"code\": 403}}");
	ok = refused("k-forbidden", "k8s://db/password", &err, NULL);
	faults("{}");
	tap_ok(ok && tl_has(err, "403") && tl_has(err, "refuses lanternd") &&
	       tl_has(err, "grant get on secrets in " NS " (deploy/tenant/secrets-reader.yaml") && !tl_has(err, canary),
	       "403 from the authorizer refuses the run saying what to grant; nothing left (%s)", tl_oneline(err));
	free(err);
	err = NULL;

	/* a slow API server: bounded, and the loop goes on meanwhile */
	faults("{\"secrets\": {\"delayMs\": 8000}}");
	{
		uint64_t t0, ps_ms;
		int rc;

		tl_sh(NULL, NULL, "%s/lantern --socket %s run %s > %s 2>&1 &", T.build, T.sock,
		      db_spec("k-slow", "k8s://db/password"), p("slow.log"));
		usleep(1000000);
		t0 = tl_ms();
		rc = tl_lantern(&T, &ps, NULL, "ps");
		ps_ms = tl_ms() - t0;
		tap_ok(rc == 0 && ps_ms < 1500 && !tl_has(ps, "k-slow"),
		       "while a start waits for a slow API server, lanternd answers `lantern ps` (%llu ms) and "
		       "the run does not exist yet", (unsigned long long)ps_ms);
		free(ps);
		ps = NULL;
	}
	ok = refused("k-slow2", "k8s://db/password", &err, &ms);
	faults("{}");
	tap_ok(ok && ms >= 4500 && ms < 8000 && tl_has(err, "did not answer") && tl_has(err, "spec.secrets[0].secret_uri"),
	       "an API server that does not answer within 5 s refuses the run (after %llu ms); nothing left (%s)",
	       (unsigned long long)ms, tl_oneline(err));
	free(err);
	err = NULL;

	/* a client that leaves while its secrets are read: the start is called off */
	faults("{\"secrets\": {\"delayMs\": 1500}}");
	{
		size_t before = run_dirs();

		tl_sh(NULL, NULL, "timeout -s KILL 0.5 %s/lantern --socket %s run %s >/dev/null 2>&1", T.build, T.sock,
		      db_spec("k-left", "k8s://db/password"));
		usleep(2500000);
		tl_lantern(&T, &ps, NULL, "ps");
		tap_ok(run_dirs() == before && !tl_has(ps, "k-left") &&
		       access(p("k-left"), F_OK) != 0,
		       "a `lantern run` killed while its secrets are read: the start is called off, no run");
		free(ps);
		ps = NULL;
	}
	faults("{}");

	/* bad URIs, at admission, before any request */
	gets = secret_gets("Bad_Name") + secret_gets("db");
	{
		char *e2 = NULL;
		bool r1 = refused("k-badname", "k8s://Bad_Name/password", &err, NULL);
		bool r2 = refused("k-badkey", "k8s://db/pass word!", &e2, NULL);

		tap_ok(r1 && r2 && tl_has(err, "spec.secrets[0].secret_uri") && tl_has(err, "DNS-1123") &&
		       tl_has(e2, "spec.secrets[0].secret_uri") && tl_has(e2, "needs KEY") &&
		       secret_gets("Bad_Name") + secret_gets("db") == gets,
		       "a Secret name that is not a DNS-1123 subdomain, and a key outside [-._a-zA-Z0-9], refuse "
		       "the run naming the field, without asking the API server: %s | %s", tl_oneline(err),
		       tl_oneline(e2));
		free(e2);
	}
	free(err);
	err = NULL;

	/* never stored */
	{
		char *journal = NULL, *logs = NULL, *dlog, id[64] = "";
		json_t *runs = NULL, *r;
		size_t i;

		tl_lantern(&T, &ps, NULL, "ps --json");
		runs = ps ? json_loads(ps, 0, NULL) : NULL;
		json_array_foreach(runs, i, r)
			if (!strcmp(json_string_value(json_object_get(r, "name")) ?: "", "k-db"))
				snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(r, "id")) ?: "");
		json_decref(runs);
		tl_lantern(&T, &journal, NULL, "journal --json %s", id);
		tl_lantern(&T, &logs, NULL, "logs %s", id);
		dlog = slurp(T.log);
		ok = id[0] && journal && !tl_has(journal, canary) && !tl_has(logs, canary) && !tl_has(dlog, canary) &&
		     !tree_has(T.state, canary, where, sizeof(where)) && !tl_has(dlog, rot1) && !tl_has(dlog, rot2) &&
		     !tree_has(T.state, rot2, where, sizeof(where));
		tap_ok(ok, "the Secrets' values are in none of: lanternd's log, the journal, the run's logs, run.json "
		       "or any file under the state dir%s%s", where[0] ? ": found in " : "", where);
		free(journal);
		free(logs);
		free(dlog);
		free(ps);
		ps = NULL;
	}

	/* a run resumed after a restart reads its Secret again before it starts again */
	{
		char script[800], id[64], inst1[64], inst2[64] = "", ph1[40] = "phoenix-one-", ph2[40] = "phoenix-two-";
		char *a = NULL, *b = NULL;
		size_t before;

		util_random_hex(ph1 + 12, 8);
		util_random_hex(ph2 + 12, 8);
		put_secret("phx", "k", ph1);
		snprintf(script, sizeof(script), "f=%s/phoenix-a; [ -e $f ] && f=%s/phoenix-b; "
			 "$LANTERN_CLI secrets exec -- sh -c 'printf %%s \"$DB\"' > $f.tmp && mv $f.tmp $f; sleep 60",
			 out_dir, out_dir);
		tl_spec(&T, "k-phoenix", NULL, script, HOSTRUN "  secrets:\n    - {env_name: DB, secret_uri: \"k8s://phx/k\"}\n");
		tl_sh(NULL, NULL, "%s/lantern --socket %s run %s/k-phoenix.yaml > /dev/null 2>&1 &", T.build, T.sock, T.dir);
		ok = tl_running_run(&T, "k-phoenix", id, sizeof(id), 10000) && wait_file(p("phoenix-a"), 10000) &&
		     run_field("k-phoenix", "instance_id", inst1, sizeof(inst1));
		/* lanternd goes; the workload dies with it; the Secret is rotated meanwhile */
		tl_daemon_stop(&T, SIGTERM);
		tl_sh(NULL, NULL, "kill -9 $(cat %s/runs/%s/shim.pid) 2>/dev/null; for p in $(cat "
		      "/sys/fs/cgroup/unified/%s/%s/cgroup.procs 2>/dev/null); do kill -9 $p; done", T.state, id,
		      T.cgroot, inst1);
		put_secret("phx", "k", ph2);
		before = secret_gets("phx");
		usleep(300000);
		ok = tl_daemon_start(&T, extra) == 0 && wait_file(p("phoenix-b"), 15000) && ok;
		run_field("k-phoenix", "instance_id", inst2, sizeof(inst2));
		a = slurp(p("phoenix-a"));
		b = slurp(p("phoenix-b"));
		tap_ok(ok && a && b && !strcmp(a, ph1) && !strcmp(b, ph2) && secret_gets("phx") == before + 1 &&
		       inst2[0] && strcmp(inst1, inst2),
		       "a run resumed after a lanternd restart (instance %s -> %s) reads its Secret again before "
		       "its workload starts again (one more GET), and gets the value rotated meanwhile", inst1, inst2);
		free(a);
		free(b);
		tl_lantern(&T, NULL, NULL, "kill %s", id);
	}

	/* least RBAC, with the tenant grant */
	{
		json_t *log = api("GET", "/_test/log", NULL, NULL), *res;
		char *out = NULL, path[400];

		snprintf(path, sizeof(path), "%s/api.log.json", T.dir);
		json_dump_file(log, path, JSON_COMPACT);
		json_decref(log);
		tl_sh(&out, NULL, "node tests/kube-apiserver/rbac-check.js %s deploy/daemonset/rbac.yaml lanternd "
		      "deploy/tenant/secrets-reader.yaml lantern-secrets-reader " NS, path);
		res = out ? json_loads(out, 0, NULL) : NULL;
		tap_ok(res && json_array_size(json_object_get(res, "denied")) == 0 &&
		       !tl_has(out, "Role lantern-secrets-reader: get secrets"),
		       "every API call lanternd made is allowed by the ClusterRole of deploy/daemonset plus "
		       "deploy/tenant/secrets-reader.yaml in " NS ", whose get on secrets was used (%s)",
		       tl_oneline(out));
		json_decref(res);
		free(out);
	}

	/* the API server down */
	stop_server();
	ok = refused("k-down", "k8s://db/password", &err, &ms);
	tap_ok(ok && ms < 6000 && tl_has(err, "did not answer") && tl_has(err, "spec.secrets[0].secret_uri"),
	       "an API server that is down refuses the run at admission with the reason (%llu ms); nothing "
	       "left (%s)", (unsigned long long)ms, tl_oneline(err));
	free(err);
	tl_env_cleanup(&T);
	return tap_done();
}
