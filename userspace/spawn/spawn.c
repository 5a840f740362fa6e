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
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* The shim starts with /dev/null as stdio, no descriptor of lanternd's (sockets,
 * maps, pidfds must not leak into the workload's tree), no blocked signal and every
 * signal at its default. posix_spawn (vfork underneath) rather than fork: lanternd's
 * address space is large, and copying its page tables for every spawn cost a few
 * milliseconds on the spawn's path (bench/spawn). */
static int exec_shim(const char *shim, char **argv, char *const *envp, pid_t *pid)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, all;
	int err;

	sigemptyset(&none);
	sigfillset(&all);
	if ((err = posix_spawnattr_init(&at)))
		return err;
	if ((err = posix_spawn_file_actions_init(&fa))) {
		posix_spawnattr_destroy(&at);
		return err;
	}
	if (!(err = posix_spawnattr_setsigmask(&at, &none)) && !(err = posix_spawnattr_setsigdefault(&at, &all)) &&
	    !(err = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)) &&
	    !(err = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDWR, 0)) &&
	    !(err = posix_spawn_file_actions_adddup2(&fa, 0, 1)) &&
	    !(err = posix_spawn_file_actions_adddup2(&fa, 0, 2)) &&
	    !(err = posix_spawn_file_actions_addclosefrom_np(&fa, 3)))
		err = posix_spawn(pid, shim, &fa, &at, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	return err;
}

int spawn_start(const struct spawn_req *r, pid_t *shim_pid, int *pidfd, struct lerr *e)
{
	char run_dir[PATH_MAX], **argv, o_netns[PATH_MAX + 16], o_wait[PATH_MAX + 32], o_max[48];
	size_t nargs = 0, i = 0;
	int err = 0, fd;
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

	if ((err = exec_shim(r->shim_path, argv, r->envp, &pid))) {
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
		/* no fsync: a shim does not outlive the boot that the file describes */
		util_write_file_replace(path, buf, strlen(buf));
	}
	*shim_pid = pid;
	*pidfd = fd;
out:
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

/* True if /proc/PID is lantern-shim working for run_dir: its working directory is
 * run_dir (the shim works in its run directory, which may have been renamed since it
 * started: a pooled sandbox's becomes its run's), or, for a shim of an older lanternd,
 * its command line names run_dir. */
static bool is_our_shim(pid_t pid, const char *run_dir)
{
	char path[64], *buf = NULL, *base;
	struct stat a, b;
	size_t len = 0;
	bool ok;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	if (util_read_file(path, &buf, &len) < 0)
		return false;
	base = strrchr(buf, '/');
	base = base ? base + 1 : buf;
	ok = strlen(buf) + 1 < len && !strcmp(base, "lantern-shim");
	if (ok && strcmp(buf + strlen(buf) + 1, run_dir)) {
		snprintf(path, sizeof(path), "/proc/%d/cwd", (int)pid);
		ok = stat(path, &a) == 0 && stat(run_dir, &b) == 0 && a.st_dev == b.st_dev &&
		     a.st_ino == b.st_ino;
	}
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
