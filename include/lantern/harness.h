/* harness.h: the workload-facing harness API (docs/harness-api.md).
 *
 * Two halves:
 *  - an HTTP/1.1 server on a Unix socket, driven by lanternd's event loop (non-blocking:
 *    requests are parsed as bytes arrive, replies may be sent later, after the journal
 *    record they depend on is durable). Keep-alive; one request at a time per
 *    connection; bodies need Content-Length.
 *  - the run's step state, rebuilt only from journal records (harness_state_apply is
 *    the single place records change it, during replay and live alike), and the
 *    decisions on it: begin (replay or proceed, budgets, loops), complete, fail.
 *
 * idempotency_key = lowercase hex SHA-256 of
 *     "lantern-idempotency-v1\n" run_id "\n" step_id "\n" attempt (decimal)
 * so it depends on (run_id, step_id, attempt) alone and is the same on every replay. */
#ifndef LANTERN_HARNESS_H
#define LANTERN_HARNESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "lantern/loop.h"
#include "lantern/meter.h"
#include "lantern/util.h"

#define HARNESS_MAX_BODY (8u << 20)
#define HARNESS_MAX_STEP_ID 256
#define HARNESS_KEY_LEN 64

/* --- HTTP server --- */
struct harness_server;
struct harness_conn;

/* Request headers kept for the handler (the signature of a secrets request): at most
 * this many, each within these bounds; longer or later ones are not kept. */
#define HARNESS_MAX_HEADERS 16
struct harness_header {
	char name[48];
	char value[256];
};

struct harness_request {
	char method[8];
	char path[256];
	const char *body;        /* NUL-terminated */
	size_t body_len;
	struct harness_header headers[HARNESS_MAX_HEADERS];
	size_t n_headers;
};

/* The value of header name (any case) in rq, or NULL. */
const char *harness_header(const struct harness_request *rq, const char *name);

struct harness_ops {
	/* A new connection from pid (SO_PEERCRED). Return false to refuse it; why is sent
	 * as a 403 and the connection closed. */
	bool (*accept)(void *arg, pid_t pid, char *why, size_t whylen);
	/* One request; answer with harness_reply, now or later. */
	void (*request)(void *arg, struct harness_conn *c, const struct harness_request *rq);
	/* The connection is gone: forget c (no reply may follow). */
	void (*closed)(void *arg, struct harness_conn *c);
};

/* Listens on path (replacing a stale socket file), mode 0600. */
int harness_listen(struct loop *l, const char *path, const struct harness_ops *ops, void *arg,
		   struct harness_server **out, struct lerr *e);
/* Sends status with body (consumed) as JSON. */
void harness_reply(struct harness_conn *c, int status, json_t *body);
/* Closes the listener and every connection (without calling closed). The socket file
 * stays, so a workload reconnecting finds the path a restarted lanternd binds again. */
void harness_server_close(struct harness_server *s);

/* --- step state --- */
enum harness_step_state { HSTEP_STARTED = 1, HSTEP_COMPLETED, HSTEP_FAILED };

struct harness_step {
	char *id;
	char kind[8];
	enum harness_step_state state;
	uint32_t attempt;
	bool retryable;
	json_t *record;          /* the step_completed / step_failed payload (or NULL and: */
	char *raw;               /* the payload as replayed, parsed on first use) */
	struct harness_step *next;
};

struct harness_state {
	char run_id[64];
	json_t *input;
	json_t *spec;
	json_t *output;
	json_t *end;             /* the run_completed payload, once recorded */
	struct harness_step **buckets;
	size_t nbuckets, nsteps;
	struct harness_digest **dbuckets;
	size_t ndbuckets, ndigests;
	uint64_t steps_begun;    /* distinct steps that proceeded */
	uint64_t steps_completed;
	struct meter_tally tally; /* tokens of every completed step, by model */
	uint64_t resumes;
	uint64_t records;
};

/* The step budgets the harness keeps itself; tokens and cost are the meter's
 * (meter_budget_spent), checked by the caller. */
struct harness_limits {
	uint64_t max_steps;             /* 0 = unlimited */
	uint32_t loop_threshold;        /* proceeds with one input digest allowed; 0 = off */
};

void harness_state_init(struct harness_state *st);
void harness_state_free(struct harness_state *st);
/* Applies one journal record (type, JSON payload). -EBADMSG if it contradicts the
 * state (a step completed twice, a record for an unknown step). */
int harness_state_apply(struct harness_state *st, unsigned type, json_t *payload, struct lerr *e);
/* The same from raw payload bytes, as a journal scan hands them over. */
int harness_state_apply_raw(struct harness_state *st, unsigned type, const char *payload,
			    size_t len, struct lerr *e);
struct harness_step *harness_state_step(const struct harness_state *st, const char *id);
/* The step's step_completed / step_failed payload (parsed now if it was replayed). */
json_t *harness_step_record(struct harness_step *s);
/* The step that is started and not yet completed or failed, if any (for resume). */
struct harness_step *harness_state_in_flight(const struct harness_state *st);

void harness_idempotency_key(const char *run_id, const char *step_id, uint32_t attempt,
			     char out[HARNESS_KEY_LEN + 1]);

enum harness_verdict {
	HV_REPLAY,               /* completed: reply with the record */
	HV_PROCEED,              /* append *record (step_started), then run */
	HV_DONE,                 /* nothing to append; reply ok (a repeated complete/fail) */
	HV_RECORD,               /* append *record, then reply ok */
	HV_INVALID,              /* 400 */
	HV_CONFLICT,             /* 409: wrong state (failed for good, not started, ...) */
	HV_BUDGET,               /* 429: a budget or the loop guard; the run must end */
};

struct harness_decision {
	enum harness_verdict v;
	unsigned type;           /* record type for HV_PROCEED / HV_RECORD */
	json_t *record;          /* owned by the caller */
	uint32_t attempt;
	char key[HARNESS_KEY_LEN + 1];
	bool loop;               /* HV_BUDGET because of the loop guard */
	char reason[512];
};

/* POST /v1/steps/begin body. */
void harness_begin(const struct harness_state *st, const struct harness_limits *lim,
		   json_t *body, struct harness_decision *out);
/* POST /v1/steps/complete body; cost_usd is what lanternd priced the usage at. */
void harness_complete(const struct harness_state *st, json_t *body, double cost_usd,
		      struct harness_decision *out);
/* POST /v1/steps/fail body. */
void harness_fail(const struct harness_state *st, json_t *body, struct harness_decision *out);

#endif
