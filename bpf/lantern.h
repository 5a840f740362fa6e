/* lantern.h: the structs shared by the BPF programs and lanternd.
 *
 * Every map key and value is one of these named structs, so BTF carries the
 * field names and `bpftool map dump pinned /sys/fs/bpf/lantern/<map>` prints
 * them readably. Addresses are always 16 bytes: IPv4 is stored IPv4-mapped
 * (::ffff:a.b.c.d), so one LPM trie holds both families and an IPv4-mapped
 * IPv6 destination is judged exactly like the IPv4 address it maps to.
 *
 * Included from BPF (after vmlinux.h) and from userspace (after <linux/types.h>).
 */
#ifndef LANTERN_BPF_SHARED_H
#define LANTERN_BPF_SHARED_H

#define LANTERN_MAX_SLOTS      8       /* port rules one prefix entry can hold */
#define LANTERN_MAX_INSTANCES  4096
#define LANTERN_MAX_EGRESS     65536   /* LPM entries, all instances and versions */
#define LANTERN_EVENTS_BYTES   (1 << 20)

/* lantern_instance.net_mode */
enum lantern_net_mode {
	LANTERN_NET_NONE      = 0, /* nothing but its own loopback (own netns only) */
	LANTERN_NET_ALLOWLIST = 1, /* default deny, lantern_egress decides */
	LANTERN_NET_OPEN      = 2, /* everything allowed, every connect recorded */
};

/* lantern_instance.flags and lantern_config.flags */
#define LANTERN_F_AUDIT 0x1 /* would-deny is allowed and recorded as audited */

/* lantern_port_rule.protos */
#define LANTERN_PROTO_TCP 0x1
#define LANTERN_PROTO_UDP 0x2

/* lantern_egress_event.verdict */
enum lantern_verdict {
	LANTERN_VERDICT_ALLOW   = 0, /* recorded only under network: open */
	LANTERN_VERDICT_DENY    = 1,
	LANTERN_VERDICT_AUDIT   = 2, /* would have been denied; allowed by audit mode */
	LANTERN_VERDICT_DNS     = 3, /* DNS redirected to the instance's proxy */
};

/* lantern_egress_event.hook */
enum lantern_hook {
	LANTERN_HOOK_CONNECT4 = 1,
	LANTERN_HOOK_CONNECT6 = 2,
	LANTERN_HOOK_SENDMSG4 = 3,
	LANTERN_HOOK_SENDMSG6 = 4,
	LANTERN_HOOK_SKB_EGRESS = 5, /* a packet dropped in cgroup_skb egress (reason says why) */
};

/* lantern_egress_event.reason: why cgroup_skb egress dropped a packet of an instance.
 * The socket hooks judge the address a socket names; these packets would first reach
 * somewhere else, or come from a socket those hooks never see. 0 for the socket hooks. */
enum lantern_reason {
	LANTERN_REASON_NONE                = 0,
	LANTERN_REASON_IPV6_ROUTING_HEADER = 1, /* any type: SRH (4), type 0, type 2 */
	LANTERN_REASON_IPV6_EXT_HEADERS    = 2, /* more extension headers than are walked, or cut short */
	LANTERN_REASON_IPV4_SOURCE_ROUTE   = 3, /* LSRR or SSRR option */
	LANTERN_REASON_IPV4_OPTIONS        = 4, /* any other IPv4 option */
	LANTERN_REASON_SOCKET_TYPE         = 5, /* not TCP or UDP: raw, ping, SCTP, ... */
};

/* lantern_config, one entry (key 0): node-wide settings, adoptable after restart. */
struct lantern_config {
	__u64 host_netns_cookie; /* netns cookie of the node's own network namespace */
	__u32 instance_level;    /* cgroup v2 depth of instance cgroups */
	__u32 flags;             /* LANTERN_F_AUDIT: node-wide audit mode */
	__u32 dns_ip4;           /* proxy address for IPv4 DNS redirects, network order */
	__u8  dns_ip6[16];       /* proxy address for IPv6 DNS redirects */
};

/* lantern_instances: key = __u64 cgroup v2 id of the instance cgroup. */
struct lantern_instance {
	__u32 policy_id; /* which generation of lantern_egress entries applies */
	__u32 net_mode;  /* enum lantern_net_mode */
	__u32 flags;     /* LANTERN_F_AUDIT */
	__u16 dns_port;  /* this instance's DNS proxy port (host order); 0 = no DNS */
	__u16 pad;
	/* where this instance's IPv4 DNS goes (network order), for an instance in a
	 * network namespace of its own that cannot reach lantern_config.dns_ip4 (an OCI
	 * spawn on the node bridge: the bridge's gateway address); 0 = dns_ip4 */
	__u32 dns_redirect_ip4;
};

/* lantern_egress: LPM trie. prefixlen counts the 32 bits of policy_id plus the
 * address prefix (IPv4 /n is stored as 96 + n on the mapped address). */
struct lantern_lpm_key {
	__u32 prefixlen;
	__u32 policy_id;
	__u8  addr[16];
};

/* One allowed (protocols, port range) at a prefix. expires_ns is CLOCK_BOOTTIME
 * nanoseconds for addresses learned from DNS answers, 0 for static rules. */
struct lantern_port_rule {
	__u64 expires_ns;
	__u16 port_lo;  /* host order, inclusive */
	__u16 port_hi;
	__u8  protos;   /* LANTERN_PROTO_* */
	__u8  pad;
	__u16 rule;     /* index into spec.egress_rules */
};

/* The longest matching prefix decides; the compiler folds every covering rule
 * into each more specific entry, so this lookup equals the union of rules. */
struct lantern_egress_value {
	__u32 nslots;
	__u32 pad;
	struct lantern_port_rule slot[LANTERN_MAX_SLOTS];
};

/* lantern_stats: per-CPU hash keyed by instance cgroup id. */
struct lantern_egress_stats {
	__u64 allowed;
	__u64 denied;
	__u64 audited;
	__u64 dns_redirected;
};

/* lantern_sock_orig: socket cookie -> where a redirected DNS socket meant to go,
 * so recvmsg can show replies as coming from there. */
struct lantern_sock_orig {
	__u8  addr[16];
	__u16 port;      /* network order */
	__u16 family;    /* AF_INET or AF_INET6 */
};

/* lantern_pkt_stats: per-CPU hash keyed by instance cgroup id: packets cgroup_skb
 * egress dropped, by enum lantern_reason (audited: would have been dropped, passed in
 * audit mode). A separate map so lantern_stats keeps its pinned layout. */
struct lantern_pkt_stats {
	__u64 ipv6_routing_header;
	__u64 ipv6_ext_headers;
	__u64 ipv4_source_route;
	__u64 ipv4_options;
	__u64 socket_type;
	__u64 audited;
};

/* lantern_drops, array key 0: ring buffer reserves that failed. */
struct lantern_drops {
	__u64 egress_events;
};

/* Ring buffer lantern_events. */
struct lantern_egress_event {
	__u64 ts_ns;      /* CLOCK_MONOTONIC */
	__u64 cgroup_id;  /* instance cgroup id */
	__u32 pid;
	__u32 policy_id;
	__u8  addr[16];
	__u16 port;       /* host order */
	__u8  family;     /* AF_INET / AF_INET6 as the caller used it */
	__u8  proto;      /* LANTERN_PROTO_TCP or _UDP */
	__u8  verdict;    /* enum lantern_verdict */
	__u8  hook;       /* enum lantern_hook */
	__u16 rule;       /* admitting rule index, 0xffff when none */
	char  comm[16];
	/* added after the fields above, so a record from an older program (64 bytes,
	 * still in the ring buffer across an upgrade) reads as reason 0 */
	__u8  reason;     /* enum lantern_reason; hook SKB_EGRESS only */
	__u8  pad2[7];
};

#endif
