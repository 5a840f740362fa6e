/* bind.c: binding a container another program starts (containerd, through the
 * lantern-oci runtime handler) to a live run's instance (or a pooled sandbox's, which has
 * no run yet) before the container's first instruction, or refusing it. run.h says when a container binds; this file checks the
 * cgroup path, the run and the annotations, then asks the run's runtime. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

void run_pod_namespace(const struct run *r, char *out, size_t len)
{
	snprintf(out, len, "lantern-t-%s", r->tenant);
}

/* A cgroup path component the runtime may create: no separators, no dot names. */
static bool leaf_valid(const char *s, size_t len)
{
	if (!len || len > 128 || (len <= 2 && s[0] == '.' && (len == 1 || s[1] == '.')))
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		      c == '_' || c == '.' || c == ':'))
			return false;
	}
	return true;
}

/* "/<root>/<instance>/<leaf>" → the instance name; anything else is not inside an
 * instance of this node (a systemd-style "slice:prefix:name" path included). */
static bool instance_of(const struct runs *t, const char *path, char *inst, size_t len)
{
	const char *root = t->o.cg->root, *p, *slash;
	size_t rl = strlen(root);

	if (!path || path[0] != '/' || strncmp(path + 1, root, rl) || path[1 + rl] != '/')
		return false;
	p = path + 2 + rl;
	if (!(slash = strchr(p, '/')) || (size_t)(slash - p) >= len || !leaf_valid(p, (size_t)(slash - p)) ||
	    !leaf_valid(slash + 1, strlen(slash + 1)) || strchr(slash + 1, '/'))
		return false;
	snprintf(inst, len, "%.*s", (int)(slash - p), p);
	return true;
}

static bool same(const char *a, const char *b)
{
	return a && b && !strcmp(a, b);
}

/* The instance directories a runtime's own processes join first on a hybrid host (runsc's
 * sandbox and gofer join the v1 controllers but not the v2 directory the programs look
 * at), and where the container must move when its cgroup was chosen elsewhere. */
static void answer_cgroups(const struct runs *t, const struct cgroup_inst *cg, const char *inst, const char *cid,
			   bool inside, json_t *a)
{
	json_t *join = json_array();

	if (t->o.cg->layout == CGROUP_HYBRID)
		for (int i = 0; i < cg->ndirs; i++)
			json_array_append_new(join, json_string(cg->dirs[i]));
	json_object_set_new(a, "join", join);
	if (!inside) {
		char path[512];

		snprintf(path, sizeof(path), "/%s/%s/%s", t->o.cg->root, inst, cid);
		json_object_set_new(a, "cgroups_path", json_string(path));
	}
}

/* inst has no run: a container of a pooled pod being started binds to its sandbox, as
 * strictly as to a run; -ENOENT when inst is no such sandbox. */
static int bind_pooled(struct runs *t, const char *inst, bool inside, const struct run_bind_req *b,
		       json_t **answer, struct lerr *e)
{
	const char *cid = b->container_id ? b->container_id : "?";
	struct run_pooled p = { 0 };
	json_t *a;
	int err, i;

	for (i = 0; i < t->nsubs; i++)
		if (t->subs[i].h->pooled && t->subs[i].h->pooled(t->subs[i].arg, inst, &p) == 0)
			break;
	if (i == t->nsubs)
		return -ENOENT;
	if ((b->run_id && b->run_id[0]) || !same(b->instance_id, inst))
		return lerr_set(e, EPERM, "bind: refused: container %s: its annotations lantern.dev/run-id \"%s\" and "
				"lantern.dev/agent-instance-id \"%s\" do not name pooled sandbox %s (no run)", cid,
				b->run_id ? b->run_id : "", b->instance_id ? b->instance_id : "", inst);
	if (!same(b->pod_namespace, RUN_POOL_NAMESPACE))
		return lerr_set(e, EPERM, "bind: refused: container %s: its pod's namespace \"%s\" is not the pool "
				"namespace %s of pooled sandbox %s", cid, b->pod_namespace ? b->pod_namespace : "",
				RUN_POOL_NAMESPACE, inst);
	if (!same(b->handler_class, spec_isolation_name(p.spec->isolation)))
		return lerr_set(e, EPERM, "bind: refused: container %s: it came through handler lantern-%s, pooled "
				"sandbox %s (pool %s) is isolation \"%s\"", cid, b->handler_class ? b->handler_class : "?",
				inst, p.pool, spec_isolation_name(p.spec->isolation));
	if (!p.ops->sandbox_bind)
		return lerr_set(e, EPERM, "bind: refused: container %s: pooled sandbox %s: runtime %s starts its "
				"sandboxes itself", cid, inst, p.ops->name);
	if (!(a = json_pack("{s:s, s:s}", "instance_id", inst, "pool", p.pool)))
		return lerr_set(e, ENOMEM, "bind: out of memory");
	if ((err = p.ops->sandbox_bind(p.rt, inst, p.spec, b, a, e)) < 0) {
		json_decref(a);
		return err;
	}
	answer_cgroups(t, p.cg, inst, cid, inside, a);
	log_info("pool %s: container %s (%s) bound to pooled sandbox %s", p.pool, cid,
		 b->sandbox ? "sandbox" : "workload", inst);
	*answer = a;
	return 0;
}

int run_bind(struct runs *t, const struct run_bind_req *b, json_t **answer, struct lerr *e)
{
	const char *cid = b->container_id ? b->container_id : "?";
	char inst[64], ns[96];
	json_t *a;
	struct run *r;
	int err;

	/* a cgroup another program chose (the kubelet's pod cgroup): the run is the one
	 * its annotations name, and the container moves into the instance */
	bool inside = instance_of(t, b->cgroups_path, inst, sizeof(inst));

	if (!inside && (!b->instance_id || !leaf_valid(b->instance_id, strlen(b->instance_id)) ||
			!leaf_valid(cid, strlen(cid)) || strlen(b->instance_id) >= sizeof(inst)))
		return lerr_set(e, EPERM, "bind: refused: container %s: its cgroupsPath \"%s\" is not inside an "
				"instance cgroup of this node (/%s/<instance>/<name>) and no run is named",
				cid, b->cgroups_path ? b->cgroups_path : "", t->o.cg->root);
	if (!inside)
		snprintf(inst, sizeof(inst), "%s", b->instance_id);
	if (!(r = runs_by_instance(t, inst)) && (err = bind_pooled(t, inst, inside, b, answer, e)) != -ENOENT)
		return err;
	if (!r || !r->cg_made)
		return lerr_set(e, EPERM, "bind: refused: container %s: no live run of this node has instance %s",
				cid, inst);
	if (r->status != RUN_RUNNING || r->ending_set || r->exited)
		return lerr_set(e, EPERM, "bind: refused: container %s: run %s is %s", cid, r->id,
				r->ending_set || r->exited ? "ending" : run_status_name(r->status));
	run_pod_namespace(r, ns, sizeof(ns));
	if (!same(b->run_id, r->id) || !same(b->instance_id, r->instance_id))
		return lerr_set(e, EPERM, "bind: refused: container %s: its annotations lantern.dev/run-id \"%s\" "
				"and lantern.dev/agent-instance-id \"%s\" do not name run %s, instance %s", cid,
				b->run_id ? b->run_id : "", b->instance_id ? b->instance_id : "", r->id,
				r->instance_id);
	if (!same(b->pod_namespace, ns))
		return lerr_set(e, EPERM, "bind: refused: container %s: its pod's namespace \"%s\" is not run %s's "
				"(%s)", cid, b->pod_namespace ? b->pod_namespace : "", r->id, ns);
	if (!r->spec || !same(b->handler_class, spec_isolation_name(r->spec->isolation)))
		return lerr_set(e, EPERM, "bind: refused: container %s: it came through handler lantern-%s, run %s "
				"is isolation \"%s\"", cid, b->handler_class ? b->handler_class : "?", r->id,
				r->spec ? spec_isolation_name(r->spec->isolation) : "?");
	if (!r->rt_ops || !r->rt_ops->bind)
		return lerr_set(e, EPERM, "bind: refused: container %s: run %s's runtime %s starts its workloads "
				"itself", cid, r->id, r->rt_ops ? r->rt_ops->name : "?");
	if (!(a = json_pack("{s:s, s:s}", "run_id", r->id, "instance_id", r->instance_id)))
		return lerr_set(e, ENOMEM, "bind: out of memory");
	if ((err = r->rt_ops->bind(r->rt, r, b, a, e)) < 0) {
		json_decref(a);
		return err;
	}
	answer_cgroups(t, &r->cg, r->instance_id, cid, inside, a);
	log_info("run %s: container %s (%s) bound to instance %s", r->id, cid, b->sandbox ? "sandbox" : "workload",
		 r->instance_id);
	*answer = a;
	return 0;
}
