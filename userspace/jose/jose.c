/* jose.c: base64url, JWK and thumbprints, PEM, and EdDSA JWS (see jose.h). Ed25519 and
 * SHA-256 are libsodium's; the encodings are written out here because they are small
 * and exactly specified, and every byte of them is what a third party verifies. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "lantern/jose.h"

/* DER prefixes of an Ed25519 key (RFC 8410): PKCS#8 before the 32-byte seed,
 * SubjectPublicKeyInfo before the 32-byte public key. */
static const uint8_t pkcs8_prefix[] = { 0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b,
					0x65, 0x70, 0x04, 0x22, 0x04, 0x20 };
static const uint8_t spki_prefix[] = { 0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03,
				       0x21, 0x00 };

char *jose_b64url(const void *buf, size_t len)
{
	size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char *out = malloc(cap);

	if (out)
		sodium_bin2base64(out, cap, buf, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return out;
}

uint8_t *jose_b64_decode(const char *s, size_t slen, size_t *len)
{
	uint8_t *out = malloc(slen * 3 / 4 + 2);
	char *norm = malloc(slen + 1);
	size_t n = 0;

	if (!out || !norm)
		goto fail;
	/* one alphabet (URL-safe) and no padding, whichever the sender used */
	for (size_t i = 0; i < slen; i++) {
		char c = s[i];

		if (c == '=')
			break;
		norm[n++] = c == '+' ? '-' : c == '/' ? '_' : c;
	}
	if (sodium_base642bin(out, slen * 3 / 4 + 1, norm, n, NULL, len, NULL,
			      sodium_base64_VARIANT_URLSAFE_NO_PADDING) < 0)
		goto fail;
	out[*len] = 0;
	free(norm);
	return out;
fail:
	free(out);
	free(norm);
	return NULL;
}

json_t *jose_jwk(const uint8_t pk[JOSE_PK_BYTES])
{
	char *x = jose_b64url(pk, JOSE_PK_BYTES);
	json_t *j = x ? json_pack("{s:s, s:s, s:s}", "kty", "OKP", "crv", "Ed25519", "x", x) : NULL;

	free(x);
	return j;
}

void jose_kid(const uint8_t pk[JOSE_PK_BYTES], char out[JOSE_KID_LEN + 1])
{
	uint8_t h[crypto_hash_sha256_BYTES];
	json_t *jwk = jose_jwk(pk);
	/* RFC 7638: the required members only, sorted, no white space: exactly JCS */
	char *c = jwk ? jose_jcs(jwk) : NULL;

	json_decref(jwk);
	out[0] = '\0';
	if (!c)
		return;
	crypto_hash_sha256(h, (const uint8_t *)c, strlen(c));
	free(c);
	sodium_bin2base64(out, JOSE_KID_LEN + 1, h, sizeof(h), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int jose_jwk_key(const json_t *j, uint8_t pk[JOSE_PK_BYTES])
{
	const char *x = json_string_value(json_object_get(j, "x"));
	const char *kty = json_string_value(json_object_get(j, "kty"));
	const char *crv = json_string_value(json_object_get(j, "crv"));
	uint8_t *b;
	size_t n = 0;

	if (!x || !kty || !crv || strcmp(kty, "OKP") || strcmp(crv, "Ed25519"))
		return -EINVAL;
	if (!(b = jose_b64_decode(x, strlen(x), &n)) || n != JOSE_PK_BYTES) {
		free(b);
		return -EINVAL;
	}
	memcpy(pk, b, JOSE_PK_BYTES);
	free(b);
	return 0;
}

json_t *jose_jwks(const uint8_t (*pks)[JOSE_PK_BYTES], size_t n)
{
	json_t *keys = json_array();

	for (size_t i = 0; keys && i < n; i++) {
		char kid[JOSE_KID_LEN + 1];
		json_t *k = jose_jwk(pks[i]);

		jose_kid(pks[i], kid);
		json_object_set_new(k, "kid", json_string(kid));
		json_object_set_new(k, "use", json_string("sig"));
		json_object_set_new(k, "alg", json_string("EdDSA"));
		json_array_append_new(keys, k);
	}
	return json_pack("{s:o}", "keys", keys);
}

static char *pem(const char *label, const uint8_t *prefix, size_t plen, const uint8_t *key)
{
	uint8_t der[48];
	char b64[sodium_base64_ENCODED_LEN(sizeof(der), sodium_base64_VARIANT_ORIGINAL)];
	char *out = NULL;
	size_t n = plen + 32;

	memcpy(der, prefix, plen);
	memcpy(der + plen, key, 32);
	sodium_bin2base64(b64, sizeof(b64), der, n, sodium_base64_VARIANT_ORIGINAL);
	if (asprintf(&out, "-----BEGIN %s-----\n%s\n-----END %s-----\n", label, b64, label) < 0)
		out = NULL;
	sodium_memzero(der, sizeof(der));
	sodium_memzero(b64, sizeof(b64));
	return out;
}

char *jose_pem_private(const uint8_t sk[JOSE_SK_BYTES])
{
	/* libsodium's secret key starts with the 32-byte seed RFC 8410 stores */
	return pem("PRIVATE KEY", pkcs8_prefix, sizeof(pkcs8_prefix), sk);
}

char *jose_pem_public(const uint8_t pk[JOSE_PK_BYTES])
{
	return pem("PUBLIC KEY", spki_prefix, sizeof(spki_prefix), pk);
}

int jose_pem_read_private(const char *text, uint8_t sk[JOSE_SK_BYTES], uint8_t pk[JOSE_PK_BYTES])
{
	const char *b = strstr(text, "-----BEGIN PRIVATE KEY-----"), *end;
	char body[128];
	uint8_t der[64];
	size_t n = 0, k = 0;
	int err = -EINVAL;

	if (!b || !(end = strstr(b, "-----END PRIVATE KEY-----")))
		return -EINVAL;
	for (b += 27; b < end && k < sizeof(body) - 1; b++)
		if (*b != '\n' && *b != '\r' && *b != ' ')
			body[k++] = *b;
	body[k] = '\0';
	if (sodium_base642bin(der, sizeof(der), body, k, NULL, &n, NULL, sodium_base64_VARIANT_ORIGINAL) == 0 &&
	    n == sizeof(pkcs8_prefix) + 32 && !memcmp(der, pkcs8_prefix, sizeof(pkcs8_prefix))) {
		crypto_sign_seed_keypair(pk, sk, der + sizeof(pkcs8_prefix));
		err = 0;
	}
	sodium_memzero(body, sizeof(body));
	sodium_memzero(der, sizeof(der));
	return err;
}

char *jose_sign(const uint8_t sk[JOSE_SK_BYTES], const char *kid, const char *typ,
		const void *payload, size_t len)
{
	json_t *h = json_pack("{s:s, s:s}", "alg", "EdDSA", "kid", kid);
	char *hj, *hb = NULL, *pb = NULL, *sb = NULL, *out = NULL, *input = NULL;
	uint8_t sig[JOSE_SIG_BYTES];

	if (typ)
		json_object_set_new(h, "typ", json_string(typ));
	hj = h ? jose_jcs(h) : NULL;
	json_decref(h);
	if (!hj || !(hb = jose_b64url(hj, strlen(hj))) || !(pb = jose_b64url(payload, len)) ||
	    asprintf(&input, "%s.%s", hb, pb) < 0)
		goto out;
	crypto_sign_detached(sig, NULL, (const uint8_t *)input, strlen(input), sk);
	if ((sb = jose_b64url(sig, sizeof(sig))) && asprintf(&out, "%s.%s", input, sb) < 0)
		out = NULL;
out:
	free(hj);
	free(hb);
	free(pb);
	free(sb);
	free(input);
	return out;
}

void jose_jws_free(struct jose_jws *j)
{
	free(j->payload_b64);
	free(j->payload);
	for (size_t i = 0; i < j->n; i++) {
		json_decref(j->sigs[i].header);
		free(j->sigs[i].protected_b64);
	}
	memset(j, 0, sizeof(*j));
}

static int add_sig(struct jose_jws *j, const char *prot, size_t plen, const char *sig, size_t slen,
		   struct lerr *e)
{
	struct jose_sig *s;
	uint8_t *h, *b;
	size_t hl, bl;

	if (j->n == JOSE_MAX_SIGS)
		return lerr_set(e, EBADMSG, "jws: more than %d signatures", JOSE_MAX_SIGS);
	s = &j->sigs[j->n];
	if (!(h = jose_b64_decode(prot, plen, &hl)))
		return lerr_set(e, EBADMSG, "jws: signature %zu: protected header is not base64url", j->n + 1);
	s->header = json_loadb((const char *)h, hl, 0, NULL);
	free(h);
	if (!json_is_object(s->header)) {
		json_decref(s->header);
		s->header = NULL;
		return lerr_set(e, EBADMSG, "jws: signature %zu: protected header is not a JSON object",
				j->n + 1);
	}
	if (!(b = jose_b64_decode(sig, slen, &bl)) || bl != JOSE_SIG_BYTES) {
		free(b);
		json_decref(s->header);
		s->header = NULL;
		return lerr_set(e, EBADMSG, "jws: signature %zu: not a 64-byte Ed25519 signature", j->n + 1);
	}
	memcpy(s->sig, b, JOSE_SIG_BYTES);
	free(b);
	s->protected_b64 = strndup(prot, plen);
	j->n++;
	return 0;
}

static int parse_json_form(json_t *doc, struct jose_jws *out, struct lerr *e)
{
	const char *p = json_string_value(json_object_get(doc, "payload"));
	json_t *sigs = json_object_get(doc, "signatures"), *s;
	size_t i;
	int err;

	if (!p)
		return lerr_set(e, EBADMSG, "jws: no \"payload\"");
	out->payload_b64 = strdup(p);
	if (!json_is_array(sigs)) {
		/* the flattened form: one signature at the top level */
		sigs = json_pack("[O]", doc);
	} else {
		json_incref(sigs);
	}
	json_array_foreach(sigs, i, s) {
		const char *pr = json_string_value(json_object_get(s, "protected"));
		const char *sg = json_string_value(json_object_get(s, "signature"));

		if (!pr || !sg) {
			json_decref(sigs);
			return lerr_set(e, EBADMSG, "jws: signature %zu lacks \"protected\" or \"signature\"", i + 1);
		}
		if ((err = add_sig(out, pr, strlen(pr), sg, strlen(sg), e)) < 0) {
			json_decref(sigs);
			return err;
		}
	}
	json_decref(sigs);
	return 0;
}

int jose_parse(const char *text, size_t len, struct jose_jws *out, struct lerr *e)
{
	const char *d1, *d2, *end;
	int err;

	memset(out, 0, sizeof(*out));
	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
		len--;
	while (len && (*text == ' ' || *text == '\n')) {
		text++;
		len--;
	}
	if (len && *text == '{') {
		json_t *doc = json_loadb(text, len, 0, NULL);

		if (!json_is_object(doc)) {
			json_decref(doc);
			return lerr_set(e, EBADMSG, "jws: not a JSON object nor a compact JWS");
		}
		err = parse_json_form(doc, out, e);
		json_decref(doc);
	} else {
		end = text + len;
		if (!(d1 = memchr(text, '.', len)) || !(d2 = memchr(d1 + 1, '.', (size_t)(end - d1 - 1))) ||
		    memchr(d2 + 1, '.', (size_t)(end - d2 - 1)))
			return lerr_set(e, EBADMSG, "jws: a compact JWS is HEADER.PAYLOAD.SIGNATURE");
		out->payload_b64 = strndup(d1 + 1, (size_t)(d2 - d1 - 1));
		err = add_sig(out, text, (size_t)(d1 - text), d2 + 1, (size_t)(end - d2 - 1), e);
	}
	if (!err && !(out->payload = jose_b64_decode(out->payload_b64, strlen(out->payload_b64),
						     &out->payload_len)))
		err = lerr_set(e, EBADMSG, "jws: payload is not base64url");
	if (err)
		jose_jws_free(out);
	return err;
}

static const json_t *find_key(const json_t *jwks, const char *kid)
{
	const json_t *k;
	size_t i;

	json_array_foreach(json_object_get(jwks, "keys"), i, k)
		if (kid && json_string_value(json_object_get(k, "kid")) &&
		    !strcmp(json_string_value(json_object_get(k, "kid")), kid))
			return k;
	return NULL;
}

int jose_verify(struct jose_jws *j, const json_t *jwks, struct lerr *e)
{
	for (size_t i = 0; i < j->n; i++) {
		struct jose_sig *s = &j->sigs[i];
		const char *alg = json_string_value(json_object_get(s->header, "alg"));
		const char *kid = json_string_value(json_object_get(s->header, "kid"));
		const json_t *k = find_key(jwks, kid);
		uint8_t pk[JOSE_PK_BYTES];
		char *input = NULL;
		int bad;

		if (!alg || strcmp(alg, "EdDSA"))
			return lerr_set(e, EKEYREJECTED, "jws: signature %zu: alg \"%s\", not EdDSA", i + 1,
					alg ? alg : "");
		if (!k)
			return lerr_set(e, ENOKEY, "jws: signature %zu: key \"%s\" is not in the key set", i + 1,
					kid ? kid : "(no kid)");
		if (jose_jwk_key(k, pk) < 0)
			return lerr_set(e, EKEYREJECTED, "jws: key \"%s\" is not an Ed25519 JWK", kid);
		if (asprintf(&input, "%s.%s", s->protected_b64, j->payload_b64) < 0)
			return lerr_set(e, ENOMEM, "jws: out of memory");
		bad = crypto_sign_verify_detached(s->sig, (const uint8_t *)input, strlen(input), pk);
		free(input);
		if (bad)
			return lerr_set(e, EKEYREJECTED, "jws: signature %zu (key %s) does not verify", i + 1, kid);
		s->verified = true;
	}
	if (!j->n)
		return lerr_set(e, EKEYREJECTED, "jws: no signature");
	return 0;
}

json_t *jose_countersign(const struct jose_jws *j, const uint8_t sk[JOSE_SK_BYTES], const char *kid,
			 const char *typ, const json_t *extra)
{
	json_t *h = json_pack("{s:s, s:s}", "alg", "EdDSA", "kid", kid), *sigs = json_array();
	char *hj = NULL, *hb = NULL, *input = NULL, *sb = NULL;
	uint8_t sig[JOSE_SIG_BYTES];
	json_t *out = NULL;

	if (!h || !sigs)
		goto done;
	if (typ)
		json_object_set_new(h, "typ", json_string(typ));
	if (extra)
		json_object_update(h, (json_t *)extra);
	if (!(hj = jose_jcs(h)) || !(hb = jose_b64url(hj, strlen(hj))) ||
	    asprintf(&input, "%s.%s", hb, j->payload_b64) < 0)
		goto done;
	crypto_sign_detached(sig, NULL, (const uint8_t *)input, strlen(input), sk);
	if (!(sb = jose_b64url(sig, sizeof(sig))))
		goto done;
	for (size_t i = 0; i < j->n; i++) {
		char *s = jose_b64url(j->sigs[i].sig, JOSE_SIG_BYTES);

		json_array_append_new(sigs, json_pack("{s:s, s:s}", "protected", j->sigs[i].protected_b64,
						      "signature", s ? s : ""));
		free(s);
	}
	json_array_append_new(sigs, json_pack("{s:s, s:s}", "protected", hb, "signature", sb));
	out = json_pack("{s:s, s:O}", "payload", j->payload_b64, "signatures", sigs);
done:
	json_decref(h);
	json_decref(sigs);
	free(hj);
	free(hb);
	free(input);
	free(sb);
	return out;
}
