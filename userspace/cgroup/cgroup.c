/* cgroup.c: the node's cgroup subtree and the per-instance cgroups inside it: create,
 * limit, join, signal, destroy, read their counters, and sweep what is left (reset).
 *
 * An instance is a set of directories: the cgroup v2 directory (where BPF programs
 * attach and whose inode is the cgroup id the kernel reports) and, on hybrid hosts,
 * one v1 directory per limiting controller (memory, cpu, pids). On a pure v2 host the
 * v2 directory carries the limits itself. dirs[0] is always the v2 directory, and every
 * operation that adds a process does v2 first so egress policy applies before limits
 * could be the only thing holding it. */
#include "lantern/cgroup.h"
#include "lantern/spec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#define CG_MOUNT "/sys/fs/cgroup"
#define V2_HYBRID CG_MOUNT "/unified" /* the v2 hierarchy of a hybrid host */
#define CPU_PERIOD_US 100000ULL
#define CPU_MIN_QUOTA_US 1000ULL /* the kernel rejects smaller quotas */
#define INST_NAME_MAX sizeof(((struct cgroup_inst *)0)->name)

static const char *const v1_ctrls[] = { "memory", "cpu", "pids" };

static bool fs_is(const char *path, long magic)
{
	struct statfs sf;

	return statfs(path, &sf) == 0 && (long)sf.f_type == magic;
}

/* Instance names become one path component; anything else could escape the subtree
 * or collide with a cgroup interface file. */
static bool inst_name_valid(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len >= INST_NAME_MAX)
		return false;
	if (!strcmp(name, ".") || !strcmp(name, "..") || !strncmp(name, "cgroup.", 7))
		return false;
	for (const char *p = name; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

/* A root is one or more valid components separated by single slashes; returns the
 * number of components, or 0 when invalid. */
static unsigned root_depth(const char *root)
{
	char buf[128], *save = NULL;
	unsigned depth = 0;
	size_t len = strlen(root);

	if (len == 0 || len >= sizeof(buf) || root[0] == '/' || root[len - 1] == '/' ||
	    strstr(root, "//"))
		return 0;
	memcpy(buf, root, len + 1);
	for (char *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (!inst_name_valid(c))
			return 0;
		depth++;
	}
	return depth;
}

static int write_file(const char *dir, const char *file, const char *val)
{
	char path[PATH_MAX + 64];
	int fd, err = 0;
	size_t len = strlen(val);

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, val, len) != (ssize_t)len)
		err = errno ? -errno : -EIO;
	close(fd);
	return err;
}

/* Reads dir/file into buf, NUL-terminated. The counters read through this are a few
 * short lines; anything past cap - 1 bytes is cut. */
static int read_small(const char *dir, const char *file, char *buf, size_t cap)
{
	char path[PATH_MAX + 64];
	size_t n = 0;
	int fd, err = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (n < cap - 1) {
		ssize_t r = read(fd, buf + n, cap - 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			err = -errno;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	return err;
}

/* The value of the line "key N" in a flat-keyed file (cpu.stat, memory.events). */
static bool keyed_value(const char *buf, const char *key, uint64_t *v)
{
	size_t len = strlen(key);

	for (const char *p = buf; *p;) {
		const char *nl = strchr(p, '\n');

		if (!strncmp(p, key, len) && p[len] == ' ') {
			*v = strtoull(p + len + 1, NULL, 10);
			return true;
		}
		if (!nl)
			break;
		p = nl + 1;
	}
	return false;
}

static bool file_exists(const char *dir, const char *file)
{
	char path[PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	return access(path, F_OK) == 0;
}

/* Enables memory, cpu and pids for the children of dir, as far as dir offers them. */
static int enable_controllers(const char *dir, struct lerr *e)
{
	char path[PATH_MAX + 64], *avail = NULL;
	int err;

	snprintf(path, sizeof(path), "%s/cgroup.controllers", dir);
	err = util_read_file(path, &avail, NULL);
	if (err)
		return lerr_set(e, err, "cgroup: read %s: %s", path, strerror(-err));
	for (size_t i = 0; i < ARRAY_SIZE(v1_ctrls); i++) {
		char want[32];
		const char *p = avail;
		size_t n = strlen(v1_ctrls[i]);
		bool have = false;

		while ((p = strstr(p, v1_ctrls[i]))) {
			if ((p == avail || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\n' || !p[n])) {
				have = true;
				break;
			}
			p += n;
		}
		if (!have) {
			free(avail);
			return lerr_set(e, -ENOTSUP, "cgroup: %s: controller %s not available", dir,
					v1_ctrls[i]);
		}
		snprintf(want, sizeof(want), "+%s", v1_ctrls[i]);
		err = write_file(dir, "cgroup.subtree_control", want);
		if (err) {
			free(avail);
			return lerr_set(e, err, "cgroup: enable %s in %s/cgroup.subtree_control: %s",
					v1_ctrls[i], dir, strerror(-err));
		}
	}
	free(avail);
	return 0;
}

int cgroup_node_open(const char *root, struct cgroup_node *n, struct lerr *e)
{
	unsigned depth = root_depth(root);
	const char *v2mount;
	int err;

	memset(n, 0, sizeof(*n));
	if (!depth)
		return lerr_set(e, -EINVAL, "cgroup: root \"%s\": invalid name", root);
	if (fs_is(CG_MOUNT, CGROUP2_SUPER_MAGIC)) {
		n->layout = CGROUP_UNIFIED;
		v2mount = CG_MOUNT;
	} else if (fs_is(V2_HYBRID, CGROUP2_SUPER_MAGIC)) {
		n->layout = CGROUP_HYBRID;
		v2mount = V2_HYBRID;
	} else {
		return lerr_set(e, -ENOTSUP, "cgroup: no cgroup2 hierarchy at %s or %s/unified",
				CG_MOUNT, CG_MOUNT);
	}
	snprintf(n->root, sizeof(n->root), "%s", root);
	snprintf(n->v2, sizeof(n->v2), "%s/%s", v2mount, root);
	n->instance_level = depth + 1;

	if (n->layout == CGROUP_HYBRID) {
		char *dst[] = { n->v1_memory, n->v1_cpu, n->v1_pids };

		for (size_t i = 0; i < ARRAY_SIZE(v1_ctrls); i++) {
			char mnt[64];

			snprintf(mnt, sizeof(mnt), CG_MOUNT "/%s", v1_ctrls[i]);
			if (!fs_is(mnt, CGROUP_SUPER_MAGIC))
				return lerr_set(e, -ENOTSUP,
						"cgroup: hybrid host without the v1 %s controller at %s",
						v1_ctrls[i], mnt);
			snprintf(dst[i], PATH_MAX, "%s/%s", mnt, root);
		}
		err = util_mkdir_p(n->v2, 0755);
		if (err)
			return lerr_set(e, err, "cgroup: create %s: %s", n->v2, strerror(-err));
		for (size_t i = 0; i < ARRAY_SIZE(dst); i++) {
			err = util_mkdir_p(dst[i], 0755);
			if (err)
				return lerr_set(e, err, "cgroup: create %s: %s", dst[i], strerror(-err));
		}
		return 0;
	}

	/* Unified: each level from the mount down to the subtree must hand the
	 * controllers on to its children, or the instance gets no limit files. */
	err = util_mkdir_p(n->v2, 0755);
	if (err)
		return lerr_set(e, err, "cgroup: create %s: %s", n->v2, strerror(-err));
	err = enable_controllers(v2mount, e);
	for (const char *s = root; !err;) {
		const char *slash = strchr(s, '/');
		int len = slash ? (int)(slash - root) : (int)strlen(root);
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/%.*s", v2mount, len, root);
		err = enable_controllers(path, e);
		if (!slash)
			break;
		s = slash + 1;
	}
	return err;
}

int cgroup_node_remove(const struct cgroup_node *n, struct lerr *e)
{
	const char *dirs[] = { n->v2, n->v1_memory, n->v1_cpu, n->v1_pids };
	int ret = 0;

	/* Only the subtree's own directory goes: its parents, when the root has several
	 * components, may be shared with someone else. */
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		if (!dirs[i][0])
			continue;
		if (rmdir(dirs[i]) < 0 && errno != ENOENT && !ret)
			ret = lerr_set(e, errno, "cgroup: remove %s: %s", dirs[i], strerror(errno));
	}
	return ret;
}

/* dst = a/b; the root and names are short, so this only fails on a corrupt node. */
static int path_join(char *dst, const char *a, const char *b)
{
	return (size_t)snprintf(dst, PATH_MAX, "%s/%s", a, b) >= PATH_MAX ? -ENAMETOOLONG : 0;
}

/* Fills c->dirs for name under n, v2 first. */
static int inst_paths(const struct cgroup_node *n, const char *name, struct cgroup_inst *c)
{
	const char *parents[] = { n->v2, n->v1_memory, n->v1_cpu, n->v1_pids };
	int count = n->layout == CGROUP_HYBRID ? 4 : 1;

	memset(c, 0, sizeof(*c));
	snprintf(c->name, sizeof(c->name), "%s", name);
	for (int i = 0; i < count; i++)
		if (path_join(c->dirs[c->ndirs++], parents[i], name))
			return -ENAMETOOLONG;
	return 0;
}

static int set_limit(const char *dir, const char *file, const char *val, struct lerr *e)
{
	int err = write_file(dir, file, val);

	if (err)
		return lerr_set(e, err, "cgroup: set %s/%s to %s: %s", dir, file, val,
				strerror(-err));
	return 0;
}

static int apply_limits(const struct cgroup_node *n, const struct cgroup_inst *c,
			const struct spec_limits *lim, uint64_t pids_max, struct lerr *e)
{
	const char *mem_dir = c->dirs[0], *cpu_dir = c->dirs[0], *pids_dir = c->dirs[0];
	char val[64];
	int err;

	if (n->layout == CGROUP_HYBRID) {
		mem_dir = c->dirs[1];
		cpu_dir = c->dirs[2];
		pids_dir = c->dirs[3];
	}
	if (lim && lim->memory_bytes) {
		snprintf(val, sizeof(val), "%llu", (unsigned long long)lim->memory_bytes);
		err = set_limit(mem_dir, n->layout == CGROUP_HYBRID ? "memory.limit_in_bytes"
								   : "memory.max", val, e);
		if (err)
			return err;
	}
	if (lim && lim->vcpu_milli) {
		/* 1000 millicores = one full period of CPU time per period. */
		unsigned long long quota;

		if (lim->vcpu_milli > UINT64_MAX / CPU_PERIOD_US)
			return lerr_set(e, -ERANGE, "cgroup: %s: vcpu %llum out of range", cpu_dir,
					(unsigned long long)lim->vcpu_milli);
		quota = lim->vcpu_milli * CPU_PERIOD_US / 1000;

		if (quota < CPU_MIN_QUOTA_US)
			quota = CPU_MIN_QUOTA_US;
		if (n->layout == CGROUP_HYBRID) {
			snprintf(val, sizeof(val), "%llu", CPU_PERIOD_US);
			err = set_limit(cpu_dir, "cpu.cfs_period_us", val, e);
			if (err)
				return err;
			snprintf(val, sizeof(val), "%llu", quota);
			err = set_limit(cpu_dir, "cpu.cfs_quota_us", val, e);
		} else {
			snprintf(val, sizeof(val), "%llu %llu", quota, CPU_PERIOD_US);
			err = set_limit(cpu_dir, "cpu.max", val, e);
		}
		if (err)
			return err;
	}
	if (pids_max) {
		snprintf(val, sizeof(val), "%llu", (unsigned long long)pids_max);
		err = set_limit(pids_dir, "pids.max", val, e);
		if (err)
			return err;
	}
	return 0;
}

int cgroup_inst_create(const struct cgroup_node *n, const char *name,
		       const struct spec_limits *lim, uint64_t pids_max,
		       struct cgroup_inst *out, struct lerr *e)
{
	struct cgroup_inst c;
	int made = 0, err = 0;

	if (!inst_name_valid(name))
		return lerr_set(e, -EINVAL, "cgroup: instance \"%s\": invalid name", name);
	if (inst_paths(n, name, &c))
		return lerr_set(e, -ENAMETOOLONG, "cgroup: instance \"%s\": path too long", name);
	for (; made < c.ndirs; made++) {
		if (mkdir(c.dirs[made], 0755) < 0) {
			err = lerr_set(e, errno, "cgroup: create %s: %s", c.dirs[made],
				       strerror(errno));
			goto undo;
		}
	}
	err = apply_limits(n, &c, lim, pids_max, e);
	if (err)
		goto undo;
	c.id = cgroup_id_of(c.dirs[0]);
	if (!c.id) {
		err = lerr_set(e, -EIO, "cgroup: %s: cannot read its cgroup id", c.dirs[0]);
		goto undo;
	}
	*out = c;
	return 0;

undo:
	/* Nothing has joined yet, so the directories are empty and rmdir suffices. */
	while (made-- > 0)
		rmdir(c.dirs[made]);
	return err;
}

int cgroup_inst_open(const struct cgroup_node *n, const char *name, struct cgroup_inst *out,
		     struct lerr *e)
{
	struct cgroup_inst c;
	struct stat st;

	if (!inst_name_valid(name))
		return lerr_set(e, -EINVAL, "cgroup: instance \"%s\": invalid name", name);
	if (inst_paths(n, name, &c))
		return lerr_set(e, -ENAMETOOLONG, "cgroup: instance \"%s\": path too long", name);
	for (int i = 0; i < c.ndirs; i++) {
		if (stat(c.dirs[i], &st) < 0 || !S_ISDIR(st.st_mode))
			return lerr_set(e, errno ? errno : ENOTDIR, "cgroup: open %s: %s",
					c.dirs[i], strerror(errno ? errno : ENOTDIR));
	}
	c.id = cgroup_id_of(c.dirs[0]);
	*out = c;
	return 0;
}

int cgroup_join(const char *dir, pid_t pid, struct lerr *e)
{
	char val[32];
	int err;

	snprintf(val, sizeof(val), "%d", (int)pid);
	err = write_file(dir, "cgroup.procs", val);
	if (err)
		return lerr_set(e, err, "cgroup: attach %s to %s: %s", pid ? val : "self", dir,
				strerror(-err));
	return 0;
}

int cgroup_inst_attach(const struct cgroup_inst *c, pid_t pid, struct lerr *e)
{
	for (int i = 0; i < c->ndirs; i++) {
		int err = cgroup_join(c->dirs[i], pid, e);
		if (err)
			return err;
	}
	return 0;
}

/* Appends the pids in dir/cgroup.procs, and in every sub-cgroup the workload may have
 * made, to *pids (deduplicated). */
static int collect_pids(const char *dir, pid_t **pids, size_t *n, size_t *cap)
{
	char path[PATH_MAX + 64], *buf = NULL, *save = NULL;
	DIR *d;
	struct dirent *de;
	int err;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	err = util_read_file(path, &buf, NULL);
	if (err)
		return err == -ENOENT ? 0 : err;
	for (char *t = strtok_r(buf, "\n", &save); t; t = strtok_r(NULL, "\n", &save)) {
		pid_t p = (pid_t)atoi(t);
		bool seen = false;

		if (p <= 0)
			continue;
		for (size_t i = 0; i < *n && !seen; i++)
			seen = (*pids)[i] == p;
		if (seen)
			continue;
		if (*n == *cap) {
			size_t nc = *cap ? *cap * 2 : 64;
			pid_t *np = realloc(*pids, nc * sizeof(*np));
			if (!np) {
				free(buf);
				return -ENOMEM;
			}
			*pids = np;
			*cap = nc;
		}
		(*pids)[(*n)++] = p;
	}
	free(buf);

	d = opendir(dir);
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		err = collect_pids(path, pids, n, cap);
		if (err)
			break;
	}
	closedir(d);
	return err;
}

/* CPU seconds from dir: the v2 counter (microseconds) if dir has it, else the v1
 * cpuacct one (nanoseconds). */
static bool dir_cpu_seconds(const char *dir, double *out)
{
	char buf[1024];
	uint64_t v;

	if (read_small(dir, "cpu.stat", buf, sizeof(buf)) == 0 && keyed_value(buf, "usage_usec", &v)) {
		*out = (double)v / 1e6;
		return true;
	}
	if (read_small(dir, "cpuacct.usage", buf, sizeof(buf)) == 0) {
		*out = (double)strtoull(buf, NULL, 10) / 1e9;
		return true;
	}
	return false;
}

double cgroup_inst_cpu_seconds(const struct cgroup_inst *c)
{
	double v = 0;

	for (int i = 0; i < c->ndirs; i++)
		if (dir_cpu_seconds(c->dirs[i], &v))
			break;
	return v;
}

int cgroup_inst_stats(const struct cgroup_inst *c, struct cgroup_stats *out, struct lerr *e)
{
	static const char *const mem_files[] = { "memory.current", "memory.usage_in_bytes" };
	static const char *const oom_files[] = { "memory.events", "memory.oom_control" };
	bool have_cpu = false, have_mem = false;
	char buf[1024];
	struct stat st;

	memset(out, 0, sizeof(*out));
	if (stat(c->dirs[0], &st) < 0)
		return lerr_set(e, errno, "cgroup: stats of %s: %s", c->dirs[0], strerror(errno));
	/* Each counter lives in one directory of the set, which one depends on the layout
	 * (hybrid: CPU time in v2, memory in the v1 memory directory); the first that has
	 * it is taken. OOM kills are counted by whichever memory controller is bound. */
	for (int i = 0; i < c->ndirs; i++) {
		if (!have_cpu)
			have_cpu = dir_cpu_seconds(c->dirs[i], &out->cpu_seconds);
		for (size_t k = 0; k < ARRAY_SIZE(mem_files) && !have_mem; k++) {
			if (read_small(c->dirs[i], mem_files[k], buf, sizeof(buf)) == 0) {
				out->memory_bytes = strtoull(buf, NULL, 10);
				have_mem = true;
			}
		}
		for (size_t k = 0; k < ARRAY_SIZE(oom_files); k++) {
			uint64_t v;

			if (read_small(c->dirs[i], oom_files[k], buf, sizeof(buf)) == 0 &&
			    keyed_value(buf, "oom_kill", &v))
				out->oom_kills += v;
		}
	}
	return 0;
}

bool cgroup_inst_populated(const struct cgroup_inst *c)
{
	char path[PATH_MAX + 64], *buf = NULL;
	pid_t *pids = NULL;
	size_t n = 0, cap = 0;

	snprintf(path, sizeof(path), "%s/cgroup.events", c->dirs[0]);
	if (util_read_file(path, &buf, NULL) == 0) {
		bool pop = strstr(buf, "populated 1") != NULL;
		free(buf);
		if (pop)
			return true;
	}
	/* A process could have left the v2 directory (it may move itself if privileged)
	 * and still sit in a v1 one; the instance is not empty until all are. */
	for (int i = 0; i < c->ndirs; i++)
		collect_pids(c->dirs[i], &pids, &n, &cap);
	free(pids);
	return n > 0;
}

int cgroup_inst_signal(const struct cgroup_inst *c, int sig)
{
	pid_t *pids = NULL;
	size_t n = 0, cap = 0;
	int count = 0, first = 0, err;

	err = collect_pids(c->dirs[0], &pids, &n, &cap);
	if (err)
		return err;
	/* cgroup.kill also reaches processes forked while we would iterate. What is
	 * left to do by hand is anything that sits only in a v1 directory. */
	if (sig == SIGKILL && file_exists(c->dirs[0], "cgroup.kill") &&
	    write_file(c->dirs[0], "cgroup.kill", "1") == 0) {
		count = (int)n;
		first = (int)n;
	}
	for (int i = 1; i < c->ndirs; i++)
		collect_pids(c->dirs[i], &pids, &n, &cap);
	for (size_t i = (size_t)first; i < n; i++)
		if (kill(pids[i], sig) == 0)
			count++;
	free(pids);
	return count;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* How deep below an instance directory the removal goes: containers nest a few levels
 * (pod, container, what a workload makes itself); anything deeper is left, and its
 * parents with it (rmdir fails on them). */
#define RMDIR_MAX_DEPTH 16

/* Removes dir (name under the directory open as parent) and any sub-cgroups made in it,
 * deepest first: directories only (a cgroup's files are the kernel's; rmdir takes them),
 * never through a symlink (cgroupfs has none, but a misconfigured mount could), bounded. */
static int rmdir_tree_at(int parent, const char *name)
{
	return util_rm_tree_at(parent, name, RMDIR_MAX_DEPTH, UTIL_RM_DIRS_ONLY);
}

/* rmdir_tree_at for a path (lanternd's own, below a cgroup mount). */
static int rmdir_tree(const char *dir)
{
	char parent[PATH_MAX];
	const char *slash = strrchr(dir, '/');
	int fd, err;

	if (!slash || slash == dir || (size_t)(slash - dir) >= sizeof(parent))
		return -EINVAL;
	snprintf(parent, sizeof(parent), "%.*s", (int)(slash - dir), dir);
	if ((fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return errno == ENOENT ? 0 : -errno;
	err = rmdir_tree_at(fd, slash + 1);
	close(fd);
	return err;
}

/* The cgroup hierarchies mounted here, from /proc/self/mountinfo (cgroup and cgroup2
 * mounts), each once (a hierarchy mounted twice has one device number): cb is called
 * with its mount point and whether it is v2. Stops early when cb returns false. */
static void for_each_hierarchy(bool (*cb)(void *arg, const char *mnt, bool v2), void *arg)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096], devs[64][16];
	size_t ndevs = 0;

	while (f && fgets(line, sizeof(line), f)) {
		char dev[16], root[PATH_MAX], mnt[PATH_MAX], fstype[32], *sep, out[PATH_MAX];
		bool seen = false;
		size_t o = 0;

		/* id parent major:minor root mount-point options [optional...] - fstype ... */
		sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*s %*s %15s %4095s %4095s", dev, root, mnt) != 3 ||
		    sscanf(sep + 3, "%31s", fstype) != 1)
			continue;
		if (strcmp(fstype, "cgroup") && strcmp(fstype, "cgroup2"))
			continue;
		for (size_t i = 0; i < ndevs && !seen; i++)
			seen = !strcmp(devs[i], dev);
		if (seen || ndevs == ARRAY_SIZE(devs))
			continue;
		snprintf(devs[ndevs++], sizeof(devs[0]), "%s", dev);
		/* the kernel escapes space, tab, newline and backslash as \ooo */
		for (const char *p = mnt; *p && o < sizeof(out) - 1; p++) {
			if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
			    p[3] >= '0' && p[3] <= '7') {
				out[o++] = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
				p += 3;
			} else {
				out[o++] = *p;
			}
		}
		out[o] = '\0';
		if (!cb(arg, out, !strcmp(fstype, "cgroup2")))
			break;
	}
	if (f)
		fclose(f);
}

static bool sweep_once(const char *rel);

int cgroup_inst_destroy(const struct cgroup_inst *c, int timeout_ms, struct lerr *e)
{
	uint64_t deadline = util_now_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * 1000000ULL;
	int ret = 0;

	while (cgroup_inst_populated(c)) {
		if (util_now_ns(CLOCK_MONOTONIC) > deadline)
			return lerr_set(e, -EBUSY,
					"cgroup: destroy %s: processes still present after %d ms",
					c->dirs[0], timeout_ms);
		cgroup_inst_signal(c, SIGKILL);
		sleep_ms(10);
	}
	/* A killed task can keep the directory busy for a moment after it leaves the
	 * process list, while the kernel finishes tearing it down. */
	for (int i = 0; i < c->ndirs; i++) {
		int err;

		for (int tries = 0;; tries++) {
			err = rmdir_tree(c->dirs[i]);
			if (err != -EBUSY || tries >= 100)
				break;
			sleep_ms(10);
		}
		if (err && !ret)
			ret = lerr_set(e, err, "cgroup: remove %s: %s", c->dirs[i], strerror(-err));
	}
	/* on a hybrid host an OCI runtime may have made the instance's directory in the
	 * hierarchies lanternd does not manage (cpuset, devices, freezer, ...): empty once
	 * the processes are gone, they go too (one pass; cgroup_inst_sweep retries) */
	if (!ret && c->ndirs > 1 && !strncmp(c->dirs[0], V2_HYBRID "/", sizeof(V2_HYBRID)))
		sweep_once(c->dirs[0] + sizeof(V2_HYBRID));
	return ret;
}

struct node_sweep {
	const char *rel;
	char first[PATH_MAX];
	int failed, first_err;
};

static bool node_sweep_one(void *arg, const char *mnt, bool v2)
{
	struct node_sweep *ns = arg;
	char path[PATH_MAX];
	int err;

	if (path_join(path, mnt, ns->rel))
		return true;
	err = rmdir_tree(path);
	if (err && !ns->failed++) {
		ns->first_err = err;
		snprintf(ns->first, sizeof(ns->first), "%s", path);
	}
	return true;
}

int cgroup_node_sweep(const struct cgroup_node *n, struct lerr *e)
{
	struct node_sweep ns = { .rel = n->root };

	/* On a unified host the subtree is one directory. On a hybrid one every cgroup
	 * hierarchy mounted (/proc/self/mountinfo) may hold it; only the subtree's path
	 * in each is looked into, so no other cgroup's directory is ever touched. */
	if (n->layout == CGROUP_UNIFIED) {
		int err = rmdir_tree(n->v2);

		return err ? lerr_set(e, err, "cgroup: remove %s: %s", n->v2, strerror(-err)) : 0;
	}
	for_each_hierarchy(node_sweep_one, &ns);
	if (ns.failed > 1)
		return lerr_set(e, ns.first_err, "cgroup: remove %s: %s (and %d more directories)",
				ns.first, strerror(-ns.first_err), ns.failed - 1);
	if (ns.failed)
		return lerr_set(e, ns.first_err, "cgroup: remove %s: %s", ns.first, strerror(-ns.first_err));
	return 0;
}

struct inst_sweep {
	const char *rel;
	bool clean;
};

static bool inst_sweep_one(void *arg, const char *mnt, bool v2)
{
	struct inst_sweep *is = arg;
	char path[PATH_MAX];
	int err;

	if (!path_join(path, mnt, is->rel) && (err = rmdir_tree(path)) < 0 &&
	    (err == -EBUSY || err == -ENOTEMPTY))
		is->clean = false;
	return true;
}

/* One pass of cgroup_inst_sweep: true when nothing of rel is left in any hierarchy. */
static bool sweep_once(const char *rel)
{
	struct inst_sweep is = { .rel = rel, .clean = true };

	for_each_hierarchy(inst_sweep_one, &is);
	return is.clean;
}

void cgroup_inst_sweep(const struct cgroup_node *n, const char *name)
{
	char rel[PATH_MAX];

	if (!inst_name_valid(name) || (size_t)snprintf(rel, sizeof(rel), "%s/%s", n->root, name) >= sizeof(rel))
		return;
	if (n->layout == CGROUP_UNIFIED)
		return;
	/* a container's directory the runtime removes itself may still be going (its last
	 * task exiting, its runtime's delete finishing): its parent is tried again, for
	 * a second at most */
	for (int tries = 0; !sweep_once(rel) && tries < 50; tries++)
		sleep_ms(20);
}

struct unowned_sweep {
	const struct cgroup_node *n;
	bool (*owned)(void *arg, const char *name);
	void *arg;
	unsigned removed;
};

static bool unowned_sweep_one(void *arg, const char *mnt, bool v2)
{
	struct unowned_sweep *us = arg;
	char path[PATH_MAX];
	struct dirent *de;
	int fd;
	DIR *d;

	/* the v2 directory of an instance carries its policy: the run module's reclaim
	 * removes it, with what the subscribers keep for it */
	if (v2 || path_join(path, mnt, us->n->root) ||
	    (fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return true;
	if (!(d = fdopendir(fd))) {
		close(fd);
		return true;
	}
	while ((de = readdir(d))) {
		/* instance names only (never cgroup.* files or anything else) */
		if (de->d_type != DT_DIR || !inst_name_valid(de->d_name) || us->owned(us->arg, de->d_name))
			continue;
		if (rmdir_tree_at(dirfd(d), de->d_name) == 0) {
			log_info("cgroup: removed %s/%s: no instance owns it", path, de->d_name);
			us->removed++;
		}
	}
	closedir(d);
	return true;
}

unsigned cgroup_node_sweep_unowned(const struct cgroup_node *n, bool (*owned)(void *arg, const char *name),
				   void *arg)
{
	struct unowned_sweep us = { .n = n, .owned = owned, .arg = arg };

	if (!n || n->layout == CGROUP_UNIFIED)
		return 0;
	for_each_hierarchy(unowned_sweep_one, &us);
	return us.removed;
}

int cgroup_node_list(const struct cgroup_node *n, char ***names, size_t *count)
{
	DIR *d = opendir(n->v2);
	struct dirent *de;
	char **v = NULL;
	size_t cnt = 0, cap = 0;

	*names = NULL;
	*count = 0;
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		if (cnt == cap) {
			size_t nc = cap ? cap * 2 : 16;
			char **nv = realloc(v, nc * sizeof(*nv));
			if (!nv)
				goto oom;
			v = nv;
			cap = nc;
		}
		if (!(v[cnt] = strdup(de->d_name)))
			goto oom;
		cnt++;
	}
	closedir(d);
	*names = v;
	*count = cnt;
	return 0;
oom:
	closedir(d);
	for (size_t i = 0; i < cnt; i++)
		free(v[i]);
	free(v);
	return -ENOMEM;
}

uint64_t cgroup_id_of(const char *v2_dir)
{
	struct stat st;

	if (stat(v2_dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return 0;
	return (uint64_t)st.st_ino;
}
