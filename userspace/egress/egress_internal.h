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
	const struct dns_proxy_ops *dns;   /* where DNS proxies are served */
	void *dns_arg;
	struct lbpf *bpf;
	struct dns_upstream upstream;
	bool have_upstream;
	uint32_t dns_ttl_floor;
	uint64_t denied, audited;
	struct runs *runs;
	int slot;
};

/* One run's egress: its compiled policy and, with hostname rules, its DNS proxy. */
struct egress_run {
	struct egress *eg;
	struct run *r;
	struct policy *policy;
	void *dns;                  /* its proxy, through egress.dns */
	uint64_t dns_denied;
};

extern const struct dns_callbacks egress_dns_callbacks;

struct egress_run *egress_run_of(const struct egress *eg, const struct run *r);
/* Writes a JSON line to lanternd's log and, if r, to the run's egress.jsonl; a deny
 * or audit also becomes a run event. Consumes ev. */
void egress_log(struct egress *eg, struct run *r, json_t *ev);

#endif
