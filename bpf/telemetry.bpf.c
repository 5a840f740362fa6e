// SPDX-License-Identifier: GPL-2.0
/* telemetry.bpf.c: what instances do, counted in the kernel.
 *
 * raw_syscalls sys_enter/sys_exit: per instance and syscall, a count and a log2
 * latency histogram in a per-CPU hash. sched_process_fork/exec/exit: counters, and
 * exec and exit events through a ring buffer (every failed reserve counted).
 * cgroup_skb ingress/egress: bytes and packets per instance, and egress_rules[].rate_bps
 * enforced as a token bucket per (instance, rule), the rule being the one the egress
 * programs recorded on the socket when they admitted its connection. cgroup_skb egress
 * also drops, before anything is counted, packets that would reach a destination the
 * egress programs never judged (egress_skb.bpf.h: source routes, raw sockets).
 *
 * Every program starts with a filter on the caller's instance. The syscall programs,
 * which run for every syscall of the machine, test one thing: a mark in the storage of
 * the caller's own cgroup (lantern_tm_cgrp), which lbpf puts on an instance cgroup and
 * its existing descendants when the instance is added and lantern_cgroup_mkdir on every
 * cgroup created below it later. A process outside an instance pays that one storage
 * miss on sys_enter and one task-storage miss on sys_exit (the ancestor-id helper and
 * hash lookup this replaced cost ~5 ns more per syscall, bench/RESULTS.md). The other programs look
 * the caller's instance-level ancestor id up in lantern_tm_inst. The syscall hooks come
 * in three flavours (tp_btf, raw_tp, tracepoint); lbpf loads one of them (tp_btf by
 * default). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "telemetry.h"
#include "sock_rule.bpf.h"
#include "egress_skb.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* cgroup v2 depth of instance cgroups; set by lbpf before load */
const volatile __u32 instance_level = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct lantern_tm_instance);
} lantern_tm_inst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, LANTERN_TM_SYS_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lantern_sys_key);
	__type(value, struct lantern_sys_stats);
} lantern_tm_sys SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct lantern_task_state);
} lantern_tm_task SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CGRP_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct lantern_tm_mark);
} lantern_tm_cgrp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct lantern_proc_stats);
} lantern_tm_proc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct lantern_net_stats);
} lantern_tm_net SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lantern_tm_drops);
} lantern_tm_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, LANTERN_TM_EVENTS_BYTES);
} lantern_tm_events SEC(".maps");

static __always_inline bool tracked(__u64 *cgid)
{
	*cgid = bpf_get_current_ancestor_cgroup_id(instance_level);
	return bpf_map_lookup_elem(&lantern_tm_inst, cgid) != NULL;
}

static __always_inline void sys_enter(long id)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct lantern_task_state *t;
	struct lantern_tm_mark *m;

	m = bpf_cgrp_storage_get(&lantern_tm_cgrp, task->cgroups->dfl_cgrp, 0, 0);
	if (!m)
		return;
	t = bpf_task_storage_get(&lantern_tm_task, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!t)
		return;
	t->cgroup_id = m->cgroup_id;
	t->nr = (__u32)id;
	t->start_ns = bpf_ktime_get_ns();
}

static __always_inline __u32 log2_bucket(__u64 v)
{
	__u32 r = 0;

	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8)  { v >>= 8;  r += 8; }
	if (v >> 4)  { v >>= 4;  r += 4; }
	if (v >> 2)  { v >>= 2;  r += 2; }
	if (v >> 1)  { r += 1; }
	return r < LANTERN_LAT_BUCKETS ? r : LANTERN_LAT_BUCKETS - 1;
}

/* No cgroup lookup here: a thread has task storage with a start time only if
 * sys_enter found it tracked, so the one lookup is the task storage. */
static __always_inline void sys_exit(void)
{
	struct lantern_sys_key key = {};
	struct lantern_sys_stats *s;
	struct lantern_task_state *t;
	__u64 lat, now;

	t = bpf_task_storage_get(&lantern_tm_task, bpf_get_current_task_btf(), 0, 0);
	if (!t || !t->start_ns)
		return;
	now = bpf_ktime_get_ns();
	lat = now - t->start_ns;
	t->start_ns = 0;
	key.cgroup_id = t->cgroup_id;
	key.nr = t->nr;
	s = bpf_map_lookup_elem(&lantern_tm_sys, &key);
	if (!s) {
		struct lantern_sys_stats zero = {};

		/* first call of this syscall: only for an instance still observed, so a
		 * mark outliving its instance (a cgroup kept after removal) counts nothing */
		if (!bpf_map_lookup_elem(&lantern_tm_inst, &key.cgroup_id))
			return;
		bpf_map_update_elem(&lantern_tm_sys, &key, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&lantern_tm_sys, &key);
		if (!s)
			return;
	}
	/* per-CPU value: plain adds, no atomics */
	s->count++;
	s->total_ns += lat;
	s->hist[log2_bucket(lat) & (LANTERN_LAT_BUCKETS - 1)]++;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(lantern_sys_enter, struct pt_regs *regs, long id)
{
	sys_enter(id);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(lantern_sys_exit, struct pt_regs *regs, long ret)
{
	sys_exit();
	return 0;
}

SEC("raw_tp/sys_enter")
int lantern_sys_enter_raw(struct bpf_raw_tracepoint_args *ctx)
{
	sys_enter((long)ctx->args[1]);
	return 0;
}

SEC("raw_tp/sys_exit")
int lantern_sys_exit_raw(struct bpf_raw_tracepoint_args *ctx)
{
	sys_exit();
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int lantern_sys_enter_tp(struct trace_event_raw_sys_enter *ctx)
{
	sys_enter(ctx->id);
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_exit")
int lantern_sys_exit_tp(struct trace_event_raw_sys_exit *ctx)
{
	sys_exit();
	return 0;
}

static __always_inline struct lantern_proc_stats *proc_stats(__u64 cgid)
{
	struct lantern_proc_stats *s, zero = {};

	s = bpf_map_lookup_elem(&lantern_tm_proc, &cgid);
	if (s)
		return s;
	bpf_map_update_elem(&lantern_tm_proc, &cgid, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&lantern_tm_proc, &cgid);
}

static __always_inline struct lantern_proc_event *proc_event(__u64 cgid, __u32 type,
							     struct task_struct *p)
{
	struct lantern_proc_event *ev;
	struct lantern_tm_drops *dr;
	__u32 zero = 0;

	ev = bpf_ringbuf_reserve(&lantern_tm_events, sizeof(*ev), 0);
	if (!ev) {
		dr = bpf_map_lookup_elem(&lantern_tm_drops, &zero);
		if (dr)
			dr->proc_events++;
		return NULL;
	}
	ev->ts_ns = bpf_ktime_get_ns();
	ev->cgroup_id = cgid;
	ev->type = type;
	ev->pid = BPF_CORE_READ(p, tgid);
	ev->ppid = BPF_CORE_READ(p, real_parent, tgid);
	ev->exit_code = 0;
	ev->filename[0] = '\0';
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	return ev;
}

/* A cgroup created below an instance carries the instance's mark, so the syscall
 * programs see processes the workload moves into its own sub-cgroups. */
SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(lantern_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	struct lantern_tm_mark *m;
	struct cgroup *anc;
	__u64 cgid;

	if (BPF_CORE_READ(cgrp, level) <= (int)instance_level || instance_level >= 64)
		return 0;
	anc = BPF_CORE_READ(cgrp, ancestors[instance_level & 63]);
	cgid = BPF_CORE_READ(anc, kn, id);
	if (!bpf_map_lookup_elem(&lantern_tm_inst, &cgid))
		return 0;
	m = bpf_cgrp_storage_get(&lantern_tm_cgrp, cgrp, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (m)
		m->cgroup_id = cgid;
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(lantern_fork, struct task_struct *parent, struct task_struct *child)
{
	struct lantern_proc_stats *s;
	__u64 cgid;

	if (!tracked(&cgid))
		return 0;
	s = proc_stats(cgid);
	if (s)
		s->forks++;
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(lantern_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct lantern_proc_stats *s;
	struct lantern_proc_event *ev;
	__u64 cgid;

	if (!tracked(&cgid))
		return 0;
	s = proc_stats(cgid);
	if (s)
		s->execs++;
	ev = proc_event(cgid, LANTERN_PROC_EXEC, p);
	if (!ev)
		return 0;
	bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename), BPF_CORE_READ(bprm, filename));
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/* Fires for every exiting thread; a process is reported when its last thread goes
 * (group_dead, an argument of this tracepoint since Linux 6.16). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(lantern_exit, struct task_struct *p, bool group_dead)
{
	struct lantern_proc_stats *s;
	struct lantern_proc_event *ev;
	__u64 cgid;

	if (!tracked(&cgid))
		return 0;
	if (!group_dead)
		return 0;
	s = proc_stats(cgid);
	if (s)
		s->exits++;
	ev = proc_event(cgid, LANTERN_PROC_EXIT, p);
	if (!ev)
		return 0;
	ev->exit_code = BPF_CORE_READ(p, exit_code);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

static __always_inline struct lantern_net_stats *net_stats(__u64 cgid)
{
	struct lantern_net_stats *s, zero = {};

	s = bpf_map_lookup_elem(&lantern_tm_net, &cgid);
	if (s)
		return s;
	bpf_map_update_elem(&lantern_tm_net, &cgid, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&lantern_tm_net, &cgid);
}

/* cgroup_skb verdicts: bit 0 passes the packet, bit 1 tells TCP of congestion
 * (NET_XMIT_CN) so it shrinks its window instead of waiting for a timeout. */
#define SKB_PASS     1
#define SKB_PASS_CN  3
#define SKB_DROP_CN  2

/* Refills the bucket and charges len bytes. A packet passes while tokens last; in
 * the lower half of the bucket it passes with a congestion mark, so TCP slows down
 * before anything is dropped; with no tokens left it is dropped. */
static __always_inline int rate_charge(struct lantern_rate_bucket *b, __u32 len)
{
	__u64 now = bpf_ktime_get_ns(), add;
	__s64 tokens;
	int verdict;

	bpf_spin_lock(&b->lock);
	if (now > b->last_ns) {
		add = (now - b->last_ns) * b->rate_Bps / 1000000000ULL;
		if (add) {
			tokens = b->tokens + (__s64)add;
			b->tokens = tokens > (__s64)b->burst ? (__s64)b->burst : tokens;
			b->last_ns = now;
		}
	}
	if (b->tokens < (__s64)len) {
		verdict = SKB_DROP_CN;
	} else {
		b->tokens -= len;
		verdict = b->tokens < (__s64)(b->burst / 2) ? SKB_PASS_CN : SKB_PASS;
	}
	bpf_spin_unlock(&b->lock);
	return verdict;
}

SEC("cgroup_skb/egress")
int lantern_skb_egress(struct __sk_buff *skb)
{
	struct lantern_rate_key rk = {};
	struct lantern_rate_bucket *b;
	struct lantern_net_stats *st;
	struct lantern_sock_rule *sr;
	struct bpf_sock *sk;
	__u64 cgid = bpf_skb_ancestor_cgroup_id(skb, instance_level);
	int verdict = SKB_PASS;

	if (!cgid)
		return SKB_PASS;
	if (egress_skb_judge(skb, cgid) == ESKB_DROP)
		return ESKB_DROP;
	if (!bpf_map_lookup_elem(&lantern_tm_inst, &cgid))
		return SKB_PASS;
	sk = skb->sk;
	if (sk) {
		sk = bpf_sk_fullsock(sk);
		if (sk) {
			sr = bpf_sk_storage_get(&lantern_sock_rule, sk, 0, 0);
			if (sr && sr->rule != LANTERN_NO_RULE) {
				rk.cgroup_id = cgid;
				rk.rule = sr->rule;
				b = bpf_map_lookup_elem(&lantern_tm_rate, &rk);
				if (b)
					verdict = rate_charge(b, skb->len);
			}
		}
	}
	st = net_stats(cgid);
	if (st) {
		if (verdict & SKB_PASS) {
			st->tx_bytes += skb->len;
			st->tx_packets++;
		} else {
			st->rate_dropped_bytes += skb->len;
			st->rate_dropped_packets++;
		}
	}
	return verdict;
}

SEC("cgroup_skb/ingress")
int lantern_skb_ingress(struct __sk_buff *skb)
{
	struct lantern_net_stats *st;
	__u64 cgid = bpf_skb_ancestor_cgroup_id(skb, instance_level);

	if (!bpf_map_lookup_elem(&lantern_tm_inst, &cgid))
		return SKB_PASS;
	st = net_stats(cgid);
	if (st) {
		st->rx_bytes += skb->len;
		st->rx_packets++;
	}
	return SKB_PASS;
}
