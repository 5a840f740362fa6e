/* lbpf_tm.h: the telemetry half of lbpf (the one module that calls libbpf): loads
 * telemetry.bpf.c, pins its maps and links under the same root as the egress
 * programs, adopts them after a restart, and reads and writes its maps in lantern's
 * terms.
 *
 * Pinned layout under pin_root (beside the egress pins, see lbpf.h):
 *   maps:  lantern_tm_inst lantern_tm_cgrp lantern_tm_sys lantern_tm_task lantern_tm_proc lantern_tm_net
 *          lantern_tm_rate lantern_tm_drops lantern_tm_events lantern_sock_rule (shared
 *          with the egress programs, which write it); and the egress programs'
 *          lantern_config lantern_instances lantern_pkt_stats lantern_drops
 *          lantern_events, which link_tm_skb_egress's program reads and writes to drop
 *          and report packets with source routes (bpf/egress_skb.bpf.h)
 *   links: link_tm_sys_enter link_tm_sys_exit link_tm_cgroup_mkdir link_tm_fork link_tm_exec link_tm_exit
 *          link_tm_skb_egress link_tm_skb_ingress
 *   progs: prog_tm_<same names>
 * After a restart the cgroup_skb links get the new programs swapped in atomically;
 * the tracing links (which the kernel cannot update in place) keep their programs,
 * which read and write the same pinned maps, so no event is lost or counted twice. */
#ifndef LANTERN_LBPF_TM_H
#define LANTERN_LBPF_TM_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <telemetry.h> /* bpf/telemetry.h: the structs shared with the programs */
#include "lantern/util.h"

struct lbpf_tm;

/* Which kind of program watches raw_syscalls; bench/telemetry measures all three. */
enum lbpf_sys_hook {
	LBPF_SYS_TP_BTF = 0,     /* BTF-typed raw tracepoint (default, cheapest) */
	LBPF_SYS_RAW_TP,         /* raw tracepoint */
	LBPF_SYS_TRACEPOINT,     /* classic tracepoint through perf */
	LBPF_SYS_NONE,           /* no syscall programs */
};

struct lbpf_tm_opts {
	const char *pin_root;        /* bpffs directory, created if missing */
	const char *cgroup_path;     /* cgroup v2 directory of the node subtree (cgroup_skb) */
	uint32_t instance_level;     /* cgroup v2 depth of instance cgroups */
	enum lbpf_sys_hook sys_hook;
	uint32_t events_bytes;       /* ring buffer size (power of 2, >= page); 0 = default.
				      * Only applies when the ring buffer is created, not adopted. */
};

/* A rate limit for one egress rule of an instance. */
struct lbpf_rate {
	uint16_t rule;               /* index into spec.egress_rules */
	uint64_t rate_bps;           /* bits per second, > 0 */
};

int lbpf_tm_open(const struct lbpf_tm_opts *o, struct lbpf_tm **out, bool *adopted, struct lerr *e);
/* Closes fds; pins (and so the programs and counters) stay. */
void lbpf_tm_close(struct lbpf_tm *t);
/* The kind of syscall programs in force (the pinned ones after adoption). */
const char *lbpf_tm_sys_hook_name(enum lbpf_sys_hook h);

/* Starts observing an instance and installs its rate limits (-ENOSPC when full). */
int lbpf_tm_instance_add(struct lbpf_tm *t, uint64_t cgid, const struct lbpf_rate *rates,
			 size_t n_rates, struct lerr *e);
/* Stops observing it and deletes everything kept for it. */
int lbpf_tm_instance_remove(struct lbpf_tm *t, uint64_t cgid);
bool lbpf_tm_instance_has(struct lbpf_tm *t, uint64_t cgid);
/* Instance cgroup ids in lantern_tm_inst. *ids must be freed. */
int lbpf_tm_instance_list(struct lbpf_tm *t, uint64_t **ids, size_t *n);

/* Calls cb once per syscall the instance made, with the figures summed over CPUs. */
typedef void (*lbpf_sys_cb)(uint32_t nr, const struct lantern_sys_stats *s, void *arg);
int lbpf_tm_syscalls(struct lbpf_tm *t, uint64_t cgid, lbpf_sys_cb cb, void *arg);
/* Summed over CPUs; zeros (and 0 returned) for an instance with nothing counted. */
int lbpf_tm_net(struct lbpf_tm *t, uint64_t cgid, struct lantern_net_stats *out);
int lbpf_tm_proc(struct lbpf_tm *t, uint64_t cgid, struct lantern_proc_stats *out);
int lbpf_tm_drops(struct lbpf_tm *t, struct lantern_tm_drops *out);

/* Ring buffer of struct lantern_proc_event: consume all there are, or at most max (the
 * event loop's bound per wake-up). Return how many. */
typedef void (*lbpf_proc_cb)(const struct lantern_proc_event *ev, void *arg);
int lbpf_tm_events_fd(struct lbpf_tm *t);
int lbpf_tm_events_consume(struct lbpf_tm *t, lbpf_proc_cb cb, void *arg);
int lbpf_tm_events_consume_n(struct lbpf_tm *t, lbpf_proc_cb cb, void *arg, unsigned max);

/* Benchmark only (bench/telemetry; tm_bench.bpf.c), nothing pinned.
 * Floor: empty programs on raw_syscalls sys_enter (and sys_exit if with_exit) of the
 * given kind, attached until closed. */
struct lbpf_tm_floor;
int lbpf_tm_floor_open(enum lbpf_sys_hook h, bool with_exit, struct lbpf_tm_floor **out,
		       struct lerr *e);
void lbpf_tm_floor_close(struct lbpf_tm_floor *f);
/* Burst: a synthetic producer of process events (exec and exit alternating, cgroup id
 * cgid) into the ring buffer pinned at pin_root/lantern_tm_events. lbpf_tm_burst writes
 * n events (in the caller's context) and reports the reserves that failed. */
struct lbpf_tm_burst;
int lbpf_tm_burst_open(const char *pin_root, uint64_t cgid, struct lbpf_tm_burst **out,
		       struct lerr *e);
int lbpf_tm_burst(struct lbpf_tm_burst *b, uint32_t n, uint32_t *failed);
void lbpf_tm_burst_close(struct lbpf_tm_burst *b);
/* raw_syscalls links (tp_btf and raw_tp) attached on the machine: anything but 0 before
 * a measurement means "no program" already pays the floor. */
int lbpf_tm_syscall_links(void);

#endif
