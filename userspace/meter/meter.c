/* meter.c: the price table and the cost of a run's usage (see meter.h). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lantern/meter.h"

/* usage field -> price field */
static const char *const kinds[][2] = {
	{ "input_tokens", "input" },
	{ "output_tokens", "output" },
	{ "cache_read_tokens", "cache_read" },
	{ "cache_creation_tokens", "cache_creation" },
	{ "reasoning_tokens", "reasoning" },
};

static int rate(json_t *o, const char *key, double *out, const char *path, struct lerr *e)
{
	json_t *v = json_object_get(o, key);

	if (!v)
		return 0;
	if (!json_is_number(v) || json_number_value(v) < 0)
		return lerr_set(e, -EINVAL, "meter: %s: rates.%s must be a non-negative number", path, key);
	*out = json_number_value(v);
	return 0;
}

int meter_table_load(const char *path, struct meter_table *t, struct lerr *e)
{
	json_error_t je;
	json_t *rates, *m;
	const char *name;
	int err = 0;

	memset(t, 0, sizeof(*t));
	t->cpu_second = METER_DEFAULT_CPU_SECOND;
	t->memory_gib_second = METER_DEFAULT_MEMORY_GIB_SECOND;
	t->egress_gib = METER_DEFAULT_EGRESS_GIB;
	t->wall_second = METER_DEFAULT_WALL_SECOND;
	snprintf(t->source, sizeof(t->source), "defaults");
	t->prices = path ? json_load_file(path, 0, &je) : json_loads(METER_DEFAULT_PRICES, 0, &je);
	if (!t->prices || !json_is_object(t->prices)) {
		err = lerr_set(e, -EINVAL, "meter: price table %s: %s", path ? path : "(defaults)",
			       t->prices ? "must be a JSON object of model -> prices" : je.text);
		goto out;
	}
	if (path)
		snprintf(t->source, sizeof(t->source), "%s", path);
	rates = json_object_get(t->prices, "rates");
	if (rates && !json_is_object(rates)) {
		err = lerr_set(e, -EINVAL, "meter: %s: rates must be an object of USD rates", t->source);
		goto out;
	}
	if ((err = rate(rates, "cpu_second", &t->cpu_second, t->source, e)) < 0 ||
	    (err = rate(rates, "memory_gib_second", &t->memory_gib_second, t->source, e)) < 0 ||
	    (err = rate(rates, "egress_gib", &t->egress_gib, t->source, e)) < 0 ||
	    (err = rate(rates, "wall_second", &t->wall_second, t->source, e)) < 0)
		goto out;
	json_object_foreach(t->prices, name, m) {
		if (!strcmp(name, "rates"))
			continue;
		/* anything else would price the model at nothing: a budget never reached */
		if (!json_is_object(m)) {
			err = lerr_set(e, -EINVAL, "meter: %s: %s must be an object of prices", t->source, name);
			goto out;
		}
		for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
			json_t *v = json_object_get(m, kinds[i][1]);
			if (v && (!json_is_number(v) || json_number_value(v) < 0)) {
				err = lerr_set(e, -EINVAL, "meter: %s: %s.%s must be a non-negative number",
					       t->source, name, kinds[i][1]);
				goto out;
			}
		}
	}
	if (!json_object_get(t->prices, "*")) {
		json_t *dflt = json_loads(METER_DEFAULT_PRICES, 0, NULL);

		json_object_set(t->prices, "*", json_object_get(dflt, "*"));
		json_decref(dflt);
	}
out:
	if (err)
		meter_table_free(t);
	return err;
}

void meter_table_free(struct meter_table *t)
{
	json_decref(t->prices);
	t->prices = NULL;
}

json_t *meter_price_for(const struct meter_table *t, const char *provider, const char *model)
{
	char full[512];
	json_t *p = NULL;

	if (provider && *provider && model) {
		snprintf(full, sizeof(full), "%s/%s", provider, model);
		p = json_object_get(t->prices, full);
	}
	if (!p && model && strcmp(model, "rates"))
		p = json_object_get(t->prices, model);
	return p ? p : json_object_get(t->prices, "*");
}

double meter_usage_usd(const struct meter_table *t, json_t *usage)
{
	json_t *p = meter_price_for(t, json_string_value(json_object_get(usage, "provider")),
				    json_string_value(json_object_get(usage, "model")));
	double usd = 0;

	for (size_t i = 0; p && i < ARRAY_SIZE(kinds); i++)
		usd += (double)json_integer_value(json_object_get(usage, kinds[i][0])) *
		       json_number_value(json_object_get(p, kinds[i][1])) / 1e6;
	return usd;
}

uint64_t meter_sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static void tokens_add(struct meter_tokens *d, const struct meter_tokens *k)
{
	d->input = meter_sat_add(d->input, k->input);
	d->output = meter_sat_add(d->output, k->output);
	d->cache_read = meter_sat_add(d->cache_read, k->cache_read);
	d->cache_creation = meter_sat_add(d->cache_creation, k->cache_creation);
	d->reasoning = meter_sat_add(d->reasoning, k->reasoning);
}

void meter_tally_add(struct meter_tally *t, const char *provider, const char *model,
		     const struct meter_tokens *k)
{
	struct meter_model *m = NULL;

	provider = provider ? provider : "";
	model = model ? model : "";
	for (size_t i = 0; i < t->n && !m; i++)
		if (!strcmp(t->m[i].provider, provider) && !strcmp(t->m[i].model, model))
			m = &t->m[i];
	if (!m && t->n < METER_MAX_MODELS) {
		m = &t->m[t->n++];
		snprintf(m->provider, sizeof(m->provider), "%s", t->n == METER_MAX_MODELS ? "" : provider);
		snprintf(m->model, sizeof(m->model), "%s", t->n == METER_MAX_MODELS ? "other" : model);
	}
	if (!m)
		m = &t->m[METER_MAX_MODELS - 1];
	tokens_add(&m->t, k);
	t->total = meter_sat_add(t->total, k->input);
	t->total = meter_sat_add(t->total, k->output);
	t->total = meter_sat_add(t->total, k->cache_read);
	t->total = meter_sat_add(t->total, k->cache_creation);
	t->total = meter_sat_add(t->total, k->reasoning);
}

static uint64_t count_of(json_t *usage, const char *k)
{
	json_t *v = json_object_get(usage, k);

	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

void meter_tally_add_usage(struct meter_tally *t, json_t *usage)
{
	struct meter_tokens k = {
		.input = count_of(usage, "input_tokens"),
		.output = count_of(usage, "output_tokens"),
		.cache_read = count_of(usage, "cache_read_tokens"),
		.cache_creation = count_of(usage, "cache_creation_tokens"),
		.reasoning = count_of(usage, "reasoning_tokens"),
	};

	meter_tally_add(t, json_string_value(json_object_get(usage, "provider")),
			json_string_value(json_object_get(usage, "model")), &k);
}

json_t *meter_tally_json(const struct meter_tally *t)
{
	json_t *o = json_object();

	for (size_t i = 0; o && t && i < t->n; i++) {
		const struct meter_model *m = &t->m[i];
		char key[sizeof(m->provider) + sizeof(m->model) + 2];

		snprintf(key, sizeof(key), "%s%s%s", m->provider, m->provider[0] ? "/" : "", m->model);
		json_object_set_new(o, key, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I}",
						      "provider", m->provider, "model", m->model,
						      "input_tokens", (json_int_t)util_sat_i64(m->t.input),
						      "output_tokens", (json_int_t)util_sat_i64(m->t.output),
						      "cache_read_tokens", (json_int_t)util_sat_i64(m->t.cache_read),
						      "cache_creation_tokens",
						      (json_int_t)util_sat_i64(m->t.cache_creation),
						      "reasoning_tokens", (json_int_t)util_sat_i64(m->t.reasoning)));
	}
	return o;
}

double meter_tokens_usd(const struct meter_table *t, const char *provider, const char *model,
			const struct meter_tokens *k)
{
	json_t *p = meter_price_for(t, provider, model);
	const double n[] = { (double)k->input, (double)k->output, (double)k->cache_read,
			     (double)k->cache_creation, (double)k->reasoning };
	double usd = 0;

	for (size_t i = 0; p && i < ARRAY_SIZE(kinds); i++)
		usd += n[i] * json_number_value(json_object_get(p, kinds[i][1])) / 1e6;
	return usd;
}

double meter_tally_usd(const struct meter_table *t, const struct meter_tally *tally)
{
	double usd = 0;

	for (size_t i = 0; tally && i < tally->n; i++)
		usd += meter_tokens_usd(t, tally->m[i].provider, tally->m[i].model, &tally->m[i].t);
	return usd;
}

void meter_compute(const struct meter_table *t, const struct meter_usage *u, struct meter_cost *c)
{
	memset(c, 0, sizeof(*c));
	c->tokens = meter_tally_usd(t, u->tally);
	c->cpu = u->cpu_seconds * t->cpu_second;
	c->memory = u->memory_gib_seconds * t->memory_gib_second;
	c->egress = (double)u->egress_bytes / (1024.0 * 1024.0 * 1024.0) * t->egress_gib;
	c->wall = u->wall_seconds * t->wall_second;
	c->total = c->tokens + c->cpu + c->memory + c->egress + c->wall;
}

json_t *meter_cost_json(const struct meter_table *t, const struct meter_usage *u,
			const struct meter_cost *c)
{
	return json_pack("{s:f, s:{s:f, s:f, s:f, s:f, s:f}, s:{s:f, s:f, s:I, s:f, s:o},"
			 " s:{s:f, s:f, s:f, s:f, s:s}}",
			 "total_usd", c->total,
			 "components", "tokens_usd", c->tokens, "cpu_usd", c->cpu, "memory_usd", c->memory,
			 "egress_usd", c->egress, "wall_usd", c->wall,
			 "usage", "cpu_seconds", u->cpu_seconds, "memory_gib_seconds", u->memory_gib_seconds,
			 "egress_bytes", (json_int_t)util_sat_i64(u->egress_bytes), "wall_seconds", u->wall_seconds,
			 "tokens", meter_tally_json(u->tally),
			 "rates", "cpu_second", t->cpu_second, "memory_gib_second", t->memory_gib_second,
			 "egress_gib", t->egress_gib, "wall_second", t->wall_second, "price_table", t->source);
}

bool meter_budget_spent(const struct meter_table *t, const struct meter_usage *u,
			uint64_t max_tokens, double max_cost_usd, enum meter_when when, char *why,
			size_t len)
{
	const char *verb = when == METER_REACHED ? "reached" : "exceeded";
	uint64_t tokens = u->tally ? u->tally->total : 0;
	struct meter_cost c;

	if (max_tokens && (when == METER_REACHED ? tokens >= max_tokens : tokens > max_tokens)) {
		snprintf(why, len, "limits.max_tokens of %llu %s (%llu used)", (unsigned long long)max_tokens,
			 verb, (unsigned long long)tokens);
		return true;
	}
	if (max_cost_usd <= 0)
		return false;
	meter_compute(t, u, &c);
	if (when == METER_REACHED ? c.total < max_cost_usd : c.total <= max_cost_usd)
		return false;
	snprintf(why, len,
		 "limits.max_cost_usd of %.6g %s: cost %.6f USD (tokens %.6f, cpu %.6f, memory %.6f, "
		 "egress %.6f, wall %.6f)", max_cost_usd, verb, c.total, c.tokens, c.cpu, c.memory,
		 c.egress, c.wall);
	return true;
}
