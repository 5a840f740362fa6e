/* runtime.h: the runtimes a run can start on, behind one interface. Each runtime is a
 * file of userspace/runtime/: the process runtime (a host process, development only),
 * the OCI handlers (runc, runsc, kata) and Pods through the Kubernetes API server.
 *
 * Admission asks the runtimes in registration order: a runtime answers -ENOENT for a
 * spec that is not its own (another runtime decides), 0 when it will run it, or a
 * refusal naming the class, the handler and what is missing. A spec no runtime claims
 * is refused. Nothing is ever run on something weaker than its class asks for.
 *
 * A run's runtime, in order: prepare (before the instance exists: the image verified,
 * the network made), start (the instance is ready: start the workload with the
 * environment; call run_exited once when it ends), stop (run_end decided the run
 * ends), teardown (after run_exited: remove the runtime's parts; may finish on a
 * worker thread or after an API call, then call done on the loop), adopt (after a
 * restart), free. */
#ifndef LANTERN_RUNTIME_H
#define LANTERN_RUNTIME_H

#include <jansson.h>
#include <stdbool.h>

#include "lantern/oci.h"
#include "lantern/run.h"
#include "lantern/spec.h"
#include "lantern/util.h"

/* What adopt found of a workload a previous lanternd started. */
enum runtime_found {
	RUNTIME_ALIVE,           /* still running; run_exited follows when it ends */
	RUNTIME_EXITED,          /* ended; its exit status is in *x */
	RUNTIME_GONE,            /* gone without a recorded status (it died with the node) */
};

/* A pooled sandbox to start (docs/pools.md): the pool has made its instance (the
 * cgroup with the pool's limits, registered with no egress at all, its identity tmpfs,
 * its directory, the waiter's socket) before the runtime starts anything in it. */
struct runtime_sandbox_req {
	const struct spec *spec;          /* the pool's shape: image, class, limits, network */
	const char *instance_id;
	const char *dir;                  /* the sandbox's directory; becomes its run's */
	const struct cgroup_inst *cg;
	char *const *waiter_argv;         /* the waiter and its socket, as the sandbox sees them */
	const char *waiter_bin;           /* lantern-waiter on the node, shown at waiter_argv[0] */
	/* node directories the sandbox shows (the harness socket's, the identity tmpfs, the
	 * waiter's socket): a claiming run's own must be these, by inode */
	const struct run_env_mount *mounts;
	size_t n_mounts;
};

/* A started pooled sandbox. */
struct runtime_sandbox {
	pid_t shim_pid;
	int shim_pidfd;                   /* readable once its supervisor is gone */
	void *state;                      /* the runtime's own */
};

struct runtime_ops {
	const char *name;
	/* 0: this runtime runs s; -ENOENT: not its spec; else a refusal with the reason. */
	int (*admit)(void *rt, const struct spec *s, struct lerr *e);
	int (*prepare)(void *rt, struct run *r, struct lerr *e);
	int (*start)(void *rt, struct run *r, struct run_env *env, struct lerr *e);
	/* run_end decided the run ends and signalled the instance. A runtime whose
	 * workload those signals may not reach (a pod: the kubelet owns its processes)
	 * stops it its own way; run_exited follows, never from within stop. NULL: the
	 * signals are enough. */
	void (*stop)(void *rt, struct run *r);
	/* Calls done(r) on the loop when finished (at once when nothing is left). */
	void (*teardown)(void *rt, struct run *r, void (*done)(struct run *r));
	enum runtime_found (*adopt)(void *rt, struct run *r, struct run_exit *x);
	/* SIGKILLs the workload's supervisor at once (a test's simulated node loss). */
	void (*kill)(void *rt, struct run *r);
	/* Removes containers, namespaces, ... no live run of t owns. */
	void (*reclaim)(void *rt, struct runs *t);
	void (*json)(void *rt, const struct run *r, json_t *j);
	/* A container someone else starts asks to join r's instance (run_bind checked the
	 * cgroup, the run and its annotations): 0 when this runtime expects it, with what
	 * to exec in answer ("runtime", "args"); NULL for runtimes that start their
	 * workloads themselves (every container is then refused). */
	int (*bind)(void *rt, struct run *r, const struct run_bind_req *b, json_t *answer, struct lerr *e);
	void (*free)(void *rt, struct run *r);
	/* Finishes queued work (lanternd's exit). */
	void (*close)(void *rt);

	/* Pooled sandboxes (docs/pools.md); NULL in a runtime that cannot keep them (a pool
	 * declared for its specs is refused at lanternd's start). sandbox_start starts one
	 * for a pool, with the waiter as its first process, on a pool worker thread (it may
	 * use only q and the runtime's configuration). claim, on the loop, gives r the
	 * sandbox c->sandbox in place of prepare: its network (run_set_network), its
	 * supervisor watched as the run's, the waiter's socket (c->waiter_fd, set to -1);
	 * start then has the waiter exec the workload instead of starting it. On error
	 * the sandbox stays the caller's. sandbox_stop removes a sandbox no run took (the
	 * container, its network, its bundle, sb->state), on a pool worker thread. */
	int (*sandbox_start)(void *rt, const struct runtime_sandbox_req *q, struct runtime_sandbox *sb,
			     struct lerr *e);
	int (*claim)(void *rt, struct run *r, struct run_claim *c, struct lerr *e);
	void (*sandbox_stop)(void *rt, struct runtime_sandbox *sb);
	/* For runtimes whose containers someone else starts (a CRI pod): a container of the
	 * pod sandbox_start is making for instance inst (of shape s) asks to bind (run_bind
	 * checked the cgroup, the instance and the annotations); as bind. NULL: refused. */
	int (*sandbox_bind)(void *rt, const char *inst, const struct spec *s, const struct run_bind_req *b,
			    json_t *answer, struct lerr *e);
	/* Whether a claimed sandbox can run s, beyond the pool's shape (image, class,
	 * network, limits); NULL: it always can. */
	bool (*sandbox_fits)(void *rt, const struct spec *s);
	/* lanternd's exit: sandbox_starts under way that wait on someone else (the kubelet)
	 * give up now. NULL: they end by themselves. */
	void (*sandbox_cancel)(void *rt);
};

struct runtimes;

struct runtimes *runtimes_new(void);
/* Stops every runtime's workers (the workloads stay). */
void runtimes_free(struct runtimes *rs);
int runtimes_add(struct runtimes *rs, const struct runtime_ops *ops, void *rt);
/* The runtime that will run s, or NULL with the refusal in e. */
int runtimes_admit(const struct runtimes *rs, const struct spec *s, const struct runtime_ops **ops,
		   void **rt, struct lerr *e);
/* The runtime of that name (a run record names its runtime), or NULL. */
int runtimes_named(const struct runtimes *rs, const char *name, const struct runtime_ops **ops,
		   void **rt);
/* Every isolation class some runtime admits (a minimal spec of that class), as names;
 * what the node advertises. Returns how many. */
size_t runtimes_classes(const struct runtimes *rs, const char **out, size_t max);
/* Calls reclaim of every runtime. */
void runtimes_reclaim(const struct runtimes *rs, struct runs *t);

/* Fields of s the runtimes here cannot honour (limits.gpu: no device plugin path;
 * restore_snapshot_id: no snapshot store): a refusal naming the field, never a run
 * that ignores it. 0 when there is none. */
int runtime_refuse_unhonoured(const struct spec *s, struct lerr *e);

/* The run's runtime (set at admission or when its record is loaded). */
const struct runtime_ops *run_runtime(const struct run *r);

/* ---- the runtimes of this node ---- */
struct loop;

/* process.c: isolation trusted + image_digest "host" as a host process; refused
 * unless enabled (lanternd --process-runtime). */
struct runtime_process_opts {
	bool enabled;
	const char *shim;                 /* lantern-shim */
	uint64_t log_max;                 /* output kept per run (0: the shim's default) */
};
int runtime_process_add(struct runtimes *rs, struct loop *l, const struct runtime_process_opts *o,
			struct lerr *e);

/* oci.c: images by digest under the OCI handlers runc, runsc and kata, each class
 * mapped to a handler (refused fail-closed when it is not advertised), CNI networking,
 * and the image and node operations of the local API. */
struct runtime_oci_opts {
	const char *state_dir;            /* images in STATE/images, runtime roots in STATE/oci */
	const struct cgroup_node *cg;
	const char *shim;
	uint64_t log_max;
	const char *const *class_handlers; /* "CLASS=HANDLER" entries (handler none: refused) */
	int n_class_handlers;
	const char *net_bridge;           /* CNI bridge for allowlist_domain/open (lantern0) */
	const char *net_subnet;           /* its range (10.213.0.0/24) */
	bool net_default_route;           /* route everything via the bridge (NAT) */
	bool process_runtime;             /* told in `lantern node` */
	bool handlers_only;               /* the handlers run another runtime's containers
					   * (pods, through lantern-oci): no spawn of its own */
	uint64_t image_layer_max;         /* image bounds (image.h struct image_limits) */
	uint64_t image_max;
	uint64_t image_entries;
};
struct runtime_oci;
int runtime_oci_add(struct runtimes *rs, struct loop *l, const struct runtime_oci_opts *o,
		    struct runtime_oci **out, struct lerr *e);
/* The handler of the node's class c, or NULL when c is not served here (not mapped, or
 * its handler not advertised). Runtimes whose containers containerd starts (CRI,
 * Kubernetes) run classes exactly as the OCI runtime would. */
const struct oci_handler *runtime_oci_class_handler(const struct runtime_oci *o, enum spec_isolation c);
/* For run_bind answers: what lantern-oci execs for s's class ("runtime", "args": the
 * handler's binary and its global flags, as the OCI runtime runs it in a network
 * namespace of the spawn's own); -EPERM with the reason when the class is not served. */
int runtime_oci_bind_answer(const struct runtime_oci *o, const struct spec *s, json_t *answer,
			    struct lerr *e);
/* The image and node operations (`lantern image ...`, `lantern node`): answer(ctx, msg)
 * is called once with the answer (its reference passed on): at once, or for
 * image_import on the loop when the import has finished on the image worker thread.
 * -ENOENT, answer not called, if op is not one of them. t is asked which images are
 * in use. */
int runtime_oci_api(struct runtime_oci *o, struct runs *t, const char *op, json_t *req,
		    void (*answer)(void *ctx, json_t *msg), void *ctx);
/* 0 if this node's handlers can run s (its class mapped to an advertised handler, its
 * image and network allowed there), else the refusal: what another runtime that
 * starts containers through the same handlers (a pod under lantern-oci) admits. */
int runtime_oci_check(struct runtime_oci *o, const struct spec *s, struct lerr *e);

/* kube.c: spawns as Pods created through the Kubernetes API server (lanternd
 * --kubernetes): namespace lantern-t-<tenant> (made on first use, with the node's
 * labels, ResourceQuota and LimitRange), runtimeClassName lantern-<class>, nodeName
 * this node, lantern's annotations for lantern-oci's bind; status from a watch of
 * this node's pods; the pod deleted at teardown and adopted after a restart. The
 * node is labelled lantern.dev/class-<class>=true for the classes it runs. Admits
 * what the OCI handlers of this node admit (the same handlers run the pods). */
struct runtime_kube_opts {
	const char *kubeconfig;           /* NULL: the in-cluster service account */
	const char *node;                 /* this node's Node name */
	const char *tenant_config;        /* JSON file: "labels", "resourceQuota" and
					   * "limitRange" of tenant namespaces; NULL: none */
	const char *node_ip;              /* IPv4 address pods reach this node at (their
					   * DNS proxy listens there); NULL: none */
	uint32_t grace_s;                 /* the pod's terminationGracePeriodSeconds */
	uint32_t start_timeout_s;         /* a pod not running by then fails its run */
	struct runtime_oci *oci;
};
struct runtime_kube;
int runtime_kube_add(struct runtimes *rs, struct loop *l, const struct runtime_kube_opts *o,
		     struct runtime_kube **out, struct lerr *e);
/* Its API client, for other modules' requests in tenant namespaces (identity's
 * k8s:// secrets); NULL when k is. */
struct kube;
struct kube *runtime_kube_client(struct runtime_kube *k);
/* For /readyz: the watch of this node's pods is current and the node carries its
 * class labels; else why not. */
bool runtime_kube_ready(struct runtime_kube *k, char *why, size_t len);

/* cri.c: spawns as pod sandboxes of a containerd (or any CRI runtime) reached at
 * endpoint, under the runtime handlers lantern-<class> whose containers lantern-oci
 * binds to their run; classes are served as the OCI runtime serves them. Fails when
 * the endpoint does not answer (a node that cannot reach its runtime runs nothing). */
struct runtime_cri_opts {
	const char *endpoint;             /* unix:///run/containerd/containerd.sock */
	const struct runtime_oci *oci;    /* the node's class -> handler map */
	const struct cgroup_node *cg;
	const char *net_subnet;           /* the node bridge's range (its first address is
					   * where bridged pods' DNS goes) */
	uint64_t log_max;
};
int runtime_cri_add(struct runtimes *rs, struct loop *l, const struct runtime_cri_opts *o, struct lerr *e);

#endif
