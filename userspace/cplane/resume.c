/* resume.c: an assignment for a run that may have started on another node. The
 * control plane raises a run's epoch at every placement; when this node has a journal
 * store and the epoch says the run was placed before (or the assignment says resume),
 * the run is first claimed in the store under the new epoch: from then on the node
 * that held it before can no longer extend its journal, and the store's copy of the
 * journal (verified like a file) comes back with the claim. Then:
 *   - nothing in the store: the run never started anywhere; it starts fresh (unless
 *     the control plane said resume: then a journal was expected and the run fails
 *     with that reason: never restarted from scratch silently);
 *   - a journal that records the run's end: that end is reported (the node that ran it
 *     went away before its completion reached the control plane);
 *   - a journal: the run continues from it, with its own run id (so the same
 *     idempotency keys and trace), resumed by the durable subscriber as after a local
 *     restart: completed steps replayed, the in-flight one run again with the same
 *     key, idempotent: false with a step in flight refused.
 * The claim is a blocking database transaction: it runs on a worker thread
 * ("lantern-claim"), and the run starts when it completes, on the loop. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cplane_internal.h"
#include "lantern/journal.h"
#include "lantern/util.h"
#include "lantern/workq.h"

struct claim {
	struct cplane *c;
	struct tunnel_ev ev;            /* the assignment (its strings owned here) */
	int64_t taken_ms;
	char staged[PATH_MAX + 80];     /* STATE/tunnel/resume/<run>: becomes the run's directory */
	char journal[PATH_MAX + 96];
	struct journal_claim out;
	int err;
	struct lerr e;
	struct claim *next;
};

static void claim_free(struct claim *q)
{
	if (q->staged[0])
		util_rm_rf(q->staged);
	free(q->ev.config_json);
	free(q->ev.input_json);
	free(q->ev.idem);
	free(q->out.end_payload);
	free(q);
}

bool resume_pending(struct cplane *c, const char *cp_id)
{
	for (struct claim *q = c->claims; q; q = q->next)
		if (!strcmp(q->ev.run_id, cp_id))
			return true;
	return false;
}

/* On the worker: the store's transaction. */
static void claim_work(void *arg)
{
	struct claim *q = arg;

	q->err = journal_store_claim(q->c->store, q->ev.run_id, q->ev.epoch, q->journal, &q->out, &q->e);
}

/* On the loop: what the store said decides how the run starts, if at all. */
static void claim_done(void *arg)
{
	struct claim *q = arg;
	struct cplane *c = q->c;
	const char *id = q->ev.run_id;
	char why[1024];

	for (struct claim **pp = &c->claims; *pp; pp = &(*pp)->next)
		if (*pp == q) {
			*pp = q->next;
			break;
		}
	if (q->err == -ESTALE) {
		/* a newer placement holds it: this assignment is stale, and says so */
		cplane_refuse(c, id, q->ev.epoch, q->e.msg, true);
	} else if (q->err == -EBADMSG) {
		snprintf(why, sizeof(why), "not resumed: the journal store's copy of run %s cannot be "
			 "used (%s); the run is not restarted from scratch", id, q->e.msg);
		cplane_refuse(c, id, q->ev.epoch, why, false);
	} else if (q->err < 0) {
		snprintf(why, sizeof(why), "the journal store cannot be read now: %s", q->e.msg);
		cplane_refuse(c, id, q->ev.epoch, why, true);
	} else if (!q->out.records && q->ev.resume) {
		snprintf(why, sizeof(why), "not resumed: the journal store has no record of run %s, which "
			 "already started on another node; the run is not restarted from scratch", id);
		cplane_refuse(c, id, q->ev.epoch, why, false);
	} else if (!q->out.records) {
		cplane_start(c, &q->ev, q->taken_ms, NULL, NULL);
	} else if (q->out.ended) {
		cplane_report_recorded(c, &q->ev, q->taken_ms, q->out.run_id, q->out.end_payload);
	} else {
		log_info("control plane run %s: continuing run %s from its replicated journal (%llu "
			 "records), epoch %lld", id, q->out.run_id, (unsigned long long)q->out.records,
			 (long long)q->ev.epoch);
		/* a start that waits for its secrets keeps the staged directory */
		if (cplane_start(c, &q->ev, q->taken_ms, q->out.run_id, q->staged))
			q->staged[0] = '\0';
	}
	claim_free(q);
}

static char *dup_or_empty(const char *s)
{
	return strdup(s ? s : "");
}

void resume_claim(struct cplane *c, const struct tunnel_ev *ev, int64_t taken_ms)
{
	struct claim *q = calloc(1, sizeof(*q));
	int err;

	if (!q) {
		cplane_refuse(c, ev->run_id, ev->epoch, "out of memory", true);
		return;
	}
	q->c = c;
	q->ev = *ev;
	q->ev.next = NULL;
	q->ev.config_json = dup_or_empty(ev->config_json);
	q->ev.input_json = dup_or_empty(ev->input_json);
	q->ev.idem = dup_or_empty(ev->idem);
	q->ev.renewed = q->ev.lost = q->ev.lost_why = NULL;
	q->taken_ms = taken_ms;
	snprintf(q->staged, sizeof(q->staged), "%s/resume/%s", c->dir, ev->run_id);
	snprintf(q->journal, sizeof(q->journal), "%s/journal", q->staged);
	util_rm_rf(q->staged);
	if (!q->ev.config_json || !q->ev.input_json || !q->ev.idem ||
	    (err = util_mkdir_p(q->staged, 0700)) < 0 ||
	    (err = workq_submit(c->wq, claim_work, claim_done, q)) < 0) {
		claim_free(q);
		cplane_refuse(c, ev->run_id, ev->epoch, "cannot prepare the claim in the journal store", true);
		return;
	}
	q->next = c->claims;
	c->claims = q;
}

void resume_close(struct cplane *c)
{
	/* runs every claim to its end (its completion on this thread) */
	workq_close(c->wq);
	c->wq = NULL;
}
