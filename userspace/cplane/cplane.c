/* cplane.c: the control-plane link on the event loop (see cplane.h).
 *
 * Each control-plane run id is linked to the local run in STATE/tunnel/runs/<id>.json,
 * so a re-sent assignment (same run id, same idempotency key) never starts a second
 * run, and a run that ended while lanternd was down is still reported. A link goes
 * when the control plane has acknowledged the completion. The local API is untouched:
 * `lantern run` keeps working beside the control plane. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "lantern/cplane.h"
#include "lantern/identity.h"
#include "lantern/meter.h"
#include "lantern/runtime.h"
#include "lantern/tunnel.h"
#include "lantern/util.h"

#define AGENT_VERSION "lanternd/0.1"

struct link {
	char cp_id[64];
	char local[32];
	int64_t epoch;
	int64_t start_ms;           /* unix ms the assignment was taken */
	struct link *next;
};

struct cplane {
	struct loop *loop;
	struct runs *runs;
	struct meter *meter;
	struct identity *id;
	struct tunnel *t;
	const struct tunnel_ev *assigning; /* the assignment runs_submit is admitting now */
	int efd;
	int max_runs;
	bool draining;              /* the control plane's drain order */
	bool stopping;              /* lanternd's own: it is exiting */
	char links_dir[PATH_MAX];
	struct link *links;
	uint64_t load_timer;
};

static int64_t unix_ms(void)
{
	return (int64_t)(util_now_ns(CLOCK_REALTIME) / 1000000);
}

static struct link *link_by_cp(struct cplane *c, const char *id)
{
	for (struct link *l = c->links; l; l = l->next)
		if (!strcmp(l->cp_id, id))
			return l;
	return NULL;
}

static struct link *link_by_local(struct cplane *c, const char *id)
{
	for (struct link *l = c->links; l; l = l->next)
		if (!strcmp(l->local, id))
			return l;
	return NULL;
}

static int link_save(struct cplane *c, const struct link *l)
{
	char path[PATH_MAX + 80], *s;
	json_t *j = json_pack("{s:s, s:s, s:I, s:I}", "run_id", l->cp_id, "local", l->local,
			      "epoch", (json_int_t)l->epoch, "start_ms", (json_int_t)l->start_ms);
	int err;

	s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	if (!s)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/%s.json", c->links_dir, l->cp_id);
	err = util_write_file_atomic(path, s, strlen(s));
	free(s);
	return err;
}

static void link_drop(struct cplane *c, const char *cp_id)
{
	char path[PATH_MAX + 80];

	for (struct link **pp = &c->links; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->cp_id, cp_id)) {
			struct link *l = *pp;

			*pp = l->next;
			free(l);
			break;
		}
	snprintf(path, sizeof(path), "%s/%s.json", c->links_dir, cp_id);
	unlink(path);
}

static void links_load(struct cplane *c)
{
	DIR *d = opendir(c->links_dir);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		char path[PATH_MAX + 300];
		struct link *l;
		json_t *j;

		if (de->d_name[0] == '.' || !strstr(de->d_name, ".json"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", c->links_dir, de->d_name);
		if (!(j = json_load_file(path, 0, NULL)))
			continue;
		if ((l = calloc(1, sizeof(*l)))) {
			snprintf(l->cp_id, sizeof(l->cp_id), "%s",
				 json_string_value(json_object_get(j, "run_id")) ?: "");
			snprintf(l->local, sizeof(l->local), "%s",
				 json_string_value(json_object_get(j, "local")) ?: "");
			l->epoch = json_integer_value(json_object_get(j, "epoch"));
			l->start_ms = json_integer_value(json_object_get(j, "start_ms"));
			l->next = c->links;
			c->links = l;
		}
		json_decref(j);
	}
	if (d)
		closedir(d);
}

static enum tunnel_status dp_status(enum run_status s)
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

/* A run this node will not start. not_started: for now only (draining, full), so the
 * control plane may place it again; else the refusal is the run's end (admission). */
static void report_refusal(struct cplane *c, const char *cp_id, int64_t epoch, const char *why,
			   bool not_started)
{
	struct tunnel_completion tc = {
		.run_id = cp_id, .epoch = epoch, .status = TUNNEL_FAILED, .detail = why,
		.output_json = "", .not_started = not_started,
	};
	struct lerr e;

	log_warn("control plane run %s refused: %s", cp_id, why);
	if (tunnel_complete(c->t, &tc, &e) < 0)
		log_error("%s", e.msg);
}

/* What a completion says of a run: its status, reason and exit code (only metadata
 * crosses the boundary: the workload's output stays on the node), its metered cost and
 * its tokens (input counts uncached, cache-read and cache-creation input; output counts
 * output and reasoning). A run this node lost the record of is failed. */
struct outcome {
	enum run_status status;
	const char *reason;
	int exit_code;
	const char *local_id;
	int64_t created, finished;
	double cost;
	int64_t tin, tout;
};

static void send_completion(struct cplane *c, struct link *l, const struct outcome *oc)
{
	struct tunnel_completion tc = {
		.run_id = l->cp_id, .epoch = l->epoch, .status = dp_status(oc->status),
		.detail = oc->reason, .cost_usd = oc->cost, .tokens_in = oc->tin, .tokens_out = oc->tout,
	};
	struct run *r = oc->local_id ? runs_find(c->runs, oc->local_id) : NULL;
	char out[256];
	struct lerr e;

	snprintf(out, sizeof(out), "{\"exit_code\":%d,\"local_run_id\":\"%s\",\"status\":\"%s\"}",
		 oc->exit_code, oc->local_id, run_status_name(oc->status));
	tc.output_json = out;
	tc.receipt = r ? identity_receipt(r) : NULL;
	tc.duration_ms = l->start_ms ? unix_ms() - l->start_ms : (oc->finished - oc->created) * 1000;
	if (oc->finished && l->start_ms && oc->finished * 1000 < l->start_ms)
		tc.duration_ms = 0;
	if (tunnel_complete(c->t, &tc, &e) < 0)
		log_error("control plane run %s: completion not kept: %s", l->cp_id, e.msg);
	free((char *)tc.receipt);
}

static void complete_run(struct cplane *c, struct link *l, struct run *r)
{
	struct outcome oc = {
		.status = run_status(r), .reason = run_reason(r), .exit_code = run_exit_code(r),
		.local_id = run_id(r), .created = run_created(r), .finished = run_finished(r),
	};
	struct meter_usage u;
	struct meter_cost mc;

	meter_run_usage(c->meter, r, &u);
	meter_compute(meter_prices(c->meter), &u, &mc);
	oc.cost = mc.total;
	for (size_t i = 0; u.tally && i < u.tally->n; i++) {
		const struct meter_tokens *k = &u.tally->m[i].t;

		oc.tin += (int64_t)((k->input + k->cache_read + k->cache_creation) & INT64_MAX);
		oc.tout += (int64_t)((k->output + k->reasoning) & INT64_MAX);
	}
	send_completion(c, l, &oc);
}

static int count_load(struct cplane *c)
{
	int active = (int)runs_live(c->runs);

	tunnel_set_load(c->t, active, 0);
	return active;
}

static void on_assign(struct cplane *c, struct tunnel_ev *ev)
{
	struct link *l = link_by_cp(c, ev->run_id);
	struct run *r;
	struct lerr e = { 0 };
	json_t *input = NULL;
	char file[96];
	int err;

	if (l) {
		/* a re-sent assignment: report what became of it instead of starting it again */
		r = runs_find(c->runs, l->local);
		l->epoch = ev->epoch;
		link_save(c, l);
		if (r && !run_status_final(run_status(r))) {
			tunnel_report(c->t, l->cp_id, l->epoch, TUNNEL_ACCEPTED, NULL);
			tunnel_report(c->t, l->cp_id, l->epoch, dp_status(run_status(r)), NULL);
		} else if (r && !tunnel_pending(c->t, l->cp_id)) {
			complete_run(c, l, r);
		}
		return;
	}
	if (c->draining || c->stopping) {
		report_refusal(c, ev->run_id, ev->epoch, c->stopping ?
			       "node is draining: lanternd is stopping (a restart or rollout)" :
			       "node is draining: it takes no new runs until the drain is lifted", true);
		return;
	}
	if (count_load(c) >= c->max_runs) {
		report_refusal(c, ev->run_id, ev->epoch, "node is full (--max-runs)", true);
		return;
	}
	if (ev->deadline_unix && ev->deadline_unix < (int64_t)time(NULL)) {
		report_refusal(c, ev->run_id, ev->epoch, "the assignment's deadline has passed", false);
		return;
	}
	if (ev->input_json && ev->input_json[0] && !(input = json_loads(ev->input_json, 0, NULL))) {
		report_refusal(c, ev->run_id, ev->epoch, "input_json is not valid JSON", false);
		return;
	}
	snprintf(file, sizeof(file), "%s.json", ev->run_id);
	c->assigning = ev;
	err = runs_submit(c->runs, file, ev->config_json, strlen(ev->config_json), input, &r, &e);
	c->assigning = NULL;
	json_decref(input);
	if (err < 0) {
		/* admission refused (a class this node cannot run, a bad spec): say why, run nothing */
		report_refusal(c, ev->run_id, ev->epoch, e.msg, false);
		return;
	}
	if (!(l = calloc(1, sizeof(*l)))) {
		run_cancel(r, &e);
		report_refusal(c, ev->run_id, ev->epoch, "out of memory", true);
		return;
	}
	snprintf(l->cp_id, sizeof(l->cp_id), "%s", ev->run_id);
	snprintf(l->local, sizeof(l->local), "%s", run_id(r));
	l->epoch = ev->epoch;
	l->start_ms = unix_ms();
	l->next = c->links;
	c->links = l;
	if (link_save(c, l) < 0)
		log_error("control plane run %s: link to %s not saved: a restart may not report it",
			  l->cp_id, run_id(r));
	log_info("control plane run %s: started as %s", l->cp_id, run_id(r));
	tunnel_report(c->t, l->cp_id, l->epoch, TUNNEL_ACCEPTED, NULL);
	if (!run_status_final(run_status(r)))
		tunnel_report(c->t, l->cp_id, l->epoch, dp_status(run_status(r)), NULL);
	count_load(c);
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
		}
		tunnel_ev_free(ev);
		ev = next;
	}
}

static void on_load_timer(struct loop *lp, void *arg)
{
	struct cplane *c = arg;

	count_load(c);
	c->load_timer = loop_timer_add(lp, 1000, on_load_timer, c);
}

/* After adoption: links whose run ended unseen (lanternd was down, or stopped between
 * the end and the completion) are reported now. */
static void on_reconcile(struct loop *lp, void *arg)
{
	struct cplane *c = arg;

	for (struct link *l = c->links; l; l = l->next) {
		struct run *r = runs_find(c->runs, l->local);

		if (!r) {
			char why[128];
			struct outcome gone = { .status = RUN_FAILED, .exit_code = -1, .reason = why,
						.local_id = l->local };

			snprintf(why, sizeof(why), "the node lost the record of this run (local run %s)",
				 l->local);
			if (!tunnel_pending(c->t, l->cp_id))
				send_completion(c, l, &gone);
		} else if (run_status_final(run_status(r)) && !tunnel_pending(c->t, l->cp_id)) {
			complete_run(c, l, r);
		} else if (!run_status_final(run_status(r))) {
			tunnel_report(c->t, l->cp_id, l->epoch, dp_status(run_status(r)), NULL);
		}
	}
	count_load(c);
}

static void on_ended(void *arg, struct run *r)
{
	struct cplane *c = arg;
	struct link *l = link_by_local(c, run_id(r));

	if (!l)
		return;
	complete_run(c, l, r);
	count_load(c);
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

int cplane_open(struct loop *l, const struct cplane_opts *o, struct runs *t,
		const struct runtimes *rs, struct meter *m, struct identity *id, struct cplane **out,
		struct lerr *e)
{
	const char *classes[8];
	struct tunnel_opts to = { 0 };
	char dir[PATH_MAX], list[128] = "";
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
	c->max_runs = o->max_runs;
	snprintf(dir, sizeof(dir), "%s/tunnel", o->state_dir);
	snprintf(c->links_dir, sizeof(c->links_dir), "%s/runs", dir);
	if ((err = util_mkdir_p(c->links_dir, 0700)) < 0) {
		lerr_set(e, err, "control plane: %s: %s", c->links_dir, strerror(-err));
		free(c);
		return err;
	}
	links_load(c);
	to.target = o->target;
	to.tenant = o->tenant;
	to.token_file = o->bootstrap_token_file;
	to.tls = o->tls;
	to.state_dir = dir;
	to.agent_version = AGENT_VERSION;
	to.classes = classes;
	to.n_classes = runtimes_classes(rs, classes, ARRAY_SIZE(classes));
	to.max_runs = o->max_runs;
	to.backoff_max_ms = o->backoff_max_ms;
	to.region = o->region;
	to.node_pk = id ? identity_node_key(id) : NULL;
	to.on_identity = on_identity;
	to.identity_arg = c;
	if ((err = tunnel_start(&to, &c->t, &c->efd, e)) < 0)
		goto fail;
	if ((err = loop_add(l, c->efd, EPOLLIN, on_events, c)) < 0) {
		tunnel_stop(c->t);
		lerr_set(e, err, "control plane: watching the tunnel: %s", strerror(-err));
		goto fail;
	}
	if ((err = runs_subscribe(t, &cplane_hooks, c)) < 0) {
		loop_del(l, c->efd);
		tunnel_stop(c->t);
		lerr_set(e, err, "control plane: cannot subscribe to runs");
		goto fail;
	}
	if (id)
		identity_set_signer(id, &signer, c);
	loop_timer_add(l, 0, on_reconcile, c);
	c->load_timer = loop_timer_add(l, 1000, on_load_timer, c);
	for (size_t i = 0; i < to.n_classes; i++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? "," : "", classes[i]);
	log_info("control plane %s (%s), tenant %s, classes advertised [%s], max runs %d", o->target,
		 o->tls.insecure ? "plaintext" : "TLS", o->tenant, list, o->max_runs);
	*out = c;
	return 0;
fail:
	while (c->links) {
		struct link *x = c->links;

		c->links = x->next;
		free(x);
	}
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
	loop_del(c->loop, c->efd);
	tunnel_stop(c->t);
	while (c->links) {
		struct link *l = c->links;

		c->links = l->next;
		free(l);
	}
	free(c);
}
