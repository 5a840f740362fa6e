/* http.c: the harness API's HTTP/1.1 server on a Unix socket, inside lanternd's event
 * loop. It never blocks: reads parse what has arrived, writes queue what the peer
 * cannot take yet (util_wqueue; while replies back up, the peer is not read from). A
 * request is handed over once complete (headers + Content-Length body); the next one on
 * the same connection waits until it is answered, because the answer may come later,
 * after the journal record it depends on is durable. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "lantern/harness.h"
#include "lantern/wqueue.h"

#define HTTP_MAX_HEADER (16u << 10)
/* Unsent bytes past which no further request is read or parsed until the client reads:
 * a client pipelining requests without reading its replies is held off here. */
#define HTTP_OUT_PAUSE (64u << 10)
/* One reply must fit whole. The largest is a replayed step record, which arrived as a
 * body of at most 8 MiB but is re-encoded by jansson (a real like 0.1 comes back with 17
 * digits), so it may have grown; past this the connection is dropped. */
#define HTTP_OUT_MAX (8 * HARNESS_MAX_BODY)

struct harness_conn {
	struct harness_server *s;
	int fd;
	char *in;
	size_t in_off, in_len, in_cap; /* in[in_off, in_len) is received, not yet parsed */
	bool busy;               /* a request is waiting for its reply */
	bool parsing;            /* conn_parse is on the stack */
	bool close_after;        /* Connection: close, or a protocol error */
	bool dead;
	char *refused;           /* why the caller may not use this socket, answered (403)
				  * to its first request: a reply before the request is read
				  * can be lost to the reset the client's write then meets */
	uint64_t reap_timer;
	struct util_wqueue out;
	struct harness_conn *next;
};

struct harness_server {
	struct loop *loop;
	int fd;
	const struct harness_ops *ops;
	void *arg;
	struct harness_conn *conns;
};

static void conn_free(struct harness_conn *c, bool notify)
{
	struct harness_server *s = c->s;

	if (notify && s->ops->closed)
		s->ops->closed(s->arg, c);
	if (c->reap_timer)
		loop_timer_cancel(s->loop, c->reap_timer);
	loop_del(s->loop, c->fd);
	close(c->fd);
	for (struct harness_conn **pp = &s->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	free(c->in);
	util_wqueue_free(&c->out);
	free(c->refused);
	free(c);
}

static void reap_fired(struct loop *l, void *arg)
{
	struct harness_conn *c = arg;

	c->reap_timer = 0;
	conn_free(c, true);
}

/* Freed from a timer, never under a caller that still holds c. */
static void conn_kill(struct harness_conn *c)
{
	c->dead = true;
	if (!c->reap_timer)
		c->reap_timer = loop_timer_add(c->s->loop, 0, reap_fired, c);
}

static bool conn_paused(const struct harness_conn *c)
{
	return util_wqueue_len(&c->out) > HTTP_OUT_PAUSE;
}

static void conn_flush(struct harness_conn *c)
{
	int left = util_wqueue_flush(&c->out, c->fd);

	if (left < 0 || (!left && c->close_after && !c->busy)) {
		conn_kill(c);
		return;
	}
	/* paused, the client's further requests wait in the socket */
	loop_mod(c->s->loop, c->fd, (conn_paused(c) ? 0 : EPOLLIN) | (left ? EPOLLOUT : 0));
}

static const char *status_text(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 507: return "Insufficient Storage";
	default: return "Status";
	}
}

static void conn_parse(struct harness_conn *c);

void harness_reply(struct harness_conn *c, int status, const char *json, size_t blen)
{
	char head[256];
	size_t hlen;
	int err;

	if (c->dead)
		return;
	if (!json) {
		json = "{}";
		blen = 2;
	}
	hlen = (size_t)snprintf(head, sizeof(head),
				"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
				"Content-Length: %zu\r\n%s\r\n",
				status, status_text(status), blen + 1,
				c->close_after ? "Connection: close\r\n" : "");
	err = util_wqueue_appendv(&c->out, (struct iovec[]){ { head, hlen },
							      { (void *)json, blen },
							      { "\n", 1 } }, 3);
	if (err < 0) {
		log_warn("harness: connection dropped: a %zu-byte reply does not fit its queue "
			 "(%zu bytes unsent, %u at most): %s", hlen + blen + 1,
			 util_wqueue_len(&c->out), HTTP_OUT_MAX, strerror(-err));
		conn_kill(c);
		return;
	}
	c->busy = false;
	conn_flush(c);
	/* a pipelined request may already be buffered */
	if (!c->dead && !c->close_after && !conn_paused(c))
		conn_parse(c);
}

static void reply_error(struct harness_conn *c, int status, const char *msg)
{
	struct json_text t;
	size_t n;
	char *body;

	c->close_after = true;
	c->busy = true;
	json_text_open(&t);
	json_text_str(&t, "error", msg);
	body = json_text_take(&t, &n);
	harness_reply(c, status, body, body ? n : 0);
	free(body);
}

/* Value of header name in [h, end), or NULL; *len gets its length. */
static const char *header_value(const char *h, const char *end, const char *name, size_t *len)
{
	size_t nl = strlen(name);

	for (const char *p = h; p < end;) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		if (!eol)
			eol = end;
		if ((size_t)(eol - p) > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			*len = (size_t)(eol - v);
			return v;
		}
		p = eol + 2;
	}
	return NULL;
}

const char *harness_header(const struct harness_request *rq, const char *name)
{
	for (size_t i = 0; i < rq->n_headers; i++)
		if (!strcasecmp(rq->headers[i].name, name))
			return rq->headers[i].value;
	return NULL;
}

/* Copies the headers in [h, end) that fit the request's bounded list. */
static void keep_headers(struct harness_request *rq, const char *h, const char *end)
{
	for (const char *p = h; p < end && rq->n_headers < HARNESS_MAX_HEADERS;) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2), *colon, *v;
		struct harness_header *hd = &rq->headers[rq->n_headers];

		if (!eol)
			eol = end;
		colon = memchr(p, ':', (size_t)(eol - p));
		if (colon && (size_t)(colon - p) < sizeof(hd->name)) {
			for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
				;
			if ((size_t)(eol - v) < sizeof(hd->value)) {
				memcpy(hd->name, p, (size_t)(colon - p));
				hd->name[colon - p] = '\0';
				memcpy(hd->value, v, (size_t)(eol - v));
				hd->value[eol - v] = '\0';
				rq->n_headers++;
			}
		}
		p = eol + 2;
	}
}

/* Hands over the request at the head of c->in, if it is complete. Returns true if one
 * was taken (handed over or refused). */
static bool conn_parse_one(struct harness_conn *c)
{
	struct harness_request rq = { 0 };
	const char *in = c->in + c->in_off, *hend, *line_end, *v;
	size_t in_len = c->in_len - c->in_off, hlen, vlen, clen = 0, total;
	char version[16];

	if (!in_len)
		return false;
	hend = memmem(in, in_len, "\r\n\r\n", 4);
	if (!hend) {
		if (in_len > HTTP_MAX_HEADER)
			reply_error(c, 413, "request headers too large");
		return false;
	}
	hlen = (size_t)(hend - in) + 4;
	line_end = memmem(in, hlen, "\r\n", 2);
	{
		char line[512];
		size_t ll = (size_t)(line_end - in);

		if (ll >= sizeof(line) ||
		    (memcpy(line, in, ll), line[ll] = '\0',
		     sscanf(line, "%7s %255s %15s", rq.method, rq.path, version) != 3) ||
		    strncmp(version, "HTTP/1.", 7)) {
			reply_error(c, 400, "malformed request line");
			return true;
		}
	}
	if (header_value(line_end + 2, hend + 2, "Transfer-Encoding", &vlen)) {
		reply_error(c, 411, "chunked bodies are not supported: send Content-Length");
		return true;
	}
	if ((v = header_value(line_end + 2, hend + 2, "Content-Length", &vlen))) {
		char num[24];
		char *endp;

		snprintf(num, sizeof(num), "%.*s", (int)(vlen < 23 ? vlen : 23), v);
		clen = strtoul(num, &endp, 10);
		if (endp == num || *endp) {
			reply_error(c, 400, "bad Content-Length");
			return true;
		}
	}
	if (clen > HARNESS_MAX_BODY) {
		reply_error(c, 413, "request body too large (8 MiB at most)");
		return true;
	}
	if ((v = header_value(line_end + 2, hend + 2, "Connection", &vlen)) && vlen == 5 &&
	    !strncasecmp(v, "close", 5))
		c->close_after = true;
	if (!strcmp(version, "HTTP/1.0"))
		c->close_after = true;
	total = hlen + clen;
	if (in_len < total)
		return false;
	/* The request leaves the buffer before it is handled: once a reply sent from
	 * inside the handler frees the connection, conn_parse's loop finds the next one. */
	char *body = malloc(clen + 1);
	if (!body) {
		conn_kill(c);
		return false;
	}
	memcpy(body, in + hlen, clen);
	body[clen] = '\0';
	/* skipped, not moved: on_conn compacts before it reads */
	c->in_off += total;
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
	if (c->refused) {
		free(body);
		reply_error(c, 403, c->refused);
		return true;
	}
	rq.body = body;
	rq.body_len = clen;
	keep_headers(&rq, line_end + 2, hend);
	c->busy = true;
	c->s->ops->request(c->s->arg, c, &rq);
	free(body);
	return true;
}

/* Hands over the buffered requests one at a time, the next once the previous is
 * answered. A loop, not recursion through harness_reply: a client pipelining thousands
 * of requests that are answered at once would grow the stack by a few frames each. */
static void conn_parse(struct harness_conn *c)
{
	if (c->parsing)
		return; /* harness_reply from inside a handler: the loop below goes on */
	c->parsing = true;
	/* nothing after a request that asked for Connection: close */
	while (!c->busy && !c->dead && !conn_paused(c) && conn_parse_one(c) && !c->close_after)
		;
	c->parsing = false;
}

static void on_conn(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct harness_conn *c = arg;

	if (c->dead)
		return;
	if (events & EPOLLOUT) {
		bool was_paused = conn_paused(c);

		conn_flush(c);
		/* the client read: requests it pipelined meanwhile may be buffered */
		if (was_paused && !c->dead && !conn_paused(c))
			conn_parse(c);
	}
	if (!c->dead && conn_paused(c) && (events & (EPOLLHUP | EPOLLERR))) {
		conn_kill(c); /* nobody left to read the replies */
		return;
	}
	if (!c->dead && !conn_paused(c) && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
		for (;;) {
			ssize_t n;

			/* room first by dropping what was parsed: at most one move per
			 * wake-up, not one per pipelined request */
			if (c->in_cap - c->in_len < 65536 + 1 && c->in_off) {
				memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
				c->in_len -= c->in_off;
				c->in_off = 0;
			}
			if (c->in_cap - c->in_len < 65536 + 1) {
				size_t cap = c->in_cap ? c->in_cap * 2 : 65536 * 2;
				char *ni;

				if (cap > HARNESS_MAX_BODY + HTTP_MAX_HEADER + 65536 * 2) {
					reply_error(c, 413, "request too large");
					return;
				}
				if (!(ni = realloc(c->in, cap))) {
					conn_kill(c);
					return;
				}
				c->in = ni;
				c->in_cap = cap;
			}
			n = recv(fd, c->in + c->in_len, c->in_cap - c->in_len - 1, MSG_DONTWAIT);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN)
				break;
			if (n <= 0) {
				conn_kill(c);
				return;
			}
			c->in_len += (size_t)n;
		}
		conn_parse(c);
	}
}

static void on_accept(struct loop *l, int lfd, uint32_t events, void *arg)
{
	struct harness_server *s = arg;

	for (int budget = 64; budget > 0; budget--) {
		int fd = loop_accept(l, lfd, SOCK_CLOEXEC | SOCK_NONBLOCK);
		struct ucred cred;
		socklen_t len = sizeof(cred);
		struct harness_conn *c;
		char why[256] = "";

		if (fd < 0)
			return;
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->s = s;
		c->fd = fd;
		util_wqueue_init(&c->out, HTTP_OUT_MAX);
		if (loop_add(s->loop, fd, EPOLLIN, on_conn, c) < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = s->conns;
		s->conns = c;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
		    (s->ops->accept && !s->ops->accept(s->arg, cred.pid, why, sizeof(why))))
			c->refused = strdup(why[0] ? why : "harness: caller not identified");
	}
}

int harness_listen(struct loop *l, const char *path, const struct harness_ops *ops, void *arg,
		   struct harness_server **out, struct lerr *e)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct harness_server *s;
	mode_t old;
	int err;

	if (strlen(path) >= sizeof(a.sun_path))
		return lerr_set(e, ENAMETOOLONG, "harness: socket path %s is longer than %zu bytes",
				path, sizeof(a.sun_path) - 1);
	s = calloc(1, sizeof(*s));
	if (!s)
		return lerr_set(e, ENOMEM, "harness: out of memory");
	s->loop = l;
	s->ops = ops;
	s->arg = arg;
	/* bound under a temporary name and renamed over the old socket: a reconnecting
	 * workload finds either the old file or the new, never none */
	if ((size_t)snprintf(a.sun_path, sizeof(a.sun_path), "%s.new", path) >= sizeof(a.sun_path)) {
		free(s);
		return lerr_set(e, ENAMETOOLONG, "harness: socket path %s is too long", path);
	}
	s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s->fd < 0) {
		err = lerr_set(e, errno, "harness: socket: %s", strerror(errno));
		free(s);
		return err;
	}
	unlink(a.sun_path);
	/* any user may connect (0666): the image's user need not be root, and who may use
	 * the socket is the accept check's to say (the caller's cgroup) */
	old = umask(0111);
	if (bind(s->fd, (struct sockaddr *)&a, sizeof(a)) < 0 || rename(a.sun_path, path) < 0) {
		err = lerr_set(e, errno, "harness: bind %s: %s", path, strerror(errno));
		umask(old);
		unlink(a.sun_path);
		goto fail;
	}
	umask(old);
	if (listen(s->fd, 64) < 0) {
		err = lerr_set(e, errno, "harness: listen %s: %s", path, strerror(errno));
		goto fail;
	}
	if ((err = loop_add(l, s->fd, EPOLLIN, on_accept, s)) < 0) {
		lerr_set(e, err, "harness: watching %s: %s", path, strerror(-err));
		goto fail;
	}
	*out = s;
	return 0;
fail:
	close(s->fd);
	free(s);
	return err;
}

void harness_server_close(struct harness_server *s)
{
	if (!s)
		return;
	while (s->conns)
		conn_free(s->conns, false);
	loop_del(s->loop, s->fd);
	close(s->fd);
	free(s);
}
