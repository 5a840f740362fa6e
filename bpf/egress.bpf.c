// SPDX-License-Identifier: GPL-2.0
/* egress.bpf.c: per-instance egress enforcement at the cgroup socket hooks.
 *
 * connect4/6 (TCP connect, TCP Fast Open, connected UDP) and sendmsg4/6 (UDP
 * sendto) judge every destination of a process in an instance cgroup against that
 * instance's policy: one LPM lookup keyed by {policy_id, address} in lantern_egress.
 * DNS (port 53) is redirected to the instance's proxy instead; recvmsg4/6 and
 * getpeername4/6 show the proxy's answers as coming from where the query went.
 * Processes outside instances are never touched. All state lives in maps that
 * lanternd pins, so a restarted lanternd adopts them unchanged. What a packet carries
 * beyond its socket's address (source routes) is judged in cgroup_skb egress, in
 * telemetry.bpf.c's program with the maps of egress_maps.bpf.h (egress_skb.bpf.h). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "egress_maps.bpf.h"
#include "sock_rule.bpf.h"

#define AF_INET      2
#define AF_INET6     10
#define SOCK_STREAM  1
#define SOCK_DGRAM   2
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_MPTCP_ 262
#define DNS_PORT     53
#define NO_RULE      0xffff

/* cgroup sock_addr verdicts: 1 lets the call through, 0 makes it fail with EPERM */
#define SYS_ALLOW 1
#define SYS_DENY  0

char LICENSE[] SEC("license") = "GPL";

/* Never read by the programs: updating a map-in-map makes the kernel wait for an RCU
 * grace period (every program that started before has finished). lbpf does that
 * between flipping an instance to a new policy id and deleting the old entries, so
 * a connect that read the old id still finds the old entries. Not pinned. */
struct lantern_sync_inner_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} lantern_sync_inner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct lantern_sync_inner_map);
} lantern_sync SEC(".maps") = {
	.values = { [0] = &lantern_sync_inner },
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, LANTERN_MAX_EGRESS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lantern_lpm_key);
	__type(value, struct lantern_egress_value);
} lantern_egress SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, LANTERN_MAX_INSTANCES);
	__type(key, __u64);
	__type(value, struct lantern_egress_stats);
} lantern_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct lantern_sock_orig);
} lantern_sock_orig SEC(".maps");

/* What one hook invocation is about: the destination as 16 bytes (IPv4 mapped). */
struct dest {
	__u8 addr[16];
	__u16 port;   /* host order */
	__u8 family;  /* as the caller used it */
	__u8 proto;   /* LANTERN_PROTO_*, 0 for anything else */
	__u8 hook;
	__u8 mapped;  /* IPv4, or IPv4-mapped on an IPv6 socket */
};

static __always_inline struct lantern_config *config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&lantern_config, &zero);
}

static __always_inline __u8 sock_proto(struct bpf_sock_addr *ctx)
{
	__u32 type = ctx->type, protocol = ctx->protocol;

	if (type == SOCK_STREAM && (protocol == IPPROTO_TCP_ || protocol == IPPROTO_MPTCP_))
		return LANTERN_PROTO_TCP;
	if (type == SOCK_DGRAM && protocol == IPPROTO_UDP_)
		return LANTERN_PROTO_UDP;
	return 0;
}

static __always_inline void dest_load(struct bpf_sock_addr *ctx, struct dest *d, __u8 hook)
{
	__u32 *w = (__u32 *)d->addr;

	d->hook = hook;
	d->proto = sock_proto(ctx);
	d->port = bpf_ntohs((__u16)ctx->user_port);
	if (hook == LANTERN_HOOK_CONNECT4 || hook == LANTERN_HOOK_SENDMSG4) {
		d->family = AF_INET;
		w[0] = 0;
		w[1] = 0;
		w[2] = bpf_htonl(0xffff);
		w[3] = ctx->user_ip4;
		d->mapped = 1;
	} else {
		d->family = AF_INET6;
		w[0] = ctx->user_ip6[0];
		w[1] = ctx->user_ip6[1];
		w[2] = ctx->user_ip6[2];
		w[3] = ctx->user_ip6[3];
		d->mapped = w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff);
	}
}

static __always_inline bool is_loopback(const struct dest *d)
{
	const __u32 *w = (const __u32 *)d->addr;

	if (d->mapped)
		return (bpf_ntohl(w[3]) >> 24) == 127;
	return w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == bpf_htonl(1);
}

static __always_inline struct lantern_egress_stats *stats(__u64 cgid)
{
	struct lantern_egress_stats *s, zero = {};

	s = bpf_map_lookup_elem(&lantern_stats, &cgid);
	if (s)
		return s;
	bpf_map_update_elem(&lantern_stats, &cgid, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&lantern_stats, &cgid);
}

static __always_inline void emit(__u64 cgid, const struct lantern_instance *in,
				 const struct dest *d, __u8 verdict, __u16 rule)
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
	ev->ts_ns = bpf_ktime_get_ns();
	ev->cgroup_id = cgid;
	ev->pid = bpf_get_current_pid_tgid() >> 32;
	ev->policy_id = in->policy_id;
	__builtin_memcpy(ev->addr, d->addr, sizeof(ev->addr));
	ev->port = d->port;
	ev->family = d->family;
	ev->proto = d->proto;
	ev->verdict = verdict;
	ev->hook = d->hook;
	ev->rule = rule;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	bpf_ringbuf_submit(ev, 0);
}

/* The allowlist lookup: the longest prefix under the instance's policy id decides;
 * its slots already carry every covering rule. Returns the admitting rule index or
 * NO_RULE. */
static __always_inline __u16 allowlist_match(const struct lantern_instance *in,
					     const struct dest *d)
{
	struct lantern_lpm_key key = { .prefixlen = 32 + 128, .policy_id = in->policy_id };
	struct lantern_egress_value *v;
	__u64 now = 0;
	__u32 n;

	if (!d->proto)
		return NO_RULE;
	__builtin_memcpy(key.addr, d->addr, sizeof(key.addr));
	v = bpf_map_lookup_elem(&lantern_egress, &key);
	if (!v)
		return NO_RULE;
	n = v->nslots;
	for (__u32 i = 0; i < LANTERN_MAX_SLOTS; i++) {
		struct lantern_port_rule *s = &v->slot[i];

		if (i >= n)
			break;
		if (!(s->protos & d->proto) || d->port < s->port_lo || d->port > s->port_hi)
			continue;
		if (s->expires_ns) {
			if (!now)
				now = bpf_ktime_get_boot_ns();
			if (s->expires_ns <= now)
				continue;
		}
		return s->rule;
	}
	return NO_RULE;
}

/* The IPv4 address of the instance's proxy: its own redirect address when it has one
 * (a network namespace that cannot reach the node's loopback), else the node's. */
static __always_inline __u32 dns_ip4_of(const struct lantern_config *c,
					const struct lantern_instance *in)
{
	return in->dns_redirect_ip4 ? in->dns_redirect_ip4 : c->dns_ip4;
}

/* Rewrites a DNS query's destination to the instance's proxy and remembers where it
 * was going, keyed by socket cookie, for recvmsg and getpeername. */
static __always_inline void dns_redirect(struct bpf_sock_addr *ctx, const struct lantern_config *c,
					 const struct lantern_instance *in, const struct dest *d)
{
	struct lantern_sock_orig orig = {};
	__u64 cookie = bpf_get_socket_cookie(ctx);

	__builtin_memcpy(orig.addr, d->addr, sizeof(orig.addr));
	orig.port = bpf_htons(d->port);
	orig.family = d->family;
	bpf_map_update_elem(&lantern_sock_orig, &cookie, &orig, BPF_ANY);

	if (d->family == AF_INET) {
		ctx->user_ip4 = dns_ip4_of(c, in);
	} else if (d->mapped) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = dns_ip4_of(c, in);
	} else {
		const __u32 *w = (const __u32 *)c->dns_ip6;

		ctx->user_ip6[0] = w[0];
		ctx->user_ip6[1] = w[1];
		ctx->user_ip6[2] = w[2];
		ctx->user_ip6[3] = w[3];
	}
	ctx->user_port = bpf_htons(in->dns_port);
}

#define SOL_SOCKET_         1
#define SO_MAX_PACING_RATE_ 47

/* Records on the socket which rule admitted its connection, so telemetry.bpf.c can
 * charge that rule's rate_bps token bucket for what the socket sends; a rule with a
 * rate also caps the socket's pacing (2% under the bucket's rate, so paced traffic
 * with its headers never runs the bucket dry). */
static __always_inline void remember_rule(struct bpf_sock_addr *ctx, __u64 cgid, __u16 rule)
{
	struct lantern_rate_key rk = { .cgroup_id = cgid, .rule = rule };
	struct lantern_rate_bucket *b;
	struct lantern_sock_rule *sr;
	__u32 pace;

	sr = bpf_sk_storage_get(&lantern_sock_rule, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!sr)
		return;
	sr->cgroup_id = cgid;
	sr->rule = rule;
	b = bpf_map_lookup_elem(&lantern_tm_rate, &rk);
	if (!b)
		return;
	pace = b->rate_Bps / 100 * 98 > 0xfffffffe ? 0xfffffffe : (__u32)(b->rate_Bps / 100 * 98);
	bpf_setsockopt(ctx, SOL_SOCKET_, SO_MAX_PACING_RATE_, &pace, sizeof(pace));
}

static __always_inline int judge(struct bpf_sock_addr *ctx, __u8 hook)
{
	struct lantern_instance *in;
	struct lantern_config *c;
	struct lantern_egress_stats *st;
	struct dest d = {};
	__u64 cgid;
	__u16 rule = NO_RULE;
	__u8 verdict;

	c = config_get();
	if (!c)
		return SYS_ALLOW;
	cgid = bpf_get_current_ancestor_cgroup_id(c->instance_level);
	in = bpf_map_lookup_elem(&lantern_instances, &cgid);
	if (!in)
		/* cgid 0: not inside an instance directory (the subtree's own root);
		 * otherwise an instance cgroup with no registered policy: fail closed */
		return cgid ? SYS_DENY : SYS_ALLOW;

	dest_load(ctx, &d, hook);
	st = stats(cgid);

	if (d.port == DNS_PORT && d.proto && in->dns_port) {
		dns_redirect(ctx, c, in, &d);
		if (st)
			__sync_fetch_and_add(&st->dns_redirected, 1);
		emit(cgid, in, &d, LANTERN_VERDICT_DNS, NO_RULE);
		return SYS_ALLOW;
	}

	if (is_loopback(&d) && bpf_get_netns_cookie(ctx) != c->host_netns_cookie)
		goto allow;

	switch (in->net_mode) {
	case LANTERN_NET_OPEN:
		if (st)
			__sync_fetch_and_add(&st->allowed, 1);
		emit(cgid, in, &d, LANTERN_VERDICT_ALLOW, NO_RULE);
		return SYS_ALLOW;
	case LANTERN_NET_ALLOWLIST:
		rule = allowlist_match(in, &d);
		if (rule != NO_RULE)
			goto allow;
		break;
	default:
		break;
	}

	if ((in->flags | c->flags) & LANTERN_F_AUDIT) {
		verdict = LANTERN_VERDICT_AUDIT;
		if (st)
			__sync_fetch_and_add(&st->audited, 1);
	} else {
		verdict = LANTERN_VERDICT_DENY;
		if (st)
			__sync_fetch_and_add(&st->denied, 1);
	}
	emit(cgid, in, &d, verdict, NO_RULE);
	return verdict == LANTERN_VERDICT_AUDIT ? SYS_ALLOW : SYS_DENY;

allow:
	if (st)
		__sync_fetch_and_add(&st->allowed, 1);
	if (rule != NO_RULE && (hook == LANTERN_HOOK_CONNECT4 || hook == LANTERN_HOOK_CONNECT6))
		remember_rule(ctx, cgid, rule);
	return SYS_ALLOW;
}

SEC("cgroup/connect4")
int lantern_connect4(struct bpf_sock_addr *ctx)
{
	return judge(ctx, LANTERN_HOOK_CONNECT4);
}

SEC("cgroup/connect6")
int lantern_connect6(struct bpf_sock_addr *ctx)
{
	return judge(ctx, LANTERN_HOOK_CONNECT6);
}

SEC("cgroup/sendmsg4")
int lantern_sendmsg4(struct bpf_sock_addr *ctx)
{
	return judge(ctx, LANTERN_HOOK_SENDMSG4);
}

SEC("cgroup/sendmsg6")
int lantern_sendmsg6(struct bpf_sock_addr *ctx)
{
	return judge(ctx, LANTERN_HOOK_SENDMSG6);
}

/* The reverse of dns_redirect: if this socket's DNS went to the proxy and the
 * address the kernel reports is the proxy's, report the original destination. */
static __always_inline int unredirect(struct bpf_sock_addr *ctx, bool v4)
{
	struct lantern_sock_orig *orig;
	struct lantern_instance *in;
	struct lantern_config *c;
	__u64 cookie, cgid;
	const __u32 *ow;
	bool orig_mapped;

	c = config_get();
	if (!c)
		return SYS_ALLOW;
	cookie = bpf_get_socket_cookie(ctx);
	orig = bpf_map_lookup_elem(&lantern_sock_orig, &cookie);
	if (!orig)
		return SYS_ALLOW;
	cgid = bpf_get_current_ancestor_cgroup_id(c->instance_level);
	in = bpf_map_lookup_elem(&lantern_instances, &cgid);
	if (!in || !in->dns_port || ctx->user_port != bpf_htons(in->dns_port))
		return SYS_ALLOW;
	ow = (const __u32 *)orig->addr;

	orig_mapped = ow[0] == 0 && ow[1] == 0 && ow[2] == bpf_htonl(0xffff);
	if (v4) {
		if (ctx->user_ip4 != dns_ip4_of(c, in) || !orig_mapped)
			return SYS_ALLOW;
		ctx->user_ip4 = ow[3];
	} else {
		const __u32 *pw = (const __u32 *)c->dns_ip6;
		__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1];
		__u32 a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
		bool is_mapped_proxy = a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff) &&
				       a3 == dns_ip4_of(c, in);
		bool is_proxy6 = a0 == pw[0] && a1 == pw[1] && a2 == pw[2] && a3 == pw[3];

		if (!(orig_mapped ? is_mapped_proxy : is_proxy6))
			return SYS_ALLOW;
		ctx->user_ip6[0] = ow[0];
		ctx->user_ip6[1] = ow[1];
		ctx->user_ip6[2] = ow[2];
		ctx->user_ip6[3] = ow[3];
	}
	ctx->user_port = orig->port;
	return SYS_ALLOW;
}

SEC("cgroup/recvmsg4")
int lantern_recvmsg4(struct bpf_sock_addr *ctx)
{
	return unredirect(ctx, true);
}

SEC("cgroup/recvmsg6")
int lantern_recvmsg6(struct bpf_sock_addr *ctx)
{
	return unredirect(ctx, false);
}

SEC("cgroup/getpeername4")
int lantern_getpeername4(struct bpf_sock_addr *ctx)
{
	return unredirect(ctx, true);
}

SEC("cgroup/getpeername6")
int lantern_getpeername6(struct bpf_sock_addr *ctx)
{
	return unredirect(ctx, false);
}
