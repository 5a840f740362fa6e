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

#include "lantern/dns_wire.h"
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

/* The owner in lanternd's own process: the questions are answered at once. port 0
 * picks a free port. */
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

/* ---- serving apart from binding (privilege separation: lanternd binds, lantern-wire
 * serves and asks lanternd its questions) ---- */
struct dns_listeners {
	int udp[3], tcp[3];      /* [0] 127.0.0.1, [1] ::1, [2] the bridge's; -1 when absent */
	uint16_t port;
};
/* Loopback UDP and TCP on one port (0 picks a free one). */
int dns_listeners_open(uint16_t port, struct dns_listeners *ls, struct lerr *e);
/* UDP and TCP on ip4 (network order) at port. */
int dns_listeners_ip4(uint16_t port, uint32_t ip4, int *udp, int *tcp, struct lerr *e);
void dns_listeners_close(struct dns_listeners *ls);

struct dns_addr {
	uint8_t addr[16];        /* IPv4 mapped */
	uint32_t ttl;
};

/* The serving side's questions. Each answers now, or returns -EINPROGRESS and the
 * answer comes later through dns_server_verdict / dns_server_answered with qid.
 * With ask set, check and answers are not used and no upstream is needed: ask hands
 * the whole question over and its answer comes as dns_server_verdict(qid, false)
 * (REFUSED) or dns_server_relay (the reply to relay, or NULL for SERVFAIL). */
struct dns_server_hooks {
	/* The question (qname lowercase, no trailing dot), over the client's transport;
	 * 0: refused here (the hook records it); -EINPROGRESS. */
	int (*ask)(void *ctx, uint64_t qid, const char *qname, uint16_t qtype, uint16_t qclass, bool tcp);
	/* 1: forward; 0: refused (the hook records it); -EINPROGRESS. */
	int (*check)(void *ctx, uint64_t qid, const char *qname, uint16_t qtype);
	/* The A/AAAA on the answer's CNAME chain, to be allowed before the reply is relayed:
	 * 0 relays it, -errno answers SERVFAIL; -EINPROGRESS. */
	int (*answers)(void *ctx, uint64_t qid, const char *qname, const struct dns_addr *a, size_t n);
	/* A query the server refused itself (a zone transfer, a name it cannot print). */
	void (*refused)(void *ctx, const char *qname, uint16_t qtype);
};
/* Serves on ls (its fds are taken, also on failure). */
int dns_server_serve(struct loop *l, const struct dns_upstream *u, struct dns_listeners *ls,
		     const struct dns_server_hooks *h, void *ctx, struct dns_server **out, struct lerr *e);
/* Takes two more listeners (dns_listeners_ip4's). */
int dns_server_add_ip4(struct dns_server *s, int udp, int tcp, struct lerr *e);
void dns_server_verdict(struct dns_server *s, uint64_t qid, bool allowed);
void dns_server_answered(struct dns_server *s, uint64_t qid, int err);
/* The reply to an asked question (ask hook), checked against it; NULL: SERVFAIL. */
void dns_server_relay(struct dns_server *s, uint64_t qid, const uint8_t *reply, size_t len);

/* ---- one question to the upstream (ask.c) ---- */
struct dns_ask;
/* The reply (its ID ours, writable; qend the end of its question), or NULL when none
 * came in time or the upstream failed. The ask is freed after this returns. */
typedef void (*dns_ask_fn)(void *arg, uint8_t *reply, size_t len, size_t qend);
/* Sends query (len bytes, question q; its ID is replaced by a random one) over UDP or
 * TCP and waits up to timeout_ms. cb is called from the loop, never from here. */
int dns_ask_start(struct loop *l, const struct dns_upstream *u, const uint8_t *query, size_t len,
		  const struct dns_wire_question *q, bool tcp, unsigned timeout_ms, dns_ask_fn cb,
		  void *arg, struct dns_ask **out);
/* Before its callback: nothing is called. NULL is fine. */
void dns_ask_cancel(struct dns_ask *a);
/* A recursive query for qname (as dns_wire_name_text writes names), ID 0; returns its
 * length, or 0 when qname is not such a name. */
#define DNS_ASK_QUERY_MAX (DNS_WIRE_HDR + DNS_WIRE_NAME_MAX + 4)
size_t dns_ask_build(uint8_t out[DNS_ASK_QUERY_MAX], const char *qname, uint16_t qtype, uint16_t qclass);

/* ---- an owner's proxy, wherever it is served (egress uses this) ---- */
struct dns_proxy_ops {
	int (*open)(void *arg, const struct dns_upstream *u, uint16_t port, const struct dns_callbacks *cb,
		    void *ctx, void **proxy, struct lerr *e);
	int (*listen_ip4)(void *arg, void *proxy, uint32_t ip4, struct lerr *e);
	uint16_t (*port)(void *arg, void *proxy);
	void (*close)(void *arg, void *proxy);
};
/* The proxy served in this process (dns_server_open and friends); arg is the loop. */
extern const struct dns_proxy_ops dns_local_proxy;

#endif
