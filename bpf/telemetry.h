/* telemetry.h: the structs shared by telemetry.bpf.c (and the one map it shares
 * with egress.bpf.c) and lanternd: per-instance syscall counters and latency
 * histograms, process events, network counters and per-rule token buckets.
 *
 * Every key and value is a named struct so `bpftool map dump pinned
 * /sys/fs/bpf/lantern/lantern_tm_<map>` prints field names. Included from BPF (after
 * vmlinux.h) and from userspace (after <linux/types.h> and <linux/bpf.h>). */
#ifndef LANTERN_BPF_TELEMETRY_H
#define LANTERN_BPF_TELEMETRY_H

#define LANTERN_TM_SYS_ENTRIES   65536      /* (instance, syscall) pairs, all instances */
#define LANTERN_TM_RATE_ENTRIES  16384      /* (instance, rule) token buckets */
#define LANTERN_TM_EVENTS_BYTES  (8 << 20)  /* default ring buffer size: ~55,000 process
					     * events, 0.5 s of a consumer not scheduled at
					     * 100,000 events/s (bench/telemetry) */
#define LANTERN_LAT_BUCKETS      32         /* log2 buckets of nanoseconds: [2^i, 2^(i+1)) */
#define LANTERN_NO_RULE          0xffff

/* lantern_tm_inst: key = __u64 cgroup v2 id of an instance being observed. */
struct lantern_tm_instance {
	__u32 flags;    /* reserved, 0 */
	__u32 pad;
};

/* lantern_tm_cgrp: cgroup storage, present on an instance cgroup and every cgroup
 * below it; absent everywhere else. The syscall programs' one test. */
struct lantern_tm_mark {
	__u64 cgroup_id;   /* the instance's cgroup v2 id */
};

/* lantern_tm_sys: per-CPU hash of per-instance, per-syscall figures. */
struct lantern_sys_key {
	__u64 cgroup_id;
	__u32 nr;        /* syscall number of the node's native ABI */
	__u32 pad;
};

struct lantern_sys_stats {
	__u64 count;
	__u64 total_ns;                 /* sum of latencies, sys_enter to sys_exit */
	__u64 hist[LANTERN_LAT_BUCKETS]; /* hist[i]: latency in [2^i, 2^(i+1)) ns */
};

/* lantern_tm_task: task storage for a tracked thread inside a syscall. */
struct lantern_task_state {
	__u64 start_ns;
	__u64 cgroup_id;
	__u32 nr;
	__u32 pad;
};

/* lantern_tm_proc: per-CPU hash keyed by instance cgroup id. */
struct lantern_proc_stats {
	__u64 forks;
	__u64 execs;
	__u64 exits;
};

/* lantern_tm_net: per-CPU hash keyed by instance cgroup id; bytes are IP lengths. */
struct lantern_net_stats {
	__u64 tx_bytes;
	__u64 tx_packets;
	__u64 rx_bytes;
	__u64 rx_packets;
	__u64 rate_dropped_bytes;   /* egress beyond a rule's rate_bps */
	__u64 rate_dropped_packets;
};

/* lantern_tm_rate: one token bucket per (instance, egress rule) with a rate_bps. */
struct lantern_rate_key {
	__u64 cgroup_id;
	__u32 rule;      /* index into spec.egress_rules */
	__u32 pad;
};

struct lantern_rate_bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 rate_Bps;    /* bytes per second (rate_bps / 8) */
	__u64 burst;       /* bucket depth in bytes */
	__s64 tokens;      /* bytes that may leave now; negative is a debt */
	__u64 last_ns;     /* CLOCK_MONOTONIC of the last refill */
};

/* lantern_sock_rule (socket storage, written by egress.bpf.c at connect): the rule
 * that admitted this socket's connection, for the rate limiter. */
struct lantern_sock_rule {
	__u64 cgroup_id;
	__u16 rule;
	__u16 pad[3];
};

/* lantern_tm_drops, per-CPU array key 0: ring buffer reserves that failed. */
struct lantern_tm_drops {
	__u64 proc_events;
};

enum lantern_proc_type {
	LANTERN_PROC_EXEC = 1,
	LANTERN_PROC_EXIT = 2,
};

/* Ring buffer lantern_tm_events. */
struct lantern_proc_event {
	__u64 ts_ns;      /* CLOCK_MONOTONIC */
	__u64 cgroup_id;
	__u32 type;       /* enum lantern_proc_type */
	__u32 pid;        /* tgid */
	__u32 ppid;
	__s32 exit_code;  /* exit: wait status as the parent sees it */
	char  comm[16];
	char  filename[96]; /* exec: the path passed to execve */
};

#endif
