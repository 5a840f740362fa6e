/* bench/cri: how long a spawn takes to reach its workload's first instruction as a pod of
 * containerd, through lanternd --cri-endpoint with the lantern handler (lantern-oci binds
 * the pod's two containers to the run before runc runs them), side by side with the same
 * pod through containerd's plain runc handler and no lanternd at all.
 *
 * The workload is /bin/lantern-clock of the image scripts/mkimage.sh builds: its first
 * action prints CLOCK_REALTIME in nanoseconds. The latency of one spawn is that reading
 * minus CLOCK_REALTIME taken just before the request leaves the client:
 *   - lantern: a `run` request on lanternd's socket (isolation trusted, network
 *     allowlist_domain: the pod joins the node bridge). In the window: everything
 *     lanternd does before the workload (admission, image check in containerd, journal,
 *     cgroup, maps, DNS proxy), then RunPodSandbox, CreateContainer, StartContainer, with
 *     lantern-oci's bind of the sandbox and of the workload container on the way.
 *   - plain: the same three CRI calls made by this program, handler runc, the same
 *     image, command, labels, limits and the same bridge network (CNI), a cgroup parent
 *     the runtime makes itself; the reading taken from the container's CRI log.
 * Rounds alternate the order so neither side always runs on a warmer cache. Both sides
 * share one private containerd (own root, state, socket) started here.
 *
 * The handler alone, against a live run, every command started as containerd's shim
 * starts a runtime command (Go's os/exec: a vfork-style clone, here posix_spawn):
 *   - bind: lantern-oci's `create` of one more sandbox for the run, from its exec to
 *     lanternd's answer (the last check of the run's runtime refuses it: a run has one
 *     sandbox), which is everything a bind costs a container but the exec of runc that
 *     the plain handler does too;
 *   - a later command (`state` of the run's workload container, as `start` goes):
 *     through lantern-oci (its record read, runc exec'd in its place) against runc
 *     itself on the same state root.
 * A pod's path to its first instruction has two binds (sandbox, workload) and two
 * starts through lantern-oci: that sum is the binding of a pod.
 *
 * Pools (docs/pools.md "Pooled pods (CRI)"), in the same run, after the rows above:
 * lanternd is restarted with --pools, one pool of the benchmark spec's shape (its
 * image, isolation trusted, network bridge for the spec's allowlist_domain, no limits)
 * of size 2 (min = max). Once the pool is full, N claims, each the same run request
 * as a cold lantern pod, each started with the pool full again (no refill under way),
 * alternating with a plain runc pod (also started with the pool full). A claim's run
 * record (run.json's pool object) says it came from the pool; one that did not is
 * reported and left out. Printed: the claim beside the cold lantern pods of the rows
 * above and the plain handler, their ratios, and the claim's stages from the records'
 * pool.claim_us (admission, preparation, the waiter's exec).
 *
 * Throughput, in the same run: C submitters send the benchmark spec to lanternd until M
 * spawns have ended; spawns/s = those that ended well / the wall time from the first
 * submission to the last exit.
 * Cold lantern pods (lanternd without pools, after the handler rows), then claims with
 * the pool refilling (after the pool rows, the pool full at the start): each run's record
 * says whether the pool served it, none was ready (a miss: started cold) or its claim
 * failed (started cold, and counted as a failure).
 *
 *   build/bench/cri [-n SPAWNS_PER_SIDE] [-m THROUGHPUT_SPAWNS] [-c CONCURRENCY] [-p]
 *   (defaults 100, 40, 4; -p: the pool rows only, with the cold lantern pods they
 *   compare against but no plain rows before them and no handler rows; -m 0: no
 *   throughput rows) */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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

#include "lantern/cri.h"
#include "lantern/util.h"

static int n_spawns = 100, n_tput = 40, conc = 4;
static bool pools_only;
static char dir[256], state[300], sock[300], bpffs[256], cgroot[128], build[PATH_MAX], image[256];
static char ctd_sock[320], yaml[1024], net_bridge[32], net_subnet[64];
static pid_t ctd_pid, daemon_pid;

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

/* ---- lantern: a run request on lanternd's socket, its output followed ---- */

/* Returns the first instruction's latency; *accepted: when lanternd said the run is
 * accepted (its own start done: admission, instance, policy, the pod asked for); id
 * (optional, 32 bytes): the run's id from that answer. */
static int64_t spawn_lantern(int64_t *accepted, char *id)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	json_t *req = json_pack("{s:s, s:s, s:s, s:b}", "op", "run", "file", "clock.yaml", "yaml", yaml, "follow", 1);
	char *line = json_dumps(req, JSON_COMPACT), buf[65536];
	int64_t t0, first = 0;
	size_t have = 0;
	bool ok = false;
	int fd;

	json_decref(req);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock);
	t0 = now_ns();
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || write(fd, line, strlen(line)) < 0 ||
	    write(fd, "\n", 1) != 1)
		goto out;
	for (;;) {
		char *nl;
		ssize_t n;

		while ((nl = memchr(buf, '\n', have))) {
			json_t *m = json_loadb(buf, (size_t)(nl - buf), 0, NULL);
			const char *type = json_string_value(json_object_get(m, "type")) ?: "";

			if (!strcmp(type, "accepted") && accepted)
				*accepted = now_ns() - t0;
			if (!strcmp(type, "accepted") && id)
				snprintf(id, 32, "%s", json_string_value(json_object_get(m, "run_id")) ?: "");
			if (!strcmp(type, "output") && !first) {
				const char *d = json_string_value(json_object_get(m, "data")) ?: "";
				char bin[128];
				size_t bl = 0;

				if (sodium_base642bin((unsigned char *)bin, sizeof(bin) - 1, d, strlen(d), NULL, &bl, NULL,
						      sodium_base64_VARIANT_ORIGINAL) == 0) {
					bin[bl] = '\0';
					first = strtoll(bin, NULL, 10) - t0;
				}
			} else if (!strcmp(type, "exit") || !strcmp(type, "error")) {
				ok = !strcmp(json_string_value(json_object_get(m, "status")) ?: "", "succeeded");
				if (!ok) {
					char *dump = json_dumps(m, JSON_COMPACT);

					fprintf(stderr, "# lantern spawn failed: %s\n", dump ? dump : "?");
					free(dump);
				}
				json_decref(m);
				goto out;
			}
			json_decref(m);
			have -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, have);
		}
		if (have == sizeof(buf) || (n = read(fd, buf + have, sizeof(buf) - have)) <= 0)
			goto out;
		have += (size_t)n;
	}
out:
	if (fd >= 0)
		close(fd);
	free(line);
	return ok ? first : -1;
}

/* ---- throughput: C submitters on lanternd's socket until M spawns have ended ---- */

struct tput {
	pthread_mutex_t mu;
	int left, done, failed;
	char (*ids)[32]; /* the run ids of the spawns that ended well (M slots), or NULL */
};

static void *tput_worker(void *arg)
{
	struct tput *t = arg;

	for (;;) {
		char id[32] = "";
		int64_t lat;

		pthread_mutex_lock(&t->mu);
		if (t->left == 0) {
			pthread_mutex_unlock(&t->mu);
			return NULL;
		}
		t->left--;
		pthread_mutex_unlock(&t->mu);
		lat = spawn_lantern(NULL, id);
		pthread_mutex_lock(&t->mu);
		if (lat > 0 && t->ids)
			snprintf(t->ids[t->done], 32, "%s", id);
		if (lat > 0)
			t->done++;
		else
			t->failed++;
		pthread_mutex_unlock(&t->mu);
	}
}

/* n_tput spawns of the benchmark spec, conc at a time: spawns/s (of those that ended
 * well) from the first submission to the last exit. Failures into *failed; how many
 * ended well into *done, their run ids into ids (optional). */
static double throughput(int *failed, char (*ids)[32], int *done)
{
	struct tput t = { .left = n_tput, .ids = ids };
	pthread_t th[64];
	int64_t t0 = now_ns();
	int started = 0;

	pthread_mutex_init(&t.mu, NULL);
	for (int i = 0; i < conc; i++)
		if (pthread_create(&th[started], NULL, tput_worker, &t) == 0)
			started++;
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&t.mu);
	/* a submitter that could not start leaves its share to the others; none at all is a failure */
	*failed = started ? t.failed : n_tput;
	*done = t.done;
	return t.done / ((double)(now_ns() - t0) / 1e9);
}

/* ---- plain: the same pod through the runc handler, no lanternd ---- */

static int64_t spawn_plain(struct cri *c, int seq)
{
	char name[64], uid[40], logdir[400], cg[200], pod[80] = "", ctr[80] = "", log[500], *txt = NULL;
	static char *const cmd[] = { "/bin/lantern-clock", NULL };
	struct cri_kv labels[] = { { "io.kubernetes.pod.name", name }, { "io.kubernetes.pod.namespace", "lantern-bench" } };
	struct lerr e = { 0 };
	int64_t t0, first = -1;

	snprintf(name, sizeof(name), "plain-%d", seq);
	util_random_hex(uid, 16);
	snprintf(logdir, sizeof(logdir), "%s/plain/%d", dir, seq);
	snprintf(cg, sizeof(cg), "/%s-plain/p%d", cgroot, seq);
	snprintf(log, sizeof(log), "%s/c.log", logdir);
	util_mkdir_p(logdir, 0700);
	struct cri_pod p = { .name = name, .uid = uid, .ns = "lantern-bench", .hostname = name, .log_dir = logdir,
			     .cgroup_parent = cg, .handler = "runc", .labels = labels, .n_labels = 2 };
	struct cri_container ct = { .name = "workload", .image = image, .command = cmd, .log_path = "c.log",
				    .labels = labels, .n_labels = 2 };

	t0 = now_ns();
	if (cri_run_pod(c, &p, pod, sizeof(pod), &e) < 0 || cri_create_container(c, pod, &p, &ct, ctr, sizeof(ctr), &e) < 0 ||
	    cri_start_container(c, ctr, &e) < 0) {
		fprintf(stderr, "# plain spawn failed: %s\n", e.msg);
		goto out;
	}
	for (int i = 0; i < 2000 && first < 0; i++) {
		char *f;

		if (util_read_file(log, &txt, NULL) == 0 && (f = strstr(txt, " stdout F ")))
			first = strtoll(f + 10, NULL, 10) - t0;
		free(txt);
		txt = NULL;
		if (first < 0)
			usleep(2000);
	}
out:
	if (pod[0]) {
		cri_stop_pod(c, pod, &e);
		cri_remove_pod(c, pod, &e);
	}
	sh("for d in /sys/fs/cgroup/*/%s-plain/p%d; do [ -d $d ] && find $d -depth -type d -exec rmdir {} + 2>/dev/null; done; true",
	   cgroot, seq);
	return first;
}

/* ---- the binding alone ---- */

/* One request on lanternd's socket and its one-line answer (read to its newline). */
static json_t *ask(json_t *req)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char *line = json_dumps(req, JSON_COMPACT), buf[65536], *nl = NULL;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	size_t have = 0;

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && line && write(fd, line, strlen(line)) > 0 &&
	    write(fd, "\n", 1) == 1) {
		ssize_t n;

		while (!nl && have < sizeof(buf) && (n = read(fd, buf + have, sizeof(buf) - have)) > 0) {
			nl = memchr(buf + have, '\n', (size_t)n);
			have += (size_t)n;
		}
	}
	if (fd >= 0)
		close(fd);
	free(line);
	json_decref(req);
	return have ? json_loadb(buf, nl ? (size_t)(nl - buf) : have, 0, NULL) : NULL;
}

/* Wall time of one run of argv, started the way containerd's shim starts a runtime
 * command: Go's os/exec clones with CLONE_VM | CLONE_VFORK (no copy of the parent's
 * pages), which is what posix_spawn does; its output goes to /dev/null. -1 if it
 * could not run. */
static int64_t time_spawn(char *const argv[])
{
	static char env_sock[400];
	char *envp[] = { env_sock, "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL };
	posix_spawn_file_actions_t fa;
	int64_t t0;
	pid_t pid;
	int st;

	snprintf(env_sock, sizeof(env_sock), "LANTERN_SOCKET=%s", sock);
	if (posix_spawn_file_actions_init(&fa) || posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0) ||
	    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0))
		return -1;
	t0 = now_ns();
	st = posix_spawn(&pid, argv[0], &fa, NULL, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	if (st || waitpid(pid, &st, 0) != pid)
		return -1;
	return now_ns() - t0;
}

/* n runs of lantern-oci create with that root: wall times into v, how many ran. */
static int time_oci(const char *root, const char *bundle, const char *log, int64_t *v, int n)
{
	char oci[PATH_MAX + 16];
	char *argv[] = { oci, "--root", (char *)root, "--log", (char *)log, "--log-format", "json", "create",
			 "--bundle", (char *)bundle, "bench-bind", NULL };
	int got = 0;

	snprintf(oci, sizeof(oci), "%s/lantern-oci", build);
	for (int i = 0; i < n; i++) {
		int64_t t = time_spawn(argv);

		if (t > 0)
			v[got++] = t;
	}
	return got;
}

/* A command after create (`state` of the holder's live workload container, as the
 * shim's start and delete go): through lantern-oci (its record read, runc exec'd in
 * its place) into via, and runc itself on the same state root into direct,
 * alternating. How many pairs ran. */
static int time_pass(const char *root, const char *ctr, int64_t *via, int64_t *direct, int n)
{
	char oci[PATH_MAX + 16], runc_root[460];
	char *through[] = { oci, "--root", (char *)root, "state", (char *)ctr, NULL };
	char *plain[] = { "/usr/sbin/runc", "--root", runc_root, "state", (char *)ctr, NULL };
	int got = 0;

	snprintf(oci, sizeof(oci), "%s/lantern-oci", build);
	snprintf(runc_root, sizeof(runc_root), "%s/runc", root);
	for (int i = 0; i < n; i++) {
		int64_t a = i % 2 ? time_spawn(plain) : time_spawn(through);
		int64_t b = i % 2 ? time_spawn(through) : time_spawn(plain);

		if (a > 0 && b > 0) {
			via[got] = i % 2 ? b : a;
			direct[got++] = i % 2 ? a : b;
		}
	}
	return got;
}

/* What the handler costs, measured against a live run (the holder), n times each. */
struct bind_times {
	int64_t *bind;    /* lantern-oci create to lanternd's answer (a second sandbox: refused last) */
	int64_t *alone;   /* lantern-oci refusing before it asks lanternd (a root that is no handler's) */
	int64_t *via;     /* a later command (state) through lantern-oci */
	int64_t *direct;  /* the same command run by runc itself */
	int nbind, nalone, npass;
};

static int bench_bind(struct bind_times *bt, int n)
{
	char y[1024], path[600], *txt = NULL, bundle[400], root[400], log[400], *ann;
	json_t *r, *rec = NULL, *cfg;
	const char *id, *inst;
	int got = 0;

	snprintf(y, sizeof(y), "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: holder\nspec:\n"
		 "  image_digest: %s\n  isolation: trusted\n  command: [\"/bin/sleep\", \"120\"]\n", image);
	r = ask(json_pack("{s:s, s:s, s:s}", "op", "run", "file", "holder.yaml", "yaml", y));
	id = json_string_value(json_object_get(r, "run_id"));
	inst = json_string_value(json_object_get(r, "instance_id"));
	snprintf(path, sizeof(path), "%s/runs/%s/cri.json", state, id ? id : "-");
	for (int i = 0; id && i < 300 && !rec; i++, usleep(50000)) {
		json_t *j = util_read_file(path, &txt, NULL) == 0 ? json_loads(txt, 0, NULL) : NULL;

		free(txt);
		txt = NULL;
		if (j && *(json_string_value(json_object_get(j, "bound_container")) ?: ""))
			rec = j;
		else
			json_decref(j);
	}
	if (!rec) {
		json_decref(r);
		return 0;
	}
	snprintf(bundle, sizeof(bundle), "%s/bind", dir);
	snprintf(root, sizeof(root), "%s/h/lantern-trusted/k8s.io", dir);
	snprintf(log, sizeof(log), "%s/bind.log", dir);
	util_mkdir_p(bundle, 0700);
	snprintf(path, sizeof(path), "/%s/%s/bench", cgroot, inst);
	cfg = json_pack("{s:{s:s}, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:s}}", "linux", "cgroupsPath", path, "annotations",
			"io.kubernetes.cri.container-type", "sandbox", "io.kubernetes.cri.sandbox-id", "bench-bind",
			"io.kubernetes.cri.sandbox-namespace", "lantern-t-default", "io.kubernetes.cri.sandbox-name",
			json_string_value(json_object_get(rec, "pod_name")), "io.kubernetes.cri.sandbox-uid",
			json_string_value(json_object_get(rec, "pod_uid")), "lantern.dev/run-id", id,
			"lantern.dev/agent-instance-id", inst);
	ann = json_dumps(cfg, JSON_COMPACT);
	snprintf(path, sizeof(path), "%s/config.json", bundle);
	util_write_file_atomic(path, ann, strlen(ann));
	free(ann);
	json_decref(cfg);
	got = time_oci(root, bundle, log, bt->bind, n);
	bt->nalone = time_oci("/tmp/no-handler", bundle, log, bt->alone, n);
	bt->npass = time_pass(root, json_string_value(json_object_get(rec, "bound_container")), bt->via, bt->direct, n);
	json_decref(ask(json_pack("{s:s, s:s}", "op", "kill", "run_id", id)));
	json_decref(rec);
	json_decref(r);
	/* the bind of a refused sandbox names the reason in the log: it must be the last
	 * check, the one a real second sandbox meets */
	if (util_read_file(log, &txt, NULL) < 0 || !strstr(txt, "a second sandbox"))
		got = 0;
	free(txt);
	bt->nbind = got;
	return got;
}

/* ---- setup and teardown ---- */

/* Everything this run made: lanternd and its state (lantern reset), containerd, its
 * shims and what they ran, mounts and network namespaces under its directories, the
 * plain pods' cgroups, the bridge. Processes first, then what they held; cgroups and
 * directories are retried while the killed processes finish exiting. */
static void cleanup(void)
{
	if (daemon_pid > 0) {
		kill(daemon_pid, SIGTERM);
		waitpid(daemon_pid, NULL, 0);
		daemon_pid = 0;
	}
	if (ctd_pid > 0) {
		kill(ctd_pid, SIGTERM);
		waitpid(ctd_pid, NULL, 0);
		ctd_pid = 0;
	}
	sh("for p in $(pgrep -f 'containerd-shim-runc-v2 .*-address %s'); do kill -9 $p; done; "
	   "for d in $(find /sys/fs/cgroup/*/%s-plain -name cgroup.procs 2>/dev/null); do "
	   "for p in $(cat $d); do kill -9 $p; done; done; pkill -9 -f 'root=%s/h' ; sleep 0.5; "
	   "for m in $(grep '%s' /proc/mounts | awk '{print $2}' | sort -r); do umount -l $m; done",
	   ctd_sock, cgroot, dir, dir);
	sh("%s/lantern reset --state-dir %s --bpffs %s --cgroup-root %s >/dev/null 2>&1", build, state, bpffs, cgroot);
	sh("for i in 1 2 3 4 5; do for d in /sys/fs/cgroup/*/%s-plain; do [ -d $d ] && "
	   "find $d -depth -type d -exec rmdir {} + 2>/dev/null; done; rm -rf %s 2>/dev/null; "
	   "ls -d /sys/fs/cgroup/*/%s-plain %s >/dev/null 2>&1 || break; sleep 0.5; done; "
	   "ip link del lbcri%d 2>/dev/null; true", cgroot, dir, cgroot, dir, (int)getpid() % 100000);
}

static void on_signal(int sig)
{
	cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* lanternd --cri-endpoint on this run's containerd, with the pools file or without
 * pools; its stderr into DIR/lanternd.log (DIR/lanternd-pools.log with pools). */
static int start_daemon(const char *pools)
{
	unlink(sock);
	if ((daemon_pid = fork()) == 0) {
		char ep[400], log[320];

		snprintf(ep, sizeof(ep), "unix://%s", ctd_sock);
		snprintf(log, sizeof(log), "%s/lanternd%s.log", dir, pools ? "-pools" : "");
		if (!freopen(pools ? log : "/dev/null", "w", stderr))
			_exit(127);
		if (pools)
			execl(strcat(strcpy((char[300]){ 0 }, build), "/lanternd"), "lanternd", "--state-dir", state,
			      "--socket", sock, "--bpffs", bpffs, "--cgroup-root", cgroot, "--cri-endpoint", ep,
			      "--net-bridge", net_bridge, "--net-subnet", net_subnet, "--pools", pools, (char *)NULL);
		else
			execl(strcat(strcpy((char[300]){ 0 }, build), "/lanternd"), "lanternd", "--state-dir", state,
			      "--socket", sock, "--bpffs", bpffs, "--cgroup-root", cgroot, "--cri-endpoint", ep,
			      "--net-bridge", net_bridge, "--net-subnet", net_subnet, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200 && !util_unix_socket_alive(sock); i++)
		usleep(50000);
	return util_unix_socket_alive(sock) ? 0 : -1;
}

static int setup(void)
{
	char net[64], bridge[32], *p;
	FILE *f;

	snprintf(bridge, sizeof(bridge), "lbcri%d", (int)getpid() % 100000);
	snprintf(net, sizeof(net), "10.%d.%d.0/24", 250 + (int)getpid() % 5, (int)getpid() / 5 % 250);
	if (sh("scripts/mkimage.sh %s/img docker.io/bench/clock:1 > %s/ref && tar -C %s/img -cf %s/img.tar . && "
	       "scripts/mkpause.sh %s/pause.tar >/dev/null", dir, dir, dir, dir, dir))
		return fprintf(stderr, "# bench/cri: cannot build the images\n"), -1;
	if (!(f = fopen(strcat(strcpy((char[320]){ 0 }, dir), "/ref"), "r")) || !fgets(image, sizeof(image), f))
		return -1;
	fclose(f);
	if ((p = strchr(image, '\n')))
		*p = '\0';
	/* the node's CNI directory is lantern's: plain pods join the same bridge */
	if (sh("%s/lantern node containerd-config --state-dir %s --handler-root %s/h --lantern-oci %s/lantern-oci "
	       "--cni-conf-dir %s/cni --write-cni --net-bridge %s --net-subnet %s --node-cni-conf-dir %s/cni "
	       "--restrict-oom-score-adj > %s/dropin.toml 2>/dev/null && "
	       "sed -i 's|^  sandbox_image = .*|&\\n  netns_mounts_under_state_dir = true|' %s/dropin.toml",
	       build, state, dir, build, dir, bridge, net, dir, dir, dir))
		return fprintf(stderr, "# bench/cri: lantern node containerd-config failed\n"), -1;
	if (!(f = fopen(strcat(strcpy((char[320]){ 0 }, dir), "/config.toml"), "w")))
		return -1;
	fprintf(f, "version = 2\nroot = \"%s/root\"\nstate = \"%s/cstate\"\nimports = [\"%s/dropin.toml\"]\n"
		   "[grpc]\n  address = \"%s\"\n[ttrpc]\n  address = \"%s.ttrpc\"\n", dir, dir, dir, ctd_sock, ctd_sock);
	fclose(f);
	if ((ctd_pid = fork()) == 0) {
		char cfg[320];

		snprintf(cfg, sizeof(cfg), "%s/config.toml", dir);
		setenv("LANTERN_SOCKET", sock, 1);
		if (!freopen("/dev/null", "w", stderr))
			_exit(127);
		execlp("containerd", "containerd", "--config", cfg, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200 && !util_unix_socket_alive(ctd_sock); i++)
		usleep(50000);
	if (sh("C='ctr -a %s -n k8s.io'; $C images import %s/pause.tar >/dev/null && $C images import %s/img.tar >/dev/null "
	       "&& $C images tag docker.io/bench/clock:1 %s >/dev/null", ctd_sock, dir, dir, image))
		return fprintf(stderr, "# bench/cri: containerd did not start or import the images\n"), -1;
	snprintf(net_bridge, sizeof(net_bridge), "%s", bridge);
	snprintf(net_subnet, sizeof(net_subnet), "%s", net);
	if (start_daemon(NULL) < 0)
		return -1;
	snprintf(yaml, sizeof(yaml),
		 "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: clock\nspec:\n  image_digest: %s\n"
		 "  isolation: trusted\n  network: allowlist_domain\n  command: [\"/bin/lantern-clock\"]\n", image);
	return util_unix_socket_alive(sock) ? 0 : -1;
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct(int64_t *v, int n, double p)
{
	int i = (int)(p * (n - 1) + 0.5);

	return n ? (double)v[i] / 1e6 : 0;
}

/* ---- pools: claims of a pooled pod ---- */

#define POOL_NAME "bench-clock"
#define POOL_SIZE 2

/* Waits until the pool is full: ready at its target (its size: min == max) and nothing
 * being made, so no refill is under way. */
static bool pool_full(int ms)
{
	for (int i = 0; i < ms / 20; i++) {
		json_t *res = ask(json_pack("{s:s}", "op", "pools")), *p;
		bool full = false;
		size_t k;

		json_array_foreach(json_object_get(res, "pools"), k, p)
			if (!strcmp(json_string_value(json_object_get(p, "name")) ?: "", POOL_NAME))
				full = json_integer_value(json_object_get(p, "target")) == POOL_SIZE &&
				       json_integer_value(json_object_get(p, "ready")) == POOL_SIZE &&
				       !json_integer_value(json_object_get(p, "starting"));
		json_decref(res);
		if (full)
			return true;
		usleep(20000);
	}
	return false;
}

/* The run record's pool object (STATE/runs/ID/run.json): 1 and the claim's stages (µs:
 * admission, preparation, the waiter's exec) when the run claimed a pooled pod, 0 when
 * it did not (into why: the failed claim's reason, empty for a miss: no pool object),
 * -1 when there is no record. */
static int claim_record(const char *id, int64_t us[3], char *why, size_t whylen)
{
	char path[600], *txt = NULL;
	json_t *j, *p, *st;
	int rc = -1;

	snprintf(why, whylen, "no run record");
	snprintf(path, sizeof(path), "%s/runs/%s/run.json", state, id);
	if (!*id || util_read_file(path, &txt, NULL) < 0)
		return -1;
	if ((j = json_loads(txt, 0, NULL))) {
		p = json_object_get(j, "pool");
		st = json_object_get(p, "claim_us");
		rc = json_object_get(p, "name") && st;
		if (rc) {
			us[0] = json_integer_value(json_object_get(st, "admission"));
			us[1] = json_integer_value(json_object_get(st, "prepare"));
			us[2] = json_integer_value(json_object_get(st, "exec"));
		} else {
			snprintf(why, whylen, "%s", json_string_value(json_object_get(p, "fallback")) ?: "");
		}
		json_decref(j);
	}
	free(txt);
	return rc;
}

struct pool_times {
	int64_t *claim, *acc, *plain, *st[3];
	int n, nplain, failed, failed_plain, cold;
};

/* The throughput rows: cold lantern pods, then claims with the pool refilling; how the
 * claims' runs started, from their records. */
struct tput_times {
	double cold, claims;
	int n_cold, n_claims, failed_cold, failed_claims;
	int served, missed, claim_failed, no_record;
};

/* Claims as fast as conc submitters go while the pool refills, from a full pool; each
 * ended run's record says how it started. */
static void claims_throughput(struct tput_times *tt)
{
	char (*ids)[32] = calloc((size_t)n_tput, 32), why[128];
	int64_t us[3];

	if (!ids) {
		tt->failed_claims = n_tput;
		return;
	}
	if (!pool_full(60000))
		fprintf(stderr, "# bench/cri: pool not full before the throughput of claims\n");
	tt->claims = throughput(&tt->failed_claims, ids, &tt->n_claims);
	for (int i = 0; i < tt->n_claims; i++) {
		switch (claim_record(ids[i], us, why, sizeof(why))) {
		case 1:
			tt->served++;
			break;
		case 0:
			if (*why) {
				fprintf(stderr, "# bench/cri: run %s: its claim failed (%s), started cold\n", ids[i], why);
				tt->claim_failed++;
			} else {
				tt->missed++;
			}
			break;
		default:
			fprintf(stderr, "# bench/cri: run %s: no run record\n", ids[i]);
			tt->no_record++;
		}
	}
	free(ids);
}

/* lanternd again, with a pool of the benchmark spec's shape (its image, isolation
 * trusted, network bridge for the spec's allowlist_domain, no limits: unset is unset).
 * Each claim and each plain pod starts with the pool full; they alternate who goes
 * first. Then the throughput of claims. Returns 0 when the pool filled. */
static int pools_phase(struct cri *c, struct pool_times *pt, struct tput_times *tt, int n)
{
	char path[320], id[32], why[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/pools.yaml", dir);
	if (!(f = fopen(path, "w")))
		return -1;
	fprintf(f, "pools:\n  - name: " POOL_NAME "\n    image_digest: %s\n    isolation: trusted\n    network: bridge\n"
		   "    size: {min: %d, max: %d}\n", image, POOL_SIZE, POOL_SIZE);
	fclose(f);
	if (daemon_pid > 0) {
		kill(daemon_pid, SIGTERM);
		waitpid(daemon_pid, NULL, 0);
		daemon_pid = 0;
	}
	if (start_daemon(path) < 0 || !pool_full(180000)) {
		fprintf(stderr, "# bench/cri: the pool did not fill; lanternd's log ends:\n");
		sh("tail -n 20 %s/lanternd-pools.log >&2", dir);
		return -1;
	}
	/* warm-up: a claim and a plain pod, as the rows above had theirs */
	for (int i = 0; i < 2; i++) {
		pool_full(60000);
		spawn_lantern(NULL, NULL);
		spawn_plain(c, 300000 + i);
	}
	for (int i = 0; i < n; i++) {
		for (int k = 0; k < 2; k++) {
			int64_t t, acc = 0, us[3];
			int r;

			if (!pool_full(60000))
				fprintf(stderr, "# bench/cri: pool not full before claim %d\n", i);
			if ((i % 2) ^ k) {
				if ((t = spawn_plain(c, 200000 + i)) > 0)
					pt->plain[pt->nplain++] = t;
				else
					pt->failed_plain++;
				continue;
			}
			id[0] = '\0';
			if ((t = spawn_lantern(&acc, id)) <= 0) {
				pt->failed++;
				continue;
			}
			if ((r = claim_record(id, us, why, sizeof(why))) != 1) {
				fprintf(stderr, "# bench/cri: run %s did not come from the pool (%s): left out\n", id,
					*why ? why : "no pool object");
				pt->cold++;
				continue;
			}
			pt->acc[pt->n] = acc;
			for (int x = 0; x < 3; x++)
				pt->st[x][pt->n] = us[x];
			pt->claim[pt->n++] = t;
		}
	}
	if (n_tput)
		claims_throughput(tt);
	return 0;
}

/* The pool rows: the claim beside the cold lantern pod of the same spec (the rows above,
 * sorted) and the plain handler interleaved with the claims. */
static void print_pools(struct pool_times *pt, int64_t *cold, int ncold, bool ok)
{
	double c50, c99;

	qsort(pt->claim, (size_t)pt->n, sizeof(int64_t), cmp64);
	qsort(pt->acc, (size_t)pt->n, sizeof(int64_t), cmp64);
	qsort(pt->plain, (size_t)pt->nplain, sizeof(int64_t), cmp64);
	for (int x = 0; x < 3; x++)
		qsort(pt->st[x], (size_t)pt->n, sizeof(int64_t), cmp64);
	c50 = pct(pt->claim, pt->n, 0.5);
	c99 = pct(pt->claim, pt->n, 0.99);
	printf("# pools under --cri-endpoint: submission to the first instruction of a claimed pod (ms), pool \"%s\" "
	       "of the spec's shape (trusted, bridge), size %d, each claim and each plain pod with the pool full%s\n",
	       POOL_NAME, POOL_SIZE, ok ? "" : " (THE POOL DID NOT FILL)");
	printf("%-50s %6s %8s %8s %8s\n", "path", "n", "p50", "p99", "failed");
	printf("%-50s %6d %8.2f %8.2f %8d\n", "CRI pool claim, handler lantern-trusted", pt->n, c50, c99, pt->failed);
	printf("%-50s %6d %8.2f %8.2f\n", "  lanternd's answer \"accepted\"", pt->n, pct(pt->acc, pt->n, 0.5),
	       pct(pt->acc, pt->n, 0.99));
	printf("%-50s %6d %8.2f %8.2f\n", "lanternd --cri-endpoint cold, the same spec", ncold, pct(cold, ncold, 0.5),
	       pct(cold, ncold, 0.99));
	printf("%-50s %6d %8.2f %8.2f %8d\n", "CRI direct, handler runc (among the claims)", pt->nplain,
	       pct(pt->plain, pt->nplain, 0.5), pct(pt->plain, pt->nplain, 0.99), pt->failed_plain);
	printf("%-50s %6s %7.1fx %7.1fx\n", "ratio cold lantern / claim", "", ncold && c50 > 0 ? pct(cold, ncold, 0.5) / c50 : 0,
	       ncold && c99 > 0 ? pct(cold, ncold, 0.99) / c99 : 0);
	printf("%-50s %6s %7.1fx %7.1fx\n", "ratio plain runc / claim", "",
	       pt->nplain && c50 > 0 ? pct(pt->plain, pt->nplain, 0.5) / c50 : 0,
	       pt->nplain && c99 > 0 ? pct(pt->plain, pt->nplain, 0.99) / c99 : 0);
	printf("%-50s %6d %8.2f %8.2f\n", "claim stage: admission (pool.claim_us)", pt->n, pct(pt->st[0], pt->n, 0.5) * 1000,
	       pct(pt->st[0], pt->n, 0.99) * 1000);
	printf("%-50s %6d %8.2f %8.2f\n", "claim stage: preparation", pt->n, pct(pt->st[1], pt->n, 0.5) * 1000,
	       pct(pt->st[1], pt->n, 0.99) * 1000);
	printf("%-50s %6d %8.2f %8.2f\n", "claim stage: the waiter's exec", pt->n, pct(pt->st[2], pt->n, 0.5) * 1000,
	       pct(pt->st[2], pt->n, 0.99) * 1000);
	printf("%-50s %6d\n", "claims not from the pool (left out)", pt->cold);
	printf("target: CRI pool claim -> first instruction p50 <= 5 ms: %s (%.2f ms)\n",
	       pt->n && c50 <= 5.0 ? "met" : "not met", c50);
}

/* The throughput rows: claims with the pool refilling beside cold lantern pods of the
 * same spec, and how the claims' runs started. */
static void print_tput(const struct tput_times *tt)
{
	printf("# throughput: %d spawns of the same spec, %d concurrent submitters, the first submission to the last "
	       "exit (spawns/s); claims from a full pool \"%s\" of size %d, refilling\n", n_tput, conc, POOL_NAME,
	       POOL_SIZE);
	printf("%-50s %6s %8s %8s\n", "path", "n", "spawns/s", "failed");
	printf("%-50s %6d %8.2f %8d\n", "lanternd --cri-endpoint cold, the same spec", tt->n_cold, tt->cold,
	       tt->failed_cold);
	printf("%-50s %6d %8.2f %8d\n", "CRI pool claims, the pool refilling", tt->n_claims, tt->claims,
	       tt->failed_claims + tt->claim_failed + tt->no_record);
	printf("%-50s %6d\n", "  served by the pool", tt->served);
	printf("%-50s %6d\n", "  none ready: started cold (a miss)", tt->missed);
	printf("%-50s %6d\n", "  the claim failed: started cold (failed)", tt->claim_failed);
	printf("%-50s %6d\n", "  no run record (failed)", tt->no_record);
	printf("%-50s %6s %7.2fx\n", "ratio claims / cold", "", tt->cold > 0 ? tt->claims / tt->cold : 0);
}

int main(int argc, char **argv)
{
	int64_t *lat[2], *acc;
	struct bind_times bt = { 0 };
	struct pool_times pt = { 0 };
	struct tput_times tt = { 0 };
	bool pool_ok;
	int n[2] = { 0, 0 }, failed[2] = { 0, 0 }, ch, rc = 0;
	double pass_adds;
	struct cri *c = NULL;
	struct lerr e = { 0 };
	const char *b = getenv("LANTERN_BUILD");
	char endpoint[400];

	while ((ch = getopt(argc, argv, "n:m:c:p")) != -1) {
		switch (ch) {
		case 'n': n_spawns = atoi(optarg) > 0 ? atoi(optarg) : n_spawns; break;
		case 'm': n_tput = atoi(optarg); break;
		case 'c': conc = atoi(optarg); break;
		case 'p': pools_only = true; break;
		default:
			fprintf(stderr, "usage: %s [-n SPAWNS_PER_SIDE] [-m THROUGHPUT_SPAWNS] [-c CONCURRENCY] [-p]\n",
				argv[0]);
			return 2;
		}
	}
	if (n_tput < 0 || conc < 1 || conc > 64)
		return 2;
	if (sodium_init() < 0)
		return 1;
	/* absolute: containerd execs lantern-oci from the path in the drop-in */
	if (!realpath(b && *b ? b : "build", build)) {
		fprintf(stderr, "# bench/cri: no build directory\n");
		return 1;
	}
	snprintf(dir, sizeof(dir), "/tmp/lantern-bench-cri-%d", (int)getpid());
	snprintf(state, sizeof(state), "%s/state", dir);
	snprintf(sock, sizeof(sock), "%s/lanternd.sock", dir);
	snprintf(ctd_sock, sizeof(ctd_sock), "%s/containerd.sock", dir);
	snprintf(bpffs, sizeof(bpffs), "/sys/fs/bpf/lantern-bench-cri-%d", (int)getpid());
	snprintf(cgroot, sizeof(cgroot), "lantern-bench-cri-%d", (int)getpid());
	util_mkdir_p(dir, 0700);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	lat[0] = calloc((size_t)n_spawns, sizeof(int64_t));
	lat[1] = calloc((size_t)n_spawns, sizeof(int64_t));
	acc = calloc((size_t)n_spawns + 1, sizeof(int64_t));
	bt.bind = calloc((size_t)n_spawns, sizeof(int64_t));
	bt.alone = calloc((size_t)n_spawns, sizeof(int64_t));
	bt.via = calloc((size_t)n_spawns, sizeof(int64_t));
	bt.direct = calloc((size_t)n_spawns, sizeof(int64_t));
	pt.claim = calloc((size_t)n_spawns, sizeof(int64_t));
	pt.acc = calloc((size_t)n_spawns, sizeof(int64_t));
	pt.plain = calloc((size_t)n_spawns, sizeof(int64_t));
	for (int x = 0; x < 3; x++)
		if (!(pt.st[x] = calloc((size_t)n_spawns, sizeof(int64_t))))
			return 1;
	snprintf(endpoint, sizeof(endpoint), "unix://%s", ctd_sock);
	if (!lat[0] || !lat[1] || !acc || !pt.claim || !pt.acc || !pt.plain || !bt.bind || !bt.alone || !bt.via || !bt.direct || setup() < 0 || cri_open(endpoint, 60000, &c, &e) < 0) {
		fprintf(stderr, "# bench/cri: setup failed (containerd, images or lanternd) %s\n", e.msg);
		cleanup();
		return 1;
	}
	/* warm both paths: images unpacked, shims and runtimes in the page cache */
	for (int i = 0; i < 3; i++) {
		spawn_lantern(NULL, NULL);
		spawn_plain(c, 100000 + i);
	}
	for (int i = 0; i < n_spawns; i++) {
		for (int k = 0; k < 2; k++) {
			int side = (i % 2) ^ k;
			int64_t t;

			/* -p: the cold lantern pods only, for the pool rows' comparison */
			if (side && pools_only)
				continue;
			t = side ? spawn_plain(c, i) : spawn_lantern(&acc[n[0]], NULL);
			if (t > 0)
				lat[side][n[side]++] = t;
			else
				failed[side]++;
		}
	}
	if (!pools_only)
		bench_bind(&bt, n_spawns);
	if (n_tput)
		tt.cold = throughput(&tt.failed_cold, NULL, &tt.n_cold);
	sleep(4);
	pool_ok = pools_phase(c, &pt, &tt, n_spawns) == 0;
	cri_close(c);
	cleanup();
	qsort(bt.bind, (size_t)bt.nbind, sizeof(int64_t), cmp64);
	qsort(bt.alone, (size_t)bt.nalone, sizeof(int64_t), cmp64);
	qsort(bt.via, (size_t)bt.npass, sizeof(int64_t), cmp64);
	qsort(bt.direct, (size_t)bt.npass, sizeof(int64_t), cmp64);
	qsort(acc, (size_t)n[0], sizeof(int64_t), cmp64);
	qsort(lat[0], (size_t)n[0], sizeof(int64_t), cmp64);
	qsort(lat[1], (size_t)n[1], sizeof(int64_t), cmp64);
	if (!pools_only) {
		printf("# submission to the workload's first instruction, pod through containerd %s (ms)\n", "1.6");
		printf("%-44s %6s %8s %8s %8s\n", "path", "n", "p50", "p99", "failed");
		printf("%-44s %6d %8.1f %8.1f %8d\n", "lanternd --cri-endpoint, handler lantern-trusted", n[0], pct(lat[0], n[0], 0.5),
		       pct(lat[0], n[0], 0.99), failed[0]);
		printf("%-44s %6d %8.1f %8.1f %8d\n", "CRI direct, handler runc (no lanternd)", n[1], pct(lat[1], n[1], 0.5),
		       pct(lat[1], n[1], 0.99), failed[1]);
		printf("%-44s %6d %8.1f %8.1f\n", "  lanternd's answer \"accepted\" (its own start)", n[0], pct(acc, n[0], 0.5),
		       pct(acc, n[0], 0.99));
		printf("%-44s %6s %8.1f %8.1f\n", "lantern adds", "", pct(lat[0], n[0], 0.5) - pct(lat[1], n[1], 0.5),
		       pct(lat[0], n[0], 0.99) - pct(lat[1], n[1], 0.99));
		pass_adds = pct(bt.via, bt.npass, 0.5) - pct(bt.direct, bt.npass, 0.5);
		printf("# the handler, each command started as the shim starts it (vfork), against a live run (ms)\n");
		printf("%-50s %6d %8.2f %8.2f\n", "bind: lantern-oci create to lanternd's answer", bt.nbind,
		       pct(bt.bind, bt.nbind, 0.5), pct(bt.bind, bt.nbind, 0.99));
		printf("%-50s %6d %8.2f %8.2f\n", "  lantern-oci alone (refused before asking)", bt.nalone,
		       pct(bt.alone, bt.nalone, 0.5), pct(bt.alone, bt.nalone, 0.99));
		printf("%-50s %6d %8.2f %8.2f\n", "a later command (state) through lantern-oci", bt.npass,
		       pct(bt.via, bt.npass, 0.5), pct(bt.via, bt.npass, 0.99));
		printf("%-50s %6d %8.2f %8.2f\n", "  the same command, runc itself", bt.npass, pct(bt.direct, bt.npass, 0.5),
		       pct(bt.direct, bt.npass, 0.99));
		printf("%-50s %6s %8.2f\n", "  lantern-oci adds to a later command", "", pass_adds);
		/* a pod's path to its first instruction: create and start of the sandbox and of
		 * the workload container, each through lantern-oci */
		printf("%-50s %6s %8.2f\n", "the binding of a pod: 2 binds + 2 starts through it", "",
		       2 * pct(bt.bind, bt.nbind, 0.5) + 2 * pass_adds);
	}
	print_pools(&pt, lat[0], n[0], pool_ok);
	if (n_tput)
		print_tput(&tt);
	if (failed[0] || failed[1] || !n[0] || (!pools_only && (!n[1] || !bt.nbind || !bt.npass)))
		rc = 1;
	if (!pool_ok || pt.failed || pt.failed_plain || pt.cold || !pt.n || !pt.nplain)
		rc = 1;
	if (n_tput && (tt.failed_cold || tt.failed_claims || tt.claim_failed || tt.no_record || !tt.served))
		rc = 1;
	free(pt.claim);
	free(pt.acc);
	free(pt.plain);
	for (int x = 0; x < 3; x++)
		free(pt.st[x]);
	free(bt.bind);
	free(bt.alone);
	free(bt.via);
	free(bt.direct);
	free(lat[0]);
	free(lat[1]);
	free(acc);
	return rc;
}
