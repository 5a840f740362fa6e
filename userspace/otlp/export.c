/* export.c: the OTLP exporter: a bounded queue filled by otlp_export (never blocks),
 * one worker thread ("otlp-export") that batches, encodes and sends, with retries and
 * backoff; transports are OTLP/gRPC (rpc's channel, TLS unless plaintext was chosen,
 * one unary call per batch) and OTLP/HTTP protobuf (libcurl). The worker owns its
 * channel and completion queue (made by otlp_exporter_start so a bad CA file fails
 * the start), its curl handle and every span it has dequeued; the queue and counters
 * are under one mutex. */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "lantern/otlp.h"
#include "lantern/rpc.h"

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
	struct rpc_channel *ch;
	struct rpc_cq *cq;
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

/* The first of two environment variables that is set and not empty. */
static const char *env_first(const char *a, const char *b)
{
	const char *v = getenv(a);

	if (v && *v)
		return v;
	v = getenv(b);
	return v && *v ? v : NULL;
}

/* The specification's boolean: only "true" (any case) is true. Anything else but
 * "false" is a mistake worth a warning; it still means false, so a typo never turns
 * TLS off. */
static bool env_insecure(void)
{
	const char *name = "OTEL_EXPORTER_OTLP_TRACES_INSECURE", *v = getenv(name);

	if (!v || !*v)
		v = getenv(name = "OTEL_EXPORTER_OTLP_INSECURE");
	if (!v || !*v || !strcasecmp(v, "false"))
		return false;
	if (!strcasecmp(v, "true"))
		return true;
	log_warn("otlp: %s=\"%s\": not true or false; TLS stays on", name, v);
	return false;
}

int otlp_configure(const char *flag_endpoint, const char *flag_protocol, bool flag_insecure,
		   const char *flag_ca, struct otlp_opts *o, struct lerr *e)
{
	const char *ep = flag_endpoint, *proto = flag_protocol, *ca = flag_ca, *tr;
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
	if (!proto || !*proto)
		proto = env_first("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL");
	if (proto && *proto) {
		if (!strcmp(proto, "grpc"))
			o->protocol = OTLP_GRPC;
		else if (!strcmp(proto, "http/protobuf"))
			o->protocol = OTLP_HTTP_PROTOBUF;
		else
			return lerr_set(e, -EINVAL, "otlp: protocol \"%s\": use grpc or http/protobuf "
					"(http/json is not supported)", proto);
	}
	if (!ca || !*ca)
		ca = env_first("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE");
	if (ca && strlen(ca) >= sizeof(o->ca_file))
		return lerr_set(e, -ENAMETOOLONG, "otlp: CA file \"%.64s...\": name too long", ca);
	snprintf(o->ca_file, sizeof(o->ca_file), "%s", ca ? ca : "");
	if (!ep || !*ep)
		return 0;
	if (strlen(ep) >= sizeof(o->endpoint))
		return lerr_set(e, -EINVAL, "otlp: endpoint \"%.64s...\": too long", ep);
	if (o->protocol == OTLP_HTTP_PROTOBUF && strncmp(ep, "http://", 7) && strncmp(ep, "https://", 8))
		return lerr_set(e, -EINVAL, "otlp: endpoint \"%s\": http/protobuf needs an http:// or "
				"https:// URL", ep);
	if (o->protocol == OTLP_GRPC) {
		/* the specification: the scheme decides; without one, the insecure setting
		 * does, and its default is TLS */
		if (!strncmp(ep, "https://", 8))
			o->grpc_tls = true;
		else if (!strncmp(ep, "http://", 7))
			o->grpc_tls = false;
		else if (strstr(ep, "://"))
			return lerr_set(e, -EINVAL, "otlp: endpoint \"%s\": grpc needs https://, http:// "
					"or no scheme (host:port)", ep);
		else
			o->grpc_tls = !(flag_insecure || env_insecure());
	}
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

static bool grpc_retryable(int status)
{
	switch (status) {
	case RPC_CANCELLED:
	case RPC_DEADLINE_EXCEEDED:
	case RPC_ABORTED:
	case RPC_OUT_OF_RANGE:
	case RPC_UNAVAILABLE:
	case RPC_DATA_LOSS:
		return true;
	default:
		return false;
	}
}

/* One Export call's outcome, filled on the worker's thread by rpc_cq_poll. */
struct export_call {
	struct otlp_exporter *x;
	bool done;
	enum attempt res;
	int64_t *rejected;
	char *why;
	size_t whylen;
};

static void export_done(void *arg, int status, const char *details, const uint8_t *resp,
			size_t len)
{
	struct export_call *c = arg;
	char msg[256];

	c->done = true;
	if (status != RPC_OK) {
		snprintf(c->why, c->whylen, "gRPC %s (%s): %s (%d): %s", c->x->target,
			 c->x->o.grpc_tls ? "TLS" : "plaintext", rpc_status_name(status), status,
			 details ? details : "");
		c->res = grpc_retryable(status) ? RETRY : FAIL;
		return;
	}
	c->res = SENT;
	if (otlp_decode_response(resp, len, c->rejected, msg, sizeof(msg)) == 0 && *c->rejected)
		snprintf(c->why, c->whylen, "partial success: %lld rejected: %s",
			 (long long)*c->rejected, msg);
}

static enum attempt send_grpc(struct otlp_exporter *x, const uint8_t *buf, size_t len,
			      int64_t *rejected, char *why, size_t whylen)
{
	struct export_call c = { .x = x, .rejected = rejected, .why = why, .whylen = whylen };

	if (rpc_unary(x->ch, x->cq, GRPC_METHOD, buf, len, (int)x->o.timeout_ms, export_done, &c) < 0) {
		snprintf(why, whylen, "gRPC call to %s could not start", x->target);
		return RETRY;
	}
	/* the queue is this thread's alone and the call has a deadline: it completes */
	while (!c.done)
		rpc_cq_poll(x->cq, -1);
	return c.res;
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
	bool https = !strncmp(x->o.traces_url, "https://", 8);
	long code = 0;
	CURLcode rc;
	enum attempt res = SENT;
	char msg[256], cerr[CURL_ERROR_SIZE] = "";

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
	curl_easy_setopt(x->curl, CURLOPT_ERRORBUFFER, cerr);
	/* https:// is never downgraded: only the URL's own scheme may be spoken, and the
	 * peer and its name are verified (libcurl's defaults, stated so no later option
	 * can quietly lose them); the insecure setting is gRPC's alone */
	curl_easy_setopt(x->curl, CURLOPT_PROTOCOLS_STR, https ? "https" : "http");
	curl_easy_setopt(x->curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(x->curl, CURLOPT_SSL_VERIFYHOST, 2L);
	if (https && x->o.ca_file[0])
		curl_easy_setopt(x->curl, CURLOPT_CAINFO, x->o.ca_file);
	rc = curl_easy_perform(x->curl);
	curl_easy_setopt(x->curl, CURLOPT_ERRORBUFFER, NULL);
	curl_slist_free_all(hdr);
	if (rc != CURLE_OK) {
		snprintf(why, whylen, "POST %s: %s", x->o.traces_url, cerr[0] ? cerr : curl_easy_strerror(rc));
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

/* The gRPC channel: TLS with the system's roots or the CA file, or plaintext when
 * the configuration chose it. Channels connect lazily: nothing is dialled yet. */
static int grpc_open(struct otlp_exporter *x, struct lerr *e)
{
	struct rpc_tls tls = { .insecure = !x->o.grpc_tls,
			       .ca_file = x->o.ca_file[0] ? x->o.ca_file : NULL };
	struct lerr re = { 0 };
	int err;

	grpc_target(x->o.endpoint, x->target, sizeof(x->target));
	if (!x->target[0])
		return lerr_set(e, -EINVAL, "otlp: endpoint \"%s\": no host:port", x->o.endpoint);
	if ((err = rpc_channel_open(x->target, &tls, &x->ch, &re)) < 0)
		return lerr_set(e, err, "otlp: %s", re.msg);
	if (!(x->cq = rpc_cq_new()))
		return lerr_set(e, -ENOMEM, "otlp: gRPC completion queue: out of memory");
	if (x->o.grpc_tls)
		log_info("otlp: gRPC to %s over TLS (roots: %s)", x->target,
			 tls.ca_file ? tls.ca_file : "the system's");
	else
		log_info("otlp: gRPC to %s in plaintext", x->target);
	return 0;
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
	pthread_mutex_init(&x->mu, NULL);
	pthread_cond_init(&x->cv, NULL);
	if (!x->q || !x->resource) {
		err = lerr_set(e, -ENOMEM, "otlp: out of memory");
		goto fail;
	}
	if (x->o.protocol == OTLP_GRPC) {
		if ((err = grpc_open(x, e)) < 0)
			goto fail;
	} else {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		/* libcurl reads it only when it dials: a wrong path is better refused now */
		if (!strncmp(x->o.traces_url, "https://", 8) && x->o.ca_file[0] &&
		    access(x->o.ca_file, R_OK) < 0) {
			err = lerr_set(e, -errno, "otlp: CA file %s: %s", x->o.ca_file, strerror(errno));
			goto fail;
		}
	}
	if ((err = pthread_create(&x->thread, NULL, worker, x))) {
		err = lerr_set(e, -err, "otlp: starting the export thread: %s", strerror(err));
		goto fail;
	}
	pthread_setname_np(x->thread, "otlp-export");
	*out = x;
	return 0;
fail:
	rpc_channel_close(x->ch);
	rpc_cq_free(x->cq);
	free(x->q);
	json_decref(x->resource);
	pthread_mutex_destroy(&x->mu);
	pthread_cond_destroy(&x->cv);
	free(x);
	return err;
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
	/* every call was waited for by the worker: nothing is in flight on the queue */
	rpc_channel_close(x->ch);
	rpc_cq_free(x->cq);
	if (x->curl)
		curl_easy_cleanup(x->curl);
	json_decref(x->resource);
	free(x->q);
	pthread_mutex_destroy(&x->mu);
	pthread_cond_destroy(&x->cv);
	free(x);
}
