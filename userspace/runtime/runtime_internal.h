/* runtime_internal.h: what the runtimes of userspace/runtime/ share: watching a
 * workload through lantern-shim (shim.c), which the process runtime and the OCI
 * handlers both start it under. */
#ifndef LANTERN_RUNTIME_INTERNAL_H
#define LANTERN_RUNTIME_INTERNAL_H

#include <sys/types.h>

#include "lantern/loop.h"
#include "lantern/runtime.h"
#include "lantern/spawn.h"

/* One workload's shim as lanternd watches it: when it exits, its exit file becomes a
 * struct run_exit and run_exited is called. */
struct runtime_shim {
	struct loop *loop;
	struct run *r;
	pid_t pid;
	int pidfd;
	bool runtime_status;     /* the shim records an OCI runtime's exit status */
};

void runtime_shim_init(struct runtime_shim *s, struct loop *l, struct run *r, bool runtime_status);
/* Starts the shim (spawn_start) and watches it. */
int runtime_shim_start(struct runtime_shim *s, const struct spawn_req *req, struct lerr *e);
/* Finds a shim a previous lanternd started again; RUNTIME_EXITED with *x when it has
 * ended (its exit file), RUNTIME_GONE when it left none. */
enum runtime_found runtime_shim_adopt(struct runtime_shim *s, struct run_exit *x);
/* Stops watching (the shim goes on). */
void runtime_shim_forget(struct runtime_shim *s);
void runtime_shim_kill(struct runtime_shim *s);

#endif
