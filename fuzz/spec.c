/* spec.c (fuzz target "spec"): agent.yaml as a `lantern run` client or the control plane
 * sends it, through spec_parse and, when it parses, policy_compile.
 *
 * Properties checked beyond the sanitizers:
 *  - every error names the file, line and column ("agent.yaml:L:C: ...");
 *  - the normalized JSON of a valid spec parses again to the same JSON (the control
 *    plane sends exactly that to nodes, which parse it with the same code);
 *  - the compiled LPM entries equal the union of the CIDR rules: for addresses at and
 *    around every rule, the longest entry covering the address holds the slots of
 *    exactly the rules whose prefix covers it (what the kernel's one lookup relies on);
 *  - hostname rules match their own name, and a wildcard matches strictly below it. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzlib.h"
#include "lantern/policy.h"
#include "lantern/spec.h"

static bool covers(const uint8_t *net, unsigned plen, const uint8_t *addr)
{
	for (unsigned i = 0; i < 16; i++) {
		unsigned keep = plen >= (i + 1) * 8 ? 8 : plen > i * 8 ? plen - i * 8 : 0;
		uint8_t mask = keep ? (uint8_t)(0xff << (8 - keep)) : 0;

		if ((net[i] ^ addr[i]) & mask)
			return false;
	}
	return true;
}

static bool has_slot(const struct lantern_egress_value *v, const struct policy_rule *r)
{
	for (uint32_t i = 0; i < v->nslots; i++)
		if (v->slot[i].rule == r->index && v->slot[i].protos == r->protos &&
		    v->slot[i].port_lo == r->port_lo && v->slot[i].port_hi == r->port_hi &&
		    !v->slot[i].expires_ns)
			return true;
	return false;
}

/* The slots of addr's longest entry are the rules covering addr, no more, no less. */
static void check_union(const struct policy *p, const uint8_t addr[16])
{
	struct lantern_egress_value v = { 0 };
	size_t want = 0;
	char shown[64];
	int n = policy_fold_static(p, addr, &v);

	policy_format_prefix(addr, 128, shown, sizeof(shown));
	FZ_CHECK(n >= 0 && (uint32_t)n == v.nslots, "%s: fold_static gave %d, %u slots", shown, n,
		 v.nslots);
	for (size_t i = 0; i < p->n_rules; i++) {
		const struct policy_rule *r = &p->rules[i];

		if (r->is_host || !covers(r->addr, r->prefix, addr))
			continue;
		want++;
		FZ_CHECK(has_slot(&v, r), "%s: covered by rule %zu but its entry lacks the rule", shown, i);
	}
	FZ_CHECK(want == v.nslots, "%s: %zu rules cover it, its entry holds %u slots", shown, want,
		 v.nslots);
}

static void check_policy(const struct policy *p)
{
	for (size_t i = 0; i < p->n_entries; i++)
		for (size_t j = i + 1; j < p->n_entries; j++)
			FZ_CHECK(p->entries[i].prefix != p->entries[j].prefix ||
				 memcmp(p->entries[i].addr, p->entries[j].addr, 16),
				 "entries %zu and %zu have the same prefix", i, j);
	for (size_t i = 0; i < p->n_rules; i++) {
		const struct policy_rule *r = &p->rules[i];
		uint8_t a[16];

		if (r->is_host) {
			char below[300];

			FZ_CHECK(policy_host_match(r, r->host) == !r->wildcard,
				 "rule %zu does not match its own name %s", i, r->host);
			snprintf(below, sizeof(below), "x.%s.", r->host);
			FZ_CHECK(policy_host_match(r, below) == r->wildcard,
				 "rule %zu and the name below it, %s", i, below);
			continue;
		}
		/* the network address, its last address, and one just outside either end */
		memcpy(a, r->addr, 16);
		check_union(p, a);
		for (unsigned b = r->prefix; b < 128; b++)
			a[b / 8] |= (uint8_t)(0x80 >> (b % 8));
		check_union(p, a);
		for (int k = 15; k >= 0 && ++a[k] == 0; k--)
			;
		check_union(p, a);
		memcpy(a, r->addr, 16);
		for (int k = 15; k >= 0 && a[k]-- == 0; k--)
			;
		check_union(p, a);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spec *s = NULL, *again = NULL;
	struct spec_errors errs = { 0 };
	struct policy *p = NULL;
	struct lerr e = { 0 };
	char *norm, *norm2;
	int err;

	if (spec_parse("agent.yaml", (const char *)data, size, &s, &errs) < 0) {
		FZ_CHECK(errs.n > 0, "spec refused with no error");
		for (size_t i = 0; i < errs.n; i++) {
			unsigned line, col;

			FZ_CHECK(sscanf(errs.msg[i], "agent.yaml:%u:%u: ", &line, &col) == 2,
				 "error without file:line:col: %s", errs.msg[i]);
		}
		spec_errors_free(&errs);
		return 0;
	}
	FZ_CHECK(errs.n == 0, "spec accepted with %zu errors", errs.n);
	norm = json_dumps(s->json, JSON_COMPACT | JSON_SORT_KEYS);
	FZ_CHECK(norm, "normalized spec cannot be written");
	err = spec_parse("normalized", norm, strlen(norm), &again, &errs);
	FZ_CHECK(err == 0, "normalized spec refused: %s: %s", errs.n ? errs.msg[0] : "?", norm);
	norm2 = json_dumps(again->json, JSON_COMPACT | JSON_SORT_KEYS);
	FZ_CHECK(norm2 && !strcmp(norm, norm2), "normalizing twice differs:\n%s\n%s", norm, norm2);
	free(norm);
	free(norm2);
	spec_free(again);

	err = policy_compile(s, &p, &e);
	if (err == 0) {
		/* under network: open and none the rules are not compiled into entries */
		if (p->mode == LANTERN_NET_ALLOWLIST)
			check_policy(p);
		policy_free(p);
	} else {
		/* fails closed: a bad pattern, too many rules, or what the node cannot enforce */
		FZ_CHECK(err == -EINVAL || err == -E2BIG || err == -EPERM, "policy_compile: %d (%s)", err,
			 e.msg);
		FZ_CHECK(e.msg[0], "policy refused without a reason");
	}
	spec_free(s);
	return 0;
}
