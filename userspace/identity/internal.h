/* internal.h: the identity subscriber's state, shared by its files: identity.c (node
 * key, instance keys and tokens, the tmpfs, the run hooks, the well-known documents),
 * secrets.c (sources, leases, signed requests), k8s.c (k8s:// sources: the API server
 * read before a start and when a lease expires) and receipt.c. */
#ifndef LANTERN_IDENTITY_INTERNAL_H
#define LANTERN_IDENTITY_INTERNAL_H

#include <limits.h>
#include <pthread.h>

#include "lantern/identity.h"
#include "lantern/run.h"

/* a secret's value, at most (a file's, a Secret key's) */
#define SECRET_MAX_BYTES (64u << 10)
#define IDENTITY_K8S_SCHEME "k8s://"
/* a read of the API server, at most: a start waits for it */
#define IDENTITY_K8S_TIMEOUT_MS 5000
/* a Secret's name, a key of its data: at most */
#define K8S_NAME_MAX 253

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
	struct kube *kube;           /* k8s:// secrets are read with it; NULL: refused */
	struct run_prefetch *prefetches; /* reading, or read and not freed by their caller */
	struct secret_waiter *waiters;   /* harness requests waiting for a read */
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
	/* pooled sandboxes' instances whose tmpfs is mounted and no run has taken yet */
	char (*premounted)[32];
	size_t n_premounted, cap_premounted;
	/* counters (Prometheus) */
	uint64_t tokens_node, tokens_remote, sign_failures;
	uint64_t req_ok, req_denied, req_replayed, req_stale, leases, leases_revoked, receipts;
};

struct lease;
struct nonce;
struct k8s_read;

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
	uint32_t retry_ms;           /* a refresh not answered is asked again after this (doubling) */
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
/* Moves the values read before the start (k8s://) into ir's leases. */
void identity_secrets_seed(struct identity *id, struct id_run *ir);
/* Harness requests of ir still waiting for a read: answered 503 with why, dropped. */
void identity_secrets_abandon(struct identity *id, struct id_run *ir, const char *why);
/* Every read in flight dropped (the API client is going), its waiters answered 503. */
void identity_secrets_stop(struct identity *id);
/* Waiters forgotten unanswered (identity closes). */
void identity_secrets_drop(struct identity *id);

/* k8s.c */
/* k8s://NAME/KEY into name and key (K8S_NAME_MAX + 1 bytes each); a refusal names field. */
int identity_k8s_parse(const char *field, const char *uri, char *name, char *key, struct lerr *e);
/* 0 when uri can be read for tenant on this node (its syntax, an API client). */
int identity_k8s_usable(struct identity *id, const char *field, const char *uri, const char *tenant,
			struct lerr *e);
/* A read's end: the value (sodium_malloc'd, the callee's), or NULL and why. */
typedef void (*k8s_read_fn)(void *arg, uint8_t *value, size_t len, const char *why);
int identity_k8s_read(struct identity *id, const char *tenant, const char *field, const char *uri,
		      k8s_read_fn fn, void *arg, struct k8s_read **out, struct lerr *e);
/* Drops a read whose fn has not run; fn will not run. NULL is fine. */
void identity_k8s_cancel(struct k8s_read *rd);
/* The value of spec.secrets[i] (uri, k8s://) read before r's start: with v, taken into
 * *v (sodium_malloc'd); without, only checked. A refusal says why it is not there. */
int identity_prefetch_take(struct identity *id, const struct run *r, size_t i, const char *field, const char *uri,
			   uint8_t **v, size_t *len, int64_t *read_at, struct lerr *e);
/* Reads in flight dropped; their entries say lanternd is stopping. */
void identity_prefetch_stop(struct identity *id);

#endif
