/* rpc.h: gRPC for both ends of the tunnel and for OTLP/gRPC export, on the gRPC C core
 * API (grpc/grpc.h, no C++): a completion queue driven by one thread, unary calls and
 * bidirectional streams, as client (lanternd) and as server (lantern-cp). Messages are
 * raw bytes: protobuf-c packs and unpacks them. TLS by default; plaintext only when
 * asked for by name (insecure).
 *
 * Threads: every callback runs on the thread that calls rpc_cq_poll. rpc_stream_send,
 * rpc_stream_finish and the ref functions may be called from any thread; they only queue
 * work or start a gRPC batch (which never blocks). */
#ifndef LANTERN_RPC_H
#define LANTERN_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lantern/util.h"

/* gRPC status codes used by the tunnel and the OTLP exporter (the numbers are gRPC's
 * own). */
enum {
	RPC_OK = 0,
	RPC_CANCELLED = 1,
	RPC_UNKNOWN = 2,
	RPC_INVALID_ARGUMENT = 3,
	RPC_DEADLINE_EXCEEDED = 4,
	RPC_NOT_FOUND = 5,
	RPC_PERMISSION_DENIED = 7,
	RPC_RESOURCE_EXHAUSTED = 8,
	RPC_FAILED_PRECONDITION = 9,
	RPC_ABORTED = 10,
	RPC_OUT_OF_RANGE = 11,
	RPC_INTERNAL = 13,
	RPC_UNAVAILABLE = 14,
	RPC_DATA_LOSS = 15,
	RPC_UNAUTHENTICATED = 16,
};

#define RPC_SERVICE "/lantern.v1.DataPlaneService/"

/* Initialises gRPC once per process (later calls do nothing) and quiets its logging. */
void rpc_init(void);
const char *rpc_status_name(int code);

struct rpc_tls {
	bool insecure;          /* plaintext: only with an explicit flag */
	const char *ca_file;    /* client: roots to trust (NULL: the system's) */
	const char *cert_file;  /* server: certificate chain */
	const char *key_file;   /* server: private key */
};

/* A completion queue; whoever calls rpc_cq_poll runs every callback of what uses it. */
struct rpc_cq;
struct rpc_cq *rpc_cq_new(void);
/* Waits up to ms for one completion and runs it: 1 if one ran, 0 on timeout. */
int rpc_cq_poll(struct rpc_cq *q, int ms);
/* Shuts the queue down, drains it (running what completes) and frees it. */
void rpc_cq_free(struct rpc_cq *q);

/* Client side */
struct rpc_channel;
int rpc_channel_open(const char *target, const struct rpc_tls *tls, struct rpc_channel **out,
		     struct lerr *e);
void rpc_channel_close(struct rpc_channel *ch);

/* status is a gRPC code; resp is valid during the call only. */
typedef void (*rpc_unary_cb)(void *arg, int status, const char *details, const uint8_t *resp,
			     size_t len);
/* Starts a unary call of method ("/pkg.Service/Method"); cb runs on q's thread. */
int rpc_unary(struct rpc_channel *ch, struct rpc_cq *q, const char *method, const void *req,
	      size_t len, int timeout_ms, rpc_unary_cb cb, void *arg);

/* Streams, both sides. on_msg runs for each message received; on_end runs once, last,
 * with the call's status. A stream lives until it has ended and every ref is dropped. */
struct rpc_stream;
struct rpc_stream_ops {
	void (*on_msg)(struct rpc_stream *s, void *arg, const uint8_t *msg, size_t len);
	void (*on_end)(struct rpc_stream *s, void *arg, int status, const char *details);
};
/* Client: opens a bidi stream; *out holds one ref for the caller. */
int rpc_stream_open(struct rpc_channel *ch, struct rpc_cq *q, const char *method,
		    const struct rpc_stream_ops *ops, void *arg, struct rpc_stream **out);
/* Queues one message; -EPIPE once the stream has ended or is finishing. */
int rpc_stream_send(struct rpc_stream *s, const void *msg, size_t len);
/* Server: sends the final status after what is queued; client: cancels the call. */
void rpc_stream_finish(struct rpc_stream *s, int status, const char *details);
void rpc_stream_ref(struct rpc_stream *s);
void rpc_stream_unref(struct rpc_stream *s);

/* Server side */
struct rpc_buf {
	uint8_t *data;          /* malloc'd, freed by the server after sending */
	size_t len;
};
/* A unary handler returns a gRPC status; on RPC_OK resp is sent, else details. */
typedef int (*rpc_unary_handler)(void *arg, const uint8_t *req, size_t len, struct rpc_buf *resp,
				 char *details, size_t dlen);
/* A stream handler sets the stream's ops and their arg; it may finish it at once. */
typedef void (*rpc_stream_handler)(void *arg, struct rpc_stream *s,
				   const struct rpc_stream_ops **ops, void **sarg);
struct rpc_method {
	const char *path;       /* "/lantern.v1.DataPlaneService/Register" */
	rpc_unary_handler unary;
	rpc_stream_handler stream;
};

struct rpc_server;
/* Listens on addr ("127.0.0.1:50051", "[::]:50051"); messages over max_msg bytes are
 * refused by gRPC with RESOURCE_EXHAUSTED. Calls are served on q's thread. */
int rpc_server_open(const char *addr, const struct rpc_tls *tls, size_t max_msg,
		    const struct rpc_method *methods, size_t n, void *arg, struct rpc_cq *q,
		    struct rpc_server **out, struct lerr *e);
/* Stops accepting, cancels what is in flight, and frees the server; polls q (call it
 * on q's thread) until gRPC has confirmed the shutdown, so q may be freed next. */
void rpc_server_shutdown(struct rpc_server *s);

#endif
