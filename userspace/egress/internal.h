/* internal.h: the egress subscriber's state, shared by its files: egress.c (the
 * programs, events, the run hooks, the DNS proxy's answers), log.c (JSON lines, bounded
 * per instance) and policy.c (policy replacement and the audit view). */
#ifndef LANTERN_EGRESS_INTERNAL_H
#define LANTERN_EGRESS_INTERNAL_H

#include "lantern/dns.h"
#include "lantern/egress.h"
#include "lantern/lbpf.h"
#include "lantern/policy.h"
#include "lantern/run.h"

#define EGRESS_AGG_KEYS     8      /* destinations aggregated apart per second; the rest together */
#define EGRESS_AGG_KEY_LEN  320

/* Events of one destination over the rate this second: the first one, and how many. */
struct egress_agg {
	char key[EGRESS_AGG_KEY_LEN];
	json_t *tmpl;
	uint64_t n;
};

/* Where one run's lines go (lanternd's log and its egress.jsonl), or the node's for
 * events of no known run (r NULL: the log only), and how many this second. */
struct egress_log {
	struct egress *eg;
	struct run *r;
	int fd;                   /* egress.jsonl, -1 until the first line */
	bool fd_failed;
	uint64_t bytes;           /* its size */
	uint64_t win_ns;          /* CLOCK_MONOTONIC start of the current second */
	uint32_t lines;           /* lines written in it */
	struct egress_agg agg[EGRESS_AGG_KEYS];
	size_t n_agg;
	uint64_t other;           /* over the rate, past the EGRESS_AGG_KEYS destinations */
	uint64_t timer;           /* writes the aggregates when the second ends */
};

struct egress {
	struct loop *loop;
	const struct dns_proxy_ops *dns;   /* where DNS proxies are served */
	void *dns_arg;
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
	struct egress_log log;       /* events of no known run */
	uint64_t last_cgid;          /* the last event's instance and run: a flood is one instance */
	struct run *last_run;
};

/* One run's egress: its compiled policy and, with hostname rules, its DNS proxy. */
struct egress_run {
	struct egress *eg;
	struct run *r;
	struct policy *policy;
	void *dns;                  /* its proxy, through egress.dns */
	uint64_t dns_denied;
	uint64_t dns_answers_refused;  /* rebinding answers and answers past the learn limit */
	struct egress_log log;
};

extern const struct dns_callbacks egress_dns_callbacks;

static inline struct egress_run *egress_run_of(const struct egress *eg, const struct run *r)
{
	return run_slot(r, eg->slot);
}
/* log.c. A JSON line to lanternd's log and, if r, to the run's egress.jsonl; a deny or
 * audit also becomes a run event. Past EGRESS_LOG_PER_S lines a second of one run, the
 * event is counted with others like it and written as one aggregate line when the
 * second ends. Consumes ev. */
void egress_log(struct egress *eg, struct run *r, json_t *ev);
/* The same for an event already keyed (what it was and where it went). */
void egress_log_key(struct egress_log *lg, json_t *ev, const char *key);
/* True when an event of key is over the rate and was counted into an aggregate that
 * already exists: the caller need not build its line at all. */
bool egress_log_suppressed(struct egress_log *lg, const char *key);
/* Writes the pending aggregates now (tell_run: as run events too). */
void egress_log_flush(struct egress_log *lg, bool tell_run);
void egress_log_init(struct egress_log *lg, struct egress *eg, struct run *r);
/* Flushes, stops the timer, closes egress.jsonl. */
void egress_log_close(struct egress_log *lg, bool tell_run);

#endif
