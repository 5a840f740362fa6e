/* internal.h: the identity subscriber's state, shared by its files: identity.c (node
 * key, instance keys and tokens, the tmpfs, the run hooks, the well-known documents),
 * secrets.c (sources, leases, signed requests) and receipt.c. */
#ifndef LANTERN_IDENTITY_INTERNAL_H
#define LANTERN_IDENTITY_INTERNAL_H

#include <limits.h>
#include <pthread.h>

#include "lantern/identity.h"
#include "lantern/run.h"

/* A token signed elsewhere, waiting to be picked up on the loop (or by a start
 * waiting for it). */
struct signed_token {
	char inst[32];
	char *token;
	char error[256];
	struct signed_token *next;
};

struct identity {
	struct loop *loop;
	struct identity_opts o;
	char state_dir[PATH_MAX], root[PATH_MAX], secrets_dir[PATH_MAX];
	char tenant[64], region[64];
	int secrets_fd;              /* the secrets directory, or -1 */
	char secrets_why[256];       /* why file:// is refused on this node, when it is */
	uint8_t node_pk[JOSE_PK_BYTES];
	uint8_t *node_sk;            /* sodium_malloc'd */
	char node_kid[JOSE_KID_LEN + 1];
	struct runs *runs;
	int slot;
	const struct identity_signer *signer;
	void *signer_arg;
	pthread_mutex_t mu;          /* guards inbox (the tunnel's thread fills it) */
	pthread_cond_t cond;
	struct signed_token *inbox;
	int efd;
	/* counters (Prometheus) */
	uint64_t tokens_node, tokens_remote, sign_failures;
	uint64_t req_ok, req_denied, req_replayed, req_stale, leases, leases_revoked, receipts;
};

struct lease;
struct nonce;

/* One run's identity. */
struct id_run {
	struct identity *id;
	struct run *r;
	char inst[32];
	uint8_t pk[JOSE_PK_BYTES];
	uint8_t *sk;                 /* sodium_malloc'd; freed once in the tmpfs */
	char kid[JOSE_KID_LEN + 1];
	char dir[PATH_MAX];          /* ROOT/<instance>, the tmpfs */
	bool mounted;
	char *token;
	int64_t exp;
	bool remote;                 /* the control plane signs its tokens */
	bool pending;                /* a remote signature is asked for */
	char remote_run_id[64];
	uint64_t refresh_timer;
	/* secrets */
	struct lease *leases;
	size_t nleases;
	struct nonce *nonces;        /* open-addressing table */
	size_t nonce_cap, nonce_n;
	int64_t not_before;          /* requests stamped earlier are refused (adoption) */
	uint64_t revoked;
};

static inline struct id_run *identity_run_of(const struct identity *id, const struct run *r)
{
	return run_slot(r, id->slot);
}

/* secrets.c */
/* Checks every spec.secrets source now: a run never starts without one it names. */
int identity_secrets_check(struct identity *id, const struct run *r, struct lerr *e);
/* Every lease of ir revoked (values wiped); how many were still live. */
size_t identity_secrets_revoke(struct id_run *ir);
void identity_secrets_free(struct id_run *ir);
int identity_secrets_open(struct identity *id, struct lerr *e);

#endif
