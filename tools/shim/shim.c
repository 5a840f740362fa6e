/* lantern-shim: the small supervisor between lanternd and one workload.
 *
 *   lantern-shim RUN_DIR [--netns=PATH] [--wait-pidfile=PATH] [--log-max=BYTES] CGDIR...
 *                -- CMD ARGS...
 *
 * lanternd starts it with the workload's environment as its own. It leaves lanternd's
 * session so it outlives a crash or restart of lanternd, forks the workload, which joins
 * every CGDIR (the cgroup v2 directory first) before exec so limits and egress policy
 * hold from its first instruction, then waits for it and records how it ended in
 * RUN_DIR/exit. Whoever reads the run directory later, a restarted lanternd included,
 * learns the outcome without having been the parent.
 *
 * The shim works in RUN_DIR (its working directory) and names its files relative to
 * it, so the directory may be renamed while the shim runs: a pooled sandbox's
 * directory becomes its run's when a run claims it (docs/pools.md). The workload
 * starts in the working directory the shim was started in.
 *
 * Files in RUN_DIR: shim.pid, pid, exit ({"exit_code":N} or {"signal":N}, plus "error"
 * when the workload could not be started), log and log.1.
 *
 * Output goes through pipes into one place, "log", one record per line (or per chunk
 * of a long line) of stdout (FD 1) or stderr (FD 2):
 *     "SEQ SEC.NSEC FD LEN\n" LEN bytes "\n"
 * SEQ counts records from 0, the time is CLOCK_REALTIME when the shim read the line.
 * When "log" would pass half of --log-max (default 8 MiB) it becomes "log.1" (the older
 * one is dropped), so a reader resuming at SEQ finds every record still kept, in order;
 * `lantern run` and `lantern logs` both read it (userspace/logs).
 *
 * --netns: the child joins that network namespace before exec (runsc with
 * --network=host runs inside the spawn's namespace this way).
 * --wait-pidfile: CMD is an OCI runtime that starts the container and exits (runc
 * run -d); the shim is a child subreaper, so the container's init becomes its child,
 * and the status recorded is the one of the pid written in that file (a relative path
 * is in RUN_DIR).
 *
 * It stays small, for it runs for the life of every workload: besides libc it links
 * only userspace/cgroup (joining the instance) and userspace/util (the JSON escaper),
 * which need nothing more. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lantern/cgroup.h"
#include "lantern/util.h"

/* Exit codes of the workload child when it never got to exec, as shells use them. */
#define EXIT_JOIN_FAILED 126
#define EXIT_EXEC_FAILED 127

static volatile sig_atomic_t child_pid;

static void forward_signal(int sig)
{
	if (child_pid > 0)
		kill((pid_t)child_pid, sig);
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t w = write(fd, buf, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Writes name in the run directory (the working directory) through a temporary file,
 * fsync and rename, and syncs the directory, so a reader sees the whole content or no
 * file, even across a crash. */
static int write_atomic(const char *name, const char *content)
{
	char tmp[PATH_MAX];
	int fd, ok;

	snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	ok = write_all(fd, content, strlen(content)) == 0 && fsync(fd) == 0;
	close(fd);
	if (!ok || rename(tmp, name) < 0) {
		unlink(tmp);
		return -1;
	}
	fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}

static void write_exit(const char *key, int val, const char *error)
{
	char buf[1200], esc[1024];

	if (error && *error) {
		util_json_escape(esc, sizeof(esc), error);
		snprintf(buf, sizeof(buf), "{\"%s\":%d,\"error\":\"%s\"}\n", key, val, esc);
	} else {
		snprintf(buf, sizeof(buf), "{\"%s\":%d}\n", key, val);
	}
	write_atomic("exit", buf);
}

/* In the workload child: reports why it cannot start to the shim (through the
 * close-on-exec pipe) and to its stderr pipe (the run's log), then exits with code. */
static void child_fail(int report_fd, int err_fd, int code, const char *what, const char *obj,
		       int err)
{
	char msg[768];
	int n = snprintf(msg, sizeof(msg), "lantern-shim: %s %s: %s", what, obj, strerror(err));

	if (n > (int)sizeof(msg) - 1)
		n = (int)sizeof(msg) - 1;
	write_all(report_fd, msg, (size_t)n);
	if (err_fd >= 0) {
		write_all(err_fd, msg, (size_t)n);
		write_all(err_fd, "\n", 1);
	}
	_exit(code);
}

static void run_child(char **cgdirs, int ncg, const char *netns, char **cmd, int out_fd, int err_fd,
		      int report_fd, int cwd_fd)
{
	struct sigaction sa;
	sigset_t none;
	int null_fd;

	/* Join before anything else runs in this process, v2 first as given. A failure is
	 * reported in the shim's own words (what lanternd and the tests read), not e's. */
	for (int i = 0; i < ncg; i++) {
		struct lerr e;
		int err = cgroup_join(cgdirs[i], 0, &e);

		if (err)
			child_fail(report_fd, err_fd, EXIT_JOIN_FAILED, "join cgroup", cgdirs[i], -err);
	}

	if (netns) {
		int ns = open(netns, O_RDONLY | O_CLOEXEC);
		if (ns < 0 || setns(ns, CLONE_NEWNET) < 0)
			child_fail(report_fd, err_fd, EXIT_JOIN_FAILED, "join network namespace", netns,
				   errno);
		close(ns);
	}

	if (fchdir(cwd_fd) < 0)
		child_fail(report_fd, err_fd, EXIT_EXEC_FAILED, "return to the working directory for", cmd[0],
			   errno);
	null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
		child_fail(report_fd, err_fd, EXIT_EXEC_FAILED, "set up stdio for", cmd[0], errno);

	/* The workload starts with the defaults, not the shim's forwarding handler. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (int s = 1; s < NSIG; s++)
		sigaction(s, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	execvp(cmd[0], cmd);
	child_fail(report_fd, 2, EXIT_EXEC_FAILED, "exec", cmd[0], errno);
}

/* The output capture: raw files for `lantern run`, the record log for `lantern logs`. */
struct capture {
	int log;
	uint64_t log_len, seq, max;
};

static void capture_rotate(struct capture *c)
{
	if (rename("log", "log.1") < 0)
		return;
	close(c->log);
	c->log = open("log", O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	c->log_len = 0;
}

static void capture_record(struct capture *c, int fd, const char *buf, size_t len)
{
	char hdr[96];
	struct timespec ts;
	int h;

	clock_gettime(CLOCK_REALTIME, &ts);
	h = snprintf(hdr, sizeof(hdr), "%llu %lld.%09ld %d %zu\n", (unsigned long long)c->seq++,
		     (long long)ts.tv_sec, ts.tv_nsec, fd, len);
	if (c->log_len && c->log_len + (uint64_t)h + len + 1 > c->max / 2)
		capture_rotate(c);
	if (c->log >= 0) {
		write_all(c->log, hdr, (size_t)h);
		write_all(c->log, buf, len);
		write_all(c->log, "\n", 1);
		c->log_len += (uint64_t)h + len + 1;
	}
}

/* A chunk read from the workload's fd (1 or 2): one record per line. */
static void capture_chunk(struct capture *c, int fd, const char *buf, size_t len)
{
	while (len) {
		const char *nl = memchr(buf, '\n', len);
		size_t n = nl ? (size_t)(nl - buf) + 1 : len;

		capture_record(c, fd, buf, n);
		buf += n;
		len -= n;
	}
}

/* Reads what is available on a pipe; returns false at EOF. */
static bool capture_pipe(struct capture *c, int pfd, int fd)
{
	char buf[65536];
	ssize_t n = read(pfd, buf, sizeof(buf));

	if (n < 0)
		return errno == EINTR || errno == EAGAIN;
	if (n == 0)
		return false;
	capture_chunk(c, fd, buf, (size_t)n);
	return true;
}

static pid_t read_pidfile(const char *path)
{
	char buf[32] = "";
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return (pid_t)strtol(buf, NULL, 10);
}

int main(int argc, char **argv)
{
	const char *run_dir, *netns = NULL, *wait_pidfile = NULL;
	char **cgdirs, **cmd, pidbuf[32], errbuf[1024];
	int cwd_fd, ncg = 0, sep = -1, pipefd[2], opipe[2], epipe[2], status = 0, sfd;
	size_t errlen = 0;
	struct capture cap = { .max = 8u << 20, .log = -1 };
	struct sigaction sa;
	sigset_t term, old, chld;
	bool open_pipes[2] = { true, true }, have_status = false;
	pid_t pid, target;
	/* with --wait-pidfile, children reaped before the runtime's own exit names the
	 * container's pid: a short workload can end (and be reaped in the same batch)
	 * before `runc run -d` does */
	struct { pid_t pid; int st; } early[64];
	int nearly = 0;

	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			sep = i;
			break;
		}
	}
	if (argc < 2 || sep < 0 || sep + 1 >= argc) {
		fprintf(stderr, "usage: lantern-shim RUN_DIR [--netns=P] [--wait-pidfile=P] [--log-max=N] "
			"CGDIR... -- CMD ARGS...\n");
		return 2;
	}
	run_dir = argv[1];
	cgdirs = argv + 2;
	ncg = sep - 2;
	while (ncg > 0 && !strncmp(cgdirs[0], "--", 2)) {
		if (!strncmp(cgdirs[0], "--netns=", 8))
			netns = cgdirs[0] + 8;
		else if (!strncmp(cgdirs[0], "--wait-pidfile=", 15))
			wait_pidfile = cgdirs[0] + 15;
		else if (!strncmp(cgdirs[0], "--log-max=", 10))
			cap.max = strtoull(cgdirs[0] + 10, NULL, 10);
		else {
			fprintf(stderr, "lantern-shim: unknown option %s\n", cgdirs[0]);
			return 2;
		}
		cgdirs++;
		ncg--;
	}
	if (cap.max < 4096)
		cap.max = 4096;
	cmd = argv + sep + 1;
	/* the run directory by its descriptor from here on: it may be renamed */
	cwd_fd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cwd_fd < 0 || chdir(run_dir) < 0) {
		fprintf(stderr, "lantern-shim: %s: %s\n", run_dir, strerror(errno));
		return 1;
	}

	/* A session of our own: lanternd's process group and terminal signals stop here. */
	setsid();
	umask(077);
	/* the container's init, orphaned by a runtime that exits after starting it,
	 * becomes our child, so we can wait for it */
	if (wait_pidfile)
		prctl(PR_SET_CHILD_SUBREAPER, 1);

	snprintf(pidbuf, sizeof(pidbuf), "%d\n", (int)getpid());
	if (write_atomic("shim.pid", pidbuf) < 0) {
		fprintf(stderr, "lantern-shim: write %s/shim.pid: %s\n", run_dir, strerror(errno));
		return 1;
	}
	cap.log = open("log", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (cap.log < 0 || pipe2(pipefd, O_CLOEXEC) < 0 || pipe2(opipe, O_CLOEXEC) < 0 ||
	    pipe2(epipe, O_CLOEXEC) < 0) {
		snprintf(errbuf, sizeof(errbuf), "lantern-shim: open the output log in %s: %s",
			 run_dir, strerror(errno));
		write_exit("exit_code", EXIT_EXEC_FAILED, errbuf);
		return 1;
	}

	/* SIGTERM is held until child_pid is known, so one that arrives early is still
	 * forwarded rather than ending the shim with nobody recording the exit. SIGCHLD
	 * is read from a signalfd beside the output pipes. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = forward_signal;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigaddset(&term, SIGINT);
	sigaddset(&term, SIGHUP);
	sigprocmask(SIG_BLOCK, &term, &old);
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	/* SIGCHLD stays blocked for good (it is read from the signalfd): unblocking it even
	 * for a moment would let the default disposition discard the SIGCHLD of a child that
	 * already exited, and the shim would wait forever */
	sigaddset(&old, SIGCHLD);
	sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);

	pid = fork();
	if (pid < 0 || sfd < 0) {
		snprintf(errbuf, sizeof(errbuf), "lantern-shim: fork: %s", strerror(errno));
		write_exit("exit_code", EXIT_EXEC_FAILED, errbuf);
		return 1;
	}
	if (pid == 0) {
		close(pipefd[0]);
		close(opipe[0]);
		close(epipe[0]);
		sigprocmask(SIG_UNBLOCK, &chld, NULL);
		run_child(cgdirs, ncg, netns, cmd, opipe[1], epipe[1], pipefd[1], cwd_fd);
	}
	child_pid = pid;
	close(pipefd[1]);
	close(opipe[1]);
	close(epipe[1]);
	sigprocmask(SIG_SETMASK, &old, NULL);

	snprintf(pidbuf, sizeof(pidbuf), "%d\n", (int)pid);
	write_atomic("pid", pidbuf);

	/* The pipe closes on exec; anything read before that is why the start failed. */
	for (;;) {
		ssize_t r = read(pipefd[0], errbuf + errlen, sizeof(errbuf) - 1 - errlen);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		errlen += (size_t)r;
		if (errlen == sizeof(errbuf) - 1)
			break;
	}
	errbuf[errlen] = '\0';
	close(pipefd[0]);

	/* Copy output until the workload has ended; then drain what its pipes still hold.
	 * A leftover process keeping a pipe open (outside a pid namespace it may) cannot
	 * hold the exit record back: after the end, pipes get 200 ms. */
	target = pid;
	for (;;) {
		struct pollfd pf[3] = {
			{ .fd = open_pipes[0] ? opipe[0] : -1, .events = POLLIN },
			{ .fd = open_pipes[1] ? epipe[0] : -1, .events = POLLIN },
			{ .fd = have_status ? -1 : sfd, .events = POLLIN },
		};
		int n;

		if (have_status && !open_pipes[0] && !open_pipes[1])
			break;
		n = poll(pf, 3, have_status ? 200 : -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (int i = 0; i < 2; i++)
			if (pf[i].revents && !capture_pipe(&cap, i ? epipe[0] : opipe[0], i + 1))
				open_pipes[i] = false;
		if (pf[2].revents) {
			struct signalfd_siginfo si;
			pid_t w;
			int st;

			while (read(sfd, &si, sizeof(si)) == sizeof(si))
				;
			while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
				if (w == pid && wait_pidfile && target == pid) {
					/* the runtime is done starting the container */
					pid_t t = WIFEXITED(st) && WEXITSTATUS(st) == 0 ? read_pidfile(wait_pidfile) : -1;

					if (t > 0) {
						target = t;
						child_pid = t;
						snprintf(pidbuf, sizeof(pidbuf), "%d\n", (int)t);
						write_atomic("pid", pidbuf);
						/* it may have ended already: reaped before, or later in this loop */
						for (int k = 0; k < nearly; k++) {
							if (early[k].pid == t) {
								status = early[k].st;
								have_status = true;
							}
						}
						continue;
					}
					status = st;
					have_status = true;
					if (!errbuf[0])
						snprintf(errbuf, sizeof(errbuf), "lantern-shim: %s could not start the container "
							 "(exit %d; its output is in the run's log)", cmd[0],
							 WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
				} else if (w == target) {
					status = st;
					have_status = true;
				} else if (wait_pidfile && target == pid && nearly < (int)(sizeof(early) / sizeof(early[0]))) {
					early[nearly].pid = w;
					early[nearly++].st = st;
				}
			}
			if (have_status)
				child_pid = 0;
		}
	}
	close(cap.log);
	if (WIFSIGNALED(status))
		write_exit("signal", WTERMSIG(status), errbuf);
	else
		write_exit("exit_code", WEXITSTATUS(status), errbuf);
	return 0;
}
