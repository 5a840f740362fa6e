/* trace.h: spans in the OTLP/JSON shape, deterministic ids, W3C traceparent.
 *
 * A span is a jansson object exactly as OTLP/JSON spells it (traceId and spanId in
 * lowercase hex, times as decimal strings of Unix nanoseconds, attributes as
 * [{key, value:{stringValue|intValue|doubleValue|boolValue}}]), so one value serves
 * the per-run file (OTLP JSON lines), `lantern trace`, and the protobuf encoder.
 *
 * Ids: a run's trace_id is the first 16 bytes of SHA-256("lantern.trace\0" run_id),
 * so a resumed run (same run_id) re-joins its trace. Span ids of the spans lanternd
 * makes are derived the same way from (run_id, a name like "root" or "step/ID"), so
 * a span sent twice after a crash is the same span, not a duplicate. */
#ifndef LANTERN_TRACE_H
#define LANTERN_TRACE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define TRACE_ID_LEN 16
#define SPAN_ID_LEN  8

/* OTLP SpanKind and StatusCode values */
enum { TRACE_KIND_INTERNAL = 1, TRACE_KIND_SERVER = 2, TRACE_KIND_CLIENT = 3 };
enum { TRACE_STATUS_UNSET = 0, TRACE_STATUS_OK = 1, TRACE_STATUS_ERROR = 2 };

void trace_id_for_run(const char *run_id, uint8_t out[TRACE_ID_LEN]);
void trace_span_id_for(const char *run_id, const char *what, uint8_t out[SPAN_ID_LEN]);
/* Lowercase hex of n bytes into out (2n+1). */
void trace_hex(const uint8_t *b, size_t n, char *out);
/* Parses exactly 2n hex digits; -EINVAL otherwise. */
int trace_unhex(const char *s, uint8_t *b, size_t n);
/* "00-<trace_id>-<span_id>-01" (sampled), W3C Trace Context version 00. */
void trace_traceparent(const uint8_t tid[TRACE_ID_LEN], const uint8_t sid[SPAN_ID_LEN], char out[56]);

/* Unix time in nanoseconds (CLOCK_REALTIME). */
uint64_t trace_now_ns(void);

/* A new span (parent may be NULL for a root). */
json_t *trace_span_new(const uint8_t tid[TRACE_ID_LEN], const uint8_t sid[SPAN_ID_LEN],
		       const uint8_t *parent, const char *name, int kind, uint64_t start_ns,
		       uint64_t end_ns);
void trace_span_set_end(json_t *span, uint64_t end_ns);
void trace_span_set_status(json_t *span, int code, const char *message);
/* Attributes: set replaces an existing key. */
void trace_attr_str(json_t *attrs_owner, const char *key, const char *v);
void trace_attr_int(json_t *attrs_owner, const char *key, int64_t v);
void trace_attr_double(json_t *attrs_owner, const char *key, double v);
void trace_attr_bool(json_t *attrs_owner, const char *key, bool v);
/* Looks an attribute up: the value object ({stringValue: ...}) or NULL. */
json_t *trace_attr_get(json_t *attrs_owner, const char *key);
/* Adds an event (its own attributes set with trace_attr_* on the returned object). */
json_t *trace_span_event(json_t *span, uint64_t time_ns, const char *name);

/* One OTLP/JSON TracesData line: {"resourceSpans":[{resource, scopeSpans:[{scope, spans}]}]}.
 * Takes a reference to resource_attrs and spans (they are not copied). */
json_t *trace_traces_data(json_t *resource_attrs, json_t *spans);
/* The instrumentation scope lanternd reports. */
#define TRACE_SCOPE_NAME "lanternd"
#define TRACE_SCOPE_VERSION "0.1.0"

/* Unix nanoseconds from a span's time field; 0 when absent. */
uint64_t trace_span_time(json_t *span, const char *field);

#endif
