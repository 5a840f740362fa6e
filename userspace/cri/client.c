/* client.c: the CRI calls lanternd makes (runtime.v1.RuntimeService and ImageService),
 * each a blocking unary gRPC call on the connection's own completion queue, packed and
 * unpacked with the protobuf-c code of proto/runtime/v1/cri.proto. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lantern/cri.h"
#include "lantern/rpc.h"
#include "runtime/v1/cri.pb-c.h"

#define SVC "/runtime.v1.RuntimeService/"
#define IMG "/runtime.v1.ImageService/"

struct cri {
	struct rpc_channel *ch;
	struct rpc_cq *q;
	int timeout_ms;
	char endpoint[256];
};

int cri_open(const char *endpoint, int timeout_ms, struct cri **out, struct lerr *e)
{
	struct rpc_tls tls = { .insecure = true };    /* a local Unix socket */
	struct cri *c = calloc(1, sizeof(*c));
	int err;

	if (!c)
		return lerr_set(e, ENOMEM, "cri: out of memory");
	snprintf(c->endpoint, sizeof(c->endpoint), "%s", endpoint);
	c->timeout_ms = timeout_ms;
	if ((err = rpc_channel_open(endpoint, &tls, &c->ch, e)) < 0) {
		free(c);
		return err;
	}
	if (!(c->q = rpc_cq_new())) {
		rpc_channel_close(c->ch);
		free(c);
		return lerr_set(e, ENOMEM, "cri: out of memory");
	}
	*out = c;
	return 0;
}

void cri_close(struct cri *c)
{
	if (!c)
		return;
	rpc_channel_close(c->ch);
	rpc_cq_free(c->q);
	free(c);
}

struct call {
	bool done;
	int status;
	char details[512];
	ProtobufCMessage *resp;
	const ProtobufCMessageDescriptor *desc;
};

static void call_done(void *arg, int status, const char *details, const uint8_t *resp, size_t len)
{
	struct call *k = arg;

	k->done = true;
	k->status = status;
	snprintf(k->details, sizeof(k->details), "%s", details ? details : "");
	if (status == RPC_OK && !(k->resp = protobuf_c_message_unpack(k->desc, NULL, len, resp))) {
		k->status = RPC_INTERNAL;
		snprintf(k->details, sizeof(k->details), "cannot decode the answer");
	}
}

/* One call: req packed, the answer unpacked as desc into *resp (free with
 * protobuf_c_message_free_unpacked). gRPC's NOT_FOUND becomes -ENOENT. */
static int call(struct cri *c, const char *method, const ProtobufCMessage *req,
		const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp, const char *what,
		struct lerr *e)
{
	size_t len = protobuf_c_message_get_packed_size(req);
	uint8_t *buf = malloc(len ? len : 1);
	struct call k = { .desc = desc };
	int err;

	if (!buf)
		return lerr_set(e, ENOMEM, "cri: out of memory");
	protobuf_c_message_pack(req, buf);
	/* a channel whose containerd restarted fails its next call once, then reconnects */
	for (int attempt = 0; attempt < 2 && (attempt == 0 || k.status == RPC_UNAVAILABLE); attempt++) {
		k = (struct call){ .desc = desc };
		if ((err = rpc_unary(c->ch, c->q, method, buf, len, c->timeout_ms, call_done, &k)) < 0) {
			free(buf);
			return lerr_set(e, -err, "cri: %s: cannot start the call to %s", what, c->endpoint);
		}
		while (!k.done) {
			if (rpc_cq_poll(c->q, 1000) < 0) {
				free(buf);
				return lerr_set(e, EIO, "cri: %s: the call's queue shut down", what);
			}
		}
	}
	free(buf);
	if (k.status != RPC_OK) {
		err = k.status == RPC_NOT_FOUND ? ENOENT : k.status == RPC_UNAVAILABLE ? ECONNREFUSED :
		      k.status == RPC_DEADLINE_EXCEEDED ? ETIMEDOUT : EIO;
		return lerr_set(e, err, "cri: %s: %s (%s)", what, k.details[0] ? k.details : "no details",
				rpc_status_name(k.status));
	}
	*resp = k.resp;
	return 0;
}

#define FREE(m) protobuf_c_message_free_unpacked((ProtobufCMessage *)(m), NULL)

int cri_version(struct cri *c, char *name, size_t nlen, char *version, size_t vlen, struct lerr *e)
{
	Runtime__V1__VersionRequest req = RUNTIME__V1__VERSION_REQUEST__INIT;
	Runtime__V1__VersionResponse *r;
	int err;

	req.version = "v1";
	if ((err = call(c, SVC "Version", &req.base, &runtime__v1__version_response__descriptor,
			(ProtobufCMessage **)&r, "Version", e)) < 0)
		return err;
	snprintf(name, nlen, "%s", r->runtime_name);
	snprintf(version, vlen, "%s", r->runtime_version);
	FREE(r);
	return 0;
}

int cri_image_present(struct cri *c, const char *image, bool *present, struct lerr *e)
{
	Runtime__V1__ImageStatusRequest req = RUNTIME__V1__IMAGE_STATUS_REQUEST__INIT;
	Runtime__V1__ImageSpec spec = RUNTIME__V1__IMAGE_SPEC__INIT;
	Runtime__V1__ImageStatusResponse *r;
	char what[300];
	int err;

	spec.image = (char *)image;
	req.image = &spec;
	snprintf(what, sizeof(what), "ImageStatus %s", image);
	if ((err = call(c, IMG "ImageStatus", &req.base, &runtime__v1__image_status_response__descriptor,
			(ProtobufCMessage **)&r, what, e)) < 0)
		return err;
	*present = r->image != NULL;
	FREE(r);
	return 0;
}

/* containerd's verbose answer: info["info"] is JSON whose "imageSpec" is the OCI image. */
int cri_image_config(struct cri *c, const char *image, json_t **config, struct lerr *e)
{
	Runtime__V1__ImageStatusRequest req = RUNTIME__V1__IMAGE_STATUS_REQUEST__INIT;
	Runtime__V1__ImageSpec spec = RUNTIME__V1__IMAGE_SPEC__INIT;
	Runtime__V1__ImageStatusResponse *r;
	json_t *info = NULL, *cfg;
	char what[300];
	int err;

	spec.image = (char *)image;
	req.image = &spec;
	req.verbose = true;
	snprintf(what, sizeof(what), "ImageStatus %s", image);
	if ((err = call(c, IMG "ImageStatus", &req.base, &runtime__v1__image_status_response__descriptor,
			(ProtobufCMessage **)&r, what, e)) < 0)
		return err;
	if (!r->image) {
		FREE(r);
		return lerr_set(e, ENOENT, "cri: %s: not in the runtime's store", what);
	}
	for (size_t i = 0; i < r->n_info && !info; i++)
		if (r->info[i]->key && !strcmp(r->info[i]->key, "info") && r->info[i]->value)
			info = json_loads(r->info[i]->value, 0, NULL);
	FREE(r);
	if (!json_is_object(json_object_get(info, "imageSpec"))) {
		json_decref(info);
		return lerr_set(e, EPROTO, "cri: %s: the runtime's verbose answer has no imageSpec", what);
	}
	/* an image without a config has none of its defaults */
	cfg = json_object_get(json_object_get(info, "imageSpec"), "config");
	*config = json_is_object(cfg) ? json_incref(cfg) : json_object();
	json_decref(info);
	return 0;
}

/* Map fields are repeated entry messages: one allocation holds the pointer array and
 * the entries after it (free(out) frees both); the entries point into kv (no copies). */
#define KV_ENTRIES(type, INIT, kv, n, out)                                            \
	do {                                                                           \
		char *blk_ = calloc(1, ((n) + 1) * (sizeof(type *) + sizeof(type)));   \
		type *ents_ = blk_ ? (type *)(blk_ + ((n) + 1) * sizeof(type *)) : NULL; \
		(out) = (type **)blk_;                                                 \
		for (size_t i_ = 0; ents_ && i_ < (n); i_++) {                         \
			type init_ = INIT;                                             \
			ents_[i_] = init_;                                             \
			ents_[i_].key = (char *)(kv)[i_].key;                          \
			ents_[i_].value = (char *)(kv)[i_].value;                      \
			(out)[i_] = &ents_[i_];                                        \
		}                                                                      \
	} while (0)

/* The pod's config, as RunPodSandbox and CreateContainer both send it; the caller
 * frees the entry arrays with pod_config_free. */
struct pod_msg {
	Runtime__V1__PodSandboxConfig cfg;
	Runtime__V1__PodSandboxMetadata md;
	Runtime__V1__LinuxPodSandboxConfig lx;
	Runtime__V1__LinuxSandboxSecurityContext sc;
	Runtime__V1__NamespaceOption ns;
	Runtime__V1__SecurityProfile seccomp;
};

static void pod_config(struct pod_msg *m, const struct cri_pod *p)
{
	Runtime__V1__PodSandboxConfig cfg = RUNTIME__V1__POD_SANDBOX_CONFIG__INIT;
	Runtime__V1__PodSandboxMetadata md = RUNTIME__V1__POD_SANDBOX_METADATA__INIT;
	Runtime__V1__LinuxPodSandboxConfig lx = RUNTIME__V1__LINUX_POD_SANDBOX_CONFIG__INIT;
	Runtime__V1__LinuxSandboxSecurityContext sc = RUNTIME__V1__LINUX_SANDBOX_SECURITY_CONTEXT__INIT;
	Runtime__V1__NamespaceOption ns = RUNTIME__V1__NAMESPACE_OPTION__INIT;
	Runtime__V1__SecurityProfile seccomp = RUNTIME__V1__SECURITY_PROFILE__INIT;

	m->cfg = cfg;
	m->md = md;
	m->lx = lx;
	m->sc = sc;
	m->ns = ns;
	m->seccomp = seccomp;
	m->md.name = (char *)p->name;
	m->md.uid = (char *)p->uid;
	m->md.namespace_ = (char *)p->ns;
	/* the pod's own network namespace (CNI), pid namespace per container as the
	 * kubelet asks for v1 pods */
	m->ns.network = RUNTIME__V1__NAMESPACE_MODE__POD;
	m->ns.pid = RUNTIME__V1__NAMESPACE_MODE__CONTAINER;
	m->ns.ipc = RUNTIME__V1__NAMESPACE_MODE__POD;
	m->sc.namespace_options = &m->ns;
	m->sc.seccomp = &m->seccomp;
	m->lx.cgroup_parent = (char *)p->cgroup_parent;
	m->lx.security_context = &m->sc;
	m->cfg.metadata = &m->md;
	m->cfg.hostname = (char *)p->hostname;
	m->cfg.log_directory = (char *)p->log_dir;
	m->cfg.linux_config = &m->lx;
	m->cfg.n_labels = p->n_labels;
	KV_ENTRIES(Runtime__V1__PodSandboxConfig__LabelsEntry, RUNTIME__V1__POD_SANDBOX_CONFIG__LABELS_ENTRY__INIT,
		   p->labels, p->n_labels, m->cfg.labels);
	m->cfg.n_annotations = p->n_annotations;
	KV_ENTRIES(Runtime__V1__PodSandboxConfig__AnnotationsEntry,
		   RUNTIME__V1__POD_SANDBOX_CONFIG__ANNOTATIONS_ENTRY__INIT, p->annotations,
		   p->n_annotations, m->cfg.annotations);
}

static bool pod_config_ok(const struct pod_msg *m)
{
	return m->cfg.labels && m->cfg.annotations;
}

static void pod_config_free(struct pod_msg *m)
{
	free(m->cfg.labels);
	free(m->cfg.annotations);
}

int cri_run_pod(struct cri *c, const struct cri_pod *p, char *id, size_t idlen, struct lerr *e)
{
	Runtime__V1__RunPodSandboxRequest req = RUNTIME__V1__RUN_POD_SANDBOX_REQUEST__INIT;
	Runtime__V1__RunPodSandboxResponse *r;
	struct pod_msg m;
	char what[200];
	int err;

	pod_config(&m, p);
	if (!pod_config_ok(&m)) {
		pod_config_free(&m);
		return lerr_set(e, ENOMEM, "cri: out of memory");
	}
	req.config = &m.cfg;
	req.runtime_handler = (char *)p->handler;
	snprintf(what, sizeof(what), "RunPodSandbox %s/%s (handler %s)", p->ns, p->name, p->handler);
	err = call(c, SVC "RunPodSandbox", &req.base, &runtime__v1__run_pod_sandbox_response__descriptor,
		   (ProtobufCMessage **)&r, what, e);
	pod_config_free(&m);
	if (err < 0)
		return err;
	snprintf(id, idlen, "%s", r->pod_sandbox_id);
	FREE(r);
	return 0;
}

static size_t count(char *const *v)
{
	size_t n = 0;

	while (v && v[n])
		n++;
	return n;
}

int cri_create_container(struct cri *c, const char *pod_id, const struct cri_pod *p,
			 const struct cri_container *ct, char *id, size_t idlen, struct lerr *e)
{
	Runtime__V1__CreateContainerRequest req = RUNTIME__V1__CREATE_CONTAINER_REQUEST__INIT;
	Runtime__V1__ContainerConfig cfg = RUNTIME__V1__CONTAINER_CONFIG__INIT;
	Runtime__V1__ContainerMetadata md = RUNTIME__V1__CONTAINER_METADATA__INIT;
	Runtime__V1__ImageSpec img = RUNTIME__V1__IMAGE_SPEC__INIT;
	Runtime__V1__LinuxContainerConfig lx = RUNTIME__V1__LINUX_CONTAINER_CONFIG__INIT;
	Runtime__V1__LinuxContainerResources res = RUNTIME__V1__LINUX_CONTAINER_RESOURCES__INIT;
	Runtime__V1__LinuxContainerSecurityContext sc = RUNTIME__V1__LINUX_CONTAINER_SECURITY_CONTEXT__INIT;
	Runtime__V1__NamespaceOption ns = RUNTIME__V1__NAMESPACE_OPTION__INIT;
	Runtime__V1__SecurityProfile seccomp = RUNTIME__V1__SECURITY_PROFILE__INIT;
	Runtime__V1__Capability caps = RUNTIME__V1__CAPABILITY__INIT;
	Runtime__V1__CreateContainerResponse *r;
	Runtime__V1__KeyValue *envs = calloc(ct->n_envs + 1, sizeof(*envs));
	Runtime__V1__KeyValue **penvs = calloc(ct->n_envs + 1, sizeof(*penvs));
	Runtime__V1__Mount *mounts = calloc(ct->n_mounts + 1, sizeof(*mounts));
	Runtime__V1__Mount **pmounts = calloc(ct->n_mounts + 1, sizeof(*pmounts));
	/* the capabilities lantern's own OCI bundles keep (docs/oci.md): everything else
	 * containerd's default set has is dropped */
	static char *const drop[] = { "NET_RAW", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP" };
	struct pod_msg m;
	char what[300];
	int err = 0;

	pod_config(&m, p);
	if (!pod_config_ok(&m) || !envs || !penvs || !mounts || !pmounts) {
		err = lerr_set(e, ENOMEM, "cri: out of memory");
		goto out;
	}
	for (size_t i = 0; i < ct->n_envs; i++) {
		Runtime__V1__KeyValue kv = RUNTIME__V1__KEY_VALUE__INIT;

		envs[i] = kv;
		envs[i].key = (char *)ct->envs[i].key;
		envs[i].value = (char *)ct->envs[i].value;
		penvs[i] = &envs[i];
	}
	for (size_t i = 0; i < ct->n_mounts; i++) {
		Runtime__V1__Mount mt = RUNTIME__V1__MOUNT__INIT;

		mounts[i] = mt;
		mounts[i].host_path = (char *)ct->mounts[i].host;
		mounts[i].container_path = (char *)ct->mounts[i].container;
		mounts[i].readonly = ct->mounts[i].read_only;
		pmounts[i] = &mounts[i];
	}
	md.name = (char *)ct->name;
	img.image = (char *)ct->image;
	cfg.metadata = &md;
	cfg.image = &img;
	cfg.n_command = count(ct->command);
	cfg.command = (char **)ct->command;
	cfg.n_args = count(ct->args);
	cfg.args = (char **)ct->args;
	cfg.n_envs = ct->n_envs;
	cfg.envs = penvs;
	cfg.n_mounts = ct->n_mounts;
	cfg.mounts = pmounts;
	cfg.log_path = (char *)ct->log_path;
	cfg.n_labels = ct->n_labels;
	KV_ENTRIES(Runtime__V1__ContainerConfig__LabelsEntry, RUNTIME__V1__CONTAINER_CONFIG__LABELS_ENTRY__INIT,
		   ct->labels, ct->n_labels, cfg.labels);
	cfg.n_annotations = ct->n_annotations;
	KV_ENTRIES(Runtime__V1__ContainerConfig__AnnotationsEntry,
		   RUNTIME__V1__CONTAINER_CONFIG__ANNOTATIONS_ENTRY__INIT, ct->annotations, ct->n_annotations,
		   cfg.annotations);
	res.memory_limit_in_bytes = ct->memory_bytes;
	res.cpu_quota = ct->cpu_quota_us;
	res.cpu_period = ct->cpu_quota_us ? ct->cpu_period_us : 0;
	ns.network = RUNTIME__V1__NAMESPACE_MODE__POD;
	ns.pid = RUNTIME__V1__NAMESPACE_MODE__CONTAINER;
	ns.ipc = RUNTIME__V1__NAMESPACE_MODE__POD;
	if (ct->seccomp_localhost) {
		seccomp.profile_type = RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Localhost;
		seccomp.localhost_ref = (char *)ct->seccomp_localhost;
	}
	caps.n_drop_capabilities = ARRAY_SIZE(drop);
	caps.drop_capabilities = (char **)drop;
	sc.capabilities = &caps;
	sc.namespace_options = &ns;
	sc.readonly_rootfs = true;
	sc.no_new_privs = true;
	sc.seccomp = &seccomp;
	lx.resources = &res;
	lx.security_context = &sc;
	cfg.linux_config = &lx;
	req.pod_sandbox_id = (char *)pod_id;
	req.config = &cfg;
	req.sandbox_config = &m.cfg;
	if (!cfg.labels || !cfg.annotations) {
		err = lerr_set(e, ENOMEM, "cri: out of memory");
		goto out;
	}
	snprintf(what, sizeof(what), "CreateContainer %s in pod %s", ct->name, p->name);
	if ((err = call(c, SVC "CreateContainer", &req.base, &runtime__v1__create_container_response__descriptor,
			(ProtobufCMessage **)&r, what, e)) == 0) {
		snprintf(id, idlen, "%s", r->container_id);
		FREE(r);
	}
out:
	free(cfg.labels);
	free(cfg.annotations);
	pod_config_free(&m);
	free(envs);
	free(penvs);
	free(mounts);
	free(pmounts);
	return err;
}

/* The calls that take one id and answer nothing. */
static int call_id(struct cri *c, const char *method, const ProtobufCMessageDescriptor *req_desc,
		   const ProtobufCMessageDescriptor *resp_desc, const char *id, int64_t timeout,
		   struct lerr *e)
{
	/* every one of these requests has the id as field 1 (and StopContainer its
	 * timeout as field 2): one generic message of the right descriptor carries it */
	ProtobufCMessage *req = calloc(1, req_desc->sizeof_message), *r;
	char what[200];
	int err;

	if (!req)
		return lerr_set(e, ENOMEM, "cri: out of memory");
	req_desc->message_init(req);
	*(char **)((char *)req + req_desc->fields[0].offset) = (char *)id;
	if (req_desc->n_fields > 1)
		*(int64_t *)((char *)req + req_desc->fields[1].offset) = timeout;
	snprintf(what, sizeof(what), "%s %s", method + strlen(SVC), id);
	err = call(c, method, req, resp_desc, &r, what, e);
	free(req);
	if (err == 0)
		FREE(r);
	return err;
}

int cri_start_container(struct cri *c, const char *id, struct lerr *e)
{
	return call_id(c, SVC "StartContainer", &runtime__v1__start_container_request__descriptor,
		       &runtime__v1__start_container_response__descriptor, id, 0, e);
}

int cri_stop_container(struct cri *c, const char *id, int64_t timeout_s, struct lerr *e)
{
	return call_id(c, SVC "StopContainer", &runtime__v1__stop_container_request__descriptor,
		       &runtime__v1__stop_container_response__descriptor, id, timeout_s, e);
}

int cri_stop_pod(struct cri *c, const char *pod_id, struct lerr *e)
{
	return call_id(c, SVC "StopPodSandbox", &runtime__v1__stop_pod_sandbox_request__descriptor,
		       &runtime__v1__stop_pod_sandbox_response__descriptor, pod_id, 0, e);
}

int cri_remove_pod(struct cri *c, const char *pod_id, struct lerr *e)
{
	return call_id(c, SVC "RemovePodSandbox", &runtime__v1__remove_pod_sandbox_request__descriptor,
		       &runtime__v1__remove_pod_sandbox_response__descriptor, pod_id, 0, e);
}

int cri_container_status(struct cri *c, const char *id, struct cri_status *st, struct lerr *e)
{
	Runtime__V1__ContainerStatusRequest req = RUNTIME__V1__CONTAINER_STATUS_REQUEST__INIT;
	Runtime__V1__ContainerStatusResponse *r;
	char what[200];
	int err;

	req.container_id = (char *)id;
	snprintf(what, sizeof(what), "ContainerStatus %s", id);
	if ((err = call(c, SVC "ContainerStatus", &req.base, &runtime__v1__container_status_response__descriptor,
			(ProtobufCMessage **)&r, what, e)) < 0)
		return err;
	memset(st, 0, sizeof(*st));
	if (!r->status) {
		FREE(r);
		return lerr_set(e, ENOENT, "cri: %s: no status in the answer", what);
	}
	switch (r->status->state) {
	case RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED: st->state = CRI_CREATED; break;
	case RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING: st->state = CRI_RUNNING; break;
	case RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED: st->state = CRI_EXITED; break;
	default: st->state = CRI_UNKNOWN; break;
	}
	st->exit_code = r->status->exit_code;
	snprintf(st->reason, sizeof(st->reason), "%s", r->status->reason ? r->status->reason : "");
	snprintf(st->message, sizeof(st->message), "%s", r->status->message ? r->status->message : "");
	st->oom_killed = !strcmp(st->reason, "OOMKilled");
	st->started_at = r->status->started_at;
	st->finished_at = r->status->finished_at;
	FREE(r);
	return 0;
}

static int items_add(struct cri_item **v, size_t *n, const char *id, const char *pod_id, bool ready,
		     const char *label)
{
	struct cri_item *nv = realloc(*v, (*n + 1) * sizeof(**v));

	if (!nv)
		return -ENOMEM;
	*v = nv;
	memset(&nv[*n], 0, sizeof(nv[*n]));
	snprintf(nv[*n].id, sizeof(nv[*n].id), "%s", id);
	snprintf(nv[*n].pod_id, sizeof(nv[*n].pod_id), "%s", pod_id ? pod_id : "");
	snprintf(nv[*n].label, sizeof(nv[*n].label), "%s", label ? label : "");
	nv[*n].ready = ready;
	(*n)++;
	return 0;
}

/* The value of key among n entries of a map field, or NULL. */
#define LABEL_OF(ents, n, key, out)                                  \
	do {                                                          \
		(out) = NULL;                                         \
		for (size_t j_ = 0; j_ < (n); j_++)                   \
			if (!strcmp((ents)[j_]->key, (key)))          \
				(out) = (ents)[j_]->value;            \
	} while (0)

int cri_list_pods(struct cri *c, const char *key, const char *value, struct cri_item **items,
		  size_t *n, struct lerr *e)
{
	Runtime__V1__ListPodSandboxRequest req = RUNTIME__V1__LIST_POD_SANDBOX_REQUEST__INIT;
	Runtime__V1__PodSandboxFilter f = RUNTIME__V1__POD_SANDBOX_FILTER__INIT;
	Runtime__V1__PodSandboxFilter__LabelSelectorEntry sel = RUNTIME__V1__POD_SANDBOX_FILTER__LABEL_SELECTOR_ENTRY__INIT;
	Runtime__V1__PodSandboxFilter__LabelSelectorEntry *psel = &sel;
	Runtime__V1__ListPodSandboxResponse *r;
	int err = 0;

	*items = NULL;
	*n = 0;
	if (value) {
		sel.key = (char *)key;
		sel.value = (char *)value;
		f.n_label_selector = 1;
		f.label_selector = &psel;
	}
	req.filter = &f;
	if ((err = call(c, SVC "ListPodSandbox", &req.base, &runtime__v1__list_pod_sandbox_response__descriptor,
			(ProtobufCMessage **)&r, "ListPodSandbox", e)) < 0)
		return err;
	for (size_t i = 0; i < r->n_items && !err; i++) {
		const char *label;

		LABEL_OF(r->items[i]->labels, r->items[i]->n_labels, key, label);
		if (label)
			err = items_add(items, n, r->items[i]->id, NULL,
					r->items[i]->state == RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY, label);
	}
	FREE(r);
	if (err < 0) {
		free(*items);
		*items = NULL;
		*n = 0;
		return lerr_set(e, ENOMEM, "cri: out of memory");
	}
	return 0;
}

int cri_list_containers(struct cri *c, const char *pod_id, const char *key, const char *value,
			struct cri_item **items, size_t *n, struct lerr *e)
{
	Runtime__V1__ListContainersRequest req = RUNTIME__V1__LIST_CONTAINERS_REQUEST__INIT;
	Runtime__V1__ContainerFilter f = RUNTIME__V1__CONTAINER_FILTER__INIT;
	Runtime__V1__ContainerFilter__LabelSelectorEntry sel = RUNTIME__V1__CONTAINER_FILTER__LABEL_SELECTOR_ENTRY__INIT;
	Runtime__V1__ContainerFilter__LabelSelectorEntry *psel = &sel;
	Runtime__V1__ListContainersResponse *r;
	int err = 0;

	*items = NULL;
	*n = 0;
	if (value) {
		sel.key = (char *)key;
		sel.value = (char *)value;
		f.n_label_selector = 1;
		f.label_selector = &psel;
	}
	f.pod_sandbox_id = (char *)(pod_id ? pod_id : "");
	req.filter = &f;
	if ((err = call(c, SVC "ListContainers", &req.base, &runtime__v1__list_containers_response__descriptor,
			(ProtobufCMessage **)&r, "ListContainers", e)) < 0)
		return err;
	for (size_t i = 0; i < r->n_containers && !err; i++) {
		const Runtime__V1__Container *k = r->containers[i];
		const char *label;

		LABEL_OF(k->labels, k->n_labels, key, label);
		if (label)
			err = items_add(items, n, k->id, k->pod_sandbox_id,
					k->state != RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED, label);
	}
	FREE(r);
	if (err < 0) {
		free(*items);
		*items = NULL;
		*n = 0;
		return lerr_set(e, ENOMEM, "cri: out of memory");
	}
	return 0;
}
