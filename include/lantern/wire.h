/* wire.h: the link between lanternd and lantern-wire, the unprivileged process that
 * reads what workloads send (the harness API's HTTP and JSON, DNS queries).
 * Privilege separation as the OpenBSD daemons do it: the
 * privileged side binds the sockets and keeps the authority (journal, maps, policy);
 * the helper parses and asks, over one socket, with a small set of typed messages.
 *
 * The link is a stream socket (a socketpair lanternd makes). A message is a frame:
 *   u32 len    bytes after this 8-byte header
 *   u16 type   enum wire_type
 *   u16 nfds   descriptors passed with it (SCM_RIGHTS, with the frame's first byte)
 *   payload    fields in a fixed order per type: u8/u16/u32/u64 little-endian, byte
 *              strings as u32 length + bytes
 * Both sides read each other's messages as untrusted: every length, count and string
 * is checked; lanternd in particular never parses JSON from the helper (a step's result
 * arrives as bytes that must be one balanced JSON value, and go into the journal as
 * they are). Sends never block: what the peer cannot take yet is queued, up to a bound
 * past which the link is dropped. */
#ifndef LANTERN_WIRE_H
#define LANTERN_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lantern/harness.h"
#include "lantern/loop.h"
#include "lantern/util.h"

#define WIRE_MAX_FRAME (24u << 20)   /* a call carries a body of at most 8 MiB, re-encoded */
#define WIRE_MAX_FDS 8
#define WIRE_MAX_QUEUED (256u << 20) /* unsent bytes a side keeps for the other */

enum wire_type {
	/* lanternd to lantern-wire */
	WIRE_HARNESS_SERVE = 1,   /* u64 run; fd: the run's listening socket */
	WIRE_HARNESS_STOP,        /* u64 run */
	WIRE_REPLY,               /* u64 run, u64 peer, u32 status, u8 close, bytes body */
	WIRE_DNS_SERVE,           /* u64 proxy, u8 mask of fds, u16 port; fds */
	WIRE_DNS_ADD,             /* u64 proxy; fds: udp, tcp */
	WIRE_DNS_STOP,            /* u64 proxy */
	WIRE_DNS_REFUSE,          /* u64 proxy, u64 qid: answer REFUSED */
	WIRE_DNS_RELAY,           /* u64 proxy, u64 qid, bytes reply (empty: SERVFAIL) */
	/* lantern-wire to lanternd */
	WIRE_CALL,                /* u64 run, u64 peer, u32 pid, the call */
	WIRE_GONE,                /* u64 run, u64 peer: the caller's connection closed */
	WIRE_DNS_ASK,             /* u64 proxy, u64 qid, bytes qname, u16 qtype, u16 qclass, u8 tcp */
	WIRE_DNS_REFUSED,         /* u64 proxy, bytes qname, u16 qtype: refused by lantern-wire */
	WIRE_TYPE_MAX,
};

/* ---- building and reading messages ---- */
struct wire_msg {
	uint16_t type;
	uint8_t *buf;             /* payload */
	size_t len, cap, off;     /* off: how far a reader got */
	int fds[WIRE_MAX_FDS];
	unsigned nfds;
	bool bad;                 /* a read past the end, or a write out of memory */
};

void wire_msg_init(struct wire_msg *m, uint16_t type);
void wire_msg_free(struct wire_msg *m);   /* closes fds still in it */
void wire_put_u8(struct wire_msg *m, uint8_t v);
void wire_put_u16(struct wire_msg *m, uint16_t v);
void wire_put_u32(struct wire_msg *m, uint32_t v);
void wire_put_u64(struct wire_msg *m, uint64_t v);
void wire_put_bytes(struct wire_msg *m, const void *p, size_t n);
void wire_put_str(struct wire_msg *m, const char *s);
/* Adds a descriptor (dup'ed: the caller keeps its own). */
void wire_put_fd(struct wire_msg *m, int fd);
uint8_t wire_get_u8(struct wire_msg *m);
uint16_t wire_get_u16(struct wire_msg *m);
uint32_t wire_get_u32(struct wire_msg *m);
uint64_t wire_get_u64(struct wire_msg *m);
/* Bytes in place (valid while m lives); NULL and m->bad past the end or over max. */
const uint8_t *wire_get_bytes(struct wire_msg *m, size_t max, size_t *n);
/* A string of at most cap - 1 bytes with no NUL in it, copied into buf. */
bool wire_get_str(struct wire_msg *m, char *buf, size_t cap);
/* Takes the next descriptor out of m (the caller owns it), or -1. */
int wire_take_fd(struct wire_msg *m);
/* True when everything was read and nothing was out of bounds. */
bool wire_msg_done(const struct wire_msg *m);

/* A harness call (call.c's struct) as fields, and back with every bound checked. */
void wire_put_call(struct wire_msg *m, const struct harness_call *c);
int wire_get_call(struct wire_msg *m, struct harness_call *c, char *why, size_t len);

/* ---- the link ---- */
struct wire_link;
/* A message arrived (owned by the callee until it returns: take fds out to keep them). */
typedef void (*wire_msg_fn)(void *arg, struct wire_msg *m);
/* The link broke (the peer closed, sent garbage, or stopped reading): gone for good. */
typedef void (*wire_down_fn)(void *arg, const char *why);

int wire_link_open(struct loop *l, int fd, wire_msg_fn on_msg, wire_down_fn on_down, void *arg,
		   struct wire_link **out, struct lerr *e);
/* Queues m (its fds are sent and closed here); m is freed either way. */
int wire_send(struct wire_link *k, struct wire_msg *m);
void wire_link_close(struct wire_link *k);

#endif
