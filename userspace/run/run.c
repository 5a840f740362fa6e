/* run.c: the state machine of a run (see run.h for the order of its steps and hooks):
 * admission through a runtime, the instance cgroup made before the workload, the
 * start, timeout and cancel, the decision of how it ended, teardown, and adoption or
 * resumption of what a previous lanternd left. Everything else is a subscriber. */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "internal.h"
#include "lantern/util.h"

/* ---- the table ---- */

/* cgroup_node_sweep_unowned's owner: a live run. */
static bool owns_cgroup_cb(void *arg, const char *name);

int runs_open(const struct runs_opts *o, struct runs **out, struct lerr *e)
{
	struct runs *t = calloc(1, sizeof(*t));
	int err;

	if (!t)
		return lerr_set(e, ENOMEM, "runs: out of memory");
	t->o = *o;
	snprintf(t->runs_dir, sizeof(t->runs_dir), "%s/runs", o->state_dir);
	/* test only (docs/durable-execution.md): lanternd _exits once a run's workload
	 * started, before its run.json is written */
	t->crash_before_record = getenv("LANTERN_TEST_CRASH_BEFORE_RECORD") &&
				 !strcmp(getenv("LANTERN_TEST_CRASH_BEFORE_RECORD"), "1");
	if (t->crash_before_record)
		log_warn("test crash point armed: exit before a started run's run.json");
	if ((err = util_mkdir_p(t->runs_dir, 0700)) < 0) {
		free(t);
		return lerr_set(e, err, "state dir %s: %s", t->runs_dir, strerror(-err));
	}
	*out = t;
	return 0;
}

void runs_close(struct runs *t)
{
	if (!t)
		return;
	/* a clean stop: runs left live keep their instances; anything else an OCI runtime
	 * left in the hierarchies lanternd does not manage goes (a pod removed by its
	 * runtime after the restart's reclaim, docs/pools.md) */
	cgroup_node_sweep_unowned(t->o.cg, owns_cgroup_cb, t);
	while (t->runs) {
		struct run *r = t->runs;
		t->runs = r->next;
		if (r->resume_pf)
			t->pre->free(t->pre_arg, r->resume_pf);
		run_free(r);
	}
	free(t);
}

void runs_set_prefetcher(struct runs *t, const struct run_prefetcher *p, void *arg)
{
	t->pre = p;
	t->pre_arg = arg;
}

int runs_subscribe(struct runs *t, const struct run_hooks *h, void *arg)
{
	if (t->nsubs == RUNS_MAX_SUBS)
		return -ENOSPC;
	t->subs[t->nsubs].h = h;
	t->subs[t->nsubs].arg = arg;
	return t->nsubs++;
}

struct loop *runs_loop(const struct runs *t) { return t->o.loop; }
const struct cgroup_node *runs_cgroup_node(const struct runs *t) { return t->o.cg; }

struct run *runs_find(const struct runs *t, const char *id)
{
	for (struct run *r = t->runs; r; r = r->next)
		if (!strcmp(r->id, id))
			return r;
	return NULL;
}

struct run *runs_by_cgid(const struct runs *t, uint64_t cgid)
{
	for (struct run *r = t->runs; r; r = r->next)
		if (!run_status_final(r->status) && cgid && r->cg.id == cgid)
			return r;
	return NULL;
}

struct run *runs_by_instance(const struct runs *t, const char *inst)
{
	for (struct run *r = t->runs; r; r = r->next)
		if (!run_status_final(r->status) && !strcmp(r->instance_id, inst))
			return r;
	return NULL;
}

struct run *runs_first(const struct runs *t) { return t->runs; }
struct run *run_next(const struct run *r) { return r->next; }

unsigned runs_count(const struct runs *t, enum run_status s)
{
	unsigned n = 0;

	for (struct run *r = t->runs; r; r = r->next)
		n += r->status == s;
	return n;
}

unsigned runs_live(const struct runs *t)
{
	unsigned n = 0;

	for (struct run *r = t->runs; r; r = r->next)
		n += !run_status_final(r->status);
	return n;
}

void run_free(struct run *r)
{
	struct runs *t = r->t;

	RUN_HOOKS(t, free, r);
	if (r->rt_ops && r->rt_ops->free)
		r->rt_ops->free(r->rt, r);
	spec_free(r->spec);
	free(r->file);
	free(r);
}

/* ---- ending ---- */

static void on_kill_timer(struct loop *l, void *arg)
{
	struct run *r = arg;

	r->kill_timer = 0;
	cgroup_inst_signal(&r->cg, SIGKILL);
}

void run_end(struct run *r, enum run_status as, const char *why)
{
	if (run_status_final(r->status) || r->ending_set)
		return;
	r->ending = as;
	r->ending_set = true;
	snprintf(r->reason, sizeof(r->reason), "%s", why);
	cgroup_inst_signal(&r->cg, SIGTERM);
	r->kill_timer = loop_timer_add(r->t->o.loop, r->t->o.grace_ms, on_kill_timer, r);
	if (r->rt_ops && r->rt_ops->stop)
		r->rt_ops->stop(r->rt, r);
}

void run_fence(struct run *r, const char *why)
{
	if (run_status_final(r->status) || r->fenced)
		return;
	r->fenced = true;
	log_warn("run %s: fenced: %s", r->id, why);
	if (!r->ending_set) {
		r->ending = RUN_FAILED;
		r->ending_set = true;
	}
	snprintf(r->reason, sizeof(r->reason), "fenced: %s", why);
	cgroup_inst_signal(&r->cg, SIGKILL);
	run_record_save(r);
}

int run_cancel(struct run *r, struct lerr *e)
{
	if (run_status_final(r->status))
		return lerr_set(e, EALREADY, "run %s already ended: %s", r->id,
				run_status_name(r->status));
	run_end(r, RUN_CANCELLED, "cancelled by lantern kill");
	return 0;
}

static void on_timeout(struct loop *l, void *arg)
{
	struct run *r = arg;
	char why[128];

	r->timeout_timer = 0;
	snprintf(why, sizeof(why), "limits.timeout of %llums reached",
		 (unsigned long long)r->spec->limits.timeout_ms);
	run_end(r, RUN_TIMED_OUT, why);
}

static void cancel_timers(struct run *r)
{
	if (r->timeout_timer)
		loop_timer_cancel(r->t->o.loop, r->timeout_timer);
	if (r->kill_timer)
		loop_timer_cancel(r->t->o.loop, r->kill_timer);
	r->timeout_timer = r->kill_timer = 0;
}

void run_step_begun(struct run *r, const char *step_id)
{
	RUN_HOOKS(r->t, step_begun, r, step_id);
}

void run_step_ended(struct run *r, const struct run_step *s)
{
	RUN_HOOKS(r->t, step_ended, r, s);
}

void run_event(struct run *r, json_t *ev)
{
	RUN_HOOKS(r->t, event, r, ev);
	json_decref(ev);
}

/* The instance goes: what is left of it killed and its cgroup removed, then every
 * subscriber lets go of what it kept for it. Processes first: until the last one is
 * gone, its policy must stay in force. */
static void release_instance(struct run *r)
{
	struct lerr e = { 0 };

	if (r->cg_made) {
		struct cgroup_stats st;

		if (cgroup_inst_stats(&r->cg, &st, NULL) == 0)
			r->oom_kills = st.oom_kills;
		if (cgroup_inst_destroy(&r->cg, 5000, &e) < 0)
			log_error("run %s: %s", r->id, e.msg);
		r->cg_made = false;
	}
	RUN_HOOKS(r->t, released, r);
	cancel_timers(r);
}

/* After the runtime's parts are gone: the instance, then the run is final. */
static void finish_rest(struct run *r)
{
	RUN_HOOKS(r->t, collect, r);
	release_instance(r);
	r->finished = (int64_t)time(NULL);
	log_info("run %s (%s): %s%s%s", r->id, r->spec ? r->spec->name : "?",
		 run_status_name(r->status), r->reason[0] ? ": " : "", r->reason);
	RUN_HOOKS(r->t, ended, r);
	run_record_save(r);
}

static void decide_status(struct run *r, const struct run_exit *x, uint64_t oom)
{
	if (!x->recorded) {
		r->status = RUN_FAILED;
		r->exit_code = -1;
		snprintf(r->reason, sizeof(r->reason),
			 "the workload's supervisor ended without recording an exit status");
	} else if (x->error[0]) {
		r->status = RUN_FAILED;
		r->exit_code = x->exit_code;
		snprintf(r->reason, sizeof(r->reason), "start failed: %s", x->error);
	} else if (r->ending_set) {
		r->status = r->ending;
		r->exit_code = x->signal ? 128 + x->signal : x->exit_code;
	} else if (x->oom_killed || (oom && (x->signal == SIGKILL || (x->runtime_status && x->exit_code)))) {
		/* the main process died of it: the run did */
		r->status = RUN_OOM_KILLED;
		r->exit_code = x->signal ? 128 + x->signal : x->exit_code;
		snprintf(r->reason, sizeof(r->reason), "out of memory: killed at limits.memory");
	} else if (x->signal) {
		r->status = RUN_FAILED;
		r->exit_code = 128 + x->signal;
		snprintf(r->reason, sizeof(r->reason), "killed by signal %d (%s)", x->signal,
			 strsignal(x->signal));
	} else {
		r->exit_code = x->exit_code;
		r->status = x->exit_code == 0 ? RUN_SUCCEEDED : RUN_FAILED;
		if (x->exit_code)
			snprintf(r->reason, sizeof(r->reason), "exit code %d", x->exit_code);
	}
}

void run_exited(struct run *r, const struct run_exit *x)
{
	struct cgroup_stats st = { 0 };

	if (r->exited || run_status_final(r->status))
		return;
	r->exited = true;
	if (r->cg_made && cgroup_inst_stats(&r->cg, &st, NULL) == 0)
		r->oom_kills = st.oom_kills;
	decide_status(r, x, r->oom_kills);
	if (r->rt_ops && r->rt_ops->teardown)
		r->rt_ops->teardown(r->rt, r, finish_rest);
	else
		finish_rest(r);
}

/* ---- starting ---- */

static int spec_errors_to_lerr(struct spec_errors *errs, struct lerr *e)
{
	size_t off = 0;

	e->msg[0] = '\0';
	for (size_t i = 0; i < errs->n && off < sizeof(e->msg) - 1; i++)
		off += (size_t)snprintf(e->msg + off, sizeof(e->msg) - off, "%s%s", i ? "\n" : "",
					errs->msg[i]);
	spec_errors_free(errs);
	return -EINVAL;
}

static int call_prepared(struct run *r, struct lerr *e)
{
	struct runs *t = r->t;
	int err;

	for (int i = 0; i < t->nsubs; i++)
		if (t->subs[i].h->prepared && (err = t->subs[i].h->prepared(t->subs[i].arg, r, e)) < 0)
			return err;
	return 0;
}

static int call_ready(struct run *r, struct lerr *e)
{
	struct runs *t = r->t;
	int err;

	for (int i = 0; i < t->nsubs; i++)
		if (t->subs[i].h->ready && (err = t->subs[i].h->ready(t->subs[i].arg, r, e)) < 0)
			return err;
	return 0;
}

static uint64_t mono_us(void)
{
	return util_now_ns(CLOCK_MONOTONIC) / 1000;
}

/* A claimed run takes its pooled sandbox where a cold one prepares: the runtime takes
 * the started sandbox, the instance cgroup is the one the pool made with the same
 * limits. */
static int take_sandbox(struct run *r, struct lerr *e)
{
	int err;

	if (!r->rt_ops->claim)
		return lerr_set(e, EOPNOTSUPP, "claim: runtime %s cannot take a pooled sandbox", r->rt_ops->name);
	if ((err = r->rt_ops->claim(r->rt, r, &r->claim, e)) < 0)
		return err;
	if ((err = cgroup_inst_open(r->t->o.cg, r->instance_id, &r->cg, e)) < 0)
		return err;
	r->cg_made = true;
	return 0;
}

/* spec.yaml, durable, before run.json: with it, what a restart (after a power loss
 * too) loads. Written once the workload runs, not before: nothing reads it until a
 * restart, which loads only runs whose run.json exists. A run resumed after a restart
 * has it already. */
static void spec_save(struct run *r)
{
	char path[PATH_MAX + 16];
	int err;

	snprintf(path, sizeof(path), "%s/spec.yaml", r->dir);
	err = r->yaml ? util_write_file_atomic(path, r->yaml, r->yaml_len) : util_fsync_path(path);
	if (err < 0)
		log_error("run %s: cannot write %s: %s: a restart cannot load this run", r->id, path,
			  strerror(-err));
}

/* The runtime's preparation, the instance (limited and enforced before the workload
 * exists), the workload. On error what was made is left for the caller's undo. */
static int run_start(struct run *r, struct lerr *e)
{
	struct runs *t = r->t;
	struct run_env *env;
	uint64_t t0 = mono_us(), t1;
	int err;

	r->exited = false;
	if (r->claimed) {
		if ((err = take_sandbox(r, e)) < 0)
			return err;
	} else {
		if (r->rt_ops->prepare && (err = r->rt_ops->prepare(r->rt, r, e)) < 0)
			return err;
		if ((err = cgroup_inst_create(t->o.cg, r->instance_id, &r->spec->limits, t->o.pids_max,
					      &r->cg, e)) < 0)
			return err;
		r->cg_made = true;
	}
	if ((err = call_prepared(r, e)) < 0)
		return err;
	if (!(env = run_env_new(r)))
		return lerr_set(e, ENOMEM, "spawn: out of memory");
	RUN_HOOKS(t, env, r, env);
	if ((err = call_ready(r, e)) < 0) {
		run_env_free(env);
		return err;
	}
	t1 = mono_us();
	err = r->rt_ops->start(r->rt, r, env, e);
	run_env_free(env);
	if (err < 0)
		return err;
	if (r->claimed) {
		r->stage_us[1] = t1 - t0;
		r->stage_us[2] = mono_us() - t1;
	}
	if (r->spec->limits.timeout_ms)
		r->timeout_timer = loop_timer_add(t->o.loop, r->spec->limits.timeout_ms, on_timeout, r);
	r->status = RUN_RUNNING;
	spec_save(r);
	/* the started hooks write their files (telemetry.json, usage.json) before
	 * run.json: a restart loads a run only from run.json, and finds them with it */
	RUN_HOOKS(t, started, r);
	if (t->crash_before_record) {
		log_warn("test crash point: exiting before run %s's run.json", r->id);
		_exit(86);
	}
	run_record_save(r);
	log_info("run %s (%s): running on %s, instance %s, cgroup id %llu", r->id, r->spec->name,
		 r->rt_ops->name, r->instance_id, (unsigned long long)r->cg.id);
	return 0;
}

/* Undoes a start that failed: the runtime's parts (now, on the loop), the instance,
 * every subscriber's hold on it. */
static void undo_start(struct run *r)
{
	if (r->rt_ops && r->rt_ops->teardown)
		r->rt_ops->teardown(r->rt, r, NULL);
	release_instance(r);
}

static void new_id(char *out, char prefix)
{
	out[0] = prefix;
	out[1] = '-';
	util_random_hex(out + 2, 6);
}

/* A run id given from elsewhere names a directory: r- and hex only. */
static bool id_ok(const char *id)
{
	size_t n = strlen(id);

	if (n < 3 || n >= sizeof(((struct run *)0)->id) || strncmp(id, "r-", 2))
		return false;
	return strspn(id + 2, "0123456789abcdef") == n - 2;
}

/* A pooled sandbox for r, if a subscriber keeps one that fits its spec. */
static void try_claim(struct run *r)
{
	struct runs *t = r->t;

	for (int i = 0; i < t->nsubs; i++) {
		memset(&r->claim, 0, sizeof(r->claim));
		r->claim.waiter_fd = r->claim.harness_fd = -1;
		if (t->subs[i].h->claim && t->subs[i].h->claim(t->subs[i].arg, r, r->spec, &r->claim) == 0) {
			r->claimed = r->claim_open = true;
			snprintf(r->instance_id, sizeof(r->instance_id), "%s", r->claim.instance_id);
			snprintf(r->pool, sizeof(r->pool), "%s", r->claim.pool);
			r->pool_waited_ms = ((int64_t)util_now_ns(CLOCK_REALTIME) - r->claim.ready_ns) / 1000000;
			return;
		}
	}
}

/* The claim is settled: the pool learns whether its sandbox was taken (why NULL) or
 * what is left of it must go. */
static void claim_settle(struct run *r, const char *why)
{
	if (!r->claim_open)
		return;
	r->claim_open = false;
	if (r->claim.done)
		r->claim.done(r->claim.arg, &r->claim, why);
}

/* One attempt at a run; may_claim: a pooled sandbox may be taken (never for a resumed
 * run, whose directory comes with it). *claim_failed tells the caller that it failed
 * after taking one (a cold start may follow). */
static int submit(struct runs *t, const struct run_submit *sub, bool may_claim, const char *fallback,
		  struct run **out, bool *claim_failed, struct lerr *e)
{
	struct spec_errors errs = { 0 };
	const struct runtime_ops *ops;
	struct spec *s = NULL;
	struct run *r;
	uint64_t t0 = mono_us();
	void *rt;
	int err, called = 0;

	*claim_failed = false;
	if (sub->seed_dir && (!sub->id || !id_ok(sub->id)))
		return lerr_set(e, EINVAL, "spawn: a resumed run needs a valid run id, not \"%s\"",
				sub->id ? sub->id : "");
	if (sub->seed_dir && runs_find(t, sub->id))
		return lerr_set(e, EEXIST, "spawn: run %s is already on this node", sub->id);
	if (spec_parse(sub->file, sub->yaml, sub->len, &s, &errs) < 0)
		return spec_errors_to_lerr(&errs, e);
	if (!spec_region_ok(s, t->o.region)) {
		err = lerr_set(e, EPERM, "spawn: refused: spec.preferred_regions: this node's region is %s%s%s, "
			       "not one of them; metadata.labels[\"" SPEC_REGION_FALLBACK_LABEL "\"]: allow "
			       "lets it run elsewhere", t->o.region && *t->o.region ? "\"" : "",
			       t->o.region && *t->o.region ? t->o.region : "unknown (lanternd --region)",
			       t->o.region && *t->o.region ? "\"" : "");
		spec_free(s);
		return err;
	}
	if ((err = runtimes_admit(t->o.runtimes, s, &ops, &rt, e)) < 0) {
		spec_free(s);
		return err;
	}
	if (!(r = run_alloc(t))) {
		spec_free(s);
		return lerr_set(e, ENOMEM, "spawn: out of memory");
	}
	r->spec = s;
	r->file = strdup(sub->file);
	snprintf(r->tenant, sizeof(r->tenant), "%s", t->o.tenant ? t->o.tenant : "default");
	snprintf(r->ref, sizeof(r->ref), "%s", sub->ref ? sub->ref : "");
	r->epoch = sub->epoch;
	r->rt_ops = ops;
	r->rt = rt;
	if (sub->seed_dir)
		snprintf(r->id, sizeof(r->id), "%s", sub->id);
	else
		new_id(r->id, 'r');
	r->created = (int64_t)time(NULL);
	r->status = RUN_ACCEPTED;
	snprintf(r->dir, sizeof(r->dir), "%s/%s", t->runs_dir, r->id);
	if (fallback)
		snprintf(r->pool_fallback, sizeof(r->pool_fallback), "%s", fallback);
	if (may_claim)
		try_claim(r);
	if (!r->claimed)
		new_id(r->instance_id, 'i');
	if (!r->file) {
		err = lerr_set(e, ENOMEM, "spawn: out of memory");
		goto fail;
	}
	if (sub->seed_dir) {
		if (rename(sub->seed_dir, r->dir) < 0) {
			err = lerr_set(e, errno, "spawn: run directory %s from %s: %s", r->dir, sub->seed_dir,
				       strerror(errno));
			goto fail;
		}
	} else if (r->claimed) {
		if (rename(r->claim.dir, r->dir) < 0) {
			err = lerr_set(e, errno, "claim: the sandbox's directory %s: %s", r->claim.dir,
				       strerror(errno));
			goto fail;
		}
	} else if ((err = util_mkdir_p(r->dir, 0700)) < 0) {
		lerr_set(e, err, "spawn: run directory %s: %s", r->dir, strerror(-err));
		goto fail;
	}
	/* spec.yaml is written once the workload runs (run_start): before it only the
	 * journal's run_started record must be durable (the durable subscriber) */
	r->yaml = sub->yaml;
	r->yaml_len = sub->len;
	r->prefetch = sub->prefetch;
	for (; called < t->nsubs; called++) {
		const struct run_sub *sb = &t->subs[called];

		if (sub->seed_dir)
			err = sb->h->resumed ? sb->h->resumed(sb->arg, r, e) : 0;
		else
			err = sb->h->admitted ? sb->h->admitted(sb->arg, r, sub->input, e) : 0;
		if (err < 0)
			goto fail;
	}
	r->prefetch = NULL;
	r->stage_us[0] = mono_us() - t0;
	if ((err = run_start(r, e)) < 0)
		goto fail;
	claim_settle(r, NULL);
	r->yaml = NULL;
	r->next = t->runs;
	t->runs = r;
	*out = r;
	return 0;

fail:
	r->prefetch = NULL;
	if (called == t->nsubs)
		undo_start(r);
	util_rm_rf(r->dir);
	log_warn("%s", e->msg);
	*claim_failed = r->claimed;
	claim_settle(r, e->msg);
	run_free(r);
	return err;
}

int runs_submit(struct runs *t, const char *file, const char *yaml, size_t len, json_t *input,
		struct run **out, struct lerr *e)
{
	struct run_submit s = { .file = file, .yaml = yaml, .len = len, .input = input };

	return runs_start(t, &s, out, e);
}

int runs_start(struct runs *t, const struct run_submit *sub, struct run **out, struct lerr *e)
{
	char why[sizeof(e->msg)];
	bool claim_failed;
	int err = submit(t, sub, !sub->seed_dir, NULL, out, &claim_failed, e);

	if (err < 0 && claim_failed) {
		/* fail closed: that sandbox is gone; the spawn starts as if there were no pool */
		snprintf(why, sizeof(why), "%s", e->msg);
		log_warn("pool: a claim for %s failed: %s; starting it cold", sub->file, why);
		e->msg[0] = '\0';
		err = submit(t, sub, false, why, out, &claim_failed, e);
	}
	return err;
}

void runs_forget(struct runs *t, struct run *r)
{
	if (!run_status_final(r->status))
		return;
	for (struct run **pp = &t->runs; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	util_rm_rf(r->dir);
	run_free(r);
}

void runs_kill_all(struct runs *t)
{
	for (struct run *r = t->runs; r; r = r->next) {
		if (run_status_final(r->status))
			continue;
		/* the supervisor first: gone before its workload, it records no exit */
		if (r->rt_ops && r->rt_ops->kill)
			r->rt_ops->kill(r->rt, r);
		cgroup_inst_signal(&r->cg, SIGKILL);
	}
}

/* ---- after a restart ---- */

static void finish_adopted(struct run *r, const struct run_exit *x)
{
	run_exited(r, x);
}

/* Restarts a run whose workload died with the previous lanternd (the node went down
 * with it), from its journal, in a fresh instance: same run id, new instance id; with
 * what was read for it first (pf, or NULL). */
static void run_resume(struct run *r, struct run_prefetch *pf)
{
	struct runs *t = r->t;
	struct lerr e = { 0 };
	int err = 0;

	/* what is left of the old instance goes first */
	if (r->cg.name[0] && cgroup_inst_open(t->o.cg, r->cg.name, &r->cg, &e) == 0)
		r->cg_made = true;
	undo_start(r);
	new_id(r->instance_id, 'i');
	memset(&r->cg, 0, sizeof(r->cg));
	run_set_network(r, false, 0);
	e.msg[0] = '\0';
	if (!r->spec)
		err = lerr_set(&e, EINVAL, "run %s: cannot resume: its spec is unreadable", r->id);
	else if (r->ending_set)
		/* killed while what it needs was read */
		err = lerr_set(&e, ECANCELED, "%s", r->reason);
	r->prefetch = pf;
	for (int i = 0; !err && i < t->nsubs; i++)
		if (t->subs[i].h->resumed)
			err = t->subs[i].h->resumed(t->subs[i].arg, r, &e);
	r->prefetch = NULL;
	if (!err)
		err = run_start(r, &e);
	if (err < 0) {
		struct run_exit x = { .recorded = true, .exit_code = -1 };

		log_error("run %s: %s", r->id, e.msg);
		undo_start(r);
		cancel_timers(r);
		r->ending = err == -ECANCELED ? r->ending : RUN_FAILED;
		r->ending_set = true;
		snprintf(r->reason, sizeof(r->reason), "%s", e.msg);
		r->exited = true;
		decide_status(r, &x, 0);
		r->exit_code = -1;
		finish_rest(r);
	}
}

static void on_resume_read(void *ctx, struct run_prefetch *pf)
{
	struct run *r = ctx;

	r->resume_pf = NULL;
	run_resume(r, pf);
	r->t->pre->free(r->t->pre_arg, pf);
}

/* run_resume once the prefetcher has read what the resumed hooks take (at once when
 * there is nothing to read). */
static void resume_when_read(struct run *r)
{
	struct runs *t = r->t;
	char path[PATH_MAX + 16], *yaml = NULL;
	size_t len = 0;
	int n = 0;

	snprintf(path, sizeof(path), "%s/spec.yaml", r->dir);
	if (t->pre && r->spec && util_read_file(path, &yaml, &len) == 0)
		n = t->pre->start(t->pre_arg, r->file ? r->file : "spec.yaml", yaml, len, on_resume_read, r,
				  &r->resume_pf);
	free(yaml);
	if (n > 0) {
		log_info("run %s: resumed once what its spec names is read", r->id);
		return;
	}
	run_resume(r, NULL);
}

static bool can_resume(struct run *r)
{
	for (int i = 0; i < r->t->nsubs; i++)
		if (r->t->subs[i].h->can_resume && r->t->subs[i].h->can_resume(r->t->subs[i].arg, r))
			return true;
	return false;
}

/* Adopts a run a previous lanternd started and left live. */
static void run_adopt(struct run *r)
{
	struct runs *t = r->t;
	struct run_exit x = { 0 };
	struct lerr e = { 0 };
	enum runtime_found found;
	int64_t left;
	int err = 0;

	if (!r->rt_ops) {
		log_error("run %s: its runtime is not known to this lanternd: stopping it", r->id);
		if (cgroup_inst_open(t->o.cg, r->cg.name, &r->cg, &e) == 0) {
			r->cg_made = true;
			cgroup_inst_signal(&r->cg, SIGKILL);
		}
		finish_adopted(r, &x);
		return;
	}
	found = r->rt_ops->adopt(r->rt, r, &x);
	if (found == RUNTIME_GONE && can_resume(r)) {
		resume_when_read(r);
		return;
	}
	if (cgroup_inst_open(t->o.cg, r->cg.name, &r->cg, &e) < 0)
		log_warn("run %s: %s", r->id, e.msg);
	else
		r->cg_made = true;
	if (found != RUNTIME_ALIVE) {
		finish_adopted(r, &x);
		return;
	}
	if (!r->spec || !r->cg_made) {
		err = lerr_set(&e, ENOENT, "cannot adopt run %s: its %s is missing", r->id,
			       r->spec ? "cgroup" : "spec");
	}
	for (int i = 0; !err && i < t->nsubs; i++)
		if (t->subs[i].h->adopted)
			err = t->subs[i].h->adopted(t->subs[i].arg, r, &e);
	if (err < 0) {
		/* what is authoritative for it is gone: it cannot go on */
		log_error("run %s: %s: stopping it", r->id, e.msg);
		snprintf(r->reason, sizeof(r->reason), "%s", e.msg);
		r->ending = RUN_FAILED;
		r->ending_set = true;
		if (r->cg_made)
			cgroup_inst_signal(&r->cg, SIGKILL);
		return;
	}
	if (r->spec->limits.timeout_ms) {
		left = r->created * 1000 + (int64_t)r->spec->limits.timeout_ms - (int64_t)time(NULL) * 1000;
		r->timeout_timer = loop_timer_add(t->o.loop, left > 0 ? (uint64_t)left : 0, on_timeout, r);
	}
	log_info("run %s (%s): adopted, cgroup id %llu", r->id, r->spec->name,
		 (unsigned long long)r->cg.id);
}

static bool owns_cgroup(const struct runs *t, const char *name)
{
	for (struct run *r = t->runs; r; r = r->next)
		if (!run_status_final(r->status) && !strcmp(r->cg.name, name))
			return true;
	return false;
}

/* Does a subscriber keep the directory of a run with no run.json? */
static bool keeps_dir(struct runs *t, const char *id, const char *dir)
{
	for (int i = 0; i < t->nsubs; i++)
		if (t->subs[i].h->keeps_dir && t->subs[i].h->keeps_dir(t->subs[i].arg, id, dir))
			return true;
	return false;
}

/* Run directories with no run.json: lanternd died between a run's admission and its
 * record (run_start). Nothing loads them; what their run claimed (instance cgroup, its
 * BPF entries, identity tmpfs) was reclaimed with everything no run owns. Only entries
 * directly under STATE/runs whose name is a run id, directories themselves (not links),
 * are looked at; removed without following links or leaving the state's filesystem,
 * unless a subscriber keeps one (a journal with more than a run's first record). */
static void remove_unrecorded(struct runs *t)
{
	int fd = open(t->runs_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *de;
	DIR *d;

	if (fd < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d))) {
		char dir[PATH_MAX + 64];
		struct stat st;
		int sub, err;
		bool recorded;

		if (!id_ok(de->d_name) || runs_find(t, de->d_name) ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode) ||
		    (sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
			continue;
		recorded = fstatat(sub, "run.json", &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT;
		close(sub);
		if (recorded)
			continue;
		snprintf(dir, sizeof(dir), "%s/%s", t->runs_dir, de->d_name);
		if (keeps_dir(t, de->d_name, dir)) {
			log_warn("run %s: %s has no run.json but keeps a journal with more than its first record: "
				 "left in place, not loaded", de->d_name, dir);
			continue;
		}
		/* harness/, bundle/: a few levels; never more than this below a run's dir */
		if ((err = util_rm_tree_at(dirfd(d), de->d_name, 8, 0)) < 0)
			log_warn("run %s: cannot remove %s (no run.json): %s", de->d_name, dir, strerror(-err));
		else
			log_info("run %s: removed %s: it has no run.json (lanternd ended before the run was recorded)",
				 de->d_name, dir);
	}
	closedir(d);
}

void runs_recover(struct runs *t)
{
	DIR *dir = opendir(t->runs_dir);
	struct dirent *de;
	char **names = NULL;
	size_t nnames = 0;

	while (dir && (de = readdir(dir))) {
		struct run *r;

		if (de->d_name[0] == '.' || !(r = run_record_load(t, de->d_name)))
			continue;
		r->next = t->runs;
		t->runs = r;
	}
	if (dir)
		closedir(dir);
	for (struct run *r = t->runs; r; r = r->next)
		if (!run_status_final(r->status))
			run_adopt(r);

	/* instance cgroups no live run owns: their processes go, then their entries
	 * (each subscriber's recovered hook) */
	if (cgroup_node_list(t->o.cg, &names, &nnames) == 0) {
		for (size_t i = 0; i < nnames; i++) {
			struct cgroup_inst c;
			struct lerr e = { 0 };

			if (!owns_cgroup(t, names[i]) && cgroup_inst_open(t->o.cg, names[i], &c, &e) == 0) {
				log_info("reclaiming cgroup %s: no run owns it", names[i]);
				cgroup_inst_destroy(&c, 5000, &e);
			}
			free(names[i]);
		}
		free(names);
	}
	runtimes_reclaim(t->o.runtimes, t);
	RUN_HOOKS(t, recovered, t);
	/* what is left of instances no run owns in the hierarchies lanternd does not
	 * manage (hybrid host): an OCI runtime's directories for their containers */
	cgroup_node_sweep_unowned(t->o.cg, owns_cgroup_cb, t);
	remove_unrecorded(t);
}

static bool owns_cgroup_cb(void *arg, const char *name)
{
	return owns_cgroup(arg, name);
}
