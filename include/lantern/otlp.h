/* otlp.h: OTLP trace export. Spans (OTLP/JSON objects, see trace.h) are queued by
 * otlp_export, which never blocks; a worker thread batches them into
 * ExportTraceServiceRequest messages (protobuf-c, generated from proto/opentelemetry)
 * and sends them over OTLP/gRPC (rpc.h's channel, unary TraceService/Export) or
 * OTLP/HTTP (libcurl, POST <endpoint>/v1/traces, application/x-protobuf).
 *
 * Transport security, as the OTLP specification has it: https:// is TLS and http://
 * is plaintext, for both protocols; a gRPC endpoint without a scheme is TLS unless
 * the insecure setting says otherwise. TLS verifies the receiver against the system's
 * roots, or against the CA file when one is given.
 *
 * Retries with exponential backoff on the retryable answers of the OTLP
 * specification (gRPC UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, CANCELLED,
 * OUT_OF_RANGE, DATA_LOSS; HTTP 429, 502, 503, 504, and connection failures; not
 * RESOURCE_EXHAUSTED, which the specification retries only with RetryInfo, not read
 * here), never after a partial
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
	bool grpc_tls;               /* gRPC: TLS (else plaintext) */
	char ca_file[512];           /* TLS roots to trust; "" for the system's */
	size_t queue_max;            /* spans waiting; default 4096 */
	size_t batch_max;            /* spans per request; default 512 */
	unsigned batch_ms;           /* longest a span waits for a batch to fill; default 200 */
	unsigned timeout_ms;         /* per attempt; default 10000 */
	unsigned max_attempts;       /* default 5 */
	unsigned backoff_ms;         /* first retry delay, doubled each time; default 100 */
};

/* Fills o from the flags (strings may be NULL) and, where a flag is absent, from
 * OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL ("grpc",
 * "http/protobuf"), OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE (a PEM CA file) and
 * OTEL_EXPORTER_OTLP_[TRACES_]INSECURE ("true": plaintext for a gRPC endpoint
 * without a scheme; flag_insecure says the same). Returns 1 when an endpoint is
 * configured, 0 when none is, -errno (with a message) for an unusable one. */
int otlp_configure(const char *flag_endpoint, const char *flag_protocol, bool flag_insecure,
		   const char *flag_ca, struct otlp_opts *o, struct lerr *e);
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
 * (copied). Fails on a CA file it cannot read. */
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
