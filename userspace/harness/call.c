/* call.c: one harness API request (method, path, JSON body; headers for /v1/secrets)
 * decoded and checked into a struct harness_call: the fields lanternd needs, each of its type and within its
 * bounds, and the workload's own JSON (a step's result, the run's output) re-encoded
 * compactly so it can go into a journal record as it is. This and http.c are the only
 * code that reads a workload's bytes; with privilege separation both run in the
 * unprivileged lantern-wire, and lanternd gets only the typed call. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "lantern/harness.h"

#define ROUTES "GET /v1/input, GET /v1/run, GET /v1/secrets; POST /v1/steps/begin, " \
	       "/v1/steps/complete, /v1/steps/fail, /v1/output, /v1/secrets/{env_name}"

static int refuse(int status, char *why, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int refuse(int status, char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return status;
}

/* Up to cap - 1 bytes of s, cut at a character boundary (s is UTF-8, as jansson gave it). */
static void utf8_prefix(char *out, size_t cap, const char *s)
{
	size_t n = strlen(s);

	if (n >= cap) {
		n = cap - 1;
		while (n && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}
	memcpy(out, s, n);
	out[n] = '\0';
}

/* A string member into buf, cut at a character boundary: a name cut inside one would not
 * be UTF-8, and the record holding it would not be JSON nor the token report show it.
 * Absent or not a string leaves buf "". */
static void str_into(json_t *o, const char *k, char *buf, size_t cap)
{
	const char *v = json_string_value(json_object_get(o, k));

	utf8_prefix(buf, cap, v ? v : "");
}

static int step_id(json_t *body, struct harness_call *c, char *why, size_t len)
{
	const char *id = json_string_value(json_object_get(body, "step_id"));

	if (!id || !*id || strlen(id) > HARNESS_MAX_STEP_ID)
		return refuse(400, why, len, "\"step_id\" must be a non-empty string of at most %d bytes",
			      HARNESS_MAX_STEP_ID);
	memcpy(c->step_id, id, strlen(id) + 1);
	return 0;
}

static int decode_begin(json_t *body, struct harness_call *c, char *why, size_t len)
{
	const char *kind = json_string_value(json_object_get(body, "kind")) ?: "other";
	json_t *dgv = json_object_get(body, "input_digest");
	const char *dg = json_string_value(dgv);

	if (strcmp(kind, "llm") && strcmp(kind, "tool") && strcmp(kind, "other"))
		return refuse(400, why, len, "\"kind\" must be llm, tool or other, not \"%.64s\"", kind);
	snprintf(c->kind, sizeof(c->kind), "%s", kind);
	if (dgv && (!dg || strlen(dg) > 256))
		return refuse(400, why, len, "\"input_digest\" must be a string of at most 256 bytes");
	if (dg) {
		memcpy(c->digest, dg, strlen(dg) + 1);
		c->have_digest = true;
	}
	return 0;
}

static int decode_usage(json_t *u, struct harness_usage *hu, char *why, size_t len)
{
	static const struct {
		const char *name;
		unsigned bit;
		size_t off;
	} f[] = {
		{ "input_tokens", HU_INPUT, offsetof(struct meter_tokens, input) },
		{ "output_tokens", HU_OUTPUT, offsetof(struct meter_tokens, output) },
		{ "cache_read_tokens", HU_CACHE_READ, offsetof(struct meter_tokens, cache_read) },
		{ "cache_creation_tokens", HU_CACHE_CREATION, offsetof(struct meter_tokens, cache_creation) },
		{ "reasoning_tokens", HU_REASONING, offsetof(struct meter_tokens, reasoning) },
	};

	if (!json_is_object(u))
		return refuse(400, why, len, "\"usage\" must be an object");
	hu->present = true;
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		json_t *v = json_object_get(u, f[i].name);

		if (!v)
			continue;
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return refuse(400, why, len, "usage.%s must be a non-negative integer", f[i].name);
		*(uint64_t *)((char *)&hu->t + f[i].off) = (uint64_t)json_integer_value(v);
		hu->has |= f[i].bit;
	}
	if (json_is_string(json_object_get(u, "provider")))
		hu->has |= HU_PROVIDER;
	if (json_is_string(json_object_get(u, "model")))
		hu->has |= HU_MODEL;
	str_into(u, "provider", hu->provider, sizeof(hu->provider));
	str_into(u, "model", hu->model, sizeof(hu->model));
	str_into(u, "operation", hu->operation, sizeof(hu->operation));
	str_into(u, "response_model", hu->response_model, sizeof(hu->response_model));
	return 0;
}

/* A JSON value re-encoded compactly (keys sorted, as records are written). */
static int encode(json_t *v, struct harness_call *c, char *why, size_t len)
{
	if (!(c->value = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY)))
		return refuse(500, why, len, "lanternd: out of memory");
	c->value_len = strlen(c->value);
	return 0;
}

static int decode_complete(json_t *body, struct harness_call *c, char *why, size_t len)
{
	json_t *r = json_object_get(body, "result"), *b = json_object_get(body, "result_b64");
	json_t *att = json_object_get(body, "attempt"), *code = json_object_get(body, "exit_code");
	json_t *usage = json_object_get(body, "usage");
	const char *tool = json_string_value(json_object_get(body, "name")) ?:
			   json_string_value(json_object_get(body, "tool"));
	int err;

	if (att) {
		/* an attempt that is not a number names no attempt the step has: a conflict */
		c->have_attempt = true;
		c->attempt = json_is_integer(att) && json_integer_value(att) >= 0 &&
			     json_integer_value(att) < UINT32_MAX ? (uint32_t)json_integer_value(att) : UINT32_MAX;
	}
	if (r && b)
		return refuse(400, why, len, "give \"result\" or \"result_b64\", not both");
	if (b && !json_is_string(b))
		return refuse(400, why, len, "\"result_b64\" must be a base64 string");
	if (usage && (err = decode_usage(usage, &c->usage, why, len)))
		return err;
	if (code && !json_is_integer(code))
		return refuse(400, why, len, "\"exit_code\" must be an integer");
	if (code) {
		c->exit_code = json_integer_value(code);
		c->have_exit_code = true;
	}
	utf8_prefix(c->tool, sizeof(c->tool), tool ? tool : "");
	c->value_b64 = b != NULL;
	return b || r ? encode(b ? b : r, c, why, len) : 0;
}

static int decode_fail(json_t *body, struct harness_call *c)
{
	utf8_prefix(c->error, sizeof(c->error), json_string_value(json_object_get(body, "error")) ?: "");
	c->retryable = json_is_true(json_object_get(body, "retryable"));
	return 0;
}

int harness_call_decode(const char *method, const char *path, const char *body, size_t len,
			struct harness_call *c, char *why, size_t whylen)
{
	json_error_t je;
	json_t *b;
	int err = 0;

	memset(c, 0, sizeof(*c));
	if (strcmp(method, "POST")) {
		if (!strcmp(path, "/v1/input"))
			c->op = HOP_INPUT;
		else if (!strcmp(path, "/v1/run"))
			c->op = HOP_RUN;
		else
			return refuse(strncmp(path, "/v1/", 4) ? 404 : 405, why, whylen, "%s", ROUTES);
		return 0;
	}
	if (!strcmp(path, "/v1/steps/begin"))
		c->op = HOP_BEGIN;
	else if (!strcmp(path, "/v1/steps/complete"))
		c->op = HOP_COMPLETE;
	else if (!strcmp(path, "/v1/steps/fail"))
		c->op = HOP_FAIL;
	else if (!strcmp(path, "/v1/output"))
		c->op = HOP_OUTPUT;
	else
		return refuse(404, why, whylen, "%.200s", path);
	b = len ? json_loadb(body, len, 0, &je) : json_object();
	if (!json_is_object(b)) {
		err = refuse(400, why, whylen, "request body is not a JSON object%s%s", b ? "" : ": ",
			     b ? "" : je.text);
		json_decref(b);
		return err;
	}
	switch (c->op) {
	case HOP_OUTPUT:
		if (!json_object_get(b, "output"))
			err = refuse(400, why, whylen, "\"output\" is missing");
		else
			err = encode(json_object_get(b, "output"), c, why, whylen);
		break;
	case HOP_BEGIN:
		if (!(err = step_id(b, c, why, whylen)))
			err = decode_begin(b, c, why, whylen);
		break;
	case HOP_COMPLETE:
		if (!(err = step_id(b, c, why, whylen)))
			err = decode_complete(b, c, why, whylen);
		break;
	case HOP_FAIL:
		if (!(err = step_id(b, c, why, whylen)))
			err = decode_fail(b, c);
		break;
	default:
		break;
	}
	json_decref(b);
	return err;
}

void harness_call_free(struct harness_call *c)
{
	free(c->value);
	c->value = NULL;
	c->value_len = 0;
}

/* A header's value into out when it fits, else "" (a signature that was cut would
 * not verify anyway). */
static void header(const struct harness_request *rq, const char *name, char *out, size_t len)
{
	const char *v = harness_header(rq, name);

	out[0] = '\0';
	if (v && strlen(v) < len)
		memcpy(out, v, strlen(v) + 1);
}

static bool env_name_ok(const char *s)
{
	if (!*s || (*s >= '0' && *s <= '9') || strlen(s) > 127)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
			return false;
	return true;
}

/* GET /v1/secrets, POST /v1/secrets/{env_name}: the name, the signature headers and
 * the body's digest; the signature itself is checked by lanternd (identity). */
static int decode_secret(const struct harness_request *rq, struct harness_call *c, char *why, size_t whylen)
{
	const char *name = rq->path[11] == '/' ? rq->path + 12 : NULL;
	bool post = !strcmp(rq->method, "POST");

	memset(c, 0, sizeof(*c));
	if (!name && !post) {
		c->op = HOP_SECRETS;
		return 0;
	}
	if (!name || !*name)
		return refuse(404, why, whylen, "%s", ROUTES);
	if (!post)
		return refuse(405, why, whylen, "POST /v1/secrets/{env_name}, signed (docs/identity.md)");
	if (!env_name_ok(name))
		return refuse(404, why, whylen, "\"%.130s\" is not an environment variable name", name);
	c->op = HOP_SECRET;
	snprintf(c->env_name, sizeof(c->env_name), "%s", name);
	header(rq, "X-Lantern-Timestamp", c->sig_ts, sizeof(c->sig_ts));
	header(rq, "X-Lantern-Nonce", c->sig_nonce, sizeof(c->sig_nonce));
	header(rq, "X-Lantern-Signature", c->sig, sizeof(c->sig));
	crypto_hash_sha256(c->body_sha256, (const uint8_t *)rq->body, rq->body_len);
	return 0;
}

int harness_call_decode_request(const struct harness_request *rq, struct harness_call *c, char *why,
				size_t whylen)
{
	if (!strncmp(rq->path, "/v1/secrets", 11) && (!rq->path[11] || rq->path[11] == '/'))
		return decode_secret(rq, c, why, whylen);
	return harness_call_decode(rq->method, rq->path, rq->body, rq->body_len, c, why, whylen);
}
