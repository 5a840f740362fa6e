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
 * With a journal store (--journal-store) every journal is replicated, keyed by the
 * control plane's run id (standalone: the run id) under the run's lease epoch, and an
 * answer waits until its record is durable both in the file and in the store. The
 * store refusing a record (a newer epoch holds the run) fences the run; the store
 * unreachable past its bound fails it; either way the caller is told and the answer
 * it waited for is never sent.
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
struct journal_store;
struct meter;

struct durable_opts {
	uint64_t journal_max_bytes;  /* per-run journal bound; 0 = the journal's default */
	uint32_t loop_threshold;     /* proceeds allowed per input digest; 0 = off */
	const char *cli;             /* the lantern CLI, for process-runtime workloads (LANTERN_CLI) */
	struct identity *identity;   /* seals each journal with its receipt; vends secrets */
	const char *store_url;       /* replicate every journal to this store (postgres://), or NULL */
	uint32_t store_timeout_ms;   /* a record not in the store by then fails its run */
	const char *store_owner;     /* this node, as the store shows who holds a run */
	const char *state_dir;       /* the node log, <state_dir>/journal.log, makes run
				      * journals beneath it durable; NULL: syncfs only */
};

int durable_open(struct loop *l, const struct durable_opts *o, struct meter *m, struct durable **out,
		 struct lerr *e);
void durable_close(struct durable *d);
int durable_subscribe(struct durable *d, struct runs *t, struct lerr *e);
/* The journal store (NULL without one): runs placed here again are claimed in it. */
struct journal_store *durable_store(struct durable *d);
/* Where the harness API's HTTP is served: in lanternd's own process (the default), or
 * by the unprivileged lantern-wire, which hands over typed calls. A transport serves a
 * run's socket (created at path, or fd when it is one already bound and listening
 * there: a claimed sandbox's; the transport owns it, even on error) and carries
 * answers back to the caller (peer). */
struct durable_run;
struct harness_call;
struct durable_transport {
	int (*listen)(void *arg, struct durable_run *du, const char *path, int fd, void **listener,
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
