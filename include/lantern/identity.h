/* identity.h: who an instance is, what it may be given, and what a run did, signed.
 * A run subscriber with three parts:
 *
 *  - keys and tokens: the node key (Ed25519, STATE/node.key, 0600, made on first start)
 *    and, for every instance, a fresh key pair whose private half exists only in
 *    lanternd's memory (until written) and in a tmpfs of its own, mounted per instance
 *    on the node (ROOT/<instance>, read-only once written) and shown to an OCI sandbox at
 *    /run/lantern/identity, to a host process as $LANTERN_IDENTITY_DIR; beside it an
 *    identity token, a JWT (EdDSA) with the platform's agent-instance claims and cnf.jwk
 *    holding the instance's public key, signed by the control plane when a signer is set
 *    (cplane) and by the node key otherwise. A resumed run is a fresh instance: a fresh
 *    key and token.
 *  - secrets: spec.secrets resolved at admission from data-plane sources (file:// under
 *    the node's secrets directory; k8s://NAME/KEY, a Secret's key in the tenant's
 *    namespace, read through the Kubernetes runtime's API client before the start:
 *    identity_prefetch), vended on the harness API to requests signed with the instance
 *    key, under short leases that are re-read after they expire and revoked at
 *    teardown. A value is only ever in lanternd's memory (sodium_malloc'd) and the
 *    answer to the workload: never in a file, the journal, a log or a span.
 *  - receipts: at the end of a run, canonical JSON (RFC 8785) of what it was and did,
 *    signed by the node key as a compact JWS; durable appends it to the journal as its
 *    last record (identity_receipt_seal), cplane sends it with the completion.
 *
 * docs/identity.md has the formats, the claims and how a third party verifies. */
#ifndef LANTERN_IDENTITY_H
#define LANTERN_IDENTITY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "lantern/harness.h"
#include "lantern/jose.h"
#include "lantern/loop.h"
#include "lantern/run.h"
#include "lantern/util.h"

#define IDENTITY_ISSUER "lantern-agent"
#define IDENTITY_SANDBOX_DIR "/run/lantern/identity"
#define IDENTITY_DEFAULT_SECRET_TTL 300
/* A signed request's timestamp may be this old (the workload shares the node's clock;
 * the window only covers a slow request), or this far ahead. */
#define IDENTITY_REQUEST_MAX_AGE_S 10
#define IDENTITY_REQUEST_MAX_AHEAD_S 5

struct identity;
struct egress;
struct metrics;

struct identity_opts {
	const char *state_dir;       /* STATE/node.key */
	const char *tmpfs_root;      /* ROOT/<instance>: each instance's identity tmpfs */
	const char *secrets_dir;     /* file:// secrets live below it; NULL: none */
	const char *tenant;          /* the tenant of local runs' tokens */
	const char *region;          /* in receipts; may be NULL */
	uint32_t secret_ttl_s;       /* a lease's life (0: IDENTITY_DEFAULT_SECRET_TTL) */
	uint32_t token_ttl_s;        /* a token's life when the run has no deadline (0: 1 h) */
	uint32_t sign_timeout_ms;    /* how long a start waits for a remote signature */
	struct egress *egress;       /* the compiled policy's digest, for receipts */
};

int identity_open(struct loop *l, const struct identity_opts *o, struct identity **out,
		  struct lerr *e);
void identity_close(struct identity *id);
int identity_subscribe(struct identity *id, struct runs *t, struct lerr *e);

/* The node key's public half (told to the control plane at Register). */
const uint8_t *identity_node_key(const struct identity *id);

/* ---- tokens ---- */

/* A control plane that signs instance tokens (cplane). request asks for a token for
 * r's instance (its public key, the latest exp the node accepts) without waiting;
 * -ENOENT when r is not the control plane's (the node key signs), another -errno when
 * it cannot ask now. On success it sets remote_run_id, the control plane's id of the
 * run (in the receipt). The answer comes through identity_token_signed. */
struct identity_signer {
	int (*request)(void *arg, struct run *r, const uint8_t pk[JOSE_PK_BYTES], int64_t exp,
		       char *remote_run_id, size_t len);
};
void identity_set_signer(struct identity *id, const struct identity_signer *s, void *arg);
/* A token signed for instance inst, or why not (error). Safe from any thread. */
void identity_token_signed(struct identity *id, const char *inst, const char *token,
			   const char *error);

/* Gives r's instance its identity: a fresh key pair, its tmpfs with the key, and a
 * token (waiting up to sign_timeout_ms for a remote signer). The admission path calls
 * it; so can whatever binds an identity to an instance later (a pool claim). */
int identity_issue(struct identity *id, struct run *r, struct lerr *e);

/* A pooled sandbox's identity tmpfs (docs/pools.md), made before any run has the
 * instance: mounted empty now, so the sandbox can show it at IDENTITY_SANDBOX_DIR from
 * its start; identity_issue for the run that claims the instance fills it (key, token)
 * and makes it read-only, as for a cold start. Its path goes to dir.
 * identity_instance_release unmounts one no run took (nothing if a run has it). */
int identity_instance_prepare(struct identity *id, const char *inst, char *dir, size_t len,
			      struct lerr *e);
void identity_instance_release(struct identity *id, const char *inst);

/* `lantern identity RUN`: token, public key, issuer, expiry, leases. A new reference. */
json_t *identity_run_json(struct identity *id, struct run *r);
/* The node key as a JWKS (what verifies node-signed tokens and receipts). */
json_t *identity_jwks(const struct identity *id);
/* GET /.well-known/lantern-agent-identity, /.well-known/jwks.json and
 * /.well-known/lantern-receipts on lanternd's metrics address. */
int identity_serve_wellknown(struct identity *id, struct metrics *m);

/* ---- secrets (the harness API's /v1/secrets) ---- */

/* The API client k8s:// secrets are read with (the Kubernetes runtime's), or NULL:
 * then they are refused, saying this node has none; and every read in flight is
 * dropped (before the client closes). */
struct kube;
void identity_set_kube(struct identity *id, struct kube *k);

/* k8s:// secrets are read before a run starts, since admission cannot wait: whoever
 * starts a run from a spec (yaml, as runs_start takes it) asks first. 0: the spec
 * names none (or does not parse: the start says why), start at once with no
 * prefetch. 1: *out is reading them; done(arg, pf) runs on the loop once every read
 * has ended, never from within this call; then start with .prefetch = pf in the
 * run_submit and free pf after runs_start returns. The admitted or resumed hook takes
 * the values, or refuses the run with the reason one could not be read (a missing
 * Secret or key, 403, an API server that did not answer within 5 s). A caller whose
 * start is called off frees pf before done; done then does not run. */
typedef void (*identity_prefetch_fn)(void *arg, struct run_prefetch *pf);
int identity_prefetch(struct identity *id, const char *file, const char *yaml, size_t len,
		      identity_prefetch_fn done, void *arg, struct run_prefetch **out);
void identity_prefetch_free(struct run_prefetch *pf);

/* A decoded GET /v1/secrets or POST /v1/secrets/{env_name} (HOP_SECRETS, HOP_SECRET)
 * from r's instance (the caller peer): checks the request's signature, freshness and
 * nonce, and answers with the value and its lease. Returns the HTTP status and *body,
 * the JSON answer (malloc'd; it may hold a secret: wipe before freeing); or 0 when
 * the answer waits for the source (an expired lease of a k8s:// secret): then
 * done(arg, peer, status, body, len) gives it later, on the loop (body as above, the
 * callee's), unless identity_secret_forget(id, peer) came first. */
typedef void (*identity_answer_fn)(void *arg, void *peer, int status, char *body, size_t len);
int identity_secret_request(struct identity *id, struct run *r, const struct harness_call *c, void *peer,
			    identity_answer_fn done, void *arg, char **body, size_t *len);
/* peer went away: its waiting requests are dropped (their reads cancelled). */
void identity_secret_forget(struct identity *id, void *peer);

/* ---- receipts ---- */

/* What durable knows of a journal when it seals it. */
struct identity_journal {
	uint8_t head[32];            /* SHA-256 of its last record (run_completed) */
	uint64_t records;
	/* what run_completed says of the run's cost (the meter's components, lanternd's
	 * own data: the record itself also holds the workload's output, never parsed) */
	const json_t *cost;
	double cost_usd;
	uint64_t tokens, steps_completed;
};
/* The run's receipt as a compact JWS signed by the node key, also kept as
 * RUN/receipt.jws; malloc'd, NULL with the reason logged. */
char *identity_receipt_seal(struct identity *id, struct run *r, const struct identity_journal *jh);
/* r's receipt (RUN/receipt.jws), or NULL when it has none; malloc'd. */
char *identity_receipt(const struct run *r);

/* Prometheus: tokens issued, secret requests by outcome, leases, receipts. */
struct metrics_out;
void identity_metrics(void *id, struct metrics_out *o);

#endif
