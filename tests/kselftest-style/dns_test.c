/* dns_test.c: the FQDN proxy (userspace/dns) against a real dnsmasq on loopback, with a
 * small DNS client written here: allow and refuse, answers reported before the reply,
 * CNAME chains, AAAA, truncation and the TCP retry, malformed queries, a dead or silent
 * upstream, a failing owner, and many queries at once. No packet leaves the machine. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lantern/dns.h"
#include "lantern/loop.h"
#include "lantern/util.h"
#include "tap.h"
#include "testlib.h"

#define BIG_RECORDS 40
#define TTL 300
#define MANY 200
#define OVER_LIMIT 258 /* the server keeps 256 in flight */

static char tmpdir[64];

/* ---- what the server told its owner (written on the loop thread) ---- */

struct seen {
	char qname[256];
	uint8_t addr[16];
	uint32_t ttl;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct seen answers[4096];
static size_t n_answers;
static struct {
	char qname[256];
	uint16_t qtype;
} refusals[64];
static size_t n_refusals;

static const char *const allowed_names[] = { "allowed.test", "c1.test", "big.test", "fail.test" };

static bool cb_allowed(void *ctx, const char *qname)
{
	for (size_t i = 0; i < ARRAY_SIZE(allowed_names); i++)
		if (!strcmp(qname, allowed_names[i]))
			return true;
	return false;
}

static int cb_answer(void *ctx, const char *qname, const uint8_t addr[16], uint32_t ttl)
{
	pthread_mutex_lock(&mu);
	if (n_answers < ARRAY_SIZE(answers)) {
		snprintf(answers[n_answers].qname, sizeof(answers[0].qname), "%s", qname);
		memcpy(answers[n_answers].addr, addr, 16);
		answers[n_answers].ttl = ttl;
		n_answers++;
	}
	pthread_mutex_unlock(&mu);
	return strcmp(qname, "fail.test") ? 0 : -ENOSPC;
}

static void cb_refused(void *ctx, const char *qname, uint16_t qtype)
{
	pthread_mutex_lock(&mu);
	if (n_refusals < ARRAY_SIZE(refusals)) {
		snprintf(refusals[n_refusals].qname, sizeof(refusals[0].qname), "%s", qname);
		refusals[n_refusals].qtype = qtype;
		n_refusals++;
	}
	pthread_mutex_unlock(&mu);
}

/* Did the owner see addr (16 bytes) for qname with ttl? */
static bool seen_answer(const char *qname, const uint8_t addr[16], uint32_t ttl)
{
	bool found = false;

	pthread_mutex_lock(&mu);
	for (size_t i = 0; i < n_answers && !found; i++)
		found = !strcmp(answers[i].qname, qname) && !memcmp(answers[i].addr, addr, 16) &&
			answers[i].ttl == ttl;
	pthread_mutex_unlock(&mu);
	return found;
}

static size_t count_answers(const char *qname)
{
	size_t n = 0;

	pthread_mutex_lock(&mu);
	for (size_t i = 0; i < n_answers; i++)
		n += !strcmp(answers[i].qname, qname);
	pthread_mutex_unlock(&mu);
	return n;
}

static bool seen_refusal(const char *qname, uint16_t qtype)
{
	bool found = false;

	pthread_mutex_lock(&mu);
	for (size_t i = 0; i < n_refusals && !found; i++)
		found = !strcmp(refusals[i].qname, qname) && refusals[i].qtype == qtype;
	pthread_mutex_unlock(&mu);
	return found;
}

/* ---- the test's own DNS client ---- */

struct resp {
	uint16_t id;
	int rcode;
	bool tc, qr;
	int qdcount, ancount, n_addr, n_cname;
	uint8_t addr[64][16];
	uint32_t ttl[64];
};

static size_t build_query(uint8_t *buf, uint16_t id, const char *name, uint16_t qtype)
{
	size_t o = 12;
	const char *p = name;

	memset(buf, 0, 12);
	buf[0] = (uint8_t)(id >> 8);
	buf[1] = (uint8_t)id;
	buf[2] = 0x01; /* RD */
	buf[5] = 1;
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t l = dot ? (size_t)(dot - p) : strlen(p);

		buf[o++] = (uint8_t)l;
		memcpy(buf + o, p, l);
		o += l;
		p += l;
		if (*p == '.')
			p++;
	}
	buf[o++] = 0;
	buf[o++] = (uint8_t)(qtype >> 8);
	buf[o++] = (uint8_t)qtype;
	buf[o++] = 0;
	buf[o++] = 1;
	return o;
}

static int skip_name(const uint8_t *m, size_t len, size_t *off)
{
	while (*off < len) {
		uint8_t c = m[*off];

		if ((c & 0xc0) == 0xc0) {
			*off += 2;
			return 0;
		}
		*off += 1 + (size_t)c;
		if (!c)
			return 0;
	}
	return -1;
}

static int parse_resp(const uint8_t *m, size_t len, struct resp *r)
{
	size_t off = 12;

	memset(r, 0, sizeof(*r));
	if (len < 12)
		return -1;
	r->id = (uint16_t)(m[0] << 8 | m[1]);
	r->qr = m[2] & 0x80;
	r->tc = m[2] & 0x02;
	r->rcode = m[3] & 0x0f;
	r->qdcount = m[4] << 8 | m[5];
	r->ancount = m[6] << 8 | m[7];
	for (int i = 0; i < r->qdcount; i++) {
		if (skip_name(m, len, &off) < 0)
			return -1;
		off += 4;
	}
	for (int i = 0; i < r->ancount; i++) {
		uint16_t type, rdlen;

		if (skip_name(m, len, &off) < 0 || off + 10 > len)
			return r->tc ? 0 : -1;
		type = (uint16_t)(m[off] << 8 | m[off + 1]);
		rdlen = (uint16_t)(m[off + 8] << 8 | m[off + 9]);
		if (off + 10 + rdlen > len)
			return r->tc ? 0 : -1;
		if ((type == 1 && rdlen == 4) || (type == 28 && rdlen == 16)) {
			uint8_t *a = r->addr[r->n_addr];

			if (r->n_addr == 64)
				return -1;
			memset(a, 0, 16);
			if (type == 1) {
				a[10] = a[11] = 0xff;
				memcpy(a + 12, m + off + 10, 4);
			} else {
				memcpy(a, m + off + 10, 16);
			}
			r->ttl[r->n_addr++] = (uint32_t)m[off + 4] << 24 | (uint32_t)m[off + 5] << 16 |
					      (uint32_t)m[off + 6] << 8 | m[off + 7];
		}
		if (type == 5)
			r->n_cname++;
		off += 10 + rdlen;
	}
	return 0;
}

static socklen_t loopback(int family, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;

		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		return sizeof(*a);
	}
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;

	a6->sin6_family = AF_INET6;
	a6->sin6_port = htons(port);
	a6->sin6_addr = in6addr_loopback;
	return sizeof(*a6);
}

static int udp_socket(int family, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = loopback(family, port, &ss);
	int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && connect(fd, (struct sockaddr *)&ss, len) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int wait_in(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms) == 1 ? 0 : -1;
}

/* Sends msg over UDP and waits up to ms for the reply; returns its length or -1. */
static ssize_t udp_raw(int family, uint16_t port, const uint8_t *msg, size_t len, uint8_t *out,
		       int ms)
{
	int fd = udp_socket(family, port);
	ssize_t n = -1;

	if (fd < 0)
		return -1;
	if (send(fd, msg, len, 0) == (ssize_t)len && wait_in(fd, ms) == 0)
		n = recv(fd, out, 65535, 0);
	close(fd);
	return n;
}

static int read_full(int fd, uint8_t *buf, size_t len, int ms)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n;

		if (wait_in(fd, ms) < 0)
			return -1;
		n = read(fd, buf + got, len - got);
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

static int tcp_connect(int family, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = loopback(family, port, &ss);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && connect(fd, (struct sockaddr *)&ss, len) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Reads one framed message from a TCP connection; returns its length or -1. */
static ssize_t tcp_read_msg(int fd, uint8_t *out, int ms)
{
	uint8_t l[2];
	size_t len;

	if (read_full(fd, l, 2, ms) < 0)
		return -1;
	len = (size_t)(l[0] << 8 | l[1]);
	if (read_full(fd, out, len, ms) < 0)
		return -1;
	return (ssize_t)len;
}

static ssize_t tcp_raw(int family, uint16_t port, const uint8_t *msg, size_t len, uint8_t *out,
		       int ms)
{
	int fd = tcp_connect(family, port);
	uint8_t frame[2 + 65535];
	ssize_t n = -1;

	if (fd < 0)
		return -1;
	frame[0] = (uint8_t)(len >> 8);
	frame[1] = (uint8_t)len;
	memcpy(frame + 2, msg, len);
	if (write(fd, frame, len + 2) == (ssize_t)(len + 2))
		n = tcp_read_msg(fd, out, ms);
	close(fd);
	return n;
}

/* One question over UDP or TCP; fills r. Returns 0 or -1 (no or unreadable reply). */
static int ask(bool tcp, int family, uint16_t port, const char *name, uint16_t qtype,
	       struct resp *r)
{
	uint8_t q[512], out[65536];
	uint16_t id = (uint16_t)(random() & 0xffff);
	size_t len = build_query(q, id, name, qtype);
	ssize_t n = tcp ? tcp_raw(family, port, q, len, out, 5000)
			: udp_raw(family, port, q, len, out, 5000);

	if (n < 0 || parse_resp(out, (size_t)n, r) < 0 || r->id != id || !r->qr)
		return -1;
	return 0;
}

/* Every address in r was reported for qname with the reply's TTL. Checked when the reply
 * is in hand, so a report that came after the reply was sent would be missing. */
static bool all_reported(const char *qname, const struct resp *r)
{
	for (int i = 0; i < r->n_addr; i++)
		if (!seen_answer(qname, r->addr[i], r->ttl[i]))
			return false;
	return true;
}

static bool has_addr(const struct resp *r, int family, const char *text)
{
	uint8_t a[16] = { 0 };

	if (family == AF_INET) {
		a[10] = a[11] = 0xff;
		inet_pton(AF_INET, text, a + 12);
	} else {
		inet_pton(AF_INET6, text, a);
	}
	for (int i = 0; i < r->n_addr; i++)
		if (!memcmp(r->addr[i], a, 16))
			return true;
	return false;
}

/* ---- dnsmasq and the loop thread ---- */

static void remove_tmpdir(void)
{
	util_rm_rf(tmpdir);
}

static int start_dnsmasq(uint16_t *port_out)
{
	char hosts[128], hostsarg[160];
	FILE *f;

	snprintf(hosts, sizeof(hosts), "%s/hosts", tmpdir);
	f = fopen(hosts, "w");
	if (!f)
		return -1;
	for (int i = 1; i <= BIG_RECORDS; i++)
		fprintf(f, "10.0.1.%d big.test\n", i);
	fclose(f);
	snprintf(hostsarg, sizeof(hostsarg), "--addn-hosts=%s", hosts);
	return tl_dnsmasq_start(port_out, NULL, "--local-ttl=300",
				"--host-record=allowed.test,10.1.2.3,2001:db8::3",
				"--host-record=target.test,10.9.9.9", "--host-record=target.test,2001:db8::9",
				"--host-record=denied.test,10.6.6.6", "--host-record=fail.test,10.5.5.5",
				"--cname=c1.test,c2.test", "--cname=c2.test,target.test", hostsarg,
				(char *)NULL) < 0 ? -1 : 0;
}

static int stop_pipe[2] = { -1, -1 };

static void on_stop(struct loop *l, int fd, uint32_t events, void *arg)
{
	loop_stop(l);
}

static void *loop_thread(void *arg)
{
	loop_run(arg);
	return NULL;
}

/* ---- the tests ---- */

static void test_upstream_parse(void)
{
	struct dns_upstream u;
	struct lerr e = { { 0 } };
	struct sockaddr_in *a4 = (struct sockaddr_in *)&u.addr;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&u.addr;
	bool ok;

	ok = dns_upstream_parse("127.0.0.1:5353", &u, &e) == 0 && a4->sin_family == AF_INET &&
	     ntohs(a4->sin_port) == 5353 && a4->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
	ok = ok && dns_upstream_parse("[::1]:54", &u, &e) == 0 && a6->sin6_family == AF_INET6 &&
	     ntohs(a6->sin6_port) == 54 && IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr);
	ok = ok && dns_upstream_parse("10.0.0.1", &u, &e) == 0 && ntohs(a4->sin_port) == 53;
	ok = ok && dns_upstream_parse("::1", &u, &e) == 0 && a6->sin6_family == AF_INET6 &&
	     ntohs(a6->sin6_port) == 53;
	ok = ok && dns_upstream_parse("[::1]", &u, &e) == 0 && ntohs(a6->sin6_port) == 53;
	tap_ok(ok, "upstream: ADDR:PORT, [V6]:PORT, ADDR and bare V6 parse");

	ok = true;
	for (const char *bad[] = { "example.com", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:x",
				   "[::1", "[1.2.3.4]:53", "[::1]x", "1.2.3.4:" },
			*const *b = bad;
	     b < bad + ARRAY_SIZE(bad); b++) {
		e.msg[0] = '\0';
		if (dns_upstream_parse(*b, &u, &e) != -EINVAL || !strstr(e.msg, *b)) {
			tap_diag("accepted or unexplained: \"%s\" (%s)", *b, e.msg);
			ok = false;
		}
	}
	tap_ok(ok, "upstream: bad forms are -EINVAL with a message naming them");

	/* parsing only: nothing is sent to the host's resolver */
	if (access("/etc/resolv.conf", R_OK) == 0 && !system("grep -qs '^nameserver' /etc/resolv.conf"))
		tap_ok(dns_upstream_parse(NULL, &u, &e) == 0 &&
			       (u.addr.ss_family == AF_INET || u.addr.ss_family == AF_INET6) &&
			       dns_upstream_parse("", &u, &e) == 0,
		       "upstream: NULL and \"\" read resolv.conf's first nameserver");
	else
		tap_skip("no nameserver in /etc/resolv.conf", "upstream: resolv.conf fallback");
}

static void test_basic(uint16_t port)
{
	struct resp r;
	bool ok;

	ok = ask(false, AF_INET, port, "allowed.test", 1, &r) == 0 && r.rcode == 0 &&
	     r.n_addr == 1 && has_addr(&r, AF_INET, "10.1.2.3") && r.ttl[0] == TTL &&
	     all_reported("allowed.test", &r);
	tap_ok(ok, "udp 127.0.0.1: A allowed, address and TTL reported before the reply");

	ok = ask(false, AF_INET6, port, "allowed.test", 28, &r) == 0 && r.rcode == 0 &&
	     r.n_addr == 1 && has_addr(&r, AF_INET6, "2001:db8::3") &&
	     all_reported("allowed.test", &r);
	tap_ok(ok, "udp [::1]: AAAA allowed and reported");

	ok = ask(true, AF_INET, port, "allowed.test", 1, &r) == 0 && r.rcode == 0 &&
	     r.n_addr == 1 && all_reported("allowed.test", &r);
	tap_ok(ok, "tcp 127.0.0.1: A allowed and reported");

	ok = ask(true, AF_INET6, port, "allowed.test", 28, &r) == 0 && r.rcode == 0 &&
	     r.n_addr == 1 && has_addr(&r, AF_INET6, "2001:db8::3") &&
	     all_reported("allowed.test", &r);
	tap_ok(ok, "tcp [::1]: AAAA allowed and reported");

	ok = ask(false, AF_INET, port, "ALLOWED.Test.", 1, &r) == 0 && r.rcode == 0 &&
	     r.n_addr == 1 && all_reported("allowed.test", &r);
	tap_ok(ok, "qname is matched lowercase without the trailing dot");

	ok = ask(false, AF_INET, port, "denied.test", 1, &r) == 0 && r.rcode == 5 &&
	     r.qdcount == 1 && r.ancount == 0 && seen_refusal("denied.test", 1) &&
	     count_answers("denied.test") == 0;
	tap_ok(ok, "udp: disallowed name is REFUSED with its question, refused callback called");

	ok = ask(true, AF_INET6, port, "denied.test", 28, &r) == 0 && r.rcode == 5 &&
	     seen_refusal("denied.test", 28) && count_answers("denied.test") == 0;
	tap_ok(ok, "tcp: disallowed name is REFUSED, refused callback called");

	/* c1 -> c2 -> target: only c1 is allowed; the chain's addresses are what matter */
	ok = ask(false, AF_INET, port, "c1.test", 1, &r) == 0 && r.rcode == 0 &&
	     r.n_cname == 2 && has_addr(&r, AF_INET, "10.9.9.9") && all_reported("c1.test", &r);
	tap_ok(ok, "CNAME chain: A at the end of c1 -> c2 -> target reported for c1");
	ok = ask(true, AF_INET, port, "c1.test", 28, &r) == 0 && r.rcode == 0 &&
	     has_addr(&r, AF_INET6, "2001:db8::9") && all_reported("c1.test", &r);
	tap_ok(ok, "CNAME chain: AAAA over TCP reported");

	ok = ask(false, AF_INET, port, "fail.test", 1, &r) == 0 && r.rcode == 2 &&
	     r.ancount == 0 && r.qdcount == 1;
	tap_ok(ok, "answer callback failing -> SERVFAIL, no address to the client");
}

static void test_truncation(uint16_t port)
{
	struct resp r;
	bool ok, udp_ok;
	size_t before = count_answers("big.test");

	udp_ok = ask(false, AF_INET, port, "big.test", 1, &r) == 0 && r.rcode == 0 && r.tc &&
		 r.n_addr < BIG_RECORDS && all_reported("big.test", &r);
	tap_ok(udp_ok, "udp: a >512-byte answer arrives with TC set (%d of %d records)", r.n_addr,
	       BIG_RECORDS);

	ok = ask(true, AF_INET, port, "big.test", 1, &r) == 0 && r.rcode == 0 && !r.tc &&
	     r.n_addr == BIG_RECORDS && all_reported("big.test", &r);
	for (int i = 1; ok && i <= BIG_RECORDS; i++) {
		char a[32];

		snprintf(a, sizeof(a), "10.0.1.%d", i);
		ok = has_addr(&r, AF_INET, a);
	}
	tap_ok(ok && count_answers("big.test") >= before + BIG_RECORDS,
	       "tcp retry: all %d records returned and reported", BIG_RECORDS);
}

static void test_malformed(uint16_t port)
{
	uint8_t q[512], out[65536];
	struct resp r;
	size_t len;
	ssize_t n;
	bool ok;

	/* too short to answer */
	n = udp_raw(AF_INET, port, (const uint8_t *)"\x12", 1, out, 300);
	tap_ok(n < 0, "1-byte datagram is dropped");

	/* a response is never answered */
	len = build_query(q, 0x4242, "allowed.test", 1);
	q[2] |= 0x80;
	n = udp_raw(AF_INET, port, q, len, out, 300);
	tap_ok(n < 0, "a message with QR set is dropped");

	len = build_query(q, 0x1111, "allowed.test", 1);
	q[5] = 2; /* QDCOUNT 2 with one question */
	n = udp_raw(AF_INET, port, q, len, out, 2000);
	ok = n > 0 && parse_resp(out, (size_t)n, &r) == 0 && r.id == 0x1111 && r.rcode == 1;
	tap_ok(ok, "QDCOUNT=2 -> FORMERR with the same ID");

	len = build_query(q, 0x2222, "allowed.test", 1);
	q[12] = 60; /* label runs past the end */
	n = udp_raw(AF_INET, port, q, len, out, 2000);
	ok = n > 0 && parse_resp(out, (size_t)n, &r) == 0 && r.id == 0x2222 && r.rcode == 1;
	tap_ok(ok, "label past the end -> FORMERR");

	len = build_query(q, 0x3333, "allowed.test", 1);
	q[12] = 0xc0; /* compression pointer in a query's question */
	q[13] = 12;
	n = tcp_raw(AF_INET, port, q, len, out, 2000);
	ok = n > 0 && parse_resp(out, (size_t)n, &r) == 0 && r.id == 0x3333 && r.rcode == 1;
	tap_ok(ok, "tcp: self-pointing name -> FORMERR");

	len = build_query(q, 0x4444, "allowed.test", 1);
	q[2] = 2 << 3; /* opcode STATUS */
	n = udp_raw(AF_INET, port, q, len, out, 2000);
	ok = n > 0 && parse_resp(out, (size_t)n, &r) == 0 && r.id == 0x4444 && r.rcode == 4;
	tap_ok(ok, "opcode other than QUERY -> NOTIMP");

	/* "a.b" as one label: not a hostname, never matches a pattern */
	len = build_query(q, 0x5555, "abc", 1);
	q[14] = '.';
	n = udp_raw(AF_INET, port, q, len, out, 2000);
	ok = n > 0 && parse_resp(out, (size_t)n, &r) == 0 && r.id == 0x5555 && r.rcode == 5;
	tap_ok(ok, "a '.' inside a label -> REFUSED");

	ok = ask(false, AF_INET, port, "allowed.test", 1, &r) == 0 && r.rcode == 0 &&
	     r.n_addr == 1;
	tap_ok(ok, "server still answers after malformed input");
}

/* Random damage to valid queries, over UDP and TCP: whatever comes back, the server
 * must survive it and keep answering. */
static void test_fuzz(uint16_t port)
{
	int ufd = udp_socket(AF_INET, port), tfd = tcp_connect(AF_INET, port);
	uint8_t base[512], q[514], out[65536];
	struct resp r;
	bool ok;

	for (int i = 0; i < 5000 && ufd >= 0; i++) {
		size_t len = build_query(base, (uint16_t)i, i % 2 ? "allowed.test" : "denied.test", 1);
		int flips = 1 + (int)(random() % 4);

		memcpy(q + 2, base, len);
		for (int f = 0; f < flips; f++)
			q[2 + (size_t)random() % len] = (uint8_t)random();
		if (random() % 4 == 0)
			len = (size_t)random() % len;
		if (send(ufd, q + 2, len, 0) < 0 && errno != ECONNREFUSED)
			break;
		if (tfd >= 0 && i % 10 == 0) {
			q[0] = (uint8_t)(len >> 8);
			q[1] = (uint8_t)len;
			if (write(tfd, q, len + 2) < 0) {
				close(tfd);
				tfd = -1;
			}
		}
		while (i % 100 == 0 && recv(ufd, out, sizeof(out), MSG_DONTWAIT) > 0)
			;
	}
	if (ufd >= 0)
		close(ufd);
	if (tfd >= 0)
		close(tfd);
	/* damaged queries the upstream ignores hold in-flight slots until their timeout
	 * (3 s); until then a full server rightly answers SERVFAIL, so allow for that */
	for (int tries = 0; tries < 60; tries++) {
		ok = ask(false, AF_INET, port, "allowed.test", 1, &r) == 0 && r.rcode == 0 &&
		     r.n_addr == 1 && ask(true, AF_INET, port, "allowed.test", 1, &r) == 0 &&
		     r.rcode == 0;
		if (ok)
			break;
		usleep(100000);
	}
	tap_ok(ok, "5000 damaged queries over UDP and TCP: server survives and still answers");
}

static void test_tcp_pipeline(uint16_t port)
{
	uint8_t buf[1024], out[65536];
	size_t a, b;
	int fd = tcp_connect(AF_INET6, port);
	struct resp r1, r2;
	bool ok = false;
	ssize_t n1, n2;

	if (fd >= 0) {
		a = build_query(buf + 2, 0xaaaa, "allowed.test", 1);
		buf[0] = 0;
		buf[1] = (uint8_t)a;
		b = build_query(buf + 4 + a, 0xbbbb, "denied.test", 1);
		buf[2 + a] = 0;
		buf[3 + a] = (uint8_t)b;
		/* both in one write: the server must split the frames itself */
		if (write(fd, buf, a + b + 4) == (ssize_t)(a + b + 4)) {
			n1 = tcp_read_msg(fd, out, 5000);
			ok = n1 > 0 && parse_resp(out, (size_t)n1, &r1) == 0;
			n2 = ok ? tcp_read_msg(fd, out, 5000) : -1;
			ok = ok && n2 > 0 && parse_resp(out, (size_t)n2, &r2) == 0;
			if (ok && r1.id == 0xbbbb) {
				struct resp t = r1;
				r1 = r2;
				r2 = t;
			}
			ok = ok && r1.id == 0xaaaa && r1.rcode == 0 && r1.n_addr == 1 &&
			     r2.id == 0xbbbb && r2.rcode == 5;
		}
		close(fd);
	}
	tap_ok(ok, "tcp: two queries on one connection both answered");
}

/* Sends n queries at once from n sockets; counts replies by rcode within ms. */
static void burst(uint16_t port, const char *name, int n, int ms, int *noerror, int *servfail,
		  int *other, uint64_t *first_ms, uint64_t *last_ms)
{
	struct pollfd *p = calloc((size_t)n, sizeof(*p));
	uint16_t *ids = calloc((size_t)n, sizeof(*ids));
	uint64_t start = tl_ms();
	int left = 0;

	*noerror = *servfail = *other = 0;
	*first_ms = *last_ms = 0;
	for (int i = 0; i < n; i++) {
		uint8_t q[512];
		size_t len;

		ids[i] = (uint16_t)i;
		len = build_query(q, ids[i], name, 1);
		p[i].fd = udp_socket(i % 2 ? AF_INET6 : AF_INET, port);
		p[i].events = POLLIN;
		if (p[i].fd >= 0 && send(p[i].fd, q, len, 0) == (ssize_t)len)
			left++;
		else
			(*other)++;
	}
	while (left > 0 && tl_ms() < start + (uint64_t)ms) {
		if (poll(p, (nfds_t)n, 100) <= 0)
			continue;
		for (int i = 0; i < n; i++) {
			uint8_t out[65536];
			struct resp r;
			ssize_t len;

			if (!(p[i].revents & POLLIN))
				continue;
			len = recv(p[i].fd, out, sizeof(out), 0);
			close(p[i].fd);
			p[i].fd = -1;
			left--;
			if (len < 0 || parse_resp(out, (size_t)len, &r) < 0 || r.id != ids[i])
				(*other)++;
			else if (r.rcode == 0 && r.n_addr == 1)
				(*noerror)++;
			else if (r.rcode == 2)
				(*servfail)++;
			else
				(*other)++;
			if (!*first_ms)
				*first_ms = tl_ms() - start;
			*last_ms = tl_ms() - start;
		}
	}
	for (int i = 0; i < n; i++)
		if (p[i].fd >= 0)
			close(p[i].fd);
	free(p);
	free(ids);
}

int main(void)
{
	struct dns_callbacks cb = { .allowed = cb_allowed, .answer = cb_answer, .refused = cb_refused };
	struct dns_server *srv = NULL, *dead = NULL, *silent = NULL;
	struct dns_upstream up, up_dead, up_silent;
	struct rlimit rl = { 4096, 4096 };
	struct lerr e = { { 0 } };
	struct loop *l = NULL;
	pthread_t th;
	uint16_t dport = 0, port, silent_port = 0, dead_port = 0;
	int silent_fd, noerr, servfail, other, err;
	uint64_t first, last;
	char spec[64];
	struct resp r;
	bool made;

	tap_plan(34);
	signal(SIGPIPE, SIG_IGN);
	setrlimit(RLIMIT_NOFILE, &rl);
	srandom((unsigned)getpid());

	test_upstream_parse();

	util_tmp_template(tmpdir, sizeof(tmpdir), "/tmp/lantern-test-dns-");
	made = mkdtemp(tmpdir) != NULL;
	if (made)
		tl_on_exit(remove_tmpdir);
	if (!made || start_dnsmasq(&dport) < 0) {
		tap_ok(false, "dnsmasq starts on 127.0.0.1");
		return tap_done();
	}
	tap_ok(true, "dnsmasq starts on 127.0.0.1:%u", dport);

	/* a dead upstream refuses (closed port); a silent one takes queries and never answers */
	silent_fd = tl_udp_bind("127.0.0.1", &silent_port);
	err = tl_udp_bind("127.0.0.1", &dead_port);
	if (err >= 0)
		close(err);
	l = loop_new();
	snprintf(spec, sizeof(spec), "127.0.0.1:%u", dport);
	err = l ? dns_upstream_parse(spec, &up, &e) : -ENOMEM;
	snprintf(spec, sizeof(spec), "127.0.0.1:%u", dead_port);
	err = err ?: dns_upstream_parse(spec, &up_dead, &e);
	snprintf(spec, sizeof(spec), "[::ffff:127.0.0.1]:%u", silent_port);
	err = err ?: dns_upstream_parse(spec, &up_silent, &e);
	err = err ?: dns_server_open(l, &up, 0, &cb, NULL, &srv, &e);
	err = err ?: dns_server_open(l, &up_dead, 0, &cb, NULL, &dead, &e);
	err = err ?: dns_server_open(l, &up_silent, 0, &cb, NULL, &silent, &e);
	if (!tap_ok(!err && silent_fd >= 0 && dns_server_port(srv) != 0,
		    "servers open on free ports (%s)", err ? e.msg : "ok"))
		return tap_done();
	port = dns_server_port(srv);
	{
		struct dns_server *again = NULL;

		err = dns_server_open(l, &up, port, &cb, NULL, &again, &e);
		tap_ok(err == -EADDRINUSE && strstr(e.msg, "port"),
		       "a taken port is an error naming it (%s)", e.msg);
		dns_server_close(again);
	}
	if (pipe2(stop_pipe, O_CLOEXEC) < 0 || loop_add(l, stop_pipe[0], EPOLLIN, on_stop, NULL) < 0 ||
	    pthread_create(&th, NULL, loop_thread, l)) {
		tap_ok(false, "loop thread starts");
		return tap_done();
	}

	test_basic(port);
	test_truncation(port);
	test_malformed(port);
	test_tcp_pipeline(port);
	test_fuzz(port);

	first = tl_ms();
	tap_ok(ask(false, AF_INET, dns_server_port(dead), "allowed.test", 1, &r) == 0 &&
		       r.rcode == 2 && tl_ms() - first < 3500,
	       "upstream down (port closed) -> SERVFAIL (%llu ms)",
	       (unsigned long long)(tl_ms() - first));
	first = tl_ms();
	tap_ok(ask(true, AF_INET, dns_server_port(dead), "allowed.test", 1, &r) == 0 &&
		       r.rcode == 2 && tl_ms() - first < 3500,
	       "tcp: upstream down -> SERVFAIL");

	burst(dns_server_port(silent), "allowed.test", OVER_LIMIT, 6000, &noerr, &servfail, &other,
	      &first, &last);
	tap_ok(servfail == OVER_LIMIT && other == 0,
	       "silent upstream: all %d queries SERVFAIL (%d servfail, %d other)", OVER_LIMIT,
	       servfail, other);
	tap_ok(first < 1000 && last >= 2500 && last < 4500,
	       "beyond 256 in flight SERVFAIL at once (%llu ms), the rest at the ~3 s timeout (%llu ms)",
	       (unsigned long long)first, (unsigned long long)last);

	burst(port, "allowed.test", MANY, 10000, &noerr, &servfail, &other, &first, &last);
	tap_ok(noerr == MANY, "%d concurrent queries all answered (%d ok, %d servfail, %d other, %llu ms)",
	       MANY, noerr, servfail, other, (unsigned long long)last);

	/* leave queries in flight, then close everything under them */
	for (int i = 0; i < 10; i++) {
		uint8_t q[512];
		size_t len = build_query(q, (uint16_t)i, "allowed.test", 1);
		int fd = udp_socket(AF_INET, dns_server_port(silent));

		if (fd >= 0) {
			send(fd, q, len, 0);
			close(fd);
		}
	}
	{
		int fd = tcp_connect(AF_INET, dns_server_port(silent));
		uint8_t q[512];
		size_t len = build_query(q + 2, 1, "allowed.test", 1);

		q[0] = 0;
		q[1] = (uint8_t)len;
		if (fd >= 0 && write(fd, q, len + 2) < 0)
			tap_diag("write: %s", strerror(errno));
		usleep(200000);
		if (write(stop_pipe[1], "x", 1) != 1)
			tap_diag("stop: %s", strerror(errno));
		pthread_join(th, NULL);
		dns_server_close(silent);
		dns_server_close(dead);
		dns_server_close(srv);
		loop_del(l, stop_pipe[0]);
		loop_free(l);
		if (fd >= 0)
			close(fd);
	}
	tap_ok(true, "servers close with queries and TCP clients in flight");
	close(silent_fd);
	return tap_done();
}
