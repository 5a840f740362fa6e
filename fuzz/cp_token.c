/* cp_token.c (fuzz target "cp_token"): lantern-cp's session token check
 * (token_session_check in tools/lantern-cp/token.c), which guards every call of a node
 * after Register: a JWT signed with EdDSA, bound to a plane and its tenant, with an expiry.
 *
 * Input: a mode byte, then pieces (16-bit length prefixed).
 *  mode 0: a token and a plane id, as a node (or anyone reaching the port) sends them;
 *  mode 1: a JWT header and claims (any bytes) that the target signs with the control
 *          plane's key, and a plane id: the checks behind the signature;
 *  mode 2: a token the control plane issued, with bytes of it changed (offset, xor
 *          pairs): a changed token must not pass.
 * Properties beyond the sanitizers: a token passes only if its signature over
 * "header.claims" verifies with the key, its header says EdDSA, its claims name the plane
 * as subject and a tenant, and it has not expired (checked here independently); a token
 * passes with the tenant it names; and in mode 2, only the token as issued passes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cp.h"
#include "fuzzlib.h"

static struct cp cp;

static char *b64(const void *p, size_t len)
{
	size_t n = sodium_base64_encoded_len(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char *s = malloc(n);

	sodium_bin2base64(s, n, p, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return s;
}

/* What the check must conclude, worked out here on its own. */
static bool should_pass(const char *jwt, const char *plane, char *tenant, size_t tlen)
{
	const char *d1 = strchr(jwt, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
	unsigned char sig[crypto_sign_BYTES], head[256], body[2048];
	size_t sl, hl, bl;
	json_t *h, *c;
	bool ok;

	if (!d2 || strchr(d2 + 1, '.') || strlen(jwt) > 4096 ||
	    sodium_base642bin(sig, sizeof(sig), d2 + 1, strlen(d2 + 1), NULL, &sl, NULL,
			      sodium_base64_VARIANT_URLSAFE_NO_PADDING) < 0 || sl != sizeof(sig) ||
	    crypto_sign_verify_detached(sig, (const unsigned char *)jwt, (size_t)(d2 - jwt), cp.sign_pk) ||
	    sodium_base642bin(head, sizeof(head) - 1, jwt, (size_t)(d1 - jwt), NULL, &hl, NULL,
			      sodium_base64_VARIANT_URLSAFE_NO_PADDING) < 0 ||
	    sodium_base642bin(body, sizeof(body) - 1, d1 + 1, (size_t)(d2 - d1 - 1), NULL, &bl, NULL,
			      sodium_base64_VARIANT_URLSAFE_NO_PADDING) < 0)
		return false;
	h = json_loadb((char *)head, hl, 0, NULL);
	c = json_loadb((char *)body, bl, 0, NULL);
	ok = json_is_string(json_object_get(h, "alg")) &&
	     !strcmp(json_string_value(json_object_get(h, "alg")), "EdDSA") &&
	     json_is_string(json_object_get(c, "sub")) && json_is_string(json_object_get(c, "tenant")) &&
	     !strcmp(json_string_value(json_object_get(c, "sub")), plane) &&
	     json_integer_value(json_object_get(c, "exp")) > (json_int_t)time(NULL);
	if (ok)
		snprintf(tenant, tlen, "%s", json_string_value(json_object_get(c, "tenant")));
	json_decref(h);
	json_decref(c);
	return ok;
}

static void check(const char *jwt, const char *plane, bool may_pass)
{
	char tenant[128] = "", want[128] = "";
	struct lerr e = { 0 };
	int r = token_session_check(&cp, jwt, plane, tenant, sizeof(tenant), &e);
	bool pass = should_pass(jwt, plane, want, sizeof(want));

	FZ_CHECK((r == 0) == pass, "token %s for plane %s: check %d (%s), expected %s", jwt, plane, r,
		 e.msg, pass ? "a pass" : "a refusal");
	FZ_CHECK(r != 0 || !strcmp(tenant, want), "passed with tenant \"%s\", the token names \"%s\"",
		 tenant, want);
	FZ_CHECK(r != 0 || may_pass, "a changed token passed: %s", jwt);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* a fixed key: seeds may hold tokens it signed */
	unsigned char seed[crypto_sign_SEEDBYTES] = "lantern-cp fuzz signing key 0123";

	FZ_CHECK(sodium_init() >= 0, "libsodium");
	crypto_sign_seed_keypair(cp.sign_pk, cp.sign_sk, seed);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	unsigned mode = fz_u8(&f) % 3;
	char *a = fz_str(&f, NULL), *b = fz_str(&f, NULL), *plane = fz_str(&f, NULL);

	if (mode == 0) {
		check(a, b, true);
	} else if (mode == 1) {
		char *hs = b64(a, strlen(a)), *cs = b64(b, strlen(b)), *signing, *ss, *jwt;
		unsigned char sig[crypto_sign_BYTES];

		FZ_CHECK(asprintf(&signing, "%s.%s", hs, cs) > 0, "asprintf");
		crypto_sign_detached(sig, NULL, (unsigned char *)signing, strlen(signing), cp.sign_sk);
		ss = b64(sig, sizeof(sig));
		FZ_CHECK(asprintf(&jwt, "%s.%s", signing, ss) > 0, "asprintf");
		check(jwt, plane, true);
		free(hs);
		free(cs);
		free(signing);
		free(ss);
		free(jwt);
	} else {
		int64_t exp;
		/* NULL for a plane id that is not UTF-8 (lantern-cp makes them dp-HEX) */
		char *tok = token_session_new(&cp, plane, "tenant-a", 3600, &exp);
		char *orig = tok ? strdup(tok) : NULL;
		size_t n = tok ? strlen(tok) : 0;

		for (size_t i = 0; tok && i + 1 < strlen(a); i += 2)
			tok[(unsigned char)a[i] % n] ^= a[i + 1] & 0x7f;
		if (tok && strlen(tok) == n)
			check(tok, plane, !strcmp(tok, orig));
		free(tok);
		free(orig);
	}
	free(a);
	free(b);
	free(plane);
	return 0;
}
