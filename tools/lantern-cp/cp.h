/* cp.h: lantern-cp, the control plane: what its files share. Several replicas may run
 * on one PostgreSQL (one on a SQLite file); the database holds the whole state (planes,
 * runs, their placement and leases, the leader lease), so any replica accepts node
 * streams and operator calls, and a replica keeps in memory only the streams it holds.
 *
 *   main.c    flags, threads, the main loop (who calls whom, each tick)
 *   db.c      SQLite or PostgreSQL, the migrations, NOTIFY/LISTEN
 *   state.c   planes and runs as rows: loading, JSON for the operator API
 *   leader.c  the leader lease (fenced by its epoch) and the replicas' liveness
 *   sched.c   the leader's work: placement by capacity, why a run waits, the
 *             watchdog (expired leases re-scheduled with resume), planes gone down
 *   service.c DataPlaneService: registration, heartbeats, the RunStream (reports,
 *             lease renewals, delivery of the assignments placed on its planes)
 *   wake.c    wake-ups: within a replica (flags) and across replicas (NOTIFY)
 *   http.c    the operator API
 *   token.c   bootstrap tokens, session JWTs, the control plane's keys
 *   identity.c instance identity tokens, receipts checked and countersigned, the keys'
 *             well-known documents
 * Calls go one way: main → leader, sched, service, wake; http → state, sched, service,
 * wake, identity; service → state, wake, identity; sched → state, wake; identity →
 * state (the planes' keys); wake → db. sched and
 * service never call each other: placement wakes delivery through wake.c, and what
 * changes room (a completion, a renewal) marks placement due through wake.c too.
 *
 * Threads: the main thread polls the gRPC completion queue (serving DataPlaneService)
 * and runs the periodic work between completions; libmicrohttpd's thread serves the
 * operator API; on PostgreSQL a listener thread waits for other replicas' NOTIFYs.
 * cp->mu guards the database handle and the sessions. */
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

enum run_state {
	RS_QUEUED, RS_ASSIGNED, RS_ACCEPTED, RS_RUNNING,
	RS_SUCCEEDED, RS_FAILED, RS_CANCELLED, RS_TIMED_OUT,
};
#define RS_LIVE_SQL "('assigned', 'accepted', 'running')"
#define RS_FINAL_SQL "('succeeded', 'failed', 'cancelled', 'timed_out')"

/* A data plane (a node), as its row says. */
struct plane {
	char id[40];                /* dp-<16 hex> */
	char tenant[128];
	char name[128];
	char hostname[256];
	char classes[256];          /* isolation classes it advertised, comma separated ("": any) */
	char journal_store[64];     /* the id of the journal store it replicates to, or "" */
	char stream_replica[64];    /* the replica holding its RunStream, or "" */
	char node_key[64];          /* its node key (base64url), from Register; "" if none */
	char region[64];            /* from Register */
	int max_runs;               /* 0: no stated limit */
	bool registered, draining, down;
	bool self_draining;         /* the node asked for its drain (it is stopping); its next
				     * heartbeat without it lifts it (an operator's drain stays) */
	int64_t hb_us;              /* unix µs of its last heartbeat */
	int reported_active, queue_depth;
	double cpu_pct, mem_pct;
	int64_t cap_cpu, cap_memory, cap_scratch; /* what it can still take; -1: not said */
	int cap_slots;              /* free slots it reported; -1: not said */
	int64_t cap_us;             /* when it said so */
	uint64_t placed;            /* runs ever placed on it: ties go to the least used */
	/* sched.c, during one placement round */
	int active;                 /* live runs placed on it */
	int64_t pend_cpu, pend_memory, pend_scratch;
	int pend_slots;             /* placed since its last capacity report */
	struct plane *next;
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
	int64_t epoch;              /* fencing: raised at every placement */
	char detail[512];
	char *output_json;
	double cost_usd;
	int64_t tokens_in, tokens_out, duration_ms;
	bool cancel_requested;
	int64_t cpu_millis, memory_bytes, scratch_bytes; /* its spec.limits */
	bool resume;                /* started on a node whose lease expired: continue it */
	char lost_plane[40];        /* that node */
	char store[64];             /* the journal store its journal is in, once placed on one */
	int resumes;
	int64_t lease_expires_us;
	int64_t not_before_us;      /* given back: placed again after this */
	char queue_reason[512];     /* why it waits (queued only) */
	int64_t created_us, assigned_us, accepted_us, running_us, finished_us; /* unix µs */
	/* from its spec (identity.c): placement by region, its identity tokens */
	char regions[256];          /* spec.preferred_regions, comma separated */
	bool region_fallback;       /* the spec lets it run elsewhere when none is free */
	char agent_version[160];    /* agent_version_id: a label, else metadata.name */
	double timeout_s;           /* spec.limits.timeout; 0: none */
};

/* One RunStream this replica holds. */
struct session {
	struct cp *cp;
	struct rpc_stream *s;
	char plane[40];             /* set once Hello was accepted */
	char tenant[128];
	int64_t opened_ms;          /* cp_mono_ms() when the stream opened */
	bool hello;                 /* its Hello was accepted */
	bool finished;              /* finished by this replica before its Hello */
	struct session *next;
};

#define CP_MAX_PENDING_STREAMS 64   /* RunStreams open without an accepted Hello */
#define CP_HELLO_TIMEOUT_MS 10000   /* and how long each may stay so */

struct cp_opts {
	const char *listen;         /* gRPC, default [::]:50051 */
	const char *http;           /* operator API, default 127.0.0.1:8080 */
	const char *database;       /* sqlite path or postgres://… */
	struct rpc_tls tls;
	const char *operator_token_file;
	const char *replica_id;     /* default: host/pid/random */
	int heartbeat_s, metrics_s, session_ttl_s, ping_s;
	int down_after;             /* missed heartbeats before a plane is down */
	int lease_ttl_ms;           /* run leases */
	int leader_ttl_ms;          /* the leader lease */
	size_t max_message;
	int max_streams_per_tenant;
};

struct cp {
	struct cp_opts o;
	pthread_mutex_t mu;
	struct db *db;
	char replica[64];
	char operator_token[256];
	unsigned char sign_pk[crypto_sign_PUBLICKEYBYTES];
	unsigned char sign_sk[crypto_sign_SECRETKEYBYTES];
	/* identity.c: instance tokens and receipt countersignatures, each its own key */
	unsigned char id_pk[crypto_sign_PUBLICKEYBYTES], id_sk[crypto_sign_SECRETKEYBYTES];
	unsigned char rc_pk[crypto_sign_PUBLICKEYBYTES], rc_sk[crypto_sign_SECRETKEYBYTES];
	struct session *sessions;
	struct rpc_cq *q;
	struct rpc_server *srv;
	volatile int stop;
	/* leader.c */
	bool leader;
	int64_t leader_epoch;
	int64_t leader_since_us;    /* grace after taking over: planes and leases get a window */
	/* wake.c: set from any thread, taken by the main loop */
	pthread_mutex_t wake_mu;
	bool wake_sched;            /* placement is due */
	char **wake_planes;         /* planes whose assignments or cancels are due */
	size_t n_wake, cap_wake;
	struct db *listen_db;       /* PostgreSQL: the LISTEN connection (listener thread) */
	pthread_t listener;
};

int64_t cp_now_us(void);
int64_t cp_mono_ms(void);
const char *cp_state_name(enum run_state s);
enum run_state cp_state_from(const char *n);
bool cp_state_final(enum run_state s);
/* "%lld" of v in buf (for text parameters). */
const char *cp_i64(char *buf, size_t len, int64_t v);
#define I64(buf, v) cp_i64(buf, sizeof(buf), (int64_t)(v))

/* db.c: url is a file path (SQLite) or postgres://… (PostgreSQL). Parameters are
 * written $1, $2… in the SQL for both and passed as text (NULL: SQL NULL). */
typedef void (*db_row_cb)(void *arg, int ncol, char **vals);
int db_open(const char *url, struct db **out, struct lerr *e);
void db_close(struct db *db);
/* Runs the embedded migrations not yet recorded in schema_migrations. */
int db_migrate(struct db *db, struct lerr *e);
/* Returns the number of rows changed, or -errno. */
int db_exec(struct db *db, const char *sql, int n, const char *const *params, struct lerr *e);
/* Returns the number of rows, or -errno. */
int db_query(struct db *db, const char *sql, int n, const char *const *params, db_row_cb cb,
	     void *arg, struct lerr *e);
const char *db_kind(const struct db *db);
int db_script(struct db *db, const char *sql, struct lerr *e);
/* A transaction around the writes that follow, committed (or, failing that, rolled
 * back) by db_commit. */
int db_begin(struct db *db, struct lerr *e);
int db_commit(struct db *db, struct lerr *e);
bool db_is_pg(const struct db *db);
/* PostgreSQL: NOTIFY lantern_cp, payload (every replica's listener hears it). */
void db_notify(struct db *db, const char *payload);
/* PostgreSQL: LISTEN lantern_cp on db; then db_wait_notify blocks up to ms and hands
 * each payload to cb. -errno when the connection is gone. */
int db_listen(struct db *db, struct lerr *e);
int db_wait_notify(struct db *db, int ms, void (*cb)(void *arg, const char *payload), void *arg);

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

/* state.c (cp->mu held) */
/* 1 with *p filled, 0 when there is no such plane, -errno. */
int state_plane(struct cp *cp, const char *id, struct plane *p, struct lerr *e);
/* Every plane (a list to free with state_planes_free). */
int state_planes(struct cp *cp, struct plane **out, struct lerr *e);
void state_planes_free(struct plane *p);
/* 1 with *r filled (free with state_run_clear), 0 when there is none, -errno. */
int state_run(struct cp *cp, const char *id, struct cprun *r, struct lerr *e);
int state_run_by_idem(struct cp *cp, const char *tenant, const char *idem, struct cprun *r,
		      struct lerr *e);
void state_run_clear(struct cp *cp, struct cprun *r);
/* Calls cb for every run matching where (a SQL condition on runs, parameters p). */
int state_runs(struct cp *cp, const char *where, int n, const char *const *p,
	       void (*cb)(void *arg, struct cprun *r), void *arg, struct lerr *e);
int state_run_insert(struct cp *cp, const struct cprun *r, struct lerr *e);
json_t *state_run_json(const struct cprun *r);
/* What a run's spec says about placement and its token (regions, agent version). */
void cp_run_spec_info(struct cprun *r);
json_t *state_plane_json(const struct plane *p, int64_t now_us, int64_t live_after_us);

/* leader.c (cp->mu held) */
/* Takes or keeps the leader lease, records this replica as alive, and (leader) lets go
 * of streams held by replicas that stopped. */
void leader_tick(struct cp *cp);
/* A condition that holds only while this replica is the leader under its epoch, for
 * the leader's writes: written to sql with parameters $first and $first+1, whose
 * values leader_params gives (epoch is their storage). */
void leader_fence(char *sql, size_t len, int first);
void leader_params(struct cp *cp, char epoch[24], const char **replica, const char **ep);
json_t *leader_json(struct cp *cp);
/* A clean stop: the lease and this replica's streams are let go at once. */
void leader_release(struct cp *cp);

/* sched.c (cp->mu held, leader only) */
void sched_place(struct cp *cp);
void sched_watchdog(struct cp *cp);
void sched_liveness(struct cp *cp);

/* service.c */
extern const struct rpc_method cp_methods[];
extern const size_t cp_n_methods;
/* Sends plane's assignments and cancels that are due, if this replica holds its
 * stream (force: all of them, as after a new stream). cp->mu held. */
void service_deliver(struct cp *cp, const char *plane, bool force);
/* What wake.c says is due for this replica's planes, delivered now. cp->mu held. */
void service_deliver_woken(struct cp *cp);
/* Periodic: pings, streams this replica should not hold any more. cp->mu held. */
void service_tick(struct cp *cp);

/* wake.c */
void wake_sched(struct cp *cp);
void wake_plane(struct cp *cp, const char *plane);
/* Takes what is due: whether placement is; the planes whose deliveries are (free each
 * and the array). */
bool wake_take_sched(struct cp *cp);
void wake_take_planes(struct cp *cp, char ***planes, size_t *n);
int wake_start(struct cp *cp, struct lerr *e);
void wake_stop(struct cp *cp);

/* identity.c (cp->mu held) */
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
