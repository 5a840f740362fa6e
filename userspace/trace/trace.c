/* trace.c: building spans in the OTLP/JSON shape, deterministic trace and span ids,
 * and the W3C traceparent header value. See trace.h for the id derivation. */
#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lantern/trace.h"

static void derive(const char *domain, const char *run_id, const char *what, uint8_t *out,
		   size_t n)
{
	crypto_hash_sha256_state st;
	uint8_t h[crypto_hash_sha256_BYTES];

	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, (const uint8_t *)domain, strlen(domain) + 1);
	crypto_hash_sha256_update(&st, (const uint8_t *)run_id, strlen(run_id) + 1);
	if (what)
		crypto_hash_sha256_update(&st, (const uint8_t *)what, strlen(what));
	crypto_hash_sha256_final(&st, h);
	memcpy(out, h, n);
	/* an all-zero id is invalid in OTLP and W3C; SHA-256 makes it astronomically
	 * unlikely, and this keeps it impossible */
	for (size_t i = 0; i < n; i++)
		if (out[i])
			return;
	out[n - 1] = 1;
}

void trace_id_for_run(const char *run_id, uint8_t out[TRACE_ID_LEN])
{
	derive("lantern.trace", run_id, NULL, out, TRACE_ID_LEN);
}

void trace_span_id_for(const char *run_id, const char *what, uint8_t out[SPAN_ID_LEN])
{
	derive("lantern.span", run_id, what, out, SPAN_ID_LEN);
}

void trace_hex(const uint8_t *b, size_t n, char *out)
{
	static const char hx[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hx[b[i] >> 4];
		out[2 * i + 1] = hx[b[i] & 15];
	}
	out[2 * n] = '\0';
}

static int nib(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int trace_unhex(const char *s, uint8_t *b, size_t n)
{
	if (!s || strlen(s) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int hi = nib(s[2 * i]), lo = nib(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		b[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

void trace_traceparent(const uint8_t tid[TRACE_ID_LEN], const uint8_t sid[SPAN_ID_LEN], char out[56])
{
	char t[33], s[17];

	trace_hex(tid, TRACE_ID_LEN, t);
	trace_hex(sid, SPAN_ID_LEN, s);
	snprintf(out, 56, "00-%s-%s-01", t, s);
}

uint64_t trace_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static json_t *ns_str(uint64_t ns)
{
	char b[24];

	snprintf(b, sizeof(b), "%" PRIu64, ns);
	return json_string(b);
}

json_t *trace_span_new(const uint8_t tid[TRACE_ID_LEN], const uint8_t sid[SPAN_ID_LEN],
		       const uint8_t *parent, const char *name, int kind, uint64_t start_ns,
		       uint64_t end_ns)
{
	char t[33], s[17], p[17];
	json_t *span;

	trace_hex(tid, TRACE_ID_LEN, t);
	trace_hex(sid, SPAN_ID_LEN, s);
	span = json_pack("{s:s, s:s, s:s, s:i, s:o, s:o, s:[], s:[], s:{}}", "traceId", t, "spanId", s,
			 "name", name, "kind", kind, "startTimeUnixNano", ns_str(start_ns),
			 "endTimeUnixNano", ns_str(end_ns), "attributes", "events", "status");
	if (span && parent) {
		trace_hex(parent, SPAN_ID_LEN, p);
		json_object_set_new(span, "parentSpanId", json_string(p));
	}
	return span;
}

void trace_span_set_end(json_t *span, uint64_t end_ns)
{
	json_object_set_new(span, "endTimeUnixNano", ns_str(end_ns));
}

void trace_span_set_status(json_t *span, int code, const char *message)
{
	json_t *st = json_object();

	if (code)
		json_object_set_new(st, "code", json_integer(code));
	if (message && *message)
		json_object_set_new(st, "message", json_string(message));
	json_object_set_new(span, "status", st);
}

static void attr_set(json_t *owner, const char *key, json_t *value)
{
	json_t *attrs = json_object_get(owner, "attributes"), *kv;
	size_t i;

	if (!attrs) {
		attrs = json_array();
		json_object_set_new(owner, "attributes", attrs);
	}
	json_array_foreach(attrs, i, kv) {
		if (!strcmp(json_string_value(json_object_get(kv, "key")) ?: "", key)) {
			json_object_set_new(kv, "value", value);
			return;
		}
	}
	json_array_append_new(attrs, json_pack("{s:s, s:o}", "key", key, "value", value));
}

void trace_attr_str(json_t *owner, const char *key, const char *v)
{
	attr_set(owner, key, json_pack("{s:s}", "stringValue", v ? v : ""));
}

void trace_attr_int(json_t *owner, const char *key, int64_t v)
{
	char b[24];

	/* OTLP/JSON spells 64-bit integers as strings */
	snprintf(b, sizeof(b), "%" PRId64, v);
	attr_set(owner, key, json_pack("{s:s}", "intValue", b));
}

void trace_attr_double(json_t *owner, const char *key, double v)
{
	attr_set(owner, key, json_pack("{s:f}", "doubleValue", v));
}

void trace_attr_bool(json_t *owner, const char *key, bool v)
{
	attr_set(owner, key, json_pack("{s:b}", "boolValue", v));
}

json_t *trace_attr_get(json_t *owner, const char *key)
{
	json_t *kv;
	size_t i;

	json_array_foreach(json_object_get(owner, "attributes"), i, kv)
		if (!strcmp(json_string_value(json_object_get(kv, "key")) ?: "", key))
			return json_object_get(kv, "value");
	return NULL;
}

json_t *trace_span_event(json_t *span, uint64_t time_ns, const char *name)
{
	json_t *ev = json_pack("{s:o, s:s, s:[]}", "timeUnixNano", ns_str(time_ns), "name", name,
			       "attributes");
	json_t *evs = json_object_get(span, "events");

	if (!evs) {
		evs = json_array();
		json_object_set_new(span, "events", evs);
	}
	json_array_append_new(evs, ev);
	return ev;
}

json_t *trace_traces_data(json_t *resource_attrs, json_t *spans)
{
	return json_pack("{s:[{s:{s:O}, s:[{s:{s:s, s:s}, s:O}]}]}", "resourceSpans", "resource",
			 "attributes", resource_attrs, "scopeSpans", "scope", "name", TRACE_SCOPE_NAME,
			 "version", TRACE_SCOPE_VERSION, "spans", spans);
}

uint64_t trace_span_time(json_t *span, const char *field)
{
	const char *s = json_string_value(json_object_get(span, field));

	return s ? strtoull(s, NULL, 10) : 0;
}
