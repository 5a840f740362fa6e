/* tm_bench.h: the argument of tm_bench.bpf.c's synthetic event producer, shared with
 * lbpf (userspace/lbpf/tmbench.c). Included from BPF (after vmlinux.h) and from
 * userspace (after <linux/types.h>). */
#ifndef LANTERN_BPF_TM_BENCH_H
#define LANTERN_BPF_TM_BENCH_H

struct lantern_tm_burst_args {
	__u64 cgroup_id;  /* written into every event */
	__u32 n;          /* events to write */
	__u32 failed;     /* out: reserves that failed */
};

#endif
