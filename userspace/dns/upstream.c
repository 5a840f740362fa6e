/* upstream.c: where the FQDN proxy forwards allowed queries: "--dns-upstream ADDR:PORT"
 * or, without it, the host's first resolv.conf nameserver. Only parses; never sends. */
#include "lantern/dns.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DNS_RESOLV_CONF "/etc/resolv.conf"

static int parse_port(const char *s, uint16_t *port)
{
	char *end;
	unsigned long v;

	if (!*s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v == 0 || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

/* addr is an IPv4 or IPv6 literal (no brackets); a "%zone" suffix is refused because a
 * scoped upstream would need an interface this module knows nothing about. */
static int fill_addr(const char *addr, uint16_t port, struct dns_upstream *u)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&u->addr;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&u->addr;

	memset(u, 0, sizeof(*u));
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		u->len = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		u->len = sizeof(*sin6);
		return 0;
	}
	return -EINVAL;
}

static int parse_spec(const char *s, struct dns_upstream *u, struct lerr *e)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *port_s = NULL;
	uint16_t port = 53;
	size_t hlen;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close)
			return lerr_set(e, EINVAL, "dns: upstream \"%s\": missing ']'", s);
		hlen = (size_t)(close - s - 1);
		if (hlen >= sizeof(host))
			return lerr_set(e, EINVAL, "dns: upstream \"%s\": address too long", s);
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
		if (close[1] == ':')
			port_s = close + 2;
		else if (close[1])
			return lerr_set(e, EINVAL, "dns: upstream \"%s\": junk after ']'", s);
		if (!strchr(host, ':'))
			return lerr_set(e, EINVAL, "dns: upstream \"%s\": brackets hold an IPv6 address", s);
	} else {
		colon = strchr(s, ':');
		/* more than one colon: a bare IPv6 address, port 53 */
		if (colon && !strchr(colon + 1, ':')) {
			hlen = (size_t)(colon - s);
			port_s = colon + 1;
		} else {
			hlen = strlen(s);
		}
		if (hlen >= sizeof(host))
			return lerr_set(e, EINVAL, "dns: upstream \"%s\": address too long", s);
		memcpy(host, s, hlen);
		host[hlen] = '\0';
	}
	if (port_s && parse_port(port_s, &port) < 0)
		return lerr_set(e, EINVAL, "dns: upstream \"%s\": bad port \"%s\"", s, port_s);
	if (fill_addr(host, port, u) < 0)
		return lerr_set(e, EINVAL, "dns: upstream \"%s\": \"%s\" is not an IP address", s,
				host);
	return 0;
}

static int parse_resolv_conf(struct dns_upstream *u, struct lerr *e)
{
	FILE *f = fopen(DNS_RESOLV_CONF, "re");
	char line[512];

	if (!f)
		return lerr_set(e, errno, "dns: upstream: cannot read %s: %s", DNS_RESOLV_CONF,
				strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		char *p = line, *addr;

		while (*p == ' ' || *p == '\t')
			p++;
		if (strncmp(p, "nameserver", 10) || (p[10] != ' ' && p[10] != '\t'))
			continue;
		p += 10;
		while (*p == ' ' || *p == '\t')
			p++;
		addr = p;
		while (*p && !isspace((unsigned char)*p))
			p++;
		*p = '\0';
		fclose(f);
		/* resolv.conf may carry a zone ("fe80::1%eth0"); see fill_addr */
		if (fill_addr(addr, 53, u) < 0)
			return lerr_set(e, EINVAL, "dns: upstream: %s: nameserver \"%s\" is not usable",
					DNS_RESOLV_CONF, addr);
		return 0;
	}
	fclose(f);
	return lerr_set(e, ENOENT, "dns: upstream: %s has no nameserver line", DNS_RESOLV_CONF);
}

int dns_upstream_parse(const char *s, struct dns_upstream *u, struct lerr *e)
{
	if (!s || !*s)
		return parse_resolv_conf(u, e);
	return parse_spec(s, u, e);
}
