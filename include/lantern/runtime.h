/* runtime.h: the runtimes a run can start on, behind one interface. Each runtime is a
 * file of userspace/runtime/: the process runtime (a host process, development only)
 * and the OCI handlers (runc, runsc, kata) today; a CRI or Kubernetes runtime is one
 * more file implementing the same operations.
 *
 * Admission asks the runtimes in registration order: a runtime answers -ENOENT for a
 * spec that is not its own (another runtime decides), 0 when it will run it, or a
 * refusal naming the class, the handler and what is missing. A spec no runtime claims
 * is refused. Nothing is ever run on something weaker than its class asks for.
 *
 * A run's runtime, in order: prepare (before the instance exists: the image verified,
 * the network made), start (the instance is ready: start the workload with the
 * environment; call run_exited once when it ends), teardown (after run_exited: remove
 * the runtime's parts; may finish on a worker thread, then call done on the loop),
 * adopt (after a restart), free. */
#ifndef LANTERN_RUNTIME_H
#define LANTERN_RUNTIME_H

#include <jansson.h>
#include <stdbool.h>

#include "lantern/run.h"
#include "lantern/spec.h"
#include "lantern/util.h"

/* What adopt found of a workload a previous lanternd started. */
enum runtime_found {
	RUNTIME_ALIVE,           /* still running; run_exited follows when it ends */
	RUNTIME_EXITED,          /* ended; its exit status is in *x */
	RUNTIME_GONE,            /* gone without a recorded status (it died with the node) */
};

struct runtime_ops {
	const char *name;
	/* 0: this runtime runs s; -ENOENT: not its spec; else a refusal with the reason. */
	int (*admit)(void *rt, const struct spec *s, struct lerr *e);
	int (*prepare)(void *rt, struct run *r, struct lerr *e);
	int (*start)(void *rt, struct run *r, struct run_env *env, struct lerr *e);
	/* Calls done(r) on the loop when finished (at once when nothing is left). */
	void (*teardown)(void *rt, struct run *r, void (*done)(struct run *r));
	enum runtime_found (*adopt)(void *rt, struct run *r, struct run_exit *x);
	/* SIGKILLs the workload's supervisor at once (a test's simulated node loss). */
	void (*kill)(void *rt, struct run *r);
	/* Removes containers, namespaces, ... no live run of t owns. */
	void (*reclaim)(void *rt, struct runs *t);
	void (*json)(void *rt, const struct run *r, json_t *j);
	void (*free)(void *rt, struct run *r);
	/* Finishes queued work (lanternd's exit). */
	void (*close)(void *rt);
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
	uint64_t image_layer_max;         /* image bounds (image.h struct image_limits) */
	uint64_t image_max;
	uint64_t image_entries;
};
struct runtime_oci;
int runtime_oci_add(struct runtimes *rs, struct loop *l, const struct runtime_oci_opts *o,
		    struct runtime_oci **out, struct lerr *e);
/* The image and node operations (`lantern image ...`, `lantern node`): answer(ctx, msg)
 * is called once with the answer (its reference passed on): at once, or for
 * image_import on the loop when the import has finished on the image worker thread.
 * -ENOENT, answer not called, if op is not one of them. t is asked which images are
 * in use. */
int runtime_oci_api(struct runtime_oci *o, struct runs *t, const char *op, json_t *req,
		    void (*answer)(void *ctx, json_t *msg), void *ctx);

#endif
