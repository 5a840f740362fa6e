/* token.c: the two secrets of the tunnel, and the control plane's keys. A bootstrap token is 32 random bytes shown once
 * to the operator; only its SHA-256 is stored, and Register consumes it once. A session
 * token is a JWT signed with EdDSA (Ed25519, libsodium), bound to one plane and its
 * tenant, valid session_ttl (1 h); every RPC after Register presents it.
 *
 * The signing keys live in the database (signing_keys) so that a restarted control
 * plane, or another replica, accepts the tokens it issued: the session key, and
 * identity.c's instance-token and receipt keys. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cp.h"

#define KEY_ID "session-ed25519"

static void key_row(void *arg, int ncol, char **vals)
{
	char **out = arg;

	if (ncol > 0 && vals[0] && !*out)
		*out = strdup(vals[0]);
}

int token_key_load(struct cp *cp, const char *id, unsigned char *pk_out, unsigned char *sk_out,
		   struct lerr *e)
{
	unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
	char hex[crypto_sign_SECRETKEYBYTES * 2 + 1], now[32], *stored = NULL;
	const char *p[] = { id, hex, now };
	size_t bin_len = 0;
	int err;

	/* every replica offers a fresh key; the first one written wins and all use it */
	crypto_sign_keypair(pk, sk);
	sodium_bin2hex(hex, sizeof(hex), sk, sizeof(sk));
	snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
	err = db_exec(cp->db, "INSERT INTO signing_keys (id, secret, created_at) VALUES ($1, $2, $3) "
		      "ON CONFLICT (id) DO NOTHING", 3, p, e);
	sodium_memzero(hex, sizeof(hex));
	sodium_memzero(sk, sizeof(sk));
	if (err < 0)
		return err;
	if ((err = db_query(cp->db, "SELECT secret FROM signing_keys WHERE id = $1", 1, p, key_row,
			    &stored, e)) < 0)
		return err;
	if (!stored || sodium_hex2bin(sk_out, crypto_sign_SECRETKEYBYTES, stored, strlen(stored), NULL,
				      &bin_len, NULL) < 0 || bin_len != crypto_sign_SECRETKEYBYTES) {
		free(stored);
		return lerr_set(e, EINVAL, "database: signing key %s is missing or damaged", id);
	}
	sodium_memzero(stored, strlen(stored));
	free(stored);
	crypto_sign_ed25519_sk_to_pk(pk_out, sk_out);
	return 0;
}

int token_keys_load(struct cp *cp, struct lerr *e)
{
	int err;

	if ((err = token_key_load(cp, KEY_ID, cp->sign_pk, cp->sign_sk, e)) < 0 ||
	    (err = token_key_load(cp, "identity-ed25519", cp->id_pk, cp->id_sk, e)) < 0)
		return err;
	return token_key_load(cp, "receipts-ed25519", cp->rc_pk, cp->rc_sk, e);
}

void token_hash(const char *token, char hash[65])
{
	unsigned char h[crypto_hash_sha256_BYTES];

	crypto_hash_sha256(h, (const unsigned char *)token, strlen(token));
	sodium_bin2hex(hash, 65, h, sizeof(h));
}

void token_bootstrap_new(char out[65], char hash[65])
{
	unsigned char b[32];

	randombytes_buf(b, sizeof(b));
	sodium_bin2hex(out, 65, b, sizeof(b));
	sodium_memzero(b, sizeof(b));
	token_hash(out, hash);
}

static char *b64url(const void *p, size_t len)
{
	size_t n = sodium_base64_encoded_len(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char *s = malloc(n);

	if (s)
		sodium_bin2base64(s, n, p, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return s;
}

char *token_session_new(struct cp *cp, const char *plane, const char *tenant, int ttl_s,
			int64_t *exp)
{
	static const char header[] = "{\"alg\":\"EdDSA\",\"typ\":\"JWT\"}";
	unsigned char sig[crypto_sign_BYTES];
	char jti[17], *h, *pl, *s, *signing = NULL, *out = NULL;
	int64_t now = (int64_t)time(NULL);
	json_t *claims;

	util_random_hex(jti, 8);
	*exp = now + ttl_s;
	claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "iss", "lantern-cp", "sub", plane,
			   "tenant", tenant, "iat", (json_int_t)now, "exp", (json_int_t)*exp, "jti", jti);
	s = json_dumps(claims, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(claims);
	h = b64url(header, strlen(header));
	pl = s ? b64url(s, strlen(s)) : NULL;
	free(s);
	if (h && pl && asprintf(&signing, "%s.%s", h, pl) > 0) {
		char *sg;

		crypto_sign_detached(sig, NULL, (const unsigned char *)signing, strlen(signing),
				     cp->sign_sk);
		sg = b64url(sig, sizeof(sig));
		if (sg && asprintf(&out, "%s.%s", signing, sg) < 0)
			out = NULL;
		free(sg);
	}
	free(signing);
	free(h);
	free(pl);
	return out;
}

int token_session_check(struct cp *cp, const char *jwt, const char *plane_id, char *tenant,
			size_t tlen, struct lerr *e)
{
	const char *dot1 = strchr(jwt, '.'), *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	unsigned char sig[crypto_sign_BYTES], head[256], body[2048];
	size_t siglen = 0, hlen = 0, blen = 0;
	json_t *h = NULL, *c = NULL;
	const char *alg, *sub, *ten;
	json_int_t exp;
	int err = -EACCES;

	if (!dot1 || !dot2 || strchr(dot2 + 1, '.') || strlen(jwt) > 4096)
		return lerr_set(e, EACCES, "session token: not a JWT");
	if (sodium_base642bin(sig, sizeof(sig), dot2 + 1, strlen(dot2 + 1), NULL, &siglen, NULL,
			      sodium_base64_VARIANT_URLSAFE_NO_PADDING) < 0 || siglen != sizeof(sig) ||
	    crypto_sign_verify_detached(sig, (const unsigned char *)jwt, (size_t)(dot2 - jwt),
					cp->sign_pk) != 0)
		return lerr_set(e, EACCES, "session token: bad signature");
	if (sodium_base642bin(head, sizeof(head) - 1, jwt, (size_t)(dot1 - jwt), NULL, &hlen, NULL,
			      sodium_base64_VARIANT_URLSAFE_NO_PADDING) < 0 ||
	    sodium_base642bin(body, sizeof(body) - 1, dot1 + 1, (size_t)(dot2 - dot1 - 1), NULL, &blen,
			      NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) < 0)
		return lerr_set(e, EACCES, "session token: bad encoding");
	h = json_loadb((const char *)head, hlen, 0, NULL);
	c = json_loadb((const char *)body, blen, 0, NULL);
	alg = json_string_value(json_object_get(h, "alg"));
	sub = json_string_value(json_object_get(c, "sub"));
	ten = json_string_value(json_object_get(c, "tenant"));
	exp = json_integer_value(json_object_get(c, "exp"));
	if (!alg || strcmp(alg, "EdDSA"))
		lerr_set(e, EACCES, "session token: algorithm is not EdDSA");
	else if (!sub || !ten)
		lerr_set(e, EACCES, "session token: no subject or tenant");
	else if (exp <= (json_int_t)time(NULL))
		lerr_set(e, EACCES, "session token: expired at %lld", (long long)exp);
	else if (strcmp(sub, plane_id))
		lerr_set(e, EACCES, "session token: issued to plane %s, presented for %s", sub, plane_id);
	else {
		snprintf(tenant, tlen, "%s", ten);
		err = 0;
	}
	json_decref(h);
	json_decref(c);
	return err;
}
