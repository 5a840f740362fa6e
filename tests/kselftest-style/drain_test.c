/* drain_test: what a DaemonSet rollout relies on when it stops lanternd (SIGTERM):
 * lanternd stops taking work (the local API refuses runs, /readyz fails), tells its
 * control plane the node is draining before it exits (lantern-cp marks the plane
 * draining and places nothing there), exits within its bound even if the control
 * plane does not answer, and leaves running instances running with their pins; the
 * next lanternd adopts them, and its first heartbeat lifts the node's own drain (never
 * an operator's). Also that /readyz covers the control-plane registration. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/util.h"

#define OPTOK "drain-test-operator-token-0123456789"
#define POINTS 9

static struct tl_env T;
static pid_t cp;
static uint16_t grpc_port, http_port, metrics_port;
static char flags[2048], plane_id[64];

static uint16_t free_port(void)
{
	uint16_t p = 0;
	int fd = tl_tcp_listen("127.0.0.1", &p);

	if (fd >= 0)
		close(fd);
	return p;
}

static json_t *api(const char *method, const char *path, const char *body, long *code)
{
	char *out = NULL, *nl;
	json_t *j = NULL;

	*code = 0;
	tl_sh(&out, NULL, "curl -s -m 10 -X %s -H 'Authorization: Bearer " OPTOK "' %s%s%s -w '\\n%%{http_code}' "
	      "http://127.0.0.1:%u%s", method, body ? "--data-binary '" : "", body ? body : "", body ? "'" : "",
	      http_port, path);
	if (out && (nl = strrchr(out, '\n'))) {
		*code = strtol(nl + 1, NULL, 10);
		*nl = '\0';
		j = json_loads(out, 0, NULL);
	}
	free(out);
	return j;
}

static bool plane_draining(void)
{
	char path[128];
	long code;
	json_t *p;
	bool v;

	snprintf(path, sizeof(path), "/v1/data-planes/%s", plane_id);
	p = api("GET", path, NULL, &code);
	v = json_is_true(json_object_get(p, "draining"));
	json_decref(p);
	return v;
}

static bool wait_draining(bool want, int ms)
{
	for (uint64_t end = tl_ms() + (uint64_t)ms; tl_ms() < end; usleep(100000))
		if (plane_draining() == want)
			return true;
	return false;
}

static long readyz(char **body)
{
	char *out = NULL, *nl;
	long code = 0;

	tl_sh(&out, NULL, "curl -s -m 5 -w '\\n%%{http_code}' http://127.0.0.1:%u/readyz", metrics_port);
	if (out && (nl = strrchr(out, '\n'))) {
		code = atol(nl + 1);
		*nl = '\0';
	}
	*body = out;
	return code;
}

static bool cp_start(void)
{
	char cmd[2048];
	long code;

	tl_file(&T, "operator.token", OPTOK "\n");
	snprintf(cmd, sizeof(cmd), "exec %s/lantern-cp --listen 127.0.0.1:%u --http 127.0.0.1:%u --insecure "
		 "--operator-token-file %s/operator.token --database %s/cp.db --heartbeat-interval 1 "
		 "--metrics-interval 1 >>%s/lantern-cp.log 2>&1", T.build, grpc_port, http_port, T.dir, T.dir, T.dir);
	if ((cp = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	tl_child_track(cp, SIGKILL);
	for (int i = 0; i < 200; i++, usleep(50000)) {
		json_decref(api("GET", "/v1/data-planes", NULL, &code));
		if (code == 200)
			return true;
	}
	return false;
}

static bool mint(void)
{
	long code;
	json_t *j = api("POST", "/v1/data-planes", "{\"tenant_id\": \"t1\", \"name\": \"drain\"}", &code);
	const char *tok = json_string_value(json_object_get(j, "bootstrap_token"));
	bool ok = code == 201 && tok;

	if (ok) {
		snprintf(plane_id, sizeof(plane_id), "%s", json_string_value(json_object_get(j, "id")) ?: "");
		tl_file(&T, "bootstrap.token", "%s\n", tok);
	}
	json_decref(j);
	return ok;
}

static bool process_alive(const char *run)
{
	char *out = NULL;
	bool alive;

	tl_sh(&out, NULL, "cat %s/runs/%s/shim.pid 2>/dev/null", T.state, run);
	alive = out && *out && kill(atoi(out), 0) == 0;
	free(out);
	return alive;
}

int main(void)
{
	const char *missing = tl_env_missing(), *spec;
	char *body = NULL, *out = NULL, id[64];
	bool ok;
	int st;

	tap_plan(POINTS);
	if (missing) {
		for (int i = 0; i < POINTS; i++)
			tap_skip(missing, "drain_test");
		return tap_done();
	}
	tl_env_init(&T, "drain");
	grpc_port = free_port();
	http_port = free_port();
	metrics_port = free_port();
	ok = cp_start() && mint();
	snprintf(flags, sizeof(flags), "--control-plane 127.0.0.1:%u --insecure --tenant t1 --bootstrap-token-file "
		 "%s/bootstrap.token --reconnect-max 1 --metrics-addr 127.0.0.1:%u", grpc_port, T.dir, metrics_port);
	ok = ok && tl_daemon_start(&T, flags) == 0;
	for (uint64_t end = tl_ms() + 10000; ok && tl_ms() < end; usleep(100000)) {
		free(body);
		if (readyz(&body) == 200)
			break;
	}
	tap_ok(ok && tl_has(body, "ok control-plane"), "/readyz 200 once the control plane answers the node's "
	       "heartbeats (%s)", tl_oneline(body));
	free(body);

	/* a run that outlives lanternd */
	spec = tl_spec(&T, "d-sleep", NULL, "sleep 300", "  image_digest: host\n  isolation: trusted\n");
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock, spec);
	ok = tl_running_run(&T, "d-sleep", id, sizeof(id), 10000);

	/* SIGTERM: the control plane hears of the drain before lanternd is gone */
	st = tl_daemon_stop(&T, SIGTERM);
	tap_ok(ok && WIFEXITED(st) && WEXITSTATUS(st) == 0 && plane_draining() &&
	       tl_log_contains(&T, "the control plane knows this node is draining"),
	       "SIGTERM: lanternd tells lantern-cp the node is draining (the plane is marked draining) "
	       "and exits 0");
	tap_ok(ok && process_alive(id) && tl_sh(NULL, NULL, "ls %s | grep -q '^link_'", T.bpffs) == 0,
	       "the run's workload still runs after lanternd exited, its programs still pinned");

	/* the next lanternd adopts it; its heartbeat lifts the node's own drain */
	ok = tl_daemon_start(&T, flags) == 0 && tl_running_run(&T, "d-sleep", id, sizeof(id), 5000);
	tap_ok(ok && tl_log_contains(&T, "adopted"), "the next lanternd adopts the running run");
	tap_ok(ok && wait_draining(false, 5000), "and its first heartbeat lifts the drain the node asked for");

	/* an operator's drain is the operator's */
	{
		long code;
		char path[128];

		snprintf(path, sizeof(path), "/v1/data-planes/%s/drain", plane_id);
		json_decref(api("POST", path, "{\"draining\": true}", &code));
		usleep(2500000);
		tap_ok(code == 200 && plane_draining(), "an operator's drain stays across the node's heartbeats");
		json_decref(api("POST", path, "{\"draining\": false}", &code));
		wait_draining(false, 3000);
	}

	/* a control plane that does not answer: lanternd still stops, within its bound */
	kill(cp, SIGSTOP);
	kill(T.daemon, SIGTERM);
	usleep(500000);
	{
		uint64_t t0 = tl_ms();
		long code = readyz(&body);
		int rc = tl_lantern(&T, NULL, &out, "run %s", spec);

		tap_ok(code == 503 && tl_has(body, "fail draining"), "while it drains, /readyz is 503 (%s)",
		       tl_oneline(body));
		tap_ok(rc != 0 && tl_has(out, "draining"), "and the local API refuses new runs (%s)", tl_oneline(out));
		free(body);
		free(out);
		waitpid(T.daemon, &st, 0);
		T.daemon = 0;
		tap_ok(WIFEXITED(st) && tl_ms() - t0 < 20000 && tl_log_contains(&T, "did not acknowledge the drain"),
		       "a control plane that does not answer holds lanternd 5 s, then it exits (in %llu ms, inside "
		       "the DaemonSet's 30 s grace: calls in flight keep their 10 s deadline)",
		       (unsigned long long)(tl_ms() - t0));
	}
	kill(cp, SIGCONT);
	tl_env_cleanup(&T);
	return tap_done();
}
