/* jose.h: the standard formats identity is expressed in, so that anyone can check it
 * with standard tools: base64url (RFC 4648 §5, no padding), RFC 8785 canonical JSON
 * (JCS), Ed25519 keys as JWK (RFC 8037) with RFC 7638 thumbprints, PEM (PKCS#8 private,
 * SPKI public, which OpenSSL reads), and JWS with alg EdDSA: the compact form (JWTs,
 * the node's receipt) and the general JSON form (a receipt with a countersignature).
 * Pure functions of their inputs; lanternd, the lantern CLI and lantern-cp share them. */
#ifndef LANTERN_JOSE_H
#define LANTERN_JOSE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lantern/util.h"

#define JOSE_PK_BYTES 32
#define JOSE_SK_BYTES 64         /* libsodium's: seed then public key */
#define JOSE_SIG_BYTES 64
#define JOSE_KID_LEN 43          /* base64url of a SHA-256 */

/* Encodes len bytes; malloc'd, NUL-terminated. */
char *jose_b64url(const void *buf, size_t len);
/* Decodes base64url or standard base64, padding optional; malloc'd (one extra NUL
 * byte), NULL when the text is not base64. */
uint8_t *jose_b64_decode(const char *s, size_t slen, size_t *len);

/* RFC 8785: object members sorted by their UTF-16 code units, no white space, the
 * minimal string escapes, numbers as ECMAScript prints them (integers beyond 2^53
 * lose precision exactly as a double would). malloc'd; NULL for NaN or infinity. */
char *jose_jcs(const json_t *j);

/* {"kty":"OKP","crv":"Ed25519","x":...} of a public key. A new reference. */
json_t *jose_jwk(const uint8_t pk[JOSE_PK_BYTES]);
/* The RFC 7638 thumbprint of that JWK (base64url of its SHA-256): the key's id. */
void jose_kid(const uint8_t pk[JOSE_PK_BYTES], char out[JOSE_KID_LEN + 1]);
/* The public key of an Ed25519 JWK; -EINVAL if j is not one. */
int jose_jwk_key(const json_t *j, uint8_t pk[JOSE_PK_BYTES]);
/* {"keys":[jwk with kid, use sig, alg EdDSA, ...]} of n public keys. */
json_t *jose_jwks(const uint8_t (*pks)[JOSE_PK_BYTES], size_t n);

/* PKCS#8 PEM of the private key whose libsodium form is sk; malloc'd. */
char *jose_pem_private(const uint8_t sk[JOSE_SK_BYTES]);
/* SubjectPublicKeyInfo PEM; malloc'd. */
char *jose_pem_public(const uint8_t pk[JOSE_PK_BYTES]);
/* The key pair of a PKCS#8 PEM Ed25519 private key; -EINVAL otherwise. */
int jose_pem_read_private(const char *pem, uint8_t sk[JOSE_SK_BYTES], uint8_t pk[JOSE_PK_BYTES]);

/* Compact JWS of payload bytes, protected header {"alg":"EdDSA","kid":kid,"typ":typ}
 * (typ may be NULL). malloc'd. */
char *jose_sign(const uint8_t sk[JOSE_SK_BYTES], const char *kid, const char *typ,
		const void *payload, size_t len);

/* A JWS read: its payload and one signature per signer. */
#define JOSE_MAX_SIGS 4
struct jose_sig {
	json_t *header;          /* the protected header, parsed */
	char *protected_b64;
	uint8_t sig[JOSE_SIG_BYTES];
	bool verified;           /* set by jose_verify */
};
struct jose_jws {
	char *payload_b64;
	uint8_t *payload;        /* decoded, NUL-terminated */
	size_t payload_len;
	struct jose_sig sigs[JOSE_MAX_SIGS];
	size_t n;
};

/* Parses a compact JWS or a general/flattened JSON JWS. -EBADMSG with the reason. */
int jose_parse(const char *text, size_t len, struct jose_jws *out, struct lerr *e);
void jose_jws_free(struct jose_jws *j);
/* Checks every signature: its header names alg EdDSA and a kid found in jwks (a JWKS
 * object). 0 when all verify; -EKEYREJECTED (or -ENOKEY for an unknown kid) naming the
 * signature and why. */
int jose_verify(struct jose_jws *j, const json_t *jwks, struct lerr *e);
/* The general JSON serialization of j with one more signature by sk (kid, typ, and
 * the fields of extra, if any, in its protected header). A new reference. */
json_t *jose_countersign(const struct jose_jws *j, const uint8_t sk[JOSE_SK_BYTES], const char *kid,
			 const char *typ, const json_t *extra);

#endif
