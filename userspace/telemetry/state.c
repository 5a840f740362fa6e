/* state.c: a run's trace state (struct tm_run): in memory while lanternd runs, and in
 * the run's telemetry.json, rewritten at each step of the run and at most once a second
 * for what its workload makes happen (telemetry.c), so a restarted lanternd continues
 * the same trace. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "telemetry_internal.h"
#include "lantern/util.h"

static void tm_path(const struct run *r, char *out, size_t len)
{
	snprintf(out, len, "%s/telemetry.json", run_dir(r));
}

static json_t *net_json(const struct lantern_net_stats *n)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "tx_bytes", (json_int_t)n->tx_bytes,
			 "tx_packets", (json_int_t)n->tx_packets, "rx_bytes", (json_int_t)n->rx_bytes,
			 "rx_packets", (json_int_t)n->rx_packets, "rate_dropped_bytes",
			 (json_int_t)n->rate_dropped_bytes, "rate_dropped_packets",
			 (json_int_t)n->rate_dropped_packets);
}

void tm_save(const struct run *r, const struct tm_run *tm)
{
	char path[PATH_MAX + 32], *s;
	json_t *j;

	j = json_pack("{s:I, s:I, s:I, s:I, s:O, s:I, s:O, s:O, s:I, s:o, s:{s:I, s:I, s:I},"
		      " s:I, s:i, s:b, s:b}",
		      "t0", (json_int_t)tm->t0, "t_prepared", (json_int_t)tm->t_prepared,
		      "t_started", (json_int_t)tm->t_started, "t_collect", (json_int_t)tm->t_collect,
		      "events", tm->events, "events_dropped", (json_int_t)tm->events_dropped,
		      "steps", tm->steps, "syscalls", tm->syscalls, "sys_total", (json_int_t)tm->sys_total,
		      "net", net_json(&tm->net),
		      "proc", "forks", (json_int_t)tm->proc.forks, "execs", (json_int_t)tm->proc.execs,
		      "exits", (json_int_t)tm->proc.exits, "drops_at_start", (json_int_t)tm->drops_at_start,
		      "resumes", (int)tm->resumes, "collected", tm->collected, "ended", tm->ended);
	s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	tm_path(r, path, sizeof(path));
	/* no fsync: a restarted lanternd reads what the page cache holds; after a power
	 * loss the last updates may be missing, which telemetry tolerates (and an fsync
	 * per event or spawn step is what made it cost) */
	if (!s || util_write_file_replace(path, s, strlen(s)) < 0)
		log_warn("run %s: cannot write %s: telemetry of this run may be incomplete after a restart",
			 run_id(r), path);
	free(s);
}

static uint64_t jint(json_t *o, const char *k)
{
	return (uint64_t)json_integer_value(json_object_get(o, k));
}

static json_t *obj_or_new(json_t *o, const char *k, bool array)
{
	json_t *v = json_object_get(o, k);

	if (array)
		return json_is_array(v) ? json_incref(v) : json_array();
	return json_is_object(v) ? json_incref(v) : json_object();
}

/* The run's trace state: in memory, else from telemetry.json (an adopted or resumed
 * run), else new. */
struct tm_run *tm_get(struct telemetry *t, struct run *r)
{
	struct tm_run *tm = run_slot(r, t->slot);
	char path[PATH_MAX + 32];
	json_t *j, *n, *p;

	if (tm)
		return tm;
	if (!(tm = calloc(1, sizeof(*tm))))
		return NULL;
	tm->run = r;
	trace_id_for_run(run_id(r), tm->tid);
	trace_span_id_for(run_id(r), "root", tm->root);
	tm_path(r, path, sizeof(path));
	j = json_load_file(path, 0, NULL);
	tm->t0 = jint(j, "t0");
	if (!tm->t0)
		tm->t0 = run_created(r) ? (uint64_t)run_created(r) * 1000000000ULL : trace_now_ns();
	tm->t_prepared = jint(j, "t_prepared");
	tm->t_started = jint(j, "t_started");
	tm->t_collect = jint(j, "t_collect");
	tm->events = obj_or_new(j, "events", true);
	tm->events_dropped = jint(j, "events_dropped");
	tm->steps = obj_or_new(j, "steps", false);
	tm->syscalls = obj_or_new(j, "syscalls", false);
	tm->sys_total = jint(j, "sys_total");
	n = json_object_get(j, "net");
	tm->net.tx_bytes = jint(n, "tx_bytes");
	tm->net.tx_packets = jint(n, "tx_packets");
	tm->net.rx_bytes = jint(n, "rx_bytes");
	tm->net.rx_packets = jint(n, "rx_packets");
	tm->net.rate_dropped_bytes = jint(n, "rate_dropped_bytes");
	tm->net.rate_dropped_packets = jint(n, "rate_dropped_packets");
	p = json_object_get(j, "proc");
	tm->proc.forks = jint(p, "forks");
	tm->proc.execs = jint(p, "execs");
	tm->proc.exits = jint(p, "exits");
	tm->drops_at_start = jint(j, "drops_at_start");
	tm->resumes = (unsigned)jint(j, "resumes");
	tm->collected = json_is_true(json_object_get(j, "collected"));
	tm->ended = json_is_true(json_object_get(j, "ended"));
	json_decref(j);
	run_set_slot(r, t->slot, tm);
	return tm;
}

void tm_free(struct tm_run *tm)
{
	if (!tm)
		return;
	json_decref(tm->events);
	json_decref(tm->steps);
	json_decref(tm->syscalls);
	free(tm);
}

uint64_t tm_node_drops(const struct telemetry *t)
{
	struct lantern_tm_drops dr = { 0 };

	if (t->bpf)
		lbpf_tm_drops(t->bpf, &dr);
	return dr.proc_events;
}
