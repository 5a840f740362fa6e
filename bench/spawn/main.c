/* bench/spawn: how long a spawn takes to reach its workload's first instruction, through
 * lanternd and through the bare OCI runtime, side by side in the same run; and how many
 * spawns per second lanternd sustains with runc under concurrent submissions.
 *
 * The workload is /bin/lantern-clock of the image scripts/mkimage.sh builds (static,
 * tools/image/clock.c): its first action prints CLOCK_REALTIME in nanoseconds. The
 * latency of one spawn is that reading minus CLOCK_REALTIME taken just before the
 * request leaves the client:
 *   - lanternd: a `run` request on lanternd's socket (what `lantern run` sends), the
 *     output followed on the same connection; the clock is read from the output.
 *     Everything lanternd does is in the window: parsing and admission, image
 *     verification, journal and harness socket, cgroup, maps, bundle, the shim, and
 *     `runc run -d` / `runsc run`.
 *   - bare: `runc run` / `runsc run` (foreground, the same global flags lanternd uses)
 *     of the bundle lanternd would write for the same spec (oci_bundle_write with the
 *     same request, the image root lanternd unpacked), its stdout read through a pipe.
 *     The runtime creates the cgroup itself (cgroupsPath under a bench subtree).
 * Rounds alternate the order (lanternd first, then bare first) so neither side always
 * runs on a warmer cache. Network `none` on both sides (loopback only).
 *
 * Throughput: C threads submit spawns of the same spec to lanternd (runc) until M have
 * ended; spawns/s = M / wall time from the first submission to the last exit. The peer
 * is bare `runc run` with the same concurrency.
 *
 * Pools (docs/pools.md), in the same run: lanternd is restarted with a pool of the same
 * spec's shape per runtime, and the same spec is claimed N times per runtime, each
 * claim when the pool is full (no refill under way), interleaved with bare runs again:
 * submission to the first instruction of a claimed sandbox, with the run's policy,
 * journal and identity in place. A claim that does not come from the pool is reported
 * and left out. Then the throughput of claims with the pool refilling: C submitters,
 * M claims, and how many of them the pool served. The claim's stages (admission,
 * preparation, the waiter's exec) come from each run's record.
 *
 *   build/bench/spawn [-n SPAWNS_PER_CELL] [-m THROUGHPUT_SPAWNS] [-c CONCURRENCY] [-p]
 *   (defaults 100, 200, 8). -p: the pool rows only (the cold rows and their throughput
 *   left out); -m 0: no throughput phase. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "lantern/image.h"
#include "lantern/oci.h"
#include "lantern/spec.h"
#include "lantern/util.h"

extern char **environ;

static int n_spawns = 100, n_tput = 200, conc = 8;
static bool pools_only;
static char dir[256], state[300], sock[300], bpffs[256], cgroot[128], bare_cg[160];
static char build[256], image[256], yaml_runc[1024], yaml_runsc[1024], pools_path[320];
static char bare_root[2][300], bare_bundle[2][64][300]; /* [runtime][submitter] */
static pid_t daemon_pid;
static struct oci_handler handlers[2]; /* runc, runsc: for the bare side */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int64_t now_ns(void)
{
	return (int64_t)util_now_ns(CLOCK_REALTIME);
}

/* ---- lanternd ---- */

struct sample {
	int64_t first;   /* submission to the workload's first instruction, ns */
	int64_t accepted;/* submission to lanternd's "accepted" answer (bare: 0) */
	int64_t total;   /* submission to the exit */
	bool ok;
	char id[32];     /* lanternd's run id */
};

static int connect_sock(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* One spawn through lanternd's socket, following its output to the end. */
static struct sample spawn_lanternd(const char *yaml)
{
	struct sample s = { 0 };
	json_t *req = json_pack("{s:s, s:s, s:s, s:b}", "op", "run", "file", "clock.yaml", "yaml", yaml,
				"follow", 1);
	char *line = json_dumps(req, JSON_COMPACT), *buf = NULL;
	size_t len = strlen(line), have = 0, cap = 0;
	int64_t t0;
	int fd;

	json_decref(req);
	line = realloc(line, len + 2);
	line[len++] = '\n';
	t0 = now_ns();
	fd = connect_sock();
	if (fd < 0 || write(fd, line, len) != (ssize_t)len)
		goto out;
	for (;;) {
		char *nl;
		ssize_t n;

		while (buf && (nl = memchr(buf, '\n', have))) {
			json_t *m = json_loadb(buf, (size_t)(nl - buf), 0, NULL);
			const char *type = json_string_value(json_object_get(m, "type")) ?: "";
			int64_t t = now_ns();

			if (!strcmp(type, "accepted")) {
				s.accepted = t - t0;
				snprintf(s.id, sizeof(s.id), "%s", json_string_value(json_object_get(m, "run_id")) ?: "");
			} else if (!strcmp(type, "output") && !s.first) {
				const char *d = json_string_value(json_object_get(m, "data")) ?: "";
				char bin[128];
				size_t bl = 0;

				if (sodium_base642bin((unsigned char *)bin, sizeof(bin) - 1, d, strlen(d), NULL, &bl,
						      NULL, sodium_base64_VARIANT_ORIGINAL) == 0) {
					bin[bl] = '\0';
					s.first = strtoll(bin, NULL, 10) - t0;
				}
			} else if (!strcmp(type, "exit") || !strcmp(type, "error")) {
				s.total = t - t0;
				s.ok = !strcmp(type, "exit") &&
				       !strcmp(json_string_value(json_object_get(m, "status")) ?: "", "succeeded") &&
				       s.first > 0;
				if (!s.ok) {
					char *dump = json_dumps(m, JSON_COMPACT);
					fprintf(stderr, "# lanternd spawn failed: %s\n", dump ? dump : "?");
					free(dump);
				}
				json_decref(m);
				goto out;
			}
			json_decref(m);
			memmove(buf, nl + 1, have - (size_t)(nl + 1 - buf));
			have -= (size_t)(nl + 1 - buf);
		}
		if (have + 4096 > cap) {
			char *nb = realloc(buf, cap = have + 65536);
			if (!nb)
				goto out;
			buf = nb;
		}
		n = read(fd, buf + have, cap - have);
		if (n <= 0)
			goto out;
		have += (size_t)n;
	}
out:
	if (fd >= 0)
		close(fd);
	free(line);
	free(buf);
	return s;
}

/* One request on lanternd's socket and its one-line answer (a new reference). */
static json_t *call_op(json_t *req)
{
	char *line = json_dumps(req, JSON_COMPACT), *buf = NULL;
	size_t len = line ? strlen(line) : 0, have = 0, cap = 0;
	json_t *res = NULL;
	int fd = connect_sock();

	if (fd < 0 || !line)
		goto out;
	line = realloc(line, len + 2);
	line[len++] = '\n';
	if (write(fd, line, len) != (ssize_t)len)
		goto out;
	for (;;) {
		ssize_t n;
		char *nl;

		if (have + 65536 > cap) {
			char *nb = realloc(buf, cap = have + (1 << 20));
			if (!nb)
				goto out;
			buf = nb;
		}
		n = read(fd, buf + have, cap - have);
		if (n <= 0)
			goto out;
		have += (size_t)n;
		if ((nl = memchr(buf, '\n', have))) {
			res = json_loadb(buf, (size_t)(nl - buf), 0, NULL);
			goto out;
		}
	}
out:
	if (fd >= 0)
		close(fd);
	free(line);
	free(buf);
	return res;
}

/* Waits until pool name is full: ready at its target and nothing being made. */
static bool pool_full(const char *name, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		json_t *req = json_pack("{s:s}", "op", "pools"), *res = call_op(req), *p;
		bool full = false;
		size_t k;

		json_decref(req);
		json_array_foreach(json_object_get(res, "pools"), k, p)
			if (!strcmp(json_string_value(json_object_get(p, "name")) ?: "", name))
				full = json_integer_value(json_object_get(p, "ready")) >= json_integer_value(json_object_get(p, "target")) &&
				       json_integer_value(json_object_get(p, "target")) > 0 &&
				       !json_integer_value(json_object_get(p, "starting"));
		json_decref(res);
		if (full)
			return true;
		usleep(10000);
	}
	return false;
}

/* ---- the bare runtime ---- */

static struct sample spawn_bare(int k, int slot, unsigned long seq)
{
	const struct oci_handler *h = &handlers[k];
	struct sample s = { 0 };
	char id[64], out[256];
	char *argv[16];
	int p[2], n = 0, st;
	size_t have = 0;
	ssize_t r;
	int64_t t0;
	pid_t pid;
	posix_spawn_file_actions_t fa;

	snprintf(id, sizeof(id), "bare-%d-%lu", (int)getpid(), seq);
	argv[n++] = (char *)h->bin;
	argv[n++] = "--root";
	argv[n++] = (char *)h->root;
	if (h->kind == OCI_RUNSC) {
		/* lanternd's flags for runsc (userspace/oci/handler.c) */
		argv[n++] = "--platform=ptrace";
		argv[n++] = "--network=none";
		argv[n++] = "--oci-seccomp";
		argv[n++] = "--host-uds=open";
	}
	argv[n++] = "run";
	argv[n++] = "--bundle";
	argv[n++] = bare_bundle[k][slot];
	argv[n++] = id;
	argv[n] = NULL;
	if (pipe2(p, O_CLOEXEC) < 0)
		return s;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	t0 = now_ns();
	if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		close(p[0]);
		close(p[1]);
		return s;
	}
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	while ((r = read(p[0], out + have, sizeof(out) - 1 - have)) > 0)
		have += (size_t)r;
	close(p[0]);
	out[have] = '\0';
	waitpid(pid, &st, 0);
	s.total = now_ns() - t0;
	s.first = have ? strtoll(out, NULL, 10) - t0 : 0;
	s.ok = WIFEXITED(st) && WEXITSTATUS(st) == 0 && s.first > 0;
	if (!s.ok)
		fprintf(stderr, "# bare %s spawn failed (status %d): %s\n", h->name, st, out);
	return s;
}

/* The bundle lanternd writes for this spec (ocirun_start's request), with a cgroup the
 * runtime makes itself under the bench's own subtree; one per concurrent submitter,
 * since containers running at once need cgroups of their own. */
static int write_bare_bundle(int k, int slot, const char *yaml, const char *runtime)
{
	struct spec_errors errs = { 0 };
	struct spec *s = NULL;
	struct image_info img = { 0 };
	struct lerr e = { 0 };
	char store[400], cg[256], hsock[420], hdir[400];
	char *lenv[] = { "LANTERN_RUN_ID=r-000000000000", "LANTERN_INSTANCE_ID=i-000000000000",
			 "LANTERN_HARNESS_SOCKET=/run/lantern/harness/harness.sock", NULL };
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd, err;

	snprintf(store, sizeof(store), "%s/images", state);
	snprintf(bare_root[k], sizeof(bare_root[k]), "%s/bare/%s", dir, runtime);
	snprintf(bare_bundle[k][slot], sizeof(bare_bundle[k][slot]), "%s/bare/bundle-%s-%d", dir, runtime, slot);
	snprintf(cg, sizeof(cg), "/%s/%s-%d", bare_cg, runtime, slot);
	/* lanternd bind-mounts the run's harness socket directory: the bare bundle mounts one too */
	snprintf(hdir, sizeof(hdir), "%s/bare/harness", dir);
	util_mkdir_p(hdir, 0755);
	snprintf(hsock, sizeof(hsock), "%s/harness.sock", hdir);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", hsock);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	util_mkdir_p(bare_bundle[k][slot], 0700);
	if (access(hsock, F_OK) < 0 && (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 8) < 0)) {
		fprintf(stderr, "bench/spawn: harness socket %s: %s\n", hsock, strerror(errno));
		return -1;
	}
	if (!handlers[k].name[0])
		oci_handler_probe(&handlers[k], runtime, bare_root[k]);
	if (!handlers[k].available) {
		fprintf(stderr, "bench/spawn: %s: %s\n", runtime, handlers[k].missing);
		return -1;
	}
	if (spec_parse("clock.yaml", yaml, strlen(yaml), &s, &errs) < 0) {
		fprintf(stderr, "bench/spawn: the spec does not parse\n");
		spec_errors_free(&errs);
		return -1;
	}
	if ((err = image_resolve(store, image, &img, &e)) < 0) {
		fprintf(stderr, "bench/spawn: %s\n", e.msg);
		spec_free(s);
		return -1;
	}
	struct oci_bind hb = { hdir, "/run/lantern/harness", false };
	struct oci_bundle_req br = {
		.dir = bare_bundle[k][slot],
		.rootfs = img.rootfs,
		.image_config = img.config,
		.spec = s,
		.lantern_env = lenv,
		.cgroups_path = cg,
		.kind = handlers[k].kind,
		.net = OCI_NET_LOOPBACK,
		.hostname = "i-000000000000",
		.scratch_bytes = s->limits.scratch_bytes,
		.seccomp_allowlist = s->isolation == SPEC_ISO_UNTRUSTED,
		.binds = &hb,
		.n_binds = 1,
	};
	err = oci_bundle_write(&br, &e);
	if (err < 0)
		fprintf(stderr, "bench/spawn: %s\n", e.msg);
	image_info_free(&img);
	spec_free(s);
	return err;
}

/* ---- setup and teardown ---- */

static void stop_daemon(void);

static void cleanup(void)
{
	stop_daemon();
	for (int k = 0; k < 2; k++)
		if (handlers[k].available)
			sh("for c in $(%s --root %s list -q 2>/dev/null); do %s --root %s delete --force $c; done",
			   handlers[k].bin, bare_root[k], handlers[k].bin, bare_root[k]);
	sh("%s/lantern --socket %s reset --state-dir %s --bpffs %s --cgroup-root %s >/dev/null 2>&1", build, sock,
	   state, bpffs, cgroot);
	/* the bare runtimes' cgroups: runc and runsc remove their own, the parents are ours */
	sh("for d in /sys/fs/cgroup/*/%s /sys/fs/cgroup/%s; do [ -d $d ] && find $d -depth -type d -exec rmdir {} + 2>/dev/null; done; true",
	   bare_cg, bare_cg);
	if (dir[0])
		util_rm_rf(dir);
}

static void on_signal(int sig)
{
	cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* lanternd, with the pools file or without pools. */
static int start_daemon(const char *pools)
{
	char cmd[2048];
	pid_t pid;

	snprintf(cmd, sizeof(cmd),
		 "exec %s/lanternd --state-dir %s --socket %s --bpffs %s --cgroup-root %s %s%s >>%s/lanternd.log 2>&1",
		 build, state, sock, bpffs, cgroot, pools ? "--pools " : "", pools ? pools : "", dir);
	unlink(sock);
	pid = fork();
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	daemon_pid = pid;
	for (int i = 0; i < 500 && !util_unix_socket_alive(sock); i++)
		usleep(10000);
	if (!util_unix_socket_alive(sock)) {
		fprintf(stderr, "bench/spawn: lanternd did not start (%s/lanternd.log)\n", dir);
		return -1;
	}
	return 0;
}

static void stop_daemon(void)
{
	if (daemon_pid > 0) {
		kill(daemon_pid, SIGTERM);
		waitpid(daemon_pid, NULL, 0);
		daemon_pid = 0;
	}
}

static int setup(void)
{
	char cmd[2048], ref[400];
	FILE *f;

	snprintf(dir, sizeof(dir), "/tmp/lantern-bench-spawn-%d", (int)getpid());
	snprintf(state, sizeof(state), "%s/state", dir);
	snprintf(sock, sizeof(sock), "%s/lanternd.sock", dir);
	snprintf(bpffs, sizeof(bpffs), "/sys/fs/bpf/lantern-bench-spawn-%d", (int)getpid());
	snprintf(cgroot, sizeof(cgroot), "lantern-bench-spawn-%d", (int)getpid());
	snprintf(bare_cg, sizeof(bare_cg), "lantern-bench-bare-%d", (int)getpid());
	if (util_mkdir_p(dir, 0700) < 0)
		return -1;

	snprintf(cmd, sizeof(cmd), "scripts/mkimage.sh %s/img bench/busybox:1", dir);
	if (!(f = popen(cmd, "r")) || !fgets(ref, sizeof(ref), f)) {
		if (f)
			pclose(f);
		fprintf(stderr, "bench/spawn: scripts/mkimage.sh failed\n");
		return -1;
	}
	pclose(f);
	ref[strcspn(ref, "\n")] = '\0';
	snprintf(image, sizeof(image), "%s", ref);

	if (start_daemon(NULL) < 0)
		return -1;
	if (sh("%s/lantern --socket %s image import %s/img >/dev/null", build, sock, dir) != 0)
		return -1;
	for (int k = 0; k < 2; k++) {
		char *y = k ? yaml_runsc : yaml_runc;

		snprintf(y, sizeof(yaml_runc),
			 "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata: {name: clock}\nspec:\n"
			 "  image_digest: %s\n  isolation: %s\n  network: none\n"
			 "  command: [\"/bin/lantern-clock\"]\n",
			 image, k ? "standard" : "trusted");
		for (int slot = 0; slot < (k ? 1 : conc); slot++)
			if (write_bare_bundle(k, slot, y, k ? "runsc" : "runc") < 0)
				return -1;
	}
	return 0;
}

/* ---- statistics and the table ---- */

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

struct stats {
	double p50, p99, mean;
	int n;
};

static struct stats stats_of(const struct sample *s, int n, int which)
{
	int64_t *v = calloc((size_t)n + 1, sizeof(*v));
	struct stats st = { 0 };
	double sum = 0;
	int k = 0;

	for (int i = 0; i < n; i++) {
		int64_t x = which == 0 ? s[i].first : which == 1 ? s[i].accepted : s[i].total;
		if (s[i].ok) {
			v[k++] = x;
			sum += (double)x;
		}
	}
	if (k) {
		qsort(v, (size_t)k, sizeof(*v), cmp_i64);
		st.p50 = (double)v[(k - 1) / 2] / 1e6;
		st.p99 = (double)v[(k * 99 + 99) / 100 - 1] / 1e6;
		st.mean = sum / k / 1e6;
	}
	st.n = k;
	free(v);
	return st;
}

/* ---- throughput ---- */

struct tput {
	int k;            /* 0 lanternd (runc), 1 bare runc */
	int next_slot;
	int left;
	int done, failed;
	char (*ids)[32];  /* lanternd's run ids, when asked for */
	pthread_mutex_t mu;
};

static void *tput_worker(void *arg)
{
	struct tput *t = arg;
	static unsigned long seq = 1000000;
	int slot;

	pthread_mutex_lock(&t->mu);
	slot = t->next_slot++;
	pthread_mutex_unlock(&t->mu);
	for (;;) {
		struct sample s;
		unsigned long my;

		pthread_mutex_lock(&t->mu);
		if (t->left == 0) {
			pthread_mutex_unlock(&t->mu);
			return NULL;
		}
		t->left--;
		my = seq++;
		pthread_mutex_unlock(&t->mu);
		s = t->k == 0 ? spawn_lanternd(yaml_runc) : spawn_bare(0, slot, my);
		pthread_mutex_lock(&t->mu);
		if (t->ids && s.ok)
			snprintf(t->ids[t->done], 32, "%s", s.id);
		if (s.ok)
			t->done++;
		else
			t->failed++;
		pthread_mutex_unlock(&t->mu);
	}
}

static double throughput(int k, int *failed, char (*ids)[32])
{
	struct tput t = { .k = k, .left = n_tput, .ids = ids };
	pthread_t th[64];
	int64_t t0 = now_ns();
	int c = conc;

	pthread_mutex_init(&t.mu, NULL);
	for (int i = 0; i < c; i++)
		pthread_create(&th[i], NULL, tput_worker, &t);
	for (int i = 0; i < c; i++)
		pthread_join(th[i], NULL);
	*failed = t.failed;
	return t.done / ((double)(now_ns() - t0) / 1e9);
}

/* ---- pools ---- */

/* Run ids of lanternd's runs that came from a pool, with their claim's stages (µs):
 * admission, preparation, the waiter's exec. */
struct claimed {
	char id[32];
	char pool[64];
	int64_t us[3];
};

static size_t claimed_runs(struct claimed **out)
{
	json_t *req = json_pack("{s:s}", "op", "ps"), *res = call_op(req), *r;
	size_t i, n = 0;

	json_decref(req);
	*out = calloc(json_array_size(json_object_get(res, "runs")) + 1, sizeof(**out));
	json_array_foreach(json_object_get(res, "runs"), i, r) {
		json_t *p = json_object_get(r, "pool"), *st = json_object_get(p, "claim_us");

		if (!*out || !json_object_get(p, "name"))
			continue;
		snprintf((*out)[n].id, sizeof((*out)[n].id), "%s", json_string_value(json_object_get(r, "id")));
		snprintf((*out)[n].pool, sizeof((*out)[n].pool), "%s", json_string_value(json_object_get(p, "name")));
		(*out)[n].us[0] = json_integer_value(json_object_get(st, "admission"));
		(*out)[n].us[1] = json_integer_value(json_object_get(st, "prepare"));
		(*out)[n].us[2] = json_integer_value(json_object_get(st, "exec"));
		n++;
	}
	json_decref(res);
	return n;
}

static const struct claimed *claimed_find(const struct claimed *c, size_t n, const char *id)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(c[i].id, id))
			return &c[i];
	return NULL;
}

static double p50_of(int64_t *v, int n)
{
	if (!n)
		return 0;
	qsort(v, (size_t)n, sizeof(*v), cmp_i64);
	return (double)v[(n - 1) / 2];
}

/* lanternd again, with a pool per runtime of the benchmark spec's shape: claims one at
 * a time beside bare runs, then claims as fast as C submitters go. Returns failures. */
static int pools_phase(void)
{
	static const char *const names[2] = { "runc", "runsc" }, *const pool[2] = { "clock-runc", "clock-runsc" };
	struct sample *pl[2], *br[2];
	struct claimed *cl = NULL;
	size_t ncl;
	int bad = 0, fl = 0;
	char (*ids)[32] = calloc((size_t)n_tput, 32);
	double tp;
	FILE *f;

	snprintf(pools_path, sizeof(pools_path), "%s/pools.yaml", dir);
	if (!(f = fopen(pools_path, "w")))
		return 1;
	fprintf(f, "pools:\n  - name: clock-runc\n    image_digest: %s\n    isolation: trusted\n    size: {min: 4, max: 8}\n"
		"  - name: clock-runsc\n    image_digest: %s\n    isolation: standard\n    size: {min: 2, max: 2}\n",
		image, image);
	fclose(f);
	stop_daemon();
	if (start_daemon(pools_path) < 0)
		return 1;
	for (int k = 0; k < 2; k++) {
		pl[k] = calloc((size_t)n_spawns, sizeof(struct sample));
		br[k] = calloc((size_t)n_spawns, sizeof(struct sample));
		if (!pool_full(pool[k], 120000)) {
			fprintf(stderr, "bench/spawn: pool %s did not fill (%s/lanternd.log)\n", pool[k], dir);
			return 1;
		}
		/* warm-up claim */
		spawn_lanternd(k ? yaml_runsc : yaml_runc);
	}
	for (int i = 0; i < n_spawns; i++) {
		for (int k = 0; k < 2; k++) {
			if (!pool_full(pool[k], 60000))
				fprintf(stderr, "bench/spawn: pool %s not full before claim %d\n", pool[k], i);
			if (i % 2 == 0) {
				pl[k][i] = spawn_lanternd(k ? yaml_runsc : yaml_runc);
				br[k][i] = spawn_bare(k, 0, (unsigned long)(i + 1 + 100000));
			} else {
				br[k][i] = spawn_bare(k, 0, (unsigned long)(i + 1 + 100000));
				pl[k][i] = spawn_lanternd(k ? yaml_runsc : yaml_runc);
			}
		}
	}
	ncl = claimed_runs(&cl);
	printf("# pools: submission -> first instruction of a claimed sandbox (ms), %d claims per row, each with the pool "
	       "full; bare runs interleaved again\n", n_spawns);
	printf("%-8s %-10s %5s %9s %9s %9s %11s %11s %12s\n", "handler", "path", "ok", "p50", "p99", "mean", "+p50",
	       "+p99", "accepted p50");
	for (int k = 0; k < 2; k++) {
		int64_t st[3][n_spawns > 0 ? n_spawns : 1];
		int nst = 0, cold = 0;
		struct stats p, r, a;

		for (int i = 0; i < n_spawns; i++) {
			const struct claimed *c = claimed_find(cl, ncl, pl[k][i].id);

			if (pl[k][i].ok && !c) {
				pl[k][i].ok = false;
				cold++;
			}
			if (pl[k][i].ok) {
				for (int x = 0; x < 3; x++)
					st[x][nst] = c->us[x];
				nst++;
			}
		}
		p = stats_of(pl[k], n_spawns, 0);
		r = stats_of(br[k], n_spawns, 0);
		a = stats_of(pl[k], n_spawns, 1);
		printf("%-8s %-10s %5d %9.2f %9.2f %9.2f %11s %11s %12s\n", names[k], "bare", r.n, r.p50, r.p99, r.mean,
		       "-", "-", "-");
		printf("%-8s %-10s %5d %9.2f %9.2f %9.2f %+11.2f %+11.2f %12.2f\n", names[k], "pool", p.n, p.p50, p.p99,
		       p.mean, p.p50 - r.p50, p.p99 - r.p99, a.p50);
		printf("%-8s claim stages p50 (ms): admission %.2f, preparation %.2f, waiter exec %.2f; %d not from the "
		       "pool\n", names[k], p50_of(st[0], nst) / 1000, p50_of(st[1], nst) / 1000, p50_of(st[2], nst) / 1000,
		       cold);
		printf("target: claim -> first instruction p50 <= 5 ms (%s): %s (%.2f ms)\n", names[k],
		       p.p50 <= 5.0 ? "met" : "not met", p.p50);
		bad += (n_spawns - p.n - cold) + (n_spawns - r.n);
		free(pl[k]);
		free(br[k]);
	}
	free(cl);
	fflush(stdout);
	if (!n_tput) {
		free(ids);
		return bad;
	}
	tp = throughput(0, &fl, ids);
	ncl = claimed_runs(&cl);
	{
		int from_pool = 0;

		for (int i = 0; i < n_tput; i++)
			from_pool += ids[i][0] && claimed_find(cl, ncl, ids[i]) != NULL;
		printf("# throughput of claims with the pool refilling (clock-runc, size 4..8): %d spawns, %d concurrent "
		       "submitters\n", n_tput, conc);
		printf("%-20s %10.1f %8d   (%d of %d from the pool, the rest cold)\n", "lanternd + pool", tp, fl, from_pool,
		       n_tput - fl);
	}
	bad += fl;
	free(cl);
	free(ids);
	return bad;
}

/* The cold rows: lanternd and the bare runtime interleaved, then the throughput of
 * both. Returns failures. */
static int cold_rows(struct sample *s[2][2])
{
	static const char *const names[2] = { "runc", "runsc" };
	int bad = 0;

	for (int i = 0; i < n_spawns; i++) {
		for (int k = 0; k < 2; k++) {
			if (i % 2 == 0) {
				s[k][0][i] = spawn_lanternd(k ? yaml_runsc : yaml_runc);
				s[k][1][i] = spawn_bare(k, 0, (unsigned long)i + 1);
			} else {
				s[k][1][i] = spawn_bare(k, 0, (unsigned long)i + 1);
				s[k][0][i] = spawn_lanternd(k ? yaml_runsc : yaml_runc);
			}
		}
	}

	printf("# submission -> workload's first instruction (ms), %d spawns per row, network none\n", n_spawns);
	printf("%-8s %-10s %5s %9s %9s %9s %11s %11s %12s\n", "handler", "path", "ok", "p50", "p99", "mean",
	       "+p50", "+p99", "accepted p50");
	for (int k = 0; k < 2; k++) {
		struct stats l = stats_of(s[k][0], n_spawns, 0), r = stats_of(s[k][1], n_spawns, 0);
		struct stats a = stats_of(s[k][0], n_spawns, 1);

		printf("%-8s %-10s %5d %9.2f %9.2f %9.2f %11s %11s %12s\n", names[k], "bare", r.n, r.p50, r.p99, r.mean,
		       "-", "-", "-");
		printf("%-8s %-10s %5d %9.2f %9.2f %9.2f %+11.2f %+11.2f %12.2f\n", names[k], "lanternd", l.n, l.p50,
		       l.p99, l.mean, l.p50 - r.p50, l.p99 - r.p99, a.p50);
		bad += (n_spawns - l.n) + (n_spawns - r.n);
	}
	printf("# submission -> exit (ms)\n");
	for (int k = 0; k < 2; k++) {
		struct stats l = stats_of(s[k][0], n_spawns, 2), r = stats_of(s[k][1], n_spawns, 2);

		printf("%-8s bare p50 %.2f p99 %.2f | lanternd p50 %.2f p99 %.2f\n", names[k], r.p50, r.p99, l.p50,
		       l.p99);
	}
	fflush(stdout);
	if (n_tput) {
		int fl = 0, fb = 0;
		double tl = throughput(0, &fl, NULL), tb = throughput(1, &fb, NULL);

		printf("# throughput: %d spawns of the same spec, %d concurrent submitters, runc\n", n_tput, conc);
		printf("%-20s %10s %8s\n", "path", "spawns/s", "failed");
		printf("%-20s %10.1f %8d\n", "bare runc run", tb, fb);
		printf("%-20s %10.1f %8d\n", "lanternd (runc)", tl, fl);
		bad += fl + fb;
	}
	return bad;
}

int main(int argc, char **argv)
{
	struct sample *s[2][2];
	const char *b = getenv("LANTERN_BUILD");
	int opt, bad = 0;

	while ((opt = getopt(argc, argv, "n:m:c:p")) != -1) {
		switch (opt) {
		case 'n': n_spawns = atoi(optarg); break;
		case 'm': n_tput = atoi(optarg); break;
		case 'c': conc = atoi(optarg); break;
		case 'p': pools_only = true; break;
		default:
			fprintf(stderr, "usage: %s [-n SPAWNS] [-m THROUGHPUT_SPAWNS] [-c CONCURRENCY] [-p]\n", argv[0]);
			return 2;
		}
	}
	if (n_spawns < 1 || n_tput < 0 || conc < 1 || conc > 64)
		return 2;
	if (geteuid() != 0 || access("/usr/sbin/runc", X_OK) || access("/usr/bin/runsc", X_OK)) {
		fprintf(stderr, "bench/spawn: needs root, runc and runsc (make deps)\n");
		return 1;
	}
	if (b && *b)
		snprintf(build, sizeof(build), "%s", b);
	else if (!getcwd(build, sizeof(build) - 8))
		return 1;
	else
		strcat(build, "/build");
	if (sodium_init() < 0)
		return 1;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (setup() < 0) {
		cleanup();
		return 1;
	}
	for (int k = 0; k < 2; k++)
		for (int w = 0; w < 2; w++)
			s[k][w] = calloc((size_t)n_spawns, sizeof(struct sample));
	/* warm-up: page cache, the image root, the runtimes' binaries */
	for (int k = 0; k < 2; k++) {
		spawn_lanternd(k ? yaml_runsc : yaml_runc);
		spawn_bare(k, 0, 0);
	}
	if (!pools_only)
		bad += cold_rows(s);
	bad += pools_phase();
	for (int k = 0; k < 2; k++)
		for (int w = 0; w < 2; w++)
			free(s[k][w]);
	cleanup();
	return bad ? 1 : 0;
}
