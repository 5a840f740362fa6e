/* identity.c: lantern-cp's part in identity. It signs the identity tokens of the
 * instances running its runs (claims it owns from its own record of the run: tenant,
 * run, agent version; the instance and its key from the node; exp no later than the
 * node asked nor the run's timeout), checks each node's receipt against the node key
 * the node registered, countersigns it (a second JWS signature over the same payload)
 * and serves it, and publishes its keys: the token key as the platform's
 * agent-identity document and a JWKS, the receipt key with every node's key as a JWKS.
 * Tokens and receipts are standard JWS (EdDSA): see docs/identity.md. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cp.h"
#include "lantern/identity.h"
#include "lantern/jose.h"

#define MAX_TOKEN_S 86400

void cp_run_spec_info(struct cprun *r)
{
	json_t *j = json_loads(r->config_json ? r->config_json : "{}", 0, NULL);
	json_t *spec = json_object_get(j, "spec"), *labels = json_object_get(json_object_get(j, "metadata"), "labels");
	const char *fb = json_string_value(json_object_get(labels, SPEC_REGION_FALLBACK_LABEL));
	const char *av = json_string_value(json_object_get(labels, "lantern.dev/agent-version"));
	json_t *v;
	size_t i;

	r->regions[0] = '\0';
	json_array_foreach(json_object_get(spec, "preferred_regions"), i, v) {
		size_t l = strlen(r->regions);

		snprintf(r->regions + l, sizeof(r->regions) - l, "%s%s", l ? "," : "", json_string_value(v) ?: "");
	}
	r->region_fallback = fb && !strcmp(fb, "allow");
	snprintf(r->agent_version, sizeof(r->agent_version), "%s",
		 av ? av : json_string_value(json_object_get(json_object_get(j, "metadata"), "name")) ?: "");
	r->timeout_s = json_number_value(json_object_get(json_object_get(spec, "limits"), "timeout"));
	json_decref(j);
}

static void kid_of(const unsigned char *pk, char kid[JOSE_KID_LEN + 1])
{
	jose_kid(pk, kid);
}

char *cp_identity_token(struct cp *cp, const struct cprun *r, const char *inst, const uint8_t *pk,
			size_t pklen, int64_t exp, char *why, size_t len)
{
	int64_t now = (int64_t)time(NULL), started = r->assigned_us ? r->assigned_us / 1000000 : now;
	char kid[JOSE_KID_LEN + 1], jti[33], *payload, *tok = NULL;
	json_t *c;

	if (pklen != JOSE_PK_BYTES || !inst[0] || strlen(inst) > 63) {
		snprintf(why, len, "an identity request needs the instance id and its 32-byte Ed25519 key");
		return NULL;
	}
	if (!exp || exp > now + MAX_TOKEN_S)
		exp = now + MAX_TOKEN_S;
	if (r->timeout_s > 0 && exp > started + (int64_t)r->timeout_s + 1)
		exp = started + (int64_t)r->timeout_s + 1;
	if (exp <= now) {
		snprintf(why, len, "the run's deadline has passed");
		return NULL;
	}
	util_random_hex(jti, 16);
	kid_of(cp->id_pk, kid);
	c = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:s, s:{s:o}}", "iss", IDENTITY_ISSUER, "sub",
		      inst, "iat", (json_int_t)now, "exp", (json_int_t)exp, "jti", jti, "typ", "agent-instance",
		      "tenant_id", r->tenant, "run_id", r->id, "agent_version_id", r->agent_version, "cnf",
		      "jwk", jose_jwk(pk));
	if (c && (payload = jose_jcs(c))) {
		tok = jose_sign(cp->id_sk, kid, "JWT", payload, strlen(payload));
		free(payload);
	}
	json_decref(c);
	if (!tok)
		snprintf(why, len, "out of memory");
	return tok;
}

static void store_receipt(struct cp *cp, const char *run, const char *plane, const char *receipt,
			  const char *error)
{
	char now[24];
	const char *p[] = { run, plane, receipt, error, now };
	struct lerr e;

	snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
	/* the first completion decides; a re-sent one changes nothing */
	if (db_exec(cp->db, "INSERT INTO receipts (run_id, plane_id, receipt, error, created_at) VALUES "
		    "($1, $2, $3, $4, $5) ON CONFLICT (run_id) DO NOTHING", 5, p, &e) < 0)
		log_error("run %s: receipt not saved: %s", run, e.msg);
}

void cp_receipt_take(struct cp *cp, const struct cprun *r, const struct plane *p, const char *jws)
{
	uint8_t pk[JOSE_PK_BYTES], *b = NULL;
	char why[512] = "", kid[JOSE_KID_LEN + 1], *out = NULL;
	struct jose_jws j = { 0 };
	json_t *jwks = NULL, *payload = NULL, *cs = NULL, *extra;
	struct lerr e = { 0 };
	size_t n = 0;

	if (!p->node_key[0] || !(b = jose_b64_decode(p->node_key, strlen(p->node_key), &n)) || n != JOSE_PK_BYTES) {
		snprintf(why, sizeof(why), "plane %s registered no node key to check it with", p->id);
		goto out;
	}
	memcpy(pk, b, sizeof(pk));
	jwks = jose_jwks((const uint8_t(*)[JOSE_PK_BYTES])pk, 1);
	if (jose_parse(jws, strlen(jws), &j, &e) < 0 || j.n != 1 || jose_verify(&j, jwks, &e) < 0) {
		snprintf(why, sizeof(why), "%s", e.msg[0] ? e.msg : "not one signature");
		goto out;
	}
	payload = json_loadb((const char *)j.payload, j.payload_len, 0, NULL);
	if (strcmp(json_string_value(json_object_get(payload, "platform_run_id")) ?: "", r->id) ||
	    strcmp(json_string_value(json_object_get(payload, "tenant_id")) ?: "", r->tenant)) {
		snprintf(why, sizeof(why), "it is signed for run %s of tenant %s, not %s of %s",
			 json_string_value(json_object_get(payload, "platform_run_id")) ?: "?",
			 json_string_value(json_object_get(payload, "tenant_id")) ?: "?", r->id, r->tenant);
		goto out;
	}
	kid_of(cp->rc_pk, kid);
	extra = json_pack("{s:I, s:s}", "iat", (json_int_t)time(NULL), "plane_id", p->id);
	cs = jose_countersign(&j, cp->rc_sk, kid, "lantern-receipt+jws", extra);
	json_decref(extra);
	if (!cs || !(out = json_dumps(cs, JSON_COMPACT | JSON_SORT_KEYS)))
		snprintf(why, sizeof(why), "out of memory");
out:
	if (why[0])
		log_warn("run %s: receipt from plane %s refused: %s", r->id, p->id, why);
	else
		log_info("run %s: receipt checked against plane %s's key and countersigned", r->id, p->id);
	store_receipt(cp, r->id, p->id, out ? out : "", why);
	free(out);
	free(b);
	json_decref(cs);
	json_decref(payload);
	json_decref(jwks);
	jose_jws_free(&j);
}

struct receipt_row {
	bool found;
	char *receipt, *error;
};

static void receipt_row(void *arg, int ncol, char **v)
{
	struct receipt_row *rr = arg;

	if (ncol < 2)
		return;
	rr->found = true;
	rr->receipt = strdup(v[0] ?: "");
	rr->error = strdup(v[1] ?: "");
}

static json_t *jwks_receipts(struct cp *cp)
{
	uint8_t (*keys)[JOSE_PK_BYTES];
	size_t n = 1, k = 0;
	json_t *j;

	for (struct plane *p = cp->planes; p; p = p->next)
		n++;
	if (!(keys = calloc(n, sizeof(*keys))))
		return NULL;
	memcpy(keys[k++], cp->rc_pk, JOSE_PK_BYTES);
	for (struct plane *p = cp->planes; p; p = p->next) {
		size_t len = 0;
		uint8_t *b = p->node_key[0] ? jose_b64_decode(p->node_key, strlen(p->node_key), &len) : NULL;

		if (b && len == JOSE_PK_BYTES)
			memcpy(keys[k++], b, JOSE_PK_BYTES);
		free(b);
	}
	j = jose_jwks((const uint8_t(*)[JOSE_PK_BYTES])keys, k);
	free(keys);
	return j;
}

json_t *cp_identity_page(struct cp *cp, const char *path, unsigned *status)
{
	char id[64], kid[JOSE_KID_LEN + 1], b64[64];
	struct receipt_row rr = { 0 };
	const char *p[1] = { id };
	struct lerr e;
	json_t *j;

	*status = 200;
	if (!strcmp(path, "/.well-known/lantern-agent-identity")) {
		kid_of(cp->id_pk, kid);
		sodium_bin2base64(b64, sizeof(b64), cp->id_pk, JOSE_PK_BYTES, sodium_base64_VARIANT_ORIGINAL);
		return json_pack("{s:s, s:s, s:s, s:s}", "algorithm", "Ed25519", "publicKey", b64,
				 "keyFingerprint", kid, "issuer", IDENTITY_ISSUER);
	}
	if (!strcmp(path, "/.well-known/jwks.json"))
		return jose_jwks((const uint8_t(*)[JOSE_PK_BYTES])cp->id_pk, 1);
	if (!strcmp(path, "/.well-known/lantern-receipts"))
		return jwks_receipts(cp);
	if (sscanf(path, "/v1/runs/%63[^/]/receipt", id) != 1)
		return NULL;
	if (db_query(cp->db, "SELECT receipt, error FROM receipts WHERE run_id = $1", 1, p, receipt_row, &rr,
		     &e) < 0) {
		*status = 500;
		return json_pack("{s:s}", "error", e.msg);
	}
	if (!rr.found) {
		*status = 404;
		j = json_pack("{s:s}", "error", "no receipt for this run (yet)");
	} else if (rr.error[0]) {
		*status = 422;
		j = json_pack("{s:s, s:s}", "error", "the node's receipt was refused", "reason", rr.error);
	} else if (!(j = json_loads(rr.receipt, 0, NULL))) {
		*status = 500;
		j = json_pack("{s:s}", "error", "the stored receipt is damaged");
	}
	free(rr.receipt);
	free(rr.error);
	return j;
}
