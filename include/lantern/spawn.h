/* spawn.h: starting a workload through lantern-shim, the small supervisor that
 * outlives lanternd. The shim joins the workload to the instance cgroup before exec,
 * records its stdout/stderr in the run directory's log, waits for it and writes its
 * exit status there, so a restarted lanternd learns how a run ended even if it
 * happened while lanternd was down.
 *
 * Run directory files: shim.pid, pid (workload), exit ({"exit_code":N} or {"signal":N},
 * written atomically), log and log.1 (timestamped output records of both streams, see
 * tools/shim/shim.c). */
#ifndef LANTERN_SPAWN_H
#define LANTERN_SPAWN_H

#include <stdbool.h>
#include <sys/types.h>

#include "lantern/cgroup.h"
#include "lantern/util.h"

struct spawn_req {
	const char *shim_path;        /* build/lantern-shim */
	const char *run_dir;          /* exists; files above are created in it */
	const struct cgroup_inst *cg; /* the workload joins every directory */
	char *const *argv;            /* argv[0] is looked up in PATH of envp */
	char *const *envp;
	const char *netns;            /* join this network namespace before exec (may be NULL) */
	const char *wait_pidfile;     /* argv starts a container and exits; wait for this pid */
	unsigned long long log_max;   /* output cap in bytes (0: the shim's default) */
};

/* Starts the shim; returns its pid and a pidfd that becomes readable when it exits. */
int spawn_start(const struct spawn_req *r, pid_t *shim_pid, int *pidfd, struct lerr *e);

struct spawn_exit {
	bool exited;       /* the exit file exists */
	int exit_code;     /* when exited normally */
	int signal;        /* when killed by a signal, else 0 */
	char error[256];   /* shim-reported start failure (exec), else "" */
};
/* Reads run_dir/exit. Returns 0 (exited may be false), or -errno. */
int spawn_read_exit(const char *run_dir, struct spawn_exit *x);
/* Re-opens a pidfd for a shim still running after a lanternd restart; checks that
 * the pid is really that run's shim (working in run_dir). -ESRCH when it is gone. */
int spawn_adopt(const char *run_dir, pid_t *shim_pid, int *pidfd);

/* ---- the waiter of a pooled sandbox (tools/waiter, docs/pools.md) ----
 * lantern-waiter is a pooled sandbox's first process, started by the runtime as any
 * workload is (through the shim, in the instance's cgroups). It connects to a Unix
 * socket lanternd listens on (its path is its only argument), says SPAWN_WAITER_HELLO
 * and then does nothing until lanternd sends what to run: it execs that (its end of
 * the socket is close-on-exec, so lanternd reads end of file), or answers why it
 * cannot and exits. If lanternd goes away first, the waiter exits without running
 * anything.
 *
 * The message: three little-endian u32 (the bytes that follow, argc, envc), then the
 * working directory, argv[0..argc) and env[0..envc), each NUL-terminated. argv[0]
 * without a '/' is looked up in the PATH of env, as an OCI runtime does. */
#define SPAWN_WAITER_HELLO "lantern-waiter 1\n"
#define SPAWN_WAITER_MSG_MAX (1u << 20)
#define SPAWN_WAITER_STRS_MAX 65536
/* The waiter's exit status when lanternd went away before telling it what to run. */
#define SPAWN_WAITER_ORPHANED 75

/* Sends what to exec to the waiter connected on fd and waits up to timeout_ms for the
 * exec: 0 once it happened, else the reason (the waiter's own when it could not exec:
 * -ENOEXEC; -ETIMEDOUT; -EPIPE when the waiter is gone). */
int spawn_waiter_exec(int fd, char *const *argv, char *const *envp, const char *cwd, int timeout_ms,
		      struct lerr *e);

#endif
