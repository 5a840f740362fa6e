/* egress.c: lanternd's side of egress enforcement: opens (or adopts) the pinned BPF
 * state, turns kernel verdict events and DNS refusals into JSON lines on the log and
 * in each run's egress.jsonl, answers the DNS proxy's questions from the run's
 * policy, and builds the audit view in agent.yaml terms. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lanternd.h"
#include "lantern/util.h"

#define EGRESS_GC_MS          5000
#define EGRESS_RECENT_EVENTS  20
#define EGRESS_RUN_LOG_MAX    (1u << 20) /* egress.jsonl stops growing past this */
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
	}
	return "unknown";
}

static void protos_str(uint8_t p, char *out, size_t len)
{
	snprintf(out, len, "%s%s%s", p & LANTERN_PROTO_TCP ? "tcp" : "",
		 (p & LANTERN_PROTO_TCP) && (p & LANTERN_PROTO_UDP) ? "," : "",
		 p & LANTERN_PROTO_UDP ? "udp" : "");
}

static struct run *run_by_cgid(struct daemon *d, uint64_t id)
{
	for (struct run *r = d->runs; r; r = r->next)
		if (!run_status_final(r->status) && r->cg.id == id)
			return r;
	return NULL;
}

void egress_log(struct daemon *d, struct run *r, json_t *ev)
{
	char ts[40];
	struct timespec now;
	struct tm tm;
	char *s;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + strlen(ts), sizeof(ts) - strlen(ts), ".%03ldZ", now.tv_nsec / 1000000);
	json_object_set_new(ev, "time", json_string(ts));
	if (r) {
		json_object_set_new(ev, "run_id", json_string(r->id));
		json_object_set_new(ev, "instance_id", json_string(r->instance_id));
	}
	telemetry_egress_event(d, r, ev);
	s = json_dumps(ev, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(ev);
	if (!s)
		return;
	fprintf(stderr, "%s\n", s);
	if (r) {
		char path[PATH_MAX + 16];
		FILE *f;

		snprintf(path, sizeof(path), "%s/egress.jsonl", r->dir);
		f = fopen(path, "ae");
		if (f) {
			if (ftell(f) < (long)EGRESS_RUN_LOG_MAX)
				fprintf(f, "%s\n", s);
			fclose(f);
		}
	}
	free(s);
}

static void on_event(const struct lantern_egress_event *ev, void *arg)
{
	struct daemon *d = arg;
	struct run *r = run_by_cgid(d, ev->cgroup_id);
	char addr[64], comm[17];
	json_t *j;

	policy_format_prefix(ev->addr, 128, addr, sizeof(addr));
	memcpy(comm, ev->comm, 16);
	comm[16] = '\0';
	if (ev->verdict == LANTERN_VERDICT_DENY)
		d->egress_denied++;
	else if (ev->verdict == LANTERN_VERDICT_AUDIT)
		d->egress_audited++;
	j = json_pack("{s:s, s:s, s:I, s:i, s:s, s:s, s:i, s:s, s:s}", "event", "egress",
		      "verdict", verdict_name(ev->verdict), "cgroup_id", (json_int_t)ev->cgroup_id,
		      "pid", (int)ev->pid, "comm", comm, "dst", addr, "port", ev->port, "proto",
		      ev->proto == LANTERN_PROTO_UDP ? "udp" : "tcp", "hook", hook_name(ev->hook));
	if (ev->rule != 0xffff)
		json_object_set_new(j, "rule", json_integer(ev->rule));
	egress_log(d, r, j);
}

static void on_events_fd(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct daemon *d = arg;

	lbpf_events_consume(d->bpf, on_event, d);
}

static void on_gc(struct loop *l, void *arg)
{
	struct daemon *d = arg;

	lbpf_egress_gc(d->bpf, util_now_ns(CLOCK_BOOTTIME));
	loop_timer_add(l, EGRESS_GC_MS, on_gc, d);
}

int egress_start(struct daemon *d, struct lerr *e)
{
	static const uint8_t lo6[16] = { [15] = 1 };
	struct lbpf_opts o = {
		.pin_root = d->o.bpffs,
		.cgroup_path = d->cg.v2,
		.instance_level = d->cg.instance_level,
		.audit_all = d->o.egress_audit,
		.dns_ip4 = htonl(INADDR_LOOPBACK),
		.dns_ip6 = lo6,
	};
	struct lerr ue = { 0 };
	bool adopted = false;
	int err;

	if ((err = lbpf_open(&o, &d->bpf, &adopted, e)) < 0)
		return err;
	log_info("egress: %s BPF state under %s, attached to %s", adopted ? "adopted pinned" : "pinned new",
		 d->o.bpffs, d->cg.v2);
	if (dns_upstream_parse(d->o.dns_upstream, &d->upstream, &ue) == 0)
		d->have_upstream = true;
	else
		log_warn("dns: %s: specs with hostname rules will be refused", ue.msg);
	if ((err = loop_add(d->loop, lbpf_events_fd(d->bpf), EPOLLIN, on_events_fd, d)) < 0)
		return lerr_set(e, err, "egress: watching the event ring buffer: %s", strerror(-err));
	loop_timer_add(d->loop, EGRESS_GC_MS, on_gc, d);
	return 0;
}

static bool dns_allowed(void *ctx, const char *qname)
{
	struct run *r = ctx;

	for (size_t i = 0; i < r->policy->n_rules; i++)
		if (r->policy->rules[i].is_host && policy_host_match(&r->policy->rules[i], qname))
			return true;
	return false;
}

static int dns_answer(void *ctx, const char *qname, const uint8_t addr[16], uint32_t ttl)
{
	struct run *r = ctx;
	struct daemon *d = r->d;
	struct lantern_egress_value val = { 0 };
	struct lerr e = { 0 };
	uint32_t keep = ttl < d->o.dns_ttl_floor ? d->o.dns_ttl_floor : ttl > DNS_TTL_CAP ? DNS_TTL_CAP : ttl;
	uint64_t expires = util_now_ns(CLOCK_BOOTTIME) + (uint64_t)keep * 1000000000ULL;
	int err = policy_fold_host(r->policy, qname, expires, &val);

	if (err <= 0)
		return err < 0 ? err : -EPERM;
	if ((err = lbpf_egress_learn(d->bpf, r->cg.id, addr, &val, &e)) < 0) {
		char a[64];
		policy_format_prefix(addr, 128, a, sizeof(a));
		log_error("run %s: DNS answer %s for %s not allowed in the kernel: %s", r->id, a, qname, e.msg);
	}
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
	struct run *r = ctx;
	char tb[16];

	r->dns_denied++;
	r->d->egress_denied++;
	egress_log(r->d, r, json_pack("{s:s, s:s, s:s, s:s}", "event", "dns", "verdict", "deny",
				       "qname", qname, "qtype", qtype_name(qtype, tb, sizeof(tb))));
}

const struct dns_callbacks egress_dns_callbacks = {
	.allowed = dns_allowed,
	.answer = dns_answer,
	.refused = dns_refused,
};

static json_t *recent_events(struct run *r)
{
	char path[PATH_MAX + 16], *buf;
	json_t *arr = json_array();
	char *lines[EGRESS_RECENT_EVENTS];
	size_t n = 0;

	snprintf(path, sizeof(path), "%s/egress.jsonl", r->dir);
	if (util_read_file(path, &buf, NULL) < 0)
		return arr;
	for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
		lines[n++ % EGRESS_RECENT_EVENTS] = l;
	for (size_t i = n > EGRESS_RECENT_EVENTS ? n - EGRESS_RECENT_EVENTS : 0; i < n; i++) {
		json_t *ev = json_loads(lines[i % EGRESS_RECENT_EVENTS], 0, NULL);
		if (ev)
			json_array_append_new(arr, ev);
	}
	free(buf);
	return arr;
}

json_t *egress_audit_json(struct daemon *d, struct run *r)
{
	struct lantern_instance inst = { 0 };
	struct lantern_egress_stats st = { 0 };
	struct policy_entry *ents = NULL;
	size_t n = 0;
	uint64_t now = util_now_ns(CLOCK_BOOTTIME);
	json_t *j = run_json(r), *rules = json_array(), *entries = json_array();
	bool live = !run_status_final(r->status);

	json_object_set_new(j, "network", json_string(r->spec ? spec_network_name(r->spec->network) : ""));
	json_object_set_new(j, "mode", json_string(r->policy && (r->policy->flags & LANTERN_F_AUDIT)
							   ? "audit" : "enforce"));
	for (size_t i = 0; r->spec && i < r->spec->n_egress; i++)
		json_array_append_new(rules, json_pack("{s:i, s:s}", "index", (int)i, "pattern",
						       r->spec->egress[i].pattern));
	json_object_set_new(j, "rules", rules);
	if (live && lbpf_instance_get(d->bpf, r->cg.id, &inst) == 0) {
		json_object_set_new(j, "policy_id", json_integer(inst.policy_id));
		json_object_set_new(j, "dns_port", json_integer(inst.dns_port));
		if (inst.flags & LANTERN_F_AUDIT)
			json_object_set_new(j, "mode", json_string("audit"));
	}
	if (live && lbpf_egress_dump(d->bpf, r->cg.id, &ents, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			char pfx[80], pr[16];
			json_t *slots = json_array();

			policy_format_prefix(ents[i].addr, ents[i].prefix, pfx, sizeof(pfx));
			for (uint32_t s = 0; s < ents[i].val.nslots && s < LANTERN_MAX_SLOTS; s++) {
				const struct lantern_port_rule *sl = &ents[i].val.slot[s];
				json_t *o;

				if (sl->expires_ns && sl->expires_ns <= now)
					continue;
				protos_str(sl->protos, pr, sizeof(pr));
				o = json_pack("{s:s, s:i, s:i, s:i}", "protocols", pr, "port_lo", sl->port_lo,
					      "port_hi", sl->port_hi, "rule", sl->rule);
				if (sl->expires_ns)
					json_object_set_new(o, "expires_in_s",
							    json_integer((json_int_t)((sl->expires_ns - now) / 1000000000ULL)));
				json_array_append_new(slots, o);
			}
			json_array_append_new(entries, json_pack("{s:s, s:o}", "prefix", pfx, "allow", slots));
		}
		free(ents);
	}
	json_object_set_new(j, "entries", entries);
	if (live)
		lbpf_stats_get(d->bpf, r->cg.id, &st);
	json_object_set_new(j, "counters",
			    json_pack("{s:I, s:I, s:I, s:I, s:I}", "allowed", (json_int_t)st.allowed,
				      "denied", (json_int_t)st.denied, "audited", (json_int_t)st.audited,
				      "dns_redirected", (json_int_t)st.dns_redirected, "dns_refused",
				      (json_int_t)r->dns_denied));
	json_object_set_new(j, "recent", recent_events(r));
	return j;
}
