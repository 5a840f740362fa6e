/* server.c: one instance's FQDN proxy. Serves UDP and TCP on listeners bound for it
 * (127.0.0.1:PORT and [::1]:PORT, and the node bridge's address for an instance in a
 * namespace of its own) and validates each query. Then either
 *  - in lanternd's own process (local.c): asks whether the name is allowed, forwards
 *    allowed queries to the upstream (ask.c), hands every A/AAAA on the answer's CNAME
 *    chain over and only then relays the upstream's reply; or
 *  - in lantern-wire (the ask hook): hands the question (name, type, class) to
 *    lanternd, which refuses it (dns_server_verdict) or asks the upstream itself,
 *    records the addresses and sends the reply back to relay (dns_server_relay).
 *    lantern-wire never talks to the network.
 * Everything runs on the caller's loop: no thread, no blocking call. What the bytes
 * mean is wire.c's business (lantern/dns_wire.h). */
#include "lantern/dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lantern/dns_wire.h"
#include "lantern/wqueue.h"

/* Bounds: what one instance may cost lanternd, whatever it sends. */
#define DNS_MAX_INFLIGHT 256
#define DNS_TIMEOUT_MS 3000
#define DNS_MAX_CONNS 64
#define DNS_CONN_IDLE_MS 10000
#define DNS_CONN_OUT_MAX (256 * 1024)
#define DNS_UDP_BURST 64 /* datagrams per wake-up, so one listener cannot starve the rest */
#define DNS_TCP_BURST 64 /* queries per wake-up and connection, for the same reason */
#define DNS_PORT_TRIES 64
#define DNS_MAX_ADDRS 64  /* addresses of one answer handed over; more are not opened */

struct dns_conn;

/* Where a reply goes: a UDP peer of one listener, or a TCP client connection. */
struct dns_client {
	struct dns_conn *conn;
	int fd;
	struct sockaddr_storage addr;
	socklen_t alen;
};

/* A query forwarded to the upstream. Invariant: listed in srv->queries, counted in
 * srv->inflight and, for TCP clients, in conn->pending, until query_free. */
struct dns_query {
	struct dns_server *srv;
	struct dns_query *prev, *next;
	uint64_t qid;         /* how the hooks' late answers find it */
	enum { Q_CHECKING, Q_UPSTREAM, Q_RECORDING } state;
	uint8_t *reply;       /* Q_RECORDING: the upstream's reply, relayed once recorded */
	size_t reply_len;
	struct dns_client client;
	uint8_t *msg;         /* the client's query as it came */
	size_t len;
	struct dns_wire_question question;
	uint16_t id;          /* the client's ID */
	char qname[DNS_WIRE_NAME_MAX + 1];
	bool tcp;
	struct dns_ask *ask;  /* Q_UPSTREAM */
	uint64_t timer;
};

/* A TCP client. It may carry several queries; replies go back in any order (RFC 7766). */
struct dns_conn {
	struct dns_server *srv;
	struct dns_conn *prev, *next;
	int fd;
	bool eof, broken;
	unsigned pending;
	uint32_t events;      /* what the loop watches for: loop_mod only when it changes */
	uint64_t timer;
	uint64_t resume;      /* timer serving a backlog on the loop's next turn */
	struct util_wqueue out;
	size_t in_off, in_len; /* in[in_off, in_len) is read and not yet served */
	uint8_t in[2 + DNS_WIRE_MSG_MAX];
};

struct dns_server {
	struct loop *loop;
	struct dns_upstream up;
	struct dns_server_hooks h;
	void *ctx;
	struct dns_callbacks owner; /* dns_server_open: the owner's questions, answered at once */
	void *owner_ctx;
	uint16_t port;
	int udp[3], tcp[3]; /* [0] 127.0.0.1, [1] ::1, [2] the bridge's; -1 when absent */
	uint64_t next_qid;
	struct dns_query *queries;
	unsigned inflight;
	struct dns_conn *conns;
	unsigned nconns;
	uint8_t buf[DNS_WIRE_MSG_MAX + 1];
};

static void conn_free(struct dns_conn *c);
static void conn_send(struct dns_conn *c, const uint8_t *msg, size_t len);
static void conn_maybe_close(struct dns_conn *c);

static void client_reply(const struct dns_client *cl, const uint8_t *msg, size_t len)
{
	if (cl->conn) {
		conn_send(cl->conn, msg, len);
		return;
	}
	/* a UDP client that cannot take the reply now retries; nothing to keep */
	sendto(cl->fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)&cl->addr,
	       cl->alen);
}

static void client_error(const struct dns_client *cl, const uint8_t *q, size_t qend, int rcode)
{
	uint8_t out[DNS_WIRE_ERR_MAX];

	client_reply(cl, out, dns_wire_error(out, q, qend, rcode));
}

/* ---- queries in flight ---- */

static void query_free(struct dns_query *q)
{
	struct dns_server *s = q->srv;

	if (q->timer)
		loop_timer_cancel(s->loop, q->timer);
	dns_ask_cancel(q->ask);
	if (q->prev)
		q->prev->next = q->next;
	else
		s->queries = q->next;
	if (q->next)
		q->next->prev = q->prev;
	s->inflight--;
	if (q->client.conn)
		q->client.conn->pending--;
	free(q->msg);
	free(q->reply);
	free(q);
}

/* Answers the client (reply, or SERVFAIL when reply is NULL) and ends the query. */
static void query_finish(struct dns_query *q, const uint8_t *reply, size_t len)
{
	struct dns_conn *c = q->client.conn;

	if (reply) {
		client_reply(&q->client, reply, len);
	} else {
		client_error(&q->client, q->msg, q->question.end, DNS_RCODE_SERVFAIL);
	}
	query_free(q);
	if (c)
		conn_maybe_close(c);
}

struct addrs {
	struct dns_addr a[DNS_MAX_ADDRS];
	size_t n;
};

static int collect(void *arg, const uint8_t addr[16], uint32_t ttl)
{
	struct addrs *x = arg;

	if (x->n < DNS_MAX_ADDRS) {
		memcpy(x->a[x->n].addr, addr, 16);
		x->a[x->n++].ttl = ttl;
	}
	return 0;
}

/* The upstream answered: its addresses are handed over and recorded, then it is relayed
 * with the client's ID (now, or when dns_server_answered says so). */
static void query_reply(struct dns_query *q, uint8_t *msg, size_t len, size_t qend)
{
	struct dns_server *s = q->srv;
	struct addrs x = { .n = 0 };
	int err = 0;

	dns_wire_set_id(msg, q->id);
	if (dns_wire_rcode(msg) == DNS_RCODE_NOERROR &&
	    (err = dns_wire_answers(msg, len, qend, &q->question, collect, &x)) < 0) {
		query_finish(q, NULL, 0);
		return;
	}
	if (!x.n) {
		query_finish(q, msg, len);
		return;
	}
	if (!(q->reply = malloc(len))) {
		query_finish(q, NULL, 0);
		return;
	}
	memcpy(q->reply, msg, len);
	q->reply_len = len;
	q->state = Q_RECORDING;
	err = s->h.answers(s->ctx, q->qid, q->qname, x.a, x.n);
	if (err != -EINPROGRESS)
		dns_server_answered(s, q->qid, err);
}

static struct dns_query *query_by_id(struct dns_server *s, uint64_t qid)
{
	for (struct dns_query *q = s->queries; q; q = q->next)
		if (q->qid == qid)
			return q;
	return NULL;
}

void dns_server_answered(struct dns_server *s, uint64_t qid, int err)
{
	struct dns_query *q = query_by_id(s, qid);

	if (!q || q->state != Q_RECORDING)
		return; /* timed out meanwhile, or its client went away */
	if (err < 0)
		query_finish(q, NULL, 0);
	else
		query_finish(q, q->reply, q->reply_len);
}

static void on_query_timeout(struct loop *l, void *arg)
{
	struct dns_query *q = arg;

	q->timer = 0; /* the loop has dropped it already */
	query_finish(q, NULL, 0);
}

static void on_ask(void *arg, uint8_t *reply, size_t len, size_t qend)
{
	struct dns_query *q = arg;

	q->ask = NULL; /* ends with this call */
	if (reply)
		query_reply(q, reply, len, qend);
	else
		query_finish(q, NULL, 0);
}

/* A query being asked about: kept (with the client's bytes) until it is answered. */
static struct dns_query *query_new(struct dns_server *s, const struct dns_client *cl, const uint8_t *msg,
				   size_t len, const struct dns_wire_question *question, const char *qname)
{
	struct dns_query *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	q->srv = s;
	q->qid = ++s->next_qid;
	q->client = *cl;
	q->tcp = cl->conn != NULL;
	q->len = len;
	q->question = *question;
	q->id = dns_wire_id(msg);
	strcpy(q->qname, qname);
	q->next = s->queries;
	if (s->queries)
		s->queries->prev = q;
	s->queries = q;
	s->inflight++;
	if (cl->conn)
		cl->conn->pending++;
	q->msg = malloc(len);
	if (!q->msg || !(q->timer = loop_timer_add(s->loop, DNS_TIMEOUT_MS, on_query_timeout, q))) {
		query_free(q);
		return NULL;
	}
	memcpy(q->msg, msg, len);
	return q;
}

/* Forwards an allowed query as the client wrote it (its EDNS, its case), over the
 * client's transport. Returns 0 or -errno (the caller answers SERVFAIL). */
static int query_forward(struct dns_query *q)
{
	struct dns_server *s = q->srv;

	q->state = Q_UPSTREAM;
	return dns_ask_start(s->loop, &s->up, q->msg, q->len, &q->question, q->tcp, DNS_TIMEOUT_MS, on_ask, q,
			     &q->ask);
}

void dns_server_relay(struct dns_server *s, uint64_t qid, const uint8_t *reply, size_t len)
{
	struct dns_query *q = query_by_id(s, qid);
	size_t qend;

	if (!q || q->state != Q_CHECKING)
		return;
	/* the asker's reply to the same question (its ID is the asker's own): it goes back
	 * with the client's ID and the client's question, letter case and all */
	if (!reply || len > DNS_WIRE_MSG_MAX ||
	    !dns_wire_reply_matches(reply, len, len >= 2 ? dns_wire_id(reply) : 0, &q->question, &qend) ||
	    qend != q->question.end) {
		query_finish(q, NULL, 0);
		return;
	}
	memcpy(s->buf, reply, len);
	memcpy(s->buf + DNS_WIRE_HDR, q->msg + DNS_WIRE_HDR, qend - DNS_WIRE_HDR);
	dns_wire_set_id(s->buf, q->id);
	query_finish(q, s->buf, len);
}

void dns_server_verdict(struct dns_server *s, uint64_t qid, bool allowed)
{
	struct dns_query *q = query_by_id(s, qid);
	uint8_t *m;

	if (!q || q->state != Q_CHECKING)
		return;
	if (allowed && query_forward(q) == 0)
		return;
	m = q->msg;
	{
		struct dns_conn *c = q->client.conn;

		client_error(&q->client, m, q->question.end, allowed ? DNS_RCODE_SERVFAIL : DNS_RCODE_REFUSED);
		query_free(q);
		if (c)
			conn_maybe_close(c);
	}
}

/* One message from a client. Replies at once unless it is asked about or forwarded. */
static void on_query(struct dns_server *s, const uint8_t *msg, size_t len,
		     const struct dns_client *cl)
{
	struct dns_wire_question q;
	struct dns_query *dq;
	char qname[DNS_WIRE_NAME_MAX + 1];
	int verdict = dns_wire_query_parse(msg, len, &q);
	bool clean;

	if (verdict < 0)
		return;
	if (verdict > 0) {
		client_error(cl, msg, 0, verdict);
		return;
	}
	clean = dns_wire_name_text(q.name, qname);
	/* zone transfers span several messages and are no way to learn addresses */
	if (!clean || q.type == DNS_TYPE_AXFR || q.type == DNS_TYPE_IXFR) {
		/* recorded before the client hears, like answers */
		if (s->h.refused)
			s->h.refused(s->ctx, qname, q.type);
		client_error(cl, msg, q.end, DNS_RCODE_REFUSED);
		return;
	}
	if (s->inflight >= DNS_MAX_INFLIGHT || !(dq = query_new(s, cl, msg, len, &q, qname))) {
		client_error(cl, msg, q.end, DNS_RCODE_SERVFAIL);
		return;
	}
	if (s->h.ask) {
		verdict = s->h.ask(s->ctx, dq->qid, qname, q.type, q.class, dq->tcp);
		if (verdict == -EINPROGRESS)
			return;
	} else {
		verdict = s->h.check(s->ctx, dq->qid, qname, q.type);
		if (verdict == -EINPROGRESS || (verdict > 0 && query_forward(dq) == 0))
			return;
	}
	/* answered here, inside the client's handler, which closes the client if it must */
	client_error(cl, msg, q.end, verdict > 0 ? DNS_RCODE_SERVFAIL : DNS_RCODE_REFUSED);
	query_free(dq);
}

/* ---- listeners and TCP clients ---- */

static void on_udp(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct dns_server *s = arg;

	for (int i = 0; i < DNS_UDP_BURST; i++) {
		struct dns_client cl = { .fd = fd, .alen = sizeof(cl.addr) };
		ssize_t n = recvfrom(fd, s->buf, sizeof(s->buf), 0, (struct sockaddr *)&cl.addr,
				     &cl.alen);

		if (n < 0)
			return;
		on_query(s, s->buf, (size_t)n, &cl);
	}
}

static void conn_free(struct dns_conn *c)
{
	struct dns_server *s = c->srv;
	struct dns_query *q, *next;

	/* queries still in flight for this client have nobody to answer */
	for (q = s->queries; q; q = next) {
		next = q->next;
		if (q->client.conn == c)
			query_free(q);
	}
	if (c->timer)
		loop_timer_cancel(s->loop, c->timer);
	if (c->resume)
		loop_timer_cancel(s->loop, c->resume);
	loop_del(s->loop, c->fd);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
	util_wqueue_free(&c->out);
	free(c);
}

/* The length of the complete frame at c->in_off, or -1 while it is still arriving. */
static ssize_t conn_frame(const struct dns_conn *c)
{
	size_t avail = c->in_len - c->in_off, flen;

	if (avail < 2)
		return -1;
	flen = dns_wire_frame_len(c->in + c->in_off);
	return avail < 2 + flen ? -1 : (ssize_t)flen;
}

static void on_conn_resume(struct loop *l, void *arg);

/* A backlog (queries read but left when a wake-up's budget ran out) stops reading and
 * is served from a timer due at once: the loop comes back to this client after serving
 * the others, whether or not its socket has more to read. */
static void conn_update(struct dns_conn *c)
{
	bool backlog = conn_frame(c) >= 0;
	uint32_t ev = (c->eof || c->broken || backlog ? 0 : EPOLLIN) |
		      (util_wqueue_len(&c->out) ? EPOLLOUT : 0);

	if (backlog && !c->resume && !c->broken &&
	    !(c->resume = loop_timer_add(c->srv->loop, 0, on_conn_resume, c)))
		c->broken = true;
	if (ev == c->events)
		return;
	if (loop_mod(c->srv->loop, c->fd, ev) < 0)
		c->broken = true;
	else
		c->events = ev;
}

static void conn_flush(struct dns_conn *c)
{
	if (util_wqueue_flush(&c->out, c->fd) < 0)
		c->broken = true;
	conn_update(c);
}

/* Queues one framed reply. Never frees c: callers may be inside c's own handler. */
static void conn_send(struct dns_conn *c, const uint8_t *msg, size_t len)
{
	uint8_t frame[2];
	struct iovec iov[2] = { { frame, 2 }, { (void *)msg, len } };

	if (c->broken)
		return;
	dns_wire_frame_set_len(frame, (uint16_t)len);
	/* past the cap: a client that does not read its replies loses the connection */
	if (util_wqueue_appendv(&c->out, iov, 2) < 0) {
		c->broken = true;
		return;
	}
	conn_flush(c);
}

static void conn_maybe_close(struct dns_conn *c)
{
	if (c->broken || (c->eof && !c->pending && !util_wqueue_len(&c->out)))
		conn_free(c);
}

static void on_conn_idle(struct loop *l, void *arg)
{
	struct dns_conn *c = arg;

	c->timer = 0;
	if (c->pending || util_wqueue_len(&c->out)) {
		c->timer = loop_timer_add(l, DNS_CONN_IDLE_MS, on_conn_idle, c);
		return;
	}
	conn_free(c);
}

/* Serves at most DNS_TCP_BURST queries and one read per wake-up, so a client that never
 * stops writing cannot hold the loop: what is left waits in the socket (level-triggered
 * epoll calls back) or in c->in (conn_update arms the resume timer). */
static void conn_serve(struct dns_conn *c)
{
	struct dns_client cl = { .conn = c, .fd = -1 };
	unsigned served = 0;
	bool did_read = false;

	while (!c->broken && served < DNS_TCP_BURST) {
		ssize_t flen = conn_frame(c), n;

		if (flen >= 0) {
			on_query(c->srv, c->in + c->in_off + 2, (size_t)flen, &cl);
			c->in_off += 2 + (size_t)flen;
			served++;
			continue;
		}
		if (did_read || c->eof)
			break;
		/* only part of a frame is left: to the front with it, so each byte moves once */
		if (c->in_off) {
			memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
			c->in_len -= c->in_off;
			c->in_off = 0;
		}
		n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
		did_read = true;
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				c->broken = true;
			break;
		}
		if (n == 0) {
			c->eof = true;
			break;
		}
		c->in_len += (size_t)n;
	}
	if (served && c->timer) {
		loop_timer_cancel(c->srv->loop, c->timer);
		c->timer = loop_timer_add(c->srv->loop, DNS_CONN_IDLE_MS, on_conn_idle, c);
	}
}

static void on_conn(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct dns_conn *c = arg;

	if (events & (EPOLLERR | EPOLLHUP))
		c->broken = true;
	if (!c->broken && (events & EPOLLIN))
		conn_serve(c);
	if (!c->broken)
		conn_flush(c);
	conn_maybe_close(c);
}

static void on_conn_resume(struct loop *l, void *arg)
{
	struct dns_conn *c = arg;

	c->resume = 0; /* the loop has dropped it already */
	if (!c->broken)
		conn_serve(c);
	if (!c->broken)
		conn_flush(c);
	conn_maybe_close(c);
}

static void on_accept(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct dns_server *s = arg;

	for (int budget = 64; budget > 0; budget--) {
		int cfd = loop_accept(l, fd, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct dns_conn *c;

		if (cfd < 0)
			return;
		c = s->nconns < DNS_MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
		if (!c) {
			close(cfd);
			continue;
		}
		c->srv = s;
		c->fd = cfd;
		c->events = EPOLLIN;
		util_wqueue_init(&c->out, DNS_CONN_OUT_MAX);
		if (loop_add(l, cfd, c->events, on_conn, c) < 0) {
			close(cfd);
			free(c);
			continue;
		}
		c->timer = loop_timer_add(l, DNS_CONN_IDLE_MS, on_conn_idle, c);
		c->next = s->conns;
		if (s->conns)
			s->conns->prev = c;
		s->conns = c;
		s->nconns++;
	}
}

static void close_fds(int *fds, size_t n, struct loop *l)
{
	for (size_t i = 0; i < n; i++) {
		if (fds[i] < 0)
			continue;
		if (l)
			loop_del(l, fds[i]);
		close(fds[i]);
		fds[i] = -1;
	}
}

static void close_listeners(struct dns_server *s)
{
	close_fds(s->udp, 3, s->loop);
	close_fds(s->tcp, 3, s->loop);
}

/* ip4 (network order) is the IPv4 address to bind; IPv6 listeners bind ::1. */
static int listener(int family, int type, uint32_t ip4, uint16_t *port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t len;
	int fd, one = 1, err;

	fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (family == AF_INET) {
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = ip4;
		sin->sin_port = htons(*port);
		len = sizeof(*sin);
	} else {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_loopback;
		sin6->sin6_port = htons(*port);
		len = sizeof(*sin6);
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	}
	/* a restarted server takes its port back despite connections in TIME_WAIT */
	if (type == SOCK_STREAM)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 ||
	    (type == SOCK_STREAM && listen(fd, 128) < 0) ||
	    getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	*port = ntohs(family == AF_INET ? sin->sin_port : sin6->sin6_port);
	return fd;
}

/* All four sockets on one port. IPv6 may be missing on a host without ::1; the
 * instance then has no IPv6 DNS to redirect either. */
static int open_loopback(struct dns_listeners *ls, uint16_t port, const char **what)
{
	static const struct {
		int family, type;
		const char *name;
	} want[] = {
		{ AF_INET, SOCK_DGRAM, "udp 127.0.0.1" },
		{ AF_INET, SOCK_STREAM, "tcp 127.0.0.1" },
		{ AF_INET6, SOCK_DGRAM, "udp [::1]" },
		{ AF_INET6, SOCK_STREAM, "tcp [::1]" },
	};
	int *slot[] = { &ls->udp[0], &ls->tcp[0], &ls->udp[1], &ls->tcp[1] };

	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		int fd = listener(want[i].family, want[i].type, htonl(INADDR_LOOPBACK), &port);

		if (fd == -EAFNOSUPPORT || (fd == -EADDRNOTAVAIL && want[i].family == AF_INET6)) {
			log_warn("dns: no IPv6 loopback; serving on 127.0.0.1 only");
			break;
		}
		if (fd < 0) {
			*what = want[i].name;
			dns_listeners_close(ls);
			return fd;
		}
		*slot[i] = fd;
	}
	ls->port = port;
	return 0;
}

int dns_listeners_open(uint16_t port, struct dns_listeners *ls, struct lerr *e)
{
	const char *what = "";
	int err = 0;

	for (int i = 0; i < 3; i++)
		ls->udp[i] = ls->tcp[i] = -1;
	/* port 0: the first socket picks a free port, which the others may find taken */
	for (int i = 0; i < (port ? 1 : DNS_PORT_TRIES); i++) {
		err = open_loopback(ls, port, &what);
		if (err != -EADDRINUSE)
			break;
	}
	if (err < 0)
		return lerr_set(e, err, "dns: server: cannot listen on %s port %u: %s", what, port, strerror(-err));
	return 0;
}

int dns_listeners_ip4(uint16_t port, uint32_t ip4, int *udp, int *tcp, struct lerr *e)
{
	char a[INET_ADDRSTRLEN];
	uint16_t p = port;
	int err;

	inet_ntop(AF_INET, &ip4, a, sizeof(a));
	*tcp = -1;
	if ((*udp = listener(AF_INET, SOCK_DGRAM, ip4, &p)) >= 0)
		*tcp = listener(AF_INET, SOCK_STREAM, ip4, &p);
	if (*udp >= 0 && *tcp >= 0)
		return 0;
	err = *udp < 0 ? *udp : *tcp;
	if (*udp >= 0)
		close(*udp);
	*udp = *tcp = -1;
	return lerr_set(e, err, "dns: server: cannot listen on %s port %u: %s", a, port, strerror(-err));
}

void dns_listeners_close(struct dns_listeners *ls)
{
	close_fds(ls->udp, 3, NULL);
	close_fds(ls->tcp, 3, NULL);
}

int dns_server_add_ip4(struct dns_server *s, int udp, int tcp, struct lerr *e)
{
	int err;

	if (s->udp[2] >= 0) {
		close(udp);
		close(tcp);
		return lerr_set(e, EEXIST, "dns: server: port %u: already listening on a second address",
				s->port);
	}
	if ((err = loop_add(s->loop, udp, EPOLLIN, on_udp, s)) == 0 &&
	    (err = loop_add(s->loop, tcp, EPOLLIN, on_accept, s)) < 0)
		loop_del(s->loop, udp);
	if (err < 0) {
		close(udp);
		close(tcp);
		return lerr_set(e, err, "dns: server: port %u: cannot watch listeners: %s", s->port, strerror(-err));
	}
	s->udp[2] = udp;
	s->tcp[2] = tcp;
	return 0;
}

int dns_server_serve(struct loop *l, const struct dns_upstream *u, struct dns_listeners *ls,
		     const struct dns_server_hooks *h, void *ctx, struct dns_server **out, struct lerr *e)
{
	struct dns_server *s;
	int err = 0;

	if (!h || (!h->ask && (!h->check || !h->answers || !u || !u->len))) {
		dns_listeners_close(ls);
		return lerr_set(e, EINVAL, "dns: server: needs an upstream and its hooks, or an ask hook");
	}
	if (!(s = calloc(1, sizeof(*s)))) {
		dns_listeners_close(ls);
		return lerr_set(e, ENOMEM, "dns: server: out of memory");
	}
	s->loop = l;
	if (u)
		s->up = *u;
	s->h = *h;
	s->ctx = ctx;
	s->port = ls->port;
	for (int i = 0; i < 3; i++) {
		s->udp[i] = ls->udp[i];
		s->tcp[i] = ls->tcp[i];
		ls->udp[i] = ls->tcp[i] = -1;
	}
	for (int i = 0; i < 3 && !err; i++) {
		if (s->udp[i] >= 0 && (err = loop_add(l, s->udp[i], EPOLLIN, on_udp, s)) < 0)
			break;
		if (s->tcp[i] >= 0)
			err = loop_add(l, s->tcp[i], EPOLLIN, on_accept, s);
	}
	if (err < 0) {
		close_listeners(s);
		free(s);
		return lerr_set(e, err, "dns: server: cannot watch its listeners: %s", strerror(-err));
	}
	*out = s;
	return 0;
}

/* An owner in the same process answers at once (dns_server_open). */
static int owner_check(void *ctx, uint64_t qid, const char *qname, uint16_t qtype)
{
	struct dns_server *s = ctx;
	bool ok = s->owner.allowed(s->owner_ctx, qname);

	if (!ok && s->owner.refused)
		s->owner.refused(s->owner_ctx, qname, qtype);
	return ok;
}

static int owner_answers(void *ctx, uint64_t qid, const char *qname, const struct dns_addr *a, size_t n)
{
	struct dns_server *s = ctx;
	int err;

	for (size_t i = 0; i < n && s->owner.answer; i++)
		if ((err = s->owner.answer(s->owner_ctx, qname, a[i].addr, a[i].ttl)) < 0)
			return err;
	return 0;
}

static void owner_refused(void *ctx, const char *qname, uint16_t qtype)
{
	struct dns_server *s = ctx;

	if (s->owner.refused)
		s->owner.refused(s->owner_ctx, qname, qtype);
}

static const struct dns_server_hooks owner_hooks = {
	.check = owner_check,
	.answers = owner_answers,
	.refused = owner_refused,
};

int dns_server_open(struct loop *l, const struct dns_upstream *u, uint16_t port,
		    const struct dns_callbacks *cb, void *ctx, struct dns_server **out,
		    struct lerr *e)
{
	struct dns_listeners ls;
	int err;

	if (!cb || !cb->allowed)
		return lerr_set(e, EINVAL, "dns: server: needs an allowed callback");
	if ((err = dns_listeners_open(port, &ls, e)) < 0 ||
	    (err = dns_server_serve(l, u, &ls, &owner_hooks, NULL, out, e)) < 0)
		return err;
	(*out)->ctx = *out;
	(*out)->owner = *cb;
	(*out)->owner_ctx = ctx;
	return 0;
}

int dns_server_listen_ip4(struct dns_server *s, uint32_t ip4, struct lerr *e)
{
	int udp, tcp, err;

	if (s->udp[2] >= 0)
		return lerr_set(e, EEXIST, "dns: server: port %u: already listening on a second address",
				s->port);
	if ((err = dns_listeners_ip4(s->port, ip4, &udp, &tcp, e)) < 0)
		return err;
	return dns_server_add_ip4(s, udp, tcp, e);
}

uint16_t dns_server_port(const struct dns_server *s)
{
	return s->port;
}

void dns_server_close(struct dns_server *s)
{
	if (!s)
		return;
	while (s->conns)
		conn_free(s->conns);
	while (s->queries)
		query_free(s->queries);
	close_listeners(s);
	free(s);
}
