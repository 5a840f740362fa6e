/* metrics.c: the HTTP endpoint of --metrics-addr (see metrics.h): GET /metrics, the
 * Prometheus text the collectors the modules registered write, and the few other GET
 * pages modules registered (the probes /healthz and /readyz, identity's well-known documents), served by libmicrohttpd
 * inside the event loop. Label values are escaped as the text format requires
 * (backslash, double quote, newline), so a tenant or status name can never break a
 * line. */
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "lantern/addr.h"
#include "lantern/metrics.h"

#define METRICS_POLL_MS 500 /* connection timeouts: libmicrohttpd's own bookkeeping */
#define METRICS_MAX_COLLECTORS 16
#define METRICS_MAX_ROUTES 8

struct collector {
	metrics_collect_fn fn;
	void *arg;
};

struct route {
	char path[48];
	metrics_route_fn fn;
	void *arg;
};

struct metrics {
	struct loop *loop;
	struct MHD_Daemon *mhd;
	struct collector c[METRICS_MAX_COLLECTORS];
	int n;
	struct route routes[METRICS_MAX_ROUTES];
	int nroutes;
	uint64_t poll_timer;
};

struct metrics_out {
	FILE *f;
};

void metrics_family(struct metrics_out *o, const char *name, const char *type, const char *help)
{
	fprintf(o->f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void write_labels(FILE *f, const char *const *labels)
{
	if (!labels || !labels[0])
		return;
	fputc('{', f);
	for (size_t i = 0; labels[i] && labels[i + 1]; i += 2) {
		fprintf(f, "%s%s=\"", i ? "," : "", labels[i]);
		for (const char *p = labels[i + 1]; *p; p++) {
			if (*p == '\\' || *p == '"')
				fputc('\\', f), fputc(*p, f);
			else if (*p == '\n')
				fputs("\\n", f);
			else
				fputc(*p, f);
		}
		fputc('"', f);
	}
	fputc('}', f);
}

void metrics_u64(struct metrics_out *o, const char *name, const char *const *labels, uint64_t v)
{
	fputs(name, o->f);
	write_labels(o->f, labels);
	fprintf(o->f, " %" PRIu64 "\n", v);
}

void metrics_f64(struct metrics_out *o, const char *name, const char *const *labels, double v)
{
	fputs(name, o->f);
	write_labels(o->f, labels);
	fprintf(o->f, " %.9f\n", v);
}

char *metrics_text(struct metrics *m)
{
	struct metrics_out o;
	char *buf = NULL;
	size_t len = 0;

	if (!(o.f = open_memstream(&buf, &len)))
		return NULL;
	for (int i = 0; i < m->n; i++)
		m->c[i].fn(m->c[i].arg, &o);
	fclose(o.f);
	return buf;
}

int metrics_register(struct metrics *m, metrics_collect_fn fn, void *arg)
{
	if (m->n == METRICS_MAX_COLLECTORS)
		return -ENOSPC;
	m->c[m->n].fn = fn;
	m->c[m->n++].arg = arg;
	return 0;
}

int metrics_route(struct metrics *m, const char *path, metrics_route_fn fn, void *arg)
{
	if (m->nroutes == METRICS_MAX_ROUTES || strlen(path) >= sizeof(m->routes[0].path))
		return -ENOSPC;
	snprintf(m->routes[m->nroutes].path, sizeof(m->routes[0].path), "%s", path);
	m->routes[m->nroutes].fn = fn;
	m->routes[m->nroutes++].arg = arg;
	return 0;
}

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *body,
			       enum MHD_ResponseMemoryMode mode, const char *type)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), (void *)body, mode);
	enum MHD_Result ret;

	if (!resp)
		return MHD_NO;
	if (type)
		MHD_add_response_header(resp, "Content-Type", type);
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **state)
{
	struct metrics *m = cls;
	const char *type;
	char *text;

	for (int i = 0; !strcmp(method, "GET") && i < m->nroutes; i++) {
		if (!strcmp(url, m->routes[i].path)) {
			unsigned status;

			text = NULL;
			type = "text/plain; charset=utf-8";
			status = m->routes[i].fn(m->routes[i].arg, &text, &type);
			return respond(conn, status, text ? text : "", text ? MHD_RESPMEM_MUST_FREE :
				       MHD_RESPMEM_PERSISTENT, type);
		}
	}
	if (strcmp(method, "GET") || strcmp(url, "/metrics"))
		return respond(conn, MHD_HTTP_NOT_FOUND, "not found: GET /metrics\n", MHD_RESPMEM_PERSISTENT,
			       NULL);
	if (!(text = metrics_text(m)))
		return MHD_NO;
	return respond(conn, MHD_HTTP_OK, text, MHD_RESPMEM_MUST_FREE,
		       "text/plain; version=0.0.4; charset=utf-8");
}

static void on_mhd(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct metrics *m = arg;

	MHD_run(m->mhd);
}

static void on_poll(struct loop *l, void *arg)
{
	struct metrics *m = arg;

	MHD_run(m->mhd);
	m->poll_timer = loop_timer_add(l, METRICS_POLL_MS, on_poll, m);
}

int metrics_open(struct loop *l, const char *addr, struct metrics **out, struct lerr *e)
{
	const union MHD_DaemonInfo *info;
	struct sockaddr_storage sa;
	socklen_t salen;
	struct metrics *m;
	int err;

	if ((err = util_addr_parse("metrics: --metrics-addr", addr, 0,
				   UTIL_ADDR_PORT_NEEDED | UTIL_ADDR_PORT_ZERO | UTIL_ADDR_EMPTY_ANY, &sa, &salen, e)) < 0)
		return err;
	if (!(m = calloc(1, sizeof(*m))))
		return lerr_set(e, ENOMEM, "metrics: out of memory");
	m->loop = l;
	m->mhd = MHD_start_daemon(MHD_USE_EPOLL | (sa.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0), 0, NULL,
				  NULL, on_request, m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
	if (!m->mhd) {
		free(m);
		return lerr_set(e, EADDRINUSE, "metrics: cannot listen on %s", addr);
	}
	info = MHD_get_daemon_info(m->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (!info || (err = loop_add(l, info->epoll_fd, EPOLLIN, on_mhd, m)) < 0) {
		MHD_stop_daemon(m->mhd);
		free(m);
		return lerr_set(e, EIO, "metrics: cannot watch the HTTP server of %s", addr);
	}
	m->poll_timer = loop_timer_add(l, METRICS_POLL_MS, on_poll, m);
	log_info("metrics: Prometheus text on http://%s/metrics", addr);
	*out = m;
	return 0;
}

void metrics_close(struct metrics *m)
{
	if (!m)
		return;
	if (m->poll_timer)
		loop_timer_cancel(m->loop, m->poll_timer);
	MHD_stop_daemon(m->mhd);
	free(m);
}
