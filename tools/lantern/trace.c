/* trace.c: `lantern trace RUN` (the run's spans as a tree, with durations and the
 * attributes that matter) and `lantern cost RUN` (what the run cost, by component). */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

static uint64_t ns_of(json_t *span, const char *k)
{
	const char *s = json_string_value(json_object_get(span, k));

	return s ? strtoull(s, NULL, 10) : 0;
}

static const char *attr_text(json_t *span, const char *key, char *buf, size_t len)
{
	json_t *kv, *v, *x;
	size_t i;

	json_array_foreach(json_object_get(span, "attributes"), i, kv) {
		if (strcmp(json_string_value(json_object_get(kv, "key")) ?: "", key))
			continue;
		v = json_object_get(kv, "value");
		if ((x = json_object_get(v, "stringValue")))
			snprintf(buf, len, "%s", json_string_value(x));
		else if ((x = json_object_get(v, "intValue")))
			snprintf(buf, len, "%s", json_is_string(x) ? json_string_value(x) : "?");
		else if ((x = json_object_get(v, "doubleValue")))
			snprintf(buf, len, "%.6f", json_number_value(x));
		else if ((x = json_object_get(v, "boolValue")))
			snprintf(buf, len, "%s", json_is_true(x) ? "true" : "false");
		else
			return NULL;
		return buf;
	}
	return NULL;
}

static void print_span(json_t *spans, json_t *s, int depth)
{
	static const char *const shown[] = { "lantern.step_id", "gen_ai.request.model",
					     "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
					     "gen_ai.tool.name", "lantern.run.status", "lantern.cost.usd",
					     "lantern.syscalls.total", "lantern.syscalls.top", "lantern.pool.name",
					     "lantern.pool.fallback" };
	uint64_t st = ns_of(s, "startTimeUnixNano"), en = ns_of(s, "endTimeUnixNano");
	const char *id = json_string_value(json_object_get(s, "spanId"));
	char buf[512], dur[32];
	json_t *c, *ev, *msg;
	size_t i;

	if (json_is_true(json_object_get(s, "inProgress")) || !en)
		snprintf(dur, sizeof(dur), "running");
	else
		snprintf(dur, sizeof(dur), "%.3f ms", en > st ? (double)(en - st) / 1e6 : 0.0);
	printf("%*s%s  [%s]", depth * 2, "", json_string_value(json_object_get(s, "name")), dur);
	for (i = 0; i < sizeof(shown) / sizeof(shown[0]); i++)
		if (attr_text(s, shown[i], buf, sizeof(buf)))
			printf(" %s=%s", shown[i], buf);
	if ((msg = json_object_get(json_object_get(s, "status"), "message")))
		printf(" error=\"%s\"", json_string_value(msg));
	printf("\n");
	json_array_foreach(json_object_get(s, "events"), i, ev) {
		uint64_t t = ns_of(ev, "timeUnixNano");
		const char *what = attr_text(ev, "process.executable.path", buf, sizeof(buf)) ?:
				   attr_text(ev, "server.address", buf, sizeof(buf)) ?:
				   attr_text(ev, "dns.question.name", buf, sizeof(buf)) ?: "";

		printf("%*s  @%+.3f ms %s %s\n", depth * 2, "", t > st ? (double)(t - st) / 1e6 : 0.0,
		       json_string_value(json_object_get(ev, "name")), what);
	}
	json_array_foreach(spans, i, c) {
		const char *p = json_string_value(json_object_get(c, "parentSpanId"));
		if (p && id && !strcmp(p, id))
			print_span(spans, c, depth + 1);
	}
}

static int cmp_start(const void *a, const void *b)
{
	uint64_t x = ns_of(*(json_t *const *)a, "startTimeUnixNano");
	uint64_t y = ns_of(*(json_t *const *)b, "startTimeUnixNano");

	return x < y ? -1 : x > y;
}

static json_t *call(struct cli *c, const char *op, int argc, char **argv, bool *as_json)
{
	const char *run = NULL;
	json_t *req, *res;

	*as_json = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			*as_json = true;
		else if (!run)
			run = argv[i];
		else
			run = NULL, argc = 0;
	}
	if (!run) {
		fprintf(stderr, "usage: lantern %s RUN [--json]\n", op);
		return NULL;
	}
	req = json_pack("{s:s, s:s}", "op", op, "run_id", run);
	res = client_call(c, req);
	json_decref(req);
	return res;
}

int cmd_trace(struct cli *c, int argc, char **argv)
{
	bool as_json;
	json_t *res = call(c, "trace", argc, argv, &as_json), *spans, *s, **v;
	size_t i, n;

	if (!res)
		return argc < 2 ? 2 : 1;
	spans = json_object_get(res, "spans");
	if (as_json) {
		json_dumpf(res, stdout, JSON_INDENT(2));
		printf("\n");
		json_decref(res);
		return 0;
	}
	printf("trace %s  run %s (%s)\n", json_string_value(json_object_get(res, "trace_id")),
	       json_string_value(json_object_get(res, "run_id")),
	       json_string_value(json_object_get(res, "status")));
	/* children in start order under each parent */
	n = json_array_size(spans);
	v = calloc(n ? n : 1, sizeof(*v));
	if (v) {
		json_array_foreach(spans, i, s)
			v[i] = json_incref(s);
		qsort(v, n, sizeof(*v), cmp_start);
		json_array_clear(spans);
		for (i = 0; i < n; i++)
			json_array_append_new(spans, v[i]);
		free(v);
	}
	json_array_foreach(spans, i, s)
		if (!json_object_get(s, "parentSpanId"))
			print_span(spans, s, 0);
	json_decref(res);
	return 0;
}

int cmd_cost(struct cli *c, int argc, char **argv)
{
	bool as_json;
	json_t *res = call(c, "cost", argc, argv, &as_json), *cost, *comp, *usage, *m;
	const char *key;

	if (!res)
		return argc < 2 ? 2 : 1;
	if (as_json) {
		json_dumpf(res, stdout, JSON_INDENT(2));
		printf("\n");
		json_decref(res);
		return 0;
	}
	cost = json_object_get(res, "cost");
	comp = json_object_get(cost, "components");
	usage = json_object_get(cost, "usage");
	printf("run %s  tenant %s  %s%s\n", json_string_value(json_object_get(res, "run_id")),
	       json_string_value(json_object_get(res, "tenant")),
	       json_string_value(json_object_get(res, "status")),
	       json_is_true(json_object_get(res, "final")) ? "" : " (so far)");
	printf("  %-8s %14.6f USD\n", "tokens", json_number_value(json_object_get(comp, "tokens_usd")));
	json_object_foreach(json_object_get(usage, "tokens"), key, m)
		printf("    %-30s in %lld  out %lld  cache read %lld  cache write %lld  reasoning %lld\n", key,
		       (long long)json_integer_value(json_object_get(m, "input_tokens")),
		       (long long)json_integer_value(json_object_get(m, "output_tokens")),
		       (long long)json_integer_value(json_object_get(m, "cache_read_tokens")),
		       (long long)json_integer_value(json_object_get(m, "cache_creation_tokens")),
		       (long long)json_integer_value(json_object_get(m, "reasoning_tokens")));
	printf("  %-8s %14.6f USD   %.3f CPU-seconds\n", "cpu", json_number_value(json_object_get(comp, "cpu_usd")),
	       json_number_value(json_object_get(usage, "cpu_seconds")));
	printf("  %-8s %14.6f USD   %.3f GiB-seconds\n", "memory",
	       json_number_value(json_object_get(comp, "memory_usd")),
	       json_number_value(json_object_get(usage, "memory_gib_seconds")));
	printf("  %-8s %14.6f USD   %lld bytes\n", "egress", json_number_value(json_object_get(comp, "egress_usd")),
	       (long long)json_integer_value(json_object_get(usage, "egress_bytes")));
	printf("  %-8s %14.6f USD   %.3f seconds\n", "wall", json_number_value(json_object_get(comp, "wall_usd")),
	       json_number_value(json_object_get(usage, "wall_seconds")));
	printf("  %-8s %14.6f USD", "total", json_number_value(json_object_get(cost, "total_usd")));
	if (json_number_value(json_object_get(res, "max_cost_usd")) > 0)
		printf("   (limits.max_cost_usd %.6g)", json_number_value(json_object_get(res, "max_cost_usd")));
	printf("\n");
	json_decref(res);
	return 0;
}
