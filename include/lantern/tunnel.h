/* tunnel.h: the node's side of lantern.v1.DataPlaneService. The node dials out to its
 * control plane and never listens for it: Register (bootstrap token for a session
 * token), Heartbeat (learns drain orders), ReportMetrics, RefreshToken before expiry,
 * and one RunStream (Hello first) on which assignments and cancels arrive and the
 * node's reports go back. Reconnects with jittered exponential backoff.
 *
 * The gRPC client runs on a thread of its own so that nothing it waits for can stall
 * lanternd's event loop. It hands what arrives to the loop through a queue and an
 * eventfd (tunnel_take after the fd is readable); the loop's reports go the other way
 * through tunnel_report/tunnel_complete, which only queue bytes on the stream (a
 * non-blocking gRPC batch) or keep them for the next connection.
 *
 * Several control-plane endpoints (replicas) may be given: the stream and the calls go
 * to one at a time, and move to the next when the stream or a registration fails; the
 * session (signed by a key the replicas share) is presented to whichever is next.
 *
 * Completions are written to STATE/outbox before tunnel_complete returns and re-sent
 * after every reconnect until the control plane acknowledges them (it de-duplicates
 * by run id), so a dropped stream or a restarted lanternd loses none. A control plane
 * that does not acknowledge completions (one that speaks only the platform's proto:
 * it says so at Register) has a completion dropped once a stream took it and stayed
 * up TUNNEL_ACCEPT_MS; either way a completion older than TUNNEL_OUTBOX_MAX_AGE_S is
 * dropped and the outbox keeps at most TUNNEL_OUTBOX_MAX (oldest dropped first).
 *
 * Leases: a control plane that grants them (lease_ttl_ms at Register or in an
 * assignment) is sent a DpLeaseRenew on the stream every third of the TTL, and at
 * once after a run is accepted, listing every run reported live; each answer becomes
 * a TUNNEL_LEASE event counted from when its renewal was sent. */
#ifndef LANTERN_TUNNEL_H
#define LANTERN_TUNNEL_H

#include <stdbool.h>
#include <stdint.h>

#include "lantern/rpc.h"
#include "lantern/util.h"

#define TUNNEL_ACCEPT_MS 10000
#define TUNNEL_OUTBOX_MAX 4096
#define TUNNEL_OUTBOX_MAX_AGE_S (24 * 3600)

/* What the node can still take (DpCapacity); -1: not known. */
struct tunnel_capacity {
	int64_t cpu_millis, memory_bytes, scratch_bytes;
	int free_slots;                /* for each advertised class */
};

struct tunnel_opts {
	const char *target;            /* HOST:PORT of the control plane, or several, comma
					* separated (replicas; one name resolving to several
					* addresses works too: gRPC tries them in turn) */
	const char *tenant;
	const char *token_file;        /* the one-time bootstrap token */
	struct rpc_tls tls;
	const char *state_dir;         /* session.json and outbox/ live here */
	const char *agent_version;
	const char *const *classes;    /* isolation classes this node can run */
	size_t n_classes;
	int max_runs;                  /* runs at once; told to the control plane */
	int backoff_max_ms;            /* reconnect backoff ceiling (default 30 s) */
	const char *journal_store;     /* the journal store's id, or NULL (told at Register) */
	struct tunnel_capacity capacity; /* told at Register; later tunnel_set_capacity */
	const uint8_t *node_pk;        /* the node key (32 bytes), told at Register; or NULL */
	const char *region;            /* told at Register; or NULL */
	/* A signed identity token (or error) arrived: called on the tunnel's thread. */
	void (*on_identity)(void *arg, const char *run_id, const char *inst, const char *token,
			    const char *error);
	void *identity_arg;
};

/* What the control plane asks of the node (wire values of DpRunStatus below). */
enum tunnel_ev_type {
	TUNNEL_ASSIGN,                 /* run_id, config_json, input_json, idem, epoch, deadline */
	TUNNEL_CANCEL,                 /* run_id */
	TUNNEL_DRAIN,                  /* draining */
	TUNNEL_FORGET,                 /* run_id: its completion was acknowledged */
	TUNNEL_LEASE,                  /* renewed and lost runs, counted from sent_ms */
};

struct tunnel_ev {
	enum tunnel_ev_type type;
	char run_id[64];
	char *config_json, *input_json, *idem;
	int64_t epoch, deadline_unix;
	int lease_ttl_ms;              /* ASSIGN: 0 = no lease; LEASE: the TTL granted */
	bool resume;                   /* ASSIGN: continue it from its replicated journal */
	int64_t recv_ms;               /* ASSIGN: monotonic ms it arrived */
	int64_t sent_ms;               /* LEASE: monotonic ms its renewal was sent */
	char **renewed, **lost, **lost_why; /* LEASE: run ids (and why lost) */
	size_t n_renewed, n_lost;
	bool draining;
	struct tunnel_ev *next;
};

enum tunnel_status {
	TUNNEL_ACCEPTED = 1,
	TUNNEL_RUNNING = 2,
	TUNNEL_SUCCEEDED = 3,
	TUNNEL_FAILED = 4,
	TUNNEL_CANCELLED = 5,
	TUNNEL_TIMED_OUT = 6,
};

struct tunnel_completion {
	const char *run_id;
	int64_t epoch;
	enum tunnel_status status;
	const char *detail;
	const char *output_json;
	double cost_usd;
	int64_t tokens_in, tokens_out, duration_ms;
	bool not_started;              /* refused before starting: may be placed again */
	const char *receipt;           /* the run's signed receipt (JWS), or NULL */
};

struct tunnel;

/* Loads the saved session and the outbox, starts the thread. *efd becomes readable
 * when tunnel_take has something. */
int tunnel_start(const struct tunnel_opts *o, struct tunnel **out, int *efd, struct lerr *e);
/* Stops the thread, closes the stream; the outbox stays for the next start. */
void tunnel_stop(struct tunnel *t);
/* Everything queued for the loop, oldest first; free each with tunnel_ev_free. */
struct tunnel_ev *tunnel_take(struct tunnel *t);
void tunnel_ev_free(struct tunnel_ev *ev);
/* What Heartbeat and ReportMetrics say about load. */
void tunnel_set_load(struct tunnel *t, int active_runs, int queue_depth);
/* What ReportMetrics and lease renewals say the node can still take. */
void tunnel_set_capacity(struct tunnel *t, const struct tunnel_capacity *c);
/* The run is no longer this node's (fenced): no more reports or renewals of it. */
void tunnel_forget(struct tunnel *t, const char *run_id);
/* Accepted (TUNNEL_ACCEPTED) or a status change of a live run; the latest one of each
 * run is re-sent after a reconnect. */
void tunnel_report(struct tunnel *t, const char *run_id, int64_t epoch, enum tunnel_status st,
		   const char *detail);
/* Persists the completion, then sends it (now or after reconnect) until acknowledged. */
int tunnel_complete(struct tunnel *t, const struct tunnel_completion *c, struct lerr *e);
/* True while run_id's completion waits for its acknowledgement. */
bool tunnel_pending(struct tunnel *t, const char *run_id);
/* lanternd is stopping: every heartbeat from now on says the node is draining, the
 * next one at once. */
void tunnel_drain(struct tunnel *t);
/* True once the control plane has acknowledged a heartbeat saying so. */
bool tunnel_drain_told(struct tunnel *t);
/* True while the node has a session the control plane answers heartbeats on. */
bool tunnel_registered(struct tunnel *t);
/* Asks the control plane to sign instance inst's token (public key pk, expiring at
 * exp at the latest); the answer comes to on_identity. -ENOENT when the control plane
 * did not say at Register that it signs them (the node signs); -ENOTCONN without a
 * stream (the request is not kept: a start cannot wait for a reconnect). */
int tunnel_identity_request(struct tunnel *t, const char *run_id, int64_t epoch, const char *inst,
			    const uint8_t pk[32], int64_t exp);

#endif
