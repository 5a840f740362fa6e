/* spawn_test: lantern-shim and the spawn module against the real kernel: a workload runs
 * in its instance cgroup from its first instruction, its output and exit status land in
 * the run directory, signal and exec failures are reported, SIGTERM is forwarded, and a
 * shim whose starter went away is adopted and still records the exit. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lantern/cgroup.h"
#include "lantern/spawn.h"
#include "lantern/spec.h"
#include "tap.h"
#include "testlib.h"

#define NPOINTS 18

static struct tl_env env;
static struct cgroup_node node;
static char shim[300];
static char *envp[] = { "PATH=/usr/local/bin:/usr/bin:/bin", "LANTERN_TEST=1", NULL };

static bool pidfd_wait(int pidfd, int ms)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };

	return poll(&p, 1, ms) == 1;
}

/* Contents of run_dir/name, or "" (static buffer). */
static const char *path_in(const char *run_dir, const char *name)
{
	static char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", run_dir, name);
	return path;
}

static const char *runfile(const char *run_dir, const char *name)
{
	static char out[8192];
	char path[PATH_MAX], *buf = NULL;

	snprintf(path, sizeof(path), "%s/%s", run_dir, name);
	out[0] = '\0';
	if (util_read_file(path, &buf, NULL) == 0) {
		snprintf(out, sizeof(out), "%s", buf);
		free(buf);
	}
	/* The exit file ends in a newline; the points print it inline. */
	if (!strcmp(name, "exit") && out[0] && out[strlen(out) - 1] == '\n')
		out[strlen(out) - 1] = '\0';
	return out;
}

/* What the workload wrote to fd (1 stdout, 2 stderr), from the shim's record log
 * ("SEQ SEC.NSEC FD LEN\n" LEN bytes "\n" per record). */
static const char *logged(const char *run_dir, int fd)
{
	static char out[2][8192];
	char path[PATH_MAX], *buf = NULL;
	size_t len = 0, off = 0, n = 0;
	char *o = out[fd - 1];

	snprintf(path, sizeof(path), "%s/log", run_dir);
	o[0] = '\0';
	if (util_read_file(path, &buf, &len) < 0)
		return o;
	while (off < len) {
		unsigned long long seq, dlen;
		char t[40];
		int f, hl = 0;
		char *nl = memchr(buf + off, '\n', len - off);

		if (!nl || sscanf(buf + off, "%llu %39s %d %llu%n", &seq, t, &f, &dlen, &hl) != 4 ||
		    (size_t)(nl - buf) + 1 + dlen + 1 > len)
			break;
		if (f == fd && n + dlen < sizeof(out[0])) {
			memcpy(o + n, nl + 1, dlen);
			n += dlen;
			o[n] = '\0';
		}
		off = (size_t)(nl - buf) + 1 + dlen + 1;
	}
	free(buf);
	return o;
}

/* A fresh run directory and instance cgroup for one case. */
static int prepare(const char *name, char *run_dir, struct cgroup_inst *c)
{
	struct spec_limits lim = { .vcpu_milli = 1000, .memory_bytes = 128ULL << 20 };
	struct lerr e = { "" };
	int err;

	snprintf(run_dir, PATH_MAX, "%s/%s", env.dir, name);
	err = util_mkdir_p(run_dir, 0700);
	if (!err)
		err = cgroup_inst_create(&node, name, &lim, 64, c, &e);
	if (err)
		tap_diag("prepare %s: %s", name, e.msg);
	return err;
}

static int start(const char *run_dir, struct cgroup_inst *c, char **argv, pid_t *pid, int *pidfd)
{
	struct spawn_req r = { .shim_path = shim, .run_dir = run_dir, .cg = c, .argv = argv,
			       .envp = envp };
	struct lerr e = { "" };
	int err = spawn_start(&r, pid, pidfd, &e);

	if (err)
		tap_diag("%s", e.msg);
	return err;
}

/* Waits for the shim to exit; returns its exit status or -1. */
static int finish(pid_t pid, int pidfd)
{
	int status = -1;

	if (!pidfd_wait(pidfd, 10000))
		return -1;
	close(pidfd);
	waitpid(pid, &status, 0);
	return status;
}

/* True if out (a /proc/PID/cgroup) has a v1 line for ctrl, alone or co-mounted like
 * "cpu,cpuacct", whose path is path. */
static bool v1_line(const char *out, const char *ctrl, const char *path)
{
	char line[512];

	for (const char *p = out; *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		char *ctrls, *cpath, *save = NULL;

		snprintf(line, sizeof(line), "%.*s", (int)len, p);
		p += len + (nl ? 1 : 0);
		if (!(ctrls = strchr(line, ':')) || !(cpath = strchr(++ctrls, ':')))
			continue;
		*cpath++ = '\0';
		if (strcmp(cpath, path))
			continue;
		for (char *c = strtok_r(ctrls, ",", &save); c; c = strtok_r(NULL, ",", &save))
			if (!strcmp(c, ctrl))
				return true;
	}
	return false;
}

static void test_basic(void)
{
	char run_dir[PATH_MAX], want[512], shimpid[32];
	char *argv[] = { "sh", "-c", "echo hi; echo err >&2; cat /proc/self/cgroup; exit 3", NULL };
	struct cgroup_inst c;
	struct spawn_exit x;
	const char *out;
	pid_t pid;
	int pidfd, status;
	bool ok;

	if (prepare("i-basic", run_dir, &c) || start(run_dir, &c, argv, &pid, &pidfd)) {
		for (int i = 0; i < 6; i++)
			tap_ok(false, "basic run (not started)");
		return;
	}
	tap_ok(pidfd >= 0 && pid > 0, "spawn_start returns the shim pid %d and a pidfd", (int)pid);
	snprintf(shimpid, sizeof(shimpid), "%d\n", (int)pid);
	status = finish(pid, pidfd);
	tap_ok(status == 0 && !strcmp(runfile(run_dir, "shim.pid"), shimpid) &&
		       atoi(runfile(run_dir, "pid")) > 0,
	       "pidfd becomes readable, shim exits 0, shim.pid and pid written");
	tap_ok(spawn_read_exit(run_dir, &x) == 0 && x.exited && x.exit_code == 3 && !x.signal &&
		       !x.error[0],
	       "exit file says exit_code 3: %s", runfile(run_dir, "exit"));
	out = logged(run_dir, 1);
	tap_ok(!strncmp(out, "hi\n", 3), "the log holds the workload's stdout");
	snprintf(want, sizeof(want), "0::/%s/i-basic\n", node.root);
	ok = strstr(out, want) != NULL;
	if (node.layout == CGROUP_HYBRID) {
		const char *ctrls[] = { "memory", "cpu", "pids" };

		snprintf(want, sizeof(want), "/%s/i-basic", node.root);
		for (size_t i = 0; i < ARRAY_SIZE(ctrls); i++)
			ok = ok && v1_line(out, ctrls[i], want);
	}
	if (!tap_ok(ok, "workload ran in the instance: v2%s", node.layout == CGROUP_HYBRID
							      ? ", memory, cpu, pids" : ""))
		tap_diag("stdout: %s", out);
	tap_ok(!strcmp(logged(run_dir, 2), "err\n") && access(path_in(run_dir, "stdout"), F_OK) < 0,
	       "the log holds its stderr apart (fd 2); no other output file is written");
	cgroup_inst_destroy(&c, 2000, NULL);
}

static void test_signal_and_term(void)
{
	char run_dir[PATH_MAX];
	char *kill_self[] = { "sh", "-c", "kill -KILL $$", NULL };
	char *sleeper[] = { "sleep", "1000", NULL };
	struct cgroup_inst c;
	struct spawn_exit x = { 0 };
	pid_t pid;
	int pidfd, status = -1;

	if (!prepare("i-sig", run_dir, &c) && !start(run_dir, &c, kill_self, &pid, &pidfd))
		status = finish(pid, pidfd);
	tap_ok(status == 0 && spawn_read_exit(run_dir, &x) == 0 && x.exited && x.signal == SIGKILL,
	       "death by signal reported as signal 9: %s", runfile(run_dir, "exit"));
	cgroup_inst_destroy(&c, 2000, NULL);

	status = -1;
	if (!prepare("i-term", run_dir, &c) && !start(run_dir, &c, sleeper, &pid, &pidfd)) {
		/* Give the workload time to exec so SIGTERM meets sleep, not the shim's child. */
		for (int i = 0; i < 200 && !cgroup_inst_populated(&c); i++)
			usleep(10000);
		usleep(100000);
		kill(pid, SIGTERM);
		status = finish(pid, pidfd);
	}
	tap_ok(status == 0 && spawn_read_exit(run_dir, &x) == 0 && x.signal == SIGTERM,
	       "SIGTERM to the shim is forwarded to the workload: %s", runfile(run_dir, "exit"));
	cgroup_inst_destroy(&c, 2000, NULL);
}

static void test_failures(void)
{
	char run_dir[PATH_MAX];
	char *missing[] = { "/nonexistent/lantern-no-such-program", NULL };
	struct spawn_req r;
	struct cgroup_inst c;
	struct spawn_exit x = { 0 };
	struct lerr e = { "" };
	pid_t pid;
	int pidfd, status = -1, err;

	if (!prepare("i-noexec", run_dir, &c) && !start(run_dir, &c, missing, &pid, &pidfd))
		status = finish(pid, pidfd);
	tap_ok(status == 0 && spawn_read_exit(run_dir, &x) == 0 && x.exited && x.exit_code == 127 &&
		       strstr(x.error, "exec") && strstr(x.error, "No such file"),
	       "exec failure reported as exit 127 with the reason: %s", x.error);

	/* An instance that vanished before start: the workload must not run outside it. */
	{
		char *marker[] = { "sh", "-c", "echo ran", NULL };
		struct cgroup_inst g;

		const char *step = "prepare";
		struct lerr de = { "" };

		status = -1;
		memset(&x, 0, sizeof(x));
		if (!prepare("i-gone", run_dir, &g) && (step = "destroy", !cgroup_inst_destroy(&g, 2000, &de)) &&
		    (step = "start", !start(run_dir, &g, marker, &pid, &pidfd)))
			step = "finish", status = finish(pid, pidfd);
		bool joined_ok = status == 0 && spawn_read_exit(run_dir, &x) == 0 && x.exit_code == 126 &&
				 strstr(x.error, "join cgroup") && !logged(run_dir, 1)[0];
		tap_ok(joined_ok,
		       "failure to join the cgroup: no exec, exit 126: %s (last step %s, status %d, exit %d%s%s)",
		       x.error, step, status, x.exit_code, de.msg[0] ? ", " : "", de.msg);
	}

	r = (struct spawn_req){ .shim_path = "/nonexistent/lantern-shim", .run_dir = run_dir,
				.cg = &c, .argv = missing, .envp = envp };
	err = spawn_start(&r, &pid, &pidfd, &e);
	tap_ok(err == -ENOENT && strstr(e.msg, "/nonexistent/lantern-shim"),
	       "missing shim fails cleanly: %s", e.msg);
	cgroup_inst_destroy(&c, 2000, NULL);
}

/* A starter that spawns a long workload and goes away, like a killed lanternd. */
static void test_adopt(void)
{
	char run_dir[PATH_MAX], other[PATH_MAX], pidstr[32];
	char *sleeper[] = { "sleep", "1000", NULL };
	struct cgroup_inst c;
	struct spawn_exit x = { 0 };
	pid_t starter, shim_pid = 0, adopted = 0;
	int pfd[2], pidfd = -1, status, err;
	bool ok;

	if (prepare("i-adopt", run_dir, &c) || pipe(pfd) < 0) {
		for (int i = 0; i < 6; i++)
			tap_ok(false, "adopt (not prepared)");
		return;
	}
	starter = fork();
	if (starter == 0) {
		pid_t p = 0;
		int fd;

		close(pfd[0]);
		if (start(run_dir, &c, sleeper, &p, &fd))
			p = 0;
		if (write(pfd[1], &p, sizeof(p)) < 0)
			_exit(1);
		_exit(0);
	}
	close(pfd[1]);
	if (read(pfd[0], &shim_pid, sizeof(shim_pid)) != sizeof(shim_pid))
		shim_pid = 0;
	close(pfd[0]);
	waitpid(starter, &status, 0);
	tap_ok(shim_pid > 0, "a starter spawned shim %d and exited", (int)shim_pid);

	err = spawn_adopt(run_dir, &adopted, &pidfd);
	tap_ok(err == 0 && adopted == shim_pid && pidfd >= 0 && !pidfd_wait(pidfd, 0),
	       "spawn_adopt finds the same running shim (%d)", (int)adopted);

	/* A run directory whose shim.pid names a process that is no shim. */
	snprintf(other, sizeof(other), "%s/not-a-shim", env.dir);
	util_mkdir_p(other, 0700);
	snprintf(pidstr, sizeof(pidstr), "%d\n", (int)getpid());
	snprintf(other + strlen(other), sizeof(other) - strlen(other), "/shim.pid");
	util_write_str(other, pidstr);
	other[strlen(other) - strlen("/shim.pid")] = '\0';
	{
		pid_t p2;
		int fd2;

		err = spawn_adopt(other, &p2, &fd2);
	}
	tap_ok(err == -ESRCH, "spawn_adopt refuses a pid that is not that run's shim (%d)", err);

	for (int i = 0; i < 200 && !runfile(run_dir, "pid")[0]; i++)
		usleep(10000);
	kill(atoi(runfile(run_dir, "pid")), SIGKILL);
	ok = pidfd >= 0 && pidfd_wait(pidfd, 10000);
	tap_ok(ok, "adopted pidfd becomes readable when the shim ends");
	for (int i = 0; i < 200 && spawn_read_exit(run_dir, &x) == 0 && !x.exited; i++)
		usleep(10000);
	tap_ok(x.exited && x.signal == SIGKILL,
	       "exit file written with nobody waiting as parent: %s", runfile(run_dir, "exit"));
	if (pidfd >= 0)
		close(pidfd);
	err = spawn_adopt(run_dir, &adopted, &pidfd);
	if (err == 0)
		close(pidfd);
	tap_ok(err == -ESRCH, "spawn_adopt after the shim is gone: -ESRCH (%d)", err);
	/* Only now does the test, as subreaper, collect the orphaned shim. */
	waitpid(shim_pid, NULL, WNOHANG);
	cgroup_inst_destroy(&c, 2000, NULL);
}

int main(void)
{
	const char *missing = tl_env_missing();
	struct lerr e = { "" };
	char **names;
	size_t n;

	tap_plan(NPOINTS);
	if (!missing && tl_env_init(&env, "spawn") < 0)
		missing = "cannot create the test directory";
	if (missing) {
		for (int i = 0; i < NPOINTS; i++)
			tap_skip(missing, "spawn point %d", i + 1);
		return tap_done();
	}
	snprintf(shim, sizeof(shim), "%s/lantern-shim", env.build);
	/* Orphaned shims come back to this process rather than to a PID 1 that may not
	 * reap them, so the adoption case leaves no zombie behind. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	if (access(shim, X_OK) < 0 || cgroup_node_open(env.cgroot, &node, &e) < 0) {
		tap_diag("shim %s: %s; %s", shim, strerror(errno), e.msg);
		for (int i = 0; i < NPOINTS; i++)
			tap_ok(false, "spawn point %d (no shim or no cgroup subtree)", i + 1);
		util_rm_rf(env.dir);
		return tap_done();
	}

	test_basic();
	test_signal_and_term();
	test_failures();
	test_adopt();

	/* Whatever a failed point left running goes with its instance. */
	if (cgroup_node_list(&node, &names, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			struct cgroup_inst c;

			if (cgroup_inst_open(&node, names[i], &c, &e) == 0)
				cgroup_inst_destroy(&c, 2000, &e);
			free(names[i]);
		}
		free(names);
	}
	tap_ok(cgroup_node_remove(&node, &e) == 0 && util_rm_rf(env.dir) == 0,
	       "cleanup removes the subtree and the run directories");
	return tap_done();
}
