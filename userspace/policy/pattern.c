/* pattern.c: one egress pattern, `[tcp://|udp://]DEST[:PORT[-PORT]]`, parsed into a
 * policy_rule; hostname matching for the DNS proxy; prefixes rendered back as text.
 *
 * Addresses are kept as 16 bytes with IPv4 mapped (::ffff:a.b.c.d, prefix 96 + n) so
 * that one LPM trie, and one comparison routine here, serves both families. */
#include "lantern/policy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static bool all_digits(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return false;
	return true;
}

/* Parses a decimal number of at most 6 digits in s[0..n); -1 when it is not one. */
static long small_number(const char *s, size_t n)
{
	long v = 0;

	if (!all_digits(s, n) || n > 6)
		return -1;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (s[i] - '0');
	return v;
}

static int parse_port(const char *pat, const char *s, struct policy_rule *r, struct lerr *e)
{
	const char *dash = strchr(s, '-');
	size_t nlo = dash ? (size_t)(dash - s) : strlen(s);
	long lo = small_number(s, nlo), hi = dash ? small_number(dash + 1, strlen(dash + 1)) : lo;

	if (lo < 0 || hi < 0)
		return lerr_set(e, EINVAL, "\"%s\": port \"%s\" is not a port or a range PORT-PORT",
				pat, s);
	if (lo == 0 || hi == 0 || lo > 65535 || hi > 65535)
		return lerr_set(e, EINVAL, "\"%s\": port %ld is out of range 1-65535", pat,
				lo == 0 || lo > 65535 ? lo : hi);
	if (lo > hi)
		return lerr_set(e, EINVAL, "\"%s\": port range %ld-%ld is reversed", pat, lo, hi);
	r->port_lo = (uint16_t)lo;
	r->port_hi = (uint16_t)hi;
	return 0;
}

/* Zeroes the bits below prefix in a copy and tells whether anything changed. */
static bool host_bits_set(const uint8_t addr[16], unsigned prefix, uint8_t net[16])
{
	bool set = false;

	for (unsigned i = 0; i < 16; i++) {
		unsigned keep = prefix >= (i + 1) * 8 ? 8 : prefix > i * 8 ? prefix - i * 8 : 0;
		uint8_t mask = keep ? (uint8_t)(0xff << (8 - keep)) : 0;

		net[i] = addr[i] & mask;
		set |= net[i] != addr[i];
	}
	return set;
}

/* Address text plus an optional "/N": fills r->addr and r->prefix. */
static int parse_cidr(const char *pat, const char *s, bool v6, struct policy_rule *r,
		      struct lerr *e)
{
	char text[INET6_ADDRSTRLEN + 8];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	unsigned max = v6 ? 128 : 32;
	long prefix = max;
	uint8_t net[16];
	char shown[64];

	if (alen == 0 || alen >= INET6_ADDRSTRLEN)
		return lerr_set(e, EINVAL, "\"%s\": \"%s\" is not an IP%s address", pat, s,
				v6 ? "v6" : "v4");
	memcpy(text, s, alen);
	text[alen] = '\0';
	if (v6) {
		if (inet_pton(AF_INET6, text, r->addr) != 1)
			return lerr_set(e, EINVAL, "\"%s\": \"%s\" is not an IPv6 address", pat, text);
	} else {
		memcpy(r->addr, v4_mapped_prefix, 12);
		if (inet_pton(AF_INET, text, r->addr + 12) != 1)
			return lerr_set(e, EINVAL, "\"%s\": \"%s\" is not an IPv4 address", pat, text);
	}
	if (slash) {
		prefix = small_number(slash + 1, strlen(slash + 1));
		if (prefix < 0 || prefix > (long)max)
			return lerr_set(e, EINVAL, "\"%s\": prefix \"/%s\" is out of range /0-/%u",
					pat, slash + 1, max);
	}
	r->prefix = (uint8_t)(v6 ? prefix : 96 + prefix);
	r->v4 = !v6;
	if (host_bits_set(r->addr, r->prefix, net)) {
		policy_format_prefix(net, r->prefix, shown, sizeof(shown));
		if (!strchr(shown, '/'))
			snprintf(shown + strlen(shown), sizeof(shown) - strlen(shown), "/%ld",
				 prefix);
		return lerr_set(e, EINVAL,
				"\"%s\": host bits are set below the /%ld prefix (the network is %s)",
				pat, prefix, shown);
	}
	return 0;
}

/* RFC 1123 hostname, optionally "*." + hostname; lowercased into r->host. */
static int parse_host(const char *pat, const char *s, struct policy_rule *r, struct lerr *e)
{
	size_t n = strlen(s), label = 0;

	if (n && s[n - 1] == '.')
		n--;
	if (n >= 2 && s[0] == '*' && s[1] == '.') {
		r->wildcard = true;
		s += 2;
		n -= 2;
	}
	if (n == 0)
		return lerr_set(e, EINVAL, "\"%s\": no destination", pat);
	if (n > 253)
		return lerr_set(e, EINVAL, "\"%s\": hostname is longer than 253 characters", pat);
	for (size_t i = 0; i <= n; i++) {
		char c = i < n ? s[i] : '.';

		if (c == '.') {
			if (label == 0)
				return lerr_set(e, EINVAL, "\"%s\": hostname has an empty label", pat);
			if (label > 63)
				return lerr_set(e, EINVAL,
						"\"%s\": hostname label is longer than 63 characters",
						pat);
			if (s[i - 1] == '-' || s[i - label] == '-')
				return lerr_set(e, EINVAL,
						"\"%s\": hostname label starts or ends with '-'", pat);
			r->host[i] = '.';
			label = 0;
			continue;
		}
		if (c == '*')
			return lerr_set(e, EINVAL,
					"\"%s\": a wildcard is allowed only as the whole first label "
					"(*.example.com)", pat);
		if (!isalnum((unsigned char)c) && c != '-')
			return lerr_set(e, EINVAL,
					"\"%s\": '%c' is not allowed in a hostname (letters, digits, '-', '.')",
					pat, c);
		r->host[i] = (char)tolower((unsigned char)c);
		label++;
	}
	r->host[n] = '\0';
	r->is_host = true;
	return 0;
}

int policy_parse_pattern(const char *pattern, struct policy_rule *r, struct lerr *e)
{
	const char *s = pattern, *sep, *colon, *dest_end;
	char dest[300];
	size_t dlen;
	int err;

	memset(r, 0, sizeof(*r));
	r->protos = LANTERN_PROTO_TCP | LANTERN_PROTO_UDP;
	r->port_lo = 0;
	r->port_hi = 65535;
	if (!pattern || !*pattern)
		return lerr_set(e, EINVAL, "empty pattern");
	sep = strstr(s, "://");
	if (sep) {
		if (sep - s == 3 && !strncasecmp(s, "tcp", 3))
			r->protos = LANTERN_PROTO_TCP;
		else if (sep - s == 3 && !strncasecmp(s, "udp", 3))
			r->protos = LANTERN_PROTO_UDP;
		else
			return lerr_set(e, EINVAL,
					"\"%s\": unknown scheme \"%.*s\" (tcp:// or udp://, or none "
					"for both)", pattern, (int)(sep - s), s);
		s = sep + 3;
	}
	if (*s == '[') {
		const char *close = strchr(s, ']');

		if (!close)
			return lerr_set(e, EINVAL, "\"%s\": '[' without a closing ']'", pattern);
		if (close[1] && close[1] != ':')
			return lerr_set(e, EINVAL, "\"%s\": expected \":PORT\" after ']'", pattern);
		dlen = (size_t)(close - s - 1);
		if (dlen >= sizeof(dest))
			return lerr_set(e, EINVAL, "\"%s\": address is too long", pattern);
		memcpy(dest, s + 1, dlen);
		dest[dlen] = '\0';
		if (close[1] == ':' && (err = parse_port(pattern, close + 2, r, e)))
			return err;
		return parse_cidr(pattern, dest, true, r, e);
	}
	colon = strchr(s, ':');
	if (colon && strchr(colon + 1, ':'))
		return lerr_set(e, EINVAL,
				"\"%s\": an IPv6 address must be written in brackets, as in "
				"[2001:db8::1]:443", pattern);
	dest_end = colon ? colon : s + strlen(s);
	dlen = (size_t)(dest_end - s);
	if (dlen == 0)
		return lerr_set(e, EINVAL, "\"%s\": no destination", pattern);
	if (dlen >= sizeof(dest))
		return lerr_set(e, EINVAL, "\"%s\": destination is too long", pattern);
	memcpy(dest, s, dlen);
	dest[dlen] = '\0';
	if (colon && (err = parse_port(pattern, colon + 1, r, e)))
		return err;
	/* Digits, dots and a slash can only be meant as IPv4: never read them as a name. */
	if (strspn(dest, "0123456789./") == dlen || strchr(dest, '/'))
		return parse_cidr(pattern, dest, false, r, e);
	return parse_host(pattern, dest, r, e);
}

bool policy_host_match(const struct policy_rule *r, const char *qname)
{
	size_t qn, hn;

	if (!r->is_host || !qname)
		return false;
	qn = strlen(qname);
	if (qn && qname[qn - 1] == '.')
		qn--;
	hn = strlen(r->host);
	if (!r->wildcard)
		return qn == hn && !strncasecmp(qname, r->host, hn);
	/* strictly below: at least one more label, separated by a dot */
	return qn > hn + 1 && qname[qn - hn - 1] == '.' &&
	       !strncasecmp(qname + qn - hn, r->host, hn);
}

void policy_format_prefix(const uint8_t addr[16], uint8_t prefix, char *out, size_t len)
{
	char text[INET6_ADDRSTRLEN];

	if (!memcmp(addr, v4_mapped_prefix, 12) && prefix >= 96) {
		inet_ntop(AF_INET, addr + 12, text, sizeof(text));
		if (prefix == 128)
			snprintf(out, len, "%s", text);
		else
			snprintf(out, len, "%s/%u", text, prefix - 96);
		return;
	}
	inet_ntop(AF_INET6, addr, text, sizeof(text));
	if (prefix == 128)
		snprintf(out, len, "%s", text);
	else
		snprintf(out, len, "%s/%u", text, prefix);
}
