/* telemetry.c: the telemetry subscriber (see telemetry.h): the programs opened or
 * adopted, each instance registered (with its rate limits) before its workload starts,
 * process events from the ring buffer and egress denies as span events, the counters
 * of an instance collected before it goes, the run's trace state kept in
 * telemetry.json, counters no run owns reclaimed after a restart, and the figures the
 * metrics endpoint shows. */
#include <errno.h>
#include <inttypes.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "telemetry_internal.h"
#include "lantern/lbpf.h"
#include "lantern/metrics.h"
#include "lantern/util.h"

#define TM_SAVE_MS             1000 /* telemetry.json, for events, at most this often */
#define TM_EVENTS_PER_WAKE     512  /* process events read per wake-up of the loop */
#define TM_EVENTS_AT_COLLECT   4096 /* the last ones read when an instance ends */

static void on_save_timer(struct loop *l, void *arg)
{
	struct tm_run *tm = arg;

	tm->save_timer = 0;
	tm_save(tm->run, tm);
}

/* For what a workload makes happen (process events, egress denies): as fast as it
 * likes, so telemetry.json is rewritten at most once a second for them; a run's own
 * steps still save at once. */
static void tm_save_soon(struct telemetry *t, struct tm_run *tm)
{
	if (!tm->save_timer)
		tm->save_timer = loop_timer_add(t->loop, TM_SAVE_MS, on_save_timer, tm);
}

/* ---- kernel events ---- */

static void on_proc_event(const struct lantern_proc_event *ev, void *arg)
{
	struct telemetry *t = arg;
	struct run *r = runs_by_cgid(t->runs, ev->cgroup_id);
	uint64_t now_real = trace_now_ns(), now_mono = util_now_ns(CLOCK_MONOTONIC);
	char comm[17], file[97];
	struct tm_run *tm;
	json_t *e;

	if (!r || !(tm = tm_get(t, r)))
		return;
	/* kernel times are CLOCK_MONOTONIC; spans want Unix time */
	now_real -= now_mono > ev->ts_ns ? now_mono - ev->ts_ns : 0;
	memcpy(comm, ev->comm, 16);
	comm[16] = '\0';
	memcpy(file, ev->filename, 96);
	file[96] = '\0';
	if (ev->type == LANTERN_PROC_EXEC) {
		e = spans_event(now_real, "process.exec");
		trace_attr_int(e, "process.pid", ev->pid);
		trace_attr_int(e, "process.parent_pid", ev->ppid);
		trace_attr_str(e, "process.executable.path", file);
		trace_attr_str(e, "process.command", comm);
	} else if (ev->type == LANTERN_PROC_EXIT && ev->exit_code) {
		e = spans_event(now_real, "process.exit");
		trace_attr_int(e, "process.pid", ev->pid);
		trace_attr_str(e, "process.command", comm);
		trace_attr_int(e, "process.exit.code", (ev->exit_code >> 8) & 0xff);
		if (ev->exit_code & 0x7f)
			trace_attr_int(e, "process.exit.signal", ev->exit_code & 0x7f);
	} else {
		return;
	}
	spans_add_event(tm, e);
	tm_save_soon(t, tm);
}

/* A bounded share per wake-up: what is left keeps the fd readable. */
static void on_events_fd(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct telemetry *t = arg;

	lbpf_tm_events_consume_n(t->bpf, on_proc_event, t, TM_EVENTS_PER_WAKE);
}

/* ---- the run hooks ---- */

static int on_admitted(void *arg, struct run *r, json_t *input, struct lerr *e)
{
	struct telemetry *t = arg;
	struct tm_run *tm = tm_get(t, r);

	if (!tm)
		return lerr_set(e, ENOMEM, "telemetry: out of memory for run %s", run_id(r));
	tm->t0 = trace_now_ns();
	tm->drops_at_start = tm_node_drops(t);
	return 0;
}

/* Registers the instance (and its rate_bps limits) with the programs. */
static int observe(struct telemetry *t, struct run *r, struct tm_run *tm, struct lerr *e)
{
	const struct spec *s = run_spec(r);
	struct lbpf_rate rates[64];
	size_t n = 0;
	int err;

	for (size_t i = 0; s && i < s->n_egress; i++) {
		if (!s->egress[i].rate_bps)
			continue;
		if (n == ARRAY_SIZE(rates) || i >= LANTERN_NO_RULE)
			return lerr_set(e, E2BIG, "spawn: refused: more than %zu egress rules with rate_bps",
					ARRAY_SIZE(rates));
		rates[n].rule = (uint16_t)i;
		rates[n].rate_bps = s->egress[i].rate_bps;
		n++;
	}
	if ((err = lbpf_tm_instance_add(t->bpf, run_cgid(r), rates, n, e)) < 0)
		return err;
	tm->cgid = run_cgid(r);
	return 0;
}

static int on_prepared(void *arg, struct run *r, struct lerr *e)
{
	struct telemetry *t = arg;
	struct tm_run *tm = tm_get(t, r);
	int err;

	if (!tm)
		return lerr_set(e, ENOMEM, "telemetry: out of memory for run %s", run_id(r));
	if ((err = observe(t, r, tm, e)) < 0)
		return err;
	tm->collected = false;
	tm->t_prepared = trace_now_ns();
	/* telemetry.json is written once the workload runs (on_started), before the run
	 * module writes run.json: a restart never loads a run without it, so nothing
	 * before the workload's first instruction waits on this file */
	return 0;
}

static void on_env(void *arg, struct run *r, struct run_env *env)
{
	struct tm_run *tm = tm_get(arg, r);
	char tp[56];

	if (!tm)
		return;
	trace_traceparent(tm->tid, tm->root, tp);
	run_env_set(env, "TRACEPARENT", tp);
}

static void on_started(void *arg, struct run *r)
{
	struct telemetry *t = arg;
	struct tm_run *tm = tm_get(t, r);

	if (tm)
		spans_started(t, r, tm);
}

static void on_step_begun(void *arg, struct run *r, const char *step_id)
{
	struct tm_run *tm = tm_get(arg, r);
	char b[24];

	if (!tm || !step_id)
		return;
	snprintf(b, sizeof(b), "%" PRIu64, trace_now_ns());
	json_object_set_new(tm->steps, step_id, json_string(b));
	tm_save(r, tm);
}

static void on_step_ended(void *arg, struct run *r, const struct run_step *s)
{
	struct telemetry *t = arg;
	struct tm_run *tm = tm_get(t, r);

	if (!tm || !s->id)
		return;
	spans_step(t, r, tm, s);
	json_object_del(tm->steps, s->id);
	tm_save(r, tm);
}

/* An egress deny or audit (egress subscriber) becomes a span event of the root. */
static void on_event(void *arg, struct run *r, json_t *ev)
{
	const char *verdict = json_string_value(json_object_get(ev, "verdict"));
	const char *kind = json_string_value(json_object_get(ev, "event"));
	struct telemetry *t = arg;
	struct tm_run *tm = tm_get(t, r);
	json_t *e;

	if (!tm || !verdict || (strcmp(verdict, "deny") && strcmp(verdict, "audit")))
		return;
	e = spans_event(trace_now_ns(), !strcmp(verdict, "deny") ? "egress.deny" : "egress.audit");
	trace_attr_str(e, "lantern.egress.verdict", verdict);
	trace_attr_str(e, "lantern.egress.source", kind ? kind : "egress");
	if (json_object_get(ev, "dst")) {
		trace_attr_str(e, "server.address", json_string_value(json_object_get(ev, "dst")));
		trace_attr_int(e, "server.port", json_integer_value(json_object_get(ev, "port")));
		trace_attr_str(e, "network.transport", json_string_value(json_object_get(ev, "proto")) ?: "tcp");
		trace_attr_int(e, "process.pid", json_integer_value(json_object_get(ev, "pid")));
		trace_attr_str(e, "process.command", json_string_value(json_object_get(ev, "comm")) ?: "");
	}
	if (json_object_get(ev, "qname")) {
		trace_attr_str(e, "dns.question.name", json_string_value(json_object_get(ev, "qname")));
		trace_attr_str(e, "dns.question.type", json_string_value(json_object_get(ev, "qtype")) ?: "");
	}
	if (json_object_get(ev, "reason"))
		trace_attr_str(e, "lantern.egress.reason", json_string_value(json_object_get(ev, "reason")));
	if (json_object_get(ev, "suppressed"))
		trace_attr_int(e, "lantern.egress.suppressed", json_integer_value(json_object_get(ev, "suppressed")));
	spans_add_event(tm, e);
	tm_save_soon(t, tm);
}

static void fold_syscall(uint32_t nr, const struct lantern_sys_stats *s, void *arg)
{
	struct tm_run *tm = arg;
	char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, (int)nr), num[24];
	const char *key = name;
	json_t *o;

	if (!key) {
		snprintf(num, sizeof(num), "syscall_%u", nr);
		key = num;
	}
	if (!(o = json_object_get(tm->syscalls, key))) {
		o = json_object();
		json_object_set_new(tm->syscalls, key, o);
	}
	json_object_set_new(o, "count", json_integer(json_integer_value(json_object_get(o, "count")) + (json_int_t)s->count));
	json_object_set_new(o, "total_ns", json_integer(json_integer_value(json_object_get(o, "total_ns")) + (json_int_t)s->total_ns));
	tm->sys_total += s->count;
	free(name);
}

/* The instance's counters, before it goes (a resumed run adds its instances up). */
static void on_collect(void *arg, struct run *r)
{
	struct telemetry *t = arg;
	struct tm_run *tm = tm_get(t, r);
	struct lantern_net_stats n = { 0 };
	struct lantern_proc_stats p = { 0 };

	if (!tm || tm->collected || !tm->cgid)
		return;
	tm->t_collect = trace_now_ns();
	lbpf_tm_syscalls(t->bpf, tm->cgid, fold_syscall, tm);
	lbpf_tm_net(t->bpf, tm->cgid, &n);
	lbpf_tm_proc(t->bpf, tm->cgid, &p);
	tm->net.tx_bytes += n.tx_bytes;
	tm->net.tx_packets += n.tx_packets;
	tm->net.rx_bytes += n.rx_bytes;
	tm->net.rx_packets += n.rx_packets;
	tm->net.rate_dropped_bytes += n.rate_dropped_bytes;
	tm->net.rate_dropped_packets += n.rate_dropped_packets;
	tm->proc.forks += p.forks;
	tm->proc.execs += p.execs;
	tm->proc.exits += p.exits;
	/* the last exec events may still sit in the ring buffer */
	lbpf_tm_events_consume_n(t->bpf, on_proc_event, t, TM_EVENTS_AT_COLLECT);
	tm->collected = true;
	tm_save(r, tm);
}

static void on_released(void *arg, struct run *r)
{
	struct telemetry *t = arg;
	struct tm_run *tm = run_slot(r, t->slot);
	uint64_t cgid = tm && tm->cgid ? tm->cgid : run_cgid(r);

	if (cgid)
		lbpf_tm_instance_remove(t->bpf, cgid);
	if (tm && tm->cgid) {
		tm->cgid = 0;
		tm_save(r, tm);
	}
}

static void on_ended(void *arg, struct run *r)
{
	struct telemetry *t = arg;
	struct tm_run *tm = tm_get(t, r);

	if (!tm || tm->ended)
		return;
	on_collect(t, r);
	spans_end(t, r, tm);
	t->sys_finished += tm->sys_total;
	tm->ended = true;
	tm_save(r, tm);
}

/* An adopted instance must still be observed (a lanternd before this one may not have
 * registered it). */
static int on_adopted(void *arg, struct run *r, struct lerr *e)
{
	struct telemetry *t = arg;
	struct tm_run *tm = tm_get(t, r);
	struct lerr oe = { 0 };

	if (!tm)
		return lerr_set(e, ENOMEM, "telemetry: out of memory");
	if (run_cgid(r) && !lbpf_tm_instance_has(t->bpf, run_cgid(r)) && observe(t, r, tm, &oe) < 0)
		log_warn("run %s: not observed by the telemetry programs: %s", run_id(r), oe.msg);
	tm->cgid = run_cgid(r);
	return 0;
}

static void on_recovered(void *arg, struct runs *runs)
{
	struct telemetry *t = arg;
	uint64_t *ids = NULL;
	size_t n = 0;

	if (lbpf_tm_instance_list(t->bpf, &ids, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++)
		if (!runs_by_cgid(runs, ids[i])) {
			log_info("telemetry: reclaiming counters of cgroup id %llu: no run owns it",
				 (unsigned long long)ids[i]);
			lbpf_tm_instance_remove(t->bpf, ids[i]);
		}
	free(ids);
}

static void on_free(void *arg, struct run *r)
{
	struct telemetry *t = arg;
	struct tm_run *tm = run_slot(r, t->slot);

	if (tm && tm->save_timer) {
		loop_timer_cancel(t->loop, tm->save_timer);
		tm_save(r, tm);
	}
	tm_free(tm);
	run_set_slot(r, t->slot, NULL);
}

static const struct run_hooks telemetry_hooks = {
	.name = "telemetry",
	.admitted = on_admitted,
	.prepared = on_prepared,
	.env = on_env,
	.started = on_started,
	.step_begun = on_step_begun,
	.step_ended = on_step_ended,
	.event = on_event,
	.collect = on_collect,
	.released = on_released,
	.ended = on_ended,
	.adopted = on_adopted,
	.recovered = on_recovered,
	.free = on_free,
};

int telemetry_subscribe(struct telemetry *t, struct runs *runs, struct meter *m, struct lerr *e)
{
	t->runs = runs;
	t->meter = m;
	if ((t->slot = runs_subscribe(runs, &telemetry_hooks, t)) < 0)
		return lerr_set(e, -t->slot, "telemetry: cannot subscribe to runs");
	return 0;
}

struct lbpf_tm *telemetry_bpf(const struct telemetry *t)
{
	return t->bpf;
}

/* ---- the local API ---- */

json_t *telemetry_trace_json(struct telemetry *t, struct run *r)
{
	struct tm_run *tm = tm_get(t, r);
	json_t *spans;
	char tid[33];

	if (!tm)
		return json_pack("{s:s, s:s}", "type", "error", "error", "out of memory");
	trace_hex(tm->tid, TRACE_ID_LEN, tid);
	spans = spans_read(r);
	/* the root is sent at the end; show it as it stands */
	if (!tm->ended)
		json_array_append_new(spans, spans_root_now(r, tm));
	return json_pack("{s:s, s:s, s:s, s:s, s:o}", "type", "trace", "run_id", run_id(r), "trace_id", tid,
			 "status", run_status_name(run_status(r)), "spans", spans);
}

json_t *telemetry_cost_json(struct telemetry *t, struct run *r)
{
	struct tm_run *tm = tm_get(t, r);
	const struct spec *s = run_spec(r);
	char path[PATH_MAX + 32];
	bool ended = tm && tm->ended;
	json_t *cost = NULL;

	snprintf(path, sizeof(path), "%s/cost.json", run_dir(r));
	if (ended)
		cost = json_load_file(path, 0, NULL);
	if (!cost)
		cost = meter_run_cost(t->meter, r);
	return json_pack("{s:s, s:s, s:s, s:s, s:b, s:f, s:o}", "type", "cost", "run_id", run_id(r),
			 "tenant", run_tenant(r), "status", run_status_name(run_status(r)), "final", ended,
			 "max_cost_usd", s ? s->limits.max_cost_usd : 0.0, "cost", cost);
}

/* ---- metrics ---- */

static void count_syscalls(uint32_t nr, const struct lantern_sys_stats *s, void *arg)
{
	*(uint64_t *)arg += s->count;
}

void telemetry_metrics(void *arg, struct metrics_out *o)
{
	struct telemetry *t = arg;
	struct lantern_drops edr = { 0 };
	struct otlp_stats os = { 0 };
	uint64_t live_sys = 0;

	for (struct run *r = runs_first(t->runs); r; r = run_next(r)) {
		struct tm_run *tm = run_slot(r, t->slot);

		if (!tm || run_status_final(run_status(r)))
			continue;
		live_sys += tm->sys_total;
		/* a live instance: what the kernel has counted so far */
		if (tm->cgid && !tm->collected)
			lbpf_tm_syscalls(t->bpf, tm->cgid, count_syscalls, &live_sys);
	}
	metrics_family(o, "lantern_syscalls_total", "counter",
		       "Syscalls made by instances (live and ended since start).");
	metrics_u64(o, "lantern_syscalls_total", NULL, t->sys_finished + live_sys);
	if (t->egress_bpf)
		lbpf_drops_get(t->egress_bpf, &edr);
	metrics_family(o, "lantern_ringbuf_dropped_total", "counter",
		       "Ring buffer reserves that failed (events lost).");
	metrics_u64(o, "lantern_ringbuf_dropped_total", (const char *[]){ "ring", "egress", NULL },
		    edr.egress_events);
	metrics_u64(o, "lantern_ringbuf_dropped_total", (const char *[]){ "ring", "process", NULL },
		    tm_node_drops(t));
	if (t->exp)
		otlp_stats_get(t->exp, &os);
	metrics_family(o, "lantern_spans_total", "counter", "Spans by what became of them.");
	metrics_u64(o, "lantern_spans_total", (const char *[]){ "state", "written", NULL }, t->spans_written);
	metrics_u64(o, "lantern_spans_total", (const char *[]){ "state", "queued", NULL }, os.queued);
	metrics_u64(o, "lantern_spans_total", (const char *[]){ "state", "exported", NULL }, os.exported);
	metrics_u64(o, "lantern_spans_total", (const char *[]){ "state", "rejected", NULL }, os.rejected);
	metrics_u64(o, "lantern_spans_total", (const char *[]){ "state", "dropped", NULL }, os.dropped);
	metrics_family(o, "lantern_otlp_requests_total", "counter", "OTLP export attempts.");
	metrics_u64(o, "lantern_otlp_requests_total", NULL, os.requests);
	metrics_family(o, "lantern_otlp_retries_total", "counter", "OTLP export retries.");
	metrics_u64(o, "lantern_otlp_retries_total", NULL, os.retries);
}

/* ---- opening ---- */

static json_t *resource_attrs(const char *state_dir)
{
	char host[256] = "", idpath[PATH_MAX + 32], *id = NULL, hex[33];
	const char *node = getenv("LANTERN_NODE_NAME"), *ns = getenv("POD_NAMESPACE");
	json_t *holder = json_object(), *attrs;

	if (!node || !*node)
		node = getenv("NODE_NAME");
	gethostname(host, sizeof(host) - 1);
	/* service.instance.id: this node agent, stable across restarts (kept in the state dir) */
	snprintf(idpath, sizeof(idpath), "%s/instance-id", state_dir);
	if (util_read_file(idpath, &id, NULL) < 0 || strlen(id) < 32) {
		free(id);
		id = NULL;
		util_random_hex(hex, 16);
		util_write_file_atomic(idpath, hex, 32);
	} else {
		snprintf(hex, sizeof(hex), "%.32s", id);
		free(id);
	}
	trace_attr_str(holder, "service.name", "lanternd");
	trace_attr_str(holder, "service.version", TRACE_SCOPE_VERSION);
	trace_attr_str(holder, "service.instance.id", hex);
	trace_attr_str(holder, "host.name", host);
	if (node && *node)
		trace_attr_str(holder, "k8s.node.name", node);
	if (ns && *ns)
		trace_attr_str(holder, "k8s.namespace.name", ns);
	attrs = json_incref(json_object_get(holder, "attributes"));
	json_decref(holder);
	return attrs;
}

int telemetry_open(struct loop *l, const struct telemetry_opts *o, struct telemetry **out,
		   struct lerr *e)
{
	struct lbpf_tm_opts bo = {
		.pin_root = o->bpffs,
		.cgroup_path = o->cg->v2,
		.instance_level = o->cg->instance_level,
		.sys_hook = o->sys_hook,
		.events_bytes = o->ringbuf_bytes,
	};
	struct telemetry *t = calloc(1, sizeof(*t));
	bool adopted = false;
	int err;

	if (!t)
		return lerr_set(e, ENOMEM, "telemetry: out of memory");
	t->loop = l;
	t->egress_bpf = o->egress_bpf;
	t->resource = resource_attrs(o->state_dir);
	if ((err = lbpf_tm_open(&bo, &t->bpf, &adopted, e)) < 0)
		goto fail;
	log_info("telemetry: %s BPF programs under %s (syscalls via %s)", adopted ? "adopted pinned" : "pinned new",
		 o->bpffs, lbpf_tm_sys_hook_name(o->sys_hook));
	if ((err = loop_add(l, lbpf_tm_events_fd(t->bpf), EPOLLIN, on_events_fd, t)) < 0) {
		lerr_set(e, err, "telemetry: watching the process event ring buffer: %s", strerror(-err));
		goto fail;
	}
	if (o->otlp) {
		if ((err = otlp_exporter_start(o->otlp, t->resource, &t->exp, e)) < 0)
			goto fail;
		log_info("telemetry: exporting spans to %s over OTLP %s", o->otlp->protocol == OTLP_GRPC ?
			 o->otlp->endpoint : o->otlp->traces_url, otlp_protocol_name(o->otlp->protocol));
	} else {
		log_info("telemetry: no OTLP endpoint: spans go to each run's spans.jsonl only");
	}
	*out = t;
	return 0;
fail:
	lbpf_tm_close(t->bpf);
	json_decref(t->resource);
	free(t);
	return err;
}

void telemetry_close(struct telemetry *t)
{
	if (!t)
		return;
	otlp_exporter_stop(t->exp, 3000);
	lbpf_tm_close(t->bpf);
	json_decref(t->resource);
	free(t);
}
