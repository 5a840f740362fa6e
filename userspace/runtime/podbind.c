/* podbind.c: which containers of a run's pod may bind to the run (or of a pooled pod to
 * its sandbox), for the runtimes whose pods containerd starts through lantern-oci (cri.c,
 * kube.c): the pod must be the one the runtime made for the run or the sandbox (its name, and its uid once known), with one sandbox and one
 * workload container in it; and what lantern-oci is told to do with them. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "runtime_internal.h"

static bool same(const char *a, const char *b)
{
	return a && b && !strcmp(a, b);
}

int runtime_pod_bind(struct runtime_pod_binds *pb, const struct runtime_oci *oci, const struct spec *s,
		     const char *owner, const char *pod_name, const char *pod_uid, const struct run_bind_req *b,
		     json_t *answer, struct lerr *e)
{
	const char *sandbox = b->sandbox ? b->container_id : b->sandbox_id;
	int err;

	if (!same(b->pod_name, pod_name) || (pod_uid && pod_uid[0] && !same(b->pod_uid, pod_uid)))
		return lerr_set(e, EPERM, "bind: refused: container %s: its pod %s (uid %s) is not the pod lanternd "
				"made for %s", b->container_id, b->pod_name ? b->pod_name : "?",
				b->pod_uid ? b->pod_uid : "?", owner);
	if (!sandbox || (b->sandbox && !same(b->sandbox_id, b->container_id)) ||
	    (pb->sandbox[0] && strcmp(pb->sandbox, sandbox)))
		return lerr_set(e, EPERM, "bind: refused: container %s: %s %s is not %s's sandbox %s",
				b->container_id, b->sandbox ? "a second sandbox" : "its sandbox",
				sandbox ? sandbox : "?", owner, pb->sandbox);
	if (!b->sandbox && pb->container[0] && strcmp(pb->container, b->container_id))
		return lerr_set(e, EPERM, "bind: refused: container %s: %s has its workload container %s already",
				b->container_id, owner, pb->container);
	if ((err = runtime_oci_bind_answer(oci, s, answer, e)) < 0)
		return err;
	if ((size_t)snprintf(pb->sandbox, sizeof(pb->sandbox), "%s", sandbox) >= sizeof(pb->sandbox))
		return lerr_set(e, EPERM, "bind: refused: container %s: sandbox id too long", b->container_id);
	if (!b->sandbox)
		snprintf(pb->container, sizeof(pb->container), "%s", b->container_id);
	/* a network: none pod keeps loopback only (every pod of a handler gets the node's
	 * CNI network); the workload gets its scratch tmpfs */
	json_object_set_new(answer, "network", json_string(s->network == SPEC_NET_NONE ? "none" : "bridge"));
	if (!b->sandbox)
		json_object_set_new(answer, "scratch_bytes",
				    json_integer((json_int_t)(s->limits.scratch_bytes ? s->limits.scratch_bytes : 64ull << 20)));
	return 0;
}
