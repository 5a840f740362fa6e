/* kube_internal.h: what the files of userspace/kube/ share: the loaded configuration
 * (config.c) as the client (client.c) uses it. */
#ifndef LANTERN_KUBE_INTERNAL_H
#define LANTERN_KUBE_INTERNAL_H

#include <limits.h>
#include <stdint.h>

#include "lantern/kube.h"

/* client-go reads a token file again after a minute; bound service-account tokens
 * are rotated by the kubelet well before they expire */
#define KUBE_TOKEN_REREAD_NS (60ull * 1000000000ull)

struct kube_config {
	char server[512];        /* https://HOST:PORT, no trailing slash */
	char source[PATH_MAX + 32]; /* "kubeconfig PATH" or "in-cluster ...", for messages */
	char *ca_file, *ca_pem;  /* at most one; neither: the system's CAs */
	char *cert_file, *cert_pem;
	char *key_file, *key_pem;
	char *token;             /* the bearer token (from token_file when that is set) */
	char *token_file;
	uint64_t token_read_ns;  /* CLOCK_MONOTONIC of the last read of token_file */
	bool insecure;           /* insecure-skip-tls-verify in the kubeconfig */
};

/* Reads token_file again when the last read is older than KUBE_TOKEN_REREAD_NS. */
int kube_config_token(struct kube_config *c, struct lerr *e);

#endif
