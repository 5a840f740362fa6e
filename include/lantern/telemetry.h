/* telemetry.h: what lanternd reports about each spawn, a run subscriber. It opens (or
 * adopts) the telemetry BPF programs, registers each instance with them before its
 * workload starts, turns their counters and process events into one OpenTelemetry trace
 * per spawn, and exports the spans (OTLP over gRPC or HTTP) without ever blocking the
 * loop.
 *
 * The trace: a root span "invoke_agent {metadata.name}" (trace_id and span ids derived
 * from the run id, so a resumed run re-joins it), children "admission", "start", one
 * per journaled step ("chat {model}", "execute_tool {name}", "step {id}") and
 * "teardown". The root span is sent last, at the end, carrying the run's outcome, its
 * OOM kills, the syscall summary, network and process counters, the cost and its
 * components (the meter's), and the exec and egress-deny events as span events. Every
 * span goes to the run's spans.jsonl (OTLP JSON lines, what `lantern trace` reads) and,
 * when an endpoint is configured, to the OTLP exporter's queue.
 *
 * What must survive a restart of lanternd (the root's start, the events so far, the
 * step start times, the counters of collected instances) is in the run's
 * telemetry.json, rewritten whenever it changes. */
#ifndef LANTERN_TELEMETRY_H
#define LANTERN_TELEMETRY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "lantern/cgroup.h"
#include "lantern/lbpf_tm.h"
#include "lantern/loop.h"
#include "lantern/otlp.h"
#include "lantern/run.h"
#include "lantern/util.h"

struct telemetry;
struct meter;
struct lbpf;
struct metrics_out;

struct telemetry_opts {
	const char *bpffs;               /* pin root (beside the egress pins) */
	const struct cgroup_node *cg;
	const char *state_dir;           /* service.instance.id is kept there */
	enum lbpf_sys_hook sys_hook;
	uint32_t ringbuf_bytes;          /* process event ring buffer; 0 = default */
	const struct otlp_opts *otlp;    /* NULL: spans only go to each run's spans.jsonl */
	struct lbpf *egress_bpf;         /* for the egress ring's drop counter in metrics */
};

int telemetry_open(struct loop *l, const struct telemetry_opts *o, struct telemetry **out,
		   struct lerr *e);
/* Flushes spans (a bounded wait) and closes; the pins stay. */
void telemetry_close(struct telemetry *t);
int telemetry_subscribe(struct telemetry *t, struct runs *runs, struct meter *m, struct lerr *e);
/* The telemetry programs' handle (the meter reads per-instance network counters). */
struct lbpf_tm *telemetry_bpf(const struct telemetry *t);

/* `lantern trace RUN`: its spans (the root as it stands while it runs). */
json_t *telemetry_trace_json(struct telemetry *t, struct run *r);
/* `lantern cost RUN`: final once it ended (cost.json), else so far. */
json_t *telemetry_cost_json(struct telemetry *t, struct run *r);
/* syscalls, ring buffer drops, spans, OTLP requests (Prometheus). */
void telemetry_metrics(void *t, struct metrics_out *o);

#endif
