/* kubelet.c: see kubelet.h. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kubelet.h"
#include "lantern/cri.h"
#include "lantern/util.h"

#define MAX_ITEMS 32

static const char *str(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* RFC 3339 of ns since the epoch (now when 0). */
static const char *stamp(int64_t ns, char *buf, size_t len)
{
	time_t s = ns ? (time_t)(ns / 1000000000) : time(NULL);
	struct tm tm;

	gmtime_r(&s, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

/* A Kubernetes quantity in bytes (memory) or millicores (cpu, milli); 0 when unset or
 * not understood. */
static int64_t quantity(const char *q, bool milli)
{
	static const struct { const char *sfx; int64_t mul; } u[] = {
		{ "Ki", 1ll << 10 }, { "Mi", 1ll << 20 }, { "Gi", 1ll << 30 }, { "k", 1000 }, { "M", 1000000 },
		{ "G", 1000000000 }, { "m", 0 }, { "", 1 },
	};
	char *end;
	double v;

	if (!q || (v = strtod(q, &end)) <= 0)
		return 0;
	for (size_t i = 0; i < sizeof(u) / sizeof(u[0]); i++)
		if (!strcmp(end, u[i].sfx))
			return !u[i].mul ? (milli ? (int64_t)v : (int64_t)(v / 1000)) :
					   (int64_t)(v * (double)u[i].mul * (milli ? 1000 : 1));
	return 0;
}

/* Merges st into the pod's status, as a kubelet's status manager does. */
static void report(struct tl_kubelet *kl, const struct tl_kubelet_pod *p, json_t *st)
{
	char path[300];
	long code = 0;

	snprintf(path, sizeof(path), "/_test/pods/%s/%s/status", p->ns, p->name);
	json_decref(tl_kube_api(kl->k, "POST", path, st, &code));
}

static json_t *container_status(const char *image, const char *cid, bool ready, json_t *state)
{
	json_t *c = json_pack("{s:s, s:b, s:i, s:s, s:s, s:o}", "name", "workload", "ready", ready, "restartCount", 0,
			      "image", image ? image : "", "imageID", "", "state", state);

	if (cid && cid[0])
		json_object_set_new(c, "containerID", json_sprintf("containerd://%s", cid));
	return c;
}

static void report_waiting(struct tl_kubelet *kl, struct tl_kubelet_pod *p, const char *image, const char *reason)
{
	report(kl, p, json_pack("{s:[o]}", "containerStatuses",
				container_status(image, p->container, false,
						 json_pack("{s:{s:s, s:s}}", "waiting", "reason", reason, "message",
							   p->error))));
}

static struct tl_kubelet_pod *find(struct tl_kubelet *kl, const char *uid)
{
	for (int i = 0; i < TL_KUBELET_PODS; i++)
		if (kl->pods[i].seq && !kl->pods[i].gone && !strcmp(kl->pods[i].uid, uid))
			return &kl->pods[i];
	return NULL;
}

/* A free slot: never used, else the oldest torn-down pod's. */
static struct tl_kubelet_pod *slot(struct tl_kubelet *kl)
{
	struct tl_kubelet_pod *best = NULL;

	for (int i = 0; i < TL_KUBELET_PODS; i++) {
		struct tl_kubelet_pod *p = &kl->pods[i];

		if (!p->seq)
			return p;
		if (p->gone && (!best || p->seq < best->seq))
			best = p;
	}
	return best;
}

/* The pod's volumes as mounts of the container's volumeMounts; false (the reason in
 * p->error) when one cannot be made. */
static bool mounts(struct tl_kubelet *kl, struct tl_kubelet_pod *p, json_t *spec, json_t *ct, struct cri_mount *m,
		   char host[][600], size_t *n)
{
	json_t *vm, *v;
	size_t i, j;

	*n = 0;
	json_array_foreach(json_object_get(ct, "volumeMounts"), i, vm) {
		json_t *vol = NULL, *hp, *ed;
		struct stat sb;

		if (*n >= MAX_ITEMS)
			break;
		json_array_foreach(json_object_get(spec, "volumes"), j, v)
			if (!vol && !strcmp(str(v, "name") ?: "", str(vm, "name") ?: ""))
				vol = v;
		if ((hp = json_object_get(vol, "hostPath"))) {
			const char *type = str(hp, "type") ?: "";

			snprintf(host[*n], 600, "%s", str(hp, "path") ?: "");
			if ((!strcmp(type, "Directory") && (stat(host[*n], &sb) || !S_ISDIR(sb.st_mode))) ||
			    (!strcmp(type, "File") && (stat(host[*n], &sb) || !S_ISREG(sb.st_mode)))) {
				snprintf(p->error, sizeof(p->error), "hostPath type check failed: %s is not a %s",
					 host[*n], type);
				return false;
			}
		} else if ((ed = json_object_get(vol, "emptyDir"))) {
			snprintf(host[*n], 600, "%s/pods/%s/volumes/%s", kl->dir, p->uid, str(vol, "name"));
			util_mkdir_p(host[*n], 0777);
			chmod(host[*n], 0777);
		} else {
			snprintf(p->error, sizeof(p->error), "volume \"%s\": only hostPath and emptyDir are supported",
				 str(vm, "name") ?: "");
			return false;
		}
		m[*n].host = host[*n];
		m[*n].container = str(vm, "mountPath") ?: "";
		m[*n].read_only = json_is_true(json_object_get(vm, "readOnly"));
		(*n)++;
	}
	return true;
}

/* NULL-terminated copy of a JSON array of strings (NULL when absent). */
static char **strv(json_t *a, char **v, size_t max)
{
	json_t *s;
	size_t i, n = 0;

	if (!json_is_array(a) || !json_array_size(a))
		return NULL;
	json_array_foreach(a, i, s)
		if (n < max - 1 && json_is_string(s))
			v[n++] = (char *)json_string_value(s);
	v[n] = NULL;
	return v;
}

static size_t kvs(json_t *o, struct cri_kv *kv, size_t max)
{
	const char *k;
	json_t *v;
	size_t n = 0;

	json_object_foreach(o, k, v)
		if (n < max && json_is_string(v))
			kv[n++] = (struct cri_kv){ k, json_string_value(v) };
	return n;
}

/* RunPodSandbox, CreateContainer, StartContainer; reports what came of it. The work is
 * done on a copy of the pod's entry, which is published (under the lock that
 * tl_kubelet_wait reads it with) once its outcome is known. */
static void start_pod(struct tl_kubelet *kl, struct cri *c, struct tl_kubelet_pod *entry, json_t *pod)
{
	struct tl_kubelet_pod w = *entry, *p = &w;
	json_t *md = json_object_get(pod, "metadata"), *spec = json_object_get(pod, "spec");
	json_t *ct = json_array_get(json_object_get(spec, "containers"), 0), *e, *lim;
	struct cri_kv labels[MAX_ITEMS + 3], ann[MAX_ITEMS], env[MAX_ITEMS];
	struct cri_mount m[MAX_ITEMS];
	char host[MAX_ITEMS][600], logdir[600], hostname[64], handler[80], *cmd[MAX_ITEMS], *args[MAX_ITEMS], now[40];
	const char *rc = str(spec, "runtimeClassName"), *image = str(ct, "image");
	struct cri_pod cp = { 0 };
	struct cri_container cc = { 0 };
	struct lerr err = { "" };
	size_t i, ne = 0, nm = 0, nl;
	int64_t cpu;

	snprintf(logdir, sizeof(logdir), "%s/pods/%s_%s_%s", kl->dir, p->ns, p->name, p->uid);
	util_mkdir_p(logdir, 0755);
	snprintf(hostname, sizeof(hostname), "%.63s", p->name);
	/* a RuntimeClass's handler: lantern-<class> is lantern-<class> (runtimeclasses.yaml) */
	snprintf(handler, sizeof(handler), "%s", rc ? rc : "");
	snprintf(p->cgroup_parent, sizeof(p->cgroup_parent), "/kubepods/pod%s", p->uid);
	/* the pod's labels and the three a kubelet adds to every sandbox */
	nl = kvs(json_object_get(md, "labels"), labels, MAX_ITEMS);
	labels[nl++] = (struct cri_kv){ "io.kubernetes.pod.name", p->name };
	labels[nl++] = (struct cri_kv){ "io.kubernetes.pod.namespace", p->ns };
	labels[nl++] = (struct cri_kv){ "io.kubernetes.pod.uid", p->uid };
	cp = (struct cri_pod){ .name = p->name, .uid = p->uid, .ns = p->ns, .hostname = hostname, .log_dir = logdir,
			       .cgroup_parent = p->cgroup_parent, .handler = handler, .labels = labels,
			       .n_labels = nl,
			       .annotations = ann,
			       .n_annotations = kvs(json_object_get(md, "annotations"), ann, MAX_ITEMS) };
	if (!ct) {
		snprintf(p->error, sizeof(p->error), "the pod has no container");
		goto create_error;
	}
	if (cri_run_pod(c, &cp, p->sandbox, sizeof(p->sandbox), &err) < 0) {
		snprintf(p->error, sizeof(p->error), "%s", err.msg);
		p->sandbox[0] = '\0';
		goto create_error;
	}
	json_array_foreach(json_object_get(ct, "env"), i, e)
		if (ne < MAX_ITEMS && str(e, "name") && str(e, "value"))
			env[ne++] = (struct cri_kv){ str(e, "name"), str(e, "value") };
	if (!mounts(kl, p, spec, ct, m, host, &nm))
		goto create_error;
	lim = json_object_get(json_object_get(ct, "resources"), "limits");
	cpu = quantity(str(lim, "cpu"), true);
	cc = (struct cri_container){ .name = str(ct, "name") ?: "workload", .image = image,
				     .command = strv(json_object_get(ct, "command"), cmd, MAX_ITEMS),
				     .args = strv(json_object_get(ct, "args"), args, MAX_ITEMS),
				     .envs = env, .n_envs = ne, .mounts = m, .n_mounts = nm,
				     .log_path = "workload/0.log", .memory_bytes = quantity(str(lim, "memory"), false),
				     .cpu_quota_us = cpu * 100, .cpu_period_us = 100000 };
	if (cri_create_container(c, p->sandbox, &cp, &cc, p->container, sizeof(p->container), &err) < 0) {
		snprintf(p->error, sizeof(p->error), "%s", err.msg);
		p->container[0] = '\0';
		goto create_error;
	}
	if (cri_start_container(c, p->container, &err) < 0) {
		snprintf(p->error, sizeof(p->error), "%s", err.msg);
		p->failed = true;
		report_waiting(kl, p, image, "RunContainerError");
		goto publish;
	}
	report(kl, p, json_pack("{s:s, s:s, s:[o]}", "phase", "Running", "startTime", stamp(0, now, sizeof(now)),
				"containerStatuses",
				container_status(image, p->container, true,
						 json_pack("{s:{s:s}}", "running", "startedAt", now))));
	p->started = true;
	goto publish;
create_error:
	p->failed = true;
	report_waiting(kl, p, image, "CreateContainerError");
publish:
	pthread_mutex_lock(&kl->mu);
	*entry = w;
	pthread_mutex_unlock(&kl->mu);
}

/* A started container that exited: terminated, and the pod's phase. */
static void check_pod(struct tl_kubelet *kl, struct cri *c, struct tl_kubelet_pod *p, json_t *pod)
{
	json_t *ct = json_array_get(json_object_get(json_object_get(pod, "spec"), "containers"), 0);
	struct cri_status st;
	struct lerr err = { "" };
	char a[40], b[40];
	const char *reason;

	if (cri_container_status(c, p->container, &st, &err) < 0 || st.state != CRI_EXITED)
		return;
	reason = st.oom_killed ? "OOMKilled" : st.exit_code ? "Error" : "Completed";
	report(kl, p, json_pack("{s:s, s:[o]}", "phase", st.exit_code ? "Failed" : "Succeeded", "containerStatuses",
				container_status(str(ct, "image"), p->container, false,
						 json_pack("{s:{s:i, s:s, s:s, s:s, s:s}}", "terminated", "exitCode",
							   st.exit_code, "reason", reason, "message", st.message,
							   "startedAt", stamp(st.started_at, a, sizeof(a)),
							   "finishedAt", stamp(st.finished_at, b, sizeof(b))))));
	pthread_mutex_lock(&kl->mu);
	p->ended = true;
	p->exit_code = st.exit_code;
	p->oom = st.oom_killed;
	pthread_mutex_unlock(&kl->mu);
}

/* Deleted: the container gets its grace, then the sandbox goes. */
static void kill_pod(struct tl_kubelet *kl, struct cri *c, struct tl_kubelet_pod *p)
{
	struct lerr err = { "" };

	if (p->container[0] && p->started && !p->ended)
		cri_stop_container(c, p->container, p->grace_s, &err);
	struct cri_item *items = NULL;
	size_t n = 0;

	if (p->sandbox[0]) {
		cri_stop_pod(c, p->sandbox, &err);
		cri_remove_pod(c, p->sandbox, &err);
	}
	/* and any sandbox of the pod it has no id of (a RunPodSandbox that failed after
	 * containerd made it), as a kubelet's garbage collection finds them */
	if (cri_list_pods(c, "io.kubernetes.pod.uid", p->uid, &items, &n, &err) == 0)
		for (size_t i = 0; i < n; i++) {
			cri_stop_pod(c, items[i].id, &err);
			cri_remove_pod(c, items[i].id, &err);
		}
	free(items);
	/* the pod's cgroup, as a kubelet's pod cgroup manager removes it: made by runc for
	 * a pod whose containers no lantern-oci moved (a handler that is not lantern's) */
	tl_sh(NULL, NULL, "rmdir /sys/fs/cgroup/*/kubepods/pod%s /sys/fs/cgroup/kubepods/pod%s 2>/dev/null", p->uid,
	      p->uid);
	pthread_mutex_lock(&kl->mu);
	p->gone = true;
	pthread_mutex_unlock(&kl->mu);
}

static void sync_pods(struct tl_kubelet *kl, struct cri *c)
{
	char path[300];
	long code = 0;
	json_t *list, *items, *pod;
	bool seen[TL_KUBELET_PODS] = { false };
	size_t i;

	snprintf(path, sizeof(path), "/api/v1/pods?fieldSelector=spec.nodeName%%3D%s", kl->node);
	list = tl_kube_api(kl->k, "GET", path, NULL, &code);
	if (!list || code != 200) {
		json_decref(list);
		return;
	}
	items = json_object_get(list, "items");
	json_array_foreach(items, i, pod) {
		json_t *md = json_object_get(pod, "metadata");
		const char *uid = str(md, "uid") ?: "";
		struct tl_kubelet_pod *p = find(kl, uid);
		bool deleting = json_object_get(md, "deletionTimestamp") != NULL;

		if (!p && !deleting && (p = slot(kl))) {
			json_t *g = json_object_get(json_object_get(pod, "spec"), "terminationGracePeriodSeconds");

			pthread_mutex_lock(&kl->mu);
			memset(p, 0, sizeof(*p));
			snprintf(p->ns, sizeof(p->ns), "%s", str(md, "namespace") ?: "");
			snprintf(p->name, sizeof(p->name), "%s", str(md, "name") ?: "");
			snprintf(p->uid, sizeof(p->uid), "%s", uid);
			p->grace_s = json_is_integer(g) ? (int)json_integer_value(g) : 30;
			p->grace_s = p->grace_s > 10 ? 10 : p->grace_s;
			p->seq = ++kl->seq;
			pthread_mutex_unlock(&kl->mu);
			start_pod(kl, c, p, pod);
		}
		if (!p)
			continue;
		if (deleting) {
			kill_pod(kl, c, p);
			continue;
		}
		seen[p - kl->pods] = true;
		if (p->started && !p->ended)
			check_pod(kl, c, p, pod);
	}
	for (int k = 0; k < TL_KUBELET_PODS; k++)
		if (kl->pods[k].seq && !kl->pods[k].gone && !seen[k])
			kill_pod(kl, c, &kl->pods[k]);
	json_decref(list);
}

static void *loop(void *arg)
{
	struct tl_kubelet *kl = arg;
	struct cri *c = NULL;
	struct lerr err = { "" };

	if (cri_open(kl->endpoint, 60000, &c, &err) < 0) {
		fprintf(stderr, "test kubelet: %s\n", err.msg);
		return NULL;
	}
	for (;;) {
		pthread_mutex_lock(&kl->mu);
		bool run = kl->run;
		pthread_mutex_unlock(&kl->mu);

		if (!run)
			break;
		sync_pods(kl, c);
		usleep(50000);
	}
	for (int i = 0; i < TL_KUBELET_PODS; i++)
		if (kl->pods[i].seq && !kl->pods[i].gone)
			kill_pod(kl, c, &kl->pods[i]);
	cri_close(c);
	/* kubepods itself when nothing else is in it */
	tl_sh(NULL, NULL, "rmdir /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods 2>/dev/null");
	return NULL;
}

int tl_kubelet_start(struct tl_kubelet *kl, struct tl_kube *k, const char *node, const char *endpoint)
{
	kl->k = k;
	snprintf(kl->node, sizeof(kl->node), "%s", node);
	snprintf(kl->endpoint, sizeof(kl->endpoint), "%s", endpoint);
	snprintf(kl->dir, sizeof(kl->dir), "%s/kubelet", k->t->dir);
	util_mkdir_p(kl->dir, 0755);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	pthread_mutex_init(&kl->mu, NULL);
	kl->run = true;
	if (pthread_create(&kl->th, NULL, loop, kl) != 0)
		return -errno;
	kl->started = true;
	return 0;
}

void tl_kubelet_stop(struct tl_kubelet *kl)
{
	if (!kl->started)
		return;
	pthread_mutex_lock(&kl->mu);
	kl->run = false;
	pthread_mutex_unlock(&kl->mu);
	pthread_join(kl->th, NULL);
	kl->started = false;
}

bool tl_kubelet_wait(struct tl_kubelet *kl, const char *ns, const char *name, enum tl_kubelet_until until,
		     struct tl_kubelet_pod *out, int ms)
{
	for (uint64_t end = tl_ms() + (uint64_t)ms;; usleep(50000)) {
		struct tl_kubelet_pod *p = NULL;
		bool ok = false;

		pthread_mutex_lock(&kl->mu);
		for (int i = 0; i < TL_KUBELET_PODS; i++)
			if (kl->pods[i].seq && !strcmp(kl->pods[i].ns, ns) && !strcmp(kl->pods[i].name, name) &&
			    (!p || kl->pods[i].seq > p->seq))
				p = &kl->pods[i];
		if (p) {
			ok = until == TL_KUBELET_STARTED ? p->started : until == TL_KUBELET_ENDED ? p->ended :
			     until == TL_KUBELET_FAILED ? p->failed : p->gone;
			if (out)
				*out = *p;
		} else if (out) {
			memset(out, 0, sizeof(*out));
		}
		pthread_mutex_unlock(&kl->mu);
		if (ok)
			return true;
		if (tl_ms() >= end)
			return false;
	}
}
