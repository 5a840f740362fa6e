/* policy.c: a live run's egress policy replaced atomically (`lantern egress update`),
 * DNS-learned addresses carried over when the new policy still allows them, and the
 * audit view of a run in agent.yaml terms (`lantern audit egress`). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "lantern/util.h"

#define EGRESS_RECENT_EVENTS 20

/* A learned (DNS) slot survives a policy update only if the new policy has the
 * same hostname rule at the same index. */
static bool slot_still_valid(const struct policy *old, const struct policy *new,
			     const struct lantern_port_rule *s)
{
	const struct policy_rule *a = NULL, *b = NULL;

	for (size_t i = 0; i < old->n_rules; i++)
		if (old->rules[i].index == s->rule)
			a = &old->rules[i];
	for (size_t i = 0; i < new->n_rules; i++)
		if (new->rules[i].index == s->rule)
			b = &new->rules[i];
	return a && b && a->is_host && b->is_host && a->wildcard == b->wildcard &&
	       !strcmp(a->host, b->host) && a->protos == b->protos &&
	       a->port_lo == b->port_lo && a->port_hi == b->port_hi;
}

/* The DNS-learned entries of the running policy, re-folded against the new one. */
static int carry_learned(struct egress_run *er, const struct policy *np, struct policy_entry **out,
			 size_t *nout)
{
	struct policy_entry *cur = NULL, *res;
	size_t n = 0, k = 0;
	int err = lbpf_egress_dump(er->eg->bpf, run_cgid(er->r), &cur, &n);

	*out = NULL;
	*nout = 0;
	if (err < 0)
		return err;
	if (!(res = calloc(n ? n : 1, sizeof(*res)))) {
		free(cur);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		struct policy_entry ne = { .prefix = 128 };
		bool any = false;

		if (cur[i].prefix != 128)
			continue;
		memcpy(ne.addr, cur[i].addr, 16);
		if (policy_fold_static(np, ne.addr, &ne.val) < 0)
			continue;
		for (uint32_t s = 0; s < cur[i].val.nslots; s++) {
			const struct lantern_port_rule *sl = &cur[i].val.slot[s];

			if (sl->expires_ns && slot_still_valid(er->policy, np, sl) &&
			    policy_value_add(&ne.val, sl) == 0)
				any = true;
		}
		if (any)
			res[k++] = ne;
	}
	free(cur);
	*out = res;
	*nout = k;
	return 0;
}

int egress_update(struct egress *eg, struct run *r, const char *file, const char *yaml, size_t len,
		  struct lerr *e)
{
	struct egress_run *er = egress_run_of(eg, r);
	struct spec_errors errs = { 0 };
	struct spec *s = NULL;
	struct policy *np = NULL;
	struct policy_entry *extra = NULL;
	size_t nextra = 0, nrules;
	void *new_dns = NULL;
	struct lantern_instance cur;
	char path[PATH_MAX + 16];
	int err;

	if (run_status_final(run_status(r)) || !er)
		return lerr_set(e, EALREADY, "run %s already ended: %s", run_id(r),
				run_status_name(run_status(r)));
	if (spec_parse(file, yaml, len, &s, &errs) < 0) {
		size_t off = 0;

		e->msg[0] = '\0';
		for (size_t i = 0; i < errs.n && off < sizeof(e->msg) - 1; i++)
			off += (size_t)snprintf(e->msg + off, sizeof(e->msg) - off, "%s%s", i ? "\n" : "",
						errs.msg[i]);
		spec_errors_free(&errs);
		return -EINVAL;
	}
	if ((err = policy_compile(s, &np, e)) < 0)
		goto out;
	if (np->has_hosts && !er->dns) {
		if (!eg->have_upstream) {
			err = lerr_set(e, ENOENT, "egress: hostname rules need a DNS upstream");
			goto out;
		}
		if ((err = eg->dns->open(eg->dns_arg, &eg->upstream, 0, &egress_dns_callbacks, er, &new_dns, e)) < 0)
			goto out;
		/* an OCI spawn's DNS goes to the bridge's address: listen there too */
		if (lbpf_instance_get(eg->bpf, run_cgid(r), &cur) == 0 && cur.dns_redirect_ip4 &&
		    (err = eg->dns->listen_ip4(eg->dns_arg, new_dns, cur.dns_redirect_ip4, e)) < 0)
			goto out;
	}
	if ((err = carry_learned(er, np, &extra, &nextra)) < 0) {
		lerr_set(e, err, "egress: reading the current policy of %s: %s", run_id(r), strerror(-err));
		goto out;
	}
	err = lbpf_instance_set(eg->bpf, run_cgid(r), np,
				new_dns ? eg->dns->port(eg->dns_arg, new_dns) : er->dns ? eg->dns->port(eg->dns_arg, er->dns) : 0,
				extra, nextra, e);
	if (err < 0)
		goto out;
	if (new_dns) {
		er->dns = new_dns;
		new_dns = NULL;
	}
	policy_free(er->policy);
	er->policy = np;
	nrules = np->n_rules;
	np = NULL;
	snprintf(path, sizeof(path), "%s/egress.yaml", run_dir(r));
	if (util_write_file_atomic(path, yaml, len) < 0)
		log_error("run %s: cannot record the new policy in %s", run_id(r), path);
	log_info("run %s: egress policy replaced from %s (%zu rules, %zu learned addresses kept)",
		 run_id(r), file, nrules, nextra);
out:
	if (new_dns)
		eg->dns->close(eg->dns_arg, new_dns);
	free(extra);
	policy_free(np);
	spec_free(s);
	return err;
}

static void protos_str(uint8_t p, char *out, size_t len)
{
	snprintf(out, len, "%s%s%s", p & LANTERN_PROTO_TCP ? "tcp" : "",
		 (p & LANTERN_PROTO_TCP) && (p & LANTERN_PROTO_UDP) ? "," : "",
		 p & LANTERN_PROTO_UDP ? "udp" : "");
}

static json_t *recent_events(struct run *r)
{
	char path[PATH_MAX + 16], *buf;
	json_t *arr = json_array();
	char *lines[EGRESS_RECENT_EVENTS];
	size_t n = 0;

	snprintf(path, sizeof(path), "%s/egress.jsonl", run_dir(r));
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

static json_t *entries_json(struct egress *eg, struct run *r)
{
	struct policy_entry *ents = NULL;
	uint64_t now = util_now_ns(CLOCK_BOOTTIME);
	json_t *entries = json_array();
	size_t n = 0;

	if (lbpf_egress_dump(eg->bpf, run_cgid(r), &ents, &n) < 0)
		return entries;
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
	return entries;
}

json_t *egress_audit_json(struct egress *eg, struct run *r)
{
	const struct egress_run *er = egress_run_of(eg, r);
	const struct spec *s = run_spec(r);
	struct lantern_instance inst = { 0 };
	struct lantern_egress_stats st = { 0 };
	struct lantern_pkt_stats ps = { 0 };
	json_t *j = run_json(r), *rules = json_array();
	bool live = !run_status_final(run_status(r));

	json_object_set_new(j, "network", json_string(s ? spec_network_name(s->network) : ""));
	json_object_set_new(j, "mode", json_string(er && er->policy && (er->policy->flags & LANTERN_F_AUDIT)
							   ? "audit" : "enforce"));
	for (size_t i = 0; s && i < s->n_egress; i++)
		json_array_append_new(rules, json_pack("{s:i, s:s}", "index", (int)i, "pattern",
						       s->egress[i].pattern));
	json_object_set_new(j, "rules", rules);
	if (live && lbpf_instance_get(eg->bpf, run_cgid(r), &inst) == 0) {
		json_object_set_new(j, "policy_id", json_integer(inst.policy_id));
		json_object_set_new(j, "dns_port", json_integer(inst.dns_port));
		if (inst.flags & LANTERN_F_AUDIT)
			json_object_set_new(j, "mode", json_string("audit"));
	}
	json_object_set_new(j, "entries", live ? entries_json(eg, r) : json_array());
	if (live) {
		lbpf_stats_get(eg->bpf, run_cgid(r), &st);
		lbpf_pkt_stats_get(eg->bpf, run_cgid(r), &ps);
	}
	json_object_set_new(j, "counters",
			    json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I, s:I, s:I}}",
				      "allowed", (json_int_t)st.allowed,
				      "denied", (json_int_t)st.denied, "audited", (json_int_t)st.audited,
				      "dns_redirected", (json_int_t)st.dns_redirected, "dns_refused",
				      (json_int_t)(er ? er->dns_denied : 0), "dns_learned",
				      (json_int_t)(live ? lbpf_egress_learned(eg->bpf, run_cgid(r)) : 0),
				      "dns_learn_max", (json_int_t)eg->dns_learn_max,
				      "dns_answers_refused", (json_int_t)(er ? er->dns_answers_refused : 0),
				      "packets_dropped",
				      "ipv6_routing_header", (json_int_t)ps.ipv6_routing_header,
				      "ipv6_extension_headers", (json_int_t)ps.ipv6_ext_headers,
				      "ipv4_source_route", (json_int_t)ps.ipv4_source_route,
				      "ipv4_options", (json_int_t)ps.ipv4_options,
				      "socket_type", (json_int_t)ps.socket_type,
				      "audited", (json_int_t)ps.audited));
	json_object_set_new(j, "recent", recent_events(r));
	return j;
}
