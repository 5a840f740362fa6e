/* sha256.c: the SHA-256 of the journal's hash chain, from OpenSSL's libcrypto (already
 * loaded in lanternd through gRPC and libcurl). libcrypto uses the CPU's SHA extensions
 * (x86 SHA-NI, ARMv8 SHA2) where there are any: verifying the chain of a 5 MB journal
 * takes a few ms with it against ~20 ms with libsodium's portable code (bench/journal
 * prints both). The digest is the same SHA-256 either way.
 *
 * The chain hashes one record (~300 bytes) at a time, so setting up a digest context
 * per call would cost as much as the hashing: each thread keeps one context for its
 * life (freed when the thread exits), and the SHA-256 implementation is fetched once. */
#include <errno.h>
#include <pthread.h>

#include <openssl/evp.h>

#include "lantern/journal.h"

static EVP_MD *sha256_md;
static pthread_key_t sha256_ctx_key;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_ctx_free(void *ctx)
{
	EVP_MD_CTX_free(ctx);
}

static void sha256_setup(void)
{
	if (pthread_key_create(&sha256_ctx_key, sha256_ctx_free))
		return;
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

int journal_sha256(uint8_t out[JOURNAL_HASH_BYTES], const void *buf, size_t len)
{
	EVP_MD_CTX *ctx;

	pthread_once(&sha256_once, sha256_setup);
	if (!sha256_md)
		return -EIO;
	ctx = pthread_getspecific(sha256_ctx_key);
	if (!ctx) {
		if (!(ctx = EVP_MD_CTX_new()))
			return -ENOMEM;
		if (pthread_setspecific(sha256_ctx_key, ctx)) {
			EVP_MD_CTX_free(ctx);
			return -ENOMEM;
		}
	}
	if (EVP_DigestInit_ex2(ctx, sha256_md, NULL) != 1 || EVP_DigestUpdate(ctx, buf, len) != 1 ||
	    EVP_DigestFinal_ex(ctx, out, NULL) != 1)
		return -EIO;
	return 0;
}
