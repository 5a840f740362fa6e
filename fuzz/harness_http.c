/* harness_http.c (fuzz target "harness_http"): the harness API's HTTP/1.1 server
 * (userspace/harness/http.c) on the bytes a workload writes to its socket: the real
 * server, listening on a Unix socket in the target's directory, driven by a private
 * event loop; the client is this target, writing the input in chunks, reading every
 * reply, then shutting its side down.
 *
 * Retargeting: the server is reached only through harness_listen and the socket, so when
 * the HTTP parsing moves (an unprivileged helper, libmicrohttpd) this target keeps
 * working against whatever listens there; only open_server() changes.
 *
 * Input: a flags byte (bit 0: the accept callback refuses the caller; bit 1: requests are
 * answered later, from a timer, as lanternd answers after the journal is durable), a
 * chunk size byte (0: everything in one write), then the bytes of the connection.
 * The request callback answers 200 with the length of the body it was handed; a path of
 * "/big" gets a reply over the server's 64 KiB pause mark.
 *
 * Properties beyond the sanitizers:
 *  - the server ends the connection within 5 s of the client's shutdown (no stall,
 *    no lost wake-up);
 *  - what comes back is a sequence of whole HTTP/1.1 responses whose Content-Length is
 *    the length of their JSON body, one per request handed to the callback at most
 *    (plus one error before a close);
 *  - requests handed over have a method, a path and a NUL-terminated body. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "fuzzlib.h"
#include "lantern/harness.h"
#include "lantern/loop.h"

struct session {
	const uint8_t *out;
	size_t out_len, chunk;
	bool refuse, defer;
	int fd;
	bool client_done, conn_closed;
	char *in;
	size_t in_len, in_cap;
	unsigned handed;
	struct harness_conn *pending;
	uint64_t pending_timer;
	int pending_status;
	json_t *pending_body;
};

static struct loop *loop;
static struct harness_server *srv;
static struct session *cur;
static char sock_path[4096];

static void maybe_stop(void)
{
	if (cur->client_done && cur->conn_closed)
		loop_stop(loop);
}

static bool on_accept(void *arg, pid_t pid, char *why, size_t whylen)
{
	if (cur->refuse)
		snprintf(why, whylen, "fuzz: caller refused");
	return !cur->refuse;
}

static void reply(struct harness_conn *c, int status, json_t *body)
{
	char *s = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);

	harness_reply(c, status, s, strlen(s));
	free(s);
	json_decref(body);
}

static void answer_later(struct loop *l, void *arg)
{
	struct harness_conn *c = cur->pending;

	cur->pending = NULL;
	cur->pending_timer = 0;
	reply(c, cur->pending_status, cur->pending_body);
}

static void on_request(void *arg, struct harness_conn *c, const struct harness_request *rq)
{
	json_t *body;

	FZ_CHECK(rq->method[0] && rq->path[0], "a request without a method or a path");
	FZ_CHECK(rq->body && rq->body[rq->body_len] == '\0', "a body that is not NUL-terminated");
	FZ_CHECK(!cur->pending, "a second request handed over before the first was answered");
	cur->handed++;
	/* the method and path are the caller's bytes, maybe not UTF-8: not echoed */
	body = json_pack("{s:I}", "body_len", (json_int_t)rq->body_len);
	if (!strcmp(rq->path, "/big")) {
		char *pad = calloc(1, 70000);

		memset(pad, 'x', 69999);
		json_object_set_new(body, "pad", json_string(pad));
		free(pad);
	}
	if (cur->defer) {
		cur->pending = c;
		cur->pending_status = 200;
		cur->pending_body = body;
		cur->pending_timer = loop_timer_add(loop, 0, answer_later, NULL);
		return;
	}
	reply(c, 200, body);
}

static void on_closed(void *arg, struct harness_conn *c)
{
	if (cur->pending == c) {
		loop_timer_cancel(loop, cur->pending_timer);
		json_decref(cur->pending_body);
		cur->pending = NULL;
	}
	cur->conn_closed = true;
	maybe_stop();
}

static const struct harness_ops ops = {
	.accept = on_accept,
	.request = on_request,
	.closed = on_closed,
};

static void on_client(struct loop *l, int fd, uint32_t events, void *arg)
{
	if (events & EPOLLOUT) {
		if (cur->out_len) {
			size_t n = cur->chunk && cur->chunk < cur->out_len ? cur->chunk : cur->out_len;
			ssize_t w = send(fd, cur->out, n, MSG_NOSIGNAL | MSG_DONTWAIT);

			if (w > 0) {
				cur->out += w;
				cur->out_len -= (size_t)w;
			} else if (w < 0 && errno != EAGAIN) {
				cur->out_len = 0; /* the server closed: nothing more to say */
			}
		}
		if (!cur->out_len) {
			shutdown(fd, SHUT_WR);
			loop_mod(l, fd, EPOLLIN);
		}
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		for (;;) {
			ssize_t n;

			if (cur->in_cap - cur->in_len < 65536) {
				cur->in_cap = cur->in_cap ? cur->in_cap * 2 : 131072;
				cur->in = realloc(cur->in, cur->in_cap);
			}
			n = recv(fd, cur->in + cur->in_len, cur->in_cap - cur->in_len, MSG_DONTWAIT);
			if (n > 0) {
				cur->in_len += (size_t)n;
				continue;
			}
			if (n < 0 && errno == EAGAIN)
				break;
			loop_del(l, fd);
			cur->client_done = true;
			maybe_stop();
			break;
		}
	}
}

static void stalled(struct loop *l, void *arg)
{
	FZ_CHECK(false, "the server neither answered nor closed within 5 s of the client's "
		 "shutdown (client done %d, connection closed %d, %u requests handed over)",
		 cur->client_done, cur->conn_closed, cur->handed);
}

/* Every byte received is part of a response: status line, headers with a
 * Content-Length, and exactly that many bytes of JSON body. The last one may be cut
 * short: the server drops what is unsent once the client has shut its side down. */
static unsigned check_responses(const char *p, size_t len)
{
	unsigned n = 0;

	while (len) {
		const char *hend = memmem(p, len, "\r\n\r\n", 4), *cl;
		size_t hlen, blen;
		json_t *j;
		int status;

		FZ_CHECK(!memcmp(p, "HTTP/1.1 ", len < 9 ? len : 9), "bytes that do not start a response");
		if (!hend)
			break;
		hlen = (size_t)(hend - p) + 4;
		FZ_CHECK(sscanf(p, "HTTP/1.1 %3d ", &status) == 1 && status >= 200 && status < 600,
			 "a response without an HTTP/1.1 status line");
		cl = memmem(p, hlen, "\r\nContent-Length: ", 18);
		FZ_CHECK(cl && sscanf(cl + 18, "%zu", &blen) == 1, "a response without a Content-Length");
		if (hlen + blen > len)
			break;
		j = json_loadb(p + hlen, blen, 0, NULL);
		FZ_CHECK(j, "a response body that is not JSON");
		json_decref(j);
		p += hlen + blen;
		len -= hlen + blen;
		n++;
	}
	return n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct lerr e = { 0 };

	snprintf(sock_path, sizeof(sock_path), "%s/harness.sock", fz_workdir("harness_http"));
	loop = loop_new();
	FZ_CHECK(loop && harness_listen(loop, sock_path, &ops, NULL, &srv, &e) == 0, "listen: %s", e.msg);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct session s = { 0 };
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct fz f = { data, size };
	unsigned responses;
	uint64_t timer;
	uint8_t flags;

	flags = fz_u8(&f);
	s.refuse = flags & 1;
	s.defer = flags & 2;
	s.chunk = (size_t)fz_u8(&f) * 7;
	s.out = fz_rest(&f, &s.out_len);
	cur = &s;
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock_path);
	s.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	FZ_CHECK(s.fd >= 0 && connect(s.fd, (struct sockaddr *)&a, sizeof(a)) == 0, "connect: %s",
		 strerror(errno));
	loop_add(loop, s.fd, EPOLLIN | EPOLLOUT, on_client, NULL);
	timer = loop_timer_add(loop, 5000, stalled, NULL);
	loop_run(loop);
	loop_timer_cancel(loop, timer);
	close(s.fd);
	responses = check_responses(s.in, s.in_len);
	FZ_CHECK(responses <= s.handed + 1, "%u responses to %u requests handed over", responses,
		 s.handed);
	free(s.in);
	cur = NULL;
	return 0;
}
