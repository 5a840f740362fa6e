/* util_test: the shared mechanisms of userspace/util on their own, no daemon: the write
 * queue (cap, all-or-nothing appends, partial sends over a real socket pair with the ring
 * wrapping, a drained queue giving its memory back, a dead peer) and the host:port parser
 * (every accepted form, every refused one with a message naming it, the flags). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lantern/addr.h"
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

/* ---- host:port ---- */

static bool addr_is(const struct sockaddr_storage *ss, socklen_t len, const char *text,
		    uint16_t port)
{
	char buf[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;

		return len == sizeof(*a) && ntohs(a->sin_port) == port &&
		       inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf)) && !strcmp(buf, text);
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;

		return len == sizeof(*a) && ntohs(a->sin6_port) == port &&
		       inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf)) && !strcmp(buf, text);
	}
	return false;
}

static void test_addr(void)
{
	static const struct {
		const char *in;
		unsigned flags;
		const char *addr;
		uint16_t port;
	} good[] = {
		{ "1.2.3.4:53", 0, "1.2.3.4", 53 },
		{ "[::1]:5353", 0, "::1", 5353 },
		{ "1.2.3.4", 0, "1.2.3.4", 99 },
		{ "::1", 0, "::1", 99 },
		{ "[2001:db8::1]", 0, "2001:db8::1", 99 },
		{ "2001:db8::1:53", 0, "2001:db8::1:53", 99 },
		{ "[::ffff:127.0.0.1]:65535", 0, "::ffff:127.0.0.1", 65535 },
		{ "127.0.0.1:0", UTIL_ADDR_PORT_ZERO, "127.0.0.1", 0 },
		{ ":9090", UTIL_ADDR_EMPTY_ANY, "0.0.0.0", 9090 },
		{ "[::]:8080", UTIL_ADDR_PORT_NEEDED, "::", 8080 },
	};
	static const struct {
		const char *in;
		unsigned flags;
	} bad[] = {
		{ "example.com", 0 },  { "example.com:53", 0 },   { "1.2.3.4:0", 0 },
		{ "1.2.3.4:65536", 0 }, { "1.2.3.4:x", 0 },       { "1.2.3.4:", 0 },
		{ "1.2.3.4:+53", 0 },   { "1.2.3.4:99999999999999999999", 0 },
		{ "[::1", 0 },          { "[1.2.3.4]:53", 0 },    { "[::1]x", 0 },
		{ "[::1]:", 0 },        { ":53", 0 },             { "[]:53", UTIL_ADDR_EMPTY_ANY },
		{ "1.2.3", 0 },         { "fe80::1%eth0", 0 },    { "[fe80::1%eth0]:53", 0 },
		{ "1.2.3.4", UTIL_ADDR_PORT_NEEDED },             { "[::1]", UTIL_ADDR_PORT_NEEDED },
		{ "[localhost]:53", UTIL_ADDR_HOSTNAME },
	};
	struct sockaddr_storage ss;
	struct lerr e = { { 0 } };
	socklen_t len;
	bool ok = true;

	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		int err = util_addr_parse("test", good[i].in, 99, good[i].flags, &ss, &len, &e);

		if (err || !addr_is(&ss, len, good[i].addr, good[i].port)) {
			tap_diag("\"%s\": %s", good[i].in, err ? e.msg : "wrong address");
			ok = false;
		}
	}
	tap_ok(ok, "addr: ADDR:PORT, [V6]:PORT, bare ADDR/V6/[V6] with the default port, and the flags' forms");

	ok = true;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		e.msg[0] = '\0';
		if (util_addr_parse("test", bad[i].in, 99, bad[i].flags, &ss, &len, &e) != -EINVAL ||
		    !strstr(e.msg, bad[i].in) || strncmp(e.msg, "test ", 5)) {
			tap_diag("accepted or unexplained: \"%s\" (%s)", bad[i].in, e.msg);
			ok = false;
		}
	}
	tap_ok(ok, "addr: %zu bad forms are -EINVAL with a message naming the setting and the input",
	       ARRAY_SIZE(bad));

	ok = util_addr_parse("test", "localhost:80", 0, 0, &ss, &len, &e) == -EINVAL &&
	     strstr(e.msg, "not an IP address");
	/* /etc/hosts answers for localhost: nothing is asked of a DNS server */
	e.msg[0] = '\0';
	ok = ok && util_addr_parse("test", "localhost:80", 0, UTIL_ADDR_HOSTNAME, &ss, &len, &e) == 0 &&
	     (addr_is(&ss, len, "127.0.0.1", 80) || addr_is(&ss, len, "::1", 80));
	tap_ok(ok, "addr: a host name is refused, or resolved with UTIL_ADDR_HOSTNAME%s%s",
	       e.msg[0] ? ": " : "", e.msg);

	ok = util_addr_parse("test", NULL, 53, 0, &ss, &len, &e) == -EINVAL &&
	     util_addr_parse("test", "", 53, 0, &ss, &len, &e) == -EINVAL && strstr(e.msg, "empty");
	tap_ok(ok, "addr: NULL and \"\" are refused as empty");
}

int main(void)
{
	/* SIGPIPE left at its default: the queue must never raise it */
	srandom((unsigned)getpid());
	tap_plan(10);
	test_wqueue_cap();
	test_wqueue_stream();
	test_addr();
	return tap_done();
}
