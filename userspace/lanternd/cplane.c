/* cplane.c: lanternd under a control plane (--control-plane). The tunnel module's thread
 * speaks gRPC; this file is its other half on the event loop: assignments become runs
 * through the same run_submit as `lantern run` (config_json is the AgentSpec as JSON,
 * which the spec parser reads as YAML), cancels become run_cancel, a run's end becomes
 * a completion, and drain orders stop new assignments while in-flight runs finish.
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

#include "lanternd.h"
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
	struct tunnel *t;
	int efd;
	bool draining;
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

	s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
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

/* The isolation classes this node's admission accepts: the process runtime serves
 * `trusted` (image_digest host); for every class, admission itself (ocirun_admit) is
 * asked about a minimal image spec, so what is advertised is exactly what would be
 * admitted. A class is advertised only if its handler answered at start. */
static size_t node_classes(struct daemon *d, const char **out, size_t max)
{
	static const char probe_image[] =
		"probe@sha256:0000000000000000000000000000000000000000000000000000000000000000";
	size_t n = 0;

	for (int c = SPEC_ISO_STANDARD; c <= SPEC_ISO_DEVCONTAINER && n < max; c++) {
		struct spec s = { .isolation = (enum spec_isolation)c, .image_digest = (char *)probe_image,
				  .network = SPEC_NET_NONE };
		struct lerr e;

		if (ocirun_admit(d, &s, &e) == 0 || (c == SPEC_ISO_TRUSTED && d->o.process_runtime))
			out[n++] = spec_isolation_name((enum spec_isolation)c);
	}
	return n;
}

/* Cost and tokens of a finished run. The meter (issues 4 and 5) owns these figures;
 * until it exposes per-run totals to lanternd they are reported as 0. */
/* The run's metered cost and its tokens summed over models: input counts uncached,
 * cache-read and cache-creation input; output counts output and reasoning. */
static void run_usage(struct daemon *d, struct run *r, double *cost, int64_t *tin, int64_t *tout)
{
	json_t *c = telemetry_run_cost(d, r), *tokens, *u;
	const char *model;

	*cost = json_number_value(json_object_get(c, "total_usd"));
	*tin = *tout = 0;
	tokens = json_object_get(json_object_get(c, "usage"), "tokens");
	json_object_foreach(tokens, model, u) {
		*tin += json_integer_value(json_object_get(u, "input_tokens")) +
			json_integer_value(json_object_get(u, "cache_read_tokens")) +
			json_integer_value(json_object_get(u, "cache_creation_tokens"));
		*tout += json_integer_value(json_object_get(u, "output_tokens")) +
			 json_integer_value(json_object_get(u, "reasoning_tokens"));
	}
	json_decref(c);
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

static void send_completion(struct daemon *d, struct link *l, struct run *r)
{
	struct cplane *c = d->cplane;
	struct tunnel_completion tc = {
		.run_id = l->cp_id, .epoch = l->epoch, .status = dp_status(r->status),
		.detail = r->reason,
	};
	char out[256];
	struct lerr e;

	/* only metadata crosses the boundary: the workload's output stays on the node */
	snprintf(out, sizeof(out), "{\"exit_code\":%d,\"local_run_id\":\"%s\",\"status\":\"%s\"}",
		 r->exit_code, r->id, run_status_name(r->status));
	tc.output_json = out;
	tc.duration_ms = l->start_ms ? unix_ms() - l->start_ms : (r->finished - r->created) * 1000;
	if (r->finished && l->start_ms && r->finished * 1000 < l->start_ms)
		tc.duration_ms = 0;
	run_usage(d, r, &tc.cost_usd, &tc.tokens_in, &tc.tokens_out);
	if (tunnel_complete(c->t, &tc, &e) < 0)
		log_error("control plane run %s: completion not kept: %s", l->cp_id, e.msg);
}

static int count_load(struct daemon *d)
{
	int active = 0;

	for (struct run *r = d->runs; r; r = r->next)
		if (!run_status_final(r->status))
			active++;
	tunnel_set_load(d->cplane->t, active, 0);
	return active;
}

static void on_assign(struct daemon *d, struct tunnel_ev *ev)
{
	struct cplane *c = d->cplane;
	struct link *l = link_by_cp(c, ev->run_id);
	struct run *r;
	struct lerr e = { 0 };
	json_t *input = NULL;
	char file[96];
	int err;

	if (l) {
		/* a re-sent assignment: report what became of it instead of starting it again */
		r = run_find(d, l->local);
		l->epoch = ev->epoch;
		link_save(c, l);
		if (r && !run_status_final(r->status)) {
			tunnel_report(c->t, l->cp_id, l->epoch, TUNNEL_ACCEPTED, NULL);
			tunnel_report(c->t, l->cp_id, l->epoch, dp_status(r->status), NULL);
		} else if (r && !tunnel_pending(c->t, l->cp_id)) {
			send_completion(d, l, r);
		}
		return;
	}
	if (c->draining) {
		report_refusal(c, ev->run_id, ev->epoch,
			       "node is draining: it takes no new runs until the drain is lifted", true);
		return;
	}
	if (count_load(d) >= d->o.max_runs) {
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
	err = run_submit(d, file, ev->config_json, strlen(ev->config_json), input, &r, &e);
	json_decref(input);
	if (err < 0) {
		/* admission refused (a class this node cannot run, a bad spec): say why, run nothing */
		report_refusal(c, ev->run_id, ev->epoch, e.msg, false);
		return;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		run_cancel(d, r, &e);
		report_refusal(c, ev->run_id, ev->epoch, "out of memory", true);
		return;
	}
	snprintf(l->cp_id, sizeof(l->cp_id), "%s", ev->run_id);
	snprintf(l->local, sizeof(l->local), "%s", r->id);
	l->epoch = ev->epoch;
	l->start_ms = unix_ms();
	l->next = c->links;
	c->links = l;
	if (link_save(c, l) < 0)
		log_error("control plane run %s: link to %s not saved: a restart may not report it",
			  l->cp_id, r->id);
	log_info("control plane run %s: started as %s", l->cp_id, r->id);
	tunnel_report(c->t, l->cp_id, l->epoch, TUNNEL_ACCEPTED, NULL);
	if (!run_status_final(r->status))
		tunnel_report(c->t, l->cp_id, l->epoch, dp_status(r->status), NULL);
	count_load(d);
}

static void on_events(struct loop *lp, int fd, uint32_t events, void *arg)
{
	struct daemon *d = arg;
	struct cplane *c = d->cplane;
	struct tunnel_ev *ev = tunnel_take(c->t);

	while (ev) {
		struct tunnel_ev *next = ev->next;
		struct link *l;
		struct run *r;
		struct lerr e = { 0 };

		switch (ev->type) {
		case TUNNEL_ASSIGN:
			on_assign(d, ev);
			break;
		case TUNNEL_CANCEL:
			l = link_by_cp(c, ev->run_id);
			r = l ? run_find(d, l->local) : NULL;
			if (!r)
				log_warn("control plane cancels run %s, which this node does not have",
					 ev->run_id);
			else if (run_cancel(d, r, &e) < 0)
				log_info("control plane run %s: %s", ev->run_id, e.msg);
			else
				log_info("control plane run %s (%s): cancel requested", ev->run_id, r->id);
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
	struct daemon *d = arg;

	count_load(d);
	d->cplane->load_timer = loop_timer_add(lp, 1000, on_load_timer, d);
}

/* After adoption: links whose run ended unseen (lanternd was down, or stopped between
 * the end and the completion) are reported now. */
static void on_reconcile(struct loop *lp, void *arg)
{
	struct daemon *d = arg;
	struct cplane *c = d->cplane;

	for (struct link *l = c->links; l; l = l->next) {
		struct run *r = run_find(d, l->local);

		if (!r) {
			struct run gone = { .status = RUN_FAILED, .exit_code = -1 };

			snprintf(gone.id, sizeof(gone.id), "%s", l->local);
			snprintf(gone.reason, sizeof(gone.reason),
				 "the node lost the record of this run (local run %s)", l->local);
			if (!tunnel_pending(c->t, l->cp_id))
				send_completion(d, l, &gone);
		} else if (run_status_final(r->status) && !tunnel_pending(c->t, l->cp_id)) {
			send_completion(d, l, r);
		} else if (!run_status_final(r->status)) {
			tunnel_report(c->t, l->cp_id, l->epoch, dp_status(r->status), NULL);
		}
	}
	count_load(d);
}

void cplane_run_ended(struct daemon *d, struct run *r)
{
	struct link *l;

	if (!d->cplane || !(l = link_by_local(d->cplane, r->id)))
		return;
	send_completion(d, l, r);
	count_load(d);
}

int cplane_open(struct daemon *d, struct lerr *e)
{
	const char *classes[8];
	struct tunnel_opts o = { 0 };
	char dir[PATH_MAX];
	struct cplane *c;
	int err;

	if (!d->o.control_plane)
		return 0;
	if (!d->o.tenant || !d->o.bootstrap_token_file)
		return lerr_set(e, EINVAL, "--control-plane needs --tenant and --bootstrap-token-file");
	c = calloc(1, sizeof(*c));
	if (!c)
		return lerr_set(e, ENOMEM, "control plane: out of memory");
	snprintf(dir, sizeof(dir), "%s/tunnel", d->o.state_dir);
	snprintf(c->links_dir, sizeof(c->links_dir), "%s/runs", dir);
	if ((err = util_mkdir_p(c->links_dir, 0700)) < 0) {
		free(c);
		return lerr_set(e, err, "control plane: %s: %s", c->links_dir, strerror(-err));
	}
	links_load(c);
	o.target = d->o.control_plane;
	o.tenant = d->o.tenant;
	o.token_file = d->o.bootstrap_token_file;
	o.tls.insecure = d->o.cp_insecure;
	o.tls.ca_file = d->o.cp_ca;
	o.state_dir = dir;
	o.agent_version = AGENT_VERSION;
	o.classes = classes;
	o.n_classes = node_classes(d, classes, ARRAY_SIZE(classes));
	o.max_runs = d->o.max_runs;
	o.backoff_max_ms = d->o.cp_backoff_max_ms;
	if ((err = tunnel_start(&o, &c->t, &c->efd, e)) < 0) {
		free(c);
		return err;
	}
	d->cplane = c;
	if ((err = loop_add(d->loop, c->efd, EPOLLIN, on_events, d)) < 0) {
		tunnel_stop(c->t);
		d->cplane = NULL;
		free(c);
		return lerr_set(e, err, "control plane: watching the tunnel: %s", strerror(-err));
	}
	loop_timer_add(d->loop, 0, on_reconcile, d);
	c->load_timer = loop_timer_add(d->loop, 1000, on_load_timer, d);
	{
		char list[128] = "";

		for (size_t i = 0; i < o.n_classes; i++)
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? "," : "",
				 classes[i]);
		log_info("control plane %s (%s), tenant %s, classes advertised [%s], max runs %d",
			 d->o.control_plane, d->o.cp_insecure ? "plaintext" : "TLS", d->o.tenant, list,
			 d->o.max_runs);
	}
	return 0;
}

void cplane_close(struct daemon *d)
{
	struct cplane *c = d->cplane;

	if (!c)
		return;
	loop_del(d->loop, c->efd);
	tunnel_stop(c->t);
	while (c->links) {
		struct link *l = c->links;
		c->links = l->next;
		free(l);
	}
	free(c);
	d->cplane = NULL;
}
