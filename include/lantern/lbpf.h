/* lbpf.h: the one module that calls libbpf. Loads the egress programs, pins programs,
 * maps and links under one root, adopts what a previous lanternd pinned, and offers
 * the map operations the rest of lanternd needs in lantern's own terms.
 *
 * Pinned layout under pin_root (default /sys/fs/bpf/lantern):
 *   maps:  lantern_config lantern_instances lantern_egress lantern_stats
 *          lantern_pkt_stats lantern_sock_orig lantern_drops lantern_events
 *          (lantern_config, lantern_instances, lantern_pkt_stats, lantern_drops and
 *          lantern_events are also the telemetry programs': their cgroup_skb egress
 *          program drops and reports packets with source routes, bpf/egress_skb.bpf.h)
 *          lantern_sock_rule lantern_tm_rate (shared with the telemetry programs,
 *          lbpf_tm.h: the rule that admitted a socket, and rate_bps buckets)
 *   links: link_connect4 link_connect6 link_sendmsg4 link_sendmsg6
 *          link_recvmsg4 link_recvmsg6 link_getpeername4 link_getpeername6
 *   progs: prog_<same names> (the programs lantern_connect4 ..., replaced on adopt)
 * Links stay attached to the node's cgroup v2 subtree when lanternd exits, so
 * enforcement continues without it; a restarted lanternd reuses the pinned maps and
 * swaps its freshly loaded programs into the pinned links atomically. */
#ifndef LANTERN_LBPF_H
#define LANTERN_LBPF_H

#include <linux/types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lantern.h"
#include "lantern/policy.h"
#include "lantern/util.h"

struct lbpf;

struct lbpf_opts {
	const char *pin_root;        /* bpffs directory, created if missing */
	const char *cgroup_path;     /* cgroup v2 directory of the node subtree to attach to */
	uint32_t instance_level;     /* cgroup v2 depth of instance cgroups */
	bool audit_all;              /* node-wide audit mode */
	uint32_t dns_ip4;            /* redirect address for IPv4 DNS, network order (127.0.0.1) */
	const uint8_t *dns_ip6;      /* redirect address for IPv6 DNS (::1) */
	uint32_t learn_max;          /* DNS-learned entries per instance; 0 = LBPF_LEARN_MAX */
};

#define LBPF_LEARN_MAX 1024

/* Opens: loads programs, creates or reuses pinned maps, attaches or updates pinned
 * links. *adopted is set when existing pins were found and kept. */
int lbpf_open(const struct lbpf_opts *o, struct lbpf **out, bool *adopted, struct lerr *e);
/* Closes fds; pinned state (and so enforcement) stays. */
void lbpf_close(struct lbpf *b);
/* Removes every pin under pin_root: detaches links, frees maps. For `lantern reset`. */
int lbpf_unpin_all(const char *pin_root, struct lerr *e);

/* Installs or replaces an instance's policy atomically: writes the entries under a
 * new policy id, flips lantern_instances[cgid] to it, then deletes the old entries.
 * extra (may be NULL) are more entries to write under the same id (DNS-learned
 * addresses carried over). On failure nothing changes (-ENOSPC when a map is full). */
int lbpf_instance_set(struct lbpf *b, uint64_t cgid, const struct policy *p,
		      uint16_t dns_port, const struct policy_entry *extra, size_t n_extra,
		      struct lerr *e);
/* Sets where the instance's IPv4 DNS is redirected (network order; 0 = the node's
 * dns_ip4), for an instance whose network namespace cannot reach the node's loopback.
 * lbpf_instance_set keeps it across policy updates. */
int lbpf_instance_set_dns_ip4(struct lbpf *b, uint64_t cgid, uint32_t ip4, struct lerr *e);
/* Removes the instance and all its entries and stats. */
int lbpf_instance_remove(struct lbpf *b, uint64_t cgid);
int lbpf_instance_get(struct lbpf *b, uint64_t cgid, struct lantern_instance *out);
/* Lists instance cgroup ids currently in lantern_instances. *ids must be freed. */
int lbpf_instance_list(struct lbpf *b, uint64_t **ids, size_t *n);

/* Allows addr (/128) for the port rules in add (merged with what a longest-prefix
 * lookup finds now, so static covering rules keep applying). An address not learned
 * yet is refused with -EDQUOT when the instance already holds learn_max learned
 * entries. */
int lbpf_egress_learn(struct lbpf *b, uint64_t cgid, const uint8_t addr[16],
		      const struct lantern_egress_value *add, struct lerr *e);
/* Entries of the instance holding DNS-learned slots (what learn_max bounds). */
uint32_t lbpf_egress_learned(struct lbpf *b, uint64_t cgid);
/* Deletes expired DNS-learned slots (and entries left empty); returns how many. */
int lbpf_egress_gc(struct lbpf *b, uint64_t now_boottime_ns);
/* Entries of the instance's current policy (static and learned). *out must be freed. */
int lbpf_egress_dump(struct lbpf *b, uint64_t cgid, struct policy_entry **out, size_t *n);

int lbpf_stats_get(struct lbpf *b, uint64_t cgid, struct lantern_egress_stats *out);
/* Packets of the instance cgroup_skb egress dropped (or audited), by reason; summed
 * over CPUs, zeros when none. */
int lbpf_pkt_stats_get(struct lbpf *b, uint64_t cgid, struct lantern_pkt_stats *out);
int lbpf_drops_get(struct lbpf *b, struct lantern_drops *out);
int lbpf_set_audit_all(struct lbpf *b, bool on);

/* Ring buffer of struct lantern_egress_event: an fd for the event loop, and consume
 * calls that invoke cb for each event: all there are, or at most max (the event loop's
 * bound per wake-up: the fd stays readable while events remain). Return how many. */
typedef void (*lbpf_event_cb)(const struct lantern_egress_event *ev, void *arg);
int lbpf_events_fd(struct lbpf *b);
int lbpf_events_consume(struct lbpf *b, lbpf_event_cb cb, void *arg);
int lbpf_events_consume_n(struct lbpf *b, lbpf_event_cb cb, void *arg, unsigned max);

#endif
