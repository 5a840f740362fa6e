/* addr.h: the one parser of "host:port" strings from flags and configuration (the DNS
 * upstream, lantern-cp's operator API, lanternd's metrics endpoint), for IPv4 and IPv6:
 *   "1.2.3.4:53"  "[::1]:53"  "1.2.3.4" / "::1" / "[::1]" (the default port)
 * An IPv6 address with a port needs its brackets: "::1:53" is the address ::1:53.
 * Scoped addresses ("fe80::1%eth0") are refused: nothing here knows which interface
 * a caller means. */
#ifndef LANTERN_ADDR_H
#define LANTERN_ADDR_H

#include <stdint.h>
#include <sys/socket.h>

#include "lantern/util.h"

/* A bare address is an error: the port must be spelled out. */
#define UTIL_ADDR_PORT_NEEDED 0x1u
/* Port 0 is accepted: a listener that lets the kernel pick. */
#define UTIL_ADDR_PORT_ZERO 0x2u
/* ":PORT" means every IPv4 address of the host (0.0.0.0). */
#define UTIL_ADDR_EMPTY_ANY 0x4u
/* "name:port" is accepted and resolved with getaddrinfo, first result: it may block on
 * the host's resolver, so only for startup, never on the event loop. */
#define UTIL_ADDR_HOSTNAME 0x8u

/* Parses s into *ss and *len (sized for its family). what names the setting in messages:
 * 'dns: upstream "1.2.3.4:x": port "x" is not a number from 1 to 65535'. Returns 0, or
 * -EINVAL (-ENOENT for a host name that does not resolve) with e naming s and the reason. */
int util_addr_parse(const char *what, const char *s, uint16_t default_port, unsigned flags,
		    struct sockaddr_storage *ss, socklen_t *len, struct lerr *e);

#endif
