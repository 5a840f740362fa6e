/* main.c: the telemetry benchmark. Per-syscall cost of a getpid loop (10 million
 * calls by default) in an instance cgroup, side by side in one run:
 *   none          no program attached anywhere
 *   untracked     lantern's programs attached, another instance tracked, not the caller
 *   tracked       the caller's instance tracked (counts + latency histogram), for each
 *                 kind of syscall program: tp_btf, raw_tp, tracepoint
 *   bpftrace      bpftrace counting every syscall per cgroup and syscall number
 *                 (tracepoint:raw_syscalls:sys_enter { @[cgroup, args->id] = count(); })
 * then the process event path: processes fork and exit (and exec) in a tracked
 * instance as fast as the machine allows while a consumer drains the ring buffer as
 * lanternd does; events per second and failed reserves are reported.
 *
 * Usage: telemetry [-n CALLS] [-r ROUNDS] [-e SECONDS]
 * Rounds interleave the configurations; the table shows the median over rounds of
 * ns per call and the overhead against "none" measured in the same round. Everything
 * created (cgroups, pins, bpftrace) is removed at the end, also on SIGINT/SIGTERM. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lantern/cgroup.h"
#include "lantern/lbpf.h"
#include "lantern/lbpf_tm.h"
#include "lantern/util.h"

enum cfg { C_NONE, C_UNTRACKED, C_TP_BTF, C_RAW_TP, C_TRACEPOINT, C_BPFTRACE, NCFG };
static const char *const names[NCFG] = {
	"none (no program)", "lantern, caller untracked", "lantern tracked (tp_btf)",
	"lantern tracked (raw_tp)", "lantern tracked (tracepoint)", "bpftrace count per cgroup",
};

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

/* ns per getpid of a child in the caller cgroup */
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
		double a, b, v;

		close(p[0]);
		if (cgroup_inst_attach(&caller, getpid(), &e) < 0)
			_exit(1);
		a = now_s();
		for (long i = 0; i < calls; i++)
			syscall(SYS_getpid);
		b = now_s();
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

static bool bpftrace_start(void)
{
	char line[256];
	int p[2];
	FILE *f;

	if (pipe(p) < 0)
		return false;
	bpftrace_pid = fork();
	if (bpftrace_pid == 0) {
		dup2(p[1], 1);
		close(p[0]);
		execlp("bpftrace", "bpftrace", "-e",
		       "tracepoint:raw_syscalls:sys_enter { @[cgroup, args->id] = count(); }", (char *)NULL);
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
	struct lbpf_tm *t;
	double v;

	switch (c) {
	case C_NONE:
		return measure(calls);
	case C_BPFTRACE:
		if (!bpftrace_start()) {
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

struct evcount {
	uint64_t n;
};

static void on_ev(const struct lantern_proc_event *ev, void *arg)
{
	((struct evcount *)arg)->n++;
}

/* Process events: workers fork children that exec /bin/true or just exit, for
 * `seconds`, while this process drains the ring buffer. */
static void events_bench(int seconds)
{
	struct lantern_proc_stats ps = { 0 };
	struct lantern_tm_drops dr = { 0 };
	struct evcount cnt = { 0 };
	struct lerr e = { { 0 } };
	struct lbpf_tm *t = tm_open(LBPF_SYS_TP_BTF, 0);
	pid_t workers[4];
	double a, b;
	int nw = 4;

	if (!t)
		return;
	lbpf_tm_instance_add(t, caller.id, NULL, 0, &e);
	a = now_s();
	for (int w = 0; w < nw; w++) {
		workers[w] = fork();
		if (workers[w] == 0) {
			double end = now_s() + seconds;
			long i = 0;

			if (cgroup_inst_attach(&caller, getpid(), &e) < 0)
				_exit(1);
			while (now_s() < end) {
				pid_t p = fork();
				if (p == 0) {
					if (w == 0 && i % 8 == 0)
						execl("/bin/true", "true", (char *)NULL);
					_exit(0);
				}
				waitpid(p, NULL, 0);
				i++;
			}
			_exit(0);
		}
	}
	for (int alive = nw; alive;) {
		struct pollfd pf = { .fd = lbpf_tm_events_fd(t), .events = POLLIN };

		/* woken by the ring buffer, as lanternd's event loop is */
		poll(&pf, 1, 10);
		lbpf_tm_events_consume(t, on_ev, &cnt);
		alive = 0;
		for (int w = 0; w < nw; w++)
			if (workers[w] > 0 && waitpid(workers[w], NULL, WNOHANG) == 0)
				alive++;
			else
				workers[w] = -1;
	}
	b = now_s();
	lbpf_tm_events_consume(t, on_ev, &cnt);
	lbpf_tm_proc(t, caller.id, &ps);
	lbpf_tm_drops(t, &dr);
	printf("\nprocess events (%d workers forking in a tracked instance, consumer woken by the ring buffer)\n",
	       nw);
	printf("%-28s %12s %12s %12s %12s\n", "", "events", "events/s", "delivered", "dropped");
	printf("%-28s %12llu %12.0f %12llu %12llu\n", "exec + exit", (unsigned long long)(ps.execs + ps.exits),
	       (double)(ps.execs + ps.exits) / (b - a), (unsigned long long)cnt.n,
	       (unsigned long long)dr.proc_events);
	printf("(forks %llu, execs %llu, exits %llu in %.1f s)\n", (unsigned long long)ps.forks,
	       (unsigned long long)ps.execs, (unsigned long long)ps.exits, b - a);
	tm_drop(t);
}

int main(int argc, char **argv)
{
	struct spec_limits lim = { 0 };
	struct lerr e = { { 0 } };
	double v[NCFG][32], med[NCFG], over[NCFG][32];
	long calls = 10000000;
	int rounds = 3, ev_seconds = 3, opt;

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
	for (int r = 0; r < rounds; r++)
		for (int c = 0; c < NCFG; c++)
			v[c][r] = run_cfg((enum cfg)c, calls);
	for (int r = 0; r < rounds; r++)
		for (int c = 0; c < NCFG; c++)
			over[c][r] = v[c][r] - v[C_NONE][r];
	printf("%-30s %12s %14s\n", "configuration", "ns/call", "overhead ns");
	for (int c = 0; c < NCFG; c++) {
		double tmp[32];

		memcpy(tmp, v[c], sizeof(double) * (size_t)rounds);
		med[c] = median(tmp, rounds);
		memcpy(tmp, over[c], sizeof(double) * (size_t)rounds);
		if (v[c][0] < 0)
			printf("%-30s %12s %14s\n", names[c], "n/a", "n/a");
		else
			printf("%-30s %12.1f %14.1f\n", names[c], med[c], c ? median(tmp, rounds) : 0.0);
	}
	if (med[C_BPFTRACE] > med[C_NONE])
		printf("tracked (tp_btf) overhead / bpftrace overhead: %.2f\n",
		       (med[C_TP_BTF] - med[C_NONE]) / (med[C_BPFTRACE] - med[C_NONE]));
	events_bench(ev_seconds);
	cleanup();
	return 0;
}
