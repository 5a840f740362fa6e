/* durable.h: durable execution, a run subscriber: each run's journal (created with its
 * run_started record, durable before the workload starts), its harness socket (the
 * workload-facing API, docs/harness-api.md), the API's calls turned into journal
 * records with answers sent only once their record is durable (group commit through
 * the journal's syncer thread), the step budgets and the loop guard, and resume after
 * a restart: a workload that died with lanternd is restarted from its journal in a
 * fresh instance; one that survived reconnects and loses no step. A journal ends with
 * the run's receipt (identity_receipt_seal) after its run_completed record; the
 * harness API's /v1/secrets is identity's (identity_secret_request).
 *
 * Test-only crash point: LANTERN_TEST_CRASH_AT=N makes lanternd _exit right after its
 * Nth journal append (before that record is synced or answered). With
 * LANTERN_TEST_CRASH_KILL=1 it first SIGKILLs every running workload and its shim,
 * as a machine restart would. */
#ifndef LANTERN_DURABLE_H
#define LANTERN_DURABLE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "lantern/loop.h"
#include "lantern/run.h"
#include "lantern/util.h"

struct durable;
struct identity;
struct meter;

struct durable_opts {
	uint64_t journal_max_bytes;  /* per-run journal bound; 0 = the journal's default */
	uint32_t loop_threshold;     /* proceeds allowed per input digest; 0 = off */
	const char *cli;             /* the lantern CLI, for process-runtime workloads (LANTERN_CLI) */
	struct identity *identity;   /* seals each journal with its receipt; vends secrets */
};

int durable_open(struct loop *l, const struct durable_opts *o, struct meter *m, struct durable **out,
		 struct lerr *e);
void durable_close(struct durable *d);
int durable_subscribe(struct durable *d, struct runs *t, struct lerr *e);
/* Where the harness API's HTTP is served: in lanternd's own process (the default), or
 * by the unprivileged lantern-wire, which hands over typed calls. A transport serves a
 * run's socket (created at path) and carries answers back to the caller (peer). */
struct durable_run;
struct harness_call;
struct durable_transport {
	int (*listen)(void *arg, struct durable_run *du, const char *path, void **listener,
		      struct lerr *e);
	void (*unlisten)(void *arg, void *listener);
	void (*reply)(void *arg, void *peer, int status, const char *json, size_t len);
};
void durable_set_transport(struct durable *d, const struct durable_transport *tp, void *arg);
/* From a transport: may pid use du's socket (the caller's cgroup is the run's)? */
bool durable_caller_ok(struct durable_run *du, pid_t pid, char *why, size_t len);
/* From a transport: one decoded call of peer on du's socket. */
void durable_call(struct durable_run *du, void *peer, const struct harness_call *c);
/* From a transport: peer went away; answers parked for it are dropped when due. */
void durable_forget_peer(struct durable *d, void *peer);

/* `lantern journal RUN`: where the run's journal is. */
json_t *durable_journal_json(struct durable *d, struct run *r);

#endif
