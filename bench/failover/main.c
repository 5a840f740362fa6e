/* bench/failover: how long a node loss costs a run. One lantern-cp (PostgreSQL, a short
 * lease TTL: --ttl-ms, default 2000) and three lanternd (process runtime, each with its
 * own state, pins and cgroup root) replicating their journals to a journal store, all
 * on loopback and started here. Each round submits a two-step run whose first step
 * makes a side effect on a sink (a child of the benchmark) and then lingers; when the
 * sink sees that effect, the node running it is killed (lanternd, the shim and every
 * workload of the node, SIGKILL: a node loss). Failover is the time from the kill to
 * the resumed run's next step reaching the sink: the in-flight step run again by
 * another node, from the journal it claimed in the store. The killed node is started
 * again before the next round. Reported: p50/p99 over the rounds, against the target
 * of lease TTL + 2 s at p50.
 *
 *   build/bench/failover [--rounds N] [--ttl-ms MS]   (default 20 rounds, 2000 ms) */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/magic.h>

#include <jansson.h>

#include "../pgserver.h"
#include "lantern/util.h"

#define OPTOK "bench-failover-operator-token-0123456789"

static char dir[256], build[512], sink_log[600], token_file[600], marks[600];
static int ttl_ms = 2000, rounds = 20;
static uint16_t grpc, http, sink_port;
static pid_t cp, sink, node[3];
static char state[3][600], sock[3][600], pins[3][256], cgroot[3][128], flags[3][2048], plane[3][64];
static struct pgserver pg;

static uint64_t mono_ns(void)
{
	return util_now_ns(CLOCK_MONOTONIC);
}

static uint16_t free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	uint16_t p = 0;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		p = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return p;
}

static char *run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *run_cmd(const char *fmt, ...)
{
	char cmd[8192], *out = NULL;
	size_t n = 0, cap = 0;
	va_list ap;
	FILE *f;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (!(f = popen(cmd, "r")))
		return NULL;
	for (;;) {
		if (cap - n < 4096 && !(out = realloc(out, cap = cap ? cap * 2 : 8192)))
			break;
		size_t r = fread(out + n, 1, cap - n - 1, f);
		if (!r)
			break;
		n += r;
	}
	pclose(f);
	if (out)
		out[n] = '\0';
	return out;
}

static json_t *api(const char *method, const char *path, const char *body)
{
	char bf[700] = "/dev/null";
	char *out;
	json_t *j;

	if (body) {
		FILE *f;

		snprintf(bf, sizeof(bf), "%s/body.json", dir);
		if ((f = fopen(bf, "w"))) {
			fputs(body, f);
			fclose(f);
		}
	}
	out = run_cmd("curl -s -m 10 -X %s -H 'Authorization: Bearer %s' --data-binary @%s "
		      "http://127.0.0.1:%u%s", method, OPTOK, bf, http, path);
	j = out ? json_loads(out, 0, NULL) : NULL;
	free(out);
	return j;
}

static pid_t spawn_sh(const char *cmd)
{
	pid_t pid = fork();

	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* The sink: "PATH INSTANCE MONO_NS" per request. */
static void sink_serve(int lfd)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (;;) {
		int c = accept(lfd, NULL, NULL), fd;
		char buf[4096], path[256] = "?", inst[64] = "-", line[512], *h;
		size_t n = 0;
		uint64_t at;

		if (c < 0)
			continue;
		while (n < sizeof(buf) - 1) {
			ssize_t r = read(c, buf + n, sizeof(buf) - 1 - n);

			if (r <= 0)
				break;
			n += (size_t)r;
			buf[n] = '\0';
			if (strstr(buf, "\r\n\r\n"))
				break;
		}
		at = mono_ns();
		buf[n] = '\0';
		sscanf(buf, "%*s %255s", path);
		if ((h = strcasestr(buf, "\r\nX-Instance:")))
			sscanf(h + 13, " %63s", inst);
		n = (size_t)snprintf(line, sizeof(line), "%s %s %llu\n", path, inst, (unsigned long long)at);
		if ((fd = open(sink_log, O_WRONLY | O_APPEND | O_CREAT, 0600)) >= 0) {
			if (write(fd, line, n) < 0)
				_exit(1);
			close(fd);
		}
		static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
		if (write(c, ok, sizeof(ok) - 1) < 0) {
			close(c);
			continue;
		}
		close(c);
	}
}

/* The first sink hit of path by an instance other than not_inst: its time and instance. */
static bool sink_hit(const char *path, const char *not_inst, uint64_t *at, char *inst)
{
	char *buf = NULL;
	bool found = false;

	if (util_read_file(sink_log, &buf, NULL) < 0)
		return false;
	for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l && !found; l = strtok_r(NULL, "\n", &save)) {
		char p[256], i[64];
		unsigned long long t;

		if (sscanf(l, "%255s %63s %llu", p, i, &t) == 3 && !strcmp(p, path) &&
		    (!not_inst || strcmp(i, not_inst))) {
			*at = t;
			strcpy(inst, i);
			found = true;
		}
	}
	free(buf);
	return found;
}

static const char *cg2_root(void)
{
	struct statfs sf;

	return statfs("/sys/fs/cgroup/unified", &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC ?
	       "/sys/fs/cgroup/unified" : "/sys/fs/cgroup";
}

static bool node_start(int i)
{
	char cmd[4096];

	unlink(sock[i]);
	snprintf(cmd, sizeof(cmd), "exec %s/lanternd --state-dir %s --socket %s --bpffs %s --cgroup-root %s "
		 "--process-runtime %s >>%s/node%d.log 2>&1", build, state[i], sock[i], pins[i], cgroot[i],
		 flags[i], dir, i);
	node[i] = spawn_sh(cmd);
	for (int k = 0; k < 300; k++) {
		char path[128];
		json_t *p;
		bool ok;

		snprintf(path, sizeof(path), "/v1/data-planes/%s", plane[i]);
		p = api("GET", path, NULL);
		ok = json_is_true(json_object_get(p, "connected")) && json_is_true(json_object_get(p, "live"));
		json_decref(p);
		if (ok)
			return true;
		usleep(50000);
	}
	return false;
}

/* The node is lost: lanternd, the shims and every workload, SIGKILL. */
static void node_kill(int i)
{
	char path[800];
	struct dirent *de;
	DIR *d;

	kill(node[i], SIGKILL);
	waitpid(node[i], NULL, 0);
	node[i] = 0;
	snprintf(path, sizeof(path), "%s/runs", state[i]);
	if ((d = opendir(path))) {
		while ((de = readdir(d))) {
			char p[1200], *pid = NULL;

			if (de->d_name[0] == '.')
				continue;
			snprintf(p, sizeof(p), "%s/%s/shim.pid", path, de->d_name);
			if (util_read_file(p, &pid, NULL) == 0 && atoi(pid) > 0)
				kill(atoi(pid), SIGKILL);
			free(pid);
		}
		closedir(d);
	}
	snprintf(path, sizeof(path), "%s/%s/cgroup.kill", cg2_root(), cgroot[i]);
	util_write_str(path, "1");
}

static void cleanup(void)
{
	for (int i = 0; i < 3; i++) {
		char *o;

		if (node[i] > 0) {
			kill(node[i], SIGTERM);
			waitpid(node[i], NULL, 0);
		}
		o = run_cmd("%s/lantern reset --state-dir %s --bpffs %s --cgroup-root %s 2>&1", build, state[i],
			    pins[i], cgroot[i]);
		free(o);
	}
	if (cp > 0) {
		kill(cp, SIGTERM);
		waitpid(cp, NULL, 0);
	}
	if (sink > 0) {
		kill(sink, SIGKILL);
		waitpid(sink, NULL, 0);
	}
	pgserver_stop(&pg);
	if (!getenv("LANTERN_KEEP"))
		util_rm_rf(dir);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static bool setup(void)
{
	char pdir[300], cmd[4096], *o;
	int lfd;
	struct sockaddr_in a = { .sin_family = AF_INET };

	snprintf(pdir, sizeof(pdir), "%s-pg", dir);
	if (pgserver_start(&pg, pdir, free_port()) < 0) {
		fprintf(stderr, "bench/failover: PostgreSQL did not start (%s/postgres.log)\n", pdir);
		return false;
	}
	o = run_cmd("psql -At '%s' -c 'CREATE DATABASE journal' 2>&1", pg.url);
	free(o);
	snprintf(token_file, sizeof(token_file), "%s/operator.token", dir);
	{
		FILE *f = fopen(token_file, "w");

		if (!f)
			return false;
		fprintf(f, "%s\n", OPTOK);
		fclose(f);
	}
	/* the sink */
	snprintf(sink_log, sizeof(sink_log), "%s/sink.log", dir);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 512) < 0)
		return false;
	{
		socklen_t len = sizeof(a);

		getsockname(lfd, (struct sockaddr *)&a, &len);
		sink_port = ntohs(a.sin_port);
	}
	if ((sink = fork()) == 0)
		sink_serve(lfd);
	close(lfd);
	/* the control plane */
	grpc = free_port();
	http = free_port();
	snprintf(cmd, sizeof(cmd), "exec %s/lantern-cp --insecure --listen 127.0.0.1:%u --http 127.0.0.1:%u "
		 "--operator-token-file %s --database '%s' --heartbeat-interval 1 --metrics-interval 1 "
		 "--down-after 3 --ping-interval 1 --lease-ttl-ms %d --leader-ttl-ms 2000 >>%s/cp.log 2>&1",
		 build, grpc, http, token_file, pg.url, ttl_ms, dir);
	cp = spawn_sh(cmd);
	for (int k = 0; k < 200; k++) {
		json_t *j = api("GET", "/v1/control-plane", NULL);
		bool up = json_is_true(json_object_get(j, "leads"));

		json_decref(j);
		if (up)
			break;
		usleep(50000);
	}
	/* the nodes */
	for (int i = 0; i < 3; i++) {
		json_t *j = api("POST", "/v1/data-planes", "{\"tenant_id\":\"t1\",\"name\":\"failover\"}");
		char tf[700];
		FILE *f;

		if (!json_object_get(j, "bootstrap_token")) {
			json_decref(j);
			return false;
		}
		snprintf(plane[i], sizeof(plane[i]), "%s", json_string_value(json_object_get(j, "id")));
		snprintf(tf, sizeof(tf), "%s/n%d.token", dir, i);
		if ((f = fopen(tf, "w"))) {
			fprintf(f, "%s\n", json_string_value(json_object_get(j, "bootstrap_token")));
			fclose(f);
		}
		json_decref(j);
		snprintf(state[i], sizeof(state[i]), "%s/n%d/state", dir, i);
		snprintf(sock[i], sizeof(sock[i]), "%s/n%d.sock", dir, i);
		snprintf(pins[i], sizeof(pins[i]), "/sys/fs/bpf/lantern-bench-failover-%d-%d", getpid(), i);
		snprintf(cgroot[i], sizeof(cgroot[i]), "lantern-bench-failover-%d-%d", getpid(), i);
		snprintf(flags[i], sizeof(flags[i]), "--control-plane 127.0.0.1:%u --insecure --tenant t1 "
			 "--bootstrap-token-file %s --max-runs 8 --reconnect-max 1 "
			 "--journal-store postgres://lantern@127.0.0.1:%d/journal", grpc, tf, pg.port);
		if (!node_start(i))
			return false;
	}
	return true;
}

/* One node loss; the failover in ns, or 0. */
static uint64_t round_once(int k)
{
	char spec[4096], body[8192], path[64], path2[64], inst[64], inst2[64], run[64] = "";
	char *esc;
	uint64_t t_first, t_kill, t_next = 0;
	json_t *j, *b;
	int victim = -1;

	snprintf(spec, sizeof(spec),
		 "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: failover%d\nspec:\n"
		 "  image_digest: host\n  isolation: trusted\n  network: allowlist_domain\n"
		 "  egress_rules:\n    - pattern: tcp://127.0.0.1:%u\n  limits:\n    memory: 64Mi\n"
		 "  command: [\"/bin/sh\", \"-c\"]\n  args:\n    - |\n"
		 "      set -e; $LANTERN_CLI step s1 -- sh -c 'curl -sf -H \"X-Instance: $LANTERN_INSTANCE_ID\" "
		 "http://127.0.0.1:%u/f%d/s1; if [ ! -e %s/f%d ]; then touch %s/f%d; sleep 60; fi'; "
		 "$LANTERN_CLI step s2 -- curl -sf -H \"X-Instance: $LANTERN_INSTANCE_ID\" http://127.0.0.1:%u/f%d/s2\n",
		 k, sink_port, sink_port, k, marks, k, marks, k, sink_port, k);
	b = json_pack("{s:s, s:s}", "tenant_id", "t1", "spec", spec);
	esc = json_dumps(b, JSON_COMPACT);
	json_decref(b);
	snprintf(body, sizeof(body), "%s", esc);
	free(esc);
	j = api("POST", "/v1/runs", body);
	snprintf(run, sizeof(run), "%s", json_string_value(json_object_get(j, "id")) ?: "");
	json_decref(j);
	snprintf(path, sizeof(path), "/f%d/s1", k);
	snprintf(path2, sizeof(path2), "/v1/runs/%s", run);
	for (int w = 0; w < 400 && !sink_hit(path, NULL, &t_first, inst); w++)
		usleep(50000);
	j = api("GET", path2, NULL);
	for (int i = 0; i < 3; i++)
		if (!strcmp(plane[i], json_string_value(json_object_get(j, "plane_id")) ?: ""))
			victim = i;
	json_decref(j);
	if (victim < 0)
		return 0;
	t_kill = mono_ns();
	node_kill(victim);
	for (int w = 0; w < 600 && !t_next; w++) {
		if (!sink_hit(path, inst, &t_next, inst2))
			t_next = 0;
		if (!t_next)
			usleep(20000);
	}
	/* the run goes on to its end before the next round */
	for (int w = 0; w < 300; w++) {
		const char *st;

		j = api("GET", path2, NULL);
		st = json_string_value(json_object_get(j, "status")) ?: "";
		if (!strcmp(st, "succeeded") || !strcmp(st, "failed")) {
			if (strcmp(st, "succeeded"))
				fprintf(stderr, "bench/failover: round %d: run %s %s: %s\n", k, run, st,
					json_string_value(json_object_get(j, "detail")) ?: "");
			json_decref(j);
			break;
		}
		json_decref(j);
		usleep(100000);
	}
	if (!node_start(victim))
		fprintf(stderr, "bench/failover: node %d did not come back\n", victim);
	return t_next > t_kill ? t_next - t_kill : 0;
}

int main(int argc, char **argv)
{
	uint64_t *lat;
	int n = 0;
	char *self;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--ttl-ms") && i + 1 < argc)
			ttl_ms = atoi(argv[++i]);
	}
	if (geteuid() != 0 || rounds < 1 || ttl_ms < 300) {
		fprintf(stderr, "bench/failover: needs root (cgroups, BPF), --rounds >= 1, --ttl-ms >= 300\n");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	if ((self = realpath("/proc/self/exe", NULL))) {
		/* build/bench/failover -> build */
		snprintf(build, sizeof(build), "%s", self);
		*strrchr(build, '/') = '\0';
		*strrchr(build, '/') = '\0';
		free(self);
	}
	snprintf(dir, sizeof(dir), "/tmp/lantern-bench-failover-%d", getpid());
	snprintf(marks, sizeof(marks), "%s/marks", dir);
	util_mkdir_p(marks, 0777);
	chmod(dir, 0755);
	if (!setup()) {
		fprintf(stderr, "bench/failover: set-up failed; see %s\n", dir);
		cleanup();
		return 1;
	}
	lat = calloc((size_t)rounds, sizeof(*lat));
	for (int k = 0; k < rounds; k++) {
		uint64_t t = round_once(k);

		if (t)
			lat[n++] = t;
		fprintf(stderr, "bench/failover: round %d: %.0f ms\n", k, t / 1e6);
	}
	qsort(lat, (size_t)n, sizeof(*lat), cmp_u64);
	printf("bench/failover: node loss (lanternd, shim and workloads killed) during a step to the resumed "
	       "run's next step on another node\n");
	printf("lease TTL %d ms, 3 nodes, journal store and control plane on a private PostgreSQL\n", ttl_ms);
	printf("%-10s %8s %10s %10s %10s %10s\n", "", "losses", "p50 ms", "p99 ms", "min ms", "max ms");
	if (n)
		printf("%-10s %8d %10.0f %10.0f %10.0f %10.0f\n", "failover", n, lat[(n - 1) / 2] / 1e6,
		       lat[(n * 99 + 99) / 100 - 1] / 1e6, lat[0] / 1e6, lat[n - 1] / 1e6);
	printf("target p50 < lease TTL + 2 s (%d ms): %s\n", ttl_ms + 2000,
	       n && lat[(n - 1) / 2] / 1e6 < ttl_ms + 2000 ? "met" : "MISSED");
	free(lat);
	cleanup();
	return n == rounds ? 0 : 1;
}
