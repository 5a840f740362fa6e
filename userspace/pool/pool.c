/* pool.c: the node's pools of sandboxes started and waiting (see pool.h): checking the
 * declared pools against the runtimes, filling them off the loop, watching each
 * sandbox's waiter and supervisor, handing a ready sandbox to a run that fits (the run
 * module's claim hook), tearing down dead, failed and unwanted sandboxes, and giving
 * sandboxes back under memory pressure.
 *
 * A sandbox's life, each step on the loop unless said:
 *   MAKING    worker: its directory, its run's journal (made ahead, no record), its
 *             instance cgroup with the pool's limits
 *             loop: egress entry (network none), identity tmpfs, the waiter's socket,
 *             the claiming run's harness socket (bound, served by nobody yet)
 *   STARTING  worker: the runtime starts it (sandbox_start: the waiter as its first
 *             process); loop: its supervisor watched, the waiter's connection awaited
 *   READY     the waiter connected from inside the instance and said hello
 *   (claimed) handed to a run; the run owns it from there (run.h, struct run_claim)
 *   STOPPING  worker: the runtime removes it, the cgroup goes, the directory goes;
 *             loop: then its egress entry and identity tmpfs (processes first: until
 *             the last one is gone its policy stays in force) */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "lantern/egress.h"
#include "lantern/harness.h"
#include "lantern/identity.h"
#include "lantern/journal.h"
#include "lantern/metrics.h"
#include "lantern/pool.h"
#include "lantern/runtime.h"
#include "lantern/spawn.h"
#include "lantern/workq.h"

#define POOL_WORKERS      2
#define FILLS_AT_ONCE     2       /* sandboxes being made across the node */
#define TICK_MS           500
#define READY_TIMEOUT_MS  60000   /* a sandbox not ready by then is torn down */
#define BACKOFF_MIN_MS    1000
#define BACKOFF_MAX_MS    30000
#define SHRINK_AFTER_MS   60000   /* a minute without a miss: the target comes down one */
#define CLAIM_WINDOW      256     /* claim times kept, for claims in the last minute */
#define REFILL_WINDOW     32      /* refill times kept, for their median */
#define PSI_PRESSURE      10.0    /* memory "some" stall percentage over 10 s */
#define WAITER_SANDBOX    "/run/lantern/lantern-waiter"
#define WAITER_DIR        "/run/lantern/waiter"
#define HARNESS_SANDBOX   "/run/lantern/harness"

enum sb_state { SB_MAKING, SB_STARTING, SB_READY, SB_CLAIMED, SB_STOPPING };

static const char *const state_names[] = {
	[SB_MAKING] = "making", [SB_STARTING] = "starting", [SB_READY] = "ready",
	[SB_CLAIMED] = "claimed", [SB_STOPPING] = "stopping",
};

struct pool_one;

/* One sandbox, from its making to its claim or teardown. Between a job's submit and
 * its completion the worker owns what the job touches (dirs, cg, rs, e, err). */
struct sandbox {
	struct pool_one *po;
	enum sb_state st;
	char inst[32];
	char dir[PATH_MAX];
	char harness[PATH_MAX + 16];
	char waiter_dir[PATH_MAX + 16];
	char sock[PATH_MAX + 32];
	char id_dir[PATH_MAX];
	struct cgroup_inst cg;
	bool cg_made, held, id_made;
	int listen_fd, waiter_fd;
	int harness_fd;                /* its run's harness socket, bound ahead (or -1) */
	char hello[32];
	size_t hello_n;
	struct runtime_sandbox rs;
	struct run_env_mount mounts[3];
	char *waiter_argv[3];
	struct runtime_sandbox_req req;
	uint64_t t_fill_ms;            /* CLOCK_MONOTONIC, when its making began */
	int64_t ready_ns;              /* CLOCK_REALTIME, when it became ready */
	uint64_t timer;                /* ready timeout */
	char why[256];                 /* why it is being torn down */
	bool was_ready;
	bool hello_ok;                 /* the waiter said hello */
	bool started;                  /* the runtime's sandbox_start returned */
	bool busy;                     /* a make or start job is out: teardown waits for it */
	int err;
	struct lerr e;
	struct sandbox *next;
};

struct pool_one {
	struct pool *pl;
	struct spec_pool d;            /* the declaration (strings owned) */
	char where[PATH_MAX + 32];     /* FILE:LINE */
	struct spec *tmpl;             /* its shape as an AgentSpec */
	const struct runtime_ops *ops;
	void *rt;
	struct sandbox *list;          /* making, starting, ready, stopping */
	uint32_t target;
	uint64_t last_miss_ms;
	uint64_t claim_ms[CLAIM_WINDOW];
	uint64_t n_claims;             /* claims ever; claim_ms holds the last ones */
	uint64_t refill_ms[REFILL_WINDOW];
	uint64_t n_refills;
	uint64_t misses, failed_claims, dead, fill_failures;
	uint64_t backoff_until_ms;
	uint32_t backoff_ms;
	char error[256];               /* the last fill failure */
};

struct pool {
	struct loop *loop;
	struct pool_opts o;
	char state_dir[PATH_MAX];
	char waiter[PATH_MAX];
	struct pool_one *v;
	size_t n;
	struct workq *wq;
	struct runs *runs;
	int fills;                     /* sandboxes in MAKING or STARTING */
	uint64_t tick;
	bool started, closing;
	bool pressure;
	char pressure_why[160];
	uint64_t mem_floor;
};

static uint64_t now_ms(void)
{
	return util_now_ns(CLOCK_MONOTONIC) / 1000000;
}

static void schedule(struct pool *pl, uint64_t ms);

/* ---- shapes ---- */

/* The digest a reference pins: what two references to one image share. */
static const char *digest_of(const char *ref)
{
	const char *at = strrchr(ref, '@');

	return at ? at + 1 : ref;
}

static uint64_t scratch_of(const struct spec_limits *l)
{
	return l->scratch_bytes ? l->scratch_bytes : 64ull << 20;
}

/* Can a run of spec s, admitted by ops, take a sandbox of po? Everything a sandbox was
 * made with must be what the run would have got: the image, the class (its handler,
 * its seccomp profile), the network namespace, the instance's limits. */
static bool fits(const struct pool_one *po, const struct runtime_ops *ops, const struct spec *s)
{
	const struct spec_limits *a = &s->limits, *b = &po->tmpl->limits;
	bool bridge = s->network == SPEC_NET_ALLOWLIST_DOMAIN || s->network == SPEC_NET_OPEN;

	return ops == po->ops && !strcmp(digest_of(s->image_digest), digest_of(po->d.image_digest)) &&
	       s->isolation == po->d.isolation &&
	       (po->d.network == SPEC_POOL_NET_BRIDGE ? bridge : s->network == SPEC_NET_NONE) &&
	       a->vcpu_milli == b->vcpu_milli && a->memory_bytes == b->memory_bytes && !a->gpu &&
	       scratch_of(a) == scratch_of(b) && !s->restore_snapshot_id &&
	       (!ops->sandbox_fits || ops->sandbox_fits(po->rt, s));
}

/* The pool's shape as an AgentSpec: what admission judges and the runtime starts. */
static int make_template(struct pool_one *po, struct lerr *e)
{
	struct spec_errors errs = { 0 };
	char y[2048], lim[256] = "";
	int n = 0, err;

	if (po->d.limits.vcpu_milli)
		n += snprintf(lim + n, sizeof(lim) - (size_t)n, "    vcpu: %llum\n",
			      (unsigned long long)po->d.limits.vcpu_milli);
	if (po->d.limits.memory_bytes)
		n += snprintf(lim + n, sizeof(lim) - (size_t)n, "    memory: \"%llu\"\n",
			      (unsigned long long)po->d.limits.memory_bytes);
	if (po->d.limits.scratch_bytes)
		snprintf(lim + n, sizeof(lim) - (size_t)n, "    scratch_size: \"%llu\"\n",
			 (unsigned long long)po->d.limits.scratch_bytes);
	snprintf(y, sizeof(y),
		 "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata: {name: \"%s\"}\nspec:\n"
		 "  image_digest: \"%s\"\n  isolation: %s\n  network: %s\n%s%s",
		 po->d.name, po->d.image_digest, spec_isolation_name(po->d.isolation),
		 po->d.network == SPEC_POOL_NET_BRIDGE ? "allowlist_domain" : "none", lim[0] ? "  limits:\n" : "",
		 lim);
	if ((err = spec_parse(po->where, y, strlen(y), &po->tmpl, &errs)) < 0) {
		lerr_set(e, err, "%s: pool \"%s\": %s", po->where, po->d.name, errs.n ? errs.msg[0] : strerror(-err));
		spec_errors_free(&errs);
		return err;
	}
	return 0;
}

/* ---- memory ---- */

static uint64_t meminfo(const char *key)
{
	char *buf = NULL, *p;
	uint64_t v = 0;

	if (util_read_file("/proc/meminfo", &buf, NULL) < 0)
		return 0;
	if ((p = strstr(buf, key)))
		v = strtoull(p + strlen(key), NULL, 10) * 1024;
	free(buf);
	return v;
}

/* Is memory short on this node? Then sandboxes nobody uses yet are given back. */
static void pressure_check(struct pool *pl)
{
	uint64_t avail = meminfo("MemAvailable:");
	char *buf = NULL, *p;
	double some = 0;

	if (util_read_file("/proc/pressure/memory", &buf, NULL) == 0 && (p = strstr(buf, "some avg10=")))
		some = strtod(p + 11, NULL);
	free(buf);
	pl->pressure = true;
	if (avail && avail < pl->mem_floor)
		snprintf(pl->pressure_why, sizeof(pl->pressure_why), "memory: %llu MiB available, under the "
			 "floor of %llu MiB (--pool-memory-floor)", (unsigned long long)(avail >> 20),
			 (unsigned long long)(pl->mem_floor >> 20));
	else if (some >= PSI_PRESSURE)
		snprintf(pl->pressure_why, sizeof(pl->pressure_why), "memory: tasks stalled %.1f%% of the last "
			 "10 s (/proc/pressure/memory)", some);
	else
		pl->pressure = false;
}

/* ---- teardown ---- */

static void unlink_sb(struct sandbox *sb)
{
	for (struct sandbox **pp = &sb->po->list; *pp; pp = &(*pp)->next) {
		if (*pp == sb) {
			*pp = sb->next;
			return;
		}
	}
}

static void stop_watching(struct sandbox *sb)
{
	struct loop *l = sb->po->pl->loop;

	if (sb->timer)
		loop_timer_cancel(l, sb->timer);
	sb->timer = 0;
	if (sb->listen_fd >= 0) {
		loop_del(l, sb->listen_fd);
		close(sb->listen_fd);
		sb->listen_fd = -1;
	}
	if (sb->waiter_fd >= 0) {
		loop_del(l, sb->waiter_fd);
		close(sb->waiter_fd);
		sb->waiter_fd = -1;
	}
	if (sb->rs.shim_pidfd >= 0)
		loop_del(l, sb->rs.shim_pidfd);
}

/* Worker: the container and its network (if the runtime still has them), whatever is
 * left in the instance cgroup, the directory. */
static void teardown_work(void *arg)
{
	struct sandbox *sb = arg;
	struct pool_one *po = sb->po;
	struct lerr e = { 0 };

	if (sb->rs.state)
		po->ops->sandbox_stop(po->rt, &sb->rs);
	if (sb->cg_made || cgroup_inst_open(po->pl->o.cg, sb->inst, &sb->cg, &e) == 0) {
		if (cgroup_inst_destroy(&sb->cg, 5000, &e) < 0)
			log_warn("pool %s: sandbox %s: %s", po->d.name, sb->inst, e.msg);
		cgroup_inst_sweep(po->pl->o.cg, sb->inst);
	}
	/* its shim records the end in the directory: gone first, or it could write there
	 * while the directory is being removed */
	if (sb->rs.shim_pidfd >= 0) {
		struct pollfd pf = { .fd = sb->rs.shim_pidfd, .events = POLLIN };

		if (poll(&pf, 1, 5000) == 0)
			log_warn("pool %s: sandbox %s: its shim did not end within 5 s", po->d.name, sb->inst);
	}
	util_rm_rf(sb->dir);
}

/* Loop: its processes are gone; now its entry in the maps and its identity tmpfs. */
static void teardown_done(void *arg)
{
	struct sandbox *sb = arg;
	struct pool *pl = sb->po->pl;

	if (sb->held)
		egress_instance_drop(pl->o.egress, sb->cg.id);
	if (sb->id_made)
		identity_instance_release(pl->o.identity, sb->inst);
	if (sb->rs.shim_pidfd >= 0)
		close(sb->rs.shim_pidfd);
	if (sb->harness_fd >= 0)
		close(sb->harness_fd);
	unlink_sb(sb);
	free(sb);
	if (!pl->closing)
		schedule(pl, 0);
}

static void teardown_submit(struct sandbox *sb)
{
	struct pool *pl = sb->po->pl;

	if (pl->closing || workq_submit(pl->wq, teardown_work, teardown_done, sb) < 0) {
		teardown_work(sb);
		teardown_done(sb);
	}
}

/* Tears sb down (any state but STOPPING), off the loop unless lanternd is closing. */
static void sb_stop(struct sandbox *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_stop(struct sandbox *sb, const char *fmt, ...)
{
	struct pool *pl = sb->po->pl;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sb->why, sizeof(sb->why), fmt, ap);
	va_end(ap);
	if (sb->st == SB_MAKING || sb->st == SB_STARTING)
		pl->fills--;
	sb->st = SB_STOPPING;
	stop_watching(sb);
	if (sb->why[0])
		log_info("pool %s: sandbox %s goes: %s", sb->po->d.name, sb->inst, sb->why);
	if (!sb->busy)
		teardown_submit(sb);
}

/* A job's completion: false when the sandbox was stopped while the job was out (its
 * teardown is submitted now, the job's result ignored). */
static bool job_back(struct sandbox *sb)
{
	sb->busy = false;
	if (sb->st != SB_STOPPING)
		return true;
	teardown_submit(sb);
	return false;
}

/* A sandbox that could not be made: the pool backs off before the next. */
static void fill_failed(struct sandbox *sb, const char *why)
{
	struct pool_one *po = sb->po;

	po->fill_failures++;
	snprintf(po->error, sizeof(po->error), "%s", why);
	po->backoff_ms = po->backoff_ms ? po->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (po->backoff_ms > BACKOFF_MAX_MS)
		po->backoff_ms = BACKOFF_MAX_MS;
	po->backoff_until_ms = now_ms() + po->backoff_ms;
	log_warn("pool %s: cannot make a sandbox: %s (next try in %u ms)", po->d.name, why, po->backoff_ms);
	sb_stop(sb, "%s", "");
}

/* ---- the waiter ---- */

/* Is the peer of fd a process of instance sb (its cgroup v2 path is the instance's or
 * below it)? Only that sandbox sees the socket; this is the check that it is so. */
static bool peer_in_instance(int fd, const struct sandbox *sb)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	char path[64], want[256], *buf = NULL, *line;
	bool ok = false;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 || cr.pid <= 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)cr.pid);
	snprintf(want, sizeof(want), "0::/%s/%s", sb->po->pl->o.cg->root, sb->inst);
	if (util_read_file(path, &buf, NULL) < 0)
		return false;
	for (line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		size_t n = strlen(want);

		if (!strncmp(line, want, n) && (line[n] == '\n' || line[n] == '/' || line[n] == '\0'))
			ok = true;
	}
	free(buf);
	return ok;
}

/* Ready once its waiter said hello and its runtime's start has returned (a waiter
 * may say hello while a runtime's start is still under way: a CRI pod's container
 * runs before StartContainer answers); only then may it be claimed. */
static void sb_ready(struct sandbox *sb)
{
	struct pool_one *po = sb->po;

	if (sb->timer)
		loop_timer_cancel(po->pl->loop, sb->timer);
	sb->timer = 0;
	sb->st = SB_READY;
	sb->was_ready = true;
	sb->ready_ns = (int64_t)util_now_ns(CLOCK_REALTIME);
	po->pl->fills--;
	po->refill_ms[po->n_refills++ % REFILL_WINDOW] = now_ms() - sb->t_fill_ms;
	po->backoff_ms = 0;
	po->error[0] = '\0';
	schedule(po->pl, 0);
}

/* The waiter after its hello: nothing is expected of it until a claim, so anything
 * (its end closed, bytes) means it died or misbehaves: never handed out. */
static void on_waiter(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct sandbox *sb = arg;
	struct pool_one *po = sb->po;
	ssize_t n;

	if (sb->st == SB_STARTING) {
		n = recv(fd, sb->hello + sb->hello_n, sizeof(SPAWN_WAITER_HELLO) - 1 - sb->hello_n, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n > 0 && (sb->hello_n += (size_t)n) < sizeof(SPAWN_WAITER_HELLO) - 1)
			return;
		if (sb->hello_ok || n <= 0 || memcmp(sb->hello, SPAWN_WAITER_HELLO, sizeof(SPAWN_WAITER_HELLO) - 1)) {
			fill_failed(sb, sb->hello_ok ? "its waiter went away or spoke out of turn before it was ready" :
				    "the waiter did not say hello");
			return;
		}
		sb->hello_ok = true;
		if (sb->started)
			sb_ready(sb);
		return;
	}
	po->dead++;
	sb_stop(sb, "its waiter went away or spoke out of turn: never handed out");
}

static void on_accept(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct sandbox *sb = arg;
	int c = loop_accept(l, fd, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (c < 0)
		return;
	if (!peer_in_instance(c, sb)) {
		close(c);
		fill_failed(sb, "a process outside the instance connected to its waiter's socket");
		return;
	}
	loop_del(l, sb->listen_fd);
	close(sb->listen_fd);
	sb->listen_fd = -1;
	unlink(sb->sock);
	sb->waiter_fd = c;
	if (loop_add(l, c, EPOLLIN | EPOLLRDHUP, on_waiter, sb) < 0) {
		sb->waiter_fd = -1;
		close(c);
		fill_failed(sb, "cannot watch its waiter");
	}
}

static void on_shim_exit(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct sandbox *sb = arg;

	if (sb->st == SB_READY)
		sb->po->dead++;
	if (sb->st == SB_READY)
		sb_stop(sb, "its supervisor ended: the sandbox is gone, never handed out");
	else
		fill_failed(sb, "the sandbox ended before its waiter was ready (the runtime's output is in its log)");
}

static void on_ready_timeout(struct loop *l, void *arg)
{
	struct sandbox *sb = arg;

	sb->timer = 0;
	fill_failed(sb, "not ready within 60 s");
}

static int listen_waiter(struct sandbox *sb, struct lerr *e)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(sb->sock) >= sizeof(a.sun_path))
		return lerr_set(e, ENAMETOOLONG, "the waiter's socket path %s is too long", sb->sock);
	strcpy(a.sun_path, sb->sock);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	/* any user the image runs as may connect; only this sandbox sees the directory */
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || chmod(sb->sock, 0666) < 0 ||
	    listen(fd, 1) < 0) {
		int err = errno;

		if (fd >= 0)
			close(fd);
		return lerr_set(e, err, "the waiter's socket %s: %s", sb->sock, strerror(err));
	}
	sb->listen_fd = fd;
	if (loop_add(sb->po->pl->loop, fd, EPOLLIN, on_accept, sb) < 0) {
		close(fd);
		sb->listen_fd = -1;
		return lerr_set(e, EIO, "cannot watch the waiter's socket");
	}
	return 0;
}

/* ---- filling ---- */

/* The claiming run's harness socket, bound now so a claim does not create it (on the
 * loop, beside the sandbox's other records; harness_bind sets the file's mode itself,
 * so a worker could as well); nothing serves it
 * until a run takes it, and a connection before then waits in its backlog, never
 * answered by anyone but that run. */
static int bind_harness(struct sandbox *sb, struct lerr *e)
{
	char path[PATH_MAX + 32];

	snprintf(path, sizeof(path), "%s/harness.sock", sb->harness);
	sb->harness_fd = harness_bind(path, e);
	return sb->harness_fd < 0 ? sb->harness_fd : 0;
}

/* Worker: the directory, the journal of the run that will claim the sandbox (made
 * ahead: created, preallocated and durable here, so a claim pays only for its
 * run_started record; it holds no record until then, and a sandbox never claimed is
 * removed with its directory), and the instance cgroup. */
static void make_work(void *arg)
{
	struct sandbox *sb = arg;
	struct pool_one *po = sb->po;
	char journal[PATH_MAX + 16];
	int err;

	if ((err = util_mkdir_p(sb->harness, 0755)) < 0 || (err = util_mkdir_p(sb->waiter_dir, 0755)) < 0) {
		sb->err = lerr_set(&sb->e, err, "%s: %s", sb->dir, strerror(-err));
		return;
	}
	snprintf(journal, sizeof(journal), "%s/journal", sb->dir);
	if ((sb->err = journal_premake(journal, &sb->e)) < 0)
		return;
	if ((sb->err = cgroup_inst_create(po->pl->o.cg, sb->inst, &po->tmpl->limits, po->pl->o.pids_max,
					  &sb->cg, &sb->e)) == 0)
		sb->cg_made = true;
}

/* Worker: the runtime starts the sandbox. */
static void start_work(void *arg)
{
	struct sandbox *sb = arg;

	sb->err = sb->po->ops->sandbox_start(sb->po->rt, &sb->req, &sb->rs, &sb->e);
}

static void start_done(void *arg)
{
	struct sandbox *sb = arg;
	struct pool *pl = sb->po->pl;

	if (!job_back(sb))
		return;
	if (sb->err < 0 || pl->closing) {
		fill_failed(sb, sb->err < 0 ? sb->e.msg : "lanternd is stopping");
		return;
	}
	/* a runtime without a supervisor of lanternd's own (a CRI pod: containerd's shim)
	 * has the waiter's connection alone as its sign of life */
	if (sb->rs.shim_pidfd >= 0 && loop_add(pl->loop, sb->rs.shim_pidfd, EPOLLIN, on_shim_exit, sb) < 0) {
		fill_failed(sb, "cannot watch its supervisor");
		return;
	}
	sb->started = true;
	if (sb->hello_ok)
		sb_ready(sb);
	else
		sb->timer = loop_timer_add(pl->loop, READY_TIMEOUT_MS, on_ready_timeout, sb);
}

/* Loop: the instance registered (no egress at all, its identity tmpfs), the waiter's
 * socket listening; then the runtime starts it on a worker. */
static void make_done(void *arg)
{
	struct sandbox *sb = arg;
	struct pool *pl = sb->po->pl;
	struct lerr e = { 0 };

	if (!job_back(sb))
		return;
	if (sb->err < 0 || pl->closing) {
		fill_failed(sb, sb->err < 0 ? sb->e.msg : "lanternd is stopping");
		return;
	}
	if (egress_instance_hold(pl->o.egress, sb->cg.id, &e) < 0) {
		fill_failed(sb, e.msg);
		return;
	}
	sb->held = true;
	if (identity_instance_prepare(pl->o.identity, sb->inst, sb->id_dir, sizeof(sb->id_dir), &e) < 0) {
		fill_failed(sb, e.msg);
		return;
	}
	sb->id_made = true;
	if (listen_waiter(sb, &e) < 0 || bind_harness(sb, &e) < 0) {
		fill_failed(sb, e.msg);
		return;
	}
	/* what the sandbox shows: the directories a claiming run's subscribers will use */
	sb->mounts[0] = (struct run_env_mount){ .read_only = true };
	snprintf(sb->mounts[0].host, sizeof(sb->mounts[0].host), "%s", sb->harness);
	snprintf(sb->mounts[0].sandbox, sizeof(sb->mounts[0].sandbox), "%s", HARNESS_SANDBOX);
	sb->mounts[1] = (struct run_env_mount){ .read_only = true };
	snprintf(sb->mounts[1].host, sizeof(sb->mounts[1].host), "%s", sb->id_dir);
	snprintf(sb->mounts[1].sandbox, sizeof(sb->mounts[1].sandbox), "%s", IDENTITY_SANDBOX_DIR);
	sb->mounts[2] = (struct run_env_mount){ .read_only = true };
	snprintf(sb->mounts[2].host, sizeof(sb->mounts[2].host), "%s", sb->waiter_dir);
	snprintf(sb->mounts[2].sandbox, sizeof(sb->mounts[2].sandbox), "%s", WAITER_DIR);
	sb->waiter_argv[0] = WAITER_SANDBOX;
	sb->waiter_argv[1] = WAITER_DIR "/waiter.sock";
	sb->req = (struct runtime_sandbox_req){
		.spec = sb->po->tmpl, .instance_id = sb->inst, .dir = sb->dir, .cg = &sb->cg,
		.waiter_argv = sb->waiter_argv, .waiter_bin = pl->waiter, .mounts = sb->mounts,
		.n_mounts = ARRAY_SIZE(sb->mounts),
	};
	sb->st = SB_STARTING;
	sb->busy = true;
	if (workq_submit(pl->wq, start_work, start_done, sb) < 0) {
		sb->busy = false;
		fill_failed(sb, "out of memory");
	}
}

static void fill_one(struct pool_one *po)
{
	struct pool *pl = po->pl;
	struct sandbox *sb = calloc(1, sizeof(*sb));

	if (!sb)
		return;
	sb->po = po;
	sb->listen_fd = sb->waiter_fd = sb->harness_fd = sb->rs.shim_pidfd = -1;
	sb->inst[0] = 'i';
	sb->inst[1] = '-';
	util_random_hex(sb->inst + 2, 6);
	snprintf(sb->dir, sizeof(sb->dir), "%s/%s", pl->state_dir, sb->inst);
	snprintf(sb->harness, sizeof(sb->harness), "%s/harness", sb->dir);
	snprintf(sb->waiter_dir, sizeof(sb->waiter_dir), "%s/waiter", sb->dir);
	snprintf(sb->sock, sizeof(sb->sock), "%s/waiter.sock", sb->waiter_dir);
	sb->t_fill_ms = now_ms();
	sb->st = SB_MAKING;
	sb->next = po->list;
	po->list = sb;
	pl->fills++;
	sb->busy = true;
	if (workq_submit(pl->wq, make_work, make_done, sb) < 0) {
		sb->busy = false;
		fill_failed(sb, "out of memory");
	}
}

static unsigned count(const struct pool_one *po, enum sb_state st)
{
	unsigned n = 0;

	for (const struct sandbox *sb = po->list; sb; sb = sb->next)
		n += sb->st == st;
	return n;
}

static uint64_t held_total(const struct pool *pl)
{
	uint64_t n = 0;

	for (size_t i = 0; i < pl->n; i++)
		for (const struct sandbox *sb = pl->v[i].list; sb; sb = sb->next)
			n += sb->st != SB_STOPPING;
	return n;
}

/* Room on the node for one more sandbox of po: runs and sandboxes under max_total,
 * and its memory limit (or 64 MiB) left above the floor. */
static bool room_for(const struct pool *pl, const struct pool_one *po)
{
	uint64_t need = po->tmpl->limits.memory_bytes ? po->tmpl->limits.memory_bytes : 64ull << 20;
	uint64_t avail = meminfo("MemAvailable:");

	if (held_total(pl) + runs_live(pl->runs) >= pl->o.max_total)
		return false;
	return !avail || avail >= pl->mem_floor + need;
}

/* One turn: targets follow demand, memory pressure gives sandboxes back, and the pools
 * below their target get one more sandbox each while there is room. */
static void on_tick(struct loop *l, void *arg)
{
	struct pool *pl = arg;
	uint64_t now = now_ms();

	pl->tick = 0;
	if (pl->closing)
		return;
	pressure_check(pl);
	for (size_t i = 0; i < pl->n; i++) {
		struct pool_one *po = &pl->v[i];
		unsigned ready = count(po, SB_READY), coming = count(po, SB_MAKING) + count(po, SB_STARTING);

		if (po->target > po->d.min && now - po->last_miss_ms > SHRINK_AFTER_MS) {
			po->target--;
			po->last_miss_ms = now;
		}
		if (pl->pressure || ready > po->target) {
			/* one a turn: the newest ready sandbox goes (the oldest serve claims) */
			for (struct sandbox *sb = po->list; sb; sb = sb->next) {
				if (sb->st == SB_READY && (pl->pressure || ready > po->target)) {
					sb_stop(sb, "%s", pl->pressure ? pl->pressure_why : "above the pool's target");
					break;
				}
			}
			continue;
		}
		if (ready + coming < po->target && pl->fills < FILLS_AT_ONCE && now >= po->backoff_until_ms &&
		    room_for(pl, po))
			fill_one(po);
	}
	schedule(pl, TICK_MS);
}

static void schedule(struct pool *pl, uint64_t ms)
{
	if (pl->closing || !pl->started)
		return;
	if (pl->tick && ms)
		return;
	if (pl->tick)
		loop_timer_cancel(pl->loop, pl->tick);
	pl->tick = loop_timer_add(pl->loop, ms, on_tick, pl);
}

/* ---- claims ---- */

/* Still alive at the claim, not only when last heard of: nothing from the waiter
 * (no bytes, no hang-up) and its supervisor running. */
static bool sandbox_alive(const struct sandbox *sb)
{
	struct pollfd pf[2] = {
		{ .fd = sb->waiter_fd, .events = POLLIN | POLLRDHUP },
		{ .fd = sb->rs.shim_pidfd, .events = POLLIN },
	};

	return poll(pf, 2, 0) == 0;
}

/* The run module settled the claim: taken (why NULL), or failed and undone on the
 * run's side; whatever of the sandbox is still here goes. */
static void on_claim_done(void *arg, struct run_claim *c, const char *why)
{
	struct sandbox *sb = arg;
	struct pool_one *po = sb->po;

	/* a harness socket no run took goes with the sandbox */
	if (c->harness_fd >= 0) {
		close(c->harness_fd);
		c->harness_fd = -1;
	}
	if (!why) {
		if (sb->rs.state)
			log_warn("pool %s: sandbox %s was claimed but its runtime did not take it", po->d.name, sb->inst);
		unlink_sb(sb);
		free(sb);
		return;
	}
	po->failed_claims++;
	log_warn("pool %s: claim of sandbox %s failed: %s: tearing it down", po->d.name, sb->inst, why);
	if (c->waiter_fd >= 0) {
		close(c->waiter_fd);
		c->waiter_fd = -1;
	}
	sb_stop(sb, "its claim failed");
}

static int on_claim(void *arg, struct run *r, const struct spec *s, struct run_claim *c)
{
	struct pool *pl = arg;
	const struct runtime_ops *ops = run_runtime(r);

	for (size_t i = 0; i < pl->n; i++) {
		struct pool_one *po = &pl->v[i];
		struct sandbox *take = NULL;

		if (!fits(po, ops, s))
			continue;
		/* the oldest ready sandbox: the list is newest first */
		for (struct sandbox *sb = po->list, *next; sb; sb = next) {
			next = sb->next;
			if (sb->st != SB_READY)
				continue;
			if (!sandbox_alive(sb)) {
				po->dead++;
				sb_stop(sb, "found dead at a claim: never handed out");
				continue;
			}
			take = sb;
		}
		if (!take) {
			po->misses++;
			po->last_miss_ms = now_ms();
			if (po->target < po->d.max)
				po->target++;
			schedule(pl, 0);
			return -ENOENT;
		}
		loop_del(pl->loop, take->waiter_fd);
		if (take->rs.shim_pidfd >= 0)
			loop_del(pl->loop, take->rs.shim_pidfd);
		take->st = SB_CLAIMED;
		po->claim_ms[po->n_claims++ % CLAIM_WINDOW] = now_ms();
		snprintf(c->pool, sizeof(c->pool), "%s", po->d.name);
		snprintf(c->instance_id, sizeof(c->instance_id), "%s", take->inst);
		snprintf(c->dir, sizeof(c->dir), "%s", take->dir);
		c->ready_ns = take->ready_ns;
		c->sandbox = &take->rs;
		c->waiter_fd = take->waiter_fd;
		take->waiter_fd = -1;
		c->harness_fd = take->harness_fd;
		take->harness_fd = -1;
		c->done = on_claim_done;
		c->arg = take;
		schedule(pl, 0);
		return 0;
	}
	return -ENOENT;
}

/* run_bind asks about an instance no run has: a sandbox whose runtime is starting it
 * now (its pod's containers bind then), never one ready, claimed or going. */
static int on_pooled(void *arg, const char *inst, struct run_pooled *p)
{
	struct pool *pl = arg;

	for (size_t i = 0; i < pl->n; i++) {
		struct pool_one *po = &pl->v[i];

		for (struct sandbox *sb = po->list; sb; sb = sb->next) {
			if (strcmp(sb->inst, inst))
				continue;
			if (sb->st != SB_STARTING || !sb->cg_made)
				return -ENOENT;
			*p = (struct run_pooled){ .pool = po->d.name, .spec = po->tmpl, .ops = po->ops, .rt = po->rt,
						  .cg = &sb->cg };
			return 0;
		}
	}
	return -ENOENT;
}

static const struct run_hooks pool_hooks = {
	.name = "pool",
	.claim = on_claim,
	.pooled = on_pooled,
};

int pool_subscribe(struct pool *pl, struct runs *t, struct lerr *e)
{
	int err;

	pl->runs = t;
	if ((err = runs_subscribe(t, &pool_hooks, pl)) < 0)
		return lerr_set(e, err, "pool: cannot subscribe to runs");
	return 0;
}

/* ---- the local API and metrics ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t claims_last_minute(const struct pool_one *po, uint64_t now)
{
	uint64_t n = 0, have = po->n_claims < CLAIM_WINDOW ? po->n_claims : CLAIM_WINDOW;

	for (uint64_t i = 0; i < have; i++)
		n += now - po->claim_ms[i] <= 60000;
	return n;
}

json_t *pool_json(struct pool *pl)
{
	json_t *arr = json_array();
	uint64_t now = now_ms();

	for (size_t i = 0; i < pl->n; i++) {
		struct pool_one *po = &pl->v[i];
		uint64_t r[REFILL_WINDOW], nr = po->n_refills < REFILL_WINDOW ? po->n_refills : REFILL_WINDOW;
		json_t *x, *sbs = json_array();
		const char *why = NULL;

		memcpy(r, po->refill_ms, sizeof(r));
		qsort(r, (size_t)nr, sizeof(r[0]), cmp_u64);
		for (struct sandbox *sb = po->list; sb; sb = sb->next)
			json_array_append_new(sbs, json_pack("{s:s, s:s}", "instance_id", sb->inst, "state",
							     state_names[sb->st]));
		if (pl->pressure)
			why = pl->pressure_why;
		else if (po->backoff_until_ms > now)
			why = po->error;
		x = json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:I, s:I, s:I}, s:{s:i, s:i}, s:i, s:i, s:i,"
			      " s:I, s:I, s:I, s:I, s:I, s:I, s:o}",
			      "name", po->d.name, "declared", po->where, "image_digest", po->d.image_digest,
			      "isolation", spec_isolation_name(po->d.isolation), "network",
			      spec_pool_net_name(po->d.network), "limits", "vcpu_milli",
			      (json_int_t)po->d.limits.vcpu_milli, "memory_bytes", (json_int_t)po->d.limits.memory_bytes,
			      "scratch_bytes", (json_int_t)scratch_of(&po->d.limits), "size", "min", (int)po->d.min,
			      "max", (int)po->d.max, "target", (int)po->target, "ready", (int)count(po, SB_READY),
			      "starting", (int)(count(po, SB_MAKING) + count(po, SB_STARTING)),
			      "claimed_per_minute", (json_int_t)claims_last_minute(po, now), "claims",
			      (json_int_t)po->n_claims, "misses", (json_int_t)po->misses, "failed_claims",
			      (json_int_t)po->failed_claims, "dead_waiters", (json_int_t)po->dead, "fill_failures",
			      (json_int_t)po->fill_failures, "sandboxes", sbs);
		if (nr)
			json_object_set_new(x, "refill_ms", json_pack("{s:I, s:I}", "last",
								      (json_int_t)po->refill_ms[(po->n_refills - 1) % REFILL_WINDOW],
								      "p50", (json_int_t)r[(nr - 1) / 2]));
		if (why && *why)
			json_object_set_new(x, "not_filling", json_string(why));
		json_array_append_new(arr, x);
	}
	return json_pack("{s:s, s:o}", "type", "pools", "pools", arr);
}

void pool_metrics(void *arg, struct metrics_out *o)
{
	struct pool *pl = arg;
	static const struct {
		const char *name, *type, *help;
	} fam[] = {
		{ "lantern_pool_ready", "gauge", "Sandboxes ready to be claimed, by pool." },
		{ "lantern_pool_claims_total", "counter", "Spawns that took a pooled sandbox, by pool." },
		{ "lantern_pool_misses_total", "counter", "Spawns that fit a pool that had none ready, by pool." },
		{ "lantern_pool_failed_claims_total", "counter", "Claims that failed (the spawn started cold), by pool." },
		{ "lantern_pool_dead_waiters_total", "counter", "Ready sandboxes found dead and torn down, by pool." },
	};

	for (size_t f = 0; f < ARRAY_SIZE(fam); f++) {
		metrics_family(o, fam[f].name, fam[f].type, fam[f].help);
		for (size_t i = 0; i < pl->n; i++) {
			const struct pool_one *po = &pl->v[i];
			const char *labels[] = { "pool", po->d.name, NULL };
			uint64_t v[] = { count(po, SB_READY), po->n_claims, po->misses, po->failed_claims, po->dead };

			metrics_u64(o, fam[f].name, labels, v[f]);
		}
	}
}

/* ---- opening and closing ---- */

int pool_open(struct loop *l, const struct pool_opts *o, struct pool **out, struct lerr *e)
{
	struct pool *pl = calloc(1, sizeof(*pl));
	uint64_t total = meminfo("MemTotal:");
	int err;

	if (!pl)
		return lerr_set(e, ENOMEM, "pool: out of memory");
	pl->loop = l;
	pl->o = *o;
	pl->mem_floor = o->mem_floor ? o->mem_floor : total / 10;
	snprintf(pl->state_dir, sizeof(pl->state_dir), "%s/pool", o->state_dir);
	snprintf(pl->waiter, sizeof(pl->waiter), "%s", o->waiter ? o->waiter : "");
	if (o->decl && o->decl->n && !(pl->v = calloc(o->decl->n, sizeof(*pl->v)))) {
		free(pl);
		return lerr_set(e, ENOMEM, "pool: out of memory");
	}
	for (size_t i = 0; o->decl && i < o->decl->n; i++) {
		struct pool_one *po = &pl->v[pl->n++];
		struct lerr ae = { 0 };

		po->pl = pl;
		po->d = o->decl->v[i];
		po->d.name = strdup(o->decl->v[i].name);
		po->d.image_digest = strdup(o->decl->v[i].image_digest);
		po->target = po->d.min;
		snprintf(po->where, sizeof(po->where), "%s:%d", o->decl->file, po->d.line);
		if (!po->d.name || !po->d.image_digest) {
			err = lerr_set(e, ENOMEM, "pool: out of memory");
			goto fail;
		}
		if ((err = make_template(po, e)) < 0)
			goto fail;
		/* fail closed: a pool this node cannot serve stops lanternd here, with why */
		if ((err = runtimes_admit(o->runtimes, po->tmpl, &po->ops, &po->rt, &ae)) < 0) {
			lerr_set(e, err, "--pools %s: pool \"%s\": %s", po->where, po->d.name, ae.msg);
			goto fail;
		}
		if (!po->ops->sandbox_start || !po->ops->claim || !po->ops->sandbox_stop) {
			err = lerr_set(e, EOPNOTSUPP, "--pools %s: pool \"%s\": its specs run on the %s runtime, which "
				       "cannot keep pooled sandboxes; remove the pool", po->where, po->d.name,
				       po->ops->name);
			goto fail;
		}
	}
	if (pl->n && access(pl->waiter, X_OK) < 0) {
		err = lerr_set(e, errno, "--pools: the waiter %s: %s", pl->waiter, strerror(errno));
		goto fail;
	}
	if (pl->n && (err = workq_open(l, POOL_WORKERS, "lantern-pool", &pl->wq, e)) < 0)
		goto fail;
	*out = pl;
	return 0;
fail:
	pl->closing = true;
	pool_close(pl);
	return err;
}

/* The runtime's pid files of sandboxes no live run took (a claimed run keeps its). */
static void remove_pidfiles(struct pool *pl)
{
	char dir[PATH_MAX + 16], path[PATH_MAX + 300];
	struct dirent *de;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/oci/pool", pl->o.state_dir);
	if (!(d = opendir(dir)))
		return;
	while ((de = readdir(d))) {
		char inst[32];
		const char *dot = strrchr(de->d_name, '.');

		if (de->d_name[0] == '.' || !dot || strcmp(dot, ".pid") || (size_t)(dot - de->d_name) >= sizeof(inst))
			continue;
		snprintf(inst, sizeof(inst), "%.*s", (int)(dot - de->d_name), de->d_name);
		if (!runs_by_instance(pl->runs, inst)) {
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			unlink(path);
		}
	}
	closedir(d);
}

void pool_start(struct pool *pl)
{
	/* the previous lanternd's sandboxes, never adopted: their waiters lost their
	 * lanternd and exited; their cgroups, containers, namespaces, map entries and
	 * identity tmpfs were reclaimed with everything no run owns (runs_recover); their
	 * directories (a claimed one was renamed to its run's) and pid files are left */
	util_rm_rf(pl->state_dir);
	if (pl->runs)
		remove_pidfiles(pl);
	if (!pl->n)
		return;
	if (util_mkdir_p(pl->state_dir, 0700) < 0)
		log_error("pool: cannot make %s: no pool will fill", pl->state_dir);
	pl->started = true;
	for (size_t i = 0; i < pl->n; i++)
		log_info("pool %s (%s): %s, %s, network %s, size %u..%u", pl->v[i].d.name, pl->v[i].where,
			 pl->v[i].d.image_digest, spec_isolation_name(pl->v[i].d.isolation),
			 spec_pool_net_name(pl->v[i].d.network), pl->v[i].d.min, pl->v[i].d.max);
	schedule(pl, 0);
}

void pool_close(struct pool *pl)
{
	if (!pl)
		return;
	pl->closing = true;
	if (pl->tick)
		loop_timer_cancel(pl->loop, pl->tick);
	pl->tick = 0;
	for (size_t i = 0; i < pl->n; i++)
		if (pl->v[i].ops && pl->v[i].ops->sandbox_cancel)
			pl->v[i].ops->sandbox_cancel(pl->v[i].rt);
	/* jobs under way finish here; their completions tear their sandboxes down */
	workq_close(pl->wq);
	pl->wq = NULL;
	for (size_t i = 0; i < pl->n; i++) {
		while (pl->v[i].list) {
			struct sandbox *sb = pl->v[i].list;

			if (sb->st == SB_STOPPING || sb->st == SB_CLAIMED) {
				/* a run settles a claimed one; a stopping one finished above */
				unlink_sb(sb);
				continue;
			}
			sb_stop(sb, "lanternd is stopping");
		}
		free(pl->v[i].d.name);
		free(pl->v[i].d.image_digest);
		spec_free(pl->v[i].tmpl);
	}
	free(pl->v);
	free(pl);
}
