/* lantern-shim: the small supervisor between lanternd and one workload.
 *
 *   lantern-shim RUN_DIR CGDIR... -- CMD ARGS...
 *
 * lanternd starts it with the workload's environment as its own. It leaves lanternd's
 * session so it outlives a crash or restart of lanternd, forks the workload, which joins
 * every CGDIR (the cgroup v2 directory first) before exec so limits and egress policy
 * hold from its first instruction, then waits for it and records how it ended in
 * RUN_DIR/exit. Whoever reads the run directory later, a restarted lanternd included,
 * learns the outcome without having been the parent.
 *
 * Files in RUN_DIR: shim.pid, pid, stdout, stderr, exit ({"exit_code":N} or
 * {"signal":N}, plus "error" when the workload could not be started).
 *
 * It links nothing but libc and stays small: it runs for the life of every workload. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* Writes RUN_DIR/name through a temporary file, fsync and rename, and syncs the
 * directory, so a reader sees the whole content or no file, even across a crash. */
static int write_atomic(const char *run_dir, const char *name, const char *content)
{
	char tmp[PATH_MAX], dst[PATH_MAX];
	int fd, ok;

	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", run_dir, name);
	snprintf(dst, sizeof(dst), "%s/%s", run_dir, name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	ok = write_all(fd, content, strlen(content)) == 0 && fsync(fd) == 0;
	close(fd);
	if (!ok || rename(tmp, dst) < 0) {
		unlink(tmp);
		return -1;
	}
	fd = open(run_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}

/* Appends s to out as the body of a JSON string. */
static void json_escape(char *out, size_t cap, const char *s)
{
	size_t n = 0;

	for (; *s && n + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			out[n++] = '\\';
			out[n++] = (char)c;
		} else if (c < 0x20) {
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
		} else {
			out[n++] = (char)c;
		}
	}
	out[n] = '\0';
}

static void write_exit(const char *run_dir, const char *key, int val, const char *error)
{
	char buf[1200], esc[1024];

	if (error && *error) {
		json_escape(esc, sizeof(esc), error);
		snprintf(buf, sizeof(buf), "{\"%s\":%d,\"error\":\"%s\"}\n", key, val, esc);
	} else {
		snprintf(buf, sizeof(buf), "{\"%s\":%d}\n", key, val);
	}
	write_atomic(run_dir, "exit", buf);
}

/* In the workload child: reports why it cannot start to the shim (through the
 * close-on-exec pipe) and to the run's stderr file, then exits with code. */
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

static void run_child(char **cgdirs, int ncg, char **cmd, int out_fd, int err_fd, int report_fd)
{
	struct sigaction sa;
	sigset_t none;
	int null_fd;

	/* Join before anything else runs in this process, v2 first as given. */
	for (int i = 0; i < ncg; i++) {
		char path[PATH_MAX];
		int fd;

		snprintf(path, sizeof(path), "%s/cgroup.procs", cgdirs[i]);
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, "0", 1) != 1)
			child_fail(report_fd, err_fd, EXIT_JOIN_FAILED, "join cgroup", cgdirs[i],
				   errno);
		close(fd);
	}

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

int main(int argc, char **argv)
{
	const char *run_dir;
	char **cgdirs, **cmd, path[PATH_MAX], pidbuf[32], errbuf[1024];
	int ncg = 0, sep = -1, out_fd, err_fd, pipefd[2], status;
	size_t errlen = 0;
	struct sigaction sa;
	sigset_t term, old;
	pid_t pid;

	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			sep = i;
			break;
		}
	}
	if (argc < 2 || sep < 0 || sep + 1 >= argc) {
		fprintf(stderr, "usage: lantern-shim RUN_DIR CGDIR... -- CMD ARGS...\n");
		return 2;
	}
	run_dir = argv[1];
	cgdirs = argv + 2;
	ncg = sep - 2;
	cmd = argv + sep + 1;

	/* A session of our own: lanternd's process group and terminal signals stop here. */
	setsid();
	umask(077);

	snprintf(pidbuf, sizeof(pidbuf), "%d\n", (int)getpid());
	if (write_atomic(run_dir, "shim.pid", pidbuf) < 0) {
		fprintf(stderr, "lantern-shim: write %s/shim.pid: %s\n", run_dir, strerror(errno));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/stdout", run_dir);
	out_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	snprintf(path, sizeof(path), "%s/stderr", run_dir);
	err_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (out_fd < 0 || err_fd < 0 || pipe2(pipefd, O_CLOEXEC) < 0) {
		snprintf(errbuf, sizeof(errbuf), "lantern-shim: open output files in %s: %s",
			 run_dir, strerror(errno));
		write_exit(run_dir, "exit_code", EXIT_EXEC_FAILED, errbuf);
		return 1;
	}

	/* SIGTERM is held until child_pid is known, so one that arrives early is still
	 * forwarded rather than ending the shim with nobody recording the exit. */
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

	pid = fork();
	if (pid < 0) {
		snprintf(errbuf, sizeof(errbuf), "lantern-shim: fork: %s", strerror(errno));
		write_exit(run_dir, "exit_code", EXIT_EXEC_FAILED, errbuf);
		return 1;
	}
	if (pid == 0) {
		close(pipefd[0]);
		run_child(cgdirs, ncg, cmd, out_fd, err_fd, pipefd[1]);
	}
	child_pid = pid;
	close(pipefd[1]);
	close(out_fd);
	close(err_fd);
	sigprocmask(SIG_SETMASK, &old, NULL);

	snprintf(pidbuf, sizeof(pidbuf), "%d\n", (int)pid);
	write_atomic(run_dir, "pid", pidbuf);

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

	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			snprintf(errbuf, sizeof(errbuf), "lantern-shim: wait for %d: %s", (int)pid,
				 strerror(errno));
			write_exit(run_dir, "exit_code", EXIT_EXEC_FAILED, errbuf);
			return 1;
		}
	}
	child_pid = 0;
	if (WIFSIGNALED(status))
		write_exit(run_dir, "signal", WTERMSIG(status), errbuf);
	else
		write_exit(run_dir, "exit_code", WEXITSTATUS(status), errbuf);
	return 0;
}
