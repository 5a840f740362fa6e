/* harness.h: the workload-facing harness API (docs/harness-api.md).
 *
 * Three parts, split where workload bytes stop:
 *  - http.c: an HTTP/1.1 server on a Unix socket, non-blocking (requests are parsed as
 *    bytes arrive, replies may be sent later, after the journal record they depend on
 *    is durable). Keep-alive; one request at a time per connection; Content-Length.
 *  - call.c: a request (method, path, JSON body) decoded and checked into a typed
 *    struct harness_call. These two are the only code that reads a workload's bytes;
 *    they run in the unprivileged helper (lantern-wire) when lanternd has one.
 *  - state.c and record.c: the run's step state, rebuilt only from journal records
 *    (harness_state_apply is the single place records change it, during replay and live
 *    alike), the decisions on typed calls (begin: replay or proceed, the step budget and
 *    the loop guard; complete; fail), and the records as JSON text. The state keeps
 *    where each step's record is in the journal, not the record: a replayed result is
 *    read back from the journal when a workload asks for it.
 *
 * idempotency_key = lowercase hex SHA-256 of
 *     "lantern-idempotency-v1\n" run_id "\n" step_id "\n" attempt (decimal)
 * so it depends on (run_id, step_id, attempt) alone and is the same on every replay. */
#ifndef LANTERN_HARNESS_H
#define LANTERN_HARNESS_H

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

/* Listens on path (replacing a stale socket file). The mode lets any local user
 * connect: who may use it is decided by accept (the caller's cgroup), so a workload
 * running as another user than root can. */
int harness_listen(struct loop *l, const char *path, const struct harness_ops *ops, void *arg,
		   struct harness_server **out, struct lerr *e);
/* The two halves of harness_listen, for privilege separation (lanternd binds, the
 * unprivileged lantern-wire serves): a listening socket at path, and serving one
 * (the fd is taken, also on failure). */
int harness_bind(const char *path, struct lerr *e);
int harness_serve(struct loop *l, int fd, const struct harness_ops *ops, void *arg,
		  struct harness_server **out, struct lerr *e);
/* Sends status with a JSON body (len bytes, copied). */
void harness_reply(struct harness_conn *c, int status, const char *json, size_t len);
/* The same, then closes the connection (a refused caller). */
void harness_reply_close(struct harness_conn *c, int status, const char *json, size_t len);
/* A connection's id (unique in the process, never reused) and its caller's pid. */
uint64_t harness_conn_id(const struct harness_conn *c);
pid_t harness_conn_pid(const struct harness_conn *c);
/* The live connection with that id, or NULL (it went away). */
struct harness_conn *harness_conn_find(struct harness_server *s, uint64_t id);
/* Closes the listener and every connection (without calling closed). The socket file
 * stays, so a workload reconnecting finds the path a restarted lanternd binds again. */
void harness_server_close(struct harness_server *s);

/* --- a call, decoded (call.c) --- */
enum harness_op {
	HOP_INPUT = 1,           /* GET /v1/input */
	HOP_RUN,                 /* GET /v1/run */
	HOP_BEGIN,               /* POST /v1/steps/begin */
	HOP_COMPLETE,            /* POST /v1/steps/complete */
	HOP_FAIL,                /* POST /v1/steps/fail */
	HOP_OUTPUT,              /* POST /v1/output */
	HOP_SECRETS,             /* GET /v1/secrets */
	HOP_SECRET,              /* POST /v1/secrets/{env_name}, signed (identity.h) */
};

#define HARNESS_MAX_ERROR 4096   /* a failed step's error text is kept up to this */

/* The usage an llm step reports; has says which token counts it gave. */
enum {
	HU_INPUT = 1, HU_OUTPUT = 2, HU_CACHE_READ = 4, HU_CACHE_CREATION = 8, HU_REASONING = 16,
	HU_PROVIDER = 32, HU_MODEL = 64,
};
struct harness_usage {
	bool present;
	unsigned has;
	char provider[64];
	char model[96];
	char operation[64];        /* for its span only */
	char response_model[96];
	struct meter_tokens t;
};

struct harness_call {
	enum harness_op op;
	char step_id[HARNESS_MAX_STEP_ID + 1];
	char kind[8];              /* begin: llm, tool or other */
	char digest[257];          /* begin: input_digest */
	bool have_digest;
	uint32_t attempt;          /* complete, fail: the attempt the caller names */
	bool have_attempt;
	int64_t exit_code;         /* complete */
	bool have_exit_code;
	struct harness_usage usage; /* complete */
	char tool[256];            /* complete: "name" or "tool", for its span */
	char error[HARNESS_MAX_ERROR + 1]; /* fail */
	bool retryable;            /* fail */
	char *value;               /* complete: "result" as compact JSON, or "result_b64" as a
				    * JSON string; output: "output" as compact JSON */
	size_t value_len;
	bool value_b64;
	/* secret: the name, the request's signature headers as sent ("" when absent or
	 * longer than these), and the SHA-256 of its body (what the signature covers) */
	char env_name[128];
	char sig_ts[24];
	char sig_nonce[129];
	char sig[100];
	uint8_t body_sha256[32];
};

/* Decodes one request. Returns 0, or the HTTP status to answer (400, 404, 405) with the
 * reason in why. c must be freed with harness_call_free either way. */
int harness_call_decode(const char *method, const char *path, const char *body, size_t len,
			struct harness_call *c, char *why, size_t whylen);
void harness_call_free(struct harness_call *c);
/* The same from a whole request, headers included: /v1/secrets reads its signature
 * from them; any other call is harness_call_decode's. */
int harness_call_decode_request(const struct harness_request *rq, struct harness_call *c, char *why,
				size_t whylen);

/* --- step state --- */
enum harness_step_state { HSTEP_STARTED = 1, HSTEP_COMPLETED, HSTEP_FAILED };

struct harness_step {
	char *id;
	char kind[8];
	enum harness_step_state state;
	uint32_t attempt;
	bool retryable;
	uint64_t rec_off;          /* its step_completed / step_failed record in the journal */
	char *error;               /* failed: the start of its error, for a refusal's reason */
	struct harness_step *next;
};

struct harness_state {
	char run_id[64];
	uint64_t started_off;     /* the run_started record (it holds the input) */
	uint64_t output_off;      /* the last output_set record, 0 if none */
	bool end;                 /* run_completed is recorded */
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
/* Applies one journal record (type, its JSON text, where it is in the journal).
 * -EBADMSG if it contradicts the state (a step completed twice, a record for an unknown
 * step) or is not a record lantern writes. Workload text in it is never parsed as
 * JSON here: the record scanner reads the few fields the state needs. */
int harness_state_apply(struct harness_state *st, unsigned type, const char *payload, size_t len,
			uint64_t offset, struct lerr *e);
struct harness_step *harness_state_step(const struct harness_state *st, const char *id);
/* The step that is started and not yet completed or failed, if any (for resume). */
struct harness_step *harness_state_in_flight(const struct harness_state *st);

void harness_idempotency_key(const char *run_id, const char *step_id, uint32_t attempt,
			     char out[HARNESS_KEY_LEN + 1]);

enum harness_verdict {
	HV_REPLAY,               /* completed: reply with its record (read back from the journal) */
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
	char *record;            /* its JSON text (sorted keys), owned by the caller */
	size_t record_len;
	uint32_t attempt;
	char key[HARNESS_KEY_LEN + 1];
	bool loop;               /* HV_BUDGET because of the loop guard */
	bool reissued;           /* HV_PROCEED of the attempt in flight (after a crash) */
	char reason[512];
};

void harness_begin(const struct harness_state *st, const struct harness_limits *lim,
		   const struct harness_call *c, struct harness_decision *out);
/* cost_usd is what lanternd priced the usage at (kept in the record). */
void harness_complete(const struct harness_state *st, const struct harness_call *c, double cost_usd,
		      struct harness_decision *out);
void harness_fail(const struct harness_state *st, const struct harness_call *c,
		  struct harness_decision *out);
/* An output_set record for c (HOP_OUTPUT). */
void harness_output(const struct harness_call *c, struct harness_decision *out);

/* --- records as text (record.c) --- */
/* A JSON object written by hand, so workload JSON (a step's result, the run's output)
 * goes into a record as the bytes lantern-wire checked, never parsed here. Keys must be
 * added in sorted order (records are written sorted). On running out of memory the
 * buffer is marked failed and json_text_take returns NULL. */
struct json_text {
	char *buf;
	size_t len, cap;
	bool first, failed;
};
void json_text_open(struct json_text *t);
void json_text_str(struct json_text *t, const char *key, const char *v);
void json_text_int(struct json_text *t, const char *key, int64_t v);
void json_text_uint(struct json_text *t, const char *key, uint64_t v);
void json_text_real(struct json_text *t, const char *key, double v);
void json_text_bool(struct json_text *t, const char *key, bool v);
/* raw is JSON text (an object, array, string, number, ...) put in as it is. */
void json_text_raw(struct json_text *t, const char *key, const char *raw, size_t len);
/* Closes the object; returns the text (NUL-terminated, *len bytes) to free, or NULL. */
char *json_text_take(struct json_text *t, size_t *len);

/* The raw text of member key of the JSON object text (as lantern writes records), or
 * NULL: *len bytes at the returned pointer. For reading a record's "input", "output",
 * "result" back without parsing it. */
const char *harness_record_member(const char *obj, size_t len, const char *key, size_t *vlen);

#endif
