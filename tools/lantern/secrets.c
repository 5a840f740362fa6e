/* secrets.c: `lantern secrets exec -- CMD ARGS...`, run inside a workload: asks the
 * harness API for every secret the spec names (GET /v1/secrets), each request signed
 * with the instance key ($LANTERN_IDENTITY_DIR/key), and execs CMD with them as
 * environment variables, for programs that read their keys from the environment.
 * The values pass through this process's memory only; nothing is written. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "cli.h"
#include "lantern/identity.h"
#include "lantern/jose.h"
#include "lantern/util.h"

#define EXIT_SECRETS 125

/* The header lines of a signed request (see docs/identity.md); malloc'd. */
static char *sign_headers(const uint8_t *sk, const char *method, const char *path, const char *body)
{
	uint8_t digest[crypto_hash_sha256_BYTES], sig[JOSE_SIG_BYTES];
	char hex[2 * crypto_hash_sha256_BYTES + 1], nonce[33], *msg = NULL, *b64, *out = NULL;
	long long ts = (long long)time(NULL);

	crypto_hash_sha256(digest, (const uint8_t *)body, strlen(body));
	sodium_bin2hex(hex, sizeof(hex), digest, sizeof(digest));
	util_random_hex(nonce, 16);
	if (asprintf(&msg, "lantern-secrets-v1\n%s\n%s\n%s\n%lld\n%s", method, path, hex, ts, nonce) < 0)
		return NULL;
	crypto_sign_detached(sig, NULL, (const uint8_t *)msg, strlen(msg), sk);
	free(msg);
	if (!(b64 = jose_b64url(sig, sizeof(sig))))
		return NULL;
	if (asprintf(&out, "X-Lantern-Timestamp: %lld\r\nX-Lantern-Nonce: %s\r\nX-Lantern-Signature: %s\r\n",
		     ts, nonce, b64) < 0)
		out = NULL;
	free(b64);
	return out;
}

static int load_key(uint8_t *sk)
{
	const char *dir = getenv("LANTERN_IDENTITY_DIR");
	char path[4096], *pem = NULL;
	uint8_t pk[JOSE_PK_BYTES];
	size_t len;
	int err;

	snprintf(path, sizeof(path), "%s/key", dir && *dir ? dir : IDENTITY_SANDBOX_DIR);
	if ((err = util_read_file(path, &pem, &len)) < 0) {
		fprintf(stderr, "lantern secrets: the instance key %s: %s\n", path, strerror(-err));
		return err;
	}
	err = jose_pem_read_private(pem, sk, pk);
	sodium_memzero(pem, len);
	free(pem);
	if (err < 0)
		fprintf(stderr, "lantern secrets: %s is not an Ed25519 private key\n", path);
	return err;
}

static int fetch(const char *sock, const uint8_t *sk, const char *name)
{
	char path[320], *hdr;
	json_t *resp = NULL;
	const char *v;
	int status = 0, err;

	snprintf(path, sizeof(path), "/v1/secrets/%s", name);
	if (!(hdr = sign_headers(sk, "POST", path, "")))
		return -ENOMEM;
	err = harness_http(sock, "POST", path, "", hdr, &status, &resp);
	free(hdr);
	if (err < 0 || status != 200) {
		fprintf(stderr, "lantern secrets: %s: %s\n", name,
			err < 0 ? strerror(-err) : json_string_value(json_object_get(resp, "reason")) ?: "refused");
		json_decref(resp);
		return err < 0 ? err : -EACCES;
	}
	if ((v = json_string_value(json_object_get(resp, "value")))) {
		setenv(name, v, 1);
	} else if ((v = json_string_value(json_object_get(resp, "value_b64")))) {
		size_t n;
		uint8_t *b = jose_b64_decode(v, strlen(v), &n);

		/* an environment variable ends at its first NUL: say so rather than cut it */
		if (!b || memchr(b, 0, n)) {
			fprintf(stderr, "lantern secrets: %s holds a NUL byte: it cannot be an environment "
				"variable\n", name);
			free(b);
			json_decref(resp);
			return -EINVAL;
		}
		setenv(name, (char *)b, 1);
		sodium_memzero(b, n);
		free(b);
	}
	json_decref(resp);
	return 0;
}

int cmd_secrets(struct cli *c, int argc, char **argv)
{
	const char *sock = getenv("LANTERN_HARNESS_SOCKET");
	uint8_t *sk;
	json_t *list = NULL, *n;
	int status = 0, i = 2;
	size_t k;

	if (argc < 4 || strcmp(argv[1], "exec") || strcmp(argv[2], "--")) {
		fprintf(stderr, "usage: lantern secrets exec -- CMD [ARGS...]   (inside a workload)\n");
		return 2;
	}
	i = 3;
	if (!sock || !*sock) {
		fprintf(stderr, "lantern secrets: LANTERN_HARNESS_SOCKET is not set (run inside a Lantern workload)\n");
		return EXIT_SECRETS;
	}
	if (sodium_init() < 0 || !(sk = sodium_malloc(JOSE_SK_BYTES)))
		return EXIT_SECRETS;
	if (load_key(sk) < 0 || harness_http(sock, "GET", "/v1/secrets", NULL, NULL, &status, &list) < 0 ||
	    status != 200) {
		if (status && status != 200)
			fprintf(stderr, "lantern secrets: GET /v1/secrets: %s\n",
				json_string_value(json_object_get(list, "reason")) ?: "refused");
		sodium_free(sk);
		json_decref(list);
		return EXIT_SECRETS;
	}
	json_array_foreach(json_object_get(list, "secrets"), k, n) {
		if (fetch(sock, sk, json_string_value(n)) < 0) {
			sodium_free(sk);
			json_decref(list);
			return EXIT_SECRETS;
		}
	}
	sodium_free(sk);
	json_decref(list);
	execvp(argv[i], argv + i);
	fprintf(stderr, "lantern secrets: %s: %s\n", argv[i], strerror(errno));
	return 127;
}
