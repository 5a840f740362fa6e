/* durable_internal.h: the durable subscriber's state, shared by durable.c (journals,
 * answers parked until their record is durable, replay, resume, the run hooks) and
 * api.c (the harness API's calls). */
#ifndef LANTERN_DURABLE_INTERNAL_H
#define LANTERN_DURABLE_INTERNAL_H

#include "lantern/durable.h"
#include "lantern/harness.h"
#include "lantern/journal.h"
#include "lantern/meter.h"

struct pending;

struct durable {
	struct loop *loop;
	struct durable_opts o;
	char cli[PATH_MAX];
	struct meter *meter;
	struct runs *runs;
	int slot;
	struct journal_syncer *syncer;
	struct journal_store *store; /* or NULL */
	int efd;
	struct pending *pending;
	long crash_at, appends;
	bool crash_kill;
};

/* One run's journal, harness socket and step state. */
struct durable_run {
	struct durable *d;
	struct run *r;
	struct journal *j;
	struct harness_server *srv;
	struct harness_state st;
	struct harness_limits lim;
	char dir[PATH_MAX];        /* the socket's directory, RUN/harness */
	char sock[PATH_MAX];
};

/* durable.c */
int durable_append(struct durable_run *du, unsigned type, json_t *rec, uint64_t *seq, struct lerr *e);
/* Answers c with status and reply once the journal is durable up to seq; then, if
 * end, ends the run as `as`. */
void durable_park(struct durable_run *du, struct harness_conn *c, uint64_t seq, int status,
		  json_t *reply, bool end, enum run_status as, const char *why);

/* Parked answers for c are dropped when due (the caller went away). */
void durable_forget_conn(struct durable *d, struct harness_conn *c);

/* api.c */
extern const struct harness_ops durable_harness_ops;

#endif
