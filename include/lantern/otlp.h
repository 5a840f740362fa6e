/* otlp.h: OTLP trace export. Spans (OTLP/JSON objects, see trace.h) are queued by
 * otlp_export, which never blocks; a worker thread batches them into
 * ExportTraceServiceRequest messages (protobuf-c, generated from proto/opentelemetry)
 * and sends them over OTLP/gRPC (gRPC C core, unary TraceService/Export) or
 * OTLP/HTTP (libcurl, POST <endpoint>/v1/traces, application/x-protobuf).
 *
 * Retries with exponential backoff on the retryable answers of the OTLP
 * specification (gRPC UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED, DEADLINE_EXCEEDED,
 * ...; HTTP 429, 502, 503, 504, and connection failures), never after a partial
 * success (its rejected spans are counted). A full queue, or a batch whose retries
 * are exhausted, drops spans and counts them. */
#ifndef LANTERN_OTLP_H
#define LANTERN_OTLP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lantern/util.h"

enum otlp_protocol {
	OTLP_HTTP_PROTOBUF = 0, /* the specification's default */
	OTLP_GRPC,
};

struct otlp_opts {
	char endpoint[512];          /* http://host:port (gRPC: scheme optional) */
	char traces_url[600];        /* HTTP: the full URL posted to */
	enum otlp_protocol protocol;
	size_t queue_max;            /* spans waiting; default 4096 */
	size_t batch_max;            /* spans per request; default 512 */
	unsigned batch_ms;           /* longest a span waits for a batch to fill; default 200 */
	unsigned timeout_ms;         /* per attempt; default 10000 */
	unsigned max_attempts;       /* default 5 */
	unsigned backoff_ms;         /* first retry delay, doubled each time; default 100 */
};

/* Fills o from the flags (may be NULL) and, where a flag is absent, from
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT and
 * OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL ("grpc",
 * "http/protobuf"). Returns 1 when an endpoint is configured, 0 when none is,
 * -EINVAL (with a message) for an unusable one. */
int otlp_configure(const char *flag_endpoint, const char *flag_protocol, struct otlp_opts *o,
		   struct lerr *e);
const char *otlp_protocol_name(enum otlp_protocol p);

struct otlp_stats {
	uint64_t queued;      /* accepted by otlp_export */
	uint64_t exported;    /* acknowledged by the receiver (less rejected) */
	uint64_t rejected;    /* refused by the receiver in a partial success */
	uint64_t dropped;     /* queue full, or retries exhausted, or not retryable */
	uint64_t requests;    /* export attempts */
	uint64_t retries;
};

struct otlp_exporter;

/* Starts the worker ("otlp-export"). resource_attrs is an OTLP/JSON attribute array
 * (copied). */
int otlp_exporter_start(const struct otlp_opts *o, json_t *resource_attrs,
			struct otlp_exporter **out, struct lerr *e);
/* Queues a copy of span; never blocks. Returns 0, or -ENOSPC when dropped. */
int otlp_export(struct otlp_exporter *x, json_t *span);
void otlp_stats_get(struct otlp_exporter *x, struct otlp_stats *s);
/* Sends what is queued (waiting at most flush_ms), stops the worker, frees. */
void otlp_exporter_stop(struct otlp_exporter *x, unsigned flush_ms);

/* Encodes an ExportTraceServiceRequest of one resource and one scope holding spans
 * (OTLP/JSON objects). *buf must be freed. */
int otlp_encode_request(json_t *resource_attrs, json_t *spans, uint8_t **buf, size_t *len,
			struct lerr *e);
/* Decodes an ExportTraceServiceResponse; *rejected from its partial_success. */
int otlp_decode_response(const uint8_t *buf, size_t len, int64_t *rejected, char *msg,
			 size_t msglen);

#endif
