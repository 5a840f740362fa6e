/* usage.c: the meter of runs (see meter.h): per run, CPU-seconds and memory
 * GiB-seconds sampled from its instance cgroup once a second, egress bytes from the
 * telemetry programs' counters, wall time from admission, and the token tally the
 * durable subscriber hands over; priced by the one table, checked against the run's
 * budget on a timer, written to cost.json at the end, summed per tenant. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lantern/lbpf_tm.h"
#include "lantern/meter.h"
#include "lantern/metrics.h"
#include "lantern/run.h"
#include "lantern/trace.h"

#define SAMPLE_MS   1000   /* sampling and the budget check */
#define SAVE_EVERY  5      /* samples between saves of usage.json */
#define MAX_TENANTS 64

struct meter_run {
	uint64_t t0, t_collect;     /* Unix ns: admission, collection of the last instance */
	double cpu_done;            /* CPU seconds of collected instances */
	double cpu_live;            /* of the current instance, last sample */
	double cpu_base;            /* the instance's CPU when the run got it: a pooled
				     * sandbox's runtime start and wait are not the run's */
	double mem_gib_s;
	uint64_t mem_sample_ns;     /* monotonic time of the last memory sample */
	uint64_t egress_done;       /* tx bytes of collected instances */
	bool collected;
	bool ended;
	unsigned samples;
	struct meter_tally tally;
};

struct tenant_total {
	char tenant[64];
	double usd[6];              /* total, tokens, cpu, memory, egress, wall */
	uint64_t runs;
};

struct meter {
	struct loop *loop;
	struct meter_table prices;
	struct lbpf_tm *tm;
	struct runs *runs;
	int slot;
	struct tenant_total tenants[MAX_TENANTS];
	size_t ntenants;
};

const struct meter_table *meter_prices(const struct meter *m)
{
	return &m->prices;
}

static void path_of(const struct run *r, char *out, size_t len)
{
	snprintf(out, len, "%s/usage.json", run_dir(r));
}

static void save(const struct run *r, const struct meter_run *mr)
{
	char path[PATH_MAX + 16], *s;
	json_t *j = json_pack("{s:I, s:I, s:f, s:f, s:f, s:f, s:I, s:b, s:b}", "t0", (json_int_t)mr->t0,
			      "t_collect", (json_int_t)mr->t_collect, "cpu_done", mr->cpu_done,
			      "cpu_live", mr->cpu_live, "cpu_base", mr->cpu_base, "mem_gib_s", mr->mem_gib_s,
			      "egress_done", (json_int_t)util_sat_i64(mr->egress_done), "collected",
			      mr->collected, "ended", mr->ended);

	s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	path_of(r, path, sizeof(path));
	if (!s || util_write_file_replace(path, s, strlen(s)) < 0)
		log_warn("run %s: cannot write %s: its metered usage may be short after a restart",
			 run_id(r), path);
	free(s);
}

static uint64_t jint(json_t *o, const char *k)
{
	return (uint64_t)json_integer_value(json_object_get(o, k));
}

/* The run's meter: in memory, else from usage.json (an adopted or resumed run). */
static struct meter_run *get(struct meter *m, struct run *r)
{
	struct meter_run *mr = run_slot(r, m->slot);
	char path[PATH_MAX + 16];
	json_t *j;

	if (mr)
		return mr;
	if (!(mr = calloc(1, sizeof(*mr))))
		return NULL;
	path_of(r, path, sizeof(path));
	j = json_load_file(path, 0, NULL);
	mr->t0 = jint(j, "t0");
	if (!mr->t0)
		mr->t0 = run_created(r) ? (uint64_t)run_created(r) * 1000000000ULL : trace_now_ns();
	mr->t_collect = jint(j, "t_collect");
	mr->cpu_done = json_number_value(json_object_get(j, "cpu_done"));
	mr->cpu_live = json_number_value(json_object_get(j, "cpu_live"));
	mr->cpu_base = json_number_value(json_object_get(j, "cpu_base"));
	mr->mem_gib_s = json_number_value(json_object_get(j, "mem_gib_s"));
	mr->egress_done = jint(j, "egress_done");
	mr->collected = json_is_true(json_object_get(j, "collected"));
	mr->ended = json_is_true(json_object_get(j, "ended"));
	json_decref(j);
	run_set_slot(r, m->slot, mr);
	return mr;
}

static void sample(struct meter_run *mr, const struct run *r)
{
	uint64_t now = util_now_ns(CLOCK_MONOTONIC);
	struct cgroup_stats st;

	/* after teardown its cgroup is gone and the read fails */
	if (cgroup_inst_stats(run_cgroup(r), &st, NULL) < 0)
		return;
	if (mr->mem_sample_ns && now > mr->mem_sample_ns)
		mr->mem_gib_s += (double)st.memory_bytes / (1024.0 * 1024.0 * 1024.0) *
				 (double)(now - mr->mem_sample_ns) / 1e9;
	mr->mem_sample_ns = now;
	mr->cpu_live = st.cpu_seconds > mr->cpu_base ? st.cpu_seconds - mr->cpu_base : 0;
}

static uint64_t live_egress(struct meter *m, const struct run *r, const struct meter_run *mr)
{
	struct lantern_net_stats n = { 0 };

	if (m->tm && !mr->collected && run_cgid(r))
		lbpf_tm_net(m->tm, run_cgid(r), &n);
	return n.tx_bytes;
}

void meter_run_usage(struct meter *m, struct run *r, struct meter_usage *u)
{
	struct meter_run *mr = get(m, r);
	uint64_t end;

	memset(u, 0, sizeof(*u));
	if (!mr)
		return;
	end = mr->collected && mr->t_collect ? mr->t_collect : trace_now_ns();
	u->cpu_seconds = mr->cpu_done + (mr->collected ? 0 : mr->cpu_live);
	u->memory_gib_seconds = mr->mem_gib_s;
	u->egress_bytes = meter_sat_add(mr->egress_done, live_egress(m, r, mr));
	u->wall_seconds = end > mr->t0 ? (double)(end - mr->t0) / 1e9 : 0;
	u->tally = &mr->tally;
}

void meter_run_set_tally(struct meter *m, struct run *r, const struct meter_tally *tally)
{
	struct meter_run *mr = get(m, r);

	if (!mr)
		return;
	mr->tally.n = tally->n;
	mr->tally.total = tally->total;
	memcpy(mr->tally.m, tally->m, tally->n * sizeof(tally->m[0]));
}

/* A pooled sandbox's wait before its claim is nobody's bill: said, not charged. */
static void add_pool(json_t *cost, const struct run *r)
{
	if (cost && run_pool(r))
		json_object_set_new(cost, "pool", json_pack("{s:s, s:f, s:b}", "name", run_pool(r),
							     "waited_seconds", (double)run_pool_waited_ms(r) / 1000.0,
							     "waited_billed", 0));
}

json_t *meter_run_cost(struct meter *m, struct run *r)
{
	struct meter_usage u;
	struct meter_cost c;
	json_t *cost;

	meter_run_usage(m, r, &u);
	meter_compute(&m->prices, &u, &c);
	cost = meter_cost_json(&m->prices, &u, &c);
	add_pool(cost, r);
	return cost;
}

bool meter_run_budget(struct meter *m, struct run *r, enum meter_when when, char *why, size_t len)
{
	const struct spec *s = run_spec(r);
	struct meter_usage u;

	if (!s || (!s->limits.max_tokens && s->limits.max_cost_usd <= 0))
		return false;
	meter_run_usage(m, r, &u);
	return meter_budget_spent(&m->prices, &u, s->limits.max_tokens, s->limits.max_cost_usd, when,
				  why, len);
}

static void on_sample(struct loop *l, void *arg)
{
	struct meter *m = arg;
	char why[512];

	for (struct run *r = runs_first(m->runs); r; r = run_next(r)) {
		struct meter_run *mr;

		if (run_status_final(run_status(r)) || !(mr = get(m, r)))
			continue;
		sample(mr, r);
		if (!run_ending(r) && meter_run_budget(m, r, METER_REACHED, why, sizeof(why))) {
			log_info("run %s: %s", run_id(r), why);
			run_end(r, RUN_BUDGET_EXCEEDED, why);
		}
		if (++mr->samples % SAVE_EVERY == 0)
			save(r, mr);
	}
	loop_timer_add(l, SAMPLE_MS, on_sample, m);
}

/* ---- the run hooks ---- */

static int on_admitted(void *arg, struct run *r, json_t *input, struct lerr *e)
{
	struct meter *m = arg;
	struct meter_run *mr = get(m, r);

	if (!mr)
		return lerr_set(e, ENOMEM, "meter: out of memory");
	mr->t0 = trace_now_ns();
	return 0;
}

/* A new instance (a start, or a resumed run's fresh one) is sampled from zero; a pooled
 * sandbox's (docs/pools.md) from what it had used when the run took it: its runtime's
 * start and its wait are not the run's. */
static int on_prepared(void *arg, struct run *r, struct lerr *e)
{
	struct meter_run *mr = get(arg, r);

	if (!mr)
		return lerr_set(e, ENOMEM, "meter: out of memory");
	mr->collected = false;
	mr->cpu_live = 0;
	mr->cpu_base = run_pool(r) ? cgroup_inst_cpu_seconds(run_cgroup(r)) : 0;
	mr->mem_sample_ns = 0;
	return 0;
}

/* usage.json once the workload runs, not before: nothing reads it until a restart,
 * which loads only runs whose run.json exists, and the run module writes run.json
 * after the started hooks (run.h). Until then the meter is in memory only. */
static void on_started(void *arg, struct run *r)
{
	struct meter_run *mr = run_slot(r, ((struct meter *)arg)->slot);

	if (mr)
		save(r, mr);
}

/* The instance's last figures, before its cgroup and counters go. */
static void on_collect(void *arg, struct run *r)
{
	struct meter *m = arg;
	struct meter_run *mr = get(m, r);

	if (!mr || mr->collected)
		return;
	sample(mr, r);
	mr->egress_done = meter_sat_add(mr->egress_done, live_egress(m, r, mr));
	mr->cpu_done += mr->cpu_live;
	mr->cpu_live = 0;
	mr->t_collect = trace_now_ns();
	mr->collected = true;
	save(r, mr);
}

static void tenant_add(struct meter *m, const char *tenant, const struct meter_cost *c)
{
	const double v[] = { c->total, c->tokens, c->cpu, c->memory, c->egress, c->wall };
	struct tenant_total *t = NULL;

	for (size_t i = 0; i < m->ntenants && !t; i++)
		if (!strcmp(m->tenants[i].tenant, tenant))
			t = &m->tenants[i];
	if (!t && m->ntenants < MAX_TENANTS) {
		t = &m->tenants[m->ntenants++];
		snprintf(t->tenant, sizeof(t->tenant), "%s", tenant);
	}
	if (!t)
		return;
	for (size_t i = 0; i < ARRAY_SIZE(v); i++)
		t->usd[i] += v[i];
	t->runs++;
}

static void on_ended(void *arg, struct run *r)
{
	struct meter *m = arg;
	struct meter_run *mr = get(m, r);
	char path[PATH_MAX + 16], *s;
	struct meter_usage u;
	struct meter_cost c;
	json_t *cost;

	if (!mr || mr->ended)
		return;
	on_collect(m, r);
	meter_run_usage(m, r, &u);
	meter_compute(&m->prices, &u, &c);
	cost = meter_cost_json(&m->prices, &u, &c);
	add_pool(cost, r);
	s = cost ? json_dumps(cost, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(cost);
	snprintf(path, sizeof(path), "%s/cost.json", run_dir(r));
	if (!s || util_write_file_atomic(path, s, strlen(s)) < 0)
		log_warn("run %s: cannot write %s", run_id(r), path);
	free(s);
	tenant_add(m, run_tenant(r), &c);
	mr->ended = true;
	save(r, mr);
}

static void on_free(void *arg, struct run *r)
{
	struct meter *m = arg;

	free(run_slot(r, m->slot));
	run_set_slot(r, m->slot, NULL);
}

static const struct run_hooks meter_hooks = {
	.name = "meter",
	.admitted = on_admitted,
	.prepared = on_prepared,
	.started = on_started,
	.collect = on_collect,
	.ended = on_ended,
	.free = on_free,
};

int meter_subscribe(struct meter *m, struct runs *t, struct lerr *e)
{
	m->runs = t;
	if ((m->slot = runs_subscribe(t, &meter_hooks, m)) < 0)
		return lerr_set(e, -m->slot, "meter: cannot subscribe to runs");
	loop_timer_add(m->loop, SAMPLE_MS, on_sample, m);
	return 0;
}

void meter_metrics(void *arg, struct metrics_out *o)
{
	static const char *const comp[] = { "total", "tokens", "cpu", "memory", "egress", "wall" };
	struct meter *m = arg;

	metrics_family(o, "lantern_cost_usd_total", "counter",
		       "Cost of runs ended since start, by tenant and component.");
	for (size_t i = 0; i < m->ntenants; i++)
		for (size_t k = 0; k < ARRAY_SIZE(comp); k++) {
			const char *labels[] = { "tenant", m->tenants[i].tenant, "component", comp[k], NULL };

			metrics_f64(o, "lantern_cost_usd_total", labels, m->tenants[i].usd[k]);
		}
	metrics_family(o, "lantern_runs_ended_total", "counter", "Runs ended since start, by tenant.");
	for (size_t i = 0; i < m->ntenants; i++) {
		const char *labels[] = { "tenant", m->tenants[i].tenant, NULL };

		metrics_u64(o, "lantern_runs_ended_total", labels, m->tenants[i].runs);
	}
}

int meter_open(struct loop *l, const struct meter_opts *o, struct meter **out, struct lerr *e)
{
	struct meter *m = calloc(1, sizeof(*m));
	int err;

	if (!m)
		return lerr_set(e, ENOMEM, "meter: out of memory");
	m->loop = l;
	m->tm = o->tm;
	if ((err = meter_table_load(o->prices_file, &m->prices, e)) < 0) {
		free(m);
		return err;
	}
	*out = m;
	return 0;
}

void meter_close(struct meter *m)
{
	if (!m)
		return;
	meter_table_free(&m->prices);
	free(m);
}
