/* meter_test: what a run costs (userspace/meter): the price table lanternd loads from
 * --prices (and its defaults), which entry prices a model ("provider/model", then
 * "model", then "*"), token usage added up per model, the USD of one usage, the cost
 * of a run whose components add up to its total, and price files that are refused
 * with an error naming the file. These numbers end up in receipts, spans and
 * limits.max_cost_usd, so each is checked to the cent and beyond. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lantern/meter.h"
#include "lantern/util.h"
#include "tap.h"

#define PLAN 23

static char dir[64];

static double absd(double d)
{
	return d < 0 ? -d : d;
}

/* Equal but for floating-point rounding. */
static bool near(double a, double b)
{
	return absd(a - b) <= 1e-12 * (absd(b) > 1 ? absd(b) : 1);
}

/* Writes dir/name with text; returns its path (static, rotated over 4 calls). */
static const char *file(const char *name, const char *text)
{
	static char paths[4][128];
	static int k;
	char *p = paths[k++ % 4];
	FILE *f;

	snprintf(p, 128, "%s/%s", dir, name);
	f = fopen(p, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
	return p;
}

static double price(const struct meter_table *t, const char *provider, const char *model, const char *kind)
{
	return json_number_value(json_object_get(meter_price_for(t, provider, model), kind));
}

static void test_defaults(void)
{
	struct meter_table t;
	struct lerr e = { { 0 } };
	int r = meter_table_load(NULL, &t, &e);

	tap_ok(r == 0 && !strcmp(t.source, "defaults") && t.cpu_second == METER_DEFAULT_CPU_SECOND &&
		       t.memory_gib_second == METER_DEFAULT_MEMORY_GIB_SECOND &&
		       t.egress_gib == METER_DEFAULT_EGRESS_GIB && t.wall_second == METER_DEFAULT_WALL_SECOND,
	       "no prices file: the default rates, source \"defaults\" (%s)", r ? e.msg : "ok");
	tap_ok(r == 0 && price(&t, "openai", "gpt-4o", "input") == 3.0 &&
		       price(&t, "openai", "gpt-4o", "output") == 15.0 &&
		       price(&t, NULL, "anything", "cache_read") == 0.3 &&
		       price(&t, NULL, "anything", "cache_creation") == 3.75 &&
		       price(&t, NULL, "anything", "reasoning") == 15.0,
	       "no prices file: every model at the default list prices (3, 15, 0.3, 3.75, 15 per million)");
	meter_table_free(&t);
}

static const char table[] =
	"{\"openai/gpt-4o\": {\"input\": 2.5, \"output\": 10, \"cache_read\": 1.25,"
	"                     \"cache_creation\": 3, \"reasoning\": 10},"
	" \"gpt-4o\": {\"input\": 5, \"output\": 20},"
	" \"*\": {\"input\": 1, \"output\": 2},"
	" \"rates\": {\"cpu_second\": 0.001, \"memory_gib_second\": 0.0001, \"egress_gib\": 0.5,"
	"            \"wall_second\": 0.01}}";

static void test_precedence(struct meter_table *t)
{
	tap_ok(price(t, "openai", "gpt-4o", "input") == 2.5 && price(t, "azure", "gpt-4o", "input") == 5 &&
		       price(t, NULL, "gpt-4o", "input") == 5 && price(t, "", "gpt-4o", "input") == 5 &&
		       price(t, "openai", "o3", "input") == 1 && price(t, NULL, NULL, "input") == 1,
	       "\"provider/model\" wins over \"model\", which wins over \"*\"");
	tap_ok(price(t, NULL, "rates", "input") == 1 && price(t, "x", "rates", "input") == 1,
	       "a model named \"rates\" is priced by \"*\", never by the rates object");
}

static void test_no_star(void)
{
	struct meter_table t;
	struct lerr e = { { 0 } };
	int r = meter_table_load(file("nostar.json", "{\"m1\": {\"input\": 7}}"), &t, &e);

	tap_ok(r == 0 && price(&t, NULL, "m1", "input") == 7 && price(&t, NULL, "m2", "input") == 3.0 &&
		       price(&t, NULL, "m2", "output") == 15.0 && t.cpu_second == METER_DEFAULT_CPU_SECOND &&
		       t.egress_gib == METER_DEFAULT_EGRESS_GIB,
	       "a table without \"*\" or rates: unnamed models at the default prices, default rates (%s)",
	       r ? e.msg : "ok");
	meter_table_free(&t);
}

static json_t *usage(const char *provider, const char *model, long in, long out, long cr, long cc, long rs)
{
	json_t *u = json_pack("{s:I, s:I, s:I, s:I, s:I}", "input_tokens", (json_int_t)in, "output_tokens",
			      (json_int_t)out, "cache_read_tokens", (json_int_t)cr, "cache_creation_tokens",
			      (json_int_t)cc, "reasoning_tokens", (json_int_t)rs);

	if (provider)
		json_object_set_new(u, "provider", json_string(provider));
	if (model)
		json_object_set_new(u, "model", json_string(model));
	return u;
}

static void test_usage(struct meter_table *t)
{
	json_t *u1 = usage("openai", "gpt-4o", 1000, 2000, 4000, 8000, 16000);
	json_t *u2 = usage(NULL, "gpt-4o", 1000000, 0, 0, 0, 0);
	json_t *tokens = json_object(), *m;
	double want1 = (1000 * 2.5 + 2000 * 10 + 4000 * 1.25 + 8000 * 3 + 16000 * 10) / 1e6;

	tap_ok(near(meter_usage_usd(t, u1), want1) && near(meter_usage_usd(t, u2), 5.0),
	       "one usage: each token kind at its own price per million (%.6f, want %.6f; %.6f, want 5)",
	       meter_usage_usd(t, u1), want1, meter_usage_usd(t, u2));

	{
		struct meter_tally tally = { 0 };
		const struct meter_model *mm = NULL;
		json_t *tj;

		meter_tally_add_usage(&tally, u1);
		meter_tally_add_usage(&tally, u1);
		meter_tally_add_usage(&tally, u2);
		json_decref(u1);
		json_decref(u2);
		for (size_t i = 0; i < tally.n; i++)
			if (!strcmp(tally.m[i].provider, "openai") && !strcmp(tally.m[i].model, "gpt-4o"))
				mm = &tally.m[i];
		tj = meter_tally_json(&tally);
		m = json_object_get(tj, "openai/gpt-4o");
		tap_ok(tally.n == 2 && mm && mm->t.input == 2000 && mm->t.output == 4000 && mm->t.cache_read == 8000 &&
			       mm->t.cache_creation == 16000 && mm->t.reasoning == 32000 &&
			       json_integer_value(json_object_get(m, "reasoning_tokens")) == 32000 &&
			       json_integer_value(json_object_get(json_object_get(tj, "gpt-4o"), "input_tokens")) ==
				       1000000 && tally.total == 2 * 31000 + 1000000,
		       "the tally sums each kind per \"provider/model\" (a usage without a provider: per \"model\")");
		json_decref(tj);

		u1 = usage("openai", "gpt-4o", -500, 0, 0, 0, 0);
		meter_tally_add_usage(&tally, u1);
		json_decref(u1);
		tap_ok(mm && mm->t.input == 2000, "a negative count from a workload does not lower the total");
		{
			struct meter_tokens huge = { .input = UINT64_MAX - 5 };

			meter_tally_add(&tally, "openai", "gpt-4o", &huge);
			meter_tally_add(&tally, "openai", "gpt-4o", &huge);
			tap_ok(mm && mm->t.input == UINT64_MAX && tally.total == UINT64_MAX,
			       "token counts saturate at the largest 64-bit value instead of wrapping");
		}
		{
			/* past INT64_MAX, what leaves as a signed number is INT64_MAX, not the
			 * count's low 63 bits */
			struct meter_tally big = { 0 };
			struct meter_tokens t = { .output = (1ULL << 63) + 5 };
			json_t *bj;
			json_int_t out;

			meter_tally_add(&big, "openai", "gpt-4o", &t);
			bj = meter_tally_json(&big);
			out = json_integer_value(json_object_get(json_object_get(bj, "openai/gpt-4o"), "output_tokens"));
			tap_ok(out == INT64_MAX, "a count of 2^63 + 5 tokens shows as %lld in the token report (INT64_MAX)",
			       (long long)out);
			json_decref(bj);
		}
	}
	json_decref(tokens);
}

static void test_compute(struct meter_table *t)
{
	struct meter_tally tally = { 0 };
	struct meter_usage u = { .cpu_seconds = 100, .memory_gib_seconds = 50,
				 .egress_bytes = 2ULL << 30, .wall_seconds = 10, .tally = &tally };
	struct meter_cost c;
	json_t *u1 = usage("openai", "gpt-4o", 1000, 2000, 4000, 8000, 16000), *u2 = usage(NULL, "o3", 0, 1000000, 0, 0, 0);
	json_t *j, *comp;
	double tokens = (1000 * 2.5 + 2000 * 10 + 4000 * 1.25 + 8000 * 3 + 16000 * 10) / 1e6 + 2.0;
	char why[256] = "";

	meter_tally_add_usage(&tally, u1);
	meter_tally_add_usage(&tally, u2);
	meter_compute(t, &u, &c);
	tap_ok(near(c.tokens, tokens) && near(c.cpu, 0.1) && near(c.memory, 0.005) && near(c.egress, 1.0) &&
		       near(c.wall, 0.1),
	       "each component at its rate: tokens %.6f, cpu %.6f, memory %.6f, egress (2 GiB) %.6f, wall %.6f",
	       c.tokens, c.cpu, c.memory, c.egress, c.wall);
	tap_ok(near(c.total, c.tokens + c.cpu + c.memory + c.egress + c.wall) &&
		       near(c.total, tokens + 0.1 + 0.005 + 1.0 + 0.1),
	       "the components add up to the total (%.6f)", c.total);

	j = meter_cost_json(t, &u, &c);
	comp = json_object_get(j, "components");
	tap_ok(near(json_number_value(json_object_get(j, "total_usd")), c.total) &&
		       near(json_number_value(json_object_get(comp, "tokens_usd")), c.tokens) &&
		       near(json_number_value(json_object_get(comp, "egress_usd")), c.egress) &&
		       json_integer_value(json_object_get(json_object_get(j, "usage"), "egress_bytes")) == 2LL << 30 &&
		       !strcmp(json_string_value(json_object_get(json_object_get(j, "rates"), "price_table")) ?: "",
			       t->source),
	       "the cost JSON carries the same numbers and names its price table (%s)", t->source);
	json_decref(j);
	tap_ok(meter_budget_spent(t, &u, 0, c.total, METER_REACHED, why, sizeof(why)) &&
		       strstr(why, "limits.max_cost_usd") && strstr(why, "cpu 0.1") &&
		       !meter_budget_spent(t, &u, 0, c.total, METER_EXCEEDED, why, sizeof(why)) &&
		       meter_budget_spent(t, &u, 0, c.total - 0.01, METER_EXCEEDED, why, sizeof(why)),
	       "the one budget check: a cost equal to max_cost_usd is reached (no new step) but not exceeded");
	json_decref(u1);
	json_decref(u2);
}

/* A price file that cannot be trusted is refused with an error naming it. */
static void test_malformed(void)
{
	static const struct {
		const char *name, *text, *says;
	} bad[] = {
		{ "syntax.json", "{\"gpt-4o\": {\"input\": 2.5,}", "syntax.json" },
		{ "array.json", "[1, 2]", "must be a JSON object" },
		{ "negative.json", "{\"gpt-4o\": {\"input\": -1}}", "gpt-4o.input" },
		{ "string.json", "{\"*\": {\"output\": \"cheap\"}}", "*.output" },
		{ "rate.json", "{\"rates\": {\"cpu_second\": \"free\"}}", "rates.cpu_second" },
		{ "rates.json", "{\"rates\": [0.001]}", "rates must be an object" },
		{ "entry.json", "{\"gpt-4o\": 2.5}", "gpt-4o must be an object" },
	};
	char missing[128];

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct meter_table t;
		struct lerr e = { { 0 } };
		const char *path = file(bad[i].name, bad[i].text);
		int r = meter_table_load(path, &t, &e);

		tap_ok(r == -EINVAL && strstr(e.msg, path) && strstr(e.msg, bad[i].says) && !t.prices,
		       "%s is refused, naming the file and the problem: %d %s", bad[i].text, r, e.msg);
		if (r == 0)
			meter_table_free(&t);
	}
	{
		struct meter_table t;
		struct lerr e = { { 0 } };
		int r;

		snprintf(missing, sizeof(missing), "%s/absent.json", dir);
		r = meter_table_load(missing, &t, &e);
		tap_ok(r < 0 && strstr(e.msg, missing), "a missing prices file is an error naming it: %s", e.msg);
	}
}

int main(void)
{
	struct meter_table t;
	struct lerr e = { { 0 } };
	int r;

	tap_plan(PLAN);
	util_tmp_template(dir, sizeof(dir), "/tmp/lantern-test-meter-");
	if (!mkdtemp(dir)) {
		for (int i = 0; i < PLAN; i++)
			tap_ok(false, "meter point %d (no temporary directory)", i + 1);
		return tap_done();
	}
	test_defaults();
	r = meter_table_load(file("prices.json", table), &t, &e);
	tap_ok(r == 0 && strstr(t.source, "prices.json") && t.cpu_second == 0.001 && t.memory_gib_second == 0.0001 &&
		       t.egress_gib == 0.5 && t.wall_second == 0.01,
	       "a prices file loads, with its rates and its path as the source (%s)", r ? e.msg : t.source);
	if (r == 0) {
		test_precedence(&t);
		test_usage(&t);
		test_compute(&t);
		meter_table_free(&t);
	}
	test_no_star();
	test_malformed();
	util_rm_rf(dir);
	return tap_done();
}
