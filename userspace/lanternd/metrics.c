/* metrics.c: the Prometheus text endpoint (GET /metrics on --metrics-addr), served
 * by libmicrohttpd inside lanternd's event loop: its epoll fd is watched by the loop,
 * so the handler runs on the loop's thread and reads the daemon's state directly. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "lanternd.h"
#include "telemetry.h"

#define METRICS_POLL_MS 500 /* connection timeouts: libmicrohttpd's own bookkeeping */

static struct MHD_Daemon *mhd;
static struct daemon *metrics_d;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **state)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char *text;

	if (strcmp(method, "GET") || strcmp(url, "/metrics")) {
		static const char nf[] = "not found: GET /metrics\n";
		resp = MHD_create_response_from_buffer(sizeof(nf) - 1, (void *)nf, MHD_RESPMEM_PERSISTENT);
		ret = MHD_queue_response(conn, MHD_HTTP_NOT_FOUND, resp);
		MHD_destroy_response(resp);
		return ret;
	}
	text = telemetry_metrics_text(metrics_d);
	if (!text)
		return MHD_NO;
	resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void on_mhd(struct loop *l, int fd, uint32_t events, void *arg)
{
	if (mhd)
		MHD_run(mhd);
}

static void on_poll(struct loop *l, void *arg)
{
	if (!mhd)
		return;
	MHD_run(mhd);
	loop_timer_add(l, METRICS_POLL_MS, on_poll, arg);
}

int metrics_start(struct daemon *d, const char *addr, struct lerr *e)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	const union MHD_DaemonInfo *info;
	char host[64];
	const char *colon = strrchr(addr, ':');
	char *end;
	unsigned long port;
	int err;

	if (!colon || (size_t)(colon - addr) >= sizeof(host))
		return lerr_set(e, -EINVAL, "metrics: --metrics-addr \"%s\": use IPV4:PORT", addr);
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	port = strtoul(colon + 1, &end, 10);
	if (*end || port > 65535 || inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &sa.sin_addr) != 1)
		return lerr_set(e, -EINVAL, "metrics: --metrics-addr \"%s\": use IPV4:PORT", addr);
	sa.sin_port = htons((uint16_t)port);
	metrics_d = d;
	mhd = MHD_start_daemon(MHD_USE_EPOLL, (uint16_t)port, NULL, NULL, on_request, NULL,
			       MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_TIMEOUT,
			       (unsigned)10, MHD_OPTION_END);
	if (!mhd)
		return lerr_set(e, -EADDRINUSE, "metrics: cannot listen on %s", addr);
	info = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (!info || (err = loop_add(d->loop, info->epoll_fd, EPOLLIN, on_mhd, NULL)) < 0) {
		MHD_stop_daemon(mhd);
		mhd = NULL;
		return lerr_set(e, -EIO, "metrics: cannot watch the HTTP server of %s", addr);
	}
	loop_timer_add(d->loop, METRICS_POLL_MS, on_poll, NULL);
	log_info("metrics: Prometheus text on http://%s/metrics", addr);
	return 0;
}

void metrics_stop(void)
{
	if (mhd)
		MHD_stop_daemon(mhd);
	mhd = NULL;
}
