/* client.c: requests and watches against the Kubernetes API (see kube.h), driven by
 * libcurl's multi interface on lanternd's event loop: curl says which sockets it waits
 * on and when it next needs a timeout, the loop watches those and calls back. So no
 * request, however slow the API server, holds the loop, and no thread shares state.
 *
 * Callbacks into the rest of lanternd never run inside a libcurl callback (libcurl
 * forbids calling it back from there): bytes are only collected there, then handed
 * over once curl_multi_socket_action has returned (pump).
 *
 * kube_request_wait is the one exception to the loop: a pool worker's request, made on
 * its own easy handle and thread; the two share only the configuration, whose token
 * (read again from its file every minute) is behind a mutex. */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include <sodium.h>

#include "kube_internal.h"

#define CONNECT_TIMEOUT_MS 10000
#define REQUEST_TIMEOUT_MS 30000
/* a list of every pod of a node, as JSON */
#define BODY_MAX (64u << 20)
/* one watch event: an object (etcd keeps them under 1.5 MiB) in its envelope */
#define LINE_MAX_BYTES (16u << 20)
/* the server ends a watch after this; it is resumed from its resourceVersion */
#define WATCH_TIMEOUT_S 300
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000

struct kube {
	struct loop *loop;
	struct kube_config *cfg;
	pthread_mutex_t cfg_mu;         /* the token: read again on the loop and by waiters */
	CURLM *multi;
	uint64_t timer;
	struct kube_req *reqs;          /* in flight */
	struct kube_watch *watches;
};

struct kube_req {
	struct kube *k;
	CURL *easy;
	struct curl_slist *hdrs;
	char *out;                      /* the request's body */
	char *buf;                      /* the answer; a watch's: what is not a whole line yet */
	size_t len, cap;
	bool too_big;
	bool sensitive;                 /* the answer may hold a secret: wiped, never realloc'd */
	kube_done_fn done;
	void *arg;
	struct kube_watch *w;           /* set for a watch's stream */
	bool got_line;                  /* a stream delivered something */
	uint64_t started_ns;            /* CLOCK_MONOTONIC */
	char errbuf[CURL_ERROR_SIZE];
	struct kube_req *prev, *next;
};

struct kube_watch {
	struct kube *k;
	char path[256];
	char query[1024];               /* the selectors, escaped, each ending with '&' */
	kube_watch_fn fn;
	void *arg;
	char rv[64];                    /* resume from here; "" = list first */
	struct kube_req *req;           /* the list or the stream in flight */
	uint64_t retry_timer;
	unsigned backoff_ms;
	bool current;
	char why[256];
	struct kube_watch *prev, *next;
};

/* ---- libcurl on the loop ---- */

static void pump(struct kube *k);

static void on_fd(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct kube *k = arg;
	int flags = 0, running;

	if (events & EPOLLIN)
		flags |= CURL_CSELECT_IN;
	if (events & EPOLLOUT)
		flags |= CURL_CSELECT_OUT;
	if (events & (EPOLLERR | EPOLLHUP))
		flags |= CURL_CSELECT_ERR;
	curl_multi_socket_action(k->multi, fd, flags, &running);
	pump(k);
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct kube *k = userp;
	uint32_t ev = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);

	if (what == CURL_POLL_REMOVE) {
		if (socketp) {
			loop_del(k->loop, s);
			curl_multi_assign(k->multi, s, NULL);
		}
		return 0;
	}
	if (socketp)
		return loop_mod(k->loop, s, ev) < 0 ? -1 : 0;
	if (loop_add(k->loop, s, ev, on_fd, k) < 0)
		return -1;
	curl_multi_assign(k->multi, s, k);
	return 0;
}

static void on_timer(struct loop *l, void *arg)
{
	struct kube *k = arg;
	int running;

	k->timer = 0;
	curl_multi_socket_action(k->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	pump(k);
}

static int on_curl_timer(CURLM *m, long ms, void *userp)
{
	struct kube *k = userp;

	if (k->timer)
		loop_timer_cancel(k->loop, k->timer);
	k->timer = ms >= 0 ? loop_timer_add(k->loop, (uint64_t)ms, on_timer, k) : 0;
	return 0;
}

/* ---- requests ---- */

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
	struct kube_req *q = arg;
	size_t len = size * n, max = q->w ? LINE_MAX_BYTES : BODY_MAX;

	if (q->len + len > max) {
		q->too_big = true;
		return 0;
	}
	if (q->len + len + 1 > q->cap) {
		size_t cap = q->cap ? q->cap : 16384;
		char *b;

		while (cap < q->len + len + 1)
			cap *= 2;
		if (q->sensitive) {
			/* realloc would leave the old block's bytes behind in the heap */
			if (!(b = malloc(cap)))
				return 0;
			if (q->buf) {
				memcpy(b, q->buf, q->len);
				sodium_memzero(q->buf, q->cap);
				free(q->buf);
			}
		} else if (!(b = realloc(q->buf, cap))) {
			return 0;
		}
		q->buf = b;
		q->cap = cap;
	}
	memcpy(q->buf + q->len, p, len);
	q->len += len;
	q->buf[q->len] = '\0';
	return len;
}

static void req_free(struct kube_req *q)
{
	if (q->easy)
		curl_easy_cleanup(q->easy);
	curl_slist_free_all(q->hdrs);
	free(q->out);
	if (q->sensitive && q->buf)
		sodium_memzero(q->buf, q->cap);
	free(q->buf);
	free(q);
}

static void req_unlink(struct kube_req *q)
{
	struct kube *k = q->k;

	if (q->prev)
		q->prev->next = q->next;
	else
		k->reqs = q->next;
	if (q->next)
		q->next->prev = q->prev;
	q->prev = q->next = NULL;
	curl_multi_remove_handle(k->multi, q->easy);
}

void kube_cancel(struct kube_req *q)
{
	if (!q)
		return;
	req_unlink(q);
	req_free(q);
}

static int add_header(struct kube_req *q, const char *h)
{
	struct curl_slist *l = curl_slist_append(q->hdrs, h);

	if (!l)
		return -ENOMEM;
	q->hdrs = l;
	return 0;
}

static int set_tls(CURL *c, const struct kube_config *cfg)
{
	struct curl_blob b = { .flags = CURL_BLOB_COPY };
	CURLcode rc = CURLE_OK;

	if (cfg->ca_pem) {
		b.data = cfg->ca_pem;
		b.len = strlen(cfg->ca_pem);
		rc = curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &b);
	} else if (cfg->ca_file) {
		rc = curl_easy_setopt(c, CURLOPT_CAINFO, cfg->ca_file);
	}
	if (!rc && cfg->cert_pem) {
		b.data = cfg->cert_pem;
		b.len = strlen(cfg->cert_pem);
		rc = curl_easy_setopt(c, CURLOPT_SSLCERT_BLOB, &b);
	} else if (!rc && cfg->cert_file) {
		rc = curl_easy_setopt(c, CURLOPT_SSLCERT, cfg->cert_file);
	}
	if (!rc && cfg->key_pem) {
		b.data = cfg->key_pem;
		b.len = strlen(cfg->key_pem);
		rc = curl_easy_setopt(c, CURLOPT_SSLKEY_BLOB, &b);
	} else if (!rc && cfg->key_file) {
		rc = curl_easy_setopt(c, CURLOPT_SSLKEY, cfg->key_file);
	}
	if (!rc && cfg->insecure) {
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	return rc ? -EINVAL : 0;
}

/* A request on its way, not yet handed to the multi handle. */
static struct kube_req *req_new(struct kube *k, const char *method, const char *path, json_t *body,
				long timeout_ms, struct lerr *e)
{
	struct kube_req *q = calloc(1, sizeof(*q));
	char url[4096], auth[8192];
	struct lerr te;

	if (!q) {
		json_decref(body);
		lerr_set(e, ENOMEM, "kubernetes: out of memory");
		return NULL;
	}
	q->k = k;
	q->started_ns = util_now_ns(CLOCK_MONOTONIC);
	if (body && !(q->out = json_dumps(body, JSON_COMPACT))) {
		json_decref(body);
		lerr_set(e, ENOMEM, "kubernetes: out of memory");
		goto fail;
	}
	json_decref(body);
	pthread_mutex_lock(&k->cfg_mu);
	if (kube_config_token(k->cfg, &te) < 0) {
		pthread_mutex_unlock(&k->cfg_mu);
		lerr_set(e, EACCES, "kubernetes %s %s: %s", method, path, te.msg);
		goto fail;
	}
	if (k->cfg->token)
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", k->cfg->token);
	else
		auth[0] = '\0';
	pthread_mutex_unlock(&k->cfg_mu);
	if ((size_t)snprintf(url, sizeof(url), "%s%s", k->cfg->server, path) >= sizeof(url)) {
		lerr_set(e, ENAMETOOLONG, "kubernetes %s %s: path too long", method, path);
		goto fail;
	}
	if (!(q->easy = curl_easy_init()) || add_header(q, "Accept: application/json") < 0 ||
	    (q->out && add_header(q, !strcmp(method, "PATCH") ? "Content-Type: application/merge-patch+json" :
				  "Content-Type: application/json") < 0)) {
		lerr_set(e, ENOMEM, "kubernetes: out of memory");
		goto fail;
	}
	if (auth[0]) {
		if (add_header(q, auth) < 0) {
			lerr_set(e, ENOMEM, "kubernetes: out of memory");
			goto fail;
		}
	}
	curl_easy_setopt(q->easy, CURLOPT_URL, url);
	curl_easy_setopt(q->easy, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(q->easy, CURLOPT_PRIVATE, q);
	curl_easy_setopt(q->easy, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(q->easy, CURLOPT_WRITEDATA, q);
	curl_easy_setopt(q->easy, CURLOPT_ERRORBUFFER, q->errbuf);
	curl_easy_setopt(q->easy, CURLOPT_HTTPHEADER, q->hdrs);
	curl_easy_setopt(q->easy, CURLOPT_NOSIGNAL, 1L);
	/* one connection per watch, the requests on the pool: plain HTTP/1.1 */
	curl_easy_setopt(q->easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(q->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
	curl_easy_setopt(q->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
	/* a watch can be quiet for minutes: keepalives find a peer that went away */
	curl_easy_setopt(q->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(q->easy, CURLOPT_TCP_KEEPIDLE, 30L);
	curl_easy_setopt(q->easy, CURLOPT_TCP_KEEPINTVL, 10L);
	curl_easy_setopt(q->easy, CURLOPT_USERAGENT, "lanternd");
	if (strcmp(method, "GET") && strcmp(method, "POST"))
		curl_easy_setopt(q->easy, CURLOPT_CUSTOMREQUEST, method);
	if (q->out)
		curl_easy_setopt(q->easy, CURLOPT_POSTFIELDS, q->out);
	else if (!strcmp(method, "POST"))
		curl_easy_setopt(q->easy, CURLOPT_POSTFIELDS, "");
	if (set_tls(q->easy, k->cfg) < 0) {
		lerr_set(e, EINVAL, "kubernetes: %s: TLS settings refused by libcurl", k->cfg->source);
		goto fail;
	}
	return q;
fail:
	req_free(q);
	return NULL;
}

static int req_go(struct kube_req *q, struct lerr *e)
{
	struct kube *k = q->k;

	if (curl_multi_add_handle(k->multi, q->easy) != CURLM_OK) {
		req_free(q);
		return lerr_set(e, EIO, "kubernetes: cannot start a request");
	}
	q->next = k->reqs;
	if (k->reqs)
		k->reqs->prev = q;
	k->reqs = q;
	return 0;
}

/* A request made and sent; sensitive: its answer may hold a secret (kube.h). */
static int request(struct kube *k, const char *method, const char *path, json_t *body, long timeout_ms,
		   bool sensitive, kube_done_fn done, void *arg, struct kube_req **out, struct lerr *e)
{
	struct kube_req *q = req_new(k, method, path, body, timeout_ms, e);
	int err;

	if (!q)
		return -EIO;
	q->sensitive = sensitive;
	q->done = done;
	q->arg = arg;
	if ((err = req_go(q, e)) < 0)
		return err;
	if (out)
		*out = q;
	return 0;
}

int kube_request(struct kube *k, const char *method, const char *path, json_t *body,
		 kube_done_fn done, void *arg, struct kube_req **out, struct lerr *e)
{
	return request(k, method, path, body, REQUEST_TIMEOUT_MS, false, done, arg, out, e);
}

int kube_get_sensitive(struct kube *k, const char *path, long timeout_ms, kube_done_fn done, void *arg,
		       struct kube_req **out, struct lerr *e)
{
	return request(k, "GET", path, NULL, timeout_ms, true, done, arg, out, e);
}

/* On the calling thread (a pool worker's, never the loop's): the same request on an
 * easy handle of its own, waited for. */
int kube_request_wait(struct kube *k, const char *method, const char *path, json_t *body, long timeout_ms,
		      struct kube_resp *res, char *err, size_t errlen, struct lerr *e)
{
	struct kube_req *q = req_new(k, method, path, body, timeout_ms, e);
	CURLcode rc;

	memset(res, 0, sizeof(*res));
	if (!q)
		return -EIO;
	rc = curl_easy_perform(q->easy);
	if (rc == CURLE_OK)
		curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &res->status);
	res->body = q->len ? json_loadb(q->buf, q->len, 0, NULL) : NULL;
	snprintf(err, errlen, "%s", q->too_big ? "answer larger than 64 MiB" : q->errbuf[0] ? q->errbuf :
		 curl_easy_strerror(rc));
	res->err = err;
	req_free(q);
	return 0;
}

const char *kube_resp_why(const struct kube_resp *res, char *buf, size_t len)
{
	const char *reason = json_string_value(json_object_get(res->body, "reason"));
	const char *msg = json_string_value(json_object_get(res->body, "message"));

	if (!res->status)
		snprintf(buf, len, "%s", res->err && *res->err ? res->err : "no answer");
	else if (msg)
		snprintf(buf, len, "%ld %s: %s", res->status, reason ? reason : "", msg);
	else
		snprintf(buf, len, "HTTP %ld", res->status);
	return buf;
}

/* ---- watches ---- */

static void watch_list(struct kube_watch *w);
static void watch_stream(struct kube_watch *w);

static void on_retry(struct loop *l, void *arg)
{
	struct kube_watch *w = arg;

	w->retry_timer = 0;
	if (w->rv[0])
		watch_stream(w);
	else
		watch_list(w);
}

/* Not current: try again after the backoff (from the list when rv is ""). */
static void watch_fail(struct kube_watch *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void watch_fail(struct kube_watch *w, const char *fmt, ...)
{
	va_list ap;
	char why[sizeof(w->why)];

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	/* said once per outage, not once per retry */
	if (w->current || strcmp(why, w->why))
		log_warn("kubernetes: watch %s: %s (retrying)", w->path, why);
	snprintf(w->why, sizeof(w->why), "%s", why);
	w->current = false;
	w->backoff_ms = w->backoff_ms ? w->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (w->backoff_ms > BACKOFF_MAX_MS)
		w->backoff_ms = BACKOFF_MAX_MS;
	w->retry_timer = loop_timer_add(w->k->loop, w->backoff_ms, on_retry, w);
}

static void watch_ok(struct kube_watch *w)
{
	if (!w->current && w->why[0])
		log_info("kubernetes: watch %s: current again", w->path);
	w->current = true;
	w->why[0] = '\0';
	w->backoff_ms = 0;
}

static void on_list(void *arg, const struct kube_resp *res)
{
	struct kube_watch *w = arg;
	json_t *items = json_object_get(res->body, "items"), *it;
	const char *rv = json_string_value(json_object_get(json_object_get(res->body, "metadata"),
							   "resourceVersion"));
	char why[512];
	size_t i;

	w->req = NULL;
	if (res->status != 200 || !json_is_array(items) || !rv) {
		watch_fail(w, "list: %s", res->status == 200 ? "not a list" : kube_resp_why(res, why, sizeof(why)));
		return;
	}
	snprintf(w->rv, sizeof(w->rv), "%s", rv);
	watch_ok(w);
	w->fn(w->arg, KUBE_LIST_BEGIN, NULL);
	json_array_foreach(items, i, it)
		w->fn(w->arg, KUBE_LISTED, it);
	w->fn(w->arg, KUBE_LIST_END, NULL);
	watch_stream(w);
}

static void watch_list(struct kube_watch *w)
{
	char path[sizeof(w->path) + sizeof(w->query) + 8];
	struct lerr e;

	/* the query without its last '&' */
	snprintf(path, sizeof(path), "%s%s%.*s", w->path, w->query[0] ? "?" : "",
		 w->query[0] ? (int)strlen(w->query) - 1 : 0, w->query);
	if (kube_request(w->k, "GET", path, NULL, on_list, w, &w->req, &e) < 0)
		watch_fail(w, "list: %s", e.msg);
}

static void watch_stream(struct kube_watch *w)
{
	char path[sizeof(w->path) + sizeof(w->query) + 160];
	struct kube_req *q;
	struct lerr e;

	snprintf(path, sizeof(path), "%s?%swatch=1&allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=%d",
		 w->path, w->query, w->rv, WATCH_TIMEOUT_S);
	if (!(q = req_new(w->k, "GET", path, NULL, (WATCH_TIMEOUT_S + 30) * 1000L, &e))) {
		watch_fail(w, "watch: %s", e.msg);
		return;
	}
	q->w = w;
	if (req_go(q, &e) < 0) {
		watch_fail(w, "watch: %s", e.msg);
		return;
	}
	w->req = q;
}

/* One event line of the stream. Returns false when the stream must end: 410 Gone
 * (rv is cleared: relist) or something that is not an event. */
static bool watch_event(struct kube_watch *w, const char *line, size_t len)
{
	json_t *j = json_loadb(line, len, 0, NULL), *obj = json_object_get(j, "object");
	const char *type = json_string_value(json_object_get(j, "type"));
	const char *rv = json_string_value(json_object_get(json_object_get(obj, "metadata"), "resourceVersion"));
	bool ok = true;

	if (!type || !json_is_object(obj)) {
		log_warn("kubernetes: watch %s: not an event: %.200s", w->path, line);
		ok = false;
	} else if (!strcmp(type, "ERROR")) {
		json_int_t code = json_integer_value(json_object_get(obj, "code"));

		if (code == 410) {
			log_info("kubernetes: watch %s: resourceVersion %s is gone (410): relisting", w->path, w->rv);
			w->rv[0] = '\0';
		} else {
			log_warn("kubernetes: watch %s: error %lld: %s", w->path, (long long)code,
				 json_string_value(json_object_get(obj, "message")) ?: "");
		}
		ok = false;
	} else {
		if (rv)
			snprintf(w->rv, sizeof(w->rv), "%s", rv);
		watch_ok(w);
		if (!strcmp(type, "ADDED"))
			w->fn(w->arg, KUBE_ADDED, obj);
		else if (!strcmp(type, "MODIFIED"))
			w->fn(w->arg, KUBE_MODIFIED, obj);
		else if (!strcmp(type, "DELETED"))
			w->fn(w->arg, KUBE_DELETED, obj);
	}
	json_decref(j);
	return ok;
}

/* The whole lines a stream has received, in order; false if the stream must end. */
static bool watch_lines(struct kube_watch *w)
{
	struct kube_req *q = w->req;
	size_t off = 0;
	long status = 0;
	char *nl;

	curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200)
		return true;        /* a Status body: read whole at the end */
	while ((nl = memchr(q->buf + off, '\n', q->len - off))) {
		size_t n = (size_t)(nl - (q->buf + off));

		if (n && !watch_event(w, q->buf + off, n))
			return false;
		q->got_line = q->got_line || n;
		off += n + 1;
	}
	memmove(q->buf, q->buf + off, q->len - off);
	q->len -= off;
	return true;
}

static void stream_end(struct kube_watch *w, struct kube_req *q, CURLcode rc)
{
	long status = 0;
	struct kube_resp res = { 0 };
	char why[512];

	curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status);
	w->req = NULL;
	if (rc == CURLE_OK && status == 200 && !q->got_line &&
	    util_now_ns(CLOCK_MONOTONIC) - q->started_ns < 1000000000ull) {
		/* a server that ends watches at once: not in a tight loop */
		watch_fail(w, "watch: ended at once without an event");
	} else if (rc == CURLE_OK && status == 200) {
		/* the server's timeoutSeconds: go on from where it ended */
		watch_stream(w);
	} else if (status == 410) {
		log_info("kubernetes: watch %s: resourceVersion %s is gone (410): relisting", w->path, w->rv);
		w->rv[0] = '\0';
		watch_list(w);
	} else {
		res.status = rc == CURLE_OK ? status : 0;
		res.body = q->len ? json_loadb(q->buf, q->len, 0, NULL) : NULL;
		res.err = q->too_big ? "an event larger than 16 MiB" : q->errbuf[0] ? q->errbuf : curl_easy_strerror(rc);
		watch_fail(w, "watch: %s", kube_resp_why(&res, why, sizeof(why)));
		json_decref(res.body);
	}
	req_free(q);
}

static void finish(struct kube *k, struct kube_req *q, CURLcode rc)
{
	struct kube_resp res = { 0 };
	bool was;

	req_unlink(q);
	if (q->w) {
		stream_end(q->w, q, rc);
		return;
	}
	if (rc == CURLE_OK)
		curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &res.status);
	/* a secret's answer: the parser's copies, and the document's, zeroed when freed */
	was = q->sensitive ? util_json_wipe(true) : false;
	res.body = q->len ? json_loadb(q->buf, q->len, 0, NULL) : NULL;
	res.err = q->too_big ? "answer larger than 64 MiB" : q->errbuf[0] ? q->errbuf : curl_easy_strerror(rc);
	if (q->done)
		q->done(q->arg, &res);
	json_decref(res.body);
	if (q->sensitive)
		util_json_wipe_restore(was);
	req_free(q);
}

/* A stream whose lines say it must end: resumed after the backoff, or relisted at once
 * after 410 Gone. */
static void stream_abort(struct kube_watch *w)
{
	struct kube_req *q = w->req;

	req_unlink(q);
	req_free(q);
	w->req = NULL;
	if (w->rv[0])
		watch_fail(w, "watch: the stream ended on an error");
	else
		watch_list(w);
}

static void pump(struct kube *k)
{
	CURLMsg *m;
	int left;

	/* events first: those of a stream that just ended come before its end */
	for (struct kube_watch *w = k->watches; w; w = w->next)
		if (w->req && w->req->w && w->req->len && !watch_lines(w))
			stream_abort(w);
	while ((m = curl_multi_info_read(k->multi, &left))) {
		struct kube_req *q = NULL;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&q);
		if (!q)
			continue;
		if (q->w && q->len && !watch_lines(q->w))
			stream_abort(q->w);
		else
			finish(k, q, m->data.result);
	}
}

int kube_watch_start(struct kube *k, const char *path, const char *label_selector,
		     const char *field_selector, kube_watch_fn fn, void *arg, struct kube_watch **out,
		     struct lerr *e)
{
	struct kube_watch *w = calloc(1, sizeof(*w));
	char *ls = NULL, *fs = NULL;

	if (!w)
		return lerr_set(e, ENOMEM, "kubernetes: out of memory");
	if (label_selector && !(ls = curl_easy_escape(NULL, label_selector, 0)))
		goto nomem;
	if (field_selector && !(fs = curl_easy_escape(NULL, field_selector, 0)))
		goto nomem;
	w->k = k;
	w->fn = fn;
	w->arg = arg;
	snprintf(w->path, sizeof(w->path), "%s", path);
	snprintf(w->query, sizeof(w->query), "%s%s%s%s%s%s", ls ? "labelSelector=" : "", ls ? ls : "",
		 ls ? "&" : "", fs ? "fieldSelector=" : "", fs ? fs : "", fs ? "&" : "");
	curl_free(ls);
	curl_free(fs);
	snprintf(w->why, sizeof(w->why), "not listed yet");
	w->next = k->watches;
	if (k->watches)
		k->watches->prev = w;
	k->watches = w;
	watch_list(w);
	*out = w;
	return 0;
nomem:
	curl_free(ls);
	free(w);
	return lerr_set(e, ENOMEM, "kubernetes: out of memory");
}

void kube_watch_stop(struct kube_watch *w)
{
	struct kube *k;

	if (!w)
		return;
	k = w->k;
	if (w->req)
		kube_cancel(w->req);
	if (w->retry_timer)
		loop_timer_cancel(k->loop, w->retry_timer);
	if (w->prev)
		w->prev->next = w->next;
	else
		k->watches = w->next;
	if (w->next)
		w->next->prev = w->prev;
	free(w);
}

bool kube_watch_current(const struct kube_watch *w, char *why, size_t len)
{
	if (!w->current)
		snprintf(why, len, "%s", w->why);
	return w->current;
}

/* ---- the client ---- */

int kube_open(struct loop *l, struct kube_config *c, struct kube **out, struct lerr *e)
{
	struct kube *k = calloc(1, sizeof(*k));

	if (!k) {
		kube_config_free(c);
		return lerr_set(e, ENOMEM, "kubernetes: out of memory");
	}
	k->loop = l;
	k->cfg = c;
	pthread_mutex_init(&k->cfg_mu, NULL);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(k->multi = curl_multi_init())) {
		kube_config_free(c);
		free(k);
		return lerr_set(e, EIO, "kubernetes: libcurl cannot start");
	}
	curl_multi_setopt(k->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(k->multi, CURLMOPT_SOCKETDATA, k);
	curl_multi_setopt(k->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
	curl_multi_setopt(k->multi, CURLMOPT_TIMERDATA, k);
	log_info("kubernetes: API server %s (%s%s)", c->server, c->source,
		 c->insecure ? "; TLS NOT verified: insecure-skip-tls-verify" : "");
	*out = k;
	return 0;
}

void kube_close(struct kube *k)
{
	if (!k)
		return;
	while (k->watches)
		kube_watch_stop(k->watches);
	while (k->reqs)
		kube_cancel(k->reqs);
	if (k->timer)
		loop_timer_cancel(k->loop, k->timer);
	curl_multi_cleanup(k->multi);
	kube_config_free(k->cfg);
	pthread_mutex_destroy(&k->cfg_mu);
	free(k);
}
