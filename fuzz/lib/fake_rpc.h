/* fake_rpc.h: userspace/rpc's interface (lantern/rpc.h) implemented in memory, for the
 * fuzz targets that drive the two ends of the tunnel without a network: nothing is sent
 * anywhere; the target says what the peer answers, and when.
 *
 * Client side (the node): unary calls and the stream a module opens wait on their
 * completion queue; the module's rpc_cq_poll calls fake_rpc_poll, from which the target
 * answers them. rpc_cq_free ends what is still open with CANCELLED, as gRPC does.
 * Server side (lantern-cp): the target opens a stream on a method's handler, delivers
 * frames to it and ends it.
 * Every message a module sends on a stream goes to fake_rpc_sent. */
#ifndef LANTERN_FAKE_RPC_H
#define LANTERN_FAKE_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lantern/rpc.h"

/* Set by the target: called from rpc_cq_poll on the polling thread. */
extern void (*fake_rpc_poll)(struct rpc_cq *q, int ms);
/* Set by the target: every message sent on a stream (any thread). */
extern void (*fake_rpc_sent)(struct rpc_stream *s, const uint8_t *msg, size_t len);
/* Set by the target: every unary request made (method as passed to rpc_unary). */
extern void (*fake_rpc_request)(const char *method, const uint8_t *req, size_t len);

/* Client side, from the poll hook. Answers the oldest unary call waiting on q; false if
 * none waits. */
bool fake_rpc_answer(struct rpc_cq *q, int status, const uint8_t *resp, size_t len);
/* The stream open on q that has not ended, or NULL. */
struct rpc_stream *fake_rpc_stream(struct rpc_cq *q);

/* Both sides: a frame from the peer, and the end of the call (on_end runs once; a stream
 * that a module finished ends with the status it gave). */
void fake_rpc_deliver(struct rpc_stream *s, const uint8_t *msg, size_t len);
void fake_rpc_end(struct rpc_stream *s, int status, const char *details);
/* Whether a module finished the stream, and with what status. */
bool fake_rpc_finished(struct rpc_stream *s, int *status);

/* Server side: a call of method m arrives: its handler sets the stream's ops. The
 * returned stream holds one reference for the target (fake_rpc_release). */
struct rpc_stream *fake_rpc_serve(const struct rpc_method *m, void *arg);
void fake_rpc_release(struct rpc_stream *s);

#endif
