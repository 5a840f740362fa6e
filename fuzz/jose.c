/* jose.c (fuzz target "jose"): the JOSE formats identity is expressed in
 * (userspace/jose): JWS parsing and verification (a node's receipt, as lantern-cp reads
 * it; tokens), base64url, RFC 8785 canonical JSON, PEM private keys.
 *
 * Input: a mode byte, then:
 *  mode 0: a JWS (compact or JSON), parsed and verified against a key set holding the
 *          target's fixed key: it verifies only if every signature checks out, here, with
 *          that key over "protected.payload", and its payload is its payload_b64 decoded;
 *  mode 1: a payload the target signs (jose_sign), then changed by (offset, xor) pairs
 *          from the input: a changed JWS verifies only if what is signed (header and
 *          payload, as text) is unchanged and its signature decodes to the same bytes
 *          (jose_b64_decode takes standard base64 too: '+' for '-', '/' for '_');
 *  mode 2: text decoded as base64: what decodes encodes (base64url) to text that
 *          decodes to the same bytes;
 *  mode 3: JSON put in canonical form (jose_jcs): the form is JSON, and canonical
 *          again unchanged;
 *  mode 4: a PEM private key read (jose_pem_read_private): a key read has its public
 *          half. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fuzzlib.h"
#include "lantern/jose.h"

static uint8_t pk[JOSE_PK_BYTES], sk[JOSE_SK_BYTES];
static char kid[JOSE_KID_LEN + 1];
static json_t *jwks;

static bool verifies_here(const struct jose_jws *j)
{
	size_t n;
	uint8_t *p = jose_b64_decode(j->payload_b64, strlen(j->payload_b64), &n);
	bool ok = p && n == j->payload_len && !memcmp(p, j->payload, n);

	free(p);
	for (size_t i = 0; ok && i < j->n; i++) {
		char *input;

		FZ_CHECK(asprintf(&input, "%s.%s", j->sigs[i].protected_b64, j->payload_b64) > 0, "asprintf");
		ok = !crypto_sign_verify_detached(j->sigs[i].sig, (uint8_t *)input, strlen(input), pk);
		free(input);
	}
	return ok && j->n;
}

/* Two compact JWSs sign the same text with the same signature bytes. */
static bool same_signed(const char *a, const char *b)
{
	const char *da = strrchr(a, '.'), *db = strrchr(b, '.');
	uint8_t *sa, *sb;
	size_t na, nb;
	bool same;

	if (!da || !db || da - a != db - b || memcmp(a, b, (size_t)(da - a)))
		return false;
	sa = jose_b64_decode(da + 1, strlen(da + 1), &na);
	sb = jose_b64_decode(db + 1, strlen(db + 1), &nb);
	same = sa && sb && na == nb && !memcmp(sa, sb, na);
	free(sa);
	free(sb);
	return same;
}

static int parse_verify(const char *text, size_t len, bool *here)
{
	struct jose_jws j = { 0 };
	struct lerr e = { 0 };
	int err = jose_parse(text, len, &j, &e);

	if (!err) {
		err = jose_verify(&j, jwks, &e);
		*here = verifies_here(&j);
		jose_jws_free(&j);
		FZ_CHECK(err || *here, "jose_verify passed a JWS that does not verify: %.*s", (int)len, text);
	}
	return err;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	unsigned char seed[crypto_sign_SEEDBYTES] = "lantern jose fuzz signing key 01";

	FZ_CHECK(sodium_init() >= 0, "libsodium");
	crypto_sign_seed_keypair(pk, sk, seed);
	jose_kid(pk, kid);
	jwks = jose_jwks((const uint8_t (*)[JOSE_PK_BYTES])pk, 1);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	unsigned mode = fz_u8(&f) % 5;
	size_t len;
	const char *text = (const char *)fz_rest(&f, &len);
	bool here = false;

	if (mode == 0) {
		parse_verify(text, len, &here);
	} else if (mode == 1) {
		size_t half = len / 2, n;
		char *jws = jose_sign(sk, kid, "receipt", text + half, len - half), *orig;

		FZ_CHECK(jws, "jose_sign");
		orig = strdup(jws);
		n = strlen(jws);
		for (size_t i = 0; i + 1 < half; i += 2)
			jws[(uint8_t)text[i] % n] ^= (char)(text[i + 1] & 0x7f);
		if (strlen(jws) == n && parse_verify(jws, n, &here) == 0 && strcmp(jws, orig))
			FZ_CHECK(same_signed(jws, orig), "a changed JWS verifies: %s (signed %s)", jws, orig);
		free(jws);
		free(orig);
	} else if (mode == 2) {
		size_t n, m;
		uint8_t *b = jose_b64_decode(text, len, &n), *again;
		char *enc;

		if (b) {
			enc = jose_b64url(b, n);
			again = jose_b64_decode(enc, strlen(enc), &m);
			FZ_CHECK(again && m == n && !memcmp(again, b, n), "base64url of decoded bytes "
				 "decodes to others: %s", enc);
			free(again);
			free(enc);
			free(b);
		}
	} else if (mode == 3) {
		json_t *j = json_loadb(text, len, JSON_DECODE_ANY, NULL), *k;
		char *c, *c2;

		if (!j)
			return 0;
		if ((c = jose_jcs(j))) {
			/* as reals: 1e20 is written 100000000000000000000, past jansson's integers */
			k = json_loads(c, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
			FZ_CHECK(k, "canonical JSON is not JSON: %s", c);
			c2 = jose_jcs(k);
			FZ_CHECK(c2 && !strcmp(c, c2), "canonical twice differs: %s / %s", c, c2 ? c2 : "");
			free(c2);
			json_decref(k);
			free(c);
		}
		json_decref(j);
	} else {
		char *pem = strndup(text, len);
		uint8_t rsk[JOSE_SK_BYTES], rpk[JOSE_PK_BYTES], derived[JOSE_PK_BYTES];

		if (jose_pem_read_private(pem, rsk, rpk) == 0) {
			crypto_sign_ed25519_sk_to_pk(derived, rsk);
			FZ_CHECK(!memcmp(derived, rpk, sizeof(rpk)), "a PEM key read without its public half");
		}
		free(pem);
	}
	return 0;
}
