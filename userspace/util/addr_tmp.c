/* addr_tmp.c: host:port parsing (placeholder until util's own parser lands). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lantern/util.h"

int util_parse_hostport(const char *s, uint16_t default_port, struct sockaddr_storage *out,
			socklen_t *len, struct lerr *e)
{
	char host[64];
	const char *p = s, *colon;
	char *end;
	unsigned long port = default_port;

	memset(out, 0, sizeof(*out));
	if (!s || !*s)
		return lerr_set(e, EINVAL, "address \"\": want IPV4:PORT or [IPV6]:PORT");
	if (*p == '[') {
		const char *rb = strchr(p, ']');
		if (!rb || (size_t)(rb - p - 1) >= sizeof(host))
			return lerr_set(e, EINVAL, "address \"%s\": want [IPV6]:PORT", s);
		memcpy(host, p + 1, (size_t)(rb - p - 1));
		host[rb - p - 1] = '\0';
		colon = rb[1] == ':' ? rb + 1 : NULL;
		if (rb[1] && !colon)
			return lerr_set(e, EINVAL, "address \"%s\": want [IPV6]:PORT", s);
	} else {
		colon = strrchr(p, ':');
		size_t hl = colon ? (size_t)(colon - p) : strlen(p);
		if (hl >= sizeof(host))
			return lerr_set(e, EINVAL, "address \"%s\": host too long", s);
		memcpy(host, p, hl);
		host[hl] = '\0';
	}
	if (colon) {
		port = strtoul(colon + 1, &end, 10);
		if (*end || !colon[1] || port > 65535)
			return lerr_set(e, EINVAL, "address \"%s\": port must be 0..65535", s);
	}
	if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)out)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)out)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
		*len = sizeof(struct sockaddr_in6);
		return 0;
	}
	if (inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &((struct sockaddr_in *)out)->sin_addr) == 1) {
		((struct sockaddr_in *)out)->sin_family = AF_INET;
		((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
		*len = sizeof(struct sockaddr_in);
		return 0;
	}
	return lerr_set(e, EINVAL, "address \"%s\": \"%s\" is not an IPv4 or IPv6 address", s, host);
}
