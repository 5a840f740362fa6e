/* egress_skb.bpf.h: egress policy on packets, for the cgroup_skb egress program
 * (telemetry.bpf.c; one program per hook).
 *
 * The socket hooks (egress.bpf.c) judge the address a TCP or UDP socket names. A
 * packet of such a socket can still go somewhere else first: an IPv6 routing header
 * (IPV6_RTHDR needs no capability; a segment routing header sends the packet to the
 * segment it lists, the socket's address only written in as the last segment) or an
 * IPv4 source route (IP_OPTIONS, or an IP_RETOPTS cmsg on one sendmsg) goes to a first
 * hop the policy never saw. Packets of raw, ping and other sockets never meet those
 * hooks at all. So for an instance whose network is not `open`, such packets are
 * dropped (audit mode: passed), counted in lantern_pkt_stats and reported as deny
 * events with a reason; a cgroup with no instance entry has its dropped too.
 *
 * Every IPv4 option is dropped, not only source routes: a workload needs none, and an
 * option list that does not parse cannot be trusted to hold no route. IPv6 extension
 * headers are walked at most EXT_MAX deep; a packet with more, or cut short inside
 * them, is dropped (fail closed). The common packet costs two one-byte reads: an IPv4
 * header without options, or an IPv6 header followed directly by TCP, UDP or ICMPv6. */
#ifndef LANTERN_EGRESS_SKB_BPF_H
#define LANTERN_EGRESS_SKB_BPF_H

#include <bpf/bpf_endian.h>

#include "egress_maps.bpf.h"

#define ESKB_ETH_P_IP     0x0800
#define ESKB_ETH_P_IPV6   0x86DD
#define ESKB_AF_INET      2
#define ESKB_AF_INET6     10
#define ESKB_SOCK_STREAM  1
#define ESKB_SOCK_DGRAM   2
#define ESKB_IPPROTO_TCP  6
#define ESKB_IPPROTO_UDP  17
#define ESKB_IPPROTO_ICMPV6 58
#define ESKB_NEXTHDR_HOP      0
#define ESKB_NEXTHDR_ROUTING  43
#define ESKB_NEXTHDR_FRAGMENT 44
#define ESKB_NEXTHDR_AUTH     51
#define ESKB_NEXTHDR_DEST     60
#define ESKB_NEXTHDR_MOBILITY 135
#define ESKB_NEXTHDR_HIP      139
#define ESKB_NEXTHDR_SHIM6    140
#define ESKB_IPOPT_END    0
#define ESKB_IPOPT_NOOP   1
#define ESKB_IPOPT_LSRR   0x83
#define ESKB_IPOPT_SSRR   0x89
#define ESKB_IPOPT_MAX    40
#define EXT_MAX           8

/* cgroup_skb egress verdicts */
#define ESKB_DROP 0
#define ESKB_PASS 1

/* Where a dropped packet was going, for its event. */
struct eskb_pkt {
	__u8 addr[16];  /* destination, IPv4 mapped */
	__u16 port;     /* host order; TCP and UDP only */
	__u8 family;
	__u8 proto;     /* LANTERN_PROTO_*, 0 for anything else */
};

static __always_inline bool eskb_sock_tcp_udp(struct bpf_sock *sk)
{
	return (sk->type == ESKB_SOCK_STREAM && sk->protocol == ESKB_IPPROTO_TCP) ||
	       (sk->type == ESKB_SOCK_DGRAM && sk->protocol == ESKB_IPPROTO_UDP);
}

/* The cheap test every packet takes: could it carry a route? */
static __always_inline bool eskb_maybe_routed(struct __sk_buff *skb)
{
	__u8 b;

	if (skb->protocol == bpf_htons(ESKB_ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, 0, &b, 1) < 0)
			return true;
		return (b & 0x0f) != 5;
	}
	if (skb->protocol == bpf_htons(ESKB_ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, 6, &b, 1) < 0)
			return true;
		return b != ESKB_IPPROTO_TCP && b != ESKB_IPPROTO_UDP && b != ESKB_IPPROTO_ICMPV6;
	}
	return false;
}

static __always_inline void eskb_l4(struct __sk_buff *skb, __u32 off, __u8 ipproto,
				    struct eskb_pkt *p)
{
	__u16 ports[2];

	if (ipproto == ESKB_IPPROTO_TCP)
		p->proto = LANTERN_PROTO_TCP;
	else if (ipproto == ESKB_IPPROTO_UDP)
		p->proto = LANTERN_PROTO_UDP;
	else
		return;
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) == 0)
		p->port = bpf_ntohs(ports[1]);
}

/* IPv4: any option is a reason; a source route among them is named as such. */
static __always_inline __u8 eskb_ipv4(struct __sk_buff *skb, struct eskb_pkt *p)
{
	__u8 opt[ESKB_IPOPT_MAX];
	struct iphdr ip;
	__u64 ihl, optlen;
	__u32 i = 0;
	__u32 *w = (__u32 *)p->addr;
	__u8 reason = LANTERN_REASON_NONE;

	p->family = ESKB_AF_INET;
	if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
		return LANTERN_REASON_IPV4_OPTIONS;
	w[2] = bpf_htonl(0xffff);
	w[3] = ip.daddr;
	eskb_l4(skb, (__u32)ip.ihl * 4, ip.protocol, p);
	ihl = ip.ihl;
	if (ihl == 5)
		return LANTERN_REASON_NONE;
	reason = LANTERN_REASON_IPV4_OPTIONS;
	/* 64-bit, so the verifier follows the bounds to the load's length */
	optlen = ihl > 5 ? (ihl - 5) * 4 : 0;
	if (!optlen || optlen > sizeof(opt) || bpf_skb_load_bytes(skb, sizeof(ip), opt, optlen) < 0)
		return reason;
	for (int n = 0; n < ESKB_IPOPT_MAX; n++) {
		__u8 t, len;

		if (i >= optlen || i >= ESKB_IPOPT_MAX - 1)
			break;
		t = opt[i];
		if (t == ESKB_IPOPT_END)
			break;
		if (t == ESKB_IPOPT_LSRR || t == ESKB_IPOPT_SSRR)
			return LANTERN_REASON_IPV4_SOURCE_ROUTE;
		if (t == ESKB_IPOPT_NOOP) {
			i++;
			continue;
		}
		len = opt[i + 1];
		if (len < 2)
			break;
		i += len;
	}
	return reason;
}

/* IPv6: walks the extension headers to the transport header. */
static __always_inline __u8 eskb_ipv6(struct __sk_buff *skb, struct eskb_pkt *p)
{
	struct ipv6hdr ip6;
	__u8 reason = LANTERN_REASON_NONE, nh, h[2];
	__u32 off = sizeof(ip6);

	p->family = ESKB_AF_INET6;
	if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0)
		return LANTERN_REASON_IPV6_EXT_HEADERS;
	__builtin_memcpy(p->addr, &ip6.daddr, sizeof(p->addr));
	nh = ip6.nexthdr;
	for (int n = 0; n < EXT_MAX; n++) {
		switch (nh) {
		case ESKB_NEXTHDR_ROUTING:
			reason = LANTERN_REASON_IPV6_ROUTING_HEADER;
			/* fallthrough: walked on to find the port for the event */
		case ESKB_NEXTHDR_HOP:
		case ESKB_NEXTHDR_DEST:
		case ESKB_NEXTHDR_MOBILITY:
		case ESKB_NEXTHDR_HIP:
		case ESKB_NEXTHDR_SHIM6:
			if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
				return reason ? reason : LANTERN_REASON_IPV6_EXT_HEADERS;
			off += ((__u32)h[1] + 1) * 8;
			break;
		case ESKB_NEXTHDR_AUTH:
			if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
				return reason ? reason : LANTERN_REASON_IPV6_EXT_HEADERS;
			off += ((__u32)h[1] + 2) * 4;
			break;
		case ESKB_NEXTHDR_FRAGMENT:
			if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
				return reason ? reason : LANTERN_REASON_IPV6_EXT_HEADERS;
			off += 8;
			break;
		default:
			eskb_l4(skb, off, nh, p);
			return reason;
		}
		nh = h[0];
	}
	return reason ? reason : LANTERN_REASON_IPV6_EXT_HEADERS;
}

static __always_inline void eskb_count(__u64 cgid, __u8 reason, bool audit)
{
	struct lantern_pkt_stats *s, zero = {};

	s = bpf_map_lookup_elem(&lantern_pkt_stats, &cgid);
	if (!s) {
		bpf_map_update_elem(&lantern_pkt_stats, &cgid, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&lantern_pkt_stats, &cgid);
		if (!s)
			return;
	}
	/* per-CPU value: plain adds */
	if (audit)
		s->audited++;
	else if (reason == LANTERN_REASON_IPV6_ROUTING_HEADER)
		s->ipv6_routing_header++;
	else if (reason == LANTERN_REASON_IPV6_EXT_HEADERS)
		s->ipv6_ext_headers++;
	else if (reason == LANTERN_REASON_IPV4_SOURCE_ROUTE)
		s->ipv4_source_route++;
	else if (reason == LANTERN_REASON_IPV4_OPTIONS)
		s->ipv4_options++;
	else
		s->socket_type++;
}

static __always_inline void eskb_emit(__u64 cgid, __u32 policy_id, const struct eskb_pkt *p,
				      __u8 reason, bool audit)
{
	struct lantern_egress_event *ev;
	struct lantern_drops *dr;
	__u32 zero = 0;

	ev = bpf_ringbuf_reserve(&lantern_events, sizeof(*ev), 0);
	if (!ev) {
		dr = bpf_map_lookup_elem(&lantern_drops, &zero);
		if (dr)
			__sync_fetch_and_add(&dr->egress_events, 1);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = bpf_ktime_get_ns();
	ev->cgroup_id = cgid;
	/* the task that sent it when sent from a syscall; a retransmit from a timer
	 * shows whichever task the CPU was running */
	ev->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	ev->policy_id = policy_id;
	__builtin_memcpy(ev->addr, p->addr, sizeof(ev->addr));
	ev->port = p->port;
	ev->family = p->family;
	ev->proto = p->proto;
	ev->verdict = audit ? LANTERN_VERDICT_AUDIT : LANTERN_VERDICT_DENY;
	ev->hook = LANTERN_HOOK_SKB_EGRESS;
	ev->rule = 0xffff;
	ev->reason = reason;
	bpf_ringbuf_submit(ev, 0);
}

/* The verdict on one packet of instance cgid (not 0): ESKB_PASS or ESKB_DROP. */
static __always_inline int egress_skb_judge(struct __sk_buff *skb, __u64 cgid)
{
	struct eskb_pkt p = {};
	struct lantern_instance *in;
	struct lantern_config *c;
	struct bpf_sock *sk = skb->sk;
	bool odd_sock = false, audit;
	__u32 zero = 0;
	__u8 reason;

	if (sk) {
		sk = bpf_sk_fullsock(sk);
		/* not a full socket: a TCP request or time-wait socket, TCP either way */
		odd_sock = sk && !eskb_sock_tcp_udp(sk);
	}
	if (!odd_sock && !eskb_maybe_routed(skb))
		return ESKB_PASS;

	if (skb->protocol == bpf_htons(ESKB_ETH_P_IP))
		reason = eskb_ipv4(skb, &p);
	else if (skb->protocol == bpf_htons(ESKB_ETH_P_IPV6))
		reason = eskb_ipv6(skb, &p);
	else
		reason = LANTERN_REASON_NONE;
	if (odd_sock)
		reason = LANTERN_REASON_SOCKET_TYPE;
	if (!reason)
		return ESKB_PASS;

	in = bpf_map_lookup_elem(&lantern_instances, &cgid);
	if (in && in->net_mode == LANTERN_NET_OPEN)
		return ESKB_PASS;
	c = bpf_map_lookup_elem(&lantern_config, &zero);
	audit = in && ((in->flags | (c ? c->flags : 0)) & LANTERN_F_AUDIT);
	eskb_count(cgid, reason, audit);
	eskb_emit(cgid, in ? in->policy_id : 0, &p, reason, audit);
	return audit ? ESKB_PASS : ESKB_DROP;
}

#endif
