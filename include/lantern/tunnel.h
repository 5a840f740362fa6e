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
 * Completions are written to STATE/outbox before tunnel_complete returns and re-sent
 * after every reconnect until the control plane acknowledges them (it de-duplicates
 * by run id), so a dropped stream or a restarted lanternd loses none. */
#ifndef LANTERN_TUNNEL_H
#define LANTERN_TUNNEL_H

#include <stdbool.h>
#include <stdint.h>

#include "lantern/rpc.h"
#include "lantern/util.h"

struct tunnel_opts {
	const char *target;            /* HOST:PORT of the control plane */
	const char *tenant;
	const char *token_file;        /* the one-time bootstrap token */
	struct rpc_tls tls;
	const char *state_dir;         /* session.json and outbox/ live here */
	const char *agent_version;
	const char *const *classes;    /* isolation classes this node can run */
	size_t n_classes;
	int max_runs;                  /* runs at once; told to the control plane */
	int backoff_max_ms;            /* reconnect backoff ceiling (default 30 s) */
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
};

struct tunnel_ev {
	enum tunnel_ev_type type;
	char run_id[64];
	char *config_json, *input_json, *idem;
	int64_t epoch, deadline_unix;
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
