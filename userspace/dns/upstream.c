/* upstream.c: where the FQDN proxy forwards allowed queries: "--dns-upstream ADDR:PORT"
 * or, without it, the host's first resolv.conf nameserver. Only parses; never sends. */
#include "lantern/dns.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "lantern/addr.h"

#define DNS_RESOLV_CONF "/etc/resolv.conf"

static int parse_resolv_conf(struct dns_upstream *u, struct lerr *e)
{
	FILE *f = fopen(DNS_RESOLV_CONF, "re");
	char line[512];
	int err;

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
		/* a zone ("fe80::1%eth0") is refused: a scoped upstream would need an
		 * interface this module knows nothing about */
		err = util_addr_parse("dns: upstream: " DNS_RESOLV_CONF ": nameserver", addr, 53, 0,
				      &u->addr, &u->len, e);
		fclose(f);
		return err;
	}
	fclose(f);
	return lerr_set(e, ENOENT, "dns: upstream: %s has no nameserver line", DNS_RESOLV_CONF);
}

int dns_upstream_parse(const char *s, struct dns_upstream *u, struct lerr *e)
{
	if (!s || !*s)
		return parse_resolv_conf(u, e);
	memset(u, 0, sizeof(*u));
	return util_addr_parse("dns: upstream", s, 53, 0, &u->addr, &u->len, e);
}
