/* report.c: what this node tells the control plane about a run it was given: started
 * (accepted, running), refused or given back, and its completion (status, reason, exit
 * code, cost, tokens, receipt). cplane.c (assignments, the run's end), lease.c and
 * resume.c (a run continued from the journal store) report through these. */
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

enum tunnel_status cplane_dp_status(enum run_status s)
{
	switch (s) {
	case RUN_ACCEPTED: return TUNNEL_ACCEPTED;
	case RUN_RUNNING: return TUNNEL_RUNNING;
	case RUN_SUCCEEDED: return TUNNEL_SUCCEEDED;
	case RUN_TIMED_OUT: return TUNNEL_TIMED_OUT;
	case RUN_CANCELLED: return TUNNEL_CANCELLED;
	default: return TUNNEL_FAILED;
	}
}

/* output_json: what a completion says of the run in the platform's own field (a control
 * plane that knows only the platform's proto reads nothing else): status, reason, exit
 * code. Only metadata crosses the boundary: the workload's output stays on the node. */
static char *output_json(const char *status, const char *reason, int exit_code, const char *local_id)
{
	json_t *j = json_pack("{s:s, s:i}", "status", status, "exit_code", exit_code);
	char *s;

	if (reason && *reason)
		json_object_set_new(j, "reason", json_string(reason));
	if (local_id && *local_id)
		json_object_set_new(j, "local_run_id", json_string(local_id));
	s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	return s;
}

void cplane_refuse(struct cplane *c, const char *cp_id, int64_t epoch, const char *why,
		   bool not_started)
{
	char *out = output_json("failed", why, -1, NULL);
	struct tunnel_completion tc = {
		.run_id = cp_id, .epoch = epoch, .status = TUNNEL_FAILED, .detail = why,
		.output_json = out ? out : "", .not_started = not_started,
	};
	struct lerr e;

	log_warn("control plane run %s %s: %s", cp_id, not_started ? "given back" : "refused", why);
	if (tunnel_complete(c->t, &tc, &e) < 0)
		log_error("%s", e.msg);
	free(out);
}

/* What a completion says of a run: its status, reason and exit code, its metered cost
 * and its tokens (input counts uncached, cache-read and cache-creation input; output
 * counts output and reasoning). A run this node lost the record of is failed. */
struct outcome {
	const char *status;
	const char *reason;
	int exit_code;
	const char *local_id;
	int64_t end_ms;             /* unix ms it ended */
	double cost;
	int64_t tin, tout;
};

static enum tunnel_status status_named(const char *n)
{
	int st = run_status_from_name(n);

	return st < 0 ? TUNNEL_FAILED : cplane_dp_status((enum run_status)st);
}

static void send_completion(struct cplane *c, struct link *l, const struct outcome *oc)
{
	char *out = output_json(oc->status, oc->reason, oc->exit_code, oc->local_id);
	struct run *r = oc->local_id ? runs_find(c->runs, oc->local_id) : NULL;
	struct tunnel_completion tc = {
		.run_id = l->cp_id, .epoch = l->epoch, .status = status_named(oc->status),
		.detail = oc->reason, .cost_usd = oc->cost, .tokens_in = oc->tin, .tokens_out = oc->tout,
		.output_json = out ? out : "", .receipt = r ? identity_receipt(r) : NULL,
	};
	struct lerr e;

	/* from when the assignment was taken, so a short run is not 0 */
	tc.duration_ms = oc->end_ms > l->start_ms ? oc->end_ms - l->start_ms : 0;
	if (tunnel_complete(c->t, &tc, &e) < 0)
		log_error("control plane run %s: completion not kept: %s", l->cp_id, e.msg);
	free((char *)tc.receipt);
	free(out);
}

void cplane_complete_run(struct cplane *c, struct link *l, struct run *r, int64_t end_ms)
{
	struct outcome oc = {
		.status = run_status_name(run_status(r)), .reason = run_reason(r),
		.exit_code = run_exit_code(r), .local_id = run_id(r), .end_ms = end_ms,
	};
	struct meter_usage u;
	struct meter_cost mc;
	uint64_t tin = 0, tout = 0;

	meter_run_usage(c->meter, r, &u);
	meter_compute(meter_prices(c->meter), &u, &mc);
	oc.cost = mc.total;
	for (size_t i = 0; u.tally && i < u.tally->n; i++) {
		const struct meter_tokens *k = &u.tally->m[i].t;

		tin = meter_sat_add(tin, meter_sat_add(meter_sat_add(k->input, k->cache_read), k->cache_creation));
		tout = meter_sat_add(tout, meter_sat_add(k->output, k->reasoning));
	}
	oc.tin = util_sat_i64(tin);
	oc.tout = util_sat_i64(tout);
	send_completion(c, l, &oc);
}

void cplane_count_load(struct cplane *c)
{
	struct tunnel_capacity cap;

	tunnel_set_load(c->t, (int)runs_live(c->runs), 0);
	capacity_now(c, &cap);
	tunnel_set_capacity(c->t, &cap);
}

void cplane_start_now(struct cplane *c, const struct tunnel_ev *ev, int64_t taken_ms, const char *id,
		      const char *seed_dir, struct run_prefetch *pf)
{
	struct run_submit sub = {
		.yaml = ev->config_json, .len = strlen(ev->config_json), .ref = ev->run_id,
		.epoch = ev->epoch, .id = id, .seed_dir = seed_dir, .prefetch = pf,
	};
	struct lerr e = { 0 };
	json_t *input = NULL;
	struct link *l;
	struct run *r;
	char file[96];
	int err;

	if (ev->input_json && ev->input_json[0] && !(input = json_loads(ev->input_json, 0, NULL))) {
		cplane_refuse(c, ev->run_id, ev->epoch, "input_json is not valid JSON", false);
		return;
	}
	snprintf(file, sizeof(file), "%s.json", ev->run_id);
	sub.file = file;
	sub.input = input;
	/* identity's signer asks the control plane for the new instance's token */
	c->assigning = ev;
	err = runs_start(c->runs, &sub, &r, &e);
	c->assigning = NULL;
	json_decref(input);
	if (err < 0) {
		/* admission refused (a class this node cannot run, a bad spec), or a resume the
		 * journal refuses (idempotent: false with a step in flight): say why, run nothing.
		 * A start that waited on the control plane for an answer that did not come (the
		 * instance's identity token: its replica went away) is given back instead, to be
		 * placed again: nothing of the run started */
		cplane_refuse(c, ev->run_id, ev->epoch, e.msg, err == -ETIMEDOUT || err == -ENOTCONN);
		return;
	}
	if (!(l = link_new(c, ev->run_id, run_id(r), ev->epoch, taken_ms))) {
		run_cancel(r, &e);
		cplane_refuse(c, ev->run_id, ev->epoch, "out of memory", true);
		return;
	}
	lease_start(c, l, ev->lease_ttl_ms, ev->recv_ms);
	if (link_save(c, l) < 0)
		log_error("control plane run %s: link to %s not saved: a restart may not report it",
			  l->cp_id, run_id(r));
	log_info("control plane run %s: %s as %s (epoch %lld)", l->cp_id, seed_dir ? "resumed" : "started",
		 run_id(r), (long long)l->epoch);
	tunnel_report(c->t, l->cp_id, l->epoch, TUNNEL_ACCEPTED, NULL);
	if (!run_status_final(run_status(r)))
		tunnel_report(c->t, l->cp_id, l->epoch, cplane_dp_status(run_status(r)), NULL);
	cplane_count_load(c);
}

void cplane_report_recorded(struct cplane *c, const struct tunnel_ev *ev, int64_t taken_ms,
			    const char *run_id, const char *payload)
{
	json_t *j = json_loads(payload ? payload : "", 0, NULL);
	struct outcome oc = {
		.status = json_string_value(json_object_get(j, "status")) ?: "failed",
		.reason = json_string_value(json_object_get(j, "reason")) ?: "",
		.exit_code = (int)json_integer_value(json_object_get(j, "exit_code")),
		.local_id = run_id, .end_ms = cplane_unix_ms(),
		.cost = json_real_value(json_object_get(j, "cost_usd")),
	};
	struct link *l = link_new(c, ev->run_id, run_id, ev->epoch, taken_ms);

	if (l) {
		log_info("control plane run %s: its journal records its end (%s): reporting it",
			 ev->run_id, oc.status);
		link_save(c, l);
		send_completion(c, l, &oc);
	}
	json_decref(j);
}

void cplane_complete_lost(struct cplane *c, struct link *l)
{
	char why[128];
	struct outcome gone = { .status = "failed", .exit_code = -1, .reason = why,
				.local_id = l->local, .end_ms = cplane_unix_ms() };

	snprintf(why, sizeof(why), "the node lost the record of this run (local run %s)", l->local);
	send_completion(c, l, &gone);
}
