/* egress.c: the egress subscriber: the pinned egress programs (opened or adopted), each
 * run's policy compiled at admission and in the maps before its workload exists, the
 * instance's DNS proxy for hostname rules (its answers become map entries before the
 * reply leaves, unless they point at the node itself or pass the instance's limit of
 * learned addresses), kernel verdict events and DNS refusals as JSON lines (log.c bounds
 * them per instance), and after a restart the policies re-attached to adopted runs and
 * entries no run owns reclaimed. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include "internal.h"
#include "lantern/metrics.h"
#include "lantern/util.h"

#define EGRESS_GC_MS          5000
#define EGRESS_EVENTS_PER_WAKE 512
#define NODE_ADDRS_TTL_NS     1000000000ULL /* node addresses are read again after 1 s */
#define DNS_TTL_CAP           86400

static const char *verdict_name(uint8_t v)
{
	switch (v) {
	case LANTERN_VERDICT_ALLOW: return "allow";
	case LANTERN_VERDICT_DENY: return "deny";
	case LANTERN_VERDICT_AUDIT: return "audit";
	case LANTERN_VERDICT_DNS: return "dns";
	}
	return "unknown";
}

static const char *hook_name(uint8_t h)
{
	switch (h) {
	case LANTERN_HOOK_CONNECT4: return "connect4";
	case LANTERN_HOOK_CONNECT6: return "connect6";
	case LANTERN_HOOK_SENDMSG4: return "sendmsg4";
	case LANTERN_HOOK_SENDMSG6: return "sendmsg6";
	case LANTERN_HOOK_SKB_EGRESS: return "skb_egress";
	}
	return "unknown";
}

static const char *reason_name(uint8_t r)
{
	switch (r) {
	case LANTERN_REASON_IPV6_ROUTING_HEADER: return "ipv6_routing_header";
	case LANTERN_REASON_IPV6_EXT_HEADERS: return "ipv6_extension_headers";
	case LANTERN_REASON_IPV4_SOURCE_ROUTE: return "ipv4_source_route";
	case LANTERN_REASON_IPV4_OPTIONS: return "ipv4_options";
	case LANTERN_REASON_SOCKET_TYPE: return "socket_type";
	}
	return "unknown";
}

static const char *proto_name(uint8_t p)
{
	return p == LANTERN_PROTO_TCP ? "tcp" : p == LANTERN_PROTO_UDP ? "udp" : "other";
}

/* The run of an instance; a flood comes from one instance, so the last answer is kept. */
static struct run *run_of_cgid(struct egress *eg, uint64_t cgid)
{
	if (eg->last_run && eg->last_cgid == cgid && !run_status_final(run_status(eg->last_run)))
		return eg->last_run;
	eg->last_run = runs_by_cgid(eg->runs, cgid);
	eg->last_cgid = cgid;
	return eg->last_run;
}

static void on_event(const struct lantern_egress_event *ev, void *arg)
{
	struct egress *eg = arg;
	struct run *r = run_of_cgid(eg, ev->cgroup_id);
	struct egress_run *er = r ? egress_run_of(eg, r) : NULL;
	struct egress_log *lg = er ? &er->log : &eg->log;
	char addr[64], comm[17], key[EGRESS_AGG_KEY_LEN];
	json_t *j;

	if (ev->verdict == LANTERN_VERDICT_DENY)
		eg->denied++;
	else if (ev->verdict == LANTERN_VERDICT_AUDIT)
		eg->audited++;
	policy_format_prefix(ev->addr, 128, addr, sizeof(addr));
	snprintf(key, sizeof(key), "egress %s %s %u %s %s", verdict_name(ev->verdict), addr, ev->port,
		 proto_name(ev->proto), ev->reason ? reason_name(ev->reason) : "");
	/* over the rate, most events end here: counted, no line built */
	if (egress_log_suppressed(lg, key))
		return;
	memcpy(comm, ev->comm, 16);
	comm[16] = '\0';
	j = json_pack("{s:s, s:s, s:I, s:i, s:s, s:s, s:i, s:s, s:s}", "event", "egress",
		      "verdict", verdict_name(ev->verdict), "cgroup_id", (json_int_t)ev->cgroup_id,
		      "pid", (int)ev->pid, "comm", comm, "dst", addr, "port", ev->port, "proto",
		      proto_name(ev->proto), "hook", hook_name(ev->hook));
	if (!j)
		return;
	if (ev->rule != 0xffff)
		json_object_set_new(j, "rule", json_integer(ev->rule));
	if (ev->reason)
		json_object_set_new(j, "reason", json_string(reason_name(ev->reason)));
	egress_log_key(lg, j, key);
}

/* A bounded share of the events per wake-up, so a flood cannot hold the loop: what is
 * left keeps the fd readable and the loop comes back after serving the others. */
static void on_events_fd(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct egress *eg = arg;

	lbpf_events_consume_n(eg->bpf, on_event, eg, EGRESS_EVENTS_PER_WAKE);
}

static void on_gc(struct loop *l, void *arg)
{
	struct egress *eg = arg;

	lbpf_egress_gc(eg->bpf, util_now_ns(CLOCK_BOOTTIME));
	loop_timer_add(l, EGRESS_GC_MS, on_gc, eg);
}

/* ---- the DNS proxy's questions, answered from the run's policy ---- */

static bool dns_allowed(void *ctx, const char *qname)
{
	struct egress_run *er = ctx;

	for (size_t i = 0; i < er->policy->n_rules; i++)
		if (er->policy->rules[i].is_host && policy_host_match(&er->policy->rules[i], qname))
			return true;
	return false;
}

static bool prefix_match(const uint8_t a[16], const uint8_t net[16], unsigned prefix)
{
	unsigned whole = prefix / 8, rest = prefix % 8;

	if (memcmp(a, net, whole))
		return false;
	return !rest || ((a[whole] ^ net[whole]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

/* The node's own addresses, read again when older than NODE_ADDRS_TTL_NS (a spawn's
 * bridge may have brought a new one). Keeps the old list if they cannot be read. */
static void node_addrs_refresh(struct egress *eg)
{
	uint64_t now = util_now_ns(CLOCK_MONOTONIC);
	struct ifaddrs *ifa, *i;
	uint8_t (*v)[16];
	size_t n = 0;

	if (eg->node_addrs_ns && now - eg->node_addrs_ns < NODE_ADDRS_TTL_NS)
		return;
	if (getifaddrs(&ifa) < 0) {
		log_warn("egress: cannot read this node's addresses: %s", strerror(errno));
		return;
	}
	for (i = ifa; i; i = i->ifa_next)
		n++;
	if (!(v = calloc(n ? n : 1, sizeof(*v)))) {
		freeifaddrs(ifa);
		return;
	}
	n = 0;
	for (i = ifa; i; i = i->ifa_next) {
		if (!i->ifa_addr)
			continue;
		if (i->ifa_addr->sa_family == AF_INET) {
			v[n][10] = v[n][11] = 0xff;
			memcpy(v[n] + 12, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, 4);
			n++;
		} else if (i->ifa_addr->sa_family == AF_INET6) {
			memcpy(v[n], &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, 16);
			n++;
		}
	}
	freeifaddrs(ifa);
	free(eg->node_addrs);
	eg->node_addrs = v;
	eg->n_node_addrs = n;
	eg->node_addrs_ns = now;
}

/* Does a CIDR rule of the policy name addr within a range at least as narrow as
 * prefix? Only such a rule lets an answer in a refused range be learned: 0.0.0.0/0 is
 * no consent to the node's loopback, 127.0.0.0/8 is. */
static bool cidr_allows(const struct policy *p, const uint8_t addr[16], unsigned prefix)
{
	for (size_t i = 0; i < p->n_rules; i++) {
		const struct policy_rule *r = &p->rules[i];

		if (!r->is_host && r->prefix >= prefix && prefix_match(addr, r->addr, r->prefix))
			return true;
	}
	return false;
}

/* Why an answer may not open addr (DNS rebinding onto the node or its link): the
 * reason, or NULL. Addresses are 16 bytes, IPv4 mapped, so an AAAA of ::ffff:127.0.0.1
 * is the IPv4 loopback. */
static const char *answer_refusal(struct egress *eg, const struct policy *p, const uint8_t a[16])
{
	static const struct {
		uint8_t net[16];
		unsigned prefix;
		const char *why;
	} ranges[] = {
		{ { [10] = 0xff, [11] = 0xff, [12] = 127 }, 104, "answer_loopback" },
		{ { [15] = 1 }, 128, "answer_loopback" },
		/* connecting to 0.0.0.0 or :: reaches the node itself */
		{ { [10] = 0xff, [11] = 0xff }, 104, "answer_unspecified" },
		{ { 0 }, 128, "answer_unspecified" },
		/* incl. 169.254.169.254, the cloud metadata service */
		{ { [10] = 0xff, [11] = 0xff, [12] = 169, [13] = 254 }, 112, "answer_link_local" },
		{ { [0] = 0xfe, [1] = 0x80 }, 10, "answer_link_local" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(ranges); i++)
		if (prefix_match(a, ranges[i].net, ranges[i].prefix))
			return cidr_allows(p, a, ranges[i].prefix) ? NULL : ranges[i].why;
	node_addrs_refresh(eg);
	for (size_t i = 0; i < eg->n_node_addrs; i++)
		if (!memcmp(a, eg->node_addrs[i], 16))
			return cidr_allows(p, a, 128) ? NULL : "answer_node_address";
	return NULL;
}

static void answer_refused(struct egress_run *er, const char *qname, const char *addr,
			   const char *why)
{
	er->dns_answers_refused++;
	er->eg->denied++;
	egress_log(er->eg, er->r, json_pack("{s:s, s:s, s:s, s:s, s:s}", "event", "dns", "verdict", "deny",
					    "reason", why, "qname", qname, "answer", addr));
}

/* An A/AAAA answer: learned for the instance before the client hears it, unless it
 * points at the node (left unlearned, so the kernel denies it; the reply still goes
 * back) or the instance holds its limit of learned addresses (the query fails). */
static int dns_answer(void *ctx, const char *qname, const uint8_t addr[16], uint32_t ttl)
{
	struct egress_run *er = ctx;
	struct egress *eg = er->eg;
	struct lantern_egress_value val = { 0 };
	struct lerr e = { 0 };
	uint32_t keep = ttl < eg->dns_ttl_floor ? eg->dns_ttl_floor : ttl > DNS_TTL_CAP ? DNS_TTL_CAP : ttl;
	uint64_t expires = util_now_ns(CLOCK_BOOTTIME) + (uint64_t)keep * 1000000000ULL;
	int err = policy_fold_host(er->policy, qname, expires, &val);
	const char *why;
	char a[64];

	if (err <= 0)
		return err < 0 ? err : -EPERM;
	policy_format_prefix(addr, 128, a, sizeof(a));
	if ((why = answer_refusal(eg, er->policy, addr))) {
		answer_refused(er, qname, a, why);
		return 0;
	}
	err = lbpf_egress_learn(eg->bpf, run_cgid(er->r), addr, &val, &e);
	if (err == -EDQUOT)
		answer_refused(er, qname, a, "learn_limit");
	else if (err < 0)
		log_error("run %s: DNS answer %s for %s not allowed in the kernel: %s", run_id(er->r), a,
			  qname, e.msg);
	return err;
}

static const char *qtype_name(uint16_t t, char *buf, size_t len)
{
	switch (t) {
	case 1: return "A";
	case 28: return "AAAA";
	case 5: return "CNAME";
	case 15: return "MX";
	case 16: return "TXT";
	case 33: return "SRV";
	case 65: return "HTTPS";
	}
	snprintf(buf, len, "TYPE%u", t);
	return buf;
}

static void dns_refused(void *ctx, const char *qname, uint16_t qtype)
{
	struct egress_run *er = ctx;
	char tb[16];

	er->dns_denied++;
	er->eg->denied++;
	egress_log(er->eg, er->r, json_pack("{s:s, s:s, s:s, s:s}", "event", "dns", "verdict", "deny",
					    "qname", qname, "qtype", qtype_name(qtype, tb, sizeof(tb))));
}

const struct dns_callbacks egress_dns_callbacks = {
	.allowed = dns_allowed,
	.answer = dns_answer,
	.refused = dns_refused,
};

/* The instance's DNS proxy, when its policy has hostname rules; on port (0: any). */
static int open_dns(struct egress_run *er, uint16_t port, struct lerr *e)
{
	struct egress *eg = er->eg;

	if (!er->policy->has_hosts || er->dns)
		return 0;
	if (!eg->have_upstream)
		return lerr_set(e, ENOENT, "spawn: refused: hostname egress rules need a DNS upstream "
				"(--dns-upstream or a nameserver in /etc/resolv.conf)");
	return eg->dns->open(eg->dns_arg, &eg->upstream, port, &egress_dns_callbacks, er, &er->dns, e);
}

/* ---- the run hooks ---- */

static void er_free(struct egress_run *er)
{
	if (!er)
		return;
	egress_log_close(&er->log, false);
	if (er->dns)
		er->eg->dns->close(er->eg->dns_arg, er->dns);
	policy_free(er->policy);
	free(er);
}

static int attach(struct egress *eg, struct run *r, struct policy *p)
{
	struct egress_run *er = calloc(1, sizeof(*er));

	if (!er)
		return -ENOMEM;
	er->eg = eg;
	er->r = r;
	er->policy = p;
	egress_log_init(&er->log, eg, r);
	er_free(run_slot(r, eg->slot));
	run_set_slot(r, eg->slot, er);
	return 0;
}

static int on_admitted(void *arg, struct run *r, json_t *input, struct lerr *e)
{
	struct egress *eg = arg;
	struct policy *p = NULL;
	int err;

	if ((err = policy_compile(run_spec(r), &p, e)) < 0)
		return err;
	if (attach(eg, r, p) < 0) {
		policy_free(p);
		return lerr_set(e, ENOMEM, "spawn: out of memory");
	}
	return 0;
}

static int on_prepared(void *arg, struct run *r, struct lerr *e)
{
	struct egress *eg = arg;
	struct egress_run *er = egress_run_of(eg, r);
	uint32_t ip4 = run_dns_ip4(r);
	int err;

	if (!er)
		return lerr_set(e, EINVAL, "spawn: run %s has no compiled egress policy", run_id(r));
	/* preparing may have brought a new node address (an OCI spawn's bridge) */
	eg->node_addrs_ns = 0;
	if (er->policy->has_hosts && run_own_netns(r) && !ip4)
		return lerr_set(e, EIO, "spawn: refused: hostname egress rules need the DNS proxy on the "
				"instance's network, which has no IPv4 gateway address");
	if ((err = open_dns(er, 0, e)) < 0)
		return err;
	if ((err = lbpf_instance_set(eg->bpf, run_cgid(r), er->policy, er->dns ? eg->dns->port(eg->dns_arg, er->dns) : 0,
				     NULL, 0, e)) < 0)
		return err;
	/* recorded even without hostname rules: a policy update that brings some opens
	 * its proxy there too */
	if (ip4) {
		if (er->dns && (err = eg->dns->listen_ip4(eg->dns_arg, er->dns, ip4, e)) < 0)
			return err;
		if ((err = lbpf_instance_set_dns_ip4(eg->bpf, run_cgid(r), ip4, e)) < 0)
			return err;
	}
	return 0;
}

/* Processes are gone: the instance's entries and its DNS proxy go. */
static void on_released(void *arg, struct run *r)
{
	struct egress *eg = arg;
	struct egress_run *er = egress_run_of(eg, r);

	if (run_cgid(r))
		lbpf_instance_remove(eg->bpf, run_cgid(r));
	/* its last aggregates, while the run can still be told */
	if (er)
		egress_log_flush(&er->log, true);
	if (er && er->dns) {
		eg->dns->close(eg->dns_arg, er->dns);
		er->dns = NULL;
	}
}

/* The policy a run had: its last `egress update` (egress.yaml), else its spec's. */
static int load_policy(struct run *r, struct policy **out, struct lerr *e)
{
	char path[PATH_MAX + 16], *buf;
	struct spec_errors errs = { 0 };
	struct spec *es = NULL;
	size_t len;
	int err;

	snprintf(path, sizeof(path), "%s/egress.yaml", run_dir(r));
	if (util_read_file(path, &buf, &len) == 0) {
		err = spec_parse(run_file(r), buf, len, &es, &errs);
		free(buf);
		if (err == 0) {
			err = policy_compile(es, out, e);
			spec_free(es);
			if (err == 0)
				return 0;
		} else {
			spec_errors_free(&errs);
		}
	}
	return policy_compile(run_spec(r), out, e);
}

static int on_adopted(void *arg, struct run *r, struct lerr *e)
{
	struct egress *eg = arg;
	struct lantern_instance inst = { 0 };
	struct egress_run *er;
	struct policy *p = NULL;
	int err;

	if ((err = load_policy(r, &p, e)) < 0)
		return err;
	if (attach(eg, r, p) < 0) {
		policy_free(p);
		return lerr_set(e, ENOMEM, "out of memory");
	}
	er = egress_run_of(eg, r);
	if (lbpf_instance_get(eg->bpf, run_cgid(r), &inst) < 0)
		return lerr_set(e, ENOENT, "cannot adopt: its egress policy is not in the kernel maps");
	if (open_dns(er, inst.dns_port, e) < 0) {
		/* the old port is taken: a new one, and the kernel redirects there */
		e->msg[0] = '\0';
		if (open_dns(er, 0, e) < 0 ||
		    lbpf_instance_set(eg->bpf, run_cgid(r), er->policy, eg->dns->port(eg->dns_arg, er->dns), NULL, 0, e) < 0)
			log_error("run %s: DNS proxy not restored: %s", run_id(r), e->msg);
	}
	/* an OCI spawn's DNS goes to the bridge's address: the proxy listens there too */
	if (er->dns && inst.dns_redirect_ip4 && eg->dns->listen_ip4(eg->dns_arg, er->dns, inst.dns_redirect_ip4, e) < 0)
		log_error("run %s: DNS proxy not restored on the bridge: %s", run_id(r), e->msg);
	e->msg[0] = '\0';
	return 0;
}

static void on_recovered(void *arg, struct runs *t)
{
	struct egress *eg = arg;
	uint64_t *ids = NULL;
	size_t n = 0;

	if (lbpf_instance_list(eg->bpf, &ids, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++)
		if (!runs_by_cgid(t, ids[i])) {
			log_info("reclaiming map entries of cgroup id %llu: no run owns it",
				 (unsigned long long)ids[i]);
			lbpf_instance_remove(eg->bpf, ids[i]);
		}
	free(ids);
}

static void on_free(void *arg, struct run *r)
{
	struct egress *eg = arg;

	if (eg->last_run == r)
		eg->last_run = NULL;
	er_free(egress_run_of(eg, r));
	run_set_slot(r, eg->slot, NULL);
}

/* A resumed run compiles its policy again, as at admission. */
static int on_resumed(void *arg, struct run *r, struct lerr *e)
{
	struct policy *p = NULL;
	int err;

	if ((err = load_policy(r, &p, e)) < 0)
		return err;
	if (attach(arg, r, p) < 0) {
		policy_free(p);
		return lerr_set(e, ENOMEM, "out of memory");
	}
	return 0;
}

int egress_policy_digest(const struct egress *eg, const struct run *r, uint8_t out[32])
{
	struct egress_run *er = egress_run_of(eg, r);

	if (!er || !er->policy)
		return -ENOENT;
	policy_digest(er->policy, out);
	return 0;
}

static const struct run_hooks egress_hooks = {
	.name = "egress",
	.admitted = on_admitted,
	.resumed = on_resumed,
	.prepared = on_prepared,
	.released = on_released,
	.adopted = on_adopted,
	.recovered = on_recovered,
	.free = on_free,
};

int egress_subscribe(struct egress *eg, struct runs *t, struct lerr *e)
{
	eg->runs = t;
	if ((eg->slot = runs_subscribe(t, &egress_hooks, eg)) < 0)
		return lerr_set(e, -eg->slot, "egress: cannot subscribe to runs");
	return 0;
}

struct lbpf *egress_bpf(const struct egress *eg)
{
	return eg->bpf;
}

void egress_metrics(void *arg, struct metrics_out *o)
{
	struct egress *eg = arg;

	metrics_family(o, "lantern_egress_denied_total", "counter", "Egress attempts denied (kernel and DNS).");
	metrics_u64(o, "lantern_egress_denied_total", NULL, eg->denied);
	metrics_family(o, "lantern_egress_audited_total", "counter", "Egress attempts allowed by audit mode.");
	metrics_u64(o, "lantern_egress_audited_total", NULL, eg->audited);
}

int egress_open(struct loop *l, const struct egress_opts *o, struct egress **out, struct lerr *e)
{
	static const uint8_t lo6[16] = { [15] = 1 };
	struct lbpf_opts lo = {
		.pin_root = o->bpffs,
		.cgroup_path = o->cg->v2,
		.instance_level = o->cg->instance_level,
		.audit_all = o->audit_all,
		.dns_ip4 = htonl(INADDR_LOOPBACK),
		.dns_ip6 = lo6,
		.learn_max = o->dns_learn_max,
	};
	struct egress *eg = calloc(1, sizeof(*eg));
	struct lerr ue = { 0 };
	bool adopted = false;
	int err;

	if (!eg)
		return lerr_set(e, ENOMEM, "egress: out of memory");
	eg->loop = l;
	eg->dns = o->dns ? o->dns : &dns_local_proxy;
	eg->dns_arg = o->dns ? o->dns_arg : l;
	egress_log_init(&eg->log, eg, NULL);
	eg->dns_ttl_floor = o->dns_ttl_floor;
	eg->dns_learn_max = o->dns_learn_max ? o->dns_learn_max : LBPF_LEARN_MAX;
	if ((err = lbpf_open(&lo, &eg->bpf, &adopted, e)) < 0) {
		free(eg);
		return err;
	}
	log_info("egress: %s BPF state under %s, attached to %s", adopted ? "adopted pinned" : "pinned new",
		 o->bpffs, o->cg->v2);
	if (dns_upstream_parse(o->dns_upstream, &eg->upstream, &ue) == 0)
		eg->have_upstream = true;
	else
		log_warn("dns: %s: specs with hostname rules will be refused", ue.msg);
	if ((err = loop_add(l, lbpf_events_fd(eg->bpf), EPOLLIN, on_events_fd, eg)) < 0) {
		lbpf_close(eg->bpf);
		free(eg);
		return lerr_set(e, err, "egress: watching the event ring buffer: %s", strerror(-err));
	}
	loop_timer_add(l, EGRESS_GC_MS, on_gc, eg);
	*out = eg;
	return 0;
}

void egress_close(struct egress *eg)
{
	if (!eg)
		return;
	egress_log_close(&eg->log, false);
	lbpf_close(eg->bpf);
	free(eg->node_addrs);
	free(eg);
}
