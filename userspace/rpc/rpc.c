/* rpc.c: unary calls and bidirectional streams over the gRPC C core API, for the
 * tunnel's two ends (lanternd dials, lantern-cp serves) and the OTLP/gRPC exporter.
 *
 * Every operation is a batch on a call whose completion lands on one completion queue
 * as a tag; a tag is a struct with the function to run, so rpc_cq_poll only dispatches.
 * A stream keeps at most one receive and one send batch in flight (gRPC's rule), queues
 * what is sent while a send is in flight, and counts a ref for every batch in flight so
 * it is freed only after the last completion. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "lantern/rpc.h"
#include "lantern/util.h"

struct rpc_tag {
	void (*fn)(struct rpc_tag *t, bool ok);
};

#define container_of(p, type, member) ((type *)((char *)(p) - __builtin_offsetof(type, member)))

static pthread_once_t rpc_once = PTHREAD_ONCE_INIT;

static void rpc_init_once(void)
{
	gpr_set_log_verbosity(GPR_LOG_SEVERITY_ERROR);
	grpc_init();
}

void rpc_init(void)
{
	pthread_once(&rpc_once, rpc_init_once);
}

const char *rpc_status_name(int code)
{
	static const char *const names[] = {
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
		"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
		"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
		"UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
	};
	return code >= 0 && (size_t)code < ARRAY_SIZE(names) ? names[code] : "?";
}

static gpr_timespec deadline_ms(int ms)
{
	if (ms < 0)
		return gpr_inf_future(GPR_CLOCK_REALTIME);
	return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

static grpc_byte_buffer *bb_from(const void *p, size_t len)
{
	grpc_slice s = grpc_slice_from_copied_buffer(p, len);
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);

	grpc_slice_unref(s);
	return bb;
}

/* The whole message as one slice (the caller unrefs it). */
static grpc_slice bb_slice(grpc_byte_buffer *bb)
{
	grpc_byte_buffer_reader r;
	grpc_slice s;

	if (!grpc_byte_buffer_reader_init(&r, bb))
		return grpc_empty_slice();
	s = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	return s;
}

static char *slice_strdup(grpc_slice s)
{
	return strndup((const char *)GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s));
}

/* --- completion queue --- */

struct rpc_cq {
	grpc_completion_queue *cq;
};

struct rpc_cq *rpc_cq_new(void)
{
	struct rpc_cq *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	rpc_init();
	q->cq = grpc_completion_queue_create_for_next(NULL);
	return q;
}

int rpc_cq_poll(struct rpc_cq *q, int ms)
{
	grpc_event ev = grpc_completion_queue_next(q->cq, deadline_ms(ms), NULL);

	if (ev.type == GRPC_QUEUE_TIMEOUT)
		return 0;
	if (ev.type == GRPC_QUEUE_SHUTDOWN)
		return -ESHUTDOWN;
	((struct rpc_tag *)ev.tag)->fn(ev.tag, ev.success != 0);
	return 1;
}

void rpc_cq_free(struct rpc_cq *q)
{
	if (!q)
		return;
	grpc_completion_queue_shutdown(q->cq);
	while (rpc_cq_poll(q, -1) != -ESHUTDOWN)
		;
	grpc_completion_queue_destroy(q->cq);
	free(q);
}

/* --- channels --- */

struct rpc_channel {
	grpc_channel *ch;
};

int rpc_channel_open(const char *target, const struct rpc_tls *tls, struct rpc_channel **out,
		     struct lerr *e)
{
	grpc_arg args[] = {
		/* the caller's own backoff (tunnel, OTLP exporter) decides when to retry; the
		 * channel reconnects fast */
		{ GRPC_ARG_INTEGER, (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, { .integer = 200 } },
		{ GRPC_ARG_INTEGER, (char *)GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, { .integer = 200 } },
		{ GRPC_ARG_INTEGER, (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, { .integer = 5000 } },
		/* a peer that vanished without a FIN is noticed within a minute */
		{ GRPC_ARG_INTEGER, (char *)GRPC_ARG_KEEPALIVE_TIME_MS, { .integer = 30000 } },
		{ GRPC_ARG_INTEGER, (char *)GRPC_ARG_KEEPALIVE_TIMEOUT_MS, { .integer = 10000 } },
		{ GRPC_ARG_INTEGER, (char *)GRPC_ARG_ENABLE_RETRIES, { .integer = 0 } },
	};
	grpc_channel_args ca = { ARRAY_SIZE(args), args };
	grpc_channel_credentials *creds;
	struct rpc_channel *c;
	char *pem = NULL;
	int err;

	rpc_init();
	if (tls->insecure) {
		creds = grpc_insecure_credentials_create();
	} else {
		if (tls->ca_file && (err = util_read_file(tls->ca_file, &pem, NULL)) < 0)
			return lerr_set(e, err, "rpc: channel to %s: CA file %s: %s", target,
					tls->ca_file, strerror(-err));
		creds = grpc_ssl_credentials_create(pem, NULL, NULL, NULL);
		free(pem);
	}
	if (!creds)
		return lerr_set(e, -EINVAL, "rpc: channel to %s: cannot make its credentials", target);
	c = calloc(1, sizeof(*c));
	if (!c) {
		grpc_channel_credentials_release(creds);
		return lerr_set(e, -ENOMEM, "rpc: channel to %s: out of memory", target);
	}
	c->ch = grpc_channel_create(target, creds, &ca);
	grpc_channel_credentials_release(creds);
	if (!c->ch) {
		free(c);
		return lerr_set(e, -EINVAL, "rpc: cannot make a channel to %s", target);
	}
	*out = c;
	return 0;
}

void rpc_channel_close(struct rpc_channel *ch)
{
	if (!ch)
		return;
	grpc_channel_destroy(ch->ch);
	free(ch);
}

/* --- client unary --- */

struct unary {
	struct rpc_tag tag;
	grpc_call *call;
	grpc_byte_buffer *send, *recv;
	grpc_metadata_array md_init, md_trail;
	grpc_status_code status;
	grpc_slice details;
	rpc_unary_cb cb;
	void *arg;
};

static void unary_done(struct rpc_tag *t, bool ok)
{
	struct unary *u = container_of(t, struct unary, tag);
	char *details = slice_strdup(u->details);
	int status = ok ? (int)u->status : RPC_UNAVAILABLE;

	if (status == RPC_OK && u->recv) {
		grpc_slice s = bb_slice(u->recv);
		u->cb(u->arg, status, details, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s));
		grpc_slice_unref(s);
	} else {
		u->cb(u->arg, status == RPC_OK ? RPC_INTERNAL : status,
		      status == RPC_OK ? "no response message" : details, NULL, 0);
	}
	free(details);
	grpc_byte_buffer_destroy(u->send);
	if (u->recv)
		grpc_byte_buffer_destroy(u->recv);
	grpc_metadata_array_destroy(&u->md_init);
	grpc_metadata_array_destroy(&u->md_trail);
	grpc_slice_unref(u->details);
	grpc_call_unref(u->call);
	free(u);
}

int rpc_unary(struct rpc_channel *ch, struct rpc_cq *q, const char *method, const void *req,
	      size_t len, int timeout_ms, rpc_unary_cb cb, void *arg)
{
	struct unary *u = calloc(1, sizeof(*u));
	grpc_slice m = grpc_slice_from_copied_string(method);
	grpc_op ops[6];

	if (!u)
		return -ENOMEM;
	u->tag.fn = unary_done;
	u->cb = cb;
	u->arg = arg;
	u->call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, q->cq, m, NULL,
					   deadline_ms(timeout_ms), NULL);
	grpc_slice_unref(m);
	u->send = bb_from(req, len);
	grpc_metadata_array_init(&u->md_init);
	grpc_metadata_array_init(&u->md_trail);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = u->send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &u->md_init;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &u->recv;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &u->md_trail;
	ops[5].data.recv_status_on_client.status = &u->status;
	ops[5].data.recv_status_on_client.status_details = &u->details;
	if (grpc_call_start_batch(u->call, ops, 6, &u->tag, NULL) != GRPC_CALL_OK) {
		grpc_byte_buffer_destroy(u->send);
		grpc_metadata_array_destroy(&u->md_init);
		grpc_metadata_array_destroy(&u->md_trail);
		grpc_call_unref(u->call);
		free(u);
		return -EIO;
	}
	return 0;
}

/* --- streams --- */

struct qmsg {
	grpc_byte_buffer *bb;
	struct qmsg *next;
};

struct rpc_stream {
	pthread_mutex_t mu;
	int refs;                   /* caller's refs + one per batch in flight */
	bool server;
	grpc_call *call;
	const struct rpc_stream_ops *ops;
	void *arg;

	struct rpc_tag start_tag, md_tag, recv_tag, send_tag, fin_tag, end_tag;
	grpc_byte_buffer *recv_buf, *send_buf;
	struct qmsg *qhead, *qtail;
	bool started;               /* initial metadata sent: messages may follow */
	bool sending;
	bool finishing, fin_sent;
	int fin_status;
	grpc_slice fin_details;
	bool recv_done, end_done, ended;
	grpc_metadata_array md_init, md_trail;
	grpc_status_code status;
	grpc_slice details;
	int cancelled;
};

static void stream_free(struct rpc_stream *s)
{
	while (s->qhead) {
		struct qmsg *m = s->qhead;
		s->qhead = m->next;
		grpc_byte_buffer_destroy(m->bb);
		free(m);
	}
	grpc_metadata_array_destroy(&s->md_init);
	grpc_metadata_array_destroy(&s->md_trail);
	grpc_slice_unref(s->details);
	grpc_slice_unref(s->fin_details);
	if (s->call)
		grpc_call_unref(s->call);
	pthread_mutex_destroy(&s->mu);
	free(s);
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
	if (last)
		stream_free(s);
}

/* Starts one batch holding a ref; with s->mu held. */
static bool stream_batch(struct rpc_stream *s, grpc_op *ops, size_t n, struct rpc_tag *tag)
{
	if (grpc_call_start_batch(s->call, ops, n, tag, NULL) != GRPC_CALL_OK)
		return false;
	s->refs++;
	return true;
}

/* Sends the next queued message, or the final status once the queue is empty. */
static void stream_pump_locked(struct rpc_stream *s)
{
	grpc_op op[2];

	if (!s->started || s->sending || s->fin_sent || s->ended)
		return;
	memset(op, 0, sizeof(op));
	if (s->qhead) {
		struct qmsg *m = s->qhead;

		s->qhead = m->next;
		if (!s->qhead)
			s->qtail = NULL;
		s->send_buf = m->bb;
		free(m);
		op[0].op = GRPC_OP_SEND_MESSAGE;
		op[0].data.send_message.send_message = s->send_buf;
		if (stream_batch(s, op, 1, &s->send_tag)) {
			s->sending = true;
		} else {
			grpc_byte_buffer_destroy(s->send_buf);
			s->send_buf = NULL;
		}
		return;
	}
	if (!s->finishing)
		return;
	s->fin_sent = true;
	if (!s->server) {
		grpc_call_cancel(s->call, NULL);
		return;
	}
	op[0].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	op[0].data.send_status_from_server.status = (grpc_status_code)s->fin_status;
	op[0].data.send_status_from_server.status_details = &s->fin_details;
	stream_batch(s, op, 1, &s->fin_tag);
}

static void stream_maybe_end(struct rpc_stream *s)
{
	int status;
	char *details;

	pthread_mutex_lock(&s->mu);
	if (s->ended || !s->recv_done || !s->end_done) {
		pthread_mutex_unlock(&s->mu);
		return;
	}
	s->ended = true;
	if (s->server) {
		status = s->cancelled && !s->fin_sent ? RPC_CANCELLED : s->fin_status;
		details = slice_strdup(s->fin_details);
	} else {
		status = (int)s->status;
		details = slice_strdup(s->details);
	}
	pthread_mutex_unlock(&s->mu);
	if (s->ops && s->ops->on_end)
		s->ops->on_end(s, s->arg, status, details ? details : "");
	free(details);
}

static void stream_recv_start(struct rpc_stream *s)
{
	grpc_op op;

	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &s->recv_buf;
	pthread_mutex_lock(&s->mu);
	s->recv_buf = NULL;
	if (!stream_batch(s, &op, 1, &s->recv_tag))
		s->recv_done = true;
	pthread_mutex_unlock(&s->mu);
}

static void on_recv(struct rpc_tag *t, bool ok)
{
	struct rpc_stream *s = container_of(t, struct rpc_stream, recv_tag);

	if (ok && s->recv_buf) {
		grpc_slice sl = bb_slice(s->recv_buf);

		grpc_byte_buffer_destroy(s->recv_buf);
		s->recv_buf = NULL;
		if (s->ops && s->ops->on_msg && !s->ended)
			s->ops->on_msg(s, s->arg, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl));
		grpc_slice_unref(sl);
		stream_recv_start(s);
	} else {
		/* the peer half-closed or the call ended: a server answers with its status */
		pthread_mutex_lock(&s->mu);
		s->recv_done = true;
		if (s->server && !s->finishing) {
			s->finishing = true;
			s->fin_status = RPC_OK;
			stream_pump_locked(s);
		}
		pthread_mutex_unlock(&s->mu);
		stream_maybe_end(s);
	}
	rpc_stream_unref(s);
}

static void on_send(struct rpc_tag *t, bool ok)
{
	struct rpc_stream *s = container_of(t, struct rpc_stream, send_tag);

	pthread_mutex_lock(&s->mu);
	grpc_byte_buffer_destroy(s->send_buf);
	s->send_buf = NULL;
	s->sending = false;
	if (ok)
		stream_pump_locked(s);
	pthread_mutex_unlock(&s->mu);
	rpc_stream_unref(s);
}

static void on_started(struct rpc_tag *t, bool ok)
{
	struct rpc_stream *s = container_of(t, struct rpc_stream, start_tag);

	pthread_mutex_lock(&s->mu);
	s->started = ok;
	if (ok)
		stream_pump_locked(s);
	pthread_mutex_unlock(&s->mu);
	rpc_stream_unref(s);
}

static void on_md(struct rpc_tag *t, bool ok)
{
	struct rpc_stream *s = container_of(t, struct rpc_stream, md_tag);

	if (ok) {
		stream_recv_start(s);
	} else {
		pthread_mutex_lock(&s->mu);
		s->recv_done = true;
		pthread_mutex_unlock(&s->mu);
		stream_maybe_end(s);
	}
	rpc_stream_unref(s);
}

static void on_fin(struct rpc_tag *t, bool ok)
{
	rpc_stream_unref(container_of(t, struct rpc_stream, fin_tag));
}

static void on_end(struct rpc_tag *t, bool ok)
{
	struct rpc_stream *s = container_of(t, struct rpc_stream, end_tag);

	pthread_mutex_lock(&s->mu);
	s->end_done = true;
	if (!ok && !s->server) {
		s->status = GRPC_STATUS_UNAVAILABLE;
	}
	pthread_mutex_unlock(&s->mu);
	stream_maybe_end(s);
	rpc_stream_unref(s);
}

static struct rpc_stream *stream_new(grpc_call *call, bool server)
{
	struct rpc_stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	pthread_mutex_init(&s->mu, NULL);
	s->server = server;
	s->call = call;
	s->refs = 1;
	s->start_tag.fn = on_started;
	s->md_tag.fn = on_md;
	s->recv_tag.fn = on_recv;
	s->send_tag.fn = on_send;
	s->fin_tag.fn = on_fin;
	s->end_tag.fn = on_end;
	s->details = grpc_empty_slice();
	s->fin_details = grpc_empty_slice();
	grpc_metadata_array_init(&s->md_init);
	grpc_metadata_array_init(&s->md_trail);
	return s;
}

int rpc_stream_open(struct rpc_channel *ch, struct rpc_cq *q, const char *method,
		    const struct rpc_stream_ops *ops, void *arg, struct rpc_stream **out)
{
	grpc_slice m = grpc_slice_from_copied_string(method);
	grpc_call *call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, q->cq, m,
						   NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	struct rpc_stream *s;
	grpc_op op;
	bool ok;

	grpc_slice_unref(m);
	if (!call)
		return -EIO;
	s = stream_new(call, false);
	if (!s) {
		grpc_call_unref(call);
		return -ENOMEM;
	}
	s->ops = ops;
	s->arg = arg;
	pthread_mutex_lock(&s->mu);
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_INITIAL_METADATA;
	ok = stream_batch(s, &op, 1, &s->start_tag);
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	op.data.recv_status_on_client.trailing_metadata = &s->md_trail;
	op.data.recv_status_on_client.status = &s->status;
	op.data.recv_status_on_client.status_details = &s->details;
	ok = ok && stream_batch(s, &op, 1, &s->end_tag);
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_INITIAL_METADATA;
	op.data.recv_initial_metadata.recv_initial_metadata = &s->md_init;
	ok = ok && stream_batch(s, &op, 1, &s->md_tag);
	pthread_mutex_unlock(&s->mu);
	if (!ok) {
		grpc_call_cancel(call, NULL);
		rpc_stream_unref(s);
		return -EIO;
	}
	*out = s;
	return 0;
}

int rpc_stream_send(struct rpc_stream *s, const void *msg, size_t len)
{
	struct qmsg *m;

	pthread_mutex_lock(&s->mu);
	if (s->ended || s->finishing) {
		pthread_mutex_unlock(&s->mu);
		return -EPIPE;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		pthread_mutex_unlock(&s->mu);
		return -ENOMEM;
	}
	m->bb = bb_from(msg, len);
	if (s->qtail)
		s->qtail->next = m;
	else
		s->qhead = m;
	s->qtail = m;
	stream_pump_locked(s);
	pthread_mutex_unlock(&s->mu);
	return 0;
}

void rpc_stream_finish(struct rpc_stream *s, int status, const char *details)
{
	pthread_mutex_lock(&s->mu);
	if (!s->finishing && !s->ended) {
		s->finishing = true;
		s->fin_status = status;
		grpc_slice_unref(s->fin_details);
		s->fin_details = grpc_slice_from_copied_string(details ? details : "");
		if (!s->server) {
			/* a client stops at once: nothing queued matters any more */
			s->fin_sent = true;
			grpc_call_cancel(s->call, NULL);
		} else {
			stream_pump_locked(s);
		}
	}
	pthread_mutex_unlock(&s->mu);
}

/* --- server --- */

struct rpc_server {
	grpc_server *srv;
	struct rpc_cq *q;
	const struct rpc_method *methods;
	size_t n;
	void *arg;
	bool shutting_down, shutdown_done;
	struct rpc_tag shutdown_tag;
};

struct newcall {
	struct rpc_tag tag;
	struct rpc_server *s;
	grpc_call *call;
	grpc_call_details details;
	grpc_metadata_array md;
};

/* A unary call being served: receive, handle, answer. */
struct userve {
	struct rpc_tag tag;
	const struct rpc_method *m;
	struct rpc_server *s;
	grpc_call *call;
	grpc_byte_buffer *recv, *send;
	grpc_slice details;
	int cancelled;
	bool answered;
};

static void server_request(struct rpc_server *s);

static void userve_answer(struct userve *u, int status, const char *details, struct rpc_buf *resp)
{
	grpc_op ops[4];
	size_t n = 0;

	memset(ops, 0, sizeof(ops));
	u->answered = true;
	u->details = grpc_slice_from_copied_string(details ? details : "");
	ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	if (status == RPC_OK && resp) {
		u->send = bb_from(resp->data ? (void *)resp->data : (void *)"", resp->len);
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = u->send;
	}
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = (grpc_status_code)status;
	ops[n++].data.send_status_from_server.status_details = &u->details;
	ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[n++].data.recv_close_on_server.cancelled = &u->cancelled;
	if (grpc_call_start_batch(u->call, ops, n, &u->tag, NULL) != GRPC_CALL_OK)
		u->tag.fn(&u->tag, false);
}

static void userve_step(struct rpc_tag *t, bool ok)
{
	struct userve *u = container_of(t, struct userve, tag);
	struct rpc_buf resp = { 0 };
	char details[512] = "";
	int status;

	if (u->answered) {
		if (u->recv)
			grpc_byte_buffer_destroy(u->recv);
		if (u->send)
			grpc_byte_buffer_destroy(u->send);
		grpc_slice_unref(u->details);
		grpc_call_unref(u->call);
		free(u);
		return;
	}
	if (!ok || !u->recv) {
		userve_answer(u, RPC_INVALID_ARGUMENT, "a unary call needs one request message", NULL);
		return;
	}
	grpc_slice sl = bb_slice(u->recv);
	status = u->m->unary(u->s->arg, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl), &resp,
			     details, sizeof(details));
	grpc_slice_unref(sl);
	userve_answer(u, status, details, &resp);
	free(resp.data);
}

static void serve_unimplemented(grpc_call *call, const char *why)
{
	struct userve *u = calloc(1, sizeof(*u));

	if (!u) {
		grpc_call_cancel(call, NULL);
		grpc_call_unref(call);
		return;
	}
	u->tag.fn = userve_step;
	u->call = call;
	userve_answer(u, 12 /* UNIMPLEMENTED */, why, NULL);
}

static void serve_stream(struct rpc_server *srv, const struct rpc_method *m, grpc_call *call)
{
	struct rpc_stream *s = stream_new(call, true);
	const struct rpc_stream_ops *ops = NULL;
	void *sarg = NULL;
	grpc_op op;
	bool ok;

	if (!s) {
		grpc_call_cancel(call, NULL);
		grpc_call_unref(call);
		return;
	}
	pthread_mutex_lock(&s->mu);
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_INITIAL_METADATA;
	ok = stream_batch(s, &op, 1, &s->start_tag);
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	op.data.recv_close_on_server.cancelled = &s->cancelled;
	ok = ok && stream_batch(s, &op, 1, &s->end_tag);
	pthread_mutex_unlock(&s->mu);
	if (!ok) {
		grpc_call_cancel(call, NULL);
		rpc_stream_unref(s);
		return;
	}
	m->stream(srv->arg, s, &ops, &sarg);
	s->ops = ops;
	s->arg = sarg;
	stream_recv_start(s);
	/* the server's own ref goes: batches and the handler's refs keep it alive */
	rpc_stream_unref(s);
}

static void on_newcall(struct rpc_tag *t, bool ok)
{
	struct newcall *nc = container_of(t, struct newcall, tag);
	struct rpc_server *s = nc->s;
	const struct rpc_method *m = NULL;

	if (ok) {
		for (size_t i = 0; i < s->n; i++)
			if (!grpc_slice_str_cmp(nc->details.method, s->methods[i].path))
				m = &s->methods[i];
		if (!m) {
			serve_unimplemented(nc->call, "no such method");
		} else if (m->unary) {
			struct userve *u = calloc(1, sizeof(*u));
			grpc_op op;

			if (!u) {
				grpc_call_cancel(nc->call, NULL);
				grpc_call_unref(nc->call);
			} else {
				u->tag.fn = userve_step;
				u->m = m;
				u->s = s;
				u->call = nc->call;
				memset(&op, 0, sizeof(op));
				op.op = GRPC_OP_RECV_MESSAGE;
				op.data.recv_message.recv_message = &u->recv;
				if (grpc_call_start_batch(u->call, &op, 1, &u->tag, NULL) != GRPC_CALL_OK)
					userve_answer(u, RPC_INTERNAL, "cannot read the request", NULL);
			}
		} else {
			serve_stream(s, m, nc->call);
		}
	}
	grpc_call_details_destroy(&nc->details);
	grpc_metadata_array_destroy(&nc->md);
	free(nc);
	if (ok && !s->shutting_down)
		server_request(s);
}

static void server_request(struct rpc_server *s)
{
	struct newcall *nc = calloc(1, sizeof(*nc));

	if (!nc) {
		log_error("rpc: out of memory: no longer accepting calls");
		return;
	}
	nc->tag.fn = on_newcall;
	nc->s = s;
	grpc_call_details_init(&nc->details);
	grpc_metadata_array_init(&nc->md);
	if (grpc_server_request_call(s->srv, &nc->call, &nc->details, &nc->md, s->q->cq, s->q->cq,
				     &nc->tag) != GRPC_CALL_OK) {
		grpc_call_details_destroy(&nc->details);
		grpc_metadata_array_destroy(&nc->md);
		free(nc);
	}
}

int rpc_server_open(const char *addr, const struct rpc_tls *tls, size_t max_msg,
		    const struct rpc_method *methods, size_t n, void *arg, struct rpc_cq *q,
		    struct rpc_server **out, struct lerr *e)
{
	grpc_arg args[] = {
		{ GRPC_ARG_INTEGER, (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, { .integer = (int)max_msg } },
		/* nodes send keepalive pings every 30 s; accept them */
		{ GRPC_ARG_INTEGER, (char *)GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, { .integer = 10000 } },
	};
	grpc_channel_args ca = { ARRAY_SIZE(args), args };
	grpc_server_credentials *creds;
	struct rpc_server *s;
	char *cert = NULL, *key = NULL;
	int err, port;

	rpc_init();
	if (tls->insecure) {
		creds = grpc_insecure_server_credentials_create();
	} else {
		grpc_ssl_pem_key_cert_pair pair;

		if (!tls->cert_file || !tls->key_file)
			return lerr_set(e, EINVAL, "rpc server %s: TLS needs a certificate and a key "
					"(or plaintext, asked for explicitly)", addr);
		if ((err = util_read_file(tls->cert_file, &cert, NULL)) < 0)
			return lerr_set(e, err, "rpc server: certificate %s: %s", tls->cert_file, strerror(-err));
		if ((err = util_read_file(tls->key_file, &key, NULL)) < 0) {
			free(cert);
			return lerr_set(e, err, "rpc server: key %s: %s", tls->key_file, strerror(-err));
		}
		pair.cert_chain = cert;
		pair.private_key = key;
		creds = grpc_ssl_server_credentials_create(NULL, &pair, 1, 0, NULL);
		explicit_bzero(key, strlen(key));
		free(cert);
		free(key);
	}
	if (!creds)
		return lerr_set(e, EINVAL, "rpc server %s: cannot make server credentials", addr);
	s = calloc(1, sizeof(*s));
	if (!s) {
		grpc_server_credentials_release(creds);
		return lerr_set(e, ENOMEM, "rpc server: out of memory");
	}
	s->q = q;
	s->methods = methods;
	s->n = n;
	s->arg = arg;
	s->srv = grpc_server_create(&ca, NULL);
	grpc_server_register_completion_queue(s->srv, q->cq, NULL);
	port = grpc_server_add_http2_port(s->srv, addr, creds);
	grpc_server_credentials_release(creds);
	if (port <= 0) {
		grpc_server_destroy(s->srv);
		free(s);
		return lerr_set(e, EADDRINUSE, "rpc server: cannot listen on %s", addr);
	}
	grpc_server_start(s->srv);
	server_request(s);
	*out = s;
	return 0;
}

static void on_server_shutdown(struct rpc_tag *t, bool ok)
{
	struct rpc_server *s = container_of(t, struct rpc_server, shutdown_tag);

	s->shutdown_done = true;
}

void rpc_server_shutdown(struct rpc_server *s)
{
	if (!s)
		return;
	s->shutting_down = true;
	s->shutdown_tag.fn = on_server_shutdown;
	grpc_server_shutdown_and_notify(s->srv, s->q->cq, &s->shutdown_tag);
	grpc_server_cancel_all_calls(s->srv);
	/* the queue may be shut down only after the server's shutdown was delivered */
	while (!s->shutdown_done)
		rpc_cq_poll(s->q, 100);
	grpc_server_destroy(s->srv);
	free(s);
}
