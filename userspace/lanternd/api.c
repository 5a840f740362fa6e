/* api.c: lanternd's local API, a Unix stream socket (mode 0600) for the lantern CLI.
 *
 * Only root (or lanternd's own uid) may connect: the peer's credentials are checked on
 * accept, and everyone else is told why and disconnected. A client sends one request,
 * a JSON object on one line; lanternd answers with JSON lines ({"type": ...}). `run`
 * keeps the connection to stream the workload's output and its end. Writes never
 * block the loop: what the client cannot take yet is queued (bounded). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

#include "lanternd.h"
#include "lantern/util.h"

#define API_MAX_REQUEST (4u << 20)
#define API_MAX_QUEUED  (16u << 20)

struct client {
	struct daemon *d;
	int fd;
	char *in;
	size_t in_len;
	bool have_request;
	char *out;
	size_t out_len, out_off;
	bool closing;      /* close once out is written */
	bool dead;
	uint64_t reap_timer;
	struct client *next;
};

static struct client *clients;

static void client_free(struct client *c)
{
	struct daemon *d = c->d;

	if (c->reap_timer)
		loop_timer_cancel(d->loop, c->reap_timer);
	run_unfollow_client(d, c);
	logs_unfollow_client(d, c);
	loop_del(d->loop, c->fd);
	close(c->fd);
	for (struct client **pp = &clients; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	free(c->in);
	free(c->out);
	free(c);
}

static void reap_timer_fired(struct loop *l, void *arg)
{
	struct client *c = arg;

	c->reap_timer = 0;
	client_free(c);
}

/* Marks c for closing; it is freed from the loop, never under a caller's feet. */
static void client_kill(struct client *c)
{
	c->dead = true;
	if (!c->reap_timer)
		c->reap_timer = loop_timer_add(c->d->loop, 0, reap_timer_fired, c);
}

static void client_flush(struct client *c)
{
	while (c->out_off < c->out_len) {
		ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				loop_mod(c->d->loop, c->fd, EPOLLIN | EPOLLOUT);
				return;
			}
			client_kill(c);
			return;
		}
		c->out_off += (size_t)w;
	}
	c->out_len = c->out_off = 0;
	loop_mod(c->d->loop, c->fd, EPOLLIN);
	if (c->closing)
		client_kill(c);
}

static void client_queue(struct client *c, const char *buf, size_t len)
{
	if (c->dead)
		return;
	if (c->out_len - c->out_off + len > API_MAX_QUEUED) {
		log_warn("api: client not reading, %u bytes queued: dropped", API_MAX_QUEUED);
		client_kill(c);
		return;
	}
	if (c->out_off) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	char *n = realloc(c->out, c->out_len + len);
	if (!n) {
		client_kill(c);
		return;
	}
	c->out = n;
	memcpy(c->out + c->out_len, buf, len);
	c->out_len += len;
	client_flush(c);
}

/* Dead clients are freed from the loop callbacks only, where nothing else holds them. */
static void client_reap(struct client *c)
{
	if (c->dead)
		client_free(c);
}

void api_send(struct client *c, json_t *msg)
{
	char *s = json_dumps(msg, JSON_COMPACT | JSON_SORT_KEYS);

	json_decref(msg);
	if (!s)
		return;
	client_queue(c, s, strlen(s));
	client_queue(c, "\n", 1);
	free(s);
}

void api_send_output(struct client *c, int fd, const char *buf, size_t len)
{
	size_t b64len = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
	char *b64 = malloc(b64len);

	if (!b64)
		return;
	sodium_bin2base64(b64, b64len, (const unsigned char *)buf, len,
			  sodium_base64_VARIANT_ORIGINAL);
	api_send(c, json_pack("{s:s, s:i, s:s}", "type", "output", "fd", fd, "data", b64));
	free(b64);
}

void api_finish(struct client *c)
{
	c->closing = true;
	if (c->out_len == c->out_off)
		client_kill(c);
}

static json_t *err_msg(const char *msg)
{
	return json_pack("{s:s, s:s}", "type", "error", "error", msg);
}

static void handle_request(struct client *c, json_t *req)
{
	struct daemon *d = c->d;
	const char *op = json_string_value(json_object_get(req, "op"));
	const char *run_id = json_string_value(json_object_get(req, "run_id"));
	struct lerr e = { 0 };
	struct run *r = NULL;

	if (!op) {
		api_send(c, err_msg("request has no \"op\""));
		api_finish(c);
		return;
	}
	if (run_id && strcmp(op, "run")) {
		r = run_find(d, run_id);
		if (!r) {
			snprintf(e.msg, sizeof(e.msg), "no run \"%s\" on this node", run_id);
			api_send(c, err_msg(e.msg));
			api_finish(c);
			return;
		}
	}

	if (!strcmp(op, "run")) {
		const char *file = json_string_value(json_object_get(req, "file"));
		json_t *y = json_object_get(req, "yaml");

		if (!file || !json_is_string(y)) {
			api_send(c, err_msg("run needs \"file\" and \"yaml\""));
		} else if (run_submit(d, file, json_string_value(y), json_string_length(y),
				      json_object_get(req, "input"), &r, &e) < 0) {
			api_send(c, err_msg(e.msg));
		} else {
			api_send(c, json_pack("{s:s, s:s, s:s}", "type", "accepted", "run_id", r->id,
					      "instance_id", r->instance_id));
			if (json_is_true(json_object_get(req, "follow"))) {
				run_follow(r, c);
				return;
			}
		}
	} else if (!strcmp(op, "ps")) {
		json_t *arr = json_array();
		for (struct run *x = d->runs; x; x = x->next)
			json_array_append_new(arr, run_json(x));
		api_send(c, json_pack("{s:s, s:o}", "type", "runs", "runs", arr));
	} else if (!strcmp(op, "kill")) {
		if (!r)
			api_send(c, err_msg("kill needs \"run_id\""));
		else if (run_cancel(d, r, &e) < 0)
			api_send(c, err_msg(e.msg));
		else
			api_send(c, json_pack("{s:s, s:s}", "type", "ok", "run_id", r->id));
	} else if (!strcmp(op, "audit_egress")) {
		json_t *arr = json_array();
		if (r) {
			json_array_append_new(arr, egress_audit_json(d, r));
		} else {
			for (struct run *x = d->runs; x; x = x->next)
				if (!run_status_final(x->status))
					json_array_append_new(arr, egress_audit_json(d, x));
		}
		api_send(c, json_pack("{s:s, s:o}", "type", "audit", "runs", arr));
	} else if (!strcmp(op, "egress_update")) {
		const char *file = json_string_value(json_object_get(req, "file"));
		json_t *y = json_object_get(req, "yaml");

		if (!r || !file || !json_is_string(y))
			api_send(c, err_msg("egress_update needs \"run_id\", \"file\" and \"yaml\""));
		else if (run_egress_update(d, r, file, json_string_value(y), json_string_length(y), &e) < 0)
			api_send(c, err_msg(e.msg));
		else
			api_send(c, json_pack("{s:s, s:s}", "type", "ok", "run_id", r->id));
	} else if (!strcmp(op, "journal")) {
		if (!r)
			api_send(c, err_msg("journal needs \"run_id\""));
		else
			api_send(c, durable_journal_json(d, r));
	} else if (!strcmp(op, "follow")) {
		if (!r) {
			api_send(c, err_msg("follow needs \"run_id\""));
		} else {
			run_follow(r, c);
			return;
		}
	} else if (!strcmp(op, "logs")) {
		if (!r) {
			api_send(c, err_msg("logs needs \"run_id\""));
		} else {
			logs_request(d, c, r, req);
			return;
		}
	} else if (ocirun_api(d, c, op, req)) {
		return;
	} else if (telemetry_api(c, d, op, r, req)) {
		/* trace, cost: answered */
	} else {
		snprintf(e.msg, sizeof(e.msg), "unknown op \"%s\"", op);
		api_send(c, err_msg(e.msg));
	}
	api_finish(c);
}

static void on_client(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct client *c = arg;

	if (events & EPOLLOUT)
		client_flush(c);
	if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->dead) {
		char buf[65536];
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			client_kill(c);
		} else if (n > 0 && !c->have_request) {
			char *nl;
			char *in = realloc(c->in, c->in_len + (size_t)n + 1);

			if (!in || c->in_len + (size_t)n > API_MAX_REQUEST) {
				free(in);
				c->in = NULL;
				api_send(c, err_msg("request too large (4 MiB at most)"));
				api_finish(c);
			} else {
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
						api_send(c, err_msg(m));
						api_finish(c);
					} else {
						handle_request(c, req);
						json_decref(req);
					}
				}
			}
		}
	}
	client_reap(c);
}

static void on_accept(struct loop *l, int lfd, uint32_t events, void *arg)
{
	struct daemon *d = arg;

	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		struct ucred cred;
		socklen_t len = sizeof(cred);
		struct client *c;

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
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->d = d;
		c->fd = fd;
		if (loop_add(d->loop, fd, EPOLLIN, on_client, c) < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = clients;
		clients = c;
	}
}

int api_open(struct daemon *d, struct lerr *e)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char dir[PATH_MAX];
	char *slash;
	int fd;
	mode_t old;

	if (strlen(d->o.socket) >= sizeof(a.sun_path))
		return lerr_set(e, ENAMETOOLONG, "api: socket path %s is too long", d->o.socket);
	snprintf(dir, sizeof(dir), "%s", d->o.socket);
	if ((slash = strrchr(dir, '/')) && slash != dir) {
		*slash = '\0';
		util_mkdir_p(dir, 0700);
	}
	strcpy(a.sun_path, d->o.socket);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return lerr_set(e, errno, "api: socket: %s", strerror(errno));
	unlink(d->o.socket);
	old = umask(0077);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int err = errno;
		umask(old);
		close(fd);
		return lerr_set(e, err, "api: bind %s: %s", d->o.socket, strerror(err));
	}
	umask(old);
	chmod(d->o.socket, 0600);
	if (listen(fd, 128) < 0 || loop_add(d->loop, fd, EPOLLIN, on_accept, d) < 0) {
		int err = errno;
		close(fd);
		return lerr_set(e, err, "api: listen %s: %s", d->o.socket, strerror(err));
	}
	return 0;
}
