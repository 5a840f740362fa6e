/* meter.h: what a run costs. Tokens by model are priced from a table (USD per one
 * million input, output, cache-read, cache-write (cache_creation) and reasoning
 * tokens); CPU-seconds, memory GiB-seconds, egress bytes and wall time are each
 * priced at a rate.
 *
 * The table is lanternd's --prices file, the same one the step budget of the
 * durable-execution code reads, so both price a step identically: an object of
 * "provider/model" or "model" (or "*", the fallback) -> {input, output, cache_read,
 * cache_creation, reasoning}, each token kind priced on its own (input_tokens counts
 * the uncached input, as the harness API reports it). One reserved key, "rates",
 * holds {cpu_second, memory_gib_second, egress_gib, wall_second} in USD. */
#ifndef LANTERN_METER_H
#define LANTERN_METER_H

#include <jansson.h>
#include <limits.h>
#include <stdint.h>

#include "lantern/util.h"

/* Defaults, with their source (list prices, us-east-1, as published in 2024):
 * AWS Fargate Linux/x86: $0.04048 per vCPU-hour, $0.004445 per GB-hour;
 * AWS data transfer out to the internet, first 10 TB a month: $0.09 per GB.
 * Wall time is not billed by default (0): capacity is billed through CPU and memory. */
#define METER_DEFAULT_CPU_SECOND        (0.04048 / 3600.0)
#define METER_DEFAULT_MEMORY_GIB_SECOND (0.004445 / 3600.0)
#define METER_DEFAULT_EGRESS_GIB        0.09
#define METER_DEFAULT_WALL_SECOND       0.0

/* Used for a model the table does not name and when it has no "*": the same list
 * prices the durable-execution budget defaults to (a mid-size frontier model). */
#define METER_DEFAULT_PRICES "{\"*\":{\"input\":3.0,\"output\":15.0,\"cache_read\":0.3," \
	"\"cache_creation\":3.75,\"reasoning\":15.0}}"

struct meter_table {
	json_t *prices;          /* model -> prices, as loaded */
	double cpu_second, memory_gib_second, egress_gib, wall_second; /* USD */
	char source[PATH_MAX];   /* the file, or "defaults" */
};


/* ---- the token tally of a run: every token kind by model, saturating at UINT64_MAX.
 * It is rebuilt from the run's journal (the durable subscriber applies each completed
 * step's usage), so it survives a crash exactly as the steps do. ---- */
#define METER_MAX_MODELS 32      /* more distinct models share the last entry, "other" */

struct meter_tokens {
	uint64_t input, output, cache_read, cache_creation, reasoning;
};

struct meter_model {
	char provider[64];
	char model[96];
	struct meter_tokens t;
};

struct meter_tally {
	struct meter_model m[METER_MAX_MODELS];
	size_t n;
	uint64_t total;          /* every kind of every model */
};

/* Adds tokens of provider/model (either may be "" or NULL). */
void meter_tally_add(struct meter_tally *t, const char *provider, const char *model,
		     const struct meter_tokens *k);
/* Adds a harness usage object ({provider, model, input_tokens, ...}); negative or
 * non-integer counts are ignored. */
void meter_tally_add_usage(struct meter_tally *t, json_t *usage);
/* {"provider/model": {provider, model, input_tokens, ...}} */
json_t *meter_tally_json(const struct meter_tally *t);
double meter_tokens_usd(const struct meter_table *t, const char *provider, const char *model,
			const struct meter_tokens *k);
double meter_tally_usd(const struct meter_table *t, const struct meter_tally *tally);
/* a + b, or UINT64_MAX */
uint64_t meter_sat_add(uint64_t a, uint64_t b);

struct meter_usage {
	double cpu_seconds;
	double memory_gib_seconds;
	uint64_t egress_bytes;
	double wall_seconds;
	const struct meter_tally *tally;  /* may be NULL: no tokens */
};

struct meter_cost {
	double tokens, cpu, memory, egress, wall, total; /* USD */
};

/* Loads path (NULL: defaults only). */
int meter_table_load(const char *path, struct meter_table *t, struct lerr *e);
void meter_table_free(struct meter_table *t);
/* The prices for provider/model: "provider/model", then "model", then "*". */
json_t *meter_price_for(const struct meter_table *t, const char *provider, const char *model);
/* USD of one usage object by the table. */
double meter_usage_usd(const struct meter_table *t, json_t *usage);
void meter_compute(const struct meter_table *t, const struct meter_usage *u, struct meter_cost *c);

/* The one budget check of limits.max_tokens and limits.max_cost_usd (0: unlimited)
 * against the tally and the metered cost. Before a step (and on the meter's timer) a
 * budget is spent when it is reached; after a step's completion, when it is exceeded.
 * True with the reason in why when spent. */
enum meter_when { METER_REACHED, METER_EXCEEDED };
bool meter_budget_spent(const struct meter_table *t, const struct meter_usage *u,
			uint64_t max_tokens, double max_cost_usd, enum meter_when when, char *why,
			size_t len);
/* {"total_usd", "components":{tokens_usd, cpu_usd, memory_usd, egress_usd, wall_usd},
 *  "usage":{...}, "rates":{...}} */
json_t *meter_cost_json(const struct meter_table *t, const struct meter_usage *u,
			const struct meter_cost *c);


/* ---- the meter of runs (usage.c), a run subscriber: samples each instance's CPU and
 * memory (cgroup) once a second, its egress bytes (the telemetry programs' counters),
 * its wall time from admission, holds its token tally (from the journal), prices it,
 * ends a run whose cost reaches limits.max_cost_usd, writes cost.json at the end, and
 * keeps per-tenant totals for the metrics endpoint. Samples survive a restart of
 * lanternd in STATE/runs/<id>/usage.json (rewritten every few samples, not synced:
 * after a power loss the last seconds of CPU and memory may be missing). ---- */
struct meter;
struct runs;
struct run;
struct loop;
struct lbpf_tm;
struct metrics_out;

struct meter_opts {
	const char *prices_file;    /* --prices; NULL: defaults */
	struct lbpf_tm *tm;         /* per-instance network counters (may be NULL) */
};

int meter_open(struct loop *l, const struct meter_opts *o, struct meter **out, struct lerr *e);
void meter_close(struct meter *m);
int meter_subscribe(struct meter *m, struct runs *t, struct lerr *e);
/* The one price table. */
const struct meter_table *meter_prices(const struct meter *m);
/* The run's token tally, as its journal says (a copy is kept). */
void meter_run_set_tally(struct meter *m, struct run *r, const struct meter_tally *tally);
/* The run's usage so far (final once its instance was collected); u->tally points into
 * the meter's state of the run, valid until the run is freed. */
void meter_run_usage(struct meter *m, struct run *r, struct meter_usage *u);
/* {total_usd, components{...}, usage{...}, rates{...}}; a new reference. */
json_t *meter_run_cost(struct meter *m, struct run *r);
/* meter_budget_spent for the run's limits and usage. */
bool meter_run_budget(struct meter *m, struct run *r, enum meter_when when, char *why, size_t len);
/* Cost of runs ended since start, by tenant and component (Prometheus). */
void meter_metrics(void *m, struct metrics_out *o);

#endif
