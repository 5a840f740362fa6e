/* run.h: a run's life on this node, and nothing else: admission, the instance (its
 * cgroup, with limits) made before the workload's first instruction, the start through
 * a runtime, timeout and cancel, how it ended, teardown, and adoption of what a
 * previous lanternd left. Every other concern (egress policy, the journal and harness
 * API, telemetry, metering, logs, the control-plane link) is a subscriber: main.c
 * registers a table of hooks for each, and the run module calls them at the points of
 * a run's life below, in registration order. Subscribers call back only through the
 * public functions of this header.
 *
 * A run's life and the hooks called on the way:
 *
 *   runs_submit ─ spec parsed, a runtime admits it ─ ids, STATE/runs/<id>, spec.yaml
 *     claim(r, spec, c)       a pooled sandbox that fits the spec, if a subscriber
 *                             keeps some (below): the run takes its instance
 *     admitted(r, input)      may refuse (a policy that does not compile, a journal
 *                             that cannot be created): nothing of the run stays
 *     runtime prepare         image verified, network made (before the instance);
 *                             for a claim: runtime claim, the started sandbox taken
 *     [instance cgroup made with limits; for a claim: the sandbox's, made by the pool]
 *     prepared(r)             egress policy in the maps, telemetry registered, the
 *                             harness socket listening: all before the workload
 *     env(r, env)             what the workload's environment gets from each
 *     ready(r)                may refuse: the last point before the workload, to
 *                             wait for what a subscriber began earlier off the loop
 *                             and must be done first (run_started durable)
 *     runtime start           the workload runs; status running, run.json saved
 *     started(r)
 *   step_begun / step_ended   a journaled step (from the durable subscriber)
 *   event(r, ev)              a notable event (an egress deny) for whoever records it
 *   run_end / timeout / kill  SIGTERM to the instance, SIGKILL after the grace
 *   run_exited (runtime)      status decided; runtime teardown (may be on a worker)
 *     collect(r)              last counters, before the instance goes
 *     [instance cgroup removed]
 *     released(r)             map entries, DNS proxy, registrations: let go
 *     ended(r)                status final: journal, trace, followers, completion
 *     [run.json saved]
 *   free(r)                   per-run state of every subscriber (also after a failed
 *                             submit, where no ended was called)
 *
 * After a restart, runs_recover loads every run directory; for a run that was live:
 * the runtime re-watches its workload and adopted(r) rebuilds each subscriber's state
 * (a refusal stops the run with the reason); a workload that vanished without an exit
 * status is resumed in a fresh instance when a subscriber can_resume it (the journal),
 * through resumed(r) in place of admitted, then the start above. recovered() runs once
 * after all runs are back, so each subscriber reclaims what no live run owns.
 *
 * A run a control plane gave this node holds a lease: the control plane's id of the
 * run (its ref) and the lease's fencing epoch. A run whose lease this node lost is
 * fenced: its workload is killed at once and it ends failed, and nobody may report
 * its end as the run's (the control plane has given the run to another node). A run
 * that began on another node starts here from the directory it left (its journal,
 * fetched from the replicated store) and is resumed, not admitted: same run id, so
 * the same idempotency keys and trace.
 *
 * Invariant: a run whose status is not final owns its cgroup and whatever subscribers
 * keep for its instance; a final run owns none of them. The run directory
 * (STATE/runs/<id>) is the record: run.json, spec.yaml, and the subscribers' files. */
#ifndef LANTERN_RUN_H
#define LANTERN_RUN_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "lantern/cgroup.h"
#include "lantern/loop.h"
#include "lantern/spec.h"
#include "lantern/util.h"

enum run_status {
	RUN_ACCEPTED,
	RUN_RUNNING,
	RUN_SUCCEEDED,
	RUN_FAILED,
	RUN_TIMED_OUT,
	RUN_CANCELLED,
	RUN_OOM_KILLED,
	RUN_BUDGET_EXCEEDED,     /* limits.max_steps/max_tokens/max_cost_usd or the loop guard */
};
#define RUN_N_STATUS (RUN_BUDGET_EXCEEDED + 1)

const char *run_status_name(enum run_status s);
/* The status a name stands for, or -1. */
int run_status_from_name(const char *n);
bool run_status_final(enum run_status s);

struct run;
struct runs;                 /* every run this lanternd knows */
struct run_env;              /* a workload's environment being built (below) */
struct runtimes;             /* runtime.h */
struct runtime_sandbox;      /* runtime.h */
struct run_prefetch;         /* a subscriber's, read before a start (run_submit) */

/* ---- pooled sandboxes (docs/pools.md) ----
 * A subscriber that keeps sandboxes started and waiting (the pool module) answers the
 * claim hook, before admitted: 0 when it hands r a sandbox that fits spec (c filled),
 * -ENOENT when it has none. The run then takes the sandbox's instance (its id, its
 * cgroup, its directory, renamed to the run's) instead of making its own; its
 * runtime's claim op takes the started sandbox in place of prepare, and its start
 * tells the sandbox's waiter to exec the workload. Every hook runs as for a cold start,
 * in the same order. done(arg, c, why) is called once the claim is settled: why NULL
 * when the run has started (the runtime took the sandbox), else the reason it failed,
 * after the run undid its own part; the pool then removes whatever is left of the
 * sandbox, and runs_submit starts the spawn again cold, logging the reason and keeping
 * it in the new run's record. */
struct run_claim {
	char pool[64];
	char instance_id[32];
	char dir[PATH_MAX];            /* the sandbox's directory, renamed to STATE/runs/<id> */
	int64_t ready_ns;              /* CLOCK_REALTIME when it was ready (its wait is not billed) */
	struct runtime_sandbox *sandbox;
	int waiter_fd;                 /* taken (set to -1) by the runtime's claim op */
	int harness_fd;                /* the harness socket, bound and listening in the
					* sandbox's harness/ since its making, or -1; taken
					* by the durable subscriber (run_take_harness_fd) */
	void (*done)(void *arg, struct run_claim *c, const char *why);
	void *arg;
};

/* A pooled sandbox whose runtime is starting it (its pod's containers bind then, before
 * any run has its instance: run_bind asks the pooled hook). Pooled pods live in one
 * tenant-neutral namespace; a claim does not move them (a pod's metadata is fixed). */
#define RUN_POOL_NAMESPACE "lantern-pool"
struct run_pooled {
	const char *pool;
	const struct spec *spec;       /* the pool's shape: its class, network, limits */
	const struct runtime_ops *ops; /* the runtime starting it */
	void *rt;
	const struct cgroup_inst *cg;  /* its instance cgroup, made by the pool */
};

/* How a workload ended, as its runtime saw it. */
struct run_exit {
	bool recorded;           /* false: its supervisor ended without recording a status */
	int exit_code;
	int signal;              /* killed by this signal, else 0 */
	bool oom_killed;         /* the runtime itself says so (a container runtime's OOMKilled) */
	bool runtime_status;     /* the status is an OCI runtime's own: with an OOM kill in the
				  * instance, any failure stands for the kill */
	char error[256];         /* it could not be started: why */
};

/* A journaled step that ended. */
struct harness_usage;
struct run_step {
	const char *id;
	const char *kind;        /* "llm", "tool", "other" */
	uint32_t attempt;
	const struct harness_usage *usage; /* llm steps: what the workload reported, or NULL */
	const char *tool;        /* tool steps: its name, or "" */
	const char *error;       /* NULL when it completed */
};

struct run_hooks {
	const char *name;
	int (*claim)(void *arg, struct run *r, const struct spec *s, struct run_claim *c);
	/* A container asks to bind to instance inst, which no run has: 0 when inst is a
	 * sandbox of this subscriber's whose runtime is starting it now (p filled), else
	 * -ENOENT. Nothing else may bind to an instance without a run. */
	int (*pooled)(void *arg, const char *inst, struct run_pooled *p);
	int (*admitted)(void *arg, struct run *r, json_t *input, struct lerr *e);
	int (*resumed)(void *arg, struct run *r, struct lerr *e);
	int (*prepared)(void *arg, struct run *r, struct lerr *e);
	void (*env)(void *arg, struct run *r, struct run_env *env);
	int (*ready)(void *arg, struct run *r, struct lerr *e);
	void (*started)(void *arg, struct run *r);
	void (*step_begun)(void *arg, struct run *r, const char *step_id);
	void (*step_ended)(void *arg, struct run *r, const struct run_step *s);
	void (*event)(void *arg, struct run *r, json_t *ev);
	void (*collect)(void *arg, struct run *r);
	void (*released)(void *arg, struct run *r);
	void (*ended)(void *arg, struct run *r);
	int (*adopted)(void *arg, struct run *r, struct lerr *e);
	bool (*can_resume)(void *arg, struct run *r);
	void (*recovered)(void *arg, struct runs *t);
	/* A run directory STATE/runs/<id> with no run.json (lanternd died between the
	 * run's admission and its record; nothing loads it): true when it holds what must
	 * not be lost, and it is then kept (and logged); else it is removed. */
	bool (*keeps_dir)(void *arg, const char *id, const char *dir);
	/* Fields of its own in the run's record (run.json, lantern ps). */
	void (*json)(void *arg, const struct run *r, json_t *j);
	void (*free)(void *arg, struct run *r);
};

struct runs_opts {
	struct loop *loop;
	const char *state_dir;           /* runs live in STATE/runs/<id> */
	const struct cgroup_node *cg;    /* the node's subtree; one instance cgroup per run */
	struct runtimes *runtimes;
	const char *tenant;              /* the tenant of runs submitted here (standalone) */
	uint64_t pids_max;               /* pids cap per instance */
	uint32_t grace_ms;               /* SIGTERM to SIGKILL on timeout and kill */
	const char *region;              /* this node's region (spec.preferred_regions), or NULL */
};

int runs_open(const struct runs_opts *o, struct runs **out, struct lerr *e);
/* Frees the table; running workloads and their instances stay (the next lanternd adopts). */
void runs_close(struct runs *t);
/* Registers a subscriber; returns its slot (for run_slot), or -ENOSPC. */
int runs_subscribe(struct runs *t, const struct run_hooks *h, void *arg);
struct loop *runs_loop(const struct runs *t);
const struct cgroup_node *runs_cgroup_node(const struct runs *t);

/* Admits and starts a run from its spec (YAML or JSON) named file. On error returns
 * -errno with the reason (every spec error, one per line); nothing of the run is left. */
int runs_submit(struct runs *t, const char *file, const char *yaml, size_t len, json_t *input,
		struct run **out, struct lerr *e);
/* The same with everything a control plane adds. */
struct run_submit {
	const char *file;                /* the spec's name as submitted */
	const char *yaml;                /* the spec (YAML or JSON) */
	size_t len;
	json_t *input;
	const char *ref;                 /* the control plane's id of the run (NULL: standalone) */
	int64_t epoch;                   /* its lease's fencing epoch (0: no lease) */
	const char *id;                  /* with seed_dir: the run's id where it began */
	const char *seed_dir;            /* becomes the run's directory (same filesystem) and
					  * the run is resumed from what it holds */
	struct run_prefetch *prefetch; /* what a subscriber read asynchronously before
					  * the start (identity's k8s:// secrets, identity.h),
					  * or NULL: its admitted or resumed hook takes it */
};
int runs_start(struct runs *t, const struct run_submit *s, struct run **out, struct lerr *e);
/* Forgets a final run and removes its directory (a fenced run this node is given back:
 * what it left is superseded by the store's copy). */
void runs_forget(struct runs *t, struct run *r);
/* Loads the runs of STATE/runs, adopts or resumes the live ones, reclaims instance
 * cgroups no run owns, then calls every recovered hook. A resume whose spec needs a
 * prefetch (below) goes on when it is read. */
void runs_recover(struct runs *t);
/* What reads, before a run resumed after a restart starts again, what its hooks take
 * from the submit's prefetch on any other start (identity_prefetch, identity.h:
 * k8s:// secrets): start returns 0 when there is nothing to read, 1 when done(ctx, pf)
 * will run on the loop (never from within); free lets pf go (done then never runs).
 * Until then the run waits with its status unchanged; a kill meanwhile ends it. */
struct run_prefetcher {
	int (*start)(void *arg, const char *file, const char *yaml, size_t len,
		     void (*done)(void *ctx, struct run_prefetch *pf), void *ctx, struct run_prefetch **out);
	void (*free)(void *arg, struct run_prefetch *pf);
};
void runs_set_prefetcher(struct runs *t, const struct run_prefetcher *p, void *arg);

struct run *runs_find(const struct runs *t, const char *id);
/* The live run whose instance cgroup has this v2 id, or NULL. */
struct run *runs_by_cgid(const struct runs *t, uint64_t cgid);
/* The live run whose instance id is inst, or NULL. */
struct run *runs_by_instance(const struct runs *t, const char *inst);
/* Newest first. */
struct run *runs_first(const struct runs *t);
struct run *run_next(const struct run *r);
unsigned runs_count(const struct runs *t, enum run_status s);
unsigned runs_live(const struct runs *t);

/* A run, read-only for subscribers. */
const char *run_id(const struct run *r);
const char *run_instance_id(const struct run *r);
const char *run_dir(const struct run *r);          /* STATE/runs/<id> */
const char *run_file(const struct run *r);         /* the spec's name as submitted */
const char *run_tenant(const struct run *r);
const struct spec *run_spec(const struct run *r);  /* NULL if its spec was unreadable */
const struct cgroup_inst *run_cgroup(const struct run *r);
uint64_t run_cgid(const struct run *r);
enum run_status run_status(const struct run *r);
const char *run_reason(const struct run *r);
int run_exit_code(const struct run *r);
uint64_t run_oom_kills(const struct run *r);
int64_t run_created(const struct run *r);          /* unix seconds */
int64_t run_finished(const struct run *r);
/* True once run_end (or a timeout or kill) decided how it ends. */
bool run_ending(const struct run *r);
const char *run_ref(const struct run *r);          /* "" when standalone */
int64_t run_epoch(const struct run *r);
bool run_fenced(const struct run *r);
struct runs *run_table(const struct run *r);
/* The run's record: id, instance, name, status, reason, exit code, times, cgroup,
 * OOM kills, and every subscriber's fields. A new reference. */
json_t *run_json(const struct run *r);

void *run_slot(const struct run *r, int slot);
void run_set_slot(struct run *r, int slot, void *v);
/* The runtime's own state of this run. */
void *run_runtime_state(const struct run *r);
void run_set_runtime_state(struct run *r, void *v);
/* The instance's network as its runtime made it in prepare, before the prepared
 * hooks: own_netns when it cannot reach the node's loopback, and then the IPv4 address
 * its DNS goes to instead (the node bridge's gateway, network order; 0 = none), where
 * the egress subscriber's DNS proxy listens too. */
void run_set_network(struct run *r, bool own_netns, uint32_t dns_ip4);
bool run_own_netns(const struct run *r);
uint32_t run_dns_ip4(const struct run *r);
/* The pool whose sandbox the run took, or NULL for a cold start; how long that sandbox
 * had been waiting when it was claimed (never billed to the run). */
const char *run_pool(const struct run *r);
int64_t run_pool_waited_ms(const struct run *r);
/* A claimed run's harness socket, bound when its sandbox was made (struct run_claim):
 * the caller owns it from now on. -1 for a cold start, or when already taken. */
int run_take_harness_fd(struct run *r);
/* A cold start after a claim that failed: the reason, else NULL. */
const char *run_pool_fallback(const struct run *r);
/* The submit's prefetch while the admitted and resumed hooks run (they may take what
 * it holds), else NULL. */
struct run_prefetch *run_prefetch(const struct run *r);

/* Ends a live run as `as` with a reason: SIGTERM to the instance, SIGKILL after the
 * grace. Nothing if it is ending already or final. */
void run_end(struct run *r, enum run_status as, const char *why);
/* This node lost the run's lease: the workload is killed now (no grace: it has no
 * right to go on), the run ends failed with why, and is marked fenced. */
void run_fence(struct run *r, const char *why);
/* `lantern kill`: cancelled; -EALREADY (with the reason) if it has ended. */
int run_cancel(struct run *r, struct lerr *e);
/* From the durable subscriber: a step began or ended (telemetry, the meter listen). */
void run_step_begun(struct run *r, const char *step_id);
void run_step_ended(struct run *r, const struct run_step *s);
/* A notable event of the run (an egress deny as a JSON object); consumed. */
void run_event(struct run *r, json_t *ev);

/* ---- containers another program starts (bind.c) ----
 * On the CRI and Kubernetes paths containerd, not lanternd, starts the workload's
 * containers; the runtime handler it execs (lantern-oci) asks lanternd to bind each
 * container to its run before the real OCI runtime runs, and the container may run only
 * if the bind succeeds. A container binds to a run when:
 *   - its cgroupsPath is "/<cgroup-root>/<instance>/<leaf>": inside the instance cgroup
 *     lanternd made with limits and whose id is in the programs' maps, so the container
 *     is judged as the instance from its first instruction (the programs look its cgroup
 *     up by its ancestor at the instance level) and held by the instance's limits (they
 *     are hierarchical). The runtime makes only the leaf; nothing is registered after
 *     the fact, so nothing can race the workload's first instruction. A cgroupsPath
 *     chosen by someone else (the kubelet's pod cgroup) is not refused for that: the run
 *     is then the one lantern.dev/agent-instance-id names, and the answer's
 *     "cgroups_path" moves the container to "/<cgroup-root>/<instance>/<container-id>",
 *     where the handler puts it before the runtime reads the bundle;
 *   - that instance is a live run's that has started and is not ending;
 *   - its annotations name that run (lantern.dev/run-id, lantern.dev/agent-instance-id),
 *     its pod is in the run's tenant namespace (lantern-t-<tenant>), and the handler it
 *     came through serves the run's isolation class;
 *   - the run's runtime accepts it (its bind op: the pod it made, at most the
 *     containers it asked for); a runtime without a bind op refuses every container.
 * A container of a pooled pod binds to its sandbox's instance, which no run has yet,
 * with the same strictness: its cgroup inside that instance, the instance a sandbox the
 * pool is starting now (the pooled hook), its annotations naming the instance and no
 * run, its pod in RUN_POOL_NAMESPACE, the handler serving the pool's class, and the
 * runtime's sandbox_bind accepting it (the pod it made for the sandbox, one sandbox and
 * one workload container).
 * The answer says what to exec: the OCI runtime of the run's class with its flags, and
 * on a hybrid host the instance directories to join first (see lantern-oci). */
struct run_bind_req {
	const char *container_id;
	const char *cgroups_path;       /* config.json linux.cgroupsPath */
	const char *handler_class;      /* "trusted" for the handler lantern-trusted */
	bool sandbox;                   /* io.kubernetes.cri.container-type "sandbox" */
	const char *sandbox_id;         /* io.kubernetes.cri.sandbox-id */
	const char *pod_namespace;      /* io.kubernetes.cri.sandbox-namespace */
	const char *pod_name;           /* io.kubernetes.cri.sandbox-name */
	const char *pod_uid;            /* io.kubernetes.cri.sandbox-uid */
	const char *run_id;             /* lantern.dev/run-id */
	const char *instance_id;        /* lantern.dev/agent-instance-id */
	json_t *process;                /* a pooled pod's workload: containerd's process (args, env,
					 * cwd), sent by lantern-oci when the pod is annotated
					 * lantern.dev/pool; else NULL */
};
/* Binds or refuses (-EPERM, the reason naming container and run); on success *answer
 * (a new reference) holds "run_id", "instance_id", "runtime" (the binary), "args" (its
 * global flags), "join" (directories, maybe empty), what the runtime's bind op adds,
 * and "cgroups_path" when the container must move into the instance. */
int run_bind(struct runs *t, const struct run_bind_req *b, json_t **answer, struct lerr *e);
/* The namespace of a tenant's pods: lantern-t-<tenant>. */
void run_pod_namespace(const struct run *r, char *out, size_t len);

/* Test crash points only: SIGKILL every live workload and its supervisor, as a node
 * going down would. */
void runs_kill_all(struct runs *t);

/* From the runtime: the workload ended (call once, on the loop). */
void run_exited(struct run *r, const struct run_exit *x);

/* ---- the workload's environment ----
 * Built once per start for every runtime: LANTERN_RUN_ID, LANTERN_INSTANCE_ID, then
 * what each subscriber's env hook adds. spec.env is not in it: each runtime merges it
 * (the OCI image's own environment comes first there). A value may be a path in a host
 * directory the workload needs (the harness socket): runtimes with their own root
 * mount that directory at a fixed place in the sandbox and pass the sandbox path;
 * runtimes sharing the host's files pass the host path. */
struct run_env_mount {
	char host[PATH_MAX];     /* a directory on the node */
	char sandbox[128];       /* where a sandbox sees it: /run/lantern/... */
	bool read_only;
};

void run_env_set(struct run_env *env, const char *name, const char *value);
/* name = DIR/file, DIR being host_dir on the host or sandbox_dir in a sandbox (DIR
 * itself when file is ""). */
void run_env_set_path(struct run_env *env, const char *name, const char *host_dir,
		      const char *sandbox_dir, const char *file, bool read_only);
/* Only for runtimes that share the host's files (a host path, such as the CLI). */
void run_env_set_host(struct run_env *env, const char *name, const char *value);
/* For runtimes: "NAME=VALUE" strings, NULL-terminated, for a sandbox (own root) or the
 * host; valid while env lives. */
char *const *run_env_strings(struct run_env *env, bool sandbox);
size_t run_env_mounts(const struct run_env *env, const struct run_env_mount **out);

#endif
