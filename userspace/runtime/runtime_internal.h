/* runtime_internal.h: what the runtimes of userspace/runtime/ share: watching a
 * workload through lantern-shim (shim.c), which the process runtime and the OCI
 * handlers both start it under; and which containers of a pod may bind to its run
 * (podbind.c), for the runtimes whose pods containerd starts (CRI, Kubernetes). */
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
/* Watches a shim started earlier (a pooled sandbox's, now its run's); takes pidfd. */
int runtime_shim_take(struct runtime_shim *s, pid_t pid, int pidfd, struct lerr *e);
/* Finds a shim a previous lanternd started again; RUNTIME_EXITED with *x when it has
 * ended (its exit file), RUNTIME_GONE when it left none. */
enum runtime_found runtime_shim_adopt(struct runtime_shim *s, struct run_exit *x);
/* Stops watching (the shim goes on). */
void runtime_shim_forget(struct runtime_shim *s);
void runtime_shim_kill(struct runtime_shim *s);

/* The containers of one run's pod that have bound: its sandbox, then its one workload
 * container. */
struct runtime_pod_binds {
	char sandbox[80];
	char container[80];
};
/* A container of the pod named pod_name (and pod_uid, when known) that the runtime made
 * for owner ("run r-...", "pooled sandbox i-...") to run spec s asks to bind: 0, with
 * what lantern-oci does in answer (the class's runtime and flags, the network: none
 * strip, the workload's scratch), or a refusal: another pod, a second sandbox, a second
 * workload container, a container outside the bound sandbox. The first container to
 * bind names the sandbox (after a lanternd restart, the workload's own). */
int runtime_pod_bind(struct runtime_pod_binds *pb, const struct runtime_oci *oci, const struct spec *s,
		     const char *owner, const char *pod_name, const char *pod_uid, const struct run_bind_req *b,
		     json_t *answer, struct lerr *e);

/* pooled.c: a claimed sandbox, in the OCI and CRI runtimes alike. A node directory the
 * sandbox shows, by inode: a claiming run's must be it. */
struct runtime_pooled_mount {
	char dest[128];
	dev_t dev;
	ino_t ino;
};

struct oci_bundle_req;
/* pm notes the directory host, shown at dest. */
int runtime_pooled_mount_note(struct runtime_pooled_mount *pm, const char *host, const char *dest,
			      struct lerr *e);
/* 0 when every directory env shows is the one of the same destination in pm[0..n);
 * else -EXDEV naming it (sandbox: what the run claimed, for the message). */
int runtime_pooled_mounts_match(const struct runtime_pooled_mount *pm, size_t n, struct run_env *env,
				const char *sandbox, struct lerr *e);
/* The waiter at *waiter_fd execs the process br describes (oci_process_build, as a cold
 * start's bundle would run it); the descriptor is closed (-1) once it was asked. */
int runtime_pooled_exec(int *waiter_fd, const struct oci_bundle_req *br, struct lerr *e);

#endif
