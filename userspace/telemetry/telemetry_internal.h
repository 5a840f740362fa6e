/* telemetry_internal.h: the telemetry subscriber's state, shared by telemetry.c (the
 * programs, the run hooks, kernel events), state.c (a run's trace state and its file)
 * and spans.c (building and emitting spans). */
#ifndef LANTERN_TELEMETRY_INTERNAL_H
#define LANTERN_TELEMETRY_INTERNAL_H

#include "lantern/meter.h"
#include "lantern/telemetry.h"
#include "lantern/trace.h"

#define TM_MAX_EVENTS 128           /* span events kept on the root span */

struct telemetry {
	struct loop *loop;
	struct lbpf_tm *bpf;
	struct lbpf *egress_bpf;
	struct otlp_exporter *exp;
	json_t *resource;
	struct meter *meter;
	struct runs *runs;
	int slot;
	uint64_t spans_written;
	uint64_t sys_finished;      /* syscalls of runs that ended since start */
};

/* One run's trace state. */
struct tm_run {
	struct run *run;
	uint64_t save_timer;        /* a pending telemetry.json write for events, 0 if none */
	uint8_t tid[TRACE_ID_LEN], root[SPAN_ID_LEN];
	uint64_t t0, t_prepared, t_started, t_collect;   /* Unix ns */
	json_t *events;             /* OTLP/JSON span events for the root */
	uint64_t events_dropped;
	json_t *steps;              /* step_id -> start ns (as a string) */
	json_t *syscalls;           /* name -> {count, total_ns}, instances already collected */
	uint64_t sys_total;
	struct lantern_net_stats net;   /* collected instances */
	struct lantern_proc_stats proc;
	uint64_t drops_at_start;
	uint64_t cgid;              /* the instance registered in lantern_tm_inst, 0 if none */
	unsigned resumes;
	bool collected;
	bool ended;
};

/* state.c */
struct tm_run *tm_get(struct telemetry *t, struct run *r);
void tm_save(const struct run *r, const struct tm_run *tm);
void tm_free(struct tm_run *tm);
uint64_t tm_node_drops(const struct telemetry *t);

/* spans.c */
void spans_started(struct telemetry *t, struct run *r, struct tm_run *tm);
void spans_step(struct telemetry *t, struct run *r, struct tm_run *tm, const struct run_step *s);
void spans_end(struct telemetry *t, struct run *r, struct tm_run *tm);
/* The root span as it stands (a run in progress). */
json_t *spans_root_now(const struct run *r, const struct tm_run *tm);
json_t *spans_read(const struct run *r);
json_t *spans_event(uint64_t t, const char *name);
void spans_add_event(struct tm_run *tm, json_t *ev);

#endif
