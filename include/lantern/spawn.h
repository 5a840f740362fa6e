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
 * the pid is really that run's shim. -ESRCH when it is gone. */
int spawn_adopt(const char *run_dir, pid_t *shim_pid, int *pidfd);

#endif
