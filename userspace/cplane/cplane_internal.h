/* cplane_internal.h: the control-plane link's state, shared by its files: cplane.c
 * (assignments, the run's end, the tunnel's events), lease.c (leases and self-fencing), resume.c
 * (runs continued from the journal store) and capacity.c (what this node can still
 * take), link.c (the control-plane runs linked to local ones) and report.c (what the
 * node tells the control plane of a run). Nothing outside userspace/cplane/ includes
 * this. */
#ifndef LANTERN_CPLANE_INTERNAL_H
#define LANTERN_CPLANE_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "lantern/cplane.h"
#include "lantern/spec.h"
#include "lantern/tunnel.h"

/* A control-plane run this node took, linked to its local run (STATE/tunnel/runs/). */
struct link {
	char cp_id[64];
	char local[32];
	int64_t epoch;
	int64_t start_ms;           /* unix ms the assignment was taken (duration_ms counts from it) */
	int ttl_ms;                 /* its lease's TTL; 0: no lease (it is never fenced by time) */
	int64_t lease_until;        /* monotonic ms this node holds the lease to, by its own count */
	struct link *next;
};

struct claim;                       /* resume.c: an assignment waiting on the store */
struct start;                       /* start.c: an assignment waiting for its secrets */

struct cplane {
	struct loop *loop;
	struct runs *runs;
	struct meter *meter;
	struct identity *id;
	struct tunnel *t;
	const struct tunnel_ev *assigning; /* the assignment a run start is admitting now */
	struct journal_store *store;
	struct workq *wq;               /* store claims: blocking calls off the loop */
	int efd;
	int max_runs;
	bool draining;                  /* the control plane's drain order */
	bool stopping;                  /* lanternd's own: it is exiting */
	char dir[PATH_MAX];             /* STATE/tunnel */
	char links_dir[PATH_MAX + 8];
	struct link *links;
	struct claim *claims;
	struct start *starts;           /* assignments waiting for their secrets (start.c) */
	int64_t total_cpu, total_memory, total_scratch; /* for runs; -1: not known */
	uint64_t load_timer, lease_timer;
};

/* link.c */
int64_t cplane_unix_ms(void);
struct link *link_by_cp(struct cplane *c, const char *id);
struct link *link_by_local(struct cplane *c, const char *id);
struct link *link_new(struct cplane *c, const char *cp_id, const char *local, int64_t epoch,
		      int64_t start_ms);
int link_save(struct cplane *c, const struct link *l);
void link_drop(struct cplane *c, const char *cp_id);
/* The links STATE/tunnel/runs/ holds, read at start. */
void links_load(struct cplane *c);

/* report.c */
enum tunnel_status cplane_dp_status(enum run_status s);
/* r's end, as its completion: status, reason, exit code, metered cost and tokens, receipt */
void cplane_complete_run(struct cplane *c, struct link *l, struct run *r, int64_t end_ms);
/* a run whose local record is gone: failed, saying so */
void cplane_complete_lost(struct cplane *c, struct link *l);
/* A run this node will not start. not_started: for now only (draining, full, the store
 * away), so the control plane may place it again; else the refusal is the run's end. */
void cplane_refuse(struct cplane *c, const char *cp_id, int64_t epoch, const char *why,
		   bool not_started);
/* Starts an assigned run (seed_dir: continued from its journal, as run id) with what
 * was read for it before (pf, or NULL); reports it accepted and running, or refuses it
 * with admission's reason. */
void cplane_start_now(struct cplane *c, const struct tunnel_ev *ev, int64_t taken_ms, const char *id,
		      const char *seed_dir, struct run_prefetch *pf);
/* The end a journal recorded (a run that ended on a node that then went away before
 * its completion reached the control plane): reported as the run's completion. */
void cplane_report_recorded(struct cplane *c, const struct tunnel_ev *ev, int64_t taken_ms,
			    const char *run_id, const char *payload);
void cplane_count_load(struct cplane *c);

/* lease.c */
void lease_start(struct cplane *c, struct link *l, int ttl_ms, int64_t recv_ms);
void lease_granted(struct cplane *c, const struct tunnel_ev *ev);
void lease_fence(struct cplane *c, struct link *l, struct run *r, const char *why);
void leases_load(struct cplane *c);
void leases_save(struct cplane *c);
void lease_timer(struct loop *lp, void *arg);

/* start.c */
/* cplane_start_now once the k8s:// secrets ev's spec names are read (identity_prefetch;
 * at once when it names none). True when the start took seed_dir (it is the start's to
 * remove from now on). */
bool cplane_start(struct cplane *c, const struct tunnel_ev *ev, int64_t taken_ms, const char *id,
		  const char *seed_dir);
/* A start of cp_id waits for its secrets. */
bool start_pending(struct cplane *c, const char *cp_id);
/* Starts still waiting are called off (lanternd stops). */
void start_close(struct cplane *c);

/* resume.c */
bool resume_pending(struct cplane *c, const char *cp_id);
/* Claims the run in the store for ev's epoch on a worker, then starts it: fresh when
 * the store has nothing of it, continued from its journal when it has. */
void resume_claim(struct cplane *c, const struct tunnel_ev *ev, int64_t taken_ms);
void resume_close(struct cplane *c);

/* capacity.c */
void capacity_init(struct cplane *c, const struct cplane_opts *o);
void capacity_now(struct cplane *c, struct tunnel_capacity *cap);
/* Whether a run with these limits fits now; else why not. */
bool capacity_fits(struct cplane *c, const struct spec_limits *l, char *why, size_t len);

#endif
