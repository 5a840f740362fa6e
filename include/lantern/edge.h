/* edge.h: lanternd's side of privilege separation. It starts lantern-wire (the
 * unprivileged process that parses what workloads send, include/lantern/wire.h), binds
 * the sockets workloads reach and hands them over, and answers lantern-wire's typed
 * questions with lanternd's authority: harness API calls go to the durable subscriber
 * (after the caller's cgroup is checked here), DNS questions to the egress subscriber.
 * When lantern-wire dies it is started again and given every socket back; nothing
 * durable is lost (the journal is lanternd's), callers in the middle of a request
 * reconnect. */
#ifndef LANTERN_EDGE_H
#define LANTERN_EDGE_H

#include "lantern/dns.h"
#include "lantern/durable.h"
#include "lantern/loop.h"
#include "lantern/util.h"

struct edge;

struct edge_opts {
	const char *wire;        /* the lantern-wire binary */
	const char *user;        /* it runs as this user (default nobody) */
	const char *root;        /* an empty directory it takes as its root */
};

int edge_open(struct loop *l, const struct edge_opts *o, struct edge **out, struct lerr *e);
/* Stops lantern-wire; the sockets stay (a restarted lanternd serves them again). */
void edge_close(struct edge *g);
/* The harness API through lantern-wire: durable_set_transport(d, &edge_harness, g). */
extern const struct durable_transport edge_harness;
void edge_set_durable(struct edge *g, struct durable *d);
/* DNS proxies through lantern-wire (egress_opts.dns, with dns_arg = g). */
extern const struct dns_proxy_ops edge_dns;
/* lantern-wire's pid (tests kill it to see it come back), 0 while it is down. */
pid_t edge_wire_pid(const struct edge *g);

#endif
