/* local.c: the harness API served inside lanternd's own process (no lantern-wire): the
 * HTTP server of userspace/harness on the run's socket, each request decoded by call.c
 * and handed to durable_call, answers written back on the connection. */
#include <stdlib.h>

#include "durable_internal.h"

static bool on_accept(void *arg, pid_t pid, char *why, size_t len)
{
	return durable_caller_ok(arg, pid, why, len);
}

static void on_request(void *arg, struct harness_conn *c, const struct harness_request *rq)
{
	struct durable_run *du = arg;
	struct harness_call call;
	char why[512];
	int status = harness_call_decode_request(rq, &call, why, sizeof(why));

	if (status)
		durable_reply_error(du->d, c, status, status == 400 ? "invalid" : "not_found", why);
	else
		durable_call(du, c, &call);
	harness_call_free(&call);
}

static void on_closed(void *arg, struct harness_conn *c)
{
	struct durable_run *du = arg;

	durable_forget_peer(du->d, c);
}

static const struct harness_ops local_ops = {
	.accept = on_accept,
	.request = on_request,
	.closed = on_closed,
};

static int local_listen(void *arg, struct durable_run *du, const char *path, int fd, void **listener,
			struct lerr *e)
{
	if (fd >= 0)
		return harness_serve(du->d->loop, fd, &local_ops, du, (struct harness_server **)listener, e);
	return harness_listen(du->d->loop, path, &local_ops, du, (struct harness_server **)listener, e);
}

static void local_unlisten(void *arg, void *listener)
{
	harness_server_close(listener);
}

static void local_reply(void *arg, void *peer, int status, const char *json, size_t len)
{
	harness_reply(peer, status, json, len);
}

const struct durable_transport durable_local_transport = {
	.listen = local_listen,
	.unlisten = local_unlisten,
	.reply = local_reply,
};
