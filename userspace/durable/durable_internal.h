/* durable_internal.h: the durable subscriber's state, shared by durable.c (journals,
 * answers parked until their record is durable, replay, resume, the run hooks), api.c
 * (the harness API's calls, typed) and local.c (the in-process transport). */
#ifndef LANTERN_DURABLE_INTERNAL_H
#define LANTERN_DURABLE_INTERNAL_H

#include "lantern/durable.h"
#include "lantern/harness.h"
#include "lantern/journal.h"
#include "lantern/meter.h"

struct pending;

struct durable {
	const struct durable_transport *tp;
	void *tp_arg;
	struct loop *loop;
	struct durable_opts o;
	char cli[PATH_MAX];
	struct meter *meter;
	struct runs *runs;
	int slot;
	struct journal_syncer *syncer;
	/* run_started records, each synced on this thread of its own while the run's
	 * other hooks go on; the workload starts once it is durable (the ready hook). Its
	 * own thread: at most one start is in flight (the loop waits for it), so a batch is
	 * one journal and one fdatasync, never a syncfs behind the runs' appends. */
	struct journal_syncer *starts;
	struct journal_store *store; /* or NULL */
	int efd;
	/* answers parked until their record is durable, in the order parked; pending_tail
	 * is where the next one goes (the last one's next, or &pending) */
	struct pending *pending, **pending_tail;
	long crash_at, appends;
	bool crash_kill;
};

/* One run's journal, harness socket and step state. */
struct durable_run {
	struct durable *d;
	struct run *r;
	struct journal *j;
	void *listener;            /* the transport's, while the socket is served */
	struct harness_state st;
	struct harness_limits lim;
	uint64_t start_seq;        /* run_started, until the ready hook saw it durable */
	char dir[PATH_MAX];        /* the socket's directory, RUN/harness */
	char sock[PATH_MAX];
};

/* durable.c */
int durable_append(struct durable_run *du, unsigned type, const char *rec, size_t len, uint64_t *seq,
		   struct lerr *e);
/* Answers peer with status and reply (JSON text, taken) once the journal is durable up
 * to seq; then, if end, ends the run as `as`. */
void durable_park(struct durable_run *du, void *peer, uint64_t seq, int status, char *reply,
		  size_t len, bool end, enum run_status as, const char *why);
/* An answer now: {"error":code,"reason":reason}. */
void durable_reply_error(struct durable *d, void *peer, int status, const char *code, const char *reason);

/* local.c: the harness API served in lanternd's own process (no lantern-wire). */
extern const struct durable_transport durable_local_transport;

#endif
