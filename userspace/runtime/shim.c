/* shim.c: watching a workload through lantern-shim, for the runtimes that start it
 * that way (process, OCI). lanternd holds a pidfd on the shim on its event loop; when
 * the shim exits, the exit file it wrote atomically in the run directory says how the
 * workload ended, and the run is told (run_exited). After a restart the same shim is
 * found again by its pid file, or its exit file tells that it ended meanwhile. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime_internal.h"

void runtime_shim_init(struct runtime_shim *s, struct loop *l, struct run *r, bool runtime_status)
{
	memset(s, 0, sizeof(*s));
	s->loop = l;
	s->r = r;
	s->pidfd = -1;
	s->runtime_status = runtime_status;
}

void runtime_shim_forget(struct runtime_shim *s)
{
	if (s->pidfd >= 0) {
		loop_del(s->loop, s->pidfd);
		close(s->pidfd);
		s->pidfd = -1;
	}
}

static void read_exit(struct runtime_shim *s, struct run_exit *x)
{
	struct spawn_exit se = { 0 };

	spawn_read_exit(run_dir(s->r), &se);
	memset(x, 0, sizeof(*x));
	x->recorded = se.exited;
	x->exit_code = se.exit_code;
	x->signal = se.signal;
	x->runtime_status = s->runtime_status;
	snprintf(x->error, sizeof(x->error), "%s", se.error);
}

static void on_shim_exit(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct runtime_shim *s = arg;
	struct run_exit x;

	if (s->pid > 0)
		waitpid(s->pid, NULL, WNOHANG);
	runtime_shim_forget(s);
	read_exit(s, &x);
	run_exited(s->r, &x);
}

int runtime_shim_start(struct runtime_shim *s, const struct spawn_req *req, struct lerr *e)
{
	int err;

	if ((err = spawn_start(req, &s->pid, &s->pidfd, e)) < 0)
		return err;
	if ((err = loop_add(s->loop, s->pidfd, EPOLLIN, on_shim_exit, s)) < 0) {
		kill(s->pid, SIGKILL);
		close(s->pidfd);
		s->pidfd = -1;
		return lerr_set(e, err, "spawn: watching the shim of %s: %s", run_id(s->r), strerror(-err));
	}
	return 0;
}

int runtime_shim_take(struct runtime_shim *s, pid_t pid, int pidfd, struct lerr *e)
{
	int err;

	if ((err = loop_add(s->loop, pidfd, EPOLLIN, on_shim_exit, s)) < 0)
		return lerr_set(e, err, "claim: watching the shim of %s: %s", run_id(s->r), strerror(-err));
	s->pid = pid;
	s->pidfd = pidfd;
	return 0;
}

enum runtime_found runtime_shim_adopt(struct runtime_shim *s, struct run_exit *x)
{
	if (spawn_adopt(run_dir(s->r), &s->pid, &s->pidfd) == 0) {
		if (loop_add(s->loop, s->pidfd, EPOLLIN, on_shim_exit, s) == 0)
			return RUNTIME_ALIVE;
		/* alive but unwatchable: never resumed beside itself, it ends unrecorded */
		close(s->pidfd);
		s->pidfd = -1;
		memset(x, 0, sizeof(*x));
		return RUNTIME_EXITED;
	}
	s->pid = 0;
	read_exit(s, x);
	return x->recorded ? RUNTIME_EXITED : RUNTIME_GONE;
}

void runtime_shim_kill(struct runtime_shim *s)
{
	if (s->pid > 0)
		kill(s->pid, SIGKILL);
}
