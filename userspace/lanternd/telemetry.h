/* telemetry.h: lanternd's telemetry (telemetry.c, metrics.c): kernel counters and
 * process events per instance, one OpenTelemetry trace per spawn, cost metering, the
 * Prometheus endpoint. run.c, egress.c, api.c, durable.c and main.c call these at
 * the points of a run's life named below; everything else stays in these files. */
#ifndef LANTERND_TELEMETRY_H
#define LANTERND_TELEMETRY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "lantern/util.h"

struct daemon;
struct run;
struct client;

/* main.c: takes lanternd's telemetry flags out of argv before the others are parsed
 * (returns -1 on a bad one, with a message); usage lines for --help. */
int telemetry_parse_flags(int *argc, char **argv);
void telemetry_usage(FILE *f);
/* main.c: after egress_start (the egress programs' pins exist), before run_recover. */
int telemetry_start(struct daemon *d, struct lerr *e);
/* main.c: after run_recover: re-registers live runs, reclaims what no run owns. */
void telemetry_recover(struct daemon *d);
/* main.c: at exit: flushes spans (a bounded wait), closes. Pins stay. */
void telemetry_stop(struct daemon *d);

/* run.c, in a run's order: */
void telemetry_run_begin(struct daemon *d, struct run *r);            /* ids assigned */
int telemetry_run_prepare(struct daemon *d, struct run *r, struct lerr *e); /* instance made,
								       * before the workload */
int telemetry_run_env(const struct run *r, char **env);   /* adds TRACEPARENT; returns 1 */
void telemetry_run_started(struct daemon *d, struct run *r);          /* workload running */
void telemetry_run_collect(struct daemon *d, struct run *r);          /* teardown begins */
void telemetry_run_release(struct daemon *d, struct run *r);          /* processes gone */
void telemetry_run_end(struct daemon *d, struct run *r);              /* status final */
void telemetry_run_free(struct run *r);

/* durable.c: one journaled step. begin when the step proceeds; end when it completes
 * (error NULL) or fails. body is the complete/fail request: "usage" for llm steps
 * (provider, model, *_tokens), "name" for tool steps. */
void telemetry_step_begin(struct run *r, const char *step_id);
void telemetry_step_end(struct daemon *d, struct run *r, const char *step_id, const char *kind,
			uint32_t attempt, json_t *body, const char *error);
/* The span itself, for any caller that knows both ends (Unix ns). attrs (may be NULL)
 * are OTLP/JSON attributes added to the span. */
void telemetry_step_span(struct daemon *d, struct run *r, const char *step_id, const char *kind,
			 const char *name, uint32_t attempt, uint64_t start_ns, uint64_t end_ns,
			 json_t *attrs, const char *error);
/* durable.c: the run's cost so far (final after telemetry_run_collect), as
 * {total_usd, components{...}, usage{...}, rates{...}}; a new reference. */
json_t *telemetry_run_cost(struct daemon *d, struct run *r);
/* The one price table (--prices), which durable.c prices steps with. */
const struct meter_table *telemetry_prices(void);
/* What the run has cost so far besides tokens (CPU, memory, egress, wall), USD. */
double telemetry_run_resource_usd(struct daemon *d, struct run *r);

/* egress.c: an egress event line (before it is written); denies become span events. */
void telemetry_egress_event(struct daemon *d, struct run *r, json_t *ev);

/* api.c: the "trace" and "cost" ops; true when op was one of them (answered). */
bool telemetry_api(struct client *c, struct daemon *d, const char *op, struct run *r, json_t *req);

/* The Prometheus text of telemetry.c's counters (runs, denies, syscalls, drops,
 * spans, cost); must be freed. */
char *telemetry_metrics_text(struct daemon *d);

/* metrics.c */
int metrics_start(struct daemon *d, const char *addr, struct lerr *e);
void metrics_stop(void);

#endif
