/* identity_test: per-instance identity, secrets and receipts on a standalone node, end
 * to end. One lanternd with a secrets directory, a 2-second lease TTL, a region and
 * its metrics address (the well-known documents), exporting spans to the test OTLP
 * receiver. Workloads (process runtime) copy what they see to the test's directory;
 * what they sign and what lanternd signs is checked with verifiers that are not ours:
 * Node's crypto.verify (helpers/jws-verify.js) and OpenSSL 3 (pkeyutl -rawin). Covers
 * the node key, an instance's key, token and read-only tmpfs, `lantern identity`,
 * proof of possession, tampering, secrets through `lantern secrets exec` and through
 * curl + openssl (unsigned, replayed, stale, wrongly signed, TTL and rotation), lease
 * revocation, admission refusals, spec fields refused rather than ignored, receipts
 * (JCS, the journal's last record, head hash recomputed, tampering) and a planted
 * secret searched for everywhere it must never be. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/jose.h"
#include "lantern/util.h"

#define POINTS 26

static struct tl_env T;
static char out_dir[400], sec_dir[400], helper[512], node_jwks[512], recv_out[512];
static uint16_t mport, otlp_port;
static pid_t receiver;
static char ident_run[32], ident_inst[32], daemon_flags[1200];

static const char *p(const char *name)
{
	static char buf[8][600];
	static int k;

	k = (k + 1) % 8;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", out_dir, name);
	return buf[k];
}

static char *slurp(const char *path)
{
	char *b = NULL;

	if (util_read_file(path, &b, NULL) < 0)
		return NULL;
	return b;
}

static bool wait_file(const char *path, int ms)
{
	for (int i = 0; i < ms / 50; i++) {
		if (access(path, F_OK) == 0)
			return true;
		usleep(50000);
	}
	return false;
}

static json_t *run_record(const char *id)
{
	char path[700];

	snprintf(path, sizeof(path), "%s/runs/%s/run.json", T.state, id);
	return json_load_file(path, 0, NULL);
}

static bool wait_final(const char *id, int ms)
{
	for (int i = 0; i < ms / 100; i++) {
		json_t *j = run_record(id);
		const char *st = json_string_value(json_object_get(j, "status"));
		bool done = st && strcmp(st, "running") && strcmp(st, "accepted");

		json_decref(j);
		if (done)
			return true;
		usleep(100000);
	}
	return false;
}

/* True if any file below dir holds the bytes of needle. */
static bool tree_has(const char *dir, const void *needle, size_t n, char *where, size_t wlen)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	bool found = false;

	while (d && !found && (de = readdir(d))) {
		char path[1200];
		struct stat st;
		char *buf;
		size_t len;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (lstat(path, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			found = tree_has(path, needle, n, where, wlen);
		} else if (S_ISREG(st.st_mode) && util_read_file(path, &buf, &len) == 0) {
			if (memmem(buf, len, needle, n)) {
				found = true;
				snprintf(where, wlen, "%s", path);
			}
			free(buf);
		}
	}
	if (d)
		closedir(d);
	return found;
}

/* node jws-verify.js: 0 when every signature verifies and the payload is JCS. */
static int node_verify(const char *jws_file, const char *jwks_file, char **out)
{
	return tl_sh(out, NULL, "node %s %s %s", helper, jws_file, jwks_file);
}

/* OpenSSL 3 checks sig (base64url, in a file) over the bytes of data_file with the key
 * of a JWK file (made PEM by Node). */
static int openssl_verify(const char *jwk_file, const char *data_file, const char *sig_b64u_file)
{
	return tl_sh(NULL, NULL,
		     "cd %s && node %s --pem %s > v.pem && s=$(tr -d '\\n' < %s | tr '_-' '/+') && "
		     "while [ $((${#s} %% 4)) -ne 0 ]; do s=\"$s=\"; done && printf %%s \"$s\" | base64 -d > v.sig && "
		     "openssl pkeyutl -verify -pubin -inkey v.pem -rawin -in %s -sigfile v.sig >/dev/null 2>&1",
		     out_dir, helper, jwk_file, sig_b64u_file, data_file);
}

/* Splits a compact JWS file into signing input and signature files. */
static void jws_split(const char *jws_file, const char *input, const char *sig)
{
	tl_sh(NULL, NULL, "cut -d. -f1,2 %s | tr -d '\\n' > %s && cut -d. -f3 %s | tr -d '\\n' > %s", jws_file,
	      input, jws_file, sig);
}

/* ---- the node key and its documents ---- */

static void test_node_key(void)
{
	char path[400], *doc = NULL, *jwks = NULL;
	struct stat st;
	json_t *d, *k;
	bool ok;

	snprintf(path, sizeof(path), "%s/node.key", T.state);
	tl_sh(&doc, NULL, "curl -s -m 5 http://127.0.0.1:%u/.well-known/lantern-agent-identity", mport);
	tl_sh(&jwks, NULL, "curl -s -m 5 http://127.0.0.1:%u/.well-known/jwks.json", mport);
	d = json_loads(doc ? doc : "", 0, NULL);
	k = json_array_get(json_object_get(json_loads(jwks ? jwks : "", 0, NULL), "keys"), 0);
	ok = stat(path, &st) == 0 && (st.st_mode & 0777) == 0600 &&
	     !strcmp(json_string_value(json_object_get(d, "algorithm")) ?: "", "Ed25519") &&
	     json_string_value(json_object_get(d, "publicKey")) &&
	     !strcmp(json_string_value(json_object_get(d, "keyFingerprint")) ?: "x",
		     json_string_value(json_object_get(k, "kid")) ?: "y");
	tap_ok(ok, "the node key is made on first start (0600 in the state dir) and published at "
	       "/.well-known/lantern-agent-identity and /.well-known/jwks.json: %s", tl_oneline(doc));
	util_write_file_atomic(node_jwks, jwks ? jwks : "", jwks ? strlen(jwks) : 0);
	json_decref(d);
	free(doc);
	free(jwks);
}

/* ---- an instance's identity ---- */

static void test_instance(void)
{
	const char *spec;
	char *out = NULL, *err = NULL, *tok, *jwk, *s, *key;
	json_t *cl = NULL, *idj = NULL;
	struct jose_jws j = { 0 };
	struct lerr e;
	int rc;

	spec = tl_spec(&T, "ident", NULL,
		       "o=OUTDIR; d=$LANTERN_IDENTITY_DIR; cp $d/token $d/public.jwk $d/key $o/; "
		       "(touch $d/x 2>/dev/null && echo rw || echo ro) > $o/ro; "
		       "grep \" $d \" /proc/mounts | cut -d' ' -f3,4 > $o/mnt; printf proof > $o/data; "
		       "openssl pkeyutl -sign -rawin -inkey $d/key -in $o/data | base64 -w0 | tr '+/' '-_' | tr -d = > $o/pop; "
		       "echo 1 > $o/ready; while [ ! -e $o/go ]; do sleep 0.1; done; "
		       "$LANTERN_CLI secrets exec -- sh -c 'printf %s \"$API_KEY\" | sha256sum | cut -c1-64' > $o/hash",
		       "  image_digest: host\n  isolation: trusted\n  network: none\n  limits: {timeout: 120s}\n"
		       "  secrets:\n    - {env_name: API_KEY, secret_uri: \"file://%s/api\"}\n", sec_dir);
	tl_sh(NULL, NULL, "sed -i 's|OUTDIR|%s|' %s", out_dir, spec);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s > %s 2>&1 &", T.build, T.sock, spec, p("ident.log"));
	if (!tap_ok(wait_file(p("ready"), 20000) && tl_running_run(&T, "ident", ident_run, sizeof(ident_run), 5000),
		    "a run whose spec names a file:// secret starts")) {
		char *log = slurp(p("ident.log"));

		tap_diag("%s", tl_oneline(log));
		free(log);
		return;
	}
	tok = slurp(p("token"));
	jwk = slurp(p("public.jwk"));
	s = slurp(p("mnt"));
	out = slurp(p("ro"));
	key = slurp(p("key"));
	tap_ok(tok && jwk && tl_has(out, "ro") && tl_has(s, "tmpfs ro,") && tl_has(key, "BEGIN PRIVATE KEY"),
	       "the instance's key (PKCS#8), public JWK and token are in $LANTERN_IDENTITY_DIR, a "
	       "read-only tmpfs of its own: %s / %s", tl_oneline(s), tl_oneline(out));
	free(s);
	free(out);
	out = NULL;

	rc = tl_lantern(&T, &out, &err, "identity %s --json", ident_run);
	idj = json_loads(out ? out : "", 0, NULL);
	snprintf(ident_inst, sizeof(ident_inst), "%s", json_string_value(json_object_get(idj, "instance_id")) ?: "");
	tap_ok(rc == 0 && tok && !strcmp(json_string_value(json_object_get(idj, "token")) ?: "", tok) &&
	       tl_has(jwk, json_string_value(json_object_get(json_object_get(idj, "public_key"), "x")) ?: "none") &&
	       !strcmp(json_string_value(json_object_get(idj, "issuer")) ?: "", "node"),
	       "lantern identity RUN prints the instance's token and public key: %s", tl_oneline(err));
	free(out);
	free(err);
	out = err = NULL;

	rc = tl_lantern(&T, &out, &err, "identity verify %s --jwks http://127.0.0.1:%u/.well-known/jwks.json --json",
			p("token"), mport);
	cl = json_loads(out ? out : "", 0, NULL);
	tap_ok(rc == 0 && !strcmp(json_string_value(json_object_get(cl, "sub")) ?: "", ident_inst) &&
	       !strcmp(json_string_value(json_object_get(cl, "run_id")) ?: "", ident_run) &&
	       !strcmp(json_string_value(json_object_get(cl, "tenant_id")) ?: "", "default") &&
	       !strcmp(json_string_value(json_object_get(cl, "typ")) ?: "", "agent-instance") &&
	       !strcmp(json_string_value(json_object_get(cl, "iss")) ?: "", "lantern-agent") &&
	       !strcmp(json_string_value(json_object_get(cl, "agent_version_id")) ?: "", "ident") &&
	       json_string_value(json_object_get(cl, "jti")) &&
	       json_integer_value(json_object_get(cl, "exp")) <= json_integer_value(json_object_get(cl, "iat")) + 121,
	       "lantern identity verify checks the token with the node's JWKS: sub is the instance, "
	       "run, tenant, typ agent-instance, exp no later than the deadline: %s", tl_oneline(err));
	free(out);
	free(err);
	out = err = NULL;

	rc = node_verify(p("token"), node_jwks, &out);
	jws_split(p("token"), p("tok.in"), p("tok.sig"));
	tl_sh(NULL, NULL, "node -e 'const k=JSON.parse(require(\"fs\").readFileSync(\"%s\")).keys[0];"
	      "require(\"fs\").writeFileSync(\"%s\", JSON.stringify({kty:k.kty,crv:k.crv,x:k.x}))'", node_jwks,
	      p("node.jwk"));
	tap_ok(rc == 0 && tl_has(out, "ok ") && openssl_verify(p("node.jwk"), p("tok.in"), p("tok.sig")) == 0,
	       "Node's crypto.verify and OpenSSL's pkeyutl -rawin verify the token with the node key: %s",
	       tl_oneline(out));
	free(out);
	out = NULL;

	/* proof of possession: the key file signs, cnf.jwk verifies */
	if (tok && jose_parse(tok, strlen(tok), &j, &e) == 0) {
		json_t *c = json_loadb((const char *)j.payload, j.payload_len, 0, NULL);
		char *cnf = json_dumps(json_object_get(json_object_get(c, "cnf"), "jwk"), JSON_COMPACT);

		util_write_file_atomic(p("cnf.jwk"), cnf ? cnf : "{}", cnf ? strlen(cnf) : 2);
		free(cnf);
		json_decref(c);
		jose_jws_free(&j);
	}
	tap_ok(openssl_verify(p("cnf.jwk"), p("data"), p("pop")) == 0,
	       "proof of possession: what the instance signs with its key file verifies (OpenSSL) with "
	       "the token's cnf.jwk");

	/* a changed byte anywhere fails */
	{
		int r1, r2, r3, n1, n2;

		tl_sh(NULL, NULL, "cd %s && awk -F. '{ p=$2; c=substr(p,10,1); c=(c==\"A\")?\"B\":\"A\"; "
		      "printf \"%%s.%%s%%s%%s.%%s\", $1, substr(p,1,9), c, substr(p,11), $3 }' token > tok-p && "
		      "awk -F. '{ s=$3; c=substr(s,5,1); c=(c==\"A\")?\"B\":\"A\"; "
		      "printf \"%%s.%%s.%%s%%s%%s\", $1, $2, substr(s,1,4), c, substr(s,6) }' token > tok-s && "
		      "awk -F. '{ h=$1; c=substr(h,3,1); c=(c==\"A\")?\"B\":\"A\"; "
		      "printf \"%%s%%s%%s.%%s.%%s\", substr(h,1,2), c, substr(h,4), $2, $3 }' token > tok-h", out_dir);
		r1 = tl_lantern(&T, NULL, NULL, "identity verify %s --jwks %s", p("tok-p"), node_jwks);
		r2 = tl_lantern(&T, NULL, NULL, "identity verify %s --jwks %s", p("tok-s"), node_jwks);
		r3 = tl_lantern(&T, NULL, NULL, "identity verify %s --jwks %s", p("tok-h"), node_jwks);
		n1 = node_verify(p("tok-p"), node_jwks, NULL);
		n2 = node_verify(p("tok-s"), node_jwks, NULL);
		tap_ok(r1 && r2 && r3 && n1 && n2, "a changed byte in the token's payload, signature or header "
		       "fails verification, ours (%d %d %d) and Node's (%d %d)", r1, r2, r3, n1, n2);
	}

	/* the end: the workload fetches its secret, then its tmpfs goes, the lease (still
	 * live: the TTL is 2 s) is revoked, and the key is nowhere on disk */
	tl_sh(NULL, NULL, "touch %s", p("go"));
	wait_final(ident_run, 15000);
	{
		char want[65], *hash = slurp(p("hash"));
		uint8_t h[32];

		crypto_hash_sha256(h, (const uint8_t *)"sk-test-0123456789", 18);
		sodium_bin2hex(want, sizeof(want), h, sizeof(h));
		tap_ok(hash && !strncmp(hash, want, 64),
		       "lantern secrets exec runs the command with the spec's secret in its environment");
		free(hash);
	}

	{
		char *key = slurp(p("key")), *mounts = slurp("/proc/mounts"), where[1200] = "", body[128] = "";
		uint8_t sk[64], pk[32];
		json_t *rec;
		bool final = wait_final(ident_run, 15000), on_disk = false;

		rec = run_record(ident_run);
		free(mounts);
		mounts = slurp("/proc/mounts");
		if (key && jose_pem_read_private(key, sk, pk) == 0) {
			/* the seed as raw bytes, and the PEM's base64 line */
			on_disk = tree_has(T.state, sk, 32, where, sizeof(where));
			sscanf(strstr(key, "\n") + 1, "%127s", body);
			on_disk = on_disk || tree_has(T.state, body, strlen(body), where, sizeof(where));
		}
		tap_ok(final && key && !on_disk && !tl_has(mounts, ident_inst) &&
		       json_integer_value(json_object_get(json_object_get(rec, "identity"), "leases_revoked")) == 1 &&
		       tl_log_contains(&T, "1 secret lease revoked at teardown"),
		       "at teardown the instance's tmpfs is unmounted, its live lease revoked, and its private "
		       "key is in no file under the state dir%s%s", where[0] ? ": found in " : "", where);
		json_decref(rec);
		free(key);
		free(mounts);
	}
	json_decref(cl);
	json_decref(idj);
	free(tok);
	free(jwk);
	free(key);
}

/* ---- the signed request protocol, with standard tools ---- */

static void test_protocol(void)
{
	const char *spec;
	char *out = NULL, *err = NULL;
	int rc;

	tl_file(&T, "secrets/rot", "rot-v1");
	spec = tl_spec(&T, "proto", NULL,
		       "o=OUTDIR; d=$LANTERN_IDENTITY_DIR; s=$LANTERN_HARNESS_SOCKET; e=$(printf '' | sha256sum | cut -c1-64); "
		       "req() { printf 'lantern-secrets-v1\\nPOST\\n%s\\n%s\\n%s\\n%s' $1 $e $2 $3 > $o/msg; "
		       "g=$(openssl pkeyutl -sign -rawin -inkey $4 -in $o/msg | base64 -w0); "
		       "c=$(curl -s -o $o/body -w '%{http_code}' --unix-socket $s -X POST -H \"X-Lantern-Timestamp: $2\" "
		       "-H \"X-Lantern-Nonce: $3\" -H \"X-Lantern-Signature: $g\" http://lantern$1); "
		       "v=$(sed -n 's/.*\"value\":\"\\([^\"]*\\)\".*/\\1/p; s/.*\"error\":\"\\([^\"]*\\)\".*/\\1/p' $o/body | head -1); "
		       "echo $c:$v; }; "
		       "openssl genpkey -algorithm ed25519 -out $o/other.pem; "
		       "echo unsigned=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket $s -X POST http://lantern/v1/secrets/ROT); "
		       "n=$(date +%s); echo ok=$(req /v1/secrets/ROT $n nonce-0000000000000001 $d/key); "
		       "echo replay=$(req /v1/secrets/ROT $n nonce-0000000000000001 $d/key); "
		       "echo stale=$(req /v1/secrets/ROT $((n-120)) nonce-0000000000000002 $d/key); "
		       "echo wrongkey=$(req /v1/secrets/ROT $n nonce-0000000000000003 $o/other.pem); "
		       "echo unknown=$(req /v1/secrets/NOPE $n nonce-0000000000000004 $d/key); "
		       "echo 1 > $o/rot-step; while [ ! -e $o/rotated ]; do sleep 0.05; done; "
		       "echo same=$(req /v1/secrets/ROT $(date +%s) nonce-0000000000000005 $d/key); sleep 2.5; "
		       "echo after=$(req /v1/secrets/ROT $(date +%s) nonce-0000000000000006 $d/key)",
		       "  image_digest: host\n  isolation: trusted\n  network: none\n"
		       "  secrets:\n    - {env_name: ROT, secret_uri: \"file://%s/rot\"}\n", sec_dir);
	tl_sh(NULL, NULL, "sed -i 's|OUTDIR|%s|' %s", out_dir, spec);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s > %s 2>&1 &", T.build, T.sock, spec, p("proto.log"));
	if (wait_file(p("rot-step"), 20000)) {
		tl_file(&T, "secrets/rot.new", "rot-v2");
		tl_sh(NULL, NULL, "mv %s/rot.new %s/rot && touch %s", sec_dir, sec_dir, p("rotated"));
	}
	for (int i = 0; i < 100 && !tl_has(out, "after="); i++) {
		free(out);
		usleep(100000);
		out = slurp(p("proto.log"));
	}
	rc = tl_has(out, "after=") ? 0 : 1;
	tap_ok(rc == 0 && tl_has(out, "unsigned=401") && tl_has(out, "ok=200:rot-v1") &&
	       tl_has(out, "replay=401:replayed") && tl_has(out, "stale=401:stale") &&
	       tl_has(out, "wrongkey=401:bad_signature") && tl_has(out, "unknown=404"),
	       "signed with the instance key (openssl + curl): answered with the value; unsigned, "
	       "replayed, stale and wrongly signed requests refused (401): %s", tl_oneline(out));
	tap_ok(tl_has(out, "same=200:rot-v1") && tl_has(out, "after=200:rot-v2"),
	       "within its TTL a secret keeps its lease; after it the source is read again and a rotated "
	       "value arrives: %s", tl_oneline(out));
	free(out);
	free(err);
}

/* ---- admission ---- */

static int run_spec(const char *name, const char *meta, const char *fields, char **err)
{
	const char *spec = tl_spec(&T, name, meta, "true", "%s", fields);

	return tl_run(&T, spec, NULL, err);
}

static void test_refusals(void)
{
	char *e1 = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL, *e5 = NULL, f[600];
	int r1, r2, r3, r4, r5;

	tl_sh(NULL, NULL, "ln -sf /etc/hostname %s/link", sec_dir);
#define HOSTRUN "  image_digest: host\n  isolation: trusted\n  network: none\n"
	r1 = run_spec("vault", NULL, HOSTRUN "  secrets:\n    - {env_name: K, secret_uri: \"vault://kv/api\"}\n", &e1);
	r2 = run_spec("k8s", NULL, HOSTRUN "  secrets:\n    - {env_name: K, secret_uri: \"k8s://db/password\"}\n", &e2);
	snprintf(f, sizeof(f), HOSTRUN "  secrets:\n    - {env_name: K, secret_uri: \"file://%s/none\"}\n", sec_dir);
	r3 = run_spec("missing", NULL, f, &e3);
	r4 = run_spec("outside", NULL, HOSTRUN "  secrets:\n    - {env_name: K, secret_uri: \"file:///etc/passwd\"}\n", &e4);
	snprintf(f, sizeof(f), HOSTRUN "  secrets:\n    - {env_name: K, secret_uri: \"file://%s/link\"}\n", sec_dir);
	r5 = run_spec("symlink", NULL, f, &e5);
	tap_ok(r1 && tl_has(e1, "spec.secrets[0].secret_uri") && tl_has(e1, "unknown secret scheme") &&
	       r2 && tl_has(e2, "spec.secrets[0].secret_uri") && tl_has(e2, "k8s://db/password") &&
	       tl_has(e2, "no Kubernetes API client"),
	       "an unknown secret scheme, and k8s:// on a node without --kubernetes, refuse the run "
	       "naming the field: %s | %s", tl_oneline(e1), tl_oneline(e2));
	tap_ok(r3 && tl_has(e3, "no such secret") && r4 && tl_has(e4, "not a file below") && r5 &&
	       tl_has(e5, "symbolic link"),
	       "a missing secret, a path outside the secrets directory and a symbolic link refuse the run "
	       "at admission: %s | %s | %s", tl_oneline(e3), tl_oneline(e4), tl_oneline(e5));
	free(e1);
	free(e2);
	free(e3);
	free(e4);
	free(e5);
}

static void test_fields(void)
{
	char *e1 = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL, *e5 = NULL;
	int r1, r2, r3, r4, r5, r6, r7;

	r1 = run_spec("gpu", NULL, HOSTRUN "  limits: {gpu: 1}\n", &e1);
	r2 = run_spec("snap", NULL, HOSTRUN "  restore_snapshot_id: snap-1\n", &e2);
	tap_ok(r1 && tl_has(e1, "spec.limits.gpu") && r2 && tl_has(e2, "spec.restore_snapshot_id"),
	       "limits.gpu and restore_snapshot_id are refused naming the field, not ignored: %s | %s",
	       tl_oneline(e1), tl_oneline(e2));
	r3 = run_spec("methods", NULL, "  image_digest: host\n  isolation: trusted\n  egress_rules:\n"
		      "    - {pattern: \"127.0.0.1:80\", http_methods: [GET]}\n", &e3);
	r4 = run_spec("allmethods", NULL, "  image_digest: host\n  isolation: trusted\n  egress_rules:\n"
		      "    - {pattern: \"127.0.0.1:80\", http_methods: [GET, HEAD, POST, PUT, DELETE, CONNECT, "
		      "OPTIONS, TRACE, PATCH]}\n", NULL);
	tap_ok(r3 && tl_has(e3, "spec.egress_rules[0].http_methods") && r4 == 0,
	       "egress_rules[].http_methods other than every method is refused naming the rule; every "
	       "method runs: %s", tl_oneline(e3));
	r5 = run_spec("region-no", NULL, HOSTRUN "  preferred_regions: [us-east-1]\n", &e4);
	r6 = run_spec("region-yes", NULL, HOSTRUN "  preferred_regions: [us-east-1, eu-west-1]\n", &e5);
	r7 = run_spec("region-fb", "  labels: {lantern.dev/region-fallback: allow}\n",
		      HOSTRUN "  preferred_regions: [us-east-1]\n", NULL);
	tap_ok(r5 && tl_has(e4, "spec.preferred_regions") && tl_has(e4, "eu-west-1") && r6 == 0 && r7 == 0,
	       "preferred_regions: a node in another region (--region eu-west-1) refuses the run unless "
	       "the spec allows fallback: %s %s", tl_oneline(e4), tl_oneline(e5));
	free(e1);
	free(e2);
	free(e3);
	free(e4);
	free(e5);
}

/* ---- receipts ---- */

static void test_receipt(void)
{
	char journal[600], *out = NULL, *err = NULL, *pl = NULL;
	json_t *r = NULL;
	int rc;

	snprintf(journal, sizeof(journal), "%s/runs/%s/journal", T.state, ident_run);
	rc = tl_lantern(&T, NULL, NULL, "receipt %s > %s", ident_run, p("receipt.jws"));
	tl_lantern(&T, &pl, NULL, "receipt %s --json", ident_run);
	r = json_loads(pl ? pl : "", 0, NULL);
	tap_ok(rc == 0 && !strcmp(json_string_value(json_object_get(r, "run_id")) ?: "", ident_run) &&
	       !strcmp(json_string_value(json_object_get(r, "agent_instance_id")) ?: "", ident_inst) &&
	       !strcmp(json_string_value(json_object_get(r, "status")) ?: "", "succeeded") &&
	       !strcmp(json_string_value(json_object_get(r, "handler")) ?: "", "process") &&
	       !strcmp(json_string_value(json_object_get(r, "isolation")) ?: "", "trusted") &&
	       strlen(json_string_value(json_object_get(r, "egress_policy_sha256")) ?: "") == 64 &&
	       json_object_get(json_object_get(r, "instance_public_key"), "x") &&
	       json_object_get(json_object_get(r, "cost"), "components") &&
	       !strcmp(json_string_value(json_object_get(json_object_get(r, "node"), "region")) ?: "", "eu-west-1"),
	       "lantern receipt RUN: the run, instance and its key, image, class and handler, policy "
	       "digest, status, cost and node, signed: %s", tl_oneline(pl));
	free(out);
	out = NULL;
	rc = tl_lantern(&T, &out, &err, "receipt verify %s --journal %s --keys "
			"http://127.0.0.1:%u/.well-known/lantern-receipts", p("receipt.jws"), journal, mport);
	{
		char *last = NULL;

		tl_lantern(&T, &last, NULL, "journal --json %s | tail -1", ident_run);
		tap_ok(rc == 0 && tl_has(out, "recomputed: matches") && tl_has(last, "\"type\":\"receipt\""),
		       "the receipt is the journal's last record; lantern receipt verify --journal recomputes "
		       "the head hash and finds it signed: %s %s", tl_oneline(out), tl_oneline(err));
		free(last);
	}
	free(out);
	free(err);
	out = err = NULL;
	rc = node_verify(p("receipt.jws"), node_jwks, &out);
	jws_split(p("receipt.jws"), p("rc.in"), p("rc.sig"));
	tap_ok(rc == 0 && tl_has(out, "jcs ok") && openssl_verify(p("node.jwk"), p("rc.in"), p("rc.sig")) == 0,
	       "Node and OpenSSL verify the receipt with the node key; its payload is RFC 8785 canonical "
	       "JSON (Node's JSON): %s", tl_oneline(out));
	free(out);
	out = NULL;
	/* tampering: a field, the signature, a journal record */
	{
		struct jose_jws j = { 0 };
		struct lerr e;
		char *text = slurp(p("receipt.jws")), *tampered = NULL;
		int a = 0, b, c, d;

		if (text && jose_parse(text, strlen(text), &j, &e) == 0) {
			char *pj = strndup((char *)j.payload, j.payload_len), *at = strstr(pj, "succeeded"), *enc;

			if (at)
				memcpy(at, "succeedeX", 9);
			enc = jose_b64url(pj, strlen(pj));
			if (asprintf(&tampered, "%s.%s.%s", j.sigs[0].protected_b64, enc, strrchr(text, '.') + 1) > 0)
				util_write_file_atomic(p("rc-field"), tampered, strlen(tampered));
			free(enc);
			free(pj);
			jose_jws_free(&j);
		}
		a = tl_lantern(&T, NULL, NULL, "receipt verify %s --keys %s", p("rc-field"), node_jwks);
		b = node_verify(p("rc-field"), node_jwks, NULL);
		tl_sh(NULL, NULL, "cd %s && awk -F. '{ s=$3; c=substr(s,7,1); c=(c==\"A\")?\"B\":\"A\"; "
		      "printf \"%%s.%%s.%%s%%s%%s\", $1, $2, substr(s,1,6), c, substr(s,8) }' receipt.jws > rc-sig && "
		      "cp %s j-copy && printf 'X' | dd of=j-copy bs=1 seek=100 conv=notrunc 2>/dev/null", out_dir, journal);
		c = tl_lantern(&T, NULL, NULL, "receipt verify %s --keys %s", p("rc-sig"), node_jwks);
		d = tl_lantern(&T, &out, &err, "receipt verify %s --keys %s --journal %s", p("receipt.jws"), node_jwks,
			       p("j-copy"));
		tap_ok(a && b && c && d, "a changed receipt field (ours %d, Node %d), signature (%d) or journal "
		       "record (%d) fails verification: %s", a, b, c, d, tl_oneline(err));
		free(text);
		free(tampered);
	}
	json_decref(r);
	free(pl);
	free(out);
	free(err);
}

/* ---- a planted secret, searched for everywhere ---- */

static bool receiver_start(void)
{
	char cmd[1024], line[128] = "";
	uint16_t gp, hp;
	int pp[2];
	ssize_t n;

	if (access("tests/otlp-receiver/node_modules/@opentelemetry/otlp-transformer", F_OK) < 0 || pipe(pp) < 0)
		return false;
	snprintf(recv_out, sizeof(recv_out), "%s/received.jsonl", T.dir);
	snprintf(cmd, sizeof(cmd), "exec node tests/otlp-receiver/receiver.js --out %s", recv_out);
	receiver = fork();
	if (receiver == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(pp[1], 1);
		close(pp[0]);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	tl_child_track(receiver, SIGTERM);
	close(pp[1]);
	n = read(pp[0], line, sizeof(line) - 1);
	close(pp[0]);
	if (n <= 0)
		return false;
	line[n] = '\0';
	if (sscanf(line, "ready %hu %hu", &gp, &hp) != 2)
		return false;
	otlp_port = hp;
	return true;
}

static void test_never_stored(void)
{
	char canary[64] = "LANTERN-CANARY-", want[65], id[32] = "", where[1200] = "", *b64;
	char *journal = NULL, *logs = NULL, *spans = NULL, *hash, *dlog;
	const char *spec;
	uint8_t h[32];
	bool in_state, in_journal, in_log, in_logs, in_otlp, got_spans = false;

	util_random_hex(canary + 15, 12);
	tl_file(&T, "secrets/canary", "%s", canary);
	crypto_hash_sha256(h, (const uint8_t *)canary, strlen(canary));
	sodium_bin2hex(want, sizeof(want), h, sizeof(h));
	b64 = jose_b64url(canary, strlen(canary));
	spec = tl_spec(&T, "canary", NULL,
		       "$LANTERN_CLI step s1 -- echo step-output; "
		       "$LANTERN_CLI secrets exec -- sh -c 'printf %s \"$CANARY\" | sha256sum | cut -c1-64' > OUTDIR/canary-hash; "
		       "$LANTERN_CLI step s2 -- sh -c 'echo second'",
		       HOSTRUN "  secrets:\n    - {env_name: CANARY, secret_uri: \"file://%s/canary\"}\n", sec_dir);
	tl_sh(NULL, NULL, "sed -i 's|OUTDIR|%s|' %s", out_dir, spec);
	tl_run(&T, spec, NULL, NULL);
	tl_newest_run(&T, id, sizeof(id), NULL, 0);
	hash = slurp(p("canary-hash"));
	tl_lantern(&T, &journal, NULL, "journal --json %s", id);
	tl_lantern(&T, &logs, NULL, "logs %s", id);
	for (int i = 0; otlp_port && i < 100 && !got_spans; i++) {
		free(spans);
		spans = slurp(recv_out);
		got_spans = tl_has(spans, id);
		usleep(100000);
	}
	dlog = slurp(T.log);
	in_state = tree_has(T.state, canary, strlen(canary), where, sizeof(where)) ||
		   tree_has(T.state, b64, strlen(b64), where, sizeof(where));
	in_journal = tl_has(journal, canary);
	in_log = tl_has(dlog, canary);
	in_logs = tl_has(logs, canary);
	in_otlp = tl_has(spans, canary) || tl_has(spans, b64);
	tap_ok(hash && !strncmp(hash, want, 64) && tl_has(journal, "step_completed") && !in_state && !in_journal &&
	       !in_log && !in_logs && !in_otlp && (got_spans || !otlp_port),
	       "a planted secret reaches the workload and is in none of: the journal (decoded), lanternd's "
	       "log, the run's logs, the OTLP stream the collector received%s, run.json, spans or any file "
	       "under the state dir%s%s", otlp_port ? "" : " (receiver not installed)", where[0] ? ": found in " : "",
	       where);
	free(b64);
	free(hash);
	free(journal);
	free(logs);
	free(spans);
	free(dlog);
}

/* ---- a lanternd restart: adopted instances keep their identity, resumed ones get a new one ---- */

static void identity_of(const char *run, char *kid, size_t klen, char *inst, size_t ilen)
{
	char *out = NULL;
	json_t *j;

	tl_lantern(&T, &out, NULL, "identity %s --json", run);
	j = json_loads(out ? out : "", 0, NULL);
	snprintf(kid, klen, "%s", json_string_value(json_object_get(j, "kid")) ?: "");
	snprintf(inst, ilen, "%s", json_string_value(json_object_get(j, "instance_id")) ?: "");
	json_decref(j);
	free(out);
}

static void test_restart(void)
{
	char id[32] = "", id2[32] = "", kid1[64], kid2[64], inst1[32], inst2[32], rkid1[64], rkid2[64], rinst1[32],
	     rinst2[32], want[65], *hash, *mounts;
	const char *spec;
	uint8_t h[32];

	spec = tl_spec(&T, "survivor", NULL,
		       "o=OUTDIR; while [ ! -e $o/go1 ]; do sleep 0.1; done; "
		       "$LANTERN_CLI secrets exec -- sh -c 'printf %s \"$API_KEY\" | sha256sum | cut -c1-64' > $o/h1",
		       HOSTRUN "  secrets:\n    - {env_name: API_KEY, secret_uri: \"file://%s/api\"}\n", sec_dir);
	tl_sh(NULL, NULL, "sed -i 's|OUTDIR|%s|' %s", out_dir, spec);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s > /dev/null 2>&1 &", T.build, T.sock, spec);
	tl_running_run(&T, "survivor", id, sizeof(id), 10000);
	identity_of(id, kid1, sizeof(kid1), inst1, sizeof(inst1));
	spec = tl_spec(&T, "phoenix", NULL, "sleep 60", "%s", HOSTRUN);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s > /dev/null 2>&1 &", T.build, T.sock, spec);
	tl_running_run(&T, "phoenix", id2, sizeof(id2), 10000);
	identity_of(id2, rkid1, sizeof(rkid1), rinst1, sizeof(rinst1));

	/* lanternd goes; phoenix's workload dies with it (a machine restart for it) */
	tl_daemon_stop(&T, SIGTERM);
	tl_sh(NULL, NULL, "kill -9 $(cat %s/runs/%s/shim.pid) 2>/dev/null; for p in $(cat /sys/fs/cgroup/unified/%s/%s/cgroup.procs "
	      "2>/dev/null); do kill -9 $p; done", T.state, id2, T.cgroot, rinst1);
	usleep(300000);
	tl_daemon_start(&T, daemon_flags);
	for (int i = 0; i < 50; i++) {
		identity_of(id2, rkid2, sizeof(rkid2), rinst2, sizeof(rinst2));
		if (rinst2[0] && strcmp(rinst2, rinst1))
			break;
		usleep(100000);
	}
	identity_of(id, kid2, sizeof(kid2), inst2, sizeof(inst2));
	tl_sh(NULL, NULL, "touch %s", p("go1"));
	wait_final(id, 15000);
	hash = slurp(p("h1"));
	crypto_hash_sha256(h, (const uint8_t *)"sk-test-0123456789", 18);
	sodium_bin2hex(want, sizeof(want), h, sizeof(h));
	tap_ok(kid1[0] && !strcmp(kid1, kid2) && !strcmp(inst1, inst2) && hash && !strncmp(hash, want, 64),
	       "after a lanternd restart a live instance keeps its key (%s), and its signed secret "
	       "requests are answered", kid2);
	mounts = slurp("/proc/mounts");
	tap_ok(rinst2[0] && strcmp(rinst1, rinst2) && rkid2[0] && strcmp(rkid1, rkid2) && !tl_has(mounts, rinst1) &&
	       tl_has(mounts, rinst2),
	       "a resumed run is a fresh instance (%s -> %s) with a fresh key; the old instance's tmpfs "
	       "is gone", rinst1, rinst2);
	tl_lantern(&T, NULL, NULL, "kill %s", id2);
	wait_final(id2, 15000);
	free(hash);
	free(mounts);
}

/* ---- an OCI sandbox ---- */

static void test_oci(void)
{
	char dir[400], image[256] = "", *out = NULL, *err = NULL, f[1024];
	int rc;

	if (access("/usr/sbin/runc", X_OK)) {
		tap_skip("runc is not installed (make deps)", "OCI sandbox identity");
		return;
	}
	snprintf(dir, sizeof(dir), "%s/image", T.dir);
	if (tl_mkimage(dir, "test/busybox:1", image, sizeof(image)) != 0 ||
	    tl_lantern(&T, NULL, NULL, "image import %s", dir) != 0) {
		tap_ok(false, "an OCI image for the sandbox test could be made");
		return;
	}
	snprintf(f, sizeof(f), "  image_digest: %s\n  isolation: trusted\n  network: none\n", image);
	rc = tl_run(&T, tl_spec(&T, "oci-ident", NULL,
				"echo dir=$LANTERN_IDENTITY_DIR; head -c 16 /run/lantern/identity/token; echo; "
				"test -s /run/lantern/identity/key && echo key-there; "
				"touch /run/lantern/identity/x 2>/dev/null || echo identity-ro; "
				"grep ' /run/lantern/identity ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1", "%s", f),
		    &out, &err);
	tap_ok(rc == 0 && tl_has(out, "dir=/run/lantern/identity") && tl_has(out, "eyJ") &&
	       tl_has(out, "key-there") && tl_has(out, "identity-ro") && tl_has(out, "\nro\n"),
	       "in an OCI sandbox the key and token are at /run/lantern/identity, a read-only mount: %s %s",
	       tl_oneline(out), tl_oneline(err));
	free(out);
	free(err);
}

int main(void)
{
	const char *missing = tl_env_missing();
	char *extra = daemon_flags;
	int fd;

	tap_plan(POINTS);
	if (missing) {
		for (int i = 0; i < POINTS; i++)
			tap_skip(missing, "identity point %d", i + 1);
		return tap_failures ? 1 : 0;
	}
	tl_env_init(&T, "ident");
	snprintf(out_dir, sizeof(out_dir), "%s/out", T.dir);
	snprintf(sec_dir, sizeof(sec_dir), "%s/secrets", T.dir);
	if (!realpath("tests/kselftest-style/helpers/jws-verify.js", helper))
		snprintf(helper, sizeof(helper), "tests/kselftest-style/helpers/jws-verify.js");
	snprintf(node_jwks, sizeof(node_jwks), "%s/node-jwks.json", out_dir);
	util_mkdir_p(out_dir, 0700);
	util_mkdir_p(sec_dir, 0700);
	tl_file(&T, "secrets/api", "sk-test-0123456789");
	fd = tl_tcp_listen("127.0.0.1", &mport);
	close(fd);
	receiver_start();
	snprintf(extra, sizeof(daemon_flags), "--secrets-dir %s --secret-ttl 2 --region eu-west-1 --metrics-addr "
		 "127.0.0.1:%u --identity-dir %s/ids", sec_dir, mport, T.dir);
	if (otlp_port)
		snprintf(extra + strlen(extra), sizeof(daemon_flags) - strlen(extra),
			 " --otlp-protocol http/protobuf --otlp-endpoint http://127.0.0.1:%u", otlp_port);
	if (!tap_ok(tl_daemon_start(&T, extra) == 0, "lanternd starts with a secrets directory and identity")) {
		while (tap_count < POINTS)
			tap_ok(false, "not reached");
		return 1;
	}
	test_node_key();
	test_instance();
	test_protocol();
	test_refusals();
	test_fields();
	test_receipt();
	test_never_stored();
	test_restart();
	test_oci();
	while (tap_count < POINTS)
		tap_ok(false, "not reached");
	return tap_failures ? 1 : 0;
}
