/* meter.c: the price table and the cost of a run's usage (see meter.h). */
#include <errno.h>
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

void meter_add_usage(json_t *tokens, json_t *usage)
{
	const char *prov = json_string_value(json_object_get(usage, "provider")) ?: "";
	const char *model = json_string_value(json_object_get(usage, "model")) ?: "";
	char key[512];
	json_t *m;

	snprintf(key, sizeof(key), "%s%s%s", prov, *prov ? "/" : "", model);
	m = json_object_get(tokens, key);
	if (!m) {
		m = json_pack("{s:s, s:s}", "provider", prov, "model", model);
		json_object_set_new(tokens, key, m);
	}
	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
		json_int_t add = json_integer_value(json_object_get(usage, kinds[i][0]));
		json_int_t cur = json_integer_value(json_object_get(m, kinds[i][0]));

		if (add > 0)
			json_object_set_new(m, kinds[i][0], json_integer(cur + add));
	}
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

void meter_compute(const struct meter_table *t, const struct meter_usage *u, struct meter_cost *c)
{
	const char *key;
	json_t *m;

	memset(c, 0, sizeof(*c));
	json_object_foreach(u->tokens, key, m)
		c->tokens += meter_usage_usd(t, m);
	c->cpu = u->cpu_seconds * t->cpu_second;
	c->memory = u->memory_gib_seconds * t->memory_gib_second;
	c->egress = (double)u->egress_bytes / (1024.0 * 1024.0 * 1024.0) * t->egress_gib;
	c->wall = u->wall_seconds * t->wall_second;
	c->total = c->tokens + c->cpu + c->memory + c->egress + c->wall;
}

json_t *meter_cost_json(const struct meter_table *t, const struct meter_usage *u,
			const struct meter_cost *c)
{
	return json_pack("{s:f, s:{s:f, s:f, s:f, s:f, s:f}, s:{s:f, s:f, s:I, s:f, s:O},"
			 " s:{s:f, s:f, s:f, s:f, s:s}}",
			 "total_usd", c->total,
			 "components", "tokens_usd", c->tokens, "cpu_usd", c->cpu, "memory_usd", c->memory,
			 "egress_usd", c->egress, "wall_usd", c->wall,
			 "usage", "cpu_seconds", u->cpu_seconds, "memory_gib_seconds", u->memory_gib_seconds,
			 "egress_bytes", (json_int_t)u->egress_bytes, "wall_seconds", u->wall_seconds,
			 "tokens", u->tokens,
			 "rates", "cpu_second", t->cpu_second, "memory_gib_second", t->memory_gib_second,
			 "egress_gib", t->egress_gib, "wall_second", t->wall_second, "price_table", t->source);
}
