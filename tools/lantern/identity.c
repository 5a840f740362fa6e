/* identity.c: `lantern identity RUN` (an instance's token and public key),
 * `lantern identity verify TOKEN` (offline: signature by a key of a JWKS, the
 * agent-instance claims, expiry, cnf.jwk), `lantern receipt RUN` and
 * `lantern receipt verify FILE` (every signature, and with --journal the journal's
 * head hash recomputed and its last record matched). Keys come from --jwks/--keys
 * (a file or an http(s) URL: a control plane's or a node's well-known document), or
 * from the local lanternd (its node key) when none is given. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <sodium.h>

#include "client.h"
#include "lantern/identity.h"
#include "lantern/journal.h"
#include "lantern/jose.h"
#include "lantern/util.h"

struct fetched {
	char *p;
	size_t n;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct fetched *f = arg;
	size_t n = size * nmemb;
	char *np;

	if (f->n + n > (4u << 20) || !(np = realloc(f->p, f->n + n + 1)))
		return 0;
	memcpy(np + f->n, ptr, n);
	f->p = np;
	f->n += n;
	f->p[f->n] = '\0';
	return n;
}

static char *fetch_url(const char *url)
{
	struct fetched f = { 0 };
	CURL *c = curl_easy_init();
	long code = 0;
	CURLcode rc;

	if (!c)
		return NULL;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &f);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_cleanup(c);
	if (rc != CURLE_OK || code != 200) {
		fprintf(stderr, "lantern: %s: %s\n", url, rc != CURLE_OK ? curl_easy_strerror(rc) : "not 200");
		free(f.p);
		return NULL;
	}
	return f.p;
}

/* A JWKS from a file, a URL, or (src NULL) the local lanternd's node key. */
static json_t *load_jwks(struct cli *c, const char *src)
{
	json_t *j = NULL;
	char *text = NULL;
	size_t len;

	if (!src) {
		json_t *req = json_pack("{s:s}", "op", "identity_jwks"), *ans = client_call(c, req);

		json_decref(req);
		j = json_incref(json_object_get(ans, "jwks"));
		json_decref(ans);
		return j;
	}
	if (!strncmp(src, "http://", 7) || !strncmp(src, "https://", 8))
		text = fetch_url(src);
	else if (client_read_file(src, &text, &len) < 0)
		fprintf(stderr, "lantern: cannot read %s\n", src);
	if (text && !(j = json_loads(text, 0, NULL)))
		fprintf(stderr, "lantern: %s is not JSON\n", src);
	free(text);
	if (j && !json_is_array(json_object_get(j, "keys"))) {
		fprintf(stderr, "lantern: %s is not a JWKS (no \"keys\")\n", src);
		json_decref(j);
		j = NULL;
	}
	return j;
}

/* TOKEN as given, from a file, or from stdin ("-"). */
static char *token_text(const char *arg)
{
	char *buf = NULL;
	size_t len = 0;

	if (!strcmp(arg, "-")) {
		FILE *f = open_memstream(&buf, &len);
		int ch;

		while (f && (ch = getchar()) != EOF)
			fputc(ch, f);
		if (f)
			fclose(f);
		return buf;
	}
	if (strchr(arg, '/') && client_read_file(arg, &buf, &len) == 0)
		return buf;
	return strdup(arg);
}

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);

	puts(s ? s : "{}");
	free(s);
}

static int identity_show(struct cli *c, const char *run, bool as_json)
{
	json_t *req = json_pack("{s:s, s:s}", "op", "identity", "run_id", run), *ans = client_call(c, req);
	char *jwk;

	json_decref(req);
	if (!ans)
		return 1;
	if (as_json) {
		print_json(ans);
		json_decref(ans);
		return 0;
	}
	jwk = json_dumps(json_object_get(ans, "public_key"), JSON_COMPACT | JSON_SORT_KEYS);
	printf("instance    %s (run %s)\nkey id      %s\npublic key  %s\nsigned by   %s\nexpires     %lld\n"
	       "token\n%s\n", json_string_value(json_object_get(ans, "instance_id")),
	       json_string_value(json_object_get(ans, "run_id")), json_string_value(json_object_get(ans, "kid")),
	       jwk ? jwk : "", json_string_value(json_object_get(ans, "issuer")),
	       (long long)json_integer_value(json_object_get(ans, "exp")),
	       json_string_value(json_object_get(ans, "token")));
	free(jwk);
	json_decref(ans);
	return 0;
}

/* The agent-instance claims a token must carry; why not, or NULL. */
static const char *claims_problem(json_t *cl, int64_t now)
{
	uint8_t pk[JOSE_PK_BYTES];
	const char *need[] = { "sub", "jti", "tenant_id", "run_id", "agent_version_id" };

	if (!json_is_object(cl))
		return "the payload is not a JSON object";
	if (!json_string_value(json_object_get(cl, "iss")) ||
	    strcmp(json_string_value(json_object_get(cl, "iss")), IDENTITY_ISSUER))
		return "iss is not \"" IDENTITY_ISSUER "\"";
	if (!json_string_value(json_object_get(cl, "typ")) ||
	    strcmp(json_string_value(json_object_get(cl, "typ")), "agent-instance"))
		return "typ is not \"agent-instance\"";
	for (size_t i = 0; i < ARRAY_SIZE(need); i++)
		if (!json_is_string(json_object_get(cl, need[i])))
			return "a claim is missing (sub, jti, tenant_id, run_id, agent_version_id)";
	if (!json_is_integer(json_object_get(cl, "exp")) || json_integer_value(json_object_get(cl, "exp")) <= now)
		return "it has expired (exp)";
	if (!json_is_integer(json_object_get(cl, "iat")) || json_integer_value(json_object_get(cl, "iat")) > now + 60)
		return "it was issued in the future (iat)";
	if (jose_jwk_key(json_object_get(json_object_get(cl, "cnf"), "jwk"), pk) < 0)
		return "cnf.jwk is not the instance's Ed25519 public key";
	return NULL;
}

static int identity_verify(struct cli *c, const char *arg, const char *jwks_src, bool as_json)
{
	char *text = token_text(arg);
	json_t *jwks = load_jwks(c, jwks_src), *cl = NULL;
	struct jose_jws j = { 0 };
	struct lerr e = { 0 };
	const char *why = NULL;
	int rc = 1;

	if (!text || !jwks)
		goto out;
	if (jose_parse(text, strlen(text), &j, &e) < 0 || jose_verify(&j, jwks, &e) < 0) {
		fprintf(stderr, "lantern: token not valid: %s\n", e.msg);
		goto out;
	}
	cl = json_loadb((const char *)j.payload, j.payload_len, 0, NULL);
	if ((why = claims_problem(cl, (int64_t)time(NULL)))) {
		fprintf(stderr, "lantern: token not valid: %s\n", why);
		goto out;
	}
	if (as_json) {
		print_json(cl);
	} else {
		printf("valid: instance %s of run %s (tenant %s, agent %s), signed by key %s, expires %lld\n",
		       json_string_value(json_object_get(cl, "sub")), json_string_value(json_object_get(cl, "run_id")),
		       json_string_value(json_object_get(cl, "tenant_id")),
		       json_string_value(json_object_get(cl, "agent_version_id")),
		       json_string_value(json_object_get(j.sigs[0].header, "kid")),
		       (long long)json_integer_value(json_object_get(cl, "exp")));
	}
	rc = 0;
out:
	jose_jws_free(&j);
	json_decref(cl);
	json_decref(jwks);
	free(text);
	return rc;
}

int cmd_identity(struct cli *c, int argc, char **argv)
{
	const char *jwks = NULL, *pos = NULL;
	bool verify = argc > 1 && !strcmp(argv[1], "verify"), as_json = false;

	for (int i = verify ? 2 : 1; i < argc; i++) {
		if (!strcmp(argv[i], "--jwks") && i + 1 < argc)
			jwks = argv[++i];
		else if (!strcmp(argv[i], "--json"))
			as_json = true;
		else if (!pos)
			pos = argv[i];
		else
			pos = NULL, i = argc;
	}
	if (!pos) {
		fprintf(stderr, "usage: lantern identity RUN [--json]\n"
			"       lantern identity verify TOKEN|FILE|- [--jwks FILE|URL] [--json]\n");
		return 2;
	}
	return verify ? identity_verify(c, pos, jwks, as_json) : identity_show(c, pos, as_json);
}

/* ---- receipts ---- */

struct chain {
	uint64_t records;            /* the receipt's count: the head is this record's hash */
	uint8_t head[JOURNAL_HASH_BYTES];
	bool have_head;
	char *last_receipt;          /* the receipt journaled after it, if any */
	uint64_t total;
};

static int chain_cb(void *arg, const struct journal_record *rec)
{
	struct chain *ch = arg;

	ch->total = rec->seq;
	if (rec->seq == ch->records) {
		memcpy(ch->head, rec->hash, sizeof(ch->head));
		ch->have_head = true;
	} else if (rec->seq == ch->records + 1 && rec->type == JOURNAL_RECEIPT) {
		json_t *p = json_loadb(rec->payload, rec->len, 0, NULL);

		free(ch->last_receipt);
		ch->last_receipt = json_string_value(json_object_get(p, "receipt")) ?
				   strdup(json_string_value(json_object_get(p, "receipt"))) : NULL;
		json_decref(p);
	}
	return 0;
}

/* The receipt's journal fields against the journal at path; prints why not. */
static int check_journal(const char *path, json_t *payload, const struct jose_jws *j)
{
	json_t *jr = json_object_get(payload, "journal");
	const char *want = json_string_value(json_object_get(jr, "head_sha256"));
	struct chain ch = { .records = (uint64_t)json_integer_value(json_object_get(jr, "records")) };
	struct journal_scan info;
	struct jose_jws jj = { 0 };
	struct lerr e = { 0 };
	char hex[2 * JOURNAL_HASH_BYTES + 1];
	int rc = 1;

	if (!want || !ch.records) {
		fprintf(stderr, "lantern: receipt has no journal head\n");
		return 1;
	}
	if (journal_scan(path, chain_cb, &ch, &info, &e) < 0) {
		fprintf(stderr, "lantern: journal %s does not verify: %s\n", path, e.msg);
		goto out;
	}
	if (info.torn_bytes) {
		fprintf(stderr, "lantern: journal %s: %llu bytes after record %llu are not a valid record\n",
			path, (unsigned long long)info.torn_bytes, (unsigned long long)info.records);
		goto out;
	}
	if (!ch.have_head) {
		fprintf(stderr, "lantern: journal %s has %llu records, the receipt counts %llu\n", path,
			(unsigned long long)ch.total, (unsigned long long)ch.records);
		goto out;
	}
	sodium_bin2hex(hex, sizeof(hex), ch.head, sizeof(ch.head));
	if (strcmp(hex, want)) {
		fprintf(stderr, "lantern: journal head of record %llu is %s, the receipt signed %s\n",
			(unsigned long long)ch.records, hex, want);
		goto out;
	}
	if (!ch.last_receipt || jose_parse(ch.last_receipt, strlen(ch.last_receipt), &jj, &e) < 0 ||
	    strcmp(jj.payload_b64, j->payload_b64) || ch.total != ch.records + 1) {
		fprintf(stderr, "lantern: journal %s does not end with this receipt\n", path);
		goto out;
	}
	printf("journal: %llu records, head %s recomputed: matches; its last record is this receipt\n",
	       (unsigned long long)ch.records, hex);
	rc = 0;
out:
	jose_jws_free(&jj);
	free(ch.last_receipt);
	return rc;
}

static int receipt_verify(struct cli *c, const char *file, const char *journal, const char *keys)
{
	json_t *jwks = load_jwks(c, keys), *payload = NULL;
	struct jose_jws j = { 0 };
	struct lerr e = { 0 };
	char *text = NULL, *canon = NULL;
	size_t len;
	int rc = 1;

	if (!jwks)
		return 1;
	if (client_read_file(file, &text, &len) < 0) {
		fprintf(stderr, "lantern: cannot read %s\n", file);
		goto out;
	}
	if (jose_parse(text, len, &j, &e) < 0 || jose_verify(&j, jwks, &e) < 0) {
		fprintf(stderr, "lantern: receipt not valid: %s\n", e.msg);
		goto out;
	}
	payload = json_loadb((const char *)j.payload, j.payload_len, 0, NULL);
	/* what was signed must be the canonical form: nothing else reads the same */
	if (!payload || !(canon = jose_jcs(payload)) || strlen(canon) != j.payload_len ||
	    memcmp(canon, j.payload, j.payload_len)) {
		fprintf(stderr, "lantern: receipt not valid: its payload is not RFC 8785 canonical JSON\n");
		goto out;
	}
	for (size_t i = 0; i < j.n; i++)
		printf("signature %zu: key %s (%s): valid\n", i + 1,
		       json_string_value(json_object_get(j.sigs[i].header, "kid")),
		       json_string_value(json_object_get(j.sigs[i].header, "typ")) ?: "");
	printf("run %s (%s): %s, instance %s, journal head %s (%lld records)\n",
	       json_string_value(json_object_get(payload, "run_id")),
	       json_string_value(json_object_get(payload, "tenant_id")),
	       json_string_value(json_object_get(payload, "status")),
	       json_string_value(json_object_get(payload, "agent_instance_id")),
	       json_string_value(json_object_get(json_object_get(payload, "journal"), "head_sha256")),
	       (long long)json_integer_value(json_object_get(json_object_get(payload, "journal"), "records")));
	rc = journal ? check_journal(journal, payload, &j) : 0;
out:
	jose_jws_free(&j);
	json_decref(payload);
	json_decref(jwks);
	free(canon);
	free(text);
	return rc;
}

static int receipt_show(struct cli *c, const char *run, bool as_json)
{
	json_t *req = json_pack("{s:s, s:s}", "op", "receipt", "run_id", run), *ans = client_call(c, req);
	const char *jws = json_string_value(json_object_get(ans, "receipt"));
	struct jose_jws j = { 0 };
	struct lerr e = { 0 };

	json_decref(req);
	if (!jws) {
		json_decref(ans);
		return 1;
	}
	if (!as_json) {
		puts(jws);
	} else if (jose_parse(jws, strlen(jws), &j, &e) == 0) {
		json_t *p = json_loadb((const char *)j.payload, j.payload_len, 0, NULL);

		print_json(p);
		json_decref(p);
		jose_jws_free(&j);
	}
	json_decref(ans);
	return 0;
}

int cmd_receipt(struct cli *c, int argc, char **argv)
{
	const char *keys = NULL, *journal = NULL, *pos = NULL;
	bool verify = argc > 1 && !strcmp(argv[1], "verify"), as_json = false;

	for (int i = verify ? 2 : 1; i < argc; i++) {
		if (!strcmp(argv[i], "--keys") && i + 1 < argc)
			keys = argv[++i];
		else if (!strcmp(argv[i], "--journal") && i + 1 < argc)
			journal = argv[++i];
		else if (!strcmp(argv[i], "--json"))
			as_json = true;
		else if (!pos)
			pos = argv[i];
		else
			pos = NULL, i = argc;
	}
	if (!pos) {
		fprintf(stderr, "usage: lantern receipt RUN [--json]\n"
			"       lantern receipt verify FILE [--journal PATH] [--keys JWKS-FILE|URL]\n");
		return 2;
	}
	return verify ? receipt_verify(c, pos, journal, keys) : receipt_show(c, pos, as_json);
}
