/* policy.h: egress rules (spec.network + spec.egress_rules) compiled into the entries
 * of the lantern_egress LPM trie, plus the hostname patterns the DNS proxy enforces.
 *
 * Pattern syntax: [tcp://|udp://]DEST[:PORT[-PORT]]
 *   DEST: IPv4 address or CIDR, [IPv6 address or CIDR], or a hostname pattern
 *   (api.example.com, *.example.com). No scheme = TCP and UDP; no port = all ports.
 * The longest matching prefix decides; each entry carries the port rules of every
 * rule whose prefix covers it, so the result equals the union of the rules. */
#ifndef LANTERN_POLICY_H
#define LANTERN_POLICY_H

#include <linux/types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lantern.h"
#include "lantern/spec.h"
#include "lantern/util.h"

struct policy_rule {
	uint8_t protos;      /* LANTERN_PROTO_* */
	uint16_t port_lo;    /* 0..65535 inclusive; no port = 0..65535 */
	uint16_t port_hi;
	bool is_host;
	uint8_t addr[16];    /* IPv4 stored mapped (::ffff:a.b.c.d) */
	uint8_t prefix;      /* 0..128 on the 16-byte address */
	bool v4;             /* written as IPv4 */
	char host[256];      /* lowercased, without a leading "*." */
	bool wildcard;       /* "*.example.com": any name strictly below example.com */
	uint16_t index;      /* position in spec.egress_rules */
	uint64_t rate_bps;
};

/* Parses one pattern. Returns 0, or -EINVAL with a reason in e. */
int policy_parse_pattern(const char *pattern, struct policy_rule *r, struct lerr *e);

/* One LPM entry, without the policy id (the bpf module assigns generations). */
struct policy_entry {
	uint8_t addr[16];
	uint8_t prefix;      /* 0..128 */
	struct lantern_egress_value val;
};

struct policy {
	enum lantern_net_mode mode;
	uint32_t flags;                  /* LANTERN_F_AUDIT from the egress-mode label */
	struct policy_rule *rules;
	size_t n_rules;
	struct policy_entry *entries;    /* static CIDR entries, folded */
	size_t n_entries;
	bool has_hosts;                  /* any hostname pattern: needs the DNS proxy */
};

/* Compiles the spec's network section. Fails closed: tenant_vpc, more port rules at a
 * prefix than LANTERN_MAX_SLOTS, or a bad pattern give -EINVAL/-E2BIG and a reason. */
int policy_compile(const struct spec *s, struct policy **out, struct lerr *e);
void policy_free(struct policy *p);
/* SHA-256 of the compiled policy: its mode, flags, rules and entries in a fixed
 * little-endian encoding, so equal policies have equal digests (receipts sign it). */
void policy_digest(const struct policy *p, uint8_t out[32]);

/* Does qname (any case, trailing dot or not) match rule r's hostname pattern? */
bool policy_host_match(const struct policy_rule *r, const char *qname);

/* Adds the port rules of every hostname rule matching qname to val (with expires_ns);
 * returns how many rules matched, or -E2BIG when val has no room. */
int policy_fold_host(const struct policy *p, const char *qname, uint64_t expires_ns,
		     struct lantern_egress_value *val);

/* Adds the slots of the longest static entry covering addr (16 bytes, IPv4 mapped) to
 * val, so an address learned from DNS keeps the port rules of CIDR rules covering it;
 * returns how many slots that entry had, or -E2BIG when val has no room. */
int policy_fold_static(const struct policy *p, const uint8_t addr[16],
		       struct lantern_egress_value *val);

/* Adds rule slot s to val, merging with an equal slot (keeps the later expiry).
 * Returns 0 or -E2BIG. */
int policy_value_add(struct lantern_egress_value *val, const struct lantern_port_rule *s);

/* Renders an address/prefix as text: "10.1.0.0/16", "2001:db8::/32", "1.2.3.4". */
void policy_format_prefix(const uint8_t addr[16], uint8_t prefix, char *out, size_t len);

#endif
