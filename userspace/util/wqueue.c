/* wqueue.c: the bounded write queue of a non-blocking socket (lantern/wqueue.h): a ring
 * that grows by doubling up to its cap and is sent with one sendmsg of its (at most two)
 * pieces. */
#include "lantern/wqueue.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The first ring; small replies (DNS, harness errors) never need more. */
#define WQUEUE_MIN 4096

void util_wqueue_init(struct util_wqueue *q, size_t max)
{
	memset(q, 0, sizeof(*q));
	q->max = max;
}

size_t util_wqueue_len(const struct util_wqueue *q)
{
	return q->len;
}

void util_wqueue_free(struct util_wqueue *q)
{
	free(q->ring);
	q->ring = NULL;
	q->head = q->len = q->cap = 0;
}

/* Makes room for need more bytes; the caller has checked the cap. */
static int wqueue_reserve(struct util_wqueue *q, size_t need)
{
	size_t cap = q->cap ? q->cap : WQUEUE_MIN, first;
	uint8_t *ring;

	if (q->len + need <= q->cap)
		return 0;
	while (cap < q->len + need && cap < q->max / 2)
		cap *= 2;
	if (cap < q->len + need || cap > q->max)
		cap = q->max;
	ring = malloc(cap);
	if (!ring)
		return -ENOMEM;
	/* the live bytes, unwrapped, at the start of the new ring */
	first = q->cap - q->head < q->len ? q->cap - q->head : q->len;
	if (q->len) {
		memcpy(ring, q->ring + q->head, first);
		memcpy(ring + first, q->ring, q->len - first);
	}
	free(q->ring);
	q->ring = ring;
	q->cap = cap;
	q->head = 0;
	return 0;
}

/* Copies len bytes at the tail; room was reserved. */
static void wqueue_put(struct util_wqueue *q, const void *data, size_t len)
{
	size_t tail = (q->head + q->len) % q->cap;
	size_t first = q->cap - tail < len ? q->cap - tail : len;

	memcpy(q->ring + tail, data, first);
	memcpy(q->ring, (const uint8_t *)data + first, len - first);
	q->len += len;
}

int util_wqueue_appendv(struct util_wqueue *q, const struct iovec *iov, int iovcnt)
{
	size_t total = 0;
	int err;

	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > q->max - total)
			return -ENOBUFS;
		total += iov[i].iov_len;
	}
	if (!total)
		return 0;
	if (total > q->max - q->len)
		return -ENOBUFS;
	if ((err = wqueue_reserve(q, total)) < 0)
		return err;
	for (int i = 0; i < iovcnt; i++)
		wqueue_put(q, iov[i].iov_base, iov[i].iov_len);
	return 0;
}

int util_wqueue_append(struct util_wqueue *q, const void *data, size_t len)
{
	struct iovec iov = { .iov_base = (void *)data, .iov_len = len };

	return util_wqueue_appendv(q, &iov, 1);
}

int util_wqueue_flush(struct util_wqueue *q, int fd)
{
	while (q->len) {
		size_t first = q->cap - q->head < q->len ? q->cap - q->head : q->len;
		struct iovec iov[2] = {
			{ .iov_base = q->ring + q->head, .iov_len = first },
			{ .iov_base = q->ring, .iov_len = q->len - first },
		};
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = first < q->len ? 2 : 1 };
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 1;
			return -errno;
		}
		q->head = (q->head + (size_t)n) % q->cap;
		q->len -= (size_t)n;
	}
	/* a drained queue keeps a small ring for the next reply and gives a grown one
	 * back: most peers are idle most of the time */
	if (q->cap > WQUEUE_MIN)
		util_wqueue_free(q);
	q->head = 0;
	return 0;
}
