/* export.c: the OTLP exporter: a bounded queue filled by otlp_export (never blocks),
 * one worker thread ("otlp-export") that batches, encodes and sends, with retries and
 * backoff; transports are OTLP/gRPC (gRPC C core, one unary call per batch) and
 * OTLP/HTTP protobuf (libcurl). The worker owns its channel, its curl handle and
 * every span it has dequeued; the queue and counters are under one mutex. */
#include <curl/curl.h>
#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lantern/otlp.h"

#define GRPC_METHOD "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

struct otlp_exporter {
	struct otlp_opts o;
	json_t *resource;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	json_t **q;          /* ring of queue_max spans */
	size_t head, len;
	bool stopping;
	uint64_t flush_deadline_ms;
	struct otlp_stats st;
	/* worker-only */
	grpc_channel *ch;
	grpc_completion_queue *cq;
	CURL *curl;
	char target[512];
};

/* How one attempt ended. */
enum attempt { SENT, RETRY, FAIL };

const char *otlp_protocol_name(enum otlp_protocol p)
{
	return p == OTLP_GRPC ? "grpc" : "http/protobuf";
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int otlp_configure(const char *flag_endpoint, const char *flag_protocol, struct otlp_opts *o,
		   struct lerr *e)
{
	const char *ep = flag_endpoint, *proto = flag_protocol, *tr;
	bool signal_specific = false;
	size_t n;

	memset(o, 0, sizeof(*o));
	o->queue_max = 4096;
	o->batch_max = 512;
	o->batch_ms = 200;
	o->timeout_ms = 10000;
	o->max_attempts = 5;
	o->backoff_ms = 100;
	if (!ep || !*ep) {
		if ((tr = getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) && *tr) {
			ep = tr;
			signal_specific = true;
		} else {
			ep = getenv("OTEL_EXPORTER_OTLP_ENDPOINT");
		}
	}
	if (!proto || !*proto) {
		proto = getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
		if (!proto || !*proto)
			proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL");
	}
	if (proto && *proto) {
		if (!strcmp(proto, "grpc"))
			o->protocol = OTLP_GRPC;
		else if (!strcmp(proto, "http/protobuf"))
			o->protocol = OTLP_HTTP_PROTOBUF;
		else
			return lerr_set(e, -EINVAL, "otlp: protocol \"%s\": use grpc or http/protobuf "
					"(http/json is not supported)", proto);
	}
	if (!ep || !*ep)
		return 0;
	if (strlen(ep) >= sizeof(o->endpoint))
		return lerr_set(e, -EINVAL, "otlp: endpoint \"%.64s...\": too long", ep);
	if (o->protocol == OTLP_HTTP_PROTOBUF && strncmp(ep, "http://", 7) && strncmp(ep, "https://", 8))
		return lerr_set(e, -EINVAL, "otlp: endpoint \"%s\": http/protobuf needs an http:// or "
				"https:// URL", ep);
	snprintf(o->endpoint, sizeof(o->endpoint), "%s", ep);
	n = strlen(o->endpoint);
	while (n && o->endpoint[n - 1] == '/')
		o->endpoint[--n] = '\0';
	/* the specification: a signal-specific endpoint is used as is; the generic one
	 * gets /v1/traces appended */
	snprintf(o->traces_url, sizeof(o->traces_url), "%s%s", signal_specific ? ep : o->endpoint,
		 signal_specific ? "" : "/v1/traces");
	return 1;
}

/* gRPC target: the endpoint without its scheme and any path. */
static void grpc_target(const char *ep, char *out, size_t len)
{
	const char *p = strstr(ep, "://");
	char *slash;

	snprintf(out, len, "%s", p ? p + 3 : ep);
	if ((slash = strchr(out, '/')))
		*slash = '\0';
}

static bool grpc_retryable(grpc_status_code c)
{
	switch (c) {
	case GRPC_STATUS_CANCELLED:
	case GRPC_STATUS_DEADLINE_EXCEEDED:
	case GRPC_STATUS_ABORTED:
	case GRPC_STATUS_OUT_OF_RANGE:
	case GRPC_STATUS_UNAVAILABLE:
	case GRPC_STATUS_DATA_LOSS:
		return true;
	default:
		return false;
	}
}

static enum attempt send_grpc(struct otlp_exporter *x, const uint8_t *buf, size_t len,
			      int64_t *rejected, char *why, size_t whylen)
{
	grpc_metadata_array md_init, md_trail;
	grpc_byte_buffer *send, *recv = NULL;
	grpc_status_code status = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice(), payload, method;
	grpc_op ops[6];
	grpc_call *call;
	grpc_event ev;
	gpr_timespec deadline;
	enum attempt res = SENT;
	char msg[256];

	if (!x->ch) {
		grpc_channel_credentials *creds = grpc_insecure_credentials_create();

		grpc_target(x->o.endpoint, x->target, sizeof(x->target));
		x->ch = grpc_channel_create(x->target, creds, NULL);
		grpc_channel_credentials_release(creds);
		x->cq = grpc_completion_queue_create_for_pluck(NULL);
	}
	deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
				gpr_time_from_millis(x->o.timeout_ms, GPR_TIMESPAN));
	method = grpc_slice_from_static_string(GRPC_METHOD);
	call = grpc_channel_create_call(x->ch, NULL, GRPC_PROPAGATE_DEFAULTS, x->cq, method, NULL,
					deadline, NULL);
	payload = grpc_slice_from_copied_buffer((const char *)buf, len);
	send = grpc_raw_byte_buffer_create(&payload, 1);
	grpc_slice_unref(payload);
	grpc_metadata_array_init(&md_init);
	grpc_metadata_array_init(&md_trail);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_init;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &recv;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &md_trail;
	ops[5].data.recv_status_on_client.status = &status;
	ops[5].data.recv_status_on_client.status_details = &details;
	if (grpc_call_start_batch(call, ops, 6, (void *)1, NULL) != GRPC_CALL_OK) {
		snprintf(why, whylen, "gRPC call to %s could not start", x->target);
		res = RETRY;
		goto out;
	}
	ev = grpc_completion_queue_pluck(x->cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	if (ev.type != GRPC_OP_COMPLETE || !ev.success) {
		snprintf(why, whylen, "gRPC call to %s did not complete", x->target);
		res = RETRY;
		goto out;
	}
	if (status != GRPC_STATUS_OK) {
		char *d = grpc_slice_to_c_string(details);
		snprintf(why, whylen, "gRPC %s: status %d: %s", x->target, (int)status, d ? d : "");
		gpr_free(d);
		res = grpc_retryable(status) ? RETRY : FAIL;
		goto out;
	}
	if (recv) {
		grpc_byte_buffer_reader rd;
		grpc_slice all;

		if (grpc_byte_buffer_reader_init(&rd, recv)) {
			all = grpc_byte_buffer_reader_readall(&rd);
			if (otlp_decode_response(GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all),
						 rejected, msg, sizeof(msg)) == 0 && *rejected)
				snprintf(why, whylen, "partial success: %lld rejected: %s",
					 (long long)*rejected, msg);
			grpc_slice_unref(all);
			grpc_byte_buffer_reader_destroy(&rd);
		}
	}
out:
	grpc_slice_unref(details);
	grpc_metadata_array_destroy(&md_init);
	grpc_metadata_array_destroy(&md_trail);
	grpc_byte_buffer_destroy(send);
	if (recv)
		grpc_byte_buffer_destroy(recv);
	grpc_call_unref(call);
	return res;
}

struct membuf {
	char *p;
	size_t n;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct membuf *m = arg;
	size_t add = size * nmemb;
	char *np;

	if (m->n + add > (1u << 20))
		return 0; /* an answer this large is not an OTLP response */
	np = realloc(m->p, m->n + add + 1);
	if (!np)
		return 0;
	memcpy(np + m->n, data, add);
	m->p = np;
	m->n += add;
	return add;
}

static enum attempt send_http(struct otlp_exporter *x, const uint8_t *buf, size_t len,
			      int64_t *rejected, char *why, size_t whylen)
{
	struct curl_slist *hdr = NULL;
	struct membuf body = { 0 };
	long code = 0;
	CURLcode rc;
	enum attempt res = SENT;
	char msg[256];

	if (!x->curl && !(x->curl = curl_easy_init())) {
		snprintf(why, whylen, "libcurl: cannot create a handle");
		return RETRY;
	}
	curl_easy_reset(x->curl);
	hdr = curl_slist_append(hdr, "Content-Type: application/x-protobuf");
	curl_easy_setopt(x->curl, CURLOPT_URL, x->o.traces_url);
	curl_easy_setopt(x->curl, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(x->curl, CURLOPT_POSTFIELDS, (const char *)buf);
	curl_easy_setopt(x->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(x->curl, CURLOPT_TIMEOUT_MS, (long)x->o.timeout_ms);
	curl_easy_setopt(x->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(x->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(x->curl, CURLOPT_WRITEDATA, &body);
	curl_easy_setopt(x->curl, CURLOPT_USERAGENT, "lanternd-otlp/0.1");
	rc = curl_easy_perform(x->curl);
	curl_slist_free_all(hdr);
	if (rc != CURLE_OK) {
		snprintf(why, whylen, "POST %s: %s", x->o.traces_url, curl_easy_strerror(rc));
		res = RETRY;
		goto out;
	}
	curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &code);
	if (code == 429 || code == 502 || code == 503 || code == 504) {
		snprintf(why, whylen, "POST %s: HTTP %ld", x->o.traces_url, code);
		res = RETRY;
	} else if (code < 200 || code > 299) {
		snprintf(why, whylen, "POST %s: HTTP %ld (not retryable)", x->o.traces_url, code);
		res = FAIL;
	} else if (otlp_decode_response((const uint8_t *)body.p, body.n, rejected, msg, sizeof(msg)) == 0 &&
		   *rejected) {
		snprintf(why, whylen, "partial success: %lld rejected: %s", (long long)*rejected, msg);
	}
out:
	free(body.p);
	return res;
}

/* Sends one batch, retrying with doubling delays; the batch is consumed. */
static void send_batch(struct otlp_exporter *x, json_t *spans)
{
	size_t n = json_array_size(spans), len = 0;
	uint8_t *buf = NULL;
	struct lerr e = { 0 };
	char why[512] = "";
	unsigned delay = x->o.backoff_ms;
	enum attempt res = FAIL;
	int64_t rejected = 0;

	if (otlp_encode_request(x->resource, spans, &buf, &len, &e) < 0) {
		log_error("%s", e.msg);
		goto done;
	}
	for (unsigned attempt = 1; attempt <= x->o.max_attempts; attempt++) {
		rejected = 0;
		why[0] = '\0';
		res = x->o.protocol == OTLP_GRPC ? send_grpc(x, buf, len, &rejected, why, sizeof(why))
						 : send_http(x, buf, len, &rejected, why, sizeof(why));
		pthread_mutex_lock(&x->mu);
		x->st.requests++;
		pthread_mutex_unlock(&x->mu);
		if (res != RETRY || attempt == x->o.max_attempts)
			break;
		pthread_mutex_lock(&x->mu);
		x->st.retries++;
		/* a stop with a passed flush deadline gives up instead of sleeping */
		if (x->stopping && now_ms() + delay > x->flush_deadline_ms) {
			pthread_mutex_unlock(&x->mu);
			break;
		}
		pthread_mutex_unlock(&x->mu);
		usleep(delay * 1000);
		delay *= 2;
	}
done:
	pthread_mutex_lock(&x->mu);
	if (res == SENT) {
		if (rejected < 0 || (uint64_t)rejected > n)
			rejected = (int64_t)n;
		x->st.exported += n - (uint64_t)rejected;
		x->st.rejected += (uint64_t)rejected;
	} else {
		x->st.dropped += n;
	}
	pthread_mutex_unlock(&x->mu);
	if (res != SENT)
		log_warn("otlp: %zu spans dropped: %s", n, why[0] ? why : "encoding failed");
	else if (rejected)
		log_warn("otlp: %s", why);
	free(buf);
	json_decref(spans);
}

static void *worker(void *arg)
{
	struct otlp_exporter *x = arg;

	pthread_mutex_lock(&x->mu);
	for (;;) {
		json_t *batch;
		uint64_t until;

		while (!x->len && !x->stopping)
			pthread_cond_wait(&x->cv, &x->mu);
		if (!x->len && x->stopping)
			break;
		/* let a batch fill, up to batch_ms */
		until = now_ms() + x->o.batch_ms;
		while (x->len < x->o.batch_max && !x->stopping && now_ms() < until) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 20 * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&x->cv, &x->mu, &ts);
		}
		if (x->stopping && now_ms() > x->flush_deadline_ms) {
			x->st.dropped += x->len;
			while (x->len) {
				json_decref(x->q[x->head]);
				x->head = (x->head + 1) % x->o.queue_max;
				x->len--;
			}
			break;
		}
		batch = json_array();
		while (x->len && json_array_size(batch) < x->o.batch_max) {
			json_array_append_new(batch, x->q[x->head]);
			x->head = (x->head + 1) % x->o.queue_max;
			x->len--;
		}
		pthread_mutex_unlock(&x->mu);
		send_batch(x, batch);
		pthread_mutex_lock(&x->mu);
	}
	pthread_mutex_unlock(&x->mu);
	return NULL;
}

int otlp_exporter_start(const struct otlp_opts *o, json_t *resource_attrs,
			struct otlp_exporter **out, struct lerr *e)
{
	struct otlp_exporter *x = calloc(1, sizeof(*x));
	int err;

	*out = NULL;
	if (!x)
		return lerr_set(e, -ENOMEM, "otlp: out of memory");
	x->o = *o;
	if (!x->o.queue_max)
		x->o.queue_max = 4096;
	if (!x->o.batch_max)
		x->o.batch_max = 512;
	if (!x->o.max_attempts)
		x->o.max_attempts = 1;
	x->q = calloc(x->o.queue_max, sizeof(*x->q));
	x->resource = json_deep_copy(resource_attrs);
	if (!x->q || !x->resource) {
		free(x->q);
		json_decref(x->resource);
		free(x);
		return lerr_set(e, -ENOMEM, "otlp: out of memory");
	}
	pthread_mutex_init(&x->mu, NULL);
	pthread_cond_init(&x->cv, NULL);
	if (x->o.protocol == OTLP_GRPC)
		grpc_init();
	else
		curl_global_init(CURL_GLOBAL_DEFAULT);
	if ((err = pthread_create(&x->thread, NULL, worker, x))) {
		free(x->q);
		json_decref(x->resource);
		free(x);
		return lerr_set(e, -err, "otlp: starting the export thread: %s", strerror(err));
	}
	pthread_setname_np(x->thread, "otlp-export");
	*out = x;
	return 0;
}

int otlp_export(struct otlp_exporter *x, json_t *span)
{
	/* a private copy: jansson values are not shared across threads */
	json_t *copy = json_deep_copy(span);
	int err = 0;

	pthread_mutex_lock(&x->mu);
	if (!copy || x->len == x->o.queue_max || x->stopping) {
		x->st.dropped++;
		err = -ENOSPC;
	} else {
		x->q[(x->head + x->len) % x->o.queue_max] = copy;
		x->len++;
		x->st.queued++;
		copy = NULL;
		pthread_cond_signal(&x->cv);
	}
	pthread_mutex_unlock(&x->mu);
	json_decref(copy);
	return err;
}

void otlp_stats_get(struct otlp_exporter *x, struct otlp_stats *s)
{
	pthread_mutex_lock(&x->mu);
	*s = x->st;
	pthread_mutex_unlock(&x->mu);
}

void otlp_exporter_stop(struct otlp_exporter *x, unsigned flush_ms)
{
	if (!x)
		return;
	pthread_mutex_lock(&x->mu);
	x->stopping = true;
	x->flush_deadline_ms = now_ms() + flush_ms;
	pthread_cond_broadcast(&x->cv);
	pthread_mutex_unlock(&x->mu);
	pthread_join(x->thread, NULL);
	if (x->ch) {
		grpc_completion_queue_shutdown(x->cq);
		while (grpc_completion_queue_pluck(x->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
		       GRPC_QUEUE_SHUTDOWN)
			;
		grpc_completion_queue_destroy(x->cq);
		grpc_channel_destroy(x->ch);
	}
	if (x->curl)
		curl_easy_cleanup(x->curl);
	if (x->o.protocol == OTLP_GRPC)
		grpc_shutdown();
	json_decref(x->resource);
	free(x->q);
	pthread_mutex_destroy(&x->mu);
	pthread_cond_destroy(&x->cv);
	free(x);
}
