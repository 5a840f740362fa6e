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
/* What one request may occupy on the way in: headers, the largest body, and the room a
 * read needs. */
#define HTTP_IN_MAX (HARNESS_MAX_BODY + HTTP_MAX_HEADER + 2 * 65536)
/* Connections one run's socket serves at once; more are closed at accept. With the caps
 * above this bounds what one run's workload can make the server hold. */
#define HTTP_MAX_CONNS 16
/* A connection with nothing in flight and nothing said for this long is closed (a
 * client reconnects; keep-alive is a convenience, not a promise). */
#define HTTP_IDLE_MS 120000

struct harness_conn {
	struct harness_server *s;
	uint64_t id;             /* unique in this process: a reply that comes late finds it */
	pid_t pid;               /* the caller, as SO_PEERCRED said at accept */
	int fd;
	char *in;
	size_t in_off, in_len, in_cap; /* in[in_off, in_len) is received, not yet parsed */
	bool busy;               /* a request is waiting for its reply */
	bool parsing;            /* conn_parse is on the stack */
	bool close_after;        /* Connection: close, or a protocol error */
	bool eof;                /* the client half-closed: answer what it sent, then close */
	bool dead;
	uint64_t idle_timer;
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
	unsigned nconns;
};

static uint64_t next_conn_id;

static void conn_free(struct harness_conn *c, bool notify)
{
	struct harness_server *s = c->s;

	if (notify && s->ops->closed)
		s->ops->closed(s->arg, c);
	if (c->reap_timer)
		loop_timer_cancel(s->loop, c->reap_timer);
	if (c->idle_timer)
		loop_timer_cancel(s->loop, c->idle_timer);
	loop_del(s->loop, c->fd);
	close(c->fd);
	for (struct harness_conn **pp = &s->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			s->nconns--;
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

static bool conn_has_request(const struct harness_conn *c);

static void conn_flush(struct harness_conn *c)
{
	int left = util_wqueue_flush(&c->out, c->fd);

	if (left < 0 || (!left && !c->busy && (c->close_after || (c->eof && !conn_has_request(c))))) {
		conn_kill(c);
		return;
	}
	/* paused, the client's further requests wait in the socket; after its EOF there is
	 * nothing to wait for */
	loop_mod(c->s->loop, c->fd, (conn_paused(c) || c->eof ? 0 : EPOLLIN) | (left ? EPOLLOUT : 0));
}

static void on_idle(struct loop *l, void *arg)
{
	struct harness_conn *c = arg;

	c->idle_timer = 0;
	if (c->busy || util_wqueue_len(&c->out)) {
		c->idle_timer = loop_timer_add(l, HTTP_IDLE_MS, on_idle, c);
		return;
	}
	conn_kill(c);
}

static void conn_active(struct harness_conn *c)
{
	if (c->idle_timer)
		loop_timer_cancel(c->s->loop, c->idle_timer);
	c->idle_timer = loop_timer_add(c->s->loop, HTTP_IDLE_MS, on_idle, c);
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

/* Value of header name in [h, end), or NULL; *len gets its length, *count how many
 * times the header appears (a second Content-Length is how requests get smuggled). */
static const char *header_find(const char *h, const char *end, const char *name, size_t *len,
			       unsigned *count)
{
	size_t nl = strlen(name);
	const char *found = NULL;

	*count = 0;
	for (const char *p = h; p < end;) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		if (!eol)
			eol = end;
		if ((size_t)(eol - p) > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			if (!found) {
				*len = (size_t)(eol - v);
				found = v;
			}
			(*count)++;
		}
		p = eol + 2;
	}
	return found;
}

static const char *header_value(const char *h, const char *end, const char *name, size_t *len)
{
	unsigned n;

	return header_find(h, end, name, len, &n);
}

/* Something of a request is buffered (answered before an EOF closes the connection). */
static bool conn_has_request(const struct harness_conn *c)
{
	return c->in_len > c->in_off;
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
	unsigned nclen;
	char version[16];

	if (!in_len)
		return false;
	hend = memmem(in, in_len, "\r\n\r\n", 4);
	if (!hend) {
		if (in_len > HTTP_MAX_HEADER)
			reply_error(c, 413, "request headers too large");
		else if (c->eof)
			c->in_off = c->in_len = 0; /* cut short by the client's EOF: nothing to answer */
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
	if ((v = header_find(line_end + 2, hend + 2, "Content-Length", &vlen, &nclen))) {
		/* digits only (no sign, no spaces, no second value), and once */
		while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
			vlen--;
		if (nclen > 1 || !vlen || vlen > 12) {
			reply_error(c, nclen > 1 ? 400 : vlen > 12 ? 413 : 400,
				    nclen > 1 ? "more than one Content-Length" : "bad Content-Length");
			return true;
		}
		for (size_t i = 0; i < vlen; i++) {
			if (v[i] < '0' || v[i] > '9') {
				reply_error(c, 400, "bad Content-Length");
				return true;
			}
			clen = clen * 10 + (size_t)(v[i] - '0');
		}
	}
	if (clen > HARNESS_MAX_BODY) {
		reply_error(c, 413, "request body too large (8 MiB at most)");
		return true;
	}
	total = hlen + clen;
	if (in_len < total) {
		if (c->eof)
			c->in_off = c->in_len = 0;
		return false;
	}
	/* only a whole request may say the connection ends after it: its body is still
	 * to come otherwise */
	if ((v = header_value(line_end + 2, hend + 2, "Connection", &vlen)) && vlen == 5 &&
	    !strncasecmp(v, "close", 5))
		c->close_after = true;
	if (!strcmp(version, "HTTP/1.0"))
		c->close_after = true;
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
	/* nothing after a request that asked for Connection: close, or after a protocol
	 * error's reply (a parse resumed once a paused queue drains must not answer the
	 * bytes behind it) */
	while (!c->busy && !c->dead && !c->close_after && !conn_paused(c) && conn_parse_one(c))
		;
	c->parsing = false;
	/* After the client's EOF the parse drops a request it cut short; with nothing left to
	 * answer the connection ends now (once its replies are out), not at the idle timeout:
	 * a parse after a reply sent from a timer, or after the client read a paused queue,
	 * has no read event behind it to do this. */
	if (!c->dead && !c->busy && c->eof)
		conn_flush(c);
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
	/* everything it sent is read and its request waits (a secret being read from the API
	 * server, a record being made durable), and the client closed its end entirely: a
	 * half-close is EPOLLRDHUP alone on a Unix socket, so EPOLLHUP means nobody will
	 * read the answer. The connection goes (the closed hook lets the waiting call go)
	 * instead of waking the loop until the answer comes. */
	if (!c->dead && c->eof && c->busy && (events & (EPOLLHUP | EPOLLERR))) {
		conn_kill(c);
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

				/* up to the bound exactly, so a body of 8 MiB fits (doubling alone
				 * overshoots it) */
				if (cap > HTTP_IN_MAX)
					cap = HTTP_IN_MAX;
				if (cap <= c->in_cap) {
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
			if (n == 0) {
				/* requests that came with the EOF are still answered */
				c->eof = true;
				break;
			}
			if (n < 0) {
				conn_kill(c);
				return;
			}
			c->in_len += (size_t)n;
		}
		conn_active(c);
		conn_parse(c);
		if (!c->dead)
			conn_flush(c);
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
		c = s->nconns < HTTP_MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
		if (!c) {
			close(fd);
			continue;
		}
		c->s = s;
		c->id = ++next_conn_id;
		c->fd = fd;
		util_wqueue_init(&c->out, HTTP_OUT_MAX);
		if (loop_add(s->loop, fd, EPOLLIN, on_conn, c) < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = s->conns;
		s->conns = c;
		s->nconns++;
		conn_active(c);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
			c->pid = cred.pid;
		if (!c->pid || (s->ops->accept && !s->ops->accept(s->arg, c->pid, why, sizeof(why))))
			c->refused = strdup(why[0] ? why : "harness: caller not identified");
	}
}

int harness_bind(const char *path, struct lerr *e)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd, err;

	/* bound under a temporary name, made 0666 and listening, then renamed over the old
	 * socket: a reconnecting workload finds either the old file or the new, never none
	 * and never one that refuses it. Any user may connect (the image's user need not be
	 * root; who may use the socket is the accept check's to say, by the caller's
	 * cgroup). The mode is set on the file, not through umask, which is the whole
	 * process's: another thread's files made meanwhile would get it too. */
	if ((size_t)snprintf(a.sun_path, sizeof(a.sun_path), "%s.new", path) >= sizeof(a.sun_path))
		return lerr_set(e, ENAMETOOLONG, "harness: socket path %s is too long", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
		return lerr_set(e, errno, "harness: socket: %s", strerror(errno));
	unlink(a.sun_path);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || chmod(a.sun_path, 0666) < 0 || listen(fd, 64) < 0 ||
	    rename(a.sun_path, path) < 0) {
		err = lerr_set(e, errno, "harness: bind %s: %s", path, strerror(errno));
		unlink(a.sun_path);
		close(fd);
		return err;
	}
	return fd;
}

int harness_serve(struct loop *l, int fd, const struct harness_ops *ops, void *arg,
		  struct harness_server **out, struct lerr *e)
{
	struct harness_server *s = calloc(1, sizeof(*s));
	int err;

	if (!s) {
		close(fd);
		return lerr_set(e, ENOMEM, "harness: out of memory");
	}
	s->loop = l;
	s->ops = ops;
	s->arg = arg;
	s->fd = fd;
	if ((err = loop_add(l, fd, EPOLLIN, on_accept, s)) < 0) {
		lerr_set(e, err, "harness: watching its socket: %s", strerror(-err));
		close(fd);
		free(s);
		return err;
	}
	*out = s;
	return 0;
}

int harness_listen(struct loop *l, const char *path, const struct harness_ops *ops, void *arg,
		   struct harness_server **out, struct lerr *e)
{
	int fd = harness_bind(path, e);

	return fd < 0 ? fd : harness_serve(l, fd, ops, arg, out, e);
}

uint64_t harness_conn_id(const struct harness_conn *c)
{
	return c->id;
}

pid_t harness_conn_pid(const struct harness_conn *c)
{
	return c->pid;
}

struct harness_conn *harness_conn_find(struct harness_server *s, uint64_t id)
{
	for (struct harness_conn *c = s->conns; c; c = c->next)
		if (c->id == id && !c->dead)
			return c;
	return NULL;
}

void harness_reply_close(struct harness_conn *c, int status, const char *json, size_t len)
{
	c->close_after = true;
	harness_reply(c, status, json, len);
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
