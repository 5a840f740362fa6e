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


struct meter_usage {
	double cpu_seconds;
	double memory_gib_seconds;
	uint64_t egress_bytes;
	double wall_seconds;
	json_t *tokens;          /* "provider/model" -> {input_tokens, output_tokens,
				  * cache_read_tokens, cache_creation_tokens, reasoning_tokens} */
};

struct meter_cost {
	double tokens, cpu, memory, egress, wall, total; /* USD */
};

/* Loads path (NULL: defaults only). */
int meter_table_load(const char *path, struct meter_table *t, struct lerr *e);
void meter_table_free(struct meter_table *t);
/* The prices for provider/model: "provider/model", then "model", then "*". */
json_t *meter_price_for(const struct meter_table *t, const char *provider, const char *model);
/* Adds a harness usage object ({provider, model, input_tokens, ...}) to tokens. */
void meter_add_usage(json_t *tokens, json_t *usage);
/* USD of one usage object by the table. */
double meter_usage_usd(const struct meter_table *t, json_t *usage);
void meter_compute(const struct meter_table *t, const struct meter_usage *u, struct meter_cost *c);
/* {"total_usd", "components":{tokens_usd, cpu_usd, memory_usd, egress_usd, wall_usd},
 *  "usage":{...}, "rates":{...}} */
json_t *meter_cost_json(const struct meter_table *t, const struct meter_usage *u,
			const struct meter_cost *c);

#endif
