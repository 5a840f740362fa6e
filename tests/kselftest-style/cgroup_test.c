/* cgroup_test: the cgroup module against the real kernel, in a private subtree
 * "lantern-test-cg-PID": limits land in the files the kernel reads, the memory and pids
 * controllers really bound a workload, the stats follow what members did (CPU time,
 * memory held, OOM kills), signal/destroy leave nothing, a failed create cleans up
 * after itself, and the sweep (lantern reset) clears the subtree in every hierarchy,
 * the ones only an OCI runtime writes to included. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lantern/cgroup.h"
#include "lantern/spec.h"
#include "tap.h"
#include "testlib.h"

#define NPOINTS 22

static struct cgroup_node node;
static bool node_ok;

/* Contents of dir/file with trailing whitespace removed, in a static buffer. */
static const char *readf(const char *dir, const char *file)
{
	static char out[4096];
	char path[PATH_MAX + 64], *buf = NULL;
	size_t len;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	if (util_read_file(path, &buf, &len) < 0)
		return "";
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
		buf[--len] = '\0';
	snprintf(out, sizeof(out), "%s", buf);
	free(buf);
	return out;
}

static bool procs_has(const char *dir, pid_t pid)
{
	char want[32];
	const char *p = readf(dir, "cgroup.procs");

	snprintf(want, sizeof(want), "%d", (int)pid);
	for (const char *s = p; (s = strstr(s, want)); s++)
		if ((s == p || s[-1] == '\n') && (s[strlen(want)] == '\n' || !s[strlen(want)]))
			return true;
	return false;
}

static bool gone(const struct cgroup_inst *c)
{
	for (int i = 0; i < c->ndirs; i++)
		if (access(c->dirs[i], F_OK) == 0)
			return false;
	return true;
}

/* Removes whatever a failed point left in the subtree, then the subtree. */
static void cleanup(void)
{
	char **names;
	size_t n;
	struct lerr e;

	if (!node_ok)
		return;
	if (cgroup_node_list(&node, &names, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			struct cgroup_inst c;
			if (cgroup_inst_open(&node, names[i], &c, &e) == 0)
				cgroup_inst_destroy(&c, 2000, &e);
			free(names[i]);
		}
		free(names);
	}
	cgroup_node_remove(&node, &e);
}

static pid_t fork_sleeper(void)
{
	pid_t pid = fork();

	if (pid == 0) {
		pause();
		_exit(0);
	}
	return pid;
}

static bool test_limits(void)
{
	struct spec_limits lim = { .vcpu_milli = 500, .memory_bytes = 64ULL << 20 };
	struct cgroup_inst c;
	struct lerr e = { "" };
	bool ok;
	int err = cgroup_inst_create(&node, "i-limits", &lim, 32, &c, &e);

	if (!tap_ok(err == 0, "create instance with vcpu 500m, memory 64Mi, pids 32")) {
		tap_diag("%s", e.msg);
		tap_ok(false, "limit files hold the values");
		tap_ok(false, "cgroup id is the v2 directory's inode and its file handle");
		return false;
	}
	if (node.layout == CGROUP_HYBRID) {
		ok = c.ndirs == 4 && !strcmp(readf(c.dirs[1], "memory.limit_in_bytes"), "67108864") &&
		     !strcmp(readf(c.dirs[2], "cpu.cfs_period_us"), "100000") &&
		     !strcmp(readf(c.dirs[2], "cpu.cfs_quota_us"), "50000") &&
		     !strcmp(readf(c.dirs[3], "pids.max"), "32");
	} else {
		ok = c.ndirs == 1 && !strcmp(readf(c.dirs[0], "memory.max"), "67108864") &&
		     !strcmp(readf(c.dirs[0], "cpu.max"), "50000 100000") &&
		     !strcmp(readf(c.dirs[0], "pids.max"), "32");
	}
	tap_ok(ok, "limit files hold the values");

	{
		struct stat st;
		struct {
			struct file_handle fh;
			uint64_t id;
		} h = { .fh.handle_bytes = sizeof(uint64_t) };
		int mnt;

		ok = stat(c.dirs[0], &st) == 0 && c.id == (uint64_t)st.st_ino && c.id != 0 &&
		     cgroup_id_of(c.dirs[0]) == c.id &&
		     name_to_handle_at(AT_FDCWD, c.dirs[0], &h.fh, &mnt, 0) == 0 && h.id == c.id;
		tap_ok(ok, "cgroup id is the v2 directory's inode and its file handle (%llu)",
		       (unsigned long long)c.id);
	}
	cgroup_inst_destroy(&c, 2000, &e);
	return true;
}

static void test_attach_signal_destroy(void)
{
	struct cgroup_inst c, o;
	struct lerr e = { "" };
	pid_t pid;
	int status = 0, sig, n;
	bool in_all = true;

	if (cgroup_inst_create(&node, "i-attach", NULL, 0, &c, &e) < 0) {
		tap_diag("%s", e.msg);
		for (int i = 0; i < 4; i++)
			tap_ok(false, "attach/signal/destroy (instance not created)");
		return;
	}
	pid = fork_sleeper();
	if (cgroup_inst_attach(&c, pid, &e) < 0)
		tap_diag("%s", e.msg);
	for (int i = 0; i < c.ndirs; i++)
		in_all = in_all && procs_has(c.dirs[i], pid);
	tap_ok(in_all && cgroup_inst_populated(&c),
	       "attached sleeper is in every directory's cgroup.procs and populated is true");

	n = cgroup_inst_open(&node, "i-attach", &o, &e);
	tap_ok(n == 0 && o.id == c.id && o.ndirs == c.ndirs && !strcmp(o.dirs[0], c.dirs[0]),
	       "open (adoption) finds the same instance");

	sig = cgroup_inst_signal(&c, SIGKILL);
	waitpid(pid, &status, 0);
	tap_ok(sig >= 1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL &&
		       !cgroup_inst_populated(&c),
	       "signal SIGKILL reaches the member (%d signalled) and empties the instance", sig);

	pid = fork_sleeper();
	cgroup_inst_attach(&c, pid, &e);
	n = cgroup_inst_destroy(&c, 2000, &e);
	waitpid(pid, &status, 0);
	if (n)
		tap_diag("%s", e.msg);
	tap_ok(n == 0 && gone(&c) && WIFSIGNALED(status),
	       "destroy kills a live member and leaves no directory");
}

/* In a child: joins c, then burns CPU until the process has used `seconds` of it. */
static void child_busy(const struct cgroup_inst *c, double seconds)
{
	struct lerr ce;
	struct timespec ts;

	if (cgroup_inst_attach(c, getpid(), &ce) < 0)
		_exit(2);
	do {
		for (volatile int i = 0; i < 100000; i++)
			;
		clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	} while ((double)ts.tv_sec + (double)ts.tv_nsec / 1e9 < seconds);
	_exit(0);
}

static void test_stats(void)
{
	struct cgroup_inst c;
	struct cgroup_stats before, after;
	struct lerr e = { "" };
	int pfd[2], status = 0, err;
	char ready = 0;
	pid_t pid;

	if (cgroup_inst_create(&node, "i-stats", NULL, 0, &c, &e) < 0 || pipe(pfd) < 0) {
		tap_diag("%s", e.msg);
		for (int i = 0; i < 3; i++)
			tap_ok(false, "stats (instance not created)");
		return;
	}
	err = cgroup_inst_stats(&c, &before, &e);
	pid = fork();
	if (pid == 0)
		child_busy(&c, 0.3);
	waitpid(pid, &status, 0);
	if (err == 0)
		err = cgroup_inst_stats(&c, &after, &e);
	if (err)
		tap_diag("%s", e.msg);
	tap_ok(err == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
		       after.cpu_seconds - before.cpu_seconds >= 0.25 &&
		       after.cpu_seconds - before.cpu_seconds < 2.0,
	       "CPU seconds grow by what a member burned (0.3 s): %.3f -> %.3f",
	       before.cpu_seconds, after.cpu_seconds);

	/* 16 MiB touched page by page, so it is charged to the instance, and held. */
	pid = fork();
	if (pid == 0) {
		struct lerr ce;
		char *p;

		close(pfd[0]);
		if (cgroup_inst_attach(&c, getpid(), &ce) < 0)
			_exit(2);
		p = mmap(NULL, 16 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			_exit(3);
		memset(p, 0x5a, 16 << 20);
		if (write(pfd[1], "r", 1) != 1)
			_exit(4);
		pause();
		_exit(0);
	}
	close(pfd[1]);
	err = read(pfd[0], &ready, 1) == 1 ? cgroup_inst_stats(&c, &after, &e) : -EIO;
	close(pfd[0]);
	tap_ok(err == 0 && after.memory_bytes >= 16ULL << 20 && after.memory_bytes < 256ULL << 20,
	       "memory bytes count what a member holds (16 MiB): %llu",
	       (unsigned long long)after.memory_bytes);
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);

	cgroup_inst_destroy(&c, 2000, &e);
	err = cgroup_inst_stats(&c, &after, &e);
	tap_ok(err == -ENOENT && strstr(e.msg, c.dirs[0]) && after.cpu_seconds == 0 &&
		       after.memory_bytes == 0,
	       "stats of a destroyed instance fail naming it: %s", e.msg);
}

static void test_oom(void)
{
	struct spec_limits lim = { .memory_bytes = 32ULL << 20 };
	struct cgroup_inst c;
	struct cgroup_stats st = { 0 };
	struct lerr e = { "" };
	int status = 0, err;
	pid_t pid, bystander;
	bool counted;

	if (cgroup_inst_create(&node, "i-oom", &lim, 0, &c, &e) < 0) {
		tap_diag("%s", e.msg);
		tap_ok(false, "memory hog in a 32Mi instance is OOM-killed");
		tap_ok(false, "OOM kill counted once, the other member survives");
		return;
	}
	/* A small member beside the hog: the OOM killer takes the biggest, only it. */
	bystander = fork_sleeper();
	if (cgroup_inst_attach(&c, bystander, &e) < 0)
		tap_diag("%s", e.msg);
	counted = cgroup_inst_stats(&c, &st, &e) == 0 && st.oom_kills == 0;
	pid = fork();
	if (pid == 0) {
		struct lerr ce;

		if (cgroup_inst_attach(&c, getpid(), &ce) < 0)
			_exit(2);
		/* Touch every page so the memory is really charged. */
		for (int i = 0; i < 512; i++) {
			char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (p == MAP_FAILED)
				_exit(3);
			memset(p, 0x5a, 1 << 20);
		}
		_exit(0);
	}
	waitpid(pid, &status, 0);
	tap_ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
	       "memory hog in a 32Mi instance is OOM-killed (status 0x%x)", status);
	err = cgroup_inst_stats(&c, &st, &e);
	if (err)
		tap_diag("%s", e.msg);
	tap_ok(counted && err == 0 && st.oom_kills == 1 && waitpid(bystander, &status, WNOHANG) == 0 &&
		       procs_has(c.dirs[0], bystander),
	       "OOM kill counted once (0 before, %llu after), the other member survives",
	       (unsigned long long)st.oom_kills);
	cgroup_inst_destroy(&c, 2000, &e);
	waitpid(bystander, &status, 0);
}

static void test_fork_bomb(void)
{
	struct cgroup_inst c;
	struct lerr e = { "" };
	int pfd[2], status = 0, res[2] = { -1, -1 };
	pid_t pid;

	if (cgroup_inst_create(&node, "i-pids", NULL, 32, &c, &e) < 0 || pipe(pfd) < 0) {
		tap_diag("%s", e.msg);
		tap_ok(false, "fork bomb bounded by pids.max");
		return;
	}
	pid = fork();
	if (pid == 0) {
		struct lerr ce;
		int forks = 0;

		close(pfd[0]);
		if (cgroup_inst_attach(&c, getpid(), &ce) < 0)
			_exit(2);
		for (;;) {
			pid_t k = fork();
			if (k == 0) {
				pause();
				_exit(0);
			}
			if (k < 0)
				break;
			if (++forks > 1000)
				break;
		}
		res[0] = forks;
		res[1] = errno;
		if (write(pfd[1], res, sizeof(res)) < 0)
			_exit(4);
		pause();
		_exit(0);
	}
	close(pfd[1]);
	if (read(pfd[0], res, sizeof(res)) != sizeof(res))
		res[0] = -1;
	close(pfd[0]);
	tap_ok(res[0] == 31 && res[1] == EAGAIN,
	       "fork bomb stops at pids.max 32: %d forks, then %s", res[0],
	       res[1] >= 0 ? strerror(res[1]) : "?");
	cgroup_inst_destroy(&c, 5000, &e);
	waitpid(pid, &status, 0);
}

static void test_list_and_failures(void)
{
	struct cgroup_inst a, b, f;
	struct lerr e = { "" };
	struct spec_limits huge = { .vcpu_milli = 1ULL << 40 };
	char **names = NULL;
	size_t n = 0;
	bool seen_a = false, seen_b = false;
	int err;

	cgroup_inst_create(&node, "i-list-a", NULL, 0, &a, &e);
	cgroup_inst_create(&node, "i-list-b", NULL, 0, &b, &e);
	if (cgroup_node_list(&node, &names, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			seen_a = seen_a || !strcmp(names[i], "i-list-a");
			seen_b = seen_b || !strcmp(names[i], "i-list-b");
			free(names[i]);
		}
		free(names);
	}
	tap_ok(seen_a && seen_b && n == 2, "list shows the instances (%zu)", n);
	cgroup_inst_destroy(&a, 2000, &e);
	cgroup_inst_destroy(&b, 2000, &e);

	err = cgroup_inst_create(&node, "../escape", NULL, 0, &f, &e);
	tap_ok(err == -EINVAL && strstr(e.msg, "../escape") && cgroup_node_list(&node, &names, &n) == 0 &&
		       n == 0,
	       "invalid name is refused and creates nothing: %s", e.msg);
	free(names);

	/* A limit the kernel rejects fails after the directories exist: they must go. */
	err = cgroup_inst_create(&node, "i-badlimit", &huge, 0, &f, &e);
	{
		char p[PATH_MAX];
		bool left = false;
		const char *parents[] = { node.v2, node.v1_memory, node.v1_cpu, node.v1_pids };

		for (size_t i = 0; i < ARRAY_SIZE(parents); i++) {
			if (!parents[i][0])
				continue;
			snprintf(p, sizeof(p), "%.4000s/i-badlimit", parents[i]);
			left = left || access(p, F_OK) == 0;
		}
		tap_ok(err < 0 && !left, "limit rejected by the kernel leaves nothing behind: %s",
		       e.msg);
	}
}

/* Counts the hierarchies under /sys/fs/cgroup (and, unified, the mount itself) that
 * still hold a directory named root; names the first in first. */
static int left_behind(const char *root, char *first, size_t len)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d = opendir("/sys/fs/cgroup");
	int n = 0;

	snprintf(path, sizeof(path), "/sys/fs/cgroup/%s", root);
	if (access(path, F_OK) == 0 && !n++)
		snprintf(first, len, "%s", path);
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/fs/cgroup/%.200s/%s", de->d_name, root);
		if (access(path, F_OK) == 0 && !n++)
			snprintf(first, len, "%s", path);
	}
	if (d)
		closedir(d);
	return n;
}

/* A subtree of its own: the sweep removes the subtree itself. */
static void test_sweep(void)
{
	struct cgroup_node sw;
	struct cgroup_inst c;
	struct lerr e = { "" };
	char root[64], path[PATH_MAX], left[PATH_MAX] = "";
	struct dirent *de;
	DIR *d;
	int err, made = 0, status = 0;
	pid_t pid;

	snprintf(root, sizeof(root), "lantern-test-cg-%d-sweep", (int)getpid());
	if (cgroup_node_open(root, &sw, &e) < 0 || cgroup_inst_create(&sw, "i-sweep", NULL, 0, &c, &e) < 0) {
		tap_diag("%s", e.msg);
		tap_ok(false, "sweep (no subtree)");
		tap_ok(false, "sweep (no subtree)");
		return;
	}
	/* What a workload and a runtime leave: a sub-cgroup in the instance, and on a
	 * hybrid host the container's directory in every hierarchy lanternd leaves alone. */
	snprintf(path, sizeof(path), "%s/workload", c.dirs[0]);
	made += mkdir(path, 0755) == 0;
	d = sw.layout == CGROUP_HYBRID ? opendir("/sys/fs/cgroup") : NULL;
	while (d && (de = readdir(d))) {
		snprintf(path, sizeof(path), "/sys/fs/cgroup/%.200s/%s", de->d_name, root);
		if (de->d_name[0] == '.' || access(path, F_OK) == 0)
			continue;
		snprintf(path, sizeof(path), "/sys/fs/cgroup/%.200s/%s/i-sweep/ctr", de->d_name, root);
		made += util_mkdir_p(path, 0755) == 0;
	}
	if (d)
		closedir(d);
	err = cgroup_node_sweep(&sw, &e);
	if (err)
		tap_diag("%s", e.msg);
	tap_ok(err == 0 && made >= 1 && left_behind(root, left, sizeof(left)) == 0,
	       "sweep removes the subtree in every hierarchy with what was made below it (%d extra dirs)%s%s",
	       made, left[0] ? ", left: " : "", left);

	/* a member keeps its directories: the sweep reports them and removes the rest */
	err = -1;
	pid = -1;
	if (cgroup_node_open(root, &sw, &e) == 0 && cgroup_inst_create(&sw, "i-busy", NULL, 0, &c, &e) == 0) {
		pid = fork_sleeper();
		if (cgroup_inst_attach(&c, pid, &e) == 0)
			err = cgroup_node_sweep(&sw, &e);
	}
	tap_ok(err == -EBUSY && strstr(e.msg, root) && cgroup_inst_populated(&c) &&
		       (sw.layout == CGROUP_UNIFIED || strstr(e.msg, "more directories")),
	       "sweep leaves a directory a process holds and names it: %s", e.msg);
	if (pid > 0) {
		cgroup_inst_destroy(&c, 2000, &e);
		waitpid(pid, &status, 0);
	}
	if (cgroup_node_sweep(&sw, &e) < 0 || left_behind(root, left, sizeof(left)))
		tap_diag("sweep test left %s: %s", left, e.msg);
}

static bool owned_live(void *arg, const char *name)
{
	return !strcmp(name, "i-live");
}

/* Makes ROOT/inst/pod/ctr in every cgroup v1 hierarchy lanternd does not manage (what an
 * OCI runtime makes for a pod whose cgroup parent is the instance); returns how many. */
static int make_unmanaged(const char *root, const char *inst)
{
	static const char *const managed[] = { "memory", "cpu", "pids", "unified" };
	char path[PATH_MAX];
	struct dirent *de;
	struct stat st;
	DIR *d = opendir("/sys/fs/cgroup");
	int made = 0;

	while (d && (de = readdir(d))) {
		bool skip = de->d_name[0] == '.';

		for (size_t i = 0; i < ARRAY_SIZE(managed); i++)
			skip |= !strcmp(de->d_name, managed[i]);
		snprintf(path, sizeof(path), "/sys/fs/cgroup/%.200s", de->d_name);
		if (skip || lstat(path, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		snprintf(path, sizeof(path), "/sys/fs/cgroup/%.200s/%s/%s/pod/ctr", de->d_name, root, inst);
		made += util_mkdir_p(path, 0755) == 0;
	}
	if (d)
		closedir(d);
	return made;
}

/* How many hierarchies hold ROOT/inst. */
static int held(const char *root, const char *inst)
{
	char rel[200], first[PATH_MAX];

	snprintf(rel, sizeof(rel), "%s/%s", root, inst);
	return left_behind(rel, first, sizeof(first));
}

/* What an OCI runtime left of instances in the hierarchies lanternd does not manage:
 * the sweep of unowned instances removes those no one owns (and only those), and the
 * destroy of an instance removes its own there too. */
static void test_unowned(void)
{
	struct cgroup_node sw;
	struct cgroup_inst live;
	struct lerr e = { "" };
	char root[64], left[PATH_MAX] = "";
	int made_gone, made_live, live_before;
	unsigned removed;

	snprintf(root, sizeof(root), "lantern-test-cg-%d-unowned", (int)getpid());
	if (cgroup_node_open(root, &sw, &e) < 0 || cgroup_inst_create(&sw, "i-live", NULL, 0, &live, &e) < 0) {
		tap_diag("%s", e.msg);
		tap_ok(false, "unowned sweep (no subtree)");
		tap_ok(false, "unowned sweep (no subtree)");
		return;
	}
	made_gone = sw.layout == CGROUP_HYBRID ? make_unmanaged(root, "i-gone") : 0;
	made_live = sw.layout == CGROUP_HYBRID ? make_unmanaged(root, "i-live") : 0;
	live_before = held(root, "i-live");
	removed = cgroup_node_sweep_unowned(&sw, owned_live, NULL);
	tap_ok(sw.layout == CGROUP_UNIFIED ? removed == 0 && held(root, "i-live") == 1
					   : made_gone >= 1 && removed == (unsigned)made_gone &&
						     held(root, "i-gone") == 0 && held(root, "i-live") == live_before,
	       "the sweep of unowned instances removes, in every v1 hierarchy, what is left of an instance no one "
	       "owns (%d dirs, %u removed) and nothing of an owned one (%d hierarchies hold it)%s", made_gone,
	       removed, held(root, "i-live"), sw.layout == CGROUP_UNIFIED ? " (unified: nothing to do)" : "");
	tap_ok(cgroup_inst_destroy(&live, 2000, &e) == 0 && held(root, "i-live") == 0,
	       "destroying an instance removes its directories in every hierarchy, those an OCI runtime made "
	       "in the unmanaged ones too (%d made): %s", made_live, e.msg);
	if (cgroup_node_sweep(&sw, &e) < 0 || left_behind(root, left, sizeof(left)))
		tap_diag("unowned test left %s: %s", left, e.msg);
}

int main(void)
{
	const char *missing = tl_env_missing();
	char root[64];
	struct lerr e = { "" };
	int err;

	tap_plan(NPOINTS);
	if (missing) {
		for (int i = 0; i < NPOINTS; i++)
			tap_skip(missing, "cgroup point %d", i + 1);
		return tap_done();
	}
	snprintf(root, sizeof(root), "lantern-test-cg-%d", (int)getpid());
	err = cgroup_node_open(root, &node, &e);
	node_ok = err == 0;
	if (!tap_ok(err == 0 && node.instance_level == 2, "node subtree %s (%s, instance level %u)",
		    root, node.layout == CGROUP_HYBRID ? "hybrid" : "unified", node.instance_level)) {
		tap_diag("%s", e.msg);
		for (int i = 1; i < NPOINTS; i++)
			tap_ok(false, "cgroup point %d (no subtree)", i + 1);
		cleanup();
		return tap_done();
	}

	test_limits();
	test_attach_signal_destroy();
	test_stats();
	test_oom();
	test_fork_bomb();
	test_list_and_failures();
	test_sweep();
	test_unowned();

	cleanup();
	tap_ok(access(node.v2, F_OK) < 0 && (node.layout == CGROUP_UNIFIED ||
					     (access(node.v1_memory, F_OK) < 0 &&
					      access(node.v1_cpu, F_OK) < 0 &&
					      access(node.v1_pids, F_OK) < 0)),
	       "node remove leaves no subtree directory");
	return tap_done();
}
