/* cplane.h: lanternd under a control plane (--control-plane), a run subscriber. The
 * tunnel module's thread speaks gRPC; this is its other half on the event loop:
 * assignments become runs through the same runs_submit as `lantern run`, cancels
 * become run_cancel, a run's end becomes a completion (with its metered cost and
 * tokens and the run's signed receipt), and drain orders stop new assignments while
 * in-flight runs finish. It is identity's signer: the control plane signs the identity
 * tokens of the runs it assigned (the node key signs those of local runs). */
#ifndef LANTERN_CPLANE_H
#define LANTERN_CPLANE_H

#include <stdbool.h>

#include "lantern/loop.h"
#include "lantern/rpc.h"
#include "lantern/run.h"
#include "lantern/util.h"

struct cplane;
struct identity;
struct meter;
struct runtimes;

struct cplane_opts {
	const char *target;              /* HOST:PORT of the control plane */
	const char *tenant;
	const char *bootstrap_token_file;
	struct rpc_tls tls;
	const char *state_dir;           /* STATE: the session and run links live in STATE/tunnel */
	int max_runs;                    /* runs at once taken from the control plane */
	int backoff_max_ms;
	const char *region;              /* told at Register */
};

/* Starts the tunnel; the classes advertised are what the runtimes admit. */
int cplane_open(struct loop *l, const struct cplane_opts *o, struct runs *t,
		const struct runtimes *rs, struct meter *m, struct identity *id, struct cplane **out,
		struct lerr *e);
void cplane_close(struct cplane *c);
/* lanternd is stopping (SIGTERM, a rollout): no new runs are taken, and the control
 * plane is told the node is draining. */
void cplane_drain(struct cplane *c);
/* True once the control plane knows (or it cannot be told: no session). */
bool cplane_drain_told(struct cplane *c);
/* True while the control plane answers this node's heartbeats; else why not. */
bool cplane_registered(struct cplane *c, char *why, size_t len);

#endif
