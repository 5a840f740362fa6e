/* spawn.c: starting a workload through lantern-shim, reading how it ended, and finding
 * a still-running shim again after lanternd restarts.
 *
 * lanternd never is the workload's parent: the shim is, so that a crash of lanternd
 * neither kills the workload nor loses its exit status. lanternd holds a pidfd on the
 * shim and learns the outcome from RUN_DIR/exit, which the shim writes atomically. */
#include "lantern/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int pidfd_open_(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int pidfd_alive(int pidfd)
{
	return syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0;
}

/* Runs in the forked child; only async-signal-safe calls until exec. Reports errno
 * through the close-on-exec pipe when exec fails. */
static void exec_shim(const char *shim, char **argv, char *const *envp, int report_fd)
{
	sigset_t none;
	int null_fd, err;

	null_fd = open("/dev/null", O_RDWR);
	if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(null_fd, 1) < 0 || dup2(null_fd, 2) < 0)
		goto fail;
	/* lanternd's sockets, maps and pidfds must not leak into the workload's tree. */
	if (report_fd > 3)
		close_range(3, (unsigned)report_fd - 1, 0);
	close_range((unsigned)report_fd + 1, ~0U, 0);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
	execve(shim, argv, envp);
fail:
	err = errno;
	if (write(report_fd, &err, sizeof(err)) < 0)
		_exit(127);
	_exit(127);
}

int spawn_start(const struct spawn_req *r, pid_t *shim_pid, int *pidfd, struct lerr *e)
{
	char run_dir[PATH_MAX], **argv, o_netns[PATH_MAX + 16], o_wait[PATH_MAX + 32], o_max[48];
	size_t nargs = 0, i = 0;
	int pipefd[2], err = 0, fd;
	ssize_t n;
	pid_t pid;

	if (!r->cg || !r->cg->ndirs || !r->argv || !r->argv[0])
		return lerr_set(e, -EINVAL, "spawn: start: no cgroup or no command");
	if (access(r->shim_path, X_OK) < 0)
		return lerr_set(e, errno, "spawn: shim %s: %s", r->shim_path, strerror(errno));
	/* The shim's argv names the run directory canonically, so spawn_adopt can
	 * recognise it whatever spelling the caller uses. */
	if (!realpath(r->run_dir, run_dir))
		return lerr_set(e, errno, "spawn: run directory %s: %s", r->run_dir,
				strerror(errno));

	while (r->argv[nargs])
		nargs++;
	argv = calloc(2 + 3 + (size_t)r->cg->ndirs + 1 + nargs + 1, sizeof(*argv));
	if (!argv)
		return lerr_set(e, -ENOMEM, "spawn: start %s: out of memory", r->argv[0]);
	argv[i++] = (char *)r->shim_path;
	argv[i++] = run_dir;
	if (r->netns) {
		snprintf(o_netns, sizeof(o_netns), "--netns=%s", r->netns);
		argv[i++] = o_netns;
	}
	if (r->wait_pidfile) {
		snprintf(o_wait, sizeof(o_wait), "--wait-pidfile=%s", r->wait_pidfile);
		argv[i++] = o_wait;
	}
	if (r->log_max) {
		snprintf(o_max, sizeof(o_max), "--log-max=%llu", r->log_max);
		argv[i++] = o_max;
	}
	for (int d = 0; d < r->cg->ndirs; d++)
		argv[i++] = (char *)r->cg->dirs[d];
	argv[i++] = "--";
	for (size_t a = 0; a < nargs; a++)
		argv[i++] = r->argv[a];

	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		err = lerr_set(e, errno, "spawn: pipe: %s", strerror(errno));
		free(argv);
		return err;
	}
	pid = fork();
	if (pid < 0) {
		err = lerr_set(e, errno, "spawn: fork shim for %s: %s", run_dir, strerror(errno));
		goto out;
	}
	if (pid == 0)
		exec_shim(r->shim_path, argv, r->envp, pipefd[1]);

	close(pipefd[1]);
	pipefd[1] = -1;
	do
		n = read(pipefd[0], &err, sizeof(err));
	while (n < 0 && errno == EINTR);
	if (n == sizeof(err)) {
		waitpid(pid, NULL, 0);
		err = lerr_set(e, err, "spawn: exec shim %s: %s", r->shim_path, strerror(err));
		goto out;
	}
	err = 0;
	fd = pidfd_open_(pid);
	if (fd < 0) {
		/* Without a pidfd lanternd cannot watch the run; stop it rather than
		 * leave a workload nobody follows. */
		err = lerr_set(e, errno, "spawn: pidfd_open %d: %s", (int)pid, strerror(errno));
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
		goto out;
	}
	/* The shim writes shim.pid too, but only once it runs; writing it here as well
	 * means a lanternd that dies right after this call can still adopt the run. */
	{
		char path[PATH_MAX + 16], buf[32];

		snprintf(path, sizeof(path), "%s/shim.pid", run_dir);
		snprintf(buf, sizeof(buf), "%d\n", (int)pid);
		util_write_file_atomic(path, buf, strlen(buf));
	}
	*shim_pid = pid;
	*pidfd = fd;
out:
	close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	free(argv);
	return err;
}

int spawn_read_exit(const char *run_dir, struct spawn_exit *x)
{
	char path[PATH_MAX];
	json_error_t jerr;
	json_t *j, *v;

	memset(x, 0, sizeof(*x));
	if ((size_t)snprintf(path, sizeof(path), "%s/exit", run_dir) >= sizeof(path))
		return -ENAMETOOLONG;
	j = json_load_file(path, 0, &jerr);
	if (!j) {
		if (access(path, F_OK) < 0 && errno == ENOENT)
			return 0;
		return -EBADMSG;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		return -EBADMSG;
	}
	x->exited = true;
	if ((v = json_object_get(j, "exit_code")) && json_is_integer(v))
		x->exit_code = (int)json_integer_value(v);
	else if ((v = json_object_get(j, "signal")) && json_is_integer(v))
		x->signal = (int)json_integer_value(v);
	else
		x->exited = false;
	if ((v = json_object_get(j, "error")) && json_is_string(v))
		snprintf(x->error, sizeof(x->error), "%s", json_string_value(v));
	json_decref(j);
	return x->exited ? 0 : -EBADMSG;
}

/* True if /proc/PID/cmdline is lantern-shim started for run_dir. */
static bool is_our_shim(pid_t pid, const char *run_dir)
{
	char path[64], *buf = NULL, *base;
	size_t len = 0;
	bool ok;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	if (util_read_file(path, &buf, &len) < 0)
		return false;
	base = strrchr(buf, '/');
	base = base ? base + 1 : buf;
	ok = strlen(buf) + 1 < len && !strcmp(base, "lantern-shim") &&
	     !strcmp(buf + strlen(buf) + 1, run_dir);
	free(buf);
	return ok;
}

int spawn_adopt(const char *run_dir, pid_t *shim_pid, int *pidfd)
{
	char path[PATH_MAX], canon[PATH_MAX], *buf = NULL;
	long pid;
	int fd, err;

	if (!realpath(run_dir, canon))
		return -errno;
	if ((size_t)snprintf(path, sizeof(path), "%s/shim.pid", canon) >= sizeof(path))
		return -ENAMETOOLONG;
	err = util_read_file(path, &buf, NULL);
	if (err)
		return err == -ENOENT ? -ESRCH : err;
	pid = strtol(buf, NULL, 10);
	free(buf);
	if (pid <= 0)
		return -EBADMSG;
	/* Open the pidfd first and check identity after: if the pid was reused between
	 * the two steps, the check fails instead of adopting a stranger. */
	fd = pidfd_open_((pid_t)pid);
	if (fd < 0)
		return -ESRCH;
	if (!is_our_shim((pid_t)pid, canon) || !pidfd_alive(fd)) {
		close(fd);
		return -ESRCH;
	}
	*shim_pid = (pid_t)pid;
	*pidfd = fd;
	return 0;
}
