/* cri.c: the CRI runtime (lanternd --cri-endpoint): spawns as pod sandboxes of a
 * containerd, made the way the kubelet makes them. Each run is one pod in the tenant's
 * namespace lantern-t-<tenant>, under the runtime handler lantern-<class>, whose
 * containers containerd starts through lantern-oci; lantern-oci binds each container to
 * the run (this runtime's bind op) before the class's real runtime runs it.
 *
 * Before any container of the pod runs, the run module has made the instance cgroup
 * with its limits and the subscribers have put its policy in the maps: the pod is
 * asked for at the end of prepare and containerd makes it meanwhile, but a container
 * runs only once lantern-oci's bind is answered, which the loop does after the start.
 * The pod's cgroup_parent is that instance, so containerd puts every container of the
 * pod in a cgroup inside it, judged and limited as the instance from its first
 * instruction.
 *
 * containerd's calls block (a pod start is RunPodSandbox, CreateContainer and
 * StartContainer, hundreds of milliseconds with runsc) and lantern-oci asks lanternd's
 * loop to bind while they are in flight, so the calls run on worker threads
 * (lantern-cri-N), each job with its own copy of what it sends. Exits are found by
 * listing this node's containers every POLL_MS while runs are live; the container's CRI
 * log is turned into the run's record log on the loop.
 *
 * Pooled pods (docs/pools.md): sandbox_start makes a pod for a pooled sandbox on a pool
 * worker, in the tenant-neutral namespace lantern-pool, its one container the image with
 * lantern-waiter as its command (the waiter's binary and socket directory, the harness
 * and identity directories as host-path mounts). Its containers bind to the sandbox's
 * instance while no run has it (run_bind asks the pool, then sandbox_bind here checks
 * the pod against the one being made). A claim hands the pod to the run: its ids go to
 * the run's record, start sends the workload's process (the image's defaults read from
 * containerd at the sandbox's start, the spec's command, the run's environment) to the
 * waiter, which execs it in place, so the container's exit is the workload's. A pod's
 * namespace and labels are fixed at its creation: a claimed pod stays in lantern-pool,
 * labelled with its instance and pool but not its run (cri.json and run.json say which).
 *
 * Per run (STATE/runs/<id>): cri.json (pod and container ids, pod name, uid and
 * namespace, for a restarted lanternd; without it the pod is found by its
 * lantern.dev/run-id label, or a claimed pod by its instance's), cri/ (containerd's log
 * of the workload), seccomp.json (untrusted's profile). */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime_internal.h"
#include "lantern/cri.h"
#include "lantern/workq.h"

#define POLL_MS 100
#define CALL_MS 60000
#define WORKERS 2
#define LABEL_NODE "lantern.dev/node"
#define LABEL_RUN "lantern.dev/run-id"
#define LABEL_INST "lantern.dev/agent-instance-id"
#define LABEL_POOL "lantern.dev/pool"
/* How long a claim waits for a pooled pod's waiter to exec the workload (as oci.c) */
#define SANDBOX_MOUNTS 8

struct runtime_cri {
	struct loop *loop;
	const struct runtime_oci *oci;
	const struct cgroup_node *cg;
	char endpoint[256];
	char node[128];                  /* LABEL_NODE of this lanternd's pods: its cgroup root */
	uint64_t log_max;
	uint32_t gw4;                    /* the node bridge's address (DNS of bridged pods) */
	struct cri *main;                /* the loop's own connection (admission, adoption) */
	struct workq *pool;
	pthread_mutex_t mu;              /* the workers' connections */
	struct cri *spare[WORKERS + 2];
	int nspare;
	struct cri_run *runs;            /* every run of this runtime with state */
	struct cri_sandbox *sandboxes;   /* pooled pods being made or ready (under mu: made
					  * on pool workers, bound and claimed on the loop) */
	uint64_t poll_timer;
	bool polling;                    /* a poll job is out */
};

struct start_job;


struct cri_run {
	struct runtime_cri *o;
	struct run *r;
	struct cri_run *next;
	char pod_name[64], pod_uid[40], handler[48];
	char pod_id[80], ctr_id[80];
	struct runtime_pod_binds binds;  /* its containers that bound */
	struct start_job *job;           /* its start, from prepare until the container runs */
	char seccomp[PATH_MAX];
	struct cri_log log;
	char ns[96];                     /* the pod's namespace */
	bool started;                    /* the container was started: watch it */
	bool exited;                     /* run_exited was called */
	bool tearing, torn_down;
	/* a pooled pod the run claimed: start has its waiter exec the workload */
	bool pooled;
	int waiter_fd;
	json_t *image_config;            /* the image's defaults, as containerd told them */
	struct runtime_pooled_mount mounts[SANDBOX_MOUNTS];
	size_t n_mounts;
};

/* A pooled pod of this runtime (runtime_sandbox.state), until a run claims it. */
struct cri_sandbox {
	char inst[32], pool[64];
	char pod_name[64], pod_uid[40], handler[48];
	char pod_id[80], ctr_id[80];
	char seccomp[PATH_MAX + 16];
	struct runtime_pod_binds binds;  /* its containers that bound (under o->mu) */
	struct runtime_pooled_mount mounts[SANDBOX_MOUNTS];
	size_t n_mounts;
	json_t *image_config;
	struct cri_sandbox *next;
};

static struct cri_run *run_of(const struct run *r)
{
	return run_runtime_state(r);
}

/* ---- connections for the workers ---- */

static struct cri *conn_get(struct runtime_cri *o, struct lerr *e)
{
	struct cri *c = NULL;

	pthread_mutex_lock(&o->mu);
	if (o->nspare)
		c = o->spare[--o->nspare];
	pthread_mutex_unlock(&o->mu);
	if (!c && cri_open(o->endpoint, CALL_MS, &c, e) < 0)
		return NULL;
	return c;
}

static void conn_put(struct runtime_cri *o, struct cri *c)
{
	pthread_mutex_lock(&o->mu);
	if (o->nspare < (int)ARRAY_SIZE(o->spare)) {
		o->spare[o->nspare++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&o->mu);
	cri_close(c);
}

/* ---- admission and preparation ---- */

static int pod_ask(struct runtime_cri *o, struct run *r, struct cri_run *cr, struct lerr *e);
static void job_detach(struct cri_run *cr);

static int cri_admit(void *arg, const struct spec *s, struct lerr *e)
{
	struct runtime_cri *o = arg;
	const char *cls = spec_isolation_name(s->isolation);
	const struct oci_handler *h;

	if (!strcmp(s->image_digest, "host"))
		return -ENOENT;   /* the process runtime's, or nobody's */
	if (!(h = runtime_oci_class_handler(o->oci, s->isolation)))
		return lerr_set(e, EPERM, "spawn: refused: isolation \"%s\" is not served on this node (handler "
				"lantern-%s has no advertised runtime: lantern node says why)", cls, cls);
	if (h->kind == OCI_KATA)
		return lerr_set(e, EPERM, "spawn: refused: isolation \"%s\": its handler kata has no runtime "
				"lantern-oci can run on this node", cls);
	if (s->network == SPEC_NET_TENANT_VPC)
		return lerr_set(e, EPERM, "spawn: refused: network \"tenant_vpc\" is not supported on this node");
	if (s->isolation == SPEC_ISO_UNTRUSTED && s->network == SPEC_NET_OPEN)
		return lerr_set(e, EPERM, "spawn: refused: isolation \"untrusted\" allows network none or "
				"allowlist_domain only, not \"open\"");
	return 0;
}

static void cri_run_unlink(struct cri_run *cr)
{
	for (struct cri_run **p = &cr->o->runs; *p; p = &(*p)->next) {
		if (*p == cr) {
			*p = cr->next;
			return;
		}
	}
}

static struct cri_run *cri_run_new(struct runtime_cri *o, struct run *r)
{
	struct cri_run *cr = calloc(1, sizeof(*cr));

	if (!cr)
		return NULL;
	cr->o = o;
	cr->r = r;
	cr->waiter_fd = -1;
	cr->next = o->runs;
	o->runs = cr;
	run_set_runtime_state(r, cr);
	return cr;
}

/* Unlinks and frees the runtime's state of a run. */
static void cri_run_drop(struct cri_run *cr)
{
	cri_run_unlink(cr);
	if (cr->waiter_fd >= 0)
		close(cr->waiter_fd);
	json_decref(cr->image_config);
	run_set_runtime_state(cr->r, NULL);
	free(cr);
}

static void record_save(struct cri_run *cr)
{
	char path[PATH_MAX + 16], *s;
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b}", "pod_id", cr->pod_id,
			      "container_id", cr->ctr_id, "pod_name", cr->pod_name, "pod_uid", cr->pod_uid,
			      "pod_namespace", cr->ns, "handler", cr->handler, "bound_sandbox", cr->binds.sandbox,
			      "bound_container", cr->binds.container, "pooled", cr->pooled);

	s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	snprintf(path, sizeof(path), "%s/cri.json", run_dir(cr->r));
	if (!s || util_write_file_replace(path, s, strlen(s)) < 0)
		log_error("run %s: cannot write %s: a restarted lanternd will look for its pod by label",
			  run_id(cr->r), path);
	free(s);
}

static void log_dir(const struct run *r, char *out, size_t len)
{
	snprintf(out, len, "%s/cri", run_dir(r));
}

/* The image must already be in containerd's store (nothing is pulled here), under its
 * digest; then the pod's identity, and untrusted's profile as a file containerd loads. */
static int cri_prepare(void *arg, struct run *r, struct lerr *e)
{
	struct runtime_cri *o = arg;
	const struct spec *s = run_spec(r);
	struct cri_run *cr = run_of(r);
	char dir[PATH_MAX + 8], src[PATH_MAX + 32];
	bool present = false;
	int err;

	if ((err = cri_image_present(o->main, s->image_digest, &present, e)) < 0)
		return err;
	if (!present)
		return lerr_set(e, ENOENT, "spawn: refused: image %s is not in containerd's store at %s (import "
				"it: ctr -n k8s.io images import; elsewhere a registry pull)", s->image_digest,
				o->endpoint);
	if (cr)
		cri_run_drop(cr);   /* a resumed run starts over in a fresh pod */
	if (!(cr = cri_run_new(o, r)))
		return lerr_set(e, ENOMEM, "spawn: out of memory");
	snprintf(cr->pod_name, sizeof(cr->pod_name), "%s", run_instance_id(r));
	util_random_hex(cr->pod_uid, 16);
	run_pod_namespace(r, cr->ns, sizeof(cr->ns));
	snprintf(cr->handler, sizeof(cr->handler), "lantern-%s", spec_isolation_name(s->isolation));
	log_dir(r, dir, sizeof(dir));
	if ((err = util_mkdir_p(dir, 0700)) < 0)
		return lerr_set(e, err, "spawn: %s: %s", dir, strerror(-err));
	snprintf(src, sizeof(src), "%s/workload.log", dir);
	cri_log_init(&cr->log, src, run_dir(r), o->log_max);
	if (s->isolation == SPEC_ISO_UNTRUSTED) {
		json_t *p = oci_seccomp_profile(true);

		snprintf(cr->seccomp, sizeof(cr->seccomp), "%s/seccomp.json", run_dir(r));
		err = p && json_dump_file(p, cr->seccomp, JSON_COMPACT) == 0 ? 0 : -EIO;
		json_decref(p);
		if (err < 0)
			return lerr_set(e, EIO, "spawn: cannot write %s", cr->seccomp);
	}
	/* the pod has a network namespace of its own; a bridged pod's DNS goes to the
	 * bridge's address, where the egress subscriber's proxy listens too */
	run_set_network(r, true, s->network == SPEC_NET_NONE ? 0 : o->gw4);
	record_save(cr);
	return pod_ask(o, r, cr, e);
}

/* ---- starting: RunPodSandbox, then CreateContainer and StartContainer, on a worker ----
 *
 * The pod is asked for at the end of prepare, so containerd makes it (CNI, the pause
 * container: hundreds of milliseconds) while the loop goes on with the run's start
 * (the instance cgroup, every subscriber's policy, journal and identity). Nothing of it
 * runs before that start is done: its sandbox container runs only once lantern-oci's
 * bind is answered, and the loop answers binds only between callbacks, after the start
 * (a start that failed has left no run: the bind is refused and so is the pod). The
 * workload container follows when both the pod and the start are done. */

struct start_job {
	struct runtime_cri *o;
	struct run *r;                   /* the loop's; NULL once the run let go of it */
	char run_id[32], inst[32], tenant_ns[96], cls[32];
	char pod_name[64], pod_uid[40], handler[48], cgroup_parent[256], log_dir[PATH_MAX + 8];
	/* the container's, from cri_start */
	char image[512], seccomp[PATH_MAX];
	char **command, **args;          /* NULL-terminated copies, or NULL */
	struct cri_kv *envs;
	size_t n_envs;
	char **env_store;                /* the strings envs points into */
	size_t n_store;
	struct cri_mount mounts[8];
	size_t n_mounts;
	char *mount_store[16];
	int64_t memory, cpu_quota;
	bool in_flight;                  /* a worker has it (pod or container phase) */
	bool pod_done;                   /* RunPodSandbox answered (pod_id, or err) */
	bool start_wanted;               /* cri_start filled the container's part */
	/* out */
	char pod_id[80], ctr_id[80];
	int err;
	char why[512];
};

static void start_job_free(struct start_job *j)
{
	for (size_t i = 0; j->command && j->command[i]; i++)
		free(j->command[i]);
	for (size_t i = 0; j->args && j->args[i]; i++)
		free(j->args[i]);
	for (size_t i = 0; i < j->n_store; i++)
		free(j->env_store[i]);
	for (size_t i = 0; i < ARRAY_SIZE(j->mount_store); i++)
		free(j->mount_store[i]);
	free(j->command);
	free(j->args);
	free(j->env_store);
	free(j->envs);
	free(j);
}

static char **strv_copy(char *const *v, size_t n)
{
	char **out;

	if (!n)
		return NULL;
	if (!(out = calloc(n + 1, sizeof(*out))))
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!(out[i] = strdup(v[i])))
			return out;
	return out;
}

/* The pod's description as the kubelet would give it; labels and ann are the caller's
 * arrays of ARRAY_SIZE 6 and 4. */
static struct cri_pod pod_of(const struct start_job *j, struct cri_kv *labels, struct cri_kv *ann)
{
	labels[0] = (struct cri_kv){ "io.kubernetes.pod.name", j->pod_name };
	labels[1] = (struct cri_kv){ "io.kubernetes.pod.namespace", j->tenant_ns };
	labels[2] = (struct cri_kv){ "io.kubernetes.pod.uid", j->pod_uid };
	labels[3] = (struct cri_kv){ LABEL_RUN, j->run_id };
	labels[4] = (struct cri_kv){ LABEL_INST, j->inst };
	labels[5] = (struct cri_kv){ LABEL_NODE, j->o->node };
	ann[0] = (struct cri_kv){ LABEL_RUN, j->run_id };
	ann[1] = (struct cri_kv){ LABEL_INST, j->inst };
	ann[2] = (struct cri_kv){ "lantern.dev/isolation", j->cls };
	ann[3] = (struct cri_kv){ "io.kubernetes.pod.terminationGracePeriod", "3" };
	return (struct cri_pod){
		.name = j->pod_name, .uid = j->pod_uid, .ns = j->tenant_ns, .hostname = j->inst,
		.log_dir = j->log_dir, .cgroup_parent = j->cgroup_parent, .handler = j->handler,
		.labels = labels, .n_labels = 6, .annotations = ann, .n_annotations = 4,
	};
}

static void fail_job(struct start_job *j, int err, const struct lerr *e)
{
	j->err = err < 0 ? err : -ECONNREFUSED;
	snprintf(j->why, sizeof(j->why), "%s", e->msg);
}

static void pod_work(void *arg)
{
	struct start_job *j = arg;
	struct cri_kv labels[6], ann[4];
	struct cri_pod p = pod_of(j, labels, ann);
	struct lerr e = { 0 };
	struct cri *c = conn_get(j->o, &e);
	int err = c ? cri_run_pod(c, &p, j->pod_id, sizeof(j->pod_id), &e) : -ECONNREFUSED;

	if (err < 0)
		fail_job(j, err, &e);
	if (c)
		conn_put(j->o, c);
}

static void ctr_work(void *arg)
{
	struct start_job *j = arg;
	struct cri_kv labels[6], ann[4];
	struct cri_pod p = pod_of(j, labels, ann);
	struct cri_kv clabels[] = {
		{ "io.kubernetes.container.name", "workload" }, { "io.kubernetes.pod.name", j->pod_name },
		{ "io.kubernetes.pod.namespace", j->tenant_ns }, { "io.kubernetes.pod.uid", j->pod_uid },
		{ LABEL_RUN, j->run_id }, { LABEL_INST, j->inst }, { LABEL_NODE, j->o->node },
	};
	struct cri_kv cann[] = {
		{ LABEL_RUN, j->run_id }, { LABEL_INST, j->inst }, { "io.kubernetes.container.restartCount", "0" },
	};
	struct cri_container ct = {
		.name = "workload", .image = j->image, .command = j->command, .args = j->args,
		.envs = j->envs, .n_envs = j->n_envs, .mounts = j->mounts, .n_mounts = j->n_mounts,
		.log_path = "workload.log", .memory_bytes = j->memory, .cpu_quota_us = j->cpu_quota,
		.cpu_period_us = 100000, .seccomp_localhost = j->seccomp[0] ? j->seccomp : NULL,
		.labels = clabels, .n_labels = ARRAY_SIZE(clabels), .annotations = cann,
		.n_annotations = ARRAY_SIZE(cann),
	};
	struct lerr e = { 0 };
	struct cri *c = conn_get(j->o, &e);
	int err;

	if (!c || (err = cri_create_container(c, j->pod_id, &p, &ct, j->ctr_id, sizeof(j->ctr_id), &e)) < 0 ||
	    (err = cri_start_container(c, j->ctr_id, &e)) < 0)
		fail_job(j, c ? err : -ECONNREFUSED, &e);
	if (c)
		conn_put(j->o, c);
}

static void poll_arm(struct runtime_cri *o);
static void orphan_teardown(struct start_job *j);
static void ctr_done(void *arg);

/* The run lets go of its start: a job a worker still has finishes alone, and what it
 * made for nobody is removed when it is back (orphan_teardown). */
static void job_detach(struct cri_run *cr)
{
	struct start_job *j = cr->job;

	cr->job = NULL;
	if (!j)
		return;
	if (j->in_flight)
		j->r = NULL;
	else
		start_job_free(j);
}

/* The start failed after it was under way, or the run was killed or timed out
 * meanwhile: it ends with the reason, or as run_end decided (for a run ending already,
 * the start's failure, such as its pod's refused bind, follows from that). */
static void start_failed(struct cri_run *cr, struct start_job *j)
{
	struct run_exit x = { .recorded = true, .exit_code = -1 };

	if (run_ending(cr->r))
		log_info("run %s: ended before its workload started%s%s", run_id(cr->r), j->err ? ": " : "",
			 j->err ? j->why : "");
	else
		snprintf(x.error, sizeof(x.error), "%s", j->why);
	cr->exited = true;
	run_exited(cr->r, &x);
}

static int ctr_submit(struct cri_run *cr, struct start_job *j)
{
	j->in_flight = true;
	if (workq_submit(cr->o->pool, ctr_work, ctr_done, j) < 0) {
		j->in_flight = false;
		j->err = -ENOMEM;
		snprintf(j->why, sizeof(j->why), "spawn: out of memory");
		return -ENOMEM;
	}
	return 0;
}

static void pod_done(void *arg)
{
	struct start_job *j = arg;
	struct cri_run *cr = j->r ? run_of(j->r) : NULL;

	j->in_flight = false;
	j->pod_done = true;
	if (!cr) {
		orphan_teardown(j);
		return;
	}
	snprintf(cr->pod_id, sizeof(cr->pod_id), "%s", j->pod_id);
	record_save(cr);
	if (!j->start_wanted)
		return;   /* cri_start goes on from here */
	/* killed or timed out while its pod was made: no workload is started */
	if (j->err || run_ending(cr->r) || ctr_submit(cr, j) < 0) {
		cr->job = NULL;
		start_failed(cr, j);
		start_job_free(j);
	}
}

static void ctr_done(void *arg)
{
	struct start_job *j = arg;
	struct cri_run *cr = j->r ? run_of(j->r) : NULL;

	j->in_flight = false;
	if (!cr) {
		orphan_teardown(j);
		return;
	}
	cr->job = NULL;
	snprintf(cr->ctr_id, sizeof(cr->ctr_id), "%s", j->ctr_id);
	record_save(cr);
	if (!j->err && strcmp(cr->binds.sandbox, cr->pod_id)) {
		/* the sandbox lantern-oci bound is not the pod containerd made for this run */
		j->err = -EPERM;
		snprintf(j->why, sizeof(j->why), "pod %s: its sandbox was not bound to the run (bound: \"%s\")",
			 j->pod_id, cr->binds.sandbox);
	}
	if (j->err) {
		start_failed(cr, j);
	} else {
		/* killed or timed out while its container was made: the signals went before
		 * it existed, so it gets its own (the poll then sees it end) */
		if (run_ending(cr->r))
			cgroup_inst_signal(run_cgroup(cr->r), SIGKILL);
		cr->started = true;
		poll_arm(j->o);
	}
	start_job_free(j);
}

/* ---- pooled pods (docs/pools.md) ---- */

static void sandbox_link(struct runtime_cri *o, struct cri_sandbox *cs)
{
	pthread_mutex_lock(&o->mu);
	cs->next = o->sandboxes;
	o->sandboxes = cs;
	pthread_mutex_unlock(&o->mu);
}

static void sandbox_unlink(struct runtime_cri *o, struct cri_sandbox *cs)
{
	pthread_mutex_lock(&o->mu);
	for (struct cri_sandbox **p = &o->sandboxes; *p; p = &(*p)->next) {
		if (*p == cs) {
			*p = cs->next;
			break;
		}
	}
	pthread_mutex_unlock(&o->mu);
}

static void sandbox_free(struct cri_sandbox *cs)
{
	json_decref(cs->image_config);
	free(cs);
}

/* Removes a pooled pod (found by its instance's label when its id was never learnt). */
static void sandbox_pod_remove(struct runtime_cri *o, struct cri *c, const struct cri_sandbox *cs)
{
	struct cri_item *items = NULL;
	struct lerr e = { 0 };
	size_t n = 0;
	int err;

	if (cs->pod_id[0]) {
		items = calloc(1, sizeof(*items));
		if (items) {
			snprintf(items[0].id, sizeof(items[0].id), "%s", cs->pod_id);
			n = 1;
		}
	} else if (cri_list_pods(c, LABEL_INST, cs->inst, &items, &n, &e) < 0) {
		log_warn("pool: sandbox %s: cannot look for its pod: %s", cs->inst, e.msg);
	}
	for (size_t i = 0; i < n; i++) {
		if ((err = cri_stop_pod(c, items[i].id, &e)) < 0 && err != -ENOENT)
			log_warn("pool: sandbox %s: %s", cs->inst, e.msg);
		if ((err = cri_remove_pod(c, items[i].id, &e)) < 0 && err != -ENOENT)
			log_warn("pool: sandbox %s: %s", cs->inst, e.msg);
	}
	free(items);
}

/* RunPodSandbox, CreateContainer (the waiter as its command), StartContainer. */
static int sandbox_pod_start(struct runtime_cri *o, struct cri *c, const struct runtime_sandbox_req *q,
			     struct cri_sandbox *cs, const struct cri_mount *mounts, size_t nm, const char *log_dir,
			     struct lerr *e)
{
	const struct spec *s = q->spec;
	const char *cls = spec_isolation_name(s->isolation);
	struct cri_kv labels[] = {
		{ "io.kubernetes.pod.name", cs->pod_name }, { "io.kubernetes.pod.namespace", RUN_POOL_NAMESPACE },
		{ "io.kubernetes.pod.uid", cs->pod_uid }, { LABEL_INST, cs->inst }, { LABEL_POOL, cs->pool },
		{ LABEL_NODE, o->node },
	};
	struct cri_kv ann[] = {
		{ LABEL_INST, cs->inst }, { LABEL_POOL, cs->pool }, { "lantern.dev/isolation", cls },
		{ "io.kubernetes.pod.terminationGracePeriod", "3" },
	};
	struct cri_kv clabels[] = {
		{ "io.kubernetes.container.name", "workload" }, { "io.kubernetes.pod.name", cs->pod_name },
		{ "io.kubernetes.pod.namespace", RUN_POOL_NAMESPACE }, { "io.kubernetes.pod.uid", cs->pod_uid },
		{ LABEL_INST, cs->inst }, { LABEL_POOL, cs->pool }, { LABEL_NODE, o->node },
	};
	struct cri_kv cann[] = {
		{ LABEL_INST, cs->inst }, { "io.kubernetes.container.restartCount", "0" },
	};
	char cgroup_parent[256];
	struct cri_pod p = {
		.name = cs->pod_name, .uid = cs->pod_uid, .ns = RUN_POOL_NAMESPACE, .hostname = cs->inst,
		.log_dir = log_dir, .cgroup_parent = cgroup_parent, .handler = cs->handler,
		.labels = labels, .n_labels = ARRAY_SIZE(labels), .annotations = ann,
		.n_annotations = ARRAY_SIZE(ann),
	};
	struct cri_container ct = {
		.name = "workload", .image = s->image_digest, .command = q->waiter_argv, .mounts = mounts,
		.n_mounts = nm, .log_path = "workload.log", .memory_bytes = (int64_t)s->limits.memory_bytes,
		.cpu_quota_us = s->limits.vcpu_milli ? (int64_t)(s->limits.vcpu_milli * 100) : 0,
		.cpu_period_us = 100000, .seccomp_localhost = cs->seccomp[0] ? cs->seccomp : NULL,
		.labels = clabels, .n_labels = ARRAY_SIZE(clabels), .annotations = cann,
		.n_annotations = ARRAY_SIZE(cann),
	};
	int err;

	snprintf(cgroup_parent, sizeof(cgroup_parent), "/%s/%s", o->cg->root, q->cg->name);
	if ((err = cri_run_pod(c, &p, cs->pod_id, sizeof(cs->pod_id), e)) < 0 ||
	    (err = cri_create_container(c, cs->pod_id, &p, &ct, cs->ctr_id, sizeof(cs->ctr_id), e)) < 0 ||
	    (err = cri_start_container(c, cs->ctr_id, e)) < 0)
		return err;
	/* the containers lantern-oci bound are the pod and container containerd made */
	pthread_mutex_lock(&o->mu);
	if (strcmp(cs->binds.sandbox, cs->pod_id) || strcmp(cs->binds.container, cs->ctr_id))
		err = lerr_set(e, EPERM, "pool: pod %s: its containers were not the ones bound to sandbox %s "
			       "(bound: \"%s\", \"%s\")", cs->pod_id, cs->inst, cs->binds.sandbox, cs->binds.container);
	pthread_mutex_unlock(&o->mu);
	return err;
}

/* On a pool worker: the image's defaults from containerd, then the pod, whose container
 * runs the waiter; the node directories it shows are recorded by inode for the claim. */
static int cri_sandbox_start(void *arg, const struct runtime_sandbox_req *q, struct runtime_sandbox *sb,
			     struct lerr *e)
{
	struct runtime_cri *o = arg;
	const struct spec *s = q->spec;
	struct cri_sandbox *cs = calloc(1, sizeof(*cs));
	struct cri_mount mounts[SANDBOX_MOUNTS + 1];
	char log_dir[PATH_MAX + 8];
	struct cri *c = NULL;
	size_t nm = 0;
	int err;

	if (!cs)
		return lerr_set(e, ENOMEM, "pool: out of memory");
	snprintf(cs->inst, sizeof(cs->inst), "%s", q->instance_id);
	snprintf(cs->pool, sizeof(cs->pool), "%s", s->name ? s->name : "");
	snprintf(cs->pod_name, sizeof(cs->pod_name), "%s", q->instance_id);
	util_random_hex(cs->pod_uid, 16);
	snprintf(cs->handler, sizeof(cs->handler), "lantern-%s", spec_isolation_name(s->isolation));
	for (size_t i = 0; i < q->n_mounts && nm < SANDBOX_MOUNTS; i++) {
		if ((err = runtime_pooled_mount_note(&cs->mounts[nm], q->mounts[i].host, q->mounts[i].sandbox, e)) < 0)
			goto fail;
		mounts[nm++] = (struct cri_mount){ q->mounts[i].host, q->mounts[i].sandbox, q->mounts[i].read_only };
	}
	cs->n_mounts = nm;
	mounts[nm++] = (struct cri_mount){ q->waiter_bin, q->waiter_argv[0], true };
	snprintf(log_dir, sizeof(log_dir), "%s/cri", q->dir);
	if ((err = util_mkdir_p(log_dir, 0700)) < 0) {
		lerr_set(e, -err, "pool: %s: %s", log_dir, strerror(-err));
		goto fail;
	}
	if (s->isolation == SPEC_ISO_UNTRUSTED) {
		json_t *prof = oci_seccomp_profile(true);

		snprintf(cs->seccomp, sizeof(cs->seccomp), "%s/seccomp.json", q->dir);
		err = prof && json_dump_file(prof, cs->seccomp, JSON_COMPACT) == 0 ? 0 : -EIO;
		json_decref(prof);
		if (err < 0) {
			lerr_set(e, EIO, "pool: cannot write %s", cs->seccomp);
			goto fail;
		}
	}
	if (!(c = conn_get(o, e))) {
		err = -ECONNREFUSED;
		goto fail;
	}
	if ((err = cri_image_config(c, s->image_digest, &cs->image_config, e)) < 0) {
		if (err == -ENOENT)
			lerr_set(e, ENOENT, "pool: image %s is not in containerd's store at %s (import it: ctr -n "
				 "k8s.io images import)", s->image_digest, o->endpoint);
		goto fail;
	}
	/* from here its containers may bind (on the loop) */
	sandbox_link(o, cs);
	if ((err = sandbox_pod_start(o, c, q, cs, mounts, nm, log_dir, e)) < 0) {
		sandbox_unlink(o, cs);
		sandbox_pod_remove(o, c, cs);
		goto fail;
	}
	conn_put(o, c);
	sb->shim_pid = 0;
	sb->shim_pidfd = -1;   /* containerd's shim is not lanternd's: the waiter's connection tells */
	sb->state = cs;
	return 0;
fail:
	if (c)
		conn_put(o, c);
	sandbox_free(cs);
	return err;
}

/* On a pool worker: the pod of a sandbox no run took goes. */
static void cri_sandbox_stop(void *arg, struct runtime_sandbox *sb)
{
	struct runtime_cri *o = arg;
	struct cri_sandbox *cs = sb->state;
	struct lerr e = { 0 };
	struct cri *c;

	if (!cs)
		return;
	sandbox_unlink(o, cs);
	if ((c = conn_get(o, &e))) {
		sandbox_pod_remove(o, c, cs);
		conn_put(o, c);
	} else {
		log_warn("pool: sandbox %s: cannot remove its pod %s: %s", cs->inst, cs->pod_id, e.msg);
	}
	sandbox_free(cs);
	sb->state = NULL;
}

/* On the loop: a container of a pooled pod being made binds to its sandbox (run_bind
 * checked the cgroup, the instance, the annotations, the namespace and the class). */
static int cri_sandbox_bind(void *arg, const char *inst, const struct spec *s, const struct run_bind_req *b,
			    json_t *answer, struct lerr *e)
{
	struct runtime_cri *o = arg;
	struct cri_sandbox *cs;
	char owner[64];
	int err;

	snprintf(owner, sizeof(owner), "pooled sandbox %s", inst);
	pthread_mutex_lock(&o->mu);
	for (cs = o->sandboxes; cs && strcmp(cs->inst, inst); cs = cs->next)
		;
	if (!cs)
		err = lerr_set(e, EPERM, "bind: refused: container %s: no pod is being made for %s", b->container_id,
			       owner);
	else
		err = runtime_pod_bind(&cs->binds, o->oci, s, owner, cs->pod_name, cs->pod_uid, b, answer, e);
	pthread_mutex_unlock(&o->mu);
	return err;
}

/* On the loop: r takes a ready pooled pod in place of prepare; its ids, log and waiter
 * become the run's. The pod stays where it was made (namespace lantern-pool). */
static int cri_claim(void *arg, struct run *r, struct run_claim *c, struct lerr *e)
{
	struct runtime_cri *o = arg;
	struct runtime_sandbox *sb = c->sandbox;
	struct cri_sandbox *cs = sb ? sb->state : NULL;
	const struct spec *s = run_spec(r);
	char src[PATH_MAX + 32];
	struct cri_run *cr;

	if (!cs || c->waiter_fd < 0 || !cs->ctr_id[0])
		return lerr_set(e, EINVAL, "claim: no pod to take");
	if (run_of(r))
		cri_run_drop(run_of(r));
	if (!(cr = cri_run_new(o, r)))
		return lerr_set(e, ENOMEM, "claim: out of memory");
	sandbox_unlink(o, cs);
	snprintf(cr->pod_name, sizeof(cr->pod_name), "%s", cs->pod_name);
	snprintf(cr->pod_uid, sizeof(cr->pod_uid), "%s", cs->pod_uid);
	snprintf(cr->handler, sizeof(cr->handler), "%s", cs->handler);
	snprintf(cr->pod_id, sizeof(cr->pod_id), "%s", cs->pod_id);
	snprintf(cr->ctr_id, sizeof(cr->ctr_id), "%s", cs->ctr_id);
	snprintf(cr->ns, sizeof(cr->ns), "%s", RUN_POOL_NAMESPACE);
	cr->binds = cs->binds;
	if (cs->seccomp[0])
		snprintf(cr->seccomp, sizeof(cr->seccomp), "%s/seccomp.json", run_dir(r));
	memcpy(cr->mounts, cs->mounts, sizeof(cr->mounts));
	cr->n_mounts = cs->n_mounts;
	cr->image_config = cs->image_config;
	cs->image_config = NULL;
	cr->pooled = true;
	cr->waiter_fd = c->waiter_fd;
	c->waiter_fd = -1;
	sandbox_free(cs);
	sb->state = NULL;
	/* the sandbox's directory is the run's now: containerd keeps writing the log it opened */
	snprintf(src, sizeof(src), "%s/cri/workload.log", run_dir(r));
	cri_log_init(&cr->log, src, run_dir(r), o->log_max);
	run_set_network(r, true, s->network == SPEC_NET_NONE ? 0 : o->gw4);
	record_save(cr);
	return 0;
}

/* A claimed run's start: the waiter execs the workload's process as containerd would
 * have made it (spec.command/args, else the image's Entrypoint/Cmd; the image's env,
 * spec.env, lantern's; the image's working directory), as the image's user it already
 * runs as. The run's node directories must be the ones the pod was made with. */
static int exec_pooled(struct runtime_cri *o, struct run *r, struct cri_run *cr, struct run_env *env,
		       struct lerr *e)
{
	char what[120];
	json_t *ic;
	int err;

	snprintf(what, sizeof(what), "pooled pod %s", cr->pod_id);
	if ((err = runtime_pooled_mounts_match(cr->mounts, cr->n_mounts, env, what, e)) < 0)
		return err;
	if (!(ic = json_deep_copy(cr->image_config)))
		return lerr_set(e, ENOMEM, "claim: out of memory");
	/* the pod's process already runs as the image's user */
	json_object_del(ic, "User");

	struct oci_bundle_req br = {
		.image_config = ic,
		.spec = run_spec(r),
		.lantern_env = run_env_strings(env, true),
	};
	err = runtime_pooled_exec(&cr->waiter_fd, &br, e);
	json_decref(ic);
	if (err == 0) {
		cr->started = true;
		poll_arm(o);
	}
	return err;
}

static int pod_ask(struct runtime_cri *o, struct run *r, struct cri_run *cr, struct lerr *e)
{
	struct start_job *j = calloc(1, sizeof(*j));

	if (!j)
		return lerr_set(e, ENOMEM, "spawn: out of memory");
	j->o = o;
	j->r = r;
	snprintf(j->run_id, sizeof(j->run_id), "%s", run_id(r));
	snprintf(j->inst, sizeof(j->inst), "%s", run_instance_id(r));
	run_pod_namespace(r, j->tenant_ns, sizeof(j->tenant_ns));
	snprintf(j->cls, sizeof(j->cls), "%s", spec_isolation_name(run_spec(r)->isolation));
	snprintf(j->pod_name, sizeof(j->pod_name), "%s", cr->pod_name);
	snprintf(j->pod_uid, sizeof(j->pod_uid), "%s", cr->pod_uid);
	snprintf(j->handler, sizeof(j->handler), "%s", cr->handler);
	/* the instance cgroup (named after the instance) is made after prepare, before any
	 * container of the pod may run (their bind) */
	snprintf(j->cgroup_parent, sizeof(j->cgroup_parent), "/%s/%s", o->cg->root, run_instance_id(r));
	log_dir(r, j->log_dir, sizeof(j->log_dir));
	job_detach(cr);
	j->in_flight = true;
	if (workq_submit(o->pool, pod_work, pod_done, j) < 0) {
		free(j);
		return lerr_set(e, ENOMEM, "spawn: out of memory");
	}
	cr->job = j;
	return 0;
}

/* The workload container's part of the job: copies of everything it sends. */
static int fill_container(struct start_job *j, const struct spec *s, const struct cri_run *cr,
			  struct run_env *env, struct lerr *e)
{
	const struct run_env_mount *m;
	char *const *lenv = run_env_strings(env, true);
	size_t nm = run_env_mounts(env, &m), nl = 0;

	while (lenv && lenv[nl])
		nl++;
	snprintf(j->image, sizeof(j->image), "%s", s->image_digest);
	snprintf(j->seccomp, sizeof(j->seccomp), "%s", cr->seccomp);
	j->command = strv_copy(s->command, s->n_command);
	j->args = strv_copy(s->args, s->n_args);
	/* spec.env first, then lantern's: containerd lets a later name win, after the
	 * image's own environment. The worker gets copies of every string. */
	j->envs = calloc(s->n_env + nl + 1, sizeof(*j->envs));
	j->env_store = calloc(2 * s->n_env + nl + 1, sizeof(*j->env_store));
	if (!j->envs || !j->env_store || (s->n_command && !j->command) || (s->n_args && !j->args))
		return lerr_set(e, ENOMEM, "spawn: out of memory");
	for (size_t i = 0; i < s->n_env; i++) {
		char *k = strdup(s->env[i].key), *v = strdup(s->env[i].value);

		j->env_store[j->n_store++] = k;
		j->env_store[j->n_store++] = v;
		if (!k || !v)
			return lerr_set(e, ENOMEM, "spawn: out of memory");
		j->envs[j->n_envs++] = (struct cri_kv){ k, v };
	}
	for (size_t i = 0; i < nl; i++) {
		char *kv = strdup(lenv[i]), *eq = kv ? strchr(kv, '=') : NULL;

		j->env_store[j->n_store++] = kv;
		if (!eq)
			continue;
		*eq = '\0';
		j->envs[j->n_envs++] = (struct cri_kv){ kv, eq + 1 };
	}
	for (size_t i = 0; i < nm && j->n_mounts < ARRAY_SIZE(j->mounts); i++) {
		char *h = strdup(m[i].host), *c = strdup(m[i].sandbox);

		j->mount_store[2 * j->n_mounts] = h;
		j->mount_store[2 * j->n_mounts + 1] = c;
		if (!h || !c)
			return lerr_set(e, ENOMEM, "spawn: out of memory");
		j->mounts[j->n_mounts++] = (struct cri_mount){ h, c, m[i].read_only };
	}
	j->memory = (int64_t)s->limits.memory_bytes;
	j->cpu_quota = s->limits.vcpu_milli ? (int64_t)(s->limits.vcpu_milli * 100) : 0;
	return 0;
}

static int cri_start(void *arg, struct run *r, struct run_env *env, struct lerr *e)
{
	struct cri_run *cr = run_of(r);
	struct start_job *j = cr ? cr->job : NULL;
	int err;

	if (cr && cr->pooled)
		return exec_pooled(arg, r, cr, env, e);
	if (!j || j->start_wanted)
		return lerr_set(e, EINVAL, "spawn: run %s: its pod was not asked for", run_id(r));
	if ((err = fill_container(j, run_spec(r), cr, env, e)) < 0)
		return err;
	j->start_wanted = true;
	if (j->in_flight)
		return 0;   /* pod_done goes on */
	if (j->err || ctr_submit(cr, j) < 0)
		return lerr_set(e, -j->err, "%s", j->why);
	return 0;
}

/* ---- watching: which containers have exited ---- */

struct watch {
	char ctr[80];
	bool exited, gone;
	struct cri_status st;
};

struct poll_job {
	struct runtime_cri *o;
	struct watch *w;
	size_t n;
	char why[512];                   /* the listing failed: nothing is decided */
};

static void poll_work(void *arg)
{
	struct poll_job *j = arg;
	struct lerr e = { 0 };
	struct cri *c = conn_get(j->o, &e);
	struct cri_item *items = NULL;
	size_t n = 0;

	if (!c || cri_list_containers(c, NULL, LABEL_NODE, j->o->node, &items, &n, &e) < 0) {
		snprintf(j->why, sizeof(j->why), "%s", e.msg);
		if (c)
			conn_put(j->o, c);
		return;
	}
	for (size_t i = 0; i < j->n; i++) {
		bool running = false;
		int err;

		for (size_t k = 0; k < n; k++)
			if (!strcmp(items[k].id, j->w[i].ctr))
				running = items[k].ready;
		if (running)
			continue;
		err = cri_container_status(c, j->w[i].ctr, &j->w[i].st, &e);
		j->w[i].gone = err == -ENOENT;
		j->w[i].exited = !err && j->w[i].st.state == CRI_EXITED;
	}
	free(items);
	conn_put(j->o, c);
}

static struct cri_run *by_container(struct runtime_cri *o, const char *ctr)
{
	for (struct cri_run *cr = o->runs; cr; cr = cr->next)
		if (cr->started && !cr->exited && !strcmp(cr->ctr_id, ctr))
			return cr;
	return NULL;
}

/* The container's end as the run module takes it: containerd's exit code, and its
 * OOMKilled reason. */
static void exit_of(const struct cri_status *st, bool gone, const char *ctr, struct run_exit *x)
{
	memset(x, 0, sizeof(*x));
	x->recorded = true;
	x->runtime_status = true;
	if (gone) {
		x->exit_code = -1;
		snprintf(x->error, sizeof(x->error), "container %s vanished from containerd", ctr);
		return;
	}
	x->exit_code = st->exit_code;
	x->oom_killed = st->oom_killed;
}

static void poll_done(void *arg)
{
	struct poll_job *j = arg;
	struct runtime_cri *o = j->o;

	o->polling = false;
	if (j->why[0])
		log_warn("cri: cannot list containers at %s: %s", o->endpoint, j->why);
	for (size_t i = 0; i < j->n; i++) {
		struct cri_run *cr;
		struct run_exit x;

		if ((!j->w[i].exited && !j->w[i].gone) || !(cr = by_container(o, j->w[i].ctr)))
			continue;
		cri_log_pump(&cr->log);
		exit_of(&j->w[i].st, j->w[i].gone, cr->ctr_id, &x);
		cr->exited = true;
		run_exited(cr->r, &x);
	}
	free(j->w);
	free(j);
	poll_arm(o);
}

static void on_poll_timer(struct loop *l, void *arg)
{
	struct runtime_cri *o = arg;
	struct poll_job *j = calloc(1, sizeof(*j));
	size_t n = 0;

	o->poll_timer = 0;
	for (struct cri_run *cr = o->runs; cr; cr = cr->next)
		if (cr->started && !cr->exited) {
			cri_log_pump(&cr->log);
			n++;
		}
	if (!j || !n || !(j->w = calloc(n, sizeof(*j->w)))) {
		free(j);
		poll_arm(o);
		return;
	}
	j->o = o;
	for (struct cri_run *cr = o->runs; cr; cr = cr->next)
		if (cr->started && !cr->exited)
			snprintf(j->w[j->n++].ctr, sizeof(j->w[0].ctr), "%s", cr->ctr_id);
	if (workq_submit(o->pool, poll_work, poll_done, j) < 0) {
		free(j->w);
		free(j);
		poll_arm(o);
		return;
	}
	o->polling = true;
}

static void poll_arm(struct runtime_cri *o)
{
	if (o->polling || o->poll_timer)
		return;
	for (struct cri_run *cr = o->runs; cr; cr = cr->next) {
		if (cr->started && !cr->exited) {
			o->poll_timer = loop_timer_add(o->loop, POLL_MS, on_poll_timer, o);
			return;
		}
	}
}

/* ---- teardown: the pod goes, with its containers, network and cgroups ---- */

struct teardown_job {
	struct runtime_cri *o;
	struct run *r;
	void (*done)(struct run *r);
	char run_id[32], inst[32], pod_id[80];
};

/* Stops and removes the run's pod (found by its label when its id was never learnt),
 * then the cgroup directories the runtime made for it in hierarchies lanternd does not
 * manage (runc removes its containers' directories, not their parents). */
static void teardown_work(void *arg)
{
	struct teardown_job *j = arg;
	struct lerr e = { 0 };
	struct cri *c = conn_get(j->o, &e);
	struct cri_item *items = NULL;
	size_t n = 0;

	if (c && !j->pod_id[0] && cri_list_pods(c, LABEL_RUN, j->run_id, &items, &n, &e) == 0 && n)
		snprintf(j->pod_id, sizeof(j->pod_id), "%s", items[0].id);
	free(items);
	if (c && j->pod_id[0]) {
		int err;

		if ((err = cri_stop_pod(c, j->pod_id, &e)) < 0 && err != -ENOENT)
			log_warn("run %s: %s", j->run_id, e.msg);
		if ((err = cri_remove_pod(c, j->pod_id, &e)) < 0 && err != -ENOENT)
			log_warn("run %s: %s", j->run_id, e.msg);
	} else if (!c) {
		log_warn("run %s: cannot remove its pod: %s", j->run_id, e.msg);
	}
	if (c)
		conn_put(j->o, c);
	cgroup_inst_sweep(j->o->cg, j->inst);
}

static void teardown_done(void *arg)
{
	struct teardown_job *j = arg;
	struct cri_run *cr = j->r ? run_of(j->r) : NULL;

	if (cr) {
		cr->tearing = false;
		cr->torn_down = true;
	}
	if (j->done)
		j->done(j->r);
	free(j);
}

static void cri_teardown(void *arg, struct run *r, void (*done)(struct run *r))
{
	struct runtime_cri *o = arg;
	struct cri_run *cr = run_of(r);
	struct teardown_job *j;

	if ((cr && cr->torn_down) || !(j = calloc(1, sizeof(*j)))) {
		if (done)
			done(r);
		return;
	}
	j->o = o;
	j->r = r;
	j->done = done;
	snprintf(j->run_id, sizeof(j->run_id), "%s", run_id(r));
	snprintf(j->inst, sizeof(j->inst), "%s", run_instance_id(r));
	if (cr) {
		job_detach(cr);
		cr->exited = true;
		snprintf(j->pod_id, sizeof(j->pod_id), "%s", cr->pod_id);
		cri_log_pump(&cr->log);
	}
	if (done && workq_submit(o->pool, teardown_work, teardown_done, j) == 0) {
		if (cr)
			cr->tearing = true;
		return;
	}
	teardown_work(j);
	teardown_done(j);
}

/* A start job back for a run that let go of it: its pod (looked up by the run's label
 * when containerd never said its id) is stopped and removed, off the loop. */
static void orphan_teardown(struct start_job *j)
{
	struct teardown_job *t = calloc(1, sizeof(*t));

	if (t) {
		t->o = j->o;
		snprintf(t->run_id, sizeof(t->run_id), "%s", j->run_id);
		snprintf(t->inst, sizeof(t->inst), "%s", j->inst);
		snprintf(t->pod_id, sizeof(t->pod_id), "%s", j->pod_id);
		if (workq_submit(j->o->pool, teardown_work, teardown_done, t) < 0) {
			log_warn("run %s: its pod was left to the next reclaim: out of memory", j->run_id);
			free(t);
		}
	}
	start_job_free(j);
}

/* ---- after a restart ---- */

/* The run's state from cri.json; without it (lanternd died before writing it) the
 * ids are looked up by the run's label. */
static struct cri_run *cri_load(struct runtime_cri *o, struct run *r)
{
	char path[PATH_MAX + 16], src[PATH_MAX + 32];
	struct cri_run *cr = cri_run_new(o, r);
	struct cri_item *items = NULL;
	struct lerr e = { 0 };
	size_t n = 0;
	json_t *j;

	if (!cr)
		return NULL;
	snprintf(path, sizeof(path), "%s/cri.json", run_dir(r));
	if ((j = json_load_file(path, 0, NULL))) {
#define GET(f, k) snprintf(cr->f, sizeof(cr->f), "%s", json_string_value(json_object_get(j, k)) ?: "")
		GET(pod_id, "pod_id");
		GET(ctr_id, "container_id");
		GET(pod_name, "pod_name");
		GET(pod_uid, "pod_uid");
		GET(handler, "handler");
		GET(ns, "pod_namespace");
		GET(binds.sandbox, "bound_sandbox");
		GET(binds.container, "bound_container");
#undef GET
		json_decref(j);
	}
	if (!cr->ctr_id[0] && cri_list_containers(o->main, NULL, LABEL_RUN, run_id(r), &items, &n, &e) == 0 && n) {
		snprintf(cr->ctr_id, sizeof(cr->ctr_id), "%s", items[0].id);
		snprintf(cr->pod_id, sizeof(cr->pod_id), "%s", items[0].pod_id);
	}
	free(items);
	items = NULL;
	/* a claimed pooled pod carries its instance's label, not its run's */
	if (!cr->ctr_id[0] &&
	    cri_list_containers(o->main, NULL, LABEL_INST, run_instance_id(r), &items, &n, &e) == 0 && n) {
		snprintf(cr->ctr_id, sizeof(cr->ctr_id), "%s", items[0].id);
		snprintf(cr->pod_id, sizeof(cr->pod_id), "%s", items[0].pod_id);
	}
	free(items);
	if (!cr->ns[0])
		run_pod_namespace(r, cr->ns, sizeof(cr->ns));
	snprintf(src, sizeof(src), "%s/cri/workload.log", run_dir(r));
	cri_log_init(&cr->log, src, run_dir(r), o->log_max);
	return cr;
}

static enum runtime_found cri_adopt(void *arg, struct run *r, struct run_exit *x)
{
	struct runtime_cri *o = arg;
	struct cri_run *cr = run_of(r) ? run_of(r) : cri_load(o, r);
	struct cri_status st;
	struct lerr e = { 0 };
	int err;

	memset(x, 0, sizeof(*x));
	if (!cr || !cr->ctr_id[0])
		return RUNTIME_GONE;
	if ((err = cri_container_status(o->main, cr->ctr_id, &st, &e)) == -ENOENT)
		return RUNTIME_GONE;
	if (err < 0) {
		/* containerd not answering is not the container's end: keep watching */
		log_warn("run %s: %s", run_id(r), e.msg);
		st.state = CRI_RUNNING;
	}
	cri_log_pump(&cr->log);
	if (st.state == CRI_EXITED) {
		exit_of(&st, false, cr->ctr_id, x);
		cr->exited = true;
		return RUNTIME_EXITED;
	}
	cr->started = true;
	poll_arm(o);
	return RUNTIME_ALIVE;
}

/* Does a live run (or one being torn down) own the pod with these run and instance
 * labels? A claimed pooled pod has its instance's label only. */
static bool pod_owned(struct runs *t, const char *run, const char *inst)
{
	struct run *r = run[0] ? runs_find(t, run) : inst[0] ? runs_by_instance(t, inst) : NULL;
	const struct cri_run *cr = r ? run_of(r) : NULL;

	return r && (!run_status_final(run_status(r)) || (cr && cr->tearing));
}

static const char *label_of(const struct cri_item *v, size_t n, const char *id)
{
	for (size_t k = 0; k < n; k++)
		if (!strcmp(v[k].id, id))
			return v[k].label;
	return "";
}

/* An instance cgroup whose pod was reclaimed: the run module's reclaim could not remove
 * it while the pod's containers had directories inside it. Only lanternd's instance
 * names ("i-" and hex) are touched: the label is containerd's to report. */
static void instance_sweep(struct runtime_cri *o, const char *inst)
{
	struct cgroup_inst c;
	struct lerr e = { 0 };
	size_t n = strlen(inst);

	if (n < 3 || n >= 32 || strncmp(inst, "i-", 2) || strspn(inst + 2, "0123456789abcdef") != n - 2)
		return;
	cgroup_inst_sweep(o->cg, inst);
	if (cgroup_inst_open(o->cg, inst, &c, &e) == 0 && cgroup_inst_destroy(&c, 5000, &e) < 0)
		log_warn("cri: instance %s: %s", inst, e.msg);
}

static void cri_reclaim(void *arg, struct runs *t)
{
	struct runtime_cri *o = arg;
	struct cri_item *mine = NULL, *runs = NULL, *insts = NULL;
	size_t nm = 0, nr = 0, ni = 0;
	struct lerr e = { 0 };

	if (cri_list_pods(o->main, LABEL_NODE, o->node, &mine, &nm, &e) < 0 ||
	    cri_list_pods(o->main, LABEL_RUN, NULL, &runs, &nr, &e) < 0 ||
	    cri_list_pods(o->main, LABEL_INST, NULL, &insts, &ni, &e) < 0) {
		log_warn("cri: cannot list pods to reclaim: %s", e.msg);
		free(mine);
		free(runs);
		return;
	}
	/* pooled pods no run claimed go too: a pooled sandbox is never adopted */
	for (size_t i = 0; i < nm; i++) {
		const char *run = label_of(runs, nr, mine[i].id), *inst = label_of(insts, ni, mine[i].id);

		if (pod_owned(t, run, inst))
			continue;
		log_info("reclaiming pod %s (run %s, instance %s): no live run owns it", mine[i].id, run[0] ? run : "?",
			 inst[0] ? inst : "?");
		cri_stop_pod(o->main, mine[i].id, &e);
		cri_remove_pod(o->main, mine[i].id, &e);
		instance_sweep(o, inst);
	}
	free(mine);
	free(runs);
	free(insts);
}

/* ---- binding the containers containerd starts for a run ---- */

static int cri_bind(void *arg, struct run *r, const struct run_bind_req *b, json_t *answer, struct lerr *e)
{
	struct runtime_cri *o = arg;
	struct cri_run *cr = run_of(r);
	char owner[48];
	int err;

	if (!cr)
		return lerr_set(e, EPERM, "bind: refused: container %s: run %s has no pod", b->container_id, run_id(r));
	snprintf(owner, sizeof(owner), "run %s", run_id(r));
	if ((err = runtime_pod_bind(&cr->binds, o->oci, run_spec(r), owner, cr->pod_name, cr->pod_uid, b, answer,
				    e)) < 0)
		return err;
	record_save(cr);
	return 0;
}

static void cri_json(void *arg, const struct run *r, json_t *j)
{
	const struct cri_run *cr = run_of(r);

	if (!cr)
		return;
	json_object_set_new(j, "handler", json_string(cr->handler));
	json_object_set_new(j, "pod", json_pack("{s:s, s:s}", "name", cr->pod_name, "namespace", cr->ns));
	if (cr->pod_id[0])
		json_object_set_new(j, "pod_id", json_string(cr->pod_id));
	if (cr->ctr_id[0])
		json_object_set_new(j, "container_id", json_string(cr->ctr_id));
}

static void cri_free(void *arg, struct run *r)
{
	struct cri_run *cr = run_of(r);

	if (cr)
		cri_run_drop(cr);
}

static void cri_close_rt(void *arg)
{
	struct runtime_cri *o = arg;

	if (o->poll_timer)
		loop_timer_cancel(o->loop, o->poll_timer);
	workq_close(o->pool);
	while (o->sandboxes) {
		struct cri_sandbox *cs = o->sandboxes;

		o->sandboxes = cs->next;
		sandbox_free(cs);
	}
	while (o->nspare)
		cri_close(o->spare[--o->nspare]);
	cri_close(o->main);
	pthread_mutex_destroy(&o->mu);
	free(o);
}

static const struct runtime_ops cri_ops = {
	.name = "cri",
	.admit = cri_admit,
	.prepare = cri_prepare,
	.start = cri_start,
	.teardown = cri_teardown,
	.adopt = cri_adopt,
	.reclaim = cri_reclaim,
	.json = cri_json,
	.bind = cri_bind,
	.free = cri_free,
	.close = cri_close_rt,
	.sandbox_start = cri_sandbox_start,
	.claim = cri_claim,
	.sandbox_stop = cri_sandbox_stop,
	.sandbox_bind = cri_sandbox_bind,
};

int runtime_cri_add(struct runtimes *rs, struct loop *l, const struct runtime_cri_opts *opts, struct lerr *e)
{
	struct runtime_cri *o = calloc(1, sizeof(*o));
	char name[64], version[64], subnet[64], *slash;
	struct in_addr a;
	int err;

	if (!o)
		return lerr_set(e, ENOMEM, "cri: out of memory");
	pthread_mutex_init(&o->mu, NULL);
	o->loop = l;
	o->oci = opts->oci;
	o->cg = opts->cg;
	o->log_max = opts->log_max;
	snprintf(o->endpoint, sizeof(o->endpoint), "%s", opts->endpoint);
	snprintf(o->node, sizeof(o->node), "%s", opts->cg->root);
	for (char *p = o->node; *p; p++)
		if (*p == '/')
			*p = '.';
	/* the bridge's address is the subnet's first, as the CNI bridge plugin gives it */
	snprintf(subnet, sizeof(subnet), "%s", opts->net_subnet ? opts->net_subnet : "10.213.0.0/24");
	if ((slash = strchr(subnet, '/')))
		*slash = '\0';
	if (inet_pton(AF_INET, subnet, &a) == 1)
		o->gw4 = htonl(ntohl(a.s_addr) + 1);
	if ((err = cri_open(o->endpoint, CALL_MS, &o->main, e)) < 0)
		goto fail;
	/* fail closed at start: a node that cannot reach its runtime runs nothing */
	if ((err = cri_version(o->main, name, sizeof(name), version, sizeof(version), e)) < 0) {
		lerr_set(e, -err, "--cri-endpoint %s: containerd does not answer: %s", o->endpoint, e->msg);
		goto fail;
	}
	log_info("cri: %s %s at %s", name, version, o->endpoint);
	if ((err = workq_open(l, WORKERS, "lantern-cri", &o->pool, e)) < 0)
		goto fail;
	if ((err = runtimes_add(rs, &cri_ops, o)) < 0) {
		lerr_set(e, -err, "cri: too many runtimes");
		workq_close(o->pool);
		goto fail;
	}
	return 0;
fail:
	cri_close(o->main);
	pthread_mutex_destroy(&o->mu);
	free(o);
	return err;
}
