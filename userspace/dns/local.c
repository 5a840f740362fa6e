/* local.c: an owner's DNS proxy served in the owner's own process (no lantern-wire):
 * struct dns_proxy_ops over dns_server_open and friends; arg is the event loop. */
#include "lantern/dns.h"

static int local_open(void *arg, const struct dns_upstream *u, uint16_t port, const struct dns_callbacks *cb,
		      void *ctx, void **proxy, struct lerr *e)
{
	return dns_server_open(arg, u, port, cb, ctx, (struct dns_server **)proxy, e);
}

static int local_listen_ip4(void *arg, void *proxy, uint32_t ip4, struct lerr *e)
{
	return dns_server_listen_ip4(proxy, ip4, e);
}

static uint16_t local_port(void *arg, void *proxy)
{
	return dns_server_port(proxy);
}

static void local_close(void *arg, void *proxy)
{
	dns_server_close(proxy);
}

const struct dns_proxy_ops dns_local_proxy = {
	.open = local_open,
	.listen_ip4 = local_listen_ip4,
	.port = local_port,
	.close = local_close,
};
