/* cp.h: lantern-cp, the control plane: its state and the files that share it.
 * main.c (flags, threads), db.c (SQLite or PostgreSQL, migrations), token.c (bootstrap
 * tokens, session JWTs), service.c (DataPlaneService over gRPC), sched.c (placement,
 * queue, liveness), http.c (the operator API), identity.c (instance tokens, receipts
 * checked and countersigned, the keys' well-known documents).
 *
 * Threads: the gRPC thread serves DataPlaneService and runs the periodic checks;
 * libmicrohttpd's thread serves the operator API. Both take cp->mu around every touch of
 * the state and the database, so the state below is only ever seen whole. */
#ifndef LANTERN_CP_H
#define LANTERN_CP_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <sodium.h>

#include "lantern/rpc.h"
#include "lantern/util.h"

struct db;

/* A data plane (a node), from POST /v1/data-planes on. */
struct plane {
	char id[40];                /* dp-<16 hex> */
	char tenant[128];
	char name[128];
	char hostname[256];
	char classes[256];          /* isolation classes it advertised, comma separated */
	int max_runs;               /* 0: no stated limit */
	bool registered;            /* its bootstrap token was exchanged */
	bool draining, down;
	bool self_draining;         /* the node asked for its drain (it is stopping); its
				     * next heartbeat without it lifts it. Not kept across a
				     * restart of lantern-cp: the drain is, an operator lifts it */
	int64_t last_hb_ms;         /* monotonic ms of its last heartbeat (or of start) */
	int reported_active, queue_depth;
	double cpu_pct, mem_pct;
	int active;                 /* runs placed on it and not final */
	uint64_t placed;            /* runs ever placed on it: ties go to the least used */
	struct session *stream;     /* its RunStream, if one is open */
	char node_key[64];          /* its node key (base64url), from Register; "" if none */
	char region[64];            /* from Register */
	struct plane *next;
};

enum run_state {
	RS_QUEUED, RS_ASSIGNED, RS_ACCEPTED, RS_RUNNING,
	RS_SUCCEEDED, RS_FAILED, RS_CANCELLED, RS_TIMED_OUT,
};

struct cprun {
	char id[40];                /* run-<16 hex> */
	char tenant[128];
	char isolation[32];
	char pin[40];               /* operator's choice of plane, or "" */
	char idem[128];             /* idempotency key (a re-sent assignment carries it) */
	char *config_json;          /* the AgentSpec, normalized JSON */
	char *input_json;
	enum run_state state;
	char plane[40];
	int64_t epoch;              /* fencing: bumped at every placement */
	char detail[512];
	char *output_json;
	double cost_usd;
	int64_t tokens_in, tokens_out, duration_ms;
	bool cancel_requested;
	int64_t retry_ms;           /* monotonic ms before which a requeued run waits */
	int64_t created_us, assigned_us, accepted_us, running_us, finished_us; /* unix µs */
	char regions[256];          /* spec.preferred_regions, comma separated */
	bool region_fallback;       /* the spec lets it run elsewhere when none is free */
	char agent_version[160];    /* agent_version_id: a label, else metadata.name */
	double timeout_s;           /* spec.limits.timeout; 0: none */
	struct cprun *next;
};

/* One open RunStream. */
struct session {
	struct cp *cp;
	struct rpc_stream *s;
	struct plane *plane;        /* set once Hello was accepted */
	char tenant[128];
	struct session *next;
};

struct cp_opts {
	const char *listen;         /* gRPC, default [::]:50051 */
	const char *http;           /* operator API, default 127.0.0.1:8080 */
	const char *database;       /* sqlite path or postgres://… */
	struct rpc_tls tls;
	const char *operator_token_file;
	int heartbeat_s, metrics_s, session_ttl_s, ping_s;
	int down_after;             /* missed heartbeats before a plane is down */
	size_t max_message;
	int max_streams_per_tenant;
};

struct cp {
	struct cp_opts o;
	pthread_mutex_t mu;
	struct db *db;
	char operator_token[256];
	unsigned char sign_pk[crypto_sign_PUBLICKEYBYTES];
	unsigned char sign_sk[crypto_sign_SECRETKEYBYTES];
	/* identity.c: instance tokens and receipt countersignatures, each its own key */
	unsigned char id_pk[crypto_sign_PUBLICKEYBYTES], id_sk[crypto_sign_SECRETKEYBYTES];
	unsigned char rc_pk[crypto_sign_PUBLICKEYBYTES], rc_sk[crypto_sign_SECRETKEYBYTES];
	struct plane *planes;
	struct cprun *runs, *runs_tail;  /* in submission order: the queue is the queued ones */
	struct session *sessions;
	struct rpc_cq *q;
	struct rpc_server *srv;
	volatile int stop;
};

int64_t cp_now_us(void);
int64_t cp_mono_ms(void);
const char *cp_state_name(enum run_state s);
bool cp_state_final(enum run_state s);

/* db.c: url is a file path (SQLite) or postgres://… (PostgreSQL). Parameters are
 * written $1, $2… in the SQL for both and passed as text (NULL: SQL NULL). */
typedef void (*db_row_cb)(void *arg, int ncol, char **vals);
int db_open(const char *url, struct db **out, struct lerr *e);
void db_close(struct db *db);
/* Runs the embedded migrations not yet recorded in schema_migrations. */
int db_migrate(struct db *db, struct lerr *e);
/* Returns the number of rows changed, or -errno. */
int db_exec(struct db *db, const char *sql, int n, const char *const *params, struct lerr *e);
int db_query(struct db *db, const char *sql, int n, const char *const *params, db_row_cb cb,
	     void *arg, struct lerr *e);
const char *db_kind(const struct db *db);

/* token.c */
int token_keys_load(struct cp *cp, struct lerr *e);
/* The key pair stored as id in signing_keys (made by the first replica to start). */
int token_key_load(struct cp *cp, const char *id, unsigned char *pk, unsigned char *sk, struct lerr *e);
/* 32 random bytes, hex; hash is its SHA-256, hex (what the database keeps). */
void token_bootstrap_new(char out[65], char hash[65]);
void token_hash(const char *token, char hash[65]);
/* A session JWT (EdDSA) for plane and tenant, valid ttl_s seconds. */
char *token_session_new(struct cp *cp, const char *plane, const char *tenant, int ttl_s,
			int64_t *exp);
/* Checks signature, expiry, and that it was issued to plane_id; sets *tenant. */
int token_session_check(struct cp *cp, const char *jwt, const char *plane_id, char *tenant,
			size_t tlen, struct lerr *e);

/* sched.c (cp->mu held) */
int cp_load(struct cp *cp, struct lerr *e);
struct plane *cp_plane(struct cp *cp, const char *id);
struct cprun *cp_run(struct cp *cp, const char *id);
void cp_save_plane(struct cp *cp, struct plane *p);
void cp_save_run(struct cp *cp, struct cprun *r);
/* Places queued runs on planes that fit; sends their assignments. */
void cp_dispatch(struct cp *cp);
/* Sends r's assignment on its plane's stream. */
void cp_send_assignment(struct cp *cp, struct cprun *r);
void cp_send_cancel(struct cp *cp, struct cprun *r);
/* Ends r (final state) and frees its place. */
void cp_run_end(struct cp *cp, struct cprun *r, enum run_state st, const char *detail);
int cp_cancel(struct cp *cp, struct cprun *r);
/* A plane gave r back unstarted: it waits in the queue a moment, then is placed again. */
void cp_requeue(struct cp *cp, struct cprun *r, const char *why);
/* Periodic: planes that missed heartbeats go down, streams get pinged. */
void cp_tick(struct cp *cp);
json_t *cp_run_json(const struct cprun *r);
json_t *cp_plane_json(const struct cp *cp, const struct plane *p);

/* service.c */
extern const struct rpc_method cp_methods[];
extern const size_t cp_n_methods;
void cp_session_send(struct session *ss, const void *msg, size_t len);

/* identity.c (cp->mu held) */
/* What a run's spec says about placement and its token (regions, agent version). */
void cp_run_spec_info(struct cprun *r);
/* A signed identity token for instance inst of r (pk: its key), or NULL with why. */
char *cp_identity_token(struct cp *cp, const struct cprun *r, const char *inst, const uint8_t *pk,
			size_t pklen, int64_t exp, char *why, size_t len);
/* Checks the node's receipt for r against plane p's key, countersigns and stores it. */
void cp_receipt_take(struct cp *cp, const struct cprun *r, const struct plane *p, const char *jws);
/* GET /.well-known/... (no authorization) and GET /v1/runs/{id}/receipt: the body
 * and its status; NULL when path is not one of them. */
json_t *cp_identity_page(struct cp *cp, const char *path, unsigned *status);

/* http.c */
int http_start(struct cp *cp, struct lerr *e);
void http_stop(void);

#endif
