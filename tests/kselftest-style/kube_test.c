/* kube_test: lanternd --kubernetes against the test API server of tests/kube-apiserver
 * (Node.js, TLS on loopback, a bearer token or a client certificate; every object
 * lanternd sends is validated against the official Kubernetes schemas of the npm
 * package kubernetes-models). No kube-apiserver can run here; the server implements
 * the endpoints lanternd uses and plays the kubelet as the test tells it.
 *
 * Asserts: readiness says why when the API server refuses lanternd, and is ready once
 * the node's pods are watched and the node carries its class labels; the Pod of a
 * spawn passes the schema and carries what the product promises (class, tenant
 * namespace, node, annotations lantern-oci checks, restartPolicy, resources,
 * deadline, no service-account token); the tenant namespace is made once, with its
 * labels, ResourceQuota and LimitRange; kubelet reports move runs to their statuses
 * (exit codes, OOMKilled, DeadlineExceeded, image errors, a node without the class
 * label refusing the pod); pods are deleted at teardown and on `lantern kill`; a 410
 * Gone relists and a bookmark lets a watch resume without one; SIGTERM leaves pods
 * running and a restarted lanternd (client certificate this time) adopts them,
 * settles the ones that ended or vanished and reclaims pods no run owns; lanternd
 * never makes a call deploy/daemonset's RBAC does not allow, nor holds one it never
 * uses; the in-cluster service-account configuration works; a pod that never starts
 * fails its run after --kube-start-timeout. Warm pools (--pools): the pool's pod in
 * lantern-pool, its binds (the test plays lantern-oci, the runtime and the kubelet:
 * kube_pods_test runs pods through a real containerd), readiness, a claim (exec with the
 * image's environment, the pod patched to name its run and tenant), the end, the refill,
 * a pod the kubelet cannot start, and a clean stop. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"
#include "kubelib.h"
#include "lantern/util.h"

#define NODE "node-a"
#define TENANT "acme"
#define NS "lantern-t-" TENANT
#define TOKEN "kube-test-token-4f0c1e"
#define IMAGE "registry.example/lantern/agent@sha256:4a5e0b1c2d3e4f5061728394a5b6c7d8e9f00112233445566778899aabbccdde"

static struct tl_env T;
static struct tl_kube K = { .t = &T, .token = TOKEN, .node = NODE };
static uint16_t metrics_port;

/* ---- the test API server ---- */

/* method path [body]: the server's JSON answer (NULL on a transport error). */
static json_t *api(const char *method, const char *path, json_t *body, long *status)
{
	return tl_kube_api(&K, method, path, body, status);
}

static json_t *objects(void)
{
	return api("GET", "/_test/objects", NULL, NULL);
}

/* The kubelet reports: merge st (JSON text) into the status of pod ns/pod. */
static bool kubelet_ns(const char *ns, const char *pod, const char *st)
{
	char path[256];
	long code = 0;
	json_t *r;

	snprintf(path, sizeof(path), "/_test/pods/%s/%s/status", ns, pod);
	r = api("POST", path, json_loads(st, 0, NULL), &code);
	json_decref(r);
	return code == 200;
}

static bool kubelet(const char *pod, const char *st)
{
	return kubelet_ns(NS, pod, st);
}

/* o[key] as a string; key may hold dots (label and annotation keys). */
static const char *sval(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* The string at a dotted path of plain keys ("metadata.name"). */
static const char *jstr(json_t *o, const char *path)
{
	char key[128];
	const char *dot;

	while (o && (dot = strchr(path, '.'))) {
		snprintf(key, sizeof(key), "%.*s", (int)(dot - path), path);
		o = json_object_get(o, key);
		path = dot + 1;
	}
	return json_string_value(json_object_get(o, path));
}

/* The stored pod whose lantern.dev/run-id annotation is id, waiting up to ms. */
static json_t *pod_of_run(const char *id, int ms)
{
	for (uint64_t end = tl_ms() + (uint64_t)ms;; usleep(50000)) {
		json_t *o = objects(), *p;
		size_t i;

		json_array_foreach(json_object_get(o, "pods"), i, p) {
			const char *rid = json_string_value(json_object_get(
				json_object_get(json_object_get(p, "metadata"), "annotations"), "lantern.dev/run-id"));

			if (rid && !strcmp(rid, id)) {
				json_incref(p);
				json_decref(o);
				return p;
			}
		}
		json_decref(o);
		if (tl_ms() >= end)
			return NULL;
	}
}

static bool pod_exists(const char *name)
{
	json_t *o = objects(), *p;
	bool found = false;
	size_t i;

	json_array_foreach(json_object_get(o, "pods"), i, p)
		found = found || !strcmp(jstr(p, "metadata.name") ?: "", name);
	json_decref(o);
	return found;
}

/* The server's log of lanternd's API calls matching method and path prefix. */
static size_t calls(const char *method, const char *prefix, const char *query_key, json_t **last)
{
	json_t *log = api("GET", "/_test/log", NULL, NULL), *e;
	size_t i, n = 0;

	if (last)
		*last = NULL;
	json_array_foreach(log, i, e) {
		if (strcmp(jstr(e, "method") ?: "", method) || strncmp(jstr(e, "path") ?: "", prefix, strlen(prefix)))
			continue;
		if (query_key && !json_object_get(json_object_get(e, "query"), query_key))
			continue;
		n++;
		if (last) {
			json_decref(*last);
			*last = json_incref(e);
		}
	}
	json_decref(log);
	return n;
}

/* LISTs of this node's pods (GETs of /api/v1/pods without watch). */
static size_t lists(void)
{
	json_t *log = api("GET", "/_test/log", NULL, NULL), *e;
	size_t i, n = 0;

	json_array_foreach(log, i, e)
		n += !strcmp(jstr(e, "method") ?: "", "GET") && !strcmp(jstr(e, "path") ?: "", "/api/v1/pods") &&
		     !json_object_get(json_object_get(e, "query"), "watch");
	json_decref(log);
	return n;
}

/* Every entry the server refused as invalid (422) or could not place: their errors. */
static char *invalid_calls(void)
{
	json_t *log = api("GET", "/_test/log", NULL, NULL), *e;
	char *out = NULL;
	size_t len = 0, i;
	FILE *f = open_memstream(&out, &len);

	json_array_foreach(log, i, e)
		if (json_is_false(json_object_get(e, "valid"))) {
			char *s = json_dumps(json_object_get(e, "errors"), JSON_COMPACT);

			fprintf(f, "%s %s: %s; ", jstr(e, "method"), jstr(e, "path"), s ? s : "");
			free(s);
		}
	fclose(f);
	json_decref(log);
	return out;
}

/* GET on lanternd's metrics address: the status and the body. */
static long probe(const char *path, char **body)
{
	char *out = NULL;
	long code = 0;

	tl_sh(&out, NULL, "curl -s -w '\\n%%{http_code}' http://127.0.0.1:%u%s", metrics_port, path);
	if (out) {
		char *nl = strrchr(out, '\n');

		code = nl ? atol(nl + 1) : 0;
		if (nl)
			*nl = '\0';
	}
	if (body)
		*body = out;
	else
		free(out);
	return code;
}

static bool wait_probe(const char *path, long want, const char *text, int ms, char **body)
{
	for (uint64_t end = tl_ms() + (uint64_t)ms;; usleep(100000)) {
		char *b = NULL;
		long code = probe(path, &b);

		if (code == want && (!text || tl_has(b, text))) {
			if (body)
				*body = b;
			else
				free(b);
			return true;
		}
		if (tl_ms() >= end) {
			if (body)
				*body = b;
			else
				free(b);
			return false;
		}
		free(b);
	}
}

static int start(const char *kubecfg, const char *more)
{
	char extra[2048];

	snprintf(extra, sizeof(extra), "--kubernetes --kubeconfig %s --node-name " NODE " --tenant " TENANT
		 " --kube-tenant-config %s/tenant.json --metrics-addr 127.0.0.1:%u %s", kubecfg, T.dir,
		 metrics_port, more ? more : "");
	return tl_daemon_start(&T, extra);
}

/* ---- runs ---- */

static json_t *run_info(const char *id)
{
	char *out = NULL;
	json_t *runs, *r, *found = NULL;
	size_t i;

	tl_lantern(&T, &out, NULL, "ps --json");
	runs = out ? json_loads(out, 0, NULL) : NULL;
	free(out);
	json_array_foreach(runs, i, r)
		if (!strcmp(jstr(r, "id") ?: "", id))
			found = json_incref(r);
	json_decref(runs);
	return found;
}

/* Waits until the run's status is st (or pod phase, when phase is set). */
static json_t *wait_run(const char *id, const char *st, const char *phase, int ms)
{
	for (uint64_t end = tl_ms() + (uint64_t)ms;; usleep(50000)) {
		json_t *r = run_info(id);

		if (r && !strcmp(jstr(r, "status") ?: "", st) && (!phase || !strcmp(jstr(r, "pod.phase") ?: "", phase)))
			return r;
		if (tl_ms() >= end)
			return r;
		json_decref(r);
	}
}

static bool is(json_t *r, const char *st)
{
	return r && !strcmp(jstr(r, "status") ?: "", st);
}

/* Starts a spawn of class cls in the background; its run id in id (whatever its status
 * by then: a pod the kubelet refuses ends its run within milliseconds). */
static bool submit_script(const char *name, const char *cls, const char *extra, const char *script, char *id,
			  size_t len)
{
	const char *f = tl_spec(&T, name, NULL, script, "  image_digest: \"" IMAGE "\"\n  isolation: %s\n"
				"  limits:\n    vcpu: \"500m\"\n    memory: 256Mi\n    timeout: 1h\n%s",
				cls, extra ? extra : "");

	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >>%s/runs.out 2>&1 &", T.build, T.sock, f, T.dir);
	for (uint64_t end = tl_ms() + 10000; tl_ms() < end; usleep(50000)) {
		char *out = NULL;
		json_t *runs, *r;
		size_t i;
		bool found = false;

		tl_lantern(&T, &out, NULL, "ps --json");
		runs = out ? json_loads(out, 0, NULL) : NULL;
		free(out);
		json_array_foreach(runs, i, r)
			if (!found && !strcmp(jstr(r, "name") ?: "", name)) {
				snprintf(id, len, "%s", jstr(r, "id") ?: "");
				found = true;
			}
		json_decref(runs);
		if (found)
			return true;
	}
	id[0] = '\0';
	return false;
}

static bool submit(const char *name, const char *cls, const char *extra, char *id, size_t len)
{
	return submit_script(name, cls, extra, "echo hello", id, len);
}

static const char *pod_name(const char *id, char *buf, size_t len)
{
	json_t *r = run_info(id);

	snprintf(buf, len, "%s", jstr(r, "pod.name") ?: "");
	json_decref(r);
	return buf;
}


/* ---- pooled pods: the test plays lantern-oci and the container runtime ---- */

/* One request on lanternd's socket (lantern-oci's "bind"), its answer. */
static json_t *lanternd_op(json_t *req)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char *line = json_dumps(req, JSON_COMPACT), buf[65536];
	size_t n = 0;
	json_t *ans = NULL;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	json_decref(req);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", T.sock);
	if (fd >= 0 && line && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    write(fd, line, strlen(line)) == (ssize_t)strlen(line) && write(fd, "\n", 1) == 1) {
		ssize_t r;

		while (n < sizeof(buf) - 1 && (r = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0) {
			n += (size_t)r;
			buf[n] = '\0';
			if (memchr(buf, '\n', n))
				break;
		}
		ans = n ? json_loadb(buf, strcspn(buf, "\n"), 0, NULL) : NULL;
	}
	if (fd >= 0)
		close(fd);
	free(line);
	return ans;
}

/* What lantern-oci asks for a container of pod (its config.json's annotations as
 * containerd writes them), with process for the workload's. */
static json_t *bind_as_oci(json_t *pod, const char *cid, const char *sandbox_id, const char *cgpath, json_t *process)
{
	json_t *ann = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?, s:s?}", "io.kubernetes.cri.container-type",
				process ? "container" : "sandbox", "io.kubernetes.cri.sandbox-id", sandbox_id,
				"io.kubernetes.cri.sandbox-namespace", jstr(pod, "metadata.namespace") ?: "",
				"io.kubernetes.cri.sandbox-name", jstr(pod, "metadata.name") ?: "",
				"io.kubernetes.cri.sandbox-uid", jstr(pod, "metadata.uid") ?: "",
				"lantern.dev/agent-instance-id",
				sval(json_object_get(json_object_get(pod, "metadata"), "annotations"),
				     "lantern.dev/agent-instance-id"),
				"lantern.dev/pool",
				sval(json_object_get(json_object_get(pod, "metadata"), "annotations"), "lantern.dev/pool"));
	json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:o}", "op", "bind", "container_id", cid, "handler_class",
				"trusted", "cgroups_path", cgpath, "annotations", ann);

	if (process)
		json_object_set_new(req, "process", process);
	return lanternd_op(req);
}

/* The stored pods of namespace ns. */
static json_t *pods_in(const char *ns)
{
	json_t *o = objects(), *out = json_array(), *p;
	size_t i;

	json_array_foreach(json_object_get(o, "pods"), i, p)
		if (!strcmp(jstr(p, "metadata.namespace") ?: "", ns))
			json_array_append(out, p);
	json_decref(o);
	return out;
}

/* The host path of the pod's volume mounted at dest. */
static const char *host_path_at(json_t *pod, const char *dest)
{
	json_t *c = json_array_get(json_object_get(json_object_get(pod, "spec"), "containers"), 0), *m, *v;
	const char *vol = NULL;
	size_t i;

	json_array_foreach(json_object_get(c, "volumeMounts"), i, m)
		if (!strcmp(sval(m, "mountPath") ?: "", dest))
			vol = sval(m, "name");
	json_array_foreach(json_object_get(json_object_get(pod, "spec"), "volumes"), i, v)
		if (vol && !strcmp(sval(v, "name") ?: "", vol))
			return jstr(v, "hostPath.path");
	return NULL;
}

/* The container runtime's part: a process in the cgroup lanternd's bind answered (v2,
 * where lanternd looks), running argv with the waiter's socket at its host path. */
static pid_t run_in_cgroup(const char *cgpath, const char *waiter, const char *sock)
{
	char dir[512], procs[600];
	pid_t pid;

	snprintf(dir, sizeof(dir), "/sys/fs/cgroup/unified%s", cgpath);
	if (access("/sys/fs/cgroup/unified", F_OK) != 0)
		snprintf(dir, sizeof(dir), "/sys/fs/cgroup%s", cgpath);
	mkdir(dir, 0755);
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", dir);
	if ((pid = fork()) == 0) {
		FILE *f = fopen(procs, "w");

		if (!f || fprintf(f, "0\n") < 0 || fclose(f) != 0)
			_exit(126);
		execl(waiter, waiter, sock, (char *)NULL);
		_exit(127);
	}
	return pid;
}

static void stop_server(void)
{
	tl_kube_stop(&K);
}

int main(void)
{
	const char *missing = tl_env_missing();
	char id[64], id2[64], name[128], *body = NULL, *s;
	const char *kc_token, *kc_cert, *kc_bad;
	json_t *pod, *r, *o, *e;
	bool ok;

	tap_plan(39);
	if (missing || access("tests/kube-apiserver/node_modules/kubernetes-models", F_OK) != 0) {
		for (int i = 0; i < 39; i++)
			tap_skip(missing ? missing : "tests/kube-apiserver/node_modules missing (make deps)",
				 "kube_test");
		return tap_done();
	}
	tl_env_init(&T, "kube");
	tl_on_exit(stop_server);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	metrics_port = (uint16_t)(21000 + getpid() % 20000);
	if (!tl_kube_certs(&T, true) || tl_kube_start(&K, "--bookmark-ms 200") <= 0) {
		for (int i = 0; i < 39; i++)
			tap_ok(false, "test API server could not start (see %s/apiserver.log)", T.dir);
		return 1;
	}
	tl_file(&T, "tenant.json", "{\"labels\": {\"pod-security.kubernetes.io/enforce\": \"privileged\"}, "
		"\"resourceQuota\": {\"hard\": {\"pods\": \"50\", \"limits.memory\": \"64Gi\"}}, "
		"\"limitRange\": {\"limits\": [{\"type\": \"Container\", \"max\": {\"memory\": \"16Gi\"}}]}}");
	kc_token = strdup(tl_kube_kubeconfig(&K, "token.kubeconfig", "    token: " TOKEN "\n"));
	kc_cert = strdup(tl_kube_kubeconfig(&K, "cert.kubeconfig", "    client-certificate: client.pem\n    client-key: client.key\n"));
	kc_bad = strdup(tl_kube_kubeconfig(&K, "bad.kubeconfig", "    token: not-the-token\n"));

	/* refused by the API server: alive, not ready, and says why */
	ok = start(kc_bad, NULL) == 0 && wait_probe("/readyz", 503, "401 Unauthorized", 10000, &body);
	tap_ok(ok,
	       "readiness with a token the API server refuses: 503 naming the refusal (%s)", tl_oneline(body));
	free(body);
	body = NULL;
	ok = ok && probe("/healthz", &body) == 200 && tl_has(body, "ok");
	tap_ok(ok,
	       "liveness meanwhile: /healthz 200 (the loop turns)");
	free(body);
	body = NULL;
	tl_daemon_stop(&T, SIGTERM);

	/* ready once the node's pods are watched and the node is labelled */
	ok = start(kc_token, NULL) == 0 && wait_probe("/readyz", 200, "ok runtime: kubernetes", 10000, &body);
	tap_ok(ok,
	       "/readyz 200 with the bearer token: programs pinned, socket, pods watched, node labelled (%s)",
	       tl_oneline(body));
	free(body);
	body = NULL;
	o = objects();
	e = NULL;
	{
		size_t i;
		json_t *n;

		json_array_foreach(json_object_get(o, "nodes"), i, n)
			if (!strcmp(jstr(n, "metadata.name") ?: "", NODE))
				e = json_object_get(json_object_get(n, "metadata"), "labels");
	}
	tap_ok(e && !strcmp(sval(e, "lantern.dev/class-trusted") ?: "", "true") &&
	       !strcmp(sval(e, "lantern.dev/class-standard") ?: "", "true") &&
	       !strcmp(sval(e, "lantern.dev/class-untrusted") ?: "", "true") &&
	       !json_object_get(e, "lantern.dev/class-hostile") && !json_object_get(e, "lantern.dev/class-wasm"),
	       "node " NODE " labelled lantern.dev/class-<class>=true for trusted, standard, untrusted (runc, "
	       "runsc here), not hostile (no kata)");
	json_decref(o);

	/* the pod of a spawn */
	ok = submit("k-hello", "standard", NULL, id, sizeof(id));
	pod = ok ? pod_of_run(id, 10000) : NULL;
	s = invalid_calls();
	tap_ok(pod && s && !*s, "a spawn's Pod, Namespace, ResourceQuota and LimitRange pass the official "
	       "Kubernetes schemas, strictly (%s)", s ? s : "no log");
	free(s);
	r = run_info(id);
	{
		json_t *sp = json_object_get(pod, "spec"), *c = json_array_get(json_object_get(sp, "containers"), 0);
		json_t *lim = json_object_get(json_object_get(c, "resources"), "limits");
		json_t *req = json_object_get(json_object_get(c, "resources"), "requests");
		json_t *ann = json_object_get(json_object_get(pod, "metadata"), "annotations");

		tap_ok(pod && !strcmp(jstr(pod, "metadata.namespace") ?: "", NS) &&
		       !strcmp(jstr(sp, "nodeName") ?: "", NODE) &&
		       !strcmp(jstr(sp, "runtimeClassName") ?: "", "lantern-standard") &&
		       !strcmp(jstr(sp, "restartPolicy") ?: "", "Never") &&
		       json_integer_value(json_object_get(sp, "activeDeadlineSeconds")) == 3600 &&
		       json_is_false(json_object_get(sp, "automountServiceAccountToken")) &&
		       !strcmp(jstr(c, "image") ?: "", IMAGE) &&
		       !strcmp(jstr(lim, "cpu") ?: "", "500m") && !strcmp(jstr(lim, "memory") ?: "", "268435456") &&
		       json_equal(lim, req) &&
		       !strcmp(sval(ann, "lantern.dev/run-id") ?: "", id) &&
		       !strcmp(sval(ann, "lantern.dev/agent-instance-id") ?: "", jstr(r, "instance_id") ?: "-") &&
		       !strcmp(sval(ann, "lantern.dev/isolation") ?: "", "standard") &&
		       !strcmp(sval(ann, "lantern.dev/tenant") ?: "", TENANT),
		       "the Pod: namespace " NS ", nodeName, runtimeClassName lantern-standard, restartPolicy "
		       "Never, activeDeadlineSeconds 3600 (timeout 1h), no service-account token, image by "
		       "digest, limits = requests from limits, annotations run-id, agent-instance-id, isolation, "
		       "tenant");
		tap_ok(pod && !strcmp(sval(json_object_get(sp, "nodeSelector"), "lantern.dev/class-standard") ?: "", "true") &&
		       json_object_get(sp, "overhead"),
		       "RuntimeClass lantern-standard of deploy/daemonset applied at admission: its nodeSelector "
		       "and overhead are on the pod");
	}
	json_decref(r);

	/* the kubelet reports; the run follows */
	snprintf(name, sizeof(name), "%s", jstr(pod, "metadata.name") ?: "");
	json_decref(pod);
	r = wait_run(id, "running", "Pending", 5000);
	ok = is(r, "running");
	json_decref(r);
	kubelet(name, "{\"phase\": \"Running\", \"containerStatuses\": [{\"name\": \"workload\", \"ready\": true, "
		"\"restartCount\": 0, \"image\": \"" IMAGE "\", \"imageID\": \"\", \"state\": {\"running\": "
		"{\"startedAt\": \"2025-01-01T00:00:00Z\"}}}]}");
	r = wait_run(id, "running", "Running", 5000);
	ok = ok && is(r, "running") && !strcmp(jstr(r, "pod.phase") ?: "", "Running");
	json_decref(r);
	kubelet(name, "{\"phase\": \"Succeeded\", \"containerStatuses\": [{\"name\": \"workload\", \"ready\": false, "
		"\"restartCount\": 0, \"image\": \"" IMAGE "\", \"imageID\": \"\", \"state\": {\"terminated\": "
		"{\"exitCode\": 0, \"reason\": \"Completed\"}}}]}");
	r = wait_run(id, "succeeded", NULL, 5000);
	tap_ok(ok && is(r, "succeeded") && json_integer_value(json_object_get(r, "exit_code")) == 0,
	       "watch events move the run: running while Pending, running while Running, succeeded (exit 0) "
	       "when the pod Succeeded (%s)", tl_oneline(jstr(r, "status")));
	json_decref(r);
	usleep(300000);
	calls("DELETE", "/api/v1/namespaces/" NS "/pods/", NULL, &e);
	tap_ok(!pod_exists(name) && e && tl_has(jstr(e, "path"), name) &&
	       json_integer_value(json_object_get(json_object_get(e, "deleteOptions"), "gracePeriodSeconds")) == 0,
	       "teardown deletes the pod (DELETE with gracePeriodSeconds 0: the workload has ended)");
	json_decref(e);

	/* exit code */
	ok = submit("k-exit3", "trusted", NULL, id, sizeof(id)) && pod_of_run(id, 5000);
	kubelet(pod_name(id, name, sizeof(name)), "{\"phase\": \"Failed\", \"containerStatuses\": [{\"name\": \"workload\", "
		"\"ready\": false, \"restartCount\": 0, \"image\": \"" IMAGE "\", \"imageID\": \"\", \"state\": "
		"{\"terminated\": {\"exitCode\": 3, \"reason\": \"Error\"}}}]}");
	r = wait_run(id, "failed", NULL, 5000);
	tap_ok(ok && is(r, "failed") && json_integer_value(json_object_get(r, "exit_code")) == 3,
	       "a container that exited 3 (pod Failed): run failed with exit code 3 (%s)", tl_oneline(jstr(r, "reason")));
	json_decref(r);

	/* the namespace, once */
	o = objects();
	{
		json_t *ns = NULL, *rq = NULL, *lr = NULL, *x;
		size_t i;

		json_array_foreach(json_object_get(o, "namespaces"), i, x)
			if (!strcmp(jstr(x, "metadata.name") ?: "", NS))
				ns = x;
		json_array_foreach(json_object_get(o, "resourcequotas"), i, x)
			if (!strcmp(jstr(x, "metadata.namespace") ?: "", NS))
				rq = x;
		json_array_foreach(json_object_get(o, "limitranges"), i, x)
			if (!strcmp(jstr(x, "metadata.namespace") ?: "", NS))
				lr = x;
		tap_ok(ns && !strcmp(sval(json_object_get(json_object_get(ns, "metadata"), "labels"),
					  "pod-security.kubernetes.io/enforce") ?: "", "privileged") &&
		       !strcmp(sval(json_object_get(json_object_get(ns, "metadata"), "labels"), "lantern.dev/tenant") ?: "", TENANT) &&
		       rq && !strcmp(jstr(json_object_get(json_object_get(rq, "spec"), "hard"), "pods") ?: "", "50") &&
		       lr && json_array_size(json_object_get(json_object_get(lr, "spec"), "limits")) == 1 &&
		       calls("POST", "/api/v1/namespaces", NULL, NULL) - calls("POST", "/api/v1/namespaces/", NULL, NULL) == 1,
		       "namespace " NS " made on the first spawn only, with the configured labels, ResourceQuota "
		       "and LimitRange (--kube-tenant-config)");
	}
	json_decref(o);

	/* a tenant namespace deleted by someone is made again */
	{
		long code = 0;
		size_t before = calls("POST", "/api/v1/namespaces", NULL, NULL) - calls("POST", "/api/v1/namespaces/", NULL, NULL);

		json_decref(api("POST", "/_test/namespaces/" NS "/delete", NULL, &code));
		ok = code == 200 && submit("k-ns-again", "trusted", NULL, id, sizeof(id)) && (pod = pod_of_run(id, 5000));
		o = objects();
		tap_ok(ok && calls("POST", "/api/v1/namespaces", NULL, NULL) - calls("POST", "/api/v1/namespaces/", NULL, NULL) ==
		       before + 1 && json_array_size(json_object_get(o, "resourcequotas")) == 1,
		       "a tenant namespace deleted since lanternd made it is made again (with its quota) for the "
		       "next spawn, which runs");
		json_decref(o);
		json_decref(pod);
		kubelet(pod_name(id, name, sizeof(name)), "{\"phase\": \"Succeeded\"}");
		r = wait_run(id, "succeeded", NULL, 5000);
		json_decref(r);
	}

	/* OOMKilled */
	ok = submit("k-oom", "standard", NULL, id, sizeof(id)) && pod_of_run(id, 5000);
	kubelet(pod_name(id, name, sizeof(name)), "{\"phase\": \"Failed\", \"containerStatuses\": [{\"name\": \"workload\", "
		"\"ready\": false, \"restartCount\": 0, \"image\": \"" IMAGE "\", \"imageID\": \"\", \"state\": "
		"{\"terminated\": {\"exitCode\": 137, \"reason\": \"OOMKilled\"}}}]}");
	r = wait_run(id, "oom_killed", NULL, 5000);
	tap_ok(ok && is(r, "oom_killed"), "container OOMKilled: run oom_killed (%s)", tl_oneline(jstr(r, "reason")));
	json_decref(r);

	/* DeadlineExceeded */
	ok = submit("k-deadline", "standard", NULL, id, sizeof(id)) && pod_of_run(id, 5000);
	kubelet(pod_name(id, name, sizeof(name)), "{\"phase\": \"Failed\", \"reason\": \"DeadlineExceeded\", "
		"\"message\": \"Pod was active on the node longer than the specified deadline\"}");
	r = wait_run(id, "timed_out", NULL, 5000);
	tap_ok(ok && is(r, "timed_out") && tl_has(jstr(r, "reason"), "DeadlineExceeded"),
	       "pod DeadlineExceeded (activeDeadlineSeconds): run timed_out (%s)", tl_oneline(jstr(r, "reason")));
	json_decref(r);

	/* an image error fails at once */
	ok = submit("k-image", "standard", NULL, id, sizeof(id)) && pod_of_run(id, 5000);
	snprintf(name, sizeof(name), "%s", pod_name(id, id2, sizeof(id2)));
	kubelet(name, "{\"containerStatuses\": [{\"name\": \"workload\", \"ready\": false, \"restartCount\": 0, "
		"\"image\": \"" IMAGE "\", \"imageID\": \"\", \"state\": {\"waiting\": {\"reason\": \"ErrImagePull\", "
		"\"message\": \"manifest unknown\"}}}]}");
	r = wait_run(id, "failed", NULL, 5000);
	usleep(300000);
	tap_ok(ok && is(r, "failed") && tl_has(jstr(r, "reason"), "ErrImagePull") && tl_has(jstr(r, "reason"), IMAGE) &&
	       !pod_exists(name),
	       "ErrImagePull: run failed at once naming the image and the reason, pod deleted (%s)",
	       tl_oneline(jstr(r, "reason")));
	json_decref(r);

	/* lantern kill */
	ok = submit("k-kill", "standard", NULL, id, sizeof(id)) && pod_of_run(id, 5000);
	snprintf(name, sizeof(name), "%s", pod_name(id, id2, sizeof(id2)));
	kubelet(name, "{\"phase\": \"Running\"}");
	tl_lantern(&T, NULL, NULL, "kill %s", id);
	r = wait_run(id, "cancelled", NULL, 5000);
	calls("DELETE", "/api/v1/namespaces/" NS "/pods/", NULL, &e);
	tap_ok(ok && is(r, "cancelled") && !pod_exists(name) && e && tl_has(jstr(e, "path"), name) &&
	       json_integer_value(json_object_get(json_object_get(e, "deleteOptions"), "gracePeriodSeconds")) == 3,
	       "lantern kill: the pod is deleted with the grace period (3 s), run cancelled (%s)",
	       tl_oneline(jstr(r, "reason")));
	json_decref(e);
	json_decref(r);

	/* deleted by someone else */
	ok = submit("k-gone", "standard", NULL, id, sizeof(id)) && pod_of_run(id, 5000);
	{
		char path[256];

		snprintf(path, sizeof(path), "/_test/pods/" NS "/%s/delete", pod_name(id, name, sizeof(name)));
		json_decref(api("POST", path, NULL, NULL));
	}
	r = wait_run(id, "failed", NULL, 5000);
	tap_ok(ok && is(r, "failed") && tl_has(jstr(r, "reason"), "deleted"),
	       "a pod deleted by someone else: run failed saying so (%s)", tl_oneline(jstr(r, "reason")));
	json_decref(r);

	/* fail closed: a node without the class label refuses the pod */
	json_decref(api("POST", "/_test/nodes/" NODE "/labels", json_pack("{s:n}", "lantern.dev/class-untrusted"), NULL));
	ok = submit("k-affinity", "untrusted", NULL, id, sizeof(id));
	r = wait_run(id, "failed", NULL, 5000);
	tap_ok(ok && is(r, "failed") && tl_has(jstr(r, "reason"), "NodeAffinity"),
	       "node lacking lantern.dev/class-untrusted: the kubelet refuses the pod (RuntimeClass nodeSelector), "
	       "run failed with NodeAffinity (%s)", tl_oneline(jstr(r, "reason")));
	json_decref(r);
	json_decref(api("POST", "/_test/nodes/" NODE "/labels", json_pack("{s:s}", "lantern.dev/class-untrusted", "true"), NULL));

	/* 410 Gone relists */
	ok = submit("k-relist", "standard", NULL, id, sizeof(id)) && pod_of_run(id, 5000);
	kubelet(pod_name(id, name, sizeof(name)), "{\"phase\": \"Running\"}");
	{
		size_t before = lists();
		json_t *body410 = json_pack("{s:[{s:s, s:s, s:{s:s, s:[{s:s, s:b, s:i, s:s, s:s, s:{s:{s:i, s:s}}}]}}]}",
					    "pods", "namespace", NS, "name", name, "status", "phase", "Succeeded",
					    "containerStatuses", "name", "workload", "ready", 0, "restartCount", 0,
					    "image", IMAGE, "imageID", "", "state", "terminated", "exitCode", 0,
					    "reason", "Completed");

		json_decref(api("POST", "/_test/expire", body410, NULL));
		r = wait_run(id, "succeeded", NULL, 10000);
		tap_ok(ok && is(r, "succeeded") && lists() == before + 1,
		       "410 Gone on the watch: lanternd relists once and learns what changed meanwhile (run "
		       "succeeded; lists %zu -> %zu)", before, lists());
		json_decref(r);
	}

	/* a bookmark lets the watch resume without a list */
	{
		char path[64];
		json_t *other = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s}}, s:{s:s, s:[{s:s, s:s}]}}", "apiVersion",
					  "v1", "kind", "Pod", "metadata", "name", "elsewhere", "namespace", NS, "labels",
					  "app.kubernetes.io/managed-by", "lanternd", "spec", "nodeName", "node-b",
					  "containers", "name", "c", "image", IMAGE);
		size_t before = lists();
		const char *rv;
		long long want;

		json_decref(api("POST", "/_test/pods", other, NULL));
		usleep(600000);
		o = objects();
		rv = jstr(o, "resourceVersion");
		want = rv ? atoll(rv) : -1;
		json_decref(o);
		calls("GET", "/api/v1/pods", "watch", &e);
		json_decref(e);
		json_decref(api("POST", "/_test/end-watches", NULL, NULL));
		usleep(500000);
		calls("GET", "/api/v1/pods", "watch", &e);
		snprintf(path, sizeof(path), "%s", jstr(json_object_get(e, "query"), "resourceVersion") ?: "");
		tap_ok(e && atoll(path) == want && lists() == before,
		       "a watch that ends resumes from its last bookmark (resourceVersion %s, the server's %lld "
		       "after another node's pod), without a list", path, want);
		json_decref(e);
	}

	/* SIGTERM leaves pods running; a restart adopts them */
	{
		char a[64], b[64], c[64], pa[128], pb[128], pc[128], path[256];
		size_t deletes;
		json_t *orphan;

		ok = submit("k-adopt-a", "standard", NULL, a, sizeof(a)) && submit("k-adopt-b", "standard", NULL, b, sizeof(b)) &&
		     submit("k-adopt-c", "standard", NULL, c, sizeof(c)) && pod_of_run(a, 5000) && pod_of_run(b, 5000) &&
		     pod_of_run(c, 5000);
		pod_name(a, pa, sizeof(pa));
		pod_name(b, pb, sizeof(pb));
		pod_name(c, pc, sizeof(pc));
		kubelet(pa, "{\"phase\": \"Running\"}");
		kubelet(pb, "{\"phase\": \"Running\"}");
		kubelet(pc, "{\"phase\": \"Running\"}");
		usleep(200000);
		deletes = calls("DELETE", "/api/v1/", NULL, NULL);
		tl_daemon_stop(&T, SIGTERM);
		tap_ok(ok && calls("DELETE", "/api/v1/", NULL, NULL) == deletes && pod_exists(pa) && pod_exists(pb) &&
		       pod_exists(pc), "SIGTERM: lanternd exits and leaves its pods running (no DELETE)");
		/* while it is down: a ends, c is deleted, an orphan appears */
		kubelet(pa, "{\"phase\": \"Succeeded\", \"containerStatuses\": [{\"name\": \"workload\", \"ready\": false, "
			"\"restartCount\": 0, \"image\": \"" IMAGE "\", \"imageID\": \"\", \"state\": {\"terminated\": "
			"{\"exitCode\": 0, \"reason\": \"Completed\"}}}]}");
		snprintf(path, sizeof(path), "/_test/pods/" NS "/%s/delete", pc);
		json_decref(api("POST", path, NULL, NULL));
		orphan = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s}, s:{s:s, s:s}}, s:{s:s, s:[{s:s, s:s}]}}",
				   "apiVersion", "v1", "kind", "Pod", "metadata", "name", "lantern-i-000000000000",
				   "namespace", NS, "labels", "app.kubernetes.io/managed-by", "lanternd", "annotations",
				   "lantern.dev/run-id", "r-000000000000", "lantern.dev/agent-instance-id", "i-000000000000",
				   "spec", "nodeName", NODE, "containers", "name", "workload", "image", IMAGE);
		json_decref(api("POST", "/_test/pods", orphan, NULL));
		ok = start(kc_cert, NULL) == 0;
		r = wait_run(a, "succeeded", NULL, 10000);
		ok = ok && is(r, "succeeded");
		json_decref(r);
		r = wait_run(b, "running", "Running", 5000);
		ok = ok && is(r, "running");
		json_decref(r);
		r = wait_run(c, "failed", NULL, 5000);
		ok = ok && is(r, "failed") && tl_has(jstr(r, "reason"), "gone");
		json_decref(r);
		kubelet(pb, "{\"phase\": \"Succeeded\", \"containerStatuses\": [{\"name\": \"workload\", \"ready\": false, "
			"\"restartCount\": 0, \"image\": \"" IMAGE "\", \"imageID\": \"\", \"state\": {\"terminated\": "
			"{\"exitCode\": 0, \"reason\": \"Completed\"}}}]}");
		r = wait_run(b, "succeeded", NULL, 5000);
		ok = ok && is(r, "succeeded");
		json_decref(r);
		usleep(300000);
		calls("GET", "/api/v1/pods", NULL, &e);
		tap_ok(ok && !pod_exists("lantern-i-000000000000") && !pod_exists(pa) && !pod_exists(pb) &&
		       tl_has(jstr(e, "user"), "cert:lanternd-test"),
		       "restarted (client-certificate kubeconfig): a pod that ended meanwhile ends its run, a "
		       "running one is adopted and followed to its end, a vanished one fails its run, a lantern "
		       "pod no run owns is reclaimed");
		json_decref(e);
		tap_ok(tl_has(jstr(run_info(c), "reason"), "deleted while lanternd was not watching"),
		       "the vanished pod's run says it went while lanternd was not watching (asked by name "
		       "after the list)");
	}


	/* warm pools: pods in lantern-pool, claimed by relabelling (the test is the
	 * kubelet, lantern-oci and the container runtime here; kube_pods_test runs them
	 * through a real containerd) */
	tl_daemon_stop(&T, SIGTERM);
	{
		char more[800], sbx[64], wl[64], cgpath[300], cid[160], status[1024], envfile[400], *out = NULL;
		char pname_b[128] = "", uid_b[64] = "";
		const char *pname = NULL, *uid = NULL, *wsock_dir;
		json_t *pods, *pp, *ans, *ans2 = NULL, *pools;
		pid_t wpid = -1;
		int st = 0;

		snprintf(more, sizeof(more), "--pools %s", tl_file(&T, "pools.yaml", "pools:\n  - name: kp\n"
			 "    image_digest: " IMAGE "\n    isolation: trusted\n    limits: {vcpu: 500m, memory: 256Mi}\n"
			 "    size: {min: 1, max: 1}\n"));
		ok = start(kc_token, more) == 0;
		for (uint64_t end = tl_ms() + 10000; ok && tl_ms() < end; usleep(100000)) {
			pods = pods_in("lantern-pool");
			if (json_array_size(pods))
				break;
			json_decref(pods);
			pods = NULL;
		}
		pods = ok ? pods_in("lantern-pool") : json_array();
		pp = json_array_get(pods, 0);
		/* copies: pods is read again below */
		if (jstr(pp, "metadata.name"))
			pname = strcpy(pname_b, jstr(pp, "metadata.name"));
		if (jstr(pp, "metadata.uid"))
			uid = strcpy(uid_b, jstr(pp, "metadata.uid"));
		o = objects();
		e = NULL;
		{
			json_t *ns;
			size_t i;

			json_array_foreach(json_object_get(o, "namespaces"), i, ns)
				if (!strcmp(jstr(ns, "metadata.name") ?: "", "lantern-pool"))
					e = ns;
		}
		{
			json_t *c = json_array_get(json_object_get(json_object_get(pp, "spec"), "containers"), 0);
			json_t *labels = json_object_get(json_object_get(pp, "metadata"), "labels");

			tap_ok(ok && json_array_size(pods) == 1 && pname && e &&
			       !strcmp(sval(labels, "lantern.dev/pool") ?: "", "kp") && !sval(labels, "lantern.dev/run-id") &&
			       !sval(labels, "lantern.dev/tenant") && !json_object_get(c, "command") &&
			       !strcmp(jstr(pp, "spec.runtimeClassName") ?: "", "lantern-trusted") &&
			       !strcmp(jstr(pp, "spec.nodeName") ?: "", NODE) && host_path_at(pp, "/run/lantern/lantern-waiter"),
			       "--pools under --kubernetes: the pool's pod is made in namespace lantern-pool (made too), on "
			       "this node, its class's RuntimeClass, labelled with its pool and no run or tenant, no "
			       "command (the image's own), lantern-waiter's binary as a host path (%s)", pname ? pname : "none");
		}
		json_decref(o);

		/* lantern-oci binds its sandbox, then its workload container with the process
		 * containerd made of the image; the answer says to run the waiter instead */
		snprintf(sbx, sizeof(sbx), "sbx%016llx", (unsigned long long)tl_ms());
		snprintf(wl, sizeof(wl), "wl%016llx", (unsigned long long)tl_ms());
		snprintf(cgpath, sizeof(cgpath), "/kubepods/pod%s/%s", uid ? uid : "x", sbx);
		ans = bind_as_oci(pp, sbx, sbx, cgpath, NULL);
		snprintf(cgpath, sizeof(cgpath), "/kubepods/pod%s/%s", uid ? uid : "x", wl);
		snprintf(envfile, sizeof(envfile), "%s/claimed.env", T.dir);
		if (ans && !strcmp(jstr(ans, "type") ?: "", "bound"))
			ans2 = bind_as_oci(pp, wl, sbx, cgpath, json_pack("{s:[s,s,s], s:[s,s], s:s}", "args", "/bin/sh",
								       "-c", "echo image-default", "env",
								       "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
								       "FROM_IMAGE=yes", "cwd", T.dir));
		tap_ok(ans2 && !strcmp(jstr(ans2, "type") ?: "", "bound") &&
		       tl_has(jstr(ans2, "cgroups_path"), T.cgroot) &&
		       !strcmp(json_string_value(json_array_get(json_object_get(ans2, "exec"), 0)) ?: "",
			       "/run/lantern/lantern-waiter"),
		       "lantern-oci's binds of the pooled pod's containers: both bound, moved from the kubelet's "
		       "cgroup into the sandbox's instance, the workload told to run lantern-waiter (%s)",
		       tl_oneline(ans2 ? json_dumps(ans2, JSON_COMPACT) : "none"));
		/* ... and a container of another pod naming the sandbox is refused */
		{
			json_t *forged = json_deep_copy(pp), *fa;

			json_object_set_new(json_object_get(forged, "metadata"), "name", json_string("lantern-forged"));
			fa = bind_as_oci(forged, "wlforged", sbx, "/kubepods/podx/wlforged",
					 json_pack("{s:[s]}", "args", "/bin/true"));
			tap_ok(fa && !strcmp(jstr(fa, "type") ?: "", "error") && tl_has(jstr(fa, "error"), "not the pod"),
			       "a container of another pod naming the pooled sandbox is refused (%s)",
			       tl_oneline(jstr(fa, "error")));
			json_decref(fa);
			json_decref(forged);
		}
		/* the container runs the waiter in the instance; the kubelet says Running */
		wsock_dir = host_path_at(pp, "/run/lantern/waiter");
		if (ans2 && wsock_dir) {
			char sock[512];

			snprintf(sock, sizeof(sock), "%s/waiter.sock", wsock_dir);
			char waiter[512];

			snprintf(waiter, sizeof(waiter), "%s/lantern-waiter", T.build);
			wpid = run_in_cgroup(jstr(ans2, "cgroups_path"), waiter, sock);
			tl_child_track(wpid, SIGKILL);
		}
		snprintf(cid, sizeof(cid), "containerd://%s", wl);
		snprintf(status, sizeof(status), "{\"phase\": \"Running\", \"containerStatuses\": [{\"name\": "
			 "\"workload\", \"ready\": true, \"restartCount\": 0, \"image\": \"" IMAGE "\", \"imageID\": \"\", "
			 "\"containerID\": \"%s\", \"state\": {\"running\": {\"startedAt\": \"2026-11-30T00:00:00Z\"}}}]}", cid);
		kubelet_ns("lantern-pool", pname ? pname : "", status);
		pools = NULL;
		for (uint64_t end = tl_ms() + 10000; tl_ms() < end; usleep(100000)) {
			json_decref(pools);
			pools = tl_lantern_json(&T, "pools --json");
			if (json_integer_value(json_object_get(json_array_get(pools, 0), "ready")) == 1)
				break;
		}
		tap_ok(json_integer_value(json_object_get(json_array_get(pools, 0), "ready")) == 1,
		       "once the kubelet runs it and its waiter says hello from inside the instance, the sandbox is "
		       "ready (lantern pools: %s)", tl_oneline(pools ? json_dumps(json_array_get(pools, 0), JSON_COMPACT) : "none"));
		json_decref(pools);

		/* a spawn that fits claims it: the pod is relabelled for the run and its tenant,
		 * the waiter execs the run's process with the image's environment */
		{
			char extra[600];

			snprintf(extra, sizeof(extra), "  network: none\n");
			ok = submit_script("k-claim", "trusted", extra, "env > claimed.env; pwd >> claimed.env", id,
					   sizeof(id));
		}
		ok = ok && tl_wait_file_text(envfile, "FROM_IMAGE=yes", 10000);
		r = run_info(id);
		tap_ok(ok && tl_wait_file_text(envfile, "LANTERN_RUN_ID=", 1000) && tl_wait_file_text(envfile, T.dir, 1000) &&
		       !strcmp(jstr(r, "pod.namespace") ?: "", "lantern-pool") &&
		       !strcmp(jstr(r, "pod.name") ?: "", pname ? pname : "-") && !strcmp(jstr(r, "pool.name") ?: "", "kp"),
		       "a spawn that fits claims the pooled pod: the waiter execs the run's command with the image's "
		       "environment and working directory and the run's own (LANTERN_RUN_ID); the run's pod is the "
		       "pool's, in lantern-pool (%s)", tl_oneline(r ? json_dumps(r, JSON_COMPACT) : "none"));
		json_decref(r);
		pp = NULL;
		for (uint64_t end = tl_ms() + 5000; tl_ms() < end; usleep(100000)) {
			json_decref(pods);
			pods = pods_in("lantern-pool");
			for (size_t i = 0; i < json_array_size(pods); i++)
				if (!strcmp(jstr(json_array_get(pods, i), "metadata.name") ?: "", pname ? pname : "-"))
					pp = json_array_get(pods, i);
			if (pp && sval(json_object_get(json_object_get(pp, "metadata"), "labels"), "lantern.dev/run-id"))
				break;
			pp = NULL;
		}
		{
			json_t *md = json_object_get(pp, "metadata");

			tap_ok(pp && !strcmp(sval(json_object_get(md, "labels"), "lantern.dev/run-id") ?: "", id) &&
			       !strcmp(sval(json_object_get(md, "labels"), "lantern.dev/tenant") ?: "", TENANT) &&
			       !strcmp(sval(json_object_get(md, "annotations"), "lantern.dev/run-id") ?: "", id) &&
			       !strcmp(sval(json_object_get(md, "labels"), "lantern.dev/pool") ?: "", "kp"),
			       "at the claim the pod is patched (merge patch, schema-valid) to name its run and tenant, "
			       "keeping its pool's labels (%s)", tl_oneline(md ? json_dumps(md, JSON_COMPACT) : "none"));
		}
		/* the workload ends; the kubelet reports it; the run ends with its code */
		if (wpid > 0) {
			waitpid(wpid, &st, 0);
			tl_child_forget(wpid);
		}
		snprintf(status, sizeof(status), "{\"phase\": \"Failed\", \"containerStatuses\": [{\"name\": \"workload\", "
			 "\"ready\": false, \"restartCount\": 0, \"image\": \"" IMAGE "\", \"imageID\": \"\", \"containerID\": "
			 "\"%s\", \"state\": {\"terminated\": {\"exitCode\": %d, \"reason\": \"Error\"}}}]}", cid,
			 WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		kubelet_ns("lantern-pool", pname ? pname : "", status);
		r = wait_run(id, "succeeded", NULL, 10000);
		usleep(300000);
		tap_ok(is(r, "succeeded") && WIFEXITED(st) && WEXITSTATUS(st) == 0 && !pod_exists(pname ? pname : "-"),
		       "the claimed workload's end (as the kubelet reports it) ends the run, and its pod is deleted");
		json_decref(r);
		/* the pool refills with a new pod; a spec that names only args does not fit */
		{
			size_t n = 0;
			bool other = false;

			for (uint64_t end = tl_ms() + 10000; tl_ms() < end && !other; usleep(100000)) {
				json_decref(pods);
				pods = pods_in("lantern-pool");
				n = json_array_size(pods);
				other = n == 1 && strcmp(jstr(json_array_get(pods, 0), "metadata.name") ?: "", pname ? pname : "");
			}
			tap_ok(other, "the pool refills: a new pod in lantern-pool (%zu)", n);
			/* the kubelet cannot start that one: the fill fails with its reason, the pod goes */
			if (other) {
				char bad[128];
				json_t *pl = NULL;
				bool gone = false;

				snprintf(bad, sizeof(bad), "%s", jstr(json_array_get(pods, 0), "metadata.name") ?: "");
				kubelet_ns("lantern-pool", bad, "{\"phase\": \"Pending\", \"containerStatuses\": [{\"name\": "
					   "\"workload\", \"ready\": false, \"restartCount\": 0, \"image\": \"" IMAGE "\", "
					   "\"imageID\": \"\", \"state\": {\"waiting\": {\"reason\": \"CreateContainerError\", "
					   "\"message\": \"bind: refused: test\"}}}]}");
				for (uint64_t end = tl_ms() + 10000; tl_ms() < end && !gone; usleep(100000)) {
					json_decref(pl);
					pl = tl_lantern_json(&T, "pools --json");
					gone = !pod_exists(bad) &&
					       json_integer_value(json_object_get(json_array_get(pl, 0), "fill_failures")) >= 1;
				}
				tap_ok(gone && tl_log_contains(&T, "CreateContainerError: bind: refused: test"),
				       "a pool pod the kubelet cannot start (CreateContainerError) fails the fill with the "
				       "kubelet's reason and is deleted (%s)",
				       tl_oneline(pl ? json_dumps(json_array_get(pl, 0), JSON_COMPACT) : "none"));
				json_decref(pl);
			} else {
				tap_ok(false, "a pool pod the kubelet cannot start fails the fill (no pod to fail)");
			}
		}
		/* SIGTERM: the waiting pod goes with lanternd (its start given up) */
		tl_daemon_stop(&T, SIGTERM);
		json_decref(pods);
		pods = pods_in("lantern-pool");
		tap_ok(json_array_size(pods) == 0, "SIGTERM: lanternd deletes the pool's pods no run took (%zu left)",
		       json_array_size(pods));
		json_decref(pods);
		json_decref(ans);
		json_decref(ans2);
		free(out);
	}

	/* least RBAC */
	{
		json_t *log = api("GET", "/_test/log", NULL, NULL), *res;
		char *out = NULL, path[400];

		snprintf(path, sizeof(path), "%s/api.log.json", T.dir);
		json_dump_file(log, path, JSON_COMPACT);
		json_decref(log);
		tl_sh(&out, NULL, "node tests/kube-apiserver/rbac-check.js %s deploy/daemonset/rbac.yaml lanternd", path);
		res = out ? json_loads(out, 0, NULL) : NULL;
		tap_ok(res && json_array_size(json_object_get(res, "denied")) == 0,
		       "every API call lanternd made is allowed by deploy/daemonset/rbac.yaml (%s)", tl_oneline(out));
		tap_ok(res && json_array_size(json_object_get(res, "unused")) == 0,
		       "and every verb that ClusterRole grants was needed (%s)", tl_oneline(out));
		json_decref(res);
		free(out);
	}

	/* what lanternd sent was all valid */
	s = invalid_calls();
	tap_ok(s && !*s, "no object lanternd sent during the whole test was refused by the schema check (%s)", s ? s : "");
	free(s);

	/* the in-cluster configuration (the DaemonSet's): the service account's
	 * token and CA at their fixed path, seen in a mount namespace of its own */
	tl_daemon_stop(&T, SIGTERM);
	{
		char cmd[4096];
		pid_t pid;

		snprintf(cmd, sizeof(cmd),
			 "mount -t tmpfs tmpfs /run && mkdir -p /run/secrets/kubernetes.io/serviceaccount && "
			 "printf %%s " TOKEN " > /run/secrets/kubernetes.io/serviceaccount/token && "
			 "cp %s/ca.pem /run/secrets/kubernetes.io/serviceaccount/ca.crt && "
			 "KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT=%u exec %s/lanternd --state-dir %s "
			 "--socket %s --bpffs %s --cgroup-root %s --kubernetes --node-name " NODE " --tenant " TENANT
			 " --metrics-addr 127.0.0.1:%u --kube-start-timeout 2 >>%s 2>&1",
			 T.dir, K.port, T.build, T.state, T.sock, T.bpffs, T.cgroot, metrics_port, T.log);
		if ((pid = fork()) == 0) {
			execlp("unshare", "unshare", "--mount", "--propagation", "private", "sh", "-c", cmd, (char *)NULL);
			_exit(127);
		}
		T.daemon = pid;
		ok = wait_probe("/readyz", 200, "ok runtime: kubernetes", 15000, &body);
		tap_ok(ok, "in-cluster configuration (KUBERNETES_SERVICE_HOST/PORT, the service account's token and "
		       "CA): ready (%s)", tl_oneline(body));
		free(body);
		body = NULL;
		ok = submit("k-incluster", "trusted", NULL, id, sizeof(id)) && (pod = pod_of_run(id, 5000));
		calls("POST", "/api/v1/namespaces/" NS "/pods", NULL, &e);
		tap_ok(ok && e && !strcmp(jstr(e, "user") ?: "", "token"),
		       "and a spawn's pod is created with the service account's token");
		json_decref(e);
		snprintf(name, sizeof(name), "%s", jstr(pod, "metadata.name") ?: "");
		json_decref(pod);
		/* the kubelet never reports it running (a sandbox lantern-oci refused, say) */
		r = wait_run(id, "failed", NULL, 8000);
		usleep(300000);
		tap_ok(ok && is(r, "failed") && tl_has(jstr(r, "reason"), "did not start within 2s") && !pod_exists(name),
		       "a pod still Pending after --kube-start-timeout (2 s): run failed saying so, pod deleted (%s)",
		       tl_oneline(jstr(r, "reason")));
		json_decref(r);
	}
	tl_env_cleanup(&T);
	return tap_done();
}
