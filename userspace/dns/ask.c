/* ask.c: one question to the upstream, on an event loop: over UDP (a connected socket,
 * so only the upstream's address can answer) or TCP (framed), with an ID of ours drawn
 * at random, and only a reply that matches the ID and the question is taken. Used by
 * the proxy in-process (server.c forwards a client's query) and by lanternd for
 * lantern-wire (which has no network of its own: it hands lanternd the question, and
 * lanternd asks and records the answer's addresses itself). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lantern/dns.h"
#include "lantern/dns_wire.h"

struct dns_ask {
	struct loop *loop;
	int fd;
	bool tcp, connected, done;
	uint16_t id;
	struct dns_wire_question question;
	uint8_t *wire;        /* 2-byte length, then the query with our ID */
	size_t len;           /* of the query, without the length prefix */
	size_t sent;          /* TCP: bytes of wire written */
	uint8_t *in;          /* the reply being read (TCP: framed) */
	size_t in_len;
	uint64_t timer;
	dns_ask_fn cb;
	void *arg;
};

static void ask_free(struct dns_ask *a)
{
	if (a->timer)
		loop_timer_cancel(a->loop, a->timer);
	if (a->fd >= 0) {
		loop_del(a->loop, a->fd);
		close(a->fd);
	}
	free(a->wire);
	free(a->in);
	free(a);
}

/* Ends the ask: the callback is its last use. */
static void finish(struct dns_ask *a, uint8_t *reply, size_t len, size_t qend)
{
	a->cb(a->arg, reply, len, qend);
	ask_free(a);
}

static void on_timeout(struct loop *l, void *arg)
{
	struct dns_ask *a = arg;

	a->timer = 0; /* the loop has dropped it already */
	finish(a, NULL, 0, 0);
}

static void on_udp(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct dns_ask *a = arg;

	for (;;) {
		ssize_t n = recv(fd, a->in, DNS_WIRE_MSG_MAX, 0);
		size_t qend;

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			/* ECONNREFUSED and friends: the upstream is not there */
			finish(a, NULL, 0, 0);
			return;
		}
		/* anything else on this connected socket is ignored: a forged or stale
		 * datagram must not end the ask */
		if (dns_wire_reply_matches(a->in, (size_t)n, a->id, &a->question, &qend)) {
			finish(a, a->in, (size_t)n, qend);
			return;
		}
	}
}

static void tcp_read(struct dns_ask *a)
{
	for (;;) {
		size_t need = a->in_len < 2 ? 2 : 2 + (size_t)dns_wire_frame_len(a->in);
		ssize_t n;
		size_t qend;

		if (a->in_len == need && need > 2) {
			if (!dns_wire_reply_matches(a->in + 2, need - 2, a->id, &a->question, &qend))
				finish(a, NULL, 0, 0);
			else
				finish(a, a->in + 2, need - 2, qend);
			return;
		}
		n = read(a->fd, a->in + a->in_len, need - a->in_len);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			finish(a, NULL, 0, 0);
			return;
		}
		a->in_len += (size_t)n;
	}
}

static void on_tcp(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct dns_ask *a = arg;

	if (!a->connected) {
		int err = 0;
		socklen_t elen = sizeof(err);

		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err) {
			finish(a, NULL, 0, 0);
			return;
		}
		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		a->connected = true;
	}
	if (a->sent < a->len + 2) {
		ssize_t n = send(fd, a->wire + a->sent, a->len + 2 - a->sent, MSG_NOSIGNAL);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n < 0) {
			finish(a, NULL, 0, 0);
			return;
		}
		a->sent += (size_t)n;
		if (a->sent == a->len + 2 && loop_mod(a->loop, fd, EPOLLIN) < 0)
			finish(a, NULL, 0, 0);
		return;
	}
	tcp_read(a);
}

int dns_ask_start(struct loop *l, const struct dns_upstream *u, const uint8_t *query, size_t len,
		  const struct dns_wire_question *q, bool tcp, unsigned timeout_ms, dns_ask_fn cb,
		  void *arg, struct dns_ask **out)
{
	struct dns_ask *a;
	int err;

	if (!u || !u->len || len < DNS_WIRE_HDR || len > DNS_WIRE_MSG_MAX)
		return -EINVAL;
	if (!(a = calloc(1, sizeof(*a))))
		return -ENOMEM;
	a->loop = l;
	a->fd = -1;
	a->tcp = tcp;
	a->question = *q;
	a->len = len;
	a->cb = cb;
	a->arg = arg;
	if (!(a->wire = malloc(len + 2)) || !(a->in = malloc(2 + DNS_WIRE_MSG_MAX))) {
		ask_free(a);
		return -ENOMEM;
	}
	dns_wire_frame_set_len(a->wire, (uint16_t)len);
	memcpy(a->wire + 2, query, len);
	/* the upstream sees an ID of ours: a client's predictable IDs must not make forged
	 * answers easier to land */
	if (getrandom(&a->id, sizeof(a->id), GRND_NONBLOCK) != sizeof(a->id))
		a->id = (uint16_t)random();
	dns_wire_set_id(a->wire + 2, a->id);
	a->fd = socket(u->addr.ss_family, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (a->fd < 0) {
		err = -errno;
		ask_free(a);
		return err;
	}
	if ((connect(a->fd, (const struct sockaddr *)&u->addr, u->len) < 0 && errno != EINPROGRESS) ||
	    (!tcp && send(a->fd, a->wire + 2, len, MSG_NOSIGNAL) < 0)) {
		err = -errno;
		close(a->fd);
		a->fd = -1;
		ask_free(a);
		return err;
	}
	if ((err = loop_add(l, a->fd, tcp ? EPOLLOUT : EPOLLIN, tcp ? on_tcp : on_udp, a)) < 0) {
		close(a->fd);
		a->fd = -1;
		ask_free(a);
		return err;
	}
	if (!(a->timer = loop_timer_add(l, timeout_ms, on_timeout, a))) {
		ask_free(a);
		return -ENOMEM;
	}
	*out = a;
	return 0;
}

void dns_ask_cancel(struct dns_ask *a)
{
	if (a)
		ask_free(a);
}

size_t dns_ask_build(uint8_t out[DNS_ASK_QUERY_MAX], const char *qname, uint16_t qtype, uint16_t qclass)
{
	size_t o = DNS_WIRE_HDR, n = strlen(qname);

	if (!n || n > 253)
		return 0;
	memset(out, 0, DNS_WIRE_HDR);
	out[2] = 0x01;  /* RD */
	out[5] = 1;     /* one question */
	for (const char *p = qname; *p;) {
		const char *dot = strchr(p, '.');
		size_t ll = dot ? (size_t)(dot - p) : strlen(p);

		if (!ll || ll > 63)
			return 0;
		for (size_t i = 0; i < ll; i++) {
			char c = p[i];
			if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
				return 0;
		}
		out[o++] = (uint8_t)ll;
		memcpy(out + o, p, ll);
		o += ll;
		p += ll;
		if (*p == '.' && !*++p)
			return 0; /* a trailing dot: not a name as dns_wire_name_text writes them */
	}
	out[o++] = 0;
	out[o++] = (uint8_t)(qtype >> 8);
	out[o++] = (uint8_t)qtype;
	out[o++] = (uint8_t)(qclass >> 8);
	out[o++] = (uint8_t)qclass;
	return o;
}
