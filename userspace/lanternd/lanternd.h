/* lanternd.h: the daemon: one handle per module, opened and wired by main.c; ops.c
 * answers the local API's operations with them. */
#ifndef LANTERND_H
#define LANTERND_H

#include "flags.h"
#include "lantern/api.h"
#include "lantern/cgroup.h"
#include "lantern/cplane.h"
#include "lantern/durable.h"
#include "lantern/edge.h"
#include "lantern/egress.h"
#include "lantern/identity.h"
#include "lantern/logs.h"
#include "lantern/loop.h"
#include "lantern/meter.h"
#include "lantern/metrics.h"
#include "lantern/run.h"
#include "lantern/runtime.h"
#include "lantern/telemetry.h"

struct daemon {
	struct lanternd_config cfg;
	struct loop *loop;
	struct edge *edge;          /* lantern-wire, NULL with --no-privsep */
	struct cgroup_node cg;
	struct runtimes *runtimes;
	struct runtime_oci *oci;
	struct runtime_kube *kube;        /* --kubernetes */
	char node_name[256];
	struct runs *runs;
	struct egress *egress;
	struct telemetry *telemetry;
	struct meter *meter;
	struct identity *identity;
	struct durable *durable;
	struct logs *logs;
	struct cplane *cplane;
	struct metrics *metrics;
	struct api *api;
	bool draining;                    /* SIGTERM: stopping, no new runs */
	uint64_t drain_deadline_ms;       /* monotonic: exit by then, told or not */
};

/* ops.c: registers every operation of the local API. */
int ops_register(struct daemon *d, struct lerr *e);
/* Runs by status (Prometheus). */
void ops_metrics(void *d, struct metrics_out *o);
/* GET /healthz: answered at all means the event loop turns. */
unsigned ops_healthz(void *d, char **body, const char **type);
/* GET /readyz: programs pinned, the socket serving, the runtime reachable, the
 * control plane answering (when one is configured), not draining; 503 says which not. */
unsigned ops_readyz(void *d, char **body, const char **type);

#endif
