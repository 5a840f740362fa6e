/* kube.c: the Kubernetes runtime (lanternd --kubernetes). On a Kubernetes node the
 * kubelet kills runtime pods the API server does not know, so spawns go through the
 * API server: each run is a Pod in its tenant's namespace lantern-t-<tenant>, placed
 * on this node (nodeName: the control plane or `lantern run` already chose it), with
 * runtimeClassName lantern-<class>, so containerd starts it through lantern-oci,
 * which binds the container to the run's instance before the real runtime runs. The
 * pod's annotations are what that bind checks (docs/kubernetes.md, "The annotation
 * contract").
 *
 * One watch of this node's lantern pods (field selector spec.nodeName, label
 * app.kubernetes.io/managed-by=lanternd) tells every run how its pod is doing: phases
 * and container states become run statuses (exit codes, OOMKilled, DeadlineExceeded,
 * image errors, a pod the kubelet refused or someone deleted). The first list after
 * a restart settles the runs a previous lanternd left (adopted, or ended meanwhile)
 * and deletes lantern pods no run owns.
 *
 * Warm pools (docs/pools.md): a pooled sandbox is a pod in lantern-pool made by a pool
 * worker (below, "pooled pods"), claimed by patching its labels to name the run.
 *
 * Per run (STATE/runs/<id>/kube.json): the pod's namespace, name and uid, written
 * before the pod is created so a restart always knows which pod to look for. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime_internal.h"
#include "lantern/kube.h"
#include "lantern/oci.h"

#define MANAGED_BY "lanternd"
#define NS_PREFIX "lantern-t-"
#define CONTAINER "workload"
#define LABEL_BACKOFF_MAX_MS 30000
#define DELETE_RETRY_MS 2000
#define LABEL_POOL "lantern.dev/pool"
#define LABEL_INST "lantern.dev/agent-instance-id"
#define SANDBOX_MOUNTS 8
#define SANDBOX_POLL_MS 5000       /* a GET besides the watch, should it be down */
#define SANDBOX_START_MAX_MS 120000
#define SANDBOX_CALL_MS 10000
#define RELABEL_TRIES 5

/* A tenant's namespace as this lanternd knows it: made (with its quota and limits)
 * once, then every pod of the tenant goes straight in. */
struct tenant_ns {
	struct runtime_kube *k;
	char name[64];
	bool ready;
	int step;                        /* 0 namespace, 1 quota, 2 limit range */
	struct kube_req *req;
	struct kube_pod *waiting;        /* pods to create once ready */
	struct tenant_ns *next;
};

enum pod_state {
	P_NONE,                          /* nothing asked of the API server yet */
	P_WAIT_NS,                       /* its namespace is being made */
	P_CREATING,
	P_CREATED,                       /* the API server has it (or had it: adopted) */
	P_DELETING,                      /* a DELETE in flight */
	P_DELETED,                       /* deleted by lanternd, or found gone */
};

/* A run's pod. */
struct kube_pod {
	struct runtime_kube *k;
	struct run *r;
	enum pod_state state;
	char ns[64], name[64], uid[64];
	char phase[32], detail[256];     /* as the last event showed it */
	json_t *pod;                     /* what to create, until created */
	struct kube_req *req;            /* the one request of this pod in flight */
	bool stop_asked;                 /* run_end: delete it once it exists */
	bool exited;                     /* run_exited was called */
	bool ns_again;                   /* its namespace was made again once */
	bool listed;                     /* in the current list */
	int exit_code;                   /* the container's, once terminated */
	struct runtime_pod_binds binds;  /* its containers lantern-oci bound (run_bind) */
	uint64_t start_timer, exit_timer, retry_timer;
	void (*done)(struct run *r);     /* teardown's, once the pod is deleted */
	struct kube_pod *ns_next;
	/* a claimed pooled pod (docs/pools.md): in lantern-pool, its waiter to exec */
	bool pooled;
	int waiter_fd;
	json_t *process;                 /* containerd's process of its container (the bind's) */
	struct runtime_pooled_mount mounts[SANDBOX_MOUNTS];
	size_t n_mounts;
	int relabel_tries;
};

/* A pooled sandbox's pod, from sandbox_start (a pool worker) until a claim takes it or
 * sandbox_stop removes it. Linked in k->sandboxes, under k->mu, while lantern-oci may
 * bind its containers and the watch may see it. */
struct kube_sandbox {
	char inst[64], pool[128], name[80], uid[64];
	struct runtime_pooled_mount mounts[SANDBOX_MOUNTS];
	size_t n_mounts;
	struct runtime_pod_binds binds;
	json_t *exec;                    /* the waiter's command line, for lantern-oci */
	json_t *process;                 /* containerd's process of its container (the bind's) */
	/* what the watch last showed of its pod (sandbox_state), for the worker */
	bool seen;
	int seen_state;
	char seen_cid[128], seen_why[256];
	struct kube_sandbox *next;
};

struct runtime_kube {
	struct loop *loop;
	struct kube *kc;
	struct runtime_oci *oci;
	struct runs *runs;
	char node[254];
	uint32_t node_ip;
	uint32_t grace_s;
	uint64_t start_timeout_ms;
	json_t *ns_labels, *quota, *limits;
	struct tenant_ns *nss;
	struct kube_watch *watch;
	bool listed;                     /* the first list has ended */
	json_t *orphans;                 /* [ns, name] listed without a live run */
	struct kube_req *label_req;
	uint64_t label_timer;
	unsigned label_backoff_ms;
	bool labelled;
	char label_why[256];
	struct lerr label_err;
	pthread_mutex_t mu;              /* sandboxes, pool_ns: pool workers and the loop */
	pthread_cond_t seen;             /* the watch showed a sandbox's pod (or cancel) */
	struct kube_sandbox *sandboxes;
	bool pool_ns;                    /* lantern-pool exists (made or found) */
	bool cancel;                     /* lanternd is stopping: starts under way give up */
};

static const struct runtime_ops kube_ops;

static struct kube_pod *pod_of(const struct run *r)
{
	return run_runtime_state(r);
}

/* A DNS label, as Kubernetes names namespaces: [a-z0-9]([-a-z0-9]*[a-z0-9])?, <= 63. */
static bool dns_label(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

/* ---- what the pod looks like ---- */

static const char *const caps[] = {
	/* the OCI runtime's set (userspace/oci/bundle.c): the same sandbox either way */
	"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
	"NET_BIND_SERVICE",
};

static json_t *quantity(uint64_t v, const char *suffix)
{
	char b[32];

	snprintf(b, sizeof(b), "%llu%s", (unsigned long long)v, suffix);
	return json_string(b);
}

static json_t *resources(const struct spec_limits *l)
{
	json_t *lim = json_object();

	if (l->vcpu_milli)
		json_object_set_new(lim, "cpu", quantity(l->vcpu_milli, "m"));
	if (l->memory_bytes)
		json_object_set_new(lim, "memory", quantity(l->memory_bytes, ""));
	if (l->gpu)
		json_object_set_new(lim, "nvidia.com/gpu", quantity(l->gpu, ""));
	/* requests = limits: the scheduler and the kubelet reserve what the run may use */
	return json_pack("{s:O, s:o}", "requests", lim, "limits", lim);
}

static json_t *strv(char *const *v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

/* The annotations lantern-oci's bind checks (the same names as the CRI runtime's pods:
 * docs/kubernetes.md), and the labels the watch selects on. */
static void identity(struct runtime_kube *k, struct run *r, json_t *labels, json_t *ann)
{
	const char *cls = spec_isolation_name(run_spec(r)->isolation);

	json_object_set_new(labels, "app.kubernetes.io/managed-by", json_string(MANAGED_BY));
	json_object_set_new(labels, "lantern.dev/run-id", json_string(run_id(r)));
	json_object_set_new(labels, "lantern.dev/isolation", json_string(cls));
	json_object_set_new(ann, "lantern.dev/run-id", json_string(run_id(r)));
	json_object_set_new(ann, "lantern.dev/agent-instance-id", json_string(run_instance_id(r)));
	json_object_set_new(ann, "lantern.dev/tenant", json_string(run_tenant(r)));
	json_object_set_new(ann, "lantern.dev/isolation", json_string(cls));
	json_object_set_new(ann, "lantern.dev/network", json_string(spec_network_name(run_spec(r)->network)));
	if (run_spec(r)->name)
		json_object_set_new(ann, "lantern.dev/spec-name", json_string(run_spec(r)->name));
}

/* The pod of spec s (a run's, or a pool's shape): the OCI runtime's sandbox in pod
 * terms: read-only root, /tmp scratch at limits.scratch_size, /run/lantern with the
 * node directories of m as host paths, secrets; with waiter (a pooled sandbox's pod),
 * lantern-waiter's binary at waiter[1] too, and no command: containerd makes the
 * image's, which lantern-oci hands to lanternd and replaces with the waiter. */
static json_t *pod_build(struct runtime_kube *k, const char *ns, const char *name, const struct spec *s,
			 json_t *labels, json_t *ann, json_t *envv, const struct run_env_mount *m, size_t nm,
			 const char *const waiter[2])
{
	json_t *mounts = json_array(), *vols = json_array(), *c, *spec;
	char rc[80];

	json_array_append_new(vols, json_pack("{s:s, s:{s:s, s:o}}", "name", "scratch", "emptyDir", "medium",
					      "Memory", "sizeLimit",
					      quantity(s->limits.scratch_bytes ? s->limits.scratch_bytes : 64ull << 20, "")));
	json_array_append_new(mounts, json_pack("{s:s, s:s}", "name", "scratch", "mountPath", "/tmp"));
	json_array_append_new(vols, json_pack("{s:s, s:{s:s, s:s}}", "name", "lantern", "emptyDir", "medium",
					      "Memory", "sizeLimit", "64Ki"));
	json_array_append_new(mounts, json_pack("{s:s, s:s}", "name", "lantern", "mountPath", "/run/lantern"));
	for (size_t i = 0; i < nm; i++) {
		char vname[32];

		snprintf(vname, sizeof(vname), "lantern-%zu", i);
		json_array_append_new(vols, json_pack("{s:s, s:{s:s, s:s}}", "name", vname, "hostPath", "path",
						      m[i].host, "type", "Directory"));
		json_array_append_new(mounts, json_pack("{s:s, s:s, s:b}", "name", vname, "mountPath", m[i].sandbox,
							"readOnly", m[i].read_only));
	}
	if (waiter) {
		json_array_append_new(vols, json_pack("{s:s, s:{s:s, s:s}}", "name", "waiter", "hostPath", "path",
						      waiter[0], "type", "File"));
		json_array_append_new(mounts, json_pack("{s:s, s:s, s:b}", "name", "waiter", "mountPath", waiter[1],
							"readOnly", 1));
	}
	json_array_append_new(vols, json_pack("{s:s, s:{s:s, s:s}}", "name", "secrets", "emptyDir", "medium",
					      "Memory", "sizeLimit", "1Mi"));
	json_array_append_new(mounts, json_pack("{s:s, s:s}", "name", "secrets", "mountPath", "/run/lantern/secrets"));

	c = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:s, s:{s:b, s:b, s:{s:[s], s:o}}}",
		      "name", CONTAINER, "image", s->image_digest, "imagePullPolicy", "IfNotPresent",
		      "env", envv, "resources", resources(&s->limits), "volumeMounts", mounts,
		      "terminationMessagePolicy", "FallbackToLogsOnError",
		      "securityContext", "allowPrivilegeEscalation", 0, "readOnlyRootFilesystem", 1,
		      "capabilities", "drop", "ALL", "add", strv((char *const *)caps, ARRAY_SIZE(caps)));
	if (!waiter && s->n_command)
		json_object_set_new(c, "command", strv(s->command, s->n_command));
	if (!waiter && s->n_args)
		json_object_set_new(c, "args", strv(s->args, s->n_args));
	snprintf(rc, sizeof(rc), "lantern-%s", spec_isolation_name(s->isolation));
	spec = json_pack("{s:s, s:s, s:s, s:b, s:b, s:I, s:{s:{s:s}}, s:[o], s:o}",
			 "nodeName", k->node, "runtimeClassName", rc, "restartPolicy", "Never",
			 "automountServiceAccountToken", 0, "enableServiceLinks", 0,
			 "terminationGracePeriodSeconds", (json_int_t)k->grace_s,
			 "securityContext", "seccompProfile", "type", "RuntimeDefault",
			 "containers", c, "volumes", vols);
	if (s->limits.timeout_ms)
		json_object_set_new(spec, "activeDeadlineSeconds",
				    json_integer((json_int_t)((s->limits.timeout_ms + 999) / 1000)));
	return json_pack("{s:s, s:s, s:{s:s, s:s, s:o, s:o}, s:o}", "apiVersion", "v1", "kind", "Pod",
			 "metadata", "name", name, "namespace", ns, "labels", labels,
			 "annotations", ann, "spec", spec);
}

static json_t *pod_json(struct runtime_kube *k, struct kube_pod *kp, struct run *r, struct run_env *env)
{
	const struct spec *s = run_spec(r);
	const struct run_env_mount *m;
	size_t nm = run_env_mounts(env, &m);
	char *const *lv = run_env_strings(env, true);
	json_t *labels = json_object(), *ann = json_object(), *envv = json_array();

	identity(k, r, labels, ann);
	json_object_set_new(labels, "lantern.dev/tenant", json_string(run_tenant(r)));
	for (size_t i = 0; i < s->n_env; i++)
		json_array_append_new(envv, json_pack("{s:s, s:s}", "name", s->env[i].key, "value", s->env[i].value));
	for (size_t i = 0; lv[i]; i++) {
		const char *eq = strchr(lv[i], '=');

		if (eq)
			json_array_append_new(envv, json_pack("{s:s%, s:s}", "name", lv[i], (size_t)(eq - lv[i]),
							      "value", eq + 1));
	}
	return pod_build(k, kp->ns, kp->name, s, labels, ann, envv, m, nm, NULL);
}

/* ---- the record ---- */

static void pod_record(struct kube_pod *kp)
{
	char path[PATH_MAX + 16], *s;
	json_t *j = json_pack("{s:s, s:s, s:s}", "namespace", kp->ns, "pod", kp->name, "uid", kp->uid);

	s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	snprintf(path, sizeof(path), "%s/kube.json", run_dir(kp->r));
	/* synced: the pod outlives a crash of the node's lanternd and must be found again */
	if (!s || util_write_file_atomic(path, s, strlen(s)) < 0)
		log_error("run %s: cannot write %s: a restarted lanternd may not find pod %s/%s",
			  run_id(kp->r), path, kp->ns, kp->name);
	free(s);
}

/* ---- ending a run from what its pod shows ---- */

static void exit_now(struct kube_pod *kp, const struct run_exit *x)
{
	if (kp->exited || !kp->r)
		return;
	kp->exited = true;
	if (kp->start_timer) {
		loop_timer_cancel(kp->k->loop, kp->start_timer);
		kp->start_timer = 0;
	}
	if (kp->exit_timer) {
		loop_timer_cancel(kp->k->loop, kp->exit_timer);
		kp->exit_timer = 0;
	}
	run_exited(kp->r, x);
}

/* The run ends as `as` for a reason its pod gave (not an exit of its own). */
static void end_as(struct kube_pod *kp, enum run_status as, const char *why)
{
	struct run_exit x = { .recorded = true, .exit_code = kp->exit_code };

	if (kp->exited || !kp->r)
		return;
	run_end(kp->r, as, why);
	exit_now(kp, &x);
}

static const char *const start_errors[] = {
	/* waiting reasons the kubelet gives a container that will not start by itself:
	 * a spawn fails at once instead of waiting on a backoff (the control plane may
	 * place it again) */
	"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
	"CreateContainerConfigError", "CreateContainerError", "RunContainerError",
};

static json_t *workload_status(json_t *pod)
{
	json_t *cs, *x;
	size_t i;

	cs = json_object_get(json_object_get(pod, "status"), "containerStatuses");
	json_array_foreach(cs, i, x)
		if (!strcmp(json_string_value(json_object_get(x, "name")) ?: "", CONTAINER))
			return json_object_get(x, "state");
	return NULL;
}

/* What the pod says of its run: nothing yet, or how it ended. */
static void judge(struct kube_pod *kp, json_t *pod)
{
	json_t *st = json_object_get(pod, "status"), *state = workload_status(pod);
	json_t *term = json_object_get(state, "terminated"), *wait = json_object_get(state, "waiting");
	const char *phase = json_string_value(json_object_get(st, "phase")) ?: "Pending";
	const char *reason = json_string_value(json_object_get(st, "reason"));
	const char *msg = json_string_value(json_object_get(st, "message")) ?: "";
	const char *treason = json_string_value(json_object_get(term, "reason")) ?: "";
	const char *tmsg = json_string_value(json_object_get(term, "message")) ?: "";
	const char *wreason = json_string_value(json_object_get(wait, "reason"));
	const char *wmsg = json_string_value(json_object_get(wait, "message")) ?: "";
	struct run_exit x = { .recorded = true };
	char why[512];

	snprintf(kp->phase, sizeof(kp->phase), "%s", phase);
	if (wreason)
		snprintf(kp->detail, sizeof(kp->detail), "%s%s%s", wreason, *wmsg ? ": " : "", wmsg);
	else if (reason)
		snprintf(kp->detail, sizeof(kp->detail), "%s%s%s", reason, *msg ? ": " : "", msg);
	else
		kp->detail[0] = '\0';
	if (term)
		kp->exit_code = (int)json_integer_value(json_object_get(term, "exitCode"));
	if (strcmp(phase, "Pending") && kp->start_timer) {
		loop_timer_cancel(kp->k->loop, kp->start_timer);
		kp->start_timer = 0;
	}
	if (kp->exited)
		return;
	if (!strcmp(phase, "Failed") && reason && !strcmp(reason, "DeadlineExceeded")) {
		snprintf(why, sizeof(why), "limits.timeout reached: the kubelet stopped pod %s/%s "
			 "(activeDeadlineSeconds, DeadlineExceeded)", kp->ns, kp->name);
		end_as(kp, RUN_TIMED_OUT, why);
	} else if (!strcmp(phase, "Failed") && reason) {
		/* the pod's own reason comes first: its containers' exits follow from it.
		 * NodeAffinity (the node lacks the class's label: RuntimeClass scheduling
		 * refused it), Evicted, OutOfmemory, Shutdown, ... */
		snprintf(why, sizeof(why), "pod %s/%s failed: %s%s%s", kp->ns, kp->name, reason, *msg ? ": " : "", msg);
		end_as(kp, RUN_FAILED, why);
	} else if (!strcmp(phase, "Succeeded") || term) {
		/* a pod Succeeded when every container exited 0 */
		x.exit_code = term ? kp->exit_code : 0;
		x.oom_killed = !strcmp(treason, "OOMKilled");
		if (!strcmp(treason, "StartError") || !strcmp(treason, "ContainerCannotRun"))
			snprintf(x.error, sizeof(x.error), "pod %s/%s: container %s: %s: %s", kp->ns, kp->name,
				 CONTAINER, treason, tmsg);
		exit_now(kp, &x);
	} else if (!strcmp(phase, "Failed")) {
		snprintf(why, sizeof(why), "pod %s/%s failed%s%s", kp->ns, kp->name, *msg ? ": " : "", msg);
		end_as(kp, RUN_FAILED, why);
	} else if (wreason) {
		for (size_t i = 0; i < ARRAY_SIZE(start_errors); i++) {
			if (!strcmp(wreason, start_errors[i])) {
				snprintf(x.error, sizeof(x.error), "pod %s/%s: image %s: %s: %s", kp->ns, kp->name,
					 run_spec(kp->r)->image_digest, wreason, wmsg);
				x.exit_code = -1;
				exit_now(kp, &x);
				break;
			}
		}
	}
}

/* The pod is gone: deleted by lanternd (a stop) or by someone else. */
static void pod_gone(struct kube_pod *kp, const char *how)
{
	char why[256];

	kp->state = P_DELETED;
	if (kp->exited || !kp->r)
		return;
	if (run_ending(kp->r)) {
		struct run_exit x = { .recorded = true, .exit_code = kp->exit_code };

		exit_now(kp, &x);
		return;
	}
	snprintf(why, sizeof(why), "pod %s/%s %s", kp->ns, kp->name, how);
	end_as(kp, RUN_FAILED, why);
}

static void on_start_timeout(struct loop *l, void *arg)
{
	struct kube_pod *kp = arg;
	char why[512];

	kp->start_timer = 0;
	snprintf(why, sizeof(why), "pod %s/%s did not start within %llus: %s%s%s", kp->ns, kp->name,
		 (unsigned long long)(kp->k->start_timeout_ms / 1000), kp->phase[0] ? kp->phase : "not created",
		 kp->detail[0] ? ", " : "", kp->detail);
	if (kp->r && !kp->exited)
		run_end(kp->r, RUN_FAILED, why);
}

/* ---- deleting ---- */

static void pod_step(struct kube_pod *kp);

static void on_retry(struct loop *l, void *arg)
{
	struct kube_pod *kp = arg;

	kp->retry_timer = 0;
	pod_step(kp);
}

static void on_deleted(void *arg, const struct kube_resp *res)
{
	struct kube_pod *kp = arg;
	char why[512];

	kp->req = NULL;
	if (res->status == 200 || res->status == 202 || res->status == 404) {
		kp->state = P_DELETED;
		if (res->status == 404)
			pod_gone(kp, "is gone");
	} else {
		log_warn("run %s: deleting pod %s/%s: %s", kp->r ? run_id(kp->r) : "?", kp->ns, kp->name,
			 kube_resp_why(res, why, sizeof(why)));
		if (kp->done) {
			/* teardown goes on; the next list finds the pod and reclaims it */
			kp->state = P_DELETED;
		} else {
			/* a stop must happen: again shortly */
			kp->state = P_CREATED;
			if (!kp->retry_timer)
				kp->retry_timer = loop_timer_add(kp->k->loop, DELETE_RETRY_MS, on_retry, kp);
			return;
		}
	}
	pod_step(kp);
}

static void pod_delete(struct kube_pod *kp, uint32_t grace_s)
{
	char path[256];
	struct lerr e;
	json_t *opts = json_pack("{s:s, s:s, s:I, s:s}", "apiVersion", "v1", "kind", "DeleteOptions",
				 "gracePeriodSeconds", (json_int_t)grace_s, "propagationPolicy", "Background");

	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", kp->ns, kp->name);
	kp->state = P_DELETING;
	if (kube_request(kp->k->kc, "DELETE", path, opts, on_deleted, kp, &kp->req, &e) < 0) {
		log_warn("run %s: %s", kp->r ? run_id(kp->r) : "?", e.msg);
		kp->state = P_DELETED;
	}
}

/* What a pod needs next, after each answer: a delete asked for once it exists, and
 * teardown's done once it is deleted. */
static void pod_step(struct kube_pod *kp)
{
	void (*done)(struct run *r);

	if (kp->req || kp->retry_timer || kp->state == P_CREATING || kp->state == P_WAIT_NS)
		return;
	if (kp->state == P_CREATED && (kp->done || kp->stop_asked)) {
		/* at teardown the workload has ended: nothing to wait for */
		pod_delete(kp, kp->done ? 0 : kp->k->grace_s);
		return;
	}
	if (kp->done && (kp->state == P_DELETED || kp->state == P_NONE)) {
		done = kp->done;
		kp->done = NULL;
		done(kp->r);
	}
}

/* ---- creating ---- */

static void ns_enqueue(struct runtime_kube *k, struct kube_pod *kp);
static void ns_forget(struct runtime_kube *k, const char *name);

static void on_created(void *arg, const struct kube_resp *res)
{
	struct kube_pod *kp = arg;
	struct run_exit x = { .recorded = true, .exit_code = -1 };
	const char *kind = json_string_value(json_object_get(json_object_get(res->body, "details"), "kind"));
	char why[512];

	kp->req = NULL;
	if (res->status == 404 && kind && !strcmp(kind, "namespaces") && !kp->ns_again) {
		/* its namespace was deleted since lanternd made it: made again, once */
		log_warn("run %s: namespace %s is gone: making it again", run_id(kp->r), kp->ns);
		kp->ns_again = true;
		ns_forget(kp->k, kp->ns);
		ns_enqueue(kp->k, kp);
		return;
	}
	json_decref(kp->pod);
	kp->pod = NULL;
	if (res->status == 201 || res->status == 200) {
		snprintf(kp->uid, sizeof(kp->uid), "%s", json_string_value(json_object_get(
			json_object_get(res->body, "metadata"), "uid")) ?: "");
		kp->state = P_CREATED;
		if (kp->r)
			pod_record(kp);
		log_info("run %s: pod %s/%s created (uid %s)", kp->r ? run_id(kp->r) : "?", kp->ns, kp->name, kp->uid);
	} else {
		kp->state = P_NONE;
		snprintf(x.error, sizeof(x.error), "pod %s/%s: the API server refused it: %s", kp->ns, kp->name,
			 kube_resp_why(res, why, sizeof(why)));
		exit_now(kp, &x);
	}
	pod_step(kp);
}

static void pod_create(struct kube_pod *kp)
{
	struct run_exit x = { .recorded = true, .exit_code = -1 };
	char path[128];
	struct lerr e;

	if (kp->stop_asked) {
		/* ended before its pod existed */
		kp->state = P_NONE;
		json_decref(kp->pod);
		kp->pod = NULL;
		exit_now(kp, &x);
		pod_step(kp);
		return;
	}
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods", kp->ns);
	kp->state = P_CREATING;
	if (kube_request(kp->k->kc, "POST", path, json_incref(kp->pod), on_created, kp, &kp->req, &e) < 0) {
		kp->state = P_NONE;
		snprintf(x.error, sizeof(x.error), "%s", e.msg);
		exit_now(kp, &x);
	}
}

/* ---- tenant namespaces ---- */

static void ns_next(struct tenant_ns *ns);

static void ns_fail(struct tenant_ns *ns, const char *why)
{
	struct runtime_kube *k = ns->k;
	struct tenant_ns **pp;

	for (pp = &k->nss; *pp && *pp != ns; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = ns->next;
	while (ns->waiting) {
		struct kube_pod *kp = ns->waiting;
		struct run_exit x = { .recorded = true, .exit_code = -1 };

		ns->waiting = kp->ns_next;
		kp->ns_next = NULL;
		kp->state = P_NONE;
		snprintf(x.error, sizeof(x.error), "namespace %s: %s", ns->name, why);
		exit_now(kp, &x);
		pod_step(kp);
	}
	free(ns);
}

static void on_ns_step(void *arg, const struct kube_resp *res)
{
	struct tenant_ns *ns = arg;
	char why[512];

	ns->req = NULL;
	/* 409: made earlier (by this lanternd before a restart, or another node's) */
	if (res->status != 201 && res->status != 200 && res->status != 409) {
		static const char *const what[] = { "creating it", "creating its ResourceQuota",
						    "creating its LimitRange" };

		log_warn("namespace %s: %s: %s", ns->name, what[ns->step], kube_resp_why(res, why, sizeof(why)));
		snprintf(why + strlen(why), sizeof(why) - strlen(why), " (%s)", what[ns->step]);
		ns_fail(ns, why);
		return;
	}
	if (ns->step == 0 && res->status != 409)
		log_info("namespace %s: created", ns->name);
	ns->step++;
	ns_next(ns);
}

static void ns_next(struct tenant_ns *ns)
{
	struct runtime_kube *k = ns->k;
	char path[160];
	json_t *body = NULL;
	struct lerr e;

	if (ns->step == 0) {
		json_t *labels = json_deep_copy(k->ns_labels);

		json_object_set_new(labels, "app.kubernetes.io/managed-by", json_string(MANAGED_BY));
		json_object_set_new(labels, "lantern.dev/tenant", json_string(ns->name + strlen(NS_PREFIX)));
		body = json_pack("{s:s, s:s, s:{s:s, s:o}}", "apiVersion", "v1", "kind", "Namespace",
				 "metadata", "name", ns->name, "labels", labels);
		snprintf(path, sizeof(path), "/api/v1/namespaces");
	} else if (ns->step == 1 && k->quota) {
		body = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s}}, s:O}", "apiVersion", "v1", "kind", "ResourceQuota",
				 "metadata", "name", "lantern", "namespace", ns->name, "labels",
				 "app.kubernetes.io/managed-by", MANAGED_BY, "spec", k->quota);
		snprintf(path, sizeof(path), "/api/v1/namespaces/%s/resourcequotas", ns->name);
	} else if (ns->step == 2 && k->limits) {
		body = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s}}, s:O}", "apiVersion", "v1", "kind", "LimitRange",
				 "metadata", "name", "lantern", "namespace", ns->name, "labels",
				 "app.kubernetes.io/managed-by", MANAGED_BY, "spec", k->limits);
		snprintf(path, sizeof(path), "/api/v1/namespaces/%s/limitranges", ns->name);
	}
	if (body) {
		if (kube_request(k->kc, "POST", path, body, on_ns_step, ns, &ns->req, &e) < 0)
			ns_fail(ns, e.msg);
		return;
	}
	if (ns->step < 2) {
		ns->step++;
		ns_next(ns);
		return;
	}
	ns->ready = true;
	while (ns->waiting) {
		struct kube_pod *kp = ns->waiting;

		ns->waiting = kp->ns_next;
		kp->ns_next = NULL;
		pod_create(kp);
	}
}

static void ns_enqueue(struct runtime_kube *k, struct kube_pod *kp)
{
	struct tenant_ns *ns;

	for (ns = k->nss; ns && strcmp(ns->name, kp->ns); ns = ns->next)
		;
	if (ns && ns->ready) {
		pod_create(kp);
		return;
	}
	kp->state = P_WAIT_NS;
	if (!ns) {
		if (!(ns = calloc(1, sizeof(*ns)))) {
			struct run_exit x = { .recorded = true, .exit_code = -1 };

			snprintf(x.error, sizeof(x.error), "namespace %s: out of memory", kp->ns);
			kp->state = P_NONE;
			exit_now(kp, &x);
			return;
		}
		ns->k = k;
		snprintf(ns->name, sizeof(ns->name), "%s", kp->ns);
		ns->next = k->nss;
		k->nss = ns;
		kp->ns_next = ns->waiting;
		ns->waiting = kp;
		ns_next(ns);
		return;
	}
	kp->ns_next = ns->waiting;
	ns->waiting = kp;
}

/* A namespace made earlier that is gone: the next pod of its tenant makes it again. */
static void ns_forget(struct runtime_kube *k, const char *name)
{
	for (struct tenant_ns **pp = &k->nss; *pp; pp = &(*pp)->next) {
		struct tenant_ns *ns = *pp;

		if (ns->ready && !strcmp(ns->name, name)) {
			*pp = ns->next;
			free(ns);
			return;
		}
	}
}

static void ns_forget_pod(struct runtime_kube *k, struct kube_pod *kp)
{
	for (struct tenant_ns *ns = k->nss; ns; ns = ns->next)
		for (struct kube_pod **pp = &ns->waiting; *pp; pp = &(*pp)->ns_next)
			if (*pp == kp) {
				*pp = kp->ns_next;
				kp->ns_next = NULL;
				return;
			}
}

/* ---- the runtime's operations ---- */

static int kube_rt_admit(void *arg, const struct spec *s, struct lerr *e)
{
	struct runtime_kube *k = arg;

	/* image_digest "host" stays the process runtime's (registered first) */
	return runtime_oci_check(k->oci, s, e);
}

static struct kube_pod *pod_new(struct runtime_kube *k, struct run *r)
{
	struct kube_pod *kp = calloc(1, sizeof(*kp));

	if (!kp)
		return NULL;
	kp->k = k;
	kp->r = r;
	kp->exit_code = -1;
	kp->waiter_fd = -1;
	snprintf(kp->ns, sizeof(kp->ns), NS_PREFIX "%s", run_tenant(r));
	snprintf(kp->name, sizeof(kp->name), "lantern-%s", run_instance_id(r));
	run_set_runtime_state(r, kp);
	return kp;
}

static void pod_free(struct kube_pod *kp)
{
	if (kp->k) {
		if (kp->start_timer)
			loop_timer_cancel(kp->k->loop, kp->start_timer);
		if (kp->exit_timer)
			loop_timer_cancel(kp->k->loop, kp->exit_timer);
		if (kp->retry_timer)
			loop_timer_cancel(kp->k->loop, kp->retry_timer);
		ns_forget_pod(kp->k, kp);
	}
	kube_cancel(kp->req);
	json_decref(kp->pod);
	json_decref(kp->process);
	if (kp->waiter_fd >= 0)
		close(kp->waiter_fd);
	free(kp);
}

static int kube_rt_prepare(void *arg, struct run *r, struct lerr *e)
{
	struct runtime_kube *k = arg;
	struct kube_pod *kp = pod_of(r);
	char ns[80];

	k->runs = run_table(r);
	snprintf(ns, sizeof(ns), NS_PREFIX "%s", run_tenant(r));
	if (!dns_label(ns))
		return lerr_set(e, EINVAL, "spawn: refused: tenant \"%s\" cannot name a Kubernetes namespace: "
				"\"%s\" must be a DNS label (a-z, 0-9, '-', at most 63 characters)",
				run_tenant(r), ns);
	if (kp) {
		/* a resumed run starts over with a new instance: a new pod */
		pod_free(kp);
		run_set_runtime_state(r, NULL);
	}
	if (!pod_new(k, r))
		return lerr_set(e, ENOMEM, "spawn: out of memory");
	/* the pod has a network of its own; its DNS reaches the proxy at the node's
	 * address (hostname egress rules are refused without one) */
	run_set_network(r, true, k->node_ip);
	return 0;
}

static int exec_pooled(struct kube_pod *kp, struct run *r, struct run_env *env, struct lerr *e);

static int kube_rt_start(void *arg, struct run *r, struct run_env *env, struct lerr *e)
{
	struct runtime_kube *k = arg;
	struct kube_pod *kp = pod_of(r);

	if (kp->pooled)
		return exec_pooled(kp, r, env, e);

	if (!(kp->pod = pod_json(k, kp, r, env)))
		return lerr_set(e, ENOMEM, "spawn: pod %s/%s: cannot build", kp->ns, kp->name);
	pod_record(kp);
	if (k->start_timeout_ms)
		kp->start_timer = loop_timer_add(k->loop, k->start_timeout_ms, on_start_timeout, kp);
	ns_enqueue(k, kp);
	return 0;
}

static void on_exit_timer(struct loop *l, void *arg)
{
	struct kube_pod *kp = arg;
	struct run_exit x = { .recorded = true, .exit_code = -1 };

	kp->exit_timer = 0;
	exit_now(kp, &x);
	pod_step(kp);
}

static void kube_rt_stop(void *arg, struct run *r)
{
	struct runtime_kube *k = arg;
	struct kube_pod *kp = pod_of(r);

	if (!kp || kp->exited || kp->stop_asked)
		return;
	kp->stop_asked = true;
	if (kp->state == P_WAIT_NS || kp->state == P_NONE) {
		/* no pod yet: none will be made; the run ends on the loop, not inside run_end */
		ns_forget_pod(k, kp);
		kp->state = P_NONE;
		if (!kp->exit_timer)
			kp->exit_timer = loop_timer_add(k->loop, 0, on_exit_timer, kp);
		return;
	}
	pod_step(kp);
}

static void kube_rt_teardown(void *arg, struct run *r, void (*done)(struct run *r))
{
	struct kube_pod *kp = pod_of(r);

	if (!kp) {
		if (done)
			done(r);
		return;
	}
	if (!done) {
		/* a start that failed, undone at once: delete what may exist, wait for nothing */
		ns_forget_pod(kp->k, kp);
		if (kp->state == P_CREATED)
			pod_delete(kp, 0);
		return;
	}
	kp->done = done;
	pod_step(kp);
}

static enum runtime_found kube_rt_adopt(void *arg, struct run *r, struct run_exit *x)
{
	struct runtime_kube *k = arg;
	char path[PATH_MAX + 16];
	struct kube_pod *kp;
	json_t *j;

	k->runs = run_table(r);
	memset(x, 0, sizeof(*x));
	snprintf(path, sizeof(path), "%s/kube.json", run_dir(r));
	if (!(j = json_load_file(path, 0, NULL))) {
		/* no record: its pod was never asked for */
		return RUNTIME_GONE;
	}
	if (!(kp = pod_new(k, r))) {
		json_decref(j);
		return RUNTIME_GONE;
	}
	snprintf(kp->ns, sizeof(kp->ns), "%s", json_string_value(json_object_get(j, "namespace")) ?: "");
	snprintf(kp->name, sizeof(kp->name), "%s", json_string_value(json_object_get(j, "pod")) ?: "");
	snprintf(kp->uid, sizeof(kp->uid), "%s", json_string_value(json_object_get(j, "uid")) ?: "");
	json_decref(j);
	/* the first list says whether it still runs, has ended, or is gone */
	kp->state = P_CREATED;
	log_info("run %s: adopting pod %s/%s", run_id(r), kp->ns, kp->name);
	return RUNTIME_ALIVE;
}

static void kube_rt_json(void *arg, const struct run *r, json_t *j)
{
	const struct kube_pod *kp = pod_of(r);

	if (!kp)
		return;
	json_object_set_new(j, "pod", json_pack("{s:s, s:s, s:s, s:s, s:s}", "namespace", kp->ns, "name", kp->name,
						"uid", kp->uid, "phase", kp->phase, "detail", kp->detail));
}

static void kube_rt_free(void *arg, struct run *r)
{
	struct kube_pod *kp = pod_of(r);

	if (kp) {
		pod_free(kp);
		run_set_runtime_state(r, NULL);
	}
}

/* ---- the watch ---- */

static void on_checked(void *arg, const struct kube_resp *res)
{
	struct kube_pod *kp = arg;
	char why[512];

	kp->req = NULL;
	if (res->status == 200)
		judge(kp, res->body);
	else if (res->status == 404)
		pod_gone(kp, "is gone (deleted while lanternd was not watching)");
	else
		log_warn("run %s: pod %s/%s: %s", run_id(kp->r), kp->ns, kp->name, kube_resp_why(res, why, sizeof(why)));
	pod_step(kp);
}

static void pod_check(struct kube_pod *kp)
{
	char path[256];
	struct lerr e;

	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", kp->ns, kp->name);
	if (kube_request(kp->k->kc, "GET", path, NULL, on_checked, kp, &kp->req, &e) < 0)
		log_warn("run %s: %s", run_id(kp->r), e.msg);
}

static void orphan_delete_done(void *arg, const struct kube_resp *res)
{
	char why[512];

	if (res->status != 200 && res->status != 202 && res->status != 404)
		log_warn("kubernetes: reclaiming a pod: %s", kube_resp_why(res, why, sizeof(why)));
}

static void reclaim_orphans(struct runtime_kube *k)
{
	json_t *o;
	size_t i;

	json_array_foreach(k->orphans, i, o) {
		const char *ns = json_string_value(json_array_get(o, 0)), *name = json_string_value(json_array_get(o, 1));
		char path[256];
		struct lerr e;

		log_info("reclaiming pod %s/%s: no run of this node owns it", ns, name);
		snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", ns, name);
		if (kube_request(k->kc, "DELETE", path, NULL, orphan_delete_done, NULL, NULL, &e) < 0)
			log_warn("%s", e.msg);
	}
	json_array_clear(k->orphans);
}

/* The live run a pod belongs to, by the annotations lanternd gave it. */
static struct kube_pod *owner(struct runtime_kube *k, json_t *pod)
{
	json_t *ann = json_object_get(json_object_get(pod, "metadata"), "annotations");
	const char *id = json_string_value(json_object_get(ann, "lantern.dev/run-id"));
	const char *inst = json_string_value(json_object_get(ann, "lantern.dev/agent-instance-id"));
	struct run *r = k->runs && id ? runs_find(k->runs, id) : NULL;
	struct kube_pod *kp = r && run_runtime(r) == &kube_ops ? pod_of(r) : NULL;

	if (!id && inst && k->runs) {
		/* a claimed pooled pod whose labels do not name its run yet: its instance's */
		const char *ns = json_string_value(json_object_get(json_object_get(pod, "metadata"), "namespace"));

		r = runs_by_instance(k->runs, inst);
		kp = r && run_runtime(r) == &kube_ops ? pod_of(r) : NULL;
		if (!kp || !ns || strcmp(ns, RUN_POOL_NAMESPACE) || strcmp(kp->ns, RUN_POOL_NAMESPACE))
			return NULL;
	}
	if (!kp || !inst || strcmp(inst, run_instance_id(r)))
		return NULL;
	return kp;
}

static int sandbox_state(json_t *pod, char *cid, size_t clen, char *why, size_t len);
static struct kube_sandbox *sandbox_find(struct runtime_kube *k, const char *inst);

/* A pooled sandbox's pod a pool worker is making or keeps (not a run's, not an orphan):
 * what the watch shows of it goes to the worker waiting for it to run. */
static bool pool_saw(struct runtime_kube *k, enum kube_ev ev, json_t *pod)
{
	json_t *md = json_object_get(pod, "metadata");
	const char *inst = json_string_value(json_object_get(json_object_get(md, "annotations"), LABEL_INST));
	const char *ns = json_string_value(json_object_get(md, "namespace"));
	const char *name = json_string_value(json_object_get(md, "name"));
	struct kube_sandbox *ks;

	if (!inst || !ns || !name || strcmp(ns, RUN_POOL_NAMESPACE))
		return false;
	pthread_mutex_lock(&k->mu);
	ks = sandbox_find(k, inst);
	if (ks && !strcmp(ks->name, name)) {
		ks->seen = true;
		if (ev == KUBE_DELETED) {
			ks->seen_state = -1;
			snprintf(ks->seen_why, sizeof(ks->seen_why), "its pod was deleted, not by lanternd");
		} else {
			ks->seen_state = sandbox_state(pod, ks->seen_cid, sizeof(ks->seen_cid), ks->seen_why,
						       sizeof(ks->seen_why));
		}
		pthread_cond_broadcast(&k->seen);
	}
	pthread_mutex_unlock(&k->mu);
	return ks != NULL;
}

static void on_pod(void *arg, enum kube_ev ev, json_t *pod)
{
	struct runtime_kube *k = arg;
	json_t *md = json_object_get(pod, "metadata");
	struct kube_pod *kp;

	switch (ev) {
	case KUBE_LIST_BEGIN:
		for (struct run *r = k->runs ? runs_first(k->runs) : NULL; r; r = run_next(r))
			if (run_runtime(r) == &kube_ops && pod_of(r))
				pod_of(r)->listed = false;
		json_array_clear(k->orphans);
		return;
	case KUBE_LIST_END:
		/* a live run's pod not listed: gone, unless it was created after the list's
		 * snapshot; asking for it by name tells the two apart */
		for (struct run *r = k->runs ? runs_first(k->runs) : NULL; r; r = run_next(r)) {
			kp = run_runtime(r) == &kube_ops ? pod_of(r) : NULL;
			if (kp && !kp->listed && !kp->exited && kp->state == P_CREATED && !kp->req &&
			    !run_status_final(run_status(r)))
				pod_check(kp);
		}
		k->listed = true;
		reclaim_orphans(k);
		return;
	default:
		break;
	}
	if (pool_saw(k, ev, pod))
		return;
	kp = owner(k, pod);
	if (!kp || !kp->r || run_status_final(run_status(kp->r))) {
		/* not a live run's: a pod its run outlived (deleting it failed) or one a
		 * previous lanternd made for a run that is gone */
		if (ev != KUBE_DELETED && !json_object_get(md, "deletionTimestamp") && (ev == KUBE_LISTED || k->listed) &&
		    (!kp || kp->state != P_DELETING))
			json_array_append_new(k->orphans, json_pack("[s?, s?]",
				json_string_value(json_object_get(md, "namespace")),
				json_string_value(json_object_get(md, "name"))));
		if (ev != KUBE_LISTED)
			reclaim_orphans(k);
		return;
	}
	if (ev == KUBE_DELETED) {
		pod_gone(kp, "was deleted, not by lanternd");
		pod_step(kp);
		return;
	}
	if (ev == KUBE_LISTED)
		kp->listed = true;
	if (!kp->uid[0])
		snprintf(kp->uid, sizeof(kp->uid), "%s", json_string_value(json_object_get(md, "uid")) ?: "");
	judge(kp, pod);
}

/* ---- the node's class labels ---- */

static void label_node(struct runtime_kube *k);

static void on_label_timer(struct loop *l, void *arg)
{
	struct runtime_kube *k = arg;

	k->label_timer = 0;
	label_node(k);
}

static void on_labelled(void *arg, const struct kube_resp *res)
{
	struct runtime_kube *k = arg;
	char why[512];

	k->label_req = NULL;
	if (res->status == 200) {
		k->labelled = true;
		k->label_backoff_ms = 0;
		log_info("kubernetes: node %s labelled with its classes", k->node);
		return;
	}
	snprintf(k->label_why, sizeof(k->label_why), "labelling node %s: %s", k->node,
		 kube_resp_why(res, why, sizeof(why)));
	log_warn("kubernetes: %s (retrying)", k->label_why);
	k->label_backoff_ms = k->label_backoff_ms ? k->label_backoff_ms * 2 : 500;
	if (k->label_backoff_ms > LABEL_BACKOFF_MAX_MS)
		k->label_backoff_ms = LABEL_BACKOFF_MAX_MS;
	k->label_timer = loop_timer_add(k->loop, k->label_backoff_ms, on_label_timer, k);
}

/* lantern.dev/class-<class>: "true" for each class this node runs, removed for the
 * others, so a RuntimeClass's nodeSelector never matches a node that cannot run it. */
static void label_node(struct runtime_kube *k)
{
	static const char probe_image[] =
		"probe@sha256:0000000000000000000000000000000000000000000000000000000000000000";
	json_t *labels = json_object();
	char path[320], key[64];
	struct lerr e;

	for (int c = SPEC_ISO_STANDARD; c <= SPEC_ISO_DEVCONTAINER; c++) {
		struct spec s = { .isolation = (enum spec_isolation)c, .image_digest = (char *)probe_image,
				  .network = SPEC_NET_NONE };
		struct lerr pe;

		snprintf(key, sizeof(key), "lantern.dev/class-%s", spec_isolation_name(s.isolation));
		json_object_set_new(labels, key, runtime_oci_check(k->oci, &s, &pe) == 0 ? json_string("true") : json_null());
	}
	snprintf(path, sizeof(path), "/api/v1/nodes/%s", k->node);
	if (kube_request(k->kc, "PATCH", path, json_pack("{s:{s:o}}", "metadata", "labels", labels), on_labelled, k,
			 &k->label_req, &e) < 0) {
		struct kube_resp res = { .err = e.msg };

		on_labelled(k, &res);
	}
}

struct kube *runtime_kube_client(struct runtime_kube *k)
{
	return k ? k->kc : NULL;
}

bool runtime_kube_ready(struct runtime_kube *k, char *why, size_t len)
{
	char w[256];

	if (!kube_watch_current(k->watch, w, sizeof(w))) {
		snprintf(why, len, "watch of node %s's pods: %s", k->node, w);
		return false;
	}
	if (!k->labelled) {
		snprintf(why, len, "%s", k->label_why[0] ? k->label_why : "node not labelled yet");
		return false;
	}
	return true;
}

static void kube_rt_reclaim(void *arg, struct runs *t)
{
	struct runtime_kube *k = arg;

	/* runs_recover: the table is complete; orphans go at the end of the first list */
	k->runs = t;
}

static void kube_rt_close(void *arg)
{
	struct runtime_kube *k = arg;

	/* the runs outlive the runtime in lanternd's exit: they let go of it now */
	for (struct run *r = k->runs ? runs_first(k->runs) : NULL; r; r = run_next(r)) {
		struct kube_pod *kp = run_runtime(r) == &kube_ops ? pod_of(r) : NULL;

		if (!kp)
			continue;
		ns_forget_pod(k, kp);
		if (kp->start_timer)
			loop_timer_cancel(k->loop, kp->start_timer);
		if (kp->exit_timer)
			loop_timer_cancel(k->loop, kp->exit_timer);
		if (kp->retry_timer)
			loop_timer_cancel(k->loop, kp->retry_timer);
		kube_cancel(kp->req);
		kp->req = NULL;
		kp->start_timer = kp->exit_timer = kp->retry_timer = 0;
		kp->k = NULL;
	}
	while (k->nss) {
		struct tenant_ns *ns = k->nss;

		k->nss = ns->next;
		free(ns);
	}
	if (k->label_timer)
		loop_timer_cancel(k->loop, k->label_timer);
	kube_close(k->kc);
	json_decref(k->ns_labels);
	json_decref(k->quota);
	json_decref(k->limits);
	json_decref(k->orphans);
	pthread_mutex_destroy(&k->mu);
	pthread_cond_destroy(&k->seen);
	free(k);
}

/* lantern-oci asks for a container of this run's pod: the pod lanternd created (its
 * name; its uid once the API server answered). */
static int kube_rt_bind(void *arg, struct run *r, const struct run_bind_req *b, json_t *answer, struct lerr *e)
{
	struct runtime_kube *k = arg;
	struct kube_pod *kp = pod_of(r);
	char owner[48];

	if (!kp)
		return lerr_set(e, EPERM, "bind: refused: container %s: run %s has no pod", b->container_id, run_id(r));
	snprintf(owner, sizeof(owner), "run %s", run_id(r));
	return runtime_pod_bind(&kp->binds, k->oci, run_spec(r), owner, kp->name, kp->uid, b, answer, e);
}

/* ---- pooled pods (docs/pools.md) ----
 *
 * A pooled sandbox is a pod in the tenant-neutral namespace lantern-pool, made by a pool
 * worker through the API server (blocking calls on the worker's own connection:
 * kube_request_wait) and run by the kubelet as any pod: containerd makes its container
 * from the image (Entrypoint/Cmd, Env, WorkingDir), lantern-oci binds it to the
 * sandbox's instance, hands containerd's process to lanternd and runs lantern-waiter in
 * its place. A claim hands the pod to the run: its labels and annotations are patched
 * to name the run and its tenant (a pod's namespace cannot change), and the waiter
 * execs the run's process, built from that process as a cold pod's would be. */

static struct kube_sandbox *sandbox_find(struct runtime_kube *k, const char *inst)
{
	struct kube_sandbox *ks;

	for (ks = k->sandboxes; ks && strcmp(ks->inst, inst); ks = ks->next)
		;
	return ks;
}

static void sandbox_link(struct runtime_kube *k, struct kube_sandbox *ks)
{
	pthread_mutex_lock(&k->mu);
	ks->next = k->sandboxes;
	k->sandboxes = ks;
	pthread_mutex_unlock(&k->mu);
}

static void sandbox_unlink(struct runtime_kube *k, struct kube_sandbox *ks)
{
	pthread_mutex_lock(&k->mu);
	for (struct kube_sandbox **pp = &k->sandboxes; *pp; pp = &(*pp)->next)
		if (*pp == ks) {
			*pp = ks->next;
			break;
		}
	pthread_mutex_unlock(&k->mu);
}

static void sandbox_free(struct kube_sandbox *ks)
{
	if (!ks)
		return;
	json_decref(ks->exec);
	json_decref(ks->process);
	free(ks);
}

/* A blocking call of a pool worker; the status, or 0 with why. */
static long call(struct runtime_kube *k, const char *method, const char *path, json_t *body, json_t **out,
		 char *why, size_t len)
{
	struct kube_resp res;
	char err[256];
	struct lerr e;

	if (kube_request_wait(k->kc, method, path, body, SANDBOX_CALL_MS, &res, err, sizeof(err), &e) < 0) {
		snprintf(why, len, "%s", e.msg);
		return 0;
	}
	kube_resp_why(&res, why, len);
	if (out)
		*out = res.body;
	else
		json_decref(res.body);
	return res.status;
}

/* lantern-pool, made once (an existing one is used as it is), labelled as tenant
 * namespaces are (its pods show node directories as host paths). */
static int pool_namespace(struct runtime_kube *k, struct lerr *e)
{
	json_t *labels = json_deep_copy(k->ns_labels), *body;
	char why[512];
	long st;

	pthread_mutex_lock(&k->mu);
	st = k->pool_ns;
	pthread_mutex_unlock(&k->mu);
	if (st)
		return 0;
	json_object_set_new(labels, "app.kubernetes.io/managed-by", json_string(MANAGED_BY));
	body = json_pack("{s:s, s:s, s:{s:s, s:o}}", "apiVersion", "v1", "kind", "Namespace", "metadata", "name",
			 RUN_POOL_NAMESPACE, "labels", labels);
	st = call(k, "POST", "/api/v1/namespaces", body, NULL, why, sizeof(why));
	if (st != 201 && st != 200 && st != 409)
		return lerr_set(e, EIO, "pool: namespace %s: %s", RUN_POOL_NAMESPACE, why);
	pthread_mutex_lock(&k->mu);
	k->pool_ns = true;
	pthread_mutex_unlock(&k->mu);
	return 0;
}

static json_t *pool_pod_json(struct runtime_kube *k, const struct runtime_sandbox_req *q, struct kube_sandbox *ks)
{
	const struct spec *s = q->spec;
	const char *cls = spec_isolation_name(s->isolation);
	const char *const waiter[2] = { q->waiter_bin, q->waiter_argv[0] };
	json_t *labels = json_pack("{s:s, s:s, s:s, s:s}", "app.kubernetes.io/managed-by", MANAGED_BY, LABEL_POOL,
				   ks->pool, LABEL_INST, ks->inst, "lantern.dev/isolation", cls);
	json_t *ann = json_pack("{s:s, s:s, s:s, s:s}", LABEL_INST, ks->inst, LABEL_POOL, ks->pool,
				"lantern.dev/isolation", cls, "lantern.dev/network", spec_network_name(s->network));

	return pod_build(k, RUN_POOL_NAMESPACE, ks->name, s, labels, ann, json_array(), q->mounts, q->n_mounts,
			 waiter);
}

/* The pod's workload container as the kubelet reports it: 1 running (its container
 * id in cid), 0 not yet, -1 it will not run (why). */
static int sandbox_state(json_t *pod, char *cid, size_t clen, char *why, size_t len)
{
	json_t *st = json_object_get(pod, "status"), *cs, *x, *state = NULL;
	const char *phase = json_string_value(json_object_get(st, "phase")) ?: "Pending";
	const char *id = NULL, *wr;
	size_t i;

	cs = json_object_get(st, "containerStatuses");
	json_array_foreach(cs, i, x)
		if (!strcmp(json_string_value(json_object_get(x, "name")) ?: "", CONTAINER)) {
			state = json_object_get(x, "state");
			id = json_string_value(json_object_get(x, "containerID"));
		}
	if (json_object_get(json_object_get(pod, "metadata"), "deletionTimestamp")) {
		snprintf(why, len, "its pod is being deleted");
		return -1;
	}
	if (strcmp(phase, "Pending") && strcmp(phase, "Running")) {
		snprintf(why, len, "its pod is %s%s%s", phase, json_object_get(st, "reason") ? ": " : "",
			 json_string_value(json_object_get(st, "reason")) ?: "");
		return -1;
	}
	if (json_object_get(state, "terminated")) {
		snprintf(why, len, "its container ended (exit code %lld)", (long long)json_integer_value(
			json_object_get(json_object_get(state, "terminated"), "exitCode")));
		return -1;
	}
	if ((wr = json_string_value(json_object_get(json_object_get(state, "waiting"), "reason")))) {
		for (i = 0; i < ARRAY_SIZE(start_errors); i++)
			if (!strcmp(wr, start_errors[i])) {
				snprintf(why, len, "its container will not start: %s: %s", wr, json_string_value(
					json_object_get(json_object_get(state, "waiting"), "message")) ?: "");
				return -1;
			}
	}
	if (!json_object_get(state, "running"))
		return 0;
	/* "containerd://<id>" */
	snprintf(cid, clen, "%s", id && strstr(id, "://") ? strstr(id, "://") + 3 : id ? id : "");
	return 1;
}

/* On a pool worker: removes the pod (grace 0); 0 when it is gone or going. */
static int sandbox_delete(struct runtime_kube *k, struct kube_sandbox *ks, struct lerr *e)
{
	char path[256], why[512];
	json_t *opts = json_pack("{s:s, s:s, s:i, s:s}", "apiVersion", "v1", "kind", "DeleteOptions",
				 "gracePeriodSeconds", 0, "propagationPolicy", "Background");
	long st;

	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", RUN_POOL_NAMESPACE, ks->name);
	st = call(k, "DELETE", path, opts, NULL, why, sizeof(why));
	if (st == 200 || st == 202 || st == 404)
		return 0;
	return lerr_set(e, EIO, "pool: sandbox %s: deleting pod %s/%s: %s (the next list of the node's pods "
			"reclaims it)", ks->inst, RUN_POOL_NAMESPACE, ks->name, why);
}

/* On a pool worker: the pod made and waited for until the kubelet runs its container,
 * which lantern-oci must have bound (sandbox_bind) before it ran. */
static int kube_sandbox_start(void *arg, const struct runtime_sandbox_req *q, struct runtime_sandbox *sb,
			      struct lerr *e)
{
	struct runtime_kube *k = arg;
	const struct spec *s = q->spec;
	struct kube_sandbox *ks = calloc(1, sizeof(*ks));
	uint64_t limit = k->start_timeout_ms && k->start_timeout_ms < SANDBOX_START_MAX_MS ? k->start_timeout_ms :
			 SANDBOX_START_MAX_MS;
	uint64_t deadline = util_now_ns(CLOCK_MONOTONIC) + limit * 1000000ull;
	char path[256], why[512], cid[128];
	json_t *pod = NULL;
	bool made = false;
	int err = 0, state;
	long st;

	if (!ks)
		return lerr_set(e, ENOMEM, "pool: out of memory");
	snprintf(ks->inst, sizeof(ks->inst), "%s", q->instance_id);
	snprintf(ks->pool, sizeof(ks->pool), "%s", s->name ? s->name : "");
	snprintf(ks->name, sizeof(ks->name), "lantern-%s", q->instance_id);
	if (!(ks->exec = strv(q->waiter_argv, 0)))
		goto nomem;
	for (size_t i = 0; q->waiter_argv[i]; i++)
		json_array_append_new(ks->exec, json_string(q->waiter_argv[i]));
	for (size_t i = 0; i < q->n_mounts; i++) {
		if (ks->n_mounts == SANDBOX_MOUNTS) {
			err = lerr_set(e, E2BIG, "pool: sandbox %s: more than %d node directories", ks->inst,
				       SANDBOX_MOUNTS);
			goto fail;
		}
		if ((err = runtime_pooled_mount_note(&ks->mounts[ks->n_mounts++], q->mounts[i].host,
						     q->mounts[i].sandbox, e)) < 0)
			goto fail;
	}
	if ((err = pool_namespace(k, e)) < 0)
		goto fail;
	if (!(pod = pool_pod_json(k, q, ks)))
		goto nomem;
	/* from here its containers may bind (on the loop), and the watch knows it */
	sandbox_link(k, ks);
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods", RUN_POOL_NAMESPACE);
	st = call(k, "POST", path, pod, &pod, why, sizeof(why));
	if (st == 404) {
		/* lantern-pool was deleted since it was made: once more */
		pthread_mutex_lock(&k->mu);
		k->pool_ns = false;
		pthread_mutex_unlock(&k->mu);
		json_decref(pod);
		if ((err = pool_namespace(k, e)) < 0 || !(pod = pool_pod_json(k, q, ks)))
			goto unlink;
		st = call(k, "POST", path, pod, &pod, why, sizeof(why));
	}
	if (st != 201 && st != 200) {
		err = lerr_set(e, EIO, "pool: sandbox %s: the API server refused pod %s/%s: %s", ks->inst,
			       RUN_POOL_NAMESPACE, ks->name, why);
		goto unlink;
	}
	made = true;
	pthread_mutex_lock(&k->mu);
	snprintf(ks->uid, sizeof(ks->uid), "%s", json_string_value(json_object_get(json_object_get(pod, "metadata"),
										     "uid")) ?: "");
	pthread_mutex_unlock(&k->mu);
	/* the watch tells (pool_saw); a GET now and then in case it is down */
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", RUN_POOL_NAMESPACE, ks->name);
	for (uint64_t next_get = util_now_ns(CLOCK_MONOTONIC) + SANDBOX_POLL_MS * 1000000ull;;) {
		uint64_t now = util_now_ns(CLOCK_MONOTONIC);
		bool cancel;

		json_decref(pod);
		pod = NULL;
		if (now >= next_get) {
			next_get = now + SANDBOX_POLL_MS * 1000000ull;
			st = call(k, "GET", path, NULL, &pod, why, sizeof(why));
			if (st == 404) {
				err = lerr_set(e, ENOENT, "pool: sandbox %s: pod %s/%s was deleted, not by lanternd",
					       ks->inst, RUN_POOL_NAMESPACE, ks->name);
				goto unlink;
			}
			state = st == 200 ? sandbox_state(pod, cid, sizeof(cid), why, sizeof(why)) : 0;
		} else {
			struct timespec ts;
			uint64_t until = next_get < deadline ? next_get : deadline;

			pthread_mutex_lock(&k->mu);
			if (!ks->seen && !k->cancel) {
				ts.tv_sec = (time_t)(until / 1000000000ull);
				ts.tv_nsec = (long)(until % 1000000000ull);
				pthread_cond_timedwait(&k->seen, &k->mu, &ts);
			}
			state = ks->seen ? ks->seen_state : 0;
			ks->seen = false;
			snprintf(cid, sizeof(cid), "%s", ks->seen_cid);
			snprintf(why, sizeof(why), "%s", ks->seen_why);
			pthread_mutex_unlock(&k->mu);
		}
		if (state < 0) {
			err = lerr_set(e, EIO, "pool: sandbox %s: pod %s/%s: %s", ks->inst, RUN_POOL_NAMESPACE,
				       ks->name, why);
			goto unlink;
		}
		if (state > 0)
			break;
		pthread_mutex_lock(&k->mu);
		cancel = k->cancel;
		pthread_mutex_unlock(&k->mu);
		if (cancel) {
			err = lerr_set(e, ECANCELED, "pool: sandbox %s: lanternd is stopping", ks->inst);
			goto unlink;
		}
		if (util_now_ns(CLOCK_MONOTONIC) >= deadline) {
			err = lerr_set(e, ETIMEDOUT, "pool: sandbox %s: pod %s/%s did not run within %llu s (%s)",
				       ks->inst, RUN_POOL_NAMESPACE, ks->name, (unsigned long long)(limit / 1000),
				       why[0] ? why : "still pending");
			goto unlink;
		}
	}
	/* the container the kubelet runs is the one lantern-oci bound, with its process */
	pthread_mutex_lock(&k->mu);
	if (!ks->binds.sandbox[0] || strcmp(ks->binds.container, cid) || !ks->process)
		err = lerr_set(e, EPERM, "pool: pod %s/%s: its container %s is not the one bound to sandbox %s "
			       "(bound: \"%s\")", RUN_POOL_NAMESPACE, ks->name, cid, ks->inst, ks->binds.container);
	pthread_mutex_unlock(&k->mu);
	if (err < 0)
		goto unlink;
	json_decref(pod);
	sb->shim_pid = 0;
	sb->shim_pidfd = -1;   /* the kubelet's: the waiter's connection tells */
	sb->state = ks;
	return 0;
nomem:
	err = lerr_set(e, ENOMEM, "pool: out of memory");
	goto fail;
unlink:
	sandbox_unlink(k, ks);
	if (made) {
		struct lerr de;

		if (sandbox_delete(k, ks, &de) < 0)
			log_warn("%s", de.msg);
	}
fail:
	json_decref(pod);
	sandbox_free(ks);
	return err;
}

static void kube_sandbox_cancel(void *arg)
{
	struct runtime_kube *k = arg;

	pthread_mutex_lock(&k->mu);
	k->cancel = true;
	pthread_cond_broadcast(&k->seen);
	pthread_mutex_unlock(&k->mu);
}

/* On a pool worker: the pod of a sandbox no run took goes. */
static void kube_sandbox_stop(void *arg, struct runtime_sandbox *sb)
{
	struct runtime_kube *k = arg;
	struct kube_sandbox *ks = sb->state;
	struct lerr e;

	if (!ks)
		return;
	sandbox_unlink(k, ks);
	if (sandbox_delete(k, ks, &e) < 0)
		log_warn("%s", e.msg);
	sandbox_free(ks);
	sb->state = NULL;
}

/* On the loop: a container of a pooled pod being made binds to its sandbox (run_bind
 * checked the cgroup, the instance, the annotations, the namespace and the class); the
 * workload's brings containerd's process and gets the waiter's command line. */
static int kube_sandbox_bind(void *arg, const char *inst, const struct spec *s, const struct run_bind_req *b,
			     json_t *answer, struct lerr *e)
{
	struct runtime_kube *k = arg;
	json_t *args = json_object_get(b->process, "args");
	struct kube_sandbox *ks;
	char owner[96];
	int err;

	snprintf(owner, sizeof(owner), "pooled sandbox %s", inst);
	if (!b->sandbox && (!json_is_array(args) || !json_array_size(args)))
		return lerr_set(e, EPERM, "bind: refused: container %s: %s: no process came with it (a lantern-oci "
				"older than this lanternd?)", b->container_id, owner);
	pthread_mutex_lock(&k->mu);
	if (!(ks = sandbox_find(k, inst)))
		err = lerr_set(e, EPERM, "bind: refused: container %s: no pod is being made for %s", b->container_id,
			       owner);
	else
		err = runtime_pod_bind(&ks->binds, k->oci, s, owner, ks->name, ks->uid, b, answer, e);
	if (err == 0 && !b->sandbox) {
		json_decref(ks->process);
		ks->process = json_deep_copy(b->process);
		json_object_set(answer, "exec", ks->exec);
	}
	pthread_mutex_unlock(&k->mu);
	return err;
}

/* A claimed pod's process comes from the one containerd made of the image's
 * Entrypoint and Cmd: spec.args alone would replace a Cmd lanternd cannot tell apart. */
static bool kube_sandbox_fits(void *arg, const struct spec *s)
{
	return s->n_command || !s->n_args;
}

static void relabel(struct kube_pod *kp);

static void on_relabel_retry(struct loop *l, void *arg)
{
	struct kube_pod *kp = arg;

	kp->retry_timer = 0;
	relabel(kp);
}

static void on_relabelled(void *arg, const struct kube_resp *res)
{
	struct kube_pod *kp = arg;
	char why[512];

	kp->req = NULL;
	if (res->status == 200) {
		log_info("run %s: pooled pod %s/%s now names its run and tenant", run_id(kp->r), kp->ns, kp->name);
	} else if (res->status != 404 && ++kp->relabel_tries < RELABEL_TRIES && !kp->done && !kp->stop_asked) {
		log_warn("run %s: labelling pooled pod %s/%s: %s: again in %d ms", run_id(kp->r), kp->ns, kp->name,
			 kube_resp_why(res, why, sizeof(why)), DELETE_RETRY_MS);
		kp->retry_timer = loop_timer_add(kp->k->loop, DELETE_RETRY_MS, on_relabel_retry, kp);
		return;
	} else if (res->status != 404) {
		log_warn("run %s: pooled pod %s/%s keeps the pool's labels: %s", run_id(kp->r), kp->ns, kp->name,
			 kube_resp_why(res, why, sizeof(why)));
	}
	pod_step(kp);
}

/* The claimed pod names its run and tenant, as a cold pod's labels and annotations
 * do (a merge patch: the pool's stay). */
static void relabel(struct kube_pod *kp)
{
	struct run *r = kp->r;
	json_t *labels = json_object(), *ann = json_object();
	char path[256];
	struct lerr e;

	if (kp->done || kp->stop_asked || kp->state != P_CREATED) {
		pod_step(kp);
		return;
	}
	identity(kp->k, r, labels, ann);
	json_object_set_new(labels, "lantern.dev/tenant", json_string(run_tenant(r)));
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", kp->ns, kp->name);
	if (kube_request(kp->k->kc, "PATCH", path, json_pack("{s:{s:o, s:o}}", "metadata", "labels", labels,
							     "annotations", ann),
			 on_relabelled, kp, &kp->req, &e) < 0)
		log_warn("run %s: %s", run_id(r), e.msg);
}

/* On the loop: r takes a ready pooled pod in place of prepare. */
static int kube_claim(void *arg, struct run *r, struct run_claim *c, struct lerr *e)
{
	struct runtime_kube *k = arg;
	struct runtime_sandbox *sb = c->sandbox;
	struct kube_sandbox *ks = sb ? sb->state : NULL;
	struct kube_pod *kp;

	if (!ks || c->waiter_fd < 0 || !ks->process || !ks->uid[0])
		return lerr_set(e, EINVAL, "claim: no pod to take");
	if (!dns_label(run_tenant(r)))
		return lerr_set(e, EINVAL, "claim: tenant \"%s\" cannot label a pod", run_tenant(r));
	k->runs = run_table(r);
	if (pod_of(r)) {
		pod_free(pod_of(r));
		run_set_runtime_state(r, NULL);
	}
	if (!(kp = pod_new(k, r)))
		return lerr_set(e, ENOMEM, "claim: out of memory");
	sandbox_unlink(k, ks);
	snprintf(kp->ns, sizeof(kp->ns), "%s", RUN_POOL_NAMESPACE);
	snprintf(kp->name, sizeof(kp->name), "%s", ks->name);
	snprintf(kp->uid, sizeof(kp->uid), "%s", ks->uid);
	snprintf(kp->phase, sizeof(kp->phase), "Running");
	kp->state = P_CREATED;
	kp->pooled = true;
	kp->binds = ks->binds;
	kp->process = ks->process;
	ks->process = NULL;
	memcpy(kp->mounts, ks->mounts, sizeof(kp->mounts));
	kp->n_mounts = ks->n_mounts;
	kp->waiter_fd = c->waiter_fd;
	c->waiter_fd = -1;
	sandbox_free(ks);
	sb->state = NULL;
	run_set_network(r, true, k->node_ip);
	pod_record(kp);
	relabel(kp);
	return 0;
}

/* A claimed run's start: the waiter execs the workload's process as containerd would
 * have made it for a cold pod (spec.command/args, else the image's Entrypoint and Cmd;
 * the image's env, spec.env, lantern's; the image's working directory), as the user
 * it already runs as. The run's node directories must be the ones the pod shows. */
static int exec_pooled(struct kube_pod *kp, struct run *r, struct run_env *env, struct lerr *e)
{
	char what[160];
	json_t *ic;
	int err;

	snprintf(what, sizeof(what), "pooled pod %s/%s", kp->ns, kp->name);
	if ((err = runtime_pooled_mounts_match(kp->mounts, kp->n_mounts, env, what, e)) < 0)
		return err;
	ic = json_pack("{s:O, s:O?, s:O?}", "Entrypoint", json_object_get(kp->process, "args"), "Env",
		       json_object_get(kp->process, "env"), "WorkingDir", json_object_get(kp->process, "cwd"));
	if (!ic)
		return lerr_set(e, ENOMEM, "claim: out of memory");

	struct oci_bundle_req br = {
		.image_config = ic,
		.spec = run_spec(r),
		.lantern_env = run_env_strings(env, true),
	};
	err = runtime_pooled_exec(&kp->waiter_fd, &br, e);
	json_decref(ic);
	return err;
}

static const struct runtime_ops kube_ops = {
	.name = "kubernetes",
	.admit = kube_rt_admit,
	.prepare = kube_rt_prepare,
	.start = kube_rt_start,
	.stop = kube_rt_stop,
	.teardown = kube_rt_teardown,
	.adopt = kube_rt_adopt,
	.reclaim = kube_rt_reclaim,
	.json = kube_rt_json,
	.bind = kube_rt_bind,
	.free = kube_rt_free,
	.close = kube_rt_close,
	.sandbox_start = kube_sandbox_start,
	.claim = kube_claim,
	.sandbox_stop = kube_sandbox_stop,
	.sandbox_bind = kube_sandbox_bind,
	.sandbox_fits = kube_sandbox_fits,
	.sandbox_cancel = kube_sandbox_cancel,
};

/* ---- opening ---- */

static int load_tenant_config(struct runtime_kube *k, const char *path, struct lerr *e)
{
	json_error_t je;
	json_t *j, *v;
	const char *key;

	k->ns_labels = json_object();
	if (!path)
		return 0;
	if (!(j = json_load_file(path, JSON_REJECT_DUPLICATES, &je)))
		return lerr_set(e, EINVAL, "--kube-tenant-config %s:%d:%d: %s", path, je.line, je.column, je.text);
	json_object_foreach(j, key, v) {
		if (!strcmp(key, "labels") && json_is_object(v)) {
			const char *lk;
			json_t *lv;

			json_object_foreach(v, lk, lv)
				if (!json_is_string(lv)) {
					json_decref(j);
					return lerr_set(e, EINVAL, "--kube-tenant-config %s: labels.%s: want a string",
							path, lk);
				}
			json_object_update(k->ns_labels, v);
		} else if (!strcmp(key, "resourceQuota") && json_is_object(v)) {
			k->quota = json_incref(v);
		} else if (!strcmp(key, "limitRange") && json_is_object(v)) {
			k->limits = json_incref(v);
		} else {
			json_decref(j);
			return lerr_set(e, EINVAL, "--kube-tenant-config %s: \"%s\": want \"labels\" (an object of "
					"strings), \"resourceQuota\" or \"limitRange\" (a ResourceQuotaSpec, a "
					"LimitRangeSpec)", path, key);
		}
	}
	json_decref(j);
	return 0;
}

int runtime_kube_add(struct runtimes *rs, struct loop *l, const struct runtime_kube_opts *o,
		     struct runtime_kube **out, struct lerr *e)
{
	struct runtime_kube *k = calloc(1, sizeof(*k));
	struct kube_config *cfg;
	struct in_addr ip = { 0 };
	char field[300];
	int err;

	if (!k)
		return lerr_set(e, ENOMEM, "kubernetes: out of memory");
	k->loop = l;
	k->oci = o->oci;
	k->grace_s = o->grace_s;
	pthread_mutex_init(&k->mu, NULL);
	{
		pthread_condattr_t ca;

		/* timed waits on CLOCK_MONOTONIC, as the deadlines are */
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&k->seen, &ca);
		pthread_condattr_destroy(&ca);
	}
	k->start_timeout_ms = (uint64_t)o->start_timeout_s * 1000;
	k->orphans = json_array();
	snprintf(k->node, sizeof(k->node), "%s", o->node ? o->node : "");
	if (!k->node[0] || strlen(k->node) > 253 || strchr(k->node, '/')) {
		err = lerr_set(e, EINVAL, "kubernetes: node name \"%s\": want this node's Node name (--node-name)",
			       k->node);
		goto fail;
	}
	if (o->node_ip && inet_pton(AF_INET, o->node_ip, &ip) != 1) {
		err = lerr_set(e, EINVAL, "--kube-node-ip \"%s\": want this node's IPv4 address", o->node_ip);
		goto fail;
	}
	k->node_ip = ip.s_addr;
	if ((err = load_tenant_config(k, o->tenant_config, e)) < 0 ||
	    (err = kube_config_load(o->kubeconfig, &cfg, e)) < 0 ||
	    (err = kube_open(l, cfg, &k->kc, e)) < 0)
		goto fail;
	snprintf(field, sizeof(field), "spec.nodeName=%s", k->node);
	if ((err = kube_watch_start(k->kc, "/api/v1/pods", "app.kubernetes.io/managed-by=" MANAGED_BY, field,
				    on_pod, k, &k->watch, e)) < 0)
		goto fail_kc;
	if ((err = runtimes_add(rs, &kube_ops, k)) < 0) {
		lerr_set(e, err, "kubernetes: too many runtimes");
		goto fail_kc;
	}
	label_node(k);
	log_info("kubernetes: spawns are pods on node %s, in namespaces " NS_PREFIX "<tenant>", k->node);
	*out = k;
	return 0;
fail_kc:
	kube_close(k->kc);
fail:
	json_decref(k->ns_labels);
	json_decref(k->quota);
	json_decref(k->limits);
	json_decref(k->orphans);
	free(k);
	return err;
}
