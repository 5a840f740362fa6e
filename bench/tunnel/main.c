/* bench/tunnel: what the control plane adds to a spawn. One lantern-cp (SQLite, plaintext
 * gRPC on loopback) and three lanternd registered with it, all started here with their own
 * state, pins and cgroup roots. Measured in the same run:
 *   - submit-to-running through lantern-cp: POST /v1/runs received (created_us, stamped
 *     by lantern-cp) to the node's RUNNING report recorded (running_us), for a trivial
 *     process-runtime spawn, one run at a time;
 *   - the same spawn started locally (the peer): the local API's run request sent on
 *     lanternd's socket to its "accepted" answer, which lanternd sends once the workload
 *     started, one at a time; rounds of both alternate;
 *   - dispatch throughput: a burst of runs submitted back to back; assignments placed per
 *     second (lantern-cp), accepted by the nodes per second, and completed per second. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "lantern/util.h"

#define OPTOK  "bench-tunnel-operator-token-0123456789"
#define NODES  3
#define ROUNDS 10
#define PER_ROUND 20
#define BURST  150

static char dir[256], build[PATH_MAX], http[64];
static uint16_t grpc_port, http_port;
static pid_t cp_pid, node_pid[NODES];
static char node_dir[NODES][300], node_sock[NODES][340], node_pins[NODES][128], node_cg[NODES][96];
static CURL *curl;

struct body {
	char *p;
	size_t n;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct body *b = arg;
	size_t n = size * nmemb;
	char *np = realloc(b->p, b->n + n + 1);

	if (!np)
		return 0;
	memcpy(np + b->n, ptr, n);
	b->n += n;
	np[b->n] = '\0';
	b->p = np;
	return n;
}

static json_t *api(const char *method, const char *path, json_t *in, long *code)
{
	struct curl_slist *h = curl_slist_append(NULL, "Authorization: Bearer " OPTOK);
	struct body b = { 0 };
	char url[512], *data = in ? json_dumps(in, JSON_COMPACT) : NULL;
	json_t *out;

	snprintf(url, sizeof(url), "http://%s%s", http, path);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, data ? data : (strcmp(method, "GET") ? "{}" : NULL));
	if (!strcmp(method, "GET"))
		curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
	*code = 0;
	if (curl_easy_perform(curl) == CURLE_OK)
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, code);
	out = b.p ? json_loads(b.p, 0, NULL) : NULL;
	free(b.p);
	free(data);
	curl_slist_free_all(h);
	return out;
}

static uint16_t free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
	socklen_t l = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	bind(fd, (struct sockaddr *)&a, sizeof(a));
	getsockname(fd, (struct sockaddr *)&a, &l);
	close(fd);
	return ntohs(a.sin_port);
}

static pid_t start(const char *cmd)
{
	pid_t pid = fork();

	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	return pid;
}

static void cleanup(void)
{
	char cmd[2048];

	for (int i = 0; i < NODES; i++) {
		if (node_pid[i] > 0) {
			kill(node_pid[i], SIGTERM);
			waitpid(node_pid[i], NULL, 0);
			node_pid[i] = 0;
		}
		if (node_dir[i][0]) {
			snprintf(cmd, sizeof(cmd), "%s/lantern reset --state-dir %s/state --bpffs %s "
				 "--cgroup-root %s >/dev/null 2>&1", build, node_dir[i], node_pins[i], node_cg[i]);
			if (system(cmd) != 0)
				fprintf(stderr, "# reset of %s failed\n", node_dir[i]);
		}
	}
	if (cp_pid > 0) {
		kill(cp_pid, SIGTERM);
		waitpid(cp_pid, NULL, 0);
		cp_pid = 0;
	}
	if (dir[0] && !getenv("LANTERN_KEEP"))
		util_rm_rf(dir);
}

static void on_signal(int sig)
{
	cleanup();
	_exit(128 + sig);
}

static const char spec[] =
	"apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: trivial\nspec:\n"
	"  image_digest: host\n  isolation: trusted\n  network: none\n"
	"  command: [\"/bin/true\"]\n";

static const char *submit(void)
{
	static char id[64];
	json_t *in = json_pack("{s:s, s:s}", "tenant_id", "bench", "spec", spec), *r;
	long code;

	r = api("POST", "/v1/runs", in, &code);
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(r, "id")) ?: "");
	json_decref(in);
	json_decref(r);
	return id;
}

static json_t *wait_final(const char *id)
{
	char path[128];
	long code;

	snprintf(path, sizeof(path), "/v1/runs/%s", id);
	for (int i = 0; i < 20000; i++) {
		json_t *r = api("GET", path, NULL, &code);
		const char *st = json_string_value(json_object_get(r, "status")) ?: "";

		if (!strcmp(st, "succeeded") || !strcmp(st, "failed") || !strcmp(st, "cancelled"))
			return r;
		json_decref(r);
		usleep(2000);
	}
	return NULL;
}

static int64_t t_us(json_t *r, const char *k)
{
	return (int64_t)json_integer_value(json_object_get(json_object_get(r, "times_us"), k));
}

/* One local run on node 0's socket: request sent to "accepted" (workload started), µs;
 * then waits for its end. */
static double local_run(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	json_t *req = json_pack("{s:s, s:s, s:s, s:b}", "op", "run", "file", "trivial.yaml", "yaml",
				spec, "follow", 1);
	char *s = json_dumps(req, JSON_COMPACT), buf[65536];
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	uint64_t t0, t1 = 0;
	size_t got = 0;
	ssize_t n;

	json_decref(req);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", node_sock[0]);
	t0 = util_now_ns(CLOCK_REALTIME);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || write(fd, s, strlen(s)) < 0 ||
	    write(fd, "\n", 1) < 0) {
		close(fd);
		free(s);
		return -1;
	}
	free(s);
	while ((n = read(fd, buf + got, sizeof(buf) - got - 1)) > 0) {
		got += (size_t)n;
		buf[got] = '\0';
		if (!t1 && strstr(buf, "\"accepted\""))
			t1 = util_now_ns(CLOCK_REALTIME);
		if (strstr(buf, "\"exit\"") || got > sizeof(buf) - 1024)
			break;
	}
	close(fd);
	return t1 ? (double)(t1 - t0) / 1000.0 : -1;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
	int i = (int)ceil(p / 100.0 * n) - 1;
	return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static int setup(void)
{
	char cmd[4096], tokf[400];
	long code;

	snprintf(dir, sizeof(dir), "/tmp/lantern-bench-tunnel-%d", getpid());
	util_mkdir_p(dir, 0700);
	snprintf(cmd, sizeof(cmd), "%s/operator.token", dir);
	util_write_file_atomic(cmd, OPTOK "\n", strlen(OPTOK) + 1);
	grpc_port = free_port();
	http_port = free_port();
	snprintf(http, sizeof(http), "127.0.0.1:%u", http_port);
	snprintf(cmd, sizeof(cmd),
		 "exec %s/lantern-cp --insecure --listen 127.0.0.1:%u --http %s --operator-token-file "
		 "%s/operator.token --database %s/cp.db --heartbeat-interval 1 >%s/cp.log 2>&1",
		 build, grpc_port, http, dir, dir, dir);
	cp_pid = start(cmd);
	for (int i = 0; i < 200; i++) {
		json_decref(api("GET", "/v1/data-planes", NULL, &code));
		if (code == 200)
			break;
		usleep(50000);
	}
	if (code != 200)
		return -1;
	for (int i = 0; i < NODES; i++) {
		json_t *in = json_pack("{s:s, s:s}", "tenant_id", "bench", "name", "node"), *r;
		const char *tok;

		r = api("POST", "/v1/data-planes", in, &code);
		json_decref(in);
		tok = json_string_value(json_object_get(r, "bootstrap_token"));
		snprintf(node_dir[i], sizeof(node_dir[i]), "%s/n%d", dir, i);
		snprintf(node_sock[i], sizeof(node_sock[i]), "%s/lanternd.sock", node_dir[i]);
		snprintf(node_pins[i], sizeof(node_pins[i]), "/sys/fs/bpf/lantern-bench-tunnel-%d-%d", getpid(), i);
		snprintf(node_cg[i], sizeof(node_cg[i]), "lantern-bench-tunnel-%d-%d", getpid(), i);
		util_mkdir_p(node_dir[i], 0700);
		snprintf(tokf, sizeof(tokf), "%s/bootstrap.token", node_dir[i]);
		if (!tok || util_write_file_atomic(tokf, tok, strlen(tok)) < 0) {
			json_decref(r);
			return -1;
		}
		json_decref(r);
		snprintf(cmd, sizeof(cmd),
			 "exec %s/lanternd --state-dir %s/state --socket %s --bpffs %s --cgroup-root %s "
			 "--process-runtime --control-plane 127.0.0.1:%u --tenant bench "
			 "--bootstrap-token-file %s --insecure --max-runs 64 >%s/lanternd.log 2>&1",
			 build, node_dir[i], node_sock[i], node_pins[i], node_cg[i], grpc_port, tokf,
			 node_dir[i]);
		node_pid[i] = start(cmd);
	}
	/* every plane connected */
	for (int k = 0; k < 300; k++) {
		json_t *r = api("GET", "/v1/data-planes", NULL, &code), *p;
		size_t i, up = 0;

		json_array_foreach(json_object_get(r, "data_planes"), i, p)
			up += json_is_true(json_object_get(p, "connected"));
		json_decref(r);
		if (up == NODES)
			return 0;
		usleep(50000);
	}
	return -1;
}

int main(int argc, char **argv)
{
	double cp_lat[ROUNDS * PER_ROUND], lo_lat[ROUNDS * PER_ROUND];
	int ncp = 0, nlo = 0, failed = 0;
	char ids[BURST][64];
	int64_t c0 = INT64_MAX, a1 = 0, acc1 = 0, f1 = 0;
	ssize_t n;

	if (geteuid() != 0) {
		fprintf(stderr, "bench/tunnel: needs root (cgroups, BPF)\n");
		return 1;
	}
	n = readlink("/proc/self/exe", build, sizeof(build) - 1);
	if (n <= 0)
		return 1;
	build[n] = '\0';
	*strrchr(build, '/') = '\0';
	*strrchr(build, '/') = '\0';
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	curl = curl_easy_init();
	if (setup() < 0) {
		fprintf(stderr, "bench/tunnel: set-up failed; see %s\n", dir);
		cleanup();
		return 1;
	}
	/* warm-up: both paths */
	for (int i = 0; i < 5; i++) {
		json_decref(wait_final(submit()));
		local_run();
	}
	for (int round = 0; round < ROUNDS; round++) {
		for (int pass = 0; pass < 2; pass++) {
			bool cp_first = round % 2 == 0;
			bool do_cp = (pass == 0) == cp_first;

			for (int i = 0; i < PER_ROUND; i++) {
				if (do_cp) {
					json_t *r = wait_final(submit());
					if (r && t_us(r, "running") > 0)
						cp_lat[ncp++] = (double)(t_us(r, "running") - t_us(r, "created"));
					else
						failed++;
					json_decref(r);
				} else {
					double us = local_run();
					if (us > 0)
						lo_lat[nlo++] = us;
					else
						failed++;
				}
			}
		}
	}
	/* the burst */
	for (int i = 0; i < BURST; i++)
		snprintf(ids[i], sizeof(ids[i]), "%s", submit());
	for (int i = 0; i < BURST; i++) {
		json_t *r = wait_final(ids[i]);

		if (!r || t_us(r, "accepted") <= 0) {
			failed++;
			json_decref(r);
			continue;
		}
		if (t_us(r, "created") < c0)
			c0 = t_us(r, "created");
		if (t_us(r, "assigned") > a1)
			a1 = t_us(r, "assigned");
		if (t_us(r, "accepted") > acc1)
			acc1 = t_us(r, "accepted");
		if (t_us(r, "finished") > f1)
			f1 = t_us(r, "finished");
		json_decref(r);
	}
	qsort(cp_lat, (size_t)ncp, sizeof(double), cmp_d);
	qsort(lo_lat, (size_t)nlo, sizeof(double), cmp_d);
	printf("bench/tunnel: %d nodes, process-runtime spawn of /bin/true, lantern-cp on SQLite, "
	       "plaintext gRPC on loopback\n\n", NODES);
	printf("%-44s %6s %10s %10s\n", "submit-to-running (one at a time)", "n", "p50 ms", "p99 ms");
	printf("%-44s %6d %10.2f %10.2f\n", "through lantern-cp (POST → RUNNING recorded)", ncp,
	       pct(cp_lat, ncp, 50) / 1000, pct(cp_lat, ncp, 99) / 1000);
	printf("%-44s %6d %10.2f %10.2f\n", "local lantern run (request → accepted)", nlo,
	       pct(lo_lat, nlo, 50) / 1000, pct(lo_lat, nlo, 99) / 1000);
	printf("%-44s %6s %10.2fx %9.2fx\n", "control-plane overhead (ratio)", "",
	       pct(cp_lat, ncp, 50) / pct(lo_lat, nlo, 50), pct(cp_lat, ncp, 99) / pct(lo_lat, nlo, 99));
	printf("\n%-44s %6s %10s\n", "burst of runs submitted back to back", "n", "per second");
	printf("%-44s %6d %10.0f\n", "placed and sent by lantern-cp", BURST,
	       a1 > c0 ? BURST / ((double)(a1 - c0) / 1e6) : 0);
	printf("%-44s %6d %10.0f\n", "accepted (started) by the nodes", BURST,
	       acc1 > c0 ? BURST / ((double)(acc1 - c0) / 1e6) : 0);
	printf("%-44s %6d %10.0f\n", "completed and acknowledged", BURST,
	       f1 > c0 ? BURST / ((double)(f1 - c0) / 1e6) : 0);
	if (failed)
		printf("\n%d runs failed or were lost\n", failed);
	cleanup();
	curl_easy_cleanup(curl);
	return failed ? 1 : 0;
}
