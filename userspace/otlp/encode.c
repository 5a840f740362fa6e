/* encode.c: OTLP/JSON spans (trace.h) to a protobuf ExportTraceServiceRequest with
 * the protobuf-c code generated from proto/opentelemetry, and the response's partial
 * success back. Every allocation of one encoding goes into an arena freed at once. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lantern/otlp.h"
#include "lantern/trace.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

typedef Opentelemetry__Proto__Common__V1__AnyValue AnyValue;
typedef Opentelemetry__Proto__Common__V1__KeyValue KeyValue;
typedef Opentelemetry__Proto__Trace__V1__Span Span;
typedef Opentelemetry__Proto__Trace__V1__Span__Event SpanEvent;
typedef Opentelemetry__Proto__Trace__V1__Status Status;

struct arena {
	void **p;
	size_t n, cap;
	bool failed;
};

static void *arena_alloc(struct arena *a, size_t size)
{
	void *m;

	if (a->n == a->cap) {
		size_t nc = a->cap ? a->cap * 2 : 256;
		void **np = realloc(a->p, nc * sizeof(*np));
		if (!np) {
			a->failed = true;
			return NULL;
		}
		a->p = np;
		a->cap = nc;
	}
	m = calloc(1, size ? size : 1);
	if (!m) {
		a->failed = true;
		return NULL;
	}
	a->p[a->n++] = m;
	return m;
}

static void arena_free(struct arena *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->p[i]);
	free(a->p);
}

static char *arena_str(struct arena *a, const char *s)
{
	size_t n = strlen(s ? s : "");
	char *d = arena_alloc(a, n + 1);

	if (d)
		memcpy(d, s ? s : "", n);
	return d;
}

static AnyValue *any_value(struct arena *a, json_t *v)
{
	static const AnyValue init = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
	AnyValue *av = arena_alloc(a, sizeof(*av));
	json_t *x;

	if (!av)
		return NULL;
	*av = init;
	if ((x = json_object_get(v, "stringValue"))) {
		av->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
		av->string_value = arena_str(a, json_string_value(x));
	} else if ((x = json_object_get(v, "intValue"))) {
		av->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
		av->int_value = json_is_string(x) ? strtoll(json_string_value(x), NULL, 10)
						  : json_integer_value(x);
	} else if ((x = json_object_get(v, "doubleValue"))) {
		av->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE;
		av->double_value = json_number_value(x);
	} else if ((x = json_object_get(v, "boolValue"))) {
		av->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE;
		av->bool_value = json_is_true(x);
	}
	return av;
}

static KeyValue **key_values(struct arena *a, json_t *attrs, size_t *n)
{
	static const KeyValue init = OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT;
	size_t cnt = json_array_size(attrs), i;
	KeyValue **kvs = arena_alloc(a, cnt * sizeof(*kvs));
	json_t *kv;

	*n = 0;
	if (!kvs)
		return NULL;
	json_array_foreach(attrs, i, kv) {
		KeyValue *k = arena_alloc(a, sizeof(*k));
		if (!k)
			return NULL;
		*k = init;
		k->key = arena_str(a, json_string_value(json_object_get(kv, "key")));
		k->value = any_value(a, json_object_get(kv, "value"));
		kvs[i] = k;
	}
	*n = cnt;
	return kvs;
}

static ProtobufCBinaryData id_bytes(struct arena *a, json_t *hex, size_t n)
{
	ProtobufCBinaryData d = { 0, NULL };
	uint8_t *b;

	if (!json_is_string(hex))
		return d;
	b = arena_alloc(a, n);
	if (b && trace_unhex(json_string_value(hex), b, n) == 0) {
		d.data = b;
		d.len = n;
	}
	return d;
}

static Span *span_of(struct arena *a, json_t *js)
{
	static const Span init = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__INIT;
	static const SpanEvent ev_init = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__EVENT__INIT;
	static const Status st_init = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__INIT;
	Span *s = arena_alloc(a, sizeof(*s));
	json_t *evs = json_object_get(js, "events"), *ev, *st;
	size_t i;

	if (!s)
		return NULL;
	*s = init;
	s->trace_id = id_bytes(a, json_object_get(js, "traceId"), TRACE_ID_LEN);
	s->span_id = id_bytes(a, json_object_get(js, "spanId"), SPAN_ID_LEN);
	s->parent_span_id = id_bytes(a, json_object_get(js, "parentSpanId"), SPAN_ID_LEN);
	s->name = arena_str(a, json_string_value(json_object_get(js, "name")));
	s->kind = (Opentelemetry__Proto__Trace__V1__Span__SpanKind)json_integer_value(json_object_get(js, "kind"));
	s->start_time_unix_nano = trace_span_time(js, "startTimeUnixNano");
	s->end_time_unix_nano = trace_span_time(js, "endTimeUnixNano");
	s->attributes = key_values(a, json_object_get(js, "attributes"), &s->n_attributes);
	s->dropped_events_count = (uint32_t)json_integer_value(json_object_get(js, "droppedEventsCount"));
	s->events = arena_alloc(a, json_array_size(evs) * sizeof(*s->events));
	if (s->events) {
		json_array_foreach(evs, i, ev) {
			SpanEvent *e = arena_alloc(a, sizeof(*e));
			if (!e)
				break;
			*e = ev_init;
			e->time_unix_nano = trace_span_time(ev, "timeUnixNano");
			e->name = arena_str(a, json_string_value(json_object_get(ev, "name")));
			e->attributes = key_values(a, json_object_get(ev, "attributes"), &e->n_attributes);
			s->events[s->n_events++] = e;
		}
	}
	st = json_object_get(js, "status");
	if (json_object_size(st)) {
		s->status = arena_alloc(a, sizeof(*s->status));
		if (s->status) {
			*s->status = st_init;
			s->status->code = (Opentelemetry__Proto__Trace__V1__Status__StatusCode)
				json_integer_value(json_object_get(st, "code"));
			if (json_object_get(st, "message"))
				s->status->message = arena_str(a, json_string_value(json_object_get(st, "message")));
		}
	}
	return s;
}

int otlp_encode_request(json_t *resource_attrs, json_t *spans, uint8_t **buf, size_t *len,
			struct lerr *e)
{
	Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest req =
		OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
	Opentelemetry__Proto__Trace__V1__ResourceSpans rs =
		OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
	Opentelemetry__Proto__Resource__V1__Resource res = OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
	Opentelemetry__Proto__Trace__V1__ScopeSpans ss = OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
	Opentelemetry__Proto__Common__V1__InstrumentationScope scope =
		OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;
	Opentelemetry__Proto__Trace__V1__ResourceSpans *rsp = &rs;
	Opentelemetry__Proto__Trace__V1__ScopeSpans *ssp = &ss;
	struct arena a = { 0 };
	size_t i;
	json_t *js;
	int err = 0;

	*buf = NULL;
	*len = 0;
	res.attributes = key_values(&a, resource_attrs, &res.n_attributes);
	scope.name = (char *)TRACE_SCOPE_NAME;
	scope.version = (char *)TRACE_SCOPE_VERSION;
	ss.scope = &scope;
	ss.spans = arena_alloc(&a, json_array_size(spans) * sizeof(*ss.spans));
	if (ss.spans) {
		json_array_foreach(spans, i, js) {
			Span *s = span_of(&a, js);
			if (!s)
				break;
			ss.spans[ss.n_spans++] = s;
		}
	}
	rs.resource = &res;
	rs.n_scope_spans = 1;
	rs.scope_spans = &ssp;
	req.n_resource_spans = 1;
	req.resource_spans = &rsp;
	if (a.failed) {
		err = lerr_set(e, -ENOMEM, "otlp: out of memory encoding %zu spans", json_array_size(spans));
		goto out;
	}
	*len = opentelemetry__proto__collector__trace__v1__export_trace_service_request__get_packed_size(&req);
	*buf = malloc(*len ? *len : 1);
	if (!*buf) {
		err = lerr_set(e, -ENOMEM, "otlp: out of memory for a %zu-byte request", *len);
		goto out;
	}
	opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack(&req, *buf);
out:
	arena_free(&a);
	return err;
}

int otlp_decode_response(const uint8_t *buf, size_t len, int64_t *rejected, char *msg, size_t msglen)
{
	Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse *r;

	*rejected = 0;
	if (msglen)
		msg[0] = '\0';
	if (!len)
		return 0; /* an empty message is a full success */
	r = opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(NULL, len, buf);
	if (!r)
		return -EBADMSG;
	if (r->partial_success) {
		*rejected = r->partial_success->rejected_spans;
		if (msglen && r->partial_success->error_message)
			snprintf(msg, msglen, "%s", r->partial_success->error_message);
	}
	opentelemetry__proto__collector__trace__v1__export_trace_service_response__free_unpacked(r, NULL);
	return 0;
}
