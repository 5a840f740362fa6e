/* util_test: the shared mechanisms of userspace/util on their own, no daemon: the write
 * queue (cap, all-or-nothing appends, partial sends over a real socket pair with the ring
 * wrapping, a drained queue giving its memory back, a dead peer). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lantern/util.h"
#include "lantern/wqueue.h"
#include "tap.h"

/* ---- write queue ---- */

static void test_wqueue_cap(void)
{
	struct util_wqueue q;
	char buf[100] = { 0 };
	struct iovec iov[2] = { { buf, 60 }, { buf, 50 } };
	bool ok;

	util_wqueue_init(&q, 100);
	ok = util_wqueue_append(&q, buf, 60) == 0 && util_wqueue_len(&q) == 60 &&
	     util_wqueue_append(&q, buf, 41) == -ENOBUFS && util_wqueue_len(&q) == 60 &&
	     util_wqueue_append(&q, buf, 40) == 0 && util_wqueue_len(&q) == 100 &&
	     util_wqueue_append(&q, buf, 1) == -ENOBUFS && q.cap <= 100;
	tap_ok(ok, "wqueue: appends up to the cap, one byte more is -ENOBUFS and queues nothing");
	util_wqueue_free(&q);

	ok = util_wqueue_len(&q) == 0 && util_wqueue_appendv(&q, iov, 2) == -ENOBUFS &&
	     util_wqueue_len(&q) == 0 && util_wqueue_appendv(&q, iov, 1) == 0 &&
	     util_wqueue_appendv(&q, iov + 1, 1) == -ENOBUFS && util_wqueue_len(&q) == 60;
	tap_ok(ok, "wqueue: appendv queues all pieces or none");
	util_wqueue_free(&q);
}

/* The peer reads random amounts while the writer appends random amounts: every byte
 * arrives once, in order, and the ring never outgrows the cap. */
static void test_wqueue_stream(void)
{
	enum { TOTAL = 4 << 20, MAX = 256 << 10 };
	static uint8_t chunk[65536], got[65536];
	struct util_wqueue q;
	size_t sent = 0, recvd = 0;
	bool order = true, capped = true, saw_partial = false;
	int sv[2], sndbuf = 16384, rc = 0;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0) {
		tap_ok(false, "wqueue: socketpair: %s", strerror(errno));
		return;
	}
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	util_wqueue_init(&q, MAX);
	while (recvd < TOTAL && order) {
		size_t n = (size_t)random() % sizeof(chunk) + 1;
		ssize_t r;

		if (sent < TOTAL) {
			if (n > TOTAL - sent)
				n = TOTAL - sent;
			if (n > MAX - util_wqueue_len(&q))
				n = MAX - util_wqueue_len(&q);
			for (size_t i = 0; i < n; i++)
				chunk[i] = (uint8_t)((sent + i) * 7 + (sent + i) / 251);
			if (n && util_wqueue_append(&q, chunk, n) < 0)
				break;
			sent += n;
		}
		capped = capped && q.cap <= MAX;
		rc = util_wqueue_flush(&q, sv[0]);
		if (rc < 0)
			break;
		saw_partial = saw_partial || rc == 1;
		r = read(sv[1], got, (size_t)random() % sizeof(got) + 1);
		for (ssize_t i = 0; i < r && order; i++, recvd++)
			order = got[i] == (uint8_t)(recvd * 7 + recvd / 251);
	}
	tap_ok(order && recvd == TOTAL && rc == 0 && util_wqueue_len(&q) == 0,
	       "wqueue: 4 MiB through a 16 KiB socket buffer arrives whole and in order (%zu bytes)",
	       recvd);
	tap_ok(capped && saw_partial, "wqueue: flush reported bytes left behind; the ring stayed within its cap");
	tap_ok(q.cap <= 4096, "wqueue: a drained queue keeps at most 4 KiB (%zu)", q.cap);

	util_wqueue_append(&q, chunk, 10);
	close(sv[1]);
	rc = util_wqueue_flush(&q, sv[0]);
	tap_ok(rc == -EPIPE || rc == -ECONNRESET, "wqueue: flush to a closed peer is -EPIPE, no signal (%d)",
	       rc);
	util_wqueue_free(&q);
	close(sv[0]);
}

int main(void)
{
	/* SIGPIPE left at its default: the queue must never raise it */
	srandom((unsigned)getpid());
	tap_plan(6);
	test_wqueue_cap();
	test_wqueue_stream();
	return tap_done();
}
