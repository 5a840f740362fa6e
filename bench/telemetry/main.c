/* main.c: the telemetry benchmark.
 *
 * 1. Per-syscall cost of a getpid loop (10 million calls by default) in an instance
 *    cgroup, side by side in one run:
 *      none          no program attached anywhere
 *      floor         EMPTY programs on raw_syscalls (tm_bench.bpf.c): sys_enter only,
 *                    and sys_enter + sys_exit, per kind (tp_btf, raw_tp, tracepoint).
 *                    Attaching anything there sets SYSCALL_WORK_SYSCALL_TRACEPOINT on
 *                    every task, so this is what any tracepoint design pays, tracked
 *                    or not, before its program does anything.
 *      untracked     lantern's programs attached, another instance tracked, not the caller
 *      tracked       the caller's instance tracked (counts + latency histogram), for each
 *                    kind of syscall program: tp_btf, raw_tp, tracepoint
 *      bpftrace      bpftrace counting every syscall per cgroup and syscall number
 *                    (tracepoint:raw_syscalls:sys_enter { @[cgroup, args->id] = count(); }),
 *                    the peer; and bpftrace doing what lantern does (count and a
 *                    log2 latency histogram per cgroup and syscall, sys_enter + sys_exit).
 *    The measuring child runs pinned to the last CPU at nice -20 and is timed in its
 *    own CPU time, so other load on the machine moves the figures less.
 * 2. Process events: workers vfork + exec a tiny static binary (and so exit) in a
 *    tracked instance as fast as the machine allows while a consumer woken by the ring
 *    buffer drains it as lanternd does; events per second and failed reserves.
 * 3. Consumer capacity: a synthetic producer (tm_bench.bpf.c, run through
 *    BPF_PROG_TEST_RUN on one CPU) writes exec/exit events into the same ring buffer at
 *    paced rates up to what it can do, while the consumer on the other CPU drains them
 *    doing lanternd's steady-state work per event; produced, delivered and dropped.
 *
 * Usage: telemetry [-n CALLS] [-r ROUNDS] [-e SECONDS]
 * Rounds interleave the configurations; the table shows the median over rounds of
 * ns per call and the overhead against "none" measured in the same round. Everything
 * created (cgroups, pins, bpftrace, the tiny binary) is removed at the end, also on
 * SIGINT/SIGTERM. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lantern/cgroup.h"
#include "lantern/lbpf.h"
#include "lantern/lbpf_tm.h"
#include "lantern/util.h"

enum cfg {
	C_NONE, C_FLOOR_BTF1, C_FLOOR_BTF, C_FLOOR_RAW1, C_FLOOR_RAW, C_FLOOR_TP1, C_FLOOR_TP,
	C_UNTRACKED, C_TP_BTF, C_RAW_TP, C_TRACEPOINT, C_BPFTRACE, C_BPFTRACE_LAT, NCFG
};
static const char *const names[NCFG] = {
	"none (no program)",
	"floor: empty tp_btf, enter",
	"floor: empty tp_btf, enter+exit",
	"floor: empty raw_tp, enter",
	"floor: empty raw_tp, enter+exit",
	"floor: empty tracepoint, enter",
	"floor: empty tracepoint, enter+exit",
	"lantern, caller untracked",
	"lantern tracked (tp_btf)",
	"lantern tracked (raw_tp)",
	"lantern tracked (tracepoint)",
	"bpftrace count (issue's peer)",
	"bpftrace count + latency hist",
};
static const char bt_count[] = "tracepoint:raw_syscalls:sys_enter { @[cgroup, args->id] = count(); }";
static const char bt_lat[] =
	"tracepoint:raw_syscalls:sys_enter { @n[cgroup, args->id] = count(); @s[tid] = nsecs; }"
	" tracepoint:raw_syscalls:sys_exit /@s[tid]/"
	" { @h[cgroup, args->id] = hist(nsecs - @s[tid]); delete(@s[tid]); }";
static char tiny[64]; /* path of the tiny static binary, removed by cleanup */

static struct cgroup_node node;
static struct cgroup_inst caller, other;
static bool made_node, made_caller, made_other;
static char pins[128];
static pid_t bpftrace_pid;

static void cleanup(void)
{
	struct lerr e = { { 0 } };

	if (bpftrace_pid > 0) {
		kill(bpftrace_pid, SIGKILL);
		waitpid(bpftrace_pid, NULL, 0);
		bpftrace_pid = 0;
	}
	lbpf_unpin_all(pins, &e);
	if (tiny[0])
		unlink(tiny);
	tiny[0] = '\0';
	if (made_caller)
		cgroup_inst_destroy(&caller, 2000, &e);
	if (made_other)
		cgroup_inst_destroy(&other, 2000, &e);
	if (made_node)
		cgroup_node_remove(&node, &e);
	made_caller = made_other = made_node = false;
}

static void on_signal(int sig)
{
	cleanup();
	_exit(128 + sig);
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ns per getpid of a child in the caller cgroup, in the child's own CPU time: time
 * other tasks take on its CPU (this VM is shared) does not count */
static double measure(long calls)
{
	struct lerr e = { { 0 } };
	double r = -1;
	int p[2];
	pid_t pid;

	if (pipe(p) < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		cpu_set_t cpus;
		double a, b, v;

		close(p[0]);
		if (cgroup_inst_attach(&caller, getpid(), &e) < 0)
			_exit(1);
		/* one CPU and the highest priority: less noise from the rest of the machine */
		CPU_ZERO(&cpus);
		CPU_SET(ncpu > 1 ? (int)ncpu - 1 : 0, &cpus);
		sched_setaffinity(0, sizeof(cpus), &cpus);
		setpriority(PRIO_PROCESS, 0, -20);
		a = cpu_s();
		for (long i = 0; i < calls; i++)
			syscall(SYS_getpid);
		b = cpu_s();
		v = (b - a) * 1e9 / (double)calls;
		if (write(p[1], &v, sizeof(v)) != sizeof(v))
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	if (read(p[0], &r, sizeof(r)) != sizeof(r))
		r = -1;
	close(p[0]);
	waitpid(pid, NULL, 0);
	return r;
}

static struct lbpf_tm *tm_open(enum lbpf_sys_hook h, uint32_t events_bytes)
{
	struct lbpf_tm_opts o = { .pin_root = pins, .cgroup_path = node.v2,
				  .instance_level = node.instance_level, .sys_hook = h,
				  .events_bytes = events_bytes };
	struct lerr e = { { 0 } };
	struct lbpf_tm *t = NULL;
	bool ad;

	if (lbpf_tm_open(&o, &t, &ad, &e) < 0)
		fprintf(stderr, "telemetry: %s\n", e.msg);
	return t;
}

static void tm_drop(struct lbpf_tm *t)
{
	struct lerr e = { { 0 } };

	lbpf_tm_close(t);
	lbpf_unpin_all(pins, &e);
}

static bool bpftrace_start(const char *prog)
{
	char line[256];
	int p[2], fd;
	FILE *f;

	if (pipe(p) < 0)
		return false;
	bpftrace_pid = fork();
	if (bpftrace_pid == 0) {
		dup2(p[1], 1);
		close(p[0]);
		/* bpftrace 0.17 warns about RLIMIT_MEMLOCK even when it is unlimited;
		 * failures show as its exit, which bpftrace_start checks */
		if ((fd = open("/dev/null", O_WRONLY)) >= 0)
			dup2(fd, 2);
		execlp("bpftrace", "bpftrace", "-e", prog, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	f = fdopen(p[0], "r");
	/* "Attaching 1 probe..." once the probe is in */
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "Attaching"))
			break;
	if (f)
		fclose(f);
	usleep(200000);
	return bpftrace_pid > 0 && waitpid(bpftrace_pid, NULL, WNOHANG) == 0;
}

static void bpftrace_stop(void)
{
	if (bpftrace_pid > 0) {
		kill(bpftrace_pid, SIGKILL);
		waitpid(bpftrace_pid, NULL, 0);
	}
	bpftrace_pid = 0;
}

static double run_cfg(enum cfg c, long calls)
{
	static const enum lbpf_sys_hook hooks[] = { [C_TP_BTF] = LBPF_SYS_TP_BTF,
						    [C_RAW_TP] = LBPF_SYS_RAW_TP,
						    [C_TRACEPOINT] = LBPF_SYS_TRACEPOINT };
	struct lerr e = { { 0 } };
	struct lbpf_tm_floor *f;
	struct lbpf_tm *t;
	double v;

	switch (c) {
	case C_NONE:
		return measure(calls);
	case C_FLOOR_BTF1: case C_FLOOR_BTF: case C_FLOOR_RAW1: case C_FLOOR_RAW:
	case C_FLOOR_TP1: case C_FLOOR_TP:
		if (lbpf_tm_floor_open((enum lbpf_sys_hook)((c - C_FLOOR_BTF1) / 2),
				       (c - C_FLOOR_BTF1) % 2, &f, &e) < 0) {
			fprintf(stderr, "telemetry: %s\n", e.msg);
			return -1;
		}
		v = measure(calls);
		lbpf_tm_floor_close(f);
		return v;
	case C_BPFTRACE:
	case C_BPFTRACE_LAT:
		if (!bpftrace_start(c == C_BPFTRACE ? bt_count : bt_lat)) {
			bpftrace_stop();
			return -1;
		}
		v = measure(calls);
		bpftrace_stop();
		return v;
	case C_UNTRACKED:
		if (!(t = tm_open(LBPF_SYS_TP_BTF, 0)))
			return -1;
		lbpf_tm_instance_add(t, other.id, NULL, 0, &e);
		v = measure(calls);
		tm_drop(t);
		return v;
	default:
		if (!(t = tm_open(hooks[c], 0)))
			return -1;
		lbpf_tm_instance_add(t, caller.id, NULL, 0, &e);
		v = measure(calls);
		tm_drop(t);
		return v;
	}
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* A static x86-64 executable that only calls exit_group(0), written to /tmp: exec
 * without a dynamic loader or libc start-up, so the machine reaches its highest
 * exec + exit rate. Elsewhere /bin/true. */
static const char *tiny_binary(void)
{
#if defined(__x86_64__)
	static const unsigned char code[] = {
		0x31, 0xff,                   /* xor edi, edi */
		0xb8, 0xe7, 0x00, 0x00, 0x00, /* mov eax, 231 (exit_group) */
		0x0f, 0x05,                   /* syscall */
	};
	struct {
		Elf64_Ehdr eh;
		Elf64_Phdr ph;
		unsigned char code[sizeof(code)];
	} __attribute__((packed)) img = { 0 };
	const uint64_t base = 0x400000;
	int fd;

	memcpy(img.eh.e_ident, ELFMAG, SELFMAG);
	img.eh.e_ident[EI_CLASS] = ELFCLASS64;
	img.eh.e_ident[EI_DATA] = ELFDATA2LSB;
	img.eh.e_ident[EI_VERSION] = EV_CURRENT;
	img.eh.e_type = ET_EXEC;
	img.eh.e_machine = EM_X86_64;
	img.eh.e_version = EV_CURRENT;
	img.eh.e_entry = base + offsetof(__typeof__(img), code);
	img.eh.e_phoff = offsetof(__typeof__(img), ph);
	img.eh.e_ehsize = sizeof(Elf64_Ehdr);
	img.eh.e_phentsize = sizeof(Elf64_Phdr);
	img.eh.e_phnum = 1;
	img.ph.p_type = PT_LOAD;
	img.ph.p_flags = PF_R | PF_X;
	img.ph.p_vaddr = img.ph.p_paddr = base;
	img.ph.p_filesz = img.ph.p_memsz = sizeof(img);
	img.ph.p_align = 0x1000;
	memcpy(img.code, code, sizeof(code));
	util_tmp_template(tiny, sizeof(tiny), "/tmp/lantern-bench-exit0-");
	fd = mkstemp(tiny);
	if (fd < 0) {
		tiny[0] = '\0';
		return "/bin/true";
	}
	if (write(fd, &img, sizeof(img)) != (ssize_t)sizeof(img) || fchmod(fd, 0755) < 0) {
		close(fd);
		unlink(tiny);
		tiny[0] = '\0';
		return "/bin/true";
	}
	close(fd);
	return tiny;
#else
	return "/bin/true";
#endif
}

struct evcount {
	uint64_t n;
};

static void on_ev(const struct lantern_proc_event *ev, void *arg)
{
	((struct evcount *)arg)->n++;
}

/* What lanternd's on_proc_event does per event once a run holds its 128 span events:
 * the run looked up by cgroup id (here a compare), two clock reads, the span event
 * built in jansson and then discarded. */
static void on_ev_lanternd(const struct lantern_proc_event *ev, void *arg)
{
	struct evcount *c = arg;
	struct timespec a, b;
	char comm[17], file[97];
	json_t *e;

	c->n++;
	if (ev->cgroup_id != caller.id)
		return;
	clock_gettime(CLOCK_REALTIME, &a);
	clock_gettime(CLOCK_MONOTONIC, &b);
	memcpy(comm, ev->comm, 16);
	comm[16] = '\0';
	memcpy(file, ev->filename, 96);
	file[96] = '\0';
	e = json_pack("{s:s, s:I, s:[{s:s, s:{s:I}}, {s:s, s:{s:I}}, {s:s, s:{s:s}}, {s:s, s:{s:s}}]}",
		      "name", ev->type == LANTERN_PROC_EXEC ? "process.exec" : "process.exit",
		      "timeUnixNano", (json_int_t)(a.tv_sec * 1000000000LL + a.tv_nsec - b.tv_nsec),
		      "attributes", "key", "process.pid", "value", "intValue", (json_int_t)ev->pid,
		      "key", "process.parent_pid", "value", "intValue", (json_int_t)ev->ppid,
		      "key", "process.executable.path", "value", "stringValue", file,
		      "key", "process.command", "value", "stringValue", comm);
	json_decref(e);
}

/* Drains t's ring buffer as lanternd's event loop does (woken through its epoll fd)
 * until every pid in kids has exited. */
static void drain_until_done(struct lbpf_tm *t, pid_t *kids, int nk, lbpf_proc_cb cb,
			     struct evcount *cnt)
{
	for (int alive = nk; alive;) {
		struct pollfd pf = { .fd = lbpf_tm_events_fd(t), .events = POLLIN };

		poll(&pf, 1, 10);
		lbpf_tm_events_consume(t, cb, cnt);
		alive = 0;
		for (int w = 0; w < nk; w++)
			if (kids[w] > 0 && waitpid(kids[w], NULL, WNOHANG) == 0)
				alive++;
			else
				kids[w] = -1;
	}
	lbpf_tm_events_consume(t, cb, cnt);
}

/* Process events: workers vfork children that exec the tiny binary (one exec and one
 * exit event each), for `seconds`, while this process drains the ring buffer. */
static void events_bench(int seconds, uint32_t bytes)
{
	struct lantern_proc_stats ps = { 0 };
	struct lantern_tm_drops dr = { 0 };
	struct evcount cnt = { 0 };
	struct lerr e = { { 0 } };
	struct lbpf_tm *t = tm_open(LBPF_SYS_TP_BTF, bytes);
	const char *bin = tiny[0] ? tiny : tiny_binary();
	pid_t workers[8];
	double a, b;
	int nw = 8;

	if (!t)
		return;
	lbpf_tm_instance_add(t, caller.id, NULL, 0, &e);
	a = now_s();
	for (int w = 0; w < nw; w++) {
		workers[w] = fork();
		if (workers[w] == 0) {
			char *const argv[] = { (char *)"exit0", NULL }, *const envp[] = { NULL };
			double end = now_s() + seconds;

			if (cgroup_inst_attach(&caller, getpid(), &e) < 0)
				_exit(1);
			while (now_s() < end) {
				pid_t p = vfork();

				if (p == 0) {
					execve(bin, argv, envp);
					_exit(127);
				}
				if (p > 0)
					waitpid(p, NULL, 0);
			}
			_exit(0);
		}
	}
	drain_until_done(t, workers, nw, on_ev_lanternd, &cnt);
	b = now_s();
	lbpf_tm_proc(t, caller.id, &ps);
	lbpf_tm_drops(t, &dr);
	printf("%-28s %12llu %12.0f %12llu %12llu\n", bytes == LANTERN_TM_EVENTS_BYTES ?
	       "exec + exit, default ring" : "exec + exit, 1 MiB ring", (unsigned long long)(ps.execs + ps.exits),
	       (double)(ps.execs + ps.exits) / (b - a), (unsigned long long)cnt.n,
	       (unsigned long long)dr.proc_events);
	printf("%-28s (forks %llu, execs %llu, exits %llu in %.1f s)\n", "", (unsigned long long)ps.forks,
	       (unsigned long long)ps.execs, (unsigned long long)ps.exits, b - a);
	tm_drop(t);
}

/* Consumer capacity: a child on CPU 0 produces events with the synthetic producer at
 * `rate` per second (0: as fast as it can) for `seconds`, in batches every 1 ms; this
 * process, on the other CPU, consumes. One row of the table. */
static void burst_rate(double rate, int seconds, lbpf_proc_cb cb, const char *cbname)
{
	struct evcount cnt = { 0 };
	struct lerr e = { { 0 } };
	struct lbpf_tm *t = tm_open(LBPF_SYS_NONE, 0);
	struct { uint64_t produced, failed; } res = { 0 };
	int p[2];
	pid_t kid;
	double a, b;

	if (!t || pipe(p) < 0)
		return;
	a = now_s();
	kid = fork();
	if (kid == 0) {
		struct lbpf_tm_burst *bu;
		cpu_set_t cpus;
		double start = now_s(), end = start + seconds;
		uint32_t failed;

		close(p[0]);
		CPU_ZERO(&cpus);
		CPU_SET(0, &cpus);
		sched_setaffinity(0, sizeof(cpus), &cpus);
		if (lbpf_tm_burst_open(pins, caller.id, &bu, &e) < 0) {
			fprintf(stderr, "telemetry: %s\n", e.msg);
			_exit(1);
		}
		for (double now = start; now < end; now = now_s()) {
			/* events due by now at this rate; unpaced: batches of 1000 */
			uint64_t due = rate > 0 ? (uint64_t)((now - start) * rate) : res.produced + 1000;
			uint32_t n = due > res.produced ? (uint32_t)(due - res.produced) : 0;

			if (n > 100000)
				n = 100000;
			if (n) {
				int err = lbpf_tm_burst(bu, n, &failed);

				if (err < 0) {
					fprintf(stderr, "telemetry: burst: %s\n", strerror(-err));
					break;
				}
				res.produced += n;
				res.failed += failed;
			}
			if (rate > 0)
				usleep(1000);
		}
		lbpf_tm_burst_close(bu);
		if (write(p[1], &res, sizeof(res)) != sizeof(res))
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	{
		cpu_set_t cpus;
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		CPU_ZERO(&cpus);
		CPU_SET(ncpu > 1 ? 1 : 0, &cpus);
		sched_setaffinity(0, sizeof(cpus), &cpus);
	}
	drain_until_done(t, &kid, 1, cb, &cnt);
	b = now_s();
	if (read(p[0], &res, sizeof(res)) != sizeof(res))
		res.produced = 0;
	close(p[0]);
	{
		char label[48];

		if (rate > 0)
			snprintf(label, sizeof(label), "%.0fk/s, %s", rate / 1000, cbname);
		else
			snprintf(label, sizeof(label), "max, %s", cbname);
		printf("%-28s %12.0f %12.0f %12llu\n", label, (double)res.produced / (b - a),
		       (double)cnt.n / (b - a), (unsigned long long)res.failed);
	}
	tm_drop(t);
	{
		cpu_set_t cpus;

		CPU_ZERO(&cpus);
		for (int c = 0; c < CPU_SETSIZE && c < sysconf(_SC_NPROCESSORS_ONLN); c++)
			CPU_SET(c, &cpus);
		sched_setaffinity(0, sizeof(cpus), &cpus);
	}
}

static void capacity_bench(int seconds)
{
	static const double rates[] = { 100000, 200000, 400000, 800000, 0 };

	printf("\nconsumer capacity: synthetic producer (BPF_PROG_TEST_RUN) on CPU 0, consumer on CPU 1,\n"
	       "ring buffer %u KiB (%zu events), %d s per row; offered = reserves attempted (max: the\n"
	       "producer never waits, so most attempts fail on a full ring: delivered/s is the capacity)\n", LANTERN_TM_EVENTS_BYTES / 1024,
	       LANTERN_TM_EVENTS_BYTES / (sizeof(struct lantern_proc_event) + 8), seconds);
	printf("%-28s %12s %12s %12s\n", "producer rate, consumer", "offered/s", "delivered/s",
	       "dropped");
	for (size_t i = 0; i < ARRAY_SIZE(rates); i++)
		burst_rate(rates[i], seconds, on_ev_lanternd, "lanternd work");
	burst_rate(0, seconds, on_ev, "count only");
}

int main(int argc, char **argv)
{
	struct spec_limits lim = { 0 };
	struct lerr e = { { 0 } };
	double v[NCFG][32], med[NCFG], over[NCFG][32], mover[NCFG];
	long calls = 10000000;
	int rounds = 5, ev_seconds = 3, opt;

	while ((opt = getopt(argc, argv, "n:r:e:")) != -1) {
		switch (opt) {
		case 'n': calls = atol(optarg); break;
		case 'r': rounds = atoi(optarg); break;
		case 'e': ev_seconds = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: telemetry [-n CALLS] [-r ROUNDS] [-e SECONDS]\n");
			return 2;
		}
	}
	if (rounds < 1 || rounds > 32 || calls < 1)
		return 2;
	snprintf(pins, sizeof(pins), "/sys/fs/bpf/lantern-bench-tm-%d", getpid());
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	atexit(cleanup);
	{
		char root[64];
		snprintf(root, sizeof(root), "lantern-bench-tm-%d", getpid());
		if (cgroup_node_open(root, &node, &e) < 0) {
			fprintf(stderr, "telemetry: %s\n", e.msg);
			return 1;
		}
	}
	made_node = true;
	if (cgroup_inst_create(&node, "caller", &lim, 0, &caller, &e) < 0 ||
	    !(made_caller = true) || cgroup_inst_create(&node, "other", &lim, 0, &other, &e) < 0) {
		fprintf(stderr, "telemetry: %s\n", e.msg);
		return 1;
	}
	made_other = true;

	printf("getpid loop, %ld calls per measurement, %d rounds (configurations interleaved)\n", calls,
	       rounds);
	for (int r = 0; r < rounds; r++) {
		int others = lbpf_tm_syscall_links();

		/* another agent's syscall programs make every row, "none" included, pay the
		 * floor already: the figures are then marginal costs */
		if (others)
			printf("warning: round %d: %d raw_syscalls links of other programs attached\n",
			       r + 1, others);
		for (int c = 0; c < NCFG; c++)
			v[c][r] = run_cfg((enum cfg)c, calls);
	}
	for (int r = 0; r < rounds; r++)
		for (int c = 0; c < NCFG; c++)
			over[c][r] = v[c][r] - v[C_NONE][r];
	printf("%-36s %12s %14s\n", "configuration", "ns/call", "overhead ns");
	for (int c = 0; c < NCFG; c++) {
		double tmp[32];

		memcpy(tmp, v[c], sizeof(double) * (size_t)rounds);
		med[c] = median(tmp, rounds);
		memcpy(tmp, over[c], sizeof(double) * (size_t)rounds);
		mover[c] = median(tmp, rounds);
		if (v[c][0] < 0)
			printf("%-36s %12s %14s\n", names[c], "n/a", "n/a");
		else
			printf("%-36s %12.1f %14.1f\n", names[c], med[c], c ? mover[c] : 0.0);
	}
	if (mover[C_BPFTRACE] > 0 && mover[C_BPFTRACE_LAT] > 0)
		printf("tracked (tp_btf) overhead / bpftrace count overhead: %.2f;"
		       " / bpftrace count + latency overhead: %.2f\n",
		       mover[C_TP_BTF] / mover[C_BPFTRACE], mover[C_TP_BTF] / mover[C_BPFTRACE_LAT]);
	printf("\nprocess events: 8 workers vfork + exec %s in a tracked instance, %d s,\n"
	       "consumer woken by the ring buffer doing lanternd's per-event work; default ring %u KiB\n",
	       strcmp(tiny_binary(), "/bin/true") ? "a tiny static binary" : "/bin/true", ev_seconds,
	       LANTERN_TM_EVENTS_BYTES / 1024);
	printf("%-28s %12s %12s %12s %12s\n", "", "events", "events/s", "delivered", "dropped");
	events_bench(ev_seconds, 1 << 20);
	events_bench(ev_seconds, LANTERN_TM_EVENTS_BYTES);
	capacity_bench(2);
	cleanup();
	return 0;
}
