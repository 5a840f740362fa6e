/* cplane.c: the control-plane link on the event loop (see cplane.h).
 *
 * Each control-plane run id is linked to the local run in STATE/tunnel/runs/<id>.json,
 * so a re-sent assignment (same run id, same idempotency key) never starts a second
 * run, and a run that ended while lanternd was down is still reported. A link goes
 * when the control plane has acknowledged the completion (or, for one that never
 * acknowledges, when the tunnel has dropped it from the outbox). The local API is
 * untouched: `lantern run` keeps working beside the control plane.
 *
 * A run whose lease this node lost (lease.c) is fenced and never reported: the
 * control plane has given it to another node, which continues it from the journal
 * store (resume.c). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "cplane_internal.h"
#include "lantern/identity.h"
#include "lantern/journal.h"
#include "lantern/meter.h"
#include "lantern/runtime.h"
#include "lantern/util.h"
#include "lantern/workq.h"

#define AGENT_VERSION "lanternd/0.1"

/* The assignment's spec must fit what the node has left (the control plane placed it
 * on a view up to a renewal old). */
static bool fits(struct cplane *c, const struct tunnel_ev *ev, char *why, size_t len)
{
	struct spec_errors errs = { 0 };
	struct spec *s = NULL;
	bool ok;

	if (spec_parse("assignment", ev->config_json, strlen(ev->config_json), &s, &errs) < 0) {
		/* admission says what is wrong with it */
		spec_errors_free(&errs);
		return true;
	}
	ok = capacity_fits(c, &s->limits, why, len);
	spec_free(s);
	return ok;
}

static void on_assign(struct cplane *c, struct tunnel_ev *ev)
{
	struct link *l = link_by_cp(c, ev->run_id);
	int64_t taken_ms = cplane_unix_ms();
	char why[512];
	struct run *r;

	if (resume_pending(c, ev->run_id) || start_pending(c, ev->run_id))
		return; /* a re-sent assignment of a run being claimed or waiting for its
			 * secrets: that start answers */
	if (l && ev->epoch > l->epoch) {
		/* placed here again after its lease here expired */
		r = runs_find(c->runs, l->local);
		if (r && !run_status_final(run_status(r))) {
			snprintf(why, sizeof(why), "the control plane placed run %s again (epoch %lld): this "
				 "copy (epoch %lld) has lost its lease", l->cp_id, (long long)ev->epoch,
				 (long long)l->epoch);
			lease_fence(c, l, r, why);
			cplane_refuse(c, ev->run_id, ev->epoch, "this node is still stopping its older copy "
				      "of the run", true);
			return;
		}
		if (r)
			runs_forget(c->runs, r);
		link_drop(c, ev->run_id);
		l = NULL;
	}
	if (l) {
		/* a re-sent assignment: report what became of it instead of starting it again */
		r = runs_find(c->runs, l->local);
		if (r && run_fenced(r))
			return;
		if (r && !run_status_final(run_status(r))) {
			tunnel_report(c->t, l->cp_id, l->epoch, TUNNEL_ACCEPTED, NULL);
			tunnel_report(c->t, l->cp_id, l->epoch, cplane_dp_status(run_status(r)), NULL);
		} else if (r && !tunnel_pending(c->t, l->cp_id)) {
			cplane_complete_run(c, l, r, run_finished(r) * 1000);
		}
		return;
	}
	if (c->draining || c->stopping) {
		cplane_refuse(c, ev->run_id, ev->epoch, c->stopping ?
			      "node is draining: lanternd is stopping (a restart or rollout)" :
			      "node is draining: it takes no new runs until the drain is lifted", true);
		return;
	}
	if ((int)runs_live(c->runs) >= c->max_runs) {
		cplane_refuse(c, ev->run_id, ev->epoch, "node is full (--max-runs)", true);
		return;
	}
	if (c->store && journal_store_health(c->store, why, sizeof(why)) < 0) {
		char msg[700];

		snprintf(msg, sizeof(msg), "the journal store cannot be reached now: %s", why);
		cplane_refuse(c, ev->run_id, ev->epoch, msg, true);
		return;
	}
	if (ev->deadline_unix && ev->deadline_unix < (int64_t)time(NULL)) {
		cplane_refuse(c, ev->run_id, ev->epoch, "the assignment's deadline has passed", false);
		return;
	}
	if (!fits(c, ev, why, sizeof(why))) {
		cplane_refuse(c, ev->run_id, ev->epoch, why, true);
		return;
	}
	if (ev->resume && !c->store) {
		cplane_refuse(c, ev->run_id, ev->epoch, "the run must continue from its replicated journal "
			      "and this node has no --journal-store", true);
		return;
	}
	/* placed before (a higher epoch), or to be resumed: the store decides how it starts */
	if (c->store && (ev->resume || ev->epoch > 1)) {
		resume_claim(c, ev, taken_ms);
		return;
	}
	cplane_start(c, ev, taken_ms, NULL, NULL);
}

static void on_events(struct loop *lp, int fd, uint32_t events, void *arg)
{
	struct cplane *c = arg;
	struct tunnel_ev *ev = tunnel_take(c->t);

	while (ev) {
		struct tunnel_ev *next = ev->next;
		struct link *l;
		struct run *r;
		struct lerr e = { 0 };

		switch (ev->type) {
		case TUNNEL_ASSIGN:
			on_assign(c, ev);
			break;
		case TUNNEL_CANCEL:
			l = link_by_cp(c, ev->run_id);
			r = l ? runs_find(c->runs, l->local) : NULL;
			if (!r)
				log_warn("control plane cancels run %s, which this node does not have",
					 ev->run_id);
			else if (run_cancel(r, &e) < 0)
				log_info("control plane run %s: %s", ev->run_id, e.msg);
			else
				log_info("control plane run %s (%s): cancel requested", ev->run_id, run_id(r));
			break;
		case TUNNEL_DRAIN:
			c->draining = ev->draining;
			log_info("control plane: %s", ev->draining ?
				 "draining: no new runs; runs in flight finish" : "drain lifted");
			break;
		case TUNNEL_FORGET:
			link_drop(c, ev->run_id);
			break;
		case TUNNEL_LEASE:
			lease_granted(c, ev);
			break;
		}
		tunnel_ev_free(ev);
		ev = next;
	}
}

static void on_load_timer(struct loop *lp, void *arg)
{
	struct cplane *c = arg;

	cplane_count_load(c);
	c->load_timer = loop_timer_add(lp, 1000, on_load_timer, c);
}

/* After adoption: links whose run ended unseen (lanternd was down, or stopped between
 * the end and the completion) are reported now; fenced runs never are. */
static void on_reconcile(struct loop *lp, void *arg)
{
	struct cplane *c = arg;

	for (struct link *l = c->links; l; l = l->next) {
		struct run *r = runs_find(c->runs, l->local);

		if (r && run_fenced(r)) {
			tunnel_forget(c->t, l->cp_id);
		} else if (!r) {
			if (!tunnel_pending(c->t, l->cp_id))
				cplane_complete_lost(c, l);
		} else if (run_status_final(run_status(r)) && !tunnel_pending(c->t, l->cp_id)) {
			cplane_complete_run(c, l, r, run_finished(r) * 1000);
		} else if (!run_status_final(run_status(r))) {
			tunnel_report(c->t, l->cp_id, l->epoch, cplane_dp_status(run_status(r)), NULL);
		}
	}
	cplane_count_load(c);
}

static void on_ended(void *arg, struct run *r)
{
	struct cplane *c = arg;
	struct link *l = link_by_local(c, run_id(r));

	if (!l)
		return;
	/* a run whose lease this node no longer holds is not its to report, fenced or not
	 * (one that ended before the lease check saw it: a restart that could not resume) */
	if (run_fenced(r) || (l->ttl_ms && (int64_t)(util_now_ns(CLOCK_MONOTONIC) / 1000000) > l->lease_until))
		tunnel_forget(c->t, l->cp_id);
	else
		cplane_complete_run(c, l, r, cplane_unix_ms());
	cplane_count_load(c);
}

/* identity's signer: runs the control plane assigned get their tokens signed there. */
static int sign_request(void *arg, struct run *r, const uint8_t pk[JOSE_PK_BYTES], int64_t exp,
			char *remote_run_id, size_t len)
{
	struct cplane *c = arg;
	struct link *l = c->assigning ? NULL : link_by_local(c, run_id(r));
	const char *cp_id = c->assigning ? c->assigning->run_id : l ? l->cp_id : NULL;
	int64_t epoch = c->assigning ? c->assigning->epoch : l ? l->epoch : 0;

	if (!cp_id)
		return -ENOENT;
	snprintf(remote_run_id, len, "%s", cp_id);
	return tunnel_identity_request(c->t, cp_id, epoch, run_instance_id(r), pk, exp);
}

static const struct identity_signer signer = { .request = sign_request };

/* On the tunnel's thread: identity takes it from any thread. */
static void on_identity(void *arg, const char *cp_id, const char *inst, const char *token,
			const char *error)
{
	struct cplane *c = arg;

	identity_token_signed(c->id, inst, token, error);
}

static const struct run_hooks cplane_hooks = {
	.name = "cplane",
	.ended = on_ended,
};

static void free_links(struct cplane *c)
{
	while (c->links) {
		struct link *l = c->links;

		c->links = l->next;
		free(l);
	}
}

int cplane_open(struct loop *l, const struct cplane_opts *o, struct runs *t,
		const struct runtimes *rs, struct meter *m, struct identity *id, struct cplane **out,
		struct lerr *e)
{
	const char *classes[8];
	struct tunnel_opts to = { 0 };
	char list[128] = "", resume_dir[PATH_MAX + 16];
	struct cplane *c;
	int err;

	if (!o->tenant || !o->bootstrap_token_file)
		return lerr_set(e, EINVAL, "--control-plane needs --tenant and --bootstrap-token-file");
	if (!(c = calloc(1, sizeof(*c))))
		return lerr_set(e, ENOMEM, "control plane: out of memory");
	c->loop = l;
	c->runs = t;
	c->meter = m;
	c->id = id;
	c->store = o->store;
	c->max_runs = o->max_runs;
	snprintf(c->dir, sizeof(c->dir), "%s/tunnel", o->state_dir);
	snprintf(c->links_dir, sizeof(c->links_dir), "%s/runs", c->dir);
	snprintf(resume_dir, sizeof(resume_dir), "%s/resume", c->dir);
	/* claims a previous lanternd left half done: the store still has the journal */
	util_rm_rf(resume_dir);
	if ((err = util_mkdir_p(c->links_dir, 0700)) < 0 || (err = util_mkdir_p(resume_dir, 0700)) < 0) {
		lerr_set(e, err, "control plane: %s: %s", c->dir, strerror(-err));
		free(c);
		return err;
	}
	links_load(c);
	leases_load(c);
	capacity_init(c, o);
	if ((err = workq_open(l, 1, "lantern-claim", &c->wq, e)) < 0)
		goto fail;
	to.target = o->target;
	to.tenant = o->tenant;
	to.token_file = o->bootstrap_token_file;
	to.tls = o->tls;
	to.state_dir = c->dir;
	to.agent_version = AGENT_VERSION;
	to.classes = classes;
	to.n_classes = runtimes_classes(rs, classes, ARRAY_SIZE(classes));
	to.max_runs = o->max_runs;
	to.backoff_max_ms = o->backoff_max_ms;
	to.journal_store = o->store ? journal_store_id(o->store) : NULL;
	to.region = o->region;
	to.node_pk = id ? identity_node_key(id) : NULL;
	to.on_identity = on_identity;
	to.identity_arg = c;
	capacity_now(c, &to.capacity);
	if ((err = tunnel_start(&to, &c->t, &c->efd, e)) < 0)
		goto fail_wq;
	if ((err = loop_add(l, c->efd, EPOLLIN, on_events, c)) < 0) {
		tunnel_stop(c->t);
		lerr_set(e, err, "control plane: watching the tunnel: %s", strerror(-err));
		goto fail_wq;
	}
	if ((err = runs_subscribe(t, &cplane_hooks, c)) < 0) {
		loop_del(l, c->efd);
		tunnel_stop(c->t);
		lerr_set(e, err, "control plane: cannot subscribe to runs");
		goto fail_wq;
	}
	if (id)
		identity_set_signer(id, &signer, c);
	loop_timer_add(l, 0, on_reconcile, c);
	c->load_timer = loop_timer_add(l, 1000, on_load_timer, c);
	c->lease_timer = loop_timer_add(l, 100, lease_timer, c);
	for (size_t i = 0; i < to.n_classes; i++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? "," : "", classes[i]);
	log_info("control plane %s (%s), tenant %s, classes advertised [%s], max runs %d%s%s", o->target,
		 o->tls.insecure ? "plaintext" : "TLS", o->tenant, list, o->max_runs,
		 o->store ? ", journal store " : "", o->store ? journal_store_id(o->store) : "");
	*out = c;
	return 0;
fail_wq:
	workq_close(c->wq);
fail:
	free_links(c);
	free(c);
	return err;
}

void cplane_drain(struct cplane *c)
{
	c->stopping = true;
	tunnel_drain(c->t);
}

bool cplane_drain_told(struct cplane *c)
{
	return tunnel_drain_told(c->t) || !tunnel_registered(c->t);
}

bool cplane_registered(struct cplane *c, char *why, size_t len)
{
	if (tunnel_registered(c->t))
		return true;
	snprintf(why, len, "no session the control plane answers on (registering, or heartbeats failing)");
	return false;
}

void cplane_close(struct cplane *c)
{
	if (!c)
		return;
	resume_close(c);
	start_close(c);
	loop_del(c->loop, c->efd);
	tunnel_stop(c->t);
	free_links(c);
	free(c);
}
