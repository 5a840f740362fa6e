/* api.c: the local API's socket (see api.h): accept with a credentials check, one
 * request line per client parsed as JSON and handed to the op's handler, and the
 * client's non-blocking, bounded output. Clients are freed from the loop only, never
 * under a handler's feet. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "lantern/api.h"
#include "lantern/wqueue.h"

#define API_MAX_REQUEST (4u << 20)
#define API_MAX_QUEUED  (16u << 20)
#define API_MAX_OPS     32

struct api_op {
	char name[32];
	api_op_fn fn;
	void *arg;
};

struct api {
	struct loop *loop;
	int fd;
	char path[108];
	struct api_op ops[API_MAX_OPS];
	int nops;
	struct api_client *clients;
};

struct api_client {
	struct api *a;
	int fd;
	char *in;
	size_t in_len;
	bool have_request;
	struct util_wqueue out;
	bool closing;               /* close once out is written */
	bool dead;
	uint64_t reap_timer;
	void (*on_close)(void *arg, struct api_client *c);
	void *on_close_arg;
	void (*on_drain)(void *arg, struct api_client *c);
	void *on_drain_arg;
	struct api_client *next;
};

static void client_free(struct api_client *c)
{
	struct api *a = c->a;

	if (c->reap_timer)
		loop_timer_cancel(a->loop, c->reap_timer);
	if (c->on_close)
		c->on_close(c->on_close_arg, c);
	loop_del(a->loop, c->fd);
	close(c->fd);
	for (struct api_client **pp = &a->clients; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	free(c->in);
	util_wqueue_free(&c->out);
	free(c);
}

static void reap_timer_fired(struct loop *l, void *arg)
{
	struct api_client *c = arg;

	c->reap_timer = 0;
	client_free(c);
}

/* Marks c for closing; it is freed from the loop. */
static void client_kill(struct api_client *c)
{
	c->dead = true;
	if (!c->reap_timer)
		c->reap_timer = loop_timer_add(c->a->loop, 0, reap_timer_fired, c);
}

static void client_flush(struct api_client *c)
{
	int r = util_wqueue_flush(&c->out, c->fd);

	if (r < 0) {
		client_kill(c);
	} else if (r > 0) {
		loop_mod(c->a->loop, c->fd, EPOLLIN | EPOLLOUT);
	} else {
		loop_mod(c->a->loop, c->fd, EPOLLIN);
		if (c->closing) {
			client_kill(c);
		} else if (c->on_drain) {
			void (*fn)(void *, struct api_client *) = c->on_drain;

			c->on_drain = NULL; /* once; the callee may ask again */
			fn(c->on_drain_arg, c);
		}
	}
}

void api_send(struct api_client *c, json_t *msg)
{
	char *s = msg ? json_dumps(msg, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	int err;

	json_decref(msg);
	if (!s || c->dead) {
		free(s);
		return;
	}
	err = util_wqueue_appendv(&c->out, (struct iovec[]){ { s, strlen(s) }, { "\n", 1 } }, 2);
	free(s);
	if (err < 0) {
		/* a client that does not read what it asked for is dropped, not buffered */
		log_warn("api: client not reading, %u bytes queued: dropped", API_MAX_QUEUED);
		client_kill(c);
		return;
	}
	client_flush(c);
}

void api_send_error(struct api_client *c, const char *msg)
{
	api_send(c, json_pack("{s:s, s:s}", "type", "error", "error", msg));
}

void api_finish(struct api_client *c)
{
	c->closing = true;
	if (!util_wqueue_len(&c->out))
		client_kill(c);
}

void api_on_close(struct api_client *c, void (*fn)(void *arg, struct api_client *c), void *arg)
{
	c->on_close = fn;
	c->on_close_arg = arg;
}

size_t api_queued(const struct api_client *c)
{
	return c->dead ? SIZE_MAX : util_wqueue_len(&c->out);
}

void api_on_drain(struct api_client *c, void (*fn)(void *arg, struct api_client *c), void *arg)
{
	c->on_drain = fn;
	c->on_drain_arg = arg;
}

int api_register(struct api *a, const char *op, api_op_fn fn, void *arg)
{
	if (a->nops == API_MAX_OPS || strlen(op) >= sizeof(a->ops[0].name))
		return -ENOSPC;
	snprintf(a->ops[a->nops].name, sizeof(a->ops[0].name), "%s", op);
	a->ops[a->nops].fn = fn;
	a->ops[a->nops++].arg = arg;
	return 0;
}

static void handle_request(struct api_client *c, json_t *req)
{
	const char *op = json_string_value(json_object_get(req, "op"));
	char m[128];

	if (!op) {
		api_send_error(c, "request has no \"op\"");
		api_finish(c);
		return;
	}
	for (int i = 0; i < c->a->nops; i++)
		if (!strcmp(c->a->ops[i].name, op)) {
			c->a->ops[i].fn(c->a->ops[i].arg, c, req);
			return;
		}
	snprintf(m, sizeof(m), "unknown op \"%.64s\"", op);
	api_send_error(c, m);
	api_finish(c);
}

/* Reads what arrived; the first complete line is the request. */
static void client_read(struct api_client *c)
{
	char buf[65536], *nl, *in;
	ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		client_kill(c);
		return;
	}
	if (n < 0 || c->have_request)
		return;
	if (c->in_len + (size_t)n > API_MAX_REQUEST || !(in = realloc(c->in, c->in_len + (size_t)n + 1))) {
		c->have_request = true;
		api_send_error(c, "request too large (4 MiB at most)");
		api_finish(c);
		return;
	}
	c->in = in;
	memcpy(c->in + c->in_len, buf, (size_t)n);
	c->in_len += (size_t)n;
	c->in[c->in_len] = '\0';
	if ((nl = memchr(c->in, '\n', c->in_len))) {
		json_error_t je;
		json_t *req = json_loadb(c->in, (size_t)(nl - c->in), 0, &je);

		c->have_request = true;
		if (!req) {
			char m[300];

			snprintf(m, sizeof(m), "request is not JSON: %s", je.text);
			api_send_error(c, m);
			api_finish(c);
		} else {
			handle_request(c, req);
			json_decref(req);
		}
	}
}

static void on_client(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct api_client *c = arg;

	if (events & EPOLLOUT)
		client_flush(c);
	if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->dead)
		client_read(c);
	if (c->dead)
		client_free(c);
}

static void on_accept(struct loop *l, int lfd, uint32_t events, void *arg)
{
	struct api *a = arg;

	for (int budget = 64; budget > 0; budget--) {
		int fd = loop_accept(l, lfd, SOCK_CLOEXEC | SOCK_NONBLOCK);
		struct ucred cred;
		socklen_t len = sizeof(cred);
		struct api_client *c;

		if (fd < 0)
			return;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
		    (cred.uid != 0 && cred.uid != geteuid())) {
			static const char msg[] =
				"{\"type\":\"error\",\"error\":\"lanternd: permission denied: only root may use this socket\"}\n";

			log_warn("api: refused a client with uid %u (pid %d): not root",
				 (unsigned)cred.uid, cred.pid);
			if (send(fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
				log_warn("api: could not tell pid %d why: %s", cred.pid, strerror(errno));
			close(fd);
			continue;
		}
		if (!(c = calloc(1, sizeof(*c)))) {
			close(fd);
			continue;
		}
		c->a = a;
		c->fd = fd;
		util_wqueue_init(&c->out, API_MAX_QUEUED);
		if (loop_add(a->loop, fd, EPOLLIN, on_client, c) < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = a->clients;
		a->clients = c;
	}
}

int api_open(struct loop *l, const char *path, struct api **out, struct lerr *e)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[PATH_MAX], *slash;
	struct api *a;
	int fd, err;

	if (strlen(path) >= sizeof(sa.sun_path))
		return lerr_set(e, ENAMETOOLONG, "api: socket path %s is too long", path);
	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) && slash != dir) {
		*slash = '\0';
		util_mkdir_p(dir, 0700);
	}
	strcpy(sa.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
		return lerr_set(e, errno, "api: socket: %s", strerror(errno));
	unlink(path);
	/* the file a bind makes has the socket's mode less the umask: 0600 at most from
	 * the start (umask is the whole process's, not this thread's, so it is left alone) */
	if (fchmod(fd, 0600) < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0600) < 0) {
		err = errno;
		close(fd);
		return lerr_set(e, err, "api: bind %s: %s", path, strerror(err));
	}
	if (!(a = calloc(1, sizeof(*a)))) {
		close(fd);
		return lerr_set(e, ENOMEM, "api: out of memory");
	}
	a->loop = l;
	a->fd = fd;
	snprintf(a->path, sizeof(a->path), "%s", path);
	if (listen(fd, 128) < 0 || loop_add(l, fd, EPOLLIN, on_accept, a) < 0) {
		err = errno;
		close(fd);
		free(a);
		return lerr_set(e, err, "api: listen %s: %s", path, strerror(err));
	}
	*out = a;
	return 0;
}

void api_close(struct api *a)
{
	if (!a)
		return;
	while (a->clients)
		client_free(a->clients);
	loop_del(a->loop, a->fd);
	close(a->fd);
	unlink(a->path);
	free(a);
}
