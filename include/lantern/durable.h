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
#include <stdint.h>

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
/* `lantern journal RUN`: where the run's journal is. */
json_t *durable_journal_json(struct durable *d, struct run *r);

#endif
