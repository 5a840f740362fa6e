/* api.h: lanternd's local API, a Unix stream socket (mode 0600) for the lantern CLI.
 *
 * Only root (or lanternd's own uid) may connect: the peer's credentials are checked on
 * accept, and everyone else is told why and disconnected. A client sends one request,
 * a JSON object on one line with an "op"; lanternd answers with JSON lines
 * ({"type": ...}). Each op is a handler registered by main.c; a handler answers at once
 * (api_send, then api_finish) or keeps the client to stream to it (a run's output) and
 * finishes it later. Writes never block the loop: what a client cannot take yet is
 * queued up to a bound, past which the client is dropped. */
#ifndef LANTERN_API_H
#define LANTERN_API_H

#include <jansson.h>
#include <stddef.h>

#include "lantern/loop.h"
#include "lantern/util.h"

struct api;
struct api_client;

typedef void (*api_op_fn)(void *arg, struct api_client *c, json_t *req);

int api_open(struct loop *l, const char *path, struct api **out, struct lerr *e);
/* Closes the socket and every client; the socket file is removed. */
void api_close(struct api *a);
int api_register(struct api *a, const char *op, api_op_fn fn, void *arg);

/* Sends one JSON message (consumes the reference). */
void api_send(struct api_client *c, json_t *msg);
/* {"type":"error","error":msg} */
void api_send_error(struct api_client *c, const char *msg);
/* Closes the client after what is queued has been written. */
void api_finish(struct api_client *c);
/* fn(arg, c) runs once when the client goes away (disconnect, error, finish): a
 * handler that keeps c forgets it there. One per client. */
void api_on_close(struct api_client *c, void (*fn)(void *arg, struct api_client *c), void *arg);
/* Bytes queued for c and not written yet (SIZE_MAX once c is going away): a handler
 * streaming much paces itself on this instead of filling the queue to its bound. */
size_t api_queued(const struct api_client *c);
/* fn(arg, c) runs once, from the loop, when everything queued for c has been written
 * (NULL: no callback). Not while closing. */
void api_on_drain(struct api_client *c, void (*fn)(void *arg, struct api_client *c), void *arg);

#endif
