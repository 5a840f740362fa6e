/* pool.h: sandboxes kept started and waiting for runs (lanternd --pools FILE,
 * docs/pools.md).
 *
 * Each pool of the node's pools file keeps between size.min and size.max sandboxes of
 * one shape (image digest, isolation class, network kind, limits) ready. A sandbox is
 * a full instance made before any run has it: its instance cgroup with the pool's
 * limits, registered in the egress maps with network none (it reaches nothing), its
 * identity tmpfs mounted empty, its directory (STATE/pool/<instance>, with the harness
 * socket's directory), and a container started by its runtime whose first process is
 * lantern-waiter, which does nothing until it is told what to exec.
 *
 * A spawn whose spec fits a pool claims one of its ready sandboxes (the run module's
 * claim hook, run.h): the run takes the sandbox's instance and every subscriber does
 * for it what it does for a cold start (policy, journal, identity, telemetry, harness
 * socket), then the waiter execs the workload. A sandbox is used once; it goes with
 * its run. A sandbox whose waiter or supervisor died is torn down, never handed out; a
 * claim that fails is torn down and the spawn starts cold (run.c).
 *
 * Refills run on the pool's worker threads (cgroups, the runtime's start, teardown);
 * the loop only registers the instance (a map entry, a mount, a socket) and watches
 * the waiter. They stop when the node's sandboxes and live runs reach max_total, and
 * ready sandboxes are given back while memory is short (MemAvailable under the floor,
 * or memory pressure stalls of 10% and more over 10 s). A pool's target grows by one,
 * up to size.max, with each claim that found it empty, and shrinks by one, down to
 * size.min, after a minute without one.
 *
 * lanternd refuses to start when a pool is declared for specs no runtime here admits,
 * or whose runtime cannot keep sandboxes. Under the CRI and Kubernetes runtimes a
 * sandbox is a pod in the namespace lantern-pool, whose containers bind to its instance
 * while the pool is starting it (the pooled hook, run.h). After a restart, the sandboxes a previous
 * lanternd left are never adopted: their waiters lost their lanternd and exited, and
 * what is left of them is reclaimed (runs_recover, then pool_start). */
#ifndef LANTERN_POOL_H
#define LANTERN_POOL_H

#include <jansson.h>
#include <stdint.h>

#include "lantern/cgroup.h"
#include "lantern/loop.h"
#include "lantern/run.h"
#include "lantern/spec.h"
#include "lantern/util.h"

struct pool;
struct runtimes;
struct egress;
struct identity;
struct metrics_out;

struct pool_opts {
	const struct spec_pools *decl;   /* the pools file, parsed (its entries are copied) */
	const char *state_dir;           /* sandboxes live in STATE/pool/<instance> */
	const struct cgroup_node *cg;
	uint64_t pids_max;               /* as for runs */
	struct runtimes *runtimes;
	struct egress *egress;
	struct identity *identity;
	const char *waiter;              /* lantern-waiter on the node */
	uint64_t max_total;              /* sandboxes and live runs at once, at most */
	uint64_t mem_floor;              /* MemAvailable under it is pressure; 0: MemTotal / 10 */
};

/* Checks every declared pool against the runtimes (fail closed: a refusal names
 * FILE:LINE, the pool and why) and makes the pool workers. Nothing starts yet. */
int pool_open(struct loop *l, const struct pool_opts *o, struct pool **out, struct lerr *e);
/* Registers the claim hook. */
int pool_subscribe(struct pool *p, struct runs *t, struct lerr *e);
/* After runs_recover: removes what a previous lanternd's pools left, then fills. */
void pool_start(struct pool *p);
/* Tears down every sandbox no run took (lanternd's exit) and frees p. */
void pool_close(struct pool *p);
/* `lantern pools`: each pool's shape, size, target, ready, claims per minute, refill
 * time, and why it is not filling when it is not. A new reference. */
json_t *pool_json(struct pool *p);
/* Prometheus: ready sandboxes, claims, misses, failed claims, dead waiters per pool. */
void pool_metrics(void *p, struct metrics_out *o);

#endif
