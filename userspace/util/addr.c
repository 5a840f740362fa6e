/* addr.c: "host:port" strings to socket addresses (lantern/addr.h). Literals are parsed
 * with inet_pton; a host name is resolved only when the caller allows it. */
#include "lantern/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>

/* A DNS name is at most 253 characters in text; an IPv6 literal far less. */
#define ADDR_HOST_MAX 256

static int addr_port(const char *what, const char *s, const char *p, unsigned flags,
		     uint16_t *port, struct lerr *e)
{
	unsigned long v = 0;
	unsigned long min = flags & UTIL_ADDR_PORT_ZERO ? 0 : 1;
	const char *c = p;

	for (; *c >= '0' && *c <= '9' && v <= 65535; c++)
		v = v * 10 + (unsigned long)(*c - '0');
	if (c == p || *c || v < min || v > 65535)
		return lerr_set(e, EINVAL, "%s \"%s\": port \"%s\" is not a number from %lu to 65535",
				what, s, p, min);
	*port = (uint16_t)v;
	return 0;
}

/* An IPv4 or IPv6 literal (no brackets) with port; false if host is neither. */
static bool addr_literal(const char *host, uint16_t port, struct sockaddr_storage *ss,
			 socklen_t *len)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		*len = sizeof(*sin);
		return true;
	}
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		*len = sizeof(*sin6);
		return true;
	}
	return false;
}

static int addr_resolve(const char *what, const char *s, const char *host, uint16_t port,
			struct sockaddr_storage *ss, socklen_t *len, struct lerr *e)
{
	/* one socket type, or every address comes back once per type */
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(host, NULL, &hints, &res);

	if (rc == EAI_NONAME || rc == EAI_NODATA)
		return lerr_set(e, ENOENT, "%s \"%s\": host \"%s\" does not resolve", what, s, host);
	if (rc)
		return lerr_set(e, EINVAL, "%s \"%s\": cannot resolve \"%s\": %s", what, s, host,
				gai_strerror(rc));
	if (res->ai_addrlen > sizeof(*ss) ||
	    (res->ai_family != AF_INET && res->ai_family != AF_INET6)) {
		freeaddrinfo(res);
		return lerr_set(e, EINVAL, "%s \"%s\": \"%s\" resolves to no IP address", what, s,
				host);
	}
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = (socklen_t)res->ai_addrlen;
	if (res->ai_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
	freeaddrinfo(res);
	return 0;
}

int util_addr_parse(const char *what, const char *s, uint16_t default_port, unsigned flags,
		    struct sockaddr_storage *ss, socklen_t *len, struct lerr *e)
{
	const char *hs, *he, *port_s = NULL;
	char host[ADDR_HOST_MAX];
	uint16_t port = default_port;
	bool bracket = false;
	int err;

	if (!s || !*s)
		return lerr_set(e, EINVAL, "%s: empty address", what);
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close)
			return lerr_set(e, EINVAL, "%s \"%s\": missing ']'", what, s);
		if (close[1] == ':')
			port_s = close + 2;
		else if (close[1])
			return lerr_set(e, EINVAL, "%s \"%s\": junk after ']'", what, s);
		hs = s + 1;
		he = close;
		bracket = true;
	} else {
		const char *colon = strchr(s, ':');

		hs = s;
		/* two colons or more: a bare IPv6 address */
		if (colon && !strchr(colon + 1, ':')) {
			he = colon;
			port_s = colon + 1;
		} else {
			he = s + strlen(s);
		}
	}
	if ((size_t)(he - hs) >= sizeof(host))
		return lerr_set(e, EINVAL, "%s \"%s\": host part is too long", what, s);
	memcpy(host, hs, (size_t)(he - hs));
	host[he - hs] = '\0';

	if (port_s && (err = addr_port(what, s, port_s, flags, &port, e)) < 0)
		return err;
	if (!port_s && (flags & UTIL_ADDR_PORT_NEEDED))
		return lerr_set(e, EINVAL, "%s \"%s\": no port (use ADDR:PORT or [IPV6]:PORT)", what,
				s);
	if (!host[0]) {
		if ((flags & UTIL_ADDR_EMPTY_ANY) && !bracket) {
			addr_literal("0.0.0.0", port, ss, len);
			return 0;
		}
		return lerr_set(e, EINVAL, "%s \"%s\": no address before the port", what, s);
	}
	if (strchr(host, '%'))
		return lerr_set(e, EINVAL, "%s \"%s\": scoped addresses (%%zone) are not supported",
				what, s);
	if (bracket) {
		struct in6_addr a6;

		if (inet_pton(AF_INET6, host, &a6) != 1)
			return lerr_set(e, EINVAL, "%s \"%s\": brackets hold an IPv6 address, not \"%s\"",
					what, s, host);
	}
	if (addr_literal(host, port, ss, len))
		return 0;
	if (!(flags & UTIL_ADDR_HOSTNAME) || strchr(host, ':'))
		return lerr_set(e, EINVAL, "%s \"%s\": \"%s\" is not an IP address", what, s, host);
	return addr_resolve(what, s, host, port, ss, len, e);
}
