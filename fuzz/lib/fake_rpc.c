/* fake_rpc.c: the in-memory transport of fake_rpc.h. A stream lives while references to
 * it remain: the module's (given by open, or taken with rpc_stream_ref), the target's
 * (fake_rpc_serve), and the transport's own until on_end has run. */
#include "fake_rpc.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

void (*fake_rpc_poll)(struct rpc_cq *q, int ms);
void (*fake_rpc_sent)(struct rpc_stream *s, const uint8_t *msg, size_t len);
void (*fake_rpc_request)(const char *method, const uint8_t *req, size_t len);

struct call {
	rpc_unary_cb cb;
	void *arg;
	struct call *next;
};

struct rpc_cq {
	struct call *calls, **calls_tail;
	struct rpc_stream *stream;  /* the client stream opened on this queue */
};

struct rpc_channel {
	int unused;
};

struct rpc_stream {
	pthread_mutex_t mu;
	int refs;
	const struct rpc_stream_ops *ops;
	void *arg;
	bool finishing, ended;
	int fin_status;
	struct rpc_cq *q;
};

void rpc_init(void)
{
}

const char *rpc_status_name(int code)
{
	switch (code) {
	case RPC_OK: return "OK";
	case RPC_CANCELLED: return "CANCELLED";
	case RPC_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
	case RPC_PERMISSION_DENIED: return "PERMISSION_DENIED";
	case RPC_RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
	case RPC_UNAVAILABLE: return "UNAVAILABLE";
	case RPC_UNAUTHENTICATED: return "UNAUTHENTICATED";
	default: return "STATUS";
	}
}

struct rpc_cq *rpc_cq_new(void)
{
	struct rpc_cq *q = calloc(1, sizeof(*q));

	if (q)
		q->calls_tail = &q->calls;
	return q;
}

int rpc_cq_poll(struct rpc_cq *q, int ms)
{
	if (fake_rpc_poll)
		fake_rpc_poll(q, ms);
	return 1;
}

void rpc_cq_free(struct rpc_cq *q)
{
	if (!q)
		return;
	while (fake_rpc_answer(q, RPC_CANCELLED, NULL, 0))
		;
	if (q->stream)
		fake_rpc_end(q->stream, RPC_CANCELLED, "cancelled");
	free(q);
}

int rpc_channel_open(const char *target, const struct rpc_tls *tls, struct rpc_channel **out,
		     struct lerr *e)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : lerr_set(e, ENOMEM, "rpc: out of memory");
}

void rpc_channel_close(struct rpc_channel *ch)
{
	free(ch);
}

int rpc_unary(struct rpc_channel *ch, struct rpc_cq *q, const char *method, const void *req,
	      size_t len, int timeout_ms, rpc_unary_cb cb, void *arg)
{
	struct call *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	if (fake_rpc_request)
		fake_rpc_request(method, req, len);
	c->cb = cb;
	c->arg = arg;
	*q->calls_tail = c;
	q->calls_tail = &c->next;
	return 0;
}

bool fake_rpc_answer(struct rpc_cq *q, int status, const uint8_t *resp, size_t len)
{
	struct call *c = q->calls;

	if (!c)
		return false;
	q->calls = c->next;
	if (!q->calls)
		q->calls_tail = &q->calls;
	c->cb(c->arg, status, status == RPC_OK ? "" : rpc_status_name(status),
	      status == RPC_OK ? resp : NULL, status == RPC_OK ? len : 0);
	free(c);
	return true;
}

static struct rpc_stream *stream_new(const struct rpc_stream_ops *ops, void *arg, int refs)
{
	struct rpc_stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	pthread_mutex_init(&s->mu, NULL);
	s->refs = refs;
	s->ops = ops;
	s->arg = arg;
	return s;
}

int rpc_stream_open(struct rpc_channel *ch, struct rpc_cq *q, const char *method,
		    const struct rpc_stream_ops *ops, void *arg, struct rpc_stream **out)
{
	/* the caller's reference and the transport's */
	struct rpc_stream *s = stream_new(ops, arg, 2);

	if (!s)
		return -ENOMEM;
	if (q->stream)
		fake_rpc_end(q->stream, RPC_CANCELLED, "replaced");
	s->q = q;
	q->stream = s;
	*out = s;
	return 0;
}

struct rpc_stream *fake_rpc_stream(struct rpc_cq *q)
{
	return q->stream;
}

int rpc_stream_send(struct rpc_stream *s, const void *msg, size_t len)
{
	bool closed;

	pthread_mutex_lock(&s->mu);
	closed = s->ended || s->finishing;
	pthread_mutex_unlock(&s->mu);
	if (closed)
		return -EPIPE;
	if (fake_rpc_sent)
		fake_rpc_sent(s, msg, len);
	return 0;
}

void rpc_stream_finish(struct rpc_stream *s, int status, const char *details)
{
	pthread_mutex_lock(&s->mu);
	if (!s->finishing && !s->ended) {
		s->finishing = true;
		s->fin_status = status;
	}
	pthread_mutex_unlock(&s->mu);
}

bool fake_rpc_finished(struct rpc_stream *s, int *status)
{
	bool f;

	pthread_mutex_lock(&s->mu);
	f = s->finishing;
	*status = s->fin_status;
	pthread_mutex_unlock(&s->mu);
	return f;
}

void rpc_stream_ref(struct rpc_stream *s)
{
	pthread_mutex_lock(&s->mu);
	s->refs++;
	pthread_mutex_unlock(&s->mu);
}

void rpc_stream_unref(struct rpc_stream *s)
{
	bool last;

	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	last = --s->refs == 0;
	pthread_mutex_unlock(&s->mu);
	if (last) {
		pthread_mutex_destroy(&s->mu);
		free(s);
	}
}

void fake_rpc_deliver(struct rpc_stream *s, const uint8_t *msg, size_t len)
{
	bool open;

	pthread_mutex_lock(&s->mu);
	open = !s->ended && !s->finishing;
	pthread_mutex_unlock(&s->mu);
	if (open && s->ops && s->ops->on_msg)
		s->ops->on_msg(s, s->arg, msg, len);
}

void fake_rpc_end(struct rpc_stream *s, int status, const char *details)
{
	bool was;

	pthread_mutex_lock(&s->mu);
	was = s->ended;
	s->ended = true;
	if (s->finishing)
		status = s->fin_status;
	pthread_mutex_unlock(&s->mu);
	if (was)
		return;
	if (s->q && s->q->stream == s)
		s->q->stream = NULL;
	if (s->ops && s->ops->on_end)
		s->ops->on_end(s, s->arg, status, details ? details : "");
	rpc_stream_unref(s);
}

struct rpc_stream *fake_rpc_serve(const struct rpc_method *m, void *arg)
{
	/* the transport's reference and the target's */
	struct rpc_stream *s = stream_new(NULL, NULL, 2);

	if (!s)
		return NULL;
	m->stream(arg, s, &s->ops, &s->arg);
	return s;
}

void fake_rpc_release(struct rpc_stream *s)
{
	rpc_stream_unref(s);
}

int rpc_server_open(const char *addr, const struct rpc_tls *tls, size_t max_msg,
		    const struct rpc_method *methods, size_t n, void *arg, struct rpc_cq *q,
		    struct rpc_server **out, struct lerr *e)
{
	return lerr_set(e, ENOTSUP, "rpc: the fuzz targets serve no network");
}

void rpc_server_shutdown(struct rpc_server *s)
{
}
