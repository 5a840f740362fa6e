// SPDX-License-Identifier: GPL-2.0
/* tm_bench.bpf.c: what bench/telemetry measures lantern against, never loaded by
 * lanternd.
 *
 * Empty programs on raw_syscalls sys_enter/sys_exit in each flavour (tp_btf, raw_tp,
 * tracepoint): the floor of any tracepoint-based syscall capture on this kernel, since
 * attaching anything to raw_syscalls sets SYSCALL_WORK_SYSCALL_TRACEPOINT on every
 * task and so takes every syscall of the machine off the fast path.
 *
 * lantern_tm_burst: a synthetic producer writing process events into lantern's own
 * ring buffer (lbpf reuses the pinned lantern_tm_events), so the consumer's capacity
 * can be measured at rates no fork loop reaches on a small machine. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "telemetry.h"
#include "tm_bench.h"

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/sys_enter")
int BPF_PROG(floor_enter_btf)
{
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(floor_exit_btf)
{
	return 0;
}

SEC("raw_tp/sys_enter")
int floor_enter_raw(void *ctx)
{
	return 0;
}

SEC("raw_tp/sys_exit")
int floor_exit_raw(void *ctx)
{
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int floor_enter_tp(void *ctx)
{
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_exit")
int floor_exit_tp(void *ctx)
{
	return 0;
}

/* Same definition as in telemetry.bpf.c; lbpf points it at the pinned one. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, LANTERN_TM_EVENTS_BYTES);
} lantern_tm_events SEC(".maps");

static long burst_one(__u64 i, void *arg)
{
	struct lantern_tm_burst_args *a = arg;
	struct lantern_proc_event *ev;

	ev = bpf_ringbuf_reserve(&lantern_tm_events, sizeof(*ev), 0);
	if (!ev) {
		a->failed++;
		return 0;
	}
	ev->ts_ns = bpf_ktime_get_ns();
	ev->cgroup_id = a->cgroup_id;
	/* alternate exec and exit, as a workload of short-lived processes produces */
	ev->type = i & 1 ? LANTERN_PROC_EXIT : LANTERN_PROC_EXEC;
	ev->pid = (__u32)i;
	ev->ppid = 1;
	ev->exit_code = 0;
	__builtin_memcpy(ev->comm, "burst", 6);
	__builtin_memcpy(ev->filename, "/bin/burst", 11);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

SEC("syscall")
int lantern_tm_burst(struct lantern_tm_burst_args *ctx)
{
	struct lantern_tm_burst_args a = *ctx;

	a.failed = 0;
	bpf_loop(a.n, burst_one, &a, 0);
	ctx->failed = a.failed;
	return 0;
}
