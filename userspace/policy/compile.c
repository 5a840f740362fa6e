/* compile.c: spec.network + spec.egress_rules -> the entries of the lantern_egress LPM
 * trie, the slot arithmetic shared with the DNS path, and the compiled policy's digest.
 *
 * The kernel does ONE longest-prefix lookup per connect, so an entry must already hold
 * the port rules of every rule whose prefix covers it; otherwise a /16 allowing all
 * ports would hide a /8 allowing 443 for addresses inside the /16 and the result would
 * be narrower than the union of the rules. Folding sorts the distinct prefixes by
 * (address, length): a prefix's covering prefixes then come before it and form a
 * stack, which keeps compilation at O(n log n). */
#include "lantern/policy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

int policy_value_add(struct lantern_egress_value *val, const struct lantern_port_rule *s)
{
	for (uint32_t i = 0; i < val->nslots; i++) {
		struct lantern_port_rule *o = &val->slot[i];

		if (o->protos == s->protos && o->port_lo == s->port_lo &&
		    o->port_hi == s->port_hi && o->rule == s->rule) {
			/* a static slot (0) never expires, so it wins over any expiry */
			if (o->expires_ns && (!s->expires_ns || s->expires_ns > o->expires_ns))
				o->expires_ns = s->expires_ns;
			return 0;
		}
	}
	if (val->nslots >= LANTERN_MAX_SLOTS)
		return -E2BIG;
	val->slot[val->nslots++] = *s;
	return 0;
}

static struct lantern_port_rule rule_slot(const struct policy_rule *r, uint64_t expires_ns)
{
	return (struct lantern_port_rule){
		.expires_ns = expires_ns,
		.port_lo = r->port_lo,
		.port_hi = r->port_hi,
		.protos = r->protos,
		.rule = r->index,
	};
}

int policy_fold_host(const struct policy *p, const char *qname, uint64_t expires_ns,
		     struct lantern_egress_value *val)
{
	int matched = 0;

	for (size_t i = 0; i < p->n_rules; i++) {
		struct lantern_port_rule s;

		if (!policy_host_match(&p->rules[i], qname))
			continue;
		s = rule_slot(&p->rules[i], expires_ns);
		if (policy_value_add(val, &s))
			return -E2BIG;
		matched++;
	}
	return matched;
}

static bool covers(const uint8_t *net, uint8_t plen, const uint8_t *addr)
{
	unsigned full = plen / 8, rest = plen % 8;

	if (memcmp(net, addr, full))
		return false;
	return !rest || ((net[full] ^ addr[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

int policy_fold_static(const struct policy *p, const uint8_t addr[16],
		       struct lantern_egress_value *val)
{
	const struct policy_entry *best = NULL;

	/* entries are sorted by address, so a binary search would do; the DNS path calls
	 * this once per answer, where a linear pass over a policy's entries is cheap */
	for (size_t i = 0; i < p->n_entries; i++) {
		const struct policy_entry *en = &p->entries[i];

		if (covers(en->addr, en->prefix, addr) && (!best || en->prefix > best->prefix))
			best = en;
	}
	if (!best)
		return 0;
	for (uint32_t i = 0; i < best->val.nslots; i++)
		if (policy_value_add(val, &best->val.slot[i]))
			return -E2BIG;
	return (int)best->val.nslots;
}

static int cmp_cidr(const void *a, const void *b)
{
	const struct policy_rule *x = *(const struct policy_rule *const *)a;
	const struct policy_rule *y = *(const struct policy_rule *const *)b;
	int c = memcmp(x->addr, y->addr, 16);

	if (c)
		return c;
	if (x->prefix != y->prefix)
		return x->prefix < y->prefix ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

static int fold(struct policy *p, struct lerr *e)
{
	struct policy_rule **sorted;
	size_t n = 0, stack[129], depth = 0;
	char shown[64];
	int err = 0;

	sorted = calloc(p->n_rules ? p->n_rules : 1, sizeof(*sorted));
	if (!sorted)
		return lerr_set(e, ENOMEM, "policy: out of memory");
	for (size_t i = 0; i < p->n_rules; i++)
		if (!p->rules[i].is_host)
			sorted[n++] = &p->rules[i];
	qsort(sorted, n, sizeof(*sorted), cmp_cidr);
	p->entries = calloc(n ? n : 1, sizeof(*p->entries));
	if (!p->entries) {
		free(sorted);
		return lerr_set(e, ENOMEM, "policy: out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		const struct policy_rule *r = sorted[i];
		struct policy_entry *en;
		struct lantern_port_rule s = rule_slot(r, 0);

		if (p->n_entries && p->entries[p->n_entries - 1].prefix == r->prefix &&
		    !memcmp(p->entries[p->n_entries - 1].addr, r->addr, 16)) {
			en = &p->entries[p->n_entries - 1];
		} else {
			while (depth && !covers(p->entries[stack[depth - 1]].addr,
						p->entries[stack[depth - 1]].prefix, r->addr))
				depth--;
			en = &p->entries[p->n_entries];
			memcpy(en->addr, r->addr, 16);
			en->prefix = r->prefix;
			if (depth)
				en->val = p->entries[stack[depth - 1]].val;
			stack[depth++] = p->n_entries++;
		}
		if (policy_value_add(&en->val, &s)) {
			policy_format_prefix(en->addr, en->prefix, shown, sizeof(shown));
			err = lerr_set(e, E2BIG,
				       "policy: more than %d port rules apply to %s (rule %u, "
				       "counting the rules of covering prefixes)",
				       LANTERN_MAX_SLOTS, shown, r->index);
			break;
		}
	}
	free(sorted);
	return err;
}

/* True when methods (each a valid method name) lists every HTTP method, or none. */
static bool all_methods(char *const *methods, size_t n)
{
	static const char *const every[] = { "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT",
					     "OPTIONS", "TRACE", "PATCH" };
	unsigned seen = 0;

	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < ARRAY_SIZE(every); k++)
			if (methods[i] && !strcmp(methods[i], every[k]))
				seen |= 1u << k;
	return !n || seen == (1u << ARRAY_SIZE(every)) - 1;
}

int policy_compile(const struct spec *s, struct policy **out, struct lerr *e)
{
	struct policy *p;
	const char *mode = spec_label(s, "lantern.dev/egress-mode");
	int err = 0;

	*out = NULL;
	if (s->network == SPEC_NET_TENANT_VPC)
		return lerr_set(e, EINVAL,
				"policy: network \"tenant_vpc\" is not supported on this node");
	if (s->n_egress > 0xfffe)
		return lerr_set(e, E2BIG, "policy: %zu egress rules, at most %d are supported",
				s->n_egress, 0xfffe);
	/* the kernel judges connections, not HTTP requests: a rule narrowed to some methods
	 * would silently allow every method */
	for (size_t i = 0; i < s->n_egress; i++)
		if (!all_methods(s->egress[i].http_methods, s->egress[i].n_http_methods))
			return lerr_set(e, EPERM, "spawn: refused: spec.egress_rules[%zu].http_methods: this "
					"node enforces destinations, protocols and ports, not HTTP methods; "
					"leave it empty (every method)", i);
	p = calloc(1, sizeof(*p));
	if (!p)
		return lerr_set(e, ENOMEM, "policy: out of memory");
	if (mode && !strcmp(mode, "audit"))
		p->flags |= LANTERN_F_AUDIT;
	switch (s->network) {
	case SPEC_NET_NONE:
		p->mode = LANTERN_NET_NONE;
		*out = p;
		return 0;
	case SPEC_NET_OPEN:
		p->mode = LANTERN_NET_OPEN;
		break;
	default:
		p->mode = LANTERN_NET_ALLOWLIST;
		break;
	}
	p->rules = calloc(s->n_egress ? s->n_egress : 1, sizeof(*p->rules));
	if (!p->rules) {
		free(p);
		return lerr_set(e, ENOMEM, "policy: out of memory");
	}
	for (size_t i = 0; i < s->n_egress; i++) {
		struct lerr pe;

		err = policy_parse_pattern(s->egress[i].pattern, &p->rules[i], &pe);
		if (err) {
			lerr_set(e, err, "policy: spec.egress_rules[%zu].pattern: %s", i, pe.msg);
			goto fail;
		}
		p->rules[i].index = (uint16_t)i;
		p->rules[i].rate_bps = s->egress[i].rate_bps;
		p->has_hosts |= p->rules[i].is_host;
	}
	p->n_rules = s->n_egress;
	/* under network: open every destination is allowed; the rules add nothing */
	if (p->mode == LANTERN_NET_OPEN) {
		p->has_hosts = false;
		*out = p;
		return 0;
	}
	err = fold(p, e);
	if (err)
		goto fail;
	*out = p;
	return 0;
fail:
	policy_free(p);
	return err;
}

void policy_free(struct policy *p)
{
	if (!p)
		return;
	free(p->rules);
	free(p->entries);
	free(p);
}

static void digest_u64(crypto_hash_sha256_state *h, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	crypto_hash_sha256_update(h, b, sizeof(b));
}

void policy_digest(const struct policy *p, uint8_t out[32])
{
	crypto_hash_sha256_state h;

	crypto_hash_sha256_init(&h);
	crypto_hash_sha256_update(&h, (const uint8_t *)"lantern-policy-v1", 17);
	digest_u64(&h, p->mode);
	digest_u64(&h, p->flags);
	digest_u64(&h, p->n_rules);
	for (size_t i = 0; i < p->n_rules; i++) {
		const struct policy_rule *r = &p->rules[i];
		size_t hl = r->is_host ? strlen(r->host) : 0;

		digest_u64(&h, (uint64_t)r->protos | (uint64_t)r->port_lo << 8 | (uint64_t)r->port_hi << 24 |
			       (uint64_t)r->is_host << 40 | (uint64_t)r->prefix << 41 | (uint64_t)r->wildcard << 49 |
			       (uint64_t)r->v4 << 50);
		crypto_hash_sha256_update(&h, r->addr, sizeof(r->addr));
		digest_u64(&h, hl);
		crypto_hash_sha256_update(&h, (const uint8_t *)r->host, hl);
		digest_u64(&h, r->index);
		digest_u64(&h, r->rate_bps);
	}
	digest_u64(&h, p->n_entries);
	for (size_t i = 0; i < p->n_entries; i++) {
		const struct policy_entry *en = &p->entries[i];

		crypto_hash_sha256_update(&h, en->addr, sizeof(en->addr));
		digest_u64(&h, (uint64_t)en->prefix << 32 | en->val.nslots);
		for (uint32_t k = 0; k < en->val.nslots && k < LANTERN_MAX_SLOTS; k++) {
			const struct lantern_port_rule *sl = &en->val.slot[k];

			digest_u64(&h, (uint64_t)sl->port_lo | (uint64_t)sl->port_hi << 16 |
				       (uint64_t)sl->protos << 32 | (uint64_t)sl->rule << 40);
		}
	}
	crypto_hash_sha256_final(&h, out);
}
