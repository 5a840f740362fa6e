/* dns.h: the FQDN proxy. One server per instance, listening on UDP and TCP at
 * 127.0.0.1:PORT and [::1]:PORT (the same port); the egress programs redirect the
 * instance's DNS (port 53, any address, UDP and TCP) there. Names the instance may
 * resolve are forwarded to the upstream; every A/AAAA answer is handed to the owner
 * (which inserts it into the instance's allow map) BEFORE the reply goes back, so the
 * connection right after the answer works. Other names get REFUSED. Truncated UDP
 * answers are passed on with TC set so the client retries over TCP, which is proxied
 * to the upstream over TCP. */
#ifndef LANTERN_DNS_H
#define LANTERN_DNS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "lantern/loop.h"
#include "lantern/util.h"

struct dns_callbacks {
	/* May the instance resolve qname (lowercase, no trailing dot)? */
	bool (*allowed)(void *ctx, const char *qname);
	/* One A or AAAA record reachable from the question (CNAME chains followed);
	 * addr is 16 bytes, IPv4 mapped. Returns 0, or -errno to answer SERVFAIL. */
	int (*answer)(void *ctx, const char *qname, const uint8_t addr[16], uint32_t ttl);
	/* A query refused (qtype as asked). */
	void (*refused)(void *ctx, const char *qname, uint16_t qtype);
};

struct dns_upstream {
	struct sockaddr_storage addr;
	socklen_t len;
};

/* "ADDR:PORT", "[V6]:PORT" or "ADDR" (port 53); NULL or "" = first nameserver of
 * /etc/resolv.conf. */
int dns_upstream_parse(const char *s, struct dns_upstream *u, struct lerr *e);

struct dns_server;
/* port 0 picks a free port. */
int dns_server_open(struct loop *l, const struct dns_upstream *u, uint16_t port,
		    const struct dns_callbacks *cb, void *ctx, struct dns_server **out,
		    struct lerr *e);
/* Also listens (UDP and TCP) on ip4 (network order, an address of this host) at the
 * same port: for an instance in a network namespace of its own, which cannot reach the
 * host's loopback (an OCI spawn reaches the node bridge's gateway address). */
int dns_server_listen_ip4(struct dns_server *s, uint32_t ip4, struct lerr *e);
uint16_t dns_server_port(const struct dns_server *s);
/* Closes listeners and in-flight queries. */
void dns_server_close(struct dns_server *s);

#endif
