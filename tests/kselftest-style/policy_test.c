/* policy_test.c: egress patterns and their compilation into LPM entries: the pattern
 * grammar (valid and refused), network modes, folding of covering rules so that one
 * longest-prefix lookup gives the union of the rules, slot limits, hostname matching,
 * and the compile time of a 10,000-rule allowlist. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lantern/policy.h"
#include "lantern/spec.h"
#include "lantern/util.h"
#include "tap.h"

#define BOTH (LANTERN_PROTO_TCP | LANTERN_PROTO_UDP)

static struct spec *spec_of(const char *network, const char *labels, const char *const *pats,
			    size_t n)
{
	size_t cap = 4096 + n * 64, len;
	char *doc = malloc(cap);
	struct spec_errors e;
	struct spec *s = NULL;

	len = (size_t)snprintf(doc, cap,
			       "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: p\n"
			       "  labels: {%s}\nspec:\n  image_digest: host\n  network: %s\n"
			       "  egress_rules:\n", labels ? labels : "", network);
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(doc + len, cap - len, "    - pattern: \"%s\"\n", pats[i]);
	spec_parse("p.yaml", doc, len, &s, &e);
	for (size_t i = 0; i < e.n; i++)
		tap_diag("%s", e.msg[i]);
	spec_errors_free(&e);
	free(doc);
	return s;
}

/* Address text (IPv4 or IPv6) as the 16 mapped bytes the trie uses. */
static void addr16(const char *text, uint8_t out[16])
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };

	memset(out, 0, 16);
	if (inet_pton(AF_INET, text, out + 12) == 1)
		memcpy(out, mapped, 12);
	else
		inet_pton(AF_INET6, text, out);
}

static void test_patterns(void)
{
	static const struct {
		const char *pat;
		uint8_t protos;
		uint16_t lo, hi;
		const char *prefix; /* policy_format_prefix of the result, or the host */
		bool host, wildcard, v4;
	} ok[] = {
		{ "10.1.0.0/16", BOTH, 0, 65535, "10.1.0.0/16", false, false, true },
		{ "tcp://1.2.3.4:443", LANTERN_PROTO_TCP, 443, 443, "1.2.3.4", false, false, true },
		{ "udp://10.0.0.0/8:5000-5100", LANTERN_PROTO_UDP, 5000, 5100, "10.0.0.0/8", false,
		  false, true },
		{ "0.0.0.0/0", BOTH, 0, 65535, "0.0.0.0/0", false, false, true },
		{ "[2001:db8::/32]", BOTH, 0, 65535, "2001:db8::/32", false, false, false },
		{ "[::1]:8080", BOTH, 8080, 8080, "::1", false, false, false },
		{ "TCP://[::ffff:0:0/96]:1-65535", LANTERN_PROTO_TCP, 1, 65535, "0.0.0.0/0", false,
		  false, false },
		{ "API.Example.com:443", BOTH, 443, 443, "api.example.com", true, false, false },
		{ "*.example.com", BOTH, 0, 65535, "example.com", true, true, false },
		{ "udp://localhost.:53", LANTERN_PROTO_UDP, 53, 53, "localhost", true, false, false },
	};
	static const struct {
		const char *pat, *why;
	} bad[] = {
		{ "", "empty pattern" },
		{ "10.1.0.1/16", "\"10.1.0.1/16\": host bits are set below the /16 prefix (the "
				 "network is 10.1.0.0/16)" },
		{ "[2001:db8::1/32]", "\"[2001:db8::1/32]\": host bits are set below the /32 prefix "
				      "(the network is 2001:db8::/32)" },
		{ "10.0.0.0/33", "\"10.0.0.0/33\": prefix \"/33\" is out of range /0-/32" },
		{ "[::/129]", "\"[::/129]\": prefix \"/129\" is out of range /0-/128" },
		{ "1.2.3.4:0", "\"1.2.3.4:0\": port 0 is out of range 1-65535" },
		{ "1.2.3.4:65536", "\"1.2.3.4:65536\": port 65536 is out of range 1-65535" },
		{ "1.2.3.4:90-80", "\"1.2.3.4:90-80\": port range 90-80 is reversed" },
		{ "1.2.3.4:http", "\"1.2.3.4:http\": port \"http\" is not a port or a range "
				  "PORT-PORT" },
		{ "2001:db8::1", "\"2001:db8::1\": an IPv6 address must be written in brackets, as "
				 "in [2001:db8::1]:443" },
		{ "http://example.com", "\"http://example.com\": unknown scheme \"http\" (tcp:// or "
					"udp://, or none for both)" },
		{ "1.2.3", "\"1.2.3\": \"1.2.3\" is not an IPv4 address" },
		{ "api.*.com", "\"api.*.com\": a wildcard is allowed only as the whole first label "
			       "(*.example.com)" },
		{ "*", "\"*\": a wildcard is allowed only as the whole first label (*.example.com)" },
		{ "-bad.com", "\"-bad.com\": hostname label starts or ends with '-'" },
		{ "a_b.com", "\"a_b.com\": '_' is not allowed in a hostname (letters, digits, '-', "
			     "'.')" },
		{ "a..com", "\"a..com\": hostname has an empty label" },
		{ "[::1", "\"[::1\": '[' without a closing ']'" },
		{ "tcp://", "\"tcp://\": no destination" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		struct policy_rule r;
		struct lerr e = { "" };
		char got[64];
		int rc = policy_parse_pattern(ok[i].pat, &r, &e);

		if (r.is_host)
			snprintf(got, sizeof(got), "%s", r.host);
		else
			policy_format_prefix(r.addr, r.prefix, got, sizeof(got));
		if (!tap_ok(rc == 0 && r.protos == ok[i].protos && r.port_lo == ok[i].lo &&
			    r.port_hi == ok[i].hi && !strcmp(got, ok[i].prefix) &&
			    r.is_host == ok[i].host && r.wildcard == ok[i].wildcard &&
			    r.v4 == ok[i].v4, "pattern %s", ok[i].pat))
			tap_diag("rc %d (%s), protos %u ports %u-%u dest %s", rc, e.msg, r.protos,
				 r.port_lo, r.port_hi, got);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct policy_rule r;
		struct lerr e = { "" };
		int rc = policy_parse_pattern(bad[i].pat, &r, &e);

		if (!tap_ok(rc == -EINVAL && !strcmp(e.msg, bad[i].why), "refused: \"%s\"",
			    bad[i].pat))
			tap_diag("rc %d: %s", rc, e.msg);
	}
	{
		struct policy_rule r;
		struct lerr e;

		policy_parse_pattern("10.1.0.0/16", &r, &e);
		tap_ok(r.prefix == 112 && r.addr[10] == 0xff && r.addr[11] == 0xff &&
		       r.addr[12] == 10 && r.addr[13] == 1, "IPv4 stored mapped with prefix 96+n");
	}
}

static void test_format(void)
{
	uint8_t a[16];
	char out[64];
	bool ok = true;

	addr16("10.1.0.0", a);
	policy_format_prefix(a, 112, out, sizeof(out));
	ok &= !strcmp(out, "10.1.0.0/16");
	addr16("1.2.3.4", a);
	policy_format_prefix(a, 128, out, sizeof(out));
	ok &= !strcmp(out, "1.2.3.4");
	addr16("2001:db8::", a);
	policy_format_prefix(a, 32, out, sizeof(out));
	ok &= !strcmp(out, "2001:db8::/32");
	addr16("::1", a);
	policy_format_prefix(a, 128, out, sizeof(out));
	ok &= !strcmp(out, "::1");
	tap_ok(ok, "policy_format_prefix: 10.1.0.0/16, 1.2.3.4, 2001:db8::/32, ::1");
}

static const struct policy_entry *entry(const struct policy *p, const char *text, uint8_t prefix)
{
	uint8_t a[16];

	addr16(text, a);
	for (size_t i = 0; i < p->n_entries; i++)
		if (p->entries[i].prefix == prefix && !memcmp(p->entries[i].addr, a, 16))
			return &p->entries[i];
	return NULL;
}

/* Does the longest matching entry allow (addr, proto, port)? Mirrors the kernel. */
static bool allows(const struct policy *p, const char *text, uint8_t proto, uint16_t port)
{
	const struct policy_entry *best = NULL;
	uint8_t a[16];

	addr16(text, a);
	for (size_t i = 0; i < p->n_entries; i++) {
		const struct policy_entry *en = &p->entries[i];
		unsigned full = en->prefix / 8, rest = en->prefix % 8;

		if (memcmp(en->addr, a, full) ||
		    (rest && ((en->addr[full] ^ a[full]) & (0xff << (8 - rest)))))
			continue;
		if (!best || en->prefix > best->prefix)
			best = en;
	}
	for (uint32_t i = 0; best && i < best->val.nslots; i++) {
		const struct lantern_port_rule *s = &best->val.slot[i];

		if ((s->protos & proto) && port >= s->port_lo && port <= s->port_hi)
			return true;
	}
	return false;
}

static void test_modes(void)
{
	const char *pats[] = { "10.0.0.0/8", "*.example.com" };
	struct spec *s;
	struct policy *p = NULL;
	struct lerr e = { "" };
	int rc;

	s = spec_of("none", NULL, NULL, 0);
	rc = policy_compile(s, &p, &e);
	tap_ok(rc == 0 && p->mode == LANTERN_NET_NONE && p->n_entries == 0 && !p->flags,
	       "network none: mode NONE, no entries");
	policy_free(p);
	spec_free(s);

	s = spec_of("open", "lantern.dev/egress-mode: audit", pats, 2);
	rc = policy_compile(s, &p, &e);
	tap_ok(rc == 0 && p->mode == LANTERN_NET_OPEN && p->n_entries == 0 &&
	       p->flags == LANTERN_F_AUDIT, "network open: mode OPEN; audit label sets the flag");
	policy_free(p);
	spec_free(s);

	s = spec_of("allowlist_domain", "lantern.dev/egress-mode: enforce", pats, 2);
	rc = policy_compile(s, &p, &e);
	tap_ok(rc == 0 && p->mode == LANTERN_NET_ALLOWLIST && p->n_entries == 1 &&
	       p->n_rules == 2 && p->has_hosts && !p->flags && p->rules[1].index == 1,
	       "allowlist_domain: CIDR entries, hostname rules kept for DNS, enforce = no flag");
	policy_free(p);
	spec_free(s);

	s = spec_of("allowlist_domain", NULL, NULL, 0);
	rc = policy_compile(s, &p, &e);
	tap_ok(rc == 0 && p->mode == LANTERN_NET_ALLOWLIST && p->n_entries == 0 && !p->has_hosts,
	       "allowlist_domain without rules: default deny");
	policy_free(p);
	spec_free(s);

	s = spec_of("tenant_vpc", NULL, pats, 1);
	p = (struct policy *)1;
	rc = policy_compile(s, &p, &e);
	tap_ok(rc == -EINVAL && !p &&
	       !strcmp(e.msg, "policy: network \"tenant_vpc\" is not supported on this node"),
	       "tenant_vpc fails closed: %s", e.msg);
	spec_free(s);
}

static void test_folding(void)
{
	const char *pats[] = { "tcp://10.0.0.0/8:443", "10.1.0.0/16", "udp://10.1.2.3:53",
			       "tcp://10.1.0.0/16:22", "[::ffff:0:0/96]:8080", "[2001:db8::/32]:443" };
	struct spec *s = spec_of("allowlist_domain", NULL, pats, ARRAY_SIZE(pats));
	struct policy *p = NULL;
	struct lerr e = { "" };
	const struct policy_entry *e8, *e16, *e32;

	if (!tap_ok(s && policy_compile(s, &p, &e) == 0, "folding spec compiles")) {
		tap_diag("%s", e.msg);
		spec_free(s);
		return;
	}
	e8 = entry(p, "10.0.0.0", 104);
	e16 = entry(p, "10.1.0.0", 112);
	e32 = entry(p, "10.1.2.3", 128);
	tap_ok(p->n_entries == 5 && e8 && e16 && e32, "one entry per distinct prefix (5)");
	tap_ok(e8 && e8->val.nslots == 2 && e8->val.slot[0].rule == 4 &&
	       e8->val.slot[1].rule == 0 && e8->val.slot[1].port_lo == 443,
	       "10.0.0.0/8 carries its own 443 slot and the covering ::ffff:0:0/96 8080 slot");
	tap_ok(e16 && e16->val.nslots == 4 && e16->val.slot[2].rule == 1 &&
	       e16->val.slot[3].rule == 3 && e16->val.slot[3].protos == LANTERN_PROTO_TCP,
	       "10.1.0.0/16 entry also carries the /8's 443-only slot; same-prefix rules merge");
	tap_ok(e32 && e32->val.nslots == 5 && e32->val.slot[4].rule == 2 &&
	       e32->val.slot[4].expires_ns == 0, "10.1.2.3 carries every covering rule");
	tap_ok(allows(p, "10.2.3.4", LANTERN_PROTO_TCP, 443) &&
	       !allows(p, "10.2.3.4", LANTERN_PROTO_TCP, 80) &&
	       !allows(p, "10.2.3.4", LANTERN_PROTO_UDP, 443),
	       "10.2.x.x: only tcp 443 (and 8080)");
	tap_ok(allows(p, "10.1.9.9", LANTERN_PROTO_TCP, 80) &&
	       allows(p, "10.1.9.9", LANTERN_PROTO_UDP, 443) &&
	       allows(p, "10.1.9.9", LANTERN_PROTO_TCP, 443),
	       "10.1.x.x: every port, both protocols");
	tap_ok(allows(p, "10.1.2.3", LANTERN_PROTO_UDP, 53) &&
	       allows(p, "10.1.2.3", LANTERN_PROTO_TCP, 1234) &&
	       allows(p, "192.0.2.1", LANTERN_PROTO_TCP, 8080) &&
	       !allows(p, "192.0.2.1", LANTERN_PROTO_TCP, 80),
	       "a more specific rule never narrows; an IPv6 rule over ::ffff:0:0/96 covers IPv4");
	tap_ok(allows(p, "2001:db8::5", LANTERN_PROTO_TCP, 443) &&
	       !allows(p, "2001:db8::5", LANTERN_PROTO_TCP, 80) &&
	       !allows(p, "2001:db9::5", LANTERN_PROTO_TCP, 443), "IPv6 /32 with a port");
	{
		struct lantern_egress_value v = { 0 };
		uint8_t a[16];

		addr16("10.1.7.7", a);
		tap_ok(policy_fold_static(p, a, &v) == 4 && v.nslots == 4,
		       "policy_fold_static: a DNS-learned address inherits its covering entry");
	}
	policy_free(p);
	spec_free(s);
}

static void test_e2big(void)
{
	const char *pats[] = { "10.0.0.0/8:1", "10.0.0.0/8:2", "10.0.0.0/8:3", "10.0.0.0/8:4",
			       "10.0.0.0/8:5", "10.1.0.0/16:6", "10.1.0.0/16:7", "10.1.0.0/16:8",
			       "10.1.2.0/24:9" };
	struct spec *s = spec_of("allowlist_domain", NULL, pats, ARRAY_SIZE(pats));
	struct policy *p = NULL;
	struct lerr e = { "" };
	int rc = s ? policy_compile(s, &p, &e) : 0;

	tap_ok(rc == -E2BIG && !p && strstr(e.msg, "10.1.2.0/24"),
	       "more than %d slots at one prefix: -E2BIG naming it (%s)", LANTERN_MAX_SLOTS,
	       e.msg);
	spec_free(s);
	s = spec_of("allowlist_domain", NULL, pats, ARRAY_SIZE(pats) - 1);
	rc = s ? policy_compile(s, &p, &e) : -1;
	tap_ok(rc == 0 && entry(p, "10.1.0.0", 112)->val.nslots == LANTERN_MAX_SLOTS,
	       "exactly %d slots fit", LANTERN_MAX_SLOTS);
	policy_free(p);
	spec_free(s);
}

static void test_hosts(void)
{
	struct policy_rule w, x;
	struct lerr e;
	const char *pats[] = { "*.example.com:443", "api.example.com", "udp://*.example.com:53" };
	struct spec *s = spec_of("allowlist_domain", NULL, pats, ARRAY_SIZE(pats));
	struct policy *p = NULL;
	struct lantern_egress_value v = { 0 };

	policy_parse_pattern("*.Example.com", &w, &e);
	policy_parse_pattern("api.example.com", &x, &e);
	tap_ok(policy_host_match(&w, "api.example.com") && policy_host_match(&w, "A.B.EXAMPLE.COM.") &&
	       !policy_host_match(&w, "example.com") && !policy_host_match(&w, "badexample.com") &&
	       !policy_host_match(&w, ".example.com") && !policy_host_match(&w, "example.com.evil"),
	       "wildcard matches names strictly below, any case, trailing dot ignored");
	tap_ok(policy_host_match(&x, "API.example.com.") && !policy_host_match(&x, "x.api.example.com") &&
	       !policy_host_match(&x, "api.example.co"), "exact hostname match");
	if (!s || policy_compile(s, &p, &e)) {
		tap_ok(false, "host policy compiles: %s", e.msg);
		spec_free(s);
		return;
	}
	tap_ok(policy_fold_host(p, "api.example.com", 100, &v) == 3 && v.nslots == 3 &&
	       v.slot[0].expires_ns == 100 && v.slot[1].rule == 1 && v.slot[2].port_lo == 53,
	       "policy_fold_host adds every matching rule's slot with its expiry");
	tap_ok(policy_fold_host(p, "api.example.com", 50, &v) == 3 && v.nslots == 3 &&
	       v.slot[0].expires_ns == 100 && policy_fold_host(p, "api.example.com", 300, &v) == 3 &&
	       v.slot[2].expires_ns == 300, "equal slots merge and keep the later expiry");
	tap_ok(policy_fold_host(p, "example.com", 1, &v) == 0 && v.nslots == 3,
	       "a name no rule matches adds nothing");
	{
		struct lantern_port_rule st = { .expires_ns = 0, .port_lo = 443, .port_hi = 443,
						.protos = BOTH, .rule = 0 };
		struct lantern_port_rule extra = { .port_lo = 1, .port_hi = 1, .protos = 1 };
		int rc = 0;

		policy_value_add(&v, &st);
		tap_ok(v.nslots == 3 && v.slot[0].expires_ns == 0,
		       "a static slot merged over a learned one never expires");
		for (int i = 0; i < LANTERN_MAX_SLOTS && !rc; i++) {
			extra.rule = (uint16_t)(10 + i);
			rc = policy_value_add(&v, &extra);
		}
		tap_ok(rc == -E2BIG && v.nslots == LANTERN_MAX_SLOTS, "policy_value_add: -E2BIG when full");
	}
	policy_free(p);
	spec_free(s);
}

static void test_scale(void)
{
	enum { N = 10000 };
	char **pats = calloc(N, sizeof(*pats));
	struct spec *s;
	struct policy *p = NULL;
	struct lerr e = { "" };
	struct timespec t0, t1;
	double ms;
	int rc;

	for (int i = 0; i < N; i++)
		if (asprintf(&pats[i], "tcp://10.%d.%d.%d:443", i % 7, (i / 7) % 256, i % 251) < 0)
			abort();
	/* a few covering rules so folding has work to do */
	free(pats[0]);
	pats[0] = strdup("10.0.0.0/8:80");
	free(pats[1]);
	pats[1] = strdup("[::/0]:53");
	s = spec_of("allowlist_domain", NULL, (const char *const *)pats, N);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = s ? policy_compile(s, &p, &e) : -1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	tap_ok(rc == 0 && p->n_entries > 9000 && ms < 50,
	       "10,000 rules compile in %.2f ms (< 50 ms), %zu entries", ms, p ? p->n_entries : 0);
	tap_ok(p && allows(p, "10.3.9.9", LANTERN_PROTO_TCP, 80) &&
	       allows(p, "192.0.2.1", LANTERN_PROTO_UDP, 53), "covering rules folded at scale");
	policy_free(p);
	spec_free(s);
	for (int i = 0; i < N; i++)
		free(pats[i]);
	free(pats);
}

int main(void)
{
	tap_plan(10 + 19 + 1 + 1 + 5 + 10 + 2 + 7 + 2);
	test_patterns();
	test_format();
	test_modes();
	test_folding();
	test_e2big();
	test_hosts();
	test_scale();
	return tap_done();
}
