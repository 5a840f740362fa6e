/* durable.h: durable execution, a run subscriber: each run's journal (created with its
 * run_started record, durable before the workload starts), its harness socket (the
 * workload-facing API, docs/harness-api.md), the API's calls turned into journal
 * records with answers sent only once their record is durable (group commit through
 * the journal's syncer thread), the step budgets and the loop guard, and resume after
 * a restart: a workload that died with lanternd is restarted from its journal in a
 * fresh instance; one that survived reconnects and loses no step.
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
#include <stdint.h>

#include "lantern/loop.h"
#include "lantern/run.h"
#include "lantern/util.h"

struct durable;
struct journal_store;
struct meter;

struct durable_opts {
	uint64_t journal_max_bytes;  /* per-run journal bound; 0 = the journal's default */
	uint32_t loop_threshold;     /* proceeds allowed per input digest; 0 = off */
	const char *cli;             /* the lantern CLI, for process-runtime workloads (LANTERN_CLI) */
	const char *store_url;       /* replicate every journal to this store (postgres://), or NULL */
	uint32_t store_timeout_ms;   /* a record not in the store by then fails its run */
	const char *store_owner;     /* this node, as the store shows who holds a run */
};

int durable_open(struct loop *l, const struct durable_opts *o, struct meter *m, struct durable **out,
		 struct lerr *e);
void durable_close(struct durable *d);
int durable_subscribe(struct durable *d, struct runs *t, struct lerr *e);
/* The journal store (NULL without one): runs placed here again are claimed in it. */
struct journal_store *durable_store(struct durable *d);
/* `lantern journal RUN`: where the run's journal is. */
json_t *durable_journal_json(struct durable *d, struct run *r);

#endif
