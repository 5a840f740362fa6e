/* lanternd.h: the daemon's own state, shared by its files: main.c (flags, wiring),
 * api.c (the local socket), run.c (a run's life: admission to teardown, adoption),
 * egress.c (kernel events, DNS decisions, the event log). */
#ifndef LANTERND_H
#define LANTERND_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "lantern/cgroup.h"
#include "lantern/dns.h"
#include "lantern/lbpf.h"
#include "lantern/loop.h"
#include "lantern/policy.h"
#include "lantern/spec.h"
#include "telemetry.h"

struct daemon_opts {
	const char *state_dir;
	const char *socket;
	const char *bpffs;
	const char *cgroup_root;
	const char *dns_upstream;
	const char *shim;           /* lantern-shim, default beside lanternd */
	bool process_runtime;
	bool egress_audit;          /* node-wide audit mode */
	uint64_t pids_max;          /* node default pids cap per instance */
	uint32_t dns_ttl_floor;     /* seconds a DNS-learned address stays allowed at least */
	uint32_t grace_ms;          /* SIGTERM to SIGKILL on timeout and kill */
	const char *prices_file;    /* --prices: USD per million tokens by model (durable.c) */
	uint64_t journal_max_bytes; /* per-run journal bound; 0 = the journal's default */
	uint32_t loop_threshold;    /* proceeds allowed per input digest; 0 = off */
	const char *control_plane;  /* HOST:PORT of a control plane (cplane.c), or NULL */
	const char *tenant;
	const char *bootstrap_token_file;
	const char *cp_ca;          /* CA to check the control plane's certificate */
	bool cp_insecure;           /* plaintext to the control plane, explicitly */
	int max_runs;               /* runs at once told to the control plane */
	int cp_backoff_max_ms;      /* reconnect backoff ceiling */
	const char *runtime_handlers[8]; /* --runtime-handler CLASS=HANDLER (ocirun.c) */
	int n_runtime_handlers;
	const char *net_bridge;     /* CNI bridge for allowlist_domain/open spawns */
	const char *net_subnet;     /* its address range */
	bool net_default_route;     /* spawns route everything via the bridge (NAT) */
	uint64_t log_max;           /* per-run output cap in bytes */
};

enum run_status {
	RUN_ACCEPTED,
	RUN_RUNNING,
	RUN_SUCCEEDED,
	RUN_FAILED,
	RUN_TIMED_OUT,
	RUN_CANCELLED,
	RUN_OOM_KILLED,
	RUN_BUDGET_EXCEEDED,        /* limits.max_steps/max_tokens/max_cost_usd or the loop guard */
};

struct run_tm;
struct client;
struct durable;
struct cplane;
struct durable_node;

/* A follower: a client receiving a run's output and its end. */
struct follower {
	struct client *c;
	off_t off[2];               /* bytes of stdout, stderr already sent */
	struct follower *next;
};

struct daemon;

struct run {
	struct daemon *d;
	char id[32];                /* r-<12 hex> */
	char instance_id[32];       /* i-<12 hex> */
	char dir[PATH_MAX];         /* STATE/runs/<id> */
	char *file;                 /* the spec's file name, as submitted */
	struct spec *spec;
	struct policy *policy;
	struct cgroup_inst cg;
	bool cg_made;
	bool in_maps;
	struct dns_server *dns;
	enum run_status status;
	char reason[512];
	int exit_code;
	pid_t shim_pid;
	int pidfd;
	int wd[2];                  /* inotify watches on stdout, stderr */
	uint64_t timeout_timer;
	uint64_t kill_timer;
	enum run_status ending;     /* set by timeout or kill before the end */
	bool ending_set;
	int64_t created, finished;  /* unix seconds */
	uint64_t dns_denied;
	struct follower *followers;
	struct run_tm *tm;          /* trace, counters, cost (telemetry.c), NULL until used */
	struct durable *dur;        /* journal + harness socket (durable.c), NULL if none */
	struct ocirun *oci;         /* OCI handler state (ocirun.c), NULL for the process runtime */
	struct run *next;
};

struct daemon {
	struct daemon_opts o;
	struct loop *loop;
	struct cgroup_node cg;
	struct lbpf *bpf;
	struct dns_upstream upstream;
	bool have_upstream;
	int inotify;
	struct run *runs;
	uint64_t egress_denied, egress_audited;
	char runs_dir[PATH_MAX];
	struct durable_node *dur;   /* journal syncer, prices (durable.c) */
	struct cplane *cplane;      /* the control-plane link (cplane.c), NULL if standalone */
};

/* run.c */
const char *run_status_name(enum run_status s);
bool run_status_final(enum run_status s);
struct run *run_find(struct daemon *d, const char *id);
/* Admits and starts a run from YAML. On error returns -errno and a reason; nothing
 * of the run is left behind. */
int run_submit(struct daemon *d, const char *file, const char *yaml, size_t len, json_t *input,
	       struct run **out, struct lerr *e);
int run_cancel(struct daemon *d, struct run *r, struct lerr *e);
/* Replaces a running instance's egress policy from a new spec's network section. */
int run_egress_update(struct daemon *d, struct run *r, const char *file, const char *yaml,
		      size_t len, struct lerr *e);
/* Reconciles what a previous lanternd left: adopts live runs, finishes dead ones,
 * reclaims cgroups and map entries no run owns. */
void run_recover(struct daemon *d);
void run_inotify_event(struct daemon *d);
json_t *run_json(const struct run *r);
void run_follow(struct run *r, struct client *c);
void run_unfollow_client(struct daemon *d, struct client *c);
/* Ends a running run as `as` with a reason (SIGTERM, SIGKILL after the grace). */
void run_end(struct daemon *d, struct run *r, enum run_status as, const char *why);

/* api.c */
int api_open(struct daemon *d, struct lerr *e);
/* Sends one JSON message (consumes the reference). */
void api_send(struct client *c, json_t *msg);
/* Sends raw output of a run. */
void api_send_output(struct client *c, int fd, const char *buf, size_t len);
/* Closes the client after what is queued has been written. */
void api_finish(struct client *c);

/* durable.c: journals, the harness API, budgets, resume */
int durable_init(struct daemon *d, struct lerr *e);
/* Creates the run's journal with its run_started record (durable on return). */
int durable_begin(struct daemon *d, struct run *r, json_t *input, struct lerr *e);
/* Opens the run's harness socket (before the workload starts). */
int durable_listen(struct daemon *d, struct run *r, struct lerr *e);
/* Adds LANTERN_HARNESS_SOCKET and LANTERN_CLI to env; returns how many (at most 2). */
int durable_env(const struct run *r, char **env);
/* True if r's workload died with the previous lanternd (shim gone, no exit recorded)
 * and r has a journal to resume from. */
bool durable_wants_resume(struct daemon *d, struct run *r);
/* Replays r's journal for a restart in a fresh instance (r->instance_id is the new
 * one); refuses, with the reason, what must not be restarted. */
int durable_resume(struct daemon *d, struct run *r, struct lerr *e);
/* Replays r's journal for a workload that survived, and reopens its socket. */
int durable_adopt(struct daemon *d, struct run *r, struct lerr *e);
/* Records how r ended (run_completed, durable) and closes journal and socket. */
void durable_finish(struct daemon *d, struct run *r);
/* Drops r's durable state without recording anything (a submit that failed). */
void durable_discard(struct run *r);
json_t *durable_journal_json(struct daemon *d, struct run *r);

/* ocirun.c: OCI runtime handlers, images, the node's classes */
struct spawn_req;
int ocirun_init(struct daemon *d, struct lerr *e);
/* Refuses what no advertised handler can run, naming class, handler and what is missing. */
int ocirun_admit(struct daemon *d, const struct spec *s, struct lerr *e);
/* Resolves and verifies the image (before the instance exists); sets r->oci. */
int ocirun_prepare(struct daemon *d, struct run *r, struct lerr *e);
/* Network namespace, bundle, and the runtime's command line in req (instance ready). */
int ocirun_start(struct daemon *d, struct run *r, struct spawn_req *req, struct lerr *e);
/* Picks up oci.json for a run a previous lanternd started. */
void ocirun_adopt(struct run *r);
/* Container, network namespace, bundle; before the cgroup goes. */
void ocirun_teardown(struct daemon *d, struct run *r);
/* The same on a worker thread; cont(r) runs on the loop after it. False if there is
 * nothing to tear down (or no worker): the caller goes on at once. */
bool ocirun_teardown_async(struct daemon *d, struct run *r, void (*cont)(struct run *r));
/* Finishes queued teardowns and stops the workers (lanternd's exit). */
void ocirun_close(struct daemon *d);
void ocirun_free(struct run *r);
/* Containers and namespaces no live run owns (after adoption). */
void ocirun_reclaim(struct daemon *d);
void ocirun_json(const struct run *r, json_t *j);
/* image_import, image_ls, image_rm, node; false if op is not one of them. */
bool ocirun_api(struct daemon *d, struct client *c, const char *op, json_t *req);

/* logs.c: `lantern logs` */
void logs_request(struct daemon *d, struct client *c, struct run *r, json_t *req);
void logs_unfollow_client(struct daemon *d, struct client *c);

/* cplane.c: runs from a control plane through the tunnel; no-op without one */
int cplane_open(struct daemon *d, struct lerr *e);
void cplane_close(struct daemon *d);
/* Reports r's end to the control plane if r came from it. */
void cplane_run_ended(struct daemon *d, struct run *r);

/* egress.c */
int egress_start(struct daemon *d, struct lerr *e);
extern const struct dns_callbacks egress_dns_callbacks;
/* Writes a JSON line to lanternd's log and, if r, to the run's egress.jsonl. */
void egress_log(struct daemon *d, struct run *r, json_t *ev);
/* The run's audit view: policy in agent.yaml terms, kernel entries, counters. */
json_t *egress_audit_json(struct daemon *d, struct run *r);

#endif
