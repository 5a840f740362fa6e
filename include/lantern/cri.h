/* cri.h: a client of the Kubernetes Container Runtime Interface (runtime.v1) over gRPC,
 * the way the kubelet drives containerd: pod sandboxes, containers in them, their
 * status, and whether an image is in the runtime's store. Only the calls lanternd's CRI
 * runtime makes (userspace/runtime/cri.c); messages from proto/runtime/v1/cri.proto.
 *
 * Calls block the calling thread until containerd answers or the timeout passes: a
 * struct cri is used by one thread at a time (the CRI runtime's workers each open their
 * own). Errors name the call, the object and containerd's reason.
 *
 * Also here: the conversion of a container's CRI log file (containerd writes
 * "TIME STREAM TAG TEXT" lines) into the run's record log that `lantern run` and
 * `lantern logs` read (tools/shim/shim.c describes the record format). */
#ifndef LANTERN_CRI_H
#define LANTERN_CRI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "lantern/util.h"

struct cri;

/* endpoint: "unix:///run/containerd/containerd.sock" (or any gRPC target). */
int cri_open(const char *endpoint, int timeout_ms, struct cri **out, struct lerr *e);
void cri_close(struct cri *c);

/* The runtime's name and version (Version): answers while containerd serves the CRI. */
int cri_version(struct cri *c, char *name, size_t nlen, char *version, size_t vlen, struct lerr *e);

/* Whether image (a reference, NAME@sha256:HEX) is in the runtime's store. */
int cri_image_present(struct cri *c, const char *image, bool *present, struct lerr *e);
/* The image's OCI config ("Entrypoint", "Cmd", "Env", "WorkingDir", "User": the
 * imageSpec's "config" of containerd's verbose ImageStatus), a new reference; -ENOENT
 * when the image is not in the store, -EPROTO when the runtime does not tell it. */
int cri_image_config(struct cri *c, const char *image, json_t **config, struct lerr *e);

struct cri_kv {
	const char *key;
	const char *value;
};

/* A pod sandbox as lanternd asks for it. */
struct cri_pod {
	const char *name;             /* metadata.name */
	const char *uid;              /* metadata.uid */
	const char *ns;               /* metadata.namespace: lantern-t-<tenant> */
	const char *hostname;
	const char *log_dir;          /* containers' logs go below it */
	const char *cgroup_parent;    /* "/<root>/<instance>": containers' cgroups go inside */
	const char *handler;          /* runtime handler, "lantern-<class>" */
	const struct cri_kv *labels;
	size_t n_labels;
	const struct cri_kv *annotations;
	size_t n_annotations;
};

struct cri_mount {
	const char *host;
	const char *container;
	bool read_only;
};

/* The workload's container. */
struct cri_container {
	const char *name;
	const char *image;            /* NAME@sha256:HEX */
	char *const *command;         /* NULL-terminated, or NULL: the image's Entrypoint */
	char *const *args;            /* NULL-terminated, or NULL: the image's Cmd */
	const struct cri_kv *envs;
	size_t n_envs;
	const struct cri_mount *mounts;
	size_t n_mounts;
	const char *log_path;         /* relative to the pod's log_dir */
	int64_t memory_bytes;         /* 0: none */
	int64_t cpu_quota_us;         /* per cpu_period_us; 0: none */
	int64_t cpu_period_us;
	const char *seccomp_localhost; /* a profile file on the node, or NULL: the runtime's default */
	const struct cri_kv *labels;
	size_t n_labels;
	const struct cri_kv *annotations;
	size_t n_annotations;
};

int cri_run_pod(struct cri *c, const struct cri_pod *p, char *id, size_t idlen, struct lerr *e);
int cri_create_container(struct cri *c, const char *pod_id, const struct cri_pod *p,
			 const struct cri_container *ct, char *id, size_t idlen, struct lerr *e);
int cri_start_container(struct cri *c, const char *id, struct lerr *e);
/* Stops (timeout_s of grace) and removes the pod and its containers; a pod already gone
 * is fine. */
int cri_stop_container(struct cri *c, const char *id, int64_t timeout_s, struct lerr *e);
int cri_stop_pod(struct cri *c, const char *pod_id, struct lerr *e);
int cri_remove_pod(struct cri *c, const char *pod_id, struct lerr *e);

enum cri_state { CRI_CREATED, CRI_RUNNING, CRI_EXITED, CRI_UNKNOWN };

struct cri_status {
	enum cri_state state;
	int exit_code;
	bool oom_killed;              /* reason "OOMKilled" */
	char reason[64];
	char message[256];
	int64_t started_at, finished_at; /* ns */
};
/* -ENOENT (with the reason) when containerd does not know the container. */
int cri_container_status(struct cri *c, const char *id, struct cri_status *st, struct lerr *e);

struct cri_item {
	char id[80];
	char pod_id[80];              /* containers: their pod */
	bool ready;                   /* pods: SANDBOX_READY; containers: not exited */
	char label[80];               /* the value of the label listed by */
};
/* Pods (containers when pod_id is not NULL, those of that pod; "" for all) whose label
 * key has value (NULL: any value; the item's label gets it). *items must be freed. */
int cri_list_pods(struct cri *c, const char *key, const char *value, struct cri_item **items,
		  size_t *n, struct lerr *e);
int cri_list_containers(struct cri *c, const char *pod_id, const char *key, const char *value,
			struct cri_item **items, size_t *n, struct lerr *e);

/* ---- log.c: a container's CRI log into the run's record log ---- */
struct cri_log {
	char src[4096];               /* containerd's log file */
	char run_dir[4096];           /* records go to RUN/log (RUN/log.1 when rotated) */
	uint64_t off;                 /* bytes of src consumed */
	uint64_t seq;                 /* next record number */
	uint64_t len, max;            /* RUN/log's size; rotate at max / 2 */
};
/* Starts at the end of what RUN/log already holds (a restarted lanternd goes on). */
void cri_log_init(struct cri_log *g, const char *src, const char *run_dir, uint64_t max);
/* Copies the complete lines added to src since the last call. */
void cri_log_pump(struct cri_log *g);

#endif
