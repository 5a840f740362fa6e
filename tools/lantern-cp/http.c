/* http.c: lantern-cp's operator API (libmicrohttpd, JSON in and out), for operators and
 * `lantern --control-plane URL`. Every request carries "Authorization: Bearer TOKEN",
 * the operator token from lantern-cp's configuration.
 *   POST /v1/data-planes            {tenant_id, name}: mint a one-time bootstrap token
 *   GET  /v1/data-planes[/{id}]     planes: registration, liveness, load, drain
 *   POST /v1/data-planes/{id}/drain {draining: true|false}: no new runs, in-flight finish
 *   POST /v1/runs                   {tenant_id, spec, input_json?, plane_id?,
 *                                    idempotency_key?}: submit an AgentSpec (YAML or JSON)
 *   GET  /v1/runs/{id}
 *   GET  /v1/runs/{id}/receipt      the run's receipt, node-signed and countersigned
 *   POST /v1/runs/{id}/cancel
 * and, without authorization (public keys for verifiers, identity.c):
 *   GET  /.well-known/lantern-agent-identity, /.well-known/jwks.json (instance tokens),
 *        /.well-known/lantern-receipts (receipts: this key and every node's)
 * It listens on loopback by default: put a TLS-terminating proxy in front to expose it. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

#include "cp.h"
#include "lantern/addr.h"
#include "lantern/spec.h"

#define HTTP_MAX_BODY (1u << 20)

static struct MHD_Daemon *httpd;

struct req {
	char *body;
	size_t len;
	bool too_big;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	struct MHD_Response *r;
	enum MHD_Result ret;

	json_decref(j);
	if (!s)
		s = strdup("{}");
	r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(r, "Content-Type", "application/json");
	ret = MHD_queue_response(c, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result error(struct MHD_Connection *c, unsigned code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static enum MHD_Result error(struct MHD_Connection *c, unsigned code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return reply(c, code, json_pack("{s:s}", "error", msg));
}

static bool authorized(struct cp *cp, struct MHD_Connection *c)
{
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	size_t n = strlen(cp->operator_token);

	if (!h || strncmp(h, "Bearer ", 7))
		return false;
	h += 7;
	return strlen(h) == n && sodium_memcmp(h, cp->operator_token, n) == 0;
}

static enum MHD_Result new_plane(struct cp *cp, struct MHD_Connection *c, json_t *in)
{
	const char *tenant = json_string_value(json_object_get(in, "tenant_id"));
	const char *name = json_string_value(json_object_get(in, "name"));
	char id[40] = "dp-", token[65], hash[65], now[24];
	const char *p[5] = { id, tenant, name ? name : "", hash, now };
	struct plane *pl;
	struct lerr e;

	if (!tenant || !*tenant || strlen(tenant) > 100)
		return error(c, 400, "tenant_id: a string of 1 to 100 characters is required");
	util_random_hex(id + 3, 8);
	token_bootstrap_new(token, hash);
	snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
	pthread_mutex_lock(&cp->mu);
	if (db_exec(cp->db, "INSERT INTO data_planes (id, tenant_id, name, token_hash, created_at) "
		    "VALUES ($1, $2, $3, $4, $5)", 5, p, &e) < 0) {
		pthread_mutex_unlock(&cp->mu);
		return error(c, 500, "%s", e.msg);
	}
	pl = calloc(1, sizeof(*pl));
	if (pl) {
		snprintf(pl->id, sizeof(pl->id), "%s", id);
		snprintf(pl->tenant, sizeof(pl->tenant), "%s", tenant);
		snprintf(pl->name, sizeof(pl->name), "%s", name ? name : "");
		pl->last_hb_ms = cp_mono_ms();
		pl->next = cp->planes;
		cp->planes = pl;
	}
	pthread_mutex_unlock(&cp->mu);
	log_info("plane %s (tenant %s): bootstrap token minted", id, tenant);
	/* the token is shown here, once; only its hash is kept */
	return reply(c, 201, json_pack("{s:s, s:s, s:s, s:s}", "id", id, "tenant_id", tenant,
				       "name", name ? name : "", "bootstrap_token", token));
}

static enum MHD_Result submit(struct cp *cp, struct MHD_Connection *c, json_t *in)
{
	const char *tenant = json_string_value(json_object_get(in, "tenant_id"));
	const char *text = json_string_value(json_object_get(in, "spec"));
	const char *input = json_string_value(json_object_get(in, "input_json"));
	const char *pin = json_string_value(json_object_get(in, "plane_id"));
	const char *idem = json_string_value(json_object_get(in, "idempotency_key"));
	struct spec_errors errs = { 0 };
	struct spec *s = NULL;
	struct cprun *r;
	json_t *out;

	if (!tenant || !*tenant || strlen(tenant) > 100)
		return error(c, 400, "tenant_id: a string of 1 to 100 characters is required");
	if (!text)
		return error(c, 400, "spec: the AgentSpec (YAML or JSON text) is required");
	if ((pin && strlen(pin) >= sizeof(r->pin)) || (idem && strlen(idem) >= sizeof(r->idem)))
		return error(c, 400, "plane_id or idempotency_key is too long");
	if (spec_parse("spec", text, strlen(text), &s, &errs) < 0) {
		json_t *list = json_array();

		for (size_t i = 0; i < errs.n; i++)
			json_array_append_new(list, json_string(errs.msg[i]));
		spec_errors_free(&errs);
		return reply(c, 400, json_pack("{s:s, s:o}", "error", "invalid AgentSpec", "errors", list));
	}
	pthread_mutex_lock(&cp->mu);
	if (idem && *idem) {
		for (r = cp->runs; r; r = r->next)
			if (!strcmp(r->idem, idem) && !strcmp(r->tenant, tenant)) {
				out = cp_run_json(r);
				pthread_mutex_unlock(&cp->mu);
				spec_free(s);
				return reply(c, 200, out);
			}
	}
	r = calloc(1, sizeof(*r));
	if (!r || !(r->config_json = json_dumps(s->json, JSON_COMPACT | JSON_SORT_KEYS))) {
		pthread_mutex_unlock(&cp->mu);
		free(r);
		spec_free(s);
		return error(c, 500, "out of memory");
	}
	memcpy(r->id, "run-", 4);
	util_random_hex(r->id + 4, 8);
	snprintf(r->tenant, sizeof(r->tenant), "%s", tenant);
	snprintf(r->isolation, sizeof(r->isolation), "%s", spec_isolation_name(s->isolation));
	snprintf(r->pin, sizeof(r->pin), "%s", pin ? pin : "");
	snprintf(r->idem, sizeof(r->idem), "%s", idem ? idem : "");
	r->input_json = strdup(input ? input : "");
	cp_run_spec_info(r);
	r->state = RS_QUEUED;
	r->created_us = cp_now_us();
	if (cp->runs_tail)
		cp->runs_tail->next = r;
	else
		cp->runs = r;
	cp->runs_tail = r;
	cp_save_run(cp, r);
	cp_dispatch(cp);
	out = cp_run_json(r);
	pthread_mutex_unlock(&cp->mu);
	log_info("run %s (%s, tenant %s, isolation %s): submitted", r->id, s->name, tenant, r->isolation);
	spec_free(s);
	return reply(c, 202, out);
}

static enum MHD_Result route(struct cp *cp, struct MHD_Connection *c, const char *url,
			     const char *method, struct req *rq)
{
	bool post = !strcmp(method, "POST"), get = !strcmp(method, "GET");
	json_t *in = NULL, *out = NULL;
	char id[64], verb[32];
	enum MHD_Result ret;

	if (get && !strncmp(url, "/.well-known/", 13)) {
		unsigned st = 404;

		pthread_mutex_lock(&cp->mu);
		out = cp_identity_page(cp, url, &st);
		pthread_mutex_unlock(&cp->mu);
		return out ? reply(c, st, out) : error(c, 404, "no such document: %s", url);
	}
	if (!authorized(cp, c))
		return error(c, 401, "operator API: a valid \"Authorization: Bearer TOKEN\" is required");
	if (rq->too_big)
		return error(c, 413, "request body over %u bytes", HTTP_MAX_BODY);
	if (post && rq->len) {
		in = json_loadb(rq->body, rq->len, 0, NULL);
		if (!json_is_object(in)) {
			json_decref(in);
			return error(c, 400, "the body must be a JSON object");
		}
	}
	if (post && !strcmp(url, "/v1/data-planes")) {
		ret = new_plane(cp, c, in);
	} else if (post && !strcmp(url, "/v1/runs")) {
		ret = submit(cp, c, in);
	} else if (get && !strcmp(url, "/v1/data-planes")) {
		out = json_array();
		pthread_mutex_lock(&cp->mu);
		for (struct plane *p = cp->planes; p; p = p->next)
			json_array_append_new(out, cp_plane_json(cp, p));
		pthread_mutex_unlock(&cp->mu);
		ret = reply(c, 200, json_pack("{s:o}", "data_planes", out));
	} else if (sscanf(url, "/v1/data-planes/%63[^/]/%31s", id, verb) == 2 && post &&
		   !strcmp(verb, "drain")) {
		json_t *d = json_object_get(in, "draining");
		struct plane *p;

		pthread_mutex_lock(&cp->mu);
		if ((p = cp_plane(cp, id))) {
			p->draining = d ? json_is_true(d) : true;
			/* the operator's drain now: no heartbeat lifts it */
			p->self_draining = false;
			cp_save_plane(cp, p);
			out = cp_plane_json(cp, p);
			if (!p->draining)
				cp_dispatch(cp);
		}
		pthread_mutex_unlock(&cp->mu);
		if (p)
			log_info("plane %s: %s", id, json_is_true(json_object_get(out, "draining")) ?
				 "draining: no new runs" : "drain lifted");
		ret = out ? reply(c, 200, out) : error(c, 404, "no data plane %s", id);
	} else if (sscanf(url, "/v1/data-planes/%63[^/]", id) == 1 && get && !strchr(url + 16, '/')) {
		struct plane *p;

		pthread_mutex_lock(&cp->mu);
		if ((p = cp_plane(cp, id)))
			out = cp_plane_json(cp, p);
		pthread_mutex_unlock(&cp->mu);
		ret = out ? reply(c, 200, out) : error(c, 404, "no data plane %s", id);
	} else if (sscanf(url, "/v1/runs/%63[^/]/%31s", id, verb) == 2 && post &&
		   !strcmp(verb, "cancel")) {
		struct cprun *r;
		int err = -ENOENT;

		pthread_mutex_lock(&cp->mu);
		if ((r = cp_run(cp, id))) {
			err = cp_cancel(cp, r);
			out = cp_run_json(r);
		}
		pthread_mutex_unlock(&cp->mu);
		if (err == -ENOENT)
			ret = error(c, 404, "no run %s", id);
		else if (err == -EALREADY) {
			json_decref(out);
			ret = error(c, 409, "run %s already ended", id);
		} else
			ret = reply(c, 202, out);
	} else if (sscanf(url, "/v1/runs/%63[^/]/%31s", id, verb) == 2 && get && !strcmp(verb, "receipt")) {
		unsigned st = 404;

		pthread_mutex_lock(&cp->mu);
		out = cp_identity_page(cp, url, &st);
		pthread_mutex_unlock(&cp->mu);
		ret = reply(c, st, out);
	} else if (sscanf(url, "/v1/runs/%63[^/]", id) == 1 && get && !strchr(url + 9, '/')) {
		struct cprun *r;

		pthread_mutex_lock(&cp->mu);
		if ((r = cp_run(cp, id)))
			out = cp_run_json(r);
		pthread_mutex_unlock(&cp->mu);
		ret = out ? reply(c, 200, out) : error(c, 404, "no run %s", id);
	} else {
		ret = error(c, 404, "no such endpoint: %s %s", method, url);
	}
	json_decref(in);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct req *rq = *con_cls;

	if (!rq) {
		rq = calloc(1, sizeof(*rq));
		if (!rq)
			return MHD_NO;
		*con_cls = rq;
		return MHD_YES;
	}
	if (*upload_size) {
		if (rq->len + *upload_size > HTTP_MAX_BODY) {
			rq->too_big = true;
		} else {
			char *nb = realloc(rq->body, rq->len + *upload_size + 1);
			if (!nb)
				return MHD_NO;
			memcpy(nb + rq->len, upload, *upload_size);
			rq->len += *upload_size;
			nb[rq->len] = '\0';
			rq->body = nb;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	return route(cls, c, url, method, rq);
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
		    enum MHD_RequestTerminationCode toe)
{
	struct req *rq = *con_cls;

	if (rq) {
		free(rq->body);
		free(rq);
	}
	*con_cls = NULL;
}

int http_start(struct cp *cp, struct lerr *e)
{
	struct sockaddr_storage ss;
	socklen_t len;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
	uint16_t port;
	int err;

	err = util_addr_parse("http: --http", cp->o.http, 0, UTIL_ADDR_PORT_NEEDED, &ss, &len, e);
	if (err < 0)
		return err;
	if (ss.ss_family == AF_INET6) {
		flags |= MHD_USE_IPv6;
		port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	} else {
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	}
	httpd = MHD_start_daemon(flags, port, NULL, NULL, on_request, cp,
				 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				 MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
				 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30,
				 /* a restarted lantern-cp takes its port back at once */
				 MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int)1,
				 MHD_OPTION_END);
	if (!httpd)
		return lerr_set(e, EADDRINUSE, "http: cannot listen on %s", cp->o.http);
	return 0;
}

void http_stop(void)
{
	if (httpd)
		MHD_stop_daemon(httpd);
	httpd = NULL;
}
