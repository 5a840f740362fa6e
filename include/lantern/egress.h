/* egress.h: lanternd's side of egress enforcement, a run subscriber. It opens (or
 * adopts) the pinned egress programs (lbpf), compiles each run's policy at admission
 * (a policy that does not compile refuses the run), puts it in the maps before the
 * workload exists, runs the instance's DNS proxy for hostname rules and answers its
 * questions from the policy, turns kernel verdict events and DNS refusals into JSON
 * lines (lanternd's log, the run's egress.jsonl) and run events, replaces a live
 * run's policy atomically, and builds the audit view in agent.yaml terms. */
#ifndef LANTERN_EGRESS_H
#define LANTERN_EGRESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "lantern/cgroup.h"
#include "lantern/loop.h"
#include "lantern/run.h"
#include "lantern/util.h"

struct egress_opts {
	const char *bpffs;               /* pin root */
	const struct cgroup_node *cg;    /* where the programs attach */
	bool audit_all;                  /* node-wide audit mode */
	const char *dns_upstream;        /* ADDR:PORT; NULL: /etc/resolv.conf */
	uint32_t dns_ttl_floor;          /* seconds a DNS-learned address stays allowed at least */
	/* where each instance's DNS proxy is served: NULL for lanternd's own process; the
	 * privilege-separated lantern-wire otherwise (edge.h) */
	const struct dns_proxy_ops *dns;
	void *dns_arg;
	uint32_t dns_learn_max;          /* DNS-learned addresses one instance holds at once; 0: 1024 */
};

struct egress;
struct lbpf;
struct dns_proxy_ops;

int egress_open(struct loop *l, const struct egress_opts *o, struct egress **out, struct lerr *e);
/* Closes fds; the pins (and so enforcement) stay. */
void egress_close(struct egress *eg);
int egress_subscribe(struct egress *eg, struct runs *t, struct lerr *e);
/* The egress programs' handle (the telemetry programs share some of their maps). */
struct lbpf *egress_bpf(const struct egress *eg);

/* `lantern egress update`: replaces a live run's policy from a spec's network section;
 * DNS-learned addresses still allowed by the new policy are kept. */
int egress_update(struct egress *eg, struct run *r, const char *file, const char *yaml, size_t len,
		  struct lerr *e);
/* `lantern audit egress`: the run's policy in agent.yaml terms, its kernel entries,
 * counters and recent events. A new reference. */
json_t *egress_audit_json(struct egress *eg, struct run *r);

/* The digest of the run's compiled policy (policy_digest), as it is in force now
 * (after any `egress update`); -ENOENT if the run has none. */
int egress_policy_digest(const struct egress *eg, const struct run *r, uint8_t out[32]);

/* Denied and audited attempts since start (Prometheus). */
struct metrics_out;
void egress_metrics(void *eg, struct metrics_out *o);

#endif
