/* egress_internal.h: the egress subscriber's state, shared by its files: egress.c (the
 * programs, events, the run hooks, the DNS proxy's answers) and policy.c (policy
 * replacement and the audit view). */
#ifndef LANTERN_EGRESS_INTERNAL_H
#define LANTERN_EGRESS_INTERNAL_H

#include "lantern/dns.h"
#include "lantern/egress.h"
#include "lantern/lbpf.h"
#include "lantern/policy.h"

struct egress {
	struct loop *loop;
	struct lbpf *bpf;
	struct dns_upstream upstream;
	bool have_upstream;
	uint32_t dns_ttl_floor;
	uint32_t dns_learn_max;
	uint64_t denied, audited;
	struct runs *runs;
	int slot;
	/* this node's own addresses (IPv4 mapped), which DNS answers may not open */
	uint8_t (*node_addrs)[16];
	size_t n_node_addrs;
	uint64_t node_addrs_ns;      /* CLOCK_MONOTONIC of the last read; 0: read again */
};

/* One run's egress: its compiled policy and, with hostname rules, its DNS proxy. */
struct egress_run {
	struct egress *eg;
	struct run *r;
	struct policy *policy;
	struct dns_server *dns;
	uint64_t dns_denied;
	uint64_t dns_answers_refused;  /* rebinding answers and answers past the learn limit */
};

extern const struct dns_callbacks egress_dns_callbacks;

struct egress_run *egress_run_of(const struct egress *eg, const struct run *r);
/* Writes a JSON line to lanternd's log and, if r, to the run's egress.jsonl; a deny
 * or audit also becomes a run event. Consumes ev. */
void egress_log(struct egress *eg, struct run *r, json_t *ev);

#endif
