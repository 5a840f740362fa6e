/* cgroup.h: the node's cgroup subtree and one cgroup per instance.
 *
 * Two host layouts are supported:
 *   unified (pure cgroup v2): /sys/fs/cgroup/<root>/<inst>, controllers memory, cpu,
 *     pids enabled through cgroup.subtree_control;
 *   hybrid: the v2 directory /sys/fs/cgroup/unified/<root>/<inst> (where BPF attaches
 *     and the cgroup id comes from) plus v1 directories under
 *     /sys/fs/cgroup/{memory,cpu,pids}/<root>/<inst> for the limits.
 * The instance is the directory set; the process joins all of them before exec. */
#ifndef LANTERN_CGROUP_H
#define LANTERN_CGROUP_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "lantern/util.h"

/* lantern/spec.h; used by pointer only, so lantern-shim, which links this module,
 * compiles without spec's headers (jansson). */
struct spec_limits;

enum cgroup_layout { CGROUP_UNIFIED, CGROUP_HYBRID };

#define CGROUP_MAX_DIRS 4 /* v2 + memory, cpu, pids */

struct cgroup_node {
	enum cgroup_layout layout;
	char root[128];            /* the subtree's name relative to the hierarchies */
	char v2[PATH_MAX];         /* v2 directory of the subtree */
	char v1_memory[PATH_MAX];  /* hybrid only */
	char v1_cpu[PATH_MAX];
	char v1_pids[PATH_MAX];
	uint32_t instance_level;   /* cgroup v2 depth of an instance directory */
};

struct cgroup_inst {
	char name[64];
	uint64_t id;               /* cgroup v2 id (inode of the v2 directory) */
	char dirs[CGROUP_MAX_DIRS][PATH_MAX]; /* dirs[0] is the v2 directory */
	int ndirs;
};

/* Detects the layout, creates the subtree (name like "lantern" or "a/b"). */
int cgroup_node_open(const char *root, struct cgroup_node *n, struct lerr *e);
/* Removes the subtree's directories; instances inside must be gone. */
int cgroup_node_remove(const struct cgroup_node *n, struct lerr *e);
/* Removes the subtree with everything left below it, in every hierarchy: also those
 * lanternd does not manage, where an OCI runtime makes the containers' directories
 * (cpuset, devices, freezer, ... on a hybrid host). A directory a process still holds
 * stays; the error names the first such and counts the others. */
int cgroup_node_sweep(const struct cgroup_node *n, struct lerr *e);

/* Creates the instance cgroup with limits applied: memory.max (memory.limit_in_bytes),
 * cpu quota for vcpu (period 100 ms), pids.max. Fails with nothing left behind. */
int cgroup_inst_create(const struct cgroup_node *n, const char *name,
		       const struct spec_limits *lim, uint64_t pids_max,
		       struct cgroup_inst *out, struct lerr *e);
/* Fills out for an existing instance directory (adoption after restart). */
int cgroup_inst_open(const struct cgroup_node *n, const char *name, struct cgroup_inst *out,
		     struct lerr *e);
/* Joins pid to every directory of the instance (v2 first). */
int cgroup_inst_attach(const struct cgroup_inst *c, pid_t pid, struct lerr *e);
/* Joins pid (0: the calling process) to one cgroup directory. Whoever joins an
 * instance's directories one by one (lantern-shim, from the list lanternd gives it)
 * joins the v2 directory first, as cgroup_inst_attach does. */
int cgroup_join(const char *dir, pid_t pid, struct lerr *e);
/* What the kernel has counted for an instance, whichever layout holds it. */
struct cgroup_stats {
	double cpu_seconds;    /* CPU time of everything that ran in it (v2 cpu.stat
				  usage_usec, else v1 cpuacct.usage) */
	uint64_t memory_bytes; /* charged now (memory.current, else memory.usage_in_bytes) */
	uint64_t oom_kills;    /* processes the OOM killer ended in it (oom_kill of
				  memory.events and memory.oom_control, summed over its dirs) */
};
/* Reads the counters; one the layout does not offer stays 0. Fails only when the
 * instance's v2 directory is gone. */
int cgroup_inst_stats(const struct cgroup_inst *c, struct cgroup_stats *out, struct lerr *e);
/* cpu_seconds of cgroup_inst_stats alone (one file read, not the memory ones): 0 when
 * the layout offers none or the instance is gone. */
double cgroup_inst_cpu_seconds(const struct cgroup_inst *c);
/* True while any process is in the instance. */
bool cgroup_inst_populated(const struct cgroup_inst *c);
/* Sends sig to every process in the instance (SIGKILL through cgroup.kill when the
 * kernel has it). Returns how many were signalled, or -errno. */
int cgroup_inst_signal(const struct cgroup_inst *c, int sig);
/* Kills what is left, waits up to timeout_ms for it to empty, removes the dirs. */
int cgroup_inst_destroy(const struct cgroup_inst *c, int timeout_ms, struct lerr *e);
/* Removes what is left of instance name in every hierarchy, those lanternd does not
 * manage included (an OCI runtime's cpuset, devices, freezer, ... directories made for
 * containers inside the instance): empty directories only, deepest first; one still
 * busy (a container's last task exiting) is tried again for up to a second. Blocks:
 * for workers and lanternd's start, not the loop's steady state. */
void cgroup_inst_sweep(const struct cgroup_node *n, const char *name);
/* Removes, in every cgroup hierarchy mounted (/proc/self/mountinfo) but the unified one,
 * the directories of instances under n's subtree that owned(arg, name) says no one
 * owns: empty directories only (rmdir, deepest first, bounded depth, never through a
 * symlink); one a process holds stays. What an OCI runtime made for a pod that was
 * removed after its instance was reclaimed (lanternd killed while making it). Returns
 * how many instance directories went. Nothing on a pure v2 host. Blocks briefly. */
unsigned cgroup_node_sweep_unowned(const struct cgroup_node *n, bool (*owned)(void *arg, const char *name),
				   void *arg);
/* Lists instance directory names under the subtree. *names must be freed (each and all). */
int cgroup_node_list(const struct cgroup_node *n, char ***names, size_t *count);

/* cgroup v2 id of a directory (its inode number), or 0. */
uint64_t cgroup_id_of(const char *v2_dir);

#endif
