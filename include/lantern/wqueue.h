/* wqueue.h: the one write queue in front of a non-blocking socket. What the peer cannot
 * take yet waits here, up to a hard cap; past the cap an append fails and the caller drops
 * the peer, so a peer that stops reading costs lanternd at most the cap.
 *
 * The bytes live in a ring, so sending part of them never moves the rest: bytes are copied
 * once on append and once more each time the ring doubles (amortised O(1) per byte, never
 * a memmove per send). A drained queue gives a grown ring back, so an idle peer holds at
 * most 4 KiB.
 * The queue knows nothing of the event loop: flush says whether bytes remain, and the
 * caller asks for EPOLLOUT then. */
#ifndef LANTERN_WQUEUE_H
#define LANTERN_WQUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Fields are the queue's own; read them through util_wqueue_len. */
struct util_wqueue {
	uint8_t *ring;  /* cap bytes, NULL while nothing is queued */
	size_t head;    /* ring offset of the oldest byte */
	size_t len;     /* bytes queued; invariant: len <= cap <= max */
	size_t cap;
	size_t max;
};

/* An empty queue that holds at most max bytes. No allocation: embed it and go. */
void util_wqueue_init(struct util_wqueue *q, size_t max);
/* Queues len bytes. -ENOBUFS when they would take the queue past its cap (nothing is
 * queued: the caller drops the peer), -ENOMEM. */
int util_wqueue_append(struct util_wqueue *q, const void *data, size_t len);
/* Queues the iovcnt pieces as one message: all of them, or (same errors) none, so a
 * framed reply is never cut in half by the cap. */
int util_wqueue_appendv(struct util_wqueue *q, const struct iovec *iov, int iovcnt);
/* Sends from the head until the queue is empty or the socket would block. Returns 0 when
 * empty, 1 when bytes remain (wait for EPOLLOUT), or -errno from send (EPIPE,
 * ECONNRESET, ...: drop the peer). Never raises SIGPIPE. */
int util_wqueue_flush(struct util_wqueue *q, int fd);
/* Bytes waiting. */
size_t util_wqueue_len(const struct util_wqueue *q);
/* Frees what is queued; the queue is empty (same cap) afterwards. */
void util_wqueue_free(struct util_wqueue *q);

#endif
